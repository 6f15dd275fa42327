//! The Node.js runtime over real node and bwrap processes: handler styles,
//! log capture, errors, hostile scripts, isolation and the pool.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{
    Language, LanguageRuntime, Limits, PooledRuntime, RuntimeError, RuntimeStatus,
};
use serde_json::{json, Value};
use support::*;

const CALCULATOR: &str = include_str!("../../store/seeds/nodejs-calculator.js");

fn node() -> (Arc<PooledRuntime>, lambda_runtime::RuntimeConfig) {
    let config = config();
    (runtime(Language::Nodejs, &config), config)
}

async fn run(
    rt: &PooledRuntime,
    source: &str,
    params: Value,
) -> Result<lambda_runtime::Output, RuntimeError> {
    support::run(rt, Language::Nodejs, source, params).await
}

async fn still_works(rt: &PooledRuntime) {
    support::still_works(rt, Language::Nodejs).await;
}

#[tokio::test]
async fn body_style_adds() {
    let (rt, _c) = node();
    assert_eq!(rt.status(), RuntimeStatus::Ready);
    let out = run(
        &rt,
        "return event.params.a + event.params.b;",
        json!({"a": 5, "b": 3}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!(8));
}

#[tokio::test]
async fn module_styles() {
    let (rt, _c) = node();
    let cases = [
        "module.exports = async (event) => ({ sum: event.params.a + event.params.b });",
        "exports.handler = async (event) => ({ sum: event.params.a + event.params.b });",
        "async function handler(event) { return { sum: event.params.a + event.params.b }; }\nmodule.exports = { handler };",
        "module.exports = function (event) { return { sum: event.params.a + event.params.b }; };",
    ];
    for source in cases {
        let out = run(&rt, source, json!({"a": 5, "b": 3})).await.unwrap();
        assert_eq!(out.result, json!({"sum": 8}), "{source}");
    }
}

#[tokio::test]
async fn callback_style_and_seeded_calculator() {
    let (rt, _c) = node();
    let s = script(Language::Nodejs, CALCULATOR);
    rt.prepare(&s).await.unwrap();
    for (op, a, b, expected) in [
        ("add", 5, 3, json!(8)),
        ("subtract", 5, 3, json!(2)),
        ("multiply", 5, 3, json!(15)),
        ("divide", 6, 3, json!(2)),
    ] {
        let out = rt
            .execute(
                &s,
                &event(json!({"operation": op, "a": a, "b": b})),
                &limits(),
            )
            .await
            .unwrap();
        assert_eq!(out.result, json!({ "result": expected }), "{op}");
    }
    let err = rt
        .execute(
            &s,
            &event(json!({"operation": "divide", "a": 1, "b": 0})),
            &limits(),
        )
        .await
        .unwrap_err();
    match err {
        RuntimeError::Script {
            message,
            location,
            stack_trace,
            ..
        } => {
            assert!(message.contains("Division by zero"), "{message}");
            assert_eq!(location.line, Some(18), "line of the throw in the seed");
            let stack = stack_trace.unwrap_or_default();
            assert!(stack.contains("handler.js:18"), "{stack}");
            assert!(!stack.contains("worker.js"), "{stack}");
        }
        other => panic!("expected a script error, got {other:?}"),
    }
    // A plain (non-async) callback handler, calling back later.
    let out = run(
        &rt,
        "module.exports = (event, cb) => setTimeout(() => cb(null, event.params.x), 5);",
        json!({"x": "later"}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!("later"));
    let err = run(
        &rt,
        "exports.handler = (event, callback) => callback(new Error('nope'));",
        json!({}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Script { message, .. } if message == "Error: nope"),
        "{err:?}"
    );
}

#[tokio::test]
async fn readme_custom_example() {
    let (rt, _c) = node();
    let out = run(
        &rt,
        r#"return { status: "success", data: event.params, timestamp: new Date().toISOString() };"#,
        json!({"k": "v"}),
    )
    .await
    .unwrap();
    assert_eq!(out.result["status"], "success");
    assert_eq!(out.result["data"], json!({"k": "v"}));
    assert!(out.result["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn event_carries_context_request_id_and_title() {
    let (rt, _c) = node();
    let out = run(
        &rt,
        "return [event.context.user_id, event.request_id, event.language_title];",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!(["u1", "req-1", "test-fn"]));
}

#[tokio::test]
async fn console_output_is_captured_and_never_corrupts_the_result() {
    let (rt, _c) = node();
    let source = r#"
console.log("log", 1, {a: 1});
console.info("info");
console.warn("warn");
console.error("error\nsecond line");
process.stdout.write("raw stdout\n");
require('fs').writeSync(1, "fd1 bytes \x00\x00\x00\x10 not a frame\n");
require('fs').writeSync(2, "fd2 bytes\n");
return "ok";
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_eq!(out.result, json!("ok"));
    assert_eq!(
        out.logs,
        vec![
            "log 1 { a: 1 }",
            "info",
            "warn",
            "error",
            "second line",
            "raw stdout"
        ]
    );
}

#[tokio::test]
async fn syntax_error_is_an_initialization_error_in_user_coordinates() {
    let (rt, _c) = node();
    let s = script(Language::Nodejs, "const a = 1;\nconst b = ;\nreturn a;");
    match rt.prepare(&s).await.unwrap_err() {
        RuntimeError::Initialization { message, location } => {
            assert!(message.contains("SyntaxError"), "{message}");
            assert_eq!(location.line, Some(2));
            assert_eq!(location.column, Some(11));
        }
        other => panic!("expected initialization error, got {other:?}"),
    }
    let s = script(Language::Nodejs, "module.exports = { notAHandler: 1 };");
    assert_eq!(kind(&rt.prepare(&s).await.unwrap_err()), "initialization");
    // Top-level code of a module that throws at load time.
    let s = script(
        Language::Nodejs,
        "\nthrow new Error('at load');\nmodule.exports = () => 1;",
    );
    match rt.prepare(&s).await.unwrap_err() {
        RuntimeError::Initialization { location, .. } => assert_eq!(location.line, Some(2)),
        other => panic!("{other:?}"),
    }
    still_works(&rt).await;
}

#[tokio::test]
async fn exception_reports_user_line_column_and_filtered_stack() {
    let (rt, _c) = node();
    let source = "function inner(x) {\n  return x.missing.field;\n}\nreturn inner({});";
    match run(&rt, source, json!({})).await.unwrap_err() {
        RuntimeError::Script {
            message,
            location,
            stack_trace,
            logs,
        } => {
            assert!(message.starts_with("TypeError"), "{message}");
            assert_eq!(location.line, Some(2));
            assert_eq!(location.column, Some(20));
            let stack = stack_trace.unwrap();
            assert!(stack.contains("at inner (handler.js:2:20)"), "{stack}");
            assert!(
                !stack.contains("worker.js") && !stack.contains("node:"),
                "{stack}"
            );
            assert!(logs.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Throwing a non-Error value.
    let err = run(&rt, "throw 'plain string';", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Script { message, .. } if message == "plain string"),
        "{err:?}"
    );
}

// ------------------------------------------------------------------ hostile

#[tokio::test]
async fn cannot_read_host_secrets_files_or_environment() {
    std::env::set_var("LAMBDA_TEST_SENTINEL", "sentinel-value-42");
    let (rt, _c) = node();
    let source = r#"
const fs = require('fs');
const tryRead = (p) => { try { return fs.readFileSync(p, 'utf8').slice(0, 50); } catch (e) { return e.code; } };
let environ1 = '';
try { environ1 = fs.readFileSync('/proc/1/environ', 'utf8'); } catch (e) { environ1 = e.code; }
return {
  shadow: tryRead('/etc/shadow'),
  passwd: tryRead('/etc/passwd'),
  cargo: tryRead(process.env.CARGO_TOML || '/work/main/Cargo.toml'),
  root: tryRead('/root/.bashrc'),
  env: JSON.stringify(process.env),
  environ1,
  uid: process.getuid(),
  pids: fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).length,
};
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    let r = &out.result;
    assert_eq!(r["shadow"], "ENOENT");
    assert_eq!(r["passwd"], "ENOENT");
    assert_eq!(r["cargo"], "ENOENT");
    assert_eq!(r["root"], "ENOENT");
    assert!(!r["env"].as_str().unwrap().contains("sentinel-value-42"));
    assert!(!r["environ1"]
        .as_str()
        .unwrap_or("")
        .contains("sentinel-value-42"));
    assert_not_the_service_uid(r["uid"].as_u64().unwrap());
    assert!(r["pids"].as_u64().unwrap() <= 3, "sees host processes: {r}");
    still_works(&rt).await;
}

#[tokio::test]
async fn the_sandbox_shows_no_host_path_of_the_service() {
    let (rt, config) = node();
    let source = r#"
const fs = require('fs');
const tryRead = (p) => { try { return fs.readFileSync(p, 'utf8'); } catch (e) { return e.code; } };
const tryList = (p) => { try { return fs.readdirSync(p); } catch (e) { return e.code; } };
return {
  root: tryList('/'),
  opt: tryList('/opt'),
  worker: tryList('/opt/lambda/worker'),
  mountinfo: tryRead('/proc/self/mountinfo'),
  cmdline: tryRead('/proc/self/cmdline'),
  bwrap_cmdline: tryRead('/proc/1/cmdline'),
  argv: process.argv,
  main: require.main ? require.main.filename : null,
  cwd: process.cwd(),
};
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_no_host_paths(&out.result, &config);
    assert_eq!(out.result["worker"], json!(["worker.js"]));
    assert!(
        out.result["mountinfo"]
            .as_str()
            .is_some_and(|m| m.contains(" /opt/lambda/worker/worker.js ")),
        "{}",
        out.result["mountinfo"]
    );
}

#[tokio::test]
async fn cannot_write_outside_tmp() {
    let (rt, _c) = node();
    let marker = format!("lambda-escape-{}", unique("w"));
    let source = format!(
        r#"
const fs = require('fs');
const out = {{}};
for (const p of ['/usr/{marker}', '/{marker}', '/proc/{marker}', '/dev/{marker}']) {{
  try {{ fs.writeFileSync(p, 'x'); out[p] = 'written'; }} catch (e) {{ out[p] = e.code; }}
}}
fs.writeFileSync('/tmp/ok', 'fine');
out.tmp = fs.readFileSync('/tmp/ok', 'utf8');
return out;
"#
    );
    let out = run(&rt, &source, json!({})).await.unwrap();
    assert_only_tmp_was_written(&out.result);
    // The tmpfs is size-capped.
    let err = run(
        &rt,
        "require('fs').writeFileSync('/tmp/big', Buffer.alloc(200 * 1024 * 1024)); return 1;",
        json!({}),
    )
    .await
    .unwrap_err();
    assert!(matches!(kind(&err), "script" | "resource_limit"), "{err:?}");
    still_works(&rt).await;
}

#[tokio::test]
async fn has_no_network() {
    let (rt, _c) = node();
    let source = r#"
const net = require('net');
const attempt = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port });
  s.on('connect', () => { s.destroy(); resolve('connected'); });
  s.on('error', (e) => resolve(e.code));
  setTimeout(() => { s.destroy(); resolve('timeout'); }, 1000);
});
return { pg: await attempt('127.0.0.1', 5432), ext: await attempt('1.1.1.1', 80), dns: await new Promise((r) => require('dns').lookup('example.com', (e) => r(e ? e.code : 'resolved'))) };
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_eq!(out.result["pg"], "ECONNREFUSED");
    assert_ne!(out.result["ext"], "connected");
    assert_ne!(out.result["dns"], "resolved");
    still_works(&rt).await;
}

#[tokio::test]
async fn spawned_processes_stay_in_the_sandbox() {
    let (rt, _c) = node();
    let source = r#"
const { execSync } = require('child_process');
return { id: execSync('id -u').toString().trim(), shadow: (() => { try { return execSync('cat /etc/shadow 2>&1').toString(); } catch (e) { return 'failed'; } })() };
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    let id: u64 = out.result["id"].as_str().unwrap().parse().unwrap();
    assert_ne!(id, 0);
    assert_eq!(out.result["shadow"], "failed");
    still_works(&rt).await;
}

const LIVE_PIDS: &str = r#"
const live = () => fs.readdirSync('/proc').filter((d) => {
  if (!/^\d+$/.test(d)) return false;
  try { return !/^\d+ \(.*\) [ZX]/.test(fs.readFileSync(`/proc/${d}/stat`, 'utf8')); } catch (e) { return false; }
}).length;
"#;

#[tokio::test]
async fn fork_bomb_is_contained_and_cleaned_up() {
    let (rt, _c) = node();
    let source = format!(
        r#"const fs = require('fs');
{LIVE_PIDS}
if (event.params.bomb) {{
  require('child_process').execSync(':(){{ :|:& }};:', {{ shell: '/bin/bash', stdio: 'ignore' }});
  // The most seen over 100 ms, not one look: a single look right after
  // execSync once saw only bwrap and the worker on a loaded CI machine
  // (why was not found; it did not happen again in 35 runs by hand).
  let most = live();
  for (const end = Date.now() + 100; Date.now() < end && most <= 2; ) most = Math.max(most, live());
  return most;
}}
return live();"#
    );
    let s = script(Language::Nodejs, &source);
    rt.prepare(&s).await.unwrap();
    let limits = Limits {
        timeout: Duration::from_secs(3),
        ..limits()
    };
    match rt.execute(&s, &event(json!({"bomb": true})), &limits).await {
        // The bomb forked up to RLIMIT_NPROC inside the sandbox and no
        // further: node's own threads count against the same limit.
        Ok(out) => {
            let n = out.result.as_u64().unwrap();
            assert!(n > 2 && n <= 32, "{out:?}");
        }
        Err(err) => assert!(
            matches!(kind(&err), "timeout" | "resource_limit" | "script"),
            "{err:?}"
        ),
    }
    // Nothing the bomb started survives the request: only bwrap (pid 1)
    // and the worker are left in the sandbox.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = rt.execute(&s, &event(json!({})), &limits).await.unwrap();
    assert_eq!(out.result, json!(2));
    still_works(&rt).await;
}

#[tokio::test]
async fn a_process_left_running_is_reaped_before_the_next_request() {
    let (rt, _c) = node();
    let source = format!(
        r#"const fs = require('fs');
{LIVE_PIDS}
if (event.params.leave) {{
  require('child_process').spawn('sleep', ['30'], {{ detached: true, stdio: 'ignore' }}).unref();
}}
return live();"#
    );
    assert_left_processes_are_reaped(&rt, Language::Nodejs, &source).await;
}

#[tokio::test]
async fn infinite_loop_times_out_and_the_worker_is_replaced() {
    let (rt, _c) = node();
    let s = script(Language::Nodejs, "while (true) {}");
    rt.prepare(&s).await.unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..limits()
    };
    let started = Instant::now();
    let err = rt
        .execute(&s, &event(json!({})), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Timeout { timeout_ms: 500 }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    still_works(&rt).await;
}

#[tokio::test]
async fn memory_limit() {
    let (rt, _c) = node();
    let sources = [
        "const b = Buffer.alloc(2 * 1024 * 1024 * 1024, 1); return b.length;",
        "const a = []; for (;;) a.push(new Array(100000).fill(1.5));",
    ];
    assert_memory_limits(&rt, Language::Nodejs, &sources).await;
}

#[tokio::test]
async fn printing_100_mb_is_truncated_not_buffered() {
    let (rt, _c) = node();
    let printing = "console.log('x'.repeat(100 * 1024 * 1024)); for (let i = 0; i < 100000; i++) console.log('line', i); return 'done';";
    let raw = "const b = Buffer.alloc(1024 * 1024, 120); for (let i = 0; i < 100; i++) require('fs').writeSync(1, b); return 'raw';";
    assert_log_floods_are_cut(&rt, Language::Nodejs, printing, raw).await;
}

#[tokio::test]
async fn returning_100_mb_is_a_result_size_error() {
    let (rt, _c) = node();
    let huge = "return 'x'.repeat(100 * 1024 * 1024);";
    let over = "return 'x'.repeat(7 * 1024 * 1024);";
    assert_oversized_results_are_refused(&rt, Language::Nodejs, huge, over).await;
}

#[tokio::test]
async fn exiting_or_killing_the_worker_is_a_script_error() {
    let (rt, _c) = node();
    let sources = [
        "process.exit(3);",
        "process.exit();",
        "process.kill(process.pid, 'SIGKILL');",
        "process.abort();",
    ];
    assert_exits_are_script_errors(&rt, Language::Nodejs, &sources).await;
}

#[tokio::test]
async fn timers_left_running_do_not_leak_into_the_next_execute() {
    let (rt, _c) = node();
    let s = script(
        Language::Nodejs,
        "globalThis.n = (globalThis.n || 0) + 1;\nsetInterval(() => console.log('tick'), 1);\nsetTimeout(() => { throw new Error('late'); }, 20);\nreturn globalThis.n;",
    );
    rt.prepare(&s).await.unwrap();
    for expected in 1..=3 {
        let out = rt.execute(&s, &event(json!({})), &limits()).await.unwrap();
        assert_eq!(out.result, json!(expected));
        assert!(out.logs.is_empty(), "{:?}", out.logs);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

// ------------------------------------------------------------------ isolation

#[tokio::test]
async fn scripts_never_share_globals_modules_or_tmp() {
    let (rt, _c) = node();
    let writer = script(
        Language::Nodejs,
        "globalThis.secret = 'mine'; require('fs').writeFileSync('/tmp/secret', 'mine'); require('os').secret = 'mod'; return 'w';",
    );
    let reader = script(
        Language::Nodejs,
        "const fs = require('fs'); return [typeof globalThis.secret, fs.existsSync('/tmp/secret'), require('os').secret === undefined];",
    );
    rt.prepare(&writer).await.unwrap();
    rt.prepare(&reader).await.unwrap();
    rt.execute(&writer, &event(json!({})), &limits())
        .await
        .unwrap();
    let out = rt
        .execute(&reader, &event(json!({})), &limits())
        .await
        .unwrap();
    assert_eq!(out.result, json!(["undefined", false, true]));
}

// ------------------------------------------------------------------ workers

#[tokio::test]
async fn sigkill_from_outside_gives_a_clear_error_then_recovers() {
    let (rt, _c) = node();
    let s = script(
        Language::Nodejs,
        "await new Promise((r) => setTimeout(r, 4000)); return 'slow';",
    );
    rt.prepare(&s).await.unwrap();
    assert_outside_sigkill_is_reported(&rt, &s).await;
    let limits = Limits {
        timeout: Duration::from_secs(10),
        ..limits()
    };
    // The same session works again (a new worker is specialized).
    let s2 = lambda_runtime::Script {
        source: Arc::from("return 'back';"),
        ..s.clone()
    };
    let out = rt.execute(&s2, &event(json!({})), &limits).await.unwrap();
    assert_eq!(out.result, json!("back"));
}

/// See [`support::assert_first_execute_is_warm`].
#[tokio::test]
async fn first_execute_after_prepare_is_warm() {
    let (rt, _c) = node();
    let source = "return event.params.a + event.params.b;";
    assert_first_execute_is_warm(&rt, Language::Nodejs, source).await;
}

/// The acceptance measurement, meant to run alone:
/// `cargo test -p lambda-runtime --test nodejs -- --ignored --test-threads=1`.
#[tokio::test]
#[ignore = "timing comparison; run alone with --ignored --test-threads=1"]
async fn first_execute_within_2x_of_warm() {
    let (rt, _c) = node();
    let source = "return event.params.a + event.params.b;";
    assert_first_within_2x_of_warm(&rt, Language::Nodejs, source).await;
}

#[tokio::test]
async fn busy_when_every_worker_is_taken() {
    let config = lambda_runtime::RuntimeConfig {
        blank_workers_per_language: 0,
        max_workers_per_language: 1,
        queue_wait: Duration::from_millis(300),
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let slow = script(
        Language::Nodejs,
        "await new Promise((r) => setTimeout(r, 1500)); return 1;",
    );
    rt.prepare(&slow).await.unwrap();
    let rt2 = Arc::clone(&rt);
    let slow2 = slow.clone();
    let running =
        tokio::spawn(async move { rt2.execute(&slow2, &event(json!({})), &limits()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = script(Language::Nodejs, "return 2;");
    let err = rt
        .execute(&other, &event(json!({})), &limits())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Busy {
                language: Language::Nodejs,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(running.await.unwrap().unwrap().result, json!(1));
    // Once the slow one is idle, it is evicted (LRU) for the new script.
    assert_eq!(
        rt.execute(&other, &event(json!({})), &limits())
            .await
            .unwrap()
            .result,
        json!(2)
    );
    assert!(rt.pool().unwrap().worker_pids(&slow.worker_key).is_empty());
}

#[tokio::test]
async fn lru_eviction_release_and_cap() {
    let config = lambda_runtime::RuntimeConfig {
        blank_workers_per_language: 1,
        max_workers_per_language: 3,
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let pool = rt.pool().unwrap().clone();
    let scripts: Vec<_> = (0..5)
        .map(|i| script(Language::Nodejs, &format!("return {i};")))
        .collect();
    for (i, s) in scripts.iter().enumerate() {
        rt.prepare(s).await.unwrap();
        assert_eq!(
            rt.execute(s, &event(json!({})), &limits())
                .await
                .unwrap()
                .result,
            json!(i)
        );
        assert!(pool.workers().len() <= 3, "{:?}", pool.workers());
    }
    // The most recent ones are still warm, the oldest were evicted.
    assert!(pool.worker_pids(&scripts[0].worker_key).is_empty());
    assert_eq!(pool.worker_pids(&scripts[4].worker_key).len(), 1);
    rt.release(&scripts[4].worker_key).await;
    assert!(pool.worker_pids(&scripts[4].worker_key).is_empty());
    // Evicted scripts still run (re-specialized on demand).
    assert_eq!(
        rt.execute(&scripts[0], &event(json!({})), &limits())
            .await
            .unwrap()
            .result,
        json!(0)
    );
}

/// Host pids of the blank workers, once `n` are ready (or the wait failed).
async fn blank_pids(pool: &lambda_runtime::WorkerPool, n: usize) -> Vec<u32> {
    use lambda_runtime::pool::WorkerState;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blank: Vec<u32> = pool
            .workers()
            .iter()
            .filter(|w| w.state == WorkerState::Blank)
            .map(|w| w.pid)
            .collect();
        if blank.len() >= n || Instant::now() > deadline {
            return blank;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_full_pool_keeps_blank_workers_ready_for_new_scripts() {
    let config = lambda_runtime::RuntimeConfig {
        blank_workers_per_language: 2,
        max_workers_per_language: 4,
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let pool = rt.pool().unwrap().clone();
    let scripts: Vec<_> = (0..6)
        .map(|i| script(Language::Nodejs, &format!("return {i};")))
        .collect();
    for (i, s) in scripts.iter().enumerate() {
        // Idle specialized workers fill the cap from the third script on:
        // the LRU one must give its slot to a blank worker.
        let blank = blank_pids(&pool, 2).await;
        assert_eq!(blank.len(), 2, "before script {i}: {:?}", pool.workers());
        rt.prepare(s).await.unwrap();
        let used = pool.worker_pids(&s.worker_key);
        assert!(
            used.len() == 1 && blank.contains(&used[0]),
            "script {i} ran on {used:?}, not on a blank worker of {blank:?} (a process start on its path)"
        );
        assert_eq!(
            rt.execute(s, &event(json!({})), &limits())
                .await
                .unwrap()
                .result,
            json!(i)
        );
        assert!(pool.workers().len() <= 4, "{:?}", pool.workers());
    }
    // The newest script stays warm; the oldest made room.
    assert_eq!(pool.worker_pids(&scripts[5].worker_key).len(), 1);
    assert!(pool.worker_pids(&scripts[0].worker_key).is_empty());
}

#[tokio::test]
async fn blank_workers_never_evict_the_last_warm_worker() {
    // As many blank workers as the cap: refilling them must not take the
    // one slot a prepared script needs to stay warm.
    let config = lambda_runtime::RuntimeConfig {
        blank_workers_per_language: 2,
        max_workers_per_language: 2,
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let pool = rt.pool().unwrap().clone();
    assert_eq!(blank_pids(&pool, 2).await.len(), 2);
    let s = script(Language::Nodejs, "return 1;");
    rt.prepare(&s).await.unwrap();
    let warm = pool.worker_pids(&s.worker_key);
    assert_eq!(warm.len(), 1);
    // Past the delay before blank workers are refilled.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        pool.worker_pids(&s.worker_key),
        warm,
        "{:?}",
        pool.workers()
    );
    assert_eq!(
        rt.execute(&s, &event(json!({})), &limits())
            .await
            .unwrap()
            .result,
        json!(1)
    );
}

#[tokio::test]
async fn concurrent_executes_of_one_script() {
    let (rt, _c) = node();
    let s = script(
        Language::Nodejs,
        "await new Promise((r) => setTimeout(r, 20)); return event.params.i;",
    );
    rt.prepare(&s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let rt = Arc::clone(&rt);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            rt.execute(&s, &event(json!({"i": i})), &limits()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().result, json!(i));
    }
}

/// Executes of one script beyond its worker cap queue, and are served in
/// the order they arrived: a returned worker goes to the oldest waiter, not
/// to whichever woken task wins the race.
#[tokio::test]
async fn queued_executes_of_one_script_run_first_come_first_served() {
    let config = lambda_runtime::RuntimeConfig {
        max_workers_per_script: 1,
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let s = script(
        Language::Nodejs,
        "await new Promise((r) => setTimeout(r, 40)); return event.params.i;",
    );
    rt.prepare(&s).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let rt = Arc::clone(&rt);
        let s = s.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let out = rt.execute(&s, &event(json!({"i": i})), &limits()).await;
            order.lock().unwrap().push(i);
            out
        }));
        // Arrival order is the spawn order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().result, json!(i));
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    assert_eq!(
        rt.pool().unwrap().worker_pids(&s.worker_key).len(),
        1,
        "{:?}",
        rt.pool().unwrap().workers()
    );
}

/// Twelve executes at once of one script use at most its cap of workers.
#[tokio::test]
async fn one_script_holds_at_most_its_cap_of_workers() {
    let config = lambda_runtime::RuntimeConfig {
        max_workers_per_script: 2,
        max_workers_per_language: 8,
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    let s = script(
        Language::Nodejs,
        "await new Promise((r) => setTimeout(r, 30)); return event.params.i;",
    );
    rt.prepare(&s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let rt = Arc::clone(&rt);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            rt.execute(&s, &event(json!({"i": i})), &limits()).await
        }));
    }
    let mut most = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        most = most.max(rt.pool().unwrap().worker_pids(&s.worker_key).len());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().result, json!(i));
    }
    assert!(most <= 2, "{most} workers held the script");
}

#[tokio::test]
async fn unavailable_without_bwrap_unless_insecure() {
    let config = lambda_runtime::RuntimeConfig {
        bwrap_path: "/nonexistent/bwrap".into(),
        ..support::config()
    };
    let rt = runtime(Language::Nodejs, &config);
    match rt.status() {
        RuntimeStatus::Unavailable { reason } => assert!(reason.contains("bubblewrap"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let s = script(Language::Nodejs, "return 1;");
    assert_eq!(kind(&rt.prepare(&s).await.unwrap_err()), "unavailable");
    assert_eq!(
        kind(
            &rt.execute(&s, &event(json!({})), &limits())
                .await
                .unwrap_err()
        ),
        "unavailable"
    );

    let insecure = lambda_runtime::RuntimeConfig {
        allow_insecure_no_sandbox: true,
        ..config
    };
    let rt = runtime(Language::Nodejs, &insecure);
    assert_eq!(rt.status(), RuntimeStatus::Ready);
    assert_eq!(
        run(&rt, "return 7;", json!({})).await.unwrap().result,
        json!(7)
    );
}

#[tokio::test]
async fn throughput() {
    let (rt, _c) = node();
    let source = "return event.params.a + event.params.b;";
    support::throughput(&rt, Language::Nodejs, source).await;
}

#[tokio::test]
async fn large_events_and_results_round_trip() {
    let (rt, _c) = node();
    let source = "return { n: event.params.s.length, s: event.params.s };";
    assert_large_round_trips(&rt, Language::Nodejs, source).await;
}

#[tokio::test]
async fn limits_other_than_the_spawn_limits_get_their_own_worker() {
    let (rt, _c) = node();
    let s = script(Language::Nodejs, "return process.execArgv;");
    rt.prepare(&s).await.unwrap();
    let warmed = rt.pool().unwrap().worker_pids(&s.worker_key);
    let small = Limits {
        memory_bytes: 64 * 1024 * 1024,
        ..limits()
    };
    let out = rt.execute(&s, &event(json!({})), &small).await.unwrap();
    assert_eq!(out.result, json!(["--max-old-space-size=64"]));
    assert_ne!(rt.pool().unwrap().worker_pids(&s.worker_key), warmed);
}

#[tokio::test]
async fn queued_executes_keep_their_own_results_and_logs() {
    assert_queued_executes_keep_their_own_results_and_logs(Language::Nodejs).await;
}

#[tokio::test]
async fn written_ahead_requests_survive_their_worker() {
    assert_written_ahead_requests_survive_their_worker(Language::Nodejs).await;
}
