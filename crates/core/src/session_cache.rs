//! The in-process cache of live sessions.
//!
//! The original platform's cache never expired entries; this one checks
//! `expires_at` on every read and trusts an entry only for a short
//! revalidation window, after which the caller re-reads the store (so a
//! session deleted on another replica stops running here within that window).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lambda_runtime::{Language, Script};
use serde_json::Value;

/// A session ready to execute, with what its hot path needs precomputed.
#[derive(Clone)]
pub struct LiveSession {
    pub request_id: String,
    pub language_title: String,
    pub language: Language,
    pub user_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub context: Value,
    pub script: Script,
    pub params_validator: Option<Arc<jsonschema::Validator>>,
    pub retain_session: bool,
    pub timeout: Duration,
    pub loaded_at: Instant,
}

/// What a lookup found.
pub enum Cached {
    Fresh(Arc<LiveSession>),
    /// Present, not expired, but past its revalidation window.
    Stale(Arc<LiveSession>),
    Missing,
}

const MAX_ENTRIES: usize = 200_000;

pub struct SessionCache {
    revalidate_after: Duration,
    entries: RwLock<HashMap<String, Arc<LiveSession>>>,
}

impl SessionCache {
    pub fn new(revalidate_after: Duration) -> Self {
        SessionCache {
            revalidate_after,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, request_id: &str, now: DateTime<Utc>) -> Cached {
        let found = match self.entries.read() {
            Ok(entries) => entries.get(request_id).cloned(),
            Err(_) => None,
        };
        let Some(session) = found else {
            return Cached::Missing;
        };
        if session.expires_at <= now {
            self.remove(request_id);
            return Cached::Missing;
        }
        if session.loaded_at.elapsed() > self.revalidate_after {
            return Cached::Stale(session);
        }
        Cached::Fresh(session)
    }

    pub fn insert(&self, session: Arc<LiveSession>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            // Entries are only a cache of the store: dropping the expired
            // and stale ones first, then anything, loses nothing.
            let now = Utc::now();
            let revalidate_after = self.revalidate_after;
            entries.retain(|_, s| s.expires_at > now && s.loaded_at.elapsed() <= revalidate_after);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(session.request_id.clone(), session);
    }

    pub fn remove(&self, request_id: &str) -> Option<Arc<LiveSession>> {
        self.entries.write().ok()?.remove(request_id)
    }

    pub fn remove_expired(&self, now: DateTime<Utc>) -> Vec<Arc<LiveSession>> {
        let Ok(mut entries) = self.entries.write() else {
            return Vec::new();
        };
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, session)| session.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired.iter().filter_map(|id| entries.remove(id)).collect()
    }
}
