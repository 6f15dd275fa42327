//! Access control and traffic policy over real HTTP: JWT failures, scopes,
//! ownership, rate limits, the result cache, CORS, body limits, secrets.

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use lambda_access::testing::{
    mint_hs256, mint_hs256_claims, mint_unsigned, mint_with_pem, unix_seconds, Algorithm,
};
use lambda_testkit::postgres::TestDatabase;
use serde_json::{json, Value};
use sqlx::Connection;
use support::{binary, Api, Backend, Harness, ServiceOptions, TestService};

const SECRET: &str = "an-hs256-secret-that-is-at-least-32-bytes-long";
const ADD: &str = "return event.params.a + event.params.b;";
const ALL: &str = "execute:all read:functions write:functions";

fn token(subject: &str, scopes: &str) -> String {
    mint_hs256(SECRET, subject, scopes, Duration::from_secs(600)).expect("mint")
}

fn now() -> u64 {
    unix_seconds(SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_are_401_and_scopes_403() {
    let harness = Harness::start(
        Backend::Sqlite,
        &[("JWT_SECRET", SECRET), ("JWT_AUDIENCE", "lambda")],
    )
    .await;
    let api = &harness.api;
    let claims = |extra: Value| {
        let mut claims = json!({"sub": "alice", "scope": ALL, "exp": now() + 600, "aud": "lambda"});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                claims.insert(key.clone(), value.clone());
            }
        }
        claims
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed", Some("not-a-jwt".to_string())),
        (
            "bad signature",
            Some(
                mint_hs256_claims(
                    "another-secret-that-is-also-32-bytes-long!!",
                    &claims(json!({})),
                )
                .unwrap(),
            ),
        ),
        ("alg none", Some(mint_unsigned(&claims(json!({}))).unwrap())),
        (
            "expired",
            Some(mint_hs256_claims(SECRET, &claims(json!({"exp": now() - 3600}))).unwrap()),
        ),
        (
            "not yet valid",
            Some(mint_hs256_claims(SECRET, &claims(json!({"nbf": now() + 3600}))).unwrap()),
        ),
        (
            "wrong audience",
            Some(mint_hs256_claims(SECRET, &claims(json!({"aud": "someone-else"}))).unwrap()),
        ),
        (
            "no exp",
            Some(
                mint_hs256_claims(
                    SECRET,
                    &json!({"sub": "alice", "scope": ALL, "aud": "lambda"}),
                )
                .unwrap(),
            ),
        ),
    ];
    for (case, token) in cases {
        let client = match &token {
            Some(token) => api.with_token(token),
            None => api.clone(),
        };
        let reply = client
            .initialize_reply("nodejs-x", &json!({"script_content": ADD}))
            .await;
        reply.assert_error(401, "UNAUTHORIZED", case);
        if let Some(token) = &token {
            assert!(
                !reply.body.to_string().contains(token.as_str()),
                "{case}: the token is echoed"
            );
        }
    }
    let good = mint_hs256_claims(SECRET, &claims(json!({}))).unwrap();
    let alice = api.with_token(&good);
    let id = alice.initialize_script("nodejs-mine", ADD).await;
    assert_eq!(
        alice.execute(&id, json!({"a": 1, "b": 2})).await.body["result"],
        3
    );

    // Missing scope: 403.
    let reader = api.with_token(
        &mint_hs256_claims(
            SECRET,
            &claims(json!({"sub": "alice", "scope": "read:functions"})),
        )
        .unwrap(),
    );
    let reply = reader
        .initialize_reply("nodejs-x", &json!({"script_content": ADD}))
        .await;
    reply.assert_error(403, "FORBIDDEN", "");
    let reply = reader.execute(&id, json!({"a": 1, "b": 2})).await;
    reply.assert_error(403, "FORBIDDEN", "");
    let reply = reader
        .post(
            "/api/v1/functions",
            &[],
            &json!({"language_title": "nodejs-f", "script_content": ADD}),
        )
        .await;
    reply.assert_error(403, "FORBIDDEN", "");
    assert_eq!(reader.get("/api/v1/functions").await.status, 200);
    let python_only = api.with_token(
        &mint_hs256_claims(SECRET, &claims(json!({"scope": "execute:python"}))).unwrap(),
    );
    let reply = python_only
        .initialize_reply("nodejs-x", &json!({"script_content": ADD}))
        .await;
    reply.assert_error(403, "FORBIDDEN", "");
    assert_eq!(
        python_only
            .initialize_script("python-ok", "result = 1")
            .await
            .len(),
        36
    );

    // Another subject's session does not exist for them.
    let bob = api.with_token(&mint_hs256_claims(SECRET, &claims(json!({"sub": "bob"}))).unwrap());
    for reply in [
        bob.execute(&id, json!({"a": 1, "b": 2})).await,
        bob.get(&format!("/api/v1/sessions/{id}")).await,
        bob.delete(&format!("/api/v1/sessions/{id}")).await,
    ] {
        reply.assert_error(404, "NOT_FOUND", "");
    }
    assert_eq!(
        alice.get(&format!("/api/v1/sessions/{id}")).await.status,
        200
    );

    // Dynamic functions belong to their creator (or an admin).
    let reply = alice
        .post(
            "/api/v1/functions",
            &[],
            &json!({"language_title": "nodejs-alices", "script_content": ADD}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["user_id"], "alice");
    let reply = bob.delete("/api/v1/functions/nodejs-alices").await;
    reply.assert_error(403, "FORBIDDEN", "");
    let admin = api.with_token(
        &mint_hs256_claims(SECRET, &claims(json!({"sub": "root", "scope": "admin"}))).unwrap(),
    );
    assert_eq!(
        admin.delete("/api/v1/functions/nodejs-alices").await.status,
        204
    );

    // Health and metrics need no token.
    assert_eq!(api.get("/health").await.status, 200);
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    // The pool's handles, registered when it was built, record alice's
    // executes.
    let text = metrics.text().await.unwrap();
    for series in [
        r#"lambda_runtime_execution_duration_seconds_count{language="nodejs",outcome="ok"}"#,
        r#"lambda_runtime_queue_wait_seconds_count{language="nodejs"}"#,
    ] {
        let count = text
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.trim().parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 1.0), "{series} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_token_signed_with_the_rs256_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl genpkey");
    assert!(made.success());
    let made = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl pkey");
    assert!(made.success());
    let harness = Harness::start(
        Backend::Sqlite,
        &[("JWT_PUBLIC_KEY_FILE", public.to_str().unwrap())],
    )
    .await;
    let claims = json!({"sub": "carol", "scope": ALL, "exp": now() + 600});
    let good = mint_with_pem(Algorithm::RS256, &std::fs::read(&private).unwrap(), &claims).unwrap();
    let id = harness
        .api
        .with_token(&good)
        .initialize_script("nodejs-rsa", ADD)
        .await;
    assert!(!id.is_empty());
    let confused = mint_hs256_claims(std::fs::read(&public).unwrap(), &claims).unwrap();
    let reply = harness
        .api
        .with_token(&confused)
        .execute(&id, json!({}))
        .await;
    reply.assert_error(401, "UNAUTHORIZED", "");
    let unsigned = mint_unsigned(&claims).unwrap();
    let reply = harness
        .api
        .with_token(&unsigned)
        .execute(&id, json!({}))
        .await;
    reply.assert_error(401, "UNAUTHORIZED", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_execute_is_rate_limited_per_subject() {
    // A 5-second window instead of 60 keeps the test short; the counting is the same.
    let harness = Harness::start(
        Backend::Sqlite,
        &[
            ("JWT_SECRET", SECRET),
            ("RATE_LIMIT_EXECUTE_PER_MINUTE", "100"),
            ("RATE_LIMIT_WINDOW_SECONDS", "5"),
        ],
    )
    .await;
    let alice = harness.api.with_token(&token("alice", ALL));
    let bob = harness.api.with_token(&token("bob", ALL));
    let id = alice.initialize_script("nodejs-limited", ADD).await;
    let bobs = bob.initialize_script("nodejs-limited", ADD).await;
    for i in 0..100 {
        let reply = alice
            .post(
                &format!("/api/v1/execute/{id}"),
                &[("X-Cache-Control", "no-cache")],
                &json!({"params": {"a": i, "b": 0}}),
            )
            .await;
        assert_eq!(reply.status, 200, "execute #{}: {reply:?}", i + 1);
        assert_eq!(reply.headers["x-ratelimit-limit"], "100");
    }
    let reply = alice.execute(&id, json!({"a": 1, "b": 1})).await;
    reply.assert_error(429, "RATE_LIMITED", "");
    assert_eq!(reply.headers["x-ratelimit-remaining"], "0");
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    // Another subject is not limited by alice's burst.
    assert_eq!(
        bob.execute(&bobs, json!({"a": 1, "b": 1})).await.status,
        200
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let reply = alice.execute(&id, json!({"a": 1, "b": 1})).await;
    assert_eq!(reply.status, 200, "after honouring Retry-After: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_cached_per_owner_and_honour_cache_control() {
    let harness = Harness::start(Backend::Sqlite, &[("JWT_SECRET", SECRET)]).await;
    let alice = harness.api.with_token(&token("alice", ALL));
    let bob = harness.api.with_token(&token("bob", ALL));
    let clock = "return { now: Date.now(), rand: Math.random() };";
    let id = alice.initialize_script("nodejs-clock", clock).await;
    let first = alice.execute(&id, json!({"x": 1})).await;
    assert_eq!(first.body["cached"], false, "{first:?}");
    let second = alice.execute(&id, json!({"x": 1})).await;
    assert_eq!(second.body["cached"], true, "{second:?}");
    assert_eq!(second.body["result"], first.body["result"]);
    let other_params = alice.execute(&id, json!({"x": 2})).await;
    assert_eq!(other_params.body["cached"], false);
    let bypass = alice
        .post(
            &format!("/api/v1/execute/{id}"),
            &[("X-Cache-Control", "no-cache")],
            &json!({"params": {"x": 1}}),
        )
        .await;
    assert_eq!(bypass.body["cached"], false, "{bypass:?}");
    assert_ne!(bypass.body["result"], first.body["result"]);

    let short = |api: &Api| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.post(
                &format!("/api/v1/execute/{id}"),
                &[("X-Cache-Control", "max-age=1")],
                &json!({"params": {"x": 3}}),
            )
            .await
        }
    };
    let a = short(&alice).await;
    let b = short(&alice).await;
    assert_eq!(
        (a.body["cached"].clone(), b.body["cached"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(a.body["result"], b.body["result"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = short(&alice).await;
    assert_eq!(c.body["cached"], false, "{c:?}");
    assert_ne!(c.body["result"]["now"], a.body["result"]["now"]);

    // Bob runs the same script with the same params: never alice's result.
    let bobs = bob.initialize_script("nodejs-clock", clock).await;
    let reply = bob.execute(&bobs, json!({"x": 1})).await;
    assert_eq!(reply.body["cached"], false, "{reply:?}");
    assert_ne!(reply.body["result"], first.body["result"]);
    // Errors are never cached.
    let failing = alice
        .initialize_script("nodejs-fails", "throw new Error('no');")
        .await;
    assert_eq!(alice.execute(&failing, json!({})).await.status, 460);
    assert_eq!(alice.execute(&failing, json!({})).await.status, 460);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_open_on_a_public_address_is_refused() {
    let port = lambda_testkit::service::free_port().unwrap();
    let output = Command::new(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", format!("0.0.0.0:{port}"))
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for hint in [
        "JWT_SECRET",
        "JWT_PUBLIC_KEY_FILE",
        "ALLOW_ANONYMOUS=true",
        "127.0.0.1",
    ] {
        assert!(
            stderr.contains(hint),
            "the message should say how to fix it ({hint}):\n{stderr}"
        );
    }
    // ALLOW_ANONYMOUS=true starts it, with a warning.
    let options = ServiceOptions {
        port: Some(port),
        ..Default::default()
    }
    .with_env("BIND_ADDR", &format!("0.0.0.0:{port}"))
    .with_env("ALLOW_ANONYMOUS", "true");
    let service = TestService::start(binary(), options)
        .await
        .expect("starts with ALLOW_ANONYMOUS");
    assert!(
        service.log().contains("ALLOW_ANONYMOUS"),
        "{}",
        service.log()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The status line's code of [`oversized_execute_response`].
async fn send_oversized_execute(port: u16, id: &str, chunked: bool) -> u16 {
    status_code(&oversized_execute_response(port, id, chunked).await)
}

/// The code in a raw response's status line (0 if there is none).
fn status_code(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Sends the head of a 10 MiB execute body over a raw connection (a client
/// racing to send the whole body would see its connection reset once the
/// service has answered) and returns the whole response as text.
async fn oversized_execute_response(port: u16, id: &str, chunked: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let length_header = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", 10 * 1024 * 1024)
    };
    let head = format!(
        "POST /api/v1/execute/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{length_header}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    if chunked {
        // Stream 2 MiB (over the 1 MiB limit) in 64 KiB chunks; the service
        // must stop reading and answer once past its limit.
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        for _ in 0..32 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mebibyte_bodies_are_refused_without_buffering() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let api = &harness.api;
    let id = api.initialize_script("nodejs-small", ADD).await;
    let (port, pid) = (harness.service.port, harness.service.pid().unwrap());
    // Warm up allocator and connection handling before measuring. The
    // refusal is the API's error shape, whether the limit was declared or
    // hit mid-stream. Over a raw connection: a client that sends the whole
    // body races the service's close and may see only a broken pipe.
    for chunked in [false, true] {
        let response = oversized_execute_response(port, &id, chunked).await;
        assert_eq!(status_code(&response), 413, "chunked {chunked}: {response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body)
            .unwrap_or_else(|error| panic!("{error}: chunked {chunked}: {response}"));
        assert_eq!(
            body["error"]["code"], "PAYLOAD_TOO_LARGE",
            "chunked {chunked}: {response}"
        );
    }
    let before = rss_kib(pid);
    for i in 0..100 {
        assert_eq!(send_oversized_execute(port, &id, i % 2 == 1).await, 413);
    }
    let after = rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 32,
        "RSS grew by {growth_mib} MiB over 100 refused 10 MiB bodies ({before} -> {after} KiB)"
    );
    let reply = api.execute(&id, json!({"a": 1, "b": 1})).await;
    assert_eq!(reply.body["result"], 2, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let harness = Harness::start(
        Backend::Sqlite,
        &[("CORS_ALLOWED_ORIGINS", "https://app.example")],
    )
    .await;
    let preflight = |origin: &'static str| {
        let client = harness.api.client.clone();
        let url = format!("{}/api/v1/initialize", harness.api.base_url);
        async move {
            client
                .request(reqwest::Method::OPTIONS, url)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "language-title,authorization,content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("https://app.example").await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(allowed.headers()["access-control-max-age"], "86400");
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let refused = preflight("https://evil.example").await;
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// With no origin configured there is no CORS layer: no origin is allowed,
/// and no response pays for CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_headers_without_configured_origins() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let client = &harness.api.client;
    let health = client
        .get(format!("{}/health", harness.api.base_url))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/initialize", harness.api.base_url),
        )
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    for response in [&health, &preflight] {
        let cors: Vec<_> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-") || *name == "vary")
            .collect();
        assert!(cors.is_empty(), "{} {cors:?}", response.status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_request_logs() {
    let database = TestDatabase::create().await.unwrap();
    let mut service = TestService::start(
        binary(),
        ServiceOptions::postgres(database.url()).with_env("JWT_SECRET", SECRET),
    )
    .await
    .unwrap();
    let bearer = token("dave", ALL);
    let api = Api::new(&service.base_url).with_token(&bearer);
    let id = api
        .initialize_script("nodejs-secretive", "return event.params.a;")
        .await;
    let reply = api
        .execute(
            &id,
            json!({"a": 1, "password": "hunter2", "nested": {"api_key": "k-123"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(service.stop().await.unwrap().success());
    assert!(
        !service.log().contains(&bearer),
        "the token appears in the service log"
    );
    let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
    let rows: Vec<(Option<Value>, Option<Value>)> = sqlx::query_as(
        "SELECT request_payload, request_headers FROM public.request_logs WHERE request_id = $1",
    )
    .bind(&id)
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let stored = format!("{rows:?}");
    for secret in ["hunter2", "k-123", bearer.as_str()] {
        assert!(
            !stored.contains(secret),
            "{secret} stored in request_logs: {stored}"
        );
    }
    assert_eq!(rows[0].0.as_ref().unwrap()["params"]["a"], 1, "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_listener() {
    let metrics_port = lambda_testkit::service::free_port().unwrap();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let harness = Harness::start(
        Backend::Sqlite,
        &[("JWT_SECRET", SECRET), ("METRICS_ADDR", &metrics_addr)],
    )
    .await;
    let response = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics listener");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE"), "{text}");
    // The main listener still serves them too, without a token.
    assert_eq!(
        harness
            .api
            .client
            .get(format!("{}/metrics", harness.api.base_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
