//! The store directory `<project>/.saferoot/`: its creation and markers, the trash, and the
//! content-addressed object store.
//!
//! Layout (version 1, see `docs/on-disk-format.md`):
//!
//! ```text
//! .saferoot/
//!   format                 "saferoot-store 1"
//!   .git/                  minimal repository marker: `git clean -fdx` skips nested repositories
//!   journal                see journal.rs
//!   index                  blake3 of trash items, see index.rs
//!   trash/<UTC second>Z[.N]/<original relative path>
//!   objects/<2 hex>/<62 hex>
//!   tmp/                   staging for objects
//! ```
//!
//! Moving a file into the trash is one `renameat2(RENAME_NOREPLACE)` on the same filesystem: the
//! cost does not depend on the file's size, and mode, mtime and inode are kept. A person can find
//! a deleted file with `ls .saferoot/trash/*/path/to/file`.
//!
//! What this module does not do: journal (callers journal after the bytes are safe), hash on the
//! request path (see index.rs), or know which operations need diverting (the FUSE layer decides).

use crate::journal::Journal;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Name of the store directory inside the project.
pub const STORE_DIR: &str = ".saferoot";
pub const FORMAT_FILE: &str = "format";
pub const FORMAT: &str = "saferoot-store 1\n";
pub const TRASH_DIR: &str = "trash";
pub const OBJECTS_DIR: &str = "objects";
pub const TMP_DIR: &str = "tmp";

/// How many same-second buckets to try before giving up on a trash name.
const MAX_BUCKETS: u32 = 100_000;

pub struct Store {
    project: OwnedFd,
    project_path: PathBuf,
    dir: OwnedFd,
    dir_path: PathBuf,
    journal: Journal,
    /// Trash directories known to exist (relative to the store), to skip `mkdir` calls.
    made_dirs: Mutex<HashSet<PathBuf>>,
    /// Per second: the bucket to start from for a relative path deleted again in that second.
    buckets: Mutex<(String, HashMap<PathBuf, u32>)>,
    /// blake3 of files by (dev, ino), valid while their CacheKey is unchanged.
    hash_cache: Mutex<HashMap<(u64, u64), (CacheKey, String)>>,
    tmp_seq: std::sync::atomic::AtomicU64,
    /// `.saferoot/lock`, held shared (`flock`) while this store is open; `gc` and `trash
    /// purge` hold it exclusive while they rewrite the journal and delete ([`Store::exclusive`]).
    lock: OwnedFd,
    /// Objects this process just named (a pre-image about to be journaled): collection must
    /// leave them alone even though no record refers to them yet ([`Store::remove_object`]).
    pinned: Mutex<HashMap<String, std::time::Instant>>,
    /// Bytes added to the trash and the object store since the store was opened (for the
    /// daemon's automatic collection when the size cap is crossed).
    added: std::sync::atomic::AtomicU64,
    /// The append handle of `.saferoot/index`, opened on first use ([`crate::index`]). Appends
    /// and the rewrite that drops the entries of collected items both hold this lock, so `gc`
    /// in the daemon can prune while the indexer thread appends, and no entry is written into
    /// a file the rewrite has just replaced.
    index: Mutex<Option<std::fs::File>>,
}

/// A pinned object stays uncollectable this long after it was named.
const PIN_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// The lock file in the store.
pub const LOCK_FILE: &str = "lock";

/// The store held exclusively (see [`Store::exclusive`]); back to shared when dropped.
pub struct Exclusive<'a>(&'a Store);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor this store owns.
        unsafe { libc::flock(self.0.lock.as_raw_fd(), libc::LOCK_SH) };
    }
}

/// Reject absolute paths, `..`, and empty paths: every path the store handles is inside the
/// project.
pub fn check_relative(rel: &Path) -> Result<()> {
    if rel.as_os_str().is_empty() {
        return Err(Error::Invalid("empty path".into()));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "path {} is not a plain relative path",
                    rel.display()
                )))
            }
        }
    }
    Ok(())
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &Path, shown: &Path) -> Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", shown, e))
}

fn mkdir_ok_if_exists(dir: BorrowedFd<'_>, name: &Path, mode: u32, shown: &Path) -> Result<()> {
    match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::io("mkdir", shown, e)),
    }
}

fn write_file_at(dir: BorrowedFd<'_>, name: &str, data: &[u8], shown: &Path) -> Result<()> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &shown.join(name), e))?;
    std::fs::File::from(fd)
        .write_all(data)
        .map_err(|e| Error::Io {
            op: "write",
            path: shown.join(name),
            cause: e,
        })
}

fn read_small_at(dir: BorrowedFd<'_>, name: &str) -> std::result::Result<Vec<u8>, Errno> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(v)
}

/// UTC second of `t_ns` as used in trash bucket names: `2026-12-03T12:40:01Z`.
pub fn trash_stamp(t_ns: i64) -> String {
    let secs = t_ns.div_euclid(1_000_000_000);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    /// Open the store of the project directory `project` (an fd on the real directory, never
    /// the mount), creating it and its markers if it does not exist yet.
    pub fn open_or_create(project: BorrowedFd<'_>, project_path: &Path) -> Result<Store> {
        let dir_path = project_path.join(STORE_DIR);
        match nix::sys::stat::mkdirat(project, STORE_DIR, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                let dir = open_dir_at(project, Path::new(STORE_DIR), &dir_path)?;
                init_layout(dir.as_fd(), &dir_path)?;
                exclude_from_enclosing_git(project_path);
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io("create store", &dir_path, e)),
        }
        Self::open_existing(project, project_path)?.ok_or_else(|| {
            Error::Invalid(format!(
                "store {} vanished while opening",
                dir_path.display()
            ))
        })
    }

    /// Open the store if the project has one; `Ok(None)` if it has none.
    pub fn open_existing(project: BorrowedFd<'_>, project_path: &Path) -> Result<Option<Store>> {
        let dir_path = project_path.join(STORE_DIR);
        let dir = match nix::fcntl::openat(
            project,
            STORE_DIR,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::io("open store", &dir_path, e)),
        };
        match read_small_at(dir.as_fd(), FORMAT_FILE) {
            Ok(v) if v == FORMAT.as_bytes() => {}
            Ok(v) => {
                return Err(Error::Format {
                    path: dir_path.join(FORMAT_FILE),
                    what: format!(
                        "unsupported store format {:?} (this saferoot reads {:?})",
                        String::from_utf8_lossy(&v).trim(),
                        FORMAT.trim()
                    ),
                })
            }
            // A store whose creation was interrupted before the format file: finish it.
            Err(Errno::ENOENT) => init_layout(dir.as_fd(), &dir_path)?,
            Err(e) => return Err(Error::io("read", &dir_path.join(FORMAT_FILE), e)),
        }
        let lock = nix::fcntl::openat(
            dir.as_fd(),
            LOCK_FILE,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io("open", &dir_path.join(LOCK_FILE), e))?;
        // Shared: only `gc` and `trash purge` exclude the others, briefly.
        // SAFETY: flock on a descriptor we own.
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) } != 0 {
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(Error::io("lock", &dir_path.join(LOCK_FILE), e));
            }
        }
        let journal = Journal::open(dir.as_fd(), &dir_path)?;
        let hash_cache = crate::hashcache::load(dir.as_fd());
        let project = project.try_clone_to_owned().map_err(|e| Error::Io {
            op: "dup project fd",
            path: project_path.to_owned(),
            cause: e,
        })?;
        Ok(Some(Store {
            project,
            project_path: project_path.to_owned(),
            dir,
            dir_path,
            journal,
            made_dirs: Mutex::new(HashSet::new()),
            buckets: Mutex::new((String::new(), HashMap::new())),
            hash_cache: Mutex::new(hash_cache),
            tmp_seq: std::sync::atomic::AtomicU64::new(0),
            lock,
            pinned: Mutex::new(HashMap::new()),
            added: std::sync::atomic::AtomicU64::new(0),
            index: Mutex::new(None),
        }))
    }

    /// The index's append handle and its lock (see the field).
    pub(crate) fn index_handle(&self) -> &Mutex<Option<std::fs::File>> {
        &self.index
    }

    /// Hold the store exclusively: no other process has it open (each open store holds the
    /// lock shared). Fails at once, with a message for people, if another does.
    pub fn exclusive(&self) -> Result<Exclusive<'_>> {
        // SAFETY: flock on a descriptor this store owns.
        if unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Exclusive(self));
        }
        let e = Errno::last();
        // A failed conversion may have dropped the shared lock: take it again.
        // SAFETY: as above.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_SH) };
        if e == Errno::EWOULDBLOCK {
            return Err(Error::Invalid(
                "another saferoot command is using the store (a restore, snapshot, log or \
                 status); try again when it is done"
                    .into(),
            ));
        }
        Err(Error::io("lock", &self.dir_path.join(LOCK_FILE), e))
    }

    /// Keep the object `hex` from being collected for a while: it is about to be journaled.
    fn pin(&self, hex: &str) {
        let mut p = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() > 4096 {
            p.retain(|_, at| at.elapsed() < PIN_FOR);
        }
        p.insert(hex.to_owned(), std::time::Instant::now());
    }

    /// Delete the object `hex` unless it was pinned lately (a record about to refer to it).
    /// Returns the bytes freed, `None` if it was kept or absent.
    pub fn remove_object(&self, hex: &str) -> Option<u64> {
        self.remove_object_pinned_before(hex, PIN_FOR)
    }

    /// How long ago this process pinned `hex`, if it did within [`PIN_FOR`].
    pub fn pinned_since(&self, hex: &str) -> Option<std::time::Duration> {
        let p = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        p.get(hex).map(|at| at.elapsed()).filter(|e| *e < PIN_FOR)
    }

    /// Delete the object `hex` unless it was pinned less than `within` ago (`trash purge`: the
    /// user wants it gone, and a pin older than that is not a record still on its way). The
    /// check and the unlink happen under the pin lock. Returns the bytes freed, `None` if it
    /// was kept or absent.
    pub fn remove_object_pinned_before(
        &self,
        hex: &str,
        within: std::time::Duration,
    ) -> Option<u64> {
        let mut p = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if p.get(hex).is_some_and(|at| at.elapsed() < within) {
            return None;
        }
        p.remove(hex);
        let rel = object_rel(hex);
        let st =
            nix::sys::stat::fstatat(self.dir.as_fd(), &rel, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        nix::unistd::unlinkat(
            self.dir.as_fd(),
            &rel,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .ok()?;
        Some(st.st_blocks as u64 * 512)
    }

    /// `hex` was named by this process a moment ago and is about to be journaled: collection
    /// leaves it alone ([`Store::remove_object`]).
    pub fn is_pinned(&self, hex: &str) -> bool {
        self.pinned_since(hex).is_some()
    }

    /// Bytes added to the trash and objects since the store was opened.
    pub fn added_bytes(&self) -> u64 {
        self.added.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forget which directories were made (collection removed some).
    pub fn forget_made_dirs(&self) {
        self.made_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The store directory.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The real project directory (never the mount).
    pub fn project(&self) -> BorrowedFd<'_> {
        self.project.as_fd()
    }

    pub fn dir_path(&self) -> &Path {
        &self.dir_path
    }

    pub fn project_path(&self) -> &Path {
        &self.project_path
    }

    /// Make `rel_dir` (relative to the store) and its parents exist.
    fn make_dirs(&self, rel_dir: &Path) -> Result<()> {
        if self
            .made_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(rel_dir)
        {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for c in rel_dir.components() {
            cur.push(c);
            if self
                .made_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&cur)
            {
                continue;
            }
            match nix::sys::stat::mkdirat(self.dir.as_fd(), &cur, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::io("mkdir in trash", &self.dir_path.join(&cur), e)),
            }
            self.made_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(cur.clone());
        }
        Ok(())
    }

    /// Move the entry `name` of directory `parent` (whose project-relative path is `rel`) into
    /// the trash bucket of instant `t_ns`, by rename. Returns its path relative to the store.
    ///
    /// Works for every file type, directories included (a whole subtree moves in one rename).
    /// Fails, leaving the entry where it was, if the rename cannot be done (e.g. the entry is
    /// on another filesystem: EXDEV).
    pub fn divert_to_trash(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        t_ns: i64,
    ) -> Result<PathBuf> {
        self.place_in_trash(rel, t_ns, |dir, leaf| {
            nix::fcntl::renameat2(parent, name, dir, leaf, RenameFlags::RENAME_NOREPLACE)
        })
    }

    /// Give the (non-directory) entry `name` of `parent` a second name in the trash, by hard
    /// link: O(1), and the entry stays where it is. Used before a rename replaces it, so that a
    /// crash at any point leaves both the name and the bytes in place. Returns the trash path
    /// relative to the store.
    pub fn link_into_trash(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        t_ns: i64,
    ) -> Result<PathBuf> {
        self.place_in_trash(rel, t_ns, |dir, leaf| {
            nix::unistd::linkat(parent, name, dir, leaf, AtFlags::empty())
        })
    }

    /// Remove a trash name this process just made and no record refers to (an operation that
    /// failed after keeping its bytes). Only a name, never the last link of kept bytes.
    pub fn unlink_trash_name(&self, trash_rel: &Path) {
        let _ = nix::unistd::unlinkat(
            self.dir.as_fd(),
            trash_rel,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Put a copy of the symlink, fifo, socket or device node `name` of `parent` (stat `st`)
    /// into the trash, for one that has other hard links and so cannot be moved there (its
    /// other names must keep their link count). The copy has the same type, mode, target or
    /// device number, owner and mtime. Returns its path relative to the store.
    pub fn copy_special_to_trash(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &nix::sys::stat::FileStat,
        t_ns: i64,
    ) -> Result<PathBuf> {
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFREG || fmt == libc::S_IFDIR {
            return Err(Error::Invalid(format!(
                "{} is not a special file",
                rel.display()
            )));
        }
        let target = if fmt == libc::S_IFLNK {
            Some(
                nix::fcntl::readlinkat(parent, name)
                    .map_err(|e| Error::io("readlink", &self.project_path.join(rel), e))?,
            )
        } else {
            None
        };
        self.place_in_trash(rel, t_ns, |dir, leaf| {
            match &target {
                Some(t) => nix::unistd::symlinkat(t.as_os_str(), dir, leaf)?,
                None => {
                    let cleaf =
                        std::ffi::CString::new(leaf.as_bytes()).map_err(|_| Errno::EINVAL)?;
                    // SAFETY: a valid C string; mknodat only creates the node.
                    let r = unsafe {
                        libc::mknodat(
                            dir.as_raw_fd(),
                            cleaf.as_ptr(),
                            st.st_mode as libc::mode_t,
                            st.st_rdev as libc::dev_t,
                        )
                    };
                    if r != 0 {
                        return Err(Errno::last());
                    }
                }
            }
            let _ = nix::unistd::fchownat(
                dir,
                leaf,
                Some(nix::unistd::Uid::from_raw(st.st_uid)),
                Some(nix::unistd::Gid::from_raw(st.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            let atime = nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec);
            let mtime = nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
            let _ = nix::sys::stat::utimensat(
                dir,
                leaf,
                &atime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
            Ok(())
        })
    }

    /// Find a trash bucket of instant `t_ns` whose container for `rel` is free at `rel`'s
    /// name, and let `place` create the item there (failing with EEXIST if the name is taken).
    fn place_in_trash(
        &self,
        rel: &Path,
        t_ns: i64,
        mut place: impl FnMut(BorrowedFd<'_>, &OsStr) -> std::result::Result<(), Errno>,
    ) -> Result<PathBuf> {
        check_relative(rel)?;
        let leaf = rel
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} has no file name", rel.display())))?;
        let stamp = trash_stamp(t_ns);
        let start = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if b.0 != stamp {
                b.0 = stamp.clone();
                b.1.clear();
            }
            b.1.get(rel).copied().unwrap_or(0)
        };
        for n in start..MAX_BUCKETS {
            let bucket = if n == 0 {
                stamp.clone()
            } else {
                format!("{stamp}.{n}")
            };
            let dest = Path::new(TRASH_DIR).join(&bucket).join(rel);
            let container = dest.parent().unwrap_or(Path::new(TRASH_DIR));
            let Some(dir) = self.container(container)? else {
                // Something that is not one of our containers is in the way (e.g. an item
                // trashed this second under one of rel's parent names): next bucket.
                continue;
            };
            match place(dir.as_fd(), leaf) {
                Ok(()) => {
                    if let Ok(st) =
                        nix::sys::stat::fstatat(dir.as_fd(), leaf, AtFlags::AT_SYMLINK_NOFOLLOW)
                    {
                        self.added.fetch_add(
                            st.st_blocks as u64 * 512,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
                    if b.0 == stamp {
                        b.1.insert(rel.to_owned(), n + 1);
                    }
                    return Ok(dest);
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(Error::io("move to trash", &self.project_path.join(rel), e)),
            }
        }
        Err(Error::io(
            "move to trash",
            &self.project_path.join(rel),
            Errno::ENOSPC,
        ))
    }

    /// Open the trash container directory `rel_dir` (relative to the store, starting with
    /// `trash/`), creating what is missing, one component at a time and never following a
    /// symlink. Every component below `trash/` must be a directory this store created as a
    /// container: anything else already there — an item moved to the trash (whatever its type:
    /// a trashed symlink must never be followed, a trashed directory must never receive later
    /// items), or another process's container — is a conflict, and `Ok(None)` tells the caller
    /// to use another bucket.
    fn container(&self, rel_dir: &Path) -> Result<Option<OwnedFd>> {
        let shown = |p: &Path| self.dir_path.join(p);
        let mut comps = rel_dir.components();
        if comps.next() != Some(Component::Normal(OsStr::new(TRASH_DIR))) {
            return Err(Error::Invalid(format!(
                "{} is not in the trash",
                rel_dir.display()
            )));
        }
        let nofollow = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut fd = nix::fcntl::openat(self.dir.as_fd(), TRASH_DIR, nofollow, Mode::empty())
            .map_err(|e| Error::io("open", &shown(Path::new(TRASH_DIR)), e))?;
        let mut cur = PathBuf::from(TRASH_DIR);
        for c in comps {
            cur.push(c);
            {
                // Held across check, mkdir and insert, so two threads filling the same new
                // container do not see each other's directory as a conflict.
                let mut made = self.made_dirs.lock().unwrap_or_else(|p| p.into_inner());
                if !made.contains(&cur) {
                    match nix::sys::stat::mkdirat(
                        fd.as_fd(),
                        c.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    ) {
                        Ok(()) => {
                            made.insert(cur.clone());
                        }
                        Err(Errno::EEXIST) => return Ok(None),
                        Err(e) => return Err(Error::io("mkdir in trash", &shown(&cur), e)),
                    }
                }
            }
            fd = match nix::fcntl::openat(fd.as_fd(), c.as_os_str(), nofollow, Mode::empty()) {
                Ok(f) => f,
                // Replaced or removed behind our back (by hand, or by retention).
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) | Err(Errno::ENOENT) => {
                    self.made_dirs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&cur);
                    return Ok(None);
                }
                Err(e) => return Err(Error::io("open", &shown(&cur), e)),
            };
        }
        Ok(Some(fd))
    }

    /// Copy the content of the open regular file `src` into the object store, named by its
    /// blake3. Returns the hex hash. The copy is made first and the copy is what gets hashed,
    /// so an object's name always matches its bytes even if `src` changes meanwhile. The copy
    /// is a reflink where the filesystem supports it, `copy_file_range` otherwise; a copy whose
    /// object already exists is dropped.
    pub fn put_object(&self, src: BorrowedFd<'_>) -> Result<String> {
        self.make_dirs(Path::new(TMP_DIR))?;
        let tmp_rel = Path::new(TMP_DIR).join(format!(
            "obj.{}.{}.{}",
            std::process::id(),
            crate::now_ns(),
            self.tmp_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let dst = nix::fcntl::openat(
            self.dir.as_fd(),
            &tmp_rel,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o400),
        )
        .map_err(|e| Error::io("create object", &self.dir_path.join(&tmp_rel), e))?;
        let unlink_tmp = || {
            let _ = nix::unistd::unlinkat(
                self.dir.as_fd(),
                &tmp_rel,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        };
        let hashed = clone_or_copy(src, dst.as_fd()).and_then(|()| hash_fd(dst.as_fd()));
        let hash = match hashed {
            Ok(h) => h,
            Err(e) => {
                unlink_tmp();
                return Err(Error::io("copy into the object store", &self.dir_path, e));
            }
        };
        let hex = hash.to_hex().to_string();
        let rel = object_rel(&hex);
        if let Err(e) = self.make_dirs(rel.parent().unwrap_or(Path::new(OBJECTS_DIR))) {
            unlink_tmp();
            return Err(e);
        }
        self.pin(&hex);
        let placed = nix::unistd::fsync(dst.as_fd()).and_then(|()| {
            nix::fcntl::renameat2(
                self.dir.as_fd(),
                &tmp_rel,
                self.dir.as_fd(),
                &rel,
                RenameFlags::RENAME_NOREPLACE,
            )
        });
        match placed {
            Ok(()) => {
                if let Ok(st) = nix::sys::stat::fstat(dst.as_fd()) {
                    self.added.fetch_add(
                        st.st_blocks as u64 * 512,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                Ok(hex)
            }
            Err(Errno::EEXIST) => {
                unlink_tmp();
                Ok(hex)
            }
            Err(e) => {
                unlink_tmp();
                Err(Error::io("store object", &self.dir_path.join(&rel), e))
            }
        }
    }

    /// Does the object store hold `hex`?
    pub fn has_object(&self, hex: &str) -> bool {
        hex.len() == 64
            && nix::sys::stat::fstatat(
                self.dir.as_fd(),
                &object_rel(hex),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
    }

    /// The blake3 of a file, if it was hashed before and has not changed since (same inode,
    /// size, mtime and ctime).
    pub fn cached_hash(&self, st: &nix::sys::stat::FileStat) -> Option<String> {
        let c = self.hash_cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(st.st_dev, st.st_ino))
            .filter(|e| e.0 == CacheKey::of(st))
            .map(|e| e.1.clone())
    }

    /// The cache itself, to persist it (hashcache.rs).
    pub(crate) fn hash_cache(&self) -> &Mutex<crate::hashcache::Map> {
        &self.hash_cache
    }

    pub fn remember_hash(&self, st: &nix::sys::stat::FileStat, hex: &str) {
        let mut c = self.hash_cache.lock().unwrap_or_else(|p| p.into_inner());
        c.insert((st.st_dev, st.st_ino), (CacheKey::of(st), hex.to_owned()));
    }

    /// Keep the current bytes of the open regular file `fd` (with stat `st`) before they are
    /// changed: returns the object holding them. Nothing is read or copied when the file is
    /// unchanged since it was last kept.
    pub fn preimage(&self, fd: BorrowedFd<'_>, st: &nix::sys::stat::FileStat) -> Result<String> {
        if let Some(h) = self.cached_hash(st) {
            // Pinned before it is looked at: collection either leaves it or is done with it.
            self.pin(&h);
            if self.has_object(&h) {
                return Ok(h);
            }
        }
        let h = self.put_object(fd)?;
        // Remember the hash only if the file did not change while we copied it, and only if
        // its ctime is old enough that a write in the same timestamp tick (which would leave
        // size, mtime and ctime as they are) cannot still come: otherwise the next pre-image
        // would wrongly reuse this object and lose the version in between.
        if let Ok(after) = nix::sys::stat::fstat(fd) {
            let key = CacheKey::of(st);
            if CacheKey::of(&after) == key && crate::now_ns() - key.ctime_ns > RACY_NS {
                self.remember_hash(st, &h);
            }
        }
        Ok(h)
    }
}

/// A file changed less than this long ago may change again without its timestamps moving
/// (coarse timestamp granularity): its hash is not cached.
pub const RACY_NS: i64 = 100_000_000;

/// What must be unchanged for a cached hash to still describe a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheKey {
    pub size: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl CacheKey {
    pub fn of(st: &nix::sys::stat::FileStat) -> CacheKey {
        CacheKey {
            size: st.st_size,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        }
    }
}

/// `objects/ab/cdef…` for a hex hash.
pub fn object_rel(hex: &str) -> PathBuf {
    // Names come from journal records too: never slice past the end or inside a character.
    match (hex.get(..2), hex.get(2..)) {
        (Some(a), Some(b)) if !b.is_empty() => Path::new(OBJECTS_DIR).join(a).join(b),
        _ => Path::new(OBJECTS_DIR).join("invalid").join(hex),
    }
}

/// blake3 of everything readable from `fd` (from offset 0, with pread).
pub fn hash_fd(fd: BorrowedFd<'_>) -> std::result::Result<blake3::Hash, Errno> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    hash_into(fd, &mut h, &mut buf)?;
    Ok(h.finalize())
}

/// blake3 of the first `n` bytes of `fd`, as if it were zero-filled past its end (as
/// `ftruncate` would extend it).
pub fn hash_prefix(fd: BorrowedFd<'_>, n: u64) -> std::result::Result<blake3::Hash, Errno> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let end = i64::try_from(n).map_err(|_| Errno::EFBIG)?;
    let got = hash_read(fd, &mut h, &mut buf, 0, end)?;
    feed_zeros(&mut h, (end - got) as u64);
    Ok(h.finalize())
}

/// Feed the bytes of the regular file `fd`, from offset 0 to its end, into `h`; returns how
/// many. The holes of a sparse file (one with fewer blocks than its size, the test `cp` uses)
/// are fed as zeros without being read: hashing a 10 GiB disk image that holds 100 MB of data
/// reads 100 MB. `EINTR` is retried.
pub fn hash_into(
    fd: BorrowedFd<'_>,
    h: &mut blake3::Hasher,
    buf: &mut [u8],
) -> std::result::Result<u64, Errno> {
    let st = nix::sys::stat::fstat(fd)?;
    let mut off: i64 = 0;
    if st.st_blocks.saturating_mul(512) < st.st_size {
        loop {
            let data = match nix::unistd::lseek(fd, off, nix::unistd::Whence::SeekData) {
                Ok(d) => d,
                // No data after off: the rest, up to the end, is a hole.
                Err(Errno::ENXIO) => {
                    let end = nix::sys::stat::fstat(fd)?.st_size.max(off);
                    feed_zeros(h, (end - off) as u64);
                    return Ok(end as u64);
                }
                Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => break, // no SEEK_DATA: read it all
                Err(e) => return Err(e),
            };
            feed_zeros(h, (data - off) as u64);
            off = data;
            let hole = match nix::unistd::lseek(fd, data, nix::unistd::Whence::SeekHole) {
                Ok(hole) => hole,
                Err(Errno::ENXIO) => return Ok(off as u64), // shrank meanwhile
                Err(e) => return Err(e),
            };
            let end = hash_read(fd, h, buf, off, hole)?;
            if end < hole {
                return Ok(end as u64); // shrank meanwhile
            }
            off = hole;
        }
    }
    hash_read(fd, h, buf, off, i64::MAX).map(|end| end as u64)
}

/// Read `fd` from `off` up to `end` (or its end of file) into `h`; returns where it stopped.
fn hash_read(
    fd: BorrowedFd<'_>,
    h: &mut blake3::Hasher,
    buf: &mut [u8],
    mut off: i64,
    end: i64,
) -> std::result::Result<i64, Errno> {
    while off < end {
        let want = usize::try_from(end - off).map_or(buf.len(), |n| n.min(buf.len()));
        match nix::sys::uio::pread(fd, &mut buf[..want], off) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                off += n as i64;
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// `n` zero bytes into `h`.
fn feed_zeros(h: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Make `dst` (empty, writable) hold the same bytes as `src`: FICLONE first (O(1) on btrfs, XFS,
/// bcachefs), else a copy of the data extents only, so that a sparse file (a VM image, a
/// `truncate -s 10G` file) stays sparse in the store instead of filling the disk with zeros.
/// Each extent goes through `copy_file_range` (in-kernel), falling back to read/write. Bytes
/// appended to `src` after the copy started are left out: the copy is what gets hashed.
pub fn clone_or_copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are valid for the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    let st = nix::sys::stat::fstat(src)?;
    let size = st.st_size;
    let mut copier = Copier {
        use_cfr: true,
        buf: Vec::new(),
    };
    // Only a file with fewer blocks than its size can have holes (the test `cp` uses): any
    // other is copied straight to its end, without trusting SEEK_DATA/SEEK_HOLE, which some
    // filesystems have got wrong for data not yet written back.
    if st.st_blocks.saturating_mul(512) >= size {
        copier.range(src, dst, 0, i64::MAX)?;
        return Ok(());
    }
    let mut off = 0i64;
    while off < size {
        // The next data extent [data, hole); a filesystem without SEEK_DATA has one, all of it.
        let data = match nix::unistd::lseek(src, off, nix::unistd::Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break, // only a hole up to the end
            Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => off,
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = match nix::unistd::lseek(src, data, nix::unistd::Whence::SeekHole) {
            Ok(h) => h.min(size),
            Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENXIO) => size,
            Err(e) => return Err(e),
        };
        if hole <= data {
            break;
        }
        if copier.range(src, dst, data, hole - data)? {
            // src shrank under us: what was copied is the copy.
            return Ok(());
        }
        off = hole;
    }
    // The holes up to the size (a trailing hole has no extent to copy), unless the file shrank
    // meanwhile: then its new end.
    let now = nix::sys::stat::fstat(src)?.st_size;
    nix::unistd::ftruncate(dst, size.min(now))
}

/// Copies byte ranges between two files at the same offsets.
struct Copier {
    use_cfr: bool,
    buf: Vec<u8>,
}

impl Copier {
    /// Copy `len` bytes at `off`; true if `src` ended before that (it shrank).
    fn range(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        off: i64,
        len: i64,
    ) -> std::result::Result<bool, Errno> {
        let (mut off_in, mut off_out) = (off, off);
        let end = off.saturating_add(len);
        while off_in < end {
            let want = (end - off_in).min(1 << 30) as usize;
            if self.use_cfr {
                // SAFETY: offsets are valid pointers to i64 for the duration of the call.
                let n = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut off_in,
                        dst.as_raw_fd(),
                        &mut off_out,
                        want,
                        0,
                    )
                };
                if n > 0 {
                    continue;
                }
                if n == 0 {
                    return Ok(true);
                }
                let e = Errno::last();
                if matches!(
                    e,
                    Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP
                ) {
                    self.use_cfr = false;
                    self.buf.resize(1 << 16, 0);
                    continue;
                }
                if e == Errno::EINTR {
                    continue;
                }
                return Err(e);
            }
            let chunk = want.min(self.buf.len());
            let n = nix::sys::uio::pread(src, &mut self.buf[..chunk], off_in)?;
            if n == 0 {
                return Ok(true);
            }
            let mut done = 0;
            while done < n {
                done += nix::sys::uio::pwrite(dst, &self.buf[done..n], off_out + done as i64)?;
            }
            off_in += n as i64;
            off_out += n as i64;
        }
        Ok(false)
    }
}

fn init_layout(dir: BorrowedFd<'_>, dir_path: &Path) -> Result<()> {
    for d in [TRASH_DIR, OBJECTS_DIR, TMP_DIR] {
        mkdir_ok_if_exists(dir, Path::new(d), 0o700, &dir_path.join(d))?;
    }
    // A nested repository marker: `git clean -fdx` (even with -x) leaves nested repositories
    // alone unless given -f twice. It needs HEAD, objects/ and refs/ to be recognised.
    let git = Path::new(".git");
    mkdir_ok_if_exists(dir, git, 0o700, &dir_path.join(git))?;
    mkdir_ok_if_exists(dir, &git.join("objects"), 0o700, dir_path)?;
    mkdir_ok_if_exists(dir, &git.join("refs"), 0o700, dir_path)?;
    let gitdir = open_dir_at(dir, git, &dir_path.join(git))?;
    write_file_at(
        gitdir.as_fd(),
        "HEAD",
        b"ref: refs/heads/main\n",
        &dir_path.join(git),
    )?;
    write_file_at(
        gitdir.as_fd(),
        "description",
        b"Marker only: makes `git clean` treat saferoot's store as a nested repository and keep it.\n",
        &dir_path.join(git),
    )?;
    write_file_at(dir, ".gitignore", b"*\n", dir_path)?;
    // Written last: its presence says the layout is complete.
    write_file_at(dir, FORMAT_FILE, FORMAT.as_bytes(), dir_path)?;
    let _ = nix::unistd::fsync(dir);
    Ok(())
}

/// If the project is inside a git work tree, add the store to that repository's
/// `info/exclude` so `git status` and `git add -A` ignore it. Best effort: a project that is
/// not in a repository, or an unusual repository layout, is left alone.
fn exclude_from_enclosing_git(project_path: &Path) {
    let Ok(project) = project_path.canonicalize() else {
        return;
    };
    for top in project.ancestors() {
        let dotgit = top.join(".git");
        let Ok(meta) = std::fs::symlink_metadata(&dotgit) else {
            continue;
        };
        let gitdir = if meta.is_dir() {
            dotgit
        } else if let Ok(s) = std::fs::read_to_string(&dotgit) {
            // A worktree or submodule: ".git" is a file "gitdir: <path>".
            let Some(p) = s.trim().strip_prefix("gitdir:") else {
                return;
            };
            let p = top.join(p.trim());
            match std::fs::read_to_string(p.join("commondir")) {
                Ok(c) => p.join(c.trim()),
                Err(_) => p,
            }
        } else {
            return;
        };
        let Ok(rel) = project.strip_prefix(top) else {
            return;
        };
        let mut pattern = b"/".to_vec();
        if !rel.as_os_str().is_empty() {
            pattern.extend_from_slice(rel.as_os_str().as_bytes());
            pattern.push(b'/');
        }
        pattern.extend_from_slice(STORE_DIR.as_bytes());
        pattern.extend_from_slice(b"/\n");
        let exclude = gitdir.join("info").join("exclude");
        let existing = std::fs::read(&exclude).unwrap_or_default();
        if existing
            .split(|&c| c == b'\n')
            .any(|l| l == &pattern[..pattern.len() - 1])
        {
            return;
        }
        let _ = std::fs::create_dir_all(gitdir.join("info"));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&exclude)
        {
            let mut line = Vec::new();
            if !existing.is_empty() && !existing.ends_with(b"\n") {
                line.push(b'\n');
            }
            line.extend_from_slice(
                b"# saferoot's store (history of deleted and overwritten files)\n",
            );
            line.extend_from_slice(&pattern);
            let _ = f.write_all(&line);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn setup() -> (tempfile::TempDir, OwnedFd, Store) {
        let t = tempfile::tempdir().unwrap();
        let fd: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let s = Store::open_or_create(fd.as_fd(), t.path()).unwrap();
        (t, fd, s)
    }

    #[test]
    fn sparse_files_hash_like_their_bytes() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sparse");
        let f = std::fs::File::create_new(&p).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 1 << 22).unwrap();
        f.set_len((1 << 23) + 5).unwrap(); // a trailing hole
        let mut dense = vec![0u8; (1 << 23) + 5];
        dense[..4].copy_from_slice(b"head");
        dense[1 << 22..(1 << 22) + 6].copy_from_slice(b"middle");
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(hash_fd(f.as_fd()).unwrap(), blake3::hash(&dense));
        let empty = t.path().join("empty");
        std::fs::File::create_new(&empty)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let e = std::fs::File::open(&empty).unwrap();
        assert_eq!(
            hash_fd(e.as_fd()).unwrap(),
            blake3::hash(&vec![0u8; 1 << 20])
        );
    }

    #[test]
    fn copies_keep_sparse_files_sparse() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let src_path = t.path().join("sparse");
        let src = std::fs::File::create_new(&src_path).unwrap();
        let gib = 1u64 << 30;
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"middle", 3 * gib).unwrap();
        src.set_len(6 * gib).unwrap(); // a trailing hole
        let src = std::fs::File::open(&src_path).unwrap();
        let dst = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(t.path().join("copy"))
            .unwrap();
        clone_or_copy(src.as_fd(), dst.as_fd()).unwrap();
        let md = dst.metadata().unwrap();
        assert_eq!(md.len(), 6 * gib);
        assert!(
            md.blocks() * 512 < 64 << 20,
            "copy is not sparse: {} blocks",
            md.blocks()
        );
        let mut b = [0u8; 6];
        dst.read_exact_at(&mut b, 3 * gib).unwrap();
        assert_eq!(&b, b"middle");
        dst.read_exact_at(&mut b[..4], 0).unwrap();
        assert_eq!(&b[..4], b"head");
        dst.read_exact_at(&mut b, 2 * gib).unwrap();
        assert_eq!(b, [0; 6]);

        // A file with no data at all, and an empty one.
        for len in [0, 5 * gib] {
            let p = t.path().join(format!("hole{len}"));
            std::fs::File::create_new(&p).unwrap().set_len(len).unwrap();
            let q = t.path().join(format!("hole{len}.copy"));
            let d = std::fs::File::create_new(&q).unwrap();
            clone_or_copy(std::fs::File::open(&p).unwrap().as_fd(), d.as_fd()).unwrap();
            assert_eq!(d.metadata().unwrap().len(), len);
        }
    }

    #[test]
    fn divert_keeps_bytes_mode_mtime_and_path() {
        let (t, fd, s) = setup();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let f = t.path().join("a/b/c.txt");
        std::fs::write(&f, b"hello").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
        let before = std::fs::metadata(&f).unwrap();
        let parent: OwnedFd = std::fs::File::open(t.path().join("a/b")).unwrap().into();
        let t_ns = 1_700_000_000_123_456_789;
        let rel = s
            .divert_to_trash(
                parent.as_fd(),
                OsStr::new("c.txt"),
                Path::new("a/b/c.txt"),
                t_ns,
            )
            .unwrap();
        assert_eq!(rel, Path::new("trash/2023-11-14T22:13:20Z/a/b/c.txt"));
        assert!(!f.exists());
        let kept = t.path().join(".saferoot").join(&rel);
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello");
        let m = std::fs::metadata(&kept).unwrap();
        assert_eq!(m.mode(), before.mode());
        assert_eq!(m.mtime_nsec(), before.mtime_nsec());
        assert_eq!(m.ino(), before.ino());

        // Same path again in the same second: a second bucket, nothing overwritten.
        std::fs::write(&f, b"again").unwrap();
        let rel2 = s
            .divert_to_trash(
                parent.as_fd(),
                OsStr::new("c.txt"),
                Path::new("a/b/c.txt"),
                t_ns,
            )
            .unwrap();
        assert_eq!(rel2, Path::new("trash/2023-11-14T22:13:20Z.1/a/b/c.txt"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"hello");
        drop(fd);
    }

    #[test]
    fn file_then_dir_of_same_name_in_one_second() {
        let (t, _fd, s) = setup();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        std::fs::write(t.path().join("x"), b"file").unwrap();
        s.divert_to_trash(root.as_fd(), OsStr::new("x"), Path::new("x"), 0)
            .unwrap();
        std::fs::create_dir(t.path().join("x")).unwrap();
        std::fs::write(t.path().join("x/y"), b"inner").unwrap();
        let xd: OwnedFd = std::fs::File::open(t.path().join("x")).unwrap().into();
        let rel = s
            .divert_to_trash(xd.as_fd(), OsStr::new("y"), Path::new("x/y"), 0)
            .unwrap();
        assert_eq!(rel, Path::new("trash/1970-01-01T00:00:00Z.1/x/y"));
    }

    #[test]
    fn objects_are_deduplicated() {
        let (t, _fd, s) = setup();
        std::fs::write(t.path().join("f"), b"content").unwrap();
        let f = std::fs::File::open(t.path().join("f")).unwrap();
        let h1 = s.put_object(f.as_fd()).unwrap();
        let h2 = s.put_object(f.as_fd()).unwrap();
        assert_eq!(h1, h2);
        // The staging copy of the duplicate was dropped.
        assert_eq!(
            std::fs::read_dir(t.path().join(".saferoot/tmp"))
                .unwrap()
                .count(),
            0
        );
        // A file changed a moment ago is not cached (a same-tick write could follow)...
        let st = nix::sys::stat::fstat(f.as_fd()).unwrap();
        assert_eq!(s.preimage(f.as_fd(), &st).unwrap(), h1);
        assert_eq!(s.cached_hash(&st), None);
        // ...one that has been quiet for longer is, and is then found without reading it.
        std::thread::sleep(std::time::Duration::from_nanos(RACY_NS as u64 + 20_000_000));
        assert_eq!(s.preimage(f.as_fd(), &st).unwrap(), h1);
        assert_eq!(s.cached_hash(&st).as_deref(), Some(h1.as_str()));
        assert_eq!(h1, blake3::hash(b"content").to_hex().to_string());
        let p = t.path().join(".saferoot").join(object_rel(&h1));
        assert_eq!(std::fs::read(p).unwrap(), b"content");
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(check_relative(Path::new("../x")).is_err());
        assert!(check_relative(Path::new("/x")).is_err());
        assert!(check_relative(Path::new("")).is_err());
        assert!(check_relative(Path::new("a/b")).is_ok());
    }

    #[test]
    fn reopen_checks_format() {
        let (t, fd, s) = setup();
        drop(s);
        std::fs::write(t.path().join(".saferoot/format"), b"saferoot-store 7\n").unwrap();
        let e = Store::open_existing(fd.as_fd(), t.path()).err().unwrap();
        assert!(e.to_string().contains("unsupported store format"), "{e}");
    }
}
