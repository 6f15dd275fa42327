//! The safe-default rule: without a key the service runs open only on
//! loopback, unless the operator says `ALLOW_ANONYMOUS=true` on purpose.

use std::net::{IpAddr, SocketAddr};

/// How the service is exposed, once [`StartupPolicy::check_bind`] allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Tokens are required.
    Authenticated,
    /// No auth, but only this machine can connect.
    OpenLoopback,
    /// No auth on a reachable address, because `ALLOW_ANONYMOUS=true`: the
    /// caller should log a warning.
    OpenAnonymousAllowed,
}

/// Refusal to start, with the fix in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve without authentication on {bind_addr}, which is reachable \
     from other machines. Fix one of: set JWT_SECRET (or JWT_SECRET_FILE) for HS256 \
     tokens or JWT_PUBLIC_KEY_FILE for RS256/ES256 tokens; or set ALLOW_ANONYMOUS=true \
     to run open on purpose; or bind a loopback address such as 127.0.0.1"
)]
pub struct StartupError {
    /// The address that was refused.
    pub bind_addr: SocketAddr,
}

/// Start-up checks on the access configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartupPolicy;

impl StartupPolicy {
    /// Decides whether the service may listen on `bind_addr`.
    /// `auth_configured`: a JWT key is configured
    /// ([`crate::AuthConfig::is_configured`]); `allow_anonymous`:
    /// `ALLOW_ANONYMOUS=true`.
    pub fn check_bind(
        bind_addr: SocketAddr,
        auth_configured: bool,
        allow_anonymous: bool,
    ) -> Result<BindMode, StartupError> {
        if auth_configured {
            Ok(BindMode::Authenticated)
        } else if is_loopback(bind_addr.ip()) {
            Ok(BindMode::OpenLoopback)
        } else if allow_anonymous {
            Ok(BindMode::OpenAnonymousAllowed)
        } else {
            Err(StartupError { bind_addr })
        }
    }
}

// `::ffff:127.0.0.1` is loopback too; 0.0.0.0 and `::` are every interface.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn any_address_is_fine_with_auth() {
        for a in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80", "127.0.0.1:1"] {
            assert_eq!(
                StartupPolicy::check_bind(addr(a), true, false),
                Ok(BindMode::Authenticated)
            );
        }
    }

    #[test]
    fn loopback_may_run_open() {
        for a in [
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                StartupPolicy::check_bind(addr(a), false, false),
                Ok(BindMode::OpenLoopback),
                "{a}"
            );
        }
    }

    #[test]
    fn unspecified_without_auth_is_refused_with_the_fix() {
        for a in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:8080"] {
            let err = StartupPolicy::check_bind(addr(a), false, false).unwrap_err();
            let message = err.to_string();
            for fix in [
                "JWT_SECRET",
                "JWT_SECRET_FILE",
                "JWT_PUBLIC_KEY_FILE",
                "ALLOW_ANONYMOUS=true",
                "127.0.0.1",
            ] {
                assert!(message.contains(fix), "{message:?} lacks {fix}");
            }
            assert!(message.contains(&addr(a).to_string()));
        }
    }

    #[test]
    fn allow_anonymous_opens_a_public_bind() {
        assert_eq!(
            StartupPolicy::check_bind(addr("0.0.0.0:8080"), false, true),
            Ok(BindMode::OpenAnonymousAllowed)
        );
    }
}
