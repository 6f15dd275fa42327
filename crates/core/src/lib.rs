//! Sessions, the function registry, the execution flow, caches, the log
//! batcher and configuration.
//!
//! Depends on `lambda-store` (persistence) and `lambda-runtime` (running
//! code) and on nothing above it; `lambda-api` translates HTTP to calls here.
//!
//! Invariants: every read of a session honours `expires_at`, including the
//! caches; the execute path never waits on the database for logs or
//! counters (they go through [`LogBatcher`]).

pub mod caller;
pub mod config;
pub mod error;
pub mod language_title;
pub mod log_batcher;
pub mod registry;
pub mod result_cache;
pub mod scripts;
mod session_cache;
pub mod sessions;

pub use caller::{Caller, LanguageSet};
pub use config::{Config, ConfigError, LogFormat};
pub use error::{Error, Result};
pub use language_title::{LanguageTitle, LanguageTitleParser};
pub use log_batcher::{LogBatcher, LogBatcherTask};
pub use registry::{FunctionDraft, Registry};
pub use result_cache::CacheControl;
pub use sessions::{
    ExecuteOutcome, ExecuteRequest, InitializeRequest, Initialized, SessionView, Sessions,
};
