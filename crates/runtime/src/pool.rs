//! Warm worker pools, language-agnostic.
//!
//! A [`WorkerPool`] runs worker processes that speak runtimes/PROTOCOL.md. A
//! [`WorkerProgram`] says how to start one (Node.js, Python, a compiled Rust
//! harness); the pool does the rest:
//!
//! - **blank workers**: started ahead of demand (`blank_workers_per_language`)
//!   so specializing one for a script costs a `load` frame, not a process
//!   start;
//! - **one script per worker for life**: a worker is specialized for one
//!   `Script::worker_key` and never runs anything else;
//! - **affinity**: an execute takes an idle worker of its key; `prepare`
//!   leaves one warm so the first execute is already warm;
//! - **one request at a time per worker**; under load a key gets more
//!   workers (from the blank pool, or new ones) up to
//!   `max_workers_per_script`; past that, or while a specialization for
//!   the key is in flight, requests queue per key and a checked-in worker
//!   goes straight to the oldest of them (first come, first served);
//! - **write-ahead**: a worker whose executes are short gets the next
//!   queued request's frame written behind the one it is running, so it
//!   reads it the moment it answers instead of sleeping until the service
//!   writes it (a sleep and a wake-up per execute, the largest part of a
//!   short execute's cost on a busy machine);
//! - **cap** (`max_workers_per_language`) on live processes; idle
//!   specialized workers are evicted least-recently-used to make room;
//!   past the cap a request waits up to `queue_wait`, then `Busy`;
//! - **replacement**: a worker that dies, times out or hits a limit is
//!   killed and its slot freed; blank workers are topped up in the
//!   background, specialized ones are re-created on the next request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::{oneshot, Notify};

use crate::config::RuntimeConfig;
use crate::frame::{self, ErrorKind, FrameError, Response};
use crate::sandbox::{self, SandboxFile, SandboxMode, SandboxSpec, WorkerIdentity};
use crate::{
    Language, LanguageRuntime, LimitKind, Limits, Output, Prepared, RuntimeError, RuntimeStatus,
    Script, SourceLocation,
};

/// Memory and process limits are fixed when a worker starts; a worker only
/// serves requests whose limits match the ones it was started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    pub memory_bytes: u64,
    pub max_processes: u32,
}

impl From<&Limits> for WorkerLimits {
    fn from(limits: &Limits) -> Self {
        WorkerLimits {
            memory_bytes: limits.memory_bytes,
            max_processes: limits.max_processes,
        }
    }
}

/// How to start one kind of worker. Implemented per language.
pub trait WorkerProgram: Send + Sync + 'static {
    fn language(&self) -> Language;

    /// The file name the user's script is loaded under; error positions
    /// and stack frames refer to it.
    fn script_filename(&self) -> &str;

    /// Whether a worker can start before it knows its script. Interpreters
    /// can (blank workers); a compiled harness cannot.
    fn supports_blank_workers(&self) -> bool {
        true
    }

    /// The process to start. `script` is `Some` only for programs without
    /// blank workers.
    fn spec(
        &self,
        limits: &WorkerLimits,
        script: Option<&Script>,
    ) -> Result<SandboxSpec, RuntimeError>;

    /// Recognizes a limit from the tail of a dead worker's stdout/stderr
    /// (e.g. V8's "heap out of memory").
    fn crash_kind(&self, _diagnostics: &str) -> Option<LimitKind> {
        None
    }

    /// How a script of this language exits its worker on purpose (e.g.
    /// `process.exit`), named when a worker exits mid-request so the user
    /// recognizes their own call; `None` says only the exit status.
    fn exit_calls(&self) -> Option<&'static str> {
        None
    }
}

/// Pool sizing and waiting.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub blank_workers: usize,
    pub max_workers: usize,
    pub max_workers_per_script: usize,
    pub queue_wait: Duration,
    pub start_timeout: Duration,
    pub spawn_limits: WorkerLimits,
}

impl From<&RuntimeConfig> for PoolSettings {
    fn from(config: &RuntimeConfig) -> Self {
        PoolSettings {
            blank_workers: config.blank_workers_per_language,
            max_workers: config.max_workers_per_language.max(1),
            max_workers_per_script: config.max_workers_per_script.max(1),
            queue_wait: config.queue_wait,
            start_timeout: config.start_timeout,
            spawn_limits: WorkerLimits::from(&config.spawn_limits),
        }
    }
}

/// What a worker is doing, for introspection and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Blank,
    Idle,
    Busy,
}

/// One live worker as [`WorkerPool::workers`] reports it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Host pid of the process the pool started (bwrap in sandbox mode;
    /// killing it takes the whole sandbox down).
    pub pid: u32,
    pub worker_key: Option<String>,
    pub state: WorkerState,
}

const DIAGNOSTICS_TAIL_BYTES: usize = 4096;

/// How long shutdown waits for starting and busy workers; see
/// [`WorkerPool::wait_stopped`].
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// See [`Inner::replenish_soon`].
const REFILL_QUIET: Duration = Duration::from_millis(20);
const REFILL_MAX_DEFER: Duration = Duration::from_millis(250);

/// The last few KiB a worker wrote to fd 1/2. Drained continuously so a
/// flooding worker never blocks and never grows service memory.
struct DiagnosticsTail {
    tail: Mutex<VecDeque<u8>>,
    finished: AtomicBool,
    finished_notify: Notify,
}

impl DiagnosticsTail {
    fn start(mut receiver: pipe::Receiver) -> Arc<Self> {
        let this = Arc::new(DiagnosticsTail {
            tail: Mutex::new(VecDeque::with_capacity(DIAGNOSTICS_TAIL_BYTES)),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
        });
        let drain = Arc::clone(&this);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match receiver.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut tail = lock(&drain.tail);
                        let chunk = &buf[n.saturating_sub(DIAGNOSTICS_TAIL_BYTES)..n];
                        let overflow =
                            (tail.len() + chunk.len()).saturating_sub(DIAGNOSTICS_TAIL_BYTES);
                        let n_drop = overflow.min(tail.len());
                        tail.drain(..n_drop);
                        tail.extend(chunk);
                    }
                }
            }
            drain.finished.store(true, Ordering::Release);
            drain.finished_notify.notify_waiters();
        });
        this
    }

    async fn wait_finished(&self, within: Duration) {
        let notified = self.finished_notify.notified();
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(within, notified).await;
    }

    fn text(&self) -> String {
        let tail = lock(&self.tail);
        let (a, b) = tail.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A poisoned lock only means another task panicked mid-update of plain
/// counters; carrying on beats taking the whole runtime down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Worker {
    id: u64,
    pid: u32,
    child: Child,
    requests: pipe::Sender,
    responses: pipe::Receiver,
    diagnostics: Arc<DiagnosticsTail>,
    key: Option<Arc<str>>,
    limits: WorkerLimits,
    last_used: Instant,
    buf: Vec<u8>,
    /// How long its last execute took (write to answer): write-ahead is
    /// only for workers whose executes are short.
    last_exchange: Duration,
}

impl Worker {
    fn is_dead(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Why the worker went away mid-request, from its exit status and the
    /// tail of its diagnostics.
    async fn death_error(&mut self, program: &dyn WorkerProgram) -> (RuntimeError, &'static str) {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        self.diagnostics
            .wait_finished(Duration::from_millis(500))
            .await;
        let tail = self.diagnostics.text();
        if let Some(kind) = program.crash_kind(&tail) {
            return (
                RuntimeError::ResourceLimit {
                    kind,
                    detail: last_line(&tail),
                },
                limit_reason(kind),
            );
        }
        let how = match status {
            Ok(Ok(status)) => describe_exit(status, program.exit_calls()),
            _ => "stopped answering".to_string(),
        };
        (
            RuntimeError::Script {
                message: format!("the worker running this script {how} before returning a result"),
                location: SourceLocation::default(),
                stack_trace: None,
                logs: Vec::new(),
            },
            "crashed",
        )
    }
}

fn describe_exit(status: std::process::ExitStatus, exit_calls: Option<&str>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        // bwrap reports a child killed by signal N as exit code 128 + N.
        (Some(code), _) if code > 128 && code < 160 => {
            format!("was killed by signal {}", code - 128)
        }
        (Some(code), _) => match exit_calls {
            Some(calls) => format!("exited with status {code} ({calls})"),
            None => format!("exited with status {code}"),
        },
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited".to_string(),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(300)
        .collect()
}

fn limit_reason(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Memory => "memory",
        LimitKind::ResultSize => "result_size",
        LimitKind::OutputSize => "output_size",
        LimitKind::Processes => "processes",
    }
}

#[derive(Default)]
struct State {
    blank: Vec<Worker>,
    idle: HashMap<Arc<str>, Vec<Worker>>,
    /// Specializations in flight per key: later requests for the key wait
    /// for them rather than starting another.
    loading: HashMap<Arc<str>, usize>,
    /// Requests waiting for a worker of their key (its workers are all
    /// busy and it may not have more), oldest first. A worker checked in
    /// goes straight to the first of them with the same limits: first come,
    /// first served, and one wake-up per hand-off instead of every waiter
    /// racing for every returned worker.
    waiting: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Every process holding a slot: blank, idle, busy, starting.
    n_live: usize,
    n_busy: usize,
    n_blank_starting: usize,
    infos: HashMap<u64, WorkerInfo>,
    closed: bool,
    /// When a request last took or returned a worker.
    last_active: Option<Instant>,
    /// A deferred refill is waiting for a quiet moment.
    refill_deferred: bool,
}

impl State {
    fn n_idle(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Live workers specialized (or being specialized) for `key`. A worker
    /// just loaded for its first execute shows no key until checked in:
    /// the count may be one short for that moment.
    fn n_holding(&self, key: &str) -> usize {
        let loading = self.loading.get(key).copied().unwrap_or(0);
        let keyed = self
            .infos
            .values()
            .filter(|info| info.worker_key.as_deref() == Some(key))
            .count();
        loading + keyed
    }

    /// Removes the least recently used idle specialized worker.
    fn take_lru_idle(&mut self) -> Option<Worker> {
        let (key, index) = self
            .idle
            .iter()
            .flat_map(|(key, workers)| {
                workers
                    .iter()
                    .enumerate()
                    .map(move |(i, w)| (key, i, w.last_used))
            })
            .min_by_key(|(_, _, used)| *used)
            .map(|(key, i, _)| (Arc::clone(key), i))?;
        let workers = self.idle.get_mut(&key)?;
        let worker = workers.remove(index);
        if workers.is_empty() {
            self.idle.remove(&key);
        }
        Some(worker)
    }
}

struct Inner {
    program: Arc<dyn WorkerProgram>,
    mode: SandboxMode,
    /// `setpriv` when workers get their own host uid (see
    /// [`WorkerIdentity::HostUid`]).
    setpriv: Option<std::path::PathBuf>,
    settings: PoolSettings,
    state: Mutex<State>,
    changed: Notify,
    /// Fewer workers may now hold some key (one died, was killed, or a
    /// specialization ended): what requests queued for a key wake on. They
    /// do not wake on `changed`, which fires on every check-in to idle.
    holders_changed: Notify,
    next_id: AtomicU64,
    language: &'static str,
    handles: PoolMetrics,
}

/// The pool's `lambda_runtime_workers` gauges and its per-execute
/// histograms, registered once: a lookup by name and labels hashes them and
/// probes the registry (about 1% of the service's CPU under load for the
/// two histograms), and `publish` runs under the pool lock on every
/// check-out and check-in.
struct PoolMetrics {
    blank: metrics::Gauge,
    idle: metrics::Gauge,
    busy: metrics::Gauge,
    starting: metrics::Gauge,
    queue_wait: metrics::Histogram,
    /// `lambda_runtime_execution_duration_seconds` for the two outcomes
    /// that keep the worker; a kill's reason labels its own, rarely.
    executed_ok: metrics::Histogram,
    executed_error: metrics::Histogram,
}

impl PoolMetrics {
    fn register(language: &'static str) -> PoolMetrics {
        let gauge = |state: &'static str| metrics::gauge!("lambda_runtime_workers", "language" => language, "state" => state);
        let executed = |outcome: &'static str| metrics::histogram!(EXECUTION_DURATION, "language" => language, "outcome" => outcome);
        PoolMetrics {
            blank: gauge("blank"),
            idle: gauge("idle"),
            busy: gauge("busy"),
            starting: gauge("starting"),
            queue_wait: metrics::histogram!("lambda_runtime_queue_wait_seconds", "language" => language),
            executed_ok: executed("ok"),
            executed_error: executed("error"),
        }
    }
}

const EXECUTION_DURATION: &str = "lambda_runtime_execution_duration_seconds";

/// A worker pool for one language. Cheap to clone.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

enum Plan {
    Warm(Worker),
    Load(Worker),
    Spawn,
    /// Wait for the pool to change (a slot, a blank worker).
    Wait,
    /// Wait in the key's queue for a worker handed over at check-in (or
    /// for the pool to change).
    Queue(oneshot::Receiver<Lease>, u64),
}

/// A request queued for a worker of its key.
struct Waiter {
    /// Tells this entry apart when its request gives up.
    ticket: u64,
    limits: WorkerLimits,
    /// The execute frame, for write-ahead (`None` for `prepare`).
    frame: Option<Arc<[u8]>>,
    sender: oneshot::Sender<Lease>,
}

/// A request whose frame was written ahead into a leased worker's pipe:
/// that worker is passed on to it when the requests before it are done,
/// and nobody else may read the answer that is its.
struct Successor {
    sender: oneshot::Sender<Lease>,
}

/// Frames up to this size are written ahead. A pipe write of at most
/// `PIPE_BUF` bytes is atomic, so a non-blocking one either puts the whole
/// frame in the pipe or nothing, and never waits on a worker that is busy.
const WRITE_AHEAD_MAX_FRAME: usize = libc::PIPE_BUF;

/// Write-ahead binds the next request to this worker, which a long execute
/// would hold up while another worker of the key comes free: only workers
/// whose last execute took less than this get one. An execute of a trivial
/// script on a loaded 2-core machine often takes over 2 ms from write to
/// answer (most of it waiting for a CPU): under Node.js load at 32
/// connections a bound of 2 ms spared the worker a sleep on about a quarter
/// of executes, 20 ms on a third. 20 ms is then about the most a request
/// waits behind each unexpectedly long execute ahead of it for having been
/// written ahead.
const WRITE_AHEAD_MAX_EXCHANGE: Duration = Duration::from_millis(20);

/// Frames written ahead behind the one a worker runs. With one, the worker
/// still slept before about 85% of executes under Node.js and Python load
/// at 32 connections: it read the frame written ahead as it answered, and
/// finished that execute before the service had read the answer, passed
/// the worker on and written the next frame. With two it slept before
/// 70 to 75% (Python 16.7k to 19.2k req/s in that measurement), and about
/// 41% once workers ran as `SCHED_BATCH` (see `sandbox`).
const WRITE_AHEAD_DEPTH: usize = 2;

/// A worker taken out of the pool for one request. Dropping it without
/// [`Lease::checkin`] kills the worker: a request cancelled mid-flight leaves
/// the worker in an unknown state.
struct Lease {
    inner: Arc<Inner>,
    worker: Option<Worker>,
    /// This request's frame is already in the worker's pipe (written ahead).
    frame_sent: bool,
    /// The requests written ahead behind this one, oldest first. Dropped
    /// with the lease when the worker is killed: each then looks for a
    /// worker again.
    successors: VecDeque<Successor>,
}

impl Lease {
    fn new(inner: &Arc<Inner>, worker: Worker) -> Lease {
        Lease {
            inner: Arc::clone(inner),
            worker: Some(worker),
            frame_sent: false,
            successors: VecDeque::new(),
        }
    }

    fn worker(&mut self) -> Result<&mut Worker, RuntimeError> {
        self.worker
            .as_mut()
            .ok_or_else(|| RuntimeError::Internal("worker lease already returned".into()))
    }

    fn checkin(mut self) {
        if let Some(worker) = self.worker.take() {
            let mut successors = std::mem::take(&mut self.successors);
            match successors.pop_front() {
                Some(next) => self.inner.pass_on(worker, next, successors),
                None => self.inner.checkin(worker),
            }
        }
    }

    fn kill(mut self, reason: &'static str) {
        if let Some(worker) = self.worker.take() {
            self.inner.discard_busy(worker, reason);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.inner.discard_busy(worker, "cancelled");
        }
    }
}

/// Holds a slot (counted in `n_live`) while a process starts; gives it back
/// if the start fails or the request is cancelled.
struct SlotReservation {
    inner: Arc<Inner>,
    armed: bool,
}

impl Drop for SlotReservation {
    fn drop(&mut self) {
        if self.armed {
            let mut state = lock(&self.inner.state);
            state.n_live = state.n_live.saturating_sub(1);
            self.inner.publish(&state);
            drop(state);
            self.inner.changed.notify_waiters();
        }
    }
}

/// Marks a specialization of `key` in flight.
struct LoadingMark {
    inner: Arc<Inner>,
    key: Arc<str>,
}

impl Drop for LoadingMark {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some(n) = state.loading.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.loading.remove(&self.key);
            }
        }
        drop(state);
        self.inner.changed.notify_waiters();
        self.inner.holders_changed.notify_waiters();
    }
}

impl Inner {
    fn publish(&self, state: &State) {
        let n_blank = state.blank.len();
        let n_idle = state.n_idle();
        let n_starting = state.n_live.saturating_sub(n_blank + n_idle + state.n_busy);
        self.handles.blank.set(n_blank as f64);
        self.handles.idle.set(n_idle as f64);
        self.handles.busy.set(state.n_busy as f64);
        self.handles.starting.set(n_starting as f64);
    }

    fn set_info(state: &mut State, worker: &Worker, worker_state: WorkerState) {
        state.infos.insert(
            worker.id,
            WorkerInfo {
                pid: worker.pid,
                worker_key: worker.key.as_deref().map(str::to_string),
                state: worker_state,
            },
        );
    }

    fn count_kill(&self, reason: &'static str) {
        metrics::counter!("lambda_runtime_worker_kills_total", "language" => self.language, "reason" => reason)
            .increment(1);
    }

    /// Kills a worker that is no longer counted anywhere but in `n_live`.
    fn kill_process(&self, mut worker: Worker, reason: &'static str) {
        tracing::debug!(
            language = self.language,
            pid = worker.pid,
            reason,
            "killing worker"
        );
        self.count_kill(reason);
        // SIGKILL now; tokio reaps the process in the background once the
        // handle is dropped (kill_on_drop is set).
        let _ = worker.child.start_kill();
    }

    /// Frees the slots of `workers`, already taken out of `state`'s lists,
    /// and kills them once the lock is released.
    fn kill_taken(
        &self,
        mut state: MutexGuard<'_, State>,
        workers: Vec<Worker>,
        reason: &'static str,
    ) {
        state.n_live = state.n_live.saturating_sub(workers.len());
        for worker in &workers {
            state.infos.remove(&worker.id);
        }
        self.publish(&state);
        drop(state);
        for worker in workers {
            self.kill_process(worker, reason);
        }
        self.changed.notify_waiters();
        self.holders_changed.notify_waiters();
    }

    fn checkin(self: &Arc<Self>, mut worker: Worker) {
        worker.last_used = Instant::now();
        let mut state = lock(&self.state);
        state.last_active = Some(worker.last_used);
        let key = worker.key.clone();
        if let Some(key) = key.as_ref().filter(|_| !state.closed) {
            match self.hand_over(&mut state, key, worker) {
                None => return,
                Some(unwanted) => worker = unwanted,
            }
        }
        state.n_busy = state.n_busy.saturating_sub(1);
        match key {
            Some(key) if !state.closed => {
                Self::set_info(&mut state, &worker, WorkerState::Idle);
                state.idle.entry(key).or_default().push(worker);
                self.publish(&state);
            }
            _ => {
                state.n_live = state.n_live.saturating_sub(1);
                state.infos.remove(&worker.id);
                self.publish(&state);
                drop(state);
                self.kill_process(worker, "shutdown");
            }
        }
        self.changed.notify_waiters();
    }

    /// Gives a checked-in worker (still counted busy) to the oldest request
    /// queued for `key` with its limits; returns it when nobody takes it.
    fn hand_over(
        self: &Arc<Self>,
        state: &mut State,
        key: &Arc<str>,
        mut worker: Worker,
    ) -> Option<Worker> {
        loop {
            let Some(queue) = state.waiting.get_mut(key) else {
                return Some(worker);
            };
            let next = queue
                .iter()
                .position(|waiter| waiter.limits == worker.limits)
                .and_then(|index| queue.remove(index));
            if queue.is_empty() {
                state.waiting.remove(key);
            }
            let Some(Waiter { sender, .. }) = next else {
                return Some(worker);
            };
            Self::set_info(state, &worker, WorkerState::Busy);
            let lease = Lease::new(self, worker);
            match sender.send(lease) {
                Ok(()) => return None,
                // That request gave up (timed out or was cancelled).
                Err(mut lease) => worker = lease.worker.take()?,
            }
        }
    }

    /// Gives a worker straight to the oldest request whose frame was
    /// written ahead into it (the worker stays busy); the requests written
    /// ahead behind that one go with the lease.
    fn pass_on(
        self: &Arc<Self>,
        mut worker: Worker,
        successor: Successor,
        rest: VecDeque<Successor>,
    ) {
        worker.last_used = Instant::now();
        if lock(&self.state).closed {
            // The successors look again and learn of the shutdown.
            drop(successor);
            drop(rest);
            self.checkin(worker);
            return;
        }
        let mut lease = Lease::new(self, worker);
        lease.frame_sent = true;
        lease.successors = rest;
        if let Err(mut lease) = successor.sender.send(lease) {
            // It gave up after its frame was written: the worker's next
            // answer is for nobody, so the worker cannot be reused (and
            // the requests behind it look again).
            if let Some(worker) = lease.worker.take() {
                self.discard_busy(worker, "cancelled");
            }
        }
    }

    /// Writes the frames of the oldest requests queued for this worker's
    /// key behind the one the worker is running, up to
    /// [`WRITE_AHEAD_DEPTH`]: those requests become the lease's successors.
    /// Done only for small frames and workers whose last execute was
    /// short. `Err` means the pipe got part of a frame and the worker must
    /// go.
    fn write_ahead(&self, lease: &mut Lease) -> Result<(), ()> {
        let Some(worker) = lease.worker.as_ref() else {
            return Ok(());
        };
        let room = WRITE_AHEAD_DEPTH.saturating_sub(lease.successors.len());
        if room == 0 || worker.last_exchange >= WRITE_AHEAD_MAX_EXCHANGE {
            return Ok(());
        }
        let Some(key) = worker.key.as_ref() else {
            return Ok(());
        };
        // Taken off the queue under the lock, so that no check-in hands
        // them another worker; written after it is released. The write
        // wakes the worker, which often takes this CPU at once: with the
        // lock held through it, the other reactor thread's requests of
        // this language waited on the lock meanwhile (contention was 4% of
        // the service's CPU under Node.js load at 32 connections).
        let mut taken = Vec::with_capacity(room);
        {
            let mut state = lock(&self.state);
            let Some(queue) = state.waiting.get_mut(key) else {
                return Ok(());
            };
            // Requests that gave up (cancelled) leave their entries behind.
            queue.retain(|waiter| !waiter.sender.is_closed());
            while taken.len() < room {
                let Some(index) = queue.iter().position(|waiter| {
                    waiter.limits == worker.limits
                        && waiter
                            .frame
                            .as_ref()
                            .is_some_and(|frame| frame.len() <= WRITE_AHEAD_MAX_FRAME)
                }) else {
                    break;
                };
                let Some(waiter) = queue.remove(index) else {
                    break;
                };
                taken.push(waiter);
            }
            if queue.is_empty() {
                state.waiting.remove(key);
            }
        }
        let mut taken = taken.into_iter();
        for waiter in taken.by_ref() {
            let Some(frame) = waiter.frame.as_ref() else {
                break;
            };
            // At most `PIPE_BUF` bytes: all of the frame or nothing.
            match worker.requests.try_write(frame) {
                Ok(written) if written == frame.len() => lease.successors.push_back(Successor {
                    sender: waiter.sender,
                }),
                Ok(0) | Err(_) => break,
                Ok(_) => return Err(()),
            }
        }
        // Not written (a full pipe: a large frame still unread). Their
        // senders are dropped, so each of these requests looks for a
        // worker again, as it does when a worker it was written ahead
        // into is killed.
        drop(taken);
        Ok(())
    }

    /// Takes a request that gives up off its key's queue. `false` when it
    /// is no longer there: a worker was handed to it, or its frame was
    /// written ahead, and its receiver will say which.
    fn leave_queue(&self, key: &Arc<str>, ticket: u64) -> bool {
        let mut state = lock(&self.state);
        let Some(queue) = state.waiting.get_mut(key) else {
            return false;
        };
        let Some(index) = queue.iter().position(|waiter| waiter.ticket == ticket) else {
            return false;
        };
        queue.remove(index);
        if queue.is_empty() {
            state.waiting.remove(key);
        }
        true
    }

    fn discard_busy(self: &Arc<Self>, worker: Worker, reason: &'static str) {
        let mut state = lock(&self.state);
        state.n_busy = state.n_busy.saturating_sub(1);
        state.n_live = state.n_live.saturating_sub(1);
        state.infos.remove(&worker.id);
        self.publish(&state);
        drop(state);
        self.kill_process(worker, reason);
        self.changed.notify_waiters();
        self.holders_changed.notify_waiters();
        self.replenish();
    }

    /// Starts blank workers in the background until the target is met. At
    /// the cap, the least recently used idle specialized worker gives its
    /// slot to a blank one (a busy worker never does): otherwise, once
    /// specialized workers fill the cap, every new script would pay an
    /// eviction plus a sandboxed process start on its request path, while
    /// an evicted key only pays a `load` into a blank worker.
    fn replenish(self: &Arc<Self>) {
        if !self.program.supports_blank_workers() || self.settings.blank_workers == 0 {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        let mut n_start = 0;
        let mut evicted = Vec::new();
        while state.blank.len() + state.n_blank_starting < self.settings.blank_workers {
            // Blank workers never take the last slot by eviction: with as
            // many of them as the cap, every script would lose its warm
            // worker right after prepare.
            let leaves_a_slot =
                state.blank.len() + state.n_blank_starting + 1 < self.settings.max_workers;
            if state.n_live < self.settings.max_workers {
                state.n_live += 1;
            } else if let Some(victim) = leaves_a_slot.then(|| state.take_lru_idle()).flatten() {
                // The victim's slot passes straight to the new blank worker.
                state.infos.remove(&victim.id);
                evicted.push(victim);
            } else {
                break;
            }
            state.n_blank_starting += 1;
            n_start += 1;
        }
        self.publish(&state);
        drop(state);
        for victim in evicted {
            self.kill_process(victim, "evicted");
        }
        for _ in 0..n_start {
            let inner = Arc::clone(self);
            handle.spawn(async move {
                let limits = inner.settings.spawn_limits;
                let started = inner.start_worker(limits, None).await;
                let mut state = lock(&inner.state);
                state.n_blank_starting = state.n_blank_starting.saturating_sub(1);
                match started {
                    Ok(worker) if !state.closed => {
                        Self::set_info(&mut state, &worker, WorkerState::Blank);
                        state.blank.push(worker);
                    }
                    Ok(worker) => {
                        state.n_live = state.n_live.saturating_sub(1);
                        drop(state);
                        inner.kill_process(worker, "shutdown");
                        state = lock(&inner.state);
                    }
                    Err(error) => {
                        state.n_live = state.n_live.saturating_sub(1);
                        tracing::error!(language = inner.language, %error, "starting a blank worker failed");
                    }
                }
                inner.publish(&state);
                drop(state);
                inner.changed.notify_waiters();
            });
        }
    }

    /// Replaces a blank worker that was just taken once the pool has been
    /// quiet for [`REFILL_QUIET`] (no worker busy, none taken or returned),
    /// and at the latest [`REFILL_MAX_DEFER`] after the take. A process
    /// start costs tens of milliseconds of CPU: on a small machine it
    /// would otherwise compete with the executes that usually follow
    /// initialize right away. A fixed delay instead collided with whatever
    /// request came at that moment: with one new script every 250 ms, each
    /// initialize paid for the previous one's refill (benchmark, Node.js:
    /// p50 7.1 and 8.3 ms before, 4.6 and 4.5 ms with this).
    fn replenish_soon(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut state = lock(&self.state);
            if state.refill_deferred {
                // That refill fills the pool up to its target, this
                // worker's slot included.
                return;
            }
            state.refill_deferred = true;
        }
        let inner = Arc::clone(self);
        handle.spawn(async move {
            let latest = Instant::now() + REFILL_MAX_DEFER;
            loop {
                let now = Instant::now();
                let quiet_at = {
                    let state = lock(&inner.state);
                    if state.n_busy > 0 {
                        now + REFILL_QUIET
                    } else {
                        state.last_active.map_or(now, |at| at + REFILL_QUIET)
                    }
                };
                if quiet_at <= now || latest <= now {
                    break;
                }
                tokio::time::sleep(quiet_at.min(latest) - now).await;
            }
            lock(&inner.state).refill_deferred = false;
            inner.replenish();
        });
    }

    /// Starts a process and waits for its `ready` frame.
    async fn start_worker(
        &self,
        limits: WorkerLimits,
        script: Option<&Script>,
    ) -> Result<Worker, RuntimeError> {
        let spec = self.program.spec(&limits, script)?;
        let identity = match &self.setpriv {
            Some(setpriv) => WorkerIdentity::HostUid {
                setpriv: setpriv.clone(),
                uid: sandbox::next_worker_uid(),
            },
            None => WorkerIdentity::UserNamespace,
        };
        let process = sandbox::spawn_as(&self.mode, &spec, &identity).map_err(|e| {
            RuntimeError::Internal(format!("starting a {} worker failed: {e}", self.language))
        })?;
        metrics::counter!("lambda_runtime_worker_spawns_total", "language" => self.language)
            .increment(1);
        let pid = process.child.id().unwrap_or(0);
        tracing::debug!(
            language = self.language,
            pid,
            worker_key = ?script.map(|s| &s.worker_key),
            "worker started"
        );
        let diagnostics = DiagnosticsTail::start(process.diagnostics);
        let mut worker = Worker {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pid,
            child: process.child,
            requests: process.requests,
            responses: process.responses,
            diagnostics,
            key: None,
            limits,
            last_used: Instant::now(),
            buf: Vec::new(),
            last_exchange: Duration::MAX,
        };
        let ready = tokio::time::timeout(
            self.settings.start_timeout,
            frame::read_frame(&mut worker.responses, 64 * 1024, &mut worker.buf),
        )
        .await;
        let failure = match ready {
            Ok(Ok(())) => match frame::parse_response(&worker.buf) {
                Ok(Response::Ready { protocol, .. }) if protocol == frame::PROTOCOL_VERSION => {
                    return Ok(worker)
                }
                Ok(other) => format!("sent {other:?} instead of ready"),
                Err(e) => e.to_string(),
            },
            Ok(Err(e)) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
                worker
                    .diagnostics
                    .wait_finished(Duration::from_millis(500))
                    .await;
                format!("{e}: {}", last_line(&worker.diagnostics.text()))
            }
            Err(_) => format!("was not ready within {:?}", self.settings.start_timeout),
        };
        self.count_kill("start_failed");
        let _ = worker.child.start_kill();
        Err(RuntimeError::Internal(format!(
            "a {} worker failed to start: {failure}",
            self.language
        )))
    }

    /// Loads `script` into a started worker. On failure the worker is
    /// killed (its interpreter may hold half-run top-level code).
    async fn load(
        &self,
        worker: &mut Worker,
        script: &Script,
    ) -> Result<(), (RuntimeError, &'static str)> {
        let request = frame::load_frame(self.program.script_filename(), &script.source)
            .map_err(|e| (RuntimeError::Internal(e.to_string()), "protocol"))?;
        let exchange = async {
            frame::write_frame(&mut worker.requests, &request).await?;
            frame::read_frame(&mut worker.responses, 1024 * 1024, &mut worker.buf).await
        };
        match tokio::time::timeout(self.settings.start_timeout, exchange).await {
            Err(_) => Err((
                RuntimeError::Initialization {
                    message: format!(
                        "loading the script took longer than {} ms (top-level code must not block)",
                        self.settings.start_timeout.as_millis()
                    ),
                    location: SourceLocation::default(),
                },
                "timeout",
            )),
            Ok(Err(FrameError::Closed)) | Ok(Err(FrameError::Io(_))) => {
                let (error, reason) = worker.death_error(&*self.program).await;
                let error = match error {
                    RuntimeError::Script { message, .. } => RuntimeError::Initialization {
                        message: format!("while loading: {message}"),
                        location: SourceLocation::default(),
                    },
                    other => other,
                };
                Err((error, reason))
            }
            Ok(Err(e)) => Err((
                RuntimeError::Internal(format!("loading a script: {e}")),
                "protocol",
            )),
            Ok(Ok(())) => match frame::parse_response(&worker.buf) {
                Ok(Response::Loaded { .. }) => {
                    worker.key = Some(Arc::from(script.worker_key.as_str()));
                    Ok(())
                }
                Ok(Response::Error(e)) => Err((
                    RuntimeError::Initialization {
                        message: e.message,
                        location: SourceLocation {
                            line: e.line,
                            column: e.column,
                        },
                    },
                    "load_failed",
                )),
                Ok(other) => Err((
                    RuntimeError::Internal(format!("worker answered load with {other:?}")),
                    "protocol",
                )),
                Err(e) => Err((RuntimeError::Internal(e.to_string()), "protocol")),
            },
        }
    }

    /// Loads `script` into the leased worker: the lease back when it
    /// loaded, the worker killed when not. The lease is taken before the
    /// load so that a cancelled request gives the worker's slot back.
    async fn load_leased(
        &self,
        mut lease: Lease,
        script: &Script,
        mark: LoadingMark,
        started: Instant,
    ) -> Result<Lease, RuntimeError> {
        let loaded = self.load(lease.worker()?, script).await;
        if let (Ok(()), Some(worker)) = (&loaded, lease.worker.as_ref()) {
            // Shown under its key before the loading mark goes: in between,
            // n_holding would miss it and a queued request would specialize
            // one worker more than the script's cap.
            let mut state = lock(&self.state);
            Self::set_info(&mut state, worker, WorkerState::Busy);
        }
        drop(mark);
        match loaded {
            Ok(()) => {
                self.record_wait(started);
                Ok(lease)
            }
            Err((error, reason)) => {
                lease.kill(reason);
                Err(error)
            }
        }
    }

    /// A worker specialized for `script`, ready for one request.
    async fn checkout(
        self: &Arc<Self>,
        script: &Script,
        limits: WorkerLimits,
        frame: Option<&[u8]>,
    ) -> Result<Lease, RuntimeError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.settings.queue_wait;
        let key: Arc<str> = Arc::from(script.worker_key.as_str());
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let holders_changed = self.holders_changed.notified();
            tokio::pin!(holders_changed);
            holders_changed.as_mut().enable();

            let mut dead = Vec::new();
            let plan = {
                let mut state = lock(&self.state);
                if state.closed {
                    return Err(RuntimeError::Unavailable {
                        language: self.program.language(),
                        reason: "the runtime is shutting down".into(),
                    });
                }
                // The request's own start time: no clock read per attempt.
                state.last_active = state.last_active.max(Some(started));
                let mut plan = None;
                while let Some(mut worker) = state.idle.get_mut(&key).and_then(Vec::pop) {
                    if state.idle.get(&key).is_some_and(Vec::is_empty) {
                        state.idle.remove(&key);
                    }
                    if worker.limits != limits || worker.is_dead() {
                        state.n_live = state.n_live.saturating_sub(1);
                        state.infos.remove(&worker.id);
                        dead.push((worker, "dead_or_stale"));
                        continue;
                    }
                    plan = Some(Plan::Warm(worker));
                    break;
                }
                let plan = match plan {
                    Some(plan) => plan,
                    // A worker for this key is being loaded, or the script
                    // has all the workers it may have: queue for one of
                    // them rather than specializing another.
                    None if state.loading.get(&key).copied().unwrap_or(0) > 0
                        || state.n_holding(&key) >= self.settings.max_workers_per_script =>
                    {
                        let (sender, receiver) = oneshot::channel();
                        let ticket = self.next_id.fetch_add(1, Ordering::Relaxed);
                        state
                            .waiting
                            .entry(Arc::clone(&key))
                            .or_default()
                            .push_back(Waiter {
                                ticket,
                                limits,
                                // Copied only for a request that queues.
                                frame: frame.map(Arc::from),
                                sender,
                            });
                        Plan::Queue(receiver, ticket)
                    }
                    None => {
                        let mut blank = None;
                        while let Some(index) = state.blank.iter().rposition(|w| w.limits == limits)
                        {
                            let mut worker = state.blank.swap_remove(index);
                            if worker.is_dead() {
                                state.n_live = state.n_live.saturating_sub(1);
                                state.infos.remove(&worker.id);
                                dead.push((worker, "dead_or_stale"));
                                continue;
                            }
                            blank = Some(worker);
                            break;
                        }
                        if let Some(worker) = blank {
                            Plan::Load(worker)
                        } else if state.n_blank_starting > 0 && limits == self.settings.spawn_limits
                        {
                            // A blank worker is about to be ready: waiting
                            // for it is no slower than starting another.
                            Plan::Wait
                        } else if state.n_live < self.settings.max_workers {
                            state.n_live += 1;
                            Plan::Spawn
                        } else if let Some(victim) = state.take_lru_idle() {
                            // The victim's slot passes straight to the new worker.
                            state.infos.remove(&victim.id);
                            dead.push((victim, "evicted"));
                            Plan::Spawn
                        } else if let Some(index) =
                            state.blank.iter().position(|w| w.limits != limits)
                        {
                            // A blank worker with other limits is worth less
                            // than a request that can run now.
                            let victim = state.blank.swap_remove(index);
                            state.infos.remove(&victim.id);
                            dead.push((victim, "evicted"));
                            Plan::Spawn
                        } else {
                            Plan::Wait
                        }
                    }
                };
                match &plan {
                    Plan::Warm(worker) => {
                        state.n_busy += 1;
                        Self::set_info(&mut state, worker, WorkerState::Busy);
                    }
                    Plan::Load(worker) => {
                        state.n_busy += 1;
                        Self::set_info(&mut state, worker, WorkerState::Busy);
                        *state.loading.entry(Arc::clone(&key)).or_default() += 1;
                    }
                    Plan::Spawn => {
                        *state.loading.entry(Arc::clone(&key)).or_default() += 1;
                    }
                    Plan::Wait | Plan::Queue(..) => {}
                }
                self.publish(&state);
                plan
            };
            for (worker, reason) in dead {
                self.kill_process(worker, reason);
            }

            match plan {
                Plan::Warm(worker) => {
                    self.record_wait(started);
                    return Ok(Lease::new(self, worker));
                }
                Plan::Load(worker) => {
                    let mark = LoadingMark {
                        inner: Arc::clone(self),
                        key: Arc::clone(&key),
                    };
                    self.replenish_soon();
                    let lease = Lease::new(self, worker);
                    return self.load_leased(lease, script, mark, started).await;
                }
                Plan::Spawn => {
                    let mark = LoadingMark {
                        inner: Arc::clone(self),
                        key: Arc::clone(&key),
                    };
                    let mut reservation = SlotReservation {
                        inner: Arc::clone(self),
                        armed: true,
                    };
                    let blank_ok = self.program.supports_blank_workers();
                    if blank_ok && limits == self.settings.spawn_limits {
                        // New scripts are coming faster than the deferred
                        // refill replaces blank workers, and this request
                        // starts a process anyway: start the blank ones
                        // now, beside it, for the next new scripts.
                        self.replenish();
                    }
                    let worker = self
                        .start_worker(limits, if blank_ok { None } else { Some(script) })
                        .await?;
                    reservation.armed = false;
                    {
                        let mut state = lock(&self.state);
                        state.n_busy += 1;
                        Self::set_info(&mut state, &worker, WorkerState::Busy);
                        self.publish(&state);
                    }
                    let lease = Lease::new(self, worker);
                    return self.load_leased(lease, script, mark, started).await;
                }
                Plan::Queue(mut receiver, ticket) => {
                    let timed_out = tokio::select! {
                        handed = &mut receiver => {
                            if let Ok(lease) = handed {
                                self.record_wait(started);
                                return Ok(lease);
                            }
                            // The queue was dropped (shutdown), or the
                            // worker this request's frame was written
                            // ahead into was killed: look again.
                            continue;
                        }
                        // A worker of some key died or a load ended: look
                        // again.
                        () = &mut holders_changed => false,
                        () = tokio::time::sleep_until(deadline) => true,
                    };
                    if !self.leave_queue(&key, ticket) {
                        // Off the queue already: a worker is on its way,
                        // or this frame is in one's pipe, and only this
                        // request may read its answer. That worker's own
                        // request is bounded by its timeout.
                        if let Ok(lease) = receiver.await {
                            self.record_wait(started);
                            return Ok(lease);
                        }
                        continue;
                    }
                    if timed_out {
                        self.record_wait(started);
                        return Err(RuntimeError::Busy {
                            language: self.program.language(),
                            waited_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                }
                Plan::Wait => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        self.record_wait(started);
                        return Err(RuntimeError::Busy {
                            language: self.program.language(),
                            waited_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                }
            }
        }
    }

    fn record_wait(&self, started: Instant) {
        self.handles
            .queue_wait
            .record(started.elapsed().as_secs_f64());
    }
}

/// How one execute went, and whether the worker survives it.
enum Exchange {
    Keep(Result<Output, RuntimeError>),
    Kill(RuntimeError, &'static str),
}

fn script_error(error: frame::WorkerError) -> RuntimeError {
    RuntimeError::Script {
        message: error.message,
        location: SourceLocation {
            line: error.line,
            column: error.column,
        },
        stack_trace: error.stack.filter(|s| !s.is_empty()),
        logs: error.logs,
    }
}

async fn exchange(lease: &mut Lease, request: &[u8], limits: &Limits, inner: &Inner) -> Exchange {
    // Logs travel JSON-escaped (up to 6 bytes per byte for control
    // characters); the bound only has to stop a runaway, not be tight.
    let max_frame = limits
        .max_result_bytes
        .saturating_add(limits.max_log_bytes.saturating_mul(6))
        .saturating_add(64 * 1024);
    let frame_sent = std::mem::take(&mut lease.frame_sent);
    let started = Instant::now();
    let io = async {
        if !frame_sent {
            let worker = lease.worker.as_mut().ok_or(FrameError::Closed)?;
            frame::write_frame(&mut worker.requests, request).await?;
        }
        // While the worker runs this request, the next ones' frames go
        // in behind it.
        inner.write_ahead(lease).map_err(|()| {
            FrameError::Malformed("a frame written ahead went in part only".into())
        })?;
        let worker = lease.worker.as_mut().ok_or(FrameError::Closed)?;
        frame::read_frame(&mut worker.responses, max_frame, &mut worker.buf).await
    };
    let outcome = tokio::time::timeout(limits.timeout, io).await;
    let Some(worker) = lease.worker.as_mut() else {
        return Exchange::Kill(
            RuntimeError::Internal("worker lease already returned".into()),
            "protocol",
        );
    };
    worker.last_exchange = started.elapsed();
    let program = &*inner.program;
    match outcome {
        Err(_) => Exchange::Kill(
            RuntimeError::Timeout {
                timeout_ms: limits.timeout.as_millis() as u64,
            },
            "timeout",
        ),
        Ok(Err(FrameError::TooLarge { len, max })) => Exchange::Kill(
            RuntimeError::ResourceLimit {
                kind: LimitKind::ResultSize,
                detail: format!("the worker sent {len} bytes, over the limit of {max}"),
            },
            "result_size",
        ),
        Ok(Err(FrameError::Closed)) | Ok(Err(FrameError::Io(_))) => {
            let (error, reason) = worker.death_error(program).await;
            Exchange::Kill(error, reason)
        }
        Ok(Err(FrameError::Malformed(e))) => Exchange::Kill(RuntimeError::Internal(e), "protocol"),
        Ok(Ok(())) => match frame::parse_response(&worker.buf) {
            Ok(Response::Result { result, logs, .. }) => {
                Exchange::Keep(Ok(Output { result, logs }))
            }
            Ok(Response::Error(error)) => match error.kind {
                ErrorKind::Script | ErrorKind::Initialization => {
                    Exchange::Keep(Err(script_error(error)))
                }
                ErrorKind::ResultSize => Exchange::Keep(Err(RuntimeError::ResourceLimit {
                    kind: LimitKind::ResultSize,
                    detail: error.message,
                })),
                ErrorKind::OutputSize => Exchange::Keep(Err(RuntimeError::ResourceLimit {
                    kind: LimitKind::OutputSize,
                    detail: error.message,
                })),
                // After a failed allocation or a fork bomb the interpreter
                // (and the processes it left) are not worth keeping.
                ErrorKind::Memory => Exchange::Kill(
                    RuntimeError::ResourceLimit {
                        kind: LimitKind::Memory,
                        detail: error.message,
                    },
                    "memory",
                ),
                ErrorKind::Processes => Exchange::Kill(
                    RuntimeError::ResourceLimit {
                        kind: LimitKind::Processes,
                        detail: error.message,
                    },
                    "processes",
                ),
            },
            Ok(other) => Exchange::Kill(
                RuntimeError::Internal(format!("worker answered execute with {other:?}")),
                "protocol",
            ),
            Err(e) => Exchange::Kill(RuntimeError::Internal(e.to_string()), "protocol"),
        },
    }
}

impl WorkerPool {
    /// A pool for `program`. Blank workers start in the background when
    /// called inside a tokio runtime.
    pub fn new(program: Arc<dyn WorkerProgram>, mode: SandboxMode, settings: PoolSettings) -> Self {
        let language = program.language().as_str();
        let setpriv = match &mode {
            SandboxMode::Bubblewrap { bwrap } => sandbox::host_uid_switch().filter(|setpriv| {
                let identity = WorkerIdentity::HostUid {
                    setpriv: setpriv.clone(),
                    uid: sandbox::next_worker_uid(),
                };
                match sandbox::probe_identity(bwrap, &identity) {
                    Ok(()) => true,
                    Err(reason) => {
                        tracing::warn!(
                            language,
                            %reason,
                            "cannot give workers their own host uid; using a user namespace \
                             (no per-worker process limit)"
                        );
                        false
                    }
                }
            }),
            SandboxMode::Insecure => None,
        };
        let inner = Arc::new(Inner {
            program,
            mode,
            setpriv,
            settings,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            holders_changed: Notify::new(),
            next_id: AtomicU64::new(1),
            language,
            handles: PoolMetrics::register(language),
        });
        inner.replenish();
        WorkerPool { inner }
    }

    /// Loads `script` into a worker (reporting load errors) and leaves that
    /// worker warm for `script.worker_key`.
    pub async fn prepare(&self, script: &Script) -> Result<(), RuntimeError> {
        let lease = self
            .inner
            .checkout(script, self.inner.settings.spawn_limits, None)
            .await?;
        lease.checkin();
        Ok(())
    }

    pub async fn execute(
        &self,
        script: &Script,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let request =
            frame::execute_frame(event_json, limits.max_log_bytes, limits.max_result_bytes)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let mut lease = self
            .inner
            .checkout(script, WorkerLimits::from(limits), Some(&request))
            .await?;
        let started = Instant::now();
        let outcome = exchange(&mut lease, &request, limits, &self.inner).await;
        let handles = &self.inner.handles;
        match outcome {
            Exchange::Keep(result) => {
                lease.checkin();
                let histogram = match result {
                    Ok(_) => &handles.executed_ok,
                    Err(_) => &handles.executed_error,
                };
                histogram.record(started.elapsed().as_secs_f64());
                result
            }
            Exchange::Kill(error, reason) => {
                lease.kill(reason);
                metrics::histogram!(
                    EXECUTION_DURATION,
                    "language" => self.inner.language, "outcome" => reason
                )
                .record(started.elapsed().as_secs_f64());
                Err(error)
            }
        }
    }

    /// Kills the idle workers of `worker_key`; a busy one is killed when it
    /// comes back only if nobody asks for the key again (it stays idle and
    /// ages out LRU otherwise).
    pub fn release(&self, worker_key: &str) {
        let mut state = lock(&self.inner.state);
        let workers = state.idle.remove(worker_key).unwrap_or_default();
        self.inner.kill_taken(state, workers, "released");
        self.inner.replenish();
    }

    /// Kills every idle and blank worker and refuses new work; busy workers
    /// are killed as they come back.
    pub fn shutdown(&self) {
        let mut state = lock(&self.inner.state);
        state.closed = true;
        state.waiting.clear();
        let mut workers: Vec<Worker> = state.blank.drain(..).collect();
        for (_, idle) in state.idle.drain() {
            workers.extend(idle);
        }
        self.inner.kill_taken(state, workers, "shutdown");
    }

    /// Waits, at most `within`, until no worker holds a slot: workers still
    /// starting are killed as they come up, busy ones as they come back.
    /// Without this, a worker still starting when the service exits is
    /// killed mid-start by dropping its handle: a kill that can land before
    /// bubblewrap has set up `--die-with-parent` inside the sandbox.
    pub async fn wait_stopped(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while lock(&self.inner.state).n_live > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every live worker with its host pid (the process the pool started).
    pub fn workers(&self) -> Vec<WorkerInfo> {
        lock(&self.inner.state).infos.values().cloned().collect()
    }

    /// Host pids of the live workers holding `worker_key`.
    pub fn worker_pids(&self, worker_key: &str) -> Vec<u32> {
        lock(&self.inner.state)
            .infos
            .values()
            .filter(|info| info.worker_key.as_deref() == Some(worker_key))
            .map(|info| info.pid)
            .collect()
    }

    pub fn language(&self) -> Language {
        self.inner.program.language()
    }
}

/// A [`LanguageRuntime`] backed by a [`WorkerPool`], or unavailable with a
/// reason (no interpreter, no sandbox).
pub struct PooledRuntime {
    language: Language,
    pool: Result<WorkerPool, String>,
}

impl PooledRuntime {
    pub fn new(language: Language, pool: Result<WorkerPool, String>) -> Self {
        if let Err(reason) = &pool {
            tracing::warn!(%language, %reason, "runtime unavailable");
        }
        PooledRuntime { language, pool }
    }

    /// The pool, when the language can run here.
    pub fn pool(&self) -> Option<&WorkerPool> {
        self.pool.as_ref().ok()
    }

    fn available(&self) -> Result<&WorkerPool, RuntimeError> {
        self.pool
            .as_ref()
            .map_err(|reason| RuntimeError::Unavailable {
                language: self.language,
                reason: reason.clone(),
            })
    }
}

#[async_trait::async_trait]
impl LanguageRuntime for PooledRuntime {
    fn language(&self) -> Language {
        self.language
    }

    fn status(&self) -> RuntimeStatus {
        match &self.pool {
            Ok(_) => RuntimeStatus::Ready,
            Err(reason) => RuntimeStatus::Unavailable {
                reason: reason.clone(),
            },
        }
    }

    async fn prepare(&self, script: &Script) -> Result<Prepared, RuntimeError> {
        self.available()?.prepare(script).await?;
        Ok(Prepared::default())
    }

    async fn execute(
        &self,
        script: &Script,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        self.available()?.execute(script, event_json, limits).await
    }

    async fn release(&self, worker_key: &str) {
        if let Ok(pool) = &self.pool {
            pool.release(worker_key);
        }
    }

    async fn shutdown(&self) {
        if let Ok(pool) = &self.pool {
            pool.shutdown();
            pool.wait_stopped(SHUTDOWN_WAIT).await;
        }
    }
}

/// The sandbox to use under `config`, or why none is usable. Checked once
/// per runtime at start.
pub fn sandbox_mode(config: &RuntimeConfig) -> Result<SandboxMode, String> {
    match sandbox::probe_bwrap(&config.bwrap_path) {
        Ok(bwrap) => {
            if config.allow_insecure_no_sandbox {
                tracing::warn!(
                    "ALLOW_INSECURE_NO_SANDBOX=true is set, but bubblewrap works here: \
                     workers are sandboxed anyway"
                );
            }
            Ok(SandboxMode::Bubblewrap { bwrap })
        }
        Err(reason) if config.allow_insecure_no_sandbox => {
            tracing::warn!(
                %reason,
                "ALLOW_INSECURE_NO_SANDBOX=true: running user code WITHOUT a sandbox. \
                 Never do this in production."
            );
            Ok(SandboxMode::Insecure)
        }
        Err(reason) => Err(format!(
            "{reason}; install bubblewrap (apt-get install bubblewrap) or set ALLOW_INSECURE_NO_SANDBOX=true for development"
        )),
    }
}

/// The [`PooledRuntime`] of the language `program` starts workers for, or
/// unavailable with the reason the sandbox or the program gives.
pub fn pooled_runtime<P: WorkerProgram>(
    config: &RuntimeConfig,
    language: Language,
    program: impl FnOnce(&RuntimeConfig) -> Result<P, String>,
) -> Arc<PooledRuntime> {
    let pool = sandbox_mode(config).and_then(|mode| {
        let program = program(config)?;
        Ok(WorkerPool::new(
            Arc::new(program),
            mode,
            PoolSettings::from(config),
        ))
    });
    Arc::new(PooledRuntime::new(language, pool))
}

/// Writes an embedded worker program into `config.work_dir/<dir>/<file>`
/// and returns it as a file the sandbox shows at `WORKER_DIR/<file>`.
pub fn install_worker_program(
    config: &RuntimeConfig,
    dir: &str,
    file: &str,
    contents: &str,
) -> Result<SandboxFile, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir_path = config.work_dir.join(dir);
    std::fs::create_dir_all(&dir_path).map_err(|e| {
        format!(
            "cannot create the worker directory {}: {e}",
            dir_path.display()
        )
    })?;
    let file_path = dir_path.join(file);
    std::fs::write(&file_path, contents).map_err(|e| {
        format!(
            "cannot write the worker program {}: {e}",
            file_path.display()
        )
    })?;
    // Readable by an unsandboxed worker's uid (insecure mode), writable by
    // nobody but the service.
    let _ = std::fs::set_permissions(&dir_path, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::set_permissions(&file_path, std::fs::Permissions::from_mode(0o644));
    let host = std::fs::canonicalize(&file_path)
        .map_err(|e| format!("cannot resolve {}: {e}", file_path.display()))?;
    Ok(SandboxFile {
        host,
        path: std::path::Path::new(sandbox::WORKER_DIR).join(file),
    })
}
