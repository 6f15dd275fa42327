//! Node.js: user scripts run in warm `node` workers (runtimes/nodejs/worker.js,
//! embedded in the binary) inside the sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::RuntimeConfig;
use crate::pool::{self, PooledRuntime, WorkerLimits, WorkerProgram};
use crate::sandbox::{self, Rlimits, SandboxFile, SandboxSpec, WorkerBounds};
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
    worker: SandboxFile,
    extra_binds: Vec<PathBuf>,
    bounds: WorkerBounds,
}

impl NodeProgram {
    /// Resolves `node` and installs the worker program; the error is the
    /// reason the language is unavailable.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, String> {
        let node = sandbox::resolve_program(&config.node_path)
            .ok_or_else(|| format!("node ({}) is not installed", config.node_path.display()))?;
        let worker = pool::install_worker_program(config, "nodejs", "worker.js", WORKER_SOURCE)?;
        // node outside /usr (nvm, /opt/node) needs its install prefix bound.
        let mut extra_binds = Vec::new();
        if !node.starts_with("/usr") {
            if let Some(prefix) = node.parent().and_then(Path::parent) {
                extra_binds.push(prefix.to_path_buf());
            }
        }
        Ok(NodeProgram {
            node,
            worker,
            extra_binds,
            bounds: WorkerBounds::from_config(config),
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
        let mut env = sandbox::interpreter_env();
        env.push(("NODE_ENV".into(), "production".into()));
        Ok(SandboxSpec {
            args: vec![
                format!("--max-old-space-size={heap_mib}").into(),
                self.worker.path.clone().into_os_string(),
            ],
            ro_binds: self.extra_binds.clone(),
            files: vec![self.worker.clone()],
            seccomp: true,
            env,
            rlimits: Rlimits::worker(
                &self.bounds,
                limits.memory_bytes.saturating_add(ADDRESS_SPACE_HEADROOM),
                limits.max_processes,
            ),
            ..SandboxSpec::new(self.node.clone(), self.bounds.tmp_size_bytes)
        })
    }

    fn crash_kind(&self, diagnostics: &str) -> Option<LimitKind> {
        let out_of_memory = diagnostics.contains("heap out of memory")
            || diagnostics.contains("Allocation failed")
            || diagnostics.contains("out of memory")
            || diagnostics.contains("Fatal process OOM");
        out_of_memory.then_some(LimitKind::Memory)
    }

    fn exit_calls(&self) -> Option<&'static str> {
        Some("process.exit")
    }
}

/// The Node.js runtime as core sees it.
pub fn runtime(config: &RuntimeConfig) -> Arc<dyn LanguageRuntime> {
    pooled_runtime(config)
}

/// Same as [`runtime`], keeping the concrete type (tests use its pool).
pub fn pooled_runtime(config: &RuntimeConfig) -> Arc<PooledRuntime> {
    pool::pooled_runtime(config, Language::Nodejs, NodeProgram::from_config)
}
