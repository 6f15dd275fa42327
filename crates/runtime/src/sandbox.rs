//! Starting a worker process inside the bubblewrap sandbox, with rlimits
//! and the frame channels on fixed descriptors (see runtimes/PROTOCOL.md).
//!
//! Language-agnostic: a [`SandboxSpec`] names a program, its arguments, the
//! host paths it needs, the files it gets copied in and its environment;
//! [`spawn`] does the rest. The Rust-native runtime reuses it for compiled
//! workers, and its compiler runs in the same sandbox ([`bwrap_args`],
//! [`apply_rlimits`]).
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
//!   the extra paths of the spec, the worker program copied in under
//!   [`WORKER_DIR`] (never a host path of the service's data), a fresh
//!   /proc and minimal /dev (both
//!   read-only apart from the device nodes), and a private size-capped tmpfs
//!   on /tmp; no /etc, /home, /root or /work;
//! - an empty environment except the spec's variables;
//! - for workers, a [`seccomp`] filter refusing new namespaces, mounts,
//!   ptrace, keyrings, bpf and perf events: with a per-worker host uid the
//!   kernel would otherwise let a script create user namespaces;
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
use std::sync::OnceLock;

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use crate::config::RuntimeConfig;

pub mod seccomp;

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
static NEXT_WORKER_UID: OnceLock<AtomicU32> = OnceLock::new();

/// A host uid no other live worker of this service uses (the range wraps
/// after 10^8 workers).
///
/// Each service starts at a random point of the range: RLIMIT_NPROC counts
/// per host uid across the whole host, so two services (replicas on one
/// node, a test run beside a running service) that both counted from the
/// range's start would share uids, and one's fork bomb would leave the
/// other's workers unable to spawn a process (EAGAIN).
pub fn next_worker_uid() -> u32 {
    let next = NEXT_WORKER_UID.get_or_init(|| AtomicU32::new(random_u32()));
    WORKER_UID_BASE + next.fetch_add(1, Ordering::Relaxed) % WORKER_UID_SPAN
}

/// A random number from the kernel; the process id if getrandom fails
/// (distinct between services in one pid namespace at least).
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: the buffer is valid for writes of its length.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(filled) == Ok(bytes.len()) {
        u32::from_ne_bytes(bytes)
    } else {
        std::process::id()
    }
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

/// The part of a worker's rlimits the service configuration fixes, the
/// same for every language (see [`RuntimeConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerBounds {
    /// Size of the private /tmp, which is also RLIMIT_FSIZE: no single file
    /// can be larger than the place it could be written to.
    pub tmp_size_bytes: u64,
    pub open_files: u64,
    pub cpu_seconds: u64,
}

impl WorkerBounds {
    pub fn from_config(config: &RuntimeConfig) -> Self {
        WorkerBounds {
            tmp_size_bytes: config.tmp_size_bytes,
            open_files: config.max_open_files,
            cpu_seconds: config.cpu_seconds_per_worker,
        }
    }
}

impl Rlimits {
    /// A worker's rlimits: `address_space_bytes` (the language's heap
    /// limit plus its own headroom) and `max_processes` come from the
    /// request's limits, the rest from `bounds`.
    pub fn worker(bounds: &WorkerBounds, address_space_bytes: u64, max_processes: u32) -> Self {
        Rlimits {
            address_space_bytes: Some(address_space_bytes),
            data_bytes: None,
            processes: Some(u64::from(max_processes)),
            file_size_bytes: Some(bounds.tmp_size_bytes),
            open_files: Some(bounds.open_files),
            cpu_seconds: Some(bounds.cpu_seconds),
        }
    }

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

/// Where [`SandboxFile`]s of the worker programs appear inside the sandbox:
/// a fixed path that says nothing about where the service keeps its data.
pub const WORKER_DIR: &str = "/opt/lambda/worker";

/// A host file copied into the sandbox, read-only, at a fixed path.
///
/// A copy rather than a bind: a bind mount shows its host source path in
/// the sandbox's /proc/self/mountinfo, which would tell user code where
/// the service keeps its data (`DATA_DIR`, the work dir). bwrap copies the
/// file from a descriptor into its own tmpfs and unlinks it, so only the
/// in-sandbox path is visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFile {
    pub host: PathBuf,
    /// Absolute path inside the sandbox; the program and arguments of the
    /// spec name the file by it (in insecure mode they are given `host`).
    pub path: PathBuf,
}

/// One worker process to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Absolute path of the program as the sandbox sees it: inside one of
    /// the bound paths (or /usr), or the `path` of one of `files`.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Host paths bound read-only at the same path inside the sandbox, so
    /// arguments mean the same thing in both modes.
    pub ro_binds: Vec<PathBuf>,
    /// Host paths bound writable at the same path (a compiler's output
    /// directory); mounted before the root is made read-only.
    pub rw_binds: Vec<PathBuf>,
    /// Files copied in read-only (and executable) at fixed paths.
    pub files: Vec<SandboxFile>,
    /// The working directory; `None` is /tmp (the host's temp dir in
    /// insecure mode).
    pub chdir: Option<PathBuf>,
    /// Run under the [`seccomp`] filter. Only [`spawn`] hands bwrap the
    /// filter; a caller building its own command from [`bwrap_args`]
    /// leaves this off.
    pub seccomp: bool,
    pub env: Vec<(String, String)>,
    pub rlimits: Rlimits,
    /// Size of the private /tmp.
    pub tmp_size_bytes: u64,
}

impl SandboxSpec {
    /// A spec for `program` with nothing bound, no environment and no
    /// rlimits beyond "no core dumps".
    pub fn new(program: impl Into<PathBuf>, tmp_size_bytes: u64) -> Self {
        SandboxSpec {
            program: program.into(),
            args: Vec::new(),
            ro_binds: Vec::new(),
            rw_binds: Vec::new(),
            files: Vec::new(),
            chdir: None,
            seccomp: false,
            env: Vec::new(),
            rlimits: Rlimits::default(),
            tmp_size_bytes,
        }
    }

    /// The program and arguments with every file's sandbox path replaced
    /// by its host path: without a sandbox there is nothing at the fixed
    /// paths.
    fn host_command(&self) -> (PathBuf, Vec<OsString>) {
        let host_of = |arg: &std::ffi::OsStr| {
            self.files
                .iter()
                .find(|file| file.path.as_os_str() == arg)
                .map(|file| file.host.clone().into_os_string())
        };
        let program = host_of(self.program.as_os_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.program.clone());
        let args = self
            .args
            .iter()
            .map(|arg| host_of(arg).unwrap_or_else(|| arg.clone()))
            .collect();
        (program, args)
    }
}

/// The environment an interpreter worker starts with (besides its own
/// variables): a usable PATH, and home and temp both the private /tmp.
pub fn interpreter_env() -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// The descriptor bwrap reads the first of a spec's `files` from; the
/// others follow, then the seccomp filter. bwrap closes each once read, so
/// the worker never holds them.
pub const FIRST_FILE_FD: RawFd = 5;

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

/// The descriptor bwrap reads the seccomp filter from (after the files),
/// when `spec` asks for one and this architecture has one.
fn seccomp_fd(spec: &SandboxSpec) -> Option<RawFd> {
    let n_files = RawFd::try_from(spec.files.len()).ok()?;
    (spec.seccomp && seccomp::program().is_some()).then_some(FIRST_FILE_FD + n_files)
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
    for path in &spec.rw_binds {
        parent_dirs(&mut args, path, &mut seen);
        args.push("--bind".into());
        args.push(path.clone().into_os_string());
        args.push(path.clone().into_os_string());
    }
    for (fd, file) in (FIRST_FILE_FD..).zip(&spec.files) {
        parent_dirs(&mut args, &file.path, &mut seen);
        // The sandbox's uid is not the owner of the copy: readable and
        // executable by anyone, writable by nobody.
        for s in ["--perms", "0555", "--ro-bind-data"] {
            args.push(s.into());
        }
        args.push(fd.to_string().into());
        args.push(file.path.clone().into_os_string());
    }
    if let Some(fd) = seccomp_fd(spec) {
        args.push("--seccomp".into());
        args.push(fd.to_string().into());
    }
    // The sandbox root and /dev are bwrap's own tmpfs: without this a
    // script could fill memory by writing outside /tmp.
    for s in ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir"] {
        args.push(s.into());
    }
    args.push(
        spec.chdir
            .as_deref()
            .unwrap_or(Path::new("/tmp"))
            .as_os_str()
            .to_os_string(),
    );
    args.push("--clearenv".into());
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

    // Opened here (CLOEXEC) and moved onto FIRST_FILE_FD.. in the child,
    // where bwrap reads and closes them.
    let mut files = Vec::new();
    let mut command = match mode {
        SandboxMode::Bubblewrap { bwrap } => {
            for file in &spec.files {
                let opened = std::fs::File::open(&file.host).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", file.host.display()))
                })?;
                files.push(OwnedFd::from(opened));
            }
            if let Some(program) = seccomp_fd(spec).and(seccomp::program()) {
                // Far below a pipe's capacity: written whole before bwrap
                // starts, and the write end closed so bwrap reads to EOF.
                let (read, write) = cloexec_pipe()?;
                std::io::Write::write_all(&mut std::fs::File::from(write), &program)?;
                files.push(read);
            }
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
            let (program, args) = spec.host_command();
            let mut c = Command::new(program);
            c.args(args);
            c.env_clear();
            c.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c.current_dir(spec.chdir.clone().unwrap_or_else(std::env::temp_dir));
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

    // (descriptor now, descriptor in the child): the frame channels on 3
    // and 4, then the files for bwrap.
    let mut moves: Vec<(RawFd, RawFd)> = vec![
        (request_read.as_raw_fd(), REQUEST_FD),
        (response_write.as_raw_fd(), RESPONSE_FD),
    ];
    moves.extend(
        (FIRST_FILE_FD..)
            .zip(&files)
            .map(|(to, fd)| (fd.as_raw_fd(), to)),
    );
    let first_unused = moves
        .iter()
        .map(|(_, to)| to + 1)
        .max()
        .unwrap_or(RESPONSE_FD + 1);
    // Filled in the child; allocated here because allocating between fork
    // and exec is not async-signal-safe.
    let mut parked: Vec<RawFd> = vec![-1; moves.len()];
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe libc functions on values prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // Move every source out of the way first, so dup2 onto a target
            // cannot clobber a source still to be moved; dup2 clears
            // CLOEXEC on the targets, which is what lets them survive exec.
            for ((from, _), slot) in moves.iter().zip(parked.iter_mut()) {
                *slot = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for ((_, to), parked) in moves.iter().zip(parked.iter()) {
                if libc::dup2(*parked, *to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Descriptors the service inherited without CLOEXEC (a build
            // tool's jobserver pipe, a supervisor's socket) must not reach
            // user code: marked CLOEXEC rather than closed, so std's own
            // exec-error pipe keeps working. Needs Linux 5.11; on older
            // kernels they stay open, which is no worse than before.
            libc::syscall(
                libc::SYS_close_range,
                first_unused,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // SCHED_BATCH, inherited by everything the worker starts: the
            // same CPU share (the weight is the nice value's, unchanged),
            // but a worker woken by the frame the service just wrote no
            // longer preempts the service thread that wrote it. Under
            // Node.js load at 32 connections that preemption was 10% of
            // the service's CPU; with it gone workers slept before 41%
            // of executes instead of 70% (bench/README.md). An error
            // leaves the default policy, which only costs speed.
            let batch = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &batch);
            Ok(())
        });
    }
    // Last, after every descriptor manipulation: pre_exec closures run in
    // registration order, and with RLIMIT_NOFILE already lowered the
    // F_DUPFD_CLOEXEC above fails with EMFILE as soon as the service holds
    // more descriptors than the limit (the lowest free one is above it).
    apply_rlimits(&mut command, &rlimits);
    let child = command.spawn()?;
    // The child holds its own copies now; ours must close so EOF on the
    // response pipe means "the worker is gone".
    drop(request_read);
    drop(response_write);
    drop(files);
    drop(command);

    Ok(SandboxedProcess {
        child,
        requests: pipe::Sender::from_owned_fd(request_write)?,
        responses: pipe::Receiver::from_owned_fd(response_read)?,
        diagnostics: pipe::Receiver::from_owned_fd(diag_read)?,
    })
}

/// Sets `rlimits` on whatever `command` starts (and everything that
/// starts), without the worker channels of [`spawn`]: for tools run in the
/// sandbox, like a compiler. Applied as given: RLIMIT_NPROC too.
///
/// Register it as the last `pre_exec` of `command`: a later closure that
/// allocates descriptors would run under the lowered RLIMIT_NOFILE and fail
/// with EMFILE whenever the service holds more descriptors than the limit.
pub fn apply_rlimits(command: &mut Command, rlimits: &Rlimits) {
    let limits = rlimits.to_libc();
    // SAFETY: only setrlimit (async-signal-safe) between fork and exec, on
    // values computed before the fork.
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
            Ok(())
        });
    }
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
    let spec = SandboxSpec::new("/usr/bin/true", 1024 * 1024);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_uids_are_distinct_and_inside_the_range() {
        let uids: Vec<u32> = (0..1000).map(|_| next_worker_uid()).collect();
        let distinct: std::collections::HashSet<_> = uids.iter().collect();
        assert_eq!(distinct.len(), uids.len());
        assert!(uids
            .iter()
            .all(|uid| (WORKER_UID_BASE..WORKER_UID_BASE + WORKER_UID_SPAN).contains(uid)));
    }

    #[test]
    fn each_service_starts_its_uids_at_a_random_point() {
        // Two services on one host draw their starts like this; equal draws
        // (one chance in 2^32) would put them on the same uids.
        let draws: std::collections::HashSet<u32> = (0..8).map(|_| random_u32()).collect();
        assert!(draws.len() > 1, "{draws:?}");
        assert_ne!(random_u32(), std::process::id());
    }
}
