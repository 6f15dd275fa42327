//! Node.js: user scripts run in warm `node` workers (runtimes/nodejs/worker.js,
//! embedded in the binary) inside the sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::RuntimeConfig;
use crate::pool::{self, PoolSettings, PooledRuntime, WorkerLimits, WorkerPool, WorkerProgram};
use crate::sandbox::{self, Rlimits, SandboxSpec};
use crate::{Language, LanguageRuntime, LimitKind, RuntimeError, Script};

/// The worker program, embedded so the binary is self-contained.
pub const WORKER_SOURCE: &str = include_str!("../../../runtimes/nodejs/worker.js");

/// V8 reserves address space far beyond its heap (code range, thread
/// stacks, the cage): measured on node 20, a 256 MiB heap does not even
/// start under RLIMIT_AS = 512 MiB and runs under 1 GiB. So the heap is
/// capped by `--max-old-space-size` and RLIMIT_AS only stops off-heap
/// allocations (Buffers) from going far past the limit.
const ADDRESS_SPACE_HEADROOM: u64 = 1024 * 1024 * 1024;

/// How to start a Node.js worker.
#[derive(Debug, Clone)]
pub struct NodeProgram {
    node: PathBuf,
    worker_dir: PathBuf,
    extra_binds: Vec<PathBuf>,
    tmp_size_bytes: u64,
    max_open_files: u64,
    cpu_seconds: u64,
}

impl NodeProgram {
    /// Resolves `node` and installs the worker program; the error is the
    /// reason the language is unavailable.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, String> {
        let node = sandbox::resolve_program(&config.node_path)
            .ok_or_else(|| format!("node ({}) is not installed", config.node_path.display()))?;
        let worker_dir =
            pool::install_worker_program(config, "nodejs", "worker.js", WORKER_SOURCE)?;
        // node outside /usr (nvm, /opt/node) needs its install prefix bound.
        let mut extra_binds = Vec::new();
        if !node.starts_with("/usr") {
            if let Some(prefix) = node.parent().and_then(Path::parent) {
                extra_binds.push(prefix.to_path_buf());
            }
        }
        Ok(NodeProgram {
            node,
            worker_dir,
            extra_binds,
            tmp_size_bytes: config.tmp_size_bytes,
            max_open_files: config.max_open_files,
            cpu_seconds: config.cpu_seconds_per_worker,
        })
    }
}

impl WorkerProgram for NodeProgram {
    fn language(&self) -> Language {
        Language::Nodejs
    }

    fn script_filename(&self) -> &str {
        "handler.js"
    }

    fn spec(
        &self,
        limits: &WorkerLimits,
        _script: Option<&Script>,
    ) -> Result<SandboxSpec, RuntimeError> {
        let heap_mib = (limits.memory_bytes / (1024 * 1024)).max(16);
        let mut ro_binds = self.extra_binds.clone();
        ro_binds.push(self.worker_dir.clone());
        Ok(SandboxSpec {
            program: self.node.clone(),
            args: vec![
                format!("--max-old-space-size={heap_mib}").into(),
                self.worker_dir.join("worker.js").into_os_string(),
            ],
            ro_binds,
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/tmp".into()),
                ("TMPDIR".into(), "/tmp".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("NODE_ENV".into(), "production".into()),
            ],
            rlimits: Rlimits {
                address_space_bytes: Some(
                    limits.memory_bytes.saturating_add(ADDRESS_SPACE_HEADROOM),
                ),
                data_bytes: None,
                processes: Some(u64::from(limits.max_processes)),
                file_size_bytes: Some(self.tmp_size_bytes),
                open_files: Some(self.max_open_files),
                cpu_seconds: Some(self.cpu_seconds),
            },
            tmp_size_bytes: self.tmp_size_bytes,
        })
    }

    fn crash_kind(&self, diagnostics: &str) -> Option<LimitKind> {
        let out_of_memory = diagnostics.contains("heap out of memory")
            || diagnostics.contains("Allocation failed")
            || diagnostics.contains("out of memory")
            || diagnostics.contains("Fatal process OOM");
        out_of_memory.then_some(LimitKind::Memory)
    }
}

/// The Node.js runtime as core sees it.
pub fn runtime(config: &RuntimeConfig) -> Arc<dyn LanguageRuntime> {
    pooled_runtime(config)
}

/// Same as [`runtime`], keeping the concrete type (tests use its pool).
pub fn pooled_runtime(config: &RuntimeConfig) -> Arc<PooledRuntime> {
    let pool = pool::sandbox_mode(config).and_then(|mode| {
        let program = NodeProgram::from_config(config)?;
        Ok(WorkerPool::new(
            Arc::new(program),
            mode,
            PoolSettings::from(config),
        ))
    });
    Arc::new(PooledRuntime::new(Language::Nodejs, pool))
}
