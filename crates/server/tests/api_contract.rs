//! The public contract of API.md over real HTTP, on SQLite and PostgreSQL:
//! every endpoint and error code.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Backend, Harness};

const ADD_BODY_STYLE: &str = "return event.params.a + event.params.b;";

on_both_stores!(request_errors_have_their_codes, |backend| async move {
    let harness = Harness::start(backend, &[("MAX_SCRIPT_SIZE", "2000")]).await;
    let api = &harness.api;

    let reply = api
        .post(
            "/api/v1/initialize",
            &[],
            &json!({"script_content": ADD_BODY_STYLE}),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "missing Language-Title");
    for malformed in [
        "nodejs",
        "nodejs-",
        "-calc",
        "nodejs-bad title",
        "nodejs-a/b",
    ] {
        let reply = api
            .initialize_reply(malformed, &json!({"script_content": ADD_BODY_STYLE}))
            .await;
        reply.assert_error(400, "INVALID_REQUEST", malformed);
    }
    let reply = api
        .initialize_reply("cobol-payroll", &json!({"script_content": "x"}))
        .await;
    reply.assert_error(404, "NOT_FOUND", "unknown language");

    let reply = api
        .send(
            reqwest::Method::POST,
            "/api/v1/initialize",
            &[("Language-Title", "nodejs-x")],
            Some(b"{\"script_content\": ".to_vec()),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "malformed JSON");
    let reply = api
        .send(
            reqwest::Method::POST,
            "/api/v1/initialize",
            &[("Language-Title", "nodejs-x")],
            Some(b"[1,2]".to_vec()),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "wrong JSON shape");

    let big = format!("return 1; // {}", "x".repeat(3000));
    let reply = api
        .initialize_reply("nodejs-big", &json!({"script_content": big}))
        .await;
    reply.assert_error(413, "PAYLOAD_TOO_LARGE", "oversized script");
    let huge = format!("return 1; // {}", "x".repeat(200_000));
    let reply = api
        .initialize_reply("nodejs-huge", &json!({"script_content": huge}))
        .await;
    reply.assert_error(413, "PAYLOAD_TOO_LARGE", "oversized body");

    let reply = api.initialize_reply("nodejs-nonexistent", &json!({})).await;
    reply.assert_error(404, "NOT_FOUND", "unknown function");

    let reply = api
        .post(
            "/api/v1/initialize",
            &[
                ("Language-Title", "nodejs-calc"),
                ("X-Request-ID", "bad id with spaces"),
            ],
            &json!({"script_content": ADD_BODY_STYLE}),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "bad X-Request-ID");
    let reply = api
        .post(
            "/api/v1/initialize",
            &[
                ("Language-Title", "nodejs-calc"),
                ("X-Request-ID", "client-id-1"),
            ],
            &json!({"script_content": ADD_BODY_STYLE}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["request_id"], "client-id-1");
    assert_eq!(reply.body["status"], "initialized");
    assert!(reply.body["expires_at"].as_str().is_some());
    let reply = api
        .post(
            "/api/v1/initialize",
            &[
                ("Language-Title", "nodejs-calc"),
                ("X-Request-ID", "client-id-1"),
            ],
            &json!({"script_content": ADD_BODY_STYLE}),
        )
        .await;
    reply.assert_error(409, "CONFLICT", "duplicate X-Request-ID");

    let reply = api.execute("no-such-session", json!({})).await;
    reply.assert_error(404, "NOT_FOUND", "");
    assert_eq!(
        reply.body["error"]["message"],
        "Session not found or expired"
    );
    assert_eq!(reply.body["request_id"], "no-such-session");

    let reply = api
        .send(
            reqwest::Method::POST,
            "/api/v1/execute/client-id-1",
            &[],
            Some(b"{not json".to_vec()),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "");
    let reply = api
        .send(
            reqwest::Method::POST,
            "/api/v1/execute/client-id-1",
            &[("X-Cache-Control", "sometimes")],
            Some(b"{}".to_vec()),
        )
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "");

    let reply = api.get("/api/v1/nothing-here").await;
    reply.assert_error(404, "NOT_FOUND", "");
    let reply = api.get("/api/v1/sessions/no-such-session").await;
    reply.assert_error(404, "NOT_FOUND", "");
    let reply = api.delete("/api/v1/sessions/no-such-session").await;
    reply.assert_error(404, "NOT_FOUND", "");
});

on_both_stores!(sessions_execute_read_and_delete, |backend| async move {
    let harness = Harness::start(backend, &[]).await;
    let api = &harness.api;
    let id = api.initialize_script("nodejs-adder", ADD_BODY_STYLE).await;
    let reply = api.execute(&id, json!({"a": 5, "b": 3})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["result"], 8);
    assert_eq!(reply.body["language_title"], "nodejs-adder");
    assert_eq!(reply.body["request_id"], id.as_str());
    assert_eq!(reply.body["cached"], false);
    assert!(reply.body["execution_time"].is_u64());
    let reply = api.execute(&id, json!({"a": 1, "b": 1})).await;
    assert_eq!(reply.body["result"], 2);

    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["status"], "active");
    assert_eq!(reply.body["execution_count"], 2);
    assert_eq!(reply.body["language_title"], "nodejs-adder");
    assert!(reply.body["last_executed_at"].is_string());
    for field in ["created_at", "expires_at"] {
        assert!(reply.body[field].is_string(), "{field}");
    }

    let reply = api.delete(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = api.execute(&id, json!({"a": 1, "b": 1})).await;
    reply.assert_error(404, "NOT_FOUND", "");
    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 404, "{reply:?}");

    // retain_session: false ends the session after its first execute.
    let id = api
        .initialize(
            "nodejs-once",
            json!({"script_content": ADD_BODY_STYLE, "context": {"retain_session": false}}),
        )
        .await;
    assert_eq!(
        api.execute(&id, json!({"a": 2, "b": 2})).await.body["result"],
        4
    );
    let reply = api.execute(&id, json!({"a": 2, "b": 2})).await;
    reply.assert_error(404, "NOT_FOUND", "");
    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.body["status"], "completed", "{reply:?}");

    // The user's code throwing is 460 with a line in the user's script.
    let id = api
        .initialize_script(
            "nodejs-thrower",
            "const x = 1;\nthrow new Error('boom ' + x);",
        )
        .await;
    let reply = api.execute(&id, json!({})).await;
    reply.assert_error(460, "RUNTIME_ERROR", "");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("boom 1"),
        "{reply:?}"
    );
    assert_eq!(reply.body["error"]["details"]["line"], 2, "{reply:?}");

    // A syntax error is caught at initialize.
    let reply = api
        .post(
            "/api/v1/initialize",
            &[
                ("Language-Title", "nodejs-broken"),
                ("X-Request-ID", "broken-script-1"),
            ],
            &json!({"script_content": "return (1 +;"}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    assert_eq!(reply.body["error"]["details"]["line"], 1, "{reply:?}");
    // The session is stored as such, with the reason.
    let reply = api.get("/api/v1/sessions/broken-script-1").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["status"], "error", "{reply:?}");
    assert!(
        reply.body["compile_error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{reply:?}"
    );
    let reply = api.execute("broken-script-1", json!({})).await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
});

on_both_stores!(
    seeded_functions_and_schema_validation,
    |backend| async move {
        let harness = Harness::start(backend, &[]).await;
        let api = &harness.api;
        let id = api.initialize("nodejs-calculator", json!({})).await;
        for (operation, a, b, expected) in [
            ("add", 5, 3, 8.0),
            ("subtract", 5, 3, 2.0),
            ("multiply", 4, 2, 8.0),
            ("divide", 9, 3, 3.0),
        ] {
            let reply = api
                .execute(&id, json!({"operation": operation, "a": a, "b": b}))
                .await;
            assert_eq!(reply.status, 200, "{operation}: {reply:?}");
            assert_eq!(
                reply.body["result"]["result"].as_f64(),
                Some(expected),
                "{operation}: {reply:?}"
            );
        }
        let reply = api
            .execute(&id, json!({"operation": "divide", "a": 1, "b": 0}))
            .await;
        reply.assert_error(460, "RUNTIME_ERROR", "");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Division by zero"));

        let reply = api
            .execute(&id, json!({"operation": "pow", "a": 1, "b": 2}))
            .await;
        reply.assert_error(400, "INVALID_PARAMS", "");
        assert_eq!(
            reply.body["error"]["details"]["path"], "/operation",
            "{reply:?}"
        );
        let reply = api
            .execute(&id, json!({"operation": "add", "a": "five", "b": 2}))
            .await;
        reply.assert_error(400, "INVALID_PARAMS", "");
        assert_eq!(reply.body["error"]["details"]["path"], "/a", "{reply:?}");

        let id = api.initialize("python-text_processor", json!({})).await;
        for (action, text, expected) in [
            ("count_words", "Hello big world", json!(3)),
            ("count_chars", "hello", json!(5)),
            ("uppercase", "hello", json!("HELLO")),
            ("lowercase", "HeLLo", json!("hello")),
        ] {
            let reply = api
                .execute(&id, json!({"action": action, "text": text}))
                .await;
            assert_eq!(reply.status, 200, "{action}: {reply:?}");
            assert_eq!(
                reply.body["result"]["result"], expected,
                "{action}: {reply:?}"
            );
        }
    }
);

on_both_stores!(function_registry, |backend| async move {
    let harness = Harness::start(backend, &[]).await;
    let api = &harness.api;
    let reply = api.get("/api/v1/functions?type=predefined").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["total"], 3);
    let titles: Vec<&str> = reply.body["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["language_title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "nodejs-calculator",
            "python-text_processor",
            "rust-data_validator"
        ]
    );
    let reply = api.get("/api/v1/functions/nodejs-calculator").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body["script_content"]
        .as_str()
        .unwrap()
        .starts_with("module.exports = async (context, callback)"));
    assert_eq!(reply.body["type"], "predefined");
    assert_eq!(reply.body["version"], "1.0.0");
    assert!(
        reply.body["schema"]["params"]["properties"]["operation"].is_object(),
        "{reply:?}"
    );

    let body = json!({
        "language_title": "nodejs-greeter",
        "description": "says hello",
        "script_content": "return 'hello ' + event.params.name;",
        "schema": {"params": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
        "tags": ["demo"],
    });
    let reply = api.post("/api/v1/functions", &[], &body).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["type"], "dynamic");
    assert_eq!(reply.body["version"], "1.0.0");
    let reply = api.post("/api/v1/functions", &[], &body).await;
    reply.assert_error(409, "CONFLICT", "");
    let reply = api
        .post(
            "/api/v1/functions",
            &[],
            &json!({"language_title": "nodejs-bad", "script_content": "return (;"}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    let reply = api
        .post("/api/v1/functions", &[], &json!({"language_title": "nodejs-badschema", "script_content": "return 1;", "schema": {"params": {"type": 12}}}))
        .await;
    reply.assert_error(400, "INVALID_REQUEST", "");

    let id = api.initialize("nodejs-greeter", json!({})).await;
    assert_eq!(
        api.execute(&id, json!({"name": "Ada"})).await.body["result"],
        "hello Ada"
    );
    let reply = api.execute(&id, json!({})).await;
    reply.assert_error(400, "INVALID_PARAMS", "");

    let reply = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/functions/nodejs-greeter",
            &[],
            Some(
                json!({"script_content": "return 'hi ' + event.params.name;"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["version"], "1.0.1");
    let id = api.initialize("nodejs-greeter", json!({})).await;
    assert_eq!(
        api.execute(&id, json!({"name": "Ada"})).await.body["result"],
        "hi Ada"
    );

    let reply = api
        .get("/api/v1/functions?type=dynamic&language=nodejs")
        .await;
    assert_eq!(reply.body["total"], 1, "{reply:?}");
    let reply = api.get("/api/v1/functions?per_page=2&page=2").await;
    assert_eq!(reply.body["total"], 4, "{reply:?}");
    assert_eq!(
        reply.body["functions"].as_array().map(Vec::len),
        Some(2),
        "{reply:?}"
    );
    let reply = api.get("/api/v1/functions?per_page=101").await;
    reply.assert_error(400, "INVALID_REQUEST", "");
    let reply = api.get("/api/v1/functions?type=other").await;
    reply.assert_error(400, "INVALID_REQUEST", "");

    let reply = api.delete("/api/v1/functions/nodejs-calculator").await;
    reply.assert_error(403, "FORBIDDEN", "predefined");
    let reply = api.delete("/api/v1/functions/nodejs-greeter").await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = api.get("/api/v1/functions/nodejs-greeter").await;
    reply.assert_error(404, "NOT_FOUND", "");
    let reply = api.post("/api/v1/functions", &[], &body).await;
    assert_eq!(reply.status, 201, "re-register after retire: {reply:?}");
});

on_both_stores!(expiry_is_honoured_by_every_read, |backend| async move {
    let harness = Harness::start(
        backend,
        &[
            ("SESSION_EXPIRY_SECONDS", "1"),
            ("SESSION_CLEANUP_INTERVAL_SECONDS", "3600"),
        ],
    )
    .await;
    let api = &harness.api;
    let id = api.initialize_script("nodejs-short", ADD_BODY_STYLE).await;
    assert_eq!(
        api.execute(&id, json!({"a": 1, "b": 2})).await.body["result"],
        3
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The session is still cached and still in the database: both must say no.
    let reply = api.execute(&id, json!({"a": 1, "b": 2})).await;
    reply.assert_error(404, "NOT_FOUND", "");
    assert_eq!(
        reply.body["error"]["message"],
        "Session not found or expired"
    );
    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = api.delete(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.status, 404, "{reply:?}");
});

on_both_stores!(health_metrics_and_openapi, |backend| async move {
    let harness = Harness::start(backend, &[]).await;
    let api = &harness.api;
    let reply = api.get("/health").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["status"], "ok");
    assert_eq!(reply.body["components"]["controller"], "ok");
    assert_eq!(reply.body["components"]["database"], "ok");
    for language in ["nodejs", "python", "rust", "wasm"] {
        assert!(
            reply.body["components"]["runtimes"][language].is_string(),
            "{language}: {reply:?}"
        );
    }
    assert!(reply.body["version"].is_string());

    let id = api.initialize_script("nodejs-m", ADD_BODY_STYLE).await;
    api.execute(&id, json!({"a": 1, "b": 2})).await;
    let text = api.metrics_text().await;
    assert_prometheus_text(&text);
    for name in [
        "lambda_http_requests_total",
        "lambda_http_request_duration_seconds_bucket",
        "lambda_executions_total",
        "lambda_log_queue_depth",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }

    let reply = api.get("/api/v1/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body["openapi"]
            .as_str()
            .unwrap_or("")
            .starts_with("3."),
        "{reply:?}"
    );
    let paths = reply.body["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/v1/initialize", &["post"][..]),
        ("/api/v1/execute/{request_id}", &["post"]),
        ("/api/v1/sessions/{request_id}", &["get", "delete"]),
        ("/api/v1/functions", &["get", "post"]),
        (
            "/api/v1/functions/{language_title}",
            &["get", "put", "delete"],
        ),
        ("/health", &["get"]),
        ("/metrics", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "openapi lacks {method} {path}"
            );
        }
    }
});

/// Every non-comment line is `name{labels} value` with a numeric value.
fn assert_prometheus_text(text: &str) {
    let mut samples = 0;
    for line in text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let (_, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in: {line}"
        );
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        assert!(
            line[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in: {line}"
        );
        samples += 1;
    }
    assert!(samples > 0, "no samples");
    let _: Value = Value::Null;
}
