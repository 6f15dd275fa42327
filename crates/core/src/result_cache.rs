//! Cached execution results, bounded by entries and bytes.
//!
//! The key covers everything that can change a result: the session owner
//! (a subject never receives a result computed for another), the script
//! hash, the canonical params and the context. Errors are never cached.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How a request wants the cache used (`X-Cache-Control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheControl {
    /// The configured TTL.
    #[default]
    Default,
    /// `no-cache`: execute, and do not store.
    NoCache,
    /// `max-age=N`: accept an entry at most N seconds old; store for N seconds.
    MaxAge(Duration),
}

impl CacheControl {
    /// Parses an `X-Cache-Control` value; `None` if it is not understood.
    pub fn parse(header: &str) -> Option<CacheControl> {
        let value = header.trim();
        if value.eq_ignore_ascii_case("no-cache") || value.eq_ignore_ascii_case("no-store") {
            return Some(CacheControl::NoCache);
        }
        let seconds = value
            .strip_prefix("max-age=")
            .or_else(|| value.strip_prefix("MAX-AGE="))?;
        seconds
            .trim()
            .parse::<u64>()
            .ok()
            .map(|seconds| CacheControl::MaxAge(Duration::from_secs(seconds)))
    }
}

/// A cache key: SHA-256 of the canonical key parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// serde_json's map is ordered by key (no `preserve_order`), so
    /// serializing gives one canonical text per value.
    pub fn new(owner: Option<&str>, script_hash: &str, params: &Value, context: &Value) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(owner.unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(script_hash.as_bytes());
        hasher.update([0]);
        hasher.update(params.to_string().as_bytes());
        hasher.update([0]);
        hasher.update(context.to_string().as_bytes());
        CacheKey(hasher.finalize().into())
    }
}

struct Entry {
    result: Value,
    stored_at: Instant,
    expires_at: Instant,
    bytes: usize,
}

struct Inner {
    entries: HashMap<CacheKey, Entry>,
    /// Insertion order, for evicting the oldest first.
    order: VecDeque<CacheKey>,
    bytes: usize,
}

pub struct ResultCache {
    default_ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl ResultCache {
    pub fn new(default_ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        ResultCache {
            default_ttl,
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// Whether a request with this cache control reads or writes the cache.
    pub fn enabled_for(&self, control: CacheControl) -> bool {
        self.ttl_for(control).is_some()
    }

    fn ttl_for(&self, control: CacheControl) -> Option<Duration> {
        if self.default_ttl.is_zero() {
            return None; // RESULT_CACHE_TTL_SECONDS=0 turns the cache off entirely.
        }
        let ttl = match control {
            CacheControl::NoCache => return None,
            CacheControl::Default => self.default_ttl,
            CacheControl::MaxAge(max_age) => max_age,
        };
        (!ttl.is_zero()).then_some(ttl)
    }

    pub fn get(&self, key: &CacheKey, control: CacheControl) -> Option<Value> {
        self.ttl_for(control)?;
        let now = Instant::now();
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(key)?;
        let fresh = now < entry.expires_at
            && match control {
                CacheControl::MaxAge(max_age) => now.duration_since(entry.stored_at) <= max_age,
                _ => true,
            };
        if fresh {
            metrics::counter!("lambda_result_cache_hits_total").increment(1);
            return Some(entry.result.clone());
        }
        if let Some(stale) = inner.entries.remove(key) {
            inner.bytes -= stale.bytes;
        }
        metrics::counter!("lambda_result_cache_misses_total").increment(1);
        None
    }

    pub fn put(&self, key: CacheKey, result: &Value, control: CacheControl) {
        let Some(ttl) = self.ttl_for(control) else {
            return;
        };
        let bytes = result.to_string().len() + 64;
        if bytes > self.max_bytes / 4 {
            return; // One result may not push out most of the cache.
        }
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.bytes;
        }
        while inner.entries.len() >= self.max_entries || inner.bytes + bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.bytes -= evicted.bytes;
            }
        }
        inner.order.push_back(key.clone());
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                result: result.clone(),
                stored_at: now,
                expires_at: now + ttl,
                bytes,
            },
        );
        // Keys of replaced or expired entries linger in `order`; keep it
        // from growing past a small multiple of the live entries.
        if inner.order.len() > 2 * self.max_entries.max(16) {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|key| entries.contains_key(key));
        }
        metrics::gauge!("lambda_result_cache_entries").set(inner.entries.len() as f64);
        metrics::gauge!("lambda_result_cache_bytes").set(inner.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_cache_control() {
        assert_eq!(CacheControl::parse("no-cache"), Some(CacheControl::NoCache));
        assert_eq!(
            CacheControl::parse("max-age=5"),
            Some(CacheControl::MaxAge(Duration::from_secs(5)))
        );
        assert_eq!(CacheControl::parse("max-age=x"), None);
        assert_eq!(CacheControl::parse("whatever"), None);
    }

    #[test]
    fn keys_differ_by_owner_params_and_context() {
        let base = CacheKey::new(Some("a"), "h", &json!({"x": 1, "y": 2}), &json!({}));
        assert_eq!(
            base,
            CacheKey::new(Some("a"), "h", &json!({"y": 2, "x": 1}), &json!({}))
        );
        assert_ne!(
            base,
            CacheKey::new(Some("b"), "h", &json!({"x": 1, "y": 2}), &json!({}))
        );
        assert_ne!(
            base,
            CacheKey::new(Some("a"), "h", &json!({"x": 2, "y": 2}), &json!({}))
        );
        assert_ne!(
            base,
            CacheKey::new(Some("a"), "h", &json!({"x": 1, "y": 2}), &json!({"c": 1}))
        );
    }

    #[test]
    fn honours_ttl_no_cache_and_bounds() {
        let cache = ResultCache::new(Duration::from_secs(60), 2, 1 << 20);
        let key = |n: i32| CacheKey::new(None, "h", &json!(n), &json!(null));
        cache.put(key(1), &json!(1), CacheControl::Default);
        assert_eq!(cache.get(&key(1), CacheControl::Default), Some(json!(1)));
        assert_eq!(cache.get(&key(1), CacheControl::NoCache), None);
        cache.put(key(2), &json!(2), CacheControl::NoCache);
        assert_eq!(cache.get(&key(2), CacheControl::Default), None);
        cache.put(key(2), &json!(2), CacheControl::Default);
        cache.put(key(3), &json!(3), CacheControl::Default);
        assert_eq!(
            cache.get(&key(1), CacheControl::Default),
            None,
            "oldest evicted"
        );
        assert_eq!(cache.get(&key(3), CacheControl::Default), Some(json!(3)));
        cache.put(key(4), &json!(4), CacheControl::MaxAge(Duration::ZERO));
        assert_eq!(cache.get(&key(4), CacheControl::Default), None);
    }

    #[test]
    fn disabled_with_zero_ttl() {
        let cache = ResultCache::new(Duration::ZERO, 10, 1 << 20);
        let key = CacheKey::new(None, "h", &json!(1), &json!(null));
        cache.put(key.clone(), &json!(1), CacheControl::Default);
        assert_eq!(cache.get(&key, CacheControl::Default), None);
    }
}
