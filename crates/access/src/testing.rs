//! Token minting for tests and the benchmark harness. The service itself
//! never issues tokens; an identity provider does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{EncodingKey, Header};

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The key does not fit the algorithm, or signing failed.
    #[error("cannot mint token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// `alg: none` tokens are built by hand and never signed.
    #[error("cannot mint token: {0}")]
    Json(#[from] serde_json::Error),
}

/// An HS256 token for `subject` with the space-separated `scopes`, valid
/// from now for `ttl`. For tests and the benchmark harness.
pub fn mint_hs256(
    secret: impl AsRef<[u8]>,
    subject: &str,
    scopes: &str,
    ttl: Duration,
) -> Result<String, MintError> {
    let now = unix_seconds(SystemTime::now());
    let claims = serde_json::json!({
        "sub": subject,
        "scope": scopes,
        "iat": now,
        "exp": now.saturating_add(ttl.as_secs()),
    });
    mint_hs256_claims(secret, &claims)
}

/// An HS256 token carrying exactly `claims` (set `exp`, `nbf`, `aud`, `iss`
/// yourself). Passing an RSA public key's PEM bytes as `secret` gives the
/// classic algorithm-confusion token.
pub fn mint_hs256_claims(
    secret: impl AsRef<[u8]>,
    claims: &serde_json::Value,
) -> Result<String, MintError> {
    let key = EncodingKey::from_secret(secret.as_ref());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &key,
    )?)
}

/// A token signed with a PEM private key: RSA for RS*/PS*, EC (PKCS#8) for
/// ES*, Ed25519 (PKCS#8) for EdDSA.
pub fn mint_with_pem(
    algorithm: Algorithm,
    private_key_pem: &[u8],
    claims: &serde_json::Value,
) -> Result<String, MintError> {
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private_key_pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_key_pem)?,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(private_key_pem)
        }
        _ => EncodingKey::from_rsa_pem(private_key_pem)?,
    };
    Ok(jsonwebtoken::encode(&Header::new(algorithm), claims, &key)?)
}

/// An unsigned `alg: none` token (RFC 7519 §6), which must always be refused.
pub fn mint_unsigned(claims: &serde_json::Value) -> Result<String, MintError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
    Ok(format!("{header}.{payload}."))
}

/// Seconds since the Unix epoch, for building `exp`/`nbf` claims.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
