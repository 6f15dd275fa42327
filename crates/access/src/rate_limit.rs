//! In-memory, per-replica rate limits by route class and caller.
//!
//! Algorithm: a fixed window per key, opened by the key's first request and
//! lasting one period (a minute). Within it at most `limit` requests pass;
//! the next one is refused with a `Retry-After` reaching the window's end,
//! after which a new window opens, so honouring `Retry-After` always
//! succeeds. A token bucket (GCRA) was rejected: it refills continuously, so
//! a client sending 100 requests over a few seconds could send a 101st
//! "within the minute", which the API contract forbids. The price of the
//! fixed window: a client can send up to twice the limit in a short span
//! straddling two windows.
//!
//! Limits are per replica: N replicas admit N times the configured rate. A
//! global limit belongs in the gateway in front of them.
//!
//! Memory is bounded: [`RateLimiter::sweep`] drops keys whose window has
//! ended (they are indistinguishable from new keys), and each shard holds at
//! most its share of [`RateLimitConfig::max_keys`], evicting the oldest
//! window of a small sample when full.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::auth::Principal;

/// `X-RateLimit-Limit`: requests allowed per window.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: requests left in the current window.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: whole seconds (rounded up) until the window ends.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

const N_SHARDS: usize = 16;
// Keys looked at to pick an eviction victim when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// Which limit applies to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `POST /api/v1/execute/{id}`.
    Execute,
    /// `/api/v1/functions` and below.
    Functions,
    /// Everything else under `/api/v1` (initialize, sessions).
    Other,
    /// `/health` and `/metrics`: never limited.
    Health,
}

impl RouteClass {
    /// The class of a request path (the URI path or axum's matched path).
    pub fn for_path(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        if path == "/health" || path == "/metrics" {
            Self::Health
        } else if path.starts_with("/api/v1/execute/") {
            Self::Execute
        } else if path == "/api/v1/functions" || path.starts_with("/api/v1/functions/") {
            Self::Functions
        } else {
            Self::Other
        }
    }
}

/// Who a limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated caller's `sub`.
    Subject(String),
    /// An anonymous caller's address; build with [`RateKey::ip`] so IPv6
    /// clients are grouped by /64.
    Ip(IpAddr),
}

impl RateKey {
    /// The key for a request: the subject when authenticated, else the
    /// client's address (from [`crate::client_ip()`]).
    pub fn for_request(principal: &Principal, client_ip: IpAddr) -> Self {
        if principal.is_anonymous() {
            Self::ip(client_ip)
        } else {
            Self::Subject(principal.subject.clone())
        }
    }

    /// An address key. IPv6 addresses are cut to their /64, because one
    /// host is routinely given a whole /64 and could otherwise rotate
    /// through 2^64 keys.
    pub fn ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Self::Ip(v4),
        }
    }

    fn is_subject(&self) -> bool {
        matches!(self, Self::Subject(_))
    }
}

/// Limits per window (a minute by default). Each field is the parsed value
/// of the env var named in its doc; `0` turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// `RATE_LIMIT_EXECUTE_PER_MINUTE` (default 100): executes per
    /// authenticated subject.
    pub execute_per_minute: u32,
    /// `RATE_LIMIT_EXECUTE_ANONYMOUS_PER_MINUTE` (default 10): executes per
    /// anonymous client address.
    pub execute_anonymous_per_minute: u32,
    /// `RATE_LIMIT_FUNCTIONS_PER_MINUTE` (default 60): function registry
    /// requests per subject, or per address when anonymous.
    pub functions_per_minute: u32,
    /// `RATE_LIMIT_OTHER_PER_MINUTE` (default 600): initialize and session
    /// requests per subject or address. Kept apart from execute so that an
    /// initialize does not use up an execute.
    pub other_per_minute: u32,
    /// Keys tracked at most per route class (default 100 000).
    pub max_keys: usize,
    /// Window length (default 60 s); shorter only in tests.
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            execute_per_minute: 100,
            execute_anonymous_per_minute: 10,
            functions_per_minute: 60,
            other_per_minute: 600,
            max_keys: 100_000,
            window: Duration::from_secs(60),
        }
    }
}

/// The outcome of one [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed; if not, answer 429 RATE_LIMITED.
    pub allowed: bool,
    /// Requests allowed per window; 0 when the route is not limited.
    pub limit: u32,
    /// Requests left in the current window after this one.
    pub remaining: u32,
    /// Time until the current window ends and the count starts over.
    pub reset_after: Duration,
    /// When refused: how long to wait before the next request will pass.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// An unlimited route's decision: allowed, and no headers.
    pub fn unlimited() -> Self {
        Self {
            allowed: true,
            limit: 0,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: None,
        }
    }

    /// True when a limit applied (so rate-limit headers belong on the response).
    pub fn is_limited(&self) -> bool {
        self.limit > 0
    }

    /// Adds `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
    /// (seconds, rounded up) and, when refused, `Retry-After` (whole seconds,
    /// rounded up, so waiting that long is always enough). Adds nothing for
    /// an unlimited route.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        if !self.is_limited() {
            return;
        }
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(
            X_RATELIMIT_RESET,
            HeaderValue::from(ceil_seconds(self.reset_after)),
        );
        if let Some(retry_after) = self.retry_after {
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(ceil_seconds(retry_after).max(1)),
            );
        }
    }

    /// The headers of [`Decision::apply_headers`] as a new map.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.apply_headers(&mut headers);
        headers
    }
}

fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    // Nanoseconds since the limiter's epoch.
    start_ns: u64,
    n_requests: u32,
}

struct ClassState {
    shards: Box<[Mutex<HashMap<RateKey, Window>>]>,
    shard_hasher: RandomState,
}

impl ClassState {
    fn new() -> Self {
        Self {
            shards: (0..N_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &RateKey) -> MutexGuard<'_, HashMap<RateKey, Window>> {
        let index = (self.shard_hasher.hash_one(key) as usize) % self.shards.len();
        lock(&self.shards[index])
    }
}

// A panic under the lock leaves at worst one stale counter; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-replica rate limiter; share it behind an `Arc`.
pub struct RateLimiter {
    config: RateLimitConfig,
    epoch: Instant,
    window_ns: u64,
    max_keys_per_shard: usize,
    execute: ClassState,
    functions: ClassState,
    other: ClassState,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A span in nanoseconds, as the counters keep it; 584 years and more
/// (never reached) count as the most a `u64` holds.
fn saturating_nanos(span: Duration) -> u64 {
    u64::try_from(span.as_nanos()).unwrap_or(u64::MAX)
}

impl RateLimiter {
    /// A limiter with `config`; its clock starts now.
    pub fn new(config: RateLimitConfig) -> Self {
        let window_ns = saturating_nanos(config.window).max(1);
        Self {
            max_keys_per_shard: (config.max_keys / N_SHARDS).max(1),
            config,
            epoch: Instant::now(),
            window_ns,
            execute: ClassState::new(),
            functions: ClassState::new(),
            other: ClassState::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    fn limit_for(&self, class: RouteClass, key: &RateKey) -> Option<(u32, &ClassState)> {
        let (limit, state) = match class {
            RouteClass::Health => return None,
            RouteClass::Execute if key.is_subject() => {
                (self.config.execute_per_minute, &self.execute)
            }
            RouteClass::Execute => (self.config.execute_anonymous_per_minute, &self.execute),
            RouteClass::Functions => (self.config.functions_per_minute, &self.functions),
            RouteClass::Other => (self.config.other_per_minute, &self.other),
        };
        (limit > 0).then_some((limit, state))
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        saturating_nanos(now.saturating_duration_since(self.epoch))
    }

    /// Counts one request of `class` by `key` at `now` and says whether it
    /// may proceed. Allocates only the first time a key is seen in a window.
    pub fn check(&self, class: RouteClass, key: &RateKey, now: Instant) -> Decision {
        let Some((limit, state)) = self.limit_for(class, key) else {
            return Decision::unlimited();
        };
        let now_ns = self.nanos_since_epoch(now);
        let mut shard = state.shard(key);

        if !shard.contains_key(key) {
            if shard.len() >= self.max_keys_per_shard {
                self.make_room(&mut shard, now_ns);
            }
            shard.insert(
                key.clone(),
                Window {
                    start_ns: now_ns,
                    n_requests: 0,
                },
            );
        }
        let Some(window) = shard.get_mut(key) else {
            // Unreachable: inserted just above under the same lock.
            return Decision::unlimited();
        };
        if now_ns >= window.start_ns.saturating_add(self.window_ns) {
            *window = Window {
                start_ns: now_ns,
                n_requests: 0,
            };
        }
        let reset_after =
            Duration::from_nanos(window.start_ns.saturating_add(self.window_ns) - now_ns);
        if window.n_requests < limit {
            window.n_requests += 1;
            Decision {
                allowed: true,
                limit,
                remaining: limit - window.n_requests,
                reset_after,
                retry_after: None,
            }
        } else {
            Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after,
                retry_after: Some(reset_after),
            }
        }
    }

    fn make_room(&self, shard: &mut HashMap<RateKey, Window>, now_ns: u64) {
        let window_ns = self.window_ns;
        shard.retain(|_, w| now_ns < w.start_ns.saturating_add(window_ns));
        if shard.len() < self.max_keys_per_shard {
            return;
        }
        // Full of live windows: forget the oldest of a few. That caller's
        // count restarts, which beats refusing every new caller.
        let victim = shard
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, w)| w.start_ns)
            .map(|(key, _)| key.clone());
        if let Some(victim) = victim {
            shard.remove(&victim);
        }
    }

    /// Drops every key whose window has ended; returns how many. Call it
    /// periodically (e.g. every minute) to bound memory.
    pub fn sweep(&self, now: Instant) -> usize {
        let now_ns = self.nanos_since_epoch(now);
        let window_ns = self.window_ns;
        let mut n_removed = 0;
        for state in [&self.execute, &self.functions, &self.other] {
            for shard in state.shards.iter() {
                let mut shard = lock(shard);
                let before = shard.len();
                shard.retain(|_, w| now_ns < w.start_ns.saturating_add(window_ns));
                n_removed += before - shard.len();
            }
        }
        n_removed
    }

    /// Keys currently tracked, over all classes (for metrics).
    pub fn n_keys(&self) -> usize {
        [&self.execute, &self.functions, &self.other]
            .iter()
            .flat_map(|state| state.shards.iter())
            .map(|shard| lock(shard).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scopes;

    fn subject(s: &str) -> RateKey {
        RateKey::Subject(s.to_owned())
    }

    fn limiter() -> (RateLimiter, Instant) {
        let limiter = RateLimiter::new(RateLimitConfig::default());
        (limiter, Instant::now())
    }

    #[test]
    fn the_101st_execute_in_a_minute_is_refused_and_retry_after_works() {
        let (limiter, t0) = limiter();
        let alice = subject("alice");
        for i in 0..100u32 {
            // Spread over 50 s: a refilling bucket would let the 101st through.
            let now = t0 + Duration::from_millis(u64::from(i) * 500);
            let decision = limiter.check(RouteClass::Execute, &alice, now);
            assert!(decision.allowed, "request {} refused", i + 1);
            assert_eq!(decision.limit, 100);
            assert_eq!(decision.remaining, 99 - i);
        }
        let at = t0 + Duration::from_millis(50_500);
        let refused = limiter.check(RouteClass::Execute, &alice, at);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        let retry_after = refused.retry_after.unwrap();
        assert_eq!(retry_after, Duration::from_millis(9_500));

        let headers = refused.headers();
        assert_eq!(headers[RETRY_AFTER], "10");
        assert_eq!(headers[X_RATELIMIT_LIMIT], "100");
        assert_eq!(headers[X_RATELIMIT_REMAINING], "0");
        assert_eq!(headers[X_RATELIMIT_RESET], "10");

        // Still refused just before the advertised time...
        let early = at + retry_after - Duration::from_millis(1);
        assert!(!limiter.check(RouteClass::Execute, &alice, early).allowed);
        // ...and allowed when Retry-After (whole seconds) is honoured.
        let honoured = at + Duration::from_secs(10);
        let decision = limiter.check(RouteClass::Execute, &alice, honoured);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 99);
    }

    #[test]
    fn route_class_for_path() {
        assert_eq!(RouteClass::for_path("/health"), RouteClass::Health);
        assert_eq!(RouteClass::for_path("/metrics"), RouteClass::Health);
        assert_eq!(
            RouteClass::for_path("/api/v1/execute/abc"),
            RouteClass::Execute
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/execute/{request_id}"),
            RouteClass::Execute
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/functions"),
            RouteClass::Functions
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/functions/"),
            RouteClass::Functions
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/functions/nodejs-x"),
            RouteClass::Functions
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/initialize"),
            RouteClass::Other
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/sessions/abc"),
            RouteClass::Other
        );
        assert_eq!(
            RouteClass::for_path("/api/v1/functionsx"),
            RouteClass::Other
        );
    }

    #[test]
    fn concurrent_requests_never_exceed_the_limit() {
        let limiter = std::sync::Arc::new(RateLimiter::new(RateLimitConfig::default()));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| {
                            limiter
                                .check(RouteClass::Execute, &subject("shared"), t0)
                                .allowed
                        })
                        .count()
                })
            })
            .collect();
        let n_allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(n_allowed, 100);
    }

    #[test]
    fn limits_are_per_subject() {
        let (limiter, t0) = limiter();
        for _ in 0..100 {
            assert!(
                limiter
                    .check(RouteClass::Execute, &subject("alice"), t0)
                    .allowed
            );
        }
        assert!(
            !limiter
                .check(RouteClass::Execute, &subject("alice"), t0)
                .allowed
        );
        let bob = limiter.check(RouteClass::Execute, &subject("bob"), t0);
        assert!(bob.allowed);
        assert_eq!(bob.remaining, 99);
    }

    #[test]
    fn route_classes_are_counted_apart() {
        let (limiter, t0) = limiter();
        let alice = subject("alice");
        for _ in 0..100 {
            assert!(limiter.check(RouteClass::Execute, &alice, t0).allowed);
        }
        assert!(!limiter.check(RouteClass::Execute, &alice, t0).allowed);
        let functions = limiter.check(RouteClass::Functions, &alice, t0);
        assert!(functions.allowed);
        assert_eq!(functions.limit, 60);
        assert!(limiter.check(RouteClass::Other, &alice, t0).allowed);
    }

    #[test]
    fn anonymous_execute_is_limited_per_address() {
        let (limiter, t0) = limiter();
        let anonymous = Principal::anonymous();
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let key = RateKey::for_request(&anonymous, ip);
        assert_eq!(key, RateKey::Ip(ip));
        for _ in 0..10 {
            assert!(limiter.check(RouteClass::Execute, &key, t0).allowed);
        }
        let refused = limiter.check(RouteClass::Execute, &key, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 10);
        let other: IpAddr = "203.0.113.6".parse().unwrap();
        assert!(
            limiter
                .check(RouteClass::Execute, &RateKey::ip(other), t0)
                .allowed
        );
    }

    #[test]
    fn authenticated_key_is_the_subject() {
        let principal = Principal::new("carol", Scopes::parse("execute:all"), None);
        let key = RateKey::for_request(&principal, "198.51.100.1".parse().unwrap());
        assert_eq!(key, subject("carol"));
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let a = RateKey::ip("2001:db8:1:2::1".parse().unwrap());
        let b = RateKey::ip("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = RateKey::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            RateKey::ip("::ffff:192.0.2.1".parse().unwrap()),
            RateKey::Ip("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn health_and_zero_limits_are_unlimited() {
        let limiter = RateLimiter::new(RateLimitConfig {
            functions_per_minute: 0,
            ..RateLimitConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..1000 {
            let health = limiter.check(RouteClass::Health, &subject("x"), t0);
            assert_eq!(health, Decision::unlimited());
            assert!(
                limiter
                    .check(RouteClass::Functions, &subject("x"), t0)
                    .allowed
            );
        }
        assert!(Decision::unlimited().headers().is_empty());
        assert_eq!(limiter.n_keys(), 0);
    }

    #[test]
    fn every_limit_is_configurable() {
        let limiter = RateLimiter::new(RateLimitConfig {
            execute_per_minute: 2,
            execute_anonymous_per_minute: 1,
            functions_per_minute: 3,
            other_per_minute: 4,
            ..RateLimitConfig::default()
        });
        let t0 = Instant::now();
        let ip = RateKey::ip("192.0.2.9".parse().unwrap());
        let count = |class, key: &RateKey| {
            (0..10)
                .take_while(|_| limiter.check(class, key, t0).allowed)
                .count()
        };
        assert_eq!(count(RouteClass::Execute, &subject("s")), 2);
        assert_eq!(count(RouteClass::Execute, &ip), 1);
        assert_eq!(count(RouteClass::Functions, &subject("s")), 3);
        assert_eq!(count(RouteClass::Other, &ip), 4);
    }

    #[test]
    fn sweep_forgets_ended_windows_only() {
        let (limiter, t0) = limiter();
        limiter.check(RouteClass::Execute, &subject("old"), t0);
        limiter.check(RouteClass::Functions, &subject("old"), t0);
        let later = t0 + Duration::from_secs(30);
        limiter.check(RouteClass::Execute, &subject("new"), later);
        assert_eq!(limiter.n_keys(), 3);
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(59)), 0);
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(60)), 2);
        assert_eq!(limiter.n_keys(), 1);
        // The surviving window still counts.
        let decision = limiter.check(RouteClass::Execute, &subject("new"), later);
        assert_eq!(decision.remaining, 98);
    }

    #[test]
    fn key_count_is_bounded() {
        let limiter = RateLimiter::new(RateLimitConfig {
            max_keys: N_SHARDS * 4,
            ..RateLimitConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let key = RateKey::Ip(IpAddr::from(i.to_be_bytes()));
            assert!(limiter.check(RouteClass::Execute, &key, t0).allowed);
        }
        assert!(limiter.n_keys() <= N_SHARDS * 4, "{}", limiter.n_keys());
    }

    #[test]
    fn fractional_retry_after_rounds_up() {
        let decision = Decision {
            allowed: false,
            limit: 1,
            remaining: 0,
            reset_after: Duration::from_millis(1),
            retry_after: Some(Duration::from_millis(1)),
        };
        let headers = decision.headers();
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(headers[X_RATELIMIT_RESET], "1");
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::from_nanos(2_000_000_001)), 3);
    }
}
