//! Shared helpers for the Node.js and Python runtime tests (real node,
//! python3 and bwrap processes).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Language, Limits, PooledRuntime, RuntimeConfig, RuntimeError, Script};
use serde_json::{json, Value};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
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
