//! Persistence: PostgreSQL (production, the single source of truth) and an
//! embedded SQLite file (the zero-setup default), behind one [`Store`] trait.
//!
//! Owns the schema (embedded migrations, applied at start-up under a lock so
//! replicas may start together), schema verification, the seeded functions,
//! and every SQL statement of the service. Depends on nothing above it.
//!
//! Invariant: both backends pass the same conformance suite
//! (`tests/conformance.rs`); nothing above this crate knows which one runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod common;
mod postgres;
mod seeds;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, SQLITE_FILE_NAME};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (session request_id, function language_title).
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The database is missing tables or columns this version needs.
    #[error("database schema is incomplete: missing {missing}")]
    SchemaMismatch { missing: String },
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (corrupt JSON, unknown status).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// The lifecycle of a session (`meta.sessions.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    /// A `retain_session: false` session after its one execute.
    Completed,
    Expired,
    /// Its script failed to compile.
    Error,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Expired => "expired",
            SessionStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(SessionStatus::Active),
            "completed" => Ok(SessionStatus::Completed),
            "expired" => Ok(SessionStatus::Expired),
            "error" => Ok(SessionStatus::Error),
            other => Err(StoreError::Corrupt(format!(
                "unknown session status '{other}'"
            ))),
        }
    }
}

/// A row of `meta.sessions`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub request_id: String,
    pub language_title: String,
    /// The subject that created it (`sub` of its token); `None` when auth is off.
    pub user_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_executed_at: Option<DateTime<Utc>>,
    pub execution_count: i64,
    pub status: SessionStatus,
    /// The initialize body's `context` object.
    pub context: Value,
    pub script_content: String,
    /// SHA-256 hex of script and compile options.
    pub script_hash: String,
    pub compiled_artifact: Option<Vec<u8>>,
    pub compile_options: Option<Value>,
    /// `success`, `error`, or `None` for languages that compile nothing.
    pub compile_status: Option<String>,
    pub compile_error: Option<String>,
    /// Free-form extras (e.g. `retain_session`, the function it runs).
    pub metadata: Value,
}

/// How loading a session's script turned out. Core inserts the session
/// while the runtime loads the script, as if loading succeeds (so that the
/// database commit and the load overlap), and records this afterwards when
/// the row must say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOutcome {
    pub status: SessionStatus,
    pub compile_status: Option<String>,
    pub compile_error: Option<String>,
    /// An artifact this session compiled, stored for [`Store::find_artifact`].
    pub compiled_artifact: Option<Vec<u8>>,
}

/// Executions of one session counted behind the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionCount {
    pub request_id: String,
    pub count: i64,
    /// The latest execution; stored only if later than what is stored.
    pub last_executed_at: DateTime<Utc>,
}

/// `predefined` (seeded, shipped with the platform) or `dynamic` (registered
/// through the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    Predefined,
    Dynamic,
}

/// A row of `meta.functions` joined with its `meta.scripts` content.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRecord {
    pub id: Uuid,
    pub language: String,
    pub title: String,
    pub language_title: String,
    pub description: Option<String>,
    pub kind: FunctionKind,
    /// `created_by`: `system` for predefined functions, the owner's subject
    /// for dynamic ones (may be `None` when registered with auth off).
    pub created_by: Option<String>,
    pub script_content: String,
    /// `{"params": <JSON Schema>, "result": <JSON Schema>}`, either part optional.
    pub schema: Option<Value>,
    pub examples: Option<Value>,
    pub compile_options: Option<Value>,
    pub tags: Vec<String>,
    /// Semantic version text; `1.0.0` at registration, patch bumped per update.
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What registering a function needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFunction {
    pub language: String,
    pub title: String,
    pub language_title: String,
    pub description: Option<String>,
    pub created_by: Option<String>,
    pub script_content: String,
    pub schema: Option<Value>,
    pub examples: Option<Value>,
    pub compile_options: Option<Value>,
    pub tags: Vec<String>,
}

/// An update: `None` fields keep their value. Every update bumps the version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionUpdate {
    pub description: Option<String>,
    pub script_content: Option<String>,
    pub schema: Option<Value>,
    pub examples: Option<Value>,
    pub compile_options: Option<Value>,
    pub tags: Option<Vec<String>>,
}

/// `GET /api/v1/functions` filters; only active (not retired) functions list.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionFilter {
    pub language: Option<String>,
    pub user_id: Option<String>,
    pub kind: Option<FunctionKind>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

/// One row for `public.request_logs`, with its `public.error_logs` row when
/// the request failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLog {
    pub id: Uuid,
    /// The session's request_id (or the request's own id when there is no session).
    pub request_id: String,
    pub language_title: String,
    pub timestamp: DateTime<Utc>,
    pub client_ip: Option<String>,
    pub user_id: Option<String>,
    /// Already masked of secrets by the caller.
    pub request_headers: Option<Value>,
    pub request_payload: Option<Value>,
    pub response_payload: Option<Value>,
    pub status_code: i32,
    pub duration_ms: i32,
    pub cached: bool,
    pub error_details: Option<Value>,
    pub runtime_metrics: Option<Value>,
    pub error: Option<ErrorLog>,
}

/// One row for `public.error_logs`, linked to its request log.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorLog {
    pub id: Uuid,
    pub error_code: String,
    pub error_message: String,
    pub stack_trace: Option<String>,
    pub context: Option<Value>,
}

/// Everything the service stores. Implementations: [`PostgresStore`],
/// [`SqliteStore`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip, for `/health`.
    async fn ping(&self) -> Result<()>;

    /// Apply embedded migrations (under a lock, safe for concurrent
    /// replicas), seed the predefined functions, then verify the schema.
    async fn migrate(&self) -> Result<()>;

    /// Check every table and column this version uses exists; the error names
    /// what is missing.
    async fn verify_schema(&self) -> Result<()>;

    // Sessions.

    /// `StoreError::Conflict` when `request_id` is taken.
    async fn insert_session(&self, session: &SessionRecord) -> Result<()>;
    /// Overwrite the session's status, compile status, compile error and
    /// artifact. Returns whether the session exists.
    async fn settle_session(&self, request_id: &str, outcome: &SessionOutcome) -> Result<bool>;
    /// The session without its `compiled_artifact` (always `None` here: it
    /// can be megabytes; fetch it with [`Store::find_artifact`]).
    async fn get_session(&self, request_id: &str) -> Result<Option<SessionRecord>>;
    /// Count `count` executions, the last at `last_executed_at`; with
    /// `complete`, mark the session `completed`. Core batches these (write
    /// behind), so `count` may be more than one. Returns the updated record,
    /// `None` if the session is gone.
    async fn record_executions(
        &self,
        request_id: &str,
        count: i64,
        last_executed_at: DateTime<Utc>,
        complete: bool,
    ) -> Result<Option<SessionRecord>>;
    /// Apply many sessions' write-behind counters in one round trip,
    /// without reading the rows back. Sessions that are gone are skipped.
    /// `batch` names this set of counts: applying a batch that was already
    /// applied (a retry after a commit whose answer was lost) changes nothing.
    async fn record_execution_counts(&self, batch: Uuid, counts: &[ExecutionCount]) -> Result<()>;
    /// Forget the ids of counter batches applied before `before`; returns
    /// how many. A batch retried after that would count again.
    async fn forget_counter_batches(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Returns whether a session was deleted.
    async fn delete_session(&self, request_id: &str) -> Result<bool>;
    /// Delete sessions whose `expires_at` is before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Sessions with status `active` and `expires_at` after `now`.
    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64>;
    /// A compiled artifact stored with any session whose script has this hash.
    async fn find_artifact(&self, script_hash: &str) -> Result<Option<Vec<u8>>>;

    // Functions.

    /// Returns the total matching the filter and the requested page,
    /// ordered by language_title.
    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(i64, Vec<FunctionRecord>)>;
    /// An active function by language_title.
    async fn get_function(&self, language_title: &str) -> Result<Option<FunctionRecord>>;
    /// `StoreError::Conflict` when the language_title is taken by an active function.
    async fn insert_function(&self, function: &NewFunction) -> Result<FunctionRecord>;
    /// `None` when there is no such active function.
    async fn update_function(
        &self,
        language_title: &str,
        update: &FunctionUpdate,
    ) -> Result<Option<FunctionRecord>>;
    /// Mark inactive; returns whether an active function was retired.
    async fn retire_function(&self, language_title: &str) -> Result<bool>;

    // Logs.

    /// Insert a batch of request logs and their error logs, in one
    /// transaction with multi-row inserts. Idempotent: rows whose id is
    /// already stored are skipped, so a batch can be retried after a commit
    /// whose answer was lost.
    async fn insert_logs(&self, batch: &[RequestLog]) -> Result<()>;
}
