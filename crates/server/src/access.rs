//! Authentication and traffic policy from the environment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use lambda_access::auth::resolve_secret;
use lambda_access::{
    AuthConfig, Authenticator, BindMode, RateLimitConfig, RateLimiter, StartupPolicy,
    TrustedProxies,
};
use lambda_core::config::{read_var, Env, ProcessEnv};
use lambda_core::Config;

pub struct Access {
    pub authenticator: Authenticator,
    pub rate_limiter: RateLimiter,
    pub trusted_proxies: TrustedProxies,
}

fn number<T: std::str::FromStr>(env: &dyn Env, name: &str, default: T) -> anyhow::Result<T> {
    match read_var(env, name)? {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            anyhow::anyhow!("invalid configuration: {name}: '{text}' is not a whole number")
        }),
    }
}

fn flag(env: &dyn Env, name: &str) -> anyhow::Result<bool> {
    match read_var(env, name)?.as_deref().map(str::trim) {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => bail!("invalid configuration: {name}: '{other}' is not true or false"),
    }
}

pub fn from_env(config: &Config) -> anyhow::Result<Access> {
    let env = &ProcessEnv;
    let secret = resolve_secret(
        "JWT_SECRET",
        env.get("JWT_SECRET").filter(|value| !value.is_empty()),
        env.get("JWT_SECRET_FILE").map(PathBuf::from).as_deref(),
    )?;
    let public_key_pem = match env.get("JWT_PUBLIC_KEY_FILE") {
        None => None,
        Some(path) => Some(std::fs::read_to_string(&path).with_context(|| {
            format!("invalid configuration: JWT_PUBLIC_KEY_FILE: cannot read '{path}'")
        })?),
    };
    let auth = AuthConfig {
        hs256_secret: secret,
        public_key_pem,
        issuer: read_var(env, "JWT_ISSUER")?,
        audience: read_var(env, "JWT_AUDIENCE")?,
        leeway_seconds: number(env, "JWT_LEEWAY_SECONDS", 30)?,
        ..AuthConfig::default()
    };
    let allow_anonymous = flag(env, "ALLOW_ANONYMOUS")?;
    match StartupPolicy::check_bind(config.bind_addr, auth.is_configured(), allow_anonymous)? {
        BindMode::Authenticated => tracing::info!("JWT authentication is on"),
        BindMode::OpenLoopback => {
            tracing::info!(bind = %config.bind_addr, "no JWT key configured: serving without authentication on loopback only")
        }
        BindMode::OpenAnonymousAllowed => tracing::warn!(
            bind = %config.bind_addr,
            "ALLOW_ANONYMOUS=true: serving WITHOUT authentication on a reachable address"
        ),
    }
    let authenticator = auth.load()?;
    let defaults = RateLimitConfig::default();
    let rate_limits = RateLimitConfig {
        execute_per_minute: number(
            env,
            "RATE_LIMIT_EXECUTE_PER_MINUTE",
            defaults.execute_per_minute,
        )?,
        execute_anonymous_per_minute: number(
            env,
            "RATE_LIMIT_EXECUTE_ANONYMOUS_PER_MINUTE",
            defaults.execute_anonymous_per_minute,
        )?,
        functions_per_minute: number(
            env,
            "RATE_LIMIT_FUNCTIONS_PER_MINUTE",
            defaults.functions_per_minute,
        )?,
        other_per_minute: number(
            env,
            "RATE_LIMIT_OTHER_PER_MINUTE",
            defaults.other_per_minute,
        )?,
        window: Duration::from_secs(
            number(env, "RATE_LIMIT_WINDOW_SECONDS", defaults.window.as_secs())?.max(1),
        ),
        ..defaults
    };
    let trusted_proxies = match read_var(env, "TRUSTED_PROXIES")? {
        None => TrustedProxies::none(),
        Some(text) => text
            .parse()
            .map_err(|error| anyhow::anyhow!("invalid configuration: TRUSTED_PROXIES: {error}"))?,
    };
    Ok(Access {
        authenticator,
        rate_limiter: RateLimiter::new(rate_limits),
        trusted_proxies,
    })
}
