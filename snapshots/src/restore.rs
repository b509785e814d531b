//! Restore: put the project tree back the way it was at an instant T, say what that changes,
//! copy the tree of T somewhere else, compare two instants, and bring back deleted paths.
//!
//! How: read the tree as it is now (through the fd on the real project directory, never through
//! the mount), then walk the journal backwards from now to T undoing each record on a *virtual*
//! copy of that tree. Every entry of the virtual tree remembers where its bytes can be read from
//! (the live tree, the trash, the object store) instead of holding them. That one rollback
//! ([`tree_at`]) serves every command here:
//!
//! - [`restore`]: the difference between the virtual tree (T) and the real one (now) is the list
//!   of changes; executing it displaces what must change into the trash, then puts back copies
//!   of what T had.
//! - [`materialize`] (`restore --to DIR`): copies the virtual tree into another directory.
//! - [`diff`]: compares the virtual trees of two instants (or one and now).
//! - [`undelete`]: finds in the journal the change that removed a path and restores that path to
//!   the instant just before it.
//!
//! Restore never deletes anything: what it replaces is moved to the trash and journaled like any
//! other unlink, and what it puts back is journaled as ordinary creations. A later restore to an
//! instant just before this one therefore undoes it. `materialize` and `diff` change nothing in
//! the project and journal nothing.
//!
//! What this module does not do (yet): use snapshot manifests to shorten the replay, preserve
//! hard links between restored files (each name gets its own copy), or restore the project
//! directory's own mode. A file written in place without a kept pre-image (a journal from
//! before pre-images existed) is restored as it is now, with a warning.

use crate::config::{Config, CONFIG_FILE};
use crate::journal::{self, Kind, Op, Record};
use crate::store::{self, check_relative, object_rel, STORE_DIR};
use crate::time::format_utc;
use crate::{index, relpath, Error, Result, Store};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// How a path differs between now and the instant restored to (or, for [`diff`], between the
/// first instant and the second).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Existed at T, does not exist now: put back. (diff: exists at T2 only.)
    Added,
    /// Exists now, did not exist at T: moved to the trash. (diff: exists at T1 only.)
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
    /// Files that could not be restored because their kept content is damaged (an object whose
    /// bytes do not match its name), one line each naming the object and the path. The
    /// command that gets any should fail.
    pub errors: Vec<String>,
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
    let scopes = scopes(&opts.paths, "restore")?;
    let past = Past::read(store)?;
    past.check(opts.target_t)?;
    let current = live_tree(store)?;
    let (want, mut warnings) = one_tree(store, &past, &current, opts.target_t)?;

    let mut fs = Fs::new(store);
    let plan = plan(
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
    let mut errors = Vec::new();
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
            errors: Vec::new(),
        };
        let marker_path = scopes
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("."));
        ex.journal(Record {
            target_t: Some(opts.target_t),
            ..ex.record(Op::Restore, &marker_path)
        })?;
        let _progress = crate::progress::task("restore", Some(plan.len() as u64));
        ex.run(&plan)?;
        errors = std::mem::take(&mut ex.errors);
        store.journal().sync()?;
    }
    Ok(Report {
        changes,
        warnings,
        errors,
        first_t: past.first_t,
    })
}

/// The tree of the project as it was at one instant: the result of the rollback every command
/// of this module starts from.
#[derive(Debug, Clone)]
pub struct TreeAt {
    /// The instant (UTC ns).
    pub t: i64,
    /// Every entry at `t` under the paths asked for, parents before children. Entries whose
    /// content was not kept are included with [`Source::Unknown`].
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Where the tree may differ from the real one at `t`, one line each.
    pub warnings: Vec<String>,
    /// The first instant the journal knows (UTC ns).
    pub first_t: i64,
}

/// The virtual tree at instant `t`, restricted to `paths` (project-relative, each with what is
/// below it; empty = the whole tree). Reads the project and the store; changes nothing.
pub fn tree_at(store: &Store, t: i64, paths: &[PathBuf]) -> Result<TreeAt> {
    let scopes = scopes(paths, "show")?;
    let past = Past::read(store)?;
    past.check(t)?;
    let live = live_tree(store)?;
    let (tree, mut warnings) = one_tree(store, &past, &live, t)?;
    let entries: Tree = tree
        .into_iter()
        .filter(|(p, _)| in_scope(p, &scopes))
        .collect();
    let at = format_utc(t);
    let mut written = Vec::new();
    for (p, e) in &entries {
        if let Source::Unknown(why) = &e.src {
            warnings.push(format!("{}: {why}", p.display()));
        }
        if e.written.is_some() {
            written.push(p.display().to_string());
        }
    }
    warnings.extend(written_warning(written, &at, "shown"));
    Ok(TreeAt {
        t,
        entries,
        warnings,
        first_t: past.first_t,
    })
}

/// Content hashes of tree entries, reusing what is already known: objects are named by their
/// hash, trash items are listed in the index, and files hashed before (by the daemon for a
/// pre-image, or earlier here) are in the store's hash cache; only the rest is read.
pub struct Hasher<'a> {
    fs: Fs<'a>,
}

impl<'a> Hasher<'a> {
    pub fn new(store: &'a Store) -> Self {
        Hasher { fs: Fs::new(store) }
    }

    /// The blake3 (hex) of the content `e` (the entry at `path`) had; `None` for anything but
    /// a regular file whose content is known.
    pub fn blake3(&mut self, path: &Path, e: &Entry) -> Result<Option<String>> {
        if e.kind != Kind::File || matches!(e.src, Source::Fresh | Source::Unknown(_)) {
            return Ok(None);
        }
        Ok(Some(self.fs.hash(&e.src, path)?.to_hex().to_string()))
    }
}

/// How the project changed from instant `t1` to instant `t2` (`None`: to now, the live tree),
/// within `paths` (empty = everywhere). Marks as for a restore from `t1` to `t2`: `+` exists at
/// `t2` only, `-` at `t1` only, `M` other content, `m` other mode only, `T` other type.
/// Changes nothing and journals nothing. `t1` may be later than `t2`: the marks are reversed.
pub fn diff(store: &Store, t1: i64, t2: Option<i64>, paths: &[PathBuf]) -> Result<Report> {
    let scopes = scopes(paths, "diff")?;
    let past = Past::read(store)?;
    past.check(t1)?;
    if let Some(t2) = t2 {
        past.check(t2)?;
    }
    let live = live_tree(store)?;
    let instants: Vec<i64> = std::iter::once(t1).chain(t2).collect();
    let mut trees = trees_at(store, &past, &live, &instants)?.into_iter();
    let (a, mut warnings) = trees.next().unwrap_or_default();
    let b = match trees.next() {
        Some((b, w)) => {
            for w in w {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
            b
        }
        None => live,
    };
    let at1 = format_utc(t1);
    let at2 = t2.map(format_utc).unwrap_or_else(|| "now".into());
    let mut fs = Fs::new(store);
    let keys: BTreeSet<&PathBuf> = a
        .keys()
        .chain(b.keys())
        .filter(|p| in_scope(p, &scopes))
        .collect();
    let mut changes = Vec::new();
    let mut written = Vec::new();
    for p in keys {
        let (ea, eb) = (a.get(p), b.get(p));
        let unknown: Vec<&String> = [ea, eb]
            .into_iter()
            .flatten()
            .filter_map(|e| match &e.src {
                Source::Unknown(why) => Some(why),
                _ => None,
            })
            .collect();
        if !unknown.is_empty() {
            let both = ea.is_some() && eb.is_some();
            for why in unknown {
                let what = if both { "; not compared" } else { "" };
                warnings.push(format!("{}: {why}{what}", p.display()));
            }
            if both {
                continue;
            }
        }
        // Content written in place after an instant, without a kept pre-image, is only known
        // as it is now.
        let t2_or_now = t2.unwrap_or(i64::MAX);
        if ea.and_then(|e| e.written).is_some_and(|tw| tw <= t2_or_now)
            || eb.is_some_and(|e| e.written.is_some())
        {
            written.push(p.display().to_string());
        }
        if let Some(mark) = compare(&mut fs, p, ea, eb)? {
            changes.push(Change {
                mark,
                path: p.clone(),
            });
        }
    }
    warnings.extend(written_warning(written, &at1, "compared"));
    let config = Config::load(store)?;
    for s in &scopes {
        let is_dir = [&a, &b]
            .iter()
            .find_map(|t| t.get(s))
            .is_none_or(|e| e.kind == Kind::Dir);
        if config.is_scratch(s, is_dir) {
            warnings.push(format!(
                "{}: in a scratch tree (not versioned, see {STORE_DIR}/{CONFIG_FILE}): changes \
                 there are not recorded, so none are listed",
                s.display()
            ));
        }
        if !a.contains_key(s) && !b.contains_key(s) {
            warnings.push(format!(
                "{}: did not exist at {at1} and does not exist at {at2}",
                s.display()
            ));
        }
    }
    Ok(Report {
        changes,
        warnings,
        errors: Vec::new(),
        first_t: past.first_t,
    })
}

/// Write the tree of instant `t` (or only `paths`, each with its parent directories as they
/// were at `t`) into the directory `dest`: content, types, modes, symlink targets, empty
/// directories, special files, mtimes (and owners, when run as root). `dest` must not exist
/// or be an empty directory, and must not be inside the project (it would be written into the
/// tree it is read from); nothing is written otherwise. The project is not changed and nothing
/// is journaled. The report lists every path written, as added.
pub fn materialize(store: &Store, t: i64, paths: &[PathBuf], dest: &Path) -> Result<Report> {
    materialize_as(store, t, paths, dest, nix::unistd::geteuid().is_root())
}

fn materialize_as(
    store: &Store,
    t: i64,
    paths: &[PathBuf],
    dest: &Path,
    privileged: bool,
) -> Result<Report> {
    let scopes = scopes(paths, "restore")?;
    let (dest_real, dest_exists) = check_dest(store, dest)?;
    let past = Past::read(store)?;
    past.check(t)?;
    let live = live_tree(store)?;
    let (tree, mut warnings) = one_tree(store, &past, &live, t)?;
    let at = format_utc(t);
    let config = Config::load(store)?;

    let mut todo: Tree = tree
        .iter()
        .filter(|(p, _)| in_scope(p, &scopes))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    for s in &scopes {
        if !tree.contains_key(s) {
            warnings.push(format!("{}: did not exist at {at}", s.display()));
            continue;
        }
        for a in s.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            match tree.get(a) {
                Some(e) if e.kind == Kind::Dir && !e.unknown() => {
                    todo.entry(a.to_owned()).or_insert_with(|| e.clone());
                }
                _ => {
                    todo.entry(a.to_owned())
                        .or_insert_with(|| Entry::bare(Kind::Dir, 0o755, Source::Fresh));
                }
            }
        }
    }

    if !dest_exists {
        std::fs::create_dir_all(&dest_real).map_err(|e| Error::Io {
            op: "create directory",
            path: dest_real.clone(),
            cause: e,
        })?;
    }
    let root = nix::fcntl::open(
        &dest_real,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", &dest_real, e))?;
    let mut fs = Fs::new(store);
    let mut out = Dirs::new(root, dest_real.clone());
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut finish: Vec<(PathBuf, Entry)> = Vec::new();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let mut written = Vec::new();
    let _progress = crate::progress::task("restore --to", Some(todo.len() as u64));
    for (p, e) in &todo {
        crate::progress::advance(1);
        let Ok((d, n)) = split(p) else { continue };
        if !d.as_os_str().is_empty() && !made.contains(d) {
            // Below something that could not be written (its warning says why).
            continue;
        }
        if let Source::Unknown(why) = &e.src {
            warnings.push(format!("{}: {why}; not restored", p.display()));
            continue;
        }
        if e.kind == Kind::Dir && config.is_scratch(p, true) {
            // Its past is not recorded: copying it as it is now would pass today's build
            // products off as the ones of `t`, at the cost scratch trees exist to avoid.
            warnings.push(format!(
                "{}: a scratch tree (not versioned, see {STORE_DIR}/{CONFIG_FILE}); not copied",
                p.display()
            ));
            continue;
        }
        if e.written.is_some() {
            written.push(p.display().to_string());
        }
        let dfd = out.dir(d)?;
        let shown = dest_real.join(p);
        match e.kind {
            Kind::Dir => {
                nix::sys::stat::mkdirat(dfd.as_fd(), n, Mode::from_bits_truncate(e.perm | 0o700))
                    .map_err(|err| Error::io("create directory", &shown, err))?;
                made.insert(p.clone());
                finish.push((p.clone(), e.clone()));
            }
            Kind::File => {
                if let Copied::Damaged(why) =
                    copy_file_at(&mut fs, dfd.as_fd(), n, p, e, &shown, privileged)?
                {
                    errors.push(why);
                    continue;
                }
            }
            Kind::Symlink => {
                let target = e.target.clone().unwrap_or_default();
                nix::unistd::symlinkat(target.as_os_str(), dfd.as_fd(), n)
                    .map_err(|err| Error::io("create symlink", &shown, err))?;
                set_owner_and_mtime(dfd.as_fd(), n, e, &shown, privileged)?;
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                if !make_special(dfd.as_fd(), n, e, &shown, privileged)? {
                    warnings.push(format!(
                        "{}: a {} cannot be created without privileges; not restored",
                        p.display(),
                        e.kind.name()
                    ));
                    continue;
                }
            }
        }
        changes.push(Change {
            mark: Mark::Added,
            path: p.clone(),
        });
    }
    // Directories last, deepest first, once nothing more is added to them.
    for (p, e) in finish.iter().rev() {
        let (d, n) = split(p)?;
        let dfd = out.dir(d)?;
        let shown = dest_real.join(p);
        set_owner_and_mtime(dfd.as_fd(), n, e, &shown, privileged)?;
        chmod_at(dfd.as_fd(), n, e.perm).map_err(|err| Error::io("chmod", &shown, err))?;
    }
    warnings.extend(written_warning(written, &at, "copied"));
    Ok(Report {
        changes,
        warnings,
        errors,
        first_t: past.first_t,
    })
}

/// Check a destination for [`materialize`]: outside the project, and either missing or an empty
/// directory. Returns it absolute with symlinks resolved, and whether it exists.
fn check_dest(store: &Store, dest: &Path) -> Result<(PathBuf, bool)> {
    let refuse = |why: &str| {
        Err(Error::Invalid(format!(
            "cannot restore into {}: {why}",
            dest.display()
        )))
    };
    let abs = std::path::absolute(dest).map_err(|e| Error::Io {
        op: "resolve",
        path: dest.to_owned(),
        cause: e,
    })?;
    // The deepest part that exists, with its symlinks resolved, then the rest as given.
    let comps: Vec<Component> = abs.components().collect();
    let mut n = comps.len();
    let real_base = loop {
        let prefix: PathBuf = comps[..n].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(p) => break p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n > 1 => n -= 1,
            Err(e) => {
                return Err(Error::Io {
                    op: "resolve",
                    path: prefix,
                    cause: e,
                })
            }
        }
    };
    let exists = n == comps.len();
    let mut real = real_base.clone();
    for c in &comps[n..] {
        match c {
            Component::Normal(s) => real.push(s),
            _ => return refuse("its path has `.` or `..` after a part that does not exist"),
        }
    }
    let project = &store.project_path();
    let project_real = std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf());
    let project_st = nix::sys::stat::fstat(store.project()).ok();
    let is_project = |p: &Path| {
        p.starts_with(&project_real)
            || project_st.is_some_and(|ps| {
                nix::sys::stat::stat(p)
                    .is_ok_and(|st| (st.st_dev, st.st_ino) == (ps.st_dev, ps.st_ino))
            })
    };
    if real_base.ancestors().any(is_project) {
        return refuse(&format!(
            "it is inside the project {} (restoring into it would change the tree being read); \
             choose a directory outside it",
            project.display()
        ));
    }
    if exists {
        let md = std::fs::metadata(&real).map_err(|e| Error::Io {
            op: "stat",
            path: real.clone(),
            cause: e,
        })?;
        if !md.is_dir() {
            return refuse("it exists and is not a directory");
        }
        let mut entries = std::fs::read_dir(&real).map_err(|e| Error::Io {
            op: "read directory",
            path: real.clone(),
            cause: e,
        })?;
        if entries.next().is_some() {
            return refuse("it is not empty (give a new or empty directory)");
        }
    }
    Ok((real, exists))
}

/// What [`undelete`] brought back for one path.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Undeleted {
    #[serde(with = "relpath")]
    pub path: PathBuf,
    /// What it was when it was removed.
    pub kind: Kind,
    /// The record that removed it: when, how, and by which process.
    pub removed_t: i64,
    pub removed_op: Op,
    pub removed_pid: u32,
    pub removed_comm: String,
    /// The instant the path was restored to (just before the removal, or before the first
    /// removal of the `rm -rf` that emptied it, for a directory).
    pub target_t: i64,
    /// What the restore of the path changed, sorted by path.
    pub changes: Vec<Change>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UndeleteReport {
    /// In the order the paths were given.
    pub items: Vec<Undeleted>,
    pub warnings: Vec<String>,
    /// Files not brought back because their kept content is damaged (see [`Report::errors`]).
    pub errors: Vec<String>,
}

/// Records this far apart (or more) are not one `rm -rf`: see [`find_removal`].
const RUN_GAP_NS: i64 = 10_000_000_000;

/// Bring back the most recently removed version of each of `paths` (project-relative): find the
/// newest journal record that removed it (an unlink or rmdir of it or of a directory holding
/// it, a rename that moved it away or replaced it, a restore that displaced it), and restore
/// that path only to the instant just before. A directory emptied entry by entry before its
/// rmdir (`rm -rf`) comes back as it was before the first of those removals, whole.
///
/// Whatever is at a path now is displaced to the trash, as by any restore: journaled by `pid`
/// and `comm`, and undoable. If a path was never removed, nothing at all is changed.
pub fn undelete(store: &Store, paths: &[PathBuf], pid: u32, comm: &str) -> Result<UndeleteReport> {
    let scopes = scopes(paths, "undelete")?;
    if scopes.is_empty() {
        return Err(Error::Invalid(
            "undelete needs the paths to bring back (to go back in time as a whole, use restore)"
                .into(),
        ));
    }
    // Check every path first: none is changed unless all can be found.
    {
        let past = Past::read(store)?;
        let live = live_tree(store)?;
        for p in &scopes {
            let found = find_removal(store, &past, &live, p)?;
            past.check(found.target_t)?;
        }
    }
    let mut report = UndeleteReport {
        items: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    for p in &scopes {
        // Again: the previous path's restore is part of the history now.
        let past = Past::read(store)?;
        let live = live_tree(store)?;
        let found = find_removal(store, &past, &live, p)?;
        let r = &past.records[found.idx];
        let rep = restore(
            store,
            &Options {
                target_t: found.target_t,
                paths: vec![p.clone()],
                dry_run: false,
                pid,
                comm: comm.to_owned(),
            },
        )?;
        for w in rep.warnings {
            if !report.warnings.contains(&w) {
                report.warnings.push(w);
            }
        }
        report.errors.extend(rep.errors);
        report.items.push(Undeleted {
            path: p.clone(),
            kind: found.kind,
            removed_t: r.t,
            removed_op: r.op,
            removed_pid: r.pid,
            removed_comm: r.comm.clone(),
            target_t: found.target_t,
            changes: rep.changes,
        });
    }
    Ok(report)
}

struct Removal {
    /// Index in `Past::records` of the record that removed the path.
    idx: usize,
    kind: Kind,
    target_t: i64,
}

/// The newest record that removed `p`, found by rolling the tree back one record at a time:
/// `p` exists just before the record and not just after it (or the record renamed something
/// over `p` or over a directory holding it).
///
/// A directory removed by `rmdir` was empty by then; if what emptied it was a run of unlinks
/// and rmdirs below it (`rm -rf`, `find -delete`, `shutil.rmtree`), the target goes back to
/// just before the first removal of that run. The run is the removals below `p` that precede
/// the rmdir with no other change below `p` in between, no mount, run or restore marker, and no
/// pause longer than [`RUN_GAP_NS`] between two of them; changes elsewhere in the tree do not
/// end it.
fn find_removal(store: &Store, past: &Past, live: &Tree, p: &Path) -> Result<Removal> {
    let mut rb = Rollback {
        store,
        tree: live.clone(),
        mismatches: 0,
        skipped: 0,
    };
    let recs = &past.records;
    for i in (0..recs.len()).rev() {
        let r = &recs[i];
        let after = rb.tree.contains_key(p);
        rb.undo(r)?;
        let touches = p.starts_with(&r.path) || r.to.as_deref().is_some_and(|to| p.starts_with(to));
        let Some(e) = rb.tree.get(p) else { continue };
        let replaced = r.op == Op::Rename
            && (r.trash.is_some() || r.object.is_some())
            && r.to.as_deref().is_some_and(|to| p.starts_with(to));
        if !touches || (after && !replaced) {
            continue;
        }
        if let Source::Unknown(why) = &e.src {
            return Err(Error::Invalid(format!(
                "cannot undelete {}: {why}",
                p.display()
            )));
        }
        let kind = e.kind;
        let mut first = i;
        if r.op == Op::Rmdir && r.path == p {
            let mut last_t = r.t;
            for j in (0..i).rev() {
                let q = &recs[j];
                if matches!(
                    q.op,
                    Op::Mount | Op::Umount | Op::Restore | Op::Run | Op::Gc | Op::Repair
                ) {
                    break;
                }
                let below =
                    q.path.starts_with(p) || q.to.as_deref().is_some_and(|to| to.starts_with(p));
                if !below {
                    continue;
                }
                let removal =
                    matches!(q.op, Op::Unlink | Op::Rmdir) && q.path != p && q.to.is_none();
                if !removal || last_t - q.t > RUN_GAP_NS {
                    break;
                }
                first = j;
                last_t = q.t;
            }
        }
        return Ok(Removal {
            idx: i,
            kind,
            target_t: recs[first].t - 1,
        });
    }
    if Config::load(store).is_ok_and(|c| c.is_scratch(p, true)) {
        return Err(Error::Invalid(format!(
            "cannot undelete {}: it is in a scratch tree (not versioned, see \
             {STORE_DIR}/{CONFIG_FILE}), so nothing removed there is kept",
            p.display()
        )));
    }
    if let Some((_, why)) = &past.horizon {
        return Err(Error::Invalid(format!(
            "cannot undelete {}: the journal has no record of it being removed since the \
             oldest restorable instant ({why})",
            p.display()
        )));
    }
    Err(Error::Invalid(format!(
        "cannot undelete {}: the journal has no record of it being removed",
        p.display()
    )))
}

/// Run the read-only computation `f` (a diff, a dry run) again when it failed because a file
/// of the live tree went away while it was being read (another process working through the
/// mount at the same time): up to five times, then say so in one line.
pub fn read_consistently<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let racing = |e: &Error| match e {
        Error::Io { cause, .. } => matches!(
            cause.raw_os_error(),
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ESTALE)
        ),
        _ => false,
    };
    let mut last = None;
    for attempt in 0..5 {
        match f() {
            Err(e) if racing(&e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
            }
            r => return r,
        }
    }
    Err(Error::Invalid(format!(
        "the tree kept changing while it was read ({}); try again",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The journal, read once and put in time order.
struct Past {
    records: Vec<Record>,
    /// Damaged lines skipped on read: their changes are unknown.
    damaged: Vec<journal::Damaged>,
    /// The journal file, to name in messages.
    journal_path: PathBuf,
    first_t: i64,
    /// The oldest restorable instant set by `gc` or `doctor --repair`, with why.
    horizon: Option<(i64, String)>,
}

impl Past {
    fn read(store: &Store) -> Result<Past> {
        let (mut records, report) = journal::read(store.dir(), store.dir_path())?;
        records.sort_by_key(|r| r.t);
        let Some(first_t) = records.first().map(|r| r.t) else {
            if let Some(why) = crate::recover::journal_lost(store)? {
                return Err(Error::Invalid(why));
            }
            return Err(Error::Invalid(
                "no history yet: nothing has been recorded for this directory".into(),
            ));
        };
        let horizon = journal::horizon(&records).map(|(h, r)| (h, horizon_reason(r)));
        Ok(Past {
            records,
            damaged: report.damaged,
            journal_path: store.dir_path().join(journal::JOURNAL_FILE),
            first_t: horizon.as_ref().map_or(first_t, |(h, _)| first_t.min(*h)),
            horizon,
        })
    }

    /// Refuse an instant before the journal begins, before what `gc` or a repair left, or
    /// before a damaged journal line (the walk back would have to undo a change it does not
    /// know): the tree is not known there, and a part of it is not restored as if it were.
    fn check(&self, t: i64) -> Result<()> {
        let at = format_utc(t);
        // A damaged line blocks every instant before the first good record after it (in file
        // order); with several, the one that leaves the least history says what is left.
        let damage = self
            .damaged
            .iter()
            .filter(|d| d.after_t.is_none_or(|a| t < a))
            .max_by_key(|d| (d.after_t.unwrap_or(i64::MAX), d.line));
        let horizon = self.horizon.as_ref().filter(|(h, _)| t < *h);
        let damage_bound = damage.map(|d| d.after_t.unwrap_or(i64::MAX));
        if let Some(d) = damage.filter(|_| horizon.is_none_or(|(h, _)| damage_bound >= Some(*h))) {
            let line = format!(
                "line {} of {} is damaged (its change is unknown)",
                d.line,
                self.journal_path.display()
            );
            return Err(Error::Invalid(match d.after_t {
                Some(a) => format!(
                    "cannot go back to {at}: {line}; instants from {} on can still be \
                     restored; run `saferoot doctor`",
                    format_utc(a)
                ),
                None => format!(
                    "cannot go back to {at}: {line}, and no instant after it is known yet (no \
                     intact record follows it, or a file open for writing across it has not been \
                     closed); run `saferoot doctor`"
                ),
            }));
        }
        if let Some((h, why)) = horizon {
            return Err(Error::Invalid(format!(
                "cannot go back to {at}: {why}; the oldest restorable instant is {}",
                format_utc(*h)
            )));
        }
        if t < self.first_t {
            return Err(Error::Invalid(format!(
                "nothing is recorded before {} (the first mount), so the tree is not known at \
                 {}; try a later TIME (that instant itself is the tree as the mount found it)",
                format_utc(self.first_t),
                format_utc(t)
            )));
        }
        Ok(())
    }
}

/// Why history ends where the `gc` or `repair` record `r` says, for people.
pub fn horizon_reason(r: &Record) -> String {
    let h = r.target_t.unwrap_or(r.t);
    match r.op {
        Op::Repair => format!(
            "the history before {} was set aside as damaged by `saferoot doctor --repair` at {}",
            format_utc(h),
            format_utc(r.t)
        ),
        _ => format!(
            "the history before {} was collected by `saferoot gc` at {}",
            format_utc(h),
            format_utc(r.t)
        ),
    }
}

/// The trees at each of `instants` (in that order), each with the warnings of its rollback:
/// one walk back from the live tree, undoing every record newer than each instant.
fn trees_at(
    store: &Store,
    past: &Past,
    live: &Tree,
    instants: &[i64],
) -> Result<Vec<(Tree, Vec<String>)>> {
    let mut order: Vec<usize> = (0..instants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(instants[i]));
    let mut rb = Rollback {
        store,
        tree: live.clone(),
        mismatches: 0,
        skipped: 0,
    };
    let mut next = past.records.len();
    let mut out: Vec<Option<(Tree, Vec<String>)>> = vec![None; instants.len()];
    let sessions = write_sessions(&past.records);
    for i in order {
        let t = instants[i];
        while next > 0 && past.records[next - 1].t > t {
            next -= 1;
            rb.undo(&past.records[next])?;
        }
        // A file in the middle of a write session at t is as it was when the session began.
        let open: Vec<&Record> = sessions
            .iter()
            .filter(|(w, end)| w.t <= t && t < *end)
            .map(|(w, _)| *w)
            .collect();
        let (mut tree, mut warnings) = if open.is_empty() {
            (rb.tree.clone(), rb.warnings(t))
        } else {
            let saved = rb.tree.clone();
            // Newest first, so the oldest session open at t (an `append` whose later `write`
            // kept a copy inside it) gives the content last: as it was when it began.
            for w in open.into_iter().rev() {
                for p in rb.same_inode(w, &w.path) {
                    rb.undo_change_at(&p, w)?;
                }
            }
            (std::mem::replace(&mut rb.tree, saved), rb.warnings(t))
        };
        warnings.extend(add_missing_parents(&mut tree));
        out[i] = Some((tree, warnings));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Give every entry of `tree` its parent directories: a directory whose removal is not in the
/// journal (its record lost in a crash, while the trash items below it were journaled again
/// at the next mount) would otherwise leave its entries without a place to go. Such a
/// directory gets mode 0755; the warning names them.
fn add_missing_parents(tree: &mut Tree) -> Option<String> {
    let mut missing: BTreeSet<PathBuf> = BTreeSet::new();
    for p in tree.keys() {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() || tree.contains_key(a) || !missing.insert(a.to_owned()) {
                break;
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let n = missing.len();
    let mut list: Vec<String> = missing
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    if n > 5 {
        list.push("…".into());
    }
    for a in missing {
        tree.insert(a, Entry::bare(Kind::Dir, 0o755, Source::Fresh));
    }
    Some(format!(
        "{n} directory(ies) held files then but no journal record says they existed (records \
         lost in a crash?); they are given mode 0755: {}",
        list.join(", ")
    ))
}

/// Each `write` record that kept a pre-image, with the instant its write session ended: the
/// next `close` of the same inode, else the next mount or unmount (a daemon that stopped
/// closed every file), else never (still open).
pub(crate) fn write_sessions(records: &[Record]) -> Vec<(&Record, i64)> {
    // One pass from the newest record back, remembering the nearest later `close` of each
    // inode and the nearest later mount or unmount.
    let mut next_close: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    let mut next_mount = i64::MAX;
    let mut out = Vec::new();
    for r in records.iter().rev() {
        match r.op {
            Op::Close => {
                if let Some(ino) = r.ino {
                    next_close.insert(ino, r.t);
                }
            }
            Op::Mount | Op::Umount => next_mount = r.t,
            Op::Write | Op::Append if r.object.is_some() || r.op == Op::Append => {
                let close = r
                    .ino
                    .and_then(|ino| next_close.get(&ino).copied())
                    .unwrap_or(i64::MAX);
                out.push((r, close.min(next_mount)));
            }
            _ => {}
        }
    }
    out.reverse();
    out
}

fn one_tree(store: &Store, past: &Past, live: &Tree, t: i64) -> Result<(Tree, Vec<String>)> {
    Ok(trees_at(store, past, live, &[t])?.pop().unwrap_or_default())
}

/// One warning naming the files whose content at `at` is not known because they were written
/// in place after it without a kept pre-image.
fn written_warning(names: Vec<String>, at: &str, what: &str) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let n = names.len();
    let mut list = names.into_iter().take(5).collect::<Vec<_>>().join(", ");
    if n > 5 {
        list.push_str(", …");
    }
    Some(format!(
        "{n} file(s) were written after {at} and their earlier content was not kept, so they \
         are {what} as they are now: {list}"
    ))
}

/// Validate PATH arguments: plain relative paths outside the store; `.` or nothing means the
/// whole tree. `verb` names the command in errors.
fn scopes(paths: &[PathBuf], verb: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let mut clean = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(Error::Invalid(format!(
                        "cannot {verb} {}: paths must be relative to the project and stay \
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
                "cannot {verb} {}: {STORE_DIR} is saferoot's own store",
                p.display()
            )));
        }
        out.push(clean);
    }
    Ok(out)
}

/// `p` (project-relative) is the store or inside it.
pub fn under_store(p: &Path) -> bool {
    p.components().next() == Some(Component::Normal(OsStr::new(STORE_DIR)))
}

fn in_scope(p: &Path, scopes: &[PathBuf]) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| p.starts_with(s))
}

/// Where the bytes (or the metadata) of an entry of a past tree come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The entry now at this project-relative path.
    Live(PathBuf),
    /// This path relative to the store (in the trash).
    Trash(PathBuf),
    /// A regular file in the object store (blake3 hex).
    Object(String),
    /// Nothing to copy: a directory known only by its mode (its entries are separate).
    Fresh,
    /// Something was here, but what is not kept. Says why.
    Unknown(String),
    /// The first this many bytes of another source (a file before an append-only write
    /// session: see [`Op::Append`]). Zeros if that source is shorter.
    Prefix(Box<Source>, u64),
}

impl Source {
    /// The first `n` bytes of this source.
    fn prefix(self, n: u64) -> Source {
        match self {
            Source::Prefix(inner, m) => Source::Prefix(inner, m.min(n)),
            Source::Fresh | Source::Unknown(_) => self,
            other => Source::Prefix(Box::new(other), n),
        }
    }

    /// How many bytes of the source are taken, if not all.
    fn limit(&self) -> Option<u64> {
        match self {
            Source::Prefix(_, n) => Some(*n),
            _ => None,
        }
    }
}

/// One entry of a past tree: its type and metadata, and where its bytes are.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    /// `mode & 0o7777`.
    pub perm: u32,
    pub src: Source,
    /// Size in bytes (regular files; 0 when not known).
    pub size: u64,
    /// Modification time (seconds, nanoseconds), when known.
    pub mtime: Option<(i64, i64)>,
    /// (uid, gid), when known.
    pub owner: Option<(u32, u32)>,
    /// Device number of a device node.
    pub rdev: u64,
    /// Inode number of the source (0 when not known).
    pub ino: u64,
    /// Symlink target.
    pub target: Option<OsString>,
    /// Written in place after the instant without a kept pre-image: the content then is not
    /// known, and `src` gives it as it is now. Holds the time of the earliest such write.
    pub written: Option<i64>,
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
            written: None,
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
            written: None,
        }
    }

    /// Type and permission bits, as journaled.
    pub fn mode(&self) -> u32 {
        kind_bits(self.kind) | self.perm
    }

    pub fn unknown(&self) -> bool {
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
    /// What the walk back to `t` could not do exactly.
    /// (Damaged journal lines need no warning: [`Past::check`] refuses every instant whose
    /// walk back would have to undo one.)
    fn warnings(&self, t: i64) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.skipped > 0 {
            warnings.push(format!(
                "{} journal record(s) with unusable paths were skipped",
                self.skipped
            ));
        }
        if self.mismatches > 0 {
            warnings.push(format!(
                "{} journal record(s) did not match the tree (was it changed while not \
                 mounted?); the result may differ from the tree at {} there",
                self.mismatches,
                format_utc(t)
            ));
        }
        warnings
    }

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
        if matches!(
            r.op,
            Op::Mount
                | Op::Umount
                | Op::Restore
                | Op::Run
                | Op::Snapshot
                | Op::Close
                | Op::Gc
                | Op::Repair
        ) {
            return Ok(());
        }
        let Some(path) = self.path(Some(&r.path)) else {
            return Ok(());
        };
        match r.op {
            Op::Mount | Op::Umount | Op::Restore | Op::Run | Op::Snapshot | Op::Gc | Op::Repair => {
            }
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
                let mut e = Entry::bare(Kind::Dir, perm, Source::Fresh);
                // Keep the identity, so older records about this directory (a chmod) find it.
                e.ino = r.ino.unwrap_or(0);
                self.tree.insert(path, e);
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
            Op::Setattr | Op::Write | Op::Append => {
                // A change to an inode shows under every name it has: apply the undo to
                // every entry with the record's inode (hard links, and a name the record does
                // not know), falling back to the record's path when the identity is unknown.
                let targets = self.same_inode(r, &path);
                if targets.is_empty() {
                    self.mismatches += 1;
                    return Ok(());
                }
                for p in targets {
                    self.undo_change_at(&p, r)?;
                }
            }
            Op::Close => {}
        }
        Ok(())
    }

    /// The entries a `write`/`setattr` record is about: those with its inode, or its path.
    fn same_inode(&self, r: &Record, path: &Path) -> Vec<PathBuf> {
        // The common case: the inode has one name and the record names it.
        if r.links.unwrap_or(1) <= 1 {
            if let Some(e) = self.tree.get(path) {
                if r.ino.is_none_or(|i| i == 0 || e.ino == 0 || e.ino == i) {
                    return vec![path.to_owned()];
                }
            }
        }
        let mut v: Vec<PathBuf> = match r.ino {
            Some(ino) if ino != 0 => self
                .tree
                .iter()
                .filter(|(_, e)| e.ino == ino && !e.unknown())
                .map(|(p, _)| p.clone())
                .collect(),
            _ => Vec::new(),
        };
        // Without an identity, the record's path is all there is to go by. With one, an inode
        // that no entry has (it was replaced since) is not the entry now at that path.
        if v.is_empty() && r.ino.is_none_or(|i| i == 0) && self.tree.contains_key(path) {
            v.push(path.to_owned());
        }
        v
    }

    /// Undo a `write`, `append` or `setattr` record on the entry at `path`.
    fn undo_change_at(&mut self, path: &Path, r: &Record) -> Result<()> {
        if r.op == Op::Append {
            // Before an append-only session: the first `size` bytes of what it left.
            if let (Some(n), Some(size)) = (self.tree.get_mut(path), r.size) {
                // Whatever the session did below `size` kept the content first (a `write`
                // record, undone already); anything else (appends, a size change at or past
                // `size`, which marked the content as not known) is cut off here.
                if n.kind == Kind::File && !n.unknown() {
                    n.src = std::mem::replace(&mut n.src, Source::Fresh).prefix(size);
                    n.size = size;
                    n.mtime = None;
                    n.written = None;
                }
            }
            return Ok(());
        }
        let content_changed = r.op == Op::Write || r.size.is_some();
        let object = match (&r.object, content_changed) {
            (Some(hex), true) => self.object_node(hex, 0)?,
            _ => None,
        };
        let Some(n) = self.tree.get_mut(path) else {
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
                    n.written = None;
                }
                // The oldest such write after the instant wins: walking backwards,
                // it comes last.
                None => n.written = Some(r.t),
            }
        }
        Ok(())
    }

    /// Put at `p` what was there before `r` removed or replaced it (its trash item or object),
    /// or an Unknown entry if the record kept nothing.
    fn bring_back(&mut self, p: &Path, r: &Record) -> Result<()> {
        let when = format_utc(r.t);
        // One of two names of a file, removed while the other still named it: nothing was
        // kept, the content is the other name's at that instant.
        if r.op == Op::Unlink && r.trash.is_none() && r.object.is_none() && r.peer.is_some() {
            // The other name as it was at that instant (the walk back has undone every later
            // change), if it still held the same file there.
            let found = self.path(r.peer.as_deref()).and_then(|peer| {
                self.tree
                    .get(&peer)
                    .filter(|e| {
                        e.kind == Kind::File
                            && !e.unknown()
                            && (e.ino == 0 || r.ino.is_none_or(|i| i == 0 || i == e.ino))
                    })
                    .cloned()
            });
            let n = match found {
                Some(mut n) => {
                    n.perm = r.mode.map_or(n.perm, |m| m & 0o7777);
                    n
                }
                None => Entry::bare(
                    Kind::File,
                    r.mode.unwrap_or(0) & 0o7777,
                    Source::Unknown(format!(
                        "removed at {when} as another name of a file that is not known at \
                         that instant"
                    )),
                ),
            };
            self.tree.insert(p.to_owned(), n);
            return Ok(());
        }
        // A record with both kept the bytes as they were at that instant in `object` (the file
        // was still open for writing, and the trash item may have changed since).
        if let Some(tr) = r.trash.as_ref().filter(|_| r.object.is_none()) {
            if check_relative(tr).is_err() {
                self.skipped += 1;
                return Ok(());
            }
            return self.insert_trash(p, tr, &when);
        }
        if let Some(hex) = &r.object {
            // A rename record's `mode` is the moving file's; the replaced one's is `old_mode`.
            let mode = if r.op == Op::Rename {
                r.old_mode.or(r.mode)
            } else {
                r.mode
            };
            let perm = mode.unwrap_or(0o644) & 0o7777;
            let mut n = self.object_node(hex, perm)?.unwrap_or_else(|| {
                Entry::bare(
                    Kind::File,
                    perm,
                    Source::Unknown(format!(
                        "removed at {when}, but its kept content (object {hex}) is gone"
                    )),
                )
            });
            // An unlink record's inode is the removed file's (a rename record's is the moving
            // file's): keep it, so older writes and chmods of that inode find this entry.
            if r.op == Op::Unlink {
                n.ino = r.ino.unwrap_or(0);
            }
            self.tree.insert(p.to_owned(), n);
            return Ok(());
        }
        let kind = r.kind.unwrap_or(Kind::File);
        let why = if r
            .note
            .as_deref()
            .is_some_and(|n| n.contains(crate::gc::PURGE_NOTE))
        {
            format!("removed at {when}; its kept content was deleted by `saferoot trash purge`")
        } else {
            format!("removed at {when} without its content being kept")
        };
        self.tree.insert(
            p.to_owned(),
            Entry::bare(kind, r.mode.unwrap_or(0) & 0o7777, Source::Unknown(why)),
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

/// Compare the tree at T (`want`) with the tree now (`cur`) within `scopes`: what a restore
/// must do.
fn plan(
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
            if w.written.is_some() {
                written.push(p.display().to_string());
            }
        }
        let Some(mark) = compare(fs, p, c, w)? else {
            continue;
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
    warnings.extend(written_warning(written, &at, "restored"));

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
                            n.kind.name(),
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

/// How the entry `w` differs from the entry `c` at the same path `p` (either may be absent);
/// `None` if it does not. The marks read "going from `c` to `w`".
fn compare(
    fs: &mut Fs<'_>,
    p: &Path,
    c: Option<&Entry>,
    w: Option<&Entry>,
) -> Result<Option<Mark>> {
    Ok(Some(match (c, w) {
        (None, None) => return Ok(None),
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
                return Ok(None);
            }
        }
    }))
}

/// Whether `c` and `w`, two entries of the same type at `p`, hold the same bytes / target /
/// device.
fn same_content(fs: &mut Fs<'_>, p: &Path, c: &Entry, w: &Entry) -> Result<bool> {
    Ok(match c.kind {
        Kind::File => {
            if c.src == w.src {
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

/// Directories below one root directory, opened one component at a time without following
/// symlinks (so nothing outside the root is ever reached), with the last one opened kept.
struct Dirs {
    root: OwnedFd,
    shown: PathBuf,
    last: Option<(PathBuf, OwnedFd)>,
}

impl Dirs {
    fn new(root: OwnedFd, shown: PathBuf) -> Dirs {
        Dirs {
            root,
            shown,
            last: None,
        }
    }

    /// The directory `rel` below the root (O_PATH).
    fn dir(&mut self, rel: &Path) -> Result<OwnedFd> {
        let dup = |fd: &OwnedFd, shown: &Path| {
            fd.try_clone().map_err(|e| Error::Io {
                op: "dup directory fd",
                path: shown.to_owned(),
                cause: e,
            })
        };
        if let Some((p, fd)) = &self.last {
            if p == rel {
                return dup(fd, &self.shown.join(rel));
            }
        }
        let mut fd = dup(&self.root, &self.shown)?;
        for c in rel.components() {
            fd = nix::fcntl::openat(
                fd.as_fd(),
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open directory", &self.shown.join(rel), e))?;
        }
        let keep = fd.try_clone().ok();
        self.last = keep.map(|k| (rel.to_owned(), k));
        Ok(fd)
    }

    fn forget(&mut self) {
        self.last = None;
    }
}

/// Access to the project and the store by `*at()` calls.
struct Fs<'a> {
    store: &'a Store,
    project: Option<Dirs>,
    /// Where each live entry displaced by this restore went (project path → store path).
    displaced: HashMap<PathBuf, PathBuf>,
    /// blake3 and size of indexed trash items, read on first need.
    index: Option<HashMap<PathBuf, (String, u64)>>,
}

impl<'a> Fs<'a> {
    fn new(store: &'a Store) -> Self {
        Fs {
            store,
            project: None,
            displaced: HashMap::new(),
            index: None,
        }
    }

    fn shown(&self, p: &Path) -> PathBuf {
        self.store.project_path().join(p)
    }

    /// The project directory `rel` (O_PATH); nothing outside the project is ever reached.
    fn dir(&mut self, rel: &Path) -> Result<OwnedFd> {
        if self.project.is_none() {
            let root = self
                .store
                .project()
                .try_clone_to_owned()
                .map_err(|e| Error::Io {
                    op: "dup project fd",
                    path: self.shown(Path::new("")),
                    cause: e,
                })?;
            self.project = Some(Dirs::new(root, self.store.project_path().to_owned()));
        }
        match &mut self.project {
            Some(d) => d.dir(rel),
            None => unreachable!("set just above"),
        }
    }

    fn forget_dir(&mut self) {
        if let Some(d) = &mut self.project {
            d.forget();
        }
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
            // The whole source: the caller takes only the first bytes.
            Source::Prefix(inner, _) => self.open_source(inner, for_path),
            Source::Fresh | Source::Unknown(_) => Err(Error::Invalid(format!(
                "{}: no content to restore from",
                for_path.display()
            ))),
        }
    }

    /// blake3 of a regular-file source, read only if neither its name (objects), the trash
    /// index, nor the store's hash cache already says it.
    fn hash(&mut self, src: &Source, for_path: &Path) -> Result<blake3::Hash> {
        if let Source::Object(hex) = src {
            if let Ok(h) = blake3::Hash::from_hex(hex) {
                return Ok(h);
            }
        }
        let fd = self.open_source(src, for_path)?;
        if let Source::Prefix(_, n) = src {
            return store::hash_prefix(fd.as_fd(), *n)
                .map_err(|e| Error::io("hash", &self.shown(for_path), e));
        }
        let st = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| Error::io("stat", &self.shown(for_path), e))?;
        if let Source::Trash(tr) = src {
            if self.index.is_none() {
                self.index = Some(
                    index::read(self.store)?
                        .into_iter()
                        .map(|e| (e.trash, (e.blake3, e.size)))
                        .collect(),
                );
            }
            let known = self.index.as_ref().and_then(|i| i.get(tr));
            if let Some((hex, size)) = known {
                if *size == st.st_size as u64 {
                    if let Ok(h) = blake3::Hash::from_hex(hex) {
                        return Ok(h);
                    }
                }
            }
        }
        if let Some(hex) = self.store.cached_hash(&st) {
            if let Ok(h) = blake3::Hash::from_hex(&hex) {
                return Ok(h);
            }
        }
        let h =
            store::hash_fd(fd.as_fd()).map_err(|e| Error::io("hash", &self.shown(for_path), e))?;
        // Only if the file did not change while it was read.
        if let Ok(after) = nix::sys::stat::fstat(fd.as_fd()) {
            if store::CacheKey::of(&after) == store::CacheKey::of(&st) {
                self.store.remember_hash(&st, &h.to_hex());
            }
        }
        Ok(h)
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
    /// Files not restored because their kept content is damaged (see [`Report::errors`]).
    errors: Vec<String>,
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
            crate::progress::advance(1);
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
            size: (c.kind == Kind::File).then_some(c.size),
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
                let ino = match copy_file_at(
                    &mut self.fs,
                    dfd.as_fd(),
                    n,
                    p,
                    w,
                    &shown,
                    self.privileged,
                )? {
                    Copied::Ino(ino) => ino,
                    // Nothing was created; what was there is in the trash already.
                    Copied::Damaged(why) => {
                        self.errors.push(why);
                        return Ok(None);
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
                set_owner_and_mtime(dfd.as_fd(), n, w, &shown, self.privileged)?;
                self.journal(Record {
                    kind: Some(Kind::Symlink),
                    target: Some(PathBuf::from(target)),
                    ..self.record(Op::Symlink, p)
                })?;
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                if !make_special(dfd.as_fd(), n, w, &shown, self.privileged)? {
                    self.warnings.push(format!(
                        "{}: a {} cannot be created without privileges; not restored",
                        p.display(),
                        w.kind.name()
                    ));
                    return Ok(None);
                }
                self.journal(Record {
                    kind: Some(w.kind),
                    mode: Some(w.mode()),
                    ..self.record(Op::Mknod, p)
                })?;
            }
        }
        Ok(None)
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
        set_owner_and_mtime(dfd.as_fd(), n, &w, &shown, self.privileged)?;
        chmod_at(dfd.as_fd(), n, f.perm).map_err(|e| Error::io("chmod", &shown, e))
    }
}

/// What [`copy_file_at`] made.
enum Copied {
    /// The new file's inode number.
    Ino(u64),
    /// Nothing: the object the bytes were to come from does not match its name (says which,
    /// and for which path). The partial copy was removed.
    Damaged(String),
}

/// Create `n` in `dfd` as a copy of the regular file entry `e` (project path `p`): its bytes
/// from wherever they are kept, then its mode, owner and mtime. A copy that fails part-way is
/// removed (it is ours, and nothing refers to it). Bytes copied out of the object store are
/// hashed as they land and checked against the object's name: a damaged object never becomes
/// a file with the wrong content.
fn copy_file_at(
    fs: &mut Fs<'_>,
    dfd: BorrowedFd<'_>,
    n: &OsStr,
    p: &Path,
    e: &Entry,
    shown: &Path,
    privileged: bool,
) -> Result<Copied> {
    let src = fs.open_source(&e.src, p)?;
    let dst = nix::fcntl::openat(
        dfd,
        n,
        // Readable too: the copy of an object is hashed where it landed.
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|err| Error::io("create", shown, err))?;
    let object = object_of(&e.src).map(|hex| (hex, fs.store.dir_path().join(object_rel(hex))));
    let mut damaged = None;
    let verify = |copy: BorrowedFd<'_>| -> Result<bool> {
        let Some((hex, obj_shown)) = &object else {
            return Ok(true);
        };
        let got = store::hash_fd(copy).map_err(|err| Error::io("hash", shown, err))?;
        if got.to_hex().as_str() == hex.as_str() {
            return Ok(true);
        }
        damaged = Some(format!(
            "object {} is damaged (its content does not match its name): {} was not restored \
             from it; run `saferoot doctor`",
            obj_shown.display(),
            p.display()
        ));
        Ok(false)
    };
    let done = fill(src.as_fd(), dst.as_fd(), e, shown, privileged, verify).and_then(|ok| {
        if !ok {
            return Ok(None);
        }
        nix::sys::stat::fstat(dst.as_fd())
            .map(|st| Some(st.st_ino))
            .map_err(|err| Error::io("stat", shown, err))
    });
    if !matches!(done, Ok(Some(_))) {
        let _ = nix::unistd::unlinkat(dfd, n, UnlinkatFlags::NoRemoveDir);
    }
    match done? {
        Some(ino) => Ok(Copied::Ino(ino)),
        None => Ok(Copied::Damaged(damaged.unwrap_or_default())),
    }
}

/// The object a regular-file source copies its bytes from, if any.
fn object_of(src: &Source) -> Option<&String> {
    match src {
        Source::Object(hex) => Some(hex),
        Source::Prefix(inner, _) => object_of(inner),
        _ => None,
    }
}

/// Copy the bytes, then owner (privileged only), mode and mtime, onto a new regular file.
/// `verify` sees the copy before it is cut to a prefix; if it says no, nothing more is done
/// and `Ok(false)` returned.
fn fill(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    w: &Entry,
    shown: &Path,
    privileged: bool,
    verify: impl FnOnce(BorrowedFd<'_>) -> Result<bool>,
) -> Result<bool> {
    store::clone_or_copy(src, dst).map_err(|e| Error::io("copy into", shown, e))?;
    if !verify(dst)? {
        return Ok(false);
    }
    if let Some(n) = w.src.limit() {
        nix::unistd::ftruncate(dst, n as i64).map_err(|e| Error::io("truncate", shown, e))?;
    }
    if privileged {
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
    Ok(true)
}

/// Owner (privileged only) and mtime of the entry `name` of `dir`, without following symlinks.
fn set_owner_and_mtime(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    w: &Entry,
    shown: &Path,
    privileged: bool,
) -> Result<()> {
    if privileged {
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

/// Create the fifo, socket or device node `name` in `dir` as `w` (owner, mtime, mode).
/// Returns false, creating nothing, for a device node without the privilege to make one.
fn make_special(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    w: &Entry,
    shown: &Path,
    privileged: bool,
) -> Result<bool> {
    let kind = SFlag::from_bits_truncate(kind_bits(w.kind));
    match nix::sys::stat::mknodat(dir, name, kind, Mode::from_bits_truncate(w.perm), w.rdev) {
        Ok(()) => {}
        Err(Errno::EPERM) if matches!(w.kind, Kind::CharDev | Kind::BlockDev) && !privileged => {
            return Ok(false)
        }
        Err(e) => return Err(Error::io("create special file", shown, e)),
    }
    set_owner_and_mtime(dir, name, w, shown, privileged)?;
    // After chown, which clears set-id bits, and past the umask.
    chmod_at(dir, name, w.perm).map_err(|e| Error::io("chmod", shown, e))?;
    Ok(true)
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
        /// Added to the time of every record made from now on (to fake pauses).
        skew: std::cell::Cell<i64>,
    }

    impl Sim {
        fn new() -> Sim {
            let dir = tempfile::tempdir().unwrap();
            let fd: OwnedFd = fs::File::open(dir.path()).unwrap().into();
            let store = Store::open_or_create(fd.as_fd(), dir.path()).unwrap();
            let s = Sim {
                dir,
                store,
                skew: std::cell::Cell::new(0),
            };
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
            Record::new(crate::now_ns() + self.skew.get(), op, rel, 4242, "agent")
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

        /// Rewrite `rel` in place, keeping its previous content as an object first (the
        /// pre-image), as the FUSE layer does on the first open for writing.
        /// A whole write session, as the FUSE layer journals it: `write` with the pre-image
        /// when the file is opened for writing, `close` when it is closed.
        fn write(&self, rel: &str, bytes: &[u8]) {
            let f = fs::File::open(self.p(rel)).unwrap();
            let hex = self.store.put_object(f.as_fd()).unwrap();
            let ino = f.metadata().unwrap().ino();
            drop(f);
            self.rec(Record {
                object: Some(hex),
                ino: Some(ino),
                ..self.r(Op::Write, rel)
            });
            fs::write(self.p(rel), bytes).unwrap();
            self.rec(Record {
                ino: Some(ino),
                ..self.r(Op::Close, rel)
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
            snap_of(self.dir.path())
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

    /// Every entry under `root` (except the store), as a person would compare it.
    fn snap_of(root: &Path) -> Snap {
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
    fn a_damaged_object_is_never_restored_and_is_named() {
        let s = Sim::new();
        s.create("a", b"first version", 0o644);
        s.create("b", b"other", 0o644);
        let (t, _) = s.instant();
        s.write("a", b"second");
        s.write("b", b"changed");
        // Bit rot in the pre-image of "a".
        let hex = blake3::hash(b"first version").to_hex().to_string();
        let obj = s.store.dir_path().join(object_rel(&hex));
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&obj, b"first versioN").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let out = dest.path().join("out");
        let rep = materialize(&s.store, t, &[], &out).unwrap();
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        let e = &rep.errors[0];
        assert!(
            e.contains(&obj.display().to_string()) && e.contains("a was not restored"),
            "{e}"
        );
        assert!(!out.join("a").exists(), "no wrong-content file is left");
        assert_eq!(fs::read(out.join("b")).unwrap(), b"other");
        // In place: "b" comes back, "a" keeps nothing wrong (what it held is in the trash).
        let rep = s.restore(t);
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert_eq!(fs::read(s.p("b")).unwrap(), b"other");
        assert!(!s.p("a").exists());
    }

    #[test]
    fn a_damaged_journal_line_bounds_restores_and_names_itself() {
        let s = Sim::new();
        s.create("a", b"a", 0o644);
        let (t_before, _) = s.instant();
        s.create("b", b"b", 0o644);
        let (_, _) = s.instant();
        s.create("c", b"c", 0o644);
        let (t_after, snap_after) = s.instant();
        s.unlink("a");
        // Cut the line of "b" in half (the lines after it stay).
        let jp = s.store.dir_path().join(journal::JOURNAL_FILE);
        let text = fs::read(&jp).unwrap();
        let mut lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
        let i = lines
            .iter()
            .position(|l| l.windows(10).any(|w| w == b"\"path\":\"b\""))
            .unwrap();
        let half = &lines[i][..lines[i].len() / 2];
        lines[i] = half;
        fs::write(&jp, lines.join(&b'\n')).unwrap();
        let c_t = journal::read(s.store.dir(), s.store.dir_path())
            .unwrap()
            .0
            .iter()
            .find(|r| r.path == Path::new("c"))
            .unwrap()
            .t;
        for e in [
            restore(
                &s.store,
                &Options {
                    dry_run: true,
                    ..s.opts(t_before)
                },
            )
            .unwrap_err(),
            tree_at(&s.store, t_before, &[]).unwrap_err(),
            diff(&s.store, t_before, None, &[]).unwrap_err(),
        ] {
            assert_eq!(
                e.to_string(),
                format!(
                    "cannot go back to {}: line {} of {} is damaged (its change is unknown); \
                     instants from {} on can still be restored; run `saferoot doctor`",
                    format_utc(t_before),
                    i + 1,
                    jp.display(),
                    format_utc(c_t)
                )
            );
        }
        // After the damage: exact, and no warning about it.
        let rep = s.restore(t_after);
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        assert_eq!(s.snap(), snap_after);
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

    /// A past tree as a person would compare it (file bytes read from wherever they are kept).
    fn tree_snap(s: &Sim, tree: &TreeAt) -> Snap {
        let mut fs = Fs::new(&s.store);
        tree.entries
            .iter()
            .map(|(p, e)| {
                let entry = match e.kind {
                    Kind::Dir => E::Dir { mode: e.perm },
                    Kind::Symlink => E::Symlink(PathBuf::from(e.target.clone().unwrap())),
                    Kind::File => {
                        let fd = fs.open_source(&e.src, p).unwrap();
                        let mut bytes = Vec::new();
                        std::io::Read::read_to_end(&mut fs::File::from(fd), &mut bytes).unwrap();
                        E::File {
                            mode: e.perm,
                            bytes,
                            mtime: e.mtime.unwrap(),
                        }
                    }
                    _ => E::Fifo { mode: e.perm },
                };
                (p.clone(), entry)
            })
            .collect()
    }

    fn swapped(changes: &[Change]) -> Vec<Change> {
        changes
            .iter()
            .map(|c| Change {
                mark: match c.mark {
                    Mark::Added => Mark::Removed,
                    Mark::Removed => Mark::Added,
                    m => m,
                },
                path: c.path.clone(),
            })
            .collect()
    }

    #[test]
    fn tree_at_agrees_with_the_recorded_instants_and_with_restore() {
        let s = Sim::new();
        let at = history(&s);
        let (t_end, _) = s.instant();
        for (i, (t, want)) in at.iter().enumerate() {
            let tree = tree_at(&s.store, *t, &[]).unwrap();
            assert_eq!(&tree_snap(&s, &tree), want, "instant {i}");
            assert!(tree.warnings.is_empty(), "{:?}", tree.warnings);
            let mut h = Hasher::new(&s.store);
            for (p, e) in &tree.entries {
                let expect = match &want[p] {
                    E::File { bytes, .. } => Some(blake3::hash(bytes).to_hex().to_string()),
                    _ => None,
                };
                assert_eq!(h.blake3(p, e).unwrap(), expect, "{}", p.display());
            }
            // A restore dry run from now sees exactly what diff sees from now to that instant,
            // and diff from that instant to now sees the same paths the other way round.
            let dry = restore(
                &s.store,
                &Options {
                    dry_run: true,
                    ..s.opts(*t)
                },
            )
            .unwrap();
            let to_t = diff(&s.store, t_end, Some(*t), &[]).unwrap();
            assert_eq!(to_t.changes, dry.changes, "instant {i}");
            let from_t = diff(&s.store, *t, None, &[]).unwrap();
            assert_eq!(from_t.changes, swapped(&dry.changes), "instant {i}");
        }
        // Restricted to a path: that subtree only.
        let tree = tree_at(&s.store, at[5].0, &[PathBuf::from("data")]).unwrap();
        let keys: Vec<String> = tree
            .entries
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(keys, ["data", "data/b.bin", "data/sub", "data/sub/a.bin"]);
    }

    #[test]
    fn tree_at_names_where_content_was_not_kept() {
        let s = Sim::new();
        s.create("w", b"before", 0o644);
        let (t, _) = s.instant();
        fs::write(s.p("w"), b"after").unwrap();
        s.rec(s.r(Op::Write, "w"));
        let tree = tree_at(&s.store, t, &[]).unwrap();
        assert!(tree.entries[Path::new("w")].written.is_some());
        let w = tree.warnings.join("\n");
        assert!(
            w.contains("1 file(s) were written after") && w.contains(": w"),
            "{w}"
        );
    }

    #[test]
    fn materialize_writes_every_recorded_instant_exactly_and_leaves_the_project_alone() {
        let s = Sim::new();
        let at = history(&s);
        let (now, jlen, trash) = (s.snap(), s.journal_len(), s.trash_files());
        let out = tempfile::tempdir().unwrap();
        for (i, (t, want)) in at.iter().enumerate() {
            // A directory that does not exist yet, two levels deep.
            let dest = out.path().join(format!("at-{i}/tree"));
            let rep = materialize(&s.store, *t, &[], &dest).unwrap();
            assert_eq!(&snap_of(&dest), want, "instant {i}");
            assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
            assert_eq!(rep.changes.len(), want.len());
            assert!(rep.changes.iter().all(|c| c.mark == Mark::Added));
        }
        // An existing empty directory is fine too.
        let empty = out.path().join("empty");
        fs::create_dir(&empty).unwrap();
        materialize(&s.store, at[3].0, &[], &empty).unwrap();
        assert_eq!(snap_of(&empty), at[3].1);
        // The project did not change, and nothing was journaled or trashed.
        assert_eq!(s.snap(), now);
        assert_eq!(s.journal_len(), jlen);
        assert_eq!(s.trash_files(), trash);
    }

    #[test]
    fn materialize_of_some_paths_brings_their_parents_as_they_were() {
        let s = Sim::new();
        s.mkdir("a", 0o750);
        s.mkdir("a/b", 0o705);
        s.create("a/b/f", b"f", 0o640);
        s.create("a/g", b"g", 0o644);
        s.create("top", b"top", 0o600);
        s.create("other", b"other", 0o644);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &s.p("a/b"),
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(1_600_000_000, 7),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let (t, at_t) = s.instant();
        s.unlink("a/g");
        s.unlink("top");
        s.create("top", b"newer", 0o644);
        s.chmod("a", 0o755);
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        let rep = materialize(
            &s.store,
            t,
            &[
                PathBuf::from("a/b"),
                PathBuf::from("./top"),
                PathBuf::from("never"),
            ],
            &dest,
        )
        .unwrap();
        let expect: Snap = at_t
            .iter()
            .filter(|(p, _)| {
                ["a", "a/b", "a/b/f", "top"]
                    .iter()
                    .any(|k| *p == Path::new(k))
            })
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        assert_eq!(snap_of(&dest), expect);
        assert_eq!(filetime(&dest.join("a/b")), (1_600_000_000, 7));
        assert_eq!(
            changes(&rep),
            ch(&[('+', "a"), ('+', "a/b"), ('+', "a/b/f"), ('+', "top")])
        );
        let w = rep.warnings.join("\n");
        assert!(w.contains("never: did not exist at"), "{w}");
    }

    #[test]
    fn materialize_refuses_a_destination_that_is_not_empty_or_inside_the_project() {
        let s = Sim::new();
        s.create("f", b"f", 0o644);
        let (t, _) = s.instant();
        let out = tempfile::tempdir().unwrap();

        let full = out.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), b"x").unwrap();
        let e = materialize(&s.store, t, &[], &full)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not empty"), "{e}");
        assert!(e.contains(&full.display().to_string()), "{e}");
        assert_eq!(fs::read_dir(&full).unwrap().count(), 1);

        let file = out.path().join("file");
        fs::write(&file, b"").unwrap();
        let e = materialize(&s.store, t, &[], &file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");

        std::os::unix::fs::symlink(s.dir.path(), out.path().join("link")).unwrap();
        for inside in [
            s.dir.path().to_owned(),
            s.p("sub/new"),
            s.p(".saferoot/restored"),
            out.path().join("link/new"),
        ] {
            let e = materialize(&s.store, t, &[], &inside).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e}");
            let e = e.to_string();
            assert!(e.contains("is inside the project"), "{e}");
        }
        assert!(!s.p("sub").exists() && !s.p(".saferoot/restored").exists());

        // Nothing is created for an instant the journal does not cover.
        let fresh = out.path().join("fresh");
        let e = materialize(&s.store, 0, &[], &fresh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing is recorded before"), "{e}");
        assert!(!fresh.exists());
        let e = materialize(&s.store, t, &[PathBuf::from("../x")], &fresh);
        assert!(matches!(e, Err(Error::Invalid(_))));
        assert!(!fresh.exists());
    }

    #[test]
    fn diff_marks_each_kind_of_change_between_two_instants_or_up_to_now() {
        let s = Sim::new();
        s.create("gone.txt", b"gone", 0o644);
        s.create("edited.txt", b"old", 0o644);
        s.create("mode.sh", b"#!/bin/sh\n", 0o644);
        s.create("kind", b"a file", 0o644);
        s.mkdir("dir", 0o755);
        s.create("same.txt", b"same", 0o644);
        s.create("rewritten.txt", b"equal", 0o644);
        s.symlink("link", "a");
        let (t1, _) = s.instant();
        s.unlink("gone.txt");
        s.create("new.txt", b"new", 0o644);
        s.write("edited.txt", b"new content");
        s.chmod("mode.sh", 0o755);
        s.unlink("kind");
        s.mkdir("kind", 0o755);
        s.rmdir("dir");
        s.unlink("link");
        s.symlink("link", "b");
        // Rewritten with the same bytes: not a change.
        s.write("rewritten.txt", b"equal");
        let (t2, _) = s.instant();
        s.create("later.txt", b"after t2", 0o644);
        s.chmod("same.txt", 0o600);
        let jlen = s.journal_len();

        let t1_t2 = ch(&[
            ('-', "dir"),
            ('M', "edited.txt"),
            ('-', "gone.txt"),
            ('T', "kind"),
            ('M', "link"),
            ('m', "mode.sh"),
            ('+', "new.txt"),
        ]);
        let rep = diff(&s.store, t1, Some(t2), &[]).unwrap();
        assert_eq!(changes(&rep), t1_t2);
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        // Up to now: the changes after t2 too.
        let mut t1_now = t1_t2.clone();
        t1_now.insert(4, ('+', "later.txt".into()));
        t1_now.push(('m', "same.txt".into()));
        assert_eq!(changes(&diff(&s.store, t1, None, &[]).unwrap()), t1_now);
        // The other way round.
        let back = diff(&s.store, t2, Some(t1), &[]).unwrap();
        assert_eq!(back.changes, swapped(&rep.changes));
        // Restricted to some paths.
        let some = diff(
            &s.store,
            t1,
            None,
            &[PathBuf::from("kind"), PathBuf::from("later.txt")],
        )
        .unwrap();
        assert_eq!(changes(&some), ch(&[('T', "kind"), ('+', "later.txt")]));
        // An instant against itself, and against now when nothing changed since.
        assert!(diff(&s.store, t2, Some(t2), &[])
            .unwrap()
            .changes
            .is_empty());
        let (t3, _) = s.instant();
        assert!(diff(&s.store, t3, None, &[]).unwrap().changes.is_empty());
        // Nothing was written.
        assert_eq!(s.journal_len(), jlen);
        // Before the history begins: an error.
        let e = diff(&s.store, 0, None, &[]).unwrap_err().to_string();
        assert!(e.contains("nothing is recorded before"), "{e}");
    }

    fn undelete1(s: &Sim, p: &str) -> Result<Undeleted> {
        let mut rep = undelete(&s.store, &[PathBuf::from(p)], 7, "saferoot")?;
        assert_eq!(rep.items.len(), 1);
        Ok(rep.items.remove(0))
    }

    #[test]
    fn undelete_brings_back_a_file_and_can_be_undone() {
        let s = Sim::new();
        s.mkdir("docs", 0o755);
        s.create("docs/notes.md", b"my notes", 0o640);
        s.create("other", b"o", 0o644);
        let (t, at_t) = s.instant();
        s.unlink("docs/notes.md");
        s.unlink("other");
        s.rmdir("docs");
        let (before, state) = s.instant();
        let it = undelete1(&s, "docs/notes.md").unwrap();
        assert_eq!(
            (
                it.kind,
                it.removed_op,
                it.removed_comm.as_str(),
                it.removed_pid
            ),
            (Kind::File, Op::Unlink, "agent", 4242)
        );
        assert!(t < it.target_t && it.target_t < it.removed_t);
        // The file, and the directory it needs, as they were; nothing else.
        assert_eq!(
            it.changes
                .iter()
                .map(|c| (c.mark.symbol(), c.path.display().to_string()))
                .collect::<Vec<_>>(),
            ch(&[('+', "docs"), ('+', "docs/notes.md")])
        );
        let now = s.snap();
        for p in ["docs", "docs/notes.md"] {
            assert_eq!(now.get(Path::new(p)), at_t.get(Path::new(p)), "{p}");
        }
        assert!(!now.contains_key(Path::new("other")));
        // It was a restore like any other: undoable.
        s.restore(before);
        assert_eq!(s.snap(), state);
    }

    #[test]
    fn undelete_follows_a_path_moved_away_with_its_directory() {
        let s = Sim::new();
        s.mkdir("docs", 0o755);
        s.create("docs/x", b"x", 0o644);
        let (_, at_t) = s.instant();
        s.rename("docs", "archive");
        let it = undelete1(&s, "docs/x").unwrap();
        assert_eq!(it.removed_op, Op::Rename);
        let now = s.snap();
        assert_eq!(now.get(Path::new("docs/x")), at_t.get(Path::new("docs/x")));
        // Nothing is taken from where it went.
        assert_eq!(
            now.get(Path::new("archive/x")),
            at_t.get(Path::new("docs/x"))
        );
    }

    #[test]
    fn undelete_of_a_directory_removed_by_rm_rf_brings_back_the_whole_subtree() {
        let s = Sim::new();
        s.mkdir("d", 0o750);
        s.mkdir("d/sub", 0o700);
        s.mkdir("d/sub/empty", 0o755);
        s.create("d/a", b"a", 0o644);
        s.create("d/sub/b", b"b", 0o600);
        s.symlink("d/l", "a");
        s.create("d/stale", b"removed on purpose, long before", 0o644);
        s.unlink("d/stale");
        // A change below d: what was removed before it is not part of the rm -rf.
        s.create("d/fresh", b"made after", 0o644);
        let (t, at_t) = s.instant();
        // rm -rf d, depth first, with unrelated activity meanwhile.
        s.unlink("d/a");
        s.unlink("d/fresh");
        s.create("meanwhile", b"m", 0o644);
        s.unlink("d/l");
        s.unlink("d/sub/b");
        s.rmdir("d/sub/empty");
        s.rmdir("d/sub");
        s.rmdir("d");

        // One file of it first: that file and its parents only.
        let it = undelete1(&s, "d/sub/b").unwrap();
        assert_eq!(
            it.changes
                .iter()
                .map(|c| (c.mark.symbol(), c.path.display().to_string()))
                .collect::<Vec<_>>(),
            ch(&[('+', "d"), ('+', "d/sub"), ('+', "d/sub/b")])
        );
        // Then the directory: everything it held when the rm -rf began.
        let it = undelete1(&s, "d").unwrap();
        assert_eq!((it.kind, it.removed_op), (Kind::Dir, Op::Rmdir));
        assert!(
            t < it.target_t,
            "back to before the rm -rf, not before d/fresh"
        );
        let now = s.snap();
        let d_now: Snap = now
            .iter()
            .filter(|(p, _)| p.starts_with("d"))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        let d_then: Snap = at_t
            .iter()
            .filter(|(p, _)| p.starts_with("d"))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        assert_eq!(d_now, d_then);
        assert!(!now.contains_key(Path::new("d/stale")));
        assert!(now.contains_key(Path::new("meanwhile")));
    }

    #[test]
    fn a_pause_ends_the_run_of_removals_of_an_rm_rf() {
        let s = Sim::new();
        s.mkdir("g", 0o755);
        s.create("g/old", b"old", 0o644);
        s.create("g/keep", b"keep", 0o644);
        s.unlink("g/old");
        // The rm -rf comes a minute later.
        s.skew.set(60 * 1_000_000_000);
        s.unlink("g/keep");
        s.rmdir("g");
        undelete1(&s, "g").unwrap();
        let now = s.snap();
        assert!(now.contains_key(Path::new("g/keep")));
        assert!(!now.contains_key(Path::new("g/old")));
    }

    #[test]
    fn undelete_gives_the_latest_version_and_displaces_what_is_there() {
        let s = Sim::new();
        s.create("f", b"v1", 0o644);
        s.unlink("f");
        s.create("f", b"v2", 0o600);
        let (_, at_v2) = s.instant();
        s.unlink("f");
        s.create("f", b"v3, there now", 0o644);
        let it = undelete1(&s, "f").unwrap();
        assert_eq!(
            it.changes
                .iter()
                .map(|c| (c.mark.symbol(), c.path.display().to_string()))
                .collect::<Vec<_>>(),
            ch(&[('M', "f")])
        );
        assert_eq!(s.snap().get(Path::new("f")), at_v2.get(Path::new("f")));
        // What was there went to the trash, not away.
        assert!(s
            .trash_files()
            .values()
            .any(|b| b.as_slice() == b"v3, there now"));
    }

    #[test]
    fn undelete_of_a_path_never_removed_is_an_error_and_changes_nothing() {
        let s = Sim::new();
        s.create("here", b"h", 0o644);
        s.create("gone", b"g", 0o644);
        s.unlink("gone");
        let (jlen, before) = (s.journal_len(), s.snap());
        let e = undelete(
            &s.store,
            &[PathBuf::from("gone"), PathBuf::from("here")],
            7,
            "saferoot",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "cannot undelete here: the journal has no record of it being removed"
        );
        assert_eq!((s.journal_len(), s.snap()), (jlen, before));
        let e = undelete1(&s, "nope").unwrap_err().to_string();
        assert!(e.starts_with("cannot undelete nope:"), "{e}");
        for bad in [
            vec![],
            vec![PathBuf::from(".")],
            vec![PathBuf::from("../x")],
        ] {
            let e = undelete(&s.store, &bad, 7, "saferoot").unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e}");
        }
        // A removal whose content was not kept cannot be undone.
        fs::write(s.p("lost"), b"l").unwrap();
        s.rec(s.r(Op::Create, "lost"));
        fs::remove_file(s.p("lost")).unwrap();
        s.rec(s.r(Op::Unlink, "lost"));
        let e = undelete1(&s, "lost").unwrap_err().to_string();
        assert!(e.contains("without its content being kept"), "{e}");
    }

    #[test]
    fn scratch_trees_are_named_not_copied_or_undeleted() {
        let s = Sim::new();
        s.create("main.rs", b"fn main() {}", 0o644);
        // Scratch trees change without journal records, as through the mount.
        fs::create_dir_all(s.p("target/debug")).unwrap();
        fs::write(s.p("target/debug/app"), b"binary").unwrap();
        let (t, _) = s.instant();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        let rep = materialize(&s.store, t, &[], &dest).unwrap();
        assert_eq!(changes(&rep), ch(&[('+', "main.rs")]));
        let w = rep.warnings.join("\n");
        assert!(
            w.contains("target: a scratch tree") && w.contains("not copied"),
            "{w}"
        );
        assert!(!dest.join("target").exists());

        let rep = diff(&s.store, t, None, &[PathBuf::from("target/debug")]).unwrap();
        assert!(rep.changes.is_empty());
        let w = rep.warnings.join("\n");
        assert!(w.contains("target/debug: in a scratch tree"), "{w}");

        fs::remove_file(s.p("target/debug/app")).unwrap();
        let e = undelete1(&s, "target/debug/app").unwrap_err().to_string();
        assert!(e.contains("it is in a scratch tree"), "{e}");
    }
}
