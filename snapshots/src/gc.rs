//! Retention: `saferoot gc` collects the oldest history so the store stays within its policy
//! (`[retention]` in config.toml: keep history younger than `keep_within`, and at most
//! `max_size`).
//!
//! History is collected oldest first, by choosing a cutoff instant C: every journal record
//! older than C is dropped, and with them the trash items and objects only they refer to. A
//! restore to any instant from C on needs only records newer than that instant (it walks back
//! from the live tree), so it stays exact; instants before C are refused with one plain message
//! (the `gc` record that ends the new journal says where history now starts:
//! [`crate::journal::horizon`]). C is never placed inside a write session (the session's
//! pre-image would be needed at C) and never after the newest snapshot, so `@N` of the newest
//! snapshot, and everything since, always restores.
//!
//! Order of work, for crashes: the journal is rewritten first (crash-safe: temporary file,
//! fsync, rename, fsync), then the bytes go. A crash in between leaves unreferenced trash items
//! and objects older than C; the next `gc` removes them, and crash recovery at mount does not
//! journal trash items older than C.
//!
//! What this module does not do: decide when to run (the daemon runs it at mount and when the
//! cap is crossed; people run `saferoot gc`), or collect anything while another saferoot
//! process has the store open (it holds the store exclusively, see [`Store::exclusive`]).

use crate::config::Retention;
use crate::journal::{self, Op, Record};
use crate::recover::bucket_end_ns;
use crate::store::{object_rel, OBJECTS_DIR, TMP_DIR, TRASH_DIR};
use crate::{human_bytes, manifest, Error, Result, Store};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Trash buckets this much older than the cutoff, with nothing kept in them, are removed
/// whole (leftovers of a crash between a deletion and its record, or of an interrupted gc).
const ORPHAN_MARGIN_NS: i64 = 60 * 1_000_000_000;
/// Files in `tmp/` older than this are leftovers of interrupted work.
const TMP_STALE_SECS: i64 = 3600;

#[derive(Debug, Clone)]
pub struct Options {
    pub retention: Retention,
    pub dry_run: bool,
    pub pid: u32,
    pub comm: String,
}

/// What a collection did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub dry_run: bool,
    /// The policy in force, for people.
    pub policy: String,
    /// The size cap in bytes, if any.
    pub cap_bytes: Option<u64>,
    /// Store size (trash, objects, journal) before.
    pub size_before: u64,
    /// After (measured; with `dry_run`, estimated).
    pub size_after: u64,
    pub records_dropped: usize,
    pub trash_items_freed: usize,
    pub objects_freed: usize,
    pub snapshots_dropped: usize,
    /// The oldest restorable instant before and after (ns since the epoch).
    pub oldest_before: Option<i64>,
    pub oldest_after: Option<i64>,
    /// Why the cap still does not hold, if it does not.
    pub cap_unmet: Option<String>,
    pub elapsed_ms: u64,
}

/// How much the store holds: what `status` shows and the size cap counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub trash_files: u64,
    pub trash_bytes: u64,
    pub objects: u64,
    pub object_bytes: u64,
    pub journal_bytes: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.trash_bytes + self.object_bytes + self.journal_bytes
    }
}

/// The store directory as a path that works behind the mount too.
pub(crate) fn proc_path(store: &Store) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", store.dir().as_raw_fd()))
}

/// Bytes on disk (holes take nothing) of the non-directories below `path` (or of `path`).
fn disk_bytes(path: &Path) -> (u64, u64) {
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| e.metadata().ok())
        .fold((0, 0), |(n, b), m| {
            (n + 1, b + std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        })
}

/// Measure the store.
pub fn usage(store: &Store) -> Usage {
    let root = proc_path(store);
    let (trash_files, trash_bytes) = disk_bytes(&root.join(TRASH_DIR));
    let (objects, object_bytes) = disk_bytes(&root.join(OBJECTS_DIR));
    let journal_bytes = std::fs::metadata(root.join(journal::JOURNAL_FILE))
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    Usage {
        trash_files,
        trash_bytes,
        objects,
        object_bytes,
        journal_bytes,
    }
}

/// Size of the filesystem the store is on.
pub fn filesystem_bytes(store: &Store) -> u64 {
    nix::sys::statvfs::fstatvfs(store.dir())
        .map(|v| v.blocks() * v.fragment_size())
        .unwrap_or(0)
}

/// The cap in bytes the policy `r` sets for this store.
pub fn cap_bytes(store: &Store, r: &Retention) -> Option<u64> {
    r.max_size.bytes(filesystem_bytes(store))
}

/// The oldest instant a restore accepts, from the journal's records.
pub fn oldest_restorable(records: &[Record]) -> Option<i64> {
    let first = records.iter().map(|r| r.t).min()?;
    Some(journal::horizon(records).map_or(first, |(h, _)| h))
}

/// The plan: how many of the records (in time order) to drop, and the cutoff.
struct Plan {
    /// Records dropped: the first `k` in time order.
    k: usize,
    cutoff: i64,
    estimate_freed: u64,
    cap_unmet: Option<String>,
}

/// Collect according to `opts`.
///
/// What dropping the oldest records frees is estimated from the sizes of what they kept (and
/// of their journal lines); what the disk gives back can be less (items shared with kept
/// records, blocks), so a real run can end still a little over the cap. Then it collects
/// again, from the store as measured now (each round drops more of the oldest history, never
/// past the newest snapshot), up to [`GC_ROUNDS`] rounds, holding the store throughout.
pub fn gc(store: &Store, opts: &Options) -> Result<Report> {
    let _one = COLLECTING.lock().unwrap_or_else(|p| p.into_inner());
    let _held = if opts.dry_run {
        None
    } else {
        Some(store.exclusive()?)
    };
    if !opts.dry_run {
        // A purge cut off part-way: finish it first (what it deleted is not history to keep).
        finish_purge(store)?;
    }
    let mut report = gc_round(store, opts)?;
    let mut last_dropped = report.records_dropped;
    for _ in 1..GC_ROUNDS {
        if opts.dry_run || report.cap_unmet.is_none() || last_dropped == 0 {
            break;
        }
        let next = match gc_round(store, opts) {
            Ok(n) => n,
            // What the rounds before did stands: report it, with why it stopped.
            Err(e) => {
                report.cap_unmet = Some(format!(
                    "{}; collecting more failed: {e}",
                    report.cap_unmet.take().unwrap_or_default()
                ));
                break;
            }
        };
        last_dropped = next.records_dropped;
        report.records_dropped += next.records_dropped;
        report.trash_items_freed += next.trash_items_freed;
        report.objects_freed += next.objects_freed;
        report.snapshots_dropped += next.snapshots_dropped;
        report.size_after = next.size_after;
        report.oldest_after = next.oldest_after;
        report.cap_unmet = next.cap_unmet;
        report.elapsed_ms += next.elapsed_ms;
    }
    Ok(report)
}

/// One collection or purge at a time in this process: the daemon runs them on threads of
/// their own, and the store's exclusive lock is one per open file, shared by its threads.
static COLLECTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How many times [`gc`] collects at most to bring the store under its cap.
const GC_ROUNDS: usize = 4;

/// One collection: plan from the store as it is, then drop (the caller holds the store).
fn gc_round(store: &Store, opts: &Options) -> Result<Report> {
    let started = std::time::Instant::now();
    let _progress = crate::progress::task("gc", None);
    let now = crate::now_ns();
    let buf = read_journal(store)?;
    let jpath = store.dir_path().join(journal::JOURNAL_FILE);
    let mut records: Vec<Record> = journal::records_and_lines(&buf, &jpath)?
        .into_iter()
        .filter_map(|(_, r)| r)
        .collect();
    records.sort_by_key(|r| r.t);
    let before = usage(store);
    let cap = cap_bytes(store, &opts.retention);
    let plan = plan(store, &records, &before, cap, opts, now);
    let mut report = Report {
        dry_run: opts.dry_run,
        policy: opts.retention.describe(),
        cap_bytes: cap,
        size_before: before.total(),
        size_after: before.total(),
        oldest_before: oldest_restorable(&records),
        oldest_after: oldest_restorable(&records),
        cap_unmet: plan.cap_unmet.clone(),
        ..Report::default()
    };
    if opts.dry_run {
        report.records_dropped = plan.k;
        report.size_after = before.total().saturating_sub(plan.estimate_freed);
        if plan.k > 0 {
            report.oldest_after = Some(plan.cutoff);
        }
        // What the real run below would remove: the same choices, counted instead of made
        // (leftover buckets of a crash aside).
        let cutoff = if plan.k > 0 {
            Some(plan.cutoff)
        } else {
            journal::horizon(&records).map(|(h, _)| h)
        };
        let drops = |r: &Record| plan.k > 0 && r.t < plan.cutoff;
        let kept_trash: HashSet<PathBuf> = records
            .iter()
            .filter(|r| !drops(r))
            .filter_map(|r| r.trash.clone())
            .collect();
        let kept_objects: HashSet<String> = records
            .iter()
            .filter(|r| !drops(r))
            .filter_map(|r| r.object.clone())
            .collect();
        let dropped_trash: HashSet<&PathBuf> = records
            .iter()
            .filter(|r| drops(r))
            .filter_map(|r| r.trash.as_ref())
            .collect();
        report.trash_items_freed = dropped_trash
            .into_iter()
            .filter(|p| !related(&kept_trash, p) && !journal_path_unsafe(p))
            .filter(|p| {
                nix::sys::stat::fstatat(
                    store.dir(),
                    p.as_path(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .is_ok()
            })
            .count();
        report.objects_freed = unreferenced_objects(store, &kept_objects)
            .iter()
            .filter(|hex| !store.is_pinned(hex))
            .count();
        report.snapshots_dropped = match cutoff {
            Some(c) => old_manifests(store, c)?.len(),
            None => 0,
        };
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let cutoff = if plan.k > 0 {
        Some(plan.cutoff)
    } else {
        journal::horizon(&records).map(|(h, _)| h)
    };
    // 1. The journal, crash-safely; what it keeps (including records appended meanwhile)
    // says what must stay.
    let mut kept_trash: HashSet<PathBuf> = HashSet::new();
    let mut kept_objects: HashSet<String> = HashSet::new();
    let mut dropped_trash: Vec<PathBuf> = Vec::new();
    if let (true, Some(c)) = (plan.k > 0, cutoff) {
        let note = format!(
            "history before this instant collected: {} record(s), about {} ({})",
            plan.k,
            human_bytes(plan.estimate_freed),
            opts.retention.describe()
        );
        let mut dropped = 0;
        store.journal().rewrite(store.dir(), |old| {
            let mut out = journal::HEADER.as_bytes().to_vec();
            for (line, rec) in journal::records_and_lines(old, &jpath)? {
                match rec {
                    Some(r) if r.t < c => {
                        dropped += 1;
                        dropped_trash.extend(r.trash);
                        continue;
                    }
                    Some(r) => {
                        kept_trash.extend(r.trash);
                        kept_objects.extend(r.object);
                    }
                    // A damaged line is kept for `doctor` to look at.
                    None => {}
                }
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            out.extend(journal::encode(&Record {
                target_t: Some(c),
                note: Some(note),
                ..Record::new(now.max(c), Op::Gc, ".", opts.pid, opts.comm.clone())
            }));
            Ok(out)
        })?;
        report.records_dropped = dropped;
        report.oldest_after = Some(c);
    } else {
        for r in &records {
            kept_trash.extend(r.trash.clone());
            kept_objects.extend(r.object.clone());
        }
    }
    // 2. Trash items only dropped records referred to, then whole buckets older than the
    // cutoff that nothing kept is in.
    for p in &dropped_trash {
        if related(&kept_trash, p) || journal_path_unsafe(p) {
            continue;
        }
        if remove_tree(store.dir(), p).is_ok() {
            crate::progress::advance(1);
            report.trash_items_freed += 1;
            prune_empty_parents(store.dir(), p);
        }
    }
    if let Some(c) = cutoff {
        report.trash_items_freed += remove_old_buckets(store, c, &kept_trash);
    }
    // 3. Objects no kept record refers to (pinned ones, about to be journaled, stay).
    report.objects_freed = remove_unreferenced_objects(store, &kept_objects);
    // 4. Manifests older than the cutoff, except the newest.
    if let Some(c) = cutoff {
        report.snapshots_dropped = remove_old_manifests(store, c)?;
    }
    // 5. Leftovers in tmp/, and the index entries of the trash items collected. The index
    // only speeds up finding bytes by content: if it cannot be rewritten now (no space), the
    // collection still stands, and the next mount prunes it.
    remove_stale_tmp(store);
    let _ = crate::index::prune(store);
    store.forget_made_dirs();
    report.size_after = usage(store).total();
    if let Some(cap) = cap.filter(|&c| report.size_after > c) {
        if report.cap_unmet.is_none() {
            report.cap_unmet = Some(format!(
                "the store is still {} over its cap: the history collected took less room \
                 on disk than estimated; `saferoot gc` again collects more",
                human_bytes(report.size_after - cap)
            ));
        }
        // Objects no record names, kept only because the daemon wrote them lately (a record
        // may still be on its way to them): say so, they are what a later run frees.
        let held: Vec<u64> = unreferenced_objects(store, &kept_objects)
            .iter()
            .filter(|h| store.is_pinned(h))
            .filter_map(|h| {
                nix::sys::stat::fstatat(store.dir(), &object_rel(h), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|st| st.st_blocks as u64 * 512)
            })
            .collect();
        if !held.is_empty() {
            if let Some(why) = report.cap_unmet.as_mut() {
                why.push_str(&format!(
                    "; {} object(s) ({}) that the daemon wrote in the last ten minutes, and no \
                     record names any more, are kept until then: a later gc frees them",
                    held.len(),
                    human_bytes(held.iter().sum())
                ));
            }
        }
    } else {
        report.cap_unmet = None;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A trash path from the journal that must not be followed out of the trash.
fn journal_path_unsafe(p: &Path) -> bool {
    !p.starts_with(TRASH_DIR)
        || p.components().count() < 3
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
}

fn read_journal(store: &Store) -> Result<Vec<u8>> {
    let path = store.dir_path().join(journal::JOURNAL_FILE);
    let fd = match nix::fcntl::openat(
        store.dir(),
        journal::JOURNAL_FILE,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open journal", &path, e)),
    };
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut buf).map_err(|e| Error::Io {
        op: "read journal",
        path,
        cause: e,
    })?;
    Ok(buf)
}

/// Choose the cutoff: the oldest history first, as little as the policy allows.
fn plan(
    store: &Store,
    records: &[Record],
    before: &Usage,
    cap: Option<u64>,
    opts: &Options,
    now: i64,
) -> Plan {
    let n = records.len();
    let ts: Vec<i64> = records.iter().map(|r| r.t).collect();
    // Never past the newest snapshot: restoring to it must stay possible.
    let newest_snapshot = records
        .iter()
        .filter(|r| r.op == Op::Snapshot)
        .map(|r| r.t)
        .max();
    let k_max = newest_snapshot.map_or(n, |s| ts.partition_point(|&t| t < s));
    let valid = valid_cuts(records);
    let best_at_most = |x: usize| (0..=x.min(k_max)).rev().find(|&k| valid[k]).unwrap_or(0);
    let k_age = opts
        .retention
        .keep_within_ns
        .map_or(0, |d| ts.partition_point(|&t| t < now.saturating_sub(d)));
    let mut k = best_at_most(k_age);
    let freed = freed_prefix(store, records, k_max);
    let total = before.total();
    let mut cap_unmet = None;
    if let Some(cap) = cap.filter(|&c| total > c) {
        let need = total - cap;
        match (k..=k_max).find(|&j| valid[j] && freed[j] >= need) {
            Some(j) => k = j,
            None => {
                k = best_at_most(k_max);
                cap_unmet = Some(match newest_snapshot {
                    Some(s) => format!(
                        "the store is over its cap ({}), and what remains is history since the \
                         newest snapshot ({}), which gc never collects",
                        human_bytes(cap),
                        crate::time::format_utc(s)
                    ),
                    None => format!(
                        "the store is over its cap ({}) and nothing more can be collected",
                        human_bytes(cap)
                    ),
                });
            }
        }
    }
    let cutoff = if k == 0 {
        0
    } else if k < n {
        ts[k]
    } else {
        now
    };
    Plan {
        k,
        cutoff,
        estimate_freed: freed.get(k).copied().unwrap_or(0),
        cap_unmet,
    }
}

/// `valid[k]`: dropping the first `k` records (in time order) leaves a journal that restores
/// every instant from the first kept record on: no two records of the same instant are split,
/// and no write session that began in the dropped part is still open at the cut.
fn valid_cuts(records: &[Record]) -> Vec<bool> {
    let n = records.len();
    let mut valid = vec![true; n + 1];
    for k in 1..n {
        if records[k - 1].t == records[k].t {
            valid[k] = false;
        }
    }
    // Each session [s, e]: cuts s+1 ..= e are inside it (e = n: never ended).
    let mut depth = vec![0i64; n + 2];
    let mut next_close: HashMap<u64, usize> = HashMap::new();
    let mut next_mount = n;
    for i in (0..n).rev() {
        let r = &records[i];
        match r.op {
            Op::Close => {
                if let Some(ino) = r.ino {
                    next_close.insert(ino, i);
                }
            }
            Op::Mount | Op::Umount => {
                next_mount = i;
                next_close.clear();
            }
            Op::Write | Op::Append => {
                let e = r
                    .ino
                    .and_then(|ino| next_close.get(&ino).copied())
                    .unwrap_or(next_mount)
                    .min(next_mount);
                depth[i + 1] += 1;
                depth[e + 1] -= 1;
            }
            _ => {}
        }
    }
    let mut open = 0;
    for (k, v) in valid.iter_mut().enumerate() {
        open += depth[k];
        if open > 0 {
            *v = false;
        }
    }
    valid
}

/// `freed[k]`: about how many bytes dropping the first `k` records frees (trash items and
/// objects that only they refer to, and their journal lines), for k up to `k_max`.
fn freed_prefix(store: &Store, records: &[Record], k_max: usize) -> Vec<u64> {
    let n = records.len();
    // The last record (in time order) that refers to each trash item, counting references to
    // its ancestors and descendants (a trashed directory and items inside it).
    let mut own: HashMap<&Path, usize> = HashMap::new();
    let mut last_object: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(p) = r.trash.as_deref() {
            own.insert(p, i);
        }
        if let Some(h) = r.object.as_deref() {
            last_object.insert(h, i);
        }
    }
    let mut last: HashMap<&Path, usize> = own.clone();
    for (&p, &i) in &own {
        for a in p.ancestors().skip(1) {
            if let Some(&j) = own.get(a) {
                let e = last.entry(a).or_insert(j);
                *e = (*e).max(i);
                let e = last.entry(p).or_insert(i);
                *e = (*e).max(j);
            }
        }
    }
    let mut add = vec![0u64; n + 2];
    let root = proc_path(store);
    for (&p, &i) in &last {
        let nested = p.ancestors().skip(1).any(|a| own.contains_key(a));
        if i < k_max && !journal_path_unsafe(p) && !nested {
            add[i + 1] += disk_bytes(&root.join(p)).1;
        }
    }
    for (&h, &i) in &last_object {
        if i < k_max && h.len() == 64 {
            if let Ok(st) =
                nix::sys::stat::fstatat(store.dir(), &object_rel(h), AtFlags::AT_SYMLINK_NOFOLLOW)
            {
                add[i + 1] += st.st_blocks as u64 * 512;
            }
        }
    }
    for (i, r) in records.iter().enumerate().take(k_max) {
        add[i + 1] += journal::encode(r).len() as u64;
    }
    let mut freed = vec![0u64; n + 1];
    for k in 1..=n {
        freed[k] = freed[k - 1] + add[k];
    }
    freed
}

/// Remove `rel` (relative to `dir`) and everything below it, never following a symlink.
pub fn remove_tree(dir: BorrowedFd<'_>, rel: &Path) -> nix::Result<()> {
    let st = nix::sys::stat::fstatat(dir, rel, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return nix::unistd::unlinkat(dir, rel, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    let fd = nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // A directory kept with its old mode may not be writable by a daemon without full root.
    let _ = nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700));
    let names: Vec<Vec<u8>> = {
        let d = nix::dir::Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
        let mut d = d;
        d.iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect()
    };
    for name in names {
        remove_tree(fd.as_fd(), Path::new(OsStr::from_bytes(&name)))?;
    }
    nix::unistd::unlinkat(dir, rel, nix::unistd::UnlinkatFlags::RemoveDir)
}

/// Remove the now empty containers above a removed trash item, up to its bucket.
fn prune_empty_parents(dir: BorrowedFd<'_>, rel: &Path) {
    for a in rel.ancestors().skip(1) {
        if a.components().count() < 2 {
            break;
        }
        if nix::unistd::unlinkat(dir, a, nix::unistd::UnlinkatFlags::RemoveDir).is_err() {
            break;
        }
    }
}

/// Remove whole buckets that ended well before `cutoff` and hold nothing a kept record refers
/// to. Returns how many.
fn remove_old_buckets(store: &Store, cutoff: i64, kept: &HashSet<PathBuf>) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(proc_path(store).join(TRASH_DIR)) else {
        return 0;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(end) = name.to_str().and_then(bucket_end_ns) else {
            continue;
        };
        if end >= cutoff - ORPHAN_MARGIN_NS {
            continue;
        }
        let rel = Path::new(TRASH_DIR).join(&name);
        if kept.iter().any(|k| k.starts_with(&rel)) {
            continue;
        }
        if remove_tree(store.dir(), &rel).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Remove every object no kept record names. Returns how many.
fn remove_unreferenced_objects(store: &Store, kept: &HashSet<String>) -> usize {
    let mut removed = 0;
    for hex in unreferenced_objects(store, kept) {
        if store.remove_object(&hex).is_some() {
            crate::progress::advance(1);
            removed += 1;
        }
    }
    removed
}

/// The objects (blake3 hex) in the store that are not in `kept`, pinned ones included.
fn unreferenced_objects(store: &Store, kept: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(fans) = std::fs::read_dir(proc_path(store).join(OBJECTS_DIR)) else {
        return out;
    };
    for fan in fans.flatten() {
        let prefix = fan.file_name();
        let Some(prefix) = prefix.to_str().filter(|p| p.len() == 2) else {
            continue;
        };
        let Ok(objs) = std::fs::read_dir(fan.path()) else {
            continue;
        };
        for o in objs.flatten() {
            let Some(rest) = o.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let hex = format!("{prefix}{rest}");
            if hex.len() == 64 && !kept.contains(&hex) {
                out.push(hex);
            }
        }
    }
    out
}

/// Remove the manifests of snapshots taken before `cutoff`, except the newest. Returns how
/// many.
fn remove_old_manifests(store: &Store, cutoff: i64) -> Result<usize> {
    let mut removed = 0;
    for rel in old_manifests(store, cutoff)? {
        if nix::unistd::unlinkat(store.dir(), &rel, nix::unistd::UnlinkatFlags::NoRemoveDir).is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The manifests (paths relative to the store) of snapshots taken before `cutoff`, except
/// the newest snapshot's.
fn old_manifests(store: &Store, cutoff: i64) -> Result<Vec<PathBuf>> {
    let list = manifest::list(store)?;
    let newest = list.iter().map(|s| s.n).max();
    Ok(list
        .into_iter()
        .filter(|s| s.t < cutoff && Some(s.n) != newest)
        .map(|s| Path::new(manifest::SNAPSHOTS_DIR).join(s.n.to_string()))
        .collect())
}

/// A trash path that a kept record names, or that contains or lies inside one: collecting it
/// would take kept bytes along.
fn related(kept: &HashSet<PathBuf>, p: &Path) -> bool {
    p.ancestors().any(|a| kept.contains(a)) || kept.iter().any(|k| k.starts_with(p))
}

/// Remove files in `tmp/` that interrupted work left behind long ago.
fn remove_stale_tmp(store: &Store) {
    let now = crate::now_ns() / 1_000_000_000;
    let Ok(entries) = std::fs::read_dir(proc_path(store).join(TMP_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .map(|m| now - std::os::unix::fs::MetadataExt::mtime(&m) > TMP_STALE_SECS)
            .unwrap_or(false);
        if old {
            let _ = remove_tree(store.dir(), &Path::new(TMP_DIR).join(e.file_name()));
        }
    }
}

/// What `trash purge` removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// Journal records whose kept bytes are (to be) deleted.
    pub records: usize,
    /// The distinct paths they are about.
    pub paths: Vec<PathBuf>,
    pub trash_items: usize,
    pub objects: usize,
    /// Store size before and after (with `dry_run`, after is the size before).
    pub size_before: u64,
    pub size_after: u64,
}

/// Does the record `r` keep bytes of `p` or of something below it?
fn keeps_bytes_of(r: &Record, paths: &[PathBuf]) -> bool {
    if r.trash.is_none() && r.object.is_none() {
        return false;
    }
    // An old-form rename over an existing entry keeps the replaced one, at `to`.
    let about = if r.op == Op::Rename {
        r.to.as_deref()
    } else {
        Some(r.path.as_path())
    };
    about.is_some_and(|a| paths.iter().any(|p| a.starts_with(p)))
}

/// The note `trash purge` puts on each record whose bytes it deleted (followed by the time).
pub const PURGE_NOTE: &str = "kept bytes deleted by `saferoot trash purge`";

/// The list of trash items a purge is deleting (NUL-separated paths relative to the store),
/// present only while it does.
pub const PURGING_FILE: &str = "purging";

/// How long after its pin an object a purge deletes may still be on its way into a record.
const PURGE_PIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Write [`PURGING_FILE`] (fsynced) naming `items` (trash items) and the `objects`.
fn write_purging(store: &Store, items: &[PathBuf], objects: &[String]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = Vec::new();
    let objects: Vec<PathBuf> = objects
        .iter()
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .map(|h| object_rel(h))
        .collect();
    for p in items.iter().chain(&objects) {
        buf.extend_from_slice(p.as_os_str().as_bytes());
        buf.push(0);
    }
    let shown = store.dir_path().join(PURGING_FILE);
    let fd = nix::fcntl::openat(
        store.dir(),
        PURGING_FILE,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &shown, e))?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, &buf)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Io {
            op: "write",
            path: shown,
            cause: e,
        })
}

/// The trash items a purge cut off part-way was deleting, from [`PURGING_FILE`] (empty when
/// there is none).
pub fn purging_list(store: &Store) -> Vec<PathBuf> {
    let Ok(fd) = nix::fcntl::openat(
        store.dir(),
        PURGING_FILE,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    if std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut buf).is_err() {
        return Vec::new();
    }
    buf.split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .collect()
}

/// Finish a purge that was cut off: delete the trash items [`PURGING_FILE`] names that no
/// record refers to any more (the journal was rewritten), then the file. Returns how many
/// items went. Items still named (the purge stopped before its journal rewrite) stay.
pub fn finish_purge(store: &Store) -> Result<usize> {
    let listed = purging_list(store);
    if listed.is_empty() {
        let _ = nix::unistd::unlinkat(store.dir(), PURGING_FILE, UnlinkatFlags::NoRemoveDir);
        return Ok(0);
    }
    let (records, _) = journal::read(store.dir(), store.dir_path())?;
    let known: HashSet<PathBuf> = records.iter().filter_map(|r| r.trash.clone()).collect();
    let objects: HashSet<PathBuf> = records
        .iter()
        .filter_map(|r| r.object.as_deref())
        .filter(|h| h.len() == 64)
        .map(object_rel)
        .collect();
    let mut n = 0;
    for p in &listed {
        if p.starts_with(TRASH_DIR) {
            if !related(&known, p) && !journal_path_unsafe(p) && remove_tree(store.dir(), p).is_ok()
            {
                prune_empty_parents(store.dir(), p);
                n += 1;
            }
            continue;
        }
        // objects/<2 hex>/<62 hex>: one no record names, and not named in the last moments
        // for a record on its way (in the daemon).
        let hex: String = p
            .components()
            .skip(1)
            .map(|c| c.as_os_str().to_string_lossy())
            .collect();
        if p.starts_with(OBJECTS_DIR)
            && hex.len() == 64
            && !objects.contains(p)
            && store
                .remove_object_pinned_before(&hex, PURGE_PIN_GRACE)
                .is_some()
        {
            n += 1;
        }
    }
    if n > 0 {
        let _ = crate::index::prune(store);
    }
    let _ = nix::unistd::unlinkat(store.dir(), PURGING_FILE, UnlinkatFlags::NoRemoveDir);
    Ok(n)
}

/// Delete for good every kept old version of `paths` (and of everything below them): the
/// trash items and objects the journal keeps for them. Their records stay, without the bytes
/// and with a note, so `log` still shows what happened and a restore to before says it cannot
/// bring them back.
pub fn purge(store: &Store, paths: &[PathBuf], dry_run: bool) -> Result<PurgeReport> {
    for p in paths {
        crate::store::check_relative(p)?;
        if crate::restore::under_store(p) {
            return Err(Error::Invalid(format!(
                "cannot purge {}: {} is saferoot's own store",
                p.display(),
                crate::store::STORE_DIR
            )));
        }
    }
    let _one = COLLECTING.lock().unwrap_or_else(|p| p.into_inner());
    let _held = if dry_run {
        None
    } else {
        Some(store.exclusive()?)
    };
    if !dry_run {
        finish_purge(store)?;
    }
    let buf = read_journal(store)?;
    let mut report = PurgeReport {
        dry_run,
        size_before: usage(store).total(),
        ..PurgeReport::default()
    };
    let mut shown: Vec<PathBuf> = Vec::new();
    let jpath = store.dir_path().join(journal::JOURNAL_FILE);
    for (_, r) in journal::records_and_lines(&buf, &jpath)? {
        if let Some(r) = r.filter(|r| keeps_bytes_of(r, paths)) {
            report.records += 1;
            report.trash_items += r.trash.is_some() as usize;
            let about = if r.op == Op::Rename {
                r.to.unwrap_or(r.path)
            } else {
                r.path
            };
            if !shown.contains(&about) {
                shown.push(about);
            }
        }
    }
    report.paths = shown;
    if dry_run || report.records == 0 {
        report.size_after = report.size_before;
        return Ok(report);
    }
    let now = crate::now_ns();
    let note = format!("{PURGE_NOTE} at {}", crate::time::format_utc(now));
    let mut purged_trash: Vec<PathBuf> = Vec::new();
    let mut purged_objects: Vec<String> = Vec::new();
    let mut kept_trash: HashSet<PathBuf> = HashSet::new();
    let mut kept_objects: HashSet<String> = HashSet::new();
    let rewritten = store.journal().rewrite(store.dir(), |old| {
        let mut out = journal::HEADER.as_bytes().to_vec();
        for (line, rec) in journal::records_and_lines(old, &jpath)? {
            match rec {
                Some(mut r) if keeps_bytes_of(&r, paths) => {
                    purged_trash.extend(r.trash.take());
                    purged_objects.extend(r.object.take());
                    r.note = Some(match r.note.take() {
                        Some(n) => format!("{n}; {note}"),
                        None => note.clone(),
                    });
                    out.extend(journal::encode(&r));
                    continue;
                }
                Some(r) => {
                    kept_trash.extend(r.trash);
                    kept_objects.extend(r.object);
                }
                None => {}
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        // Before the journal stops naming them: the trash items to delete, so that a purge
        // cut off part-way is finished by the next recovery instead of its leftovers being
        // taken for unjournaled removals and brought back ([`crate::recover`]).
        write_purging(store, &purged_trash, &purged_objects)?;
        Ok(out)
    });
    if let Err(e) = rewritten {
        // The journal still names everything: nothing for recovery to finish.
        let _ = nix::unistd::unlinkat(store.dir(), PURGING_FILE, UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    for p in &purged_trash {
        if !related(&kept_trash, p)
            && !journal_path_unsafe(p)
            && remove_tree(store.dir(), p).is_ok()
        {
            prune_empty_parents(store.dir(), p);
        }
    }
    let _ = nix::unistd::unlinkat(store.dir(), PURGING_FILE, UnlinkatFlags::NoRemoveDir);
    // The objects of the purged records go even if this process pinned them (the daemon pins
    // what it names for ten minutes): a pin only guards a record on its way to the journal.
    // One pinned in the last moments is given that moment first, then every record in the
    // journal is read again, and an object one of them names, or pinned again meanwhile,
    // stays (for gc, once nothing needs it).
    let grace = purged_objects
        .iter()
        .filter(|hex| !kept_objects.contains(*hex))
        .filter_map(|hex| store.pinned_since(hex))
        .map(|age| PURGE_PIN_GRACE.saturating_sub(age))
        .max();
    if let Some(wait) = grace {
        std::thread::sleep(wait);
        // Records appended since the rewrite (the daemon goes on serving) may name one of
        // them now (the same bytes kept for another path): those stay.
        let (recs, _) = journal::read(store.dir(), store.dir_path())?;
        kept_objects.extend(recs.into_iter().filter_map(|r| r.object));
    }
    for hex in &purged_objects {
        if !kept_objects.contains(hex)
            && store
                .remove_object_pinned_before(hex, PURGE_PIN_GRACE)
                .is_some()
        {
            report.objects += 1;
        }
    }
    report.objects += remove_unreferenced_objects(store, &kept_objects);
    // As in gc: the purge stands even if the index cannot be rewritten now.
    let _ = crate::index::prune(store);
    store.forget_made_dirs();
    report.size_after = usage(store).total();
    Ok(report)
}

/// The policy in force for `store`: `[retention]` of its config.toml (read now), with
/// `keep_within` and `max_size` as typed on a command line in place of the configured ones.
pub fn policy(
    store: &Store,
    keep_within: Option<&str>,
    max_size: Option<&str>,
) -> Result<Retention> {
    let mut r = crate::config::Config::load(store)?.retention;
    if let Some(k) = keep_within {
        r.keep_within_ns = crate::config::parse_duration(k)?;
    }
    if let Some(m) = max_size {
        r.max_size = crate::config::SizeCap::parse(m)?;
    }
    Ok(r)
}
