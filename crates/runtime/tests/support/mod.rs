//! Shared helpers for the Node.js and Python runtime tests (real node,
//! python3 and bwrap processes).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{
    Language, LanguageRuntime, Limits, PooledRuntime, RuntimeConfig, RuntimeError, Script,
};
use serde_json::{json, Value};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        blank_workers_per_language: 1,
        max_workers_per_language: 6,
        work_dir: std::env::temp_dir().join(unique("lambda-runtime-test")),
        ..RuntimeConfig::default()
    }
}

pub fn runtime(language: Language, config: &RuntimeConfig) -> Arc<PooledRuntime> {
    let rt = match language {
        Language::Nodejs => lambda_runtime::nodejs::pooled_runtime(config),
        Language::Python => lambda_runtime::python::pooled_runtime(config),
        other => panic!("no pooled runtime for {other}"),
    };
    rt
}

pub fn script(language: Language, source: &str) -> Script {
    let key = unique("key");
    Script {
        language,
        hash: key.clone(),
        worker_key: key,
        source: Arc::from(source),
        compile_options: Value::Null,
        artifact: None,
    }
}

pub fn event(params: Value) -> String {
    json!({"params": params, "context": {"environment": "test", "user_id": "u1"},
           "request_id": "req-1", "language_title": "test-fn"})
    .to_string()
}

pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

pub fn kind(error: &RuntimeError) -> &'static str {
    match error {
        RuntimeError::Unavailable { .. } => "unavailable",
        RuntimeError::Initialization { .. } => "initialization",
        RuntimeError::Script { .. } => "script",
        RuntimeError::Timeout { .. } => "timeout",
        RuntimeError::ResourceLimit { .. } => "resource_limit",
        RuntimeError::Busy { .. } => "busy",
        RuntimeError::Internal(_) => "internal",
    }
}

/// Initialize is followed by the first execute one client round trip
/// later; by then the replacement blank worker that prepare triggered is
/// starting (a process start costs ~50 ms of CPU on this 2-core machine).
/// The comparison is fair: the warm baseline is measured after the same
/// idle gap, on the same worker.
pub async fn first_vs_warm(
    rt: &PooledRuntime,
    language: Language,
    source: &str,
    gap: Duration,
) -> (Duration, Duration) {
    let mut firsts = Vec::new();
    let mut warms = Vec::new();
    for _ in 0..5 {
        // Blank workers exist long before a request in a running service;
        // let the one started for the previous round come up and settle.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = script(language, source);
        rt.prepare(&s).await.unwrap();
        let pool = rt.pool().unwrap();
        let warmed = pool.worker_pids(&s.worker_key);
        assert_eq!(warmed.len(), 1, "prepare leaves exactly one warm worker");
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        rt.execute(&s, &event(json!({"a": 1, "b": 2})), &limits())
            .await
            .unwrap();
        firsts.push(t.elapsed());
        // No process was started for the first execute: the worker prepare
        // warmed served it and is still the only one.
        assert_eq!(pool.worker_pids(&s.worker_key), warmed);
        for _ in 0..3 {
            tokio::time::sleep(gap).await;
            let t = Instant::now();
            rt.execute(&s, &event(json!({"a": 1, "b": 2})), &limits())
                .await
                .unwrap();
            warms.push(t.elapsed());
        }
        rt.release(&s.worker_key).await;
    }
    firsts.sort();
    warms.sort();
    (firsts[firsts.len() / 2], warms[warms.len() / 2])
}
