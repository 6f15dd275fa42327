//! Language runtimes: the boundary between "a session wants to run" and
//! "a language runs it".
//!
//! `lambda-core` sees only [`LanguageRuntime`]: it hands over a [`Script`]
//! once at initialize ([`LanguageRuntime::prepare`]) and then an event per
//! execute ([`LanguageRuntime::execute`]). How a language runs the script
//! (warm worker processes in a bubblewrap sandbox, an in-process wasmtime
//! engine) is this crate's business and never leaks upward.
//!
//! This crate depends on nothing above it (no store, no HTTP).
//!
//! Invariants:
//! - a worker process holds one script (one [`Script::worker_key`]) for life;
//! - user output never travels on the channel that carries results;
//! - no language ever answers with a made-up result: a language that cannot
//!   run here says so through [`RuntimeStatus::Unavailable`] and
//!   [`RuntimeError::Unavailable`].

pub mod rust;
pub mod wasm;

pub mod config;
pub mod frame;
pub mod nodejs;
pub mod pool;
pub mod python;
pub mod sandbox;

pub use config::RuntimeConfig;
pub use pool::{PooledRuntime, WorkerPool};

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The languages the platform knows. Whether one can run on this machine is
/// a separate question, answered by [`LanguageRuntime::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Nodejs,
    Python,
    Rust,
    Wasm,
}

impl Language {
    pub const ALL: [Language; 4] = [
        Language::Nodejs,
        Language::Python,
        Language::Rust,
        Language::Wasm,
    ];

    /// Its position in [`Language::ALL`], for tables indexed by language.
    pub fn index(self) -> usize {
        match self {
            Language::Nodejs => 0,
            Language::Python => 1,
            Language::Rust => 2,
            Language::Wasm => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Nodejs => "nodejs",
            Language::Python => "python",
            Language::Rust => "rust",
            Language::Wasm => "wasm",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language '{0}'")]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nodejs" => Ok(Language::Nodejs),
            "python" => Ok(Language::Python),
            "rust" => Ok(Language::Rust),
            "wasm" => Ok(Language::Wasm),
            other => Err(UnknownLanguage(other.to_string())),
        }
    }
}

/// One user script as the runtimes see it.
#[derive(Debug, Clone)]
pub struct Script {
    pub language: Language,
    /// SHA-256 (hex) of the source and compile options: names compiled
    /// artifacts, which any tenant may share because they hold no state.
    pub hash: String,
    /// Names the warm worker that may run this script: core derives it from
    /// the script hash and the session owner, so tenants never share an
    /// interpreter even when they run the same source.
    pub worker_key: String,
    pub source: Arc<str>,
    /// `context.compile_options` of the session (Rust: `optimization_level`,
    /// `target`); `Value::Null` when absent.
    pub compile_options: Value,
    /// An artifact an earlier `prepare` produced for the same `hash` (Rust
    /// binary, precompiled wasm), fetched from the store by core so a replica
    /// never compiles what another already did.
    pub artifact: Option<Arc<Vec<u8>>>,
}

/// What `prepare` learned about a script.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// A new artifact for core to store under `Script::hash`; `None` when the
    /// language has nothing worth storing (Node.js, Python) or the script
    /// came with one already.
    pub artifact: Option<Vec<u8>>,
}

/// Per-execution limits, resolved by core from configuration and the
/// session's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_result_bytes: usize,
    pub max_log_bytes: usize,
    pub max_processes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 * 1024 * 1024,
            max_result_bytes: 6 * 1024 * 1024,
            max_log_bytes: 64 * 1024,
            max_processes: 32,
        }
    }
}

/// A successful execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub result: Value,
    /// Captured console output, one entry per line, bounded by
    /// `Limits::max_log_bytes`.
    pub logs: Vec<String>,
}

/// Where in the user's own script something went wrong (1-based), never a
/// position inside a wrapper.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Which limit a script ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Memory,
    ResultSize,
    OutputSize,
    Processes,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Memory => "memory limit exceeded",
            LimitKind::ResultSize => "result size limit exceeded",
            LimitKind::OutputSize => "output size limit exceeded",
            LimitKind::Processes => "process limit exceeded",
        })
    }
}

/// Every way running a script can fail. Core maps each variant to one API
/// error code (see `lambda-api`'s error module).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// 503 RUNTIME_UNAVAILABLE: the language cannot run on this machine.
    #[error("{language} runtime unavailable: {reason}")]
    Unavailable { language: Language, reason: String },
    /// 400 INITIALIZATION_ERROR: the script does not compile or load.
    #[error("{message}")]
    Initialization {
        message: String,
        location: SourceLocation,
    },
    /// 460 RUNTIME_ERROR: the user's code threw, raised, panicked, trapped,
    /// exited or returned an error.
    #[error("{message}")]
    Script {
        message: String,
        location: SourceLocation,
        stack_trace: Option<String>,
        logs: Vec<String>,
    },
    /// 504 TIMEOUT: ran past its timeout; the worker was killed.
    #[error("execution exceeded its timeout of {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// 507 RESOURCE_LIMIT_EXCEEDED: the worker was killed.
    #[error("{kind}")]
    ResourceLimit { kind: LimitKind, detail: String },
    /// 503 RUNTIME_UNAVAILABLE: every worker stayed busy past the queue wait.
    #[error("all {language} workers stayed busy for {waited_ms} ms")]
    Busy { language: Language, waited_ms: u64 },
    /// 500 INTERNAL_ERROR: a fault of the platform (a worker that died for
    /// no reason the script explains, a broken pipe, a spawn failure).
    #[error("{0}")]
    Internal(String),
}

/// Whether a language can run here, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeStatus {
    Ready,
    Unavailable { reason: String },
}

impl RuntimeStatus {
    /// The text `/health` shows: `ok`, or the reason.
    pub fn describe(&self) -> String {
        match self {
            RuntimeStatus::Ready => "ok".to_string(),
            RuntimeStatus::Unavailable { reason } => reason.clone(),
        }
    }
}

/// One language's way of running scripts.
#[async_trait::async_trait]
pub trait LanguageRuntime: Send + Sync + 'static {
    fn language(&self) -> Language;

    fn status(&self) -> RuntimeStatus;

    /// Called at initialize (and when a function is registered): validate or
    /// compile the script, reporting load-time errors as
    /// [`RuntimeError::Initialization`]. Languages with worker processes
    /// answer only once a worker for `script.worker_key` is started and
    /// holds the script, so the first execute is as warm as the next.
    async fn prepare(&self, script: &Script) -> Result<Prepared, RuntimeError>;

    /// Whether this process already holds a compiled artifact for
    /// `script.hash` (in memory or on local disk), so core need not fetch
    /// the stored one from the database before `prepare`.
    fn has_local_artifact(&self, _script: &Script) -> bool {
        false
    }

    /// Run the script once with `event_json` (the serialized event object of
    /// API.md) as its input.
    async fn execute(
        &self,
        script: &Script,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError>;

    /// The session holding `worker_key` ended: its warm worker may go.
    async fn release(&self, worker_key: &str);

    /// Stop every worker (graceful shutdown).
    async fn shutdown(&self);
}

/// The runtimes of every language this process can run, by language.
/// Cheap to clone (it is shared, not copied, into every request's state).
#[derive(Clone, Default)]
pub struct Runtimes {
    by_language: Arc<BTreeMap<Language, Arc<dyn LanguageRuntime>>>,
}

impl Runtimes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, runtime: Arc<dyn LanguageRuntime>) -> Self {
        Arc::make_mut(&mut self.by_language).insert(runtime.language(), runtime);
        self
    }

    pub fn get(&self, language: Language) -> Option<&Arc<dyn LanguageRuntime>> {
        self.by_language.get(&language)
    }

    /// Status of every language, including those with no runtime at all.
    pub fn statuses(&self) -> BTreeMap<Language, RuntimeStatus> {
        Language::ALL
            .iter()
            .map(|language| {
                let status = match self.by_language.get(language) {
                    Some(runtime) => runtime.status(),
                    None => RuntimeStatus::Unavailable {
                        reason: format!("no {language} runtime is built into this service yet"),
                    },
                };
                (*language, status)
            })
            .collect()
    }

    pub async fn shutdown(&self) {
        for runtime in self.by_language.values() {
            runtime.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Language;

    #[test]
    fn a_language_index_is_its_position_in_all() {
        for (position, language) in Language::ALL.into_iter().enumerate() {
            assert_eq!(language.index(), position, "{language}");
        }
    }
}
