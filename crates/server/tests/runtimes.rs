//! The Node.js and Python runtimes over real HTTP: handler styles, hostile
//! scripts contained with the right code, isolation, a worker killed from
//! outside, warm first executes, and an initialize that finds no worker.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Api, Backend, Harness};

async fn start() -> Harness {
    Harness::start(
        Backend::Sqlite,
        &[("LM_SENTINEL_SECRET", "sentinel-8d1f0a")],
    )
    .await
}

async fn run(api: &Api, language_title: &str, script: &str, params: Value) -> support::Reply {
    let id = api.initialize_script(language_title, script).await;
    api.execute(&id, params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_style_works() {
    let harness = start().await;
    let api = &harness.api;
    let add = json!({"a": 5, "b": 3});
    let cases: &[(&str, &str, Value)] = &[
        ("nodejs-body", "return event.params.a + event.params.b;", json!(8)),
        ("nodejs-module", "module.exports = async (event) => ({ sum: event.params.a + event.params.b })", json!({"sum": 8})),
        ("nodejs-exports", "exports.handler = async (event) => event.params.a * event.params.b;", json!(15)),
        ("nodejs-object", "async function handler(event) { return event.params.a - event.params.b; }\nmodule.exports = { handler };", json!(2)),
        ("nodejs-callback", "module.exports = (event, callback) => { setTimeout(() => callback(null, event.params.a + event.params.b), 5); };", json!(8)),
        ("nodejs-logs", "console.log('hello'); console.error('oops'); return 1;", json!(1)),
        ("python-handler", "def handler(event):\n    return event['params']['a'] + event['params']['b']\n", json!(8)),
        ("python-handle", "def handle(params):\n    return {'sum': params['a'] + params['b']}\n", json!({"sum": 8})),
        ("python-toplevel", "result = params['a'] * params['b'] + len(context) * 0 + len(event['params'])", json!(17)),
        ("python-print", "print('hello')\nresult = 1", json!(1)),
    ];
    for (language_title, script, expected) in cases {
        let reply = run(api, language_title, script, add.clone()).await;
        assert_eq!(reply.status, 200, "{language_title}: {reply:?}");
        assert_eq!(
            &reply.body["result"], expected,
            "{language_title}: {reply:?}"
        );
        assert_eq!(reply.body["language_title"], *language_title);
    }
    let reply = run(
        api,
        "nodejs-logs",
        "console.log('hello'); console.error('oops'); return 1;",
        json!({}),
    )
    .await;
    let logs = reply.body["logs"].to_string();
    assert!(logs.contains("hello") && logs.contains("oops"), "{reply:?}");

    // The original README examples, verbatim.
    let reply = run(
        api,
        "python-words",
        r#"result = len(params["text"].split())"#,
        json!({"text": "a b c d"}),
    )
    .await;
    assert_eq!(reply.body["result"], 4, "{reply:?}");
    let custom =
        "return { status: 'success', data: event.params, timestamp: new Date().toISOString() };";
    let reply = run(api, "nodejs-custom", custom, json!({"x": 1})).await;
    assert_eq!(reply.body["result"]["status"], "success", "{reply:?}");
    assert_eq!(reply.body["result"]["data"], json!({"x": 1}));
    assert!(reply.body["result"]["timestamp"]
        .as_str()
        .unwrap_or("")
        .ends_with('Z'));

    // The event carries context, request_id and language_title too.
    let id = api
        .initialize(
            "nodejs-event",
            json!({"script_content": "return event;", "context": {"user_id": "u-1"}}),
        )
        .await;
    let reply = api.execute(&id, json!({"k": 1})).await;
    assert_eq!(reply.body["result"]["params"], json!({"k": 1}));
    assert_eq!(reply.body["result"]["context"]["user_id"], "u-1");
    assert_eq!(reply.body["result"]["request_id"], id.as_str());
    assert_eq!(reply.body["result"]["language_title"], "nodejs-event");

    // Errors point into the user's script.
    let reply = run(
        api,
        "python-raises",
        "x = 1\n\ndef handler(event):\n    raise ValueError('bad ' + str(x))\n",
        json!({}),
    )
    .await;
    reply.assert_error(460, "RUNTIME_ERROR", "");
    assert_eq!(reply.body["error"]["details"]["line"], 4, "{reply:?}");
    assert!(
        reply.body["error"]["details"]["stack_trace"]
            .as_str()
            .unwrap_or("")
            .contains("line 4"),
        "{reply:?}"
    );
    let reply = api
        .initialize_reply(
            "python-syntax",
            &json!({"script_content": "x = 1\ndef handler(event)\n    return 1\n"}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
    assert_eq!(reply.body["error"]["details"]["line"], 2, "{reply:?}");
    let reply = api
        .initialize_reply(
            "python-nohandler",
            &json!({"script_content": "def helper():\n    return 1\n"}),
        )
        .await;
    reply.assert_error(400, "INITIALIZATION_ERROR", "");
}

/// A hostile script, what it may answer, and what its answer must not contain.
struct Hostile {
    name: &'static str,
    script: &'static str,
    statuses: &'static [u16],
    must_not_contain: &'static [&'static str],
}

const NODE_HOSTILE: &[Hostile] = &[
    Hostile { name: "read /etc/shadow", script: "return require('fs').readFileSync('/etc/shadow', 'utf8');", statuses: &[460], must_not_contain: &["root:"] },
    Hostile { name: "read the service's env", script: "return { env: process.env, init: (() => { try { return require('fs').readFileSync('/proc/1/environ', 'utf8'); } catch (e) { return e.code; } })() };", statuses: &[200], must_not_contain: &["sentinel-8d1f0a", "DATABASE_URL", "JWT_SECRET"] },
    Hostile { name: "read the service's files", script: "return require('fs').readdirSync(process.env.DATA_DIR || '/work');", statuses: &[460], must_not_contain: &["lambda.db"] },
    Hostile { name: "write outside /tmp", script: "require('fs').writeFileSync('/usr/evil', 'x'); return 'written';", statuses: &[460], must_not_contain: &["written"] },
    Hostile { name: "connect to PostgreSQL", script: "return await new Promise((resolve, reject) => { const s = require('net').connect(5432, '127.0.0.1'); s.on('connect', () => resolve('connected')); s.on('error', reject); });", statuses: &[460], must_not_contain: &["connected"] },
    Hostile { name: "connect anywhere", script: "return await new Promise((resolve, reject) => { const s = require('net').connect(80, '1.1.1.1'); s.on('connect', () => resolve('connected')); s.on('error', reject); setTimeout(() => reject(new Error('no route')), 2000); });", statuses: &[460], must_not_contain: &["connected"] },
    Hostile { name: "spawn a process", script: "return require('child_process').execSync('id -u; cat /etc/shadow 2>&1 || true').toString();", statuses: &[200, 460], must_not_contain: &["root:", "uid=0"] },
    Hostile { name: "fork bomb", script: "require('child_process').execSync(':(){ :|:& };:', { shell: '/bin/bash', stdio: 'ignore' }); return 'survived';", statuses: &[200, 460, 504, 507], must_not_contain: &[] },
    Hostile { name: "infinite loop", script: "while (true) {}", statuses: &[504], must_not_contain: &[] },
    Hostile { name: "allocate 2 GiB", script: "const a = []; for (let i = 0; i < 2048; i++) { a.push(Buffer.alloc(1024 * 1024, 1)); } return a.length;", statuses: &[507], must_not_contain: &[] },
    Hostile { name: "print 100 MB", script: "const line = 'x'.repeat(1024 * 1024); for (let i = 0; i < 100; i++) console.log(line); return 'printed';", statuses: &[200, 507], must_not_contain: &[] },
    Hostile { name: "return 100 MB", script: "return 'x'.repeat(100 * 1024 * 1024);", statuses: &[507], must_not_contain: &[] },
    Hostile { name: "process.exit", script: "process.exit(3);", statuses: &[460], must_not_contain: &[] },
    Hostile { name: "kill its own worker", script: "process.kill(process.pid, 'SIGKILL');", statuses: &[460, 500], must_not_contain: &[] },
];

const PYTHON_HOSTILE: &[Hostile] = &[
    Hostile { name: "read /etc/shadow", script: "result = open('/etc/shadow').read()", statuses: &[460], must_not_contain: &["root:"] },
    Hostile { name: "read the service's env", script: "import os\nresult = dict(os.environ)", statuses: &[200], must_not_contain: &["sentinel-8d1f0a", "DATABASE_URL", "JWT_SECRET"] },
    Hostile { name: "write outside /tmp", script: "open('/usr/evil', 'w').write('x')\nresult = 'written'", statuses: &[460], must_not_contain: &["written"] },
    Hostile { name: "connect to PostgreSQL", script: "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)\nresult = 'connected'", statuses: &[460], must_not_contain: &["connected"] },
    Hostile { name: "connect anywhere", script: "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\nresult = 'connected'", statuses: &[460], must_not_contain: &["connected"] },
    Hostile { name: "spawn a process", script: "import subprocess\nresult = subprocess.run(['sh', '-c', 'id -u; cat /etc/shadow 2>&1 || true'], capture_output=True, text=True).stdout", statuses: &[200, 460], must_not_contain: &["root:", "uid=0"] },
    Hostile { name: "fork bomb", script: "import os\nwhile True:\n    os.fork()\nresult = 'survived'", statuses: &[460, 504, 507], must_not_contain: &[] },
    Hostile { name: "infinite loop", script: "while True:\n    pass\nresult = 1", statuses: &[504], must_not_contain: &[] },
    Hostile { name: "allocate 2 GiB", script: "data = bytearray(2 * 1024 * 1024 * 1024)\nresult = len(data)", statuses: &[507], must_not_contain: &[] },
    Hostile { name: "print 100 MB", script: "line = 'x' * (1024 * 1024)\nfor _ in range(100):\n    print(line)\nresult = 'printed'", statuses: &[200, 507], must_not_contain: &[] },
    Hostile { name: "return 100 MB", script: "result = 'x' * (100 * 1024 * 1024)", statuses: &[507], must_not_contain: &[] },
    Hostile { name: "sys.exit", script: "import sys\nsys.exit(3)\nresult = 1", statuses: &[460], must_not_contain: &[] },
    Hostile { name: "os._exit", script: "import os\nos._exit(3)\nresult = 1", statuses: &[460], must_not_contain: &[] },
    Hostile { name: "kill its own worker", script: "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nresult = 1", statuses: &[460, 500], must_not_contain: &[] },
];

async fn check_hostile(api: &Api, language: &str, cases: &[Hostile]) {
    for (n, case) in cases.iter().enumerate() {
        let language_title = format!("{language}-hostile{n}");
        let id = api
            .initialize(
                &language_title,
                json!({"script_content": case.script, "context": {"timeout_ms": 3000}}),
            )
            .await;
        let started = Instant::now();
        let reply = api.execute(&id, json!({})).await;
        assert!(
            case.statuses.contains(&reply.status),
            "{language} {}: {reply:?}",
            case.name
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{language} {}: took {:?}",
            case.name,
            started.elapsed()
        );
        let text = reply.body.to_string();
        for forbidden in case.must_not_contain {
            assert!(
                !text.contains(forbidden),
                "{language} {}: leaked {forbidden}: {}",
                case.name,
                &text[..text.len().min(500)]
            );
        }
        let expected_code = match reply.status {
            460 => "RUNTIME_ERROR",
            504 => "TIMEOUT",
            507 => "RESOURCE_LIMIT_EXECUTE",
            _ => "",
        };
        if reply.status == 507 {
            assert_eq!(
                reply.code(),
                "RESOURCE_LIMIT_EXCEEDED",
                "{language} {}",
                case.name
            );
        } else if !expected_code.is_empty() {
            assert_eq!(reply.code(), expected_code, "{language} {}", case.name);
        }
        // The service and every other session carry on.
        let script = if language == "nodejs" {
            "return 'fine';"
        } else {
            "result = 'fine'"
        };
        let next = run(api, &format!("{language}-next{n}"), script, json!({})).await;
        assert_eq!(
            next.body["result"], "fine",
            "{language} after {}: {next:?}",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nodejs_scripts_are_contained() {
    let harness = start().await;
    check_hostile(&harness.api, "nodejs", NODE_HOSTILE).await;
    // A timer left running after returning does not disturb the next call.
    let id = harness
        .api
        .initialize_script("nodejs-timer", "setInterval(() => console.log('tick'), 1); globalThis.n = (globalThis.n || 0) + 1; return globalThis.n;")
        .await;
    assert_eq!(harness.api.execute(&id, json!({})).await.body["result"], 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = harness.api.execute(&id, json!({"x": 1})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body["result"].is_number(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_scripts_are_contained() {
    let harness = start().await;
    check_hostile(&harness.api, "python", PYTHON_HOSTILE).await;
    let script = "import threading, time\ndef spin():\n    while True:\n        print('tick')\n        time.sleep(0.001)\nthreading.Thread(target=spin, daemon=True).start()\nresult = 'started'";
    let id = harness.api.initialize_script("python-thread", script).await;
    assert_eq!(
        harness.api.execute(&id, json!({})).await.body["result"],
        "started"
    );
    let reply = harness.api.execute(&id, json!({"x": 1})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_see_each_others_state() {
    let harness = start().await;
    let api = &harness.api;
    let node = "globalThis.count = (globalThis.count || 0) + 1; const fs = require('fs'); const seen = fs.readdirSync('/tmp'); fs.writeFileSync('/tmp/' + event.params.me, 'x'); return { count: globalThis.count, seen };";
    let first = api.initialize_script("nodejs-tenant-a", node).await;
    let second = api
        .initialize_script("nodejs-tenant-b", &format!("{node} // another script"))
        .await;
    assert_eq!(
        api.execute(&first, json!({"me": "a"})).await.body["result"]["count"],
        1
    );
    assert_eq!(
        api.execute(&first, json!({"me": "a2"})).await.body["result"]["count"],
        2
    );
    let reply = api.execute(&second, json!({"me": "b"})).await;
    assert_eq!(
        reply.body["result"]["count"], 1,
        "globals leaked: {reply:?}"
    );
    assert_eq!(
        reply.body["result"]["seen"],
        json!([]),
        "/tmp leaked: {reply:?}"
    );

    let python = "import os\ncount = globals().get('count', 0)\nseen = sorted(os.listdir('/tmp'))\nopen('/tmp/' + params['me'], 'w').write('x')\nresult = {'seen': seen}";
    let first = api.initialize_script("python-tenant-a", python).await;
    let second = api
        .initialize_script("python-tenant-b", &format!("{python}\n# another script"))
        .await;
    api.execute(&first, json!({"me": "a"})).await;
    let reply = api.execute(&second, json!({"me": "b"})).await;
    assert_eq!(
        reply.body["result"]["seen"],
        json!([]),
        "/tmp leaked: {reply:?}"
    );
}

/// Pids of the service's descendants whose command line mentions `needle`.
fn descendants_matching(root: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        // Children hang off whichever thread spawned them.
        let mut children = String::new();
        for task in std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            children += &std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children.push(' ');
        }
        for child in children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(child);
            }
            frontier.push(child);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_from_outside_fails_its_request_then_recovers() {
    let harness = start().await;
    let api = harness.api.clone();
    let script = "if (event.params.wait) { const end = Date.now() + 3000; while (Date.now() < end) {} } return 'done';";
    let id = api.initialize_script("nodejs-victim", script).await;
    assert_eq!(api.execute(&id, json!({})).await.body["result"], "done");
    let before = descendants_matching(harness.service.pid().unwrap(), "node");
    let (api2, id2) = (api.clone(), id.clone());
    let pending = tokio::spawn(async move { api2.execute(&id2, json!({"wait": true})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killed = 0;
    for pid in descendants_matching(harness.service.pid().unwrap(), "node") {
        // SAFETY: kill(2) on a pid we just read from /proc; at worst it is gone.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    assert!(
        killed > 0 && !before.is_empty(),
        "no node worker found to kill"
    );
    let started = Instant::now();
    let reply = pending.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the request hung"
    );
    assert!([500, 460].contains(&reply.status), "{reply:?}");
    assert!(!reply.code().is_empty(), "a clear error: {reply:?}");
    let reply = api.execute(&id, json!({})).await;
    assert_eq!(reply.body["result"], "done", "after the kill: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_execute_after_initialize_is_warm() {
    let harness = start().await;
    let api = &harness.api;
    for (language_title, script) in [
        ("nodejs-warm", "return event.params.a + event.params.b;"),
        ("python-warm", "result = params['a'] + params['b']"),
    ] {
        let mut firsts = Vec::new();
        let mut warms = Vec::new();
        for n in 0..5 {
            let id = api
                .initialize_script(
                    &format!("{language_title}{n}"),
                    &format!(
                        "{script} {}",
                        if language_title.starts_with("nodejs") {
                            format!("// {n}")
                        } else {
                            format!("# {n}")
                        }
                    ),
                )
                .await;
            let started = Instant::now();
            let reply = api.execute(&id, json!({"a": 1, "b": 2})).await;
            firsts.push(started.elapsed());
            assert_eq!(reply.body["result"], 3, "{reply:?}");
            for i in 0..10 {
                let started = Instant::now();
                api.post(
                    &format!("/api/v1/execute/{id}"),
                    &[("X-Cache-Control", "no-cache")],
                    &json!({"params": {"a": i, "b": 2}}),
                )
                .await;
                warms.push(started.elapsed());
            }
        }
        firsts.sort();
        warms.sort();
        let (first, warm) = (firsts[firsts.len() / 2], warms[warms.len() / 2]);
        eprintln!("{language_title}: first execute p50 {first:?}, warm execute p50 {warm:?}");
        // No process start on the request path: a cold start costs tens of
        // milliseconds; allow scheduling noise on a shared machine.
        assert!(
            first <= warm * 2 + Duration::from_millis(15),
            "{language_title}: first {first:?} vs warm {warm:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initialize_that_finds_no_free_worker_keeps_no_session() {
    // One Node.js worker in all, and a short wait for it.
    let harness = Harness::start(
        Backend::Postgres,
        &[
            ("WORKERS_PER_LANGUAGE", "1"),
            ("WORKERS_MAX_PER_LANGUAGE", "1"),
            ("WORKER_QUEUE_WAIT_MS", "300"),
        ],
    )
    .await;
    let api = &harness.api;
    let busy = api
        .initialize_script(
            "nodejs-busy",
            "const end = Date.now() + event.params.ms; while (Date.now() < end) {} return 'done';",
        )
        .await;
    let initialize = || async {
        api.post(
            "/api/v1/initialize",
            &[
                ("Language-Title", "nodejs-add"),
                ("X-Request-ID", "no-worker-1"),
            ],
            &json!({"script_content": "return event.params.a + event.params.b;"}),
        )
        .await
    };
    let (slow, refused) = tokio::join!(api.execute(&busy, json!({"ms": 2500})), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        initialize().await
    });
    assert_eq!(slow.body["result"], "done", "{slow:?}");
    // The session row is written while the script loads; a load refused
    // for want of a worker takes it back.
    refused.assert_error(503, "RUNTIME_UNAVAILABLE", "");
    let reply = api.get("/api/v1/sessions/no-worker-1").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = initialize().await;
    assert_eq!(reply.status, 200, "the id is free again: {reply:?}");
    let reply = api.execute("no-worker-1", json!({"a": 2, "b": 3})).await;
    assert_eq!(reply.body["result"], 5, "{reply:?}");
}
