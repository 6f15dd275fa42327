//! Rust: scripts compiled by the machine's `rustc` at prepare, run as warm
//! sandboxed workers (or, for `target = "wasm32-wasip1"`, by the wasm
//! runtime).
//!
//! - **Compile** (`prepare`): rustc runs inside bubblewrap with only the
//!   toolchain, the prebuilt `serde_json` and the script visible, under a
//!   timeout and an address-space limit (see [`compile`]). Diagnostics come
//!   back as `Initialization` errors positioned in the user's script.
//! - **Artifacts**: the binary is cached on disk under `<data_dir>/rust/bin`,
//!   named by a hash of `Script::hash` (source and options), the compiler
//!   (`rustc -vV`), the target and the harness. `prepare` returns it as
//!   `Prepared::artifact` for core to store; a script that arrives with
//!   `Script::artifact` is written to disk and never compiled again, on
//!   this replica or any other.
//! - **Run**: the binary is `runtimes/rust/harness.rs` around the script,
//!   speaking runtimes/PROTOCOL.md; the shared [`WorkerPool`] starts it in
//!   the shared sandbox, keeps it warm per `worker_key`, and replaces it
//!   when it dies, times out or runs out of memory.
//!
//! The compiled binary is not trusted more than the source: it only ever
//! runs inside the sandbox.

mod compile;
mod toolchain;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::RuntimeConfig;
use crate::pool::{self, PoolSettings, WorkerLimits, WorkerPool, WorkerProgram};
use crate::sandbox::{self, Rlimits, SandboxFile, SandboxMode, SandboxSpec, WorkerBounds};
use crate::wasm::WasmRuntime;
use crate::{
    Language, LanguageRuntime, LimitKind, Limits, Output, Prepared, RuntimeError, RuntimeStatus,
    Script, SourceLocation,
};

use self::compile::{CompileJob, CompileLimits};
use self::toolchain::{Deps, Toolchain, WASM_TARGET};

/// Address space a Rust worker needs beyond what the script allocates: the
/// binary, libc, the main thread's stack and malloc's arena reservations.
const ADDRESS_SPACE_HEADROOM: u64 = 128 * 1024 * 1024;

/// Settings of the Rust runtime.
#[derive(Debug, Clone)]
pub struct RustConfig {
    /// Pool sizing, sandbox (bwrap path, insecure flag) and worker rlimits,
    /// shared with Node.js and Python.
    pub runtime: RuntimeConfig,
    /// `DATA_DIR`: compiled scripts (`rust/bin`), the prebuilt deps
    /// (`rust/deps`) and compile scratch space (`rust/build`) live under
    /// `<data_dir>/rust`. Must not be under /tmp when bubblewrap is used
    /// (the sandbox mounts its own /tmp over it).
    pub data_dir: PathBuf,
    /// `rustc` (a bare name is looked up in PATH; a rustup proxy is fine).
    pub rustc_path: PathBuf,
    /// `cargo`, used once per compiler version to build `serde_json`.
    pub cargo_path: PathBuf,
    /// Longest a script's compilation may take. Default 60 s.
    pub compile_timeout: Duration,
    /// Address-space limit of the compiler. Default 2 GiB.
    pub compile_memory_bytes: u64,
    /// Compilations at once (each uses up to two cores). Default 1.
    pub max_concurrent_compiles: usize,
    /// Longest the one-time `serde_json` build may take. Default 10 min.
    pub deps_build_timeout: Duration,
}

impl RustConfig {
    /// Defaults for everything but where the data lives.
    pub fn new(runtime: RuntimeConfig, data_dir: PathBuf) -> Self {
        RustConfig {
            runtime,
            data_dir,
            rustc_path: PathBuf::from("rustc"),
            cargo_path: PathBuf::from("cargo"),
            compile_timeout: Duration::from_secs(60),
            compile_memory_bytes: 2 * 1024 * 1024 * 1024,
            max_concurrent_compiles: 1,
            deps_build_timeout: Duration::from_secs(600),
        }
    }
}

/// The Rust runtime for [`crate::Runtimes`]. `wasm` runs scripts compiled
/// for `wasm32-wasip1`; without it that target is refused.
pub fn runtime(config: RustConfig, wasm: Option<Arc<WasmRuntime>>) -> Arc<dyn LanguageRuntime> {
    RustRuntime::new(config, wasm)
}

/// The Rust runtime with its concrete type (tests inspect its pool).
pub struct RustRuntime {
    ready: Result<Arc<Ready>, String>,
    wasm: Option<Arc<WasmRuntime>>,
}

struct Ready {
    toolchain: Toolchain,
    mode: SandboxMode,
    pool: WorkerPool,
    program: Arc<RustProgram>,
    config: RustConfig,
    build_dir: PathBuf,
    deps_dir: PathBuf,
    /// Prebuilt deps per target, once built.
    deps: tokio::sync::Mutex<HashMap<String, Deps>>,
    /// Why the last deps build failed, for `status`.
    deps_error: Mutex<Option<String>>,
    compiles: Semaphore,
    /// Binaries known to be on disk, so execute does not stat every time.
    on_disk: Mutex<HashSet<PathBuf>>,
}

/// What a script's `compile_options` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompileOptions {
    opt_level: u8,
    target: String,
    wasm: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain sets and options: a panic mid-update leaves them usable.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl RustRuntime {
    pub fn new(config: RustConfig, wasm: Option<Arc<WasmRuntime>>) -> Arc<RustRuntime> {
        let ready = Ready::start(config).map(Arc::new);
        match &ready {
            Ok(ready) => {
                // Build serde_json now rather than in the first prepare.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let ready = ready.clone();
                    handle.spawn(async move {
                        let host = ready.toolchain.host.clone();
                        if let Err(error) = ready.deps_for(&host).await {
                            tracing::error!(%error, "Rust scripts cannot be compiled");
                        }
                    });
                }
            }
            Err(reason) => tracing::warn!(%reason, "rust runtime unavailable"),
        }
        Arc::new(RustRuntime { ready, wasm })
    }

    fn ready(&self) -> Result<&Arc<Ready>, RuntimeError> {
        self.ready
            .as_ref()
            .map_err(|reason| RuntimeError::Unavailable {
                language: Language::Rust,
                reason: reason.clone(),
            })
    }

    /// The worker pool, when Rust can run here.
    pub fn pool(&self) -> Option<&WorkerPool> {
        self.ready.as_ref().ok().map(|ready| &ready.pool)
    }

    /// Where a script's binary is (or will be) cached on disk.
    pub fn artifact_path(&self, script: &Script) -> Option<PathBuf> {
        let ready = self.ready.as_ref().ok()?;
        let options = ready.options(&script.compile_options).ok()?;
        Some(ready.program.binary_path(script, &options))
    }

    fn wasm(&self) -> Result<&Arc<WasmRuntime>, RuntimeError> {
        self.wasm
            .as_ref()
            .ok_or_else(|| RuntimeError::Initialization {
                message: format!(
                "compile_options.target = \"{WASM_TARGET}\" needs the WebAssembly runtime, which \
                 this service was started without"
            ),
                location: SourceLocation::default(),
            })
    }

    async fn run_wasm(
        &self,
        ready: &Ready,
        script: &Script,
        options: &CompileOptions,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let wasm = self.wasm()?;
        let path = ready.program.binary_path(script, options);
        let key = format!("rust:{}", path.display());
        let module = match wasm.cached(&key) {
            Some(module) => module,
            None => {
                ready.ensure_binary(script, options).await?;
                let bytes = tokio::fs::read(&path).await.map_err(|error| {
                    RuntimeError::Internal(format!("cannot read {}: {error}", path.display()))
                })?;
                wasm.load_binary(&key, Arc::new(bytes)).await?
            }
        };
        wasm.run(module, event_json, limits)
            .await
            .map_err(handler_error_from_wasm)
    }
}

/// The wasm shim reports a handler's `Err` on stderr behind a marker and
/// exits 1; show that message instead of "exited with code 1".
fn handler_error_from_wasm(error: RuntimeError) -> RuntimeError {
    match error {
        RuntimeError::Script {
            message,
            location,
            stack_trace,
            mut logs,
        } => {
            let marked = logs
                .iter()
                .rposition(|line| line.starts_with(compile::WASM_ERROR_MARKER));
            match marked {
                Some(index) => {
                    let line = logs.remove(index);
                    RuntimeError::Script {
                        message: line
                            .trim_start_matches(compile::WASM_ERROR_MARKER)
                            .to_string(),
                        location,
                        stack_trace,
                        logs,
                    }
                }
                None => RuntimeError::Script {
                    message,
                    location,
                    stack_trace,
                    logs,
                },
            }
        }
        other => other,
    }
}

impl Ready {
    fn start(config: RustConfig) -> Result<Ready, String> {
        let rustc = find_in_path(&config.rustc_path).ok_or_else(|| {
            format!(
                "rustc ({}) is not installed (install a Rust toolchain, e.g. with rustup)",
                config.rustc_path.display()
            )
        })?;
        let toolchain = Toolchain::probe(&rustc)?;
        let mode = pool::sandbox_mode(&config.runtime)?;
        let root = absolute(&config.data_dir.join("rust"))?;
        let bin_dir = root.join("bin");
        for dir in [&bin_dir, &root.join("build"), &root.join("deps")] {
            std::fs::create_dir_all(dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        }
        let program = Arc::new(RustProgram {
            bin_dir,
            build_key: RustProgram::build_key(&toolchain.key),
            host: toolchain.host.clone(),
            bounds: WorkerBounds::from_config(&config.runtime),
        });
        let mut settings = PoolSettings::from(&config.runtime);
        // A compiled harness cannot start before it knows its script.
        settings.blank_workers = 0;
        let pool = WorkerPool::new(program.clone(), mode.clone(), settings);
        Ok(Ready {
            compiles: Semaphore::new(config.max_concurrent_compiles.max(1)),
            build_dir: root.join("build"),
            deps_dir: root.join("deps"),
            toolchain,
            mode,
            pool,
            program,
            config,
            deps: tokio::sync::Mutex::new(HashMap::new()),
            deps_error: Mutex::new(None),
            on_disk: Mutex::new(HashSet::new()),
        })
    }

    fn options(&self, compile_options: &Value) -> Result<CompileOptions, RuntimeError> {
        let invalid = |message: String| RuntimeError::Initialization {
            message,
            location: SourceLocation::default(),
        };
        let opt_level = match compile_options.get("optimization_level") {
            None | Some(Value::Null) => 3,
            Some(Value::String(level)) if level == "release" => 3,
            Some(Value::String(level)) if level == "debug" => 0,
            Some(other) => {
                return Err(invalid(format!(
                "compile_options.optimization_level must be \"debug\" or \"release\", not {other}"
            )))
            }
        };
        let host = &self.toolchain.host;
        let target = match compile_options.get("target") {
            None | Some(Value::Null) => host.clone(),
            Some(Value::String(target)) if target.is_empty() || target == host => host.clone(),
            Some(Value::String(target)) if target == WASM_TARGET => target.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "compile_options.target {other} is not supported here: use \"{host}\" \
                     (native, the default) or \"{WASM_TARGET}\""
                )))
            }
        };
        let wasm = target == WASM_TARGET;
        if wasm && !self.toolchain.has_target(WASM_TARGET) {
            return Err(invalid(format!(
                "compile_options.target \"{WASM_TARGET}\" is not installed for this service's \
                 rustc ({}): its standard library is missing from {} (an operator can add it \
                 with `rustup target add {WASM_TARGET}`)",
                self.toolchain.version,
                self.toolchain.sysroot.join("lib/rustlib").display()
            )));
        }
        Ok(CompileOptions {
            opt_level,
            target,
            wasm,
        })
    }

    async fn deps_for(&self, target: &str) -> Result<Deps, RuntimeError> {
        let mut built = self.deps.lock().await;
        if let Some(deps) = built.get(target) {
            return Ok(deps.clone());
        }
        match toolchain::build_deps(
            &self.toolchain,
            &self.config.cargo_path,
            &self.deps_dir,
            target,
            self.config.deps_build_timeout,
        )
        .await
        {
            Ok(deps) => {
                built.insert(target.to_string(), deps.clone());
                *lock(&self.deps_error) = None;
                Ok(deps)
            }
            Err(reason) => {
                *lock(&self.deps_error) = Some(reason.clone());
                Err(RuntimeError::Unavailable {
                    language: Language::Rust,
                    reason,
                })
            }
        }
    }

    /// Makes sure the script's binary is on disk: already there, written
    /// from `Script::artifact`, or compiled. Returns the bytes when they
    /// were compiled just now.
    async fn ensure_binary(
        &self,
        script: &Script,
        options: &CompileOptions,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        let path = self.program.binary_path(script, options);
        if lock(&self.on_disk).contains(&path) || path.is_file() {
            lock(&self.on_disk).insert(path);
            return Ok(None);
        }
        if let Some(artifact) = &script.artifact {
            if artifact_matches(artifact, options) {
                write_executable(&path, artifact).await?;
                lock(&self.on_disk).insert(path);
                return Ok(None);
            }
            tracing::warn!(
                hash = %script.hash,
                "ignoring a stored Rust artifact that is not a binary for this target"
            );
        }
        let style = compile::detect_style(&script.source)?;
        let _slot = self
            .compiles
            .acquire()
            .await
            .map_err(|_| RuntimeError::Internal("the compile queue is closed".to_string()))?;
        // Another request may have compiled it while this one queued.
        if path.is_file() {
            lock(&self.on_disk).insert(path);
            return Ok(None);
        }
        let deps = self.deps_for(&options.target).await?;
        let work_dir = compile::job_dir(&self.build_dir, &script.hash);
        let job = CompileJob {
            source: &script.source,
            style,
            target: &options.target,
            opt_level: options.opt_level,
            work_dir: &work_dir,
        };
        let limits = CompileLimits {
            timeout: self.config.compile_timeout,
            memory_bytes: self.config.compile_memory_bytes,
        };
        let started = std::time::Instant::now();
        let compiled = compile::compile(&job, &self.toolchain, &deps, &self.mode, &limits).await;
        if let Err(error) = tokio::fs::remove_dir_all(&work_dir).await {
            tracing::debug!(%error, dir = %work_dir.display(), "compile scratch left behind");
        }
        let binary = compiled?;
        tracing::info!(
            hash = %script.hash,
            target = %options.target,
            elapsed_ms = started.elapsed().as_millis() as u64,
            bytes = binary.len(),
            "compiled a Rust script"
        );
        write_executable(&path, &binary).await?;
        lock(&self.on_disk).insert(path);
        Ok(Some(binary))
    }
}

/// A stored artifact is only used for the target it is a binary of.
fn artifact_matches(artifact: &[u8], options: &CompileOptions) -> bool {
    if options.wasm {
        artifact.starts_with(b"\0asm")
    } else {
        artifact.starts_with(b"\x7fELF")
    }
}

/// Like a shell's lookup, but without resolving symlinks: rustup's proxies
/// are symlinks to `rustup` that dispatch on the name they were run as.
fn find_in_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|error| format!("cannot resolve {}: {error}", path.display()))
}

/// Writes via a temporary name and a rename, so a concurrent reader never
/// sees half a binary; executable by the sandbox's uid.
async fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temporary = path.with_extension(format!(
        "partial-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let io_error = |error: std::io::Error| {
        RuntimeError::Internal(format!("cannot write {}: {error}", path.display()))
    };
    tokio::fs::write(&temporary, bytes)
        .await
        .map_err(io_error)?;
    tokio::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(io_error)?;
    tokio::fs::rename(&temporary, path).await.map_err(io_error)
}

#[async_trait::async_trait]
impl LanguageRuntime for RustRuntime {
    fn language(&self) -> Language {
        Language::Rust
    }

    fn status(&self) -> RuntimeStatus {
        match &self.ready {
            Err(reason) => RuntimeStatus::Unavailable {
                reason: reason.clone(),
            },
            Ok(ready) => match lock(&ready.deps_error).clone() {
                Some(reason) => RuntimeStatus::Unavailable { reason },
                None => RuntimeStatus::Ready,
            },
        }
    }

    async fn prepare(&self, script: &Script) -> Result<Prepared, RuntimeError> {
        let ready = self.ready()?;
        let options = ready.options(&script.compile_options)?;
        if options.wasm {
            self.wasm()?;
        }
        let compiled = ready.ensure_binary(script, &options).await?;
        let artifact = match (compiled, &script.artifact) {
            (Some(binary), _) => Some(binary),
            (None, Some(_)) => None,
            // Compiled earlier on this replica but core has no copy yet.
            (None, None) => {
                let path = ready.program.binary_path(script, &options);
                Some(tokio::fs::read(&path).await.map_err(|error| {
                    RuntimeError::Internal(format!("cannot read {}: {error}", path.display()))
                })?)
            }
        };
        if options.wasm {
            // Validates and precompiles now, so the first execute is warm.
            let wasm = self.wasm()?;
            let path = ready.program.binary_path(script, &options);
            let bytes = match &artifact {
                Some(bytes) => bytes.clone(),
                None => tokio::fs::read(&path).await.map_err(|error| {
                    RuntimeError::Internal(format!("cannot read {}: {error}", path.display()))
                })?,
            };
            wasm.load_binary(&format!("rust:{}", path.display()), Arc::new(bytes))
                .await?;
        } else {
            // Answer only once a worker holding this script is started and
            // loaded, as Node.js and Python do: otherwise the first execute
            // pays (or waits for) the process start.
            match ready.pool.prepare(script).await {
                Ok(()) => {}
                // A saturated pool says nothing about the script, and the
                // compiled artifact must still reach core: the first
                // execute queues for a worker instead.
                Err(RuntimeError::Busy { waited_ms, .. }) => {
                    tracing::debug!(waited_ms, "no Rust worker free to warm at prepare");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Prepared { artifact })
    }

    fn has_local_artifact(&self, script: &Script) -> bool {
        // The same path `ensure_binary` uses; one stat, so a binary removed
        // behind the service's back is fetched again rather than trusted.
        self.artifact_path(script)
            .is_some_and(|path| path.is_file())
    }

    async fn execute(
        &self,
        script: &Script,
        event_json: &str,
        limits: &Limits,
    ) -> Result<Output, RuntimeError> {
        let ready = self.ready()?;
        let options = ready.options(&script.compile_options)?;
        if options.wasm {
            return self
                .run_wasm(ready, script, &options, event_json, limits)
                .await;
        }
        // After a restart: from the local cache, the stored artifact, or
        // (if neither) by compiling.
        ready.ensure_binary(script, &options).await?;
        ready.pool.execute(script, event_json, limits).await
    }

    async fn release(&self, worker_key: &str) {
        if let Ok(ready) = &self.ready {
            ready.pool.release(worker_key);
        }
    }

    async fn shutdown(&self) {
        if let Ok(ready) = &self.ready {
            ready.pool.shutdown();
        }
    }
}

/// How the pool starts a Rust worker: the script's own binary.
struct RustProgram {
    bin_dir: PathBuf,
    /// What every binary's name depends on besides its script: see
    /// [`RustProgram::build_key`].
    build_key: String,
    host: String,
    bounds: WorkerBounds,
}

impl RustProgram {
    /// The compiler and the harness sources, hashed once at start: they are
    /// tens of kilobytes, and hashing them again for every execute was 11%
    /// of the service's CPU under Rust load.
    fn build_key(toolchain_key: &str) -> String {
        toolchain::short_hash(&[
            toolchain_key.as_bytes(),
            compile::HARNESS_SOURCE.as_bytes(),
            compile::WASI_HARNESS_SOURCE.as_bytes(),
            compile::ADAPTERS_SOURCE.as_bytes(),
        ])
    }

    fn binary_path(&self, script: &Script, options: &CompileOptions) -> PathBuf {
        let key = toolchain::short_hash(&[
            script.hash.as_bytes(),
            self.build_key.as_bytes(),
            options.target.as_bytes(),
            &[options.opt_level],
        ]);
        self.bin_dir.join(if options.wasm {
            format!("{key}.wasm")
        } else {
            key
        })
    }
}

impl WorkerProgram for RustProgram {
    fn language(&self) -> Language {
        Language::Rust
    }

    fn script_filename(&self) -> &str {
        compile::USER_FILE
    }

    fn supports_blank_workers(&self) -> bool {
        false
    }

    fn spec(
        &self,
        limits: &WorkerLimits,
        script: Option<&Script>,
    ) -> Result<SandboxSpec, RuntimeError> {
        let script = script.ok_or_else(|| {
            RuntimeError::Internal("a Rust worker needs its script to start".to_string())
        })?;
        let options = CompileOptions {
            opt_level: match script
                .compile_options
                .get("optimization_level")
                .and_then(Value::as_str)
            {
                Some("debug") => 0,
                _ => 3,
            },
            target: self.host.clone(),
            wasm: false,
        };
        let binary = self.binary_path(script, &options);
        if !binary.is_file() {
            return Err(RuntimeError::Internal(format!(
                "the compiled script {} is missing",
                binary.display()
            )));
        }
        let binary = SandboxFile {
            host: binary,
            path: Path::new(sandbox::WORKER_DIR).join("handler"),
        };
        Ok(SandboxSpec {
            files: vec![binary.clone()],
            seccomp: true,
            env: vec![
                // glibc reserves 64 MiB of address space per malloc arena;
                // a few threads would otherwise eat the headroom.
                ("MALLOC_ARENA_MAX".to_string(), "2".to_string()),
                ("TMPDIR".to_string(), "/tmp".to_string()),
            ],
            rlimits: Rlimits::worker(
                &self.bounds,
                limits.memory_bytes.saturating_add(ADDRESS_SPACE_HEADROOM),
                limits.max_processes,
            ),
            ..SandboxSpec::new(binary.path, self.bounds.tmp_size_bytes)
        })
    }

    fn crash_kind(&self, diagnostics: &str) -> Option<LimitKind> {
        // The harness reports allocation failures itself; this catches
        // the ones outside a request (e.g. while starting).
        diagnostics
            .contains("memory allocation of")
            .then_some(LimitKind::Memory)
    }

    fn exit_calls(&self) -> Option<&'static str> {
        Some("std::process::exit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_handler_errors_are_unmarked() {
        let error = handler_error_from_wasm(RuntimeError::Script {
            message: "the module exited with code 1".to_string(),
            location: SourceLocation::default(),
            stack_trace: None,
            logs: vec![
                "a log".to_string(),
                format!("{}Missing data", compile::WASM_ERROR_MARKER),
            ],
        });
        let RuntimeError::Script { message, logs, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(message, "Missing data");
        assert_eq!(logs, vec!["a log".to_string()]);
    }

    #[test]
    fn stored_artifacts_must_be_binaries_of_the_target() {
        let native = CompileOptions {
            opt_level: 3,
            target: "x86_64-unknown-linux-gnu".to_string(),
            wasm: false,
        };
        assert!(artifact_matches(b"\x7fELF\x02\x01", &native));
        assert!(!artifact_matches(b"\0asm\x01\0\0\0", &native));
    }
}
