//! Configuration of the process-based runtimes (Node.js, Python and, later,
//! Rust-native workers). The service parses env vars into this struct; every
//! field has a default that works on a developer machine with `node`,
//! `python3` and `bwrap` on PATH.

use std::path::PathBuf;
use std::time::Duration;

use crate::Limits;

/// Settings shared by every pooled language runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Blank (pre-spawned, not yet specialized) workers kept ready per
    /// language, so initialize never waits for a process start.
    /// Default 2.
    pub blank_workers_per_language: usize,
    /// `WORKERS_MAX_PER_LANGUAGE`: hard cap on live worker processes per
    /// language (blank + idle + busy). Idle specialized workers are evicted
    /// LRU to stay under it. Default 16 (2 cores: more processes than that
    /// only add memory pressure).
    pub max_workers_per_language: usize,
    /// `WORKERS_MAX_PER_SCRIPT`: cap on live workers specialized for one
    /// script (one worker key); further executes of that script queue for
    /// one of them. Default 2 (the service's default is twice the CPU
    /// count, at most half of `max_workers_per_language`).
    pub max_workers_per_script: usize,
    /// How long an execute or prepare may wait for a worker when all are
    /// busy and the cap is reached, before `RuntimeError::Busy`. Default 5 s.
    pub queue_wait: Duration,
    /// `ALLOW_INSECURE_NO_SANDBOX`: run workers without bubblewrap (rlimits
    /// only) when bwrap is missing. Development only; logged loudly at start
    /// and on every spawn. Default false.
    pub allow_insecure_no_sandbox: bool,
    /// Where the embedded worker programs are written at start (one
    /// sub-directory per language); the sandbox gets a read-only copy at
    /// `sandbox::WORKER_DIR`, never this path.
    /// Default `$TMPDIR/lambda-runtime-<pid>`.
    pub work_dir: PathBuf,
    /// The `node` binary (a bare name is looked up in PATH). Default "node".
    pub node_path: PathBuf,
    /// The `python3` binary; may be a pyenv shim: the real interpreter is
    /// resolved once at start. Default "python3".
    pub python_path: PathBuf,
    /// The bubblewrap binary. Default "bwrap".
    pub bwrap_path: PathBuf,
    /// Limits a worker is spawned with before any request names its own
    /// (blank workers, prepare). Memory and process limits are fixed at
    /// spawn time, so an execute whose `Limits` ask for different ones gets
    /// a worker spawned for them. Default `Limits::default()`.
    pub spawn_limits: Limits,
    /// Size of each worker's private /tmp (tmpfs), also its RLIMIT_FSIZE.
    /// Default 64 MiB.
    pub tmp_size_bytes: u64,
    /// RLIMIT_NOFILE of a worker. Default 256.
    pub max_open_files: u64,
    /// RLIMIT_CPU of a worker over its whole life: a backstop only (the
    /// per-execute timeout kills long before). Default 3600 s.
    pub cpu_seconds_per_worker: u64,
    /// How long a worker may take to start and load a script. Default 10 s.
    pub start_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            blank_workers_per_language: 2,
            max_workers_per_language: 16,
            max_workers_per_script: 2,
            queue_wait: Duration::from_secs(5),
            allow_insecure_no_sandbox: false,
            work_dir: std::env::temp_dir().join(format!("lambda-runtime-{}", std::process::id())),
            node_path: PathBuf::from("node"),
            python_path: PathBuf::from("python3"),
            bwrap_path: PathBuf::from("bwrap"),
            spawn_limits: Limits::default(),
            tmp_size_bytes: 64 * 1024 * 1024,
            max_open_files: 256,
            cpu_seconds_per_worker: 3600,
            start_timeout: Duration::from_secs(10),
        }
    }
}
