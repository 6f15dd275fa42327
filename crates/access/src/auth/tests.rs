use std::sync::OnceLock;

use serde_json::{json, Value};

use super::*;
use crate::testing::{
    mint_hs256, mint_hs256_claims, mint_unsigned, mint_with_pem, unix_seconds, Algorithm,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

struct KeyPair {
    private_pem: String,
    public_pem: String,
}

fn rsa_key_pair(bits: usize) -> KeyPair {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
    KeyPair {
        private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

// RSA key generation is slow in debug builds: once per test binary.
fn rsa_keys() -> &'static KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| rsa_key_pair(2048))
}

fn other_rsa_keys() -> &'static KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| rsa_key_pair(2048))
}

fn ec_keys() -> KeyPair {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    KeyPair {
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn now() -> u64 {
    unix_seconds(SystemTime::now())
}

fn claims(extra: Value) -> Value {
    let mut claims =
        json!({"sub": "alice", "scope": "execute:nodejs read:functions", "exp": now() + 300});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    claims
}

fn hs256_auth() -> Authenticator {
    AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap()
}

fn rs256_auth() -> Authenticator {
    AuthConfig {
        public_key_pem: Some(rsa_keys().public_pem.clone()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn verify(auth: &Authenticator, token: &str) -> Result<Principal, AuthError> {
    auth.verify(Some(&bearer(token)))
}

#[test]
fn valid_hs256_token_gives_its_principal() {
    let token = mint_hs256(
        SECRET,
        "alice",
        "execute:nodejs read:functions",
        Duration::from_secs(60),
    )
    .unwrap();
    let principal = verify(&hs256_auth(), &token).unwrap();
    assert_eq!(principal.subject, "alice");
    assert!(!principal.is_anonymous());
    assert!(principal.scopes.allows_execute("nodejs"));
    assert!(!principal.scopes.allows_execute("python"));
    assert!(principal.scopes.allows_read_functions());
    assert!(!principal.scopes.allows_write_functions());
    assert!(!principal.scopes.is_admin());
    let exp = principal.expires_at.unwrap();
    let ttl = exp.duration_since(SystemTime::now()).unwrap();
    assert!(ttl <= Duration::from_secs(60) && ttl >= Duration::from_secs(55));
}

#[test]
fn missing_and_malformed_headers() {
    let auth = hs256_auth();
    assert_eq!(auth.verify(None), Err(AuthError::Missing));
    assert_eq!(auth.verify(Some("")), Err(AuthError::Missing));
    assert_eq!(auth.verify(Some("   ")), Err(AuthError::Missing));
    let token = mint_hs256(SECRET, "alice", "", Duration::from_secs(60)).unwrap();
    for bad in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Basic {token}"),
        format!("Token {token}"),
        token.clone(),
        "Bearer a.b".to_owned(),
        "Bearer a.b.c.d".to_owned(),
        "Bearer abc.def.ghi".to_owned(),
        "Bearer !!!.e30.sig".to_owned(),
        format!("Bearer {token} extra"),
        format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES)),
    ] {
        assert_eq!(
            auth.verify(Some(&bad)),
            Err(AuthError::Malformed),
            "{bad:?}"
        );
    }
    // The scheme is case-insensitive.
    assert!(auth.verify(Some(&format!("bearer {token}"))).is_ok());
    assert!(auth.verify(Some(&format!("BEARER  {token} "))).is_ok());
}

#[test]
fn missing_exp_or_sub_is_malformed() {
    let auth = hs256_auth();
    let no_exp = mint_hs256_claims(SECRET, &json!({"sub": "alice"})).unwrap();
    assert_eq!(verify(&auth, &no_exp), Err(AuthError::Malformed));
    let no_sub = mint_hs256_claims(SECRET, &json!({"exp": now() + 60})).unwrap();
    assert_eq!(verify(&auth, &no_sub), Err(AuthError::Malformed));
    let empty_sub = mint_hs256_claims(SECRET, &claims(json!({"sub": ""}))).unwrap();
    assert_eq!(verify(&auth, &empty_sub), Err(AuthError::Malformed));
    let text_exp = mint_hs256_claims(SECRET, &claims(json!({"exp": "tomorrow"}))).unwrap();
    assert_eq!(verify(&auth, &text_exp), Err(AuthError::Malformed));
}

#[test]
fn wrong_secret_or_tampered_payload_is_bad_signature() {
    let auth = hs256_auth();
    let other = mint_hs256_claims("another-secret-another-secret-xx", &claims(json!({}))).unwrap();
    assert_eq!(verify(&auth, &other), Err(AuthError::BadSignature));

    let token = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(json!({"scope": "admin"}))).unwrap())
    };
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(verify(&auth, &tampered), Err(AuthError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let token = mint_unsigned(&claims(json!({}))).unwrap();
    assert_eq!(
        verify(&hs256_auth(), &token),
        Err(AuthError::UnsupportedAlgorithm)
    );
    assert_eq!(
        verify(&rs256_auth(), &token),
        Err(AuthError::UnsupportedAlgorithm)
    );
    // Also with a bogus signature attached.
    assert_eq!(
        verify(&hs256_auth(), &format!("{token}c2ln")),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn expiry_honours_leeway() {
    let auth = hs256_auth();
    let expired = mint_hs256_claims(SECRET, &claims(json!({"exp": now() - 120}))).unwrap();
    assert_eq!(verify(&auth, &expired), Err(AuthError::Expired));
    let within_leeway = mint_hs256_claims(SECRET, &claims(json!({"exp": now() - 10}))).unwrap();
    assert!(verify(&auth, &within_leeway).is_ok());

    let strict = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        leeway_seconds: 0,
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    assert_eq!(verify(&strict, &within_leeway), Err(AuthError::Expired));
}

#[test]
fn not_yet_valid_is_refused() {
    let auth = hs256_auth();
    let future = mint_hs256_claims(SECRET, &claims(json!({"nbf": now() + 120}))).unwrap();
    assert_eq!(verify(&auth, &future), Err(AuthError::NotYetValid));
    let within_leeway = mint_hs256_claims(SECRET, &claims(json!({"nbf": now() + 10}))).unwrap();
    assert!(verify(&auth, &within_leeway).is_ok());
    let past = mint_hs256_claims(SECRET, &claims(json!({"nbf": now() - 10}))).unwrap();
    assert!(verify(&auth, &past).is_ok());
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let auth = hs256_auth();
    let token = mint_hs256_claims(SECRET, &claims(json!({"exp": now() as f64 + 60.5}))).unwrap();
    assert!(verify(&auth, &token).is_ok());
    let negative = mint_hs256_claims(SECRET, &claims(json!({"exp": -5}))).unwrap();
    assert_eq!(verify(&auth, &negative), Err(AuthError::Malformed));
}

#[test]
fn audience_is_checked_when_configured() {
    let auth = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        audience: Some("lambda".to_owned()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    let right = mint_hs256_claims(SECRET, &claims(json!({"aud": "lambda"}))).unwrap();
    assert!(verify(&auth, &right).is_ok());
    let in_list = mint_hs256_claims(SECRET, &claims(json!({"aud": ["other", "lambda"]}))).unwrap();
    assert!(verify(&auth, &in_list).is_ok());
    let wrong = mint_hs256_claims(SECRET, &claims(json!({"aud": "other"}))).unwrap();
    assert_eq!(verify(&auth, &wrong), Err(AuthError::WrongAudience));
    let missing = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    assert_eq!(verify(&auth, &missing), Err(AuthError::WrongAudience));

    // Not configured: aud is not checked at all.
    assert!(verify(&hs256_auth(), &wrong).is_ok());
}

#[test]
fn issuer_is_checked_when_configured() {
    let auth = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        issuer: Some("https://idp.example".to_owned()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    let right = mint_hs256_claims(SECRET, &claims(json!({"iss": "https://idp.example"}))).unwrap();
    assert!(verify(&auth, &right).is_ok());
    let wrong = mint_hs256_claims(SECRET, &claims(json!({"iss": "https://evil.example"}))).unwrap();
    assert_eq!(verify(&auth, &wrong), Err(AuthError::WrongIssuer));
    let missing = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    assert_eq!(verify(&auth, &missing), Err(AuthError::WrongIssuer));
}

#[test]
fn rs256_token_verifies_with_the_public_key() {
    let token = mint_with_pem(
        Algorithm::RS256,
        rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    let principal = verify(&rs256_auth(), &token).unwrap();
    assert_eq!(principal.subject, "alice");
    let pss = mint_with_pem(
        Algorithm::PS256,
        rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert!(verify(&rs256_auth(), &pss).is_ok());
}

#[test]
fn rs256_token_from_another_key_is_bad_signature() {
    let token = mint_with_pem(
        Algorithm::RS256,
        other_rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert_eq!(verify(&rs256_auth(), &token), Err(AuthError::BadSignature));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let public_pem = rsa_keys().public_pem.as_bytes();
    let confused = mint_hs256_claims(public_pem, &claims(json!({"scope": "admin"}))).unwrap();
    assert_eq!(
        verify(&rs256_auth(), &confused),
        Err(AuthError::UnsupportedAlgorithm)
    );
    // Trimmed PEM bytes are another common variant of the attack.
    let trimmed =
        mint_hs256_claims(rsa_keys().public_pem.trim().as_bytes(), &claims(json!({}))).unwrap();
    assert_eq!(
        verify(&rs256_auth(), &trimmed),
        Err(AuthError::UnsupportedAlgorithm)
    );

    // With both a secret and a public key configured, HS256 is checked
    // against the secret only.
    let both = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        public_key_pem: Some(rsa_keys().public_pem.clone()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    assert_eq!(verify(&both, &confused), Err(AuthError::BadSignature));
    let hs = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    assert!(verify(&both, &hs).is_ok());
    let rs = mint_with_pem(
        Algorithm::RS256,
        rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert!(verify(&both, &rs).is_ok());
}

#[test]
fn hs256_token_is_refused_when_only_rsa_is_configured() {
    let token = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    assert_eq!(
        verify(&rs256_auth(), &token),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn es256_key_is_detected_and_only_es256_accepted() {
    let keys = ec_keys();
    let auth = AuthConfig {
        public_key_pem: Some(keys.public_pem.clone()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    let token = mint_with_pem(
        Algorithm::ES256,
        keys.private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert_eq!(verify(&auth, &token).unwrap().subject, "alice");

    let other = ec_keys();
    let forged = mint_with_pem(
        Algorithm::ES256,
        other.private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert_eq!(verify(&auth, &forged), Err(AuthError::BadSignature));

    let rs = mint_with_pem(
        Algorithm::RS256,
        rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert_eq!(verify(&auth, &rs), Err(AuthError::UnsupportedAlgorithm));
    let confused = mint_hs256_claims(keys.public_pem.as_bytes(), &claims(json!({}))).unwrap();
    assert_eq!(
        verify(&auth, &confused),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn bad_keys_fail_at_load_with_clear_errors() {
    let load_pem = |pem: &str| {
        AuthConfig {
            public_key_pem: Some(pem.to_owned()),
            ..AuthConfig::default()
        }
        .load()
    };
    let message = |pem: &str| load_pem(pem).unwrap_err().to_string();

    assert!(message("not a pem").contains("JWT_PUBLIC_KEY_FILE"));
    assert!(message("not a pem").contains("not a PEM"));
    let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        load_pem(garbage),
        Err(ConfigError::BadPublicKey { .. })
    ));
    assert!(message(&rsa_keys().private_pem).contains("private key"));
    assert!(message(&ec_keys().private_pem).contains("private key"));
    let certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(message(certificate).contains("certificate"));

    let small = rsa_key_pair(1024);
    assert!(message(&small.public_pem).contains("1024 bits"));

    let weak = AuthConfig {
        hs256_secret: Some("short".to_owned()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap_err();
    assert!(matches!(weak, ConfigError::WeakSecret { n_bytes: 5 }));
    assert!(weak.to_string().contains("JWT_SECRET"));

    let empty_audience = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        audience: Some(String::new()),
        ..AuthConfig::default()
    }
    .load()
    .unwrap_err();
    assert!(empty_audience.to_string().contains("JWT_AUDIENCE"));
}

#[test]
fn pkcs1_rsa_public_key_is_accepted() {
    use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey, LineEnding};
    use rsa::pkcs8::DecodePublicKey;
    let public = rsa::RsaPublicKey::from_public_key_pem(&rsa_keys().public_pem).unwrap();
    let pkcs1 = public.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert!(pkcs1.contains("RSA PUBLIC KEY"));
    assert!(rsa::RsaPublicKey::from_pkcs1_pem(&pkcs1).is_ok());
    let auth = AuthConfig {
        public_key_pem: Some(pkcs1),
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    let token = mint_with_pem(
        Algorithm::RS256,
        rsa_keys().private_pem.as_bytes(),
        &claims(json!({})),
    )
    .unwrap();
    assert!(verify(&auth, &token).is_ok());
}

#[test]
fn disabled_auth_admits_everyone_as_anonymous() {
    let auth = AuthConfig::default().load().unwrap();
    assert!(!auth.is_enabled());
    for header in [None, Some("Bearer garbage"), Some("")] {
        let principal = auth.verify(header).unwrap();
        assert!(principal.is_anonymous());
        assert_eq!(principal.subject, ANONYMOUS_SUBJECT);
        assert!(principal.scopes.allows_execute("wasm"));
        assert!(principal.scopes.allows_read_functions());
        assert!(principal.scopes.allows_write_functions());
        assert!(principal.scopes.is_admin());
    }
    assert!(hs256_auth().is_enabled());
}

#[test]
fn cache_never_serves_a_token_past_exp() {
    let auth = hs256_auth();
    let exp = now() + 100;
    let token = mint_hs256_claims(SECRET, &claims(json!({"exp": exp}))).unwrap();
    let header = bearer(&token);
    let before = UNIX_EPOCH + Duration::from_secs(exp - 50);
    assert!(auth.verify_at(Some(&header), before).is_ok());
    assert_eq!(cache_len(&auth), 1);
    // Served from the cache...
    assert!(auth.verify_at(Some(&header), before).is_ok());
    // ...but not after exp plus leeway.
    let after = UNIX_EPOCH + Duration::from_secs(exp + 31);
    assert_eq!(
        auth.verify_at(Some(&header), after),
        Err(AuthError::Expired)
    );
    assert_eq!(cache_len(&auth), 0);
}

#[test]
fn cache_is_keyed_by_the_whole_token() {
    let auth = hs256_auth();
    let token = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    assert!(verify(&auth, &token).is_ok());
    // A different signature on the same claims must not hit the cache.
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_ne!(forged, token);
    assert!(verify(&auth, &forged).is_err());
}

#[test]
fn cache_is_bounded() {
    let auth = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        cache_capacity: 5,
        ..AuthConfig::default()
    }
    .load()
    .unwrap();
    for i in 0..50 {
        let token = mint_hs256(SECRET, &format!("user-{i}"), "", Duration::from_secs(60)).unwrap();
        assert_eq!(verify(&auth, &token).unwrap().subject, format!("user-{i}"));
        assert!(cache_len(&auth) <= 5);
    }
}

fn cache_len(auth: &Authenticator) -> usize {
    auth.inner
        .as_ref()
        .map(|inner| inner.cache.len())
        .unwrap_or(0)
}

#[test]
fn scopes_parse() {
    let scopes = Scopes::parse("execute:python  execute:wasm unknown write:functions");
    assert!(scopes.allows_execute("python"));
    assert!(scopes.allows_execute("wasm"));
    assert!(!scopes.allows_execute("nodejs"));
    assert!(!scopes.allows_execute(""));
    assert!(scopes.allows_write_functions());
    assert!(!scopes.allows_read_functions());
    assert!(!scopes.is_admin());

    let all = Scopes::parse("execute:all");
    for language in ["nodejs", "python", "rust", "wasm"] {
        assert!(all.allows_execute(language));
    }
    assert!(!all.allows_read_functions());

    let admin = Scopes::parse("admin");
    assert!(admin.is_admin());
    assert!(admin.allows_execute("rust"));
    assert!(admin.allows_read_functions());
    assert!(admin.allows_write_functions());

    let none = Scopes::parse("");
    assert!(!none.allows_execute("nodejs"));
    assert!(!none.allows_read_functions());
    // "execute:" alone names no language.
    assert!(!Scopes::parse("execute:").allows_execute(""));
}

#[test]
fn scp_array_claim_is_read() {
    let token = mint_hs256_claims(
        SECRET,
        &json!({"sub": "bob", "exp": now() + 60, "scp": ["execute:rust"]}),
    )
    .unwrap();
    let principal = verify(&hs256_auth(), &token).unwrap();
    assert!(principal.scopes.allows_execute("rust"));
    let list = mint_hs256_claims(SECRET, &claims(json!({"scope": ["read:functions"]}))).unwrap();
    assert!(verify(&hs256_auth(), &list)
        .unwrap()
        .scopes
        .allows_read_functions());
}

#[test]
fn errors_are_401_and_never_echo_the_token() {
    let token =
        mint_hs256_claims("wrong-secret-wrong-secret-wrong-xx", &claims(json!({}))).unwrap();
    let err = verify(&hs256_auth(), &token).unwrap_err();
    assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(err.code(), "UNAUTHORIZED");
    for text in [
        err.message().to_owned(),
        err.to_string(),
        format!("{err:?}"),
    ] {
        assert!(!text.contains(&token[..20]));
    }
    assert_eq!(AuthError::Missing.www_authenticate(), "Bearer");
    assert_eq!(
        AuthError::Expired.www_authenticate(),
        "Bearer error=\"invalid_token\""
    );
}

#[test]
fn config_debug_hides_the_secret() {
    let config = AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        ..AuthConfig::default()
    };
    assert!(!format!("{config:?}").contains(SECRET));
    assert!(!format!("{:?}", config.load().unwrap()).contains(SECRET));
}

#[test]
fn secret_from_value_or_file() {
    let dir = std::env::temp_dir().join(format!("lambda-access-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "s3cret\r\n\n").unwrap();
    assert_eq!(
        resolve_secret("JWT_SECRET", None, Some(&file)).unwrap(),
        Some("s3cret".to_owned())
    );
    assert_eq!(
        resolve_secret("JWT_SECRET", Some("v".to_owned()), None).unwrap(),
        Some("v".to_owned())
    );
    assert_eq!(resolve_secret("JWT_SECRET", None, None).unwrap(), None);
    let both = resolve_secret("JWT_SECRET", Some("v".to_owned()), Some(&file)).unwrap_err();
    assert!(both.to_string().contains("JWT_SECRET_FILE"));
    let missing = resolve_secret("JWT_SECRET", None, Some(&dir.join("nope"))).unwrap_err();
    assert!(missing.to_string().contains("JWT_SECRET"));
    std::fs::remove_dir_all(&dir).unwrap();
}
