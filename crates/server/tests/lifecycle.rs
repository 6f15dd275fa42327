//! Restarts, replicas sharing PostgreSQL, concurrent migration, request logs
//! and a database that goes away: the service's life beyond one request.

mod support;

use std::time::Duration;

use futures::future::join_all;
use lambda_testkit::postgres::TestDatabase;
use serde_json::json;
use sqlx::Connection;
use support::proxy::{upstream_and_rewrite, CuttableProxy};
use support::{binary, Api, Backend, Harness, ServiceOptions, TestService};

const ADD: &str = "return event.params.a + event.params.b;";

/// Counts request_logs and error_logs rows of a session.
async fn count_logs(backend: Backend, harness: &Harness, session: &str) -> (i64, i64) {
    match backend {
        Backend::Postgres => {
            let url = harness.database.as_ref().expect("database").url();
            let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
            let requests: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM public.request_logs WHERE request_id = $1",
            )
            .bind(session)
            .fetch_one(&mut connection)
            .await
            .expect("count");
            let errors: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM public.error_logs e JOIN public.request_logs r ON r.id = e.request_log_id WHERE r.request_id = $1",
            )
            .bind(session)
            .fetch_one(&mut connection)
            .await
            .expect("count");
            (requests, errors)
        }
        Backend::Sqlite => {
            let path = harness.service.data_dir.join("lambda.db");
            let mut connection =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .expect("connect");
            let requests: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM request_logs WHERE request_id = ?")
                    .bind(session)
                    .fetch_one(&mut connection)
                    .await
                    .expect("count");
            let errors: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM error_logs e JOIN request_logs r ON r.id = e.request_log_id WHERE r.request_id = ?",
            )
            .bind(session)
            .fetch_one(&mut connection)
            .await
            .expect("count");
            (requests, errors)
        }
    }
}

on_both_stores!(sessions_survive_a_restart, |backend| async move {
    let mut harness = Harness::start(backend, &[]).await;
    let id = harness
        .api
        .initialize_script("nodejs-persistent", ADD)
        .await;
    assert_eq!(
        harness.api.execute(&id, json!({"a": 2, "b": 3})).await.body["result"],
        5
    );
    harness.service.stop().await.expect("graceful stop");

    let options = ServiceOptions {
        database_url: harness.database.as_ref().map(|db| db.url().to_string()),
        data_dir: Some(harness.service.data_dir.clone()),
        ..Default::default()
    };
    let restarted = TestService::start(binary(), options)
        .await
        .expect("restart");
    let api = Api::new(&restarted.base_url);
    let reply = api.execute(&id, json!({"a": 20, "b": 3})).await;
    assert_eq!(reply.status, 200, "after restart: {reply:?}");
    assert_eq!(reply.body["result"], 23);
    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.body["execution_count"], 2, "{reply:?}");
});

on_both_stores!(
    every_execute_is_logged_and_flushed_on_shutdown,
    |backend| async move {
        let mut harness = Harness::start(backend, &[("LOG_FLUSH_INTERVAL_MS", "5000")]).await;
        let id = harness.api.initialize_script("nodejs-logged", ADD).await;
        let n_executes = 1000;
        let api = harness.api.clone();
        let batches = (0..n_executes).collect::<Vec<i64>>();
        for chunk in batches.chunks(16) {
            let replies = join_all(chunk.iter().map(|i| {
                let api = api.clone();
                let id = id.clone();
                async move { api.execute(&id, json!({"a": i, "b": 1})).await }
            }))
            .await;
            for reply in replies {
                assert_eq!(reply.status, 200, "{reply:?}");
            }
        }
        // One failing execute gives an error_logs row too.
        let failing = harness
            .api
            .initialize_script("nodejs-failing", "throw new Error('nope');")
            .await;
        assert_eq!(harness.api.execute(&failing, json!({})).await.status, 460);
        // The flush interval is long: only a graceful shutdown writes these.
        let status = harness.service.stop().await.expect("graceful stop");
        assert!(status.success(), "exit status {status}");
        assert_eq!(count_logs(backend, &harness, &id).await, (n_executes, 0));
        assert_eq!(count_logs(backend, &harness, &failing).await, (1, 1));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sessions_and_migrate_together() {
    let database = TestDatabase::create().await.expect("database");
    let options =
        ServiceOptions::postgres(database.url()).with_env("SESSION_CACHE_REVALIDATE_MS", "200");
    // Both start at the same moment on an empty database.
    let (first, second) = tokio::join!(
        TestService::start(binary(), options.clone()),
        TestService::start(binary(), options.clone())
    );
    let (first, second) = (
        first.expect("first replica"),
        second.expect("second replica"),
    );
    let (api_a, api_b) = (Api::new(&first.base_url), Api::new(&second.base_url));

    let id = api_a.initialize_script("nodejs-shared", ADD).await;
    assert_eq!(
        api_a.execute(&id, json!({"a": 1, "b": 1})).await.body["result"],
        2
    );
    let reply = api_b.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 200, "read on the other replica: {reply:?}");
    assert_eq!(reply.body["language_title"], "nodejs-shared");
    assert_eq!(
        api_b.execute(&id, json!({"a": 2, "b": 2})).await.body["result"],
        4
    );
    let reply = api_b.delete(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 204, "delete on the other replica: {reply:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reply = api_a.execute(&id, json!({"a": 1, "b": 1})).await;
    assert_eq!(
        reply.status, 404,
        "deleted elsewhere, past the revalidation window: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_neither_crashes_nor_loses_logs() {
    let database = TestDatabase::create().await.expect("database");
    let (upstream, _) = upstream_and_rewrite(database.url(), 0);
    let proxy = CuttableProxy::start(upstream).await;
    let (_, proxied_url) = upstream_and_rewrite(database.url(), proxy.port);
    let options = ServiceOptions::postgres(&proxied_url)
        .with_env("LOG_FLUSH_INTERVAL_MS", "100")
        .with_env("SESSION_CACHE_REVALIDATE_MS", "500");
    let mut service = TestService::start(binary(), options)
        .await
        .expect("service");
    let api = Api::new(&service.base_url);
    let id = api.initialize_script("nodejs-resilient", ADD).await;
    for i in 0..50 {
        assert_eq!(api.execute(&id, json!({"a": i, "b": 0})).await.status, 200);
    }

    proxy.set_up(false);
    let reply = api.get("/health").await;
    assert_eq!(
        reply.status, 503,
        "health while the database is away: {reply:?}"
    );
    assert_ne!(reply.body["components"]["database"], "ok");
    let started = std::time::Instant::now();
    for i in 0..200 {
        let reply = api.execute(&id, json!({"a": i, "b": 1})).await;
        assert_eq!(
            reply.status, 200,
            "execute #{i} during the outage: {reply:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "executes were held up: {:?}",
        started.elapsed()
    );
    // Something that needs the database answers with an error, not a hang or a crash.
    let reply = api
        .initialize_reply("nodejs-during-outage", &json!({"script_content": ADD}))
        .await;
    assert_eq!(reply.status, 500, "{reply:?}");

    proxy.set_up(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.get("/health").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not see the database come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(service.stop().await.expect("stop").success());
    let mut connection = sqlx::PgConnection::connect(database.url())
        .await
        .expect("connect");
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM public.request_logs WHERE request_id = $1")
            .bind(&id)
            .fetch_one(&mut connection)
            .await
            .expect("count");
    assert_eq!(
        rows,
        250,
        "every execute logged once, none lost, none twice; the service said:\n{}",
        service.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_exits() {
    let database = TestDatabase::create().await.expect("database");
    let output = std::process::Command::new(binary())
        .arg("migrate")
        .env("DATABASE_URL", database.url())
        .output()
        .expect("run migrate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut connection = sqlx::PgConnection::connect(database.url())
        .await
        .expect("connect");
    let functions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta.functions")
        .fetch_one(&mut connection)
        .await
        .expect("meta.functions exists");
    assert_eq!(functions, 3, "seeded functions");
    for table in [
        "meta.scripts",
        "meta.sessions",
        "public.request_logs",
        "public.error_logs",
    ] {
        sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1"))
            .fetch_optional(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{table}: {error}"));
    }
    // A database missing a column is named in a clear error at start.
    sqlx::query("ALTER TABLE meta.sessions DROP COLUMN compile_error")
        .execute(&mut connection)
        .await
        .expect("drop column");
    let output = std::process::Command::new(binary())
        .arg("migrate")
        .env("DATABASE_URL", database.url())
        .output()
        .expect("run migrate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("meta.sessions.compile_error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_stops_start_up_naming_the_variable() {
    for (variable, value) in [
        ("SESSION_EXPIRY_SECONDS", "an hour"),
        ("BIND_ADDR", "localhost"),
        ("DATABASE_URL", "mysql://db/x"),
        ("LOG_FORMAT", "xml"),
        ("MAX_SCRIPT_SIZE", "0"),
        ("DB_LOGGING_ENABLED", "maybe"),
        ("RATE_LIMIT_EXECUTE_PER_MINUTE", "lots"),
    ] {
        let output = std::process::Command::new(binary())
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", "/var/tmp/lambda-tests/config-check")
            .env(variable, value)
            .output()
            .expect("run");
        assert!(!output.status.success(), "{variable}={value} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_deleted_in_the_background() {
    let database = TestDatabase::create().await.expect("database");
    let options = ServiceOptions::postgres(database.url())
        .with_env("SESSION_EXPIRY_SECONDS", "1")
        .with_env("SESSION_CLEANUP_INTERVAL_SECONDS", "1");
    let service = TestService::start(binary(), options)
        .await
        .expect("service");
    let api = Api::new(&service.base_url);
    let id = api.initialize_script("nodejs-ephemeral", ADD).await;
    let mut connection = sqlx::PgConnection::connect(database.url())
        .await
        .expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen_stored = false;
    loop {
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM meta.sessions WHERE request_id = $1")
                .bind(&id)
                .fetch_one(&mut connection)
                .await
                .expect("count");
        if rows == 0 {
            break;
        }
        seen_stored = true;
        assert!(
            std::time::Instant::now() < deadline,
            "expired session still stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_stored, "the session was never stored");
}

/// SIGTERM: a request in flight finishes and is answered (here one whose
/// body is still arriving, so only the listener's drain can save it), an
/// idle keep-alive connection is closed at once, the service exits cleanly,
/// and the request log has the peer's address (what the listener hands the
/// handlers; 127.0.0.2, so that it is not the fallback when none is handed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut harness = Harness::start(Backend::Sqlite, &[]).await;
    let session = harness.api.initialize_script("nodejs-drain", ADD).await;
    let port = harness.service.port;

    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response_head(&mut idle).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::new(127, 0, 0, 2), 0).into())
        .expect("bind 127.0.0.2");
    let mut in_flight = socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await
        .expect("connect");
    let body = br#"{"params": {"a": 2, "b": 3}}"#;
    let (first_half, second_half) = body.split_at(body.len() / 2);
    // `expect: 100-continue` makes the service say when the handler starts
    // reading the body. Only then is the request in flight: a connection
    // whose head has arrived but not yet been parsed still counts as idle,
    // and stopping before that point (CI once did) closes it unanswered.
    in_flight
        .write_all(
            format!(
                "POST /api/v1/execute/{session} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let interim = read_response_head(&mut in_flight).await;
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
    in_flight.write_all(first_half).await.expect("write");

    let stopped = std::time::Instant::now();
    let finish_the_request = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        in_flight.write_all(second_half).await.expect("write");
        let mut response = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            in_flight.read_to_end(&mut response),
        )
        .await
        .expect("the answer and the close arrive")
        .expect("read");
        String::from_utf8_lossy(&response).into_owned()
    };
    let (status, response) = tokio::join!(harness.service.stop(), finish_the_request);
    let status = status.expect("graceful stop");
    assert!(status.success(), "exit status {status}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""result":5"#), "{response}");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopped.elapsed()
    );

    // What is left of the health answer, then the end of the stream (or a
    // reset: either way the service closed it).
    let closed =
        tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut Vec::new())).await;
    assert!(
        closed.is_ok(),
        "the idle connection stayed open after shutdown"
    );

    let path = harness.service.data_dir.join("lambda.db");
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let client_ips: Vec<Option<String>> =
        sqlx::query_scalar("SELECT client_ip FROM request_logs WHERE request_id = ?")
            .bind(&session)
            .fetch_all(&mut connection)
            .await
            .expect("query");
    assert_eq!(client_ips, vec![Some("127.0.0.2".to_string())]);
}

/// Reads from `stream` until the end of a response head (the blank line)
/// and returns what it read.
async fn read_response_head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;

    let mut head = Vec::new();
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response head arrives")
            .expect("read");
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&chunk[..n]);
    }
    head
}
