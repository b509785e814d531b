//! The inode table: which backing object each FUSE node id stands for.
//!
//! A node id is the backing inode number (stable across mounts, so `st_ino` through the mount
//! equals the native one and git's index stays valid), except for the root (always 1) and for
//! objects on other filesystems or with inode number 1, which get ids from a private range.
//!
//! A node refers to its object by kernel file handle, not by an open descriptor: the table can
//! hold every inode the kernel remembers without running into the descriptor limit, and the
//! handle still reaches the object after it was renamed, including into the trash.
//!
//! What this module does not do: any backing I/O beyond opening nodes, or any policy.

use crate::sys::{self, Handle, SysResult};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub const ROOT_ID: u64 = 1;
/// Forgotten nodes between two returns of freed memory to the system.
const TRIM_EVERY: u64 = 16_384;

/// Return freed heap memory to the system (glibc keeps it otherwise).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
const FOREIGN_BASE: u64 = 1 << 63;

pub enum NodeRef {
    Root,
    Handle(Handle),
    /// Fallback for filesystems without file handles and for nested mounts.
    Fd(OwnedFd),
}

pub struct Node {
    pub id: u64,
    pub dev: u64,
    pub ino: u64,
    /// `S_IFMT` bits: an inode never changes type.
    pub fmt: u32,
    pub reference: NodeRef,
    nlookup: AtomicU64,
    /// Last known (parent id, name): how journal records name a non-directory.
    name: Mutex<(u64, OsString)>,
    /// Set once the object was moved into the trash by an unlink or replace: its visible link
    /// count is one less than the backing one (the trash link is not the user's).
    pub diverted: AtomicBool,
    /// Kernel passthrough registration shared by every open handle of this inode, with the
    /// number of handles using it (the kernel wants one backing id per inode).
    pub backing: Mutex<Option<(fuser::BackingId, usize)>>,
    /// Open handles served with direct I/O instead of passthrough: an append-only writer
    /// whose old bytes are not kept yet, and every handle opened while one is. The kernel
    /// refuses a handle that is not passthrough once one that is has the inode open, so
    /// the two never mix: changed only under the `backing` lock, and never above 0 while
    /// passthrough handles are counted there.
    pub direct: std::sync::atomic::AtomicUsize,
    /// Known to have no `security.capability` xattr. The kernel asks for it before every
    /// write; answering from here saves reopening the inode each time. Only this daemon can
    /// add one (through setxattr, which clears this).
    pub no_caps: AtomicBool,
    /// The write session's end is journaled (a close(2) was seen for every writer handle and
    /// something needed the session over: `Shared::settle`), but the kernel has not released
    /// every handle yet (release comes later, asynchronously): a new open for writing starts
    /// a new session and must keep a pre-image even though `writers` is not 0. Changed under
    /// the `writers` lock.
    pub session_closed: AtomicBool,
    /// An `O_PATH` descriptor of a directory removed through the mount while the kernel still
    /// knew it: its handle no longer opens, and `fstat` of a descriptor kept across the
    /// `rmdir` must still work.
    pub removed: Mutex<Option<OwnedFd>>,
    /// A directory's project-relative path, with the `Shared::dir_gen` it was read under.
    pub rel: Mutex<Option<(u64, std::path::PathBuf)>>,
    /// An `O_PATH` descriptor of the object, kept while the node is among the recently used
    /// ones ([`OPATH_CACHE`]).
    opath: Mutex<Option<Arc<OwnedFd>>>,
    /// Open handles that may write, and whether their session's old bytes are safe. The first
    /// one keeps a pre-image; the lock is held while it is taken, so no second writer can change
    /// the file before the bytes are safe.
    pub writers: Mutex<Writers>,
}

/// The write session of a node: see [`Node::writers`].
#[derive(Default, Debug)]
pub struct Writers {
    /// Open handles that may write.
    pub n: usize,
    /// Of those, the ones a close(2) was seen for (FLUSH) whose release has not come yet.
    pub flushed: usize,
    /// When the last close(2) of a writer of this session was seen, and the file's size,
    /// mtime and ctime then: if they have not changed since, the session ended at that
    /// instant (see `Shared::close_time`).
    pub last_flush: Option<Box<(i64, [i64; 5])>>,
    /// The session's old bytes are kept, or need no keeping (a new file, a scratch file).
    /// False only in an append-only session that has not kept them yet: its writers can only
    /// add bytes at or after `base`, and anything else (a write below `base`, a truncate, a
    /// hole punched, another writer joining) keeps the pre-image first.
    pub kept: bool,
    /// The file's size when an append-only session began.
    pub base: u64,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }

    pub fn name(&self) -> (u64, OsString) {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_name(&self, parent: u64, name: &OsStr) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = (parent, name.to_owned());
    }
}

/// A descriptor that is either the long-lived root descriptor or one opened for this call.
pub enum Fd<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
    /// A node's cached `O_PATH` descriptor ([`Table::open`]).
    Shared(Arc<OwnedFd>),
}

impl Fd<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Fd::Borrowed(b) => *b,
            Fd::Owned(o) => o.as_fd(),
            Fd::Shared(s) => s.as_fd(),
        }
    }

    /// A descriptor of one's own (a duplicate unless this one is owned already).
    pub fn into_owned(self) -> std::io::Result<OwnedFd> {
        match self {
            Fd::Owned(o) => Ok(o),
            Fd::Borrowed(b) => b.try_clone_to_owned(),
            Fd::Shared(s) => s.try_clone(),
        }
    }
}

/// Nodes whose `O_PATH` descriptor is kept open between requests, at most this many: the
/// requests about one entry come in bursts (tar's create, chown, chmod, utimens, close), and
/// each would otherwise reopen it by handle.
const OPATH_CACHE: usize = 512;

pub struct Table {
    root: OwnedFd,
    pub root_dev: u64,
    pub root_ino: u64,
    root_mount_id: i32,
    nodes: RwLock<HashMap<u64, Arc<Node>>>,
    foreign: Mutex<HashMap<(u64, u64), u64>>,
    next_foreign: AtomicU64,
    /// Nodes removed by FORGET so far (see [`Table::forget`]).
    forgotten: AtomicU64,
    /// The nodes holding a cached `O_PATH` descriptor, oldest first (see [`OPATH_CACHE`]).
    opath_lru: Mutex<std::collections::VecDeque<std::sync::Weak<Node>>>,
}

impl Table {
    pub fn new(root: OwnedFd) -> SysResult<Table> {
        let st = nix::sys::stat::fstat(root.as_fd())?;
        let root_mount_id = match sys::handle_of(root.as_fd()) {
            Ok((_, m)) => m,
            Err(_) => -1,
        };
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_ID,
            Arc::new(Node {
                id: ROOT_ID,
                dev: st.st_dev,
                ino: st.st_ino,
                fmt: libc::S_IFDIR,
                reference: NodeRef::Root,
                // The root is never forgotten.
                nlookup: AtomicU64::new(1 << 62),
                name: Mutex::new((ROOT_ID, OsString::new())),
                diverted: AtomicBool::new(false),
                backing: Mutex::new(None),
                direct: std::sync::atomic::AtomicUsize::new(0),
                opath: Mutex::new(None),
                rel: Mutex::new(None),
                removed: Mutex::new(None),
                writers: Mutex::new(Writers::default()),
                no_caps: AtomicBool::new(false),
                session_closed: AtomicBool::new(false),
            }),
        );
        Ok(Table {
            root,
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            root_mount_id,
            nodes: RwLock::new(nodes),
            foreign: Mutex::new(HashMap::new()),
            next_foreign: AtomicU64::new(FOREIGN_BASE),
            forgotten: AtomicU64::new(0),
            opath_lru: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn get(&self, id: u64) -> SysResult<Arc<Node>> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or(Errno::ESTALE)
    }

    /// Existing node id for a backing object, if the kernel currently knows it.
    pub fn known(&self, dev: u64, ino: u64) -> Option<u64> {
        let id = self.id_for(dev, ino, false)?;
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes
            .get(&id)
            .filter(|n| n.dev == dev && n.ino == ino)
            .map(|n| n.id)
    }

    fn id_for(&self, dev: u64, ino: u64, allocate: bool) -> Option<u64> {
        if dev == self.root_dev {
            if ino == self.root_ino {
                return Some(ROOT_ID);
            }
            if ino != ROOT_ID && ino < FOREIGN_BASE {
                return Some(ino);
            }
        }
        let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = f.get(&(dev, ino)) {
            return Some(*id);
        }
        if !allocate {
            return None;
        }
        let id = self.next_foreign.fetch_add(1, Ordering::Relaxed);
        f.insert((dev, ino), id);
        Some(id)
    }

    /// A descriptor on the node: the root's own, or a new one opened with `flags`.
    pub fn open(&self, node: &Node, flags: OFlag) -> SysResult<Fd<'_>> {
        match &node.reference {
            NodeRef::Root if flags.contains(OFlag::O_PATH) => Ok(Fd::Borrowed(self.root.as_fd())),
            NodeRef::Root => Ok(Fd::Owned(nix::fcntl::openat(
                self.root.as_fd(),
                ".",
                flags | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?)),
            NodeRef::Handle(h) if flags == OFlag::O_PATH => {
                if let Some(fd) = node
                    .opath
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    return Ok(Fd::Shared(fd.clone()));
                }
                let fd = Arc::new(sys::open_by_handle(self.root.as_fd(), h, flags.bits())?);
                self.cache_opath(node, fd.clone());
                Ok(Fd::Shared(fd))
            }
            NodeRef::Handle(h) => Ok(Fd::Owned(sys::open_by_handle(
                self.root.as_fd(),
                h,
                flags.bits(),
            )?)),
            // Reopened through its /proc magic link, which O_NOFOLLOW would refuse (ELOOP);
            // the descriptor already names the object, so there is nothing to follow.
            NodeRef::Fd(fd) => Ok(Fd::Owned(nix::fcntl::open(
                sys::proc_path(fd.as_fd()).as_c_str(),
                (flags - OFlag::O_NOFOLLOW) | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?)),
        }
    }

    /// Keep `fd` as the cached `O_PATH` descriptor of `node`, closing the oldest beyond
    /// [`OPATH_CACHE`].
    fn cache_opath(&self, node: &Node, fd: Arc<OwnedFd>) {
        let Some(me) = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node.id)
            .map(Arc::downgrade)
        else {
            return;
        };
        *node.opath.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
        let evicted: Vec<std::sync::Weak<Node>> = {
            let mut q = self.opath_lru.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(me);
            let excess = q.len().saturating_sub(OPATH_CACHE);
            q.drain(..excess).collect()
        };
        for w in evicted {
            if let Some(n) = w.upgrade() {
                n.opath.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
    }

    /// Close the cached `O_PATH` descriptor of the object (`dev`, `ino`), if any: after it was
    /// removed for good (in a scratch tree), so its blocks are freed now.
    pub fn drop_opath(&self, dev: u64, ino: u64) {
        if let Some(n) = self.known(dev, ino).and_then(|id| self.get(id).ok()) {
            n.opath.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Count one kernel lookup of the object `fd` (an `O_PATH` descriptor on it, with stat `st`)
    /// reached as `name` in directory `parent`. Returns its node.
    pub fn remember(
        &self,
        parent: u64,
        name: &OsStr,
        fd: OwnedFd,
        st: &FileStat,
    ) -> SysResult<Arc<Node>> {
        let id = self
            .id_for(st.st_dev, st.st_ino, true)
            .ok_or(Errno::EOVERFLOW)?;
        let reference = if st.st_dev == self.root_dev && self.root_mount_id >= 0 {
            match sys::handle_of(fd.as_fd()) {
                Ok((h, m)) if m == self.root_mount_id => NodeRef::Handle(h),
                _ => NodeRef::Fd(fd),
            }
        } else {
            NodeRef::Fd(fd)
        };
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes.get(&id) {
            let same = n.dev == st.st_dev
                && n.ino == st.st_ino
                && n.fmt == st.st_mode & libc::S_IFMT
                && match (&n.reference, &reference) {
                    (NodeRef::Handle(a), NodeRef::Handle(b)) => a == b,
                    _ => true,
                };
            if same || id == ROOT_ID {
                n.nlookup.fetch_add(1, Ordering::Relaxed);
                if id != ROOT_ID {
                    n.set_name(parent, name);
                }
                return Ok(n.clone());
            }
        }
        // New, or the inode number was reused by a new object after the old one was removed
        // (rmdir frees inodes): the new object takes over the id and its lookup count.
        let carried = nodes
            .get(&id)
            .map(|n| n.nlookup.load(Ordering::Relaxed))
            .unwrap_or(0);
        let node = Arc::new(Node {
            id,
            dev: st.st_dev,
            ino: st.st_ino,
            fmt: st.st_mode & libc::S_IFMT,
            reference,
            nlookup: AtomicU64::new(carried + 1),
            name: Mutex::new((parent, name.to_owned())),
            diverted: AtomicBool::new(false),
            backing: Mutex::new(None),
            direct: std::sync::atomic::AtomicUsize::new(0),
            opath: Mutex::new(None),
            rel: Mutex::new(None),
            removed: Mutex::new(None),
            writers: Mutex::new(Writers::default()),
            no_caps: AtomicBool::new(false),
            session_closed: AtomicBool::new(false),
        });
        nodes.insert(id, node.clone());
        Ok(node)
    }

    /// The kernel forgot `n` lookups of `id`.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let gone = match nodes.get(&id) {
            Some(node) => {
                let prev = node.nlookup.load(Ordering::Relaxed);
                let left = prev.saturating_sub(n);
                node.nlookup.store(left, Ordering::Relaxed);
                left == 0
            }
            None => false,
        };
        if gone {
            let removed = nodes.remove(&id);
            if let Some(node) = &removed {
                if node.dev != self.root_dev || node.ino == ROOT_ID || node.ino >= FOREIGN_BASE {
                    self.foreign
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(node.dev, node.ino));
                }
            }
            // Dropping a node may close its passthrough registration, and with it the last
            // reference to an unlinked file, whose blocks the filesystem then frees: not while
            // every other request waits for the table.
            drop(nodes);
            drop(removed);
            // After many forgets (the kernel dropping its inode cache), give the memory back:
            // the map keeps its capacity and malloc keeps freed small blocks otherwise, so the
            // daemon's resident size would stay at its peak.
            let n = self.forgotten.fetch_add(1, Ordering::Relaxed) + 1;
            if n % TRIM_EVERY == 0 {
                {
                    let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
                    if nodes.len() < nodes.capacity() / 4 {
                        nodes.shrink_to_fit();
                    }
                }
                trim_heap();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
