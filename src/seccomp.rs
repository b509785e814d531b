//! The agent's seccomp filter: a short deny-list of system calls that could get the agent out
//! from under the saferoot mount and the Landlock sandbox, or out of the machine's control.
//!
//! # Where it runs
//!
//! [`build`] compiles the filter in the parent, with `seccompiler`, where allocation and error
//! reporting are cheap. [`Filter::apply_in_child`] installs it in the forked child from
//! `Command::pre_exec`, in this order:
//!
//! 1. Landlock (`sandbox::Prepared::apply_in_child`), which also sets `no_new_privs`;
//! 2. this filter, as the very last step;
//! 3. `execve` of the agent.
//!
//! Installing it last means nothing saferoot itself does runs under it, except the `execve`.
//! A filter can never be removed: it is inherited across `fork`, `clone` and `execve` by every
//! process the agent starts, and further filters (the agent may add its own) can only deny more.
//!
//! # What is denied, and why
//!
//! The default action is *allow*: agents run arbitrary toolchains, so an allow-list would break
//! them. The filter only closes doors that sit beside the FUSE mount and Landlock:
//!
//! - mount API (`mount`, `umount2`, `fsopen`, `fsconfig`, `fsmount`, `move_mount`, `open_tree`,
//!   `open_tree_attr`, `fspick`, `mount_setattr`, `pivot_root`, `chroot`): unmounting or covering
//!   the saferoot mount, or changing root, would expose the real project directory. Landlock
//!   refuses mount changes too; this second lock does not depend on the Landlock ABI.
//! - other processes (`ptrace`, `process_vm_readv`, `process_vm_writev`, `pidfd_getfd`): a process
//!   whose memory or files the agent controls acts for it, possibly outside the sandbox. The
//!   cost: debuggers (`gdb`, `strace`) do not work inside the agent.
//! - file handles (`open_by_handle_at`, `name_to_handle_at`): opening by inode handle skips path
//!   lookup, so it skips the mount and Landlock's path rules (the "shocker" container escape).
//! - namespaces (`setns`, `unshare` and `clone` with a `CLONE_NEW*` flag): a new user namespace
//!   hands out capabilities that the mount API then uses; joining another mount namespace can
//!   land where saferoot is not mounted. Plain `fork`, threads and `unshare(CLONE_FILES)` work.
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: work submitted through a ring is
//!   never seen by seccomp, and io_uring is a large kernel attack surface.
//! - `bpf`, `perf_event_open`, `userfaultfd`: kernel attack surface and spying on other
//!   processes; `userfaultfd` is the usual tool for winning kernel races in exploits.
//! - keyrings (`keyctl`, `add_key`, `request_key`): keyrings are shared with the user's other
//!   processes and may hold their secrets (Kerberos tickets, fscrypt and ecryptfs keys).
//! - host administration (`kexec_load`, `kexec_file_load`, `init_module`, `finit_module`,
//!   `delete_module`, `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`, `quotactl_fd`): all
//!   machine-wide and root only, so they matter exactly when the agent runs as root, which is
//!   when they would hurt most; no coding task needs them. Denying `quotactl` also loses the
//!   unprivileged quota queries of `quota(1)`, which agents have no use for.
//! - `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)`: both push characters into a terminal's input, so
//!   the agent could type commands into the user's shell. The request is compared on its low
//!   32 bits, because the kernel truncates it to `unsigned int` (setting high bits is no bypass).
//!
//! Every denial returns `EPERM`, which programs treat as an ordinary refusal, except:
//!
//! - `clone3` returns `ENOSYS`. Its flags sit in a struct in memory, which seccomp cannot read.
//!   `ENOSYS` says "this kernel has no clone3", on which glibc (and others) fall back to `clone`,
//!   whose flags are a register the filter checks. `EPERM` would make thread creation fail.
//! - On x86_64, system call numbers with the x32 bit (`__X32_SYSCALL_BIT`, `0x4000_0000`) set
//!   return `EPERM`: they reach the same kernel functions under other numbers, so `mount` via
//!   x32 would slip past a filter that matches the native numbers only.
//! - System calls made under another architecture (i386 through `int 0x80` on x86_64, arm32 on
//!   aarch64) return `EPERM` for the same reason: their numbers are a different table.
//!   `seccompiler` would kill the process here; the filter answers first (see below).
//!
//! Denials are logged: the filter is installed with `SECCOMP_FILTER_FLAG_LOG`, so the audit
//! subsystem records each denied call (number and architecture; [`syscall_name`] turns the
//! number into a name) as long as `kernel.seccomp.actions_logged` contains `errno` (the default).
//!
//! # What seccomp cannot see
//!
//! A filter sees the system call number, the architecture and the six argument *registers*,
//! never memory they point to. It cannot look at paths (`openat`, `unlinkat`, `rename`), mount
//! sources, socket addresses, `clone3`'s struct or an `ioctl`'s argument block, and even if it
//! could, the memory may change after the check. Which files the agent may touch is therefore
//! decided by Landlock and the FUSE layer, not here. Nor does it see what a program reaches
//! without a denied call: `/dev/userfaultfd`, `/proc/<pid>/mem` (the kernel's ptrace checks and
//! Landlock's ptrace scoping cover that one), or calls that are allowed with harmful arguments
//! (`kill` of a process outside the sandbox is Landlock's signal scoping's job).
//!
//! # How the program is built
//!
//! `seccompiler` compiles the deny rules (match: `EPERM`, mismatch: allow). It cannot express a
//! bit test on the system call number nor a second errno, so [`build`] puts a small prefix of
//! its own in front of the compiled program. BPF jumps are relative and only go forward, so a
//! prefix that either returns or falls through to its end leaves the rest valid:
//!
//! ```text
//! load arch;  arch != native   -> return EPERM
//! load nr;    nr < 0           -> skip the x32 test (such numbers are ENOSYS anyway)
//!             nr & 0x4000_0000 -> return EPERM           (x86_64 only)
//!             nr == clone3     -> return ENOSYS
//! <seccompiler's program: its own arch check, which now always passes, then the rules>
//! ```

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const NATIVE: Option<(TargetArch, u32)> = Some((TargetArch::x86_64, 0xC000_003E));
/// `AUDIT_ARCH_AARCH64` from `<linux/audit.h>`:
/// `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const NATIVE: Option<(TargetArch, u32)> = Some((TargetArch::aarch64, 0xC000_00B7));
/// No filter has been written for this architecture: [`build`] fails.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE: Option<(TargetArch, u32)> = None;

/// `__X32_SYSCALL_BIT` from `<asm/unistd.h>`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets of `nr` and `arch` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// The namespace flags of `clone` and `unshare`, with their names for tests and messages.
const NAMESPACE_FLAGS: &[(libc::c_int, &str)] = &[
    (libc::CLONE_NEWNS, "CLONE_NEWNS"),
    (libc::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
    (libc::CLONE_NEWUTS, "CLONE_NEWUTS"),
    (libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
    (libc::CLONE_NEWPID, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET, "CLONE_NEWNET"),
    (libc::CLONE_NEWTIME, "CLONE_NEWTIME"),
];

/// Terminal ioctls that inject input: `TIOCSTI` fakes typed characters, `TIOCLINUX` (subcommand
/// `TIOCL_PASTESEL`) pastes the console selection.
/// (`libc::Ioctl` is `c_ulong` with glibc but `c_int` with musl, hence the casts.)
#[allow(clippy::unnecessary_cast)]
const INJECTING_IOCTLS: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

/// How many entries at the end of [`SUMMARY`] are handled specially (with argument conditions,
/// another errno, or outside `seccompiler`); all the ones before them are denied outright.
const SPECIAL_ENTRIES: usize = 6;

/// What the filter denies and why, one line each; see [`denied_summary`]. Entries before the
/// last [`SPECIAL_ENTRIES`] name a system call that [`build`] denies with `EPERM` whatever its
/// arguments, so this list is the filter's single source of truth.
#[rustfmt::skip]
static SUMMARY: &[(&str, &str)] = &[
    ("mount", "mounting over or under the project would hide the saferoot mount"),
    ("umount2", "unmounting the saferoot mount would expose the real project directory"),
    ("fsopen", "new mount API: creates a filesystem context to mount"),
    ("fsconfig", "new mount API: configures a filesystem context to mount"),
    ("fsmount", "new mount API: turns a filesystem context into a mount"),
    ("move_mount", "new mount API: attaches or moves a mount"),
    ("open_tree", "new mount API: clones a mount tree (e.g. the real project) to attach it"),
    ("open_tree_attr", "new mount API: clones a mount tree and changes its attributes"),
    ("fspick", "new mount API: reconfigures an existing mount"),
    ("mount_setattr", "changes mount attributes (read-only, propagation, idmapping)"),
    ("pivot_root", "changes the root mount, which would leave the saferoot mount behind"),
    ("chroot", "changes the root directory, a classic way around path-based rules"),
    ("ptrace", "controls another process, which then acts for the agent; no debuggers inside"),
    ("process_vm_readv", "reads another process's memory"),
    ("process_vm_writev", "writes another process's memory, i.e. injects code"),
    ("pidfd_getfd", "steals an open file from another process"),
    ("open_by_handle_at", "opens files by inode handle, skipping path lookup and the mount"),
    ("name_to_handle_at", "makes the inode handles that open_by_handle_at consumes"),
    ("setns", "joins another namespace, e.g. a mount namespace without saferoot"),
    ("io_uring_setup", "io_uring work is invisible to seccomp; large kernel attack surface"),
    ("io_uring_enter", "io_uring work is invisible to seccomp; large kernel attack surface"),
    ("io_uring_register", "io_uring work is invisible to seccomp; large kernel attack surface"),
    ("bpf", "loads programs into the kernel; large kernel attack surface"),
    ("perf_event_open", "observes other processes and the kernel; large attack surface"),
    ("userfaultfd", "the usual tool for winning kernel races in exploits"),
    ("keyctl", "kernel keyrings are shared with the user's other processes and their secrets"),
    ("add_key", "kernel keyrings are shared with the user's other processes and their secrets"),
    ("request_key", "kernel keyrings are shared with the user's other processes and their secrets"),
    ("kexec_load", "root only: replaces the running kernel"),
    ("kexec_file_load", "root only: replaces the running kernel"),
    ("init_module", "root only: loads code into the kernel"),
    ("finit_module", "root only: loads code into the kernel"),
    ("delete_module", "root only: unloads kernel modules"),
    ("reboot", "root only: reboots or halts the machine"),
    ("swapon", "root only: adds swap space to the whole machine"),
    ("swapoff", "root only: removes swap space from the whole machine"),
    ("acct", "root only: turns process accounting for the whole machine on or off"),
    ("quotactl", "quota administration (root only for changes); queries are lost with it"),
    ("quotactl_fd", "quota administration, like quotactl"),
    // The special entries; keep SPECIAL_ENTRIES in step.
    ("unshare", "with a CLONE_NEW* flag: new namespaces (user ones hand out mount rights)"),
    ("clone", "with a CLONE_NEW* flag: new namespaces; plain fork and threads still work"),
    ("ioctl", "TIOCSTI or TIOCLINUX only: they type into the terminal, e.g. the user's shell"),
    ("clone3", "ENOSYS: flags are in memory seccomp cannot read; libc falls back to clone"),
    ("x32 system calls", "x86_64 numbers with bit 0x40000000: other numbers for the same calls"),
    ("other architectures", "e.g. i386 via int 0x80: another numbering the rules do not match"),
];

/// Everything that can go wrong while building the filter, one line each.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp filter is written for x86_64 and aarch64 only, not {0}")]
    UnsupportedArch(&'static str),

    #[error("the seccomp filter names a system call unknown on this architecture: {0}")]
    UnknownSyscall(&'static str),

    #[error("cannot compile the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),

    #[error("the seccomp filter has {0} instructions, more than the kernel's limit of 4096")]
    TooLong(usize),
}

/// A compiled filter, ready to install with [`Filter::apply_in_child`].
#[derive(Clone, Debug)]
pub struct Filter {
    program: BpfProgram,
}

// `apply_in_child` hands seccompiler's instructions to the kernel as `libc::sock_filter`s; both
// are `#[repr(C)]` copies of the kernel's `struct sock_filter`.
const _: () = {
    assert!(size_of::<sock_filter>() == size_of::<libc::sock_filter>());
    assert!(align_of::<sock_filter>() == align_of::<libc::sock_filter>());
};

/// Compile the filter for the architecture saferoot was built for.
pub fn build() -> Result<Filter, SeccompError> {
    let Some((target, audit_arch)) = NATIVE else {
        return Err(SeccompError::UnsupportedArch(std::env::consts::ARCH));
    };

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(name, _) in always_denied() {
        let nr = syscall_number(name).ok_or(SeccompError::UnknownSyscall(name))?;
        // An empty rule list matches the call whatever its arguments.
        rules.insert(nr, Vec::new());
    }

    // `unshare(flags)`: deny if any namespace bit is set. seccompiler ORs the rules of one call,
    // so one masked test per bit. Only the low 32 bits are compared; higher bits are invalid
    // for unshare and make the kernel fail it anyway.
    rules.insert(
        libc::SYS_unshare,
        flag_rules(NAMESPACE_FLAGS.iter().map(|&(f, _)| f))?,
    );
    // `clone(flags, ...)`: the flags are argument 0 on x86_64 and aarch64 alike. CLONE_NEWTIME
    // is left out: in clone's flags that bit belongs to the exit signal (CSIGNAL, the low byte),
    // and the kernel only accepts CLONE_NEWTIME from clone3 and unshare.
    rules.insert(
        libc::SYS_clone,
        flag_rules(
            NAMESPACE_FLAGS
                .iter()
                .map(|&(f, _)| f)
                .filter(|&f| f != libc::CLONE_NEWTIME),
        )?,
    );
    // `ioctl(fd, request, ...)`: the kernel takes the request as `unsigned int`, so compare the
    // low 32 bits (a Dword condition) and high garbage bits do not get past.
    let ioctl_rules = INJECTING_IOCTLS
        .iter()
        .map(|&request| {
            SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                request,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target,
    )?;
    let body: BpfProgram = filter.try_into()?;

    let mut program = prefix(audit_arch);
    program.extend(body);
    if program.len() > libc::BPF_MAXINSNS as usize {
        return Err(SeccompError::TooLong(program.len()));
    }
    Ok(Filter { program })
}

/// One rule per flag, each matching when that bit of argument 0 is set.
fn flag_rules(
    flags: impl Iterator<Item = libc::c_int>,
) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    flags
        .map(|flag| {
            let bit = u64::from(flag as u32);
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(bit),
                bit,
            )?])
        })
        .collect()
}

/// The hand-written start of the program: foreign architectures, x32 numbers and `clone3`.
/// It either returns or falls through to its end, where seccompiler's program begins.
fn prefix(audit_arch: u32) -> BpfProgram {
    let eperm = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
    let enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    let mut p = vec![
        load(SECCOMP_DATA_ARCH),
        jump(libc::BPF_JEQ, audit_arch, 1, 0),
        ret(eperm),
        load(SECCOMP_DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        // Negative numbers (-1 is "no system call" after a tracer skipped one) are no x32 calls;
        // let them through to the kernel's ENOSYS.
        jump(libc::BPF_JSET, 0x8000_0000, 2, 0),
        jump(libc::BPF_JSET, X32_SYSCALL_BIT, 0, 1),
        ret(eperm),
    ]);
    p.extend([
        jump(libc::BPF_JEQ, libc::SYS_clone3 as u32, 0, 1),
        ret(enosys),
    ]);
    p
}

/// `A = seccomp_data[offset]` (32 bits).
fn load(offset: u32) -> sock_filter {
    sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// Compare `A` with `k` (`op` is `BPF_JEQ` or `BPF_JSET`); skip `jt` or `jf` instructions.
fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Return `action` to the kernel.
fn ret(action: u32) -> sock_filter {
    sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: action,
    }
}

impl Filter {
    /// Install the filter on the calling thread: `prctl(PR_SET_NO_NEW_PRIVS, 1)`, then
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, &prog)`, retried without the
    /// flag if the kernel rejects it with `EINVAL` (it predates 4.14). `no_new_privs` is already
    /// set by the Landlock step; setting it again is harmless, and the kernel requires it for
    /// unprivileged filters.
    ///
    /// Made for `Command::pre_exec`, after the Landlock step: it runs between `fork` and `exec`
    /// in a copy of a possibly multi-threaded process, so it only makes raw system calls and
    /// never allocates (an `io::Error` from `last_os_error` is just the errno).
    ///
    /// # Safety
    /// Call it only in a freshly forked child that is about to `exec`: it restricts the calling
    /// thread, and everything it starts, for good.
    pub unsafe fn apply_in_child(&self) -> io::Result<()> {
        let one: libc::c_ulong = 1;
        let zero: libc::c_ulong = 0;
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
            return Err(io::Error::last_os_error());
        }
        let prog = libc::sock_fprog {
            // `build` keeps the program within BPF_MAXINSNS (4096), so this cannot truncate.
            len: self.program.len() as libc::c_ushort,
            // The kernel only reads (copies) the instructions.
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        let mode = libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong;
        let prog_ptr: *const libc::sock_fprog = &prog;
        if libc::syscall(
            libc::SYS_seccomp,
            mode,
            libc::SECCOMP_FILTER_FLAG_LOG,
            prog_ptr,
        ) == 0
        {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        if libc::syscall(libc::SYS_seccomp, mode, zero, prog_ptr) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Number of BPF instructions in the program.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Always false: a built filter has instructions. (For API symmetry with `len`.)
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

/// What is denied and why, one line each, as `(system call, reason)`, for `--verbose` and the
/// docs. The last entries describe conditional denials (`unshare`, `clone`, `ioctl`), `clone3`'s
/// `ENOSYS`, and the x32 and foreign-architecture checks; everything else is plain `EPERM`.
pub fn denied_summary() -> &'static [(&'static str, &'static str)] {
    SUMMARY
}

/// The system calls denied with `EPERM` whatever their arguments.
fn always_denied() -> &'static [(&'static str, &'static str)] {
    &SUMMARY[..SUMMARY.len() - SPECIAL_ENTRIES]
}

/// Name of a system call number of the architecture saferoot was built for (x86_64 or aarch64),
/// for denial reports: audit records give numbers, e.g. on x86_64 165 is `"mount"`. Covers every
/// system call of the kernel's table up to number 469 (Linux 6.17). `None` for unknown numbers
/// and for x32 numbers (bit `0x4000_0000`). Check the record's `arch=` against
/// [`native_audit_arch`] first: an i386 record's numbers belong to another table, where 20 is
/// `getpid` rather than `writev`.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALLS
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()
        .map(|i| SYSCALLS[i].1)
}

/// The `AUDIT_ARCH_*` value (the `arch=` field of audit records) of native system calls on the
/// architecture saferoot was built for: `0xC000_003E` on x86_64, `0xC000_00B7` on aarch64.
/// `None` where no filter exists.
pub fn native_audit_arch() -> Option<u32> {
    NATIVE.map(|(_, arch)| arch)
}

/// The inverse of [`syscall_name`].
fn syscall_number(name: &str) -> Option<i64> {
    SYSCALLS
        .iter()
        .find(|&&(_, n)| n == name)
        .map(|&(nr, _)| nr)
}

/// No table for other architectures; [`build`] fails there anyway.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: &[(i64, &str)] = &[];

// System call tables, sorted by number: x86_64 from the kernel's `asm/unistd_64.h`, aarch64
// (the generic table) from the `libc` crate, both completed with the numbers 451-469 that every
// architecture shares since Linux 5.1 numbered new calls in step.
#[rustfmt::skip]
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str)] = &[
    (0, "read"), (1, "write"), (2, "open"), (3, "close"), (4, "stat"), (5, "fstat"), (6, "lstat"),
    (7, "poll"), (8, "lseek"), (9, "mmap"), (10, "mprotect"), (11, "munmap"), (12, "brk"),
    (13, "rt_sigaction"), (14, "rt_sigprocmask"), (15, "rt_sigreturn"), (16, "ioctl"),
    (17, "pread64"), (18, "pwrite64"), (19, "readv"), (20, "writev"), (21, "access"), (22, "pipe"),
    (23, "select"), (24, "sched_yield"), (25, "mremap"), (26, "msync"), (27, "mincore"),
    (28, "madvise"), (29, "shmget"), (30, "shmat"), (31, "shmctl"), (32, "dup"), (33, "dup2"),
    (34, "pause"), (35, "nanosleep"), (36, "getitimer"), (37, "alarm"), (38, "setitimer"),
    (39, "getpid"), (40, "sendfile"), (41, "socket"), (42, "connect"), (43, "accept"),
    (44, "sendto"), (45, "recvfrom"), (46, "sendmsg"), (47, "recvmsg"), (48, "shutdown"),
    (49, "bind"), (50, "listen"), (51, "getsockname"), (52, "getpeername"), (53, "socketpair"),
    (54, "setsockopt"), (55, "getsockopt"), (56, "clone"), (57, "fork"), (58, "vfork"),
    (59, "execve"), (60, "exit"), (61, "wait4"), (62, "kill"), (63, "uname"), (64, "semget"),
    (65, "semop"), (66, "semctl"), (67, "shmdt"), (68, "msgget"), (69, "msgsnd"), (70, "msgrcv"),
    (71, "msgctl"), (72, "fcntl"), (73, "flock"), (74, "fsync"), (75, "fdatasync"),
    (76, "truncate"), (77, "ftruncate"), (78, "getdents"), (79, "getcwd"), (80, "chdir"),
    (81, "fchdir"), (82, "rename"), (83, "mkdir"), (84, "rmdir"), (85, "creat"), (86, "link"),
    (87, "unlink"), (88, "symlink"), (89, "readlink"), (90, "chmod"), (91, "fchmod"),
    (92, "chown"), (93, "fchown"), (94, "lchown"), (95, "umask"), (96, "gettimeofday"),
    (97, "getrlimit"), (98, "getrusage"), (99, "sysinfo"), (100, "times"), (101, "ptrace"),
    (102, "getuid"), (103, "syslog"), (104, "getgid"), (105, "setuid"), (106, "setgid"),
    (107, "geteuid"), (108, "getegid"), (109, "setpgid"), (110, "getppid"), (111, "getpgrp"),
    (112, "setsid"), (113, "setreuid"), (114, "setregid"), (115, "getgroups"), (116, "setgroups"),
    (117, "setresuid"), (118, "getresuid"), (119, "setresgid"), (120, "getresgid"),
    (121, "getpgid"), (122, "setfsuid"), (123, "setfsgid"), (124, "getsid"), (125, "capget"),
    (126, "capset"), (127, "rt_sigpending"), (128, "rt_sigtimedwait"), (129, "rt_sigqueueinfo"),
    (130, "rt_sigsuspend"), (131, "sigaltstack"), (132, "utime"), (133, "mknod"), (134, "uselib"),
    (135, "personality"), (136, "ustat"), (137, "statfs"), (138, "fstatfs"), (139, "sysfs"),
    (140, "getpriority"), (141, "setpriority"), (142, "sched_setparam"), (143, "sched_getparam"),
    (144, "sched_setscheduler"), (145, "sched_getscheduler"), (146, "sched_get_priority_max"),
    (147, "sched_get_priority_min"), (148, "sched_rr_get_interval"), (149, "mlock"),
    (150, "munlock"), (151, "mlockall"), (152, "munlockall"), (153, "vhangup"),
    (154, "modify_ldt"), (155, "pivot_root"), (156, "_sysctl"), (157, "prctl"),
    (158, "arch_prctl"), (159, "adjtimex"), (160, "setrlimit"), (161, "chroot"), (162, "sync"),
    (163, "acct"), (164, "settimeofday"), (165, "mount"), (166, "umount2"), (167, "swapon"),
    (168, "swapoff"), (169, "reboot"), (170, "sethostname"), (171, "setdomainname"), (172, "iopl"),
    (173, "ioperm"), (174, "create_module"), (175, "init_module"), (176, "delete_module"),
    (177, "get_kernel_syms"), (178, "query_module"), (179, "quotactl"), (180, "nfsservctl"),
    (181, "getpmsg"), (182, "putpmsg"), (183, "afs_syscall"), (184, "tuxcall"), (185, "security"),
    (186, "gettid"), (187, "readahead"), (188, "setxattr"), (189, "lsetxattr"), (190, "fsetxattr"),
    (191, "getxattr"), (192, "lgetxattr"), (193, "fgetxattr"), (194, "listxattr"),
    (195, "llistxattr"), (196, "flistxattr"), (197, "removexattr"), (198, "lremovexattr"),
    (199, "fremovexattr"), (200, "tkill"), (201, "time"), (202, "futex"),
    (203, "sched_setaffinity"), (204, "sched_getaffinity"), (205, "set_thread_area"),
    (206, "io_setup"), (207, "io_destroy"), (208, "io_getevents"), (209, "io_submit"),
    (210, "io_cancel"), (211, "get_thread_area"), (212, "lookup_dcookie"), (213, "epoll_create"),
    (214, "epoll_ctl_old"), (215, "epoll_wait_old"), (216, "remap_file_pages"),
    (217, "getdents64"), (218, "set_tid_address"), (219, "restart_syscall"), (220, "semtimedop"),
    (221, "fadvise64"), (222, "timer_create"), (223, "timer_settime"), (224, "timer_gettime"),
    (225, "timer_getoverrun"), (226, "timer_delete"), (227, "clock_settime"),
    (228, "clock_gettime"), (229, "clock_getres"), (230, "clock_nanosleep"), (231, "exit_group"),
    (232, "epoll_wait"), (233, "epoll_ctl"), (234, "tgkill"), (235, "utimes"), (236, "vserver"),
    (237, "mbind"), (238, "set_mempolicy"), (239, "get_mempolicy"), (240, "mq_open"),
    (241, "mq_unlink"), (242, "mq_timedsend"), (243, "mq_timedreceive"), (244, "mq_notify"),
    (245, "mq_getsetattr"), (246, "kexec_load"), (247, "waitid"), (248, "add_key"),
    (249, "request_key"), (250, "keyctl"), (251, "ioprio_set"), (252, "ioprio_get"),
    (253, "inotify_init"), (254, "inotify_add_watch"), (255, "inotify_rm_watch"),
    (256, "migrate_pages"), (257, "openat"), (258, "mkdirat"), (259, "mknodat"), (260, "fchownat"),
    (261, "futimesat"), (262, "newfstatat"), (263, "unlinkat"), (264, "renameat"), (265, "linkat"),
    (266, "symlinkat"), (267, "readlinkat"), (268, "fchmodat"), (269, "faccessat"),
    (270, "pselect6"), (271, "ppoll"), (272, "unshare"), (273, "set_robust_list"),
    (274, "get_robust_list"), (275, "splice"), (276, "tee"), (277, "sync_file_range"),
    (278, "vmsplice"), (279, "move_pages"), (280, "utimensat"), (281, "epoll_pwait"),
    (282, "signalfd"), (283, "timerfd_create"), (284, "eventfd"), (285, "fallocate"),
    (286, "timerfd_settime"), (287, "timerfd_gettime"), (288, "accept4"), (289, "signalfd4"),
    (290, "eventfd2"), (291, "epoll_create1"), (292, "dup3"), (293, "pipe2"),
    (294, "inotify_init1"), (295, "preadv"), (296, "pwritev"), (297, "rt_tgsigqueueinfo"),
    (298, "perf_event_open"), (299, "recvmmsg"), (300, "fanotify_init"), (301, "fanotify_mark"),
    (302, "prlimit64"), (303, "name_to_handle_at"), (304, "open_by_handle_at"),
    (305, "clock_adjtime"), (306, "syncfs"), (307, "sendmmsg"), (308, "setns"), (309, "getcpu"),
    (310, "process_vm_readv"), (311, "process_vm_writev"), (312, "kcmp"), (313, "finit_module"),
    (314, "sched_setattr"), (315, "sched_getattr"), (316, "renameat2"), (317, "seccomp"),
    (318, "getrandom"), (319, "memfd_create"), (320, "kexec_file_load"), (321, "bpf"),
    (322, "execveat"), (323, "userfaultfd"), (324, "membarrier"), (325, "mlock2"),
    (326, "copy_file_range"), (327, "preadv2"), (328, "pwritev2"), (329, "pkey_mprotect"),
    (330, "pkey_alloc"), (331, "pkey_free"), (332, "statx"), (333, "io_pgetevents"), (334, "rseq"),
    (424, "pidfd_send_signal"), (425, "io_uring_setup"), (426, "io_uring_enter"),
    (427, "io_uring_register"), (428, "open_tree"), (429, "move_mount"), (430, "fsopen"),
    (431, "fsconfig"), (432, "fsmount"), (433, "fspick"), (434, "pidfd_open"), (435, "clone3"),
    (436, "close_range"), (437, "openat2"), (438, "pidfd_getfd"), (439, "faccessat2"),
    (440, "process_madvise"), (441, "epoll_pwait2"), (442, "mount_setattr"), (443, "quotactl_fd"),
    (444, "landlock_create_ruleset"), (445, "landlock_add_rule"), (446, "landlock_restrict_self"),
    (447, "memfd_secret"), (448, "process_mrelease"), (449, "futex_waitv"),
    (450, "set_mempolicy_home_node"), (451, "cachestat"), (452, "fchmodat2"),
    (453, "map_shadow_stack"), (454, "futex_wake"), (455, "futex_wait"), (456, "futex_requeue"),
    (457, "statmount"), (458, "listmount"), (459, "lsm_get_self_attr"), (460, "lsm_set_self_attr"),
    (461, "lsm_list_modules"), (462, "mseal"), (463, "setxattrat"), (464, "getxattrat"),
    (465, "listxattrat"), (466, "removexattrat"), (467, "open_tree_attr"), (468, "file_getattr"),
    (469, "file_setattr"),
];

#[rustfmt::skip]
#[cfg(target_arch = "aarch64")]
const SYSCALLS: &[(i64, &str)] = &[
    (0, "io_setup"), (1, "io_destroy"), (2, "io_submit"), (3, "io_cancel"), (4, "io_getevents"),
    (5, "setxattr"), (6, "lsetxattr"), (7, "fsetxattr"), (8, "getxattr"), (9, "lgetxattr"),
    (10, "fgetxattr"), (11, "listxattr"), (12, "llistxattr"), (13, "flistxattr"),
    (14, "removexattr"), (15, "lremovexattr"), (16, "fremovexattr"), (17, "getcwd"),
    (18, "lookup_dcookie"), (19, "eventfd2"), (20, "epoll_create1"), (21, "epoll_ctl"),
    (22, "epoll_pwait"), (23, "dup"), (24, "dup3"), (25, "fcntl"), (26, "inotify_init1"),
    (27, "inotify_add_watch"), (28, "inotify_rm_watch"), (29, "ioctl"), (30, "ioprio_set"),
    (31, "ioprio_get"), (32, "flock"), (33, "mknodat"), (34, "mkdirat"), (35, "unlinkat"),
    (36, "symlinkat"), (37, "linkat"), (39, "umount2"), (40, "mount"), (41, "pivot_root"),
    (42, "nfsservctl"), (43, "statfs"), (44, "fstatfs"), (45, "truncate"), (46, "ftruncate"),
    (47, "fallocate"), (48, "faccessat"), (49, "chdir"), (50, "fchdir"), (51, "chroot"),
    (52, "fchmod"), (53, "fchmodat"), (54, "fchownat"), (55, "fchown"), (56, "openat"),
    (57, "close"), (58, "vhangup"), (59, "pipe2"), (60, "quotactl"), (61, "getdents64"),
    (62, "lseek"), (63, "read"), (64, "write"), (65, "readv"), (66, "writev"), (67, "pread64"),
    (68, "pwrite64"), (69, "preadv"), (70, "pwritev"), (71, "sendfile"), (72, "pselect6"),
    (73, "ppoll"), (74, "signalfd4"), (75, "vmsplice"), (76, "splice"), (77, "tee"),
    (78, "readlinkat"), (79, "newfstatat"), (80, "fstat"), (81, "sync"), (82, "fsync"),
    (83, "fdatasync"), (85, "timerfd_create"), (86, "timerfd_settime"), (87, "timerfd_gettime"),
    (88, "utimensat"), (89, "acct"), (90, "capget"), (91, "capset"), (92, "personality"),
    (93, "exit"), (94, "exit_group"), (95, "waitid"), (96, "set_tid_address"), (97, "unshare"),
    (98, "futex"), (99, "set_robust_list"), (100, "get_robust_list"), (101, "nanosleep"),
    (102, "getitimer"), (103, "setitimer"), (104, "kexec_load"), (105, "init_module"),
    (106, "delete_module"), (107, "timer_create"), (108, "timer_gettime"),
    (109, "timer_getoverrun"), (110, "timer_settime"), (111, "timer_delete"),
    (112, "clock_settime"), (113, "clock_gettime"), (114, "clock_getres"),
    (115, "clock_nanosleep"), (116, "syslog"), (117, "ptrace"), (118, "sched_setparam"),
    (119, "sched_setscheduler"), (120, "sched_getscheduler"), (121, "sched_getparam"),
    (122, "sched_setaffinity"), (123, "sched_getaffinity"), (124, "sched_yield"),
    (125, "sched_get_priority_max"), (126, "sched_get_priority_min"),
    (127, "sched_rr_get_interval"), (128, "restart_syscall"), (129, "kill"), (130, "tkill"),
    (131, "tgkill"), (132, "sigaltstack"), (133, "rt_sigsuspend"), (134, "rt_sigaction"),
    (135, "rt_sigprocmask"), (136, "rt_sigpending"), (137, "rt_sigtimedwait"),
    (138, "rt_sigqueueinfo"), (139, "rt_sigreturn"), (140, "setpriority"), (141, "getpriority"),
    (142, "reboot"), (143, "setregid"), (144, "setgid"), (145, "setreuid"), (146, "setuid"),
    (147, "setresuid"), (148, "getresuid"), (149, "setresgid"), (150, "getresgid"),
    (151, "setfsuid"), (152, "setfsgid"), (153, "times"), (154, "setpgid"), (155, "getpgid"),
    (156, "getsid"), (157, "setsid"), (158, "getgroups"), (159, "setgroups"), (160, "uname"),
    (161, "sethostname"), (162, "setdomainname"), (165, "getrusage"), (166, "umask"),
    (167, "prctl"), (168, "getcpu"), (169, "gettimeofday"), (170, "settimeofday"),
    (171, "adjtimex"), (172, "getpid"), (173, "getppid"), (174, "getuid"), (175, "geteuid"),
    (176, "getgid"), (177, "getegid"), (178, "gettid"), (179, "sysinfo"), (180, "mq_open"),
    (181, "mq_unlink"), (182, "mq_timedsend"), (183, "mq_timedreceive"), (184, "mq_notify"),
    (185, "mq_getsetattr"), (186, "msgget"), (187, "msgctl"), (188, "msgrcv"), (189, "msgsnd"),
    (190, "semget"), (191, "semctl"), (192, "semtimedop"), (193, "semop"), (194, "shmget"),
    (195, "shmctl"), (196, "shmat"), (197, "shmdt"), (198, "socket"), (199, "socketpair"),
    (200, "bind"), (201, "listen"), (202, "accept"), (203, "connect"), (204, "getsockname"),
    (205, "getpeername"), (206, "sendto"), (207, "recvfrom"), (208, "setsockopt"),
    (209, "getsockopt"), (210, "shutdown"), (211, "sendmsg"), (212, "recvmsg"), (213, "readahead"),
    (214, "brk"), (215, "munmap"), (216, "mremap"), (217, "add_key"), (218, "request_key"),
    (219, "keyctl"), (220, "clone"), (221, "execve"), (222, "mmap"), (223, "fadvise64"),
    (224, "swapon"), (225, "swapoff"), (226, "mprotect"), (227, "msync"), (228, "mlock"),
    (229, "munlock"), (230, "mlockall"), (231, "munlockall"), (232, "mincore"), (233, "madvise"),
    (234, "remap_file_pages"), (235, "mbind"), (236, "get_mempolicy"), (237, "set_mempolicy"),
    (238, "migrate_pages"), (239, "move_pages"), (240, "rt_tgsigqueueinfo"),
    (241, "perf_event_open"), (242, "accept4"), (243, "recvmmsg"), (260, "wait4"),
    (261, "prlimit64"), (262, "fanotify_init"), (263, "fanotify_mark"), (264, "name_to_handle_at"),
    (265, "open_by_handle_at"), (266, "clock_adjtime"), (267, "syncfs"), (268, "setns"),
    (269, "sendmmsg"), (270, "process_vm_readv"), (271, "process_vm_writev"), (272, "kcmp"),
    (273, "finit_module"), (274, "sched_setattr"), (275, "sched_getattr"), (276, "renameat2"),
    (277, "seccomp"), (278, "getrandom"), (279, "memfd_create"), (280, "bpf"), (281, "execveat"),
    (282, "userfaultfd"), (283, "membarrier"), (284, "mlock2"), (285, "copy_file_range"),
    (286, "preadv2"), (287, "pwritev2"), (288, "pkey_mprotect"), (289, "pkey_alloc"),
    (290, "pkey_free"), (291, "statx"), (293, "rseq"), (294, "kexec_file_load"),
    (424, "pidfd_send_signal"), (425, "io_uring_setup"), (426, "io_uring_enter"),
    (427, "io_uring_register"), (428, "open_tree"), (429, "move_mount"), (430, "fsopen"),
    (431, "fsconfig"), (432, "fsmount"), (433, "fspick"), (434, "pidfd_open"), (435, "clone3"),
    (436, "close_range"), (437, "openat2"), (438, "pidfd_getfd"), (439, "faccessat2"),
    (440, "process_madvise"), (441, "epoll_pwait2"), (442, "mount_setattr"), (443, "quotactl_fd"),
    (444, "landlock_create_ruleset"), (445, "landlock_add_rule"), (446, "landlock_restrict_self"),
    (447, "memfd_secret"), (448, "process_mrelease"), (449, "futex_waitv"),
    (450, "set_mempolicy_home_node"), (451, "cachestat"), (452, "fchmodat2"),
    (453, "map_shadow_stack"), (454, "futex_wake"), (455, "futex_wait"), (456, "futex_requeue"),
    (457, "statmount"), (458, "listmount"), (459, "lsm_get_self_attr"), (460, "lsm_set_self_attr"),
    (461, "lsm_list_modules"), (462, "mseal"), (463, "setxattrat"), (464, "getxattrat"),
    (465, "listxattrat"), (466, "removexattrat"), (467, "open_tree_attr"), (468, "file_getattr"),
    (469, "file_setattr"),
];

// The tests need a filter, so an architecture that has one.
#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Output};
    use std::sync::{Arc, OnceLock};

    /// The filter, built once for all tests.
    fn filter() -> Arc<Filter> {
        static FILTER: OnceLock<Arc<Filter>> = OnceLock::new();
        Arc::clone(FILTER.get_or_init(|| Arc::new(build().expect("build the seccomp filter"))))
    }

    /// Run `program args` with (or, for a baseline, without) the filter applied in `pre_exec`,
    /// the way `saferoot run` does.
    fn run(filtered: bool, program: &str, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if filtered {
            let f = filter();
            // SAFETY: apply_in_child only makes raw system calls.
            unsafe {
                cmd.pre_exec(move || f.apply_in_child());
            }
        }
        cmd.output().expect("spawn the test child")
    }

    fn describe(out: &Output) -> String {
        format!(
            "status {:?}, stdout {:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn sh(filtered: bool, script: &str) -> Output {
        run(filtered, "/bin/sh", &["-c", script], &[])
    }

    /// A Python helper that evaluates each `label=expression` argument and prints
    /// `label errno` (0 for success). `sc(nr, *args)` makes a raw system call; integer arguments
    /// are passed as `long`. `NR` maps names to numbers; `devnull()` opens /dev/null.
    const PROBE: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = dict((k, int(v)) for k, v in (kv.split("=") for kv in os.environ["NR"].split(",")))
def sc(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return ctypes.get_errno() if r == -1 else 0
def devnull():
    return os.open("/dev/null", os.O_RDONLY)
for arg in sys.argv[1:]:
    label, expr = arg.split("=", 1)
    print(label, eval(expr), flush=True)
"#;

    /// Run each `(label, expression)` through [`PROBE`], filtered or not; label -> errno.
    fn probe(filtered: bool, cases: &[(&str, String)]) -> HashMap<String, i32> {
        let nr = SYSCALLS
            .iter()
            .map(|(nr, name)| format!("{name}={nr}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["-c", PROBE];
        let joined: Vec<String> = cases.iter().map(|(l, e)| format!("{l}={e}")).collect();
        args.extend(joined.iter().map(String::as_str));
        let out = run(filtered, "python3", &args, &[("NR", nr)]);
        assert!(out.status.success(), "probe failed: {}", describe(&out));
        let got: HashMap<String, i32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(l, e)| (l.to_string(), e.trim().parse().expect("errno")))
            .collect();
        assert_eq!(got.len(), cases.len(), "probe output: {}", describe(&out));
        got
    }

    /// `sc(NR['name'], args...)` as a probe expression.
    fn call(name: &str, args: &str) -> String {
        format!("sc(NR['{name}'], {args})")
    }

    /// Assert `expected` under the filter, and that without it the same call gives something
    /// else (so the errno seen is the filter's, not the kernel's).
    fn assert_filtered(cases: &[(&str, String, i32)]) {
        let plain: Vec<(&str, String)> = cases.iter().map(|(l, e, _)| (*l, e.clone())).collect();
        let with = probe(true, &plain);
        let without = probe(false, &plain);
        for (label, expr, expected) in cases {
            assert_eq!(
                with[*label], *expected,
                "{label}: `{expr}` under the filter (without: {})",
                without[*label]
            );
            assert_ne!(
                without[*label], *expected,
                "{label}: `{expr}` fails the same way without the filter: the test proves nothing"
            );
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    // --- The program itself --------------------------------------------------------------

    #[test]
    fn filter_builds_and_fits() {
        let f = build().expect("build");
        assert!(!f.is_empty());
        assert!(f.len() < 1024, "{} instructions", f.len());
        // The prefix comes first: the arch check returns EPERM, not seccompiler's kill.
        assert_eq!(f.program[0], load(SECCOMP_DATA_ARCH));
        assert_eq!(
            f.program[2],
            ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32)
        );
    }

    #[test]
    fn filter_is_send_and_sync_for_pre_exec() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Filter>();
    }

    #[test]
    fn summary_lists_each_call_once_and_every_plain_denial_has_a_number() {
        let mut names: Vec<&str> = denied_summary().iter().map(|(n, _)| *n).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate entries in SUMMARY");
        for (name, reason) in denied_summary() {
            assert!(
                !reason.is_empty() && !reason.contains('\n'),
                "{name}: {reason:?}"
            );
        }
        for (name, _) in always_denied() {
            let nr = syscall_number(name).unwrap_or_else(|| panic!("{name} has no number"));
            assert_eq!(syscall_name(nr), Some(*name));
        }
        let special: Vec<&str> = SUMMARY[SUMMARY.len() - SPECIAL_ENTRIES..]
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            special,
            [
                "unshare",
                "clone",
                "ioctl",
                "clone3",
                "x32 system calls",
                "other architectures"
            ]
        );
    }

    #[test]
    fn syscall_table_agrees_with_libc() {
        assert!(
            SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0),
            "table not sorted"
        );
        let known: &[(libc::c_long, &str)] = &[
            (libc::SYS_read, "read"),
            (libc::SYS_openat, "openat"),
            (libc::SYS_unlinkat, "unlinkat"),
            (libc::SYS_renameat2, "renameat2"),
            (libc::SYS_connect, "connect"),
            (libc::SYS_bind, "bind"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_clone, "clone"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_unshare, "unshare"),
            (libc::SYS_ioctl, "ioctl"),
            (libc::SYS_mount, "mount"),
            (libc::SYS_umount2, "umount2"),
            (libc::SYS_fsopen, "fsopen"),
            (libc::SYS_fsconfig, "fsconfig"),
            (libc::SYS_fsmount, "fsmount"),
            (libc::SYS_move_mount, "move_mount"),
            (libc::SYS_open_tree, "open_tree"),
            (libc::SYS_fspick, "fspick"),
            (libc::SYS_mount_setattr, "mount_setattr"),
            (libc::SYS_pivot_root, "pivot_root"),
            (libc::SYS_chroot, "chroot"),
            (libc::SYS_ptrace, "ptrace"),
            (libc::SYS_process_vm_readv, "process_vm_readv"),
            (libc::SYS_process_vm_writev, "process_vm_writev"),
            (libc::SYS_pidfd_getfd, "pidfd_getfd"),
            (libc::SYS_io_uring_setup, "io_uring_setup"),
            (libc::SYS_io_uring_enter, "io_uring_enter"),
            (libc::SYS_io_uring_register, "io_uring_register"),
            (libc::SYS_bpf, "bpf"),
            (libc::SYS_perf_event_open, "perf_event_open"),
            (libc::SYS_userfaultfd, "userfaultfd"),
            (libc::SYS_keyctl, "keyctl"),
            (libc::SYS_add_key, "add_key"),
            (libc::SYS_request_key, "request_key"),
            (libc::SYS_open_by_handle_at, "open_by_handle_at"),
            (libc::SYS_name_to_handle_at, "name_to_handle_at"),
            (libc::SYS_setns, "setns"),
            (libc::SYS_kexec_load, "kexec_load"),
            (libc::SYS_kexec_file_load, "kexec_file_load"),
            (libc::SYS_init_module, "init_module"),
            (libc::SYS_finit_module, "finit_module"),
            (libc::SYS_delete_module, "delete_module"),
            (libc::SYS_reboot, "reboot"),
            (libc::SYS_swapon, "swapon"),
            (libc::SYS_swapoff, "swapoff"),
            (libc::SYS_acct, "acct"),
            (libc::SYS_quotactl, "quotactl"),
            (libc::SYS_quotactl_fd, "quotactl_fd"),
            (libc::SYS_landlock_restrict_self, "landlock_restrict_self"),
            (libc::SYS_mseal, "mseal"),
        ];
        for &(nr, name) in known {
            assert_eq!(syscall_name(nr), Some(name), "number {nr}");
            assert_eq!(syscall_number(name), Some(nr), "{name}");
        }
        assert_eq!(syscall_name(-1), None);
        assert_eq!(syscall_name(100_000), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn syscall_name_uses_x86_64_numbers() {
        assert_eq!(syscall_name(165), Some("mount"));
        assert_eq!(syscall_name(166), Some("umount2"));
        assert_eq!(syscall_name(257), Some("openat"));
        assert_eq!(syscall_name(263), Some("unlinkat"));
        assert_eq!(syscall_name(42), Some("connect"));
        assert_eq!(syscall_name(49), Some("bind"));
        assert_eq!(syscall_name(435), Some("clone3"));
        assert_eq!(syscall_name(467), Some("open_tree_attr"));
        assert_eq!(syscall_name(0x4000_0000 | 165), None);
        assert_eq!(native_audit_arch(), Some(0xC000_003E));
    }

    // --- Denials, observed in a real child ------------------------------------------------

    #[test]
    fn mount_api_is_denied() {
        let bad = "b'/nonexistent-saferoot-test/x'";
        assert_filtered(&[
            (
                "mount",
                call("mount", &format!("b'none', {bad}, b'tmpfs', 0, None")),
                libc::EPERM,
            ),
            (
                "umount2",
                call("umount2", &format!("{bad}, 0")),
                libc::EPERM,
            ),
            ("chroot", call("chroot", bad), libc::EPERM),
            (
                "open_tree",
                call("open_tree", &format!("-100, {bad}, 0")),
                libc::EPERM,
            ),
            (
                "move_mount",
                call("move_mount", "-1, b'', -1, b'', -1"),
                libc::EPERM,
            ),
            (
                "mount_setattr",
                call("mount_setattr", "-1, b'', -1, None, 0"),
                libc::EPERM,
            ),
        ]);
    }

    #[test]
    fn every_plain_denial_returns_eperm() {
        // All arguments -1: an invalid flag, fd or pointer for every one of these calls, so
        // nothing can happen even where the filter would not stop it.
        let cases: Vec<(&str, String)> = always_denied()
            .iter()
            .map(|(name, _)| (*name, call(name, "-1, -1, -1, -1, -1, -1")))
            .collect();
        let with = probe(true, &cases);
        for (name, _) in &cases {
            assert_eq!(with[*name], libc::EPERM, "{name} under the filter");
        }
        if is_root() {
            // Root passes the kernel's own permission checks, so most calls fail differently
            // without the filter; some still say EPERM (no CAP_SYS_MODULE in a container, ...),
            // so require only that most do.
            let without = probe(false, &cases);
            let differ = cases
                .iter()
                .filter(|(n, _)| without[*n] != libc::EPERM)
                .count();
            assert!(differ * 2 > cases.len(), "without the filter: {without:?}");
        }
    }

    #[test]
    fn unshare_of_namespaces_is_denied() {
        let mut cases = Vec::new();
        for &(flag, name) in NAMESPACE_FLAGS {
            // CLONE_VFORK is invalid for unshare: the kernel says EINVAL, the filter EPERM.
            cases.push((
                name,
                call("unshare", &(flag | libc::CLONE_VFORK).to_string()),
                libc::EPERM,
            ));
        }
        assert_filtered(&cases);
        let with = probe(
            true,
            &[
                ("newuser", call("unshare", &libc::CLONE_NEWUSER.to_string())),
                ("newns", call("unshare", &libc::CLONE_NEWNS.to_string())),
                ("all_bits", call("unshare", "-1")),
            ],
        );
        assert_eq!(with["newuser"], libc::EPERM);
        assert_eq!(with["newns"], libc::EPERM);
        assert_eq!(with["all_bits"], libc::EPERM);
    }

    #[test]
    fn unshare_without_namespaces_still_works() {
        let with = probe(
            true,
            &[
                ("files", call("unshare", &libc::CLONE_FILES.to_string())),
                ("fs", call("unshare", &libc::CLONE_FS.to_string())),
                ("sysvsem", call("unshare", &libc::CLONE_SYSVSEM.to_string())),
                ("none", call("unshare", "0")),
            ],
        );
        for (label, errno) in &with {
            assert_eq!(*errno, 0, "unshare {label}");
        }
    }

    #[test]
    fn clone_with_namespace_flags_is_denied() {
        // CLONE_SIGHAND without CLONE_VM is invalid, so without the filter the kernel says
        // EINVAL and never forks; with it, a namespace flag makes it EPERM.
        let invalid = libc::CLONE_SIGHAND | libc::SIGCHLD;
        let mut cases = Vec::new();
        for &(flag, name) in NAMESPACE_FLAGS
            .iter()
            .filter(|(f, _)| *f != libc::CLONE_NEWTIME)
        {
            cases.push((
                name,
                call("clone", &format!("{}, 0, 0, 0, 0", flag | invalid)),
                libc::EPERM,
            ));
        }
        assert_filtered(&cases);
        // Without namespace flags the same invalid clone reaches the kernel.
        let with = probe(
            true,
            &[("plain", call("clone", &format!("{invalid}, 0, 0, 0, 0")))],
        );
        assert_eq!(with["plain"], libc::EINVAL);
    }

    #[test]
    fn clone3_reports_enosys() {
        assert_filtered(&[
            ("null", call("clone3", "None, 0"), libc::ENOSYS),
            ("garbage", call("clone3", "-1, -1"), libc::ENOSYS),
        ]);
    }

    #[test]
    fn terminal_injection_ioctls_are_denied() {
        // On /dev/null both requests fail with ENOTTY without the filter.
        let c = "ctypes.byref(ctypes.c_char(b'x'))";
        let tiocsti = INJECTING_IOCTLS[0];
        assert_filtered(&[
            (
                "tiocsti",
                call("ioctl", &format!("devnull(), {tiocsti}, {c}")),
                libc::EPERM,
            ),
            (
                "tioclinux",
                call("ioctl", &format!("devnull(), {}, {c}", libc::TIOCLINUX)),
                libc::EPERM,
            ),
            // The kernel truncates the request to 32 bits; so does the filter's comparison.
            (
                "high_bits",
                call(
                    "ioctl",
                    &format!("devnull(), {}, {c}", tiocsti | 0x1_0000_0000),
                ),
                libc::EPERM,
            ),
        ]);
        // Other terminal ioctls pass through to the kernel.
        let with = probe(
            true,
            &[(
                "tcgets",
                call("ioctl", &format!("devnull(), {}, {c}", libc::TCGETS)),
            )],
        );
        assert_eq!(with["tcgets"], libc::ENOTTY);
    }

    #[test]
    fn ptrace_and_friends_are_denied() {
        let with = probe(
            true,
            &[("traceme", call("ptrace", &libc::PTRACE_TRACEME.to_string()))],
        );
        assert_eq!(with["traceme"], libc::EPERM);
        assert_filtered(&[
            // No such process: ESRCH without the filter.
            (
                "attach",
                call(
                    "ptrace",
                    &format!("{}, 0x7ffffff0, 0, 0", libc::PTRACE_ATTACH),
                ),
                libc::EPERM,
            ),
            (
                "vm_readv",
                call("process_vm_readv", "0x7ffffff0, 0, 0, 0, 0, 0"),
                libc::EPERM,
            ),
            ("pidfd_getfd", call("pidfd_getfd", "-1, 0, 0"), libc::EPERM),
            ("setns", call("setns", "-1, 0"), libc::EPERM),
        ]);
    }

    #[test]
    fn io_uring_is_denied() {
        let with = probe(true, &[("setup", call("io_uring_setup", "1, None"))]);
        assert_eq!(with["setup"], libc::EPERM);
        let enabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .is_ok_and(|s| s.trim() == "0");
        if enabled {
            let without = probe(false, &[("setup", call("io_uring_setup", "1, None"))]);
            assert_eq!(without["setup"], libc::EFAULT);
        }
    }

    #[test]
    fn file_handles_are_denied() {
        let with = probe(
            true,
            &[
                ("open", call("open_by_handle_at", "-100, None, 0")),
                (
                    "name",
                    call("name_to_handle_at", "-100, b'/', None, None, 0"),
                ),
            ],
        );
        assert_eq!(with["open"], libc::EPERM);
        assert_eq!(with["name"], libc::EPERM);
        // Without the filter name_to_handle_at fails on the NULL handle instead.
        let without = probe(
            false,
            &[(
                "name",
                call("name_to_handle_at", "-100, b'/', None, None, 0"),
            )],
        );
        assert_ne!(without["name"], libc::EPERM);
    }

    #[test]
    fn open_tree_attr_is_denied_even_if_the_kernel_lacks_it() {
        // Linux 6.15+; older kernels say ENOSYS without the filter.
        assert_filtered(&[(
            "open_tree_attr",
            call("open_tree_attr", "-1, b'', -1, None, 0"),
            libc::EPERM,
        )]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_system_calls_are_denied() {
        let getpid = libc::SYS_getpid | i64::from(X32_SYSCALL_BIT);
        let mount = libc::SYS_mount | i64::from(X32_SYSCALL_BIT);
        assert_filtered(&[
            // Without the filter: the pid (0 here) with x32 support, else ENOSYS.
            ("getpid", format!("sc({getpid})"), libc::EPERM),
            (
                "mount",
                format!("sc({mount}, -1, -1, -1, -1, -1)"),
                libc::EPERM,
            ),
        ]);
        // Negative numbers are not x32 ones: the kernel's ENOSYS, filter or not.
        let with = probe(true, &[("minus_one", "sc(-1)".to_string())]);
        assert_eq!(with["minus_one"], libc::ENOSYS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_system_calls_are_denied() {
        // getpid through `int 0x80` (i386 number 20), from executable memory; prints eax.
        const INT80: &str = r#"
import ctypes, mmap
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20; int 0x80; ret
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)(), flush=True)
"#;
        let without = run(false, "python3", &["-c", INT80], &[]);
        if !without.status.success() {
            // No IA-32 emulation in this kernel: int 0x80 faults, there is nothing to refuse.
            eprintln!("skipped, int 0x80 unavailable: {}", describe(&without));
            return;
        }
        let with = run(true, "python3", &["-c", INT80], &[]);
        assert!(with.status.success(), "{}", describe(&with));
        assert_eq!(
            String::from_utf8_lossy(&with.stdout).trim(),
            format!("{}", -libc::EPERM)
        );
        let pid: i32 = String::from_utf8_lossy(&without.stdout)
            .trim()
            .parse()
            .expect("pid");
        assert!(pid > 0);
    }

    // --- Ordinary work still succeeds ---------------------------------------------------

    #[test]
    fn ordinary_commands_still_work() {
        let out = sh(true, "ls / >/dev/null && echo ok");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "{}",
            describe(&out)
        );
        let out = sh(true, "( true ) & wait $! && echo forked; echo piped | cat");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "forked\npiped\n",
            "{}",
            describe(&out)
        );
        let out = run(true, "git", &["--version"], &[]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("git version"));
    }

    #[test]
    fn fork_and_threads_still_work() {
        let script = "import os, threading\n\
                      t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
                      pid = os.fork()\n\
                      if pid == 0: os._exit(7)\n\
                      print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))";
        let out = run(true, "python3", &["-c", script], &[]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "7",
            "{}",
            describe(&out)
        );
    }

    #[test]
    fn unshare_command_fails_under_the_filter() {
        for flag in ["-U", "-m", "-n"] {
            let out = run(true, "unshare", &[flag, "true"], &[]);
            assert!(!out.status.success(), "unshare {flag}: {}", describe(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Operation not permitted"),
                "unshare {flag}: {err}"
            );
        }
    }

    #[test]
    fn filter_applies_twice_and_still_denies() {
        // Filters stack: applying a second copy (as a nested saferoot would) is allowed, and
        // the union still denies.
        let f = filter();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PROBE, "mount=sc(NR['mount'], -1, -1, -1, -1, -1)"]);
        cmd.env("NR", format!("mount={}", libc::SYS_mount));
        // SAFETY: apply_in_child only makes raw system calls.
        unsafe {
            cmd.pre_exec(move || {
                f.apply_in_child()?;
                f.apply_in_child()
            });
        }
        let out = cmd.output().expect("spawn");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("mount {}\n", libc::EPERM),
            "{}",
            describe(&out)
        );
    }
}
