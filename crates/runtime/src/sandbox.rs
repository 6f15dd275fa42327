//! Starting a worker process inside the bubblewrap sandbox, with rlimits
//! and the frame channels on fixed descriptors (see runtimes/PROTOCOL.md).
//!
//! Language-agnostic: a [`SandboxSpec`] names a program, its arguments, the
//! host paths it needs read-only and its environment; [`spawn`] does the
//! rest. The Rust-native runtime reuses it for compiled workers.
//!
//! What the sandbox gives a worker (bubblewrap mode):
//! - new pid, net, ipc, uts and cgroup namespaces: no network interface but
//!   a private loopback, no view of host processes;
//! - an identity that is not root on the host ([`WorkerIdentity`]): when the
//!   service runs as root, bwrap runs privileged and `setpriv` switches the
//!   worker to its own unprivileged host uid (one per worker) with no
//!   capabilities, an empty bounding set and no_new_privs; otherwise bwrap
//!   runs unprivileged in a new user namespace as uid 65534 with no
//!   capabilities and no nested user namespaces;
//! - a new session (no TIOCSTI on the service's terminal), killed with its
//!   parent;
//! - a root made only of read-only binds of /usr (+ the /bin, /lib* links),
//!   the extra paths of the spec, a fresh /proc and minimal /dev (both
//!   read-only apart from the device nodes), and a private size-capped tmpfs
//!   on /tmp; no /etc, /home, /root or /work;
//! - an empty environment except the spec's variables;
//! - rlimits (address space, file size, open files, CPU, no core dumps), set
//!   before exec so they also bind bwrap's children. RLIMIT_NPROC counts
//!   processes per host uid and exempts uid 0, so it is only effective (and
//!   only applied) with a per-worker host uid.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// The descriptor a worker reads request frames from.
pub const REQUEST_FD: RawFd = 3;
/// The descriptor a worker writes response frames to.
pub const RESPONSE_FD: RawFd = 4;

/// How workers are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxMode {
    /// The real thing: bubblewrap at this path.
    Bubblewrap { bwrap: PathBuf },
    /// `ALLOW_INSECURE_NO_SANDBOX`: rlimits and a cleared environment only.
    Insecure,
}

/// Who the sandboxed program runs as on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerIdentity {
    /// The service runs as root: bwrap runs privileged (no user namespace,
    /// so it can bind paths only root can reach, like a pyenv prefix under
    /// /root) and `setpriv` switches the program to `uid` (gid `uid`), no
    /// capabilities, empty bounding set, no_new_privs. Every worker gets its
    /// own uid so RLIMIT_NPROC counts its processes alone.
    HostUid { setpriv: PathBuf, uid: u32 },
    /// bwrap in a new user namespace, uid/gid 65534 inside, all capabilities
    /// dropped, no nested user namespaces. On the host the program keeps
    /// the service's uid, so RLIMIT_NPROC is not applied (it would count
    /// the service's own processes).
    UserNamespace,
}

/// Host uids handed to workers: far above any real account.
const WORKER_UID_BASE: u32 = 1_000_000_000;
const WORKER_UID_SPAN: u32 = 100_000_000;
static NEXT_WORKER_UID: AtomicU32 = AtomicU32::new(0);

/// A host uid no other live worker of this service uses (the range wraps
/// after 10^8 workers).
pub fn next_worker_uid() -> u32 {
    WORKER_UID_BASE + NEXT_WORKER_UID.fetch_add(1, Ordering::Relaxed) % WORKER_UID_SPAN
}

/// `setpriv`, when the service runs as root and can therefore give workers
/// their own host uid; `None` means [`WorkerIdentity::UserNamespace`].
pub fn host_uid_switch() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    resolve_program(Path::new("setpriv")).filter(|p| p.starts_with("/usr"))
}

/// Resource limits applied to the worker (and everything it starts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rlimits {
    pub address_space_bytes: Option<u64>,
    pub data_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub open_files: Option<u64>,
    pub cpu_seconds: Option<u64>,
}

impl Rlimits {
    fn to_libc(&self) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t)> {
        let mut out = Vec::new();
        let mut push = |resource, value: Option<u64>| {
            if let Some(v) = value {
                out.push((resource, v as libc::rlim_t));
            }
        };
        push(libc::RLIMIT_AS, self.address_space_bytes);
        push(libc::RLIMIT_DATA, self.data_bytes);
        push(libc::RLIMIT_NPROC, self.processes);
        push(libc::RLIMIT_FSIZE, self.file_size_bytes);
        push(libc::RLIMIT_NOFILE, self.open_files);
        push(libc::RLIMIT_CPU, self.cpu_seconds);
        // No core dumps: a crashing worker must not write its memory anywhere.
        out.push((libc::RLIMIT_CORE, 0));
        out
    }
}

/// One worker process to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Absolute path of the program; it must be inside one of the bound
    /// paths (or /usr).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Host paths bound read-only at the same path inside the sandbox, so
    /// arguments mean the same thing in both modes.
    pub ro_binds: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub rlimits: Rlimits,
    /// Size of the private /tmp.
    pub tmp_size_bytes: u64,
}

/// A started worker with the service's ends of its channels.
#[derive(Debug)]
pub struct SandboxedProcess {
    pub child: Child,
    /// Request frames to the worker (its fd 3).
    pub requests: pipe::Sender,
    /// Response frames from the worker (its fd 4).
    pub responses: pipe::Receiver,
    /// The worker's stdout and stderr (diagnostics only).
    pub diagnostics: pipe::Receiver,
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The root-level links and directories a dynamically linked interpreter
/// needs besides /usr: merged-/usr systems have /bin -> usr/bin and so on.
fn root_layout_args(args: &mut Vec<OsString>) {
    for name in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
        let path = Path::new(name);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    args.push("--symlink".into());
                    args.push(target.into_os_string());
                    args.push(name.into());
                }
            }
            Ok(meta) if meta.is_dir() => {
                args.push("--ro-bind".into());
                args.push(name.into());
                args.push(name.into());
            }
            _ => {}
        }
    }
}

/// The bwrap command line for `spec` (everything before the program) in
/// [`WorkerIdentity::UserNamespace`] mode.
pub fn bwrap_args(spec: &SandboxSpec) -> Vec<OsString> {
    bwrap_args_as(spec, &WorkerIdentity::UserNamespace)
}

/// bwrap creates missing parents of a bind target with the source
/// parents' modes (0700 for /root): created explicitly as 0755 instead, so
/// an unprivileged worker can reach the bound path.
fn parent_dirs(args: &mut Vec<OsString>, path: &Path, seen: &mut Vec<PathBuf>) {
    let mut parents: Vec<&Path> = path.ancestors().skip(1).collect();
    parents.reverse();
    for parent in parents {
        if parent == Path::new("/")
            || parent == Path::new("/tmp")
            || seen.iter().any(|p| p == parent)
        {
            continue;
        }
        seen.push(parent.to_path_buf());
        for s in ["--perms", "0755", "--dir"] {
            args.push(s.into());
        }
        args.push(parent.as_os_str().to_os_string());
    }
}

/// The bwrap command line for `spec` running as `identity`: everything
/// before the program (for [`WorkerIdentity::HostUid`] that ends with the
/// `setpriv` invocation).
pub fn bwrap_args_as(spec: &SandboxSpec, identity: &WorkerIdentity) -> Vec<OsString> {
    let namespaces: &[&str] = match identity {
        WorkerIdentity::HostUid { .. } => &[
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ],
        WorkerIdentity::UserNamespace => &[
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--cap-drop",
            "ALL",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ],
    };
    let mut args: Vec<OsString> = namespaces.iter().map(OsString::from).collect();
    for s in [
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ] {
        args.push(s.into());
    }
    root_layout_args(&mut args);
    // /tmp first: a bound path under the host's /tmp (the default work
    // dir) must land on top of the private tmpfs, not under it.
    for s in [
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size",
    ] {
        args.push(s.into());
    }
    args.push(spec.tmp_size_bytes.to_string().into());
    for s in ["--tmpfs", "/tmp"] {
        args.push(s.into());
    }
    let mut seen = Vec::new();
    for path in &spec.ro_binds {
        if path.starts_with("/usr") {
            continue;
        }
        parent_dirs(&mut args, path, &mut seen);
        args.push("--ro-bind".into());
        args.push(path.clone().into_os_string());
        args.push(path.clone().into_os_string());
    }
    // The sandbox root and /dev are bwrap's own tmpfs: without this a
    // script could fill memory by writing outside /tmp.
    for s in [
        "--remount-ro",
        "/",
        "--remount-ro",
        "/dev",
        "--chdir",
        "/tmp",
        "--clearenv",
    ] {
        args.push(s.into());
    }
    // Tells the worker it is alone in a pid namespace, so it may clean up
    // with kill(-1) after a request (see PROTOCOL.md).
    for s in ["--setenv", "LAMBDA_SANDBOX", "bwrap"] {
        args.push(s.into());
    }
    for (key, value) in &spec.env {
        args.push("--setenv".into());
        args.push(key.into());
        args.push(value.into());
    }
    args.push("--".into());
    if let WorkerIdentity::HostUid { setpriv, uid } = identity {
        args.push(setpriv.clone().into_os_string());
        args.push(format!("--reuid={uid}").into());
        args.push(format!("--regid={uid}").into());
        for s in [
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ] {
            args.push(s.into());
        }
    }
    args
}

/// Starts `spec` under `mode`. The child gets /dev/null on fd 0, the
/// diagnostics pipe on fds 1 and 2, and the frame channels on fds 3 and 4.
pub fn spawn(mode: &SandboxMode, spec: &SandboxSpec) -> io::Result<SandboxedProcess> {
    spawn_as(mode, spec, &WorkerIdentity::UserNamespace)
}

/// [`spawn`] with an explicit [`WorkerIdentity`].
pub fn spawn_as(
    mode: &SandboxMode,
    spec: &SandboxSpec,
    identity: &WorkerIdentity,
) -> io::Result<SandboxedProcess> {
    let (request_read, request_write) = cloexec_pipe()?;
    let (response_read, response_write) = cloexec_pipe()?;
    let (diag_read, diag_write) = cloexec_pipe()?;
    let diag_write_2 = diag_write.try_clone()?;

    let mut command = match mode {
        SandboxMode::Bubblewrap { bwrap } => {
            let mut c = Command::new(bwrap);
            c.args(bwrap_args_as(spec, identity));
            c.arg(&spec.program);
            c.args(&spec.args);
            c.env_clear();
            c
        }
        SandboxMode::Insecure => {
            tracing::warn!(
                program = %spec.program.display(),
                "ALLOW_INSECURE_NO_SANDBOX: starting a worker WITHOUT the bubblewrap sandbox; \
                 user code can read host files and use the network"
            );
            let mut c = Command::new(&spec.program);
            c.args(&spec.args);
            c.env_clear();
            c.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c.current_dir(std::env::temp_dir());
            c
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(diag_write))
        .stderr(Stdio::from(diag_write_2))
        .kill_on_drop(true);

    let mut rlimits = spec.rlimits.clone();
    let per_worker_uid = matches!(mode, SandboxMode::Bubblewrap { .. })
        && matches!(identity, WorkerIdentity::HostUid { .. });
    if !per_worker_uid {
        rlimits.processes = None;
    }
    let limits = rlimits.to_libc();
    let child_request_fd = request_read.as_raw_fd();
    let child_response_fd = response_write.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe libc functions on values prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            for (resource, value) in &limits {
                let limit = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                if libc::setrlimit(*resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Move the channel ends out of the way first, so dup2 onto 3
            // and 4 cannot clobber one of them; dup2 clears CLOEXEC on the
            // targets, which is what lets them survive exec.
            let request = libc::fcntl(child_request_fd, libc::F_DUPFD_CLOEXEC, 10);
            let response = libc::fcntl(child_response_fd, libc::F_DUPFD_CLOEXEC, 10);
            if request < 0 || response < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(request, REQUEST_FD) < 0 || libc::dup2(response, RESPONSE_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Descriptors the service inherited without CLOEXEC (a build
            // tool's jobserver pipe, a supervisor's socket) must not reach
            // user code: marked CLOEXEC rather than closed, so std's own
            // exec-error pipe keeps working. Needs Linux 5.11; on older
            // kernels they stay open, which is no worse than before.
            libc::syscall(
                libc::SYS_close_range,
                RESPONSE_FD + 1,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The child holds its own copies now; ours must close so EOF on the
    // response pipe means "the worker is gone".
    drop(request_read);
    drop(response_write);
    drop(command);

    Ok(SandboxedProcess {
        child,
        requests: pipe::Sender::from_owned_fd(request_write)?,
        responses: pipe::Receiver::from_owned_fd(response_read)?,
        diagnostics: pipe::Receiver::from_owned_fd(diag_read)?,
    })
}

/// Finds `program` like a shell would: a path with a slash is taken as is,
/// a bare name is searched in PATH. The result is canonical (symlinks
/// resolved), because the sandbox binds real directories.
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    let candidate = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    }?;
    std::fs::canonicalize(candidate).ok()
}

/// Checks that `bwrap` can start a program as `identity` here.
pub fn probe_identity(bwrap: &Path, identity: &WorkerIdentity) -> Result<(), String> {
    let spec = SandboxSpec {
        program: PathBuf::from("/usr/bin/true"),
        args: Vec::new(),
        ro_binds: Vec::new(),
        env: Vec::new(),
        rlimits: Rlimits::default(),
        tmp_size_bytes: 1024 * 1024,
    };
    let output = std::process::Command::new(bwrap)
        .args(bwrap_args_as(&spec, identity))
        .arg("/usr/bin/true")
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bubblewrap ({}) cannot start: {e}", bwrap.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Checks once, at start, that bubblewrap can build a sandbox here (it may
/// be missing, or user namespaces may be disabled). Returns the reason it
/// cannot.
pub fn probe_bwrap(bwrap: &Path) -> Result<PathBuf, String> {
    let path = resolve_program(bwrap)
        .ok_or_else(|| format!("bubblewrap ({}) is not installed", bwrap.display()))?;
    probe_identity(&path, &WorkerIdentity::UserNamespace).map_err(|reason| {
        format!(
            "bubblewrap ({}) cannot create a sandbox here: {reason}",
            path.display()
        )
    })?;
    Ok(path)
}
