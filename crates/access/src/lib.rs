//! Access and traffic policy for Lambda Microservice, kept free of any HTTP
//! framework so every rule can be unit tested.
//!
//! Owns: verifying JWT bearer tokens and their scopes ([`auth`]), the rule
//! that an unauthenticated service may only listen on loopback ([`startup`]),
//! per-route-class rate limits ([`rate_limit`]), deciding which client
//! address a request came from ([`mod@client_ip`]) and masking secrets before
//! anything is logged or stored ([`mask`]).
//!
//! Depends only on `http` types, `jsonwebtoken` and serde; the API crate
//! wires these pieces into axum and maps their errors to status codes.
//! Invariant: nothing here reads the environment or logs; config comes in
//! as plain structs whose fields document the env var they stand for.

#![deny(missing_docs)]

pub mod auth;
pub mod client_ip;
pub mod mask;
pub mod rate_limit;
pub mod startup;
pub mod testing;

pub use auth::{AuthConfig, AuthError, Authenticator, ConfigError, Principal, Scopes};
pub use client_ip::{client_ip, TrustedProxies, TrustedProxiesError};
pub use mask::{mask_headers, mask_secrets};
pub use rate_limit::{Decision, RateKey, RateLimitConfig, RateLimiter, RouteClass};
pub use startup::{BindMode, StartupError, StartupPolicy};

/// Every access setting in one place, for the service's config struct.
/// Each field documents the env vars it stands for.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// `JWT_SECRET`/`JWT_SECRET_FILE`, `JWT_PUBLIC_KEY_FILE`, `JWT_ISSUER`,
    /// `JWT_AUDIENCE`, `JWT_LEEWAY_SECONDS`.
    pub auth: AuthConfig,
    /// `ALLOW_ANONYMOUS=true`: serve without auth on a non-loopback address.
    pub allow_anonymous: bool,
    /// `RATE_LIMIT_EXECUTE_PER_MINUTE`, `RATE_LIMIT_EXECUTE_ANONYMOUS_PER_MINUTE`,
    /// `RATE_LIMIT_FUNCTIONS_PER_MINUTE`, `RATE_LIMIT_OTHER_PER_MINUTE`.
    pub rate_limits: RateLimitConfig,
    /// `TRUSTED_PROXIES` (parse with `str::parse`).
    pub trusted_proxies: TrustedProxies,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_state_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Authenticator>();
        assert_send_sync::<RateLimiter>();
        assert_send_sync::<TrustedProxies>();
    }
}
