//! Thin wrappers over the Linux calls the filesystem needs and `nix` does not wrap:
//! file handles (`name_to_handle_at` / `open_by_handle_at`) and `/proc/self/fd` paths.
//!
//! Why file handles: the filesystem must be able to reach an inode for as long as the kernel
//! remembers it, wherever it was renamed to (including into the trash), without keeping one open
//! descriptor per inode (a 100,000-file tree would exceed the descriptor limit).

use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub type SysResult<T> = Result<T, Errno>;

/// An opaque kernel file handle (`struct file_handle` without its header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    pub handle_type: i32,
    pub bytes: Box<[u8]>,
}

const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// The file handle of the object `fd` refers to (an `O_PATH` descriptor is fine), and the
/// mount id it belongs to.
pub fn handle_of(fd: BorrowedFd<'_>) -> SysResult<(Handle, i32)> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    let empty = c"";
    // SAFETY: raw is a valid, writable file_handle with MAX_HANDLE_SZ bytes of payload.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            empty.as_ptr(),
            &mut raw as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok((
        Handle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..n].into(),
        },
        mount_id,
    ))
}

/// Open the object behind `h` on the filesystem of `mount_fd`.
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, h: &Handle, flags: i32) -> SysResult<OwnedFd> {
    let mut raw = RawHandle {
        handle_bytes: h.bytes.len() as u32,
        handle_type: h.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    loop {
        // SAFETY: raw is a valid file_handle; the returned fd is owned by us.
        let r = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd.as_raw_fd(),
                &mut raw as *mut RawHandle,
                flags | libc::O_CLOEXEC,
            )
        };
        if r >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as i32) });
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// `/proc/self/fd/N` for `fd`, to apply path-only calls (chmod, truncate, xattrs, reopen) to the
/// object an `O_PATH` descriptor refers to.
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// Current path of the object `fd` refers to, as the kernel sees it (tracks renames).
pub fn fd_path(fd: BorrowedFd<'_>) -> SysResult<std::path::PathBuf> {
    nix::fcntl::readlink(proc_path(fd).as_c_str()).map(std::path::PathBuf::from)
}

pub fn last_errno(r: libc::c_int) -> SysResult<libc::c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

pub fn last_errno_isize(r: isize) -> SysResult<usize> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

const TRUSTED_PREFIX: &[u8] = b"trusted.";

/// `CAP_SYS_ADMIN` (capability.h), which the kernel requires to list `trusted.*` names.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Does a `listxattr` result (NUL-terminated names) hold any `trusted.*` name?
pub fn has_trusted_names(list: &[u8]) -> bool {
    list.split(|&b| b == 0)
        .any(|n| n.starts_with(TRUSTED_PREFIX))
}

/// The `listxattr` result without its `trusted.*` names.
pub fn without_trusted_names(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split(|&b| b == 0) {
        if !name.is_empty() && !name.starts_with(TRUSTED_PREFIX) {
            out.extend_from_slice(name);
            out.push(0);
        }
    }
    out
}

/// Does process (or thread) `pid` hold capability `cap` in its effective set? From
/// `/proc/PID/status`; false when that cannot be read (the process is gone).
pub fn caller_has_cap(pid: u32, cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| cap < 64 && caps & (1u64 << cap) != 0)
}

/// `rel` below `dir`, opened `O_PATH`, refusing (`ELOOP`/`EXDEV`) to follow any symlink or to
/// leave `dir` on the way (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &std::path::Path) -> nix::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_XDEV: u64 = 0x01;
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    const RESOLVE_BENEATH: u64 = 0x08;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV,
    };
    let path = CString::new(rel.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: openat2 reads the path and `how` (of the size given) and returns a new fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `CAP_FSETID`: keeps set-user-ID and set-group-ID bits on write, truncate and chmod.
pub const CAP_FSETID: u32 = 4;

/// Is process `pid` in group `gid` (its effective group or a supplementary one)? From
/// `/proc/PID/status`; false when that cannot be read.
pub fn caller_in_group(pid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
    };
    // Gid: real, effective, saved, filesystem; the filesystem one decides.
    let fsgid = field("Gid:").split_whitespace().nth(3);
    fsgid.and_then(|g| g.parse::<u32>().ok()) == Some(gid)
        || field("Groups:")
            .split_whitespace()
            .any(|g| g.parse::<u32>().ok() == Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_names_are_filtered_from_a_listing() {
        let list = b"user.a\0trusted.t\0security.selinux\0trusted.overlay.x\0";
        assert!(has_trusted_names(list));
        assert_eq!(without_trusted_names(list), b"user.a\0security.selinux\0");
        assert!(!has_trusted_names(b"user.trusted.x\0"));
        assert_eq!(without_trusted_names(b""), b"");
    }

    #[test]
    fn capabilities_of_this_process() {
        let me = std::process::id();
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(caller_has_cap(me, CAP_SYS_ADMIN), root);
        assert!(!caller_has_cap(u32::MAX, CAP_SYS_ADMIN));
    }
}
