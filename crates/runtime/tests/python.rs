//! The Python runtime over real python3 and bwrap processes: handler
//! styles, log capture, errors, hostile scripts, isolation and the pool.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{
    Language, LanguageRuntime, LimitKind, Limits, PooledRuntime, RuntimeError, RuntimeStatus,
};
use serde_json::{json, Value};
use support::*;

const TEXT_PROCESSOR: &str = include_str!("../../store/seeds/python-text_processor.py");

fn python() -> (Arc<PooledRuntime>, lambda_runtime::RuntimeConfig) {
    let config = config();
    (runtime(Language::Python, &config), config)
}

async fn run(
    rt: &PooledRuntime,
    source: &str,
    params: Value,
) -> Result<lambda_runtime::Output, RuntimeError> {
    support::run(rt, Language::Python, source, params).await
}

async fn still_works(rt: &PooledRuntime) {
    support::still_works(rt, Language::Python).await;
}

#[tokio::test]
async fn seeded_text_processor() {
    let (rt, _c) = python();
    assert_eq!(rt.status(), RuntimeStatus::Ready);
    let s = script(Language::Python, TEXT_PROCESSOR);
    rt.prepare(&s).await.unwrap();
    for (action, expected) in [
        ("count_words", json!(2)),
        ("count_chars", json!(11)),
        ("uppercase", json!("HELLO WORLD")),
        ("lowercase", json!("hello world")),
    ] {
        let out = rt
            .execute(
                &s,
                &event(json!({"action": action, "text": "Hello World"})),
                &limits(),
            )
            .await
            .unwrap();
        assert_eq!(out.result, json!({ "result": expected }), "{action}");
    }
    let out = rt
        .execute(
            &s,
            &event(json!({"action": "nope", "text": "x"})),
            &limits(),
        )
        .await
        .unwrap();
    assert_eq!(out.result, json!({"error": "Unknown action: nope"}));
}

#[tokio::test]
async fn handler_handle_and_top_level_styles() {
    let (rt, _c) = python();
    let out = run(
        &rt,
        "def handler(event):\n    return {'sum': event['params']['a'] + event['params']['b']}\n",
        json!({"a": 5, "b": 3}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!({"sum": 8}));
    let out = run(
        &rt,
        "def handle(params):\n    return params['a'] - params['b']\n",
        json!({"a": 5, "b": 3}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!(2));
    let out = run(
        &rt,
        r#"result = len(params["text"].split())"#,
        json!({"text": "one two three"}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!(3));
    let out = run(
        &rt,
        "result = [context['user_id'], event['request_id'], event['language_title']]",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, json!(["u1", "req-1", "test-fn"]));
    let out = run(&rt, "import asyncio\nasync def handler(event):\n    await asyncio.sleep(0.001)\n    return 'async'\n", json!({})).await.unwrap();
    assert_eq!(out.result, json!("async"));
    let out = run(&rt, "def handler(event):\n    return None\n", json!({}))
        .await
        .unwrap();
    assert_eq!(out.result, Value::Null);
}

#[tokio::test]
async fn print_is_captured_and_never_corrupts_the_result() {
    let (rt, _c) = python();
    let source = r#"
import os, sys
def handler(event):
    print("hello", 1, {"a": 1})
    print("to stderr", file=sys.stderr)
    sys.stdout.write("partial ")
    sys.stdout.write("line\n")
    sys.stdout.buffer.write(b"bytes line\n")
    os.write(1, b"\x00\x00\x00\x10 raw fd1 not a frame\n")
    os.write(2, b"raw fd2\n")
    return "ok"
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_eq!(out.result, json!("ok"));
    assert_eq!(
        out.logs,
        vec![
            "hello 1 {'a': 1}",
            "to stderr",
            "partial line",
            "bytes line"
        ]
    );
}

#[tokio::test]
async fn syntax_error_and_missing_handler_are_initialization_errors() {
    let (rt, _c) = python();
    let s = script(
        Language::Python,
        "x = 1\ndef handler(event:\n    return 1\n",
    );
    match rt.prepare(&s).await.unwrap_err() {
        RuntimeError::Initialization { message, location } => {
            assert!(message.starts_with("SyntaxError"), "{message}");
            assert_eq!(location.line, Some(2));
            assert!(location.column.is_some());
        }
        other => panic!("{other:?}"),
    }
    let s = script(Language::Python, "x = 1\n");
    assert_eq!(kind(&rt.prepare(&s).await.unwrap_err()), "initialization");
    let s = script(
        Language::Python,
        "import json\n\nraise ValueError('at load')\ndef handler(e):\n    return 1\n",
    );
    match rt.prepare(&s).await.unwrap_err() {
        RuntimeError::Initialization { message, location } => {
            assert!(message.contains("ValueError: at load"), "{message}");
            assert_eq!(location.line, Some(3));
        }
        other => panic!("{other:?}"),
    }
    still_works(&rt).await;
}

#[tokio::test]
async fn exception_reports_user_line_column_and_filtered_stack() {
    let (rt, _c) = python();
    let source =
        "def inner(d):\n    return d['missing']\n\ndef handler(event):\n    return inner({})\n";
    match run(&rt, source, json!({})).await.unwrap_err() {
        RuntimeError::Script {
            message,
            location,
            stack_trace,
            ..
        } => {
            assert_eq!(message, "KeyError: 'missing'");
            assert_eq!(location.line, Some(2));
            assert_eq!(location.column, Some(12));
            let stack = stack_trace.unwrap();
            assert!(
                stack.contains("File \"handler.py\", line 2, in inner"),
                "{stack}"
            );
            assert!(
                stack.contains("File \"handler.py\", line 5, in handler"),
                "{stack}"
            );
            assert!(!stack.contains("worker.py"), "{stack}");
        }
        other => panic!("{other:?}"),
    }
    let err = run(
        &rt,
        "import sys\ndef handler(e):\n    sys.exit(2)\n",
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&err), "script", "{err:?}");
}

#[tokio::test]
async fn cannot_read_host_secrets_files_or_environment() {
    std::env::set_var("LAMBDA_TEST_SENTINEL_PY", "py-sentinel-value-42");
    let (rt, _c) = python();
    let source = r#"
import os
def attempt(path):
    try:
        with open(path) as f:
            return f.read(50)
    except OSError as e:
        return type(e).__name__
def handler(event):
    return {
        "shadow": attempt("/etc/shadow"),
        "cargo": attempt("/work/main/Cargo.toml"),
        "root": attempt("/root/.bashrc"),
        "env": dict(os.environ),
        "uid": os.getuid(),
        "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
    }
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    let r = &out.result;
    assert_eq!(r["shadow"], "FileNotFoundError");
    assert_eq!(r["cargo"], "FileNotFoundError");
    assert_eq!(r["root"], "FileNotFoundError");
    assert!(!r["env"].to_string().contains("py-sentinel-value-42"));
    assert_not_the_service_uid(r["uid"].as_u64().unwrap());
    assert!(r["pids"].as_u64().unwrap() <= 3, "{r}");
    still_works(&rt).await;
}

#[tokio::test]
async fn the_sandbox_shows_no_host_path_of_the_service() {
    let (rt, config) = python();
    let source = r#"
import os, sys
def attempt(f, *args):
    try:
        return f(*args)
    except OSError as e:
        return type(e).__name__
def read(path):
    with open(path, errors="replace") as f:
        return f.read()
def handler(event):
    return {
        "root": attempt(os.listdir, "/"),
        "opt": attempt(os.listdir, "/opt"),
        "worker": attempt(os.listdir, "/opt/lambda/worker"),
        "mountinfo": attempt(read, "/proc/self/mountinfo"),
        "cmdline": attempt(read, "/proc/self/cmdline"),
        "bwrap_cmdline": attempt(read, "/proc/1/cmdline"),
        "argv": sys.argv,
        "main": getattr(sys.modules["__main__"], "__file__", None),
        "main_code": sys.modules["__main__"].main.__code__.co_filename,
        "path": sys.path,
        "cwd": os.getcwd(),
    }
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_no_host_paths(&out.result, &config);
    // The worker runs as bytecode compiled at start; its code names the
    // source by the sandbox's path.
    assert_eq!(out.result["worker"], json!(["worker.pyc"]));
    assert_eq!(out.result["main_code"], "/opt/lambda/worker/worker.py");
    assert!(
        out.result["mountinfo"]
            .as_str()
            .is_some_and(|m| m.contains(" /opt/lambda/worker/worker.pyc ")),
        "{}",
        out.result["mountinfo"]
    );
}

#[tokio::test]
async fn installed_packages_are_importable_without_running_site_start_up() {
    let (rt, config) = python();
    // Where the interpreter, started normally, keeps its packages.
    let reported = std::process::Command::new(&config.python_path)
        .args([
            "-c",
            "import json, site; print(json.dumps(site.getsitepackages()))",
        ])
        .output()
        .unwrap();
    let site_packages: Vec<String> = serde_json::from_slice(&reported.stdout).unwrap();
    assert!(!site_packages.is_empty());
    let source = r#"
import sys
def handler(event):
    return {"path": sys.path, "argv": sys.argv, "no_site": sys.flags.no_site,
            "exit": callable(exit) and callable(quit)}
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    let path = out.result["path"].as_array().unwrap();
    for dir in &site_packages {
        assert!(path.contains(&json!(dir)), "{dir} not in {path:?}");
    }
    // site's start-up (and with it every .pth file) did not run.
    assert_eq!(out.result["no_site"], json!(1));
    assert_eq!(out.result["argv"], json!(["/opt/lambda/worker/worker.pyc"]));
    assert_eq!(out.result["exit"], json!(true));
}

#[tokio::test]
async fn the_seccomp_filter_refuses_namespaces_mounts_and_tracing() {
    let (rt, _c) = python();
    let source = r#"
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
def handler(event):
    nr = event["params"]
    out = {
        "unshare_nothing": call(nr["unshare"], 0),
        "unshare_user": call(nr["unshare"], nr["clone_newuser"]),
        "clone_newns": call(nr["clone"], nr["clone_newns"] | 17, 0, 0, 0, 0),
        "clone3": call(nr["clone3"], 0, 0),
        "mount": call(nr["mount"], 0, 0, 0, 0, 0),
        "ptrace_traceme": call(nr["ptrace"], 0, 0, 0, 0),
        "keyctl": call(nr["keyctl"], 0, -3, 0),
        "bpf": call(nr["bpf"], 0, 0, 0),
        "perf_event_open": call(nr["perf_event_open"], 0, 0, -1, -1, 0),
    }
    # What must keep working: processes and threads.
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    box = []
    t = threading.Thread(target=lambda: box.append("ran"))
    t.start()
    t.join()
    out["thread"] = box
    return out
"#;
    let params = json!({
        "unshare": libc::SYS_unshare,
        "clone": libc::SYS_clone,
        "clone3": libc::SYS_clone3,
        "mount": libc::SYS_mount,
        "ptrace": libc::SYS_ptrace,
        "keyctl": libc::SYS_keyctl,
        "bpf": libc::SYS_bpf,
        "perf_event_open": libc::SYS_perf_event_open,
        "clone_newuser": libc::CLONE_NEWUSER,
        "clone_newns": libc::CLONE_NEWNS,
    });
    let out = run(&rt, source, params).await.unwrap();
    let eperm = json!(libc::EPERM);
    for call in [
        "unshare_nothing",
        "unshare_user",
        "clone_newns",
        "mount",
        "ptrace_traceme",
        "keyctl",
        "bpf",
        "perf_event_open",
    ] {
        assert_eq!(out.result[call], eperm, "{call}: {}", out.result);
    }
    assert_eq!(out.result["clone3"], json!(libc::ENOSYS), "{}", out.result);
    assert_eq!(out.result["fork"], json!(7), "{}", out.result);
    assert_eq!(out.result["thread"], json!(["ran"]), "{}", out.result);
    still_works(&rt).await;
}

#[tokio::test]
async fn cannot_write_outside_tmp() {
    let (rt, _c) = python();
    let marker = unique("py-escape");
    let source = format!(
        r#"
def handler(event):
    out = {{}}
    for p in ["/usr/{marker}", "/{marker}", "/dev/{marker}", "/etc/{marker}"]:
        try:
            with open(p, "w") as f:
                f.write("x")
            out[p] = "written"
        except OSError as e:
            out[p] = type(e).__name__
    with open("/tmp/ok", "w") as f:
        f.write("fine")
    out["tmp"] = open("/tmp/ok").read()
    return out
"#
    );
    let out = run(&rt, &source, json!({})).await.unwrap();
    assert_only_tmp_was_written(&out.result);
    still_works(&rt).await;
}

#[tokio::test]
async fn has_no_network() {
    let (rt, _c) = python();
    let source = r#"
import socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
def handler(event):
    return {"pg": attempt("127.0.0.1", 5432), "ext": attempt("1.1.1.1", 80), "dns": attempt("example.com", 80)}
"#;
    let out = run(&rt, source, json!({})).await.unwrap();
    assert_eq!(out.result["pg"], "ConnectionRefusedError");
    assert_ne!(out.result["ext"], "connected");
    assert_ne!(out.result["dns"], "connected");
    still_works(&rt).await;
}

#[tokio::test]
async fn spawned_processes_stay_in_the_sandbox_and_fork_bombs_are_contained() {
    let (rt, _c) = python();
    let out = run(&rt, "import subprocess\ndef handler(e):\n    return subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip()\n", json!({})).await.unwrap();
    let id: u64 = out.result.as_str().unwrap().parse().unwrap();
    assert_ne!(id, 0);
    let limits = Limits {
        timeout: Duration::from_secs(3),
        ..limits()
    };
    let s = script(
        Language::Python,
        "import os\ndef handler(e):\n    while True:\n        os.fork()\n",
    );
    rt.prepare(&s).await.unwrap();
    let err = rt
        .execute(&s, &event(json!({})), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::ResourceLimit {
                kind: LimitKind::Processes,
                ..
            } | RuntimeError::Timeout { .. }
        ),
        "{err:?}"
    );
    still_works(&rt).await;
}

#[tokio::test]
async fn a_process_left_running_is_reaped_before_the_next_request() {
    let (rt, _c) = python();
    let source = r#"import os, re, subprocess
def live():
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if not re.match(r"^\d+ \(.*\) [ZX]", f.read()):
                        n += 1
            except OSError:
                pass
    return n
def handler(event):
    if event["params"].get("leave"):
        subprocess.Popen(["sleep", "30"], start_new_session=True)
    return live()
"#;
    assert_left_processes_are_reaped(&rt, Language::Python, source).await;
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let (rt, _c) = python();
    let s = script(Language::Python, "def handler(e):\n    while True: pass\n");
    rt.prepare(&s).await.unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..limits()
    };
    let err = rt
        .execute(&s, &event(json!({})), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Timeout { timeout_ms: 500 }),
        "{err:?}"
    );
    let err = run(&rt, "while True: pass\nresult = 1", json!({})).await;
    // Top-level style runs per execute, so this one times out too (5 s limit).
    assert!(matches!(err, Err(RuntimeError::Timeout { .. })), "{err:?}");
    still_works(&rt).await;
}

#[tokio::test]
async fn memory_limit() {
    let (rt, _c) = python();
    let sources = [
        "def handler(e):\n    b = bytearray(2 * 1024 ** 3)\n    return len(b)\n",
        "def handler(e):\n    a = []\n    while True:\n        a.append('x' * 1000000)\n",
    ];
    assert_memory_limits(&rt, Language::Python, &sources).await;
}

#[tokio::test]
async fn printing_100_mb_is_truncated_not_buffered() {
    let (rt, _c) = python();
    let printing = "def handler(e):\n    print('x' * (100 * 1024 * 1024))\n    for i in range(100000):\n        print('line', i)\n    return 'done'\n";
    let raw = "import os\ndef handler(e):\n    b = b'x' * (1024 * 1024)\n    for _ in range(100):\n        os.write(1, b)\n    return 'raw'\n";
    assert_log_floods_are_cut(&rt, Language::Python, printing, raw).await;
}

#[tokio::test]
async fn returning_100_mb_is_a_result_size_error() {
    let (rt, _c) = python();
    let huge = "def handler(e):\n    return 'x' * (100 * 1024 * 1024)\n";
    let over = "def handler(e):\n    return 'x' * (7 * 1024 * 1024)\n";
    assert_oversized_results_are_refused(&rt, Language::Python, huge, over).await;
}

#[tokio::test]
async fn exiting_or_killing_the_worker_is_a_script_error() {
    let (rt, _c) = python();
    let sources = [
        "import sys\ndef handler(e):\n    sys.exit(3)\n",
        "import os\ndef handler(e):\n    os._exit(0)\n",
        "import os, signal\ndef handler(e):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        "import os\ndef handler(e):\n    os.abort()\n",
    ];
    assert_exits_are_script_errors(&rt, Language::Python, &sources).await;
}

#[tokio::test]
async fn threads_left_running_do_not_leak_into_the_next_execute() {
    let (rt, _c) = python();
    let source = r#"
import threading, time
count = 0
def spin():
    while True:
        print("tick")
        time.sleep(0.001)
def handler(event):
    global count
    count += 1
    threading.Thread(target=spin, daemon=True).start()
    return count
"#;
    let s = script(Language::Python, source);
    rt.prepare(&s).await.unwrap();
    for expected in 1..=3 {
        let out = rt.execute(&s, &event(json!({})), &limits()).await.unwrap();
        assert_eq!(out.result, json!(expected));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn scripts_never_share_globals_modules_or_tmp() {
    let (rt, _c) = python();
    let writer = script(Language::Python, "import json\ndef handler(e):\n    json.secret = 'mine'\n    open('/tmp/secret', 'w').write('x')\n    return 'w'\n");
    let reader = script(Language::Python, "import json, os\ndef handler(e):\n    return [hasattr(json, 'secret'), os.path.exists('/tmp/secret')]\n");
    rt.prepare(&writer).await.unwrap();
    rt.prepare(&reader).await.unwrap();
    rt.execute(&writer, &event(json!({})), &limits())
        .await
        .unwrap();
    let out = rt
        .execute(&reader, &event(json!({})), &limits())
        .await
        .unwrap();
    assert_eq!(out.result, json!([false, false]));
}

#[tokio::test]
async fn sigkill_from_outside_gives_a_clear_error_then_recovers() {
    let (rt, _c) = python();
    let s = script(
        Language::Python,
        "import time\ndef handler(e):\n    time.sleep(4)\n    return 'slow'\n",
    );
    rt.prepare(&s).await.unwrap();
    assert_outside_sigkill_is_reported(&rt, &s).await;
    let limits = Limits {
        timeout: Duration::from_secs(10),
        ..limits()
    };
    let out = rt
        .execute(
            &s,
            &event(json!({})),
            &Limits {
                timeout: Duration::from_secs(10),
                ..limits
            },
        )
        .await
        .unwrap();
    assert_eq!(out.result, json!("slow"));
}

/// See [`support::assert_first_execute_is_warm`].
#[tokio::test]
async fn first_execute_after_prepare_is_warm() {
    let (rt, _c) = python();
    let source = "def handler(event):\n    return event['params']['a'] + event['params']['b']\n";
    assert_first_execute_is_warm(&rt, Language::Python, source).await;
}

/// The acceptance measurement, meant to run alone:
/// `cargo test -p lambda-runtime --test python -- --ignored --test-threads=1`.
#[tokio::test]
#[ignore = "timing comparison; run alone with --ignored --test-threads=1"]
async fn first_execute_within_2x_of_warm() {
    let (rt, _c) = python();
    let source = "def handler(event):\n    return event['params']['a'] + event['params']['b']\n";
    assert_first_within_2x_of_warm(&rt, Language::Python, source).await;
}

#[tokio::test]
async fn throughput() {
    let (rt, _c) = python();
    let source = "def handler(event):\n    return event['params']['a'] + event['params']['b']\n";
    support::throughput(&rt, Language::Python, source).await;
}

#[tokio::test]
async fn large_events_and_results_round_trip() {
    let (rt, _c) = python();
    let source = "def handle(params):\n    return {'n': len(params['s']), 's': params['s']}\n";
    assert_large_round_trips(&rt, Language::Python, source).await;
}

#[tokio::test]
async fn queued_executes_keep_their_own_results_and_logs() {
    assert_queued_executes_keep_their_own_results_and_logs(Language::Python).await;
}

#[tokio::test]
async fn written_ahead_requests_survive_their_worker() {
    assert_written_ahead_requests_survive_their_worker(Language::Python).await;
}
