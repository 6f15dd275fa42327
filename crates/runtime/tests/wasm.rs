//! The WebAssembly runtime against real wasmtime, with modules written in
//! WAT right here (no binaries are committed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lambda_runtime::wasm::{self, WasmConfig};
use lambda_runtime::{
    Language, LanguageRuntime, LimitKind, Limits, Output, RuntimeError, RuntimeStatus, Script,
};
use serde_json::{json, Value};

fn runtime() -> Arc<dyn LanguageRuntime> {
    wasm::runtime(WasmConfig {
        max_instances: 8,
        max_memory_bytes: 256 * 1024 * 1024,
        ..WasmConfig::default()
    })
}

fn script(source: &str) -> Script {
    // Distinct sources get distinct cache keys, like core's real hash.
    let hash = format!("{:x}", fnv(source.as_bytes()));
    Script {
        language: Language::Wasm,
        worker_key: format!("tenant-{hash}"),
        hash,
        source: source.into(),
        compile_options: Value::Null,
        artifact: None,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    }
}

async fn run(source: &str, event: Value) -> Result<Output, RuntimeError> {
    run_with(source, event, &limits()).await
}

async fn run_with(source: &str, event: Value, limits: &Limits) -> Result<Output, RuntimeError> {
    let runtime = runtime();
    let script = script(source);
    runtime.prepare(&script).await?;
    runtime.execute(&script, &event.to_string(), limits).await
}

/// WASI imports and a `$write(fd, ptr, len)` helper shared by the modules
/// below. Memory: iovec at 0, count at 8, scratch data from 16, stdin
/// buffer from 4096.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Reads all of stdin to 4096.. and returns its length.
  (func $read_stdin (result i32) (local $total i32) (local $n i32)
    (block $done
      (loop $more
        (i32.store (i32.const 0) (i32.add (i32.const 4096) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 126976) (local.get $total)))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $more)))
    (local.get $total))
"#;

fn module(body: &str) -> String {
    format!("(module {PRELUDE} {body})")
}

fn echo() -> String {
    module(
        r#"(func (export "_start") (call $write (i32.const 1) (i32.const 4096) (call $read_stdin)))"#,
    )
}

#[tokio::test]
async fn echo_returns_the_event() {
    let event = json!({"params": {"a": 1, "b": [true, null, "x"]}, "request_id": "r-1"});
    let output = run(&echo(), event.clone()).await.map_err(|e| e.to_string());
    assert_eq!(output.map(|o| o.result), Ok(event));
}

#[tokio::test]
async fn wraps_the_event_in_a_computed_object() {
    let source = module(
        r#"(data (i32.const 16) "{\"ok\":true,\"event\":")
           (data (i32.const 48) "}")
           (func (export "_start") (local $n i32)
             (local.set $n (call $read_stdin))
             (call $write (i32.const 1) (i32.const 16) (i32.const 19))
             (call $write (i32.const 1) (i32.const 4096) (local.get $n))
             (call $write (i32.const 1) (i32.const 48) (i32.const 1)))"#,
    );
    let output = run(&source, json!({"params": {"x": 2}}))
        .await
        .map_err(|e| e.to_string());
    assert_eq!(
        output.map(|o| o.result),
        Ok(json!({"ok": true, "event": {"params": {"x": 2}}}))
    );
}

#[tokio::test]
async fn stderr_lines_are_logs_and_never_the_result() {
    let source = module(
        r#"(data (i32.const 16) "first log line\nsecond\n")
           (data (i32.const 64) "\"done\"")
           (func (export "_start")
             (call $write (i32.const 2) (i32.const 16) (i32.const 22))
             (call $write (i32.const 1) (i32.const 64) (i32.const 6)))"#,
    );
    let output = run(&source, json!({})).await.map_err(|e| e.to_string());
    assert_eq!(
        output,
        Ok(Output {
            result: json!("done"),
            logs: vec!["first log line".to_string(), "second".to_string()],
        })
    );
}

#[tokio::test]
async fn logs_are_bounded() {
    let source = module(
        r#"(data (i32.const 16) "0123456789\n")
           (data (i32.const 64) "1")
           (func (export "_start") (local $i i32)
             (loop $more
               (call $write (i32.const 2) (i32.const 16) (i32.const 11))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.lt_u (local.get $i) (i32.const 1000))))
             (call $write (i32.const 1) (i32.const 64) (i32.const 1)))"#,
    );
    let limits = Limits {
        max_log_bytes: 100,
        ..limits()
    };
    let output = run_with(&source, json!({}), &limits)
        .await
        .map_err(|e| e.to_string());
    let Ok(output) = output else {
        panic!("{output:?}");
    };
    assert_eq!(output.result, json!(1));
    let n_log_bytes: usize = output
        .logs
        .iter()
        .take(output.logs.len() - 1)
        .map(String::len)
        .sum();
    assert!(n_log_bytes <= 100, "{:?}", output.logs);
    assert_eq!(
        output.logs.last().map(String::as_str),
        Some("[logs truncated at 100 bytes]")
    );
}

#[tokio::test]
async fn base64_binary_modules_run() {
    let binary = wat::parse_str(echo()).map_err(|e| e.to_string());
    let Ok(binary) = binary else {
        panic!("{binary:?}");
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
    let output = run(&encoded, json!({"k": "v"}))
        .await
        .map_err(|e| e.to_string());
    assert_eq!(output.map(|o| o.result), Ok(json!({"k": "v"})));
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let source = module(r#"(func (export "_start") (loop $forever (br $forever)))"#);
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = Instant::now();
    let outcome = run_with(&source, json!({}), &limits).await;
    assert!(
        matches!(outcome, Err(RuntimeError::Timeout { timeout_ms: 300 })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Initialize instantiates a new module once (so its first execute finds a
/// warm pool slot), which runs a `start` function: one that never ends
/// must cost initialize a bounded moment, and its executes time out.
#[tokio::test]
async fn a_start_function_that_never_ends_holds_up_neither_initialize_nor_the_service() {
    let source = module(
        r#"(func $spin (loop $forever (br $forever)))
           (start $spin)
           (func (export "_start"))"#,
    );
    let runtime = runtime();
    let script = script(&source);
    let started = Instant::now();
    let prepared = runtime.prepare(&script).await.map_err(|e| e.to_string());
    assert!(prepared.is_ok(), "{prepared:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "initialize took {:?}",
        started.elapsed()
    );
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let outcome = runtime.execute(&script, "{}", &limits).await;
    assert!(
        matches!(outcome, Err(RuntimeError::Timeout { timeout_ms: 300 })),
        "{outcome:?}"
    );
}

/// Short executes run their first slice on the calling task; a CPU-bound
/// guest must still leave the (here single-threaded) reactor free after
/// one epoch tick rather than hold it until its timeout.
#[tokio::test]
async fn a_spinning_guest_does_not_hold_the_reactor() {
    let source = module(r#"(func (export "_start") (loop $spin (br $spin)))"#);
    let runtime = runtime();
    let script = script(&source);
    runtime.prepare(&script).await.unwrap();
    let limits = Limits {
        timeout: Duration::from_secs(2),
        ..limits()
    };
    let spinning = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.execute(&script, "{}", &limits).await })
    };
    // Let the guest start on this very thread.
    tokio::task::yield_now().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let woke_after = started.elapsed();
    assert!(
        woke_after < Duration::from_millis(500),
        "a 20 ms timer fired after {woke_after:?}: the guest held the reactor"
    );
    let outcome = spinning.await.unwrap();
    assert!(
        matches!(outcome, Err(RuntimeError::Timeout { timeout_ms: 2000 })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_guest_sleeping_in_a_host_call_times_out_too() {
    // poll_oneoff on one relative clock subscription of an hour: epochs
    // cannot interrupt a host call, dropping the call's future does.
    // Subscription at 64 (48 bytes): userdata u64, tag u8 = 0 (clock),
    // clock id u32 at +16 = 1 (monotonic), timeout u64 at +24, precision
    // u64 at +32, flags u16 at +40 = 0 (relative).
    let imports = r#"(import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;
    let body = r#"(func (export "_start")
        (i32.store (i32.const 80) (i32.const 1))
        (i64.store (i32.const 88) (i64.const 3600000000000))
        (drop (call $poll_oneoff (i32.const 64) (i32.const 256) (i32.const 1) (i32.const 512))))"#;
    let source = format!("(module {imports} {PRELUDE} {body})");
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = Instant::now();
    let outcome = run_with(&source, json!({}), &limits).await;
    assert!(
        matches!(outcome, Err(RuntimeError::Timeout { timeout_ms: 300 })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unbounded_memory_growth_is_a_resource_limit() {
    let source = module(
        r#"(func (export "_start")
             (loop $grow
               (drop (memory.grow (i32.const 16)))
               (br $grow)))"#,
    );
    let outcome = run(&source, json!({})).await;
    assert!(
        matches!(
            outcome,
            Err(RuntimeError::ResourceLimit {
                kind: LimitKind::Memory,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_initial_memory_over_the_limit_is_a_resource_limit() {
    // 2048 pages = 128 MiB, over the 64 MiB limit before any code runs.
    let source = r#"(module (memory 2048) (func (export "_start")))"#;
    let outcome = run(source, json!({})).await;
    assert!(
        matches!(
            outcome,
            Err(RuntimeError::ResourceLimit {
                kind: LimitKind::Memory,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn unreachable_is_a_script_error_naming_the_trap() {
    let source = module(r#"(func (export "_start") unreachable)"#);
    let outcome = run(&source, json!({})).await;
    let Err(RuntimeError::Script { message, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("unreachable"), "{message}");
}

#[tokio::test]
async fn runaway_recursion_is_a_script_error() {
    let source = module(r#"(func $down (export "_start") (call $down))"#);
    let outcome = run(&source, json!({})).await;
    let Err(RuntimeError::Script { message, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("call stack exhausted"), "{message}");
}

#[tokio::test]
async fn a_non_zero_exit_is_a_script_error_naming_the_code() {
    let source = module(
        r#"(data (i32.const 16) "about to fail\n")
           (func (export "_start")
             (call $write (i32.const 2) (i32.const 16) (i32.const 14))
             (call $proc_exit (i32.const 3)))"#,
    );
    let outcome = run(&source, json!({})).await;
    let Err(RuntimeError::Script { message, logs, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(message, "the module exited with code 3");
    assert_eq!(logs, vec!["about to fail".to_string()]);
}

#[tokio::test]
async fn exit_zero_after_writing_the_result_succeeds() {
    let source = module(
        r#"(data (i32.const 16) "[1,2]")
           (func (export "_start")
             (call $write (i32.const 1) (i32.const 16) (i32.const 5))
             (call $proc_exit (i32.const 0)))"#,
    );
    let output = run(&source, json!({})).await.map_err(|e| e.to_string());
    assert_eq!(output.map(|o| o.result), Ok(json!([1, 2])));
}

#[tokio::test]
async fn stdout_that_is_not_json_is_a_script_error() {
    let source = module(
        r#"(data (i32.const 16) "hello")
           (func (export "_start") (call $write (i32.const 1) (i32.const 16) (i32.const 5)))"#,
    );
    let outcome = run(&source, json!({})).await;
    let Err(RuntimeError::Script { message, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("not valid JSON"), "{message}");
}

#[tokio::test]
async fn empty_stdout_is_a_script_error() {
    let source = module(r#"(func (export "_start"))"#);
    let outcome = run(&source, json!({})).await;
    let Err(RuntimeError::Script { message, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("wrote nothing to stdout"), "{message}");
}

#[tokio::test]
async fn a_result_over_the_size_limit_is_a_resource_limit() {
    let limits = Limits {
        max_result_bytes: 10,
        ..limits()
    };
    let outcome = run_with(&echo(), json!({"text": "far more than ten bytes"}), &limits).await;
    assert!(
        matches!(
            outcome,
            Err(RuntimeError::ResourceLimit {
                kind: LimitKind::ResultSize,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn every_execute_gets_a_fresh_instance() {
    // The global and the memory byte would count up if state leaked.
    let source = module(
        r#"(global $runs (mut i32) (i32.const 0))
           (func (export "_start")
             (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
             (i32.store8 (i32.const 17) (i32.add (i32.load8_u (i32.const 17)) (i32.const 1)))
             (i32.store8 (i32.const 16) (i32.add (i32.const 48) (global.get $runs)))
             (i32.store8 (i32.const 18) (i32.add (i32.const 48) (i32.load8_u (i32.const 17))))
             (i32.store8 (i32.const 17) (i32.const 44))
             (call $write (i32.const 1) (i32.const 15) (i32.const 5))
             (i32.store8 (i32.const 17) (i32.const 1)))
           (data (i32.const 15) "[")
           (data (i32.const 19) "]")"#,
    );
    let runtime = runtime();
    let script = script(&source);
    let prepared = runtime.prepare(&script).await.map_err(|e| e.to_string());
    assert!(prepared.is_ok(), "{prepared:?}");
    for _ in 0..5 {
        let output = runtime
            .execute(&script, "{}", &limits())
            .await
            .map_err(|e| e.to_string());
        assert_eq!(output.map(|o| o.result), Ok(json!([1, 1])));
    }
}

#[tokio::test]
async fn memory_is_fresh_past_the_part_kept_resident_too() {
    // Teardown zeroes the first MiB with memset and decommits the rest:
    // both parts, including pages the guest grew, start at zero again.
    let source = module(
        r#"(func (export "_start")
             (drop (memory.grow (i32.const 62)))
             (i32.store8 (i32.const 3145728) (i32.add (i32.load8_u (i32.const 3145728)) (i32.const 1)))
             (i32.store8 (i32.const 100000) (i32.add (i32.load8_u (i32.const 100000)) (i32.const 1)))
             (i32.store8 (i32.const 16) (i32.add (i32.const 48) (i32.load8_u (i32.const 3145728))))
             (i32.store8 (i32.const 18) (i32.add (i32.const 48) (i32.load8_u (i32.const 100000))))
             (call $write (i32.const 1) (i32.const 15) (i32.const 5)))
           (data (i32.const 15) "[0,0]")"#,
    );
    let runtime = runtime();
    let script = script(&source);
    let prepared = runtime.prepare(&script).await.map_err(|e| e.to_string());
    assert!(prepared.is_ok(), "{prepared:?}");
    for _ in 0..20 {
        let output = runtime
            .execute(&script, "{}", &limits())
            .await
            .map_err(|e| e.to_string());
        assert_eq!(output.map(|o| o.result), Ok(json!([1, 1])));
    }
}

#[tokio::test]
async fn the_guest_sees_no_files_no_environment_and_one_argument() {
    // path_open on fd 3 (there are no preopens) must fail; environ and args
    // counts are written as digits.
    let imports = r#"(import "wasi_snapshot_preview1" "path_open"
             (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_sizes_get"
             (func $environ_sizes_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "args_sizes_get"
             (func $args_sizes_get (param i32 i32) (result i32)))"#;
    let body = r#"(data (i32.const 100) "etc/passwd")
           (data (i32.const 16) "[0,0,0]")
           (func (export "_start")
             (i32.store8 (i32.const 17)
               (select (i32.const 49) (i32.const 48)
                 (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 10)
                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))))
             (drop (call $environ_sizes_get (i32.const 300) (i32.const 304)))
             (i32.store8 (i32.const 19) (i32.add (i32.const 48) (i32.load (i32.const 300))))
             (drop (call $args_sizes_get (i32.const 300) (i32.const 304)))
             (i32.store8 (i32.const 21) (i32.add (i32.const 48) (i32.load (i32.const 300))))
             (call $write (i32.const 1) (i32.const 16) (i32.const 7)))"#;
    // Imports must precede the prelude's functions.
    let source = format!("(module {imports} {PRELUDE} {body})");
    let output = run(&source, json!({})).await.map_err(|e| e.to_string());
    // [path_open failed, 0 environment variables, 1 argument]
    assert_eq!(output.map(|o| o.result), Ok(json!([1, 0, 1])));
}

#[tokio::test]
async fn invalid_wat_is_an_initialization_error_with_a_position() {
    let outcome = runtime()
        .prepare(&script(
            "(module\n  (func (export \"_start\")\n    (i32.bogus)))",
        ))
        .await;
    let Err(RuntimeError::Initialization { message, location }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("invalid WAT"), "{message}");
    assert_eq!(location.line, Some(3), "{message}");
    assert_eq!(location.column, Some(6), "{message}");
}

#[tokio::test]
async fn a_module_that_does_not_validate_is_an_initialization_error() {
    let outcome = runtime()
        .prepare(&script(r#"(module (func (export "_start") (result i32)))"#))
        .await;
    let Err(RuntimeError::Initialization { message, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("invalid wasm module"), "{message}");
}

#[tokio::test]
async fn a_module_without_start_or_with_foreign_imports_is_refused() {
    let runtime = runtime();
    let no_start = runtime
        .prepare(&script(r#"(module (func (export "main")))"#))
        .await;
    assert!(
        matches!(&no_start, Err(RuntimeError::Initialization { message, .. }) if message.contains("_start")),
        "{no_start:?}"
    );
    let foreign = runtime
        .prepare(&script(
            r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#,
        ))
        .await;
    assert!(
        matches!(&foreign, Err(RuntimeError::Initialization { message, .. }) if message.contains("open_socket")),
        "{foreign:?}"
    );
}

#[tokio::test]
async fn garbage_is_neither_wat_nor_base64() {
    let outcome = runtime().prepare(&script("this is not a module!")).await;
    assert!(
        matches!(&outcome, Err(RuntimeError::Initialization { message, .. }) if message.contains("neither WAT")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn execute_without_prepare_compiles_from_the_script() {
    // What happens after a restart: core executes an existing session.
    let runtime = runtime();
    let output = runtime
        .execute(&script(&echo()), "[3]", &limits())
        .await
        .map_err(|e| e.to_string());
    assert_eq!(output.map(|o| o.result), Ok(json!([3])));
}

#[tokio::test]
async fn status_is_ready_and_shutdown_refuses_new_work() {
    let runtime = runtime();
    assert_eq!(runtime.status(), RuntimeStatus::Ready);
    let script = script(&echo());
    assert!(runtime.prepare(&script).await.is_ok());
    runtime.shutdown().await;
    assert!(matches!(
        runtime.status(),
        RuntimeStatus::Unavailable { .. }
    ));
    let outcome = runtime.execute(&script, "{}", &limits()).await;
    assert!(
        matches!(outcome, Err(RuntimeError::Unavailable { .. })),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executes_do_not_interfere() {
    let runtime = runtime();
    let script = script(&echo());
    assert!(runtime.prepare(&script).await.is_ok());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let runtime = runtime.clone();
        let script = script.clone();
        tasks.push(tokio::spawn(async move {
            runtime
                .execute(&script, &json!({"i": i}).to_string(), &limits())
                .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let output = task
            .await
            .map_err(|e| e.to_string())
            .and_then(|o| o.map_err(|e| e.to_string()));
        assert_eq!(output.map(|o| o.result), Ok(json!({"i": i})));
    }
}

/// Not a pass/fail test of speed (debug builds are slow); prints the warm
/// per-execute cost so it can be tracked. `cargo test -p lambda-runtime
/// --test wasm --release -- --nocapture warm_execute` for real numbers.
#[tokio::test]
async fn warm_execute_loop() {
    let runtime = runtime();
    let script = script(&echo());
    assert!(runtime.prepare(&script).await.is_ok());
    let event = json!({"params": {"a": 1, "b": 2}}).to_string();
    let n_executes: u32 = 2000;
    let started = Instant::now();
    for _ in 0..n_executes {
        let output = runtime.execute(&script, &event, &limits()).await;
        assert!(output.is_ok(), "{output:?}");
    }
    let per_execute = started.elapsed() / n_executes;
    println!(
        "wasm warm execute: {} µs per execute over {n_executes}",
        per_execute.as_micros()
    );
}

/// Per-execute cost of a tiny module (instantiate, run, tear down), one at
/// a time and 32 at once. Run with
/// `cargo test --release -p lambda-runtime --test wasm -- --ignored --nocapture execute_loop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run alone in release mode"]
async fn execute_loop_timing() {
    let runtime = runtime();
    let script = script(&echo());
    runtime.prepare(&script).await.unwrap();
    let event = json!({"params": {"a": 1, "b": 2}}).to_string();
    let n: u32 = 5000;
    let started = Instant::now();
    for _ in 0..n {
        let out = runtime.execute(&script, &event, &limits()).await.unwrap();
        assert_eq!(out.result["params"]["a"], json!(1));
    }
    let sequential = started.elapsed() / n;
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let runtime = runtime.clone();
            let script = script.clone();
            let event = event.clone();
            tokio::spawn(async move {
                for _ in 0..n / 32 {
                    let out = runtime.execute(&script, &event, &limits()).await.unwrap();
                    assert_eq!(out.result["params"]["b"], json!(2));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = started.elapsed();
    println!(
        "wasm execute: {} µs each one at a time; {:.0} executes/s with 32 at once",
        sequential.as_micros(),
        f64::from(n / 32 * 32) / concurrent.as_secs_f64()
    );
}
