//! Shared helpers for the Node.js and Python runtime tests (real node,
//! python3 and bwrap processes).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{
    Language, LanguageRuntime, LimitKind, Limits, Output, PooledRuntime, RuntimeConfig,
    RuntimeError, Script,
};
use serde_json::{json, Value};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        blank_workers_per_language: 1,
        max_workers_per_language: 6,
        work_dir: std::env::temp_dir().join(unique("lambda-runtime-test")),
        ..RuntimeConfig::default()
    }
}

pub fn runtime(language: Language, config: &RuntimeConfig) -> Arc<PooledRuntime> {
    let rt = match language {
        Language::Nodejs => lambda_runtime::nodejs::pooled_runtime(config),
        Language::Python => lambda_runtime::python::pooled_runtime(config),
        other => panic!("no pooled runtime for {other}"),
    };
    rt
}

pub fn script(language: Language, source: &str) -> Script {
    let key = unique("key");
    Script {
        language,
        hash: key.clone(),
        worker_key: key,
        source: Arc::from(source),
        compile_options: Value::Null,
        artifact: None,
    }
}

pub fn event(params: Value) -> String {
    json!({"params": params, "context": {"environment": "test", "user_id": "u1"},
           "request_id": "req-1", "language_title": "test-fn"})
    .to_string()
}

pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

pub fn kind(error: &RuntimeError) -> &'static str {
    match error {
        RuntimeError::Unavailable { .. } => "unavailable",
        RuntimeError::Initialization { .. } => "initialization",
        RuntimeError::Script { .. } => "script",
        RuntimeError::Timeout { .. } => "timeout",
        RuntimeError::ResourceLimit { .. } => "resource_limit",
        RuntimeError::Busy { .. } => "busy",
        RuntimeError::Internal(_) => "internal",
    }
}

/// Initialize is followed by the first execute one client round trip
/// later; by then the replacement blank worker that prepare triggered is
/// starting (a process start costs ~50 ms of CPU on this 2-core machine).
/// The comparison is fair: the warm baseline is measured after the same
/// idle gap, on the same worker.
pub async fn first_vs_warm(
    rt: &PooledRuntime,
    language: Language,
    source: &str,
    gap: Duration,
) -> (Duration, Duration) {
    let mut firsts = Vec::new();
    let mut warms = Vec::new();
    for _ in 0..5 {
        // Blank workers exist long before a request in a running service;
        // let the one started for the previous round come up and settle.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = script(language, source);
        rt.prepare(&s).await.unwrap();
        let pool = rt.pool().unwrap();
        let warmed = pool.worker_pids(&s.worker_key);
        assert_eq!(warmed.len(), 1, "prepare leaves exactly one warm worker");
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        rt.execute(&s, &event(json!({"a": 1, "b": 2})), &limits())
            .await
            .unwrap();
        firsts.push(t.elapsed());
        // No process was started for the first execute: the worker prepare
        // warmed served it and is still the only one.
        assert_eq!(pool.worker_pids(&s.worker_key), warmed);
        for _ in 0..3 {
            tokio::time::sleep(gap).await;
            let t = Instant::now();
            rt.execute(&s, &event(json!({"a": 1, "b": 2})), &limits())
                .await
                .unwrap();
            warms.push(t.elapsed());
        }
        rt.release(&s.worker_key).await;
    }
    firsts.sort();
    warms.sort();
    (firsts[firsts.len() / 2], warms[warms.len() / 2])
}

/// A script of `language` that doubles `params.a`: what every hostile test
/// runs afterwards to show the runtime still serves new sessions.
pub fn doubler(language: Language) -> &'static str {
    match language {
        Language::Nodejs => "return event.params.a * 2;",
        Language::Python => "def handle(params):\n    return params['a'] * 2\n",
        other => panic!("no doubler for {other}"),
    }
}

/// Prepares a fresh script and executes it once with `params`.
pub async fn run(
    rt: &PooledRuntime,
    language: Language,
    source: &str,
    params: Value,
) -> Result<Output, RuntimeError> {
    let s = script(language, source);
    rt.prepare(&s).await?;
    rt.execute(&s, &event(params), &limits()).await
}

/// After any hostile script, a new session with a new script still works.
pub async fn still_works(rt: &PooledRuntime, language: Language) {
    let out = run(rt, language, doubler(language), json!({"a": 21}))
        .await
        .expect("a fresh script runs");
    assert_eq!(out.result, json!(42));
}

/// `error` is a resource-limit error of one of `kinds`.
#[track_caller]
pub fn assert_limit(error: &RuntimeError, kinds: &[LimitKind]) {
    assert!(
        matches!(error, RuntimeError::ResourceLimit { kind, .. } if kinds.contains(kind)),
        "{error:?}"
    );
}

/// The sandbox's uid is neither root nor the service's own uid.
#[track_caller]
pub fn assert_not_the_service_uid(uid: u64) {
    // SAFETY: getuid has no preconditions.
    let own_uid = u64::from(unsafe { libc::getuid() });
    assert!(uid != 0 && uid != own_uid, "runs as uid {uid}");
}

/// `result` maps paths outside /tmp to what writing them did, plus `tmp`
/// (what reading back a file written to /tmp gave).
#[track_caller]
pub fn assert_only_tmp_was_written(result: &Value) {
    let Some(outcomes) = result.as_object() else {
        panic!("not an object: {result}");
    };
    for (path, value) in outcomes {
        if path == "tmp" {
            assert_eq!(value, "fine");
        } else {
            assert_ne!(value, "written", "{path} was writable: {result}");
            assert!(
                !std::path::Path::new(path).exists(),
                "{path} exists on the host"
            );
        }
    }
}

/// Each of `sources` ends its worker (exit, signal, abort): a script error,
/// after which the runtime still works.
pub async fn assert_exits_are_script_errors(
    rt: &PooledRuntime,
    language: Language,
    sources: &[&str],
) {
    for source in sources {
        let err = run(rt, language, source, json!({})).await.unwrap_err();
        assert_eq!(kind(&err), "script", "{source}: {err:?}");
        still_works(rt, language).await;
    }
}

/// Executes `s` (prepared, sleeping for seconds) while its worker is
/// SIGKILLed from outside after 300 ms: a clear error, quickly.
pub async fn assert_outside_sigkill_is_reported(rt: &PooledRuntime, s: &Script) {
    let pool = rt.pool().unwrap().clone();
    let key = s.worker_key.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for pid in pool.worker_pids(&key) {
            // SAFETY: plain kill(2) on a pid the pool reported.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let limits = Limits {
        timeout: Duration::from_secs(10),
        ..limits()
    };
    let started = Instant::now();
    let err = rt.execute(s, &event(json!({})), &limits).await.unwrap_err();
    killer.await.unwrap();
    assert!(matches!(kind(&err), "script" | "internal"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

/// Initialize leaves a warm worker: the first execute runs on it (no
/// process start, asserted by pid) and costs about what a warm one does.
/// Timing under the parallel test run is noisy, so this bound only rules
/// out a process start (50-100 ms); the strict 2x comparison is
/// [`assert_first_within_2x_of_warm`], run alone.
pub async fn assert_first_execute_is_warm(rt: &PooledRuntime, language: Language, source: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (first, warm) = first_vs_warm(rt, language, source, Duration::ZERO).await;
    println!("{language}: first execute (median) {first:?}, warm execute (median) {warm:?}");
    assert!(
        first < Duration::from_millis(30),
        "first execute {first:?} (warm {warm:?})"
    );
}

/// The acceptance measurement of the first execute after prepare against
/// warm ones; meant to run alone (`--ignored --test-threads=1`).
pub async fn assert_first_within_2x_of_warm(rt: &PooledRuntime, language: Language, source: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (first, warm) = first_vs_warm(rt, language, source, Duration::ZERO).await;
    println!(
        "{language} back-to-back: first execute (median) {first:?}, warm execute (median) {warm:?}"
    );
    let (first_gap, warm_gap) =
        first_vs_warm(rt, language, source, Duration::from_millis(300)).await;
    println!(
        "{language} after a 300 ms idle gap: first execute (median) {first_gap:?}, warm execute (median) {warm_gap:?}"
    );
    // The realistic case (a client round trip between initialize and the
    // first execute): strictly within 2x. Back-to-back, sub-millisecond
    // noise dominates on a shared 2-core machine, hence the 0.5 ms floor.
    assert!(
        first_gap <= warm_gap * 2,
        "first execute {first_gap:?} vs warm {warm_gap:?}"
    );
    assert!(
        first <= warm * 2 + Duration::from_micros(500),
        "first execute {first:?} vs warm {warm:?}"
    );
}

/// Serial and concurrent executes of `source` (which adds `a` and `b`),
/// printed for the record.
pub async fn throughput(rt: &Arc<PooledRuntime>, language: Language, source: &str) {
    let s = script(language, source);
    rt.prepare(&s).await.unwrap();
    let ev = event(json!({"a": 1, "b": 2}));
    for _ in 0..50 {
        rt.execute(&s, &ev, &limits()).await.unwrap();
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        rt.execute(&s, &ev, &limits()).await.unwrap();
    }
    let serial = t.elapsed();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let rt = Arc::clone(rt);
        let s = s.clone();
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 4 {
                rt.execute(&s, &ev, &limits()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let parallel = t.elapsed();
    println!(
        "{language}: serial {n} executes in {serial:?} ({:.0}/s, {:?} each); 4 concurrent: {:.0}/s",
        n as f64 / serial.as_secs_f64(),
        serial / n,
        n as f64 / parallel.as_secs_f64()
    );
}

/// A 3 MiB event and result, three times over one worker; `source`
/// returns `{n: params.s length, s: params.s}`.
pub async fn assert_large_round_trips(rt: &PooledRuntime, language: Language, source: &str) {
    let big = "y".repeat(3 * 1024 * 1024);
    let s = script(language, source);
    rt.prepare(&s).await.unwrap();
    for _ in 0..3 {
        let out = rt
            .execute(&s, &event(json!({ "s": big })), &limits())
            .await
            .unwrap();
        assert_eq!(out.result["n"], json!(big.len()));
        assert_eq!(out.result["s"].as_str().map(str::len), Some(big.len()));
    }
}

/// What the sandbox must not show: the service's work dir (where the
/// worker programs are written) in any path or mount a script can see.
#[track_caller]
pub fn assert_no_host_paths(seen: &Value, config: &RuntimeConfig) {
    let text = seen.to_string();
    let work_dir = config.work_dir.to_string_lossy().into_owned();
    assert!(!text.contains(&work_dir), "{work_dir} is visible: {text}");
    if let Ok(real) = std::fs::canonicalize(&config.work_dir) {
        let real = real.to_string_lossy().into_owned();
        assert!(!text.contains(&real), "{real} is visible: {text}");
    }
    assert!(
        !text.contains("lambda-runtime-test"),
        "the work dir's name is visible: {text}"
    );
}

/// Each of `sources` runs out of memory: a memory-limit error, after which
/// the runtime still works.
pub async fn assert_memory_limits(rt: &PooledRuntime, language: Language, sources: &[&str]) {
    for source in sources {
        let err = run(rt, language, source, json!({})).await.unwrap_err();
        assert_limit(&err, &[LimitKind::Memory]);
    }
    still_works(rt, language).await;
}

/// `printing` logs 100 MB and returns "done": its logs are cut at the
/// limit. `raw` writes 100 MB to fd 1 and returns "raw": drained and
/// dropped.
pub async fn assert_log_floods_are_cut(
    rt: &PooledRuntime,
    language: Language,
    printing: &str,
    raw: &str,
) {
    let out = run(rt, language, printing, json!({})).await.unwrap();
    assert_eq!(out.result, json!("done"));
    let total: usize = out.logs.iter().map(String::len).sum();
    assert!(total <= limits().max_log_bytes, "{total}");
    let out = run(rt, language, raw, json!({})).await.unwrap();
    assert_eq!(out.result, json!("raw"));
    still_works(rt, language).await;
}

/// `huge` returns 100 MB (a result-size error, or memory if building it
/// failed first); `over` returns 7 MiB, just over the 6 MiB limit.
pub async fn assert_oversized_results_are_refused(
    rt: &PooledRuntime,
    language: Language,
    huge: &str,
    over: &str,
) {
    let err = run(rt, language, huge, json!({})).await.unwrap_err();
    assert_limit(&err, &[LimitKind::ResultSize, LimitKind::Memory]);
    let err = run(rt, language, over, json!({})).await.unwrap_err();
    assert_limit(&err, &[LimitKind::ResultSize]);
    still_works(rt, language).await;
}

/// `source` returns how many live processes its sandbox holds, and starts a
/// detached `sleep` first when `params.leave` is set. The worker skips the
/// host-wide kill(-1) while no pid was handed out in its sandbox; a process
/// left behind must still be gone by the next request, and requests that
/// start nothing must not disturb the worker (bwrap and the worker: 2).
pub async fn assert_left_processes_are_reaped(
    rt: &PooledRuntime,
    language: Language,
    source: &str,
) {
    let s = script(language, source);
    rt.prepare(&s).await.expect("the script loads");
    for _ in 0..3 {
        let out = rt
            .execute(&s, &event(json!({})), &limits())
            .await
            .expect("runs");
        assert_eq!(out.result, json!(2));
    }
    for _ in 0..2 {
        // The sleep runs while its request does...
        let out = rt
            .execute(&s, &event(json!({"leave": true})), &limits())
            .await
            .expect("runs");
        assert_eq!(out.result, json!(3));
        // ...and not after it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = rt
            .execute(&s, &event(json!({})), &limits())
            .await
            .expect("runs");
        assert_eq!(out.result, json!(2));
    }
}

/// A script that logs, waits `params.ms` (Node.js: a timer; Python: a
/// sleep), logs again and returns `params.i`; `params.spin` loops forever.
fn queue_probe(language: Language) -> &'static str {
    match language {
        Language::Nodejs => {
            "console.log('start', event.params.i);\n\
             while (event.params.spin) {}\n\
             await new Promise((r) => setTimeout(r, event.params.ms));\n\
             console.log('end', event.params.i);\n\
             return event.params.i;"
        }
        Language::Python => {
            "import time\n\
             def handler(event):\n    \
                 p = event['params']\n    \
                 print('start', p['i'])\n    \
                 while p.get('spin'):\n        pass\n    \
                 time.sleep(p['ms'] / 1000)\n    \
                 print('end', p['i'])\n    \
                 return p['i']\n"
        }
        other => panic!("no queue probe for {other}"),
    }
}

/// One worker for the script, so concurrent executes queue for it and have
/// their frames written ahead into it.
fn one_worker_per_script() -> RuntimeConfig {
    RuntimeConfig {
        max_workers_per_script: 1,
        ..config()
    }
}

async fn probe(
    rt: &Arc<PooledRuntime>,
    s: &Script,
    params: Value,
    timeout: Duration,
) -> Result<Output, RuntimeError> {
    let limits = Limits {
        timeout,
        ..Limits::default()
    };
    rt.execute(s, &event(params), &limits).await
}

/// The queue probe, prepared and run once on a runtime with one worker per
/// script: a worker's first execute is never written ahead of.
async fn warm_queue_probe(language: Language) -> (Arc<PooledRuntime>, Script) {
    let rt = runtime(language, &one_worker_per_script());
    let s = script(language, queue_probe(language));
    rt.prepare(&s).await.unwrap();
    probe(&rt, &s, json!({"i": 0, "ms": 0}), Duration::from_secs(5))
        .await
        .unwrap();
    (rt, s)
}

/// Executes queued for one worker (written ahead behind the one it runs)
/// run one at a time, in order, each with its own result and logs.
pub async fn assert_queued_executes_keep_their_own_results_and_logs(language: Language) {
    let (rt, s) = warm_queue_probe(language).await;
    let runs = (1..=30).map(|i| {
        let (rt, s) = (Arc::clone(&rt), s.clone());
        // Some of them wait, so later frames arrive while one is running.
        let ms = if i % 5 == 0 { 20 } else { 0 };
        tokio::spawn(async move {
            probe(&rt, &s, json!({"i": i, "ms": ms}), Duration::from_secs(10)).await
        })
    });
    let runs: Vec<_> = runs.collect();
    for (i, run) in (1..=30).zip(runs) {
        let out = run.await.unwrap().unwrap();
        assert_eq!(out.result, json!(i));
        assert_eq!(out.logs, vec![format!("start {i}"), format!("end {i}")]);
    }
    let pids = rt.pool().unwrap().worker_pids(&s.worker_key);
    assert_eq!(pids.len(), 1);
    // The sandbox and everything in it (the interpreter included) run as
    // SCHED_BATCH, so a worker woken by a frame does not preempt the
    // service.
    let tree = process_tree(pids[0]);
    assert!(tree.len() >= 2, "{tree:?}");
    for pid in tree {
        assert_eq!(
            scheduling_policy(pid),
            Some(SCHED_BATCH),
            "pid {pid} of {pids:?}"
        );
    }
}

/// Executes `i` of `range` one after another: each gets its own answer,
/// never one left in the worker's pipe for a request that gave up.
async fn assert_next_get_their_own_answers(
    rt: &Arc<PooledRuntime>,
    s: &Script,
    range: std::ops::Range<i32>,
) {
    for i in range {
        let out = probe(rt, s, json!({"i": i, "ms": 0}), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.result, json!(i));
        assert_eq!(out.logs, vec![format!("start {i}"), format!("end {i}")]);
    }
}

const SCHED_BATCH: u32 = 3;

/// `pid` and its descendants, from `/proc/<pid>/task/<tid>/children`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", tree[next]))
            .map(|dir| dir.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|child| child.parse::<u32>().ok()),
            );
        }
        next += 1;
    }
    tree
}

/// Field 41 of `/proc/<pid>/stat`, counted after the command name (which
/// may hold spaces) ends with its `)`.
fn scheduling_policy(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields
        .split_whitespace()
        .nth(41 - 3)
        .and_then(|policy| policy.parse().ok())
}

/// A request whose frame was written ahead into a worker that then times
/// out runs on a new worker; one that gives up while written ahead costs
/// that worker, not a wrong answer to anyone.
pub async fn assert_written_ahead_requests_survive_their_worker(language: Language) {
    let (rt, s) = warm_queue_probe(language).await;
    // A spins until its timeout; B queues behind it.
    let spinning = {
        let (rt, s) = (Arc::clone(&rt), s.clone());
        tokio::spawn(async move {
            probe(
                &rt,
                &s,
                json!({"i": 1, "ms": 0, "spin": true}),
                Duration::from_millis(800),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = probe(&rt, &s, json!({"i": 2, "ms": 0}), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(queued.result, json!(2));
    assert_eq!(queued.logs, vec!["start 2", "end 2"]);
    assert!(matches!(
        spinning.await.unwrap(),
        Err(RuntimeError::Timeout { .. })
    ));

    // C runs 600 ms; D queues behind it and gives up after 200 ms.
    let slow = {
        let (rt, s) = (Arc::clone(&rt), s.clone());
        tokio::spawn(async move {
            probe(&rt, &s, json!({"i": 3, "ms": 600}), Duration::from_secs(5)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        probe(&rt, &s, json!({"i": 4, "ms": 0}), Duration::from_secs(5)),
    )
    .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    let out = slow.await.unwrap().unwrap();
    assert_eq!(
        (out.result, out.logs),
        (json!(3), vec!["start 3".to_string(), "end 3".to_string()])
    );
    // Whoever comes next gets its own answer, never D's.
    assert_next_get_their_own_answers(&rt, &s, 5..8).await;

    // Two deep: requests queued while a short execute runs are written
    // ahead behind the next one when it starts. F spins until its timeout
    // with G and H written ahead behind it; each gets its own answer.
    let spawn_probe = |params: Value, timeout: Duration| {
        let (rt, s) = (Arc::clone(&rt), s.clone());
        tokio::spawn(async move { probe(&rt, &s, params, timeout).await })
    };
    let short = spawn_probe(json!({"i": 8, "ms": 10}), Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(2)).await;
    let spinning = spawn_probe(
        json!({"i": 9, "ms": 0, "spin": true}),
        Duration::from_millis(800),
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let behind: Vec<_> = (10..12)
        .map(|i| spawn_probe(json!({"i": i, "ms": 0}), Duration::from_secs(10)))
        .collect();
    assert_eq!(short.await.unwrap().unwrap().result, json!(8));
    assert!(matches!(
        spinning.await.unwrap(),
        Err(RuntimeError::Timeout { .. })
    ));
    for (i, run) in (10..12).zip(behind) {
        let out = run.await.unwrap().unwrap();
        assert_eq!(out.result, json!(i));
        assert_eq!(out.logs, vec![format!("start {i}"), format!("end {i}")]);
    }

    // J gives up while written ahead behind I, with K behind it: the
    // worker's answer to J is for nobody, so the worker goes, and K still
    // gets its own answer.
    let short = spawn_probe(json!({"i": 12, "ms": 10}), Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(2)).await;
    let slow = spawn_probe(json!({"i": 13, "ms": 300}), Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let gave_up = {
        let (rt, s) = (Arc::clone(&rt), s.clone());
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(150),
                probe(&rt, &s, json!({"i": 14, "ms": 0}), Duration::from_secs(5)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let last = spawn_probe(json!({"i": 15, "ms": 0}), Duration::from_secs(10));
    assert_eq!(short.await.unwrap().unwrap().result, json!(12));
    assert!(gave_up.await.unwrap().is_err());
    assert_eq!(slow.await.unwrap().unwrap().result, json!(13));
    let out = last.await.unwrap().unwrap();
    assert_eq!(
        (out.result, out.logs),
        (
            json!(15),
            vec!["start 15".to_string(), "end 15".to_string()]
        )
    );
    assert_next_get_their_own_answers(&rt, &s, 16..19).await;
}
