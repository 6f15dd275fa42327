//! The scenario runner: starts the baseline and the service, creates the
//! sessions, runs every scenario through the load generator process and
//! collects the figures for the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::loadgen::{LoadResult, LoadSpec, Pick, RequestTemplate, Scheduling};
use crate::processes::{tree_identities, Guarded, ProcessIdentity};
use crate::procfs;

/// The trivial handler (add two numbers) in each language.
pub const NODEJS_ADD: &str = "return event.params.a + event.params.b;";
pub const PYTHON_ADD: &str =
    "def handler(event):\n    return event[\"params\"][\"a\"] + event[\"params\"][\"b\"]\n";
pub const RUST_ADD: &str = "use serde_json::Value;\n\npub fn handler(event: Value) -> Result<Value, String> {\n    let a = event[\"params\"][\"a\"].as_i64().ok_or(\"a is missing\")?;\n    let b = event[\"params\"][\"b\"].as_i64().ok_or(\"b is missing\")?;\n    Ok(Value::from(a + b))\n}\n";
/// A WASI command that finds `"a":` and `"b":` in the event on stdin (the
/// first occurrences are in `params`, which the event puts first) and
/// writes their sum as a JSON number.
pub const WASM_ADD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
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
  (func $after_key (param $key i32) (param $end i32) (result i32) (local $p i32)
    (local.set $p (i32.const 4096))
    (block $missing
      (loop $scan
        (br_if $missing (i32.ge_u (i32.add (local.get $p) (i32.const 4)) (local.get $end)))
        (if (i32.and
              (i32.and (i32.eq (i32.load8_u (local.get $p)) (i32.const 34))
                       (i32.eq (i32.load8_u offset=1 (local.get $p)) (local.get $key)))
              (i32.and (i32.eq (i32.load8_u offset=2 (local.get $p)) (i32.const 34))
                       (i32.eq (i32.load8_u offset=3 (local.get $p)) (i32.const 58))))
          (then (return (i32.add (local.get $p) (i32.const 4)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (local.get $end))
  (func $parse_int (param $p i32) (param $end i32) (result i64) (local $neg i32) (local $v i64) (local $c i32)
    (block $spaces (loop $skip
      (br_if $spaces (i32.ge_u (local.get $p) (local.get $end)))
      (br_if $spaces (i32.ne (i32.load8_u (local.get $p)) (i32.const 32)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $skip)))
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 45))
        (then (local.set $neg (i32.const 1)) (local.set $p (i32.add (local.get $p) (i32.const 1)))))))
    (block $digits (loop $next
      (br_if $digits (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
      (br_if $digits (i32.gt_u (local.get $c) (i32.const 9)))
      (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next)))
    (if (result i64) (local.get $neg) (then (i64.sub (i64.const 0) (local.get $v))) (else (local.get $v))))
  (func (export "_start") (local $end i32) (local $sum i64) (local $neg i32) (local $p i32) (local $u i64)
    (local.set $end (i32.add (i32.const 4096) (call $read_stdin)))
    (local.set $sum (i64.add
      (call $parse_int (call $after_key (i32.const 97) (local.get $end)) (local.get $end))
      (call $parse_int (call $after_key (i32.const 98) (local.get $end)) (local.get $end))))
    (local.set $neg (i64.lt_s (local.get $sum) (i64.const 0)))
    (local.set $u (if (result i64) (local.get $neg) (then (i64.sub (i64.const 0) (local.get $sum))) (else (local.get $sum))))
    (local.set $p (i32.const 4000))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $u) (i64.const 10))))
      (local.set $u (i64.div_u (local.get $u) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $u) (i64.const 0))))
    (if (local.get $neg)
      (then (local.set $p (i32.sub (local.get $p) (i32.const 1))) (i32.store8 (local.get $p) (i32.const 45))))
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (i32.sub (i32.const 4000) (local.get $p)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

pub const LANGUAGES: [&str; 4] = ["nodejs", "python", "wasm", "rust"];

pub fn trivial_script(language: &str) -> &'static str {
    match language {
        "nodejs" => NODEJS_ADD,
        "python" => PYTHON_ADD,
        "wasm" => WASM_ADD,
        _ => RUST_ADD,
    }
}

/// A comment line that makes a script distinct (new hash, new worker key).
fn with_nonce(language: &str, script: &str, nonce: &str) -> String {
    match language {
        "python" => format!("# nonce {nonce}\n{script}"),
        "wasm" => format!(";; nonce {nonce}\n{script}"),
        _ => format!("// nonce {nonce}\n{script}"),
    }
}

/// The seeded functions and a request each, with text the answer contains.
pub const SEEDED: [(&str, &str, &str); 3] = [
    (
        "nodejs-calculator",
        r#"{"params":{"operation":"add","a":5,"b":3}}"#,
        "\"result\":8",
    ),
    (
        "python-text_processor",
        r#"{"params":{"action":"count_words","text":"the quick brown fox jumps"}}"#,
        "\"result\":5",
    ),
    (
        "rust-data_validator",
        r#"{"params":{"data":{"age":25},"rules":["required","numeric"]}}"#,
        "\"valid\":true",
    ),
];

/// The spacing of the paced new-script initializes: one per language per
/// this many ms, which two blank workers, refilled once their pool is quiet
/// (20 ms without a request, at the latest 250 ms after use), keep up with.
const NEW_SCRIPT_PACE_MS: u64 = 250;
const ADD_BODY: &str = r#"{"params":{"a":5,"b":3}}"#;
const ADD_EXPECT: &str = "\"result\":8";
/// A result-cache answer to `ADD_BODY` (the response's field order).
const CACHED_EXPECT: &str = "\"cached\":true,\"result\":8";
/// The scenario name of [`Harness::warm_execute_cached`]'s row.
pub const CACHED_SCENARIO: &str = "warm execute (result cache)";

/// How long and how hard.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub smoke: bool,
    pub levels: Vec<usize>,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub initialize_ms: u64,
    pub n_first_execute: usize,
    pub n_rust_cold: usize,
    pub n_sessions: usize,
    pub n_idle_connections: usize,
    pub soak_ms: u64,
    pub soak_window_ms: u64,
    pub loadgen_scheduling: Scheduling,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            levels: vec![1, 32, 256],
            duration_ms: 8_000,
            warmup_ms: 1_500,
            initialize_ms: 3_000,
            n_first_execute: 15,
            n_rust_cold: 5,
            n_sessions: 10_000,
            n_idle_connections: 10_000,
            soak_ms: 60_000,
            soak_window_ms: 5_000,
            loadgen_scheduling: Scheduling::default(),
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            levels: vec![1],
            duration_ms: 1_000,
            warmup_ms: 300,
            initialize_ms: 800,
            n_first_execute: 1,
            n_rust_cold: 0,
            n_sessions: 100,
            n_idle_connections: 100,
            soak_ms: 3_000,
            soak_window_ms: 1_000,
            loadgen_scheduling: Scheduling::default(),
        }
    }
}

/// One load-generator run with the target's resource figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadRow {
    pub scenario: String,
    pub subject: String,
    pub language: String,
    pub connections: usize,
    pub load: LoadResult,
    /// Target process CPU, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Its workers' CPU (live descendants), in cores.
    pub worker_cpu_cores: f64,
    /// PostgreSQL's CPU (every `postgres` process), in cores.
    #[serde(default)]
    pub postgres_cpu_cores: f64,
    /// The load generator's CPU, in cores.
    #[serde(default)]
    pub loadgen_cpu_cores: f64,
    /// The whole machine's busy CPU, in cores (includes everything else
    /// running on it).
    #[serde(default)]
    pub machine_cpu_cores: f64,
    pub peak_rss_bytes: u64,
    pub peak_worker_rss_bytes: u64,
    pub peak_workers: usize,
    /// RSS over time: (seconds since the run started, target RSS, worker RSS).
    #[serde(default)]
    pub rss_timeline: Vec<(f64, u64, u64)>,
    /// When the load generator started, in seconds since the run started:
    /// the report compares a row with the baseline runs next to it in time.
    #[serde(default)]
    pub started_s: f64,
}

/// Initialize followed at once by the first execute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstExecute {
    pub language: String,
    pub samples: usize,
    pub initialize_ms: Vec<f64>,
    pub first_execute_ms: Vec<f64>,
    /// The execute right after the first one (shows what the first paid extra).
    #[serde(default)]
    pub second_execute_ms: Vec<f64>,
    pub errors: Vec<String>,
}

/// The 10,000-sessions scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManySessions {
    pub requested: usize,
    pub created: u64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub create: Option<LoadRow>,
    pub execute: Option<LoadRow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Runtimes {
    /// Language -> "ok" or why not.
    pub health: BTreeMap<String, String>,
    /// Language -> trivial session id, for the languages whose setup worked.
    pub sessions: BTreeMap<String, String>,
    /// Language -> why it is unavailable for this run.
    pub unavailable: BTreeMap<String, String>,
    /// Seeded function -> session id.
    pub seeded: BTreeMap<String, String>,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurements {
    pub runtimes: Runtimes,
    pub rows: Vec<LoadRow>,
    pub first_execute: Vec<FirstExecute>,
    pub many_sessions: Option<ManySessions>,
    pub fd_limit: u64,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

pub struct Harness {
    pub plan: Plan,
    pub exe: PathBuf,
    pub work_dir: PathBuf,
    pub service: Guarded,
    pub service_addr: SocketAddr,
    pub baseline: Guarded,
    pub baseline_addr: SocketAddr,
    pub token: String,
    pub client: reqwest::Client,
    pub started: Instant,
    pub measurements: Measurements,
    n_specs: usize,
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    listener.local_addr().context("cannot read the port")
}

/// Everything needed to start the harness's processes.
pub struct StartOptions<'a> {
    pub plan: Plan,
    pub service_bin: &'a Path,
    pub database_url: &'a str,
    pub work_dir: &'a Path,
}

impl Harness {
    pub async fn start(options: StartOptions<'_>) -> anyhow::Result<Harness> {
        let exe = std::env::current_exe().context("cannot find the harness executable")?;
        let fd_limit = procfs::raise_fd_limit();
        let baseline_addr = free_port()?;
        let mut baseline_command = Command::new(&exe);
        baseline_command
            .arg("baseline")
            .arg("--bind")
            .arg(baseline_addr.to_string());
        let baseline = Guarded::spawn(
            "baseline",
            baseline_command,
            &options.work_dir.join("baseline.log"),
        )?;

        let service_addr = free_port()?;
        let secret = format!(
            "bench-{}-{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let data_dir = options.work_dir.join("data");
        std::fs::create_dir_all(&data_dir).context("cannot create the service's data directory")?;
        let unlimited = "1000000000";
        let mut service_command = Command::new(options.service_bin);
        service_command
            .arg("serve")
            .env("BIND_ADDR", service_addr.to_string())
            .env("DATABASE_URL", options.database_url)
            .env("DATA_DIR", &data_dir)
            .env("JWT_SECRET", &secret)
            .env("DB_LOGGING_ENABLED", "true")
            .env("RATE_LIMIT_EXECUTE_PER_MINUTE", unlimited)
            .env("RATE_LIMIT_EXECUTE_ANONYMOUS_PER_MINUTE", unlimited)
            .env("RATE_LIMIT_FUNCTIONS_PER_MINUTE", unlimited)
            .env("RATE_LIMIT_OTHER_PER_MINUTE", unlimited)
            .env_remove("ALLOW_ANONYMOUS")
            .env_remove("METRICS_ADDR");
        let service = Guarded::spawn(
            "service",
            service_command,
            &options.work_dir.join("service.log"),
        )?;
        let token = lambda_access::testing::mint_hs256(
            &secret,
            "bench-user",
            "execute:all read:functions write:functions",
            Duration::from_secs(24 * 3600),
        )
        .context("cannot mint the benchmark token")?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(180))
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        let mut harness = Harness {
            plan: options.plan,
            exe,
            work_dir: options.work_dir.to_path_buf(),
            service,
            service_addr,
            baseline,
            baseline_addr,
            token,
            client,
            started: Instant::now(),
            measurements: Measurements {
                fd_limit,
                ..Measurements::default()
            },
            n_specs: 0,
        };
        harness.wait_ready().await?;
        Ok(harness)
    }

    /// The connection count the targets are stated at (32 in full mode).
    pub fn middle_level(&self) -> usize {
        self.plan
            .levels
            .get(self.plan.levels.len() / 2)
            .copied()
            .unwrap_or(1)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service_addr)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut baseline_up = false;
        let mut health: Option<Value> = None;
        while Instant::now() < deadline && !(baseline_up && health.is_some()) {
            if let Some(status) = self.service.exited() {
                bail!(
                    "the service exited ({status}) while starting:\n{}",
                    self.service.log_tail()
                );
            }
            if let Some(status) = self.baseline.exited() {
                bail!(
                    "the baseline exited ({status}):\n{}",
                    self.baseline.log_tail()
                );
            }
            if !baseline_up {
                let url = format!("http://{}/health", self.baseline_addr);
                baseline_up = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            }
            if health.is_none() {
                if let Ok(response) = self.client.get(self.url("/health")).send().await {
                    if response.status().is_success() {
                        health = response.json().await.ok();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(health) = health.filter(|_| baseline_up) else {
            bail!(
                "the service or the baseline did not become ready within 90 s:\n{}",
                self.service.log_tail()
            );
        };
        if let Some(runtimes) = health
            .pointer("/components/runtimes")
            .and_then(Value::as_object)
        {
            for (language, status) in runtimes {
                let text = status
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| status.to_string());
                self.measurements
                    .runtimes
                    .health
                    .insert(language.clone(), text);
            }
        }
        Ok(())
    }

    /// POST /api/v1/initialize; Ok(session id) or Err(status and body).
    pub async fn initialize(
        &self,
        language_title: &str,
        script: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut body = json!({"context": {"retain_session": true}});
        if let Some(script) = script {
            body["script_content"] = Value::String(script.to_string());
        }
        let response = self
            .client
            .post(self.url("/api/v1/initialize"))
            .bearer_auth(&self.token)
            .header("Language-Title", language_title)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("initialize {language_title}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "initialize {language_title}: {status}: {}",
                truncate(&text, 400)
            );
        }
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("initialize {language_title}: bad JSON"))?;
        value["request_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow!(
                    "initialize {language_title}: no request_id in {}",
                    truncate(&text, 200)
                )
            })
    }

    /// POST /api/v1/execute/{id} without the result cache; Ok(body) or Err.
    pub async fn execute(&self, session: &str, body: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(self.url(&format!("/api/v1/execute/{session}")))
            .bearer_auth(&self.token)
            .header("X-Cache-Control", "no-cache")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("execute")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("execute: {status}: {}", truncate(&text, 400));
        }
        Ok(text)
    }

    /// Creates the trivial and seeded sessions; languages that fail are
    /// recorded as unavailable (a failure only if health said "ok").
    pub async fn setup_sessions(&mut self) {
        for language in LANGUAGES {
            let title = format!("{language}-add");
            let outcome = async {
                let id = self
                    .initialize(&title, Some(trivial_script(language)))
                    .await?;
                let body = self.execute(&id, ADD_BODY).await?;
                if !body.contains(ADD_EXPECT) {
                    bail!(
                        "execute {title}: expected {ADD_EXPECT} in {}",
                        truncate(&body, 300)
                    );
                }
                Ok::<_, anyhow::Error>(id)
            }
            .await;
            match outcome {
                Ok(id) => {
                    self.measurements
                        .runtimes
                        .sessions
                        .insert(language.to_string(), id);
                }
                Err(error) => {
                    let health = self.measurements.runtimes.health.get(language).cloned();
                    let reason = format!("{error:#}");
                    if health.as_deref() == Some("ok") {
                        self.measurements.failures.push(format!(
                            "{language}: health says ok but the trivial session failed: {reason}"
                        ));
                    }
                    let reason = match health {
                        Some(health) if health != "ok" => format!("health: {health}; {reason}"),
                        _ => reason,
                    };
                    self.measurements
                        .runtimes
                        .unavailable
                        .insert(language.to_string(), reason);
                }
            }
        }
        for (function, body, expect) in SEEDED {
            let language = function.split('-').next().unwrap_or_default();
            if !self.measurements.runtimes.sessions.contains_key(language) {
                continue;
            }
            let outcome = async {
                let id = self.initialize(function, None).await?;
                let answer = self.execute(&id, body).await?;
                if !answer.contains(expect) {
                    bail!(
                        "execute {function}: expected {expect} in {}",
                        truncate(&answer, 300)
                    );
                }
                Ok::<_, anyhow::Error>(id)
            }
            .await;
            match outcome {
                Ok(id) => {
                    self.measurements
                        .runtimes
                        .seeded
                        .insert(function.to_string(), id);
                }
                Err(error) => self
                    .measurements
                    .failures
                    .push(format!("{function}: {error:#}")),
            }
        }
    }

    fn service_execute(&self, session: &str, body: &str) -> RequestTemplate {
        let mut request = self.service_execute_cacheable(session, body);
        request
            .headers
            .push(("x-cache-control".into(), "no-cache".into()));
        request
    }

    /// An execute that the result cache may answer (no `X-Cache-Control`).
    fn service_execute_cacheable(&self, session: &str, body: &str) -> RequestTemplate {
        RequestTemplate {
            method: "POST".into(),
            path: format!("/api/v1/execute/{session}"),
            headers: vec![("authorization".into(), format!("Bearer {}", self.token))],
            body: body.into(),
        }
    }

    fn service_initialize(
        &self,
        language_title: &str,
        script: Option<&str>,
        request_id: Option<&str>,
    ) -> RequestTemplate {
        let mut body = json!({"context": {"retain_session": true}});
        if let Some(script) = script {
            body["script_content"] = Value::String(script.to_string());
        }
        let mut headers = vec![
            ("authorization".into(), format!("Bearer {}", self.token)),
            ("language-title".into(), language_title.to_string()),
        ];
        if let Some(id) = request_id {
            headers.push(("x-request-id".into(), id.to_string()));
        }
        RequestTemplate {
            method: "POST".into(),
            path: "/api/v1/initialize".into(),
            headers,
            body: body.to_string(),
        }
    }

    fn spec(
        &self,
        target: SocketAddr,
        requests: Vec<RequestTemplate>,
        connections: usize,
    ) -> LoadSpec {
        LoadSpec {
            addr: target,
            requests,
            pick: Pick::RoundRobin,
            connections,
            warmup_ms: self.plan.warmup_ms,
            duration_ms: self.plan.duration_ms,
            max_requests: None,
            window_ms: None,
            idle_connections: 0,
            pace_ms: None,
            expect_status: 200,
            expect_body_contains: None,
            scheduling: self.plan.loadgen_scheduling,
        }
    }

    /// Runs the load generator as a child process against `spec.addr`
    /// while sampling the target process tree.
    pub async fn load(
        &mut self,
        scenario: &str,
        subject: &str,
        language: &str,
        spec: LoadSpec,
    ) -> anyhow::Result<LoadRow> {
        let target = if spec.addr == self.baseline_addr {
            self.baseline.pid()
        } else {
            self.service.pid()
        };
        self.n_specs += 1;
        let spec_path = self.work_dir.join(format!("spec-{}.json", self.n_specs));
        std::fs::write(&spec_path, serde_json::to_vec(&spec)?)
            .context("cannot write the load spec")?;
        let bound =
            Duration::from_millis(spec.warmup_ms + spec.duration_ms) + Duration::from_secs(120);
        procfs::reset_peak_rss(target);
        let cpu_before = procfs::cpu_seconds(target).unwrap_or(0.0);
        let workers_before = procfs::sample_descendants(target);
        let postgres_before = procfs::cpu_seconds_of_command("postgres");
        let (machine_busy_before, _) = procfs::machine_cpu_seconds();
        let wall_started = Instant::now();

        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new((0u64, 0usize, Vec::<(f64, u64, u64)>::new())));
        let sampler = {
            let stop = stop.clone();
            let peaks = peaks.clone();
            let started = self.started;
            tokio::task::spawn_blocking(move || {
                let limit = Instant::now() + bound;
                while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                    let tree = procfs::sample_descendants(target);
                    let rss = procfs::rss_bytes(target).unwrap_or(0);
                    if let Ok(mut peaks) = peaks.lock() {
                        peaks.0 = peaks.0.max(tree.descendants_rss_bytes);
                        peaks.1 = peaks.1.max(tree.descendants);
                        peaks.2.push((
                            started.elapsed().as_secs_f64(),
                            rss,
                            tree.descendants_rss_bytes,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        let child = tokio::process::Command::new(&self.exe)
            .arg("loadgen")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the load generator")?;
        let output = tokio::time::timeout(bound, child.wait_with_output()).await;
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.await;
        let output = output
            .map_err(|_| anyhow!("the load generator ran past {} s", bound.as_secs()))?
            .context("the load generator failed")?;
        if !output.status.success() {
            bail!(
                "the load generator failed ({}): {}",
                output.status,
                truncate(&String::from_utf8_lossy(&output.stderr), 600)
            );
        }
        let load: LoadResult =
            serde_json::from_slice(&output.stdout).context("bad load generator output")?;
        let wall = wall_started.elapsed().as_secs_f64().max(0.001);
        let cpu_after = procfs::cpu_seconds(target).unwrap_or(cpu_before);
        let workers_after = procfs::sample_descendants(target);
        let postgres_after = procfs::cpu_seconds_of_command("postgres");
        let (machine_busy_after, _) = procfs::machine_cpu_seconds();
        let (peak_worker_rss, peak_workers, timeline) =
            peaks.lock().map(|p| p.clone()).unwrap_or_default();
        let loadgen_cpu_cores = load.cpu_seconds / wall;
        let row = LoadRow {
            scenario: scenario.into(),
            subject: subject.into(),
            language: language.into(),
            connections: spec.connections,
            load,
            cpu_cores: (cpu_after - cpu_before) / wall,
            worker_cpu_cores: ((workers_after.descendants_cpu_seconds
                - workers_before.descendants_cpu_seconds)
                / wall)
                .max(0.0),
            postgres_cpu_cores: ((postgres_after - postgres_before) / wall).max(0.0),
            loadgen_cpu_cores,
            machine_cpu_cores: ((machine_busy_after - machine_busy_before) / wall).max(0.0),
            peak_rss_bytes: procfs::peak_rss_bytes(target).unwrap_or(0),
            peak_worker_rss_bytes: peak_worker_rss,
            peak_workers,
            rss_timeline: timeline,
            started_s: wall_started.duration_since(self.started).as_secs_f64(),
        };
        eprintln!(
            "  {:<28} {:<24} c={:<5} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            scenario,
            subject,
            row.connections,
            row.load.rps,
            row.load.latency.p50_us as f64 / 1000.0,
            row.load.latency.p99_us as f64 / 1000.0,
            row.load.errors
        );
        if let Some(sample) = row.load.error_samples.first() {
            eprintln!("      first error: {}", truncate(sample, 300));
        }
        Ok(row)
    }

    async fn record(&mut self, scenario: &str, subject: &str, language: &str, spec: LoadSpec) {
        match self.load(scenario, subject, language, spec).await {
            Ok(row) => {
                if row.load.requests == row.load.errors {
                    self.measurements.failures.push(format!(
                        "{scenario} {subject} c={}: no successful request",
                        row.connections
                    ));
                } else if self.plan.smoke && row.load.errors > 0 {
                    self.measurements.failures.push(format!(
                        "{scenario} {subject} c={}: {} errors, e.g. {}",
                        row.connections,
                        row.load.errors,
                        row.load
                            .error_samples
                            .first()
                            .map(String::as_str)
                            .unwrap_or("")
                    ));
                }
                self.measurements.rows.push(row);
            }
            Err(error) => self
                .measurements
                .failures
                .push(format!("{scenario} {subject}: {error:#}")),
        }
    }

    /// Warm execute: the trivial handler per language at every level, with
    /// the baseline run next to them. The machine's speed drifts within a
    /// run, so the baseline runs before and after each level's languages,
    /// and at the middle level (where the targets are) between every two
    /// runs: the report compares each row with the baseline runs just
    /// before and after it.
    pub async fn warm_execute(&mut self, levels: &[usize]) {
        let middle = self.middle_level();
        for &connections in levels {
            self.baseline_run(connections).await;
            let sessions = self.measurements.runtimes.sessions.clone();
            let last = sessions.len().saturating_sub(1);
            for (index, (language, session)) in sessions.iter().enumerate() {
                let mut spec = self.spec(
                    self.service_addr,
                    vec![self.service_execute(session, ADD_BODY)],
                    connections,
                );
                spec.expect_body_contains = Some(ADD_EXPECT.into());
                self.record("warm execute", &format!("{language}-add"), language, spec)
                    .await;
                if connections == middle || index == last {
                    self.baseline_run(connections).await;
                }
            }
        }
    }

    /// One run of the in-process baseline.
    async fn baseline_run(&mut self, connections: usize) {
        let baseline = RequestTemplate {
            method: "POST".into(),
            path: "/api/v1/execute/baseline".into(),
            headers: Vec::new(),
            body: ADD_BODY.into(),
        };
        let mut spec = self.spec(self.baseline_addr, vec![baseline], connections);
        spec.expect_body_contains = Some(ADD_EXPECT.into());
        self.record(
            "warm execute",
            "baseline (in-process axum)",
            "baseline",
            spec,
        )
        .await;
    }

    /// The seeded functions at the middle level (32 in full mode).
    pub async fn warm_execute_seeded(&mut self) {
        let level = self.middle_level();
        let seeded = self.measurements.runtimes.seeded.clone();
        for (function, body, expect) in SEEDED {
            let Some(session) = seeded.get(function) else {
                continue;
            };
            let language = function.split('-').next().unwrap_or_default();
            let mut spec = self.spec(
                self.service_addr,
                vec![self.service_execute(session, body)],
                level,
            );
            spec.expect_body_contains = Some(expect.into());
            self.record("warm execute (seeded)", function, language, spec)
                .await;
        }
    }

    /// The platform's own execute path, without any runtime: the same
    /// params again, so after the first call the result cache answers.
    /// Auth, rate limit, session lookup, the request log row and the
    /// counter all still happen; a language's warm execute adds its
    /// runtime to this path (and skips only the cache lookup), so this row
    /// is the ceiling of the throughput targets. One language's session is
    /// enough (the path is the same for all).
    pub async fn warm_execute_cached(&mut self) {
        let level = self.middle_level();
        let sessions = &self.measurements.runtimes.sessions;
        let Some((language, session)) = LANGUAGES
            .iter()
            .find_map(|language| Some((*language, sessions.get(*language)?.clone())))
        else {
            return;
        };
        let mut spec = self.spec(
            self.service_addr,
            vec![self.service_execute_cacheable(&session, ADD_BODY)],
            level,
        );
        // Only the warm-up's first calls miss; a measured miss is an error.
        spec.expect_body_contains = Some(CACHED_EXPECT.into());
        self.record(
            CACHED_SCENARIO,
            &format!("{language}-add (result cache hit)"),
            language,
            spec,
        )
        .await;
        // The ceiling is a target row too: a baseline run after it as well.
        self.baseline_run(level).await;
    }

    /// Initialize per language, one connection: the same script again (the
    /// common case: a warm worker for it exists), and new scripts each time
    /// (a blank worker is specialized). Rust: cold compile and cached artifact.
    pub async fn initialize_latency(&mut self) {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let sessions = self.measurements.runtimes.sessions.clone();
        for language in sessions.keys() {
            let title = format!("{language}-add");
            let script = trivial_script(language);
            let mut spec = self.spec(
                self.service_addr,
                vec![self.service_initialize(&title, Some(script), None)],
                1,
            );
            spec.warmup_ms = 0;
            spec.duration_ms = self.plan.initialize_ms;
            spec.max_requests = Some(if self.plan.smoke { 20 } else { 400 });
            let subject = if language == "rust" {
                "rust-add (cached artifact)".to_string()
            } else {
                format!("{language}-add (same script)")
            };
            self.record("initialize", &subject, language, spec).await;

            let (n_new, duration_ms) = if language == "rust" {
                (
                    self.plan.n_rust_cold,
                    120_000 * self.plan.n_rust_cold as u64,
                )
            } else {
                (if self.plan.smoke { 3 } else { 20 }, 60_000)
            };
            if n_new == 0 {
                continue;
            }
            // New scripts back to back use up the blank workers and then
            // wait for process starts (tens of ms each): the burst figure.
            // Paced at NEW_SCRIPT_PACE_MS, the blank pool keeps up: what
            // a steady stream of new scripts sees.
            let paces: &[(Option<u64>, &str)] = if language == "rust" {
                &[(None, "rust-add (cold compile)")]
            } else {
                &[(None, "burst"), (Some(NEW_SCRIPT_PACE_MS), "paced")]
            };
            for (round, (pace_ms, label)) in paces.iter().enumerate() {
                let templates = (0..n_new)
                    .map(|index| {
                        let nonce = format!("{run_id}-{round}-{index}");
                        let source = with_nonce(language, script, &nonce);
                        self.service_initialize(&title, Some(&source), None)
                    })
                    .collect();
                let mut spec = self.spec(self.service_addr, templates, 1);
                spec.pick = Pick::Once;
                spec.warmup_ms = 0;
                spec.duration_ms = duration_ms;
                spec.pace_ms = *pace_ms;
                let subject = if language == "rust" {
                    label.to_string()
                } else {
                    format!("{language}-add (new script, {label})")
                };
                if pace_ms.is_some() {
                    // The burst before used up the blank workers.
                    tokio::time::sleep(Duration::from_millis(NEW_SCRIPT_PACE_MS * 2)).await;
                }
                self.record("initialize", &subject, language, spec).await;
            }
        }
    }

    /// Initialize a new script, then execute it at once; sequential.
    pub async fn first_execute(&mut self) {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let sessions = self.measurements.runtimes.sessions.clone();
        for language in sessions.keys() {
            // Rust compiles each new script (most of a second): fewer samples.
            let samples = if language == "rust" {
                self.plan.n_first_execute.min(self.plan.n_rust_cold.max(1))
            } else {
                self.plan.n_first_execute
            };
            let mut record = FirstExecute {
                language: language.clone(),
                samples,
                initialize_ms: Vec::new(),
                first_execute_ms: Vec::new(),
                second_execute_ms: Vec::new(),
                errors: Vec::new(),
            };
            for index in 0..samples {
                let source = with_nonce(
                    language,
                    trivial_script(language),
                    &format!("first-{run_id}-{index}"),
                );
                let started = Instant::now();
                let id = match self
                    .initialize(&format!("{language}-add"), Some(&source))
                    .await
                {
                    Ok(id) => id,
                    Err(error) => {
                        record.errors.push(format!("{error:#}"));
                        continue;
                    }
                };
                let initialized = Instant::now();
                match self.execute(&id, ADD_BODY).await {
                    Ok(body) if body.contains(ADD_EXPECT) => {
                        record
                            .initialize_ms
                            .push((initialized - started).as_secs_f64() * 1000.0);
                        record
                            .first_execute_ms
                            .push(initialized.elapsed().as_secs_f64() * 1000.0);
                        let second = Instant::now();
                        if let Ok(body) = self.execute(&id, ADD_BODY).await {
                            if body.contains(ADD_EXPECT) {
                                record
                                    .second_execute_ms
                                    .push(second.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                    }
                    Ok(body) => record
                        .errors
                        .push(format!("unexpected: {}", truncate(&body, 200))),
                    Err(error) => record.errors.push(format!("{error:#}")),
                }
            }
            if !record.errors.is_empty() {
                self.measurements
                    .failures
                    .push(format!("first execute {language}: {}", record.errors[0]));
            }
            self.measurements.first_execute.push(record);
        }
    }

    /// Many sessions alive at once (nodejs trivial script: they share its
    /// warm workers), then executes on a random subset of them.
    pub async fn many_sessions(&mut self) {
        let Some(language) = ["nodejs", "wasm", "python", "rust"]
            .into_iter()
            .find(|language| self.measurements.runtimes.sessions.contains_key(*language))
        else {
            return;
        };
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let title = format!("{language}-add");
        let ids: Vec<String> = (0..self.plan.n_sessions)
            .map(|index| format!("bench-{run_id}-{index}"))
            .collect();
        let templates = ids
            .iter()
            .map(|id| self.service_initialize(&title, Some(trivial_script(language)), Some(id)))
            .collect();
        let rss_before = procfs::rss_bytes(self.service.pid()).unwrap_or(0);
        let mut spec = self.spec(
            self.service_addr,
            templates,
            32.min(self.plan.levels.iter().copied().max().unwrap_or(1)),
        );
        spec.pick = Pick::Once;
        spec.warmup_ms = 0;
        spec.duration_ms = 300_000;
        let create = match self
            .load(
                &format!("{} sessions: create", self.plan.n_sessions),
                &title,
                language,
                spec,
            )
            .await
        {
            Ok(row) => row,
            Err(error) => {
                self.measurements
                    .failures
                    .push(format!("many sessions: {error:#}"));
                return;
            }
        };
        let created = create.load.status_counts.get(&200).copied().unwrap_or(0);
        if created == 0 {
            self.measurements
                .failures
                .push("many sessions: none was created".into());
        }
        // Let the write-behind settle, then measure.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = procfs::rss_bytes(self.service.pid()).unwrap_or(0);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let subset: Vec<RequestTemplate> = (0..1000.min(ids.len()))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = &ids[(seed % ids.len() as u64) as usize];
                self.service_execute(id, ADD_BODY)
            })
            .collect();
        let level = self
            .plan
            .levels
            .get(self.plan.levels.len() / 2)
            .copied()
            .unwrap_or(1);
        let mut spec = self.spec(self.service_addr, subset, level);
        spec.pick = Pick::Random;
        spec.expect_body_contains = Some(ADD_EXPECT.into());
        let execute = self
            .load(
                &format!("{} sessions: execute subset", self.plan.n_sessions),
                &title,
                language,
                spec,
            )
            .await;
        let execute = match execute {
            Ok(row) => {
                if row.load.errors > 0 && self.plan.smoke {
                    self.measurements
                        .failures
                        .push(format!("many sessions execute: {} errors", row.load.errors));
                }
                Some(row)
            }
            Err(error) => {
                self.measurements
                    .failures
                    .push(format!("many sessions execute: {error:#}"));
                None
            }
        };
        self.measurements.many_sessions = Some(ManySessions {
            requested: self.plan.n_sessions,
            created,
            rss_before_bytes: rss_before,
            rss_after_bytes: rss_after,
            create: Some(create),
            execute,
        });
    }

    /// Many idle keep-alive connections held open while executes continue.
    pub async fn keep_alive(&mut self) {
        let Some((language, session)) =
            ["nodejs", "wasm", "python", "rust"]
                .into_iter()
                .find_map(|language| {
                    self.measurements
                        .runtimes
                        .sessions
                        .get(language)
                        .map(|session| (language.to_string(), session.clone()))
                })
        else {
            return;
        };
        let level = self
            .plan
            .levels
            .get(self.plan.levels.len() / 2)
            .copied()
            .unwrap_or(1);
        // Each idle connection costs one descriptor in the generator and one
        // in the service; keep a margin for workers, pipes and the database.
        let margin = 1024 + level as u64;
        let possible = self.measurements.fd_limit.saturating_sub(margin) as usize;
        let n_idle = self.plan.n_idle_connections.min(possible);
        if n_idle < self.plan.n_idle_connections {
            self.measurements.notes.push(format!(
                "keep-alive: the fd limit ({}) allows {n_idle} idle connections, not {}",
                self.measurements.fd_limit, self.plan.n_idle_connections
            ));
        }
        let mut spec = self.spec(
            self.service_addr,
            vec![self.service_execute(&session, ADD_BODY)],
            level,
        );
        spec.idle_connections = n_idle;
        spec.expect_body_contains = Some(ADD_EXPECT.into());
        self.record(
            &format!("keep-alive: {n_idle} idle conns"),
            &format!("{language}-add"),
            &language,
            spec,
        )
        .await;
        if let Some(row) = self.measurements.rows.last() {
            if let Some(idle) = &row.load.idle {
                if idle.alive_at_end < idle.requested {
                    self.measurements.notes.push(format!(
                        "keep-alive: {} of {} idle connections opened, {} still answered at the end{}",
                        idle.opened,
                        idle.requested,
                        idle.alive_at_end,
                        idle.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default()
                    ));
                }
            }
        }
    }

    /// The soak: warm executes over every language's trivial session,
    /// per-window latency and RSS.
    pub async fn soak(&mut self) {
        let sessions = self.measurements.runtimes.sessions.clone();
        if sessions.is_empty() {
            return;
        }
        let templates = sessions
            .values()
            .map(|session| self.service_execute(session, ADD_BODY))
            .collect();
        let level = self
            .plan
            .levels
            .get(self.plan.levels.len() / 2)
            .copied()
            .unwrap_or(1);
        let mut spec = self.spec(self.service_addr, templates, level);
        spec.duration_ms = self.plan.soak_ms;
        spec.window_ms = Some(self.plan.soak_window_ms);
        spec.expect_body_contains = Some(ADD_EXPECT.into());
        let subject = sessions
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("+");
        self.record("soak", &format!("{subject} (round robin)"), "mixed", spec)
            .await;
    }

    /// Stops the service gracefully and checks that no worker outlives it.
    pub fn stop_all(&mut self) {
        let workers = tree_identities(self.service.pid());
        if !self.service.stop() {
            self.measurements
                .failures
                .push("the service did not exit within 20 s of SIGTERM (killed)".into());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && workers.iter().any(ProcessIdentity::alive) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let survivors: Vec<_> = workers.iter().filter(|worker| worker.alive()).collect();
        if !survivors.is_empty() {
            self.measurements.failures.push(format!(
                "{} worker processes outlived the service (killed): {:?}",
                survivors.len(),
                survivors
                    .iter()
                    .map(|worker| worker.pid)
                    .collect::<Vec<_>>()
            ));
            for worker in survivors {
                worker.kill();
            }
        }
        self.baseline.stop();
    }
}

pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
