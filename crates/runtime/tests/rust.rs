//! The Rust runtime against the machine's real rustc, cargo and bubblewrap.
//!
//! Every test shares one data directory (under cargo's target tmp dir, not
//! /tmp, which the sandbox replaces): the prebuilt serde_json is built once
//! and compiled scripts are content-addressed, so sharing is safe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::config::RuntimeConfig;
use lambda_runtime::rust::{RustConfig, RustRuntime};
use lambda_runtime::wasm::{WasmConfig, WasmRuntime};
use lambda_runtime::{
    Language, LanguageRuntime, LimitKind, Limits, Output, RuntimeError, RuntimeStatus, Script,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const VALIDATOR: &str = include_str!("../../store/seeds/rust-data_validator.rs");

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rust-runtime-tests")
}

fn config() -> RustConfig {
    let runtime = RuntimeConfig {
        work_dir: data_dir().join("work"),
        ..RuntimeConfig::default()
    };
    RustConfig::new(runtime, data_dir())
}

fn runtime() -> Arc<RustRuntime> {
    RustRuntime::new(config(), Some(WasmRuntime::new(WasmConfig::default())))
}

fn script(source: &str, compile_options: Value) -> Script {
    // As core does: the hash covers the source and the options.
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update(compile_options.to_string().as_bytes());
    let hash = hex::encode(hasher.finalize());
    Script {
        language: Language::Rust,
        worker_key: format!("{hash}:tenant"),
        hash,
        source: source.into(),
        compile_options,
        artifact: None,
    }
}

fn debug(source: &str) -> Script {
    script(source, json!({"optimization_level": "debug"}))
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

fn event(params: Value) -> String {
    json!({"params": params, "context": {}, "request_id": "r-1", "language_title": "rust-test"})
        .to_string()
}

async fn prepare_and_run(
    runtime: &RustRuntime,
    script: &Script,
    params: Value,
) -> Result<Output, RuntimeError> {
    runtime.prepare(script).await?;
    runtime.execute(script, &event(params), &limits()).await
}

async fn run(source: &str, params: Value) -> Result<Output, RuntimeError> {
    prepare_and_run(&runtime(), &debug(source), params).await
}

fn result(outcome: Result<Output, RuntimeError>) -> Result<Value, String> {
    outcome
        .map(|output| output.result)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn the_seeded_data_validator_runs_unchanged() {
    let runtime = runtime();
    // No compile_options: release, as the seeded function is registered.
    let validator = script(VALIDATOR, Value::Null);
    let valid = prepare_and_run(
        &runtime,
        &validator,
        json!({"data": {"age": 25}, "rules": ["required", "numeric"]}),
    )
    .await;
    assert_eq!(result(valid), Ok(json!({"valid": true, "errors": []})));

    let invalid = runtime
        .execute(
            &validator,
            &event(json!({"data": {"age": "old", "name": 3}, "rules": ["numeric", "email"]})),
            &limits(),
        )
        .await;
    assert_eq!(
        result(invalid),
        Ok(json!({"valid": false, "errors": [
            "Field age must be numeric", "Unknown rule: email"
        ]}))
    );

    let empty = runtime
        .execute(
            &validator,
            &event(json!({"data": {}, "rules": ["required"]})),
            &limits(),
        )
        .await;
    assert_eq!(
        result(empty),
        Ok(json!({"valid": false, "errors": ["Data is required"]}))
    );

    let missing = runtime
        .execute(&validator, &event(json!({})), &limits())
        .await;
    assert!(
        matches!(&missing, Err(RuntimeError::Script { message, .. }) if message == "Missing data"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn all_three_handler_forms_work() {
    let value_form = r#"
use serde_json::{json, Value};
pub fn handler(event: Value) -> Result<Value, String> {
    let a = event["params"]["a"].as_i64().ok_or("a is missing")?;
    let b = event["params"]["b"].as_i64().ok_or("b is missing")?;
    Ok(json!({"sum": a + b}))
}
"#;
    assert_eq!(
        result(run(value_form, json!({"a": 2, "b": 40})).await),
        Ok(json!({"sum": 42}))
    );

    let text_form = r#"
pub fn handle(event: &str) -> Result<String, String> {
    let event: serde_json::Value = serde_json::from_str(event).map_err(|e| e.to_string())?;
    Ok(format!("{{\"echo\": {}}}", event["params"]))
}
"#;
    assert_eq!(
        result(run(text_form, json!({"x": [1, 2]})).await),
        Ok(json!({"echo": {"x": [1, 2]}}))
    );
}

#[tokio::test]
async fn printed_lines_are_logs() {
    let source = r#"
use serde_json::{Map, Value};
pub fn handler(context: Map<String, Value>) -> Result<Value, String> {
    println!("starting");
    eprintln!("a warning");
    Ok(Value::from(context.len()))
}
"#;
    let output = run(source, json!({})).await.map_err(|e| format!("{e:?}"));
    assert_eq!(
        output,
        Ok(Output {
            result: json!(4),
            logs: vec!["starting".to_string(), "a warning".to_string()],
        })
    );
}

/// One worker, several requests: each gets exactly its own lines, also
/// after a request that printed nothing.
#[tokio::test]
async fn logs_belong_to_the_request_that_printed_them() {
    let source = r#"
use serde_json::Value;
pub fn handler(event: Value) -> Result<Value, String> {
    if let Some(line) = event["params"]["say"].as_str() {
        println!("{line}");
    }
    Ok(Value::Null)
}
"#;
    let runtime = runtime();
    let script = debug(source);
    runtime.prepare(&script).await.expect("prepare");
    for (say, expected) in [
        (json!("first"), vec!["first"]),
        (Value::Null, vec![]),
        (json!("second"), vec!["second"]),
        (json!("x"), vec!["x"]),
    ] {
        let output = runtime
            .execute(&script, &event(json!({ "say": say })), &limits())
            .await
            .map_err(|e| format!("{e:?}"));
        assert_eq!(
            output.map(|o| o.logs),
            Ok(expected.iter().map(|l| l.to_string()).collect())
        );
    }
}

#[tokio::test]
async fn err_is_a_script_error_and_a_panic_names_its_message_and_line() {
    let source = r#"use serde_json::Value;

pub fn handler(event: Value) -> Result<Value, String> {
    match event["params"]["mode"].as_str() {
        Some("err") => Err("bad input".to_string()),
        Some("panic") => {
            let items: Vec<u32> = Vec::new();
            Ok(Value::from(items[7]))
        }
        _ => Ok(Value::from("fine")),
    }
}
"#;
    let runtime = runtime();
    let script = debug(source);
    let failed = prepare_and_run(&runtime, &script, json!({"mode": "err"})).await;
    assert!(
        matches!(&failed, Err(RuntimeError::Script { message, .. }) if message == "bad input"),
        "{failed:?}"
    );
    let panicked = runtime
        .execute(&script, &event(json!({"mode": "panic"})), &limits())
        .await;
    let Err(RuntimeError::Script {
        message, location, ..
    }) = panicked
    else {
        panic!("{panicked:?}");
    };
    assert!(message.contains("index out of bounds"), "{message}");
    assert_eq!(location.line, Some(8), "{message}");
    // The worker survives a caught panic.
    let fine = runtime.execute(&script, &event(json!({})), &limits()).await;
    assert_eq!(result(fine), Ok(json!("fine")));
}

#[tokio::test]
async fn compiler_errors_point_into_the_script() {
    let source = "use serde_json::Value;\n\npub fn handler(event: Value) -> Result<Value, String> {\n    let x: u32 = \"text\";\n    Ok(event)\n}\n";
    let outcome = runtime().prepare(&debug(source)).await;
    let Err(RuntimeError::Initialization { message, location }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("mismatched types"), "{message}");
    assert_eq!(location.line, Some(4), "{message}");
    assert_eq!(location.column, Some(18), "{message}");
}

#[tokio::test]
async fn a_wrong_signature_or_no_handler_is_an_initialization_error() {
    let runtime = runtime();
    let wrong = runtime
        .prepare(&debug("pub fn handler(n: u32) -> u32 { n }\n"))
        .await;
    assert!(
        matches!(&wrong, Err(RuntimeError::Initialization { message, location })
            if message.contains("signature") && location.line == Some(1)),
        "{wrong:?}"
    );
    let missing = runtime.prepare(&debug("pub fn main() {}\n")).await;
    assert!(
        matches!(&missing, Err(RuntimeError::Initialization { message, .. }) if message.contains("no handler")),
        "{missing:?}"
    );
}

#[tokio::test]
async fn the_compiler_cannot_read_host_files() {
    let source = r#"
use serde_json::Value;
const SECRET: &str = include_str!("/etc/passwd");
pub fn handler(_event: Value) -> Result<Value, String> { Ok(Value::from(SECRET)) }
"#;
    let outcome = runtime().prepare(&debug(source)).await;
    let Err(RuntimeError::Initialization { message, location }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("/etc/passwd"), "{message}");
    assert_eq!(location.line, Some(3), "{message}");
}

#[tokio::test]
async fn the_worker_shows_no_host_path_of_the_data_dir() {
    let source = r#"
use serde_json::{json, Value};
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| e.to_string())
}
pub fn handler(_event: Value) -> Result<Value, String> {
    let list = |path: &str| -> Vec<String> {
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| e.path().display().to_string()).collect())
            .unwrap_or_default()
    };
    Ok(json!({
        "exe": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "args": std::env::args().collect::<Vec<_>>(),
        "root": list("/"),
        "opt": list("/opt/lambda/worker"),
        "mountinfo": read("/proc/self/mountinfo"),
        "bwrap_cmdline": read("/proc/1/cmdline"),
    }))
}
"#;
    let out = run(source, json!({})).await.unwrap();
    let text = out.result.to_string();
    let data_dir = data_dir().display().to_string();
    assert!(!text.contains(&data_dir), "{data_dir} is visible: {text}");
    assert!(!text.contains("rust-runtime-tests"), "{text}");
    // bwrap unlinks its copy once mounted, so the kernel adds "(deleted)".
    assert!(
        out.result["exe"]
            .as_str()
            .is_some_and(|exe| exe.starts_with("/opt/lambda/worker/handler")),
        "{}",
        out.result["exe"]
    );
}

#[tokio::test]
async fn a_compile_that_never_ends_is_stopped() {
    // Endless const evaluation keeps rustc busy for ever (the lint that
    // would stop it is capped like every other lint).
    let nonce = format!("{:?}", Instant::now());
    let source = format!(
        "// {nonce}\nconst SPIN: u64 = {{ let mut i = 0u64; loop {{ i = i.wrapping_add(1); }} }};\npub fn handler(_v: serde_json::Value) -> Result<serde_json::Value, String> {{ Ok(SPIN.into()) }}\n"
    );
    let mut quick = config();
    quick.compile_timeout = Duration::from_secs(3);
    let runtime = RustRuntime::new(quick, None);
    let started = Instant::now();
    let outcome = runtime.prepare(&debug(&source)).await;
    assert!(
        matches!(&outcome, Err(RuntimeError::Initialization { message, .. }) if message.contains("longer than 3 s")),
        "{outcome:?}"
    );
    // Includes the one-time serde_json build when this test runs first.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn optimization_levels_are_honoured_and_validated() {
    let runtime = runtime();
    let source =
        "pub fn handler(v: serde_json::Value) -> Result<serde_json::Value, String> { Ok(v) }\n";
    let release = script(source, json!({"optimization_level": "release"}));
    let debug_build = debug(source);
    let (release_path, debug_path) = (
        runtime.artifact_path(&release),
        runtime.artifact_path(&debug_build),
    );
    assert!(release_path.is_some() && release_path != debug_path);
    let bogus = runtime
        .prepare(&script(source, json!({"optimization_level": "fastest"})))
        .await;
    assert!(
        matches!(&bogus, Err(RuntimeError::Initialization { message, .. }) if message.contains("optimization_level")),
        "{bogus:?}"
    );
    let other_target = runtime
        .prepare(&script(source, json!({"target": "aarch64-apple-darwin"})))
        .await;
    assert!(
        matches!(&other_target, Err(RuntimeError::Initialization { message, .. }) if message.contains("not supported")),
        "{other_target:?}"
    );
}

#[tokio::test]
async fn the_wasm_target_runs_through_the_wasm_runtime_or_says_it_is_missing() {
    let runtime = runtime();
    let validator = script(
        VALIDATOR,
        json!({"target": "wasm32-wasip1", "optimization_level": "debug"}),
    );
    let prepared = runtime.prepare(&validator).await;
    let installed = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/wasm32-wasip1/lib").is_dir());
    if !installed {
        assert!(
            matches!(&prepared, Err(RuntimeError::Initialization { message, .. })
                if message.contains("wasm32-wasip1") && message.contains("not installed")),
            "{prepared:?}"
        );
        return;
    }
    assert!(prepared.is_ok(), "{prepared:?}");
    let output = runtime
        .execute(
            &validator,
            &event(json!({"data": {"age": 25}, "rules": ["required", "numeric"]})),
            &limits(),
        )
        .await;
    assert_eq!(result(output), Ok(json!({"valid": true, "errors": []})));
}

#[tokio::test]
async fn a_stored_artifact_skips_compiling_even_after_a_restart() {
    // A source no earlier run has compiled, so the first prepare is cold.
    let nonce = format!("{:?}", Instant::now());
    let source = format!(
        "// {nonce}\nuse serde_json::{{json, Value}};\npub fn handler(event: Value) -> Result<Value, String> {{\n    Ok(json!({{\"got\": event[\"params\"]}}))\n}}\n"
    );
    let first = runtime();
    // Build serde_json (a one-time cost) before timing the compile.
    let warm = first
        .prepare(&debug(
            "pub fn handler(v: serde_json::Value) -> Result<serde_json::Value, String> { Ok(v) }\n",
        ))
        .await;
    assert!(warm.is_ok(), "{warm:?}");

    let mut fresh = script(&source, Value::Null);
    let started = Instant::now();
    let prepared = first.prepare(&fresh).await.map_err(|e| format!("{e:?}"));
    let cold = started.elapsed();
    let Ok(prepared) = prepared else {
        panic!("{prepared:?}");
    };
    let Some(artifact) = prepared.artifact else {
        panic!("a fresh compile must hand its binary to core");
    };

    // "Restart" (or another replica): a new runtime whose disk cache lacks
    // the binary, given the artifact core stored.
    first.shutdown().await;
    let path = first.artifact_path(&fresh);
    if let Some(path) = &path {
        let _ = std::fs::remove_file(path);
    }
    let second = runtime();
    fresh.artifact = Some(Arc::new(artifact));
    let started = Instant::now();
    let again = second.prepare(&fresh).await.map_err(|e| format!("{e:?}"));
    let cached = started.elapsed();
    assert!(matches!(&again, Ok(p) if p.artifact.is_none()), "{again:?}");
    println!("rust prepare: cold compile {cold:?}, with stored artifact {cached:?}");
    assert!(
        cold >= cached * 10,
        "cold {cold:?} vs with artifact {cached:?}"
    );
    let output = second
        .execute(&fresh, &event(json!({"n": 1})), &limits())
        .await;
    assert_eq!(result(output), Ok(json!({"got": {"n": 1}})));
}

#[tokio::test]
async fn execute_after_a_restart_without_prepare_uses_the_artifact() {
    let source = "pub fn handler(v: serde_json::Value) -> Result<serde_json::Value, String> { Ok(v[\"params\"].clone()) }\n";
    let first = runtime();
    let mut stored = debug(source);
    let prepared = first.prepare(&stored).await.map_err(|e| format!("{e:?}"));
    let artifact = match prepared {
        Ok(prepared) => prepared.artifact,
        Err(error) => panic!("{error}"),
    };
    assert!(artifact.is_some(), "prepare must hand core the binary");
    stored.artifact = artifact.map(Arc::new);
    let second = runtime();
    let output = second.execute(&stored, &event(json!([5])), &limits()).await;
    assert_eq!(result(output), Ok(json!([5])));
}

// --- hostile scripts -----------------------------------------------------

const HOSTILE: &str = r#"
use serde_json::{json, Value};
use std::io::Read;

pub fn handler(event: Value) -> Result<Value, String> {
    match event["params"]["attack"].as_str().unwrap_or("") {
        "read" => {
            let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
            let home = std::fs::read_dir("/root").map(|d| d.count()).map_err(|e| e.to_string());
            Ok(json!({"passwd": passwd.is_ok(), "home": home.is_ok()}))
        }
        "network" => {
            let addr = "1.1.1.1:53".parse().map_err(|e: std::net::AddrParseError| e.to_string())?;
            let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2));
            Ok(json!({"connected": tcp.is_ok()}))
        }
        "spawn" => {
            let output = std::process::Command::new("/bin/sh")
                .args(["-c", "cat /etc/passwd; ls /root /work"])
                .output();
            match output {
                Ok(out) => Ok(json!({"spawned": true, "status": out.status.code(),
                                     "stdout": String::from_utf8_lossy(&out.stdout)})),
                Err(e) => Ok(json!({"spawned": false, "error": e.to_string()})),
            }
        }
        "loop" => loop { std::hint::black_box(0); },
        "allocate" => {
            let mut blocks = Vec::new();
            loop {
                let mut block = vec![1u8; 64 * 1024 * 1024];
                block[0] = 2;
                blocks.push(block);
            }
        }
        "exit" => std::process::exit(3),
        "stdin" => {
            let mut text = String::new();
            let _ = std::io::stdin().read_to_string(&mut text);
            Ok(json!({"stdin": text}))
        }
        _ => Ok(json!("ok")),
    }
}
"#;

async fn attack(
    runtime: &RustRuntime,
    script: &Script,
    name: &str,
) -> Result<Output, RuntimeError> {
    let limits = Limits {
        timeout: Duration::from_secs(3),
        memory_bytes: 128 * 1024 * 1024,
        ..Limits::default()
    };
    runtime
        .execute(script, &event(json!({"attack": name})), &limits)
        .await
}

#[tokio::test]
async fn hostile_rust_is_contained() {
    let runtime = runtime();
    let script = debug(HOSTILE);
    let prepared = runtime.prepare(&script).await;
    assert!(prepared.is_ok(), "{prepared:?}");

    let read = attack(&runtime, &script, "read").await;
    assert_eq!(result(read), Ok(json!({"passwd": false, "home": false})));

    let network = attack(&runtime, &script, "network").await;
    assert_eq!(result(network), Ok(json!({"connected": false})));

    // A child process is possible but sees the same empty sandbox.
    let spawn = attack(&runtime, &script, "spawn").await;
    let Ok(Output {
        result: spawned, ..
    }) = spawn
    else {
        panic!("{spawn:?}");
    };
    assert_ne!(spawned["status"], json!(0), "{spawned}");
    assert!(
        !spawned["stdout"].as_str().unwrap_or("").contains("root:"),
        "{spawned}"
    );

    let stdin = attack(&runtime, &script, "stdin").await;
    assert_eq!(result(stdin), Ok(json!({"stdin": ""})));

    let started = Instant::now();
    let looped = attack(&runtime, &script, "loop").await;
    assert!(
        matches!(looped, Err(RuntimeError::Timeout { .. })),
        "{looped:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    let allocated = attack(&runtime, &script, "allocate").await;
    assert!(
        matches!(
            allocated,
            Err(RuntimeError::ResourceLimit {
                kind: LimitKind::Memory,
                ..
            })
        ),
        "{allocated:?}"
    );

    let exited = attack(&runtime, &script, "exit").await;
    assert!(
        matches!(&exited, Err(RuntimeError::Script { message, .. }) if message.contains("status 3")),
        "{exited:?}"
    );

    // Each of those killed its worker; the script still runs.
    let fine = attack(&runtime, &script, "none").await;
    assert_eq!(result(fine), Ok(json!("ok")));
}

#[tokio::test]
async fn status_explains_a_missing_compiler() {
    assert_eq!(runtime().status(), RuntimeStatus::Ready);
    let mut broken = config();
    broken.rustc_path = PathBuf::from("/nonexistent/rustc");
    let runtime = RustRuntime::new(broken, None);
    let RuntimeStatus::Unavailable { reason } = runtime.status() else {
        panic!("a missing rustc must make rust unavailable");
    };
    assert!(reason.contains("rustc"), "{reason}");
    let outcome = runtime.prepare(&debug(VALIDATOR)).await;
    assert!(
        matches!(outcome, Err(RuntimeError::Unavailable { .. })),
        "{outcome:?}"
    );
}

/// Warm execute cost of a native Rust worker (the frame round trip).
#[tokio::test]
async fn warm_execute_loop() {
    let runtime = runtime();
    let validator = script(VALIDATOR, Value::Null);
    let params = json!({"data": {"age": 25}, "rules": ["required", "numeric"]});
    let first = prepare_and_run(&runtime, &validator, params.clone()).await;
    assert!(first.is_ok(), "{first:?}");
    let event = event(params);
    let n_executes: u32 = 2000;
    let started = Instant::now();
    for _ in 0..n_executes {
        let output = runtime.execute(&validator, &event, &limits()).await;
        assert!(output.is_ok(), "{output:?}");
    }
    println!(
        "rust warm execute: {} µs per execute over {n_executes}",
        (started.elapsed() / n_executes).as_micros()
    );
}

/// Initialize answers once a worker holding the script is running, so the
/// first execute needs no process start (and no compile).
#[tokio::test]
async fn prepare_leaves_a_loaded_worker_and_reports_the_local_binary() {
    use lambda_runtime::pool::WorkerState;
    let nonce = format!("{:?}", Instant::now());
    let source = format!(
        "// {nonce}\npub fn handler(v: serde_json::Value) -> Result<serde_json::Value, String> {{ Ok(v[\"params\"].clone()) }}\n"
    );
    let runtime = runtime();
    let mut fresh = debug(&source);
    assert!(
        !runtime.has_local_artifact(&fresh),
        "nothing compiled this source yet"
    );
    let prepared = runtime.prepare(&fresh).await.map_err(|e| format!("{e:?}"));
    let Ok(prepared) = prepared else {
        panic!("{prepared:?}");
    };
    assert!(runtime.has_local_artifact(&fresh), "the binary is on disk");
    let pool = runtime.pool().expect("rust runs here");
    let warm: Vec<_> = pool
        .workers()
        .into_iter()
        .filter(|w| w.worker_key.as_deref() == Some(fresh.worker_key.as_str()))
        .collect();
    assert!(
        warm.len() == 1 && warm[0].state == WorkerState::Idle,
        "prepare returned before its worker was ready: {warm:?}"
    );
    let pid = warm[0].pid;
    let output = runtime.execute(&fresh, &event(json!([7])), &limits()).await;
    assert_eq!(result(output), Ok(json!([7])));
    assert_eq!(
        pool.worker_pids(&fresh.worker_key),
        vec![pid],
        "the first execute ran on the worker prepare started"
    );

    // Another replica (or a restart) with the stored artifact: prepare
    // writes it and starts the worker, still quickly.
    runtime.shutdown().await;
    let path = runtime.artifact_path(&fresh).expect("rust runs here");
    std::fs::remove_file(&path).expect("the binary was on disk");
    let second = self::runtime();
    assert!(!second.has_local_artifact(&fresh), "the binary was removed");
    fresh.artifact = prepared.artifact.map(Arc::new);
    let started = Instant::now();
    let again = second.prepare(&fresh).await;
    let elapsed = started.elapsed();
    assert!(again.is_ok(), "{again:?}");
    assert!(second.has_local_artifact(&fresh));
    println!("rust prepare with a stored artifact (worker started): {elapsed:?}");
    let output = second.execute(&fresh, &event(json!([8])), &limits()).await;
    assert_eq!(result(output), Ok(json!([8])));
    second.shutdown().await;
}
