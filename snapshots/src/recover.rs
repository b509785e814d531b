//! Recovery after a crash: journal the trash items the journal does not know.
//!
//! The daemon moves a file into the trash first and journals it second. If it dies in between
//! (`kill -9`, power loss), the bytes are safe in the trash but no record says so, and restore
//! would not know to bring them back. [`recover`] walks the trash and appends one `unlink`
//! record for every item no record refers to, reconstructed from the trash layout itself:
//! the bucket name gives the second it was deleted in, the path inside the bucket gives its
//! original path. The record is dated at the item's ctime (set by the move into the trash:
//! the instant of the removal) when that lies in the bucket's second, else at the end of that
//! second (so a restore to any instant before the deletion brings it back), and says it was
//! recovered. Items a purge cut off part-way was deleting are deleted, not recovered.
//!
//! Renames the daemon wrote down before doing them ([`crate::inflight`]) are settled first: a
//! rename that happened is journaled (with the removal of what it replaced), and what was set
//! aside for one that did not is put back. Otherwise this module does not guess which
//! operation an item came from (a trash name of a file that still has another link is skipped:
//! a rename-over interrupted before its rename, from a daemon without intents).

use crate::inflight;
use crate::journal::{self, Kind, Op, Record};
use crate::store::TRASH_DIR;
use crate::{Result, Store};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// How far behind the clock of journal records a file's ctime may lag (the kernel stamps files
/// from a coarse clock: up to a jiffy, 1 to 10 ms).
pub(crate) const COARSE_CLOCK_NS: i64 = 10_000_000;

/// The instant a trash bucket name stands for: the last nanosecond of its second.
pub fn bucket_end_ns(bucket: &str) -> Option<i64> {
    let stamp = match bucket.rsplit_once('.') {
        Some((s, n)) if n.bytes().all(|c| c.is_ascii_digit()) && !n.is_empty() => s,
        _ => bucket,
    };
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%SZ").ok()?;
    Some(t.and_utc().timestamp() * 1_000_000_000 + 999_999_999)
}

/// When the journal has no record at all while the trash keeps items, the journal was lost
/// (deleted or emptied): recovering them would date removals in a past nothing else is known
/// of. Says so, for the mount to refuse until `saferoot doctor --repair` bounded the history.
pub fn journal_lost(store: &Store) -> Result<Option<String>> {
    let (records, _) = journal::read(store.dir(), store.dir_path())?;
    if !records.is_empty() {
        return Ok(None);
    }
    let n = orphans(store)?.len();
    Ok((n > 0).then(|| {
        format!(
            "the journal of {} has no record while its trash keeps {n} item(s): it was lost \
             (deleted or emptied), so what happened before now is unknown; run `saferoot \
             doctor --repair` first (restores before the repair are then refused)",
            store.dir_path().display()
        )
    }))
}

/// Finish a purge that was cut off ([`crate::gc::finish_purge`]), then append records for
/// unjournaled trash items; returns how many. Does nothing when the journal was lost
/// ([`journal_lost`]): dating those items in a past nothing else is known of would make
/// restores to it wrong; `saferoot doctor --repair` ([`recover_all`]) bounds the history first.
pub fn recover(store: &Store) -> Result<usize> {
    let _one = one_at_a_time(store);
    let (records, _) = journal::read(store.dir(), store.dir_path())?;
    if records.is_empty() && journal_lost(store)?.is_some() {
        return Ok(0);
    }
    recover_with(store, &records)
}

/// [`recover`], even when the journal was lost (`doctor --repair`, which then sets the
/// oldest restorable instant to the repair).
pub fn recover_all(store: &Store) -> Result<usize> {
    let _one = one_at_a_time(store);
    let (records, _) = journal::read(store.dir(), store.dir_path())?;
    recover_with(store, &records)
}

/// Remove what a process that is gone left in `tmp/` (a copy cut off by `kill -9` of the
/// daemon): every writer puts its pid in the name (`obj.PID.…`, `index.new.PID`, …), and
/// nothing refers to a file there. Files of live processes, and names without a pid, stay.
fn remove_tmp_of_dead_writers(store: &Store) {
    let Ok(entries) = std::fs::read_dir(crate::gc::proc_path(store).join(crate::store::TMP_DIR))
    else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('.').find_map(|p| p.parse::<u32>().ok()))
        else {
            continue;
        };
        if pid != 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ =
                crate::gc::remove_tree(store.dir(), &Path::new(crate::store::TMP_DIR).join(&name));
        }
    }
}

/// The file whose lock recoveries hold, one at a time, from before they read the journal
/// until they appended to it (two at once would both journal the same trash items).
const RECOVERING_FILE: &str = "recovering";

/// Wait for any other recovery of this store and hold it off until the result is dropped.
/// Best effort: without the file (a read-only store) recovery goes on unlocked.
fn one_at_a_time(store: &Store) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let fd = nix::fcntl::openat(
        store.dir(),
        RECOVERING_FILE,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .ok()?;
    // SAFETY: flock on a descriptor we own; blocks until the other recovery is done.
    (unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(fd)
}

/// [`recover_all`] with the journal's `records` read already.
fn recover_with(store: &Store, records: &[Record]) -> Result<usize> {
    crate::gc::finish_purge(store)?;
    // Renames a dead daemon was in the middle of: journaled if done, undone if not. Never
    // those of a live daemon (it holds the file's lock).
    let pending = inflight::pending(store);
    let horizon = journal::horizon(records).map_or(i64::MIN, |(h, _)| h);
    let mut settled = Vec::new();
    let mut stuck = None;
    if pending.as_ref().is_some_and(|p| !p.intents.is_empty()) {
        let known: HashSet<PathBuf> = records.iter().filter_map(|r| r.trash.clone()).collect();
        let mut open: Vec<&inflight::Intent> = pending
            .iter()
            .flat_map(|p| &p.intents)
            .filter(|i| i.rename.t >= horizon && !inflight::journaled(records, i))
            .collect();
        // Newest first: whether one happened is seen at its destination as later moves of
        // its directories (journaled, or recovered here) left it.
        open.sort_by_key(|i| std::cmp::Reverse(i.rename.t));
        let since = open.last().map_or(i64::MAX, |i| i.rename.t);
        let mut moves: Vec<inflight::Move> = records
            .iter()
            .filter(|r| r.t > since)
            .filter_map(inflight::Move::of)
            .collect();
        for i in open {
            let to = i.rename.to.as_deref().unwrap_or(Path::new(""));
            let to_now = inflight::follow(&moves, i.rename.t, to);
            match inflight::settle(store, records, &known, i, &to_now) {
                inflight::Outcome::Happened(recs) => {
                    if !i.leaving && !i.arrival {
                        moves.extend(inflight::Move::of(&i.rename));
                    }
                    settled.extend(recs);
                }
                inflight::Outcome::Undone => {}
                inflight::Outcome::Stuck(why) => stuck = Some(why),
            }
        }
        // Journaled in time order.
        settled.sort_by_key(|r| r.t);
    }
    if pending.is_some() {
        // No daemon is alive (it would hold the lock): no copy in tmp/ is in progress but
        // those of processes that are still there.
        remove_tmp_of_dead_writers(store);
    }
    let found = orphans_in(store, records, &settled)?;
    store.journal().append_all(&settled)?;
    store.journal().append_all(&found)?;
    let n = settled.len() + found.len();
    if n > 0 {
        store.journal().sync()?;
    }
    match (pending, stuck) {
        // Left in the file for the next recovery (`doctor`, or a mount before a daemon's
        // threads write over its slot) to try again.
        (_, Some(why)) => return Err(crate::Error::Invalid(why)),
        (Some(p), None) => p.done(store),
        (None, None) => {}
    }
    Ok(n)
}

/// The records [`recover`] would append: one for every trash item no record refers to.
pub fn orphans(store: &Store) -> Result<Vec<Record>> {
    let (records, _) = journal::read(store.dir(), store.dir_path())?;
    orphans_in(store, &records, &[])
}

/// [`orphans`], given the journal's `records` and those about to be appended (`more`).
fn orphans_in(store: &Store, records: &[Record], more: &[Record]) -> Result<Vec<Record>> {
    let known: HashSet<PathBuf> = records
        .iter()
        .chain(more)
        .filter_map(|r| r.trash.clone())
        .collect();
    // The newest record of a change to each existing file (not one that made the name: a
    // file created after the removal must stay after it).
    let mut latest: std::collections::HashMap<&Path, i64> = std::collections::HashMap::new();
    for r in records {
        if matches!(r.op, Op::Write | Op::Append | Op::Close | Op::Setattr) {
            let e = latest.entry(r.path.as_path()).or_insert(r.t);
            *e = (*e).max(r.t);
        }
    }
    // Items older than where history now starts are what an interrupted `gc` left to delete.
    let horizon = journal::horizon(records).map_or(i64::MIN, |(h, _)| h);
    // A purge cut off part-way names what it was deleting: never recover those.
    let purging: HashSet<PathBuf> = crate::gc::purging_list(store).into_iter().collect();
    let is_known = |rel: &Path| {
        rel.ancestors()
            .any(|a| known.contains(a) || purging.contains(a))
    };
    let root = PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        store.dir().as_raw_fd(),
        TRASH_DIR
    ));
    let mut found = Vec::new();
    for ent in walkdir::WalkDir::new(&root)
        .min_depth(2)
        .follow_links(false)
        .sort_by_file_name()
    {
        let Ok(ent) = ent else { continue };
        if ent.file_type().is_dir() {
            continue;
        }
        let Ok(sub) = ent.path().strip_prefix(&root) else {
            continue;
        };
        let trash_rel = Path::new(TRASH_DIR).join(sub);
        if is_known(&trash_rel) {
            continue;
        }
        let mut comps = sub.components();
        let Some(bucket) = comps.next().and_then(|c| c.as_os_str().to_str()) else {
            continue;
        };
        let Some(t) = bucket_end_ns(bucket) else {
            continue;
        };
        if t < horizon {
            continue;
        }
        let rel: PathBuf = comps.as_path().to_owned();
        let Ok(md) = ent.path().symlink_metadata() else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        // A trash name of a file that still has another link is a rename-over interrupted
        // between its hard link into the trash and the rename: nothing was removed.
        if md.nlink() > 1 && !md.is_dir() {
            continue;
        }
        // The move into the trash set the item's ctime: the instant of the removal, when it
        // lies in the bucket's second (an item inside a directory moved there whole keeps
        // its own older ctime: then the end of the second).
        let ctime = md
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.ctime_nsec());
        let t = if ctime <= t && ctime > t - 1_000_000_000 {
            // File times come from a coarser clock than records: never before a record of the
            // same path in that second (a `close` just before the removal).
            let last = latest.get(rel.as_path()).copied().unwrap_or(i64::MIN);
            if last >= ctime && last < t && last - ctime < COARSE_CLOCK_NS {
                last + 1
            } else {
                ctime
            }
        } else {
            t
        };
        found.push(Record {
            kind: Kind::from_mode(md.mode()),
            mode: Some(md.mode()),
            ino: Some(md.ino()),
            size: Some(md.size()),
            trash: Some(trash_rel),
            note: Some(
                "recovered: found in the trash with no journal record (the daemon stopped \
                 before writing it)"
                    .into(),
            ),
            ..Record::new(t, Op::Unlink, rel, 0, "saferoot")
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::fd::{AsFd, OwnedFd};

    #[test]
    fn bucket_names() {
        assert_eq!(bucket_end_ns("1970-01-01T00:00:01Z"), Some(1_999_999_999));
        assert_eq!(bucket_end_ns("1970-01-01T00:00:01Z.3"), Some(1_999_999_999));
        assert_eq!(bucket_end_ns("junk"), None);
    }

    #[test]
    fn unjournaled_trash_items_get_records_once() {
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Store::open_or_create(root.as_fd(), t.path()).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/lost"), b"lost").unwrap();
        std::fs::write(t.path().join("known"), b"known").unwrap();
        let d: OwnedFd = std::fs::File::open(t.path().join("d")).unwrap().into();
        let when = 1_700_000_000_500_000_000;
        // "known" is journaled as the daemon would; "d/lost" is not (a crash in between).
        let kt = store
            .divert_to_trash(root.as_fd(), OsStr::new("known"), Path::new("known"), when)
            .unwrap();
        store
            .journal()
            .append(&Record {
                trash: Some(kt),
                ..Record::new(when, Op::Unlink, "known", 1, "rm")
            })
            .unwrap();
        store
            .divert_to_trash(d.as_fd(), OsStr::new("lost"), Path::new("d/lost"), when)
            .unwrap();
        assert_eq!(recover(&store).unwrap(), 1);
        assert_eq!(recover(&store).unwrap(), 0, "recovery is idempotent");
        let (recs, _) = journal::read(store.dir(), store.dir_path()).unwrap();
        let r = recs.last().unwrap();
        assert_eq!(r.op, Op::Unlink);
        assert_eq!(r.path, Path::new("d/lost"));
        assert_eq!(r.t, 1_700_000_000_999_999_999);
        assert_eq!(r.kind, Some(Kind::File));
        assert!(r.note.as_deref().unwrap().starts_with("recovered"));
    }

    #[test]
    fn tmp_files_of_gone_processes_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Store::open_or_create(root.as_fd(), t.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        // As a daemon that died leaves it: without it no daemon has run, and nothing is
        // removed.
        std::fs::write(
            t.path()
                .join(crate::store::STORE_DIR)
                .join(crate::inflight::INFLIGHT_FILE),
            b"",
        )
        .unwrap();
        let tmp = t
            .path()
            .join(crate::store::STORE_DIR)
            .join(crate::store::TMP_DIR);
        std::fs::create_dir_all(&tmp).unwrap();
        let names = [
            format!("obj.{gone}.1.2"),
            format!("obj.{}.1.2", std::process::id()),
            "index.new".to_string(),
        ];
        for n in &names {
            std::fs::write(tmp.join(n), b"x").unwrap();
        }
        recover(&store).unwrap();
        assert!(
            !tmp.join(&names[0]).exists(),
            "a gone writer's copy is removed"
        );
        assert!(tmp.join(&names[1]).exists(), "a live writer's copy stays");
        assert!(tmp.join(&names[2]).exists(), "a name without a pid stays");
    }

    /// An item moved into the trash in the current second is dated at its ctime (the move),
    /// not at the end of the second, which may be after records written since.
    #[test]
    fn a_recovered_removal_is_dated_when_it_happened() {
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Store::open_or_create(root.as_fd(), t.path()).unwrap();
        std::fs::write(t.path().join("f"), b"f").unwrap();
        let when = crate::now_ns();
        let tr = store
            .divert_to_trash(root.as_fd(), OsStr::new("f"), Path::new("f"), when)
            .unwrap();
        let ctime = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(t.path().join(".saferoot").join(&tr)).unwrap();
            m.ctime() * 1_000_000_000 + m.ctime_nsec()
        };
        let found = orphans(&store).unwrap();
        assert_eq!(found.len(), 1);
        // The bucket is named for the second of `when`; the ctime lies in it unless the
        // second turned between the two (then the end of the bucket's second).
        let end = bucket_end_ns(
            tr.components()
                .nth(1)
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let want = if ctime <= end && ctime > end - 1_000_000_000 {
            ctime
        } else {
            end
        };
        assert_eq!(found[0].t, want);
        // A close of the file journaled a moment after its ctime (file times lag the records'
        // clock): the removal is dated after it.
        if want == ctime && ctime + 50_000 < end {
            store
                .journal()
                .append(&Record::new(ctime + 50_000, Op::Close, "f", 1, "sh"))
                .unwrap();
            assert_eq!(orphans(&store).unwrap()[0].t, ctime + 50_001);
        }
    }

    /// A purge cut off after its journal rewrite: the items it was deleting are deleted by the
    /// next recovery, not journaled as removals.
    #[test]
    fn a_purge_cut_off_is_finished_not_recovered() {
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Store::open_or_create(root.as_fd(), t.path()).unwrap();
        for n in ["a", "b"] {
            std::fs::write(t.path().join(n), n).unwrap();
        }
        let when = 1_700_000_000_500_000_000;
        let ta = store
            .divert_to_trash(root.as_fd(), OsStr::new("a"), Path::new("a"), when)
            .unwrap();
        let tb = store
            .divert_to_trash(root.as_fd(), OsStr::new("b"), Path::new("b"), when)
            .unwrap();
        // The journal already forgot "a" (purged); "b" is an ordinary orphan.
        store
            .journal()
            .append(&Record::new(when - 1, Op::Mount, ".", 1, "saferoot"))
            .unwrap();
        let mut list = Vec::new();
        list.extend_from_slice(ta.as_os_str().as_encoded_bytes());
        list.push(0);
        std::fs::write(
            t.path().join(".saferoot").join(crate::gc::PURGING_FILE),
            &list,
        )
        .unwrap();
        assert_eq!(orphans(&store).unwrap().len(), 1, "only b is an orphan");
        assert_eq!(recover(&store).unwrap(), 1);
        assert!(
            !t.path().join(".saferoot").join(&ta).exists(),
            "a was deleted"
        );
        assert!(t.path().join(".saferoot").join(&tb).exists());
        assert!(!t
            .path()
            .join(".saferoot")
            .join(crate::gc::PURGING_FILE)
            .exists());
        let (recs, _) = journal::read(store.dir(), store.dir_path()).unwrap();
        assert!(recs.iter().all(|r| r.path != Path::new("a")));
    }
}
