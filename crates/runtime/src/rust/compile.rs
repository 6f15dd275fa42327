//! Compiling one script with rustc inside the sandbox.
//!
//! The crate rustc sees is four files in a fresh directory:
//! - `handler.rs`: the user's script, byte for byte, as `mod user` (its own
//!   file, so every rustc position is already a position in the script);
//! - `adapters.rs`: `runtimes/rust/adapters.rs` (the handler forms);
//! - `harness.rs`: `runtimes/rust/harness.rs` (the frame-protocol worker),
//!   or for `wasm32-wasip1` `runtimes/rust/harness_wasi.rs`;
//! - `main.rs`: generated glue calling whichever handler form the script
//!   defines.
//!
//! rustc runs under bubblewrap with only the toolchain, the prebuilt deps
//! and that directory visible (read-only) plus an output directory: a
//! script's `include_str!("/etc/shadow")` finds no such file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::toolchain::{Deps, Toolchain};
use crate::sandbox::{self, Rlimits, SandboxMode, SandboxSpec};
use crate::{RuntimeError, SourceLocation};

pub(crate) const HARNESS_SOURCE: &str = include_str!("../../../../runtimes/rust/harness.rs");
pub(crate) const WASI_HARNESS_SOURCE: &str =
    include_str!("../../../../runtimes/rust/harness_wasi.rs");
pub(crate) const ADAPTERS_SOURCE: &str = include_str!("../../../../runtimes/rust/adapters.rs");

/// The user file's name inside the crate, as rustc and panics report it.
pub(crate) const USER_FILE: &str = "handler.rs";

/// Marks a handler's `Err` on stderr in `harness_wasi.rs`, so the wasm path
/// can report the message itself instead of "exited with code 1".
pub(crate) const WASM_ERROR_MARKER: &str = "lambda-handler-error: ";

/// Which of API.md's handler forms the script defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerStyle {
    /// `handler(Map<String, Value> | Value) -> Result<_, _>`
    Handler,
    /// `handle(&str) -> Result<String, String>`
    Handle,
}

impl HandlerStyle {
    fn name(self) -> &'static str {
        match self {
            HandlerStyle::Handler => "handler",
            HandlerStyle::Handle => "handle",
        }
    }
}

fn handler_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        // `pub fn handler(` / `pub(crate) fn handle<'a>(`, at the start of a
        // line so commented-out code (`// fn handler(`) does not count.
        Regex::new(r"(?m)^[ \t]*(pub(?:\s*\([^)]*\))?\s+)?fn\s+(handler|handle)\s*[(<]")
            .unwrap_or_else(|error| unreachable!("constant regex: {error}"))
    })
}

/// Finds the handler by its signature's text; rustc then checks the types.
pub(crate) fn detect_style(source: &str) -> Result<HandlerStyle, RuntimeError> {
    let mut found: Option<(HandlerStyle, bool, usize)> = None;
    for captures in handler_pattern().captures_iter(source) {
        let (Some(whole), Some(name)) = (captures.get(0), captures.get(2)) else {
            continue;
        };
        let style = if name.as_str() == "handler" {
            HandlerStyle::Handler
        } else {
            HandlerStyle::Handle
        };
        let is_pub = captures.get(1).is_some();
        // `handler` wins over `handle` when a script has both.
        if found.is_none_or(|(previous, _, _)| {
            previous == HandlerStyle::Handle && style == HandlerStyle::Handler
        }) {
            found = Some((style, is_pub, whole.start()));
        }
    }
    match found {
        Some((style, true, _)) => Ok(style),
        Some((style, false, offset)) => Err(RuntimeError::Initialization {
            message: format!(
                "`fn {name}` must be public: write `pub fn {name}(...)`",
                name = style.name()
            ),
            location: location_of(source, offset),
        }),
        None => Err(RuntimeError::Initialization {
            message: "no handler found: define `pub fn handler(context: Map<String, Value>) -> \
                      Result<Value, String>` (or `handler(event: Value)`, or `pub fn \
                      handle(event: &str) -> Result<String, String>`)"
                .to_string(),
            location: SourceLocation::default(),
        }),
    }
}

fn location_of(source: &str, offset: usize) -> SourceLocation {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    SourceLocation {
        line: u32::try_from(line).ok(),
        column: u32::try_from(column).ok(),
    }
}

/// The generated crate root.
fn main_source(style: HandlerStyle, wasm: bool, compiler: &str) -> String {
    let adapter = match style {
        HandlerStyle::Handler => "adapters::call_handler(user::handler, event)",
        HandlerStyle::Handle => "adapters::call_handle(user::handle, event)",
    };
    let serve = if wasm {
        format!("harness::serve_once(|event| {adapter})")
    } else {
        format!(
            "harness::serve({style:?}, {compiler:?}, {USER_FILE:?}, |event| {adapter})",
            style = style.name()
        )
    };
    format!(
        "// Generated by lambda-runtime: the script is `user`, the harness drives it.\n\
         #[path = \"{USER_FILE}\"]\n\
         mod user;\n\
         #[path = \"adapters.rs\"]\n\
         #[allow(dead_code)]\n\
         mod adapters;\n\
         #[path = \"harness.rs\"]\n\
         #[allow(dead_code)]\n\
         mod harness;\n\
         \n\
         fn main() {{\n    {serve};\n}}\n"
    )
}

/// What to compile and how.
pub(crate) struct CompileJob<'a> {
    pub source: &'a str,
    pub style: HandlerStyle,
    pub target: &'a str,
    /// `-C opt-level`: 0 for `debug`, 3 for `release`.
    pub opt_level: u8,
    /// A fresh directory owned by this job (removed by the caller).
    pub work_dir: &'a Path,
}

/// Resource bounds on one rustc run.
#[derive(Debug, Clone)]
pub(crate) struct CompileLimits {
    pub timeout: Duration,
    pub memory_bytes: u64,
}

/// Compiles the job; returns the binary (native executable or `.wasm`).
pub(crate) async fn compile(
    job: &CompileJob<'_>,
    toolchain: &Toolchain,
    deps: &Deps,
    mode: &SandboxMode,
    limits: &CompileLimits,
) -> Result<Vec<u8>, RuntimeError> {
    let wasm = job.target == super::toolchain::WASM_TARGET;
    let src = job.work_dir.join("src");
    let out = job.work_dir.join("out");
    for dir in [&src, &out] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|error| internal(format!("cannot create {}: {error}", dir.display())))?;
    }
    let harness = if wasm {
        WASI_HARNESS_SOURCE
    } else {
        HARNESS_SOURCE
    };
    for (name, content) in [
        (USER_FILE, job.source),
        ("adapters.rs", ADAPTERS_SOURCE),
        ("harness.rs", harness),
        ("main.rs", &main_source(job.style, wasm, &toolchain.version)),
    ] {
        tokio::fs::write(src.join(name), content)
            .await
            .map_err(|error| internal(format!("cannot write {name}: {error}")))?;
    }
    let output_file = out.join(if wasm { "handler.wasm" } else { "handler" });

    let mut rustc_args: Vec<OsString> = vec![
        "main.rs".into(),
        "--edition=2021".into(),
        "--crate-type=bin".into(),
        "--crate-name=handler".into(),
        "--error-format=json".into(),
        // Warnings are the script author's business, not a failure.
        "--cap-lints=allow".into(),
        format!("--target={}", job.target).into(),
        "-C".into(),
        format!("opt-level={}", job.opt_level).into(),
        "-C".into(),
        "debuginfo=0".into(),
        "-C".into(),
        "strip=symbols".into(),
        "-C".into(),
        // One codegen unit per core at most: the box has two.
        "codegen-units=2".into(),
        "--extern".into(),
        format!("serde_json={}", deps.serde_json_rlib.display()).into(),
        "-L".into(),
        format!("dependency={}", deps.dir.display()).into(),
        "-o".into(),
        output_file.clone().into_os_string(),
    ];
    if !wasm {
        rustc_args.push("-C".into());
        rustc_args.push(format!("linker={}", toolchain.linker.display()).into());
    }
    let mut command = sandboxed_rustc(mode, toolchain, deps, &src, &out, rustc_args, limits);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|error| internal(format!("cannot start rustc: {error}")))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| internal("rustc's stderr was not captured".to_string()))?;
    let run = async {
        let mut diagnostics = Vec::new();
        // Bounded: a pathological script could make rustc print megabytes.
        let read = (&mut stderr)
            .take(4 * 1024 * 1024)
            .read_to_end(&mut diagnostics)
            .await;
        let status = child.wait().await;
        (read, status, diagnostics)
    };
    let (read, status, diagnostics) = match tokio::time::timeout(limits.timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            return Err(RuntimeError::Initialization {
                message: format!(
                    "compilation took longer than {} s and was stopped",
                    limits.timeout.as_secs()
                ),
                location: SourceLocation::default(),
            })
        }
    };
    read.map_err(|error| internal(format!("reading rustc's output failed: {error}")))?;
    let status = status.map_err(|error| internal(format!("waiting for rustc failed: {error}")))?;
    let diagnostics = String::from_utf8_lossy(&diagnostics);
    if !status.success() {
        return Err(compile_error(&diagnostics, status, job, limits));
    }
    tokio::fs::read(&output_file).await.map_err(|error| {
        internal(format!(
            "rustc succeeded but {} is unreadable: {error}",
            output_file.display()
        ))
    })
}

/// The bwrap (or, in insecure mode, plain) command running rustc: the
/// shared sandbox, plus one writable directory for the output, and the
/// script's directory as the working directory (so diagnostics name
/// `handler.rs`, not a host path).
fn sandboxed_rustc(
    mode: &SandboxMode,
    toolchain: &Toolchain,
    deps: &Deps,
    src: &Path,
    out: &Path,
    rustc_args: Vec<OsString>,
    limits: &CompileLimits,
) -> Command {
    let env = vec![
        // rustc finds the linker (`cc`) and `cc` finds `ld` through PATH.
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ("TMPDIR".to_string(), "/tmp".to_string()),
    ];
    let mut command = match mode {
        SandboxMode::Bubblewrap { bwrap } => {
            let mut ro_binds = vec![
                toolchain.sysroot.clone(),
                deps.dir.clone(),
                src.to_path_buf(),
            ];
            if let Some(linker_dir) = toolchain
                .linker
                .parent()
                .filter(|dir| !dir.starts_with("/usr"))
            {
                ro_binds.push(linker_dir.to_path_buf());
            }
            let spec = SandboxSpec {
                ro_binds,
                rw_binds: vec![out.to_path_buf()],
                chdir: Some(src.to_path_buf()),
                env: env.clone(),
                ..SandboxSpec::new(toolchain.rustc.clone(), 512 * 1024 * 1024)
            };
            let mut command = Command::new(bwrap);
            command
                .args(sandbox::bwrap_args(&spec))
                .arg(&toolchain.rustc);
            command.env_clear();
            command
        }
        SandboxMode::Insecure => {
            tracing::warn!(
                "ALLOW_INSECURE_NO_SANDBOX: compiling a Rust script WITHOUT the sandbox; its \
                 macros can read any file the service can"
            );
            let mut command = Command::new(&toolchain.rustc);
            command.env_clear().envs(env).current_dir(src);
            command
        }
    };
    command.args(rustc_args);
    sandbox::apply_rlimits(
        &mut command,
        &Rlimits {
            address_space_bytes: Some(limits.memory_bytes),
            data_bytes: None,
            processes: Some(256),
            file_size_bytes: Some(512 * 1024 * 1024),
            open_files: Some(1024),
            cpu_seconds: Some(limits.timeout.as_secs().saturating_add(5)),
        },
    );
    command
}

/// rustc's failure as the user should see it: the errors' rendered text
/// and the first error's primary position in the script.
fn compile_error(
    diagnostics: &str,
    status: std::process::ExitStatus,
    job: &CompileJob<'_>,
    limits: &CompileLimits,
) -> RuntimeError {
    let mut rendered = Vec::new();
    let mut location: Option<SourceLocation> = None;
    let mut outside_script = false;
    let mut other_lines = Vec::new();
    for line in diagnostics.lines() {
        let Ok(diagnostic) = serde_json::from_str::<serde_json::Value>(line) else {
            if !line.trim().is_empty() {
                other_lines.push(line.to_string());
            }
            continue;
        };
        if diagnostic["level"] != "error" {
            continue;
        }
        if let Some(text) = diagnostic["rendered"].as_str() {
            rendered.push(text.trim_end().to_string());
        }
        if location.is_some() {
            continue;
        }
        let primary = diagnostic["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|span| span["is_primary"] == true));
        match primary {
            Some(span) if span["file_name"].as_str() == Some(USER_FILE) => {
                location = Some(SourceLocation {
                    line: span["line_start"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok()),
                    column: span["column_start"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok()),
                });
            }
            Some(_) => outside_script = true,
            None => {}
        }
    }
    let mut message = if rendered.is_empty() {
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(libc::SIGKILL) | Some(libc::SIGXCPU) => format!(
                "compilation was stopped: over its CPU time limit ({} s)",
                limits.timeout.as_secs()
            ),
            Some(signal) => format!(
                "rustc was killed by signal {signal} (its memory limit is {} MiB): {}",
                limits.memory_bytes / (1024 * 1024),
                other_lines.join("\n")
            ),
            None => format!(
                "rustc failed ({status}) without a diagnostic: {}",
                other_lines.join("\n")
            ),
        }
    } else {
        rendered.join("\n\n")
    };
    if location.is_none() && outside_script {
        // The error is in the generated glue: the handler exists but its
        // types are not one of the accepted forms.
        message = format!(
            "the {} function's signature is not one the Rust runtime accepts \
             (`handler(context: Map<String, Value>) -> Result<Value, String>`, \
             `handler(event: Value) -> Result<Value, String>` or \
             `handle(event: &str) -> Result<String, String>`):\n{message}",
            job.style.name()
        );
        location = handler_pattern()
            .find(job.source)
            .map(|found| location_of(job.source, found.start()));
    }
    const MAX_MESSAGE: usize = 16 * 1024;
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("\n[further diagnostics truncated]");
    }
    RuntimeError::Initialization {
        message,
        location: location.unwrap_or_default(),
    }
}

fn internal(message: String) -> RuntimeError {
    RuntimeError::Internal(message)
}

/// A per-job work directory name.
pub(crate) fn job_dir(root: &Path, key: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    root.join(format!(
        "{key}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_validator_is_handler_style() {
        let source = include_str!("../../../store/seeds/rust-data_validator.rs");
        assert_eq!(
            detect_style(source).map_err(|e| e.to_string()),
            Ok(HandlerStyle::Handler)
        );
    }

    #[test]
    fn the_wasi_harness_uses_the_marker_the_runtime_looks_for() {
        assert!(WASI_HARNESS_SOURCE.contains(&format!("\"{WASM_ERROR_MARKER}\"")));
    }

    #[test]
    fn handle_style_and_private_handlers_are_recognised() {
        assert_eq!(
            detect_style(
                "pub fn handle(event: &str) -> Result<String, String> { Ok(event.to_string()) }"
            )
            .map_err(|e| e.to_string()),
            Ok(HandlerStyle::Handle)
        );
        let private = detect_style("use x;\n\nfn handler(v: Value) {}");
        let Err(RuntimeError::Initialization { location, .. }) = private else {
            panic!("{private:?}");
        };
        assert_eq!(location.line, Some(3));
        assert!(detect_style("// fn handler(\nfn main() {}").is_err());
    }
}
