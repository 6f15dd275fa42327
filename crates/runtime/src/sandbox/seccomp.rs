//! The seccomp filter every worker runs under (bwrap `--seccomp FD`).
//!
//! The namespaces and the dropped capabilities already stop most of these
//! calls; the filter is a second wall that does not depend on how the
//! kernel and bwrap are configured (a kernel that allows unprivileged user
//! namespaces, a bwrap running privileged). It refuses with EPERM:
//! - new namespaces: `unshare`, `setns`, and `clone` with any `CLONE_NEW*`
//!   flag (`clone3` gets ENOSYS: its flags sit behind a pointer a filter
//!   cannot read, and libc falls back to `clone`);
//! - mounting: `mount`, `umount2`, `pivot_root` and the new mount API;
//! - looking into or driving other processes and the kernel: `ptrace`,
//!   `process_vm_readv/writev`, `keyctl`, `add_key`, `request_key`, `bpf`,
//!   `perf_event_open`.
//!
//! Everything else is allowed. A system call of another ABI (i386 or x32
//! on x86_64) kills the process: it would bypass the numbers checked here.

/// The filter as bwrap reads it (an array of `struct sock_filter`), or
/// `None` on an architecture it is not written for.
pub fn program() -> Option<Vec<u8>> {
    let arch = arch()?;
    let mut filter = vec![
        load(OFFSET_ARCH),
        jump(BPF_JEQ, arch, 1, 0),
        ret(SECCOMP_RET_KILL_PROCESS),
        load(OFFSET_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 calls are x86_64 calls with this bit set.
        filter.push(jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1));
        filter.push(ret(SECCOMP_RET_KILL_PROCESS));
    }
    for nr in denied() {
        filter.push(jump(BPF_JEQ, nr, 0, 1));
        filter.push(ret(SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    filter.push(jump(BPF_JEQ, libc::SYS_clone3 as u32, 0, 1));
    filter.push(ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    // clone: allowed unless its flags (the first argument on every
    // architecture here) ask for a namespace.
    filter.push(jump(BPF_JEQ, libc::SYS_clone as u32, 0, 3));
    filter.push(load(OFFSET_ARG0_LOW));
    filter.push(jump(BPF_JSET, NAMESPACE_FLAGS, 0, 1));
    filter.push(ret(SECCOMP_RET_ERRNO | libc::EPERM as u32));
    filter.push(ret(SECCOMP_RET_ALLOW));

    let mut bytes = Vec::with_capacity(filter.len() * 8);
    for instruction in filter {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    Some(bytes)
}

fn denied() -> [u32; 17] {
    [
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
    ]
    .map(|nr| nr as u32)
}

fn arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(AUDIT_ARCH_X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(AUDIT_ARCH_AARCH64)
    } else {
        None
    }
}

/// `struct sock_filter`.
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn load(offset: u32) -> Instruction {
    Instruction {
        code: BPF_LD | BPF_W | BPF_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// Compares the accumulator with `k`; `jt`/`jf` count instructions to skip.
fn jump(test: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction {
        code: BPF_JMP | test | BPF_K,
        jt,
        jf,
        k,
    }
}

fn ret(action: u32) -> Instruction {
    Instruction {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: action,
    }
}

// Classic BPF and seccomp ABI constants (linux/filter.h, linux/seccomp.h,
// linux/audit.h): stable kernel ABI.
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `struct seccomp_data`: nr, arch, instruction pointer, then the six
/// arguments as u64 (the low half first on these little-endian targets).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;
/// Every `CLONE_NEW*` flag, `CLONE_NEWTIME` (0x80) included.
const NAMESPACE_FLAGS: u32 = 0x80
    | libc::CLONE_NEWNS as u32
    | libc::CLONE_NEWCGROUP as u32
    | libc::CLONE_NEWUTS as u32
    | libc::CLONE_NEWIPC as u32
    | libc::CLONE_NEWUSER as u32
    | libc::CLONE_NEWPID as u32
    | libc::CLONE_NEWNET as u32;

#[cfg(test)]
mod tests {
    #[test]
    fn the_program_is_whole_instructions_and_ends_by_allowing() {
        let Some(program) = super::program() else {
            return;
        };
        assert_eq!(program.len() % 8, 0);
        let last = &program[program.len() - 8..];
        assert_eq!(&last[4..], &super::SECCOMP_RET_ALLOW.to_ne_bytes());
    }
}
