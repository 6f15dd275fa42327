//! JWT bearer authentication and scopes.
//!
//! An [`Authenticator`] is built once at start-up from an [`AuthConfig`]
//! ([`AuthConfig::load`]) and then turns the `Authorization` header of each
//! request into a [`Principal`] or an [`AuthError`] (always 401).
//!
//! Only the algorithms of the configured keys are accepted: an HMAC secret
//! accepts HS256/HS384/HS512, an RSA public key RS256/384/512 and
//! PS256/384/512, an EC key only the algorithm of its curve (ES256 for
//! P-256, ES384 for P-384), an Ed25519 key EdDSA. The token header's `alg`
//! picks the key, so an HS256 token "signed" with the RSA public key's bytes
//! finds no HMAC key and is refused, as is `alg: none`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Default clock-skew allowance for `exp` and `nbf` (`JWT_LEEWAY_SECONDS`).
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Default number of verified tokens remembered by their SHA-256.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longer bearer values are refused before any parsing or hashing, so a
/// client cannot make us base64-decode megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// RSA moduli below this are factorable with public resources.
pub const MIN_RSA_BITS: usize = 2048;

/// Subject given to every request when authentication is off.
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

/// What the service needs to verify tokens. Every field is the parsed value
/// of one environment variable; reading the environment is the caller's job.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `JWT_SECRET`, or the contents of the file named by `JWT_SECRET_FILE`
    /// (see [`resolve_secret`]). Enables HS256/HS384/HS512. At least 32 bytes.
    pub hs256_secret: Option<String>,
    /// The PEM contents of the file named by `JWT_PUBLIC_KEY_FILE`: an RSA
    /// (`PUBLIC KEY` or `RSA PUBLIC KEY`), EC P-256/P-384 or Ed25519 public
    /// key. The kind is detected from the PEM.
    pub public_key_pem: Option<String>,
    /// `JWT_ISSUER`: when set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: when set, tokens must carry this `aud` (a string or
    /// an array containing it). When unset, `aud` is not checked.
    pub audience: Option<String>,
    /// `JWT_LEEWAY_SECONDS` (default 30): clock skew allowed on `exp`/`nbf`.
    pub leeway_seconds: u64,
    /// How many verified tokens to remember (default 10 000; 0 disables the
    /// cache). No env var is named for this; it is a tuning knob.
    pub cache_capacity: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            public_key_pem: None,
            issuer: None,
            audience: None,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

// Hand-written so a config printed in a log line never shows the secret.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "***"))
            .field(
                "public_key_pem",
                &self.public_key_pem.as_ref().map(|_| "<pem>"),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("cache_capacity", &self.cache_capacity)
            .finish()
    }
}

/// Why the auth configuration cannot be used. Each message names the
/// variable at fault and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Both `X` and `X_FILE` were set.
    #[error("both {var} and {var}_FILE are set; set only one of them")]
    Conflicting {
        /// The variable's base name, e.g. `JWT_SECRET`.
        var: &'static str,
    },
    /// A `_FILE` variable names a file that cannot be read.
    #[error("{var}: cannot read {path}: {source}")]
    ReadFile {
        /// The variable that named the file.
        var: &'static str,
        /// The file's path as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HMAC secret is empty or shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "JWT_SECRET is {n_bytes} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
         (generate one with `openssl rand -hex 32`)"
    )]
    WeakSecret {
        /// Length of the secret that was given.
        n_bytes: usize,
    },
    /// `JWT_PUBLIC_KEY_FILE` does not hold a usable public key.
    #[error("JWT_PUBLIC_KEY_FILE: {reason}")]
    BadPublicKey {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// `JWT_ISSUER` or `JWT_AUDIENCE` is set but empty.
    #[error("{var} is set but empty; unset it or give a value")]
    EmptyClaim {
        /// The variable at fault.
        var: &'static str,
    },
}

/// Picks a secret from `X` or the file named by `X_FILE`, trimming trailing
/// newlines from the file (editors and `echo` add them). Both set is an error
/// rather than a silent precedence, so a stale variable cannot win.
pub fn resolve_secret(
    var: &'static str,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Conflicting { var }),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                var,
                path: path.display().to_string(),
                source,
            })?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

impl AuthConfig {
    /// True when a secret or a public key is given, i.e. tokens are required.
    pub fn is_configured(&self) -> bool {
        self.hs256_secret.is_some() || self.public_key_pem.is_some()
    }

    /// Validates the keys and builds the [`Authenticator`]. With neither a
    /// secret nor a public key the result is a disabled authenticator that
    /// admits everyone as [`Principal::anonymous`]; whether that is allowed
    /// on the bind address is [`crate::StartupPolicy`]'s call.
    pub fn load(self) -> Result<Authenticator, ConfigError> {
        if !self.is_configured() {
            return Ok(Authenticator { inner: None });
        }
        if matches!(&self.issuer, Some(issuer) if issuer.is_empty()) {
            return Err(ConfigError::EmptyClaim { var: "JWT_ISSUER" });
        }
        if matches!(&self.audience, Some(audience) if audience.is_empty()) {
            return Err(ConfigError::EmptyClaim {
                var: "JWT_AUDIENCE",
            });
        }

        let mut keys = Vec::with_capacity(2);
        if let Some(secret) = &self.hs256_secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::WeakSecret {
                    n_bytes: secret.len(),
                });
            }
            keys.push(self.verifying_key(
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ));
        }
        if let Some(pem) = &self.public_key_pem {
            let (key, algorithms) = parse_public_key(pem)?;
            keys.push(self.verifying_key(key, algorithms));
        }

        Ok(Authenticator {
            inner: Some(Inner {
                keys,
                leeway_seconds: self.leeway_seconds,
                cache: TokenCache::new(self.cache_capacity),
            }),
        })
    }

    fn verifying_key(&self, key: DecodingKey, algorithms: Vec<Algorithm>) -> VerifyingKey {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms.clone();
        // exp and nbf are checked by us against an injectable clock (and with
        // our own error mapping); jsonwebtoken would read the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Unset means "not checked", not "tokens must lack aud".
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        VerifyingKey {
            key,
            algorithms,
            validation,
        }
    }
}

/// Detects the key kind from the PEM and proves it parses, so a bad file
/// fails at start-up instead of on the first request.
fn parse_public_key(pem: &str) -> Result<(DecodingKey, Vec<Algorithm>), ConfigError> {
    let bad = |reason: &str| ConfigError::BadPublicKey {
        reason: reason.to_owned(),
    };
    let pem = pem.trim();
    if !pem.starts_with("-----BEGIN ") {
        return Err(bad(
            "not a PEM file (expected a line like -----BEGIN PUBLIC KEY-----)",
        ));
    }
    if pem.contains("PRIVATE KEY-----") {
        return Err(bad(
            "holds a private key; give only the public key (openssl pkey -in key.pem -pubout)",
        ));
    }
    if pem.contains("CERTIFICATE-----") {
        return Err(bad(
            "holds a certificate; extract its public key (openssl x509 -in cert.pem -pubkey -noout)",
        ));
    }

    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;
        let public = rsa::RsaPublicKey::from_pkcs1_der(key.as_bytes())
            .map_err(|e| bad(&format!("invalid RSA public key: {e}")))?;
        let n_bits = public.n().bits();
        if n_bits < MIN_RSA_BITS {
            return Err(bad(&format!(
                "RSA key is {n_bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        let algorithms = vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ];
        return Ok((key, algorithms));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        // The verifier parses the point for its curve; which one accepts the
        // key tells the curve, and so the only algorithm we allow.
        for algorithm in [Algorithm::ES256, Algorithm::ES384] {
            if jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm).is_ok() {
                return Ok((key, vec![algorithm]));
            }
        }
        return Err(bad("EC key is not on P-256 (ES256) or P-384 (ES384)"));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        if jsonwebtoken::crypto::verify("AA", b"probe", &key, Algorithm::EdDSA).is_ok() {
            return Ok((key, vec![Algorithm::EdDSA]));
        }
        return Err(bad("invalid Ed25519 public key"));
    }
    Err(bad(
        "not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM form",
    ))
}

struct VerifyingKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    validation: Validation,
}

struct Inner {
    keys: Vec<VerifyingKey>,
    leeway_seconds: u64,
    cache: TokenCache,
}

/// Verifies bearer tokens. Cheap to share behind an `Arc`; all methods take
/// `&self`.
pub struct Authenticator {
    // None: no key configured, everyone is anonymous.
    inner: Option<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Authenticator(disabled)"),
            Some(inner) => {
                let algorithms: Vec<&Algorithm> = inner
                    .keys
                    .iter()
                    .flat_map(|k| k.algorithms.iter())
                    .collect();
                write!(f, "Authenticator(algorithms: {algorithms:?})")
            }
        }
    }
}

impl Authenticator {
    /// An authenticator that admits everyone as [`Principal::anonymous`].
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// True when tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Verifies the value of the `Authorization` header (`Bearer <jwt>`).
    /// When authentication is off, any header (or none) gives
    /// [`Principal::anonymous`].
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.verify_at(authorization, SystemTime::now())
    }

    /// [`Authenticator::verify`] as of `now`, for tests.
    pub fn verify_at(
        &self,
        authorization: Option<&str>,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(Principal::anonymous());
        };
        let token = bearer_token(authorization)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = inner.cache.get(&digest, now) {
            return Ok(principal);
        }

        let algorithm = peek_algorithm(token)?;
        let key = inner
            .keys
            .iter()
            .find(|key| key.algorithms.contains(&algorithm))
            .ok_or(AuthError::UnsupportedAlgorithm)?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &key.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let principal = data.claims.into_principal(now, inner.leeway_seconds)?;
        inner.cache.insert(digest, principal.clone(), now);
        Ok(principal)
    }
}

/// Extracts the token from `Bearer <token>`; the scheme is case-insensitive
/// (RFC 7235 §2.1).
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or("");
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    if value.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

// Tolerates padding some encoders add, though RFC 7515 says none.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Deserialize)]
struct HeaderPeek {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Reads `alg` ourselves so unknown names such as `none` are reported as an
/// unsupported algorithm instead of a parse failure.
fn peek_algorithm(token: &str) -> Result<Algorithm, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = BASE64URL.decode(header).map_err(|_| AuthError::Malformed)?;
    let peek: HeaderPeek = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    // RFC 7515 §4.1.11: extensions we do not understand must be refused.
    if peek.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    Algorithm::from_str(&peek.alg).map_err(|_| AuthError::UnsupportedAlgorithm)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::UnsupportedAlgorithm
        }
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Malformed,
    }
}

#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    exp: serde_json::Number,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    // Okta and Azure AD put scopes in `scp`.
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

/// NumericDate (RFC 7519 §2) may be fractional; negative or absurd values
/// are malformed.
fn numeric_date(number: &serde_json::Number) -> Result<u64, AuthError> {
    if let Some(seconds) = number.as_u64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 && seconds < u64::MAX as f64 => {
            Ok(seconds.floor() as u64)
        }
        _ => Err(AuthError::Malformed),
    }
}

impl RawClaims {
    fn into_principal(self, now: SystemTime, leeway_seconds: u64) -> Result<Principal, AuthError> {
        let now_seconds = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let exp = numeric_date(&self.exp)?;
        if now_seconds > exp.saturating_add(leeway_seconds) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = &self.nbf {
            if numeric_date(nbf)? > now_seconds.saturating_add(leeway_seconds) {
                return Err(AuthError::NotYetValid);
            }
        }
        if self.sub.is_empty() {
            return Err(AuthError::Malformed);
        }
        let scopes = match self.scope.or(self.scp) {
            None => Scopes::default(),
            Some(ScopeClaim::Text(text)) => Scopes::parse(&text),
            Some(ScopeClaim::List(list)) => Scopes::from_names(list.iter().map(String::as_str)),
        };
        Ok(Principal {
            subject: self.sub,
            scopes,
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
            anonymous: false,
        })
    }
}

/// Why a request is not authenticated. Every variant is a 401
/// `UNAUTHORIZED`; [`AuthError::message`] is safe to send to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Not `Bearer <jwt>`, not a JWT, or required claims missing/invalid.
    #[error("malformed bearer token")]
    Malformed,
    /// The signature does not verify with the configured key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is missing or does not name this service.
    #[error("wrong token audience")]
    WrongAudience,
    /// `iss` is missing or not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `alg` is not one the configured keys allow (including `none`).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
}

impl AuthError {
    /// Message for the error body; never contains the token.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => "Missing bearer token: send Authorization: Bearer <jwt>",
            AuthError::Malformed => "Malformed bearer token",
            AuthError::BadSignature => "Token signature is invalid",
            AuthError::Expired => "Token has expired",
            AuthError::NotYetValid => "Token is not valid yet (nbf is in the future)",
            AuthError::WrongAudience => "Token audience is not accepted by this service",
            AuthError::WrongIssuer => "Token issuer is not accepted by this service",
            AuthError::UnsupportedAlgorithm => "Token algorithm is not accepted by this service",
        }
    }

    /// Always 401.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::UNAUTHORIZED
    }

    /// The API error code, `UNAUTHORIZED`.
    pub fn code(&self) -> &'static str {
        "UNAUTHORIZED"
    }

    /// Value for the `WWW-Authenticate` response header (RFC 6750 §3).
    pub fn www_authenticate(&self) -> http::HeaderValue {
        match self {
            // RFC 6750 §3.1: no error code when the request had no credentials.
            AuthError::Missing => http::HeaderValue::from_static("Bearer"),
            _ => http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        }
    }
}

/// Who is calling. Built by [`Authenticator::verify`] or
/// [`Principal::anonymous`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: sessions and dynamic functions are owned by it.
    pub subject: String,
    /// What the caller may do.
    pub scopes: Scopes,
    /// The token's `exp`; `None` for the anonymous principal.
    pub expires_at: Option<SystemTime>,
    anonymous: bool,
}

impl Principal {
    /// A verified caller; for tests of code that consumes principals.
    pub fn new(subject: impl Into<String>, scopes: Scopes, expires_at: Option<SystemTime>) -> Self {
        Self {
            subject: subject.into(),
            scopes,
            expires_at,
            anonymous: false,
        }
    }

    /// The caller when authentication is off: subject `anonymous`, allowed
    /// everything.
    pub fn anonymous() -> Self {
        Self {
            subject: ANONYMOUS_SUBJECT.to_owned(),
            scopes: Scopes::unrestricted(),
            expires_at: None,
            anonymous: true,
        }
    }

    /// True for [`Principal::anonymous`]: rate limit by client IP instead of
    /// subject.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The `scope` claim, parsed once. `admin` implies every other scope.
/// Unknown scope names are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    unrestricted: bool,
    admin: bool,
    execute_all: bool,
    execute_languages: Vec<String>,
    read_functions: bool,
    write_functions: bool,
}

impl Scopes {
    /// Parses a space-separated `scope` claim.
    pub fn parse(space_separated: &str) -> Self {
        Self::from_names(space_separated.split_ascii_whitespace())
    }

    /// Builds scopes from individual names (a `scp` array).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut scopes = Self::default();
        for name in names {
            match name {
                "admin" => scopes.admin = true,
                "execute:all" => scopes.execute_all = true,
                "read:functions" => scopes.read_functions = true,
                "write:functions" => scopes.write_functions = true,
                _ => {
                    if let Some(language) = name.strip_prefix("execute:") {
                        if !language.is_empty()
                            && !scopes.execute_languages.iter().any(|l| l == language)
                        {
                            scopes.execute_languages.push(language.to_owned());
                        }
                    }
                }
            }
        }
        scopes
    }

    /// Everything allowed: the anonymous principal's scopes.
    pub fn unrestricted() -> Self {
        Self {
            unrestricted: true,
            ..Self::default()
        }
    }

    /// May initialize/execute (and read its sessions) in `language`, the
    /// canonical language name after alias resolution (`nodejs`, not `js`).
    pub fn allows_execute(&self, language: &str) -> bool {
        self.is_admin() || self.execute_all || self.execute_languages.iter().any(|l| l == language)
    }

    /// May list and read functions.
    pub fn allows_read_functions(&self) -> bool {
        self.is_admin() || self.read_functions
    }

    /// May register, update and retire (its own) functions.
    pub fn allows_write_functions(&self) -> bool {
        self.is_admin() || self.write_functions
    }

    /// May act on anything regardless of owner.
    pub fn is_admin(&self) -> bool {
        self.unrestricted || self.admin
    }
}

/// Verified tokens by SHA-256, so repeated requests skip signature checks
/// (RSA verification costs far more than a hash and a map lookup). Keyed by
/// hash so the map never holds tokens themselves.
struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Principal>>,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Principal>> {
        // A panic while holding the lock cannot leave a half-written entry
        // that matters: at worst a token is verified again.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, digest: &[u8; 32], now: SystemTime) -> Option<Principal> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.lock();
        let principal = entries.get(digest)?;
        if is_live(principal, now) {
            return Some(principal.clone());
        }
        entries.remove(digest);
        None
    }

    fn insert(&self, digest: [u8; 32], principal: Principal, now: SystemTime) {
        if self.capacity == 0 || !is_live(&principal, now) {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, p| is_live(p, now));
        }
        if entries.len() >= self.capacity {
            // All live: drop an arbitrary tenth. Those callers only pay one
            // more signature check; an LRU is not worth its bookkeeping here.
            let n_evict = (self.capacity / 10).max(1);
            let victims: Vec<[u8; 32]> = entries.keys().take(n_evict).copied().collect();
            for victim in victims {
                entries.remove(&victim);
            }
        }
        entries.insert(digest, principal);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Cached claims are used strictly before `exp` (no leeway), so the cache
/// can only be stricter than a fresh verification.
fn is_live(principal: &Principal, now: SystemTime) -> bool {
    principal.expires_at.is_some_and(|exp| now < exp)
}

#[cfg(test)]
mod tests;
