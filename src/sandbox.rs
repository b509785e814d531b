//! The agent's sandbox: a Landlock domain that lets the agent read and execute anything but
//! write only through the saferoot mount (plus a private temporary directory and a few device
//! files), and that stops it from signalling or connecting to processes outside the sandbox.
//!
//! The ruleset is built and filled in the parent, where allocation and error reporting are
//! cheap; the child only runs two raw system calls between `fork` and `exec`
//! ([`Prepared::apply_in_child`]). This module also holds the checks that keep the policy honest:
//! the project path must be a FUSE mount ([`check_project_is_fuse`], [`verify_fuse_mount`]),
//! and no write rule may reach the real project directory or the store
//! ([`ensure_no_write_rule_contains`]).
//!
//! What it deliberately does not do: network rules, seccomp, profiles (TOML), mounting, or
//! protecting paths inside the writable tree (`.git/hooks`, …), which is the FUSE layer's job.
//! It never decides *which* paths are protected; the caller passes them.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, Scope, ABI,
};
use nix::sys::stat::{fstat, fstatat, SFlag};
use nix::sys::statfs::{fstatfs, FUSE_SUPER_MAGIC};

/// The newest Landlock ABI whose rights this module has been written and tested against.
/// Rights of later ABIs are not handled (so not restricted) until someone vets them here; rights
/// of this ABI that the running kernel lacks are dropped (best effort), see
/// [`Prepared::limitations`].
const VETTED_ABI: ABI = ABI::V6;

/// `LANDLOCK_CREATE_RULESET_VERSION` from `<linux/landlock.h>`.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;

/// Device files (and `/dev/pts`, whose files are terminals) that ordinary programs open for
/// writing. They get file rights only: nothing can be created or removed under them.
const DEVICE_FILES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// Prefix of the per-run temporary directory created by [`private_tmpdir`].
const TMPDIR_PREFIX: &str = "saferoot-run.";

/// Everything that can go wrong while building or checking the sandbox. Each message names the
/// path and the problem in one line, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "Landlock is not available on this kernel (needed to keep the agent inside the project); \
         pass --no-sandbox to run without it"
    )]
    LandlockUnavailable,

    #[error(
        "the Landlock ruleset would not be enforced on this kernel (needed to keep the agent \
         inside the project); pass --no-sandbox to run without it"
    )]
    NotEnforced,

    #[error("cannot create the Landlock ruleset: {0}")]
    Ruleset(#[source] RulesetError),

    #[error("cannot open {} to add a sandbox rule: {source}", path.display())]
    OpenRulePath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot add the sandbox rule for {}: {source}", path.display())]
    AddRule {
        path: PathBuf,
        #[source]
        source: RulesetError,
    },

    #[error("cannot add the sandbox rule for TCP port {port}: {source}")]
    AddPortRule {
        port: u16,
        #[source]
        source: RulesetError,
    },

    #[error("cannot resolve {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot inspect the filesystem of {}: {source}", path.display())]
    Statfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{} is not a FUSE mount (filesystem type {fs_type:#x}): granting the agent write access \
         to it would reach the real directory, not the saferoot view",
        path.display()
    )]
    NotFuse { path: PathBuf, fs_type: u64 },

    #[error(
        "{} is on a FUSE filesystem but is not a mount point, so the saferoot view is not mounted \
         over it: granting the agent write access to it would reach the real directory",
        path.display()
    )]
    NotMountRoot { path: PathBuf },

    #[error(
        "sandbox write rule {} contains {}, which the agent must never be able to modify",
        rule.display(),
        protected.display()
    )]
    WriteRuleContainsProtected { rule: PathBuf, protected: PathBuf },

    #[error(
        "sandbox write rule {} lies inside {}, which the agent may only modify through the \
         saferoot mount",
        rule.display(),
        protected.display()
    )]
    WriteRuleInsideProtected { rule: PathBuf, protected: PathBuf },

    #[error("no usable temporary directory outside the project {}: {tried}", project.display())]
    NoTmpDir { project: PathBuf, tried: String },
}

/// The running kernel's Landlock ABI version, from the raw
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` call.
///
/// `None` when the kernel is built without Landlock (`ENOSYS`) or it is not enabled at boot
/// (`EOPNOTSUPP`). Meant for diagnostics (`saferoot doctor`) and for [`prepare`]'s refusal.
pub fn landlock_abi() -> Option<i32> {
    // SAFETY: with a NULL attribute and size 0 this call only reports the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v >= 1 {
        i32::try_from(v).ok()
    } else {
        None
    }
}

/// Which paths the agent may use, and how. Every path is opened when the ruleset is prepared, so
/// a rule follows the inode that was at that path at that moment (prepare *after* mounting).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Read files, list directories and execute, beneath each path.
    pub read_exec: Vec<PathBuf>,
    /// Every filesystem right beneath each path (create, remove, rename, truncate, …).
    pub write: Vec<PathBuf>,
    /// Read, write, truncate and ioctl on existing files (or files beneath a directory), but
    /// nothing that creates or removes names: for device files.
    pub write_files: Vec<PathBuf>,
    /// TCP ports the agent may connect to (every other port is refused, Landlock ABI 4+).
    pub connect: Vec<u16>,
    /// TCP ports the agent may bind (every other port is refused, Landlock ABI 4+).
    pub bind: Vec<u16>,
}

impl Policy {
    /// The policy for one `saferoot run`: the whole system readable and executable, the project
    /// mount and the run's private temporary directory fully writable, and the usual device
    /// files (those that exist here) usable.
    ///
    /// `project_mount` must be the path of the live saferoot mount, and `tmpdir` should come from
    /// [`private_tmpdir`]; check the result with [`ensure_no_write_rule_contains`].
    pub fn for_project(project_mount: &Path, tmpdir: &Path) -> Policy {
        Policy {
            read_exec: vec![PathBuf::from("/")],
            write: vec![project_mount.to_path_buf(), tmpdir.to_path_buf()],
            write_files: DEVICE_FILES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
            connect: Vec::new(),
            bind: Vec::new(),
        }
    }
}

/// The usual device files (those that exist here), for [`Policy::write_files`].
pub fn device_files() -> Vec<PathBuf> {
    DEVICE_FILES
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// A filled Landlock ruleset, ready to be applied in a child just before `exec`.
///
/// Keep it alive until the child has been spawned; wrap it in an `Arc` to move a handle into
/// `Command::pre_exec`. The ruleset fd is close-on-exec, so the agent never inherits it.
#[derive(Debug)]
pub struct Prepared {
    fd: OwnedFd,
    abi: i32,
    limitations: Vec<&'static str>,
    restrict_flags: libc::c_uint,
}

/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (ABI 7): log denials of the programs the agent
/// executes, not only of the process that entered the sandbox (which execs right away).
const LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON: libc::c_uint = 1 << 1;

/// Rights for reading and executing only.
fn read_exec_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute
}

/// Rights for using existing files without creating or removing names (device files).
fn file_write_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev
}

/// Every right a write entry gets: all but creating device nodes. A character or block device
/// made in the project (an agent running as root has `CAP_MKNOD`) cannot be opened through the
/// `nodev` mount, but it stays in the directory after the session, where the next program that
/// opens it reaches the device itself. No write rule can allow it.
fn write_access() -> BitFlags<AccessFs> {
    AccessFs::from_all(VETTED_ABI) & !(AccessFs::MakeChar | AccessFs::MakeBlock)
}

/// Rights that only make sense on directories; the kernel rejects a rule on a file with them.
fn dir_only_access() -> BitFlags<AccessFs> {
    AccessFs::from_all(VETTED_ABI) & !AccessFs::from_file(VETTED_ABI)
}

/// Build the Landlock ruleset for `policy` in the calling (parent) process.
///
/// Handles every filesystem right of [`VETTED_ABI`] and the signal and abstract-UNIX-socket
/// scopes, degrading to what the running kernel supports. Fails if the kernel has no Landlock,
/// if the ruleset would not be enforced at all, or if any policy path cannot be opened: a
/// sandbox with a silently missing rule is worse than a clear error.
pub fn prepare(policy: &Policy) -> Result<Prepared, SandboxError> {
    let abi = landlock_abi().ok_or(SandboxError::LandlockUnavailable)?;

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(VETTED_ABI))
        .map_err(SandboxError::Ruleset)?
        .handle_access(AccessNet::from_all(VETTED_ABI))
        .map_err(SandboxError::Ruleset)?
        .scope(Scope::from_all(VETTED_ABI))
        .map_err(SandboxError::Ruleset)?
        .create()
        .map_err(SandboxError::Ruleset)?;

    // Write entries get every right but device nodes, read included, so a write entry stands
    // on its own even if no read_exec entry covers it. Compatibility (rights missing from older kernels) is left
    // to the crate's best-effort mode; the per-type masking below is ours so that a file entry
    // never asks for directory-only rights.
    let groups = [
        (&policy.read_exec, read_exec_access()),
        (&policy.write, write_access()),
        (&policy.write_files, file_write_access()),
    ];
    for (paths, access) in groups {
        for path in paths {
            let fd = PathFd::new(path).map_err(|e| SandboxError::OpenRulePath {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
            let st = fstat(&fd).map_err(|e| SandboxError::OpenRulePath {
                path: path.clone(),
                source: e.into(),
            })?;
            let is_dir =
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
            let access = if is_dir {
                access
            } else {
                access & !dir_only_access()
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|source| SandboxError::AddRule {
                    path: path.clone(),
                    source,
                })?;
        }
    }

    for &port in &policy.connect {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|source| SandboxError::AddPortRule { port, source })?;
    }
    for &port in &policy.bind {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(|source| SandboxError::AddPortRule { port, source })?;
    }

    // The crate only keeps an fd when the ruleset is at least partially enforceable; `None`
    // is exactly `RulesetStatus::NotEnforced`.
    let fd: Option<OwnedFd> = ruleset.into();
    let fd = fd.ok_or(SandboxError::NotEnforced)?;

    Ok(Prepared {
        fd,
        abi,
        limitations: limitations_for_abi(abi),
        restrict_flags: if abi >= 7 {
            LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
        } else {
            0
        },
    })
}

/// What the sandbox cannot enforce on a kernel with Landlock ABI `abi`, one line each.
fn limitations_for_abi(abi: i32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if abi < 2 {
        out.push(
            "moving or hard-linking files between directories fails with EXDEV (Landlock ABI < 2)",
        );
    }
    if abi < 4 {
        out.push("restrict TCP connect and bind to the allowed ports (Landlock ABI < 4)");
    }
    if abi < 3 {
        out.push("truncate(2) of files outside the project is not blocked (Landlock ABI < 3)");
    }
    if abi < 5 {
        out.push("ioctl on device files is not restricted (Landlock ABI < 5)");
    }
    if abi < 6 {
        out.push(
            "the agent can signal processes and connect to abstract UNIX sockets outside the \
             sandbox (Landlock ABI < 6)",
        );
    }
    out
}

impl Prepared {
    /// The running kernel's Landlock ABI version.
    pub fn abi(&self) -> i32 {
        self.abi
    }

    /// Protections this kernel cannot give (empty on ABI 6 and later), for a warning at start.
    pub fn limitations(&self) -> &[&'static str] {
        &self.limitations
    }

    /// What this sandbox enforces on this kernel, one short phrase each, for `run --verbose`
    /// and `status`.
    pub fn features(&self) -> Vec<String> {
        features_for_abi(self.abi)
    }

    /// Enter the sandbox: `prctl(PR_SET_NO_NEW_PRIVS, 1)`, then `landlock_restrict_self(fd, 0)`.
    ///
    /// Made for `Command::pre_exec`: it runs between `fork` and `exec` in a copy of a possibly
    /// multi-threaded process, so it only makes raw system calls and never allocates (an
    /// `io::Error` from `last_os_error` is just the errno). `no_new_privs` is required by
    /// Landlock for unprivileged callers and also stops the agent from regaining rights through
    /// set-uid programs.
    ///
    /// # Safety
    /// Call it only in a freshly forked child that is about to `exec` (it restricts the calling
    /// thread for good), and only while `self` is alive.
    pub unsafe fn apply_in_child(&self) -> io::Result<()> {
        let one: libc::c_ulong = 1;
        let zero: libc::c_ulong = 0;
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_landlock_restrict_self,
            self.fd.as_raw_fd(),
            self.restrict_flags,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What a sandbox built here enforces with Landlock ABI `abi`, one phrase each.
pub fn features_for_abi(abi: i32) -> Vec<String> {
    let mut f = vec![format!(
        "landlock ABI {abi}: filesystem (read, write, execute, create, remove)"
    )];
    if abi >= 2 {
        f.push("landlock: cross-directory rename and link".into());
    }
    if abi >= 3 {
        f.push("landlock: truncate".into());
    }
    if abi >= 4 {
        f.push("landlock: TCP connect and bind ports".into());
    }
    if abi >= 5 {
        f.push("landlock: device ioctl".into());
    }
    if abi >= 6 {
        f.push("landlock: signal and abstract unix socket scoping".into());
    }
    if abi >= 7 {
        f.push("landlock: denials logged to audit".into());
    }
    f
}

/// Best-effort name of what `fd` refers to, for error messages.
fn fd_path(fd: BorrowedFd) -> PathBuf {
    let raw = fd.as_raw_fd();
    fs::read_link(format!("/proc/self/fd/{raw}"))
        .unwrap_or_else(|_| PathBuf::from(format!("<fd {raw}>")))
}

/// Check that `fd` (the project path, opened after mounting) is on a FUSE filesystem.
///
/// The mount covers the real directory under the same path, so if the mount is missing a write
/// rule for that path would silently grant the real directory. This is the cheap check; prefer
/// [`verify_fuse_mount`], which also checks that the path is the mount's root.
pub fn check_project_is_fuse(fd: BorrowedFd) -> Result<(), SandboxError> {
    let st = fstatfs(fd).map_err(|e| SandboxError::Statfs {
        path: fd_path(fd),
        source: e.into(),
    })?;
    let fs_type = st.filesystem_type();
    if fs_type == FUSE_SUPER_MAGIC {
        Ok(())
    } else {
        Err(SandboxError::NotFuse {
            path: fd_path(fd),
            fs_type: fs_type.0 as u64,
        })
    }
}

/// Proof that a path was, when checked, the root of a FUSE mount. It can only be obtained from
/// [`verify_fuse_mount`], so [`ensure_no_write_rule_contains`] cannot be told to trust a path
/// nobody checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMount {
    path: PathBuf,
}

impl VerifiedMount {
    /// The canonical path of the mount.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    fn assume_for_test(path: &Path) -> VerifiedMount {
        VerifiedMount {
            path: path.canonicalize().expect("test mount path resolves"),
        }
    }
}

/// Check that `path` is the root of a live FUSE mount (the saferoot view), not merely a
/// directory on some FUSE filesystem (a project on sshfs would pass [`check_project_is_fuse`]
/// even when saferoot failed to mount over it).
pub fn verify_fuse_mount(path: &Path) -> Result<VerifiedMount, SandboxError> {
    let canonical = path
        .canonicalize()
        .map_err(|source| SandboxError::Resolve {
            path: path.to_path_buf(),
            source,
        })?;
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&canonical)
        .map_err(|source| SandboxError::Resolve {
            path: canonical.clone(),
            source,
        })?;
    check_project_is_fuse(dir.as_fd()).map_err(|e| match e {
        SandboxError::NotFuse { fs_type, .. } => SandboxError::NotFuse {
            path: canonical.clone(),
            fs_type,
        },
        other => other,
    })?;
    let stat_err = |e: nix::Error| SandboxError::Statfs {
        path: canonical.clone(),
        source: e.into(),
    };
    let here = fstat(&dir).map_err(stat_err)?;
    // ".." from a mount's root crosses to the directory the mount sits on.
    let parent = fstatat(&dir, "..", nix::fcntl::AtFlags::empty()).map_err(stat_err)?;
    if here.st_dev == parent.st_dev {
        return Err(SandboxError::NotMountRoot { path: canonical });
    }
    Ok(VerifiedMount { path: canonical })
}

/// Make `path` absolute and resolve it as far as it exists: symlinks and `..` in the existing
/// part are resolved by the kernel, the missing tail is appended lexically. Protected paths may
/// legitimately not exist yet (a store about to be created), or be hidden by the mount.
fn resolve_lenient(path: &Path) -> io::Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = abs.clone();
    let mut tail: Vec<OsString> = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                for part in tail.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = match existing.components().next_back() {
                    Some(Component::Normal(name)) => name.to_os_string(),
                    _ => return Err(e),
                };
                tail.push(name);
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refuse a policy whose write rules could reach a protected path.
///
/// A `write` or `write_files` entry is rejected when, after canonicalization, it is equal to or
/// an ancestor of a protected path (the rule would grant it) or lies inside one (the rule would
/// grant part of it). The caller passes the real project directory and its store.
///
/// The exception is `mounts`: the saferoot view is mounted *over* the real project directory,
/// so the mount's path string is the real directory's path string and every comparison above
/// would reject it. Yet a Landlock rule added on the mount's root (opened while mounted) grants
/// only what is reachable through the mount, and the real directory beneath it is unreachable by
/// path. So an entry equal to or inside a [`VerifiedMount`] is accepted; nothing else is, and a
/// `VerifiedMount` only exists if [`verify_fuse_mount`] saw a FUSE mount root there.
pub fn ensure_no_write_rule_contains(
    policy: &Policy,
    protected: &[&Path],
    mounts: &[VerifiedMount],
) -> Result<(), SandboxError> {
    let protected: Vec<PathBuf> = protected
        .iter()
        .map(|p| {
            resolve_lenient(p).map_err(|source| SandboxError::Resolve {
                path: p.to_path_buf(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;

    for rule in policy.write.iter().chain(&policy.write_files) {
        let resolved = rule
            .canonicalize()
            .map_err(|source| SandboxError::Resolve {
                path: rule.clone(),
                source,
            })?;
        if mounts.iter().any(|m| resolved.starts_with(&m.path)) {
            continue;
        }
        // "Contains" first: it is the graver finding when both apply (a rule on the store is
        // inside the project and equal to the store).
        if let Some(p) = protected.iter().find(|p| p.starts_with(&resolved)) {
            return Err(SandboxError::WriteRuleContainsProtected {
                rule: rule.clone(),
                protected: p.clone(),
            });
        }
        if let Some(p) = protected.iter().find(|p| resolved.starts_with(p)) {
            return Err(SandboxError::WriteRuleInsideProtected {
                rule: rule.clone(),
                protected: p.clone(),
            });
        }
    }
    Ok(())
}

/// Create a fresh, private (0700) directory `saferoot-run.XXXXXX` for the agent's temporary
/// files, under `$TMPDIR`, else `/tmp`, `/var/tmp` or `/dev/shm`: the first that exists and is
/// not inside `project_real` (a `TMPDIR` inside the project would make the tmpdir rule grant
/// the real project). The new directory is empty, so it cannot be an ancestor of the project.
/// The caller removes it after the run and should point the agent's `TMPDIR` at it.
pub fn private_tmpdir(project_real: &Path) -> Result<PathBuf, SandboxError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("TMPDIR") {
        let t = PathBuf::from(t);
        if t.is_absolute() {
            candidates.push(t);
        }
    }
    for base in ["/tmp", "/var/tmp", "/dev/shm"] {
        let base = PathBuf::from(base);
        if !candidates.contains(&base) {
            candidates.push(base);
        }
    }
    private_tmpdir_in(project_real, &candidates)
}

/// Remove the `saferoot-run.PID.XXXXXX` directories in `base` left by runs that were killed
/// before they could remove their own: this user's, untouched for an hour (a `/tmp` shared with
/// another PID namespace must not lose a live run's directory), and only when no process PID
/// exists any more. (Removal never follows a symlink.)
fn sweep_stale_tmpdirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMPDIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let idle = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|d| d > std::time::Duration::from_secs(3600))
        };
        let owned_dir = fs::symlink_metadata(e.path())
            .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == me && idle(&m));
        if owned_dir && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn private_tmpdir_in(project_real: &Path, candidates: &[PathBuf]) -> Result<PathBuf, SandboxError> {
    let project = project_real
        .canonicalize()
        .map_err(|source| SandboxError::Resolve {
            path: project_real.to_path_buf(),
            source,
        })?;
    let mut tried: Vec<String> = Vec::new();
    for base in candidates {
        let resolved = match base.canonicalize() {
            Ok(r) => r,
            Err(e) => {
                tried.push(format!("{}: {e}", base.display()));
                continue;
            }
        };
        if resolved.starts_with(&project) {
            tried.push(format!("{}: inside the project", base.display()));
            continue;
        }
        sweep_stale_tmpdirs(&resolved);
        // The pid of this `saferoot run` in the name: a later run removes the directory if
        // this one was killed (SIGKILL) before it could.
        let template = format!("{TMPDIR_PREFIX}{}.XXXXXX", std::process::id());
        let dir = match nix::unistd::mkdtemp(&resolved.join(template)) {
            Ok(d) => d,
            Err(e) => {
                tried.push(format!("{}: {e}", base.display()));
                continue;
            }
        };
        // mkdtemp asks for 0700 but the umask could take more away; we want exactly 0700.
        if let Err(e) = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)) {
            let _ = fs::remove_dir(&dir);
            tried.push(format!("{}: {e}", dir.display()));
            continue;
        }
        if dir.starts_with(&project) || project.starts_with(&dir) {
            // Only reachable through a race on the base path; never hand it out.
            let _ = fs::remove_dir(&dir);
            tried.push(format!("{}: inside the project", dir.display()));
            continue;
        }
        return Ok(dir);
    }
    Err(SandboxError::NoTmpDir {
        project,
        tried: if tried.is_empty() {
            "no candidates".to_string()
        } else {
            tried.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Output};
    use std::sync::Arc;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("saferoot-sbx-test.")
            .tempdir()
            .expect("create temp dir")
    }

    /// A sandbox whose only writable directory is `allowed`, plus the device files.
    fn sandbox_for(allowed: &Path) -> Arc<Prepared> {
        let policy = Policy {
            read_exec: vec![PathBuf::from("/")],
            write: vec![allowed.to_path_buf()],
            write_files: DEVICE_FILES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
            ..Policy::default()
        };
        Arc::new(prepare(&policy).expect("prepare sandbox"))
    }

    fn run_in(sandbox: &Arc<Prepared>, program: &str, args: &[&str]) -> Output {
        let handle = Arc::clone(sandbox);
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: apply_in_child only makes raw system calls.
        unsafe {
            cmd.pre_exec(move || handle.apply_in_child());
        }
        cmd.output().expect("spawn sandboxed child")
    }

    fn sh(sandbox: &Arc<Prepared>, script: &str) -> Output {
        run_in(sandbox, "/bin/sh", &["-c", script])
    }

    fn describe(out: &Output) -> String {
        format!(
            "status {:?}, stdout {:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[test]
    fn landlock_abi_is_reported() {
        let abi = landlock_abi().expect("this machine has Landlock");
        assert!(abi >= 1);
    }

    #[test]
    fn sandboxed_writes_inside_allowed_dir_succeed() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let d = allowed.path().display();
        let out = sh(
            &sandbox,
            &format!(
                "set -e; echo hi > {d}/f; mkdir {d}/sub; mv {d}/f {d}/sub/g; \
                 ln -s g {d}/sub/link; : > {d}/sub/g; echo again > {d}/sub/g; \
                 touch {d}/gone; rm {d}/gone"
            ),
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(
            fs::read_to_string(allowed.path().join("sub/g")).unwrap(),
            "again\n"
        );
        assert!(!allowed.path().join("gone").exists());
        assert!(allowed.path().join("sub/link").is_symlink());
    }

    #[test]
    fn sandboxed_rm_outside_is_denied_and_file_survives() {
        let allowed = tempdir();
        let sibling = tempdir();
        let victim = sibling.path().join("victim.txt");
        fs::write(&victim, "precious").unwrap();
        let sandbox = sandbox_for(allowed.path());
        let out = run_in(&sandbox, "/usr/bin/rm", &["-f", victim.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            describe(&out)
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn sandboxed_truncate_outside_is_denied() {
        let allowed = tempdir();
        let sibling = tempdir();
        let victim = sibling.path().join("victim.txt");
        fs::write(&victim, "precious").unwrap();
        let sandbox = sandbox_for(allowed.path());
        let out = sh(&sandbox, &format!(": > {}", victim.display()));
        assert!(!out.status.success(), "{}", describe(&out));
        let out = run_in(
            &sandbox,
            "/usr/bin/truncate",
            &["-s0", victim.to_str().unwrap()],
        );
        assert!(!out.status.success(), "{}", describe(&out));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn sandboxed_touch_in_tmp_outside_is_denied() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let outside = PathBuf::from(format!(
            "/tmp/saferoot-sbx-outside.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let out = run_in(&sandbox, "/usr/bin/touch", &[outside.to_str().unwrap()]);
        let created = outside.exists();
        let _ = fs::remove_file(&outside);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(!created, "touch created {}", outside.display());
    }

    #[test]
    fn sandboxed_read_of_etc_passwd_works() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let out = sh(&sandbox, "cat /etc/passwd && ls / >/dev/null");
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(out.stdout, fs::read("/etc/passwd").unwrap());
    }

    #[test]
    fn sandboxed_signal_to_parent_is_denied() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let parent = std::process::id();
        // Control: signalling itself (same domain) is allowed, so a failure below is the scope.
        let out = sh(&sandbox, "kill -0 $$");
        assert!(out.status.success(), "{}", describe(&out));
        let out = sh(&sandbox, &format!("kill -0 {parent}"));
        assert!(!out.status.success(), "{}", describe(&out));
    }

    #[test]
    fn sandboxed_abstract_socket_outside_is_denied() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};

        let python = Path::new("/usr/bin/python3");
        if !python.exists() {
            eprintln!("skipping: {} not found", python.display());
            return;
        }
        let name = format!("saferoot-sbx-test.{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _listener = UnixListener::bind_addr(&addr).expect("bind abstract socket");
        let script =
            format!("import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\0{name}')");
        // Control: unsandboxed, the connection works.
        let out = Command::new(python).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let out = run_in(&sandbox, python.to_str().unwrap(), &["-c", &script]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
            "{}",
            describe(&out)
        );
    }

    #[test]
    fn sandboxed_dev_null_is_writable() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let out = sh(
            &sandbox,
            "echo x > /dev/null && head -c 4 /dev/zero > /dev/null",
        );
        assert!(out.status.success(), "{}", describe(&out));
    }

    #[test]
    fn sandboxed_cannot_create_in_dev() {
        let allowed = tempdir();
        let sandbox = sandbox_for(allowed.path());
        let out = run_in(&sandbox, "/usr/bin/touch", &["/dev/pts/saferoot-sbx-test"]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(!Path::new("/dev/pts/saferoot-sbx-test").exists());
    }

    #[test]
    fn prepare_accepts_for_project_policy() {
        let project = tempdir();
        let tmp = tempdir();
        let policy = Policy::for_project(project.path(), tmp.path());
        assert_eq!(policy.read_exec, vec![PathBuf::from("/")]);
        assert_eq!(policy.write, vec![project.path(), tmp.path()]);
        assert!(policy.write_files.contains(&PathBuf::from("/dev/null")));
        let prepared = prepare(&policy).expect("prepare");
        assert_eq!(Some(prepared.abi()), landlock_abi());
    }

    #[test]
    fn prepare_names_a_missing_path() {
        let policy = Policy {
            read_exec: vec![PathBuf::from("/")],
            write: vec![PathBuf::from("/nonexistent/saferoot-sbx-test")],
            ..Policy::default()
        };
        let err = prepare(&policy).unwrap_err();
        assert!(matches!(err, SandboxError::OpenRulePath { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/saferoot-sbx-test"),
            "{err}"
        );
    }

    #[test]
    fn limitations_reflect_abi() {
        assert!(limitations_for_abi(6).is_empty());
        assert_eq!(limitations_for_abi(5).len(), 1);
        assert_eq!(limitations_for_abi(3).len(), 3);
        assert_eq!(limitations_for_abi(1).len(), 5);
    }

    fn write_policy(paths: &[&Path]) -> Policy {
        Policy {
            read_exec: vec![PathBuf::from("/")],
            write: paths.iter().map(|p| p.to_path_buf()).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn ensure_no_write_rule_contains_rejects_root() {
        let project = tempdir();
        let err =
            ensure_no_write_rule_contains(&write_policy(&[Path::new("/")]), &[project.path()], &[])
                .unwrap_err();
        assert!(
            matches!(err, SandboxError::WriteRuleContainsProtected { .. }),
            "{err}"
        );
    }

    #[test]
    fn ensure_no_write_rule_contains_rejects_ancestor_and_equal() {
        let outer = tempdir();
        let project = outer.path().join("project");
        let store = project.join(".saferoot");
        fs::create_dir_all(&store).unwrap();
        for rule in [outer.path(), project.as_path(), store.as_path()] {
            let err = ensure_no_write_rule_contains(
                &write_policy(&[rule]),
                &[project.as_path(), store.as_path()],
                &[],
            )
            .unwrap_err();
            assert!(
                matches!(err, SandboxError::WriteRuleContainsProtected { .. }),
                "{}: {err}",
                rule.display()
            );
            assert!(
                err.to_string().contains(&rule.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn ensure_no_write_rule_contains_rejects_inside_and_write_files() {
        let project = tempdir();
        let sub = project.path().join("src");
        fs::create_dir(&sub).unwrap();
        let err = ensure_no_write_rule_contains(&write_policy(&[&sub]), &[project.path()], &[])
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::WriteRuleInsideProtected { .. }),
            "{err}"
        );

        let policy = Policy {
            write_files: vec![project.path().to_path_buf()],
            ..Policy::default()
        };
        assert!(ensure_no_write_rule_contains(&policy, &[project.path()], &[]).is_err());
    }

    #[test]
    fn ensure_no_write_rule_contains_accepts_sibling() {
        let project = tempdir();
        let sibling = tempdir();
        // The store may not exist yet: it is resolved through its existing ancestor.
        let store = project.path().join(".saferoot/not-yet");
        let mut policy = write_policy(&[sibling.path()]);
        policy.write_files.push(PathBuf::from("/dev/null"));
        ensure_no_write_rule_contains(&policy, &[project.path(), &store], &[]).unwrap();
    }

    #[test]
    fn ensure_no_write_rule_contains_resolves_symlinks() {
        let project = tempdir();
        let other = tempdir();
        let link = other.path().join("link-to-project");
        std::os::unix::fs::symlink(project.path(), &link).unwrap();
        let err = ensure_no_write_rule_contains(&write_policy(&[&link]), &[project.path()], &[])
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::WriteRuleContainsProtected { .. }),
            "{err}"
        );
    }

    #[test]
    fn ensure_no_write_rule_contains_exempts_verified_mount_only() {
        let project = tempdir();
        let store = project.path().join(".saferoot");
        fs::create_dir(&store).unwrap();
        let tmp = tempdir();
        let mount = VerifiedMount::assume_for_test(project.path());
        let policy = Policy::for_project(project.path(), tmp.path());
        ensure_no_write_rule_contains(
            &policy,
            &[project.path(), &store],
            std::slice::from_ref(&mount),
        )
        .unwrap();
        // The exemption covers the mount, not its ancestors.
        let parent = project.path().parent().unwrap();
        assert!(ensure_no_write_rule_contains(
            &write_policy(&[parent]),
            &[project.path(), &store],
            &[mount]
        )
        .is_err());
    }

    #[test]
    fn check_project_is_fuse_rejects_plain_dir() {
        let dir = tempdir();
        let f = fs::File::open(dir.path()).unwrap();
        let err = check_project_is_fuse(f.as_fd()).unwrap_err();
        assert!(matches!(err, SandboxError::NotFuse { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("real directory"), "{msg}");

        let err = verify_fuse_mount(dir.path()).unwrap_err();
        assert!(matches!(err, SandboxError::NotFuse { .. }), "{err}");
    }

    #[test]
    fn private_tmpdir_is_outside_project() {
        let project = tempdir();
        let dir = private_tmpdir(project.path()).unwrap();
        let canonical_project = project.path().canonicalize().unwrap();
        let ok = !dir.starts_with(&canonical_project) && !canonical_project.starts_with(&dir);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        fs::remove_dir(&dir).unwrap();
        assert!(ok, "{} vs {}", dir.display(), canonical_project.display());
        assert_eq!(mode, 0o700);
        assert!(name.starts_with(TMPDIR_PREFIX), "{name}");
    }

    #[test]
    fn tmpdirs_of_killed_runs_are_swept() {
        let base = tempdir();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let make = |name: &str, age: Option<std::time::SystemTime>| {
            let d = base.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("f"), b"x").unwrap();
            if let Some(t) = age {
                fs::File::open(&d).unwrap().set_modified(t).unwrap();
            }
            d
        };
        // pid_max is at most 2^22: 999999999 is never a process.
        let dead_old = make(&format!("{TMPDIR_PREFIX}999999999.abcdef"), Some(old));
        let dead_recent = make(&format!("{TMPDIR_PREFIX}999999999.recent"), None);
        let alive = make(
            &format!("{TMPDIR_PREFIX}{}.ghijkl", std::process::id()),
            Some(old),
        );
        let unnamed = make(&format!("{TMPDIR_PREFIX}XYZ123"), Some(old));
        let other = make("something-else.999999999", Some(old));
        sweep_stale_tmpdirs(base.path());
        assert!(
            !dead_old.exists(),
            "a killed run's old directory is removed"
        );
        assert!(dead_recent.exists(), "one touched within the hour stays");
        assert!(alive.exists(), "a live run's directory stays");
        assert!(
            unnamed.exists() && other.exists(),
            "anything not ours by name stays"
        );
    }

    #[test]
    fn private_tmpdir_skips_candidates_inside_project() {
        let project = tempdir();
        let inside = project.path().join("tmp");
        fs::create_dir(&inside).unwrap();
        let outside = tempdir();
        let candidates = vec![
            inside.clone(),
            project.path().to_path_buf(),
            PathBuf::from("/nonexistent/saferoot-sbx-test"),
            outside.path().to_path_buf(),
        ];
        let dir = private_tmpdir_in(project.path(), &candidates).unwrap();
        assert_eq!(
            dir.parent().unwrap(),
            outside.path().canonicalize().unwrap()
        );
        fs::remove_dir(&dir).unwrap();

        let err = private_tmpdir_in(project.path(), &candidates[..2]).unwrap_err();
        assert!(matches!(err, SandboxError::NoTmpDir { .. }), "{err}");
        assert!(err.to_string().contains("inside the project"), "{err}");
    }
}
