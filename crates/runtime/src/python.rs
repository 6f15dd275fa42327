//! Python: user scripts run in warm `python3` workers
//! (runtimes/python/worker.py, embedded in the binary) inside the sandbox.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::config::RuntimeConfig;
use crate::pool::{self, PooledRuntime, WorkerLimits, WorkerProgram};
use crate::sandbox::{self, Rlimits, SandboxFile, SandboxSpec, WorkerBounds};
use crate::{Language, LanguageRuntime, LimitKind, RuntimeError, Script};

/// The worker program, embedded so the binary is self-contained.
pub const WORKER_SOURCE: &str = include_str!("../../../runtimes/python/worker.py");

/// CPython reserves little address space of its own; this covers the
/// interpreter, its shared libraries and a few thread stacks, so
/// `memory_bytes` is what the script itself can allocate.
const ADDRESS_SPACE_HEADROOM: u64 = 128 * 1024 * 1024;

/// How to start a Python worker.
#[derive(Debug, Clone)]
pub struct PythonProgram {
    interpreter: Interpreter,
    worker: SandboxFile,
    bounds: WorkerBounds,
}

/// The real interpreter behind `python3` (which may be a pyenv shim, a
/// shell script that cannot run in the sandbox), as it reports itself when
/// started normally.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Interpreter {
    executable: PathBuf,
    /// Where it loads its standard library and packages from (`sys.base_prefix`,
    /// `sys.prefix`), bound read-only into the sandbox.
    prefixes: Vec<PathBuf>,
    /// `site.getsitepackages()`: workers start without `site` (`-S`) and put
    /// these on `sys.path` themselves.
    site_packages: Vec<String>,
}

const DESCRIBE_INTERPRETER: &str = "import json, site, sys; print(json.dumps({\
    'executable': sys.executable, 'prefixes': [sys.base_prefix, sys.prefix], \
    'site_packages': site.getsitepackages()}))";

/// Runs `python` with `args` at start-up (never per request); its
/// standard output, or why it failed, saying what it was doing.
fn run_python<I, S>(python: &Path, doing: &str, args: I) -> Result<Vec<u8>, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = std::process::Command::new(python)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python ({}) cannot start: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "python ({}) failed to {doing}: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

fn resolve_interpreter(python: &Path) -> Result<Interpreter, String> {
    let stdout = run_python(python, "describe itself", ["-c", DESCRIBE_INTERPRETER])?;
    let reported: Interpreter = String::from_utf8_lossy(&stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            format!(
                "python ({}) did not describe itself: {}",
                python.display(),
                String::from_utf8_lossy(&stdout).trim()
            )
        })?;
    let executable = std::fs::canonicalize(&reported.executable).map_err(|e| {
        format!(
            "cannot resolve the python interpreter {}: {e}",
            reported.executable.display()
        )
    })?;
    let mut prefixes = Vec::new();
    for prefix in reported.prefixes {
        let prefix = std::fs::canonicalize(&prefix).unwrap_or(prefix);
        if !prefix.starts_with("/usr") && !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    if !executable.starts_with("/usr") && !prefixes.iter().any(|p| executable.starts_with(p)) {
        if let Some(dir) = executable.parent() {
            prefixes.push(dir.to_path_buf());
        }
    }
    Ok(Interpreter {
        executable,
        prefixes,
        site_packages: reported.site_packages,
    })
}

/// Compiles the installed worker program with the interpreter that runs
/// it, so that a worker start loads bytecode instead of compiling 500 lines
/// (about 5 ms of a 30 ms start). The code names the source by its path in
/// the sandbox, never the host's.
fn compile_worker(interpreter: &Path, source: &SandboxFile) -> Result<SandboxFile, String> {
    let compiled = SandboxFile {
        host: source.host.with_extension("pyc"),
        path: source.path.with_extension("pyc"),
    };
    let compile = "import py_compile, sys; \
        py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], doraise=True)";
    run_python(
        interpreter,
        "compile the worker program",
        [
            OsStr::new("-I"),
            OsStr::new("-S"),
            OsStr::new("-c"),
            OsStr::new(compile),
            source.host.as_os_str(),
            compiled.host.as_os_str(),
            source.path.as_os_str(),
        ],
    )?;
    Ok(compiled)
}

impl PythonProgram {
    /// Resolves the interpreter and installs the worker program; the error
    /// is the reason the language is unavailable.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, String> {
        let interpreter = resolve_interpreter(&config.python_path)?;
        let source = pool::install_worker_program(config, "python", "worker.py", WORKER_SOURCE)?;
        let worker = compile_worker(&interpreter.executable, &source)?;
        Ok(PythonProgram {
            interpreter,
            worker,
            bounds: WorkerBounds::from_config(config),
        })
    }
}

impl WorkerProgram for PythonProgram {
    fn language(&self) -> Language {
        Language::Python
    }

    fn script_filename(&self) -> &str {
        "handler.py"
    }

    fn spec(
        &self,
        limits: &WorkerLimits,
        _script: Option<&Script>,
    ) -> Result<SandboxSpec, RuntimeError> {
        // Isolated mode: ignore PYTHON* variables, no user site, no script
        // directory on sys.path; -B: never write .pyc files; -S: no `site` at
        // start. Its start-up runs every .pth file in site-packages, which are
        // the host's hooks, not the sandbox's business, and can be slow (one
        // seen importing certifi took 40 ms of each worker start). The worker
        // appends the site-packages it is given to sys.path, as site would.
        let mut args: Vec<OsString> = vec![
            "-I".into(),
            "-B".into(),
            "-S".into(),
            self.worker.path.clone().into_os_string(),
        ];
        args.extend(self.interpreter.site_packages.iter().map(Into::into));
        Ok(SandboxSpec {
            args,
            ro_binds: self.interpreter.prefixes.clone(),
            files: vec![self.worker.clone()],
            seccomp: true,
            env: sandbox::interpreter_env(),
            rlimits: Rlimits::worker(
                &self.bounds,
                limits.memory_bytes.saturating_add(ADDRESS_SPACE_HEADROOM),
                limits.max_processes,
            ),
            ..SandboxSpec::new(
                self.interpreter.executable.clone(),
                self.bounds.tmp_size_bytes,
            )
        })
    }

    fn crash_kind(&self, diagnostics: &str) -> Option<LimitKind> {
        (diagnostics.contains("MemoryError") || diagnostics.contains("Cannot allocate memory"))
            .then_some(LimitKind::Memory)
    }

    fn exit_calls(&self) -> Option<&'static str> {
        Some("sys.exit/os._exit")
    }
}

/// The Python runtime as core sees it.
pub fn runtime(config: &RuntimeConfig) -> Arc<dyn LanguageRuntime> {
    pooled_runtime(config)
}

/// Same as [`runtime`], keeping the concrete type (tests use its pool).
pub fn pooled_runtime(config: &RuntimeConfig) -> Arc<PooledRuntime> {
    pool::pooled_runtime(config, Language::Python, PythonProgram::from_config)
}
