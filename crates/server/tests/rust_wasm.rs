//! Rust and WebAssembly sessions over real HTTP: the seeded validator,
//! compile errors, the content-addressed artifact cache across sessions,
//! replicas and restarts, and hostile modules.

mod support;

use std::time::{Duration, Instant};

use lambda_testkit::postgres::TestDatabase;
use serde_json::json;
use support::{binary, Api, Backend, Harness, ServiceOptions, TestService};

const RUST_ADD: &str = r#"use serde_json::{Map, Value};
pub fn handler(context: Map<String, Value>) -> Result<Value, String> {
    let params = context.get("params").and_then(Value::as_object).ok_or("no params")?;
    let a = params.get("a").and_then(Value::as_i64).ok_or("a")?;
    let b = params.get("b").and_then(Value::as_i64).ok_or("b")?;
    Ok(Value::from(a + b))
}
"#;

/// Echoes its stdin (the event JSON) to stdout: a WASI command module.
const WAT_ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $n i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;

/// WAT_ECHO after a few milliseconds of work on every call: a module that
/// keeps running, as one that earns its Cranelift compile does.
fn wat_busy_echo() -> String {
    let locals = "    (local $n i32)\n";
    let busy = WAT_ECHO.replacen(
        locals,
        &format!(
            "{locals}    (local $spin i32)
    (local.set $spin (i32.const 4194304))
    (loop $busy
      (local.set $spin (i32.sub (local.get $spin) (i32.const 1)))
      (br_if $busy (local.get $spin)))
"
        ),
        1,
    );
    assert_ne!(
        busy, WAT_ECHO,
        "WAT_ECHO no longer declares its local as expected"
    );
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_rust_validator_runs_unchanged() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let api = &harness.api;
    let health = api.get("/health").await;
    assert_eq!(
        health.body["components"]["runtimes"]["rust"], "ok",
        "{health:?}"
    );
    let id = api.initialize("rust-data_validator", json!({})).await;
    let reply = api
        .execute(
            &id,
            json!({"data": {"age": 25}, "rules": ["required", "numeric"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["result"], json!({"valid": true, "errors": []}));
    let reply = api
        .execute(
            &id,
            json!({"data": {"age": "old"}, "rules": ["numeric", "shiny"]}),
        )
        .await;
    assert_eq!(
        reply.body["result"],
        json!({"valid": false, "errors": ["Field age must be numeric", "Unknown rule: shiny"]}),
        "{reply:?}"
    );
    let reply = api
        .execute(&id, json!({"data": {}, "rules": ["required"]}))
        .await;
    assert_eq!(
        reply.body["result"],
        json!({"valid": false, "errors": ["Data is required"]}),
        "{reply:?}"
    );
    let reply = api.execute(&id, json!({"rules": ["required"]})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (460, "RUNTIME_ERROR"),
        "Err(\"Missing data\"): {reply:?}"
    );

    let reply = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(reply.body["compile_status"], "success", "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_compile_errors_panics_and_the_other_handler_forms() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let api = &harness.api;
    let broken = "use serde_json::Value;\npub fn handler(event: Value) -> Result<Value, String> {\n    let x: u32 = \"text\";\n    Ok(event)\n}\n";
    let reply = api
        .initialize_reply("rust-broken", &json!({"script_content": broken}))
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    assert_eq!(reply.body["error"]["details"]["line"], 3, "{reply:?}");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("mismatched types"),
        "{reply:?}"
    );

    let value_form = "use serde_json::Value;\npub fn handler(event: Value) -> Result<Value, String> {\n    if event[\"params\"][\"panic\"] == true { panic!(\"asked to panic\"); }\n    Ok(event[\"params\"].clone())\n}\n";
    let id = api.initialize_script("rust-value", value_form).await;
    assert_eq!(
        api.execute(&id, json!({"x": 1})).await.body["result"],
        json!({"x": 1})
    );
    let reply = api.execute(&id, json!({"panic": true})).await;
    reply.assert_error(460, "RUNTIME_ERROR", "");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("asked to panic"),
        "{reply:?}"
    );
    assert_eq!(
        api.execute(&id, json!({"x": 2})).await.body["result"],
        json!({"x": 2}),
        "worker replaced after the panic"
    );

    let text_form = "pub fn handle(event: &str) -> Result<String, String> {\n    Ok(format!(\"{{\\\"length\\\": {}}}\", event.len()))\n}\n";
    let id = api.initialize_script("rust-text", text_form).await;
    let reply = api.execute(&id, json!({})).await;
    assert!(
        reply.body["result"]["length"].as_u64().unwrap_or(0) > 10,
        "{reply:?}"
    );

    let reply = api.initialize_reply("rust-shadow", &json!({"script_content": "pub fn handle(_e: &str) -> Result<String, String> { Ok(include_str!(\"/etc/shadow\").into()) }"})).await;
    reply.assert_error(
        400,
        "INITIALIZATION_ERROR",
        "the compiler must not read host files",
    );
    assert!(!reply.body.to_string().contains("root:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_artifacts_are_shared_by_replicas_and_survive_restarts() {
    let database = TestDatabase::create().await.expect("database");
    let options = ServiceOptions::postgres(database.url());
    let mut first = TestService::start(binary(), options.clone())
        .await
        .expect("first replica");
    let api = Api::new(&first.base_url);
    let script = format!("{RUST_ADD}// {}\n", uuid::Uuid::new_v4());
    let started = Instant::now();
    let id = api
        .initialize("rust-adder", json!({"script_content": script, "context": {"compile_options": {"optimization_level": "debug"}}}))
        .await;
    let cold = started.elapsed();
    assert_eq!(
        api.execute(&id, json!({"a": 2, "b": 3})).await.body["result"],
        5
    );

    // Another replica with its own empty DATA_DIR: the artifact comes from the database.
    let second = TestService::start(binary(), options.clone())
        .await
        .expect("second replica");
    let other = Api::new(&second.base_url);
    let started = Instant::now();
    let id2 = other
        .initialize("rust-adder", json!({"script_content": script, "context": {"compile_options": {"optimization_level": "debug"}}}))
        .await;
    let cached = started.elapsed();
    eprintln!(
        "rust initialize: cold compile {cold:?}, cached artifact on another replica {cached:?}"
    );
    assert!(
        cached * 10 <= cold,
        "cached initialize {cached:?} is not 10x faster than the compile {cold:?}"
    );
    assert_eq!(
        other.execute(&id2, json!({"a": 4, "b": 3})).await.body["result"],
        7
    );

    // Restart the first replica: its session runs without compiling again.
    first.stop().await.expect("stop");
    let restarted = TestService::start(
        binary(),
        ServiceOptions {
            data_dir: Some(first.data_dir.clone()),
            ..options
        },
    )
    .await
    .expect("restart");
    let api = Api::new(&restarted.base_url);
    let started = Instant::now();
    let reply = api.execute(&id, json!({"a": 10, "b": 1})).await;
    let after_restart = started.elapsed();
    assert_eq!(reply.body["result"], 11, "{reply:?}");
    eprintln!("rust first execute after restart: {after_restart:?}");
    assert!(
        after_restart * 5 <= cold,
        "execute after restart took {after_restart:?}, like a compile ({cold:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webassembly_modules_run_fresh_and_contained() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let api = &harness.api;
    let id = api.initialize_script("wasm-echo", WAT_ECHO).await;
    let reply = api.execute(&id, json!({"a": 1})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["result"]["params"], json!({"a": 1}), "{reply:?}");
    assert_eq!(reply.body["result"]["language_title"], "wasm-echo");

    let cases = [
        ("loop", "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))", 504, "TIMEOUT"),
        ("grow", "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))", 507, "RESOURCE_LIMIT_EXCEEDED"),
        ("trap", "(module (memory (export \"memory\") 1) (func (export \"_start\") unreachable))", 460, "RUNTIME_ERROR"),
    ];
    for (name, wat, status, code) in cases {
        let id = api
            .initialize(
                &format!("wasm-{name}"),
                json!({"script_content": wat, "context": {"timeout_ms": 1000}}),
            )
            .await;
        let reply = api.execute(&id, json!({})).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{name}: {reply:?}"
        );
    }
    let reply = api
        .initialize_reply(
            "wasm-invalid",
            &json!({"script_content": "(module (func (export \"_start\") (i32.add)))"}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    let reply = api
        .initialize_reply(
            "wasm-garbage",
            &json!({"script_content": "bm90IGEgd2FzbSBtb2R1bGU="}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    // The service carries on.
    assert_eq!(
        api.execute(&id, json!({"b": 2})).await.body["result"]["params"],
        json!({"b": 2})
    );
    let started = Instant::now();
    for i in 0..50 {
        assert_eq!(api.execute(&id, json!({"i": i})).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A new module answers from Winch's code at first; the Cranelift code that
/// replaces it in the background, once the module has run for as long as
/// its first compile took, answers the same. The module is a busy one, so
/// that it gets there in a few executes even in a debug build, where
/// wasmtime's compile is slow and the guest's code is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_webassembly_module_moves_to_cranelift_code_in_the_background() {
    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let api = &harness.api;
    let id = api.initialize_script("wasm-tiers", &wat_busy_echo()).await;
    let reply = api.execute(&id, json!({"tier": 1})).await;
    assert_eq!(
        reply.body["result"]["params"],
        json!({"tier": 1}),
        "{reply:?}"
    );
    if !cfg!(target_arch = "x86_64") {
        // Winch is used on x86-64 only; elsewhere Cranelift compiles at once.
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for call in 0.. {
        let tier_ups = api
            .metrics_text()
            .await
            .lines()
            .find_map(|line| line.strip_prefix("lambda_runtime_wasm_tier_ups_total "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        if tier_ups.is_some_and(|count| count >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tier-up after 20 s: {tier_ups:?}"
        );
        // New params each time: the result cache would answer a repeat.
        let reply = api.execute(&id, json!({"tier": 1, "call": call})).await;
        assert_eq!(
            reply.body["result"]["params"],
            json!({"tier": 1, "call": call}),
            "{reply:?}"
        );
    }
    let reply = api.execute(&id, json!({"tier": 2})).await;
    assert_eq!(
        reply.body["result"]["params"],
        json!({"tier": 2}),
        "{reply:?}"
    );
}
