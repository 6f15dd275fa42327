//! The SQLite backend: one local file, so a new user runs the service with
//! no database to set up. Same tables as PostgreSQL without the schemas;
//! value encodings are described in `migrations/sqlite/`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::common::{self, conflict_or_database};
use crate::seeds::{SEEDS, SYSTEM_USER};
use crate::{
    ExecutionCount, FunctionFilter, FunctionKind, FunctionRecord, FunctionUpdate, NewFunction,
    RequestLog, Result, SessionOutcome, SessionRecord, SessionStatus, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The file [`SqliteStore::open_in_dir`] creates in the data directory.
pub const SQLITE_FILE_NAME: &str = "lambda.db";

/// WAL lets readers run beside the one writer; more connections than this
/// only queue on SQLite's single write lock.
const MAX_CONNECTIONS: u32 = 8;

/// How long a writer waits for another writer before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Write transactions take the write lock up front: a deferred transaction
/// that reads and then writes can fail with SQLITE_BUSY without waiting when
/// another writer got in between.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

const SESSION_COLUMNS: &str = "request_id, language_title, user_id, created_at, expires_at, \
     last_executed_at, execution_count, status, context, script_content, script_hash, \
     compiled_artifact, compile_options, compile_status, compile_error, metadata";
// Reads leave the artifact out: it can be megabytes, and a hot session is
// re-read every revalidation window. `find_artifact` fetches it on demand.
const SESSION_READ_COLUMNS: &str = "request_id, language_title, user_id, created_at, expires_at, \
     last_executed_at, execution_count, status, context, script_content, script_hash, \
     NULL AS compiled_artifact, compile_options, compile_status, compile_error, metadata";

const FUNCTION_SELECT: &str = "SELECT f.id, f.language, f.title, f.language_title, \
     f.description, f.schema_definition, f.examples, f.compile_options, f.tags, f.version, \
     f.created_by, f.created_at, f.updated_at, COALESCE(s.content, '') AS content \
     FROM functions f LEFT JOIN scripts s ON s.function_id = f.id";

/// [`Store`] on a SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating it and its parent directory if needed) the database
    /// file at `path`. Does not migrate: call [`Store::migrate`].
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only
            // an OS crash may lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// Open `<data_dir>/lambda.db`, creating the directory if needed.
    pub async fn open_in_dir(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open(&data_dir.join(SQLITE_FILE_NAME)).await
    }

    /// The underlying pool, for tests and diagnostics.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Fixed-width UTC text with microseconds, so text comparison in SQL is time
/// comparison and values round-trip at PostgreSQL's precision.
fn encode_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt(format!("bad timestamp '{text}': {error}")))
}

fn encode_json(value: &Value) -> String {
    // Serialising a `Value` cannot fail: its map keys are always strings.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("null"))
}

fn encode_json_opt(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(encode_json)
}

fn decode_json(text: &str, column: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("bad JSON in {column}: {error}")))
}

fn get_time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>> {
    decode_time(row.try_get::<&str, _>(column)?)
}

fn get_time_opt(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get::<Option<&str>, _>(column)?
        .map(decode_time)
        .transpose()
}

fn get_json_opt(row: &SqliteRow, column: &str) -> Result<Option<Value>> {
    row.try_get::<Option<&str>, _>(column)?
        .map(|text| decode_json(text, column))
        .transpose()
}

fn get_uuid(row: &SqliteRow, column: &str) -> Result<Uuid> {
    let text: &str = row.try_get(column)?;
    Uuid::parse_str(text).map_err(|error| StoreError::Corrupt(format!("bad id '{text}': {error}")))
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord> {
    Ok(SessionRecord {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        user_id: row.try_get("user_id")?,
        created_at: get_time(row, "created_at")?,
        expires_at: get_time(row, "expires_at")?,
        last_executed_at: get_time_opt(row, "last_executed_at")?,
        execution_count: row.try_get("execution_count")?,
        status: SessionStatus::parse(row.try_get::<&str, _>("status")?)?,
        context: get_json_opt(row, "context")?.unwrap_or(Value::Null),
        script_content: row
            .try_get::<Option<String>, _>("script_content")?
            .unwrap_or_default(),
        script_hash: row
            .try_get::<Option<String>, _>("script_hash")?
            .unwrap_or_default(),
        compiled_artifact: row.try_get("compiled_artifact")?,
        compile_options: get_json_opt(row, "compile_options")?,
        compile_status: row.try_get("compile_status")?,
        compile_error: row.try_get("compile_error")?,
        metadata: get_json_opt(row, "metadata")?.unwrap_or(Value::Null),
    })
}

fn function_from_row(row: &SqliteRow) -> Result<FunctionRecord> {
    let created_by: Option<String> = row.try_get("created_by")?;
    let kind = if created_by.as_deref() == Some(SYSTEM_USER) {
        FunctionKind::Predefined
    } else {
        FunctionKind::Dynamic
    };
    let tags_text: &str = row.try_get("tags")?;
    let tags: Vec<String> = serde_json::from_str(tags_text)
        .map_err(|error| StoreError::Corrupt(format!("bad JSON in tags: {error}")))?;
    Ok(FunctionRecord {
        id: get_uuid(row, "id")?,
        language: row.try_get("language")?,
        title: row.try_get("title")?,
        language_title: row.try_get("language_title")?,
        description: row.try_get("description")?,
        kind,
        created_by,
        script_content: row.try_get("content")?,
        schema: get_json_opt(row, "schema_definition")?,
        examples: get_json_opt(row, "examples")?,
        compile_options: get_json_opt(row, "compile_options")?,
        tags,
        version: row.try_get("version")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

fn encode_tags(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| String::from("[]"))
}

fn push_function_filter<'a>(builder: &mut QueryBuilder<'a, Sqlite>, filter: &'a FunctionFilter) {
    builder.push(" WHERE f.is_active = 1");
    if let Some(language) = &filter.language {
        builder
            .push(" AND f.language = ")
            .push_bind(language.as_str());
    }
    if let Some(user_id) = &filter.user_id {
        builder
            .push(" AND f.created_by = ")
            .push_bind(user_id.as_str());
    }
    match filter.kind {
        Some(FunctionKind::Predefined) => {
            builder.push(" AND f.created_by = ").push_bind(SYSTEM_USER);
        }
        Some(FunctionKind::Dynamic) => {
            builder
                .push(" AND f.created_by IS NOT ")
                .push_bind(SYSTEM_USER);
        }
        None => {}
    }
}

async fn function_by_name(
    connection: &mut SqliteConnection,
    language_title: &str,
) -> Result<Option<FunctionRecord>> {
    let row = sqlx::query(&format!(
        "{FUNCTION_SELECT} WHERE f.language_title = ?1 AND f.is_active = 1"
    ))
    .bind(language_title)
    .fetch_optional(&mut *connection)
    .await?;
    row.as_ref().map(function_from_row).transpose()
}

async fn seed(connection: &mut SqliteConnection) -> Result<()> {
    let now = encode_time(Utc::now());
    for seed in &SEEDS {
        let id = seed.id.to_string();
        sqlx::query(
            "INSERT OR IGNORE INTO functions (id, language, title, language_title, description, \
             schema_definition, examples, created_at, updated_at, created_by, is_active, version, \
             tags, compile_options) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, 1, '1.0.0', ?10, NULL)",
        )
        .bind(&id)
        .bind(seed.language)
        .bind(seed.title)
        .bind(seed.language_title)
        .bind(seed.description)
        .bind(encode_json(&(seed.schema)()))
        .bind(encode_json(&(seed.examples)()))
        .bind(&now)
        .bind(SYSTEM_USER)
        .bind(encode_tags(&seed.tags()))
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT OR IGNORE INTO scripts (function_id, content, created_at, updated_at) \
             SELECT ?1, ?2, ?3, ?3 WHERE EXISTS (SELECT 1 FROM functions WHERE id = ?1)",
        )
        .bind(&id)
        .bind(seed.script)
        .bind(&now)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        // One IMMEDIATE transaction holds SQLite's write lock for the whole
        // migrate-and-seed, so two processes opening the same file at once
        // run it one after the other. The migrator's own transactions
        // become savepoints inside it.
        let mut connection = self.pool.acquire().await?;
        let mut transaction = connection.begin_with(BEGIN_WRITE).await?;
        // `run_direct`: `run` trips the "Acquire is not general enough"
        // lifetime error inside async_trait futures (sqlx's own workaround).
        MIGRATOR.run_direct(&mut *transaction).await?;
        seed(&mut transaction).await?;
        transaction.commit().await?;
        drop(connection);
        self.verify_schema().await
    }

    async fn verify_schema(&self) -> Result<()> {
        let mut missing = Vec::new();
        for (_, table, columns) in common::EXPECTED_COLUMNS {
            let present: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
                .bind(*table)
                .fetch_all(&self.pool)
                .await?;
            if present.is_empty() {
                missing.push((*table).to_string());
                continue;
            }
            for column in *columns {
                if !present.iter().any(|name| name == column) {
                    missing.push(format!("{table}.{column}"));
                }
            }
        }
        common::missing_to_result(missing)
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))
        .bind(&session.request_id)
        .bind(&session.language_title)
        .bind(&session.user_id)
        .bind(encode_time(session.created_at))
        .bind(encode_time(session.expires_at))
        .bind(session.last_executed_at.map(encode_time))
        .bind(session.execution_count)
        .bind(session.status.as_str())
        .bind(encode_json(&session.context))
        .bind(&session.script_content)
        .bind(&session.script_hash)
        .bind(&session.compiled_artifact)
        .bind(encode_json_opt(&session.compile_options))
        .bind(&session.compile_status)
        .bind(&session.compile_error)
        .bind(encode_json(&session.metadata))
        .execute(&self.pool)
        .await
        .map_err(|error| {
            conflict_or_database(error, || format!("session '{}'", session.request_id))
        })?;
        Ok(())
    }

    async fn settle_session(&self, request_id: &str, outcome: &SessionOutcome) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE sessions SET status = ?2, compile_status = ?3, compile_error = ?4, \
             compiled_artifact = ?5 WHERE request_id = ?1",
        )
        .bind(request_id)
        .bind(outcome.status.as_str())
        .bind(&outcome.compile_status)
        .bind(&outcome.compile_error)
        .bind(&outcome.compiled_artifact)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn get_session(&self, request_id: &str) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_READ_COLUMNS} FROM sessions WHERE request_id = ?1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn record_executions(
        &self,
        request_id: &str,
        count: i64,
        last_executed_at: DateTime<Utc>,
        complete: bool,
    ) -> Result<Option<SessionRecord>> {
        // Batches written behind may land out of order: last_executed_at
        // only ever moves forward.
        let row = sqlx::query(&format!(
            "UPDATE sessions SET execution_count = execution_count + ?2, \
             last_executed_at = CASE WHEN last_executed_at IS NULL OR last_executed_at < ?3 \
             THEN ?3 ELSE last_executed_at END, \
             status = CASE WHEN ?4 THEN 'completed' ELSE status END \
             WHERE request_id = ?1 RETURNING {SESSION_READ_COLUMNS}"
        ))
        .bind(request_id)
        .bind(count)
        .bind(encode_time(last_executed_at))
        .bind(complete)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn record_execution_counts(&self, batch: Uuid, counts: &[ExecutionCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        // SQLite is in-process: one transaction of small updates is the
        // cheap way, and it commits all or nothing, the batch's id with it.
        let mut transaction = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO counter_batches (batch_id, applied_at) VALUES (?1, ?2) \
             ON CONFLICT (batch_id) DO NOTHING",
        )
        .bind(batch.to_string())
        .bind(encode_time(Utc::now()))
        .execute(&mut *transaction)
        .await?;
        if claimed.rows_affected() == 0 {
            // Applied before: a retry whose first attempt did commit.
            return Ok(());
        }
        for count in counts {
            sqlx::query(
                "UPDATE sessions SET execution_count = execution_count + ?2, \
                 last_executed_at = CASE WHEN last_executed_at IS NULL OR last_executed_at < ?3 \
                 THEN ?3 ELSE last_executed_at END WHERE request_id = ?1",
            )
            .bind(&count.request_id)
            .bind(count.count)
            .bind(encode_time(count.last_executed_at))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn forget_counter_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM counter_batches WHERE applied_at < ?1")
            .bind(encode_time(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn delete_session(&self, request_id: &str) -> Result<bool> {
        let result = sqlx::query("DELETE FROM sessions WHERE request_id = ?1")
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM sessions WHERE expires_at < ?1")
            .bind(encode_time(now))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE status = 'active' AND expires_at > ?1",
        )
        .bind(encode_time(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn find_artifact(&self, script_hash: &str) -> Result<Option<Vec<u8>>> {
        let artifact: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT compiled_artifact FROM sessions \
             WHERE script_hash = ?1 AND compiled_artifact IS NOT NULL LIMIT 1",
        )
        .bind(script_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(artifact)
    }

    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(i64, Vec<FunctionRecord>)> {
        let mut count_query = QueryBuilder::new("SELECT COUNT(*) FROM functions f");
        push_function_filter(&mut count_query, filter);
        let total: i64 = count_query
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await?;

        let (limit, offset) = common::limit_offset(filter);
        let mut page_query = QueryBuilder::new(FUNCTION_SELECT);
        push_function_filter(&mut page_query, filter);
        page_query
            .push(" ORDER BY f.language_title LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = page_query.build().fetch_all(&self.pool).await?;
        let functions = rows
            .iter()
            .map(function_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok((total, functions))
    }

    async fn get_function(&self, language_title: &str) -> Result<Option<FunctionRecord>> {
        let mut connection = self.pool.acquire().await?;
        function_by_name(&mut connection, language_title).await
    }

    async fn insert_function(&self, function: &NewFunction) -> Result<FunctionRecord> {
        let conflict = || format!("function '{}'", function.language_title);
        let now = encode_time(Utc::now());
        let mut transaction = self.pool.begin_with(BEGIN_WRITE).await?;
        let existing: Option<(String, bool)> =
            sqlx::query_as("SELECT id, is_active FROM functions WHERE language_title = ?1")
                .bind(&function.language_title)
                .fetch_optional(&mut *transaction)
                .await?;
        let id = match existing {
            Some((_, true)) => return Err(StoreError::Conflict { what: conflict() }),
            Some((retired_id, false)) => {
                // A retired name is free again: the row is reused so its
                // script (foreign key) follows, but it starts over as new.
                sqlx::query(
                    "UPDATE functions SET language = ?2, title = ?3, description = ?4, \
                     schema_definition = ?5, examples = ?6, compile_options = ?7, tags = ?8, \
                     created_by = ?9, created_at = ?10, updated_at = ?10, is_active = 1, \
                     version = '1.0.0' WHERE id = ?1",
                )
                .bind(&retired_id)
                .bind(&function.language)
                .bind(&function.title)
                .bind(&function.description)
                .bind(encode_json_opt(&function.schema))
                .bind(encode_json_opt(&function.examples))
                .bind(encode_json_opt(&function.compile_options))
                .bind(encode_tags(&function.tags))
                .bind(&function.created_by)
                .bind(&now)
                .execute(&mut *transaction)
                .await?;
                retired_id
            }
            None => {
                let new_id = Uuid::new_v4().to_string();
                sqlx::query(
                    "INSERT INTO functions (id, language, title, language_title, \
                     description, schema_definition, examples, compile_options, tags, \
                     created_by, created_at, updated_at, is_active, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 1, '1.0.0')",
                )
                .bind(&new_id)
                .bind(&function.language)
                .bind(&function.title)
                .bind(&function.language_title)
                .bind(&function.description)
                .bind(encode_json_opt(&function.schema))
                .bind(encode_json_opt(&function.examples))
                .bind(encode_json_opt(&function.compile_options))
                .bind(encode_tags(&function.tags))
                .bind(&function.created_by)
                .bind(&now)
                .execute(&mut *transaction)
                .await
                .map_err(|error| conflict_or_database(error, conflict))?;
                new_id
            }
        };
        sqlx::query(
            "INSERT INTO scripts (function_id, content, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?3) ON CONFLICT (function_id) DO UPDATE \
             SET content = excluded.content, created_at = excluded.created_at, \
             updated_at = excluded.updated_at",
        )
        .bind(&id)
        .bind(&function.script_content)
        .bind(&now)
        .execute(&mut *transaction)
        .await?;
        let record = function_by_name(&mut transaction, &function.language_title).await?;
        transaction.commit().await?;
        record.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "function '{}' vanished while being registered",
                function.language_title
            ))
        })
    }

    async fn update_function(
        &self,
        language_title: &str,
        update: &FunctionUpdate,
    ) -> Result<Option<FunctionRecord>> {
        let now = encode_time(Utc::now());
        let mut transaction = self.pool.begin_with(BEGIN_WRITE).await?;
        let existing: Option<(String, String)> = sqlx::query_as(
            "SELECT id, version FROM functions WHERE language_title = ?1 AND is_active = 1",
        )
        .bind(language_title)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((id, version)) = existing else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE functions SET \
             description = COALESCE(?2, description), \
             schema_definition = COALESCE(?3, schema_definition), \
             examples = COALESCE(?4, examples), \
             compile_options = COALESCE(?5, compile_options), \
             tags = COALESCE(?6, tags), \
             version = ?7, updated_at = ?8 WHERE id = ?1",
        )
        .bind(&id)
        .bind(&update.description)
        .bind(encode_json_opt(&update.schema))
        .bind(encode_json_opt(&update.examples))
        .bind(encode_json_opt(&update.compile_options))
        .bind(update.tags.as_deref().map(encode_tags))
        .bind(common::bump_patch(&version))
        .bind(&now)
        .execute(&mut *transaction)
        .await?;
        if let Some(script_content) = &update.script_content {
            sqlx::query(
                "INSERT INTO scripts (function_id, content, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?3) ON CONFLICT (function_id) DO UPDATE \
                 SET content = excluded.content, updated_at = excluded.updated_at",
            )
            .bind(&id)
            .bind(script_content)
            .bind(&now)
            .execute(&mut *transaction)
            .await?;
        }
        let record = function_by_name(&mut transaction, language_title).await?;
        transaction.commit().await?;
        Ok(record)
    }

    async fn retire_function(&self, language_title: &str) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE functions SET is_active = 0, updated_at = ?2 \
             WHERE language_title = ?1 AND is_active = 1",
        )
        .bind(language_title)
        .bind(encode_time(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn insert_logs(&self, batch: &[RequestLog]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin_with(BEGIN_WRITE).await?;
        for chunk in batch.chunks(common::LOG_ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO request_logs (id, request_id, language_title, timestamp, \
                 client_ip, user_id, request_headers, request_payload, response_payload, \
                 status_code, duration_ms, cached, error_details, runtime_metrics) ",
            );
            insert.push_values(chunk, |mut row, log| {
                row.push_bind(log.id.to_string())
                    .push_bind(
                        common::truncate_chars(&log.request_id, common::REQUEST_ID_MAX_CHARS)
                            .to_owned(),
                    )
                    .push_bind(
                        common::truncate_chars(
                            &log.language_title,
                            common::LANGUAGE_TITLE_MAX_CHARS,
                        )
                        .to_owned(),
                    )
                    .push_bind(encode_time(log.timestamp))
                    .push_bind(log.client_ip.as_deref().map(|ip| {
                        common::truncate_chars(ip, common::CLIENT_IP_MAX_CHARS).to_owned()
                    }))
                    .push_bind(log.user_id.as_deref().map(|user| {
                        common::truncate_chars(user, common::USER_ID_MAX_CHARS).to_owned()
                    }))
                    .push_bind(encode_json_opt(&log.request_headers))
                    .push_bind(encode_json_opt(&log.request_payload))
                    .push_bind(encode_json_opt(&log.response_payload))
                    .push_bind(log.status_code)
                    .push_bind(log.duration_ms)
                    .push_bind(log.cached)
                    .push_bind(encode_json_opt(&log.error_details))
                    .push_bind(encode_json_opt(&log.runtime_metrics));
            });
            // Retried batches skip rows already written (see the PostgreSQL store).
            insert.push(" ON CONFLICT (id) DO NOTHING");
            insert.build().execute(&mut *transaction).await?;
        }
        let errors: Vec<(&RequestLog, &crate::ErrorLog)> = batch
            .iter()
            .filter_map(|log| log.error.as_ref().map(|error| (log, error)))
            .collect();
        for chunk in errors.chunks(common::LOG_ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO error_logs (id, request_log_id, timestamp, error_code, \
                 error_message, stack_trace, context) ",
            );
            insert.push_values(chunk, |mut row, (log, error)| {
                row.push_bind(error.id.to_string())
                    .push_bind(log.id.to_string())
                    .push_bind(encode_time(log.timestamp))
                    .push_bind(
                        common::truncate_chars(&error.error_code, common::ERROR_CODE_MAX_CHARS)
                            .to_owned(),
                    )
                    .push_bind(error.error_message.as_str())
                    .push_bind(error.stack_trace.as_deref())
                    .push_bind(encode_json_opt(&error.context));
            });
            insert.push(" ON CONFLICT (id) DO NOTHING");
            insert.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
