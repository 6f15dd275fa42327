//! The machine's Rust toolchain and the prebuilt crates scripts link to.
//!
//! `rustc` on PATH is usually the rustup proxy, which needs `$HOME` and
//! rustup's settings; inside the sandbox neither exists. So the proxy is
//! asked once for the real toolchain (`--print sysroot`) and the sandbox
//! runs `<sysroot>/bin/rustc` with only the sysroot bound.
//!
//! `serde_json` (and what it depends on) is built once per compiler version
//! and target by `cargo build --release --offline` of the small project in
//! `runtimes/rust/deps` (embedded in this binary), outside the sandbox: it
//! is our code, not the user's. `--offline` means the crates must already be
//! in cargo's registry cache (`cargo fetch` at image/CI build time); nothing
//! is downloaded while the service runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;

const DEPS_MANIFEST: &str = include_str!("../../../../runtimes/rust/deps/Cargo.toml");
const DEPS_LOCK: &str = include_str!("../../../../runtimes/rust/deps/Cargo.lock");
const DEPS_LIB: &str = include_str!("../../../../runtimes/rust/deps/src/lib.rs");

/// The wasm target scripts may ask for.
pub(crate) const WASM_TARGET: &str = "wasm32-wasip1";

/// A working rustc, as found at start.
#[derive(Debug, Clone)]
pub(crate) struct Toolchain {
    /// `rustc -vV`'s first line, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    pub version: String,
    /// The host triple (`host:` of `rustc -vV`): native scripts' target.
    pub host: String,
    pub sysroot: PathBuf,
    /// `<sysroot>/bin/rustc`: runnable without rustup's proxy.
    pub rustc: PathBuf,
    /// Names compiled artifacts and prebuilt deps: changes with any change
    /// of the compiler (`rustc -vV` in full, including LLVM version).
    pub key: String,
    /// The C compiler driver rustc links native binaries with, symlinks
    /// resolved: `/usr/bin/cc` is usually a link through
    /// `/etc/alternatives`, which the sandbox does not have.
    pub linker: PathBuf,
}

impl Toolchain {
    /// Asks `rustc` (a bare name is looked up in PATH) what it is; the
    /// error says why Rust cannot run here.
    pub(crate) fn probe(rustc: &Path) -> Result<Toolchain, String> {
        let verbose = run_sync(rustc, &["-vV"])
            .map_err(|error| format!("rustc ({}) is not usable: {error}", rustc.display()))?;
        let version = verbose
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let host = verbose
            .lines()
            .find_map(|line| line.strip_prefix("host:"))
            .map(|host| host.trim().to_string())
            .ok_or_else(|| format!("`{} -vV` printed no host triple", rustc.display()))?;
        let sysroot = run_sync(rustc, &["--print", "sysroot"])
            .map_err(|error| format!("rustc ({}) has no sysroot: {error}", rustc.display()))?;
        let sysroot = PathBuf::from(sysroot.trim());
        let real_rustc = sysroot.join("bin").join("rustc");
        if !real_rustc.is_file() {
            return Err(format!(
                "rustc's sysroot {} has no bin/rustc",
                sysroot.display()
            ));
        }
        let key = short_hash(&[verbose.as_bytes()]);
        let linker = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("cc"))
                    .find(|candidate| candidate.is_file())
            })
            .and_then(|cc| std::fs::canonicalize(cc).ok())
            .ok_or_else(|| {
                "no C linker (`cc`) on PATH: rustc needs one to link native binaries \
                 (Debian: apt-get install gcc libc6-dev)"
                    .to_string()
            })?;
        Ok(Toolchain {
            linker,
            version,
            host,
            sysroot,
            rustc: real_rustc,
            key,
        })
    }

    /// Whether the standard library for `target` is installed.
    pub(crate) fn has_target(&self, target: &str) -> bool {
        self.sysroot
            .join("lib")
            .join("rustlib")
            .join(target)
            .join("lib")
            .is_dir()
    }
}

fn run_sync(program: &Path, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|error| error.to_string())
}

/// Hex SHA-256 of the parts, shortened: long enough to never collide among
/// a service's files, short enough for paths.
pub(crate) fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The prebuilt crates for one (compiler, target).
#[derive(Debug, Clone)]
pub(crate) struct Deps {
    pub serde_json_rlib: PathBuf,
    /// Directory with every dependency rlib (`-L dependency=`).
    pub dir: PathBuf,
}

/// Builds (or finds, from an earlier run) the deps for `target` under
/// `deps_root`.
pub(crate) async fn build_deps(
    toolchain: &Toolchain,
    cargo: &Path,
    deps_root: &Path,
    target: &str,
    timeout: Duration,
) -> Result<Deps, String> {
    let project = deps_root.join(format!(
        "{}-{target}",
        short_hash(&[
            toolchain.key.as_bytes(),
            DEPS_MANIFEST.as_bytes(),
            DEPS_LOCK.as_bytes()
        ])
    ));
    let marker = project.join("serde_json.rlib.path");
    if let Ok(recorded) = tokio::fs::read_to_string(&marker).await {
        let rlib = PathBuf::from(recorded.trim());
        if let Some(dir) = rlib.parent().filter(|_| rlib.is_file()) {
            return Ok(Deps {
                dir: dir.to_path_buf(),
                serde_json_rlib: rlib,
            });
        }
    }
    tokio::fs::create_dir_all(project.join("src"))
        .await
        .map_err(|error| format!("cannot create {}: {error}", project.display()))?;
    for (name, content) in [
        ("Cargo.toml", DEPS_MANIFEST),
        ("Cargo.lock", DEPS_LOCK),
        ("src/lib.rs", DEPS_LIB),
    ] {
        tokio::fs::write(project.join(name), content)
            .await
            .map_err(|error| format!("cannot write {}: {error}", project.join(name).display()))?;
    }
    tracing::info!(
        target,
        compiler = %toolchain.version,
        dir = %project.display(),
        "building serde_json for Rust scripts (once per compiler version)"
    );
    let mut output = run_cargo(toolchain, cargo, &project, target, true, timeout).await?;
    if !output.status.success() {
        // Not in cargo's cache: a machine with registry access can still
        // fetch it once (the lock file pins every version).
        tracing::warn!(
            "the script deps are not in cargo's cache; trying once with network access \
             (run `cargo fetch --manifest-path runtimes/rust/deps/Cargo.toml` at build time)"
        );
        output = run_cargo(toolchain, cargo, &project, target, false, timeout).await?;
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        return Err(format!(
            "building serde_json for scripts failed (crates must be in cargo's cache: run \
             `cargo fetch --manifest-path runtimes/rust/deps/Cargo.toml` where the service is \
             built): {tail}"
        ));
    }
    let rlib = serde_json_rlib(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| "cargo built the script deps but reported no serde_json rlib".to_string())?;
    let dir = rlib
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("serde_json rlib {} has no directory", rlib.display()))?;
    tokio::fs::write(&marker, rlib.to_string_lossy().as_bytes())
        .await
        .map_err(|error| format!("cannot write {}: {error}", marker.display()))?;
    Ok(Deps {
        serde_json_rlib: rlib,
        dir,
    })
}

async fn run_cargo(
    toolchain: &Toolchain,
    cargo: &Path,
    project: &Path,
    target: &str,
    offline: bool,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--message-format=json"])
        .args(offline.then_some("--offline"))
        .args(["--target", target])
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(project.join("target"))
        // The same compiler that will compile scripts, not whatever
        // rustup's default or a RUSTC variable in the service env names.
        .env("RUSTC", &toolchain.rustc)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(format!(
            "cannot run cargo ({}) to build serde_json for scripts: {error}",
            cargo.display()
        )),
        Err(_) => Err(format!(
            "building serde_json for scripts took over {} s",
            timeout.as_secs()
        )),
    }
}

/// The serde_json rlib from cargo's `--message-format=json` output.
fn serde_json_rlib(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "serde_json"
        })
        .find_map(|message| {
            message["filenames"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_str)
                .find(|file| file.ends_with(".rlib"))
                .map(PathBuf::from)
        })
}
