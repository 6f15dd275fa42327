//! One conformance suite, written once, run against both backends on real
//! databases: SQLite in a temp dir, PostgreSQL via `lambda_testkit`
//! (`DATABASE_URL`, or a throwaway server).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use lambda_store::{
    ErrorLog, ExecutionCount, FunctionFilter, FunctionKind, FunctionUpdate, NewFunction,
    PostgresStore, RequestLog, SessionOutcome, SessionRecord, SessionStatus, SqliteStore, Store,
    StoreError,
};
use lambda_testkit::postgres::TestDatabase;
use serde_json::{json, Value};
use uuid::Uuid;

/// A fresh, empty database of one backend, plus raw SQL access for what the
/// trait deliberately cannot do (break the schema, count rows).
struct Harness {
    store: Arc<dyn Store>,
    raw: Raw,
}

enum Raw {
    Sqlite {
        pool: sqlx::SqlitePool,
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        pool: sqlx::PgPool,
        url: String,
        _database: TestDatabase,
    },
}

impl Harness {
    async fn sqlite() -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        // A nested path proves open() creates missing parent directories.
        let path = dir.path().join("nested").join("lambda.db");
        let store = SqliteStore::open(&path).await?;
        let pool = store.pool().clone();
        Ok(Harness {
            store: Arc::new(store),
            raw: Raw::Sqlite {
                pool,
                path,
                _dir: dir,
            },
        })
    }

    async fn postgres() -> Result<Harness> {
        let database = TestDatabase::create().await?;
        let url = database.url().to_string();
        let store = PostgresStore::connect(&url).await?;
        let pool = store.pool().clone();
        Ok(Harness {
            store: Arc::new(store),
            raw: Raw::Postgres {
                pool,
                url,
                _database: database,
            },
        })
    }

    /// Another store on the same database, as a second replica would open it.
    async fn another_store(&self) -> Result<Arc<dyn Store>> {
        Ok(match &self.raw {
            Raw::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await?),
            Raw::Postgres { url, .. } => Arc::new(PostgresStore::connect(url).await?),
        })
    }

    async fn migrated(self) -> Result<Harness> {
        self.store.migrate().await?;
        Ok(self)
    }

    /// `table` is the bare name; PostgreSQL's schema is added here.
    fn qualified(&self, table: &str) -> String {
        match &self.raw {
            Raw::Sqlite { .. } => table.to_string(),
            Raw::Postgres { .. } => match table {
                "request_logs" | "error_logs" => format!("public.{table}"),
                _ => format!("meta.{table}"),
            },
        }
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        match &self.raw {
            Raw::Sqlite { pool, .. } => {
                sqlx::query(sql).execute(pool).await?;
            }
            Raw::Postgres { pool, .. } => {
                sqlx::query(sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    async fn count_rows(&self, table: &str) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.qualified(table));
        Ok(match &self.raw {
            Raw::Sqlite { pool, .. } => sqlx::query_scalar(&sql).fetch_one(pool).await?,
            Raw::Postgres { pool, .. } => sqlx::query_scalar(&sql).fetch_one(pool).await?,
        })
    }
}

/// Both backends store microseconds; tests compare at that precision.
fn micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

fn session(request_id: &str, expires_at: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        request_id: request_id.to_string(),
        language_title: "nodejs-calculator".to_string(),
        user_id: Some("user-123".to_string()),
        created_at: now(),
        expires_at,
        last_executed_at: None,
        execution_count: 0,
        status: SessionStatus::Active,
        context: json!({"environment": "test", "nested": {"list": [1, 2.5, "three", null]}}),
        script_content: "return event.params.a + event.params.b;".to_string(),
        script_hash: format!("hash-of-{request_id}"),
        compiled_artifact: None,
        compile_options: Some(json!({"optimization_level": "release"})),
        compile_status: None,
        compile_error: None,
        metadata: json!({"retain_session": true}),
    }
}

fn new_function(language: &str, title: &str, owner: &str) -> NewFunction {
    NewFunction {
        language: language.to_string(),
        title: title.to_string(),
        language_title: format!("{language}-{title}"),
        description: Some(format!("{title} by {owner}")),
        created_by: Some(owner.to_string()),
        script_content: format!("return '{title}';"),
        schema: Some(json!({"params": {"type": "object"}, "result": {"type": "string"}})),
        examples: Some(json!([{"params": {}, "result": title}])),
        compile_options: None,
        tags: vec!["test".to_string(), owner.to_string()],
    }
}

fn filter() -> FunctionFilter {
    FunctionFilter {
        language: None,
        user_id: None,
        kind: None,
        page: 1,
        per_page: 100,
    }
}

fn names(functions: &[lambda_store::FunctionRecord]) -> Vec<&str> {
    functions
        .iter()
        .map(|function| function.language_title.as_str())
        .collect()
}

const SEED_FILES: [(&str, &str); 3] = [
    (
        "nodejs-calculator",
        include_str!("../seeds/nodejs-calculator.js"),
    ),
    (
        "python-text_processor",
        include_str!("../seeds/python-text_processor.py"),
    ),
    (
        "rust-data_validator",
        include_str!("../seeds/rust-data_validator.rs"),
    ),
];

mod cases {
    use super::*;

    pub async fn migrate_on_empty_database_is_idempotent(harness: Harness) -> Result<()> {
        let store = &harness.store;
        store.migrate().await?;
        store.migrate().await?;
        store.verify_schema().await?;
        store.ping().await?;
        let (total, functions) = store.list_functions(&filter()).await?;
        ensure!(total == 3, "seeded {total} functions, want 3");
        ensure!(functions.len() == 3);
        Ok(())
    }

    pub async fn concurrent_migrate_succeeds(harness: Harness) -> Result<()> {
        let mut replicas = vec![harness.store.clone()];
        for _ in 0..3 {
            replicas.push(harness.another_store().await?);
        }
        let results = futures_join_all(replicas.iter().map(|store| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate().await })
        }))
        .await;
        for result in results {
            result.context("migrate task panicked")??;
        }
        ensure!(harness.count_rows("functions").await? == 3);
        ensure!(harness.count_rows("scripts").await? == 3);
        Ok(())
    }

    pub async fn verify_schema_names_what_is_missing(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        harness
            .execute(&format!(
                "ALTER TABLE {} DROP COLUMN compile_error",
                harness.qualified("sessions")
            ))
            .await?;
        harness
            .execute(&format!("DROP TABLE {}", harness.qualified("error_logs")))
            .await?;
        for result in [
            harness.store.verify_schema().await,
            harness.store.migrate().await,
        ] {
            match result {
                Err(StoreError::SchemaMismatch { missing }) => {
                    ensure!(missing.contains("sessions.compile_error"), "{missing}");
                    ensure!(missing.contains("error_logs"), "{missing}");
                    ensure!(!missing.contains("script_hash"), "{missing}");
                }
                other => bail!("expected SchemaMismatch, got {other:?}"),
            }
        }
        Ok(())
    }

    pub async fn seeds_are_the_original_scripts(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let expected_ids = [
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "f47ac10b-58cc-4372-a567-0e02b2c3d480",
            "f47ac10b-58cc-4372-a567-0e02b2c3d481",
        ];
        for ((name, script), id) in SEED_FILES.iter().zip(expected_ids) {
            let function = harness
                .store
                .get_function(name)
                .await?
                .with_context(|| format!("{name} not seeded"))?;
            ensure!(
                function.script_content.as_bytes() == script.as_bytes(),
                "{name} script differs"
            );
            ensure!(function.id == Uuid::parse_str(id)?);
            ensure!(function.kind == FunctionKind::Predefined);
            ensure!(function.created_by.as_deref() == Some("system"));
            ensure!(function.version == "1.0.0");
            ensure!(function.tags.len() == 3);
            let schema = function.schema.context("seed without schema")?;
            ensure!(schema["params"]["type"] == "object", "{schema}");
            ensure!(function
                .examples
                .is_some_and(|examples| examples.is_array()));
        }
        let calculator = harness
            .store
            .get_function("nodejs-calculator")
            .await?
            .context("calculator")?;
        ensure!(calculator.tags == ["math", "basic", "nodejs"]);
        ensure!(calculator.description.as_deref() == Some("Basic calculator functions in Node.js"));
        ensure!(
            calculator.examples
                == Some(json!([
                    {"operation": "add", "a": 5, "b": 3, "result": 8},
                    {"operation": "multiply", "a": 4, "b": 2, "result": 8}
                ]))
        );
        Ok(())
    }

    pub async fn session_lifecycle(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let original = session("req-lifecycle", now() + Duration::hours(1));
        store.insert_session(&original).await?;
        ensure!(store.get_session("req-lifecycle").await?.as_ref() == Some(&original));
        ensure!(store.get_session("req-unknown").await?.is_none());

        match store.insert_session(&original).await {
            Err(StoreError::Conflict { .. }) => {}
            other => bail!("duplicate request_id gave {other:?}"),
        }

        let first = now();
        let updated = store
            .record_executions("req-lifecycle", 1, first, false)
            .await?
            .context("session vanished")?;
        ensure!(updated.execution_count == 1);
        ensure!(updated.last_executed_at == Some(first));
        ensure!(updated.status == SessionStatus::Active);

        // A batch written behind, older than the last one: counted, but
        // last_executed_at does not move back.
        let older = first - Duration::seconds(10);
        let updated = store
            .record_executions("req-lifecycle", 2, older, true)
            .await?
            .context("session vanished")?;
        ensure!(updated.execution_count == 3);
        ensure!(updated.last_executed_at == Some(first));
        ensure!(updated.status == SessionStatus::Completed);
        ensure!(store.get_session("req-lifecycle").await?.as_ref() == Some(&updated));

        ensure!(store
            .record_executions("req-unknown", 1, first, false)
            .await?
            .is_none());
        ensure!(store.delete_session("req-lifecycle").await?);
        ensure!(!store.delete_session("req-lifecycle").await?);
        ensure!(store.get_session("req-lifecycle").await?.is_none());
        Ok(())
    }

    pub async fn settling_a_session_records_how_loading_went(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let mut inserted = session("req-settle", now() + Duration::hours(1));
        inserted.compile_status = Some("success".to_string());
        store.insert_session(&inserted).await?;

        let failed = SessionOutcome {
            status: SessionStatus::Error,
            compile_status: Some("error".to_string()),
            compile_error: Some("line 1: expected `;`".to_string()),
            compiled_artifact: None,
        };
        ensure!(store.settle_session("req-settle", &failed).await?);
        let read = store
            .get_session("req-settle")
            .await?
            .context("req-settle")?;
        let expected = SessionRecord {
            status: SessionStatus::Error,
            compile_status: failed.compile_status.clone(),
            compile_error: failed.compile_error.clone(),
            ..inserted.clone()
        };
        ensure!(read == expected, "settled as {read:?}");
        ensure!(store.count_active_sessions(now()).await? == 0);

        let artifact: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let compiled = SessionOutcome {
            status: SessionStatus::Active,
            compile_status: Some("success".to_string()),
            compile_error: None,
            compiled_artifact: Some(artifact.clone()),
        };
        ensure!(store.settle_session("req-settle", &compiled).await?);
        ensure!(store.find_artifact(&inserted.script_hash).await? == Some(artifact));
        ensure!(store.get_session("req-settle").await?.as_ref() == Some(&inserted));

        ensure!(!store.settle_session("req-unknown", &failed).await?);
        Ok(())
    }

    pub async fn execution_counts_in_one_batch(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let expires = now() + Duration::hours(1);
        for id in ["req-batch-a", "req-batch-b"] {
            store.insert_session(&session(id, expires)).await?;
        }
        let first = now();
        let count = |id: &str, count: i64, at| ExecutionCount {
            request_id: id.to_string(),
            count,
            last_executed_at: at,
        };
        let batch = Uuid::now_v7();
        let counts = [
            count("req-batch-a", 3, first),
            count("req-batch-b", 1, first),
            count("req-batch-gone", 5, first),
        ];
        store.record_execution_counts(batch, &counts).await?;
        // The same batch again (a retry after a lost commit answer): no-op.
        store.record_execution_counts(batch, &counts).await?;
        // A later flush with an older time: counted, time kept.
        store
            .record_execution_counts(
                Uuid::now_v7(),
                &[count("req-batch-a", 2, first - Duration::seconds(5))],
            )
            .await?;
        store.record_execution_counts(Uuid::now_v7(), &[]).await?;
        let a = store.get_session("req-batch-a").await?.context("a")?;
        let b = store.get_session("req-batch-b").await?.context("b")?;
        ensure!(a.execution_count == 5, "a counted {}", a.execution_count);
        ensure!(a.last_executed_at == Some(first));
        ensure!(b.execution_count == 1 && b.last_executed_at == Some(first));
        ensure!(a.status == SessionStatus::Active);
        ensure!(store.get_session("req-batch-gone").await?.is_none());
        // Forgotten batch ids: only those applied before the cut-off go, and
        // a forgotten batch counts again.
        ensure!(
            store
                .forget_counter_batches(first - Duration::hours(1))
                .await?
                == 0
        );
        ensure!(
            store
                .forget_counter_batches(now() + Duration::seconds(1))
                .await?
                == 2
        );
        store.record_execution_counts(batch, &counts[..1]).await?;
        let a = store.get_session("req-batch-a").await?.context("a")?;
        ensure!(a.execution_count == 8, "a counted {}", a.execution_count);
        Ok(())
    }

    pub async fn expiry_and_active_count(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let now = now();
        store
            .insert_session(&session("live", now + Duration::minutes(5)))
            .await?;
        store
            .insert_session(&session("expired", now - Duration::minutes(5)))
            .await?;
        let mut completed = session("completed", now + Duration::minutes(5));
        completed.status = SessionStatus::Completed;
        store.insert_session(&completed).await?;
        let mut failed = session("failed", now + Duration::minutes(5));
        failed.status = SessionStatus::Error;
        failed.compile_status = Some("error".to_string());
        failed.compile_error = Some("error[E0425]: cannot find value `x`".to_string());
        store.insert_session(&failed).await?;
        ensure!(store.get_session("failed").await?.as_ref() == Some(&failed));

        ensure!(store.count_active_sessions(now).await? == 1);
        ensure!(store.delete_expired_sessions(now).await? == 1);
        ensure!(store.get_session("expired").await?.is_none());
        ensure!(store.get_session("live").await?.is_some());
        ensure!(store.delete_expired_sessions(now).await? == 0);
        Ok(())
    }

    pub async fn timestamps_round_trip_at_microseconds(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let expires_at = Utc
            .with_ymd_and_hms(2031, 12, 31, 23, 59, 59)
            .single()
            .context("valid date")?
            + Duration::microseconds(999_999);
        let mut record = session("precise", expires_at);
        record.created_at = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .context("valid date")?
            + Duration::microseconds(7);
        record.last_executed_at = Some(record.created_at + Duration::microseconds(1));
        store.insert_session(&record).await?;
        let stored = store.get_session("precise").await?.context("missing")?;
        ensure!(
            stored.created_at == record.created_at,
            "{} != {}",
            stored.created_at,
            record.created_at
        );
        ensure!(stored.expires_at == expires_at);
        ensure!(stored.last_executed_at == record.last_executed_at);

        // Comparisons are exact at the microsecond on both sides.
        let one = Duration::microseconds(1);
        ensure!(store.count_active_sessions(expires_at - one).await? == 1);
        ensure!(store.count_active_sessions(expires_at).await? == 0);
        ensure!(store.delete_expired_sessions(expires_at).await? == 0);
        ensure!(store.delete_expired_sessions(expires_at + one).await? == 1);
        Ok(())
    }

    pub async fn artifact_lookup_by_hash(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        let expires_at = now() + Duration::hours(1);
        let mut without = session("no-artifact", expires_at);
        without.script_hash = "shared-hash".to_string();
        store.insert_session(&without).await?;
        ensure!(store.find_artifact("shared-hash").await?.is_none());

        let artifact: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut with = session("with-artifact", expires_at);
        with.script_hash = "shared-hash".to_string();
        with.compiled_artifact = Some(artifact.clone());
        with.compile_status = Some("success".to_string());
        store.insert_session(&with).await?;
        ensure!(store.find_artifact("shared-hash").await? == Some(artifact));
        // Reads of the session leave the (possibly large) artifact out.
        let read = store.get_session("with-artifact").await?.context("with")?;
        ensure!(read.compiled_artifact.is_none());
        ensure!(read.compile_status.as_deref() == Some("success"));
        ensure!(store.find_artifact("other-hash").await?.is_none());
        Ok(())
    }

    pub async fn function_registry(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;

        let registered = store
            .insert_function(&new_function("nodejs", "adder", "alice"))
            .await?;
        ensure!(registered.version == "1.0.0");
        ensure!(registered.kind == FunctionKind::Dynamic);
        ensure!(registered.created_by.as_deref() == Some("alice"));
        ensure!(registered.script_content == "return 'adder';");
        ensure!(registered.tags == ["test", "alice"]);
        ensure!(store.get_function("nodejs-adder").await?.as_ref() == Some(&registered));
        match store
            .insert_function(&new_function("nodejs", "adder", "bob"))
            .await
        {
            Err(StoreError::Conflict { .. }) => {}
            other => bail!("duplicate name gave {other:?}"),
        }
        match store
            .insert_function(&new_function("nodejs", "calculator", "bob"))
            .await
        {
            Err(StoreError::Conflict { .. }) => {}
            other => bail!("seeded name gave {other:?}"),
        }
        store
            .insert_function(&new_function("python", "echo", "bob"))
            .await?;
        store
            .insert_function(&new_function("python", "zeta", "alice"))
            .await?;
        let mut anonymous = new_function("wasm", "anon", "nobody");
        anonymous.created_by = None;
        let anonymous = store.insert_function(&anonymous).await?;
        ensure!(anonymous.kind == FunctionKind::Dynamic);

        let (total, all) = store.list_functions(&filter()).await?;
        ensure!(total == 7);
        ensure!(
            names(&all)
                == [
                    "nodejs-adder",
                    "nodejs-calculator",
                    "python-echo",
                    "python-text_processor",
                    "python-zeta",
                    "rust-data_validator",
                    "wasm-anon"
                ],
            "{:?}",
            names(&all)
        );
        let (total, python) = store
            .list_functions(&FunctionFilter {
                language: Some("python".to_string()),
                ..filter()
            })
            .await?;
        ensure!(
            total == 3 && names(&python) == ["python-echo", "python-text_processor", "python-zeta"]
        );
        let (total, alice) = store
            .list_functions(&FunctionFilter {
                user_id: Some("alice".to_string()),
                ..filter()
            })
            .await?;
        ensure!(total == 2 && names(&alice) == ["nodejs-adder", "python-zeta"]);
        let (total, predefined) = store
            .list_functions(&FunctionFilter {
                kind: Some(FunctionKind::Predefined),
                ..filter()
            })
            .await?;
        ensure!(
            total == 3
                && predefined
                    .iter()
                    .all(|f| f.kind == FunctionKind::Predefined)
        );
        let (total, dynamic) = store
            .list_functions(&FunctionFilter {
                kind: Some(FunctionKind::Dynamic),
                ..filter()
            })
            .await?;
        ensure!(total == 4, "dynamic total {total}");
        ensure!(names(&dynamic) == ["nodejs-adder", "python-echo", "python-zeta", "wasm-anon"]);
        let (total, python_dynamic_alice) = store
            .list_functions(&FunctionFilter {
                language: Some("python".to_string()),
                user_id: Some("alice".to_string()),
                kind: Some(FunctionKind::Dynamic),
                ..filter()
            })
            .await?;
        ensure!(total == 1 && names(&python_dynamic_alice) == ["python-zeta"]);

        // Pagination: total counts every match, pages slice them in order.
        let mut paged = Vec::new();
        for page in 1..=4 {
            let (total, functions) = store
                .list_functions(&FunctionFilter {
                    page,
                    per_page: 2,
                    ..filter()
                })
                .await?;
            ensure!(total == 7);
            ensure!(functions.len() == if page < 4 { 2 } else { 1 });
            paged.extend(functions);
        }
        ensure!(paged == all);
        let (total, beyond) = store
            .list_functions(&FunctionFilter {
                page: 9,
                per_page: 2,
                ..filter()
            })
            .await?;
        ensure!(total == 7 && beyond.is_empty());

        // Updates bump the patch version and keep what they do not set.
        let updated = store
            .update_function(
                "nodejs-adder",
                &FunctionUpdate {
                    script_content: Some("return 42;".to_string()),
                    tags: Some(vec!["v2".to_string()]),
                    ..FunctionUpdate::default()
                },
            )
            .await?
            .context("update of an active function")?;
        ensure!(updated.version == "1.0.1");
        ensure!(updated.script_content == "return 42;");
        ensure!(updated.tags == ["v2"]);
        ensure!(updated.description == registered.description);
        ensure!(updated.schema == registered.schema);
        ensure!(updated.created_at == registered.created_at);
        ensure!(updated.updated_at >= registered.updated_at);
        let updated = store
            .update_function(
                "nodejs-adder",
                &FunctionUpdate {
                    description: Some("now with docs".to_string()),
                    ..FunctionUpdate::default()
                },
            )
            .await?
            .context("second update")?;
        ensure!(updated.version == "1.0.2");
        ensure!(updated.description.as_deref() == Some("now with docs"));
        ensure!(updated.script_content == "return 42;");
        ensure!(store
            .update_function("nodejs-missing", &FunctionUpdate::default())
            .await?
            .is_none());

        // Retire, then the name is free again and starts over.
        ensure!(store.retire_function("nodejs-adder").await?);
        ensure!(!store.retire_function("nodejs-adder").await?);
        ensure!(store.get_function("nodejs-adder").await?.is_none());
        ensure!(store
            .update_function("nodejs-adder", &FunctionUpdate::default())
            .await?
            .is_none());
        let (total, _) = store.list_functions(&filter()).await?;
        ensure!(total == 6);
        let mut again = new_function("nodejs", "adder", "carol");
        again.script_content = "return 'again';".to_string();
        let again = store.insert_function(&again).await?;
        ensure!(again.version == "1.0.0");
        ensure!(again.created_by.as_deref() == Some("carol"));
        ensure!(again.script_content == "return 'again';");
        ensure!(again.description.as_deref() == Some("adder by carol"));
        let (total, _) = store.list_functions(&filter()).await?;
        ensure!(total == 7);
        Ok(())
    }

    pub async fn concurrent_registration_has_one_winner(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let tasks = (0..8).map(|index| {
            let store = harness.store.clone();
            tokio::spawn(async move {
                store
                    .insert_function(&new_function("python", "race", &format!("user-{index}")))
                    .await
            })
        });
        let mut winners = 0;
        for result in futures_join_all(tasks).await {
            match result.context("task panicked")? {
                Ok(_) => winners += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => bail!("unexpected error: {other}"),
            }
        }
        ensure!(winners == 1, "{winners} winners");
        Ok(())
    }

    pub async fn logs_insert_in_bulk(harness: Harness) -> Result<()> {
        let harness = harness.migrated().await?;
        let store = &harness.store;
        store.insert_logs(&[]).await?;
        let base = now();
        let batch: Vec<RequestLog> = (0..1500)
            .map(|index| RequestLog {
                id: Uuid::new_v4(),
                request_id: if index == 0 {
                    // A client's oversized X-Request-ID must not lose the batch.
                    "x".repeat(500)
                } else {
                    format!("req-{index}")
                },
                language_title: "nodejs-calculator".to_string(),
                timestamp: base + Duration::milliseconds(index),
                client_ip: Some("2001:0db8:85a3:0000:0000:8a2e:0370:7334".to_string()),
                user_id: (index % 2 == 0).then(|| "user-123".to_string()),
                request_headers: Some(json!({"authorization": "***"})),
                request_payload: Some(json!({"params": {"a": index, "text": "nul\u{0}byte"}})),
                response_payload: Some(json!({"result": index})),
                status_code: if index % 3 == 0 { 460 } else { 200 },
                duration_ms: 3,
                cached: index % 5 == 0,
                error_details: None,
                runtime_metrics: Some(json!({"memory_bytes": 1024})),
                error: (index % 3 == 0).then(|| ErrorLog {
                    id: Uuid::new_v4(),
                    error_code: "RUNTIME_ERROR".to_string(),
                    error_message: "Division by zero".to_string(),
                    stack_trace: Some("at calculator.js:19:27".to_string()),
                    context: Some(json!({"line": 19})),
                }),
            })
            .collect();
        let started = std::time::Instant::now();
        store.insert_logs(&batch).await?;
        let elapsed = started.elapsed();
        ensure!(harness.count_rows("request_logs").await? == 1500);
        ensure!(harness.count_rows("error_logs").await? == 500);
        ensure!(
            elapsed < std::time::Duration::from_secs(10),
            "took {elapsed:?}"
        );
        // A batch written again (its commit's answer was lost, so the log
        // batcher retried it) adds nothing and does not fail.
        store.insert_logs(&batch[..10]).await?;
        ensure!(harness.count_rows("request_logs").await? == 1500);
        ensure!(harness.count_rows("error_logs").await? == 500);
        Ok(())
    }
}

/// `join_all` without a `futures` dependency: the tasks already run
/// concurrently once spawned; this only collects them in order.
async fn futures_join_all<T>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<std::result::Result<T, tokio::task::JoinError>> {
    let handles: Vec<_> = tasks.into_iter().collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await);
    }
    results
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::cases::$case(super::Harness::sqlite().await?).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::cases::$case(super::Harness::postgres().await?).await
                }
            )*
        }
    };
}

conformance!(
    migrate_on_empty_database_is_idempotent,
    concurrent_migrate_succeeds,
    verify_schema_names_what_is_missing,
    seeds_are_the_original_scripts,
    session_lifecycle,
    settling_a_session_records_how_loading_went,
    execution_counts_in_one_batch,
    expiry_and_active_count,
    timestamps_round_trip_at_microseconds,
    artifact_lookup_by_hash,
    function_registry,
    concurrent_registration_has_one_winner,
    logs_insert_in_bulk,
);

#[tokio::test]
async fn sqlite_open_in_dir_creates_the_database_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let store = SqliteStore::open_in_dir(&data_dir).await?;
    store.migrate().await?;
    ensure!(data_dir.join(lambda_store::SQLITE_FILE_NAME).is_file());
    // Reopening an existing, migrated file keeps its content.
    drop(store);
    let reopened = SqliteStore::open_in_dir(&data_dir).await?;
    reopened.migrate().await?;
    ensure!(reopened
        .get_function("rust-data_validator")
        .await?
        .is_some());
    Ok(())
}

#[tokio::test]
async fn postgres_connect_to_a_dead_server_fails_instead_of_hanging() -> Result<()> {
    // Port 1 on loopback: nothing listens, so the connection is refused.
    let started = std::time::Instant::now();
    let result = PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres").await;
    ensure!(result.is_err(), "connected to nothing");
    ensure!(started.elapsed() < std::time::Duration::from_secs(10));
    Ok(())
}

/// A database the original platform created and seeded is brought to this
/// version's schema by `migrate`, keeping its data.
#[tokio::test]
async fn postgres_adopts_a_database_of_the_original_platform() -> Result<()> {
    let database = TestDatabase::create().await?;
    let store = PostgresStore::connect(database.url()).await?;
    sqlx::raw_sql(include_str!("fixtures/original_schema.sql"))
        .execute(store.pool())
        .await?;
    sqlx::raw_sql(include_str!(
        "fixtures/original_V1.0.6__insert_default_functions.sql"
    ))
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO meta.sessions (request_id, language_title, expires_at, execution_count) \
         VALUES ('old-session', 'nodejs-calculator', NOW() + INTERVAL '1 hour', 2)",
    )
    .execute(store.pool())
    .await?;

    store.migrate().await?;

    for (name, script) in SEED_FILES {
        let function = store.get_function(name).await?.context(name)?;
        ensure!(function.script_content == script, "{name} script changed");
        let schema = function.schema.context("schema")?;
        ensure!(schema["params"]["type"] == "object", "{name}: {schema}");
    }
    let old = store.get_session("old-session").await?.context("session")?;
    ensure!(old.execution_count == 2 && old.status == SessionStatus::Active);
    store
        .insert_logs(&[RequestLog {
            id: Uuid::new_v4(),
            request_id: "r".repeat(128),
            language_title: "nodejs-calculator".to_string(),
            timestamp: now(),
            client_ip: None,
            user_id: None,
            request_headers: None,
            request_payload: None,
            response_payload: None,
            status_code: 200,
            duration_ms: 1,
            cached: false,
            error_details: None,
            runtime_metrics: None,
            error: None,
        }])
        .await?;
    Ok(())
}

/// Request logs go to PostgreSQL in COPY's binary format, encoded by hand:
/// every column must read back as written (NULs in JSON become U+FFFD),
/// on the first write and on the retry that skips rows already there.
#[tokio::test]
async fn postgres_request_logs_read_back_as_written() -> Result<()> {
    let harness = Harness::postgres().await?.migrated().await?;
    let Raw::Postgres { pool, .. } = &harness.raw else {
        bail!("not PostgreSQL");
    };
    let full = RequestLog {
        id: Uuid::new_v4(),
        request_id: "sessión-✓".to_string(),
        language_title: "python-text_processor".to_string(),
        timestamp: micros(Utc::now()),
        client_ip: Some("203.0.113.9".to_string()),
        user_id: Some("user-123".to_string()),
        request_headers: Some(json!({"authorization": "***"})),
        request_payload: Some(json!({"params": {"a": -5, "text": "nul\u{0}byte", "f": 1.5}})),
        response_payload: Some(json!([1, "two", null])),
        status_code: 460,
        duration_ms: i32::MAX,
        cached: true,
        error_details: Some(json!({"code": "RUNTIME_ERROR"})),
        runtime_metrics: Some(json!({})),
        error: None,
    };
    let empty = RequestLog {
        id: Uuid::new_v4(),
        request_id: String::new(),
        language_title: String::new(),
        timestamp: DateTime::from_timestamp_micros(946_684_799_999_999).context("timestamp")?,
        client_ip: None,
        user_id: None,
        request_headers: None,
        request_payload: None,
        response_payload: None,
        status_code: 0,
        duration_ms: -1,
        cached: false,
        error_details: None,
        runtime_metrics: None,
        error: None,
    };
    harness
        .store
        .insert_logs(std::slice::from_ref(&full))
        .await?;
    // The retry path: one row already there, one new.
    harness
        .store
        .insert_logs(&[full.clone(), empty.clone()])
        .await?;
    ensure!(harness.count_rows("request_logs").await? == 2);

    type Row = (
        Uuid,
        String,
        String,
        DateTime<Utc>,
        Option<String>,
        Option<String>,
        Option<sqlx::types::Json<Value>>,
        Option<sqlx::types::Json<Value>>,
        Option<sqlx::types::Json<Value>>,
        i32,
        i32,
        bool,
        Option<sqlx::types::Json<Value>>,
        Option<sqlx::types::Json<Value>>,
    );
    for expected in [&full, &empty] {
        let row: Row = sqlx::query_as(
            "SELECT id, request_id, language_title, timestamp, client_ip, user_id, \
             request_headers, request_payload, response_payload, status_code, duration_ms, \
             cached, error_details, runtime_metrics FROM public.request_logs WHERE id = $1",
        )
        .bind(expected.id)
        .fetch_one(pool)
        .await?;
        let json = |value: Option<sqlx::types::Json<Value>>| value.map(|json| json.0);
        let mut payload = expected.request_payload.clone();
        if let Some(text) = payload.as_mut().and_then(|p| p.pointer_mut("/params/text")) {
            *text = json!("nul\u{FFFD}byte");
        }
        ensure!(row.0 == expected.id);
        ensure!(row.1 == expected.request_id, "request_id {:?}", row.1);
        ensure!(row.2 == expected.language_title);
        ensure!(
            row.3 == expected.timestamp,
            "timestamp {} vs {}",
            row.3,
            expected.timestamp
        );
        ensure!(row.4 == expected.client_ip && row.5 == expected.user_id);
        ensure!(json(row.6) == expected.request_headers);
        ensure!(json(row.7) == payload, "payload");
        ensure!(json(row.8) == expected.response_payload);
        ensure!(row.9 == expected.status_code && row.10 == expected.duration_ms);
        ensure!(row.11 == expected.cached);
        ensure!(json(row.12) == expected.error_details);
        ensure!(json(row.13) == expected.runtime_metrics);
    }
    Ok(())
}
