//! Tiered compilation: which compiler a module's code comes from, and that
//! guests behave the same on both. (The integration tests in
//! `tests/wasm.rs` run mostly on Winch's code: their executes follow
//! initialize at once.)

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// Writes `{"sum":3}` to stdout.
const ADD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"sum\":3}")
  (func $answer
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (call $answer)))"#;

fn engine() -> Arc<WasmEngine> {
    let config = WasmConfig {
        max_instances: 4,
        max_memory_bytes: 64 * 1024 * 1024,
        ..WasmConfig::default()
    };
    match WasmEngine::start(config) {
        Ok(engine) => Arc::new(engine),
        Err(error) => panic!("the wasm engine did not start: {error}"),
    }
}

async fn load(engine: &Arc<WasmEngine>, key: &str, source: &str) -> Arc<LoadedModule> {
    match engine.load(key, ModuleSource::Text(source.into())).await {
        Ok(module) => module,
        Err(error) => panic!("{key} did not load: {error}"),
    }
}

fn limits(timeout: Duration) -> Limits {
    Limits {
        timeout,
        memory_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    }
}

/// Runs `module` and checks it wrote ADD's answer.
async fn assert_adds(engine: &Arc<WasmEngine>, module: Arc<LoadedModule>) {
    let output = engine
        .run(module, "{}", &limits(Duration::from_secs(5)))
        .await
        .map(|output| output.result);
    assert_eq!(output.map_err(|e| e.to_string()), Ok(json!({"sum": 3})));
}

/// Winch is the baseline compiler on x86-64 only.
fn winch_expected() -> bool {
    cfg!(target_arch = "x86_64")
}

#[tokio::test]
async fn a_new_module_runs_on_winch_until_cranelift_code_replaces_it() {
    let engine = engine();
    let first = load(&engine, "add", ADD).await;
    assert_eq!(first.baseline.is_some(), winch_expected());
    if !winch_expected() {
        assert_adds(&engine, first).await;
        return;
    }
    // Loaded but not run: nothing is compiled again (Cranelift's compile of
    // this module takes milliseconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(engine
        .cached("add")
        .is_some_and(|module| Arc::ptr_eq(&module, &first)));

    // Run, it moves to Cranelift's code once it has run as long as Winch
    // took to compile it; Winch's code keeps answering meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    let optimized = loop {
        match engine.cached("add") {
            Some(module) if module.baseline.is_none() => break module,
            Some(_) => {}
            None => panic!("the module left the cache"),
        }
        assert!(Instant::now() < deadline, "no Cranelift code after 20 s");
        assert_adds(&engine, first.clone()).await;
    };
    assert!(!Arc::ptr_eq(&first, &optimized));
    assert_adds(&engine, optimized).await;
}

#[tokio::test]
async fn winch_code_keeps_to_the_timeout_and_the_memory_limit() {
    let engine = engine();
    // The runs below hold the baseline module itself, whatever the cache
    // holds by then.
    let spin = load(
        &engine,
        "spin",
        r#"(module (func (export "_start") (loop $forever (br $forever))))"#,
    )
    .await;
    assert_eq!(spin.baseline.is_some(), winch_expected());
    let started = Instant::now();
    let outcome = engine
        .run(spin, "{}", &limits(Duration::from_millis(200)))
        .await;
    assert!(
        matches!(outcome, Err(RuntimeError::Timeout { timeout_ms: 200 })),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let grow = load(
        &engine,
        "grow",
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (drop (memory.grow (i32.const 1000)))))"#,
    )
    .await;
    assert_eq!(grow.baseline.is_some(), winch_expected());
    let outcome = engine
        .run(grow, "{}", &limits(Duration::from_secs(5)))
        .await;
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
async fn a_module_winch_declines_goes_to_cranelift_at_once() {
    let engine = engine();
    // Tail calls are a proposal Winch does not compile.
    let tail_call = ADD.replace(
        r#"(func (export "_start") (call $answer))"#,
        r#"(func (export "_start") (return_call $answer))"#,
    );
    let module = load(&engine, "tail-call", &tail_call).await;
    assert!(module.baseline.is_none());
    assert_adds(&engine, module).await;
}

#[tokio::test]
async fn an_invalid_module_is_refused_by_both_compilers_alike() {
    let engine = engine();
    let outcome = engine
        .load(
            "invalid",
            ModuleSource::Text(r#"(module (func (export "_start") (i32.add)))"#.into()),
        )
        .await;
    match outcome {
        Err(RuntimeError::Initialization { message, .. }) => {
            assert!(message.contains("invalid wasm module"), "{message}")
        }
        other => panic!("expected an initialization error, got {:?}", other.err()),
    }
}

#[test]
fn a_finished_tier_up_replaces_only_the_module_it_started_from() {
    let engine = match WasmEngine::start(WasmConfig {
        max_instances: 2,
        ..WasmConfig::default()
    }) {
        Ok(engine) => engine,
        Err(error) => panic!("{error}"),
    };
    let link = |compiler: &Compiler| -> Arc<LoadedModule> {
        let module = compiler
            .compile(&match source::decode(ADD) {
                Ok(bytes) => bytes,
                Err(error) => panic!("{error}"),
            })
            .and_then(|module| compiler.link(&module));
        match module {
            Ok(pre) => Arc::new(LoadedModule {
                pre,
                baseline: None,
            }),
            Err(error) => panic!("{error}"),
        }
    };
    let (old, newer, optimized) = (
        link(&engine.optimizing),
        link(&engine.optimizing),
        link(&engine.optimizing),
    );
    let mut cache = engine.modules();
    cache.insert("k", newer.clone());
    assert!(!cache.replace("k", &old, optimized.clone()));
    assert!(!cache.replace("gone", &old, optimized.clone()));
    assert!(cache.replace("k", &newer, optimized.clone()));
    assert!(cache
        .get("k")
        .is_some_and(|module| Arc::ptr_eq(&module, &optimized)));
}
