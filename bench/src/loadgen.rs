//! The load generator: a fixed number of HTTP/1.1 keep-alive connections,
//! each sending requests back to back (closed loop) for a fixed time, with
//! latencies recorded in HdrHistograms (per connection, merged at the end).
//!
//! It runs as its own process (`lambda-bench loadgen --spec FILE`), reads a
//! [`LoadSpec`] as JSON and prints a [`LoadResult`] as JSON on stdout. It only
//! ever connects to the loopback address it is given.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Latencies are recorded in microseconds, up to one minute.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;
/// At most this many distinct error messages are kept as samples.
const MAX_ERROR_SAMPLES: usize = 8;
/// How long a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request shape; the generator picks one per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestTemplate {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
}

/// How a connection picks the next template.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// Cycle through the templates (one cursor shared by all connections).
    RoundRobin,
    /// Uniformly at random, per request.
    Random,
    /// Each template exactly once over all connections, then stop.
    Once,
}

/// The load generator's CPU scheduling policy on Linux.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scheduling {
    /// `SCHED_BATCH`: the same CPU share as any other process, but a
    /// response that wakes a connection does not preempt the process that
    /// sent it. A client on another machine never takes the server's CPU;
    /// on the same two cores the normal policy's wake-up preemption
    /// switched the service out 0.4 to 0.5 times per WebAssembly execute
    /// (the baseline: 0.03), and cost the generator itself about twice the
    /// CPU per request against the service as against the baseline.
    #[default]
    Batch,
    /// `SCHED_OTHER`, as every run before this option had.
    Normal,
}

impl Scheduling {
    pub fn describe(self) -> &'static str {
        match self {
            Scheduling::Batch => {
                "SCHED_BATCH (its wake-ups do not preempt the process it measures)"
            }
            Scheduling::Normal => {
                "the normal scheduling policy (its wake-ups may preempt the process it measures)"
            }
        }
    }

    /// Applies the policy to the calling thread, and so to every thread
    /// it starts afterwards (the async runtime's workers).
    fn apply(self) -> anyhow::Result<()> {
        let policy = match self {
            Scheduling::Batch => libc::SCHED_BATCH,
            Scheduling::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler only reads the struct we pass; pid 0
        // is the calling thread.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("cannot switch the load generator to {self:?} scheduling")
            });
        }
        Ok(())
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    /// The target; must be a loopback address.
    pub addr: SocketAddr,
    pub requests: Vec<RequestTemplate>,
    pub pick: Pick,
    /// Active connections, each with one request in flight at a time.
    pub connections: usize,
    /// Unrecorded time before the measurement starts.
    pub warmup_ms: u64,
    /// Measured time.
    pub duration_ms: u64,
    /// A bound on the number of measured requests over all connections.
    pub max_requests: Option<u64>,
    /// Per-window statistics (for the soak), if set.
    pub window_ms: Option<u64>,
    /// Extra keep-alive connections opened (one GET each) and held idle
    /// while the active connections run; checked again at the end.
    #[serde(default)]
    pub idle_connections: usize,
    /// Each connection starts its requests at least this far apart
    /// (an arrival rate rather than a closed loop), if set.
    #[serde(default)]
    pub pace_ms: Option<u64>,
    /// Responses with another status are errors.
    pub expect_status: u16,
    /// Responses whose body lacks this text are errors.
    pub expect_body_contains: Option<String>,
    #[serde(default)]
    pub scheduling: Scheduling,
}

/// Latency summary, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// One window of the measured time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    pub start_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub latency: Latency,
}

/// What happened to the idle keep-alive connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    pub requested: usize,
    pub opened: usize,
    pub alive_at_end: usize,
    pub first_error: Option<String>,
}

/// What the generator measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub connections: usize,
    pub connected: usize,
    pub requests: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub status_counts: BTreeMap<u16, u64>,
    pub elapsed_s: f64,
    pub rps: f64,
    pub latency: Latency,
    pub windows: Vec<Window>,
    pub idle: Option<IdleReport>,
    /// The load generator's own CPU time (user + system), seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
}

struct Shared {
    spec: LoadSpec,
    requests: Vec<hyper::Request<Full<Bytes>>>,
    measured: AtomicU64,
    cursor: AtomicU64,
}

#[derive(Default)]
struct ConnectionTally {
    requests: u64,
    errors: u64,
    error_samples: Vec<String>,
    status_counts: BTreeMap<u16, u64>,
    windows: Vec<(u64, u64, Option<Histogram<u64>>)>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).context("cannot create a histogram")
}

fn build_request(
    addr: SocketAddr,
    template: &RequestTemplate,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(template.method.as_str())
        .uri(template.path.as_str())
        .header("host", addr.to_string());
    if !template.body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in &template.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(template.body.clone())))
        .with_context(|| format!("bad request template {} {}", template.method, template.path))
}

fn clone_request(request: &hyper::Request<Full<Bytes>>) -> hyper::Request<Full<Bytes>> {
    let mut copy = hyper::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true).context("set_nodelay")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole body: Ok(status, body) or an error text.
async fn round_trip(
    sender: &mut SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|error| format!("connection: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request: {error}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("body: {error}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no response within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A small deterministic generator for picking templates (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

async fn drive_connection(
    shared: Arc<Shared>,
    index: usize,
    measure_from: Instant,
    deadline: Instant,
) -> anyhow::Result<(Histogram<u64>, ConnectionTally, bool)> {
    let spec = &shared.spec;
    let mut histogram = new_histogram()?;
    let mut tally = ConnectionTally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) * 0x1000_0001));
    let expect = spec.expect_body_contains.as_deref().map(str::as_bytes);
    let window = spec.window_ms.map(Duration::from_millis);
    let mut sender = match connect(spec.addr).await {
        Ok(sender) => Some(sender),
        Err(error) => {
            tally.errors += 1;
            tally.error_samples.push(format!("{error:#}"));
            None
        }
    };
    let connected = sender.is_some();
    let mut previous_start: Option<Instant> = None;
    // Bounded: ends at the deadline, or after max_requests measured ones.
    while Instant::now() < deadline {
        let Some(active) = sender.as_mut() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender = connect(spec.addr).await.ok();
            continue;
        };
        let n_templates = shared.requests.len() as u64;
        let template = match spec.pick {
            Pick::RoundRobin => {
                (shared.cursor.fetch_add(1, Ordering::Relaxed) % n_templates) as usize
            }
            Pick::Random => (rng.next() % n_templates) as usize,
            Pick::Once => {
                let next = shared.cursor.fetch_add(1, Ordering::Relaxed);
                if next >= n_templates {
                    break;
                }
                next as usize
            }
        };
        if let (Some(pace), Some(previous)) = (spec.pace_ms, previous_start) {
            tokio::time::sleep_until((previous + Duration::from_millis(pace)).into()).await;
        }
        let request = clone_request(&shared.requests[template]);
        let started = Instant::now();
        previous_start = Some(started);
        let outcome = round_trip(active, request).await;
        let finished = Instant::now();
        if started < measure_from || finished > deadline {
            if outcome.is_err() {
                sender = None;
            }
            continue;
        }
        if let Some(limit) = spec.max_requests {
            if shared.measured.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        let micros = (finished - started)
            .as_micros()
            .clamp(1, u128::from(HISTOGRAM_MAX_MICROS)) as u64;
        let error = match outcome {
            Ok((status, body)) => {
                *tally.status_counts.entry(status).or_default() += 1;
                if status != spec.expect_status {
                    Some(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ))
                } else if expect.is_some_and(|needle| !contains(&body, needle)) {
                    Some(format!(
                        "unexpected body: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ))
                } else {
                    None
                }
            }
            Err(text) => {
                sender = None;
                Some(text)
            }
        };
        tally.requests += 1;
        histogram.record(micros).context("record latency")?;
        if let Some(text) = &error {
            tally.errors += 1;
            if tally.error_samples.len() < MAX_ERROR_SAMPLES && !tally.error_samples.contains(text)
            {
                tally.error_samples.push(text.clone());
            }
        }
        if let Some(window) = window {
            let slot = ((started - measure_from).as_nanos() / window.as_nanos().max(1)) as usize;
            while tally.windows.len() <= slot {
                tally.windows.push((0, 0, None));
            }
            let entry = &mut tally.windows[slot];
            entry.0 += 1;
            if error.is_some() {
                entry.1 += 1;
            }
            let window_histogram = match &mut entry.2 {
                Some(existing) => existing,
                None => entry.2.insert(new_histogram()?),
            };
            window_histogram.record(micros).context("record latency")?;
        }
    }
    Ok((histogram, tally, connected))
}

/// Opens `count` keep-alive connections with one GET /health each.
async fn open_idle(
    addr: SocketAddr,
    count: usize,
    report: &mut IdleReport,
) -> Vec<SendRequest<Full<Bytes>>> {
    let mut senders = Vec::with_capacity(count);
    let health = hyper::Request::builder()
        .method("GET")
        .uri("/health")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()));
    let Ok(health) = health else {
        return senders;
    };
    let mut pending = tokio::task::JoinSet::new();
    // Open in batches of 256 to keep the accept queue from overflowing.
    for batch_start in (0..count).step_by(256) {
        for _ in batch_start..(batch_start + 256).min(count) {
            let request = clone_request(&health);
            pending.spawn(async move {
                let mut sender = connect(addr).await.map_err(|error| format!("{error:#}"))?;
                round_trip(&mut sender, request).await?;
                Ok::<_, String>(sender)
            });
        }
        while let Some(joined) = pending.join_next().await {
            match joined {
                Ok(Ok(sender)) => senders.push(sender),
                Ok(Err(text)) => {
                    report.first_error.get_or_insert(text);
                }
                Err(error) => {
                    report.first_error.get_or_insert(error.to_string());
                }
            }
        }
    }
    report.opened = senders.len();
    senders
}

/// Sends one more GET /health on each idle connection; counts the ones that answer.
async fn check_idle(addr: SocketAddr, senders: Vec<SendRequest<Full<Bytes>>>) -> usize {
    let mut alive = 0;
    let mut pending = tokio::task::JoinSet::new();
    let mut senders = senders.into_iter();
    loop {
        let batch: Vec<_> = senders.by_ref().take(256).collect();
        if batch.is_empty() {
            break;
        }
        for mut sender in batch {
            let request = hyper::Request::builder()
                .method("GET")
                .uri("/health")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()));
            pending.spawn(async move {
                match request {
                    Ok(request) => round_trip(&mut sender, request)
                        .await
                        .is_ok_and(|(status, _)| status == 200),
                    Err(_) => false,
                }
            });
        }
        while let Some(joined) = pending.join_next().await {
            if joined.unwrap_or(false) {
                alive += 1;
            }
        }
    }
    alive
}

/// Runs a spec to completion.
pub async fn run(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    if !spec.addr.ip().is_loopback() {
        bail!(
            "the load generator only targets loopback addresses, not {}",
            spec.addr
        );
    }
    if spec.requests.is_empty() || spec.connections == 0 {
        bail!("a load spec needs at least one request template and one connection");
    }
    let requests = spec
        .requests
        .iter()
        .map(|template| build_request(spec.addr, template))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut idle_report = IdleReport {
        requested: spec.idle_connections,
        ..IdleReport::default()
    };
    let idle = if spec.idle_connections > 0 {
        open_idle(spec.addr, spec.idle_connections, &mut idle_report).await
    } else {
        Vec::new()
    };
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        requests,
        measured: AtomicU64::new(0),
        cursor: AtomicU64::new(0),
    });
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(spec.warmup_ms);
    let deadline = measure_from + Duration::from_millis(spec.duration_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..spec.connections {
        tasks.spawn(drive_connection(
            shared.clone(),
            index,
            measure_from,
            deadline,
        ));
    }
    let mut merged = new_histogram()?;
    let mut result = LoadResult {
        connections: spec.connections,
        ..LoadResult::default()
    };
    let mut windows: Vec<(u64, u64, Histogram<u64>)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (histogram, tally, connected) = joined.context("a connection task failed")??;
        merged.add(&histogram).context("merge histograms")?;
        result.requests += tally.requests;
        result.errors += tally.errors;
        if connected {
            result.connected += 1;
        }
        for sample in tally.error_samples {
            if result.error_samples.len() < MAX_ERROR_SAMPLES
                && !result.error_samples.contains(&sample)
            {
                result.error_samples.push(sample);
            }
        }
        for (status, count) in tally.status_counts {
            *result.status_counts.entry(status).or_default() += count;
        }
        for (slot, (requests, errors, histogram)) in tally.windows.into_iter().enumerate() {
            while windows.len() <= slot {
                windows.push((0, 0, new_histogram()?));
            }
            windows[slot].0 += requests;
            windows[slot].1 += errors;
            if let Some(histogram) = histogram {
                windows[slot]
                    .2
                    .add(&histogram)
                    .context("merge histograms")?;
            }
        }
    }
    let measured_end = Instant::now().min(deadline);
    result.elapsed_s = measured_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    result.rps = if result.elapsed_s > 0.0 {
        result.requests as f64 / result.elapsed_s
    } else {
        0.0
    };
    result.latency = Latency::of(&merged);
    if let Some(window_ms) = spec.window_ms {
        let window_s = window_ms as f64 / 1000.0;
        result.windows = windows
            .into_iter()
            .enumerate()
            .map(|(slot, (requests, errors, histogram))| Window {
                start_s: slot as f64 * window_s,
                requests,
                errors,
                rps: requests as f64 / window_s,
                latency: Latency::of(&histogram),
            })
            .collect();
    }
    if spec.idle_connections > 0 {
        idle_report.alive_at_end = check_idle(spec.addr, idle).await;
        result.idle = Some(idle_report);
    }
    result.cpu_seconds = own_cpu_seconds();
    Ok(result)
}

fn own_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The `loadgen` subcommand: spec file in, result JSON on stdout.
pub fn main(spec_path: &std::path::Path) -> anyhow::Result<()> {
    crate::procfs::raise_fd_limit();
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let spec: LoadSpec = serde_json::from_str(&text).context("invalid load spec")?;
    // Before the runtime starts its worker threads, so that they inherit it.
    spec.scheduling.apply()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(spec))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
