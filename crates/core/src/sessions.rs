//! Sessions: initialize, execute, read and delete — the execution flow.
//!
//! execute: session from the cache (honouring `expires_at`) -> ownership and
//! scope -> params schema -> result cache -> the language runtime -> counters
//! to the write-behind batcher. Nothing on this path waits on the database
//! unless the session is not cached or its revalidation window has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lambda_runtime::{Language, Limits, Output, RuntimeError, Runtimes};
use lambda_store::{SessionOutcome, SessionRecord, SessionStatus, Store, StoreError};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::language_title::LanguageTitleParser;
use crate::log_batcher::{LogBatcher, COUNTER_BATCH_MEMORY};
use crate::result_cache::{CacheControl, CacheKey, ResultCache};
use crate::scripts::{
    self, build_script, compile_params_schema, has_artifacts, is_compiled, params_schema,
};
use crate::session_cache::{Cached, LiveSession, SessionCache};

/// How long a revalidation read may take before the cached copy is used.
const REVALIDATE_TIMEOUT: Duration = Duration::from_millis(250);

/// The initialize call, as parsed by the API layer.
#[derive(Debug, Clone, Default)]
pub struct InitializeRequest {
    /// The raw `Language-Title` header.
    pub language_title: String,
    /// `X-Request-ID`, when the client chose the session id.
    pub request_id: Option<String>,
    pub context: Option<Value>,
    pub script_content: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Initialized {
    pub request_id: String,
    pub language_title: String,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub script_hash: String,
    /// Whether a compiled artifact was reused instead of compiling.
    pub artifact_reused: bool,
}

#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    pub params: Value,
    pub cache: CacheControl,
}

#[derive(Debug, Clone)]
pub struct ExecuteOutcome {
    pub request_id: String,
    pub language_title: String,
    pub execution_time_ms: u64,
    pub cached: bool,
    pub result: Value,
    pub logs: Vec<String>,
}

/// What `GET /api/v1/sessions/{id}` shows.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub record: SessionRecord,
    /// `expired` when `expires_at` passed but the row is not yet deleted.
    pub status: SessionStatus,
}

/// Options a session's context carries.
struct SessionOptions {
    timeout: Duration,
    retain_session: bool,
    compile_options: Value,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    runtimes: Runtimes,
    parser: LanguageTitleParser,
    cache: SessionCache,
    results: ResultCache,
    batcher: LogBatcher,
    config: Arc<Config>,
    metrics: ExecutionMetrics,
}

/// Each language's `lambda_executions_total{outcome="ok"}` and
/// `lambda_execution_duration_seconds`, registered once. The macros build
/// the labelled key and look it up in the recorder on every call: two
/// allocations and two registry lookups per execute. Failed outcomes are
/// labelled by their code and rare, so they still go through the macro.
/// Registered when `Sessions` is built, which is after the recorder is
/// installed (as the worker pools' metrics are).
struct ExecutionMetrics {
    /// By `Language::index`.
    by_language: [(metrics::Counter, metrics::Histogram); Language::ALL.len()],
}

impl ExecutionMetrics {
    fn register() -> Self {
        ExecutionMetrics {
            by_language: Language::ALL.map(|language| {
                (
                    metrics::counter!(EXECUTIONS, "language" => language.as_str(), "outcome" => "ok"),
                    metrics::histogram!(EXECUTION_DURATION, "language" => language.as_str()),
                )
            }),
        }
    }

    /// `failure` is the error code an execution failed with; `None` is `ok`.
    fn record(&self, language: Language, failure: Option<&'static str>, seconds: f64) {
        let (ok, duration) = &self.by_language[language.index()];
        match failure {
            None => ok.increment(1),
            Some(code) => {
                metrics::counter!(EXECUTIONS, "language" => language.as_str(), "outcome" => code)
                    .increment(1);
            }
        }
        duration.record(seconds);
    }
}

const EXECUTIONS: &str = "lambda_executions_total";
const EXECUTION_DURATION: &str = "lambda_execution_duration_seconds";

/// Text a script must be, whatever its language.
pub(crate) fn check_script_text(source: &str) -> Result<()> {
    if source.trim().is_empty() {
        return Err(Error::InvalidRequest("script_content is empty".into()));
    }
    if source.contains('\0') {
        return Err(Error::InvalidRequest(
            "script_content must not contain NUL characters".into(),
        ));
    }
    Ok(())
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        runtimes: Runtimes,
        parser: LanguageTitleParser,
        batcher: LogBatcher,
        config: Arc<Config>,
    ) -> Self {
        Sessions {
            cache: SessionCache::new(config.session_cache_revalidate),
            results: ResultCache::new(
                config.result_cache_ttl,
                config.result_cache_max_entries,
                config.result_cache_max_bytes,
            ),
            store,
            runtimes,
            parser,
            batcher,
            config,
            metrics: ExecutionMetrics::register(),
        }
    }

    pub fn parser(&self) -> &LanguageTitleParser {
        &self.parser
    }

    fn session_options(&self, context: &Value) -> Result<SessionOptions> {
        let timeout = match context.get("timeout_ms") {
            None | Some(Value::Null) => self.config.default_timeout,
            Some(value) => match value.as_u64() {
                Some(ms) if ms > 0 => {
                    Duration::from_millis(ms).min(self.config.runtime_timeout_cap)
                }
                _ => {
                    return Err(Error::InvalidRequest(
                        "context.timeout_ms must be a positive whole number of milliseconds".into(),
                    ))
                }
            },
        };
        let retain_session = match context.get("retain_session") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(retain)) => *retain,
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "context.retain_session must be true or false".into(),
                ))
            }
        };
        let compile_options = match context.get("compile_options") {
            None | Some(Value::Null) => Value::Null,
            Some(options @ Value::Object(_)) => options.clone(),
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "context.compile_options must be an object".into(),
                ))
            }
        };
        Ok(SessionOptions {
            timeout,
            retain_session,
            compile_options,
        })
    }

    pub async fn initialize(
        &self,
        caller: &Caller,
        request: InitializeRequest,
    ) -> Result<Initialized> {
        let language_title = self.parser.parse(&request.language_title)?;
        let language = language_title.language;
        if !caller.may_execute(language) {
            return Err(Error::Forbidden(format!(
                "token lacks the scope execute:{language} (or execute:all)"
            )));
        }
        let request_id = match request.request_id {
            Some(id) if valid_request_id(&id) => id,
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "X-Request-ID must be 1 to 128 characters of A-Z a-z 0-9 - _ . :".into(),
                ))
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let context = match request.context {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(context @ Value::Object(_)) => context,
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "context must be a JSON object".into(),
                ))
            }
        };
        let options = self.session_options(&context)?;
        if context.to_string().contains("\\u0000") {
            return Err(Error::InvalidRequest(
                "context must not contain NUL characters".into(),
            ));
        }
        if caller
            .subject
            .as_ref()
            .is_some_and(|subject| subject.len() > 128)
        {
            return Err(Error::InvalidRequest(
                "the token's subject is longer than 128 characters".into(),
            ));
        }

        // Either the caller's own script or a registered function's.
        let mut metadata = Map::new();
        let (source, compile_options, schema) = match request.script_content {
            Some(source) => {
                if source.len() > self.config.max_script_size {
                    return Err(Error::PayloadTooLarge {
                        what: "script_content",
                        size: source.len(),
                        limit: self.config.max_script_size,
                    });
                }
                check_script_text(&source)?;
                (source, options.compile_options.clone(), None)
            }
            None => {
                let canonical = language_title.canonical();
                let function =
                    self.store.get_function(&canonical).await?.ok_or_else(|| {
                        Error::NotFound(format!("function '{canonical}' not found"))
                    })?;
                metadata.insert(
                    "function".into(),
                    Value::String(function.language_title.clone()),
                );
                metadata.insert(
                    "function_version".into(),
                    Value::String(function.version.clone()),
                );
                // The session's own compile options win over the function's.
                let compile_options = if options.compile_options.is_null() {
                    function.compile_options.clone().unwrap_or(Value::Null)
                } else {
                    options.compile_options.clone()
                };
                let schema = params_schema(function.schema.as_ref()).cloned();
                (function.script_content, compile_options, schema)
            }
        };
        let params_validator = match &schema {
            Some(schema) => Some(compile_params_schema(schema)?),
            None => None,
        };
        if let Some(schema) = schema {
            metadata.insert("params_schema".into(), schema);
        }
        metadata.insert("retain_session".into(), Value::Bool(options.retain_session));

        let runtime = self.runtime_for(language)?;
        let mut script = build_script(
            language,
            &source,
            compile_options.clone(),
            caller.subject.as_deref(),
            None,
        );
        // A stored artifact is fetched (megabytes, for Rust) only when this
        // replica does not hold one already.
        let mut artifact_reused = has_artifacts(language) && runtime.has_local_artifact(&script);
        if has_artifacts(language) && !artifact_reused {
            if let Some(stored) = self.store.find_artifact(&script.hash).await? {
                script.artifact = Some(Arc::new(stored));
                artifact_reused = true;
            }
        }
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(self.config.session_expiry).map_err(|error| {
                Error::Internal(format!("session expiry out of range: {error}"))
            })?;
        // The row is written while the runtime loads the script, as if the
        // load succeeds: the commit waits on a disk flush (milliseconds) and
        // loading is milliseconds too, so they overlap instead of adding up.
        // A load that fails corrects the row before the caller hears of it.
        // Until then a reader of the row (only a caller who chose the id
        // could be one) sees it active.
        let record = SessionRecord {
            request_id: request_id.clone(),
            language_title: language_title.canonical(),
            user_id: caller.subject.clone(),
            created_at: now,
            expires_at,
            last_executed_at: None,
            execution_count: 0,
            status: SessionStatus::Active,
            context: context.clone(),
            script_content: source,
            script_hash: script.hash.clone(),
            compiled_artifact: None,
            compile_options: (!compile_options.is_null()).then_some(compile_options),
            compile_status: is_compiled(language).then(|| "success".to_string()),
            compile_error: None,
            metadata: Value::Object(metadata),
        };
        let (prepared, inserted) = if has_artifacts(language) && !artifact_reused {
            // A compile from source takes seconds: nothing to gain, and the
            // row would claim a success that long.
            let prepared = runtime.prepare(&script).await;
            (prepared, self.store.insert_session(&record).await)
        } else {
            tokio::join!(runtime.prepare(&script), self.store.insert_session(&record))
        };
        inserted.map_err(|error| match error {
            StoreError::Conflict { .. } => {
                Error::Conflict(format!("X-Request-ID '{request_id}' is already taken"))
            }
            other => Error::Store(other),
        })?;
        match prepared {
            Ok(prepared) => {
                // Stored once per script: a reused artifact is already in the
                // database, and re-storing megabytes per session is what made
                // cached initializes slow.
                if let Some(artifact) = prepared.artifact.filter(|_| !artifact_reused) {
                    let outcome = SessionOutcome {
                        status: SessionStatus::Active,
                        compile_status: record.compile_status.clone(),
                        compile_error: None,
                        compiled_artifact: Some(artifact),
                    };
                    // The session works without it: other replicas compile
                    // the script again and store what they compile.
                    self.settle(&request_id, &outcome).await;
                }
            }
            Err(RuntimeError::Initialization { message, location }) => {
                let outcome = SessionOutcome {
                    status: SessionStatus::Error,
                    compile_status: Some("error".to_string()),
                    compile_error: Some(message.clone()),
                    compiled_artifact: None,
                };
                self.settle(&request_id, &outcome).await;
                return Err(Error::Runtime(RuntimeError::Initialization {
                    message,
                    location,
                }));
            }
            // Not the script's fault (no worker, a spawn failure): the
            // session was never created, as far as the caller knows.
            Err(other) => {
                if let Err(error) = self.store.delete_session(&request_id).await {
                    tracing::warn!(%error, request_id, "cannot delete a session whose script did not load");
                }
                return Err(Error::Runtime(other));
            }
        }
        // The runtime holds the compiled script now; the cache must not keep
        // megabytes per session.
        script.artifact = None;
        self.cache.insert(Arc::new(LiveSession {
            request_id: request_id.clone(),
            language_title: record.language_title.clone(),
            language,
            user_id: record.user_id.clone(),
            expires_at,
            context,
            script,
            params_validator,
            retain_session: options.retain_session,
            timeout: options.timeout,
            loaded_at: Instant::now(),
        }));
        metrics::counter!("lambda_sessions_created_total", "language" => language.as_str())
            .increment(1);
        Ok(Initialized {
            request_id,
            language_title: record.language_title,
            status: record.status,
            created_at: now,
            expires_at,
            script_hash: record.script_hash,
            artifact_reused,
        })
    }

    /// Records how loading went on a session inserted before that was known.
    /// A failure is logged, not returned: the caller's answer does not
    /// depend on it, and a session left `active` with a script that does not
    /// load fails the same way when executed.
    async fn settle(&self, request_id: &str, outcome: &SessionOutcome) {
        if let Err(error) = self.store.settle_session(request_id, outcome).await {
            tracing::warn!(%error, request_id, status = outcome.status.as_str(), "cannot record how a session's script loaded");
        }
    }

    fn runtime_for(&self, language: Language) -> Result<&Arc<dyn lambda_runtime::LanguageRuntime>> {
        let runtime = self.runtimes.get(language).ok_or_else(|| {
            Error::Runtime(RuntimeError::Unavailable {
                language,
                reason: format!("no {language} runtime is built into this service yet"),
            })
        })?;
        if let lambda_runtime::RuntimeStatus::Unavailable { reason } = runtime.status() {
            return Err(Error::Runtime(RuntimeError::Unavailable {
                language,
                reason,
            }));
        }
        Ok(runtime)
    }

    /// Turns a stored row into a live session, or says why it cannot run.
    fn live_from_record(
        &self,
        record: SessionRecord,
        now: DateTime<Utc>,
    ) -> Result<Arc<LiveSession>> {
        if record.expires_at <= now {
            return Err(Error::session_not_found());
        }
        match record.status {
            SessionStatus::Active => {}
            SessionStatus::Completed => {
                return Err(Error::NotFound(
                    "Session not found or expired (it completed: retain_session was false)".into(),
                ))
            }
            SessionStatus::Expired => return Err(Error::session_not_found()),
            SessionStatus::Error => {
                return Err(Error::Runtime(RuntimeError::Initialization {
                    message: record
                        .compile_error
                        .unwrap_or_else(|| "the session's script failed to compile".into()),
                    location: Default::default(),
                }))
            }
        }
        let language_title = self.parser.parse(&record.language_title)?;
        let options = self.session_options(&record.context)?;
        let params_validator = match record.metadata.get("params_schema") {
            Some(schema) => Some(compile_params_schema(schema)?),
            None => None,
        };
        let retain_session = record
            .metadata
            .get("retain_session")
            .and_then(Value::as_bool)
            .unwrap_or(options.retain_session);
        let script = build_script(
            language_title.language,
            &record.script_content,
            record.compile_options.clone().unwrap_or(Value::Null),
            record.user_id.as_deref(),
            record.compiled_artifact,
        );
        Ok(Arc::new(LiveSession {
            request_id: record.request_id,
            language_title: record.language_title,
            language: language_title.language,
            user_id: record.user_id,
            expires_at: record.expires_at,
            context: record.context,
            script,
            params_validator,
            retain_session,
            timeout: options.timeout,
            loaded_at: Instant::now(),
        }))
    }

    async fn live_session(&self, request_id: &str, now: DateTime<Utc>) -> Result<Arc<LiveSession>> {
        match self.cache.get(request_id, now) {
            Cached::Fresh(session) => Ok(session),
            Cached::Stale(stale) => {
                match tokio::time::timeout(REVALIDATE_TIMEOUT, self.store.get_session(request_id))
                    .await
                {
                    Ok(Ok(record)) => self.refresh(request_id, record, now).await,
                    // The database is away: a session we already hold (whose
                    // expiry we still check) keeps running rather than
                    // failing, and is trusted for another window so the
                    // outage costs one bounded wait per window, not per call.
                    failure => {
                        let reason = match failure {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer within {} ms", REVALIDATE_TIMEOUT.as_millis()),
                        };
                        tracing::warn!(%reason, request_id, "cannot revalidate a cached session; serving it from the cache");
                        let renewed = Arc::new(LiveSession {
                            loaded_at: Instant::now(),
                            ..(*stale).clone()
                        });
                        self.cache.insert(renewed.clone());
                        Ok(renewed)
                    }
                }
            }
            Cached::Missing => {
                let record = self.store.get_session(request_id).await?;
                self.refresh(request_id, record, now).await
            }
        }
    }

    async fn refresh(
        &self,
        request_id: &str,
        record: Option<SessionRecord>,
        now: DateTime<Utc>,
    ) -> Result<Arc<LiveSession>> {
        let Some(record) = record else {
            self.cache.remove(request_id);
            return Err(Error::session_not_found());
        };
        let mut session = match self.live_from_record(record, now) {
            Ok(session) => session,
            Err(error) => {
                self.cache.remove(request_id);
                return Err(error);
            }
        };
        // A replica that never compiled this script (or lost its disk)
        // gets the stored artifact; the runtime keeps it from then on.
        if has_artifacts(session.language) {
            let held = self
                .runtimes
                .get(session.language)
                .is_some_and(|runtime| runtime.has_local_artifact(&session.script));
            if !held {
                if let Some(stored) = self.store.find_artifact(&session.script.hash).await? {
                    let mut with_artifact = (*session).clone();
                    with_artifact.script.artifact = Some(Arc::new(stored));
                    session = Arc::new(with_artifact);
                }
            }
        }
        self.cache.insert(session.clone());
        Ok(session)
    }

    pub async fn execute(
        &self,
        caller: &Caller,
        request_id: &str,
        request: &ExecuteRequest,
    ) -> Result<ExecuteOutcome> {
        let started = Instant::now();
        let now = Utc::now();
        let session = self.live_session(request_id, now).await?;
        // Another subject's session does not exist for this caller.
        if !caller.owns(session.user_id.as_deref()) {
            return Err(Error::session_not_found());
        }
        if !caller.may_execute(session.language) {
            return Err(Error::Forbidden(format!(
                "token lacks the scope execute:{} (or execute:all)",
                session.language
            )));
        }
        // Borrowed: the caller keeps the params for the request log.
        let no_params = Value::Object(Map::new());
        let params = match &request.params {
            Value::Null => &no_params,
            params => params,
        };
        if let Some(validator) = &session.params_validator {
            scripts::validate_params(validator, params)?;
        }
        // Hashing params and context costs; skip it when nothing is cached.
        let cache_key = self.results.enabled_for(request.cache).then(|| {
            CacheKey::new(
                session.user_id.as_deref(),
                &session.script.hash,
                params,
                &session.context,
            )
        });
        if let Some(result) = cache_key
            .as_ref()
            .and_then(|key| self.results.get(key, request.cache))
        {
            self.count_execution(&session, now).await?;
            return Ok(ExecuteOutcome {
                request_id: session.request_id.clone(),
                language_title: session.language_title.clone(),
                execution_time_ms: started.elapsed().as_millis() as u64,
                cached: true,
                result,
                logs: Vec::new(),
            });
        }

        let runtime = self.runtime_for(session.language)?;
        let event = serde_json::to_string(&Event {
            params,
            context: &session.context,
            request_id: &session.request_id,
            language_title: &session.language_title,
        })
        .map_err(|error| Error::Internal(format!("cannot serialize the event: {error}")))?;
        let limits = Limits {
            timeout: session.timeout,
            memory_bytes: self.config.workers.memory_bytes,
            max_result_bytes: self.config.workers.max_result_bytes,
            max_log_bytes: self.config.workers.max_log_bytes,
            max_processes: self.config.workers.max_processes,
        };
        let run_started = Instant::now();
        let outcome = runtime.execute(&session.script, &event, &limits).await;
        let failure = outcome
            .as_ref()
            .err()
            .map(|error| Error::Runtime(error.clone()).code());
        self.metrics.record(
            session.language,
            failure,
            run_started.elapsed().as_secs_f64(),
        );
        // An execution that ran counts, whatever its outcome.
        self.count_execution(&session, now).await?;
        let Output { result, logs } = outcome?;
        if let Some(key) = cache_key {
            self.results.put(key, &result, request.cache);
        }
        Ok(ExecuteOutcome {
            request_id: session.request_id.clone(),
            language_title: session.language_title.clone(),
            execution_time_ms: started.elapsed().as_millis() as u64,
            cached: false,
            result,
            logs,
        })
    }

    async fn count_execution(&self, session: &LiveSession, at: DateTime<Utc>) -> Result<()> {
        if session.retain_session {
            self.batcher.count_execution(&session.request_id, at).await;
            return Ok(());
        }
        // A one-shot session must end now, on every replica: write through.
        self.cache.remove(&session.request_id);
        self.store
            .record_executions(&session.request_id, 1, at, true)
            .await?;
        self.runtimes_release(session).await;
        Ok(())
    }

    async fn runtimes_release(&self, session: &LiveSession) {
        if let Some(runtime) = self.runtimes.get(session.language) {
            runtime.release(&session.script.worker_key).await;
        }
    }

    pub async fn get(&self, caller: &Caller, request_id: &str) -> Result<SessionView> {
        // Counters are written behind; make this replica's pending ones visible.
        self.batcher.flush().await;
        let record = self
            .store
            .get_session(request_id)
            .await?
            .ok_or_else(Error::session_not_found)?;
        if !caller.owns(record.user_id.as_deref()) {
            return Err(Error::session_not_found());
        }
        // Expired is 404 everywhere, even before the sweeper deletes the row.
        if record.expires_at <= Utc::now() {
            return Err(Error::session_not_found());
        }
        let status = record.status;
        Ok(SessionView { record, status })
    }

    pub async fn delete(&self, caller: &Caller, request_id: &str) -> Result<()> {
        let record = self
            .store
            .get_session(request_id)
            .await?
            .filter(|record| record.expires_at > Utc::now())
            .ok_or_else(Error::session_not_found)?;
        if !caller.owns(record.user_id.as_deref()) {
            return Err(Error::session_not_found());
        }
        if let Some(session) = self.cache.remove(request_id) {
            self.runtimes_release(&session).await;
        }
        if !self.store.delete_session(request_id).await? {
            return Err(Error::session_not_found());
        }
        Ok(())
    }

    /// Deletes expired sessions from the store and the cache, and the
    /// store's memory of old counter batches; returns how many sessions went.
    pub async fn sweep_expired(&self) -> Result<u64> {
        let now = Utc::now();
        for session in self.cache.remove_expired(now) {
            self.runtimes_release(&session).await;
        }
        let deleted = self.store.delete_expired_sessions(now).await?;
        self.store
            .forget_counter_batches(now - COUNTER_BATCH_MEMORY)
            .await?;
        let active = self.store.count_active_sessions(now).await?;
        metrics::gauge!("lambda_active_sessions").set(active as f64);
        Ok(deleted)
    }

    /// Writes out queued counters and logs (tests, and reads that must see them).
    pub async fn flush_logs(&self) {
        self.batcher.flush().await;
    }

    pub fn batcher(&self) -> &LogBatcher {
        &self.batcher
    }
}

#[derive(Serialize)]
struct Event<'a> {
    params: &'a Value,
    context: &'a Value,
    request_id: &'a str,
    language_title: &'a str,
}
