//! The PostgreSQL backend: production's single source of truth.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::common::{self, conflict_or_database};
use crate::seeds::{SEEDS, SYSTEM_USER};
use crate::{
    ExecutionCount, FunctionFilter, FunctionKind, FunctionRecord, FunctionUpdate, NewFunction,
    RequestLog, Result, SessionOutcome, SessionRecord, SessionStatus, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Advisory lock key serialising migrate-and-seed across replicas. Distinct
/// from the key sqlx's migrator derives from the database name, so the two
/// never collide; "lambda" in ASCII plus a counter.
const MIGRATION_LOCK_KEY: i64 = 0x6c61_6d62_6461_0001;

/// Enough for the request path plus the log writer and the expiry sweeper,
/// while several replicas stay well under PostgreSQL's default 100.
const MAX_CONNECTIONS: u32 = 16;

/// A dead or unreachable database answers with an error after this long
/// instead of hanging requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle at least this long is pinged before use: the
/// server or a proxy may have closed it meanwhile.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

const SESSION_COLUMNS: &str = "request_id, language_title, user_id, created_at, expires_at, \
     last_executed_at, execution_count, status, context, script_content, script_hash, \
     compiled_artifact, compile_options, compile_status, compile_error, metadata";
// Reads leave the artifact out: it can be megabytes, and a hot session is
// re-read every revalidation window. `find_artifact` fetches it on demand.
const SESSION_READ_COLUMNS: &str = "request_id, language_title, user_id, created_at, expires_at, \
     last_executed_at, execution_count, status, context, script_content, script_hash, \
     NULL::bytea AS compiled_artifact, compile_options, compile_status, compile_error, metadata";

// COALESCE on tags: the original platform's column allows NULL.
const FUNCTION_SELECT: &str = "SELECT f.id, f.language, f.title, f.language_title, \
     f.description, f.schema_definition, f.examples, f.compile_options, \
     COALESCE(f.tags, '{}') AS tags, f.version, \
     f.created_by, f.created_at, f.updated_at, COALESCE(s.content, '') AS content \
     FROM meta.functions f LEFT JOIN meta.scripts s ON s.function_id = f.id";

/// [`Store`] on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connect a pool (16 connections, 5 s acquire timeout) to `database_url`
    /// (`postgres://user:password@host:port/database`). Fails if the database
    /// cannot be reached now. Does not migrate: call [`Store::migrate`].
    pub async fn connect(database_url: &str) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // sqlx pings every connection it hands out: a round trip per
            // query. Only one that sat idle a while is worth checking; a
            // failed ping drops it and the pool hands out another.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(database_url)
            .await?;
        Ok(PostgresStore { pool })
    }

    /// Wrap an existing pool (e.g. one a test harness built).
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        PostgresStore { pool }
    }

    /// The underlying pool, for tests and diagnostics.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn migrate_locked(connection: &mut PgConnection) -> Result<()> {
        // `run_direct`: `run` trips the "Acquire is not general enough"
        // lifetime error inside async_trait futures (sqlx's own workaround).
        MIGRATOR.run_direct(&mut *connection).await?;
        seed(connection).await
    }
}

async fn seed(connection: &mut PgConnection) -> Result<()> {
    let now = Utc::now();
    for seed in &SEEDS {
        // No conflict target: neither the fixed id nor the name may be
        // overwritten, whichever of the two already exists.
        sqlx::query(
            "INSERT INTO meta.functions (id, language, title, language_title, description, \
             schema_definition, examples, created_at, updated_at, created_by, is_active, version, \
             tags, compile_options) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, TRUE, '1.0.0', $10, NULL) \
             ON CONFLICT DO NOTHING",
        )
        .bind(seed.id)
        .bind(seed.language)
        .bind(seed.title)
        .bind(seed.language_title)
        .bind(seed.description)
        .bind((seed.schema)())
        .bind((seed.examples)())
        .bind(now)
        .bind(SYSTEM_USER)
        .bind(seed.tags())
        .execute(&mut *connection)
        .await?;
        // Only when the function row is ours: a name taken by another row
        // must not get a script attached to a missing id (foreign key).
        sqlx::query(
            "INSERT INTO meta.scripts (function_id, content, created_at, updated_at) \
             SELECT $1, $2, $3, $3 WHERE EXISTS (SELECT 1 FROM meta.functions WHERE id = $1) \
             ON CONFLICT (function_id) DO NOTHING",
        )
        .bind(seed.id)
        .bind(seed.script)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

fn session_from_row(row: &PgRow) -> Result<SessionRecord> {
    Ok(SessionRecord {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_executed_at: row.try_get("last_executed_at")?,
        execution_count: row.try_get("execution_count")?,
        status: SessionStatus::parse(row.try_get::<&str, _>("status")?)?,
        context: row
            .try_get::<Option<Value>, _>("context")?
            .unwrap_or(Value::Null),
        script_content: row
            .try_get::<Option<String>, _>("script_content")?
            .unwrap_or_default(),
        script_hash: row
            .try_get::<Option<String>, _>("script_hash")?
            .unwrap_or_default(),
        compiled_artifact: row.try_get("compiled_artifact")?,
        compile_options: row.try_get("compile_options")?,
        compile_status: row.try_get("compile_status")?,
        compile_error: row.try_get("compile_error")?,
        metadata: row
            .try_get::<Option<Value>, _>("metadata")?
            .unwrap_or(Value::Null),
    })
}

fn function_from_row(row: &PgRow) -> Result<FunctionRecord> {
    let created_by: Option<String> = row.try_get("created_by")?;
    let kind = if created_by.as_deref() == Some(SYSTEM_USER) {
        FunctionKind::Predefined
    } else {
        FunctionKind::Dynamic
    };
    Ok(FunctionRecord {
        id: row.try_get("id")?,
        language: row.try_get("language")?,
        title: row.try_get("title")?,
        language_title: row.try_get("language_title")?,
        description: row.try_get("description")?,
        kind,
        created_by,
        script_content: row.try_get("content")?,
        schema: row.try_get("schema_definition")?,
        examples: row.try_get("examples")?,
        compile_options: row.try_get("compile_options")?,
        tags: row.try_get("tags")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn push_function_filter<'a>(builder: &mut QueryBuilder<'a, Postgres>, filter: &'a FunctionFilter) {
    builder.push(" WHERE f.is_active");
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
                .push(" AND f.created_by IS DISTINCT FROM ")
                .push_bind(SYSTEM_USER);
        }
        None => {}
    }
}

async fn function_by_name(
    executor: &mut PgConnection,
    language_title: &str,
) -> Result<Option<FunctionRecord>> {
    let row = sqlx::query(&format!(
        "{FUNCTION_SELECT} WHERE f.language_title = $1 AND f.is_active"
    ))
    .bind(language_title)
    .fetch_optional(&mut *executor)
    .await?;
    row.as_ref().map(function_from_row).transpose()
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        // The lock is held by this session: migrating, seeding and unlocking
        // must all happen on this one connection.
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await?;
        let migrated = Self::migrate_locked(&mut connection).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await;
        if unlocked.is_err() {
            // A connection that may still hold the lock must not go back to
            // the pool; closing it releases the lock server-side.
            connection.close_on_drop();
        }
        migrated?;
        unlocked?;
        drop(connection);
        self.verify_schema().await
    }

    async fn verify_schema(&self) -> Result<()> {
        let rows = sqlx::query(
            "SELECT table_schema::text AS table_schema, table_name::text AS table_name, \
             column_name::text AS column_name FROM information_schema.columns \
             WHERE table_schema IN ('meta', 'public')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut present = std::collections::HashSet::new();
        for row in &rows {
            let schema: String = row.try_get("table_schema")?;
            let table: String = row.try_get("table_name")?;
            let column: String = row.try_get("column_name")?;
            present.insert(format!("{schema}.{table}.{column}"));
        }
        let mut missing = Vec::new();
        for (schema, table, columns) in common::EXPECTED_COLUMNS {
            let table_prefix = format!("{schema}.{table}.");
            if !present.iter().any(|name| name.starts_with(&table_prefix)) {
                missing.push(format!("{schema}.{table}"));
                continue;
            }
            for column in *columns {
                let name = format!("{table_prefix}{column}");
                if !present.contains(&name) {
                    missing.push(name);
                }
            }
        }
        common::missing_to_result(missing)
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO meta.sessions ({SESSION_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&session.request_id)
        .bind(&session.language_title)
        .bind(&session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(session.last_executed_at)
        .bind(session.execution_count)
        .bind(session.status.as_str())
        .bind(&session.context)
        .bind(&session.script_content)
        .bind(&session.script_hash)
        .bind(&session.compiled_artifact)
        .bind(&session.compile_options)
        .bind(&session.compile_status)
        .bind(&session.compile_error)
        .bind(&session.metadata)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            conflict_or_database(error, || format!("session '{}'", session.request_id))
        })?;
        Ok(())
    }

    async fn settle_session(&self, request_id: &str, outcome: &SessionOutcome) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE meta.sessions SET status = $2, compile_status = $3, compile_error = $4, \
             compiled_artifact = $5 WHERE request_id = $1",
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
            "SELECT {SESSION_READ_COLUMNS} FROM meta.sessions WHERE request_id = $1"
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
            "UPDATE meta.sessions SET execution_count = execution_count + $2, \
             last_executed_at = CASE WHEN last_executed_at IS NULL OR last_executed_at < $3 \
             THEN $3 ELSE last_executed_at END, \
             status = CASE WHEN $4 THEN 'completed' ELSE status END \
             WHERE request_id = $1 RETURNING {SESSION_READ_COLUMNS}"
        ))
        .bind(request_id)
        .bind(count)
        .bind(last_executed_at)
        .bind(complete)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn record_execution_counts(&self, batch: Uuid, counts: &[ExecutionCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let request_ids: Vec<&str> = counts.iter().map(|c| c.request_id.as_str()).collect();
        let increments: Vec<i64> = counts.iter().map(|c| c.count).collect();
        let times: Vec<DateTime<Utc>> = counts.iter().map(|c| c.last_executed_at).collect();
        // One statement for the whole flush, so it lands whole or not at
        // all. The batch id is claimed in the same statement: when it was
        // claimed before, `claimed` is empty and nothing is counted again.
        // GREATEST skips a NULL, and keeps last_executed_at moving forward
        // when batches land out of order.
        sqlx::query(
            "WITH claimed AS (INSERT INTO meta.counter_batches (batch_id) VALUES ($4) \
             ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id) \
             UPDATE meta.sessions s SET execution_count = s.execution_count + c.count, \
             last_executed_at = GREATEST(s.last_executed_at, c.at) \
             FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[]) AS c(request_id, count, at), \
             claimed WHERE s.request_id = c.request_id",
        )
        .bind(&request_ids)
        .bind(&increments)
        .bind(&times)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_counter_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM meta.counter_batches WHERE applied_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn delete_session(&self, request_id: &str) -> Result<bool> {
        let result = sqlx::query("DELETE FROM meta.sessions WHERE request_id = $1")
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM meta.sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM meta.sessions WHERE status = 'active' AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn find_artifact(&self, script_hash: &str) -> Result<Option<Vec<u8>>> {
        let artifact: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT compiled_artifact FROM meta.sessions \
             WHERE script_hash = $1 AND compiled_artifact IS NOT NULL LIMIT 1",
        )
        .bind(script_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(artifact)
    }

    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(i64, Vec<FunctionRecord>)> {
        let mut count_query = QueryBuilder::new("SELECT COUNT(*) FROM meta.functions f");
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
        let now = Utc::now();
        let mut transaction = self.pool.begin().await?;
        let existing: Option<(Uuid, bool)> = sqlx::query_as(
            "SELECT id, is_active FROM meta.functions WHERE language_title = $1 FOR UPDATE",
        )
        .bind(&function.language_title)
        .fetch_optional(&mut *transaction)
        .await?;
        let id = match existing {
            Some((_, true)) => return Err(StoreError::Conflict { what: conflict() }),
            Some((retired_id, false)) => {
                // A retired name is free again: the row is reused so its
                // script (foreign key) follows, but it starts over as new.
                sqlx::query(
                    "UPDATE meta.functions SET language = $2, title = $3, description = $4, \
                     schema_definition = $5, examples = $6, compile_options = $7, tags = $8, \
                     created_by = $9, created_at = $10, updated_at = $10, is_active = TRUE, \
                     version = '1.0.0' WHERE id = $1",
                )
                .bind(retired_id)
                .bind(&function.language)
                .bind(&function.title)
                .bind(&function.description)
                .bind(&function.schema)
                .bind(&function.examples)
                .bind(&function.compile_options)
                .bind(&function.tags)
                .bind(&function.created_by)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
                retired_id
            }
            None => {
                let new_id = Uuid::new_v4();
                sqlx::query(
                    "INSERT INTO meta.functions (id, language, title, language_title, \
                     description, schema_definition, examples, compile_options, tags, \
                     created_by, created_at, updated_at, is_active, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, TRUE, '1.0.0')",
                )
                .bind(new_id)
                .bind(&function.language)
                .bind(&function.title)
                .bind(&function.language_title)
                .bind(&function.description)
                .bind(&function.schema)
                .bind(&function.examples)
                .bind(&function.compile_options)
                .bind(&function.tags)
                .bind(&function.created_by)
                .bind(now)
                .execute(&mut *transaction)
                .await
                // A concurrent registration of the same name won the race.
                .map_err(|error| conflict_or_database(error, conflict))?;
                new_id
            }
        };
        sqlx::query(
            "INSERT INTO meta.scripts (function_id, content, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (function_id) DO UPDATE \
             SET content = EXCLUDED.content, created_at = EXCLUDED.created_at, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(id)
        .bind(&function.script_content)
        .bind(now)
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
        let now = Utc::now();
        let mut transaction = self.pool.begin().await?;
        let existing: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, version FROM meta.functions \
             WHERE language_title = $1 AND is_active FOR UPDATE",
        )
        .bind(language_title)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((id, version)) = existing else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE meta.functions SET \
             description = COALESCE($2, description), \
             schema_definition = COALESCE($3, schema_definition), \
             examples = COALESCE($4, examples), \
             compile_options = COALESCE($5, compile_options), \
             tags = COALESCE($6, tags), \
             version = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(&update.description)
        .bind(&update.schema)
        .bind(&update.examples)
        .bind(&update.compile_options)
        .bind(&update.tags)
        .bind(common::bump_patch(&version))
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if let Some(script_content) = &update.script_content {
            sqlx::query(
                "INSERT INTO meta.scripts (function_id, content, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (function_id) DO UPDATE \
                 SET content = EXCLUDED.content, updated_at = EXCLUDED.updated_at",
            )
            .bind(id)
            .bind(script_content)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        let record = function_by_name(&mut transaction, language_title).await?;
        transaction.commit().await?;
        Ok(record)
    }

    async fn retire_function(&self, language_title: &str) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE meta.functions SET is_active = FALSE, updated_at = $2 \
             WHERE language_title = $1 AND is_active",
        )
        .bind(language_title)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn insert_logs(&self, batch: &[RequestLog]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // A batch is retried until it lands, and a commit whose answer was
        // lost may have landed. Rows already there must be skipped by their
        // id, not fail every retry for good. But `ON CONFLICT DO NOTHING`
        // makes each row a speculative insertion, about a third more
        // PostgreSQL CPU per row (10.5 against 13.9 us, 100,000 rows), on
        // the cores the service runs on. So a batch goes in as plain rows
        // (a COPY) first; only one that meets its own earlier copy (the
        // unique key of `request_logs.id`, rolled back whole) is written
        // again skipping the rows already there.
        match self.write_logs(batch, IfLogExists::Fail).await {
            Err(StoreError::Database(sqlx::Error::Database(error)))
                if error.is_unique_violation() =>
            {
                self.write_logs(batch, IfLogExists::Skip).await
            }
            outcome => outcome,
        }
    }
}

/// What an insert of request logs does with a row whose id is stored.
#[derive(Clone, Copy)]
enum IfLogExists {
    Fail,
    Skip,
}

impl PostgresStore {
    async fn write_logs(&self, batch: &[RequestLog], if_exists: IfLogExists) -> Result<()> {
        let mut transaction = self.pool.begin().await?;
        // COPY, not INSERT: PostgreSQL writes a page of rows per heap and WAL
        // record and skips the per-row executor work of `INSERT ... SELECT`.
        // But COPY cannot skip a row, so a retry copies into a temporary
        // table and inserts from it past the rows already there.
        let target = match if_exists {
            IfLogExists::Fail => "public.request_logs",
            IfLogExists::Skip => {
                sqlx::query(
                    "CREATE TEMPORARY TABLE request_logs_retry \
                     (LIKE public.request_logs) ON COMMIT DROP",
                )
                .execute(&mut *transaction)
                .await?;
                "request_logs_retry"
            }
        };
        let statement = format!("COPY {target} ({REQUEST_LOG_COLUMNS}) FROM STDIN (FORMAT binary)");
        for chunk in batch.chunks(REQUEST_LOGS_PER_COPY) {
            // Encoded before its COPY starts: a row that cannot be encoded
            // fails the batch without leaving a COPY half sent.
            let chunk = encode_request_logs(chunk)?;
            let mut copy = transaction.copy_in_raw(&statement).await?;
            copy.send(chunk).await?;
            copy.finish().await?;
        }
        if let IfLogExists::Skip = if_exists {
            sqlx::query(&format!(
                "INSERT INTO public.request_logs ({REQUEST_LOG_COLUMNS}) \
                 SELECT {REQUEST_LOG_COLUMNS} FROM request_logs_retry \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .execute(&mut *transaction)
            .await?;
        }
        // Error rows are few (one per failed request): always skipped by id.
        let errors: Vec<(&RequestLog, &crate::ErrorLog)> = batch
            .iter()
            .filter_map(|log| log.error.as_ref().map(|error| (log, error)))
            .collect();
        for chunk in errors.chunks(common::LOG_ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO public.error_logs (id, request_log_id, timestamp, error_code, \
                 error_message, stack_trace, context) ",
            );
            insert.push_values(chunk, |mut row, (log, error)| {
                row.push_bind(error.id)
                    .push_bind(log.id)
                    .push_bind(log.timestamp)
                    .push_bind(log_text(&error.error_code, common::ERROR_CODE_MAX_CHARS))
                    .push_bind(strip_nul(&error.error_message))
                    .push_bind(error.stack_trace.as_deref().map(strip_nul))
                    .push_bind(json_for_postgres(&error.context));
            });
            insert.push(" ON CONFLICT (id) DO NOTHING");
            insert.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// Request logs per COPY. Encoding holds a reactor thread, and PostgreSQL
/// works through a statement without a break, on the cores the executes
/// need. Request logging is what makes the executes' tail: with it off,
/// p99 under load fell from 6.1-8.8 ms to 3.4-5.1 ms while p50 moved 10%.
/// Smaller statements, each waited for, let both sides yield in between
/// (p99 about 4% lower than with 1,000 rows, one interleaved pair; one
/// COPY of a whole batch sent at once raised p99 5 to 10%).
const REQUEST_LOGS_PER_COPY: usize = 100;

/// The columns of `public.request_logs` that a log row fills, in the
/// order [`encode_request_log`] writes them.
const REQUEST_LOG_COLUMNS: &str = "id, request_id, language_title, timestamp, client_ip, \
     user_id, request_headers, request_payload, response_payload, status_code, duration_ms, \
     cached, error_details, runtime_metrics";
const REQUEST_LOG_FIELDS: i16 = 14;

/// PostgreSQL's binary COPY format: a signature, flags (none) and the
/// length of a header extension (none); the data ends with a field count
/// of -1.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC),
/// where binary timestamps count from.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A whole COPY's data: header, rows, trailer.
fn encode_request_logs(logs: &[RequestLog]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(COPY_BINARY_HEADER.len() + logs.len() * 256 + 2);
    out.extend_from_slice(COPY_BINARY_HEADER);
    for log in logs {
        encode_request_log(&mut out, log)?;
    }
    out.extend_from_slice(&COPY_BINARY_TRAILER);
    Ok(out)
}

/// One row in the binary COPY format: the field count, then each field as
/// its length (-1 for NULL) and its value in the type's binary form.
fn encode_request_log(out: &mut Vec<u8>, log: &RequestLog) -> Result<()> {
    out.extend_from_slice(&REQUEST_LOG_FIELDS.to_be_bytes());
    put_field(out, log.id.as_bytes())?;
    put_text(
        out,
        Some(&log_text(&log.request_id, common::REQUEST_ID_MAX_CHARS)),
    )?;
    put_text(
        out,
        Some(&log_text(
            &log.language_title,
            common::LANGUAGE_TITLE_MAX_CHARS,
        )),
    )?;
    let micros = log.timestamp.timestamp_micros() - POSTGRES_EPOCH_MICROS;
    put_field(out, &micros.to_be_bytes())?;
    put_text(
        out,
        log.client_ip
            .as_deref()
            .map(|ip| log_text(ip, common::CLIENT_IP_MAX_CHARS))
            .as_deref(),
    )?;
    put_text(
        out,
        log.user_id
            .as_deref()
            .map(|user| log_text(user, common::USER_ID_MAX_CHARS))
            .as_deref(),
    )?;
    put_jsonb(out, &log.request_headers)?;
    put_jsonb(out, &log.request_payload)?;
    put_jsonb(out, &log.response_payload)?;
    put_field(out, &log.status_code.to_be_bytes())?;
    put_field(out, &log.duration_ms.to_be_bytes())?;
    put_field(out, &[u8::from(log.cached)])?;
    put_jsonb(out, &log.error_details)?;
    put_jsonb(out, &log.runtime_metrics)?;
    Ok(())
}

fn put_field(out: &mut Vec<u8>, value: &[u8]) -> Result<()> {
    out.extend_from_slice(&field_length(value.len())?.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// A NULL field: its length is -1 and no value follows.
fn put_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

fn put_text(out: &mut Vec<u8>, value: Option<&str>) -> Result<()> {
    match value {
        Some(text) => put_field(out, text.as_bytes()),
        None => {
            put_null(out);
            Ok(())
        }
    }
}

/// JSONB's binary form is a version byte (1) and the JSON text.
fn put_jsonb(out: &mut Vec<u8>, value: &Option<Value>) -> Result<()> {
    let Some(Json(value)) = json_for_postgres(value) else {
        put_null(out);
        return Ok(());
    };
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(1);
    serde_json::to_writer(&mut *out, &value)
        .map_err(|error| StoreError::Database(sqlx::Error::Encode(Box::new(error))))?;
    let length = field_length(out.len() - length_at - 4)?;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

fn field_length(length: usize) -> Result<i32> {
    i32::try_from(length).map_err(|_| {
        StoreError::Database(sqlx::Error::Encode(
            format!("a request log field of {length} bytes is over PostgreSQL's limit").into(),
        ))
    })
}

/// PostgreSQL rejects NUL in TEXT and `\u0000` in JSONB. Log rows carry
/// whatever a user's script sent or printed, and one such value must not lose
/// the whole batch, so NULs become U+FFFD in logs.
fn strip_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A log's VARCHAR value: cut to the column's size, without NULs.
fn log_text(text: &str, max_chars: usize) -> Cow<'_, str> {
    strip_nul(common::truncate_chars(text, max_chars))
}

/// A JSONB value as PostgreSQL takes it (no NUL characters), borrowed
/// unless a NUL had to be replaced.
type LogJson<'a> = Json<Cow<'a, Value>>;

fn json_for_postgres(value: &Option<Value>) -> Option<LogJson<'_>> {
    value.as_ref().map(|value| {
        Json(if value_contains_nul(value) {
            Cow::Owned(replace_nul(value))
        } else {
            Cow::Borrowed(value)
        })
    })
}

fn value_contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(value_contains_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || value_contains_nul(item)),
        _ => false,
    }
}

fn replace_nul(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(strip_nul(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(replace_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (strip_nul(key).into_owned(), replace_nul(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}
