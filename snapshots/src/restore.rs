//! Restore: put the project tree back the way it was at an instant T, and say what that changes.
//!
//! How: read the tree as it is now (through the fd on the real project directory, never through
//! the mount), then walk the journal backwards from now to T undoing each record on a *virtual*
//! copy of that tree. Every entry of the virtual tree remembers where its bytes can be read from
//! (the live tree, the trash, the object store) instead of holding them. The difference between
//! the virtual tree (T) and the real one (now) is the list of changes; executing it displaces
//! what must change into the trash, then puts back copies of what T had.
//!
//! Restore never deletes anything: what it replaces is moved to the trash and journaled like any
//! other unlink, and what it puts back is journaled as ordinary creations. A later restore to an
//! instant just before this one therefore undoes it.
//!
//! What this module does not do (yet): keep the content of files overwritten in place (`write`
//! records carry no pre-image in this version, so such files are restored as they are now, with a
//! warning), use snapshot manifests to shorten the replay, preserve hard links between restored
//! files (each name gets its own copy), or restore the project directory's own mode.

use crate::journal::{self, Kind, Op, Record};
use crate::store::{self, check_relative, object_rel, STORE_DIR};
use crate::time::format_utc;
use crate::{relpath, Error, Result, Store};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// How a path differs between now and the instant restored to.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Existed at T, does not exist now: put back.
    Added,
    /// Exists now, did not exist at T: moved to the trash.
    Removed,
    /// Same type, other bytes (or symlink target, or device number).
    Content,
    /// Same type and content, other permission bits.
    Mode,
    /// A different type of file (e.g. a directory now, a file at T).
    Type,
}

impl Mark {
    /// The one-character form used in listings: `+ - M m T`.
    pub fn symbol(self) -> char {
        match self {
            Mark::Added => '+',
            Mark::Removed => '-',
            Mark::Content => 'M',
            Mark::Mode => 'm',
            Mark::Type => 'T',
        }
    }
}

/// One path that a restore changes (or would change, in a dry run).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub mark: Mark,
    #[serde(with = "relpath")]
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The instant to go back to (UTC ns since the epoch).
    pub target_t: i64,
    /// Project-relative paths to restore (each with everything below it); empty = whole tree.
    pub paths: Vec<PathBuf>,
    /// Compute and report the changes without making them.
    pub dry_run: bool,
    /// Who asked, for the journal records the restore writes.
    pub pid: u32,
    pub comm: String,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sorted by path.
    pub changes: Vec<Change>,
    /// Things the restore could not do exactly, one line each.
    pub warnings: Vec<String>,
    /// The first instant the journal knows (UTC ns): nothing can be restored before it.
    pub first_t: i64,
}

/// Restore the project of `store` (or the parts of it named in `opts.paths`) to `opts.target_t`.
pub fn restore(store: &Store, opts: &Options) -> Result<Report> {
    restore_as(store, opts, nix::unistd::geteuid().is_root())
}

/// [`restore`], with the privilege level given: unprivileged, owners are left as they come and
/// read-only directories are opened up (and closed again) around the changes made in them.
fn restore_as(store: &Store, opts: &Options, privileged: bool) -> Result<Report> {
    let scopes = scopes(&opts.paths)?;
    let (mut records, read_report) = journal::read(store.dir(), store.dir_path())?;
    records.sort_by_key(|r| r.t);
    let first_t = match records.first() {
        Some(r) => r.t,
        None => {
            return Err(Error::Invalid(
                "no history yet: nothing has been recorded for this directory".into(),
            ))
        }
    };
    if opts.target_t < first_t {
        return Err(Error::Invalid(format!(
            "nothing is recorded before {} (the first mount), so the tree is not known at {}; \
             try a later TIME",
            format_utc(first_t),
            format_utc(opts.target_t)
        )));
    }

    let current = live_tree(store)?;
    let mut rb = Rollback {
        store,
        tree: current.clone(),
        mismatches: 0,
        skipped: 0,
    };
    for r in records.iter().rev().take_while(|r| r.t > opts.target_t) {
        rb.undo(r)?;
    }
    let mut warnings = Vec::new();
    if read_report.corrupt > 0 {
        warnings.push(format!(
            "{} damaged journal record(s) were skipped; the changes they described are not undone",
            read_report.corrupt
        ));
    }
    if rb.skipped > 0 {
        warnings.push(format!(
            "{} journal record(s) with unusable paths were skipped",
            rb.skipped
        ));
    }
    if rb.mismatches > 0 {
        warnings.push(format!(
            "{} journal record(s) did not match the tree (was it changed while not mounted?); \
             the result may differ from the tree at {} there",
            rb.mismatches,
            format_utc(opts.target_t)
        ));
    }
    let want = rb.tree;

    let mut fs = Fs::new(store);
    let plan = diff(
        &mut fs,
        &current,
        &want,
        &scopes,
        opts.target_t,
        &mut warnings,
    )?;
    let changes = plan
        .iter()
        .map(|(p, s)| Change {
            mark: s.mark,
            path: p.clone(),
        })
        .collect();
    if !opts.dry_run && !plan.is_empty() {
        let mut ex = Exec {
            fs,
            opts,
            privileged,
            perm_now: current
                .iter()
                .filter(|(_, n)| n.kind == Kind::Dir)
                .map(|(p, n)| (p.clone(), n.perm))
                .collect(),
            loosened: BTreeMap::new(),
            warnings: &mut warnings,
        };
        let marker_path = scopes
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("."));
        ex.journal(Record {
            target_t: Some(opts.target_t),
            ..ex.record(Op::Restore, &marker_path)
        })?;
        ex.run(&plan)?;
        store.journal().sync()?;
    }
    Ok(Report {
        changes,
        warnings,
        first_t,
    })
}

/// Validate the PATH arguments: plain relative paths outside the store; `.` or nothing means
/// the whole tree.
fn scopes(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let mut clean = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(Error::Invalid(format!(
                        "cannot restore {}: paths must be relative to the project and stay \
                         inside it (no leading / and no ..)",
                        p.display()
                    )))
                }
            }
        }
        if clean.as_os_str().is_empty() {
            return Ok(Vec::new());
        }
        if under_store(&clean) {
            return Err(Error::Invalid(format!(
                "cannot restore {}: {STORE_DIR} is saferoot's own store",
                p.display()
            )));
        }
        out.push(clean);
    }
    Ok(out)
}

fn under_store(p: &Path) -> bool {
    p.components().next() == Some(Component::Normal(OsStr::new(STORE_DIR)))
}

fn in_scope(p: &Path, scopes: &[PathBuf]) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| p.starts_with(s))
}

/// Where the bytes (or the metadata) of a virtual entry come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// The entry now at this project-relative path.
    Live(PathBuf),
    /// This path relative to the store (in the trash).
    Trash(PathBuf),
    /// A regular file in the object store (blake3 hex).
    Object(String),
    /// Nothing to copy: an empty directory known only by its mode.
    Fresh,
    /// Something was here, but what is not kept. Says why.
    Unknown(String),
}

#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    /// `mode & 0o7777`.
    perm: u32,
    src: Source,
    size: u64,
    mtime: Option<(i64, i64)>,
    owner: Option<(u32, u32)>,
    rdev: u64,
    ino: u64,
    target: Option<OsString>,
    /// Written in place after T: the content at T is not known.
    written: bool,
}

impl Entry {
    fn from_stat(st: &FileStat, src: Source, target: Option<OsString>) -> Option<Entry> {
        Some(Entry {
            kind: Kind::from_mode(st.st_mode)?,
            perm: st.st_mode & 0o7777,
            src,
            size: st.st_size as u64,
            mtime: Some((st.st_mtime, st.st_mtime_nsec)),
            owner: Some((st.st_uid, st.st_gid)),
            rdev: st.st_rdev,
            ino: st.st_ino,
            target,
            written: false,
        })
    }

    fn bare(kind: Kind, perm: u32, src: Source) -> Entry {
        Entry {
            kind,
            perm,
            src,
            size: 0,
            mtime: None,
            owner: None,
            rdev: 0,
            ino: 0,
            target: None,
            written: false,
        }
    }

    /// Type and permission bits, as journaled.
    fn mode(&self) -> u32 {
        kind_bits(self.kind) | self.perm
    }

    fn unknown(&self) -> bool {
        matches!(self.src, Source::Unknown(_))
    }
}

fn kind_bits(k: Kind) -> u32 {
    match k {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
        Kind::Fifo => libc::S_IFIFO,
        Kind::Socket => libc::S_IFSOCK,
        Kind::CharDev => libc::S_IFCHR,
        Kind::BlockDev => libc::S_IFBLK,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDev => "character device",
        Kind::BlockDev => "block device",
    }
}

type Tree = BTreeMap<PathBuf, Entry>;

/// `p` and everything below it, removed from `tree`, keyed relative to `p` (`""` for `p`).
/// Paths order component-wise, so a subtree is one contiguous range starting at `p`.
fn take_subtree(tree: &mut Tree, p: &Path) -> Vec<(PathBuf, Entry)> {
    let keys: Vec<PathBuf> = tree
        .range::<Path, _>((Bound::Included(p), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(p))
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| {
            let n = tree.remove(&k)?;
            let rel = k.strip_prefix(p).map(Path::to_owned).unwrap_or_default();
            Some((rel, n))
        })
        .collect()
}

fn put_subtree(tree: &mut Tree, p: &Path, items: Vec<(PathBuf, Entry)>) {
    for (rel, n) in items {
        tree.insert(join(p, &rel), n);
    }
}

/// `p/rel`, without the trailing separator `Path::join` leaves for an empty `rel`.
fn join(p: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        p.to_owned()
    } else {
        p.join(rel)
    }
}

/// Directory part and file name of a project-relative path.
fn split(p: &Path) -> Result<(&Path, &OsStr)> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((d, n)),
        _ => Err(Error::Invalid(format!(
            "{} has no parent directory",
            p.display()
        ))),
    }
}

/// Every entry below the open directory `dir`, parents before children, keyed relative to it,
/// with the target of each symlink. `skip_store` leaves out `.saferoot` at the top.
fn walk(
    dir: BorrowedFd<'_>,
    shown: &Path,
    skip_store: bool,
    out: &mut Vec<(PathBuf, FileStat, Option<OsString>)>,
) -> Result<()> {
    walk_in(dir, shown, Path::new(""), skip_store, out)
}

fn walk_in(
    dir: BorrowedFd<'_>,
    shown: &Path,
    rel: &Path,
    skip_store: bool,
    out: &mut Vec<(PathBuf, FileStat, Option<OsString>)>,
) -> Result<()> {
    let here = join(shown, rel);
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("read directory", &here, e))?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| Error::io("read directory", &here, e))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." || (skip_store && name == STORE_DIR.as_bytes()) {
            continue;
        }
        names.push(OsString::from_vec(name.to_vec()));
    }
    drop(d);
    for name in names {
        let sub = join(rel, Path::new(&name));
        let st = match nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) => st,
            // Removed since it was listed: it is not part of the tree any more.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::io("stat", &shown.join(&sub), e)),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dir, name.as_os_str())
                    .map_err(|e| Error::io("read symlink", &shown.join(&sub), e))?;
                out.push((sub, st, Some(target)));
            }
            libc::S_IFDIR => {
                let fd = nix::fcntl::openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io("open directory", &shown.join(&sub), e))?;
                out.push((sub.clone(), st, None));
                walk_in(fd.as_fd(), shown, &sub, false, out)?;
            }
            _ => out.push((sub, st, None)),
        }
    }
    Ok(())
}

/// The tree as it is now, every entry sourced from itself.
fn live_tree(store: &Store) -> Result<Tree> {
    let mut found = Vec::new();
    walk(store.project(), store.project_path(), true, &mut found)?;
    Ok(found
        .into_iter()
        .filter_map(|(p, st, target)| {
            let n = Entry::from_stat(&st, Source::Live(p.clone()), target)?;
            Some((p, n))
        })
        .collect())
}

/// The virtual tree, walked back in time one record at a time.
struct Rollback<'a> {
    store: &'a Store,
    tree: Tree,
    /// Records whose premise did not hold on the virtual tree (e.g. a create of a path that is
    /// not there): the tree was changed behind the journal's back.
    mismatches: usize,
    /// Records with paths that are absolute, contain `..`, or lack a needed second path.
    skipped: usize,
}

impl Rollback<'_> {
    /// A project path from a record, or `None` (counted) if it is unusable; `.saferoot` and the
    /// root itself are silently ignored.
    fn path(&mut self, p: Option<&Path>) -> Option<PathBuf> {
        let Some(p) = p else {
            self.skipped += 1;
            return None;
        };
        if p.as_os_str().is_empty() || p == Path::new(".") || under_store(p) {
            return None;
        }
        if check_relative(p).is_err() {
            self.skipped += 1;
            return None;
        }
        Some(p.to_owned())
    }

    fn remove(&mut self, p: &Path) {
        if take_subtree(&mut self.tree, p).is_empty() {
            self.mismatches += 1;
        }
    }

    /// Make room at `p` for what a record says was there before it.
    fn clear(&mut self, p: &Path) {
        if !take_subtree(&mut self.tree, p).is_empty() {
            self.mismatches += 1;
        }
    }

    /// Undo one record on the virtual tree.
    fn undo(&mut self, r: &Record) -> Result<()> {
        if matches!(r.op, Op::Mount | Op::Umount | Op::Restore | Op::Run | Op::Snapshot) {
            return Ok(());
        }
        let Some(path) = self.path(Some(&r.path)) else {
            return Ok(());
        };
        match r.op {
            Op::Mount | Op::Umount | Op::Restore | Op::Run | Op::Snapshot => {}
            Op::Create | Op::Mkdir | Op::Mknod | Op::Symlink => self.remove(&path),
            Op::Link => {
                if let Some(to) = self.path(r.to.as_deref()) {
                    self.remove(&to);
                }
            }
            Op::Unlink => {
                self.clear(&path);
                self.bring_back(&path, r)?;
            }
            Op::Rmdir => {
                self.clear(&path);
                let perm = r.mode.unwrap_or(0o755) & 0o7777;
                self.tree
                    .insert(path, Entry::bare(Kind::Dir, perm, Source::Fresh));
            }
            Op::Rename => {
                let Some(to) = self.path(r.to.as_deref()) else {
                    return Ok(());
                };
                let moved = take_subtree(&mut self.tree, &to);
                if moved.is_empty() {
                    self.mismatches += 1;
                }
                self.clear(&path);
                put_subtree(&mut self.tree, &path, moved);
                if r.trash.is_some() || r.object.is_some() {
                    self.bring_back(&to, r)?;
                }
            }
            Op::Exchange => {
                let Some(to) = self.path(r.to.as_deref()) else {
                    return Ok(());
                };
                let a = take_subtree(&mut self.tree, &path);
                let b = take_subtree(&mut self.tree, &to);
                if a.is_empty() || b.is_empty() {
                    self.mismatches += 1;
                }
                put_subtree(&mut self.tree, &path, b);
                put_subtree(&mut self.tree, &to, a);
            }
            Op::Setattr | Op::Write => {
                let content_changed = r.op == Op::Write || r.size.is_some();
                let object = match (&r.object, content_changed) {
                    (Some(hex), true) => self.object_node(hex, 0)?,
                    _ => None,
                };
                let Some(n) = self.tree.get_mut(&path) else {
                    self.mismatches += 1;
                    return Ok(());
                };
                if n.unknown() {
                    return Ok(());
                }
                if let Some(old) = r.old_mode {
                    n.perm = old & 0o7777;
                }
                if content_changed && n.kind == Kind::File {
                    match object {
                        // The content before this change was kept: read it from there.
                        Some(o) => {
                            n.src = o.src;
                            n.size = o.size;
                            n.mtime = None;
                            n.written = false;
                        }
                        None => n.written = true,
                    }
                }
            }
        }
        Ok(())
    }

    /// Put at `p` what was there before `r` removed or replaced it (its trash item or object),
    /// or an Unknown entry if the record kept nothing.
    fn bring_back(&mut self, p: &Path, r: &Record) -> Result<()> {
        let when = format_utc(r.t);
        if let Some(tr) = &r.trash {
            if check_relative(tr).is_err() {
                self.skipped += 1;
                return Ok(());
            }
            return self.insert_trash(p, tr, &when);
        }
        if let Some(hex) = &r.object {
            let perm = r.mode.unwrap_or(0o644) & 0o7777;
            let n = self.object_node(hex, perm)?.unwrap_or_else(|| {
                Entry::bare(
                    Kind::File,
                    perm,
                    Source::Unknown(format!(
                        "removed at {when}, but its kept content (object {hex}) is gone"
                    )),
                )
            });
            self.tree.insert(p.to_owned(), n);
            return Ok(());
        }
        let kind = r.kind.unwrap_or(Kind::File);
        self.tree.insert(
            p.to_owned(),
            Entry::bare(
                kind,
                r.mode.unwrap_or(0) & 0o7777,
                Source::Unknown(format!("removed at {when} without its content being kept")),
            ),
        );
        Ok(())
    }

    /// The trash item `tr` (a whole subtree if it is a directory), placed at `p`.
    fn insert_trash(&mut self, p: &Path, tr: &Path, when: &str) -> Result<()> {
        let store = self.store;
        let shown = store.dir_path().join(tr);
        let st = match nix::sys::stat::fstatat(store.dir(), tr, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {
                self.tree.insert(
                    p.to_owned(),
                    Entry::bare(
                        Kind::File,
                        0,
                        Source::Unknown(format!(
                            "removed at {when}, but its copy {} is no longer in the trash",
                            tr.display()
                        )),
                    ),
                );
                return Ok(());
            }
            Err(e) => return Err(Error::io("stat trash item", &shown, e)),
        };
        let target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            Some(
                nix::fcntl::readlinkat(store.dir(), tr)
                    .map_err(|e| Error::io("read symlink", &shown, e))?,
            )
        } else {
            None
        };
        let Some(top) = Entry::from_stat(&st, Source::Trash(tr.to_owned()), target) else {
            return Ok(());
        };
        let is_dir = top.kind == Kind::Dir;
        self.tree.insert(p.to_owned(), top);
        if is_dir {
            let fd = nix::fcntl::openat(
                store.dir(),
                tr,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open trash directory", &shown, e))?;
            let mut found = Vec::new();
            walk(fd.as_fd(), &shown, false, &mut found)?;
            for (sub, st, target) in found {
                if let Some(n) = Entry::from_stat(&st, Source::Trash(tr.join(&sub)), target) {
                    self.tree.insert(p.join(&sub), n);
                }
            }
        }
        Ok(())
    }

    /// A regular file whose content is the object `hex`, or `None` if the object is missing or
    /// the name is not a blake3 hex digest.
    fn object_node(&self, hex: &str, perm: u32) -> Result<Option<Entry>> {
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let rel = object_rel(hex);
        match nix::sys::stat::fstatat(self.store.dir(), &rel, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Entry {
                size: st.st_size as u64,
                ..Entry::bare(Kind::File, perm, Source::Object(hex.to_owned()))
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::io(
                "stat object",
                &self.store.dir_path().join(rel),
                e,
            )),
        }
    }
}

/// What to do at one path.
struct Step {
    mark: Mark,
    /// The entry there now, if any.
    cur: Option<Entry>,
    /// The entry to have there, if any.
    want: Option<Entry>,
}

type Plan = BTreeMap<PathBuf, Step>;

/// Compare the tree at T (`want`) with the tree now (`cur`) within `scopes`.
fn diff(
    fs: &mut Fs<'_>,
    cur: &Tree,
    want: &Tree,
    scopes: &[PathBuf],
    target_t: i64,
    warnings: &mut Vec<String>,
) -> Result<Plan> {
    let at = format_utc(target_t);
    let keys: BTreeSet<&PathBuf> = cur
        .keys()
        .chain(want.keys())
        .filter(|p| in_scope(p, scopes))
        .collect();
    let mut plan = Plan::new();
    let mut written = Vec::new();
    for p in keys {
        let c = cur.get(p);
        let w = want.get(p);
        if let Some(w) = w {
            if let Source::Unknown(why) = &w.src {
                let what = if c.is_some() {
                    "left as it is now"
                } else {
                    "not restored"
                };
                warnings.push(format!("{}: {why}; {what}", p.display()));
                continue;
            }
            if w.written {
                written.push(p.display().to_string());
            }
        }
        let mark = match (c, w) {
            (None, None) => continue,
            (Some(_), None) => Mark::Removed,
            (None, Some(_)) => Mark::Added,
            (Some(c), Some(w)) => {
                if c.kind != w.kind {
                    Mark::Type
                } else if !same_content(fs, p, c, w)? {
                    Mark::Content
                } else if c.perm != w.perm && c.kind != Kind::Symlink {
                    Mark::Mode
                } else {
                    continue;
                }
            }
        };
        plan.insert(
            p.clone(),
            Step {
                mark,
                cur: c.cloned(),
                want: w.cloned(),
            },
        );
    }
    for s in scopes {
        if !cur.contains_key(s) && !want.contains_key(s) {
            warnings.push(format!(
                "{}: does not exist now and did not exist at {at}",
                s.display()
            ));
        }
    }
    if !written.is_empty() {
        let n = written.len();
        let mut names = written.into_iter().take(5).collect::<Vec<_>>().join(", ");
        if n > 5 {
            names.push_str(", …");
        }
        warnings.push(format!(
            "{n} file(s) were written after {at}; their earlier content is not kept (yet), \
             so they are restored as they are now: {names}"
        ));
    }

    // Something put back inside a directory outside the scope needs that directory: create
    // the missing ones (as they were at T), refuse if one is now another type of file.
    if !scopes.is_empty() {
        let mut extra = Plan::new();
        for (p, step) in &plan {
            if step.want.is_none() || step.mark == Mark::Mode {
                continue;
            }
            for a in p.ancestors().skip(1) {
                if a.as_os_str().is_empty() || in_scope(a, scopes) || extra.contains_key(a) {
                    break;
                }
                match cur.get(a) {
                    Some(n) if n.kind == Kind::Dir => break,
                    Some(n) => {
                        return Err(Error::Invalid(format!(
                            "cannot restore {}: {} is now a {}; restore {} itself instead",
                            p.display(),
                            a.display(),
                            kind_name(n.kind),
                            a.display()
                        )))
                    }
                    None => {
                        let w = match want.get(a) {
                            Some(n) if n.kind == Kind::Dir && !n.unknown() => n.clone(),
                            _ => Entry::bare(Kind::Dir, 0o755, Source::Fresh),
                        };
                        extra.insert(
                            a.to_owned(),
                            Step {
                                mark: Mark::Added,
                                cur: None,
                                want: Some(w),
                            },
                        );
                    }
                }
            }
        }
        plan.extend(extra);
    }
    Ok(plan)
}

/// Whether `c` (now at `p`) and `w` (at T) hold the same bytes / target / device. Types match.
fn same_content(fs: &mut Fs<'_>, p: &Path, c: &Entry, w: &Entry) -> Result<bool> {
    Ok(match c.kind {
        Kind::File => {
            if w.src == Source::Live(p.to_owned()) {
                true
            } else if c.size != w.size {
                false
            } else {
                fs.hash(&c.src, p)? == fs.hash(&w.src, p)?
            }
        }
        Kind::Symlink => c.target == w.target,
        Kind::CharDev | Kind::BlockDev => c.rdev == w.rdev,
        Kind::Dir | Kind::Fifo | Kind::Socket => true,
    })
}

/// Access to the project and the store by `*at()` calls, with the last directory opened kept.
struct Fs<'a> {
    store: &'a Store,
    last_dir: Option<(PathBuf, OwnedFd)>,
    /// Where each live entry displaced by this restore went (project path → store path).
    displaced: HashMap<PathBuf, PathBuf>,
}

impl<'a> Fs<'a> {
    fn new(store: &'a Store) -> Self {
        Fs {
            store,
            last_dir: None,
            displaced: HashMap::new(),
        }
    }

    fn shown(&self, p: &Path) -> PathBuf {
        self.store.project_path().join(p)
    }

    /// The project directory `rel` (O_PATH), opened one component at a time without following
    /// symlinks, so nothing outside the project is ever reached.
    fn dir(&mut self, rel: &Path) -> Result<OwnedFd> {
        if let Some((p, fd)) = &self.last_dir {
            if p == rel {
                return fd.try_clone().map_err(|e| Error::Io {
                    op: "dup directory fd",
                    path: self.shown(rel),
                    source: e,
                });
            }
        }
        let mut fd = self
            .store
            .project()
            .try_clone_to_owned()
            .map_err(|e| Error::Io {
                op: "dup project fd",
                path: self.shown(Path::new("")),
                source: e,
            })?;
        for c in rel.components() {
            fd = nix::fcntl::openat(
                fd.as_fd(),
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open directory", &self.shown(rel), e))?;
        }
        let keep = fd.try_clone().ok();
        self.last_dir = keep.map(|k| (rel.to_owned(), k));
        Ok(fd)
    }

    fn forget_dir(&mut self) {
        self.last_dir = None;
    }

    /// Open the bytes of a regular-file source for reading. A live source this restore has
    /// displaced is read from where it went in the trash.
    fn open_source(&mut self, src: &Source, for_path: &Path) -> Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let in_store = |fs: &Self, rel: &Path| {
            nix::fcntl::openat(fs.store.dir(), rel, flags, Mode::empty())
                .map_err(|e| Error::io("open to restore", &fs.store.dir_path().join(rel), e))
        };
        match src {
            Source::Live(p) => {
                if let Some(tr) = self.displaced.get(p).cloned() {
                    return in_store(self, &tr);
                }
                let (d, n) = split(p)?;
                let dfd = self.dir(d)?;
                nix::fcntl::openat(dfd.as_fd(), n, flags, Mode::empty())
                    .map_err(|e| Error::io("open to restore", &self.shown(p), e))
            }
            Source::Trash(tr) => in_store(self, tr),
            Source::Object(hex) => in_store(self, &object_rel(hex)),
            Source::Fresh | Source::Unknown(_) => Err(Error::Invalid(format!(
                "{}: no content to restore from",
                for_path.display()
            ))),
        }
    }

    fn hash(&mut self, src: &Source, for_path: &Path) -> Result<blake3::Hash> {
        if let Source::Object(hex) = src {
            if let Ok(h) = blake3::Hash::from_hex(hex) {
                return Ok(h);
            }
        }
        let fd = self.open_source(src, for_path)?;
        store::hash_fd(fd.as_fd()).map_err(|e| Error::io("hash", &self.shown(for_path), e))
    }
}

/// Execution of a plan.
struct Exec<'a, 'w> {
    fs: Fs<'a>,
    opts: &'a Options,
    privileged: bool,
    /// Permission bits of the project's directories as they are during the restore.
    perm_now: HashMap<PathBuf, u32>,
    /// Directories given owner write/search access so entries can be changed in them, with
    /// the permission bits to give back.
    loosened: BTreeMap<PathBuf, u32>,
    warnings: &'w mut Vec<String>,
}

/// What to set on a directory once everything inside it is in place.
struct FinishDir {
    perm: u32,
    mtime: Option<(i64, i64)>,
    owner: Option<(u32, u32)>,
    /// Journal a mode change from this mode.
    old_mode: Option<u32>,
}

impl Exec<'_, '_> {
    fn record(&self, op: Op, path: &Path) -> Record {
        Record::new(
            crate::now_ns(),
            op,
            path,
            self.opts.pid,
            self.opts.comm.clone(),
        )
    }

    fn journal(&self, r: Record) -> Result<()> {
        self.fs.store.journal().append(&r)
    }

    fn shown(&self, p: &Path) -> PathBuf {
        self.fs.shown(p)
    }

    fn run(&mut self, plan: &Plan) -> Result<()> {
        let displace = |s: &Step| matches!(s.mark, Mark::Removed | Mark::Content | Mark::Type);
        let put = |s: &Step| matches!(s.mark, Mark::Added | Mark::Content | Mark::Type);

        // 1. Move aside everything that is in the way: files first, then the directories they
        //    emptied, deepest first.
        for (p, s) in plan {
            if let (true, Some(c)) = (displace(s), &s.cur) {
                if c.kind != Kind::Dir {
                    self.displace(p, c)?;
                }
            }
        }
        for (p, s) in plan.iter().rev() {
            if let (true, Some(c)) = (displace(s), &s.cur) {
                if c.kind == Kind::Dir {
                    self.remove_dir(p, c)?;
                }
            }
        }

        // 2. Put back what T had, parents before children; fix modes in place.
        let mut finish: BTreeMap<PathBuf, FinishDir> = BTreeMap::new();
        for (p, s) in plan {
            match (s.mark, &s.cur, &s.want) {
                (Mark::Mode, Some(c), Some(w)) if c.kind == Kind::Dir => {
                    finish.insert(
                        p.clone(),
                        FinishDir {
                            perm: w.perm,
                            mtime: None,
                            owner: None,
                            old_mode: Some(c.mode()),
                        },
                    );
                }
                (Mark::Mode, Some(c), Some(w)) => self.chmod(p, c, w)?,
                (_, _, Some(w)) if put(s) => {
                    if let Some(f) = self.put(p, w)? {
                        finish.insert(p.clone(), f);
                    }
                }
                _ => {}
            }
        }

        // 3. Directories last, deepest first: their modes (possibly read-only) and mtimes, now
        //    that nothing more is added to them.
        for (p, perm) in std::mem::take(&mut self.loosened) {
            finish.entry(p).or_insert(FinishDir {
                perm,
                mtime: None,
                owner: None,
                old_mode: None,
            });
        }
        for (p, f) in finish.iter().rev() {
            self.finish_dir(p, f)?;
        }
        Ok(())
    }

    /// Give owner write and search access to the directory `dir` if it lacks them, remembering
    /// its mode. Privileged processes do not need it; a failure is left for the operation that
    /// needed the access to report.
    fn make_writable(&mut self, dir: &Path) {
        if self.privileged || dir.as_os_str().is_empty() {
            return;
        }
        let Some(&perm) = self.perm_now.get(dir) else {
            return;
        };
        if perm & 0o300 == 0o300 {
            return;
        }
        let Ok((d, n)) = split(dir) else { return };
        let Ok(dfd) = self.fs.dir(d) else { return };
        if chmod_at(dfd.as_fd(), n, perm | 0o700).is_ok() {
            self.perm_now.insert(dir.to_owned(), perm | 0o700);
            self.loosened.entry(dir.to_owned()).or_insert(perm);
        }
    }

    /// Move the non-directory `p` into the trash.
    fn displace(&mut self, p: &Path, c: &Entry) -> Result<()> {
        let (d, n) = split(p)?;
        self.make_writable(d);
        let dfd = self.fs.dir(d)?;
        let tr = self
            .fs
            .store
            .divert_to_trash(dfd.as_fd(), n, p, crate::now_ns())?;
        self.journal(Record {
            trash: Some(tr.clone()),
            kind: Some(c.kind),
            mode: Some(c.mode()),
            ino: Some(c.ino),
            ..self.record(Op::Unlink, p)
        })?;
        self.fs.displaced.insert(p.to_owned(), tr);
        Ok(())
    }

    /// Remove the directory `p`, emptied by [`Exec::displace`]. If something appeared in it
    /// meanwhile, the whole directory goes to the trash instead.
    fn remove_dir(&mut self, p: &Path, c: &Entry) -> Result<()> {
        let (d, n) = split(p)?;
        self.make_writable(d);
        let dfd = self.fs.dir(d)?;
        self.fs.forget_dir();
        match nix::unistd::unlinkat(dfd.as_fd(), n, UnlinkatFlags::RemoveDir) {
            Ok(()) => self.journal(Record {
                kind: Some(Kind::Dir),
                mode: Some(c.mode()),
                ino: Some(c.ino),
                ..self.record(Op::Rmdir, p)
            })?,
            Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {
                let tr = self
                    .fs
                    .store
                    .divert_to_trash(dfd.as_fd(), n, p, crate::now_ns())?;
                self.journal(Record {
                    trash: Some(tr),
                    kind: Some(Kind::Dir),
                    mode: Some(c.mode()),
                    ino: Some(c.ino),
                    ..self.record(Op::Unlink, p)
                })?;
            }
            Err(e) => return Err(Error::io("remove directory", &self.shown(p), e)),
        }
        self.loosened.remove(p);
        self.perm_now.remove(p);
        Ok(())
    }

    /// Change the permission bits of the non-directory `p` in place.
    fn chmod(&mut self, p: &Path, c: &Entry, w: &Entry) -> Result<()> {
        let (d, n) = split(p)?;
        let dfd = self.fs.dir(d)?;
        chmod_at(dfd.as_fd(), n, w.perm).map_err(|e| Error::io("chmod", &self.shown(p), e))?;
        self.journal(Record {
            kind: Some(c.kind),
            mode: Some(w.mode()),
            old_mode: Some(c.mode()),
            ..self.record(Op::Setattr, p)
        })
    }

    /// Create `p` as `w`. Directories are created open (owner rwx) and returned to be
    /// finished once filled.
    fn put(&mut self, p: &Path, w: &Entry) -> Result<Option<FinishDir>> {
        let (d, n) = split(p)?;
        self.make_writable(d);
        let dfd = self.fs.dir(d)?;
        let shown = self.shown(p);
        match w.kind {
            Kind::Dir => {
                nix::sys::stat::mkdirat(dfd.as_fd(), n, Mode::from_bits_truncate(w.perm | 0o700))
                    .map_err(|e| Error::io("create directory", &shown, e))?;
                self.perm_now.insert(p.to_owned(), w.perm | 0o700);
                self.journal(Record {
                    kind: Some(Kind::Dir),
                    mode: Some(w.mode()),
                    ..self.record(Op::Mkdir, p)
                })?;
                return Ok(Some(FinishDir {
                    perm: w.perm,
                    mtime: w.mtime,
                    owner: w.owner,
                    old_mode: None,
                }));
            }
            Kind::File => {
                let src = self.fs.open_source(&w.src, p)?;
                let dst = nix::fcntl::openat(
                    dfd.as_fd(),
                    n,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| Error::io("create", &shown, e))?;
                let filled = self.fill(src.as_fd(), dst.as_fd(), w, &shown);
                let ino = filled.and_then(|()| {
                    nix::sys::stat::fstat(dst.as_fd())
                        .map(|st| st.st_ino)
                        .map_err(|e| Error::io("stat", &shown, e))
                });
                let ino = match ino {
                    Ok(ino) => ino,
                    Err(e) => {
                        // Our own incomplete copy, never journaled: removing it loses nothing.
                        let _ = nix::unistd::unlinkat(dfd.as_fd(), n, UnlinkatFlags::NoRemoveDir);
                        return Err(e);
                    }
                };
                self.journal(Record {
                    kind: Some(Kind::File),
                    mode: Some(w.mode()),
                    ino: Some(ino),
                    ..self.record(Op::Create, p)
                })?;
            }
            Kind::Symlink => {
                let target = w.target.clone().unwrap_or_default();
                nix::unistd::symlinkat(target.as_os_str(), dfd.as_fd(), n)
                    .map_err(|e| Error::io("create symlink", &shown, e))?;
                self.set_owner_and_mtime(dfd.as_fd(), n, w, &shown)?;
                self.journal(Record {
                    kind: Some(Kind::Symlink),
                    target: Some(PathBuf::from(target)),
                    ..self.record(Op::Symlink, p)
                })?;
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                let kind = SFlag::from_bits_truncate(kind_bits(w.kind));
                match nix::sys::stat::mknodat(
                    dfd.as_fd(),
                    n,
                    kind,
                    Mode::from_bits_truncate(w.perm),
                    w.rdev,
                ) {
                    Ok(()) => {}
                    Err(Errno::EPERM)
                        if matches!(w.kind, Kind::CharDev | Kind::BlockDev) && !self.privileged =>
                    {
                        self.warnings.push(format!(
                            "{}: a {} cannot be created without privileges; not restored",
                            p.display(),
                            kind_name(w.kind)
                        ));
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::io("create special file", &shown, e)),
                }
                self.set_owner_and_mtime(dfd.as_fd(), n, w, &shown)?;
                // After chown, which clears set-id bits, and past the umask.
                chmod_at(dfd.as_fd(), n, w.perm).map_err(|e| Error::io("chmod", &shown, e))?;
                self.journal(Record {
                    kind: Some(w.kind),
                    mode: Some(w.mode()),
                    ..self.record(Op::Mknod, p)
                })?;
            }
        }
        Ok(None)
    }

    /// Copy the bytes, then owner (privileged only), mode and mtime, onto a new regular file.
    fn fill(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, w: &Entry, shown: &Path) -> Result<()> {
        store::clone_or_copy(src, dst).map_err(|e| Error::io("copy into", shown, e))?;
        if self.privileged {
            if let Some((uid, gid)) = w.owner {
                nix::unistd::fchown(dst, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|e| Error::io("chown", shown, e))?;
            }
        }
        nix::sys::stat::fchmod(dst, Mode::from_bits_truncate(w.perm))
            .map_err(|e| Error::io("chmod", shown, e))?;
        if let Some((s, ns)) = w.mtime {
            nix::sys::stat::futimens(dst, &TimeSpec::UTIME_OMIT, &TimeSpec::new(s, ns))
                .map_err(|e| Error::io("set mtime", shown, e))?;
        }
        Ok(())
    }

    fn set_owner_and_mtime(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        w: &Entry,
        shown: &Path,
    ) -> Result<()> {
        if self.privileged {
            if let Some((uid, gid)) = w.owner {
                nix::unistd::fchownat(
                    dir,
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("chown", shown, e))?;
            }
        }
        if let Some((s, ns)) = w.mtime {
            nix::sys::stat::utimensat(
                dir,
                name,
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(s, ns),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| Error::io("set mtime", shown, e))?;
        }
        Ok(())
    }

    fn finish_dir(&mut self, p: &Path, f: &FinishDir) -> Result<()> {
        let (d, n) = split(p)?;
        let dfd = self.fs.dir(d)?;
        let shown = self.shown(p);
        if let Some(old) = f.old_mode {
            // A mode change of an existing directory is a change like any other: journaled.
            chmod_at(dfd.as_fd(), n, f.perm).map_err(|e| Error::io("chmod", &shown, e))?;
            return self.journal(Record {
                kind: Some(Kind::Dir),
                mode: Some(libc::S_IFDIR | f.perm),
                old_mode: Some(old),
                ..self.record(Op::Setattr, p)
            });
        }
        let w = Entry {
            mtime: f.mtime,
            owner: f.owner,
            ..Entry::bare(Kind::Dir, f.perm, Source::Fresh)
        };
        self.set_owner_and_mtime(dfd.as_fd(), n, &w, &shown)?;
        chmod_at(dfd.as_fd(), n, f.perm).map_err(|e| Error::io("chmod", &shown, e))
    }
}

/// `fchmodat` without following a final symlink (glibc emulates the flag through `/proc`);
/// where that is unsupported, follow: callers only chmod what they found not to be a symlink.
fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, perm: u32) -> std::result::Result<(), Errno> {
    let mode = Mode::from_bits_truncate(perm);
    match nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
            nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Duration;

    /// An entry as a person would compare it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum E {
        File {
            mode: u32,
            bytes: Vec<u8>,
            mtime: (i64, i64),
        },
        Dir {
            mode: u32,
        },
        Symlink(PathBuf),
        Fifo {
            mode: u32,
        },
    }

    type Snap = BTreeMap<PathBuf, E>;

    /// A project and its store, changed the way the FUSE layer changes them: the operation on
    /// the real directory, old bytes into the trash first, then a journal record.
    struct Sim {
        dir: tempfile::TempDir,
        store: Store,
    }

    impl Sim {
        fn new() -> Sim {
            let dir = tempfile::tempdir().unwrap();
            let fd: OwnedFd = fs::File::open(dir.path()).unwrap().into();
            let store = Store::open_or_create(fd.as_fd(), dir.path()).unwrap();
            let s = Sim { dir, store };
            s.rec(Record::new(crate::now_ns(), Op::Mount, ".", 1, "saferoot"));
            s
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn rec(&self, r: Record) {
            self.store.journal().append(&r).unwrap();
        }

        fn r(&self, op: Op, rel: &str) -> Record {
            Record::new(crate::now_ns(), op, rel, 4242, "agent")
        }

        fn mode(&self, rel: &str) -> u32 {
            fs::symlink_metadata(self.p(rel)).unwrap().mode()
        }

        fn create(&self, rel: &str, bytes: &[u8], perm: u32) {
            fs::write(self.p(rel), bytes).unwrap();
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(perm)).unwrap();
            self.rec(Record {
                kind: Some(Kind::File),
                mode: Some(self.mode(rel)),
                ..self.r(Op::Create, rel)
            });
        }

        fn mkdir(&self, rel: &str, perm: u32) {
            fs::create_dir(self.p(rel)).unwrap();
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(perm)).unwrap();
            self.rec(Record {
                kind: Some(Kind::Dir),
                mode: Some(self.mode(rel)),
                ..self.r(Op::Mkdir, rel)
            });
        }

        fn symlink(&self, rel: &str, target: &str) {
            std::os::unix::fs::symlink(target, self.p(rel)).unwrap();
            self.rec(Record {
                kind: Some(Kind::Symlink),
                target: Some(target.into()),
                ..self.r(Op::Symlink, rel)
            });
        }

        fn fifo(&self, rel: &str, perm: u32) {
            nix::unistd::mkfifo(&self.p(rel), Mode::from_bits_truncate(perm)).unwrap();
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(perm)).unwrap();
            self.rec(Record {
                kind: Some(Kind::Fifo),
                mode: Some(self.mode(rel)),
                ..self.r(Op::Mknod, rel)
            });
        }

        fn parent_fd(&self, rel: &str) -> OwnedFd {
            let parent = self.p(rel).parent().unwrap().to_owned();
            fs::File::open(parent).unwrap().into()
        }

        /// Move `rel` (any type, a directory with all it holds) to the trash; returns where.
        fn divert(&self, rel: &str) -> PathBuf {
            let name = Path::new(rel).file_name().unwrap().to_owned();
            self.store
                .divert_to_trash(
                    self.parent_fd(rel).as_fd(),
                    &name,
                    Path::new(rel),
                    crate::now_ns(),
                )
                .unwrap()
        }

        fn unlink(&self, rel: &str) {
            let m = fs::symlink_metadata(self.p(rel)).unwrap();
            let trash = self.divert(rel);
            self.rec(Record {
                trash: Some(trash),
                kind: Kind::from_mode(m.mode()),
                mode: Some(m.mode()),
                ino: Some(m.ino()),
                ..self.r(Op::Unlink, rel)
            });
        }

        fn rmdir(&self, rel: &str) {
            let mode = self.mode(rel);
            fs::remove_dir(self.p(rel)).unwrap();
            self.rec(Record {
                kind: Some(Kind::Dir),
                mode: Some(mode),
                ..self.r(Op::Rmdir, rel)
            });
        }

        fn rename(&self, from: &str, to: &str) {
            let trash = fs::symlink_metadata(self.p(to))
                .is_ok()
                .then(|| self.divert(to));
            fs::rename(self.p(from), self.p(to)).unwrap();
            self.rec(Record {
                to: Some(to.into()),
                trash,
                ..self.r(Op::Rename, from)
            });
        }

        fn chmod(&self, rel: &str, perm: u32) {
            let old = self.mode(rel);
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(perm)).unwrap();
            self.rec(Record {
                mode: Some(self.mode(rel)),
                old_mode: Some(old),
                ..self.r(Op::Setattr, rel)
            });
        }

        /// An instant between two steps, and the tree at that instant.
        fn instant(&self) -> (i64, Snap) {
            std::thread::sleep(Duration::from_millis(2));
            let t = crate::now_ns();
            let snap = self.snap();
            std::thread::sleep(Duration::from_millis(2));
            (t, snap)
        }

        fn snap(&self) -> Snap {
            let root = self.dir.path();
            let mut out = Snap::new();
            for e in walkdir::WalkDir::new(root)
                .min_depth(1)
                .follow_links(false)
                .into_iter()
                .filter_entry(|e| e.depth() != 1 || e.file_name() != STORE_DIR)
            {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                let mode = m.mode() & 0o7777;
                let ft = e.file_type();
                let entry = if ft.is_dir() {
                    E::Dir { mode }
                } else if ft.is_symlink() {
                    E::Symlink(fs::read_link(e.path()).unwrap())
                } else if ft.is_file() {
                    E::File {
                        mode,
                        bytes: fs::read(e.path()).unwrap(),
                        mtime: (m.mtime(), m.mtime_nsec()),
                    }
                } else {
                    E::Fifo { mode }
                };
                out.insert(e.path().strip_prefix(root).unwrap().to_owned(), entry);
            }
            out
        }

        fn opts(&self, t: i64) -> Options {
            Options {
                target_t: t,
                paths: Vec::new(),
                dry_run: false,
                pid: 7,
                comm: "saferoot".into(),
            }
        }

        fn restore(&self, t: i64) -> Report {
            restore(&self.store, &self.opts(t)).unwrap()
        }

        fn journal_len(&self) -> usize {
            journal::read(self.store.dir(), self.store.dir_path())
                .unwrap()
                .0
                .len()
        }

        /// Every regular file in the trash, with its bytes.
        fn trash_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
            let root = self.dir.path().join(STORE_DIR).join(store::TRASH_DIR);
            walkdir::WalkDir::new(&root)
                .into_iter()
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().is_file())
                .map(|e| {
                    (
                        e.path().strip_prefix(&root).unwrap().to_owned(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        }
    }

    fn changes(r: &Report) -> Vec<(char, String)> {
        r.changes
            .iter()
            .map(|c| (c.mark.symbol(), c.path.display().to_string()))
            .collect()
    }

    fn ch(list: &[(char, &str)]) -> Vec<(char, String)> {
        list.iter().map(|(m, p)| (*m, p.to_string())).collect()
    }

    /// Files, directories (one empty), a symlink, a fifo; then replacement, chmod, rename over,
    /// directory rename, rmdir, symlink retargeting, a whole directory to the trash, and a
    /// fifo replaced by a file.
    fn history(s: &Sim) -> Vec<(i64, Snap)> {
        let mut at = vec![s.instant()];
        s.mkdir("src", 0o755);
        s.create("src/main.rs", b"fn main() {}\n", 0o644);
        s.create("notes.txt", b"v1", 0o600);
        s.symlink("link", "src/main.rs");
        s.mkdir("empty", 0o750);
        s.fifo("pipe", 0o640);
        at.push(s.instant());
        s.unlink("notes.txt");
        s.create("notes.txt", b"version two", 0o644);
        s.chmod("src/main.rs", 0o755);
        at.push(s.instant());
        s.create("src/lib.rs", b"pub fn f() {}\n", 0o644);
        s.rename("src/lib.rs", "src/main.rs");
        at.push(s.instant());
        s.rename("src", "code");
        s.rmdir("empty");
        s.unlink("link");
        s.symlink("link", "code/main.rs");
        at.push(s.instant());
        s.mkdir("data", 0o700);
        s.mkdir("data/sub", 0o755);
        s.create("data/sub/a.bin", &[0, 1, 2, 255], 0o640);
        s.create("data/b.bin", b"bbbb", 0o444);
        at.push(s.instant());
        s.unlink("data");
        s.mkdir("data", 0o755);
        s.create("data/b.bin", b"other", 0o644);
        s.unlink("pipe");
        s.create("pipe", b"now a file", 0o644);
        at.push(s.instant());
        at
    }

    #[test]
    fn restore_reproduces_every_recorded_instant() {
        let s = Sim::new();
        let at = history(&s);
        // In an order that goes back, forward and back again: each restore is journaled, and
        // later restores must see through it.
        for i in [3, 1, 6, 0, 4, 2, 5, 6, 1] {
            let (t, want) = &at[i];
            let rep = s.restore(*t);
            assert_eq!(&s.snap(), want, "restore to instant {i}: {rep:?}");
            assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
            // A second restore to the same instant has nothing left to do.
            let again = s.restore(*t);
            assert_eq!(again.changes, vec![], "instant {i}");
        }
    }

    #[test]
    fn dry_run_changes_nothing_and_lists_the_right_marks() {
        let s = Sim::new();
        s.create("gone.txt", b"gone", 0o644);
        s.create("edited.txt", b"old", 0o644);
        s.create("mode.sh", b"#!/bin/sh\n", 0o644);
        s.create("kind", b"a file", 0o644);
        s.mkdir("dir", 0o755);
        s.create("same.txt", b"same", 0o644);
        s.create("copy.txt", b"equal bytes", 0o644);
        let (t, at_t) = s.instant();
        s.unlink("gone.txt");
        s.create("new.txt", b"new", 0o644);
        s.unlink("edited.txt");
        s.create("edited.txt", b"new", 0o644);
        s.chmod("mode.sh", 0o755);
        s.unlink("kind");
        s.mkdir("kind", 0o755);
        s.rmdir("dir");
        // Replaced by identical bytes and mode: not a change.
        s.unlink("copy.txt");
        s.create("copy.txt", b"equal bytes", 0o644);

        let before = s.snap();
        let (jlen, trash) = (s.journal_len(), s.trash_files());
        let rep = restore(
            &s.store,
            &Options {
                dry_run: true,
                ..s.opts(t)
            },
        )
        .unwrap();
        let expected = ch(&[
            ('+', "dir"),
            ('M', "edited.txt"),
            ('+', "gone.txt"),
            ('T', "kind"),
            ('m', "mode.sh"),
            ('-', "new.txt"),
        ]);
        assert_eq!(changes(&rep), expected);
        assert_eq!(s.snap(), before);
        assert_eq!(s.journal_len(), jlen);
        assert_eq!(s.trash_files(), trash);
        assert_eq!(
            serde_json::to_string(&rep.changes[0]).unwrap(),
            r#"{"mark":"added","path":"dir"}"#
        );

        // The real restore makes exactly those changes; equal bytes are left in place (so the
        // file keeps its newer mtime).
        let rep = s.restore(t);
        assert_eq!(changes(&rep), expected);
        let mut now = s.snap();
        let copy = Path::new("copy.txt");
        assert_eq!(now.get(copy), before.get(copy));
        now.insert(copy.to_owned(), at_t[copy].clone());
        assert_eq!(now, at_t);
    }

    #[test]
    fn path_restricted_restore_only_touches_that_subtree() {
        let s = Sim::new();
        s.mkdir("a", 0o755);
        s.create("a/x", b"x", 0o644);
        s.mkdir("b", 0o755);
        s.create("b/y", b"y", 0o644);
        s.create("ab", b"not under a", 0o644);
        let (t, at_t) = s.instant();
        s.unlink("a/x");
        s.create("a/new", b"n", 0o644);
        s.unlink("b/y");
        s.unlink("ab");
        s.create("c.txt", b"c", 0o644);
        let before = s.snap();

        let rep = restore(
            &s.store,
            &Options {
                paths: vec![PathBuf::from("./a")],
                ..s.opts(t)
            },
        )
        .unwrap();
        assert_eq!(changes(&rep), ch(&[('-', "a/new"), ('+', "a/x")]));
        let now = s.snap();
        for (p, e) in &now {
            if p.starts_with("a") {
                assert_eq!(at_t.get(p), Some(e), "{}", p.display());
            } else {
                assert_eq!(before.get(p), Some(e), "{}", p.display());
            }
        }
        for p in at_t.keys().filter(|p| p.starts_with("a")) {
            assert!(now.contains_key(p), "{}", p.display());
        }
        for p in before.keys().filter(|p| !p.starts_with("a")) {
            assert!(now.contains_key(p), "{}", p.display());
        }
        assert!(!now.contains_key(Path::new("b/y")));
        assert!(!now.contains_key(Path::new("ab")));
    }

    #[test]
    fn restricted_restore_recreates_missing_parents_as_they_were() {
        let s = Sim::new();
        s.mkdir("gone", 0o750);
        s.mkdir("gone/deep", 0o700);
        s.create("gone/deep/file", b"deep", 0o600);
        s.create("gone/other", b"other", 0o644);
        let (t, at_t) = s.instant();
        s.unlink("gone/deep/file");
        s.rmdir("gone/deep");
        s.unlink("gone/other");
        s.rmdir("gone");
        let rep = restore(
            &s.store,
            &Options {
                paths: vec![PathBuf::from("gone/deep/file")],
                ..s.opts(t)
            },
        )
        .unwrap();
        assert_eq!(
            changes(&rep),
            ch(&[('+', "gone"), ('+', "gone/deep"), ('+', "gone/deep/file")])
        );
        let now = s.snap();
        for p in ["gone", "gone/deep", "gone/deep/file"] {
            assert_eq!(now.get(Path::new(p)), at_t.get(Path::new(p)), "{p}");
        }
        assert!(!now.contains_key(Path::new("gone/other")));

        // A parent that is now a file is not replaced behind the user's back.
        s.unlink("gone/deep/file");
        s.rmdir("gone/deep");
        s.rmdir("gone");
        s.create("gone", b"a file now", 0o644);
        let e = restore(
            &s.store,
            &Options {
                paths: vec![PathBuf::from("gone/deep/file")],
                ..s.opts(t)
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gone is now a file"), "{e}");
    }

    #[test]
    fn restoring_to_just_before_a_restore_undoes_it() {
        let s = Sim::new();
        let at = history(&s);
        let (t1, at_t1) = &at[2];
        let (before_restore, state) = s.instant();
        assert_eq!(&state, &at[6].1);

        s.restore(*t1);
        assert_eq!(&s.snap(), at_t1);
        // Undo.
        let (after_first, _) = s.instant();
        let rep = s.restore(before_restore);
        assert_eq!(s.snap(), state);
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        // Redo, by restoring to just after the first restore.
        s.restore(after_first);
        assert_eq!(&s.snap(), at_t1);
        // And the undo of the undo of ... still lands on the original.
        s.restore(before_restore);
        assert_eq!(s.snap(), state);
    }

    #[test]
    fn restore_journals_a_marker_and_ordinary_records() {
        let s = Sim::new();
        s.create("f", b"one", 0o644);
        let (t, _) = s.instant();
        s.unlink("f");
        s.create("g", b"two", 0o644);
        let n = s.journal_len();
        s.restore(t);
        let (recs, _) = journal::read(s.store.dir(), s.store.dir_path()).unwrap();
        let new: Vec<_> = recs[n..].iter().map(|r| (r.op, r.path.clone())).collect();
        assert_eq!(
            new,
            vec![
                (Op::Restore, PathBuf::from(".")),
                (Op::Unlink, PathBuf::from("g")),
                (Op::Create, PathBuf::from("f")),
            ]
        );
        let marker = &recs[n];
        assert_eq!(marker.target_t, Some(t));
        assert_eq!((marker.pid, marker.comm.as_str()), (7, "saferoot"));
        assert!(recs[n + 1].trash.is_some());
        assert!(recs[n..].windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn nothing_is_deleted_displaced_entries_go_to_the_trash() {
        let s = Sim::new();
        s.create("keep.txt", b"at T", 0o644);
        let (t, at_t) = s.instant();
        s.unlink("keep.txt");
        s.create("keep.txt", b"after T", 0o644);
        s.mkdir("newdir", 0o755);
        s.create("newdir/a", b"a", 0o644);
        s.create("newdir/b", b"b", 0o644);
        s.create("top", b"top", 0o644);
        let before = s.trash_files();
        s.restore(t);
        assert_eq!(s.snap(), at_t);
        let after = s.trash_files();
        // Everything that was in the trash is still there, unchanged...
        for (p, bytes) in &before {
            assert_eq!(after.get(p), Some(bytes), "{}", p.display());
        }
        // ...and the four displaced files joined it, findable by their paths.
        assert_eq!(after.len(), before.len() + 4);
        let added: BTreeMap<String, Vec<u8>> = after
            .iter()
            .filter(|(p, _)| !before.contains_key(*p))
            .map(|(p, b)| {
                let rel: PathBuf = p.components().skip(1).collect();
                (rel.display().to_string(), b.clone())
            })
            .collect();
        let expect: BTreeMap<String, Vec<u8>> = [
            ("keep.txt", &b"after T"[..]),
            ("newdir/a", b"a"),
            ("newdir/b", b"b"),
            ("top", b"top"),
        ]
        .into_iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
        assert_eq!(added, expect);
    }

    #[test]
    fn target_before_the_first_record_is_an_error() {
        let s = Sim::new();
        let (recs, _) = journal::read(s.store.dir(), s.store.dir_path()).unwrap();
        let first = recs[0].t;
        let e = restore(&s.store, &s.opts(first - 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("nothing is recorded before {}", format_utc(first))),
            "{e}"
        );
        assert!(e.contains("try a later TIME"), "{e}");
        // The first instant itself is fine, and reported.
        let rep = s.restore(first);
        assert_eq!(rep.first_t, first);
    }

    #[test]
    fn empty_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = fs::File::open(dir.path()).unwrap().into();
        let store = Store::open_or_create(fd.as_fd(), dir.path()).unwrap();
        let e = restore(
            &store,
            &Options {
                target_t: 0,
                paths: vec![],
                dry_run: true,
                pid: 1,
                comm: "t".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "no history yet: nothing has been recorded for this directory"
        );
    }

    #[test]
    fn escaping_and_store_paths_are_rejected() {
        let s = Sim::new();
        let (t, _) = s.instant();
        for bad in [
            "/etc",
            "../x",
            "a/../../b",
            ".saferoot",
            ".saferoot/journal",
        ] {
            let r = restore(
                &s.store,
                &Options {
                    paths: vec![PathBuf::from(bad)],
                    ..s.opts(t)
                },
            );
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        // "." is the whole tree.
        let rep = restore(
            &s.store,
            &Options {
                paths: vec![PathBuf::from(".")],
                dry_run: true,
                ..s.opts(t)
            },
        )
        .unwrap();
        assert!(rep.changes.is_empty());
    }

    #[test]
    fn content_that_was_not_kept_is_reported() {
        let s = Sim::new();
        s.create("w", b"before", 0o644);
        s.create("lost", b"lost", 0o644);
        s.create("trunc", b"long content", 0o644);
        let (t, _) = s.instant();
        fs::write(s.p("w"), b"after").unwrap();
        s.rec(s.r(Op::Write, "w"));
        // An unlink whose bytes were not kept (e.g. a crash before the record was completed).
        fs::remove_file(s.p("lost")).unwrap();
        s.rec(s.r(Op::Unlink, "lost"));
        fs::write(s.p("trunc"), b"").unwrap();
        s.rec(Record {
            size: Some(0),
            ..s.r(Op::Setattr, "trunc")
        });
        let rep = s.restore(t);
        assert!(rep.changes.is_empty(), "{:?}", rep.changes);
        let w = rep.warnings.join("\n");
        assert!(
            w.contains("2 file(s) were written after") && w.contains("trunc, w"),
            "{w}"
        );
        assert!(
            w.contains("lost: removed at")
                && w.contains("without its content being kept; not restored"),
            "{w}"
        );
        assert_eq!(fs::read(s.p("w")).unwrap(), b"after");
    }

    #[test]
    fn hard_links_objects_and_exchanges_are_undone() {
        let s = Sim::new();
        s.create("a", b"shared bytes", 0o640);
        s.create("x", b"xxx", 0o644);
        s.create("y", b"yy", 0o600);
        let (t, at_t) = s.instant();
        // ln a b; rm a: the file survives as b, so the FUSE layer keeps a's content as an object.
        fs::hard_link(s.p("a"), s.p("b")).unwrap();
        s.rec(Record {
            to: Some("b".into()),
            ..s.r(Op::Link, "a")
        });
        let f = fs::File::open(s.p("a")).unwrap();
        let hex = s.store.put_object(f.as_fd()).unwrap();
        let mode = s.mode("a");
        fs::remove_file(s.p("a")).unwrap();
        s.rec(Record {
            object: Some(hex),
            mode: Some(mode),
            kind: Some(Kind::File),
            ..s.r(Op::Unlink, "a")
        });
        // mv --exchange x y
        nix::fcntl::renameat2(
            s.store.project(),
            "x",
            s.store.project(),
            "y",
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .unwrap();
        s.rec(Record {
            to: Some("y".into()),
            ..s.r(Op::Exchange, "x")
        });
        let rep = s.restore(t);
        assert_eq!(
            changes(&rep),
            ch(&[('+', "a"), ('-', "b"), ('M', "x"), ('M', "y")])
        );
        let now = s.snap();
        // "a" comes from the object store: bytes and mode as at T, not its mtime.
        for (p, e) in &at_t {
            match (e, now.get(p)) {
                (
                    E::File { mode, bytes, .. },
                    Some(E::File {
                        mode: m, bytes: b, ..
                    }),
                ) if p == Path::new("a") => {
                    assert_eq!((mode, bytes), (m, b));
                }
                (e, got) => assert_eq!(Some(e), got, "{}", p.display()),
            }
        }
        assert_eq!(now.len(), at_t.len());
    }

    #[test]
    fn read_only_directories_are_filled_and_stay_read_only() {
        // Unprivileged: the directories are opened up around the changes (and really refuse
        // them otherwise when the tests run as a normal user). Privileged only when root.
        let mut modes = vec![false];
        if nix::unistd::geteuid().is_root() {
            modes.push(true);
        }
        for privileged in modes {
            let s = Sim::new();
            s.mkdir("ro", 0o755);
            s.create("ro/f", b"f", 0o444);
            s.chmod("ro", 0o555);
            s.mkdir("gone", 0o755);
            s.create("gone/g", b"g", 0o644);
            s.chmod("gone", 0o500);
            let (t, at_t) = s.instant();
            s.chmod("ro", 0o755);
            s.unlink("ro/f");
            s.create("ro/new", b"n", 0o644);
            s.chmod("ro", 0o555);
            s.chmod("gone", 0o700);
            s.unlink("gone/g");
            s.rmdir("gone");
            let rep = restore_as(&s.store, &s.opts(t), privileged).unwrap();
            assert_eq!(
                changes(&rep),
                ch(&[
                    ('+', "gone"),
                    ('+', "gone/g"),
                    ('+', "ro/f"),
                    ('-', "ro/new")
                ]),
                "privileged: {privileged}"
            );
            assert_eq!(s.snap(), at_t, "privileged: {privileged}");
            // The directory's own mode change is a journaled change too.
            s.chmod("ro", 0o700);
            restore_as(&s.store, &s.opts(t), privileged).unwrap();
            assert_eq!(s.snap(), at_t, "privileged: {privileged}");
            fs::set_permissions(s.p("ro"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(s.p("gone"), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn restored_directories_get_their_mode_and_mtime_last() {
        let s = Sim::new();
        s.mkdir("d", 0o751);
        s.create("d/f", b"f", 0o644);
        let old = filetime(&s.p("d"));
        // Make the directory's mtime distinctive.
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &s.p("d"),
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(1_600_000_000, 5),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        assert_ne!(filetime(&s.p("d")), old);
        let (t, at_t) = s.instant();
        s.unlink("d");
        s.restore(t);
        assert_eq!(s.snap(), at_t);
        assert_eq!(filetime(&s.p("d")), (1_600_000_000, 5));
    }

    fn filetime(p: &Path) -> (i64, i64) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    #[test]
    fn a_missing_trash_item_is_reported_not_invented() {
        let s = Sim::new();
        s.create("f", b"f", 0o644);
        let (t, _) = s.instant();
        s.unlink("f");
        // Retention (or a person) removed the trash bucket.
        fs::remove_dir_all(s.p(".saferoot/trash")).unwrap();
        let rep = s.restore(t);
        assert!(rep.changes.is_empty());
        let w = rep.warnings.join("\n");
        assert!(
            w.contains("f: removed at") && w.contains("no longer in the trash"),
            "{w}"
        );
    }

    #[test]
    fn nothing_to_change_writes_nothing() {
        let s = Sim::new();
        s.create("f", b"f", 0o644);
        let (t, _) = s.instant();
        let n = s.journal_len();
        let rep = s.restore(t);
        assert!(rep.changes.is_empty() && rep.warnings.is_empty());
        assert_eq!(s.journal_len(), n);
    }

    #[test]
    fn mark_symbols() {
        let all = [
            Mark::Added,
            Mark::Removed,
            Mark::Content,
            Mark::Mode,
            Mark::Type,
        ];
        let s: String = all.iter().map(|m| m.symbol()).collect();
        assert_eq!(s, "+-MmT");
    }
}
