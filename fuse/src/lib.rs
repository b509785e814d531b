//! saferoot's filesystem: a FUSE passthrough of the real project directory that keeps what
//! destructive operations would destroy.
//!
//! Every operation is forwarded with `*at()` calls relative to descriptors on the real directory,
//! opened before the mount covered it. Before an operation destroys bytes, they are kept in the
//! store: an unlinked last link is moved into the trash by rename (O(1) in file size); a file a
//! rename replaces gets a second name in the trash by hard link before the rename; the first
//! open for writing of a file, and a size change outside a write session, copy its bytes into
//! the object store. Only then does the operation proceed, and every change is journaled with
//! the process that made it. The store directory (`.saferoot` at the root) does not exist as far
//! as the mount is concerned.
//!
//! Requests are served on several threads. No lock is held around backing I/O in general; two
//! are held across a little of it on purpose: an inode's writer count while its pre-image is
//! copied (no second writer may change the file before its bytes are safe), and the store's
//! trash-directory set while a trash directory is created.
//!
//! What this crate does not do: decide policy about who may use the mount (the kernel enforces
//! permissions via `default_permissions`; the sandbox is the CLI's job), or restore anything.

pub mod guard;
pub mod node;
pub mod sys;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use log::warn;
use nix::errno::Errno as NixErrno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use node::{Fd, Node, Table, ROOT_ID};
use saferoot_snapshots::{config::Config, index::Indexer, now_ns, Kind, Op, Record, Store};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use saferoot_snapshots::store::STORE_DIR;

/// The xattr the kernel looks up before every write (to drop file capabilities).
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

/// Tunables.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the kernel may cache names and attributes. Nothing but this daemon and a
    /// restore (which asks the daemon to invalidate what it changed) changes the backing
    /// directory while it is mounted, so it is long: one hour by default. Every expiry costs
    /// a LOOKUP or GETATTR round trip per path on the next `stat`, which a `git status` every
    /// few seconds would otherwise pay for every file of the tree.
    pub ttl: Duration,
    /// Which trees pass through unversioned (see `saferoot_snapshots::config`).
    pub config: Config,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: Duration::from_secs(3600),
            config: Config::default(),
        }
    }
}

struct OpenFile {
    fd: OwnedFd,
    /// The node whose passthrough registration this handle holds, if any.
    backing_of: Mutex<Option<Arc<Node>>>,
    /// The node this handle is counted as a writer of, if it was opened for writing.
    writer_of: Option<Arc<Node>>,
    /// The end of the write session was journaled through this handle.
    /// The node in whose `direct` handles this one is counted (served with direct I/O).
    direct_of: Mutex<Option<Arc<Node>>>,
    /// A writer handle a close(2) was seen for (counted in its node's `Writers::flushed`).
    flushed: std::sync::atomic::AtomicBool,
}

impl OpenFile {
    /// Served with direct I/O: every read and write of it goes through the daemon.
    fn is_direct(&self) -> bool {
        self.direct_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn new(fd: OwnedFd, writer_of: Option<Arc<Node>>) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            fd,
            backing_of: Mutex::new(None),
            writer_of,
            direct_of: Mutex::new(None),
            flushed: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// What the first writer of a write session keeps ([`Shared::begin_write`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keep {
    /// Nothing: a new file, or one in a scratch tree.
    No,
    /// The file's whole content, before the open returns.
    Yes,
    /// Nothing yet: the handle can only append (see [`saferoot_snapshots::Op::Append`]).
    Append,
}

/// How the kernel does an open handle's reads and writes.
enum Io<'n> {
    /// On the backing file itself, with the registration held here (locked for the reply).
    Passthrough(std::sync::MutexGuard<'n, Option<(fuser::BackingId, usize)>>),
    /// Each one a request to this process, bypassing the page cache.
    Direct,
    /// Through the page cache, with requests to this process.
    Cached,
}

/// How long a directory rename waits for a moment with no request in flight before it
/// queues for the paths lock (see [`Shared::paths_exclusive`]).
const EXCLUSIVE_PATIENCE: Duration = Duration::from_secs(10);

/// What [`Shared::do_rename`] answers when it would move a directory without holding
/// [`Shared::paths`] exclusively (never returned to the kernel).
const NEEDS_PATHS_EXCLUSIVE: Errno = Errno::EDEADLK;

/// State shared by all request threads, and by the daemon's control thread.
pub struct Shared {
    /// Held shared by every request that changes the tree or journals a record, from before
    /// it computes a path until its records are written, and exclusively by a rename that
    /// moves a directory (and so the paths of everything below it): a record's path is then
    /// always the path at its instant, whatever directory renames run beside it.
    paths: std::sync::RwLock<()>,
    table: Table,
    /// The project directory's path as the kernel reports it for descriptors under it.
    root_prefix: PathBuf,
    store: Arc<Store>,
    indexer: Mutex<Option<Indexer>>,
    files: RwLock<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    comms: Mutex<HashMap<u32, (Instant, String)>>,
    opts: Options,
    /// The kernel accepted FUSE passthrough: reads and writes of regular files go straight to
    /// the backing file without a round trip through this process.
    passthrough: std::sync::atomic::AtomicBool,
    /// Inodes whose passthrough registration outlived their last open handle, oldest first:
    /// the next open of the same file reuses it (two ioctls and a kernel file fewer per open,
    /// which is most of the cost of re-reading a tree: `grep -r`, builds, `git status`). At
    /// most [`IDLE_BACKING_MAX`] are kept; a forgotten inode drops its own.
    idle_backing: Mutex<std::collections::VecDeque<std::sync::Weak<Node>>>,
    /// The two names of each file given a second name by `link` through the mount, by inode
    /// (at most [`LINK_PEERS_MAX`]): when one of them is removed while the other still names
    /// the same file, nothing needs copying (see [`Shared::unlink_second_name`]).
    link_peers: Mutex<HashMap<u64, (PathBuf, PathBuf)>>,
    /// Bumped after anything that can move a directory (rename, exchange, rmdir, a restore's
    /// changes): a directory's path remembered under an older value is read again.
    dir_gen: AtomicU64,
    /// For directories being listed: the descriptor the last READDIR read from, and the offset
    /// the kernel will ask for next (at most [`DIR_CURSORS_MAX`]). A listing read in several
    /// requests goes on through one open directory, as it would natively: some filesystems
    /// (overlayfs) give offsets that mean something only to the descriptor that returned them.
    dir_cursors: Mutex<HashMap<u64, (u64, OwnedFd)>>,
    /// Directories get open handles (OPENDIR answered, one descriptor per handle) instead:
    /// the project is on overlayfs or FUSE, whose directory offsets mean something only to
    /// the descriptor that returned them, and listings of one directory by two processes at
    /// once must not share one.
    dir_handles: bool,
    /// The descriptors of open directory handles (`dir_handles`), by handle.
    dirs: RwLock<HashMap<u64, Arc<Mutex<OwnedFd>>>>,
    /// Tells the kernel to drop cached attributes the daemon knows are stale; set by the
    /// daemon once the session exists.
    notifier: std::sync::OnceLock<fuser::Notifier>,
    /// Live `saferoot run` sessions whose agents may not change protected paths.
    pub guard: guard::Guard,
    /// Where each rename is written down before it is done (`None` if the file could not be
    /// opened: renames are then recovered after a crash as they were without it).
    inflight: Option<saferoot_snapshots::inflight::Inflight>,
    /// `SAFEROOT_TEST_FAULT`: stop the daemon (SIGKILL) at a named point, for tests of crash
    /// recovery. Never set in normal use.
    fault: Option<String>,
}

pub struct SaferootFs {
    shared: Arc<Shared>,
}

fn errno(e: NixErrno) -> Errno {
    Errno::from_i32(e as i32)
}

/// How a file is opened to copy its bytes into the store: reading it must not show, so no
/// access time update (the daemon runs as root, which O_NOATIME requires of a non-owner).
const PREIMAGE_READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NOATIME);

/// Directories whose listing in progress keeps its descriptor (`Shared::dir_cursors`).
const DIR_CURSORS_MAX: usize = 256;

/// Pairs of names remembered in `Shared::link_peers`; beyond this, the oldest are forgotten
/// (all at once: a removal then just copies, as before).
const LINK_PEERS_MAX: usize = 65_536;

/// How soon after the last close(2) of a session's writers their release must come for the
/// session to be dated at that close ([`Shared::close_time`]).
const CLOSE_GRACE_NS: i64 = 250_000_000;

/// A handle a request came through is in use, whatever close(2) was seen for it before (a
/// descriptor of it lives on elsewhere: a child, a duplicate): it no longer counts as closed.
fn revive(w: &mut crate::node::Writers, file: &OpenFile) {
    if file.flushed.swap(false, Ordering::Relaxed) {
        w.flushed = w.flushed.saturating_sub(1);
    }
}

/// What tells whether a file changed: size, mtime and ctime (seconds and nanoseconds).
fn file_sig(st: &FileStat) -> [i64; 5] {
    [
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
    ]
}

/// Passthrough registrations kept for files no handle has open (see `Shared::idle_backing`).
const IDLE_BACKING_MAX: usize = 4096;
/// How long an open to append waits, on a full store, for the kernel to release handles whose
/// processes have closed them already ([`Shared::reserve_direct`]); the release usually
/// follows within a fraction of a millisecond.
const PENDING_RELEASE_WAIT: Duration = Duration::from_millis(50);

/// Open a file to copy its bytes into the store: `open` called with [`PREIMAGE_READ`], and
/// again without O_NOATIME if that is not permitted (it needs ownership or CAP_FOWNER, which
/// a daemon without full root lacks).
fn preimage_open<T>(open: impl Fn(OFlag) -> nix::Result<T>) -> nix::Result<T> {
    match open(PREIMAGE_READ) {
        Err(NixErrno::EPERM) => open(PREIMAGE_READ - OFlag::O_NOATIME),
        r => r,
    }
}

/// Open `name` in `dir` to copy its bytes into the store (see [`preimage_open`]).
fn open_for_preimage(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    preimage_open(|flags| nix::fcntl::openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty()))
}

fn store_errno(e: &saferoot_snapshots::Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// A timestamp from `stat`; never panics, whatever the file's times are (out-of-range ones
/// are clamped to the epoch).
fn systime(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nsecs)).unwrap_or(UNIX_EPOCH)
}

fn file_type(fmt: u32) -> FileType {
    match fmt & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn is_store(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT_ID && name.as_bytes() == STORE_DIR.as_bytes()
}

impl SaferootFs {
    /// `root` is a descriptor on the real project directory, opened before mounting over it;
    /// paths are computed from what the kernel reports for descriptors under it.
    pub fn new(root: OwnedFd, store: Arc<Store>, opts: Options) -> std::io::Result<SaferootFs> {
        let root_prefix = sys::fd_path(root.as_fd())?;
        let dir_handles = nix::sys::statfs::fstatfs(root.as_fd())
            .map(|f| {
                let t = f.filesystem_type();
                t == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
                    || t == nix::sys::statfs::FUSE_SUPER_MAGIC
            })
            .unwrap_or(false);
        let table = Table::new(root)?;
        let indexer = Indexer::start(store.clone()).map_err(std::io::Error::other)?;
        let inflight = match saferoot_snapshots::inflight::Inflight::open(&store) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("renames will not be written down before they are done: {e}");
                None
            }
        };
        Ok(SaferootFs {
            shared: Arc::new(Shared {
                paths: std::sync::RwLock::new(()),
                table,
                root_prefix,
                store,
                indexer: Mutex::new(Some(indexer)),
                files: RwLock::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                comms: Mutex::new(HashMap::new()),
                opts,
                passthrough: std::sync::atomic::AtomicBool::new(false),
                idle_backing: Mutex::new(std::collections::VecDeque::new()),
                link_peers: Mutex::new(HashMap::new()),
                dir_gen: AtomicU64::new(0),
                dir_cursors: Mutex::new(HashMap::new()),
                dir_handles,
                dirs: RwLock::new(HashMap::new()),
                notifier: std::sync::OnceLock::new(),
                guard: guard::Guard::default(),
                inflight,
                fault: std::env::var("SAFEROOT_TEST_FAULT").ok(),
            }),
        })
    }

    /// A handle on the state, for the daemon's control thread (invalidation, shutdown).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Shared {
    /// Give the filesystem the session's notifier (see [`Shared::stale_attributes`]).
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    /// The kernel's cached attributes of node `id` may be wrong: drop them (not its pages),
    /// so the next `stat` asks. With a long attribute TTL this matters for changes the kernel
    /// does not see itself: writes through a shared mapping of a passthrough file, and a
    /// `setattr` that failed after changing part of what it was asked to.
    fn stale_attributes(&self, id: u64) {
        if let Some(n) = self.notifier.get() {
            // Offset -1: attributes only, no page cache work, so safe from a request thread.
            let _ = n.inval_inode(INodeNo(id), -1, 0);
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Hash everything queued and stop the indexer (at unmount).
    pub fn finish_indexing(&self) {
        if let Some(ix) = self
            .indexer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            ix.finish();
        }
    }

    /// For each project-relative path, the kernel cache entries to drop after the backing tree
    /// was changed behind the kernel's back (by `restore`): (parent node, name, node if known).
    pub fn cached_entries(&self, paths: &[PathBuf]) -> Vec<(u64, OsString, Option<u64>)> {
        self.dirs_moved();
        let mut out = Vec::new();
        for p in paths {
            let mut parent = ROOT_ID;
            let mut dir: Fd<'_> = Fd::Borrowed(self.table.root_fd());
            let comps: Vec<&OsStr> = p.iter().collect();
            for (i, c) in comps.iter().enumerate() {
                let st = nix::sys::stat::fstatat(dir.fd(), *c, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
                let known = st.and_then(|st| self.table.known(st.st_dev, st.st_ino));
                out.push((parent, c.to_os_string(), known));
                if i + 1 == comps.len() {
                    break;
                }
                let (Some(id), Ok(next)) = (
                    known,
                    nix::fcntl::openat(
                        dir.fd(),
                        *c,
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ),
                ) else {
                    break;
                };
                parent = id;
                dir = Fd::Owned(next);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn comm(&self, pid: u32) -> String {
        if pid == 0 {
            return "kernel".into();
        }
        let now = Instant::now();
        {
            let c = self.comms.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, s)) = c.get(&pid) {
                if now.duration_since(*t) < Duration::from_millis(500) {
                    return s.clone();
                }
            }
        }
        let s = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end_matches('\n').to_owned())
            .unwrap_or_else(|_| "?".into());
        let mut c = self.comms.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 4096 {
            c.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_millis(500));
        }
        c.insert(pid, (now, s.clone()));
        s
    }

    /// Hold [`Shared::paths`] shared for one request that changes the tree.
    fn paths_shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.paths.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold [`Shared::paths`] exclusively, for a rename that moves a directory. A writer
    /// queued on the lock makes new readers wait, so one long request in flight (the first
    /// write to a large file copies it) would stall every change on the mount behind the
    /// rename: it first waits for a moment with no request in flight, without queueing, and
    /// queues only after [`EXCLUSIVE_PATIENCE`] (so that it cannot wait forever).
    fn paths_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let until = std::time::Instant::now() + EXCLUSIVE_PATIENCE;
        loop {
            match self.paths.try_write() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return self.paths.write().unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Write down what a rename is about to journal, before doing it (see
    /// [`saferoot_snapshots::inflight`]).
    /// `arrival`: a move out of scratch, of which only `kept` is journaled.
    fn intend(&self, req: &Request, rename: &Record, kept: Option<&Record>, arrival: bool) {
        let Some(f) = &self.inflight else { return };
        let pid = req.pid();
        let comm = self.comm(pid);
        f.intend(&saferoot_snapshots::inflight::Intent {
            kept: kept.map(|k| Record {
                pid,
                comm: comm.clone(),
                ..k.clone()
            }),
            arrival,
            ..saferoot_snapshots::inflight::Intent::new(Record {
                pid,
                comm,
                ..rename.clone()
            })
        });
    }

    /// [`Shared::intend`] for a move into a scratch tree, which journals `recs` (given the
    /// caller's pid and command name here) instead of the rename.
    fn intend_leaving(&self, req: &Request, rename: &Record, recs: &mut [Record]) {
        let pid = req.pid();
        let comm = self.comm(pid);
        for r in recs.iter_mut() {
            r.pid = pid;
            r.comm = comm.clone();
        }
        let Some(f) = &self.inflight else { return };
        let intent = saferoot_snapshots::inflight::Intent::new(Record {
            pid,
            comm,
            ..rename.clone()
        });
        f.intend_leaving(&self.store, intent, recs);
    }

    /// The rename just written down failed, or its records were journaled: forget it (a
    /// later crash must not find it; what it names may have changed since, a purge included).
    fn unintend(&self) {
        if let Some(f) = &self.inflight {
            f.forget();
        }
    }

    /// The records of one change, in one write (see [`Journal::append_all`]).
    fn journal_all(&self, req: &Request, recs: Vec<Record>) {
        let comm = self.comm(req.pid());
        let recs: Vec<Record> = recs
            .into_iter()
            .map(|rec| Record {
                pid: req.pid(),
                comm: comm.clone(),
                ..rec
            })
            .collect();
        if let Err(e) = self.store.journal().append_all(&recs) {
            // The bytes are already safe in the store; only the records are missing, and the
            // trash is re-indexed from itself at the next mount.
            warn!("journal append failed: {e}");
        }
    }

    /// For tests of crash recovery: die here if `SAFEROOT_TEST_FAULT` names this point.
    /// `pause:POINT:N` instead holds the first N requests that reach POINT there for good
    /// (until the daemon is killed), so that others can run meanwhile.
    fn fault_point(&self, point: &str) {
        let Some(f) = self.fault.as_deref() else {
            return;
        };
        if f == point {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        if let Some((p, n)) = f.strip_prefix("pause:").and_then(|r| r.rsplit_once(':')) {
            static PAUSED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if p == point
                && PAUSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    < n.parse::<u32>().unwrap_or(0)
            {
                // Named so that a test can see it waiting here.
                let _ = nix::sys::prctl::set_name(c"fault-paused");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    }

    fn journal(&self, req: &Request, rec: Record) {
        self.journal_all(req, vec![rec]);
    }

    /// Refuse (EACCES) a change to a protected path by a sandboxed agent, and record it in the
    /// denial log. `or_ancestor`: also refuse for a directory containing a protected path
    /// (renaming or removing it would take the protected path along).
    fn refuse_protected(
        &self,
        req: &Request,
        rel: &Path,
        access: &str,
        or_ancestor: bool,
    ) -> Result<(), Errno> {
        if !self.guard.active() {
            return Ok(());
        }
        let Some(p) = self.opts.config.protected(rel, or_ancestor) else {
            return Ok(());
        };
        let Some(session) = self.guard.session_of(req.pid()) else {
            return Ok(());
        };
        let d = saferoot_snapshots::denials::Denial {
            t: now_ns(),
            session,
            by: "fuse".into(),
            access: format!("{access} (protected: {})", p.text),
            path: Some(rel.to_string_lossy().into_owned()),
            port: None,
            addr: None,
            syscall: None,
            pid: req.pid(),
            comm: self.comm(req.pid()),
            exe: std::fs::read_link(format!("/proc/{}/exe", req.pid()))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
        };
        if let Err(e) = saferoot_snapshots::denials::append(&self.store, &[d]) {
            warn!("denial log: {e}");
        }
        Err(Errno::EACCES)
    }

    /// Is this project-relative path in a scratch tree (unversioned)?
    fn is_scratch(&self, rel: &Path, is_dir: bool) -> bool {
        self.opts.config.is_scratch(rel, is_dir)
    }

    /// Does the regular file `node` have more than one link? Such a file is versioned even when
    /// reached through a scratch name: another of its names may be protected.
    fn has_other_links(&self, node: &Node) -> bool {
        node.fmt == libc::S_IFREG && self.stat_node(node).is_ok_and(|st| st.st_nlink > 1)
    }

    /// Keep the current bytes of the regular file `node` in the object store.
    fn preimage_node(&self, node: &Node) -> Result<(String, FileStat), Errno> {
        let fd = preimage_open(|flags| self.table.open(node, flags)).map_err(errno)?;
        let st = nix::sys::stat::fstat(fd.fd()).map_err(errno)?;
        let h = self.store.preimage(fd.fd(), &st).map_err(|e| {
            // The change is refused: say which and why where people look after a failure.
            warn!(
                "refused to change {}: its old bytes could not be kept ({e})",
                self.node_rel(node).display()
            );
            store_errno(&e)
        })?;
        Ok((h, st))
    }

    /// Count a new writer of `node`. The first writer of a versioned file keeps the file's
    /// bytes before anything can change them, and journals that; if they cannot be kept, the
    /// open fails with the store's error. An append-only first writer ([`Keep::Append`]) keeps
    /// nothing: it journals the file's size, and the bytes before it stay where they are until
    /// something could change them ([`Shared::keep_session`]).
    fn begin_write(&self, req: &Request, node: &Arc<Node>, keep: Keep) -> Result<(), Errno> {
        let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
        if self.trash_only(node) {
            return Err(Errno::ESTALE);
        }
        self.settle(req, node, &mut w);
        // Nothing changes until what the new session needs is kept (it may fail).
        let new_session = w.n == 0 || node.session_closed.load(Ordering::Relaxed);
        if node.fmt != libc::S_IFREG || keep == Keep::No {
            if new_session {
                w.kept = true;
            }
        } else if new_session && keep == Keep::Append {
            let st = self.stat_node(node)?;
            self.journal(req, self.session_record(node, &st, Op::Append, None));
            w.kept = false;
            w.base = st.st_size as u64;
        } else if keep == Keep::Yes && (new_session || !w.kept) {
            self.keep_preimage(req, node)?;
            w.kept = true;
        }
        if new_session {
            node.session_closed.store(false, Ordering::Relaxed);
            w.last_flush = None;
        }
        w.n += 1;
        Ok(())
    }

    /// Is `node` reachable only through its link in the trash (removed or replaced through
    /// the mount, and no other name left)? A request that reaches it all the same raced with
    /// the removal (a path looked up just before): writing to it would change bytes the trash
    /// keeps. Such requests get ESTALE, on which the kernel looks the path up again (the name
    /// now leads to whatever replaced the file) and retries. Callers hold the node's
    /// `writers` lock, which removals hold from their check of open writers to marking the
    /// node diverted, so the answer cannot change under them.
    fn trash_only(&self, node: &Node) -> bool {
        node.diverted.load(Ordering::Relaxed)
            && node.fmt != libc::S_IFDIR
            && self.stat_node(node).is_ok_and(|st| st.st_nlink <= 1)
    }

    /// Keep the pre-image of `node` and journal it as the start of its write session.
    fn keep_preimage(&self, req: &Request, node: &Node) -> Result<(), Errno> {
        let (h, st) = self.preimage_node(node)?;
        self.journal(req, self.session_record(node, &st, Op::Write, Some(h)));
        Ok(())
    }

    /// The `write` or `append` record that begins a write session of the file `node` (stat
    /// `st` just before), with its pre-image `object` if one was kept.
    fn session_record(&self, node: &Node, st: &FileStat, op: Op, object: Option<String>) -> Record {
        Record {
            kind: Some(Kind::File),
            mode: Some(st.st_mode),
            size: Some(st.st_size as u64),
            ino: Some(st.st_ino),
            links: (st.st_nlink > 1).then_some(st.st_nlink),
            object,
            ..Record::new(now_ns(), op, self.node_rel(node), 0, "")
        }
    }

    /// The handle `file` is about to change bytes of the file it writes from offset `below`
    /// on. If its write session is append-only and has not kept the old bytes, and `below` is
    /// under the size the session began with, keep them first. Fails with the store's error,
    /// and then the change must not happen.
    fn keep_session(&self, req: &Request, file: &OpenFile, below: u64) -> Result<(), Errno> {
        let Some(node) = file.writer_of.as_ref() else {
            return Ok(());
        };
        let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
        revive(&mut w, file);
        if w.n > 0 && !w.kept && below < w.base {
            self.keep_preimage(req, node)?;
            w.kept = true;
        }
        Ok(())
    }

    /// A writer of `node` closed. When the last one of a versioned file closes, journal the
    /// end of the write session.
    fn end_write(&self, req: &Request, node: &Node, flushed: bool) {
        let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
        w.n = w.n.saturating_sub(1);
        if flushed {
            w.flushed = w.flushed.saturating_sub(1);
        }
        if w.n == 0 {
            if !node.session_closed.swap(false, Ordering::Relaxed) {
                let t = self.close_time(node, &w);
                self.journal_close(req, node, t);
            }
            w.flushed = 0;
            w.last_flush = None;
        }
    }

    /// The instant a write session of `node` ended: its last close(2), if that was a moment
    /// ago ([`CLOSE_GRACE_NS`]: longer, something held the file without a descriptor, such as
    /// a shared mapping, whose stores to pages already dirty change no file time) and the file
    /// has not changed since (a write through a descriptor still open elsewhere, such as a
    /// duplicate a child kept); else now.
    fn close_time(&self, node: &Node, w: &crate::node::Writers) -> i64 {
        let now = now_ns();
        match w.last_flush.as_deref().copied() {
            Some((t, sig))
                if now.saturating_sub(t) < CLOSE_GRACE_NS
                    && self.stat_node(node).is_ok_and(|st| file_sig(&st) == sig) =>
            {
                t
            }
            _ => now,
        }
    }

    /// When a close(2) has been seen for every writer handle of `node` still open (the
    /// kernel releases them asynchronously, after close returned), the session is over:
    /// journal its end, dated by [`Shared::close_time`], before anything that depends on it
    /// (a new writer, a truncate). The removal of a second name only ignores such writers
    /// (`unlink_second_name`); their release journals the end.
    fn settle(&self, req: &Request, node: &Node, w: &mut crate::node::Writers) {
        if w.n > 0 && w.flushed >= w.n && !node.session_closed.load(Ordering::Relaxed) {
            let t = self.close_time(node, w);
            self.journal_close(req, node, t);
            node.session_closed.store(true, Ordering::Relaxed);
        }
    }

    /// `close(2)` of a writer: remember when, and the file's state then. A FLUSH comes for
    /// every close of every descriptor, duplicates included (a shell's `cmd > f` closes its
    /// own descriptor at once, the command goes on writing through its copy), so it cannot
    /// end the session by itself; the release of the last handle can, but the kernel sends
    /// it asynchronously, after the process may have exited. The session's end is journaled
    /// at that release (or earlier, see [`Shared::settle`]) and dated at the last close(2)
    /// when nothing changed the file since.
    fn flush_write(&self, _req: &Request, node: &Node, file: &OpenFile) {
        let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
        if !file.flushed.swap(true, Ordering::Relaxed) {
            w.flushed += 1;
        }
        if let Ok(st) = self.stat_node(node) {
            w.last_flush = Some(Box::new((now_ns(), file_sig(&st))));
        }
    }

    fn journal_close(&self, req: &Request, node: &Node, t: i64) {
        if node.fmt != libc::S_IFREG {
            return;
        }
        let rel = self.node_rel(node);
        if !self.is_scratch(&rel, false) || self.has_other_links(node) {
            self.journal(
                req,
                Record {
                    kind: Some(Kind::File),
                    ino: Some(node.ino),
                    ..Record::new(t, Op::Close, rel, 0, "")
                },
            );
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.table.get(ino.0).map_err(errno)
    }

    fn path_fd<'a>(&'a self, node: &Node) -> Result<Fd<'a>, Errno> {
        self.table.open(node, OFlag::O_PATH).map_err(errno)
    }

    /// Project-relative path of a directory node, from the kernel's view of its descriptor.
    fn dir_rel(&self, node: &Node, fd: BorrowedFd<'_>) -> Result<PathBuf, Errno> {
        if node.id == ROOT_ID {
            return Ok(PathBuf::new());
        }
        // Read before the path: a move that ends after this makes what is stored stale.
        let gen = self.dir_gen.load(Ordering::Acquire);
        if let Some((g, p)) = node.rel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *g == gen {
                return Ok(p.clone());
            }
        }
        let p = sys::fd_path(fd).map_err(errno)?;
        let rel = match p.strip_prefix(&self.root_prefix) {
            // A directory inside the store (a process whose working directory was moved into
            // the trash) is not part of the project: nothing may be created there.
            Ok(rel) if rel.starts_with(STORE_DIR) => return Err(Errno::ENOENT),
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_owned(),
            _ => return Err(Errno::ENOENT),
        };
        *node.rel.lock().unwrap_or_else(|p| p.into_inner()) = Some((gen, rel.clone()));
        Ok(rel)
    }

    /// Something may have moved directories: forget their remembered paths.
    pub fn dirs_moved(&self) {
        self.dir_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Best-effort project-relative path of any node, for journal records.
    fn node_rel(&self, node: &Node) -> PathBuf {
        if node.id == ROOT_ID {
            return PathBuf::from(".");
        }
        if node.is_dir() {
            if let Ok(fd) = self.path_fd(node) {
                if let Ok(p) = self.dir_rel(node, fd.fd()) {
                    return p;
                }
            }
        }
        let (parent, name) = node.name();
        let base = self
            .table
            .get(parent)
            .ok()
            .and_then(|pn| {
                let fd = self.path_fd(&pn).ok()?;
                self.dir_rel(&pn, fd.fd()).ok()
            })
            .unwrap_or_default();
        base.join(name)
    }

    fn attr(&self, id: u64, st: &FileStat, node: Option<&Node>) -> FileAttr {
        let mut nlink = st.st_nlink as u32;
        if node.is_some_and(|n| n.diverted.load(Ordering::Relaxed)) {
            nlink = nlink.saturating_sub(1);
        }
        FileAttr {
            ino: INodeNo(id),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: systime(st.st_atime, st.st_atime_nsec),
            mtime: systime(st.st_mtime, st.st_mtime_nsec),
            ctime: systime(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: file_type(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Look `name` up in directory node `parent` and count it as a kernel lookup.
    fn lookup_in(
        &self,
        parent: &Node,
        parent_fd: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<(Arc<Node>, FileAttr), Errno> {
        let fd = nix::fcntl::openat(
            parent_fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
        let node = self
            .table
            .remember(parent.id, name, fd, &st)
            .map_err(errno)?;
        let attr = self.attr(node.id, &st, Some(&node));
        Ok((node, attr))
    }

    fn stat_node(&self, node: &Node) -> Result<FileStat, Errno> {
        let fd = self.path_fd(node)?;
        nix::sys::stat::fstat(fd.fd()).map_err(errno)
    }

    fn chown_to_caller(&self, req: &Request, dir: BorrowedFd<'_>, name: &OsStr) {
        // The daemon's own ids never change: asked once.
        static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
        let (uid, gid) = *IDS.get_or_init(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        if req.uid() != uid || req.gid() != gid {
            let _ = nix::unistd::fchownat(
                dir,
                name,
                Some(nix::unistd::Uid::from_raw(req.uid())),
                Some(nix::unistd::Gid::from_raw(req.gid())),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn queue_index(&self, rel: PathBuf) {
        if let Some(ix) = self
            .indexer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            ix.queue(rel);
        }
    }

    /// Remove `name` of `dir` (project-relative `rel`, stat `st`) without copying anything, if
    /// it is one of exactly two names of a regular file, the other one made or used by a
    /// `link` through the mount, still naming the same file, versioned, and nothing has the
    /// file open for writing: git's `link(tmp, final)` then `unlink(tmp)`. The record then
    /// keeps no bytes: the content is the other name's (the record's `peer`, where restore
    /// takes it from). If the other
    /// name went away at the same moment (the file's last link was ours after all), the bytes
    /// are copied from a descriptor held across the removal. `None`: not such a case (nothing
    /// was done).
    fn unlink_second_name(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        t: i64,
    ) -> Result<Option<Record>, Errno> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 2 {
            return Ok(None);
        }
        // Held to the end: two such removals (of both names) never run at once, so the second
        // one sees one link left and takes the ordinary path (the trash).
        let mut peers = self.link_peers.lock().unwrap_or_else(|p| p.into_inner());
        let other = match peers.get(&st.st_ino) {
            Some((a, b)) if a == rel => b.clone(),
            Some((a, b)) if b == rel => a.clone(),
            _ => return Ok(None),
        };
        if self.is_scratch(&other, false) {
            return Ok(None);
        }
        let node = self
            .table
            .known(st.st_dev, st.st_ino)
            .and_then(|id| self.table.get(id).ok());
        let writers = node
            .as_ref()
            .map(|n| n.writers.lock().unwrap_or_else(|p| p.into_inner()));
        // A writer whose process has closed it (close(2) seen for every writer handle) but
        // whose release the kernel has not sent yet does not count: `git` closes its
        // temporary object, links it and unlinks the temporary name in quick succession.
        if writers.as_ref().is_some_and(|w| {
            w.n > w.flushed
                && !node
                    .as_ref()
                    .is_some_and(|n| n.session_closed.load(Ordering::Relaxed))
        }) {
            return Ok(None);
        }
        // Reached without following any symlink on the way (a directory on the path replaced
        // by a link to elsewhere, a scratch tree or outside the project, must not count).
        let same = !other.starts_with(STORE_DIR)
            && sys::open_beneath(self.table.root_fd(), &other)
                .and_then(|fd| nix::sys::stat::fstat(fd.as_fd()))
                .is_ok_and(|o| o.st_dev == st.st_dev && o.st_ino == st.st_ino && o.st_nlink == 2);
        if !same {
            return Ok(None);
        }
        let held = open_for_preimage(dir, name).map_err(errno)?;
        let now = nix::sys::stat::fstat(held.as_fd()).map_err(errno)?;
        if now.st_ino != st.st_ino || now.st_dev != st.st_dev || now.st_nlink != 2 {
            return Ok(None);
        }
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(errno)?;
        drop(writers);
        peers.remove(&st.st_ino);
        drop(peers);
        let mut rec = Record {
            kind: Some(Kind::File),
            mode: Some(st.st_mode),
            ino: Some(st.st_ino),
            size: Some(st.st_size as u64),
            links: Some(2),
            note: Some(format!("another name of {}", other.display())),
            peer: Some(other.clone()),
            ..Record::new(t, Op::Unlink, rel, 0, "")
        };
        let after = nix::sys::stat::fstat(held.as_fd()).map_err(errno)?;
        if after.st_nlink == 0 {
            // The other name was renamed over meanwhile (that rename kept its own copy): this
            // was the last name. The bytes are still reachable through `held`; keep them here
            // too (the removal is done, so a failure is only logged, like a failed journal
            // append).
            match self.store.preimage(held.as_fd(), &after) {
                Ok(h) => rec.object = Some(h),
                Err(e) => warn!("keeping {} after its last link went: {e}", rel.display()),
            }
        }
        Ok(Some(rec))
    }

    /// Keep the entry `name` of `dir` (project-relative `rel`) before it is destroyed: move it
    /// to the trash if this is its last link; otherwise copy a regular file's bytes into the
    /// object store (the other links stay visible and must keep their link count). Returns the
    /// record fields describing where the old bytes are.
    fn keep(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        t: i64,
    ) -> Result<Record, Errno> {
        let fmt = st.st_mode & libc::S_IFMT;
        let mut rec = Record {
            kind: Kind::from_mode(st.st_mode),
            mode: Some(st.st_mode),
            ino: Some(st.st_ino),
            size: Some(st.st_size as u64),
            ..Record::new(t, Op::Unlink, rel, 0, "")
        };
        if st.st_nlink <= 1 || fmt == libc::S_IFDIR {
            // A file still open for writing keeps changing after it is moved: keep its bytes
            // as they are now too, and let the record point at that copy. Held until the node
            // is marked diverted: a writer opening it meanwhile either counts here, or finds
            // it in the trash and is sent back to look the name up again.
            let node = self
                .table
                .known(st.st_dev, st.st_ino)
                .and_then(|id| self.table.get(id).ok());
            let writers = node
                .as_ref()
                .map(|n| n.writers.lock().unwrap_or_else(|p| p.into_inner()));
            let open_for_writing = writers.as_ref().is_some_and(|w| w.n > 0);
            if open_for_writing && fmt == libc::S_IFREG {
                self.keep_copy(dir, name, rel, st, t, &mut rec)?;
            }
            match self.store.divert_to_trash(dir, name, rel, t) {
                Ok(trash) => {
                    if let Some(n) = &node {
                        n.diverted.store(true, Ordering::Relaxed);
                    }
                    drop(writers);
                    if fmt == libc::S_IFREG {
                        self.queue_index(trash.clone());
                    }
                    rec.trash = Some(trash);
                }
                // On another filesystem (a mount inside the project) it cannot be moved into
                // the store: keep a copy, then remove it here, as the move would have.
                Err(e) if e.errno() == libc::EXDEV && fmt != libc::S_IFDIR => {
                    self.keep_copy(dir, name, rel, st, t, &mut rec)?;
                    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                        .map_err(errno)?;
                }
                Err(e) => return Err(store_errno(&e)),
            }
        } else {
            self.keep_copy(dir, name, rel, st, t, &mut rec)?;
        }
        Ok(rec)
    }

    /// Keep a copy of the non-directory `name` of `dir` in `rec`: a regular file's bytes as an
    /// object, a symlink, fifo, socket or device node as a copy in the trash.
    fn keep_copy(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        t: i64,
        rec: &mut Record,
    ) -> Result<(), Errno> {
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            if rec.object.is_none() {
                let fd = open_for_preimage(dir, name).map_err(errno)?;
                rec.object = Some(
                    self.store
                        .preimage(fd.as_fd(), st)
                        .map_err(|e| store_errno(&e))?,
                );
            }
        } else {
            rec.trash = Some(
                self.store
                    .copy_special_to_trash(dir, name, rel, st, t)
                    .map_err(|e| store_errno(&e))?,
            );
        }
        Ok(())
    }

    /// Did [`Shared::keep`] move the entry itself away (so there is nothing left to remove)?
    fn moved_away(st: &FileStat) -> bool {
        st.st_nlink <= 1 || st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Is the directory `name` in `dir` empty?
    fn dir_is_empty(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool, Errno> {
        let fd = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(errno)?;
        for e in d.iter() {
            let e = e.map_err(errno)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `exclusive`: the caller holds [`Shared::paths`] for writing (a directory may move).
    #[allow(clippy::too_many_arguments)]
    fn do_rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        exclusive: bool,
    ) -> Result<(), Errno> {
        if is_store(parent, name) {
            return Err(Errno::ENOENT);
        }
        if is_store(newparent, newname) {
            return Err(Errno::EPERM);
        }
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let pnode = self.node(parent)?;
        let npnode = self.node(newparent)?;
        let pfd = self.path_fd(&pnode)?;
        let npfd = self.path_fd(&npnode)?;
        let from_rel = self.dir_rel(&pnode, pfd.fd())?.join(name);
        let to_rel = self.dir_rel(&npnode, npfd.fd())?.join(newname);
        self.refuse_protected(req, &from_rel, "rename", true)?;
        self.refuse_protected(req, &to_rel, "rename onto", true)?;
        let t = now_ns();
        let src =
            nix::sys::stat::fstatat(pfd.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        if !exclusive {
            let is_dir = |st: &FileStat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            let dst_dir = flags.contains(RenameFlags::RENAME_EXCHANGE)
                && nix::sys::stat::fstatat(npfd.fd(), newname, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|d| is_dir(&d));
            if is_dir(&src) || dst_dir {
                // Moves the paths of others: again, with the paths lock held exclusively.
                return Err(NEEDS_PATHS_EXCLUSIVE);
            }
        }
        let base = Record {
            to: Some(to_rel.clone()),
            kind: Kind::from_mode(src.st_mode),
            mode: Some(src.st_mode),
            ino: Some(src.st_ino),
            ..Record::new(t, Op::Rename, &from_rel, 0, "")
        };

        let src_dir = src.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let from_scratch = self.is_scratch(&from_rel, src_dir);
        let to_scratch = self.is_scratch(&to_rel, src_dir);
        if from_scratch || to_scratch {
            return self.rename_scratch(
                req,
                (pfd.fd(), name, &from_rel, from_scratch),
                (npfd.fd(), newname, &to_rel, to_scratch),
                newparent.0,
                flags,
                &src,
                base,
            );
        }

        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let base = Record {
                op: Op::Exchange,
                ..base
            };
            self.intend(req, &base, None, false);
            self.fault_point("before-rename");
            nix::fcntl::renameat2(
                pfd.fd(),
                name,
                npfd.fd(),
                newname,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|e| {
                self.unintend();
                errno(e)
            })?;
            self.fault_point("after-rename");
            self.note_rename(&src, newparent.0, newname);
            if let Ok(dst) = nix::sys::stat::fstatat(pfd.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                self.note_rename(&dst, parent.0, name);
            }
            self.journal(req, base);
            self.unintend();
            return Ok(());
        }

        let dst = match nix::sys::stat::fstatat(npfd.fd(), newname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(d) => Some(d),
            Err(NixErrno::ENOENT) => None,
            Err(e) => return Err(errno(e)),
        };
        let dst = match dst {
            // Renaming a link onto another link of the same inode does nothing (POSIX).
            Some(d) if d.st_ino == src.st_ino && d.st_dev == src.st_dev => {
                return Ok(());
            }
            Some(d) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                let _ = d;
                return Err(Errno::EEXIST);
            }
            other => other,
        };
        let Some(dst) = dst else {
            self.intend(req, &base, None, false);
            self.fault_point("before-rename");
            nix::fcntl::renameat2(
                pfd.fd(),
                name,
                npfd.fd(),
                newname,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| {
                self.unintend();
                errno(e)
            })?;
            self.fault_point("after-rename");
            self.note_rename(&src, newparent.0, newname);
            self.journal(req, base);
            self.unintend();
            return Ok(());
        };

        // Replacing an existing name: check what the kernel would refuse before touching it.
        let dst_dir = dst.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if src_dir && !dst_dir {
            return Err(Errno::ENOTDIR);
        }
        if !src_dir && dst_dir {
            return Err(Errno::EISDIR);
        }
        if dst_dir && !self.dir_is_empty(npfd.fd(), newname)? {
            return Err(Errno::ENOTEMPTY);
        }
        let mut kept = self.replace_kept(req, &base, (npfd.fd(), newname, &to_rel), &dst, false)?;
        self.replace_with(&kept, &dst, (pfd.fd(), name), (npfd.fd(), newname))
            .inspect_err(|_| self.unintend())?;
        self.fault_point("after-rename");
        self.note_rename(&src, newparent.0, newname);
        // Dated after the change: a write session of the replaced file that began before it
        // must come first in time, so that restore undoes the removal before the session.
        let done = now_ns();
        if let Some(f) = &self.inflight {
            f.done(base.t, done);
        }
        self.fault_point("after-done-mark");
        kept.t = done;
        if self.fault.as_deref() == Some("between-records") {
            self.journal(req, kept);
            self.fault_point("between-records");
            return Ok(());
        }
        self.journal_all(req, vec![kept, Record { t: done, ..base }]);
        self.unintend();
        Ok(())
    }

    /// [`Shared::keep_replaced`] with the rename `base` written down before and after (see
    /// [`saferoot_snapshots::inflight`]); the last step before the rename itself.
    fn replace_kept(
        &self,
        req: &Request,
        base: &Record,
        (dir, name, rel): (BorrowedFd<'_>, &OsStr, &Path),
        st: &FileStat,
        arrival: bool,
    ) -> Result<Record, Errno> {
        let before = Record {
            kind: Kind::from_mode(st.st_mode),
            mode: Some(st.st_mode),
            ino: Some(st.st_ino),
            ..Record::new(base.t, Op::Unlink, rel, 0, "")
        };
        self.intend(req, base, Some(&before), arrival);
        self.fault_point("before-set-aside");
        let kept = self
            .keep_replaced(dir, name, rel, st, base.t)
            .inspect_err(|_| self.unintend())?;
        self.fault_point("after-set-aside");
        self.intend(req, base, Some(&kept), arrival);
        self.fault_point("before-rename");
        Ok(kept)
    }

    /// Keep the entry `name` of `dir` that a rename is about to replace, leaving it in place
    /// where possible: a hard link into the trash for a single-link file (so that a crash at
    /// any point leaves the name and the bytes in place), a copy for an entry with other links,
    /// and for an empty directory (which cannot be linked) a move into the trash. Returns the
    /// `unlink` record of the replaced entry, to journal once the rename is done.
    fn keep_replaced(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        t: i64,
    ) -> Result<Record, Errno> {
        let fmt = st.st_mode & libc::S_IFMT;
        let mut rec = if fmt == libc::S_IFDIR || st.st_nlink > 1 {
            self.keep(dir, name, rel, st, t)?
        } else {
            let mut rec = Record {
                kind: Kind::from_mode(st.st_mode),
                mode: Some(st.st_mode),
                ino: Some(st.st_ino),
                size: Some(st.st_size as u64),
                ..Record::new(t, Op::Unlink, rel, 0, "")
            };
            match self.store.link_into_trash(dir, name, rel, t) {
                Ok(trash) => rec.trash = Some(trash),
                // On another filesystem: a copy instead of a link.
                Err(e) if e.errno() == libc::EXDEV => {
                    self.keep_copy(dir, name, rel, st, t, &mut rec)?
                }
                Err(e) => return Err(store_errno(&e)),
            }
            rec
        };
        rec.links = (st.st_nlink > 1).then_some(st.st_nlink);
        Ok(rec)
    }

    /// Rename `from` over `to`, whose entry (stat `dst`) [`Shared::keep_replaced`] kept as
    /// `kept`. If the rename fails, undo the keeping (nothing was replaced) and fail.
    fn replace_with(
        &self,
        kept: &Record,
        dst: &FileStat,
        (from_dir, from): (BorrowedFd<'_>, &OsStr),
        (to_dir, to): (BorrowedFd<'_>, &OsStr),
    ) -> Result<(), Errno> {
        let is_dir = dst.st_mode & libc::S_IFMT == libc::S_IFDIR;
        // Held from the rename to marking the node diverted (see `Shared::trash_only`).
        let node = (dst.st_nlink <= 1 && !is_dir)
            .then(|| self.table.known(dst.st_dev, dst.st_ino))
            .flatten()
            .and_then(|id| self.table.get(id).ok());
        let writers = node
            .as_ref()
            .map(|n| n.writers.lock().unwrap_or_else(|p| p.into_inner()));
        // The empty directory was moved away already: the name must still be free.
        let flags = if is_dir {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        } else {
            nix::fcntl::RenameFlags::empty()
        };
        if let Err(e) = nix::fcntl::renameat2(from_dir, from, to_dir, to, flags) {
            match (&kept.trash, is_dir, dst.st_nlink > 1) {
                (Some(tr), true, _) => {
                    let _ = nix::fcntl::renameat2(
                        self.store.dir(),
                        tr,
                        to_dir,
                        to,
                        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                    );
                }
                // A hard link into the trash, or a copy of a special file: ours, unrecorded.
                (Some(tr), false, _) => self.store.unlink_trash_name(tr),
                _ => {}
            }
            return Err(errno(e));
        }
        if dst.st_nlink <= 1 && !is_dir {
            // Its only visible name is gone: the trash link must not show in its link count.
            if let Some(n) = &node {
                n.diverted.store(true, Ordering::Relaxed);
            }
            drop(writers);
            if let Some(tr) = &kept.trash {
                if dst.st_mode & libc::S_IFMT == libc::S_IFREG {
                    self.queue_index(tr.clone());
                }
            }
        }
        Ok(())
    }

    /// Records saying that the entry `name` of `dir` (project-relative `rel`, stat `st`) left
    /// the versioned tree, with its bytes kept first: one `unlink` for a file (its content
    /// as an object), symlink (its target) or node; for a directory, one per entry of its
    /// subtree, contents before their directory, each directory as an `rmdir`.
    fn leave_records(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        t: i64,
    ) -> Result<Vec<Record>, Errno> {
        let one = |fd_dir: BorrowedFd<'_>, n: &OsStr, r: &Path, st: &FileStat| {
            let fmt = st.st_mode & libc::S_IFMT;
            let mut rec = Record {
                kind: Kind::from_mode(st.st_mode),
                mode: Some(st.st_mode),
                ino: Some(st.st_ino),
                size: Some(st.st_size as u64),
                ..Record::new(t, Op::Unlink, r, 0, "")
            };
            match fmt {
                libc::S_IFDIR => rec.op = Op::Rmdir,
                libc::S_IFREG => {
                    let fd = open_for_preimage(fd_dir, n).map_err(errno)?;
                    rec.object = Some(
                        self.store
                            .preimage(fd.as_fd(), st)
                            .map_err(|e| store_errno(&e))?,
                    );
                }
                // A symlink, fifo, socket or device node: keep a copy of it in the trash.
                _ => {
                    rec.trash = Some(
                        self.store
                            .copy_special_to_trash(fd_dir, n, r, st, t)
                            .map_err(|e| store_errno(&e))?,
                    );
                }
            }
            Ok::<_, Errno>(rec)
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(vec![one(dir, name, rel, st)?]);
        }
        let top = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let walk_root = PathBuf::from(format!("/proc/self/fd/{}", top.as_raw_fd()));
        let mut out = Vec::new();
        // Parents before children, reversed at the end: every entry's record then comes
        // before its directory's `rmdir`.
        for e in walkdir::WalkDir::new(&walk_root)
            .min_depth(1)
            .follow_links(false)
        {
            let e = e.map_err(|e| {
                errno(NixErrno::from_raw(
                    e.io_error()
                        .and_then(|io| io.raw_os_error())
                        .unwrap_or(libc::EIO),
                ))
            })?;
            let sub = e.path().strip_prefix(&walk_root).map_err(|_| Errno::EIO)?;
            let parent = e.path().parent().ok_or(Errno::EIO)?;
            let pfd = nix::fcntl::open(
                parent,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            let est =
                nix::sys::stat::fstatat(pfd.as_fd(), e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(errno)?;
            out.push(one(pfd.as_fd(), e.file_name(), &rel.join(sub), &est)?);
        }
        out.reverse();
        out.push(one(dir, name, rel, st)?);
        Ok(out)
    }

    /// Records saying that the entry now at `name` of `dir` (project-relative `rel`) appeared
    /// in the versioned tree: a creation per entry, directories before their contents.
    fn arrive_records(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        base: &Record,
    ) -> Vec<Record> {
        let one = |fd_dir: BorrowedFd<'_>, n: &OsStr, r: &Path| -> Option<Record> {
            let st = nix::sys::stat::fstatat(fd_dir, n, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
            let (op, target) = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => (Op::Mkdir, None),
                libc::S_IFREG => (Op::Create, None),
                libc::S_IFLNK => (
                    Op::Symlink,
                    nix::fcntl::readlinkat(fd_dir, n).ok().map(PathBuf::from),
                ),
                _ => (Op::Mknod, None),
            };
            Some(Record {
                op,
                path: r.to_owned(),
                to: None,
                target,
                kind: Kind::from_mode(st.st_mode),
                mode: Some(st.st_mode),
                ino: Some(st.st_ino),
                ..base.clone()
            })
        };
        let mut out: Vec<Record> = one(dir, name, rel).into_iter().collect();
        if out.first().is_some_and(|r| r.op == Op::Mkdir) {
            if let Ok(top) = nix::fcntl::openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                let walk_root = PathBuf::from(format!("/proc/self/fd/{}", top.as_raw_fd()));
                let scratch = |e: &walkdir::DirEntry| {
                    e.path()
                        .strip_prefix(&walk_root)
                        .is_ok_and(|sub| self.is_scratch(&rel.join(sub), e.file_type().is_dir()))
                };
                for e in walkdir::WalkDir::new(&walk_root)
                    .min_depth(1)
                    .follow_links(false)
                    .into_iter()
                    .filter_entry(|e| !scratch(e))
                    .filter_map(Result::ok)
                {
                    let (Ok(sub), Some(parent)) =
                        (e.path().strip_prefix(&walk_root), e.path().parent())
                    else {
                        continue;
                    };
                    let Ok(pfd) = nix::fcntl::open(
                        parent,
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    out.extend(one(pfd.as_fd(), e.file_name(), &rel.join(sub)));
                }
            }
        }
        out
    }

    /// A rename with a scratch tree on at least one side. Inside scratch nothing is kept.
    /// Out of the versioned tree into scratch, the entry (a whole subtree for a directory)
    /// disappears from the versioned tree: its bytes are kept first, as for unlinks. Into the
    /// versioned tree from scratch, it appears: journaled as creations (and what it replaces
    /// is kept as for any rename-over). An exchange across the boundary gets EXDEV.
    #[allow(clippy::too_many_arguments)]
    fn rename_scratch(
        &self,
        req: &Request,
        (from_dir, name, from_rel, from_scratch): (BorrowedFd<'_>, &OsStr, &Path, bool),
        (to_dir, newname, to_rel, to_scratch): (BorrowedFd<'_>, &OsStr, &Path, bool),
        newparent: u64,
        flags: RenameFlags,
        src: &FileStat,
        base: Record,
    ) -> Result<(), Errno> {
        let rename = |f: nix::fcntl::RenameFlags| {
            nix::fcntl::renameat2(from_dir, name, to_dir, newname, f).map_err(errno)
        };
        let plain = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        } else {
            nix::fcntl::RenameFlags::empty()
        };
        if from_scratch && to_scratch {
            let f = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                nix::fcntl::RenameFlags::RENAME_EXCHANGE
            } else {
                plain
            };
            rename(f)?;
            self.note_rename(src, newparent, newname);
            return Ok(());
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EXDEV);
        }
        let t = base.t;
        if to_scratch {
            // Leaving the versioned tree: keep its bytes as unlinks would.
            let note = format!("moved into scratch {}", to_rel.display());
            let mut recs: Vec<Record> = self
                .leave_records(from_dir, name, from_rel, src, t)?
                .into_iter()
                .map(|r| Record {
                    note: Some(note.clone()),
                    ..r
                })
                .collect();
            self.intend_leaving(req, &base, &mut recs);
            self.fault_point("before-rename");
            rename(plain).inspect_err(|_| self.unintend())?;
            self.fault_point("after-rename");
            self.note_rename(src, newparent, newname);
            self.journal_all(req, recs);
            self.unintend();
            return Ok(());
        }
        // Entering the versioned tree from scratch.
        let arrived = |s: &Shared| {
            let b = Record {
                note: Some(format!("moved out of scratch {}", from_rel.display())),
                ..base.clone()
            };
            for r in s.arrive_records(to_dir, newname, to_rel, &b) {
                s.journal(req, r);
            }
        };
        let dst = match nix::sys::stat::fstatat(to_dir, newname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(d) => Some(d),
            Err(NixErrno::ENOENT) => None,
            Err(e) => return Err(errno(e)),
        };
        let Some(d) = dst else {
            rename(plain)?;
            self.note_rename(src, newparent, newname);
            arrived(self);
            return Ok(());
        };
        if d.st_ino == src.st_ino && d.st_dev == src.st_dev {
            return Ok(());
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return Err(Errno::EEXIST);
        }
        let src_dir = src.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let dst_dir = d.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if src_dir && !dst_dir {
            return Err(Errno::ENOTDIR);
        }
        if !src_dir && dst_dir {
            return Err(Errno::EISDIR);
        }
        if dst_dir && !self.dir_is_empty(to_dir, newname)? {
            return Err(Errno::ENOTEMPTY);
        }
        // Keep the replaced entry as for any rename-over, then replace it.
        let kept = self.replace_kept(req, &base, (to_dir, newname, to_rel), &d, true)?;
        self.replace_with(&kept, &d, (from_dir, name), (to_dir, newname))
            .inspect_err(|_| self.unintend())?;
        self.fault_point("after-rename");
        self.note_rename(src, newparent, newname);
        self.journal(req, kept);
        self.unintend();
        arrived(self);
        Ok(())
    }

    fn note_rename(&self, st: &FileStat, newparent: u64, newname: &OsStr) {
        if let Some(id) = self.table.known(st.st_dev, st.st_ino) {
            if let Ok(n) = self.table.get(id) {
                n.set_name(newparent, newname);
            }
        }
    }

    /// The directory `node`, opened for reading.
    fn dir_fd(&self, node: &Node) -> Result<OwnedFd, Errno> {
        self.table
            .open(node, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(errno)?
            .into_owned()
            .map_err(|_| Errno::EMFILE)
    }

    /// The entries of the directory `node` from `offset` (0: the start; else the offset the
    /// entry before had, the backing filesystem's own cookie), each given to
    /// `add(directory, ino, offset of the next one, S_IFMT bits, name)` until it returns true
    /// (the reply is full). The store is left out of the root's listing. A directory removed
    /// meanwhile lists nothing, as natively.
    fn read_dir_at(
        &self,
        node: &Node,
        fh: FileHandle,
        offset: u64,
        add: impl FnMut(BorrowedFd<'_>, u64, u64, u32, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let handle = (fh.0 != 0)
            .then(|| {
                self.dirs
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&fh.0)
                    .cloned()
            })
            .flatten();
        if let Some(h) = handle {
            let fd = h.lock().unwrap_or_else(|p| p.into_inner());
            return self
                .read_entries(fd.as_fd(), node.id == ROOT_ID, offset, add)
                .map(|_| ());
        }
        // Offset 0 starts a listing afresh; any other goes on through the descriptor of the
        // listing that gave it (the kernel may come back to an earlier offset than the last one
        // sent, when a change dropped its cached copy of the listing part-way through).
        let cursor = (offset != 0)
            .then(|| {
                self.dir_cursors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&node.id)
                    .map(|(_, fd)| fd)
            })
            .flatten();
        let fd = match cursor {
            Some(fd) => fd,
            None => match self.dir_fd(node) {
                Ok(fd) => fd,
                Err(Errno::ESTALE) | Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let sent = self.read_entries(fd.as_fd(), node.id == ROOT_ID, offset, add)?;
        // The kernel asks for the rest from `sent`, or comes back to an earlier offset: through
        // this descriptor then.
        self.keep_dir_cursor(node.id, sent, fd);
        Ok(())
    }

    /// Entries of the open directory `fd` from `offset` to `add` (see [`Shared::read_dir_at`]);
    /// returns the offset the kernel will ask for next.
    fn read_entries(
        &self,
        fd: BorrowedFd<'_>,
        is_root: bool,
        offset: u64,
        mut add: impl FnMut(BorrowedFd<'_>, u64, u64, u32, &OsStr) -> bool,
    ) -> Result<u64, Errno> {
        nix::unistd::lseek(fd, offset as i64, nix::unistd::Whence::SeekSet).map_err(errno)?;
        let mut sent = offset;
        // Small reads: a reply holds a few dozen entries, and the rest would be read again by
        // the next request.
        let mut buf = vec![0u64; 512];
        loop {
            // SAFETY: getdents64 writes at most the given length into the buffer.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    fd.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len() * 8,
                )
            };
            let n = match sys::last_errno_isize(n as isize) {
                Ok(n) => n,
                Err(NixErrno::ENOENT) => return Ok(sent),
                Err(e) => return Err(errno(e)),
            };
            if n == 0 {
                return Ok(sent);
            }
            // SAFETY: the first n bytes were written by the kernel; u64 to u8 is always valid.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            let mut pos = 0;
            while pos + 19 < bytes.len() {
                let field = |at: usize, len: usize| {
                    let mut v = [0u8; 8];
                    v[..len].copy_from_slice(&bytes[pos + at..pos + at + len]);
                    u64::from_ne_bytes(v)
                };
                let (d_ino, d_off, reclen) = (field(0, 8), field(8, 8), field(16, 2) as usize);
                let d_type = bytes[pos + 18];
                if reclen < 20 || pos + reclen > bytes.len() {
                    return Err(Errno::EIO);
                }
                let raw = &bytes[pos + 19..pos + reclen];
                let name = OsStr::from_bytes(
                    &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())],
                );
                pos += reclen;
                if is_root && name.as_bytes() == STORE_DIR.as_bytes() {
                    sent = d_off;
                    continue;
                }
                let fmt = match d_type {
                    libc::DT_DIR => libc::S_IFDIR,
                    libc::DT_LNK => libc::S_IFLNK,
                    libc::DT_FIFO => libc::S_IFIFO,
                    libc::DT_SOCK => libc::S_IFSOCK,
                    libc::DT_CHR => libc::S_IFCHR,
                    libc::DT_BLK => libc::S_IFBLK,
                    libc::DT_REG => libc::S_IFREG,
                    // A filesystem that does not say: ask it.
                    _ => match nix::sys::stat::fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => st.st_mode & libc::S_IFMT,
                        Err(_) => {
                            sent = d_off;
                            continue;
                        }
                    },
                };
                if add(fd, d_ino, d_off, fmt, name) {
                    return Ok(sent);
                }
                sent = d_off;
            }
        }
    }

    /// Keep `fd` as the descriptor directory `id`'s listing goes on through.
    fn keep_dir_cursor(&self, id: u64, next: u64, fd: OwnedFd) {
        let mut c = self.dir_cursors.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= DIR_CURSORS_MAX {
            c.clear();
        }
        c.insert(id, (next, fd));
    }

    /// An append-only handle of `node` about to open: count it as a direct handle and return
    /// true, unless passthrough handles have the inode open (then it must be one too, and its
    /// session keeps the old bytes at once). When the store has no room for that copy, the
    /// open first waits, up to [`PENDING_RELEASE_WAIT`], for those handles to go: most often
    /// they are already closed and only their release is on its way (`cat f; echo x >> f`:
    /// the kernel releases `cat`'s handle asynchronously, after `close` returned; handles
    /// opened only for reading send no FLUSH, so their close cannot be seen earlier).
    fn reserve_direct(&self, node: &Arc<Node>) -> bool {
        let deadline = Instant::now() + PENDING_RELEASE_WAIT;
        let mut short = None;
        loop {
            {
                let b = node.backing.lock().unwrap_or_else(|p| p.into_inner());
                if b.as_ref().is_none_or(|(_, n)| *n == 0) {
                    node.direct.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
            let short = *short.get_or_insert_with(|| self.store_short_of(node));
            if !short || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The store's filesystem has no room for a copy of `node` (with a margin).
    fn store_short_of(&self, node: &Node) -> bool {
        let Ok(st) = self.stat_node(node) else {
            return false;
        };
        nix::sys::statvfs::fstatvfs(self.store.dir()).is_ok_and(|v| {
            v.blocks_available().saturating_mul(v.fragment_size())
                < (st.st_size as u64).saturating_add(1 << 20)
        })
    }

    /// A handle of `node` counted as direct is gone.
    fn release_direct(&self, node: &Node) {
        let _b = node.backing.lock().unwrap_or_else(|p| p.into_inner());
        node.direct.fetch_sub(1, Ordering::Relaxed);
    }

    /// How the kernel is to do the reads and writes of a new handle of `node`: direct if it
    /// was counted so ([`Shared::reserve_direct`]) or direct handles have the inode open;
    /// else passthrough, registering (or reusing) the inode's backing id.
    fn io_for<'n>(
        &self,
        node: &'n Arc<Node>,
        file: &OpenFile,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<fuser::BackingId>,
    ) -> Io<'n> {
        // An append-only handle counted as direct is one whatever else holds.
        if file
            .direct_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Io::Direct;
        }
        if !self.passthrough.load(Ordering::Relaxed) || node.fmt != libc::S_IFREG {
            return Io::Cached;
        }
        let mut b = node.backing.lock().unwrap_or_else(|p| p.into_inner());
        let mut direct_of = file.direct_of.lock().unwrap_or_else(|p| p.into_inner());
        if node.direct.load(Ordering::Relaxed) > 0 {
            node.direct.fetch_add(1, Ordering::Relaxed);
            *direct_of = Some(node.clone());
            return Io::Direct;
        }
        drop(direct_of);
        match b.as_mut() {
            Some((_, n)) => *n += 1,
            None => match register(&file.fd) {
                Ok(id) => *b = Some((id, 1)),
                Err(e) => {
                    warn!("passthrough refused ({e}); serving reads and writes directly");
                    return Io::Cached;
                }
            },
        }
        *file.backing_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.clone());
        Io::Passthrough(b)
    }

    /// Keep the passthrough registration of `node`, which no handle uses any more, for the
    /// next open; unregister the oldest idle ones beyond [`IDLE_BACKING_MAX`].
    fn keep_idle_backing(&self, node: &Arc<Node>) {
        let evicted: Vec<std::sync::Weak<Node>> = {
            let mut q = self.idle_backing.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(Arc::downgrade(node));
            let excess = q.len().saturating_sub(IDLE_BACKING_MAX);
            q.drain(..excess).collect()
        };
        for w in evicted {
            if let Some(n) = w.upgrade() {
                let mut b = n.backing.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(b.as_ref(), Some((_, 0))) {
                    // Dropping the id unregisters it from the kernel.
                    *b = None;
                }
            }
        }
    }

    /// The mode before an xattr change that may change it (a POSIX access ACL).
    fn acl_mode_before(&self, name: &OsStr, fd: BorrowedFd<'_>) -> Option<FileStat> {
        (name.as_bytes() == b"system.posix_acl_access")
            .then(|| nix::sys::stat::fstat(fd).ok())
            .flatten()
    }

    /// Journal the mode change an ACL change made, so restore can undo it like a chmod.
    fn journal_acl_mode(
        &self,
        req: &Request,
        node: &Node,
        fd: BorrowedFd<'_>,
        before: Option<FileStat>,
    ) {
        let (Some(before), Ok(after)) = (before, nix::sys::stat::fstat(fd)) else {
            return;
        };
        let rel = self.node_rel(node);
        if before.st_mode != after.st_mode && !self.is_scratch(&rel, node.is_dir()) {
            self.journal(
                req,
                Record {
                    kind: Kind::from_mode(after.st_mode),
                    mode: Some(after.st_mode),
                    old_mode: Some(before.st_mode),
                    ino: Some(after.st_ino),
                    links: (after.st_nlink > 1).then_some(after.st_nlink),
                    note: Some("mode changed by an ACL".into()),
                    ..Record::new(now_ns(), Op::Setattr, rel, 0, "")
                },
            );
        }
    }

    /// The existing entry `name` of directory node `parent`: a descriptor on the directory,
    /// the entry's project-relative path, and its (not followed) stat.
    fn entry(&self, parent: INodeNo, name: &OsStr) -> Result<(Fd<'_>, PathBuf, FileStat), Errno> {
        let pnode = self.node(parent)?;
        let pfd = self.path_fd(&pnode)?;
        let rel = self.dir_rel(&pnode, pfd.fd())?.join(name);
        let st =
            nix::sys::stat::fstatat(pfd.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        Ok((pfd, rel, st))
    }

    /// Create the entry `name` in directory node `parent` with `create` (given the directory's
    /// descriptor), give it to the caller's uid/gid, count the kernel's lookup of it, and
    /// journal it (unless it is in a scratch tree) with the record `record` makes from a base
    /// record that has the path, time and inode set.
    fn make_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
        create: impl FnOnce(BorrowedFd<'_>) -> Result<(), Errno>,
        record: impl FnOnce(Record) -> Record,
    ) -> Result<FileAttr, Errno> {
        if is_store(parent, name) {
            return Err(Errno::EPERM);
        }
        let pnode = self.node(parent)?;
        let pfd = self.path_fd(&pnode)?;
        let rel = self.dir_rel(&pnode, pfd.fd())?.join(name);
        self.refuse_protected(req, &rel, "create", false)?;
        create(pfd.fd())?;
        self.chown_to_caller(req, pfd.fd(), name);
        let (node, attr) = self.lookup_in(&pnode, pfd.fd(), name)?;
        if !self.is_scratch(&rel, is_dir) {
            let base = Record {
                ino: Some(node.ino),
                ..Record::new(now_ns(), Op::Create, rel, 0, "")
            };
            self.journal(req, record(base));
        }
        Ok(attr)
    }

    fn proc_of(&self, node: &Node) -> Result<(Fd<'_>, CString), Errno> {
        let fd = self.path_fd(node)?;
        let p = sys::proc_path(fd.fd());
        Ok((fd, p))
    }
}

fn time_spec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
            // Before the epoch. fuser 0.18 turns the kernel's (sec < 0, nsec) into
            // EPOCH - (|sec| s + nsec ns) instead of EPOCH - |sec| s + nsec ns, and that
            // decomposition is unique (nsec < 1e9), so undo it to get the caller's timespec
            // back; the conformance suite (utimensat with a negative time) checks the result.
            Err(e) => libc::timespec {
                tv_sec: -(e.duration().as_secs() as i64) as libc::time_t,
                tv_nsec: e.duration().subsec_nanos() as libc::c_long,
            },
        },
    }
}

impl Filesystem for SaferootFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            // The kernel then handles POSIX ACLs like a local filesystem: it checks them and
            // drops its cached attributes when one is set, so a mode changed by an ACL is never
            // stale; setxattr journals that mode change.
            | InitFlags::FUSE_POSIX_ACL;
        // Not FUSE_HANDLE_KILLPRIV_V2: it would spare two round trips per file tar unpacks
        // (a security.capability lookup and an attribute refresh before each chown), but the
        // kernel then leaves dropping set-id bits to the filesystem, and passthrough writes,
        // fallocate and copies run with the daemon's CAP_FSETID, which keeps them: a review
        // found set-uid files written by other users keeping the bit.
        // Not FUSE_DIRECT_IO_ALLOW_MMAP: a shared mapping of a handle served with direct I/O
        // would go through a page cache the daemon's own writes (an appender's) do not keep
        // coherent, and writing back a stale page would zero appended bytes. Such a mapping
        // fails with ENODEV instead (docs/posix.md).
        for f in wanted.iter() {
            let _ = config.add_capabilities(f);
        }
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.shared.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.shared.finish_indexing();
        if self.shared.store.journal().sync().is_ok() {
            if let Some(f) = &self.shared.inflight {
                f.clear(&self.shared.store);
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.shared;
        let r = if is_store(parent, name) {
            Err(Errno::ENOENT)
        } else {
            (|| {
                let pnode = s.node(parent)?;
                let pfd = s.path_fd(&pnode)?;
                s.lookup_in(&pnode, pfd.fd(), name)
            })()
        };
        match r {
            Ok((_, attr)) => reply.entry(&s.opts.ttl, &attr, Generation(0)),
            // A name that is not there is remembered as such by the kernel for as long as a
            // name that is (node id 0: a negative entry): git looks for a .gitignore in every
            // directory on every `status`, compilers and interpreters probe search paths. Only
            // this daemon changes the directory, through the kernel, which then drops the
            // entry itself; a restore invalidates every name it changes.
            Err(Errno::ENOENT) => {
                let mut attr = s.attr(0, &zero_stat(0), None);
                attr.ino = INodeNo(0);
                reply.entry(&s.opts.ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.table.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            let st = match fh.and_then(|fh| s.file(fh).ok()) {
                Some(f) => nix::sys::stat::fstat(f.fd.as_fd()).map_err(errno)?,
                None => match s.stat_node(&node) {
                    // A directory removed through the mount, still open somewhere.
                    Err(Errno::ESTALE) => {
                        let kept = node.removed.lock().unwrap_or_else(|p| p.into_inner());
                        match kept.as_ref() {
                            Some(fd) => nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?,
                            None => return Err(Errno::ESTALE),
                        }
                    }
                    r => r?,
                },
            };
            Ok::<_, Errno>(s.attr(node.id, &st, Some(&node)))
        })();
        match r {
            Ok(a) => reply.attr(&s.opts.ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            let (pfd, proc) = s.proc_of(&node)?;
            let before = nix::sys::stat::fstat(pfd.fd()).map_err(errno)?;
            let open = fh.and_then(|fh| s.file(fh).ok());
            // By path, on a file just removed or replaced: look the path up again.
            let writers = node.writers.lock().unwrap_or_else(|p| p.into_inner());
            if open.is_none() && s.trash_only(&node) {
                return Err(Errno::ESTALE);
            }
            drop(writers);
            let rel = s.node_rel(&node);
            s.refuse_protected(req, &rel, "setattr", false)?;
            // A file with several links may have a protected name besides this scratch one.
            let versioned = !s.is_scratch(&rel, node.is_dir()) || before.st_nlink > 1;
            // A size change destroys or moves bytes: keep them before changing anything (so a
            // failure changes nothing), unless a write session is open (its first writer kept
            // the file when it opened it).
            let mut kept = None;
            if let Some(sz) = size.filter(|&sz| versioned && sz as i64 != before.st_size) {
                let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = open.as_ref().filter(|f| f.writer_of.is_some()) {
                    revive(&mut w, f);
                }
                s.settle(req, &node, &mut w);
                if w.n > 0 && node.session_closed.load(Ordering::Relaxed) {
                    // Every writer handle saw a close(2), but one is not released: a
                    // descriptor of it may live on elsewhere and write after this change. A
                    // new session covers that; its last release ends it.
                    s.keep_preimage(req, &node)?;
                    w.kept = true;
                    w.last_flush = None;
                    node.session_closed.store(false, Ordering::Relaxed);
                }
                let in_session = w.n > 0 && !node.session_closed.load(Ordering::Relaxed);
                if !in_session {
                    kept = Some(s.preimage_node(&node)?.0);
                } else if !w.kept && sz < w.base {
                    // An append-only session left the old bytes in place: keep them now.
                    s.keep_preimage(req, &node)?;
                    w.kept = true;
                }
            }
            if let Some(mut m) = mode {
                // Only the owner (or a privileged caller) can chmod: a mode change from anyone
                // else that only clears set-id bits is the kernel dropping them after a write.
                // It keeps set-group-ID on a file that is not group-executable even when the
                // writer is not in the file's group, which Linux drops natively: drop it too.
                let cleared = before.st_mode & 0o7777 & !m;
                if req.uid() != before.st_uid
                    && m & 0o7777 & !(before.st_mode & 0o7777) == 0
                    && cleared != 0
                    && cleared & !(libc::S_ISUID | libc::S_ISGID) == 0
                {
                    if let Some(native) = set_id_bits_to_drop(req, &before) {
                        m &= native | !0o7777;
                    }
                }
                if node.fmt != libc::S_IFLNK {
                    // SAFETY: proc is a valid C string.
                    sys::last_errno(unsafe { libc::chmod(proc.as_ptr(), m & 0o7777) })
                        .map_err(errno)?;
                }
            }
            if uid.is_some() || gid.is_some() {
                nix::unistd::fchownat(
                    pfd.fd(),
                    "",
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                    AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?;
            }
            if let Some(sz) = size {
                match &open {
                    Some(f) => nix::unistd::ftruncate(f.fd.as_fd(), sz as i64).map_err(errno)?,
                    None => {
                        // SAFETY: proc is a valid C string.
                        sys::last_errno(unsafe { libc::truncate(proc.as_ptr(), sz as i64) })
                            .map_err(errno)?;
                    }
                }
                // The kernel's own mode change for this (sent with the size) drops set-group-ID
                // only when the file is group-executable; a caller outside the file's group
                // loses it otherwise too, natively. Drop the bits as the kernel would for the
                // caller (the daemon's own truncate keeps them).
                if let Some(m) = set_id_bits_to_drop(req, &before) {
                    // SAFETY: proc is a valid C string.
                    sys::last_errno(unsafe { libc::chmod(proc.as_ptr(), m) }).map_err(errno)?;
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = [time_spec(atime), time_spec(mtime)];
                let r = match &open {
                    // SAFETY: ts is a valid array of two timespecs.
                    Some(f) => unsafe { libc::futimens(f.fd.as_raw_fd(), ts.as_ptr()) },
                    None if node.fmt == libc::S_IFLNK => unsafe {
                        libc::utimensat(
                            pfd.fd().as_raw_fd(),
                            c"".as_ptr(),
                            ts.as_ptr(),
                            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                        )
                    },
                    None => unsafe {
                        libc::utimensat(libc::AT_FDCWD, proc.as_ptr(), ts.as_ptr(), 0)
                    },
                };
                sys::last_errno(r).map_err(errno)?;
            }
            let after = nix::sys::stat::fstat(pfd.fd()).map_err(errno)?;
            // Journal what changed (a chown or chmod to the same values changes nothing).
            let changed = size.is_some()
                || before.st_mode != after.st_mode
                || before.st_uid != after.st_uid
                || before.st_gid != after.st_gid;
            if versioned && changed {
                s.journal(
                    req,
                    Record {
                        kind: Kind::from_mode(after.st_mode),
                        mode: Some(after.st_mode),
                        old_mode: (before.st_mode != after.st_mode).then_some(before.st_mode),
                        size,
                        ino: Some(after.st_ino),
                        links: (after.st_nlink > 1).then_some(after.st_nlink as u64),
                        object: kept,
                        ..Record::new(now_ns(), Op::Setattr, rel, 0, "")
                    },
                );
            }
            Ok::<_, Errno>(s.attr(node.id, &after, Some(&node)))
        })();
        match r {
            Ok(a) => reply.attr(&s.opts.ttl, &a),
            Err(e) => {
                // Part of the change may have happened (a chmod before a failing truncate).
                s.stale_attributes(ino.0);
                reply.error(e)
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            let fd = s.path_fd(&node)?;
            nix::fcntl::readlinkat(fd.fd(), "").map_err(errno)
        })();
        match r {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _paths = self.shared.paths_shared();
        let op = if mode & libc::S_IFMT == libc::S_IFREG {
            Op::Create
        } else {
            Op::Mknod
        };
        let r = self.shared.make_entry(
            req,
            parent,
            name,
            false,
            |dir| {
                let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
                // SAFETY: a valid C string; mknodat only creates the node.
                let r = unsafe {
                    libc::mknodat(
                        dir.as_raw_fd(),
                        cname.as_ptr(),
                        mode as libc::mode_t,
                        rdev as libc::dev_t,
                    )
                };
                sys::last_errno(r).map(|_| ()).map_err(errno)
            },
            |rec| Record {
                op,
                kind: Kind::from_mode(mode),
                mode: Some(mode),
                ..rec
            },
        );
        match r {
            Ok(a) => reply.entry(&self.shared.opts.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _paths = self.shared.paths_shared();
        let r = self.shared.make_entry(
            req,
            parent,
            name,
            true,
            |dir| nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)).map_err(errno),
            |rec| Record {
                op: Op::Mkdir,
                kind: Some(Kind::Dir),
                mode: Some(libc::S_IFDIR | (mode & 0o7777)),
                ..rec
            },
        );
        match r {
            Ok(a) => reply.entry(&self.shared.opts.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        if is_store(parent, name) {
            return reply.error(Errno::ENOENT);
        }
        let r = (|| {
            let (pfd, rel, st) = s.entry(parent, name)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Err(Errno::EISDIR);
            }
            s.refuse_protected(req, &rel, "unlink", false)?;
            if s.is_scratch(&rel, false) {
                nix::unistd::unlinkat(pfd.fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                    .map_err(errno)?;
                // Gone for good: let its blocks go now, not when the descriptor cache moves on.
                s.table.drop_opath(st.st_dev, st.st_ino);
                return Ok(());
            }
            let t = now_ns();
            if let Some(rec) = s.unlink_second_name(pfd.fd(), name, &rel, &st, t)? {
                s.journal(req, rec);
                return Ok(());
            }
            let mut rec = s.keep(pfd.fd(), name, &rel, &st, t)?;
            if !Shared::moved_away(&st) {
                nix::unistd::unlinkat(pfd.fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                    .map_err(errno)?;
            }
            // Dated after the removal (see `do_rename`).
            rec.t = now_ns();
            s.journal(req, rec);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        if is_store(parent, name) {
            return reply.error(Errno::ENOENT);
        }
        let r = (|| {
            let (pfd, rel, st) = s.entry(parent, name)?;
            // Only the directory itself or one inside a protected path is refused: a directory
            // that holds a protected path is not empty, so rmdir fails with ENOTEMPTY as it
            // would natively, and refusing it would report a denial that took nothing away
            // (`git stash` tries `rmdir .git` after removing its temporary index).
            s.refuse_protected(req, &rel, "rmdir", false)?;
            let known = s
                .table
                .known(st.st_dev, st.st_ino)
                .and_then(|id| s.table.get(id).ok());
            let keep = known.as_ref().and_then(|_| {
                nix::fcntl::openat(
                    pfd.fd(),
                    name,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            });
            nix::unistd::unlinkat(pfd.fd(), name, nix::unistd::UnlinkatFlags::RemoveDir)
                .map_err(errno)?;
            s.dirs_moved();
            if let (Some(n), Some(fd)) = (known, keep) {
                if nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|k| k.st_ino == st.st_ino) {
                    *n.removed.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
                }
            }
            if !s.is_scratch(&rel, true) {
                s.journal(
                    req,
                    Record {
                        kind: Some(Kind::Dir),
                        mode: Some(st.st_mode),
                        ino: Some(st.st_ino),
                        ..Record::new(now_ns(), Op::Rmdir, rel, 0, "")
                    },
                );
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _paths = self.shared.paths_shared();
        let r = self.shared.make_entry(
            req,
            parent,
            link_name,
            false,
            |dir| nix::unistd::symlinkat(target, dir, link_name).map_err(errno),
            |rec| Record {
                op: Op::Symlink,
                kind: Some(Kind::Symlink),
                target: Some(target.to_owned()),
                ..rec
            },
        );
        match r {
            Ok(a) => reply.entry(&self.shared.opts.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // The remembered directory paths are dropped before the lock is let go: a request
        // that takes it next must not compute a path from them.
        let r = {
            let _shared = self.shared.paths_shared();
            let r = self
                .shared
                .do_rename(req, parent, name, newparent, newname, flags, false);
            if r != Err(NEEDS_PATHS_EXCLUSIVE) {
                self.shared.dirs_moved();
            }
            r
        };
        let r = match r {
            Err(NEEDS_PATHS_EXCLUSIVE) => {
                let _all = self.shared.paths_exclusive();
                let r = self
                    .shared
                    .do_rename(req, parent, name, newparent, newname, flags, true);
                self.shared.dirs_moved();
                r
            }
            r => r,
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        if is_store(newparent, newname) {
            return reply.error(Errno::EPERM);
        }
        let r = (|| {
            let node = s.node(ino)?;
            let npnode = s.node(newparent)?;
            let fd = s.path_fd(&node)?;
            let npfd = s.path_fd(&npnode)?;
            let to_rel = s.dir_rel(&npnode, npfd.fd())?.join(newname);
            s.refuse_protected(req, &to_rel, "link", false)?;
            if s.guard.active() {
                s.refuse_protected(req, &s.node_rel(&node), "link", false)?;
            }
            nix::unistd::linkat(fd.fd(), "", npfd.fd(), newname, AtFlags::AT_EMPTY_PATH)
                .map_err(errno)?;
            let from_rel = s.node_rel(&node);
            let (_, attr) = s.lookup_in(&npnode, npfd.fd(), newname)?;
            if s.is_scratch(&to_rel, false) {
                return Ok(attr);
            }
            if node.fmt == libc::S_IFREG {
                let mut peers = s.link_peers.lock().unwrap_or_else(|p| p.into_inner());
                if peers.len() >= LINK_PEERS_MAX {
                    peers.clear();
                }
                peers.insert(node.ino, (from_rel.clone(), to_rel.clone()));
            }
            s.journal(
                req,
                Record {
                    to: Some(to_rel),
                    kind: Some(Kind::from_mode(node.fmt).unwrap_or(Kind::File)),
                    ino: Some(node.ino),
                    ..Record::new(now_ns(), Op::Link, from_rel, 0, "")
                },
            );
            Ok::<_, Errno>(attr)
        })();
        match r {
            Ok(a) => reply.entry(&s.opts.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            // O_TRUNC (sent only if the kernel does not truncate through setattr first) is
            // applied after the pre-image, never by the open itself.
            let trunc = flags.0 & libc::O_TRUNC != 0;
            // O_DIRECT is left to the kernel: a passthrough handle's own backing file has it,
            // and the daemon's descriptor serves unaligned buffers (direct I/O handles).
            let mut raw = flags.0
                & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC | libc::O_DIRECT);
            let acc = raw & libc::O_ACCMODE;
            let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR || trunc;
            if writes && s.guard.active() {
                s.refuse_protected(req, &s.node_rel(&node), "open for writing", false)?;
            }
            let keep = if !writes {
                None
            } else if s.is_scratch(&s.node_rel(&node), node.is_dir()) && !s.has_other_links(&node) {
                Some(Keep::No)
            } else if acc == libc::O_WRONLY
                && raw & libc::O_APPEND != 0
                && !trunc
                && node.fmt == libc::S_IFREG
            {
                // Opened only to append (`>>`): nothing needs keeping until something below
                // the old end could change. Its writes come here (direct I/O), at the offsets
                // the kernel gives (it puts O_APPEND writes at the end), so the backing
                // descriptor is opened without O_APPEND: a write at a lower offset after the
                // caller cleared O_APPEND with fcntl is seen, kept first, and done where asked.
                // If passthrough handles have the file open, it must be one too: kept at once.
                Some(Keep::Append)
            } else {
                Some(Keep::Yes)
            };
            let mut direct = false;
            let keep = match keep {
                Some(Keep::Append) if s.reserve_direct(&node) => {
                    direct = true;
                    raw &= !libc::O_APPEND;
                    Some(Keep::Append)
                }
                Some(Keep::Append) => Some(Keep::Yes),
                k => k,
            };
            let opened = (|| {
                let fd = match s.table.open(&node, OFlag::from_bits_retain(raw)) {
                    // An append-only inode (chattr +a) opens for writing only with O_APPEND;
                    // nothing can then be written below its end anyway.
                    Err(NixErrno::EPERM) if direct => s
                        .table
                        .open(&node, OFlag::from_bits_retain(raw | libc::O_APPEND)),
                    r => r,
                };
                let fd = fd.map_err(errno)?.into_owned().map_err(|_| Errno::EMFILE)?;
                let writer_of = match keep {
                    Some(k) => {
                        s.begin_write(req, &node, k)?;
                        Some(node.clone())
                    }
                    None => None,
                };
                if trunc {
                    if let Err(e) = nix::unistd::ftruncate(fd.as_fd(), 0) {
                        if let Some(n) = &writer_of {
                            // As a release of this handle: the session may end here.
                            s.end_write(req, n, false);
                        }
                        return Err(errno(e));
                    }
                }
                Ok((fd, writer_of))
            })();
            let (fd, writer_of) = match opened {
                Ok(o) => o,
                Err(e) => {
                    if direct {
                        s.release_direct(&node);
                    }
                    return Err(e);
                }
            };
            let fh = s.new_fh();
            let file = OpenFile::new(fd, writer_of);
            if direct {
                *file.direct_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.clone());
            }
            s.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, file.clone());
            Ok::<_, Errno>((node, file, fh, direct))
        })();
        match r {
            Ok((node, file, fh, direct)) => {
                // A handle that cannot write has nothing to do at close(2) (no write session to
                // end, no delayed write error; POSIX locks are the kernel's): spare the round
                // trip of a FLUSH request on every close of a file opened for reading. Nor does
                // an append-only writer served with direct I/O: every write of it reaches the
                // daemon, which dates the end of its session at the last one (`write`).
                let noflush = if file.writer_of.is_none() || direct {
                    FopenFlags::FOPEN_NOFLUSH
                } else {
                    FopenFlags::empty()
                };
                match s.io_for(&node, &file, |fd| reply.open_backing(fd)) {
                    Io::Passthrough(b) => match b.as_ref() {
                        Some((id, _)) => reply.opened_passthrough(FileHandle(fh), noflush, id),
                        None => reply.error(Errno::EIO),
                    },
                    Io::Direct => {
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO | noflush)
                    }
                    // Nothing else changes backing files while mounted: the cache stays valid.
                    Io::Cached => {
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | noflush)
                    }
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.shared;
        let r = (|| {
            let f = s.file(fh)?;
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            while done < buf.len() {
                let n = nix::sys::uio::pread(
                    f.fd.as_fd(),
                    &mut buf[done..],
                    (offset + done as u64) as i64,
                )
                .map_err(errno)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf.truncate(done);
            Ok::<_, Errno>(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let f = s.file(fh)?;
            s.keep_session(req, &f, offset)?;
            // A write through the daemon (direct I/O) is not seen by the kernel's set-id
            // handling of passthrough and cached writes: drop them here, as it would.
            if let Ok(st) = nix::sys::stat::fstat(f.fd.as_fd()) {
                if let Some(m) = set_id_bits_to_drop(req, &st) {
                    nix::sys::stat::fchmod(f.fd.as_fd(), Mode::from_bits_truncate(m))
                        .map_err(errno)?;
                    if let Some(node) = &f.writer_of {
                        s.stale_attributes(node.id);
                    }
                }
            }
            let mut done = 0;
            while done < data.len() {
                let n = nix::sys::uio::pwrite(
                    f.fd.as_fd(),
                    &data[done..],
                    (offset + done as u64) as i64,
                )
                .map_err(errno)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            // Every write of a handle served with direct I/O comes here (no FLUSH for it, see
            // `open`): the file is as this write left it until something else changes it.
            if let (Some(node), true) = (&f.writer_of, f.is_direct()) {
                if let Ok(st) = nix::sys::stat::fstat(f.fd.as_fd()) {
                    let mut w = node.writers.lock().unwrap_or_else(|p| p.into_inner());
                    w.last_flush = Some(Box::new((now_ns(), file_sig(&st))));
                }
            }
            Ok::<_, Errno>(done as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) semantics on the backing file (releases POSIX locks, reports delayed errors).
        let r = self.shared.file(fh).and_then(|f| {
            let dup = nix::unistd::dup(f.fd.as_fd()).map_err(errno)?;
            nix::unistd::close(dup).map_err(errno)?;
            if let Some(node) = f.writer_of.as_ref() {
                self.shared.flush_write(req, node, &f);
                // As in release: a shared mapping unmapped before close(2) wrote behind the
                // kernel's cached attributes (flush is synchronous, release is not).
                self.shared.stale_attributes(node.id);
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _paths = self.shared.paths_shared();
        let file = self
            .shared
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        if let Some(f) = file.as_ref() {
            let direct_of = f.direct_of.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(n) = direct_of {
                self.shared.release_direct(&n);
            }
            if let Some(w) = f.writer_of.as_ref() {
                self.shared
                    .end_write(req, w, f.flushed.load(Ordering::Relaxed));
                // Writes through a shared mapping of a passthrough file change the real file's
                // size and times without the kernel updating the attributes it caches (RELEASE
                // comes after the last munmap).
                self.shared.stale_attributes(w.id);
            }
        }
        if let Some(node) = file.and_then(|f| {
            f.backing_of
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        }) {
            let mut b = node.backing.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, n)) = b.as_mut() {
                *n -= 1;
                if *n == 0 {
                    drop(b);
                    self.shared.keep_idle_backing(&node);
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.shared.file(fh).and_then(|f| {
            if datasync {
                nix::unistd::fdatasync(f.fd.as_fd()).map_err(errno)
            } else {
                nix::unistd::fsync(f.fd.as_fd()).map_err(errno)
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        // Directories need no open handle: every READDIR reads the directory from the offset
        // it asks for (the backing filesystem's own cookies). With ENOSYS here, the kernel
        // sends neither OPENDIR nor RELEASEDIR again, for any directory, and keeps listings
        // in its cache across opens (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, its default then):
        // two round trips less for every directory a `find`, `git status` or `grep -r` opens.
        // It drops a listing itself when it changes the directory through the mount, and
        // restore invalidates what it changes behind it. On overlayfs and FUSE, whose offsets
        // hold only for the descriptor that gave them, each open gets its own.
        if !s.dir_handles {
            return reply.error(Errno::ENOSYS);
        }
        let r = s.node(ino).and_then(|n| s.dir_fd(&n)).map(|fd| {
            let fh = s.new_fh();
            s.dirs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, Arc::new(Mutex::new(fd)));
            fh
        });
        match r {
            // Not FOPEN_CACHE_DIR: the kernel would share one cached listing between handles,
            // and resume one handle's listing at an offset another handle's descriptor gave.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = &self.shared;
        let r = (|| {
            s.read_dir_at(&*s.node(ino)?, fh, offset, |_, d_ino, off, fmt, name| {
                reply.add(INodeNo(d_ino), off, file_type(fmt), name)
            })
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            s.read_dir_at(&node, fh, offset, |dirfd, d_ino, off, fmt, name| {
                let b = name.as_bytes();
                if b == b"." || b == b".." {
                    // Node id 0: the kernel lists the name without caching an entry for it.
                    let mut attr = s.attr(0, &zero_stat(fmt), None);
                    attr.ino = INodeNo(d_ino);
                    return reply.add(INodeNo(0), off, name, &Duration::ZERO, &attr, Generation(0));
                }
                let (child, attr) = match s.lookup_in(&node, dirfd, name) {
                    Ok(x) => x,
                    // Vanished since it was read: skip it.
                    Err(_) => return false,
                };
                let full = reply.add(
                    INodeNo(child.id),
                    off,
                    name,
                    &s.opts.ttl,
                    &attr,
                    Generation(0),
                );
                if full {
                    // Not sent: the kernel did not get this lookup.
                    s.table.forget(child.id, 1);
                }
                full
            })
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared
            .dirs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        let r = match s.node(ino).and_then(|n| s.dir_fd(&n)) {
            // Removed meanwhile (a descriptor kept across rmdir): nothing to write.
            Err(Errno::ESTALE) | Err(Errno::ENOENT) => return reply.ok(),
            r => r,
        };
        let r = r.and_then(|fd| {
            if datasync {
                nix::unistd::fdatasync(fd.as_fd()).map_err(errno)
            } else {
                nix::unistd::fsync(fd.as_fd()).map_err(errno)
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::fstatvfs(self.shared.table.root_fd()) {
            Ok(v) => reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                v.block_size() as u32,
                v.name_max() as u32,
                v.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            if s.guard.active() {
                s.refuse_protected(req, &s.node_rel(&node), "setxattr", false)?;
            }
            let (fd, proc) = s.proc_of(&node)?;
            let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let before = s.acl_mode_before(name, fd.fd());
            if name.as_bytes() == SECURITY_CAPABILITY {
                node.no_caps.store(false, Ordering::Relaxed);
            }
            // SAFETY: valid C strings and a valid buffer of value.len() bytes.
            let r = unsafe {
                libc::setxattr(
                    proc.as_ptr(),
                    cname.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            };
            sys::last_errno(r).map_err(errno)?;
            s.journal_acl_mode(req, &node, fd.fd(), before);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let s = &self.shared;
        let caps = name.as_bytes() == SECURITY_CAPABILITY;
        let r = (|| {
            let node = s.node(ino)?;
            if caps && node.no_caps.load(Ordering::Relaxed) {
                return Err(Errno::from_i32(libc::ENODATA));
            }
            let (_fd, proc) = s.proc_of(&node)?;
            let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let mut buf = vec![0u8; size as usize];
            // SAFETY: buf has size bytes; size 0 asks for the length only.
            let n = unsafe {
                libc::getxattr(
                    proc.as_ptr(),
                    cname.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            let n = match sys::last_errno_isize(n) {
                Ok(n) => n,
                Err(NixErrno::ENODATA) if caps => {
                    node.no_caps.store(true, Ordering::Relaxed);
                    return Err(Errno::from_i32(libc::ENODATA));
                }
                Err(e) => return Err(errno(e)),
            };
            buf.truncate(n);
            Ok::<_, Errno>((n, buf))
        })();
        match r {
            Ok((n, _)) if size == 0 => reply.size(n as u32),
            Ok((_, b)) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            let (_fd, proc) = s.proc_of(&node)?;
            // The whole list, always: names the caller may not see are dropped below, so the
            // length the caller is told must be computed after that.
            let mut buf = Vec::new();
            loop {
                // SAFETY: buf has buf.len() bytes; 0 asks for the length only.
                let need = unsafe { libc::listxattr(proc.as_ptr(), std::ptr::null_mut(), 0) };
                let need = sys::last_errno_isize(need).map_err(errno)?;
                buf.resize(need, 0);
                // SAFETY: as above.
                let n =
                    unsafe { libc::listxattr(proc.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                match sys::last_errno_isize(n) {
                    Ok(n) => {
                        buf.truncate(n);
                        break;
                    }
                    // The list grew between the two calls.
                    Err(NixErrno::ERANGE) => continue,
                    Err(e) => return Err(errno(e)),
                }
            }
            // The kernel lists `trusted.*` names only to callers with CAP_SYS_ADMIN; the daemon
            // has it, so it filters them for callers without it, as the native listing would.
            if sys::has_trusted_names(&buf) && !sys::caller_has_cap(req.pid(), sys::CAP_SYS_ADMIN) {
                buf = sys::without_trusted_names(&buf);
            }
            let n = buf.len();
            if size != 0 && n > size as usize {
                return Err(Errno::from_i32(libc::ERANGE));
            }
            Ok::<_, Errno>((n, buf))
        })();
        match r {
            Ok((n, _)) if size == 0 => reply.size(n as u32),
            Ok((_, b)) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            if s.guard.active() {
                s.refuse_protected(req, &s.node_rel(&node), "removexattr", false)?;
            }
            let (fd, proc) = s.proc_of(&node)?;
            let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let before = s.acl_mode_before(name, fd.fd());
            // SAFETY: valid C strings.
            let r = unsafe { libc::removexattr(proc.as_ptr(), cname.as_ptr()) };
            sys::last_errno(r).map_err(errno)?;
            s.journal_acl_mode(req, &node, fd.fd(), before);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let s = &self.shared;
        let r = (|| {
            let node = s.node(ino)?;
            let (_fd, proc) = s.proc_of(&node)?;
            // SAFETY: valid C string.
            let r = unsafe { libc::access(proc.as_ptr(), mask.bits()) };
            sys::last_errno(r).map_err(errno).map(|_| ())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        if is_store(parent, name) {
            return reply.error(Errno::EPERM);
        }
        let r = (|| {
            let pnode = s.node(parent)?;
            let pfd = s.path_fd(&pnode)?;
            let rel = s.dir_rel(&pnode, pfd.fd())?.join(name);
            s.refuse_protected(req, &rel, "create", false)?;
            // The kernel only sends create for a name it found absent, holding the directory
            // lock; O_EXCL makes sure an existing file is never truncated behind our back.
            let oflags = OFlag::from_bits_retain(
                (flags & !(libc::O_NOCTTY | libc::O_TRUNC))
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_CLOEXEC,
            );
            let fd = nix::fcntl::openat(
                pfd.fd(),
                name,
                oflags,
                Mode::from_bits_truncate(mode & 0o7777),
            )
            .map_err(errno)?;
            s.chown_to_caller(req, pfd.fd(), name);
            let (node, attr) = s.lookup_in(&pnode, pfd.fd(), name)?;
            // A file just made has no file capability (only setxattr through here adds one):
            // the kernel's question before its first write is answered without a syscall.
            node.no_caps.store(true, Ordering::Relaxed);
            if !s.is_scratch(&rel, false) {
                s.journal(
                    req,
                    Record {
                        kind: Some(Kind::File),
                        mode: Some(libc::S_IFREG | (mode & 0o7777)),
                        ino: Some(node.ino),
                        ..Record::new(now_ns(), Op::Create, rel, 0, "")
                    },
                );
            }
            // A new file has no earlier bytes: its creator writes without a pre-image.
            let writer_of = if flags & libc::O_ACCMODE != libc::O_RDONLY {
                s.begin_write(req, &node, Keep::No)?;
                Some(node.clone())
            } else {
                None
            };
            let fh = s.new_fh();
            let file = OpenFile::new(fd, writer_of);
            s.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh, file.clone());
            Ok::<_, Errno>((node, file, attr, fh))
        })();
        match r {
            Ok((node, file, a, fh)) => {
                let ttl = s.opts.ttl;
                let (g, f) = (Generation(0), FileHandle(fh));
                match s.io_for(&node, &file, |fd| reply.open_backing(fd)) {
                    Io::Passthrough(b) => match b.as_ref() {
                        Some((id, _)) => {
                            reply.created_passthrough(&ttl, &a, g, f, FopenFlags::empty(), id)
                        }
                        None => reply.error(Errno::EIO),
                    },
                    Io::Direct => reply.created(&ttl, &a, g, f, FopenFlags::FOPEN_DIRECT_IO),
                    Io::Cached => reply.created(&ttl, &a, g, f, FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _paths = self.shared.paths_shared();
        let r = self.shared.file(fh).and_then(|f| {
            // Only reserving space (with or without changing the size) leaves bytes alone.
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                self.shared.keep_session(req, &f, offset)?;
            }
            // SAFETY: plain syscall on a valid descriptor.
            let r =
                unsafe { libc::fallocate(f.fd.as_raw_fd(), mode, offset as i64, length as i64) };
            sys::last_errno(r).map_err(errno).map(|_| ())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.shared.file(fh).and_then(|f| {
            // SAFETY: plain syscall on a valid descriptor (the offset is per request; the
            // backing descriptor's own position is not used by pread/pwrite).
            let r = unsafe { libc::lseek(f.fd.as_raw_fd(), offset, whence) };
            if r < 0 {
                Err(errno(NixErrno::last()))
            } else {
                Ok(r)
            }
        });
        match r {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _paths = self.shared.paths_shared();
        let s = &self.shared;
        let r = (|| {
            let a = s.file(fh_in)?;
            let b = s.file(fh_out)?;
            s.keep_session(req, &b, offset_out)?;
            let mut oi = offset_in as i64;
            let mut oo = offset_out as i64;
            // SAFETY: valid descriptors and offset pointers.
            let n = unsafe {
                libc::copy_file_range(
                    a.fd.as_raw_fd(),
                    &mut oi,
                    b.fd.as_raw_fd(),
                    &mut oo,
                    len as usize,
                    0,
                )
            };
            sys::last_errno_isize(n).map_err(errno)
        })();
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}

/// The mode a regular file `st` gets when its size is changed by the caller of `req`: without
/// set-user-ID, and without set-group-ID if it is group-executable or the caller is not in its
/// group, unless the caller has `CAP_FSETID` (the kernel's `setattr_should_drop_suidgid`).
/// `None`: nothing to drop.
fn set_id_bits_to_drop(req: &Request, st: &FileStat) -> Option<u32> {
    let mode = st.st_mode;
    if mode & libc::S_IFMT != libc::S_IFREG || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    let mut kill = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0
        && (mode & libc::S_IXGRP != 0 || !sys::caller_in_group(req.pid(), st.st_gid))
    {
        kill |= libc::S_ISGID;
    }
    (kill != 0 && !sys::caller_has_cap(req.pid(), sys::CAP_FSETID)).then_some(mode & 0o7777 & !kill)
}

fn zero_stat(fmt: u32) -> FileStat {
    // SAFETY: FileStat (libc::stat) is plain old data; all-zero is a valid value.
    let mut st: FileStat = unsafe { std::mem::zeroed() };
    st.st_mode = fmt;
    st
}
