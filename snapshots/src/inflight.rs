//! Renames in flight: what the daemon is about to rename, written down before it renames.
//!
//! A rename is journaled after it is done (the record must describe what happened). If the
//! daemon dies between the rename and its record (`kill -9`, a crash), the journal does not
//! know the name moved: a restore to an earlier instant would not move it back, and for a
//! rename over an existing file, the recovered removal of the replaced file
//! ([`crate::recover`]) would bring the old file back at the new name while the old name
//! stayed missing.
//!
//! So before each rename the daemon's request thread writes the records it will journal into
//! its own slot of `.saferoot/inflight` ([`Inflight::intend`]): one `pwrite` into the page
//! cache, overwriting the thread's previous intent (which was journaled or never started).
//! The daemon holds the file locked (`flock`) while it lives. After it died, recovery
//! ([`pending`]) reads every slot and, for each intent the journal does not have, looks at the
//! tree: if the entry now at the destination (followed through later renames of its
//! directories) is the renamed inode the rename happened, and its records are journaled,
//! dated as the daemon would have (a rename over an entry from the done mark the thread
//! writes once it is done, else the moved inode's ctime); if not, it did not happen, and what
//! was set aside for it (a second name in the trash for the file it would have replaced, a
//! copy, or the empty directory moved into the trash) is removed or put back. Once its
//! records are journaled the thread forgets the intent. A move into a scratch tree keeps its
//! many records in a side file, `inflight.<slot>`.
//!
//! Slot format: at offset `slot * SLOT_BYTES`, one journal-style line (16 hex digits of
//! blake3, a space, JSON of [`Intent`], a newline) followed by a NUL byte, and the done mark
//! in the slot's last [`MARK_BYTES`]. A slot whose checksum does not match (a write cut off by
//! the crash, which then came before the rename) is ignored.

use crate::journal::{self, Record};
use crate::store::TRASH_DIR;
use crate::{Error, Result, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file in the store directory.
pub const INFLIGHT_FILE: &str = "inflight";
/// Bytes per slot: room for an intent's four paths of `PATH_MAX` bytes each, escaped at six
/// bytes a byte in JSON (`\u0001`), and for the done mark at the slot's end. An intent that
/// would not fit (paths longer than any the mount accepts) is not written: that rename is
/// recovered as it was without intents.
pub const SLOT_BYTES: u64 = 128 * 1024;
/// The done mark: `DONE`, the instant the rename was done and the intent's `rename.t` (little
/// endian), and the first 4 bytes of blake3 of those 20 bytes; the slot's last bytes.
const MARK_BYTES: u64 = 24;
/// Slots read back by recovery (threads beyond this write no intent).
const MAX_SLOTS: u64 = 256;

/// What one rename is about to do: the records it will journal once done.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The `rename` or `exchange` record (its `t`: before the rename; `ino`: the renamed inode).
    pub rename: Record,
    /// For a rename over an existing entry: the `unlink` record of the replaced entry. Written
    /// twice: before the entry is set aside (no `trash` or `object` yet: recovery then looks
    /// for what was set aside by its inode), and once its `trash` item or `object` exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Record>,
    /// A move out of a scratch tree: only `kept` is journaled for it (what arrives is
    /// journaled as created, which recovery does not redo).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arrival: bool,
    /// A move into a scratch tree: what it journals (an `unlink` or `rmdir` for every entry
    /// that leaves the versioned tree, bytes kept first) is in the slot's side file
    /// `inflight.<slot>`, too many for the slot; `rename` itself is not journaled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
    /// For `leaving`: the records, as read back from the side file by [`pending`].
    #[serde(skip)]
    pub leaving_records: Vec<Record>,
    /// When the rename was done, if the daemon marked it ([`Inflight::done`]) before it died.
    #[serde(skip)]
    pub done_at: Option<i64>,
}

fn mark(done: i64, intent_t: i64) -> [u8; MARK_BYTES as usize] {
    let mut m = [0u8; MARK_BYTES as usize];
    m[..4].copy_from_slice(b"DONE");
    m[4..12].copy_from_slice(&done.to_le_bytes());
    m[12..20].copy_from_slice(&intent_t.to_le_bytes());
    let sum = blake3::hash(&m[..20]);
    m[20..].copy_from_slice(&sum.as_bytes()[..4]);
    m
}

/// The done mark at the end of a slot's bytes, if whole and for the intent dated `intent_t`.
fn read_mark(slot: &[u8], intent_t: i64) -> Option<i64> {
    let m = slot.get(slot.len().checked_sub(MARK_BYTES as usize)?..)?;
    let done = i64::from_le_bytes(m[4..12].try_into().ok()?);
    let t = i64::from_le_bytes(m[12..20].try_into().ok()?);
    (m[..4] == *b"DONE" && t == intent_t && mark(done, t) == *m).then_some(done)
}

impl Intent {
    /// The intent of a rename that replaces nothing; the other fields are set where they apply.
    pub fn new(rename: Record) -> Intent {
        Intent {
            rename,
            kept: None,
            arrival: false,
            leaving: false,
            leaving_records: Vec::new(),
            done_at: None,
        }
    }
}

/// The side file of slot `n`, in the store directory.
fn side_file(n: u64) -> String {
    format!("{INFLIGHT_FILE}.{n}")
}

/// The daemon's handle on `.saferoot/inflight`, locked for its lifetime.
pub struct Inflight {
    fd: OwnedFd,
}

static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SLOT: u64 = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
}

impl Inflight {
    /// Open and lock the file for writing intents (run [`crate::recover::recover`] first: it
    /// settles what a previous daemon left, and empties the file when it settled all). Fails
    /// if another process holds it.
    pub fn open(store: &Store) -> Result<Inflight> {
        let path = store.dir_path().join(INFLIGHT_FILE);
        let fd = nix::fcntl::openat(
            store.dir(),
            INFLIGHT_FILE,
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io("open", &path, e))?;
        // A recovery run by another command (`diff` of the unmounted directory) holds it for
        // a moment: wait for it, but not for another daemon.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Inflight { fd });
            }
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EWOULDBLOCK || std::time::Instant::now() >= until {
                return Err(Error::io("lock", &path, e));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Write down, in this thread's slot, the records a rename is about to journal. Best
    /// effort: a failure (a full disk cannot fail it once the slot's blocks exist) leaves
    /// the rename as recoverable as it was without intents.
    pub fn intend(&self, intent: &Intent) {
        let slot = SLOT.with(|s| *s);
        if slot >= MAX_SLOTS {
            return;
        }
        let mut line = encode(intent);
        if line.len() as u64 >= SLOT_BYTES - MARK_BYTES {
            return;
        }
        line.push(0);
        let _ = nix::sys::uio::pwrite(&self.fd, &line, (slot * SLOT_BYTES) as i64);
    }

    /// [`Inflight::intend`] for a move into a scratch tree: `recs` (every record it will
    /// journal) go to the slot's side file first, then the intent, marked `leaving`, to the
    /// slot. Nothing is written down when the side file cannot be.
    pub fn intend_leaving(&self, store: &Store, intent: Intent, recs: &[Record]) {
        let slot = SLOT.with(|s| *s);
        if slot >= MAX_SLOTS {
            return;
        }
        let mut bytes = Vec::new();
        for r in recs {
            bytes.extend_from_slice(&journal::encode(r));
        }
        let written = nix::fcntl::openat(
            store.dir(),
            side_file(slot).as_str(),
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .and_then(|fd| {
            nix::unistd::write(&fd, &bytes).and_then(|n| {
                if n == bytes.len() {
                    Ok(())
                } else {
                    Err(nix::errno::Errno::ENOSPC)
                }
            })
        });
        if written.is_ok() {
            self.intend(&Intent {
                leaving: true,
                ..intent
            });
        }
    }

    /// The rename this thread wrote down (its `rename.t`: `intent_t`) was done at `done`:
    /// recovery dates it so if the daemon dies before journaling it.
    pub fn done(&self, intent_t: i64, done: i64) {
        let slot = SLOT.with(|s| *s);
        if slot < MAX_SLOTS {
            let at = (slot * SLOT_BYTES + SLOT_BYTES - MARK_BYTES) as i64;
            let _ = nix::sys::uio::pwrite(&self.fd, &mark(done, intent_t), at);
        }
    }

    /// The rename this thread wrote down failed, or was journaled: forget it (a later crash
    /// must not find it and take a name that came to hold the inode otherwise for its doing,
    /// nor journal again a removal that was purged since).
    pub fn forget(&self) {
        let slot = SLOT.with(|s| *s);
        if slot < MAX_SLOTS {
            let _ = nix::sys::uio::pwrite(&self.fd, &[0], (slot * SLOT_BYTES) as i64);
        }
    }

    /// Empty the file (a clean stop: every intent was journaled).
    pub fn clear(&self, store: &Store) {
        let _ = nix::unistd::ftruncate(self.fd.as_fd(), 0);
        remove_side_files(store);
    }
}

/// Remove every slot's side file.
fn remove_side_files(store: &Store) {
    for n in 0..MAX_SLOTS {
        let _ = nix::unistd::unlinkat(
            store.dir(),
            side_file(n).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// The records of slot `n`'s side file; `None` if any line is not whole (then the intent
/// that names it was not written either, or is not trusted).
fn read_side_file(store: &Store, n: u64) -> Option<Vec<Record>> {
    let fd = nix::fcntl::openat(
        store.dir(),
        side_file(n).as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut buf).ok()?;
    let body = buf.strip_suffix(b"\n")?;
    body.split(|&b| b == b'\n')
        .map(|l| journal::decode(l).ok())
        .collect()
}

fn encode(intent: &Intent) -> Vec<u8> {
    let json = serde_json::to_vec(intent).expect("intents always serialize");
    let mut line = Vec::with_capacity(json.len() + 18);
    line.extend_from_slice(journal::checksum(&json).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn decode(slot: &[u8]) -> Option<Intent> {
    let end = slot.iter().position(|&b| b == 0)?;
    let line = slot[..end].strip_suffix(b"\n")?;
    let (sum, json) = line.split_at_checked(16)?;
    let json = json.strip_prefix(b" ")?;
    if journal::checksum(json).as_bytes() != sum {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// The intents a daemon that died left behind, read under the file's lock (so never those of
/// a live daemon: `None` then, and when there is no file). The lock is held until the
/// returned [`Pending`] is dropped; [`Pending::done`] empties the file.
pub fn pending(store: &Store) -> Option<Pending> {
    let fd = nix::fcntl::openat(
        store.dir(),
        INFLIGHT_FILE,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    let len = nix::sys::stat::fstat(&fd).ok()?.st_size.max(0) as u64;
    let mut intents = Vec::new();
    let mut buf = vec![0u8; SLOT_BYTES as usize];
    let mut off = 0;
    while off < len.min(MAX_SLOTS * SLOT_BYTES) {
        let n = nix::sys::uio::pread(&fd, &mut buf, off as i64).unwrap_or(0);
        if let Some(mut i) = decode(&buf[..n]) {
            i.done_at = read_mark(&buf[..n], i.rename.t);
            if i.leaving {
                match read_side_file(store, off / SLOT_BYTES) {
                    Some(recs) => i.leaving_records = recs,
                    None => {
                        off += SLOT_BYTES;
                        continue;
                    }
                }
            }
            intents.push(i);
        }
        off += SLOT_BYTES;
    }
    Some(Pending { fd, intents })
}

/// What [`pending`] found.
pub struct Pending {
    fd: OwnedFd,
    pub intents: Vec<Intent>,
}

impl Pending {
    /// Every intent was settled (journaled, or what was set aside put back): forget them.
    pub fn done(self, store: &Store) {
        let _ = nix::unistd::ftruncate(self.fd.as_fd(), 0);
        remove_side_files(store);
    }
}

/// How recovery settles one intent the journal lacks.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rename happened: journal these records.
    Happened(Vec<Record>),
    /// It did not: what was set aside for it was put back (or nothing was).
    Undone,
    /// It did not, and what was set aside could not be put back (why): keep the intent.
    Stuck(String),
}

/// Whether the journal `records` already have the intent's rename (same paths and inode,
/// dated at or after the intent).
pub fn journaled(records: &[Record], intent: &Intent) -> bool {
    let r = &intent.rename;
    records
        .iter()
        .rev()
        .any(|j| j.op == r.op && j.t >= r.t && j.path == r.path && j.to == r.to && j.ino == r.ino)
}

/// When the journal `records` got the intent's record of the replaced entry, if they did.
fn kept_journaled(records: &[Record], kept: &Record) -> Option<i64> {
    records
        .iter()
        .rev()
        .find(|j| {
            j.op == kept.op
                && j.t >= kept.t
                && j.path == kept.path
                && j.trash == kept.trash
                && j.object == kept.object
        })
        .map(|j| j.t)
}

fn lstat(store: &Store, rel: &Path) -> Option<nix::sys::stat::FileStat> {
    if rel.as_os_str().is_empty() || rel.is_absolute() {
        return None;
    }
    nix::sys::stat::fstatat(
        store.project(),
        rel,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()
}

/// Settle one intent the journal lacks (see the module documentation). `records`: the
/// journal as read; `known`: the trash items its records name.
/// `to_now`: where the intent's destination is now, after the renames of its directories
/// that came later ([`follow`]).
pub fn settle(
    store: &Store,
    records: &[Record],
    known: &HashSet<PathBuf>,
    intent: &Intent,
    to_now: &Path,
) -> Outcome {
    let r = &intent.rename;
    let Some(to) = r.to.as_deref() else {
        return Outcome::Undone;
    };
    let now_at_to = lstat(store, to_now);
    let happened = match (now_at_to.as_ref(), r.ino) {
        (Some(st), Some(ino)) => st.st_ino == ino,
        _ => false,
    };
    if intent.leaving {
        return settle_leaving(store, records, known, intent, happened);
    }
    let kept = intent.kept.as_ref();
    // What was set aside for the replaced entry, once it was (the second writing).
    let kept_done = kept.filter(|k| k.trash.is_some() || k.object.is_some());
    if happened {
        let landed = kept_done.and_then(|k| kept_journaled(records, k));
        // Dated as the daemon would have: a rename to a free name, an exchange and a move out
        // of scratch at the intent's `t`; a rename over an entry when it was done (both its
        // records), from the done mark, or if the daemon died before writing that, from the
        // moved inode's ctime, which the rename set (a later write through a shared mapping
        // could move it on), never before the intent nor before the replaced entry's record
        // if that one landed alone (file times come from a coarser clock).
        let t = match (kept_done, intent.arrival) {
            (Some(_), false) => {
                let floor = r.t.max(landed.unwrap_or(i64::MIN));
                let at = intent.done_at.unwrap_or_else(|| {
                    now_at_to
                        .map(|st| st.st_ctime.saturating_mul(1_000_000_000) + st.st_ctime_nsec)
                        .unwrap_or(r.t)
                });
                at.clamp(floor, crate::now_ns().max(floor))
            }
            _ => r.t,
        };
        let note = "recovered: the daemon stopped after this rename, before journaling it";
        let mut out = Vec::new();
        if let Some(k) = kept_done {
            if landed.is_none() {
                out.push(Record {
                    t: if intent.arrival { k.t } else { t },
                    note: Some(note.into()),
                    ..k.clone()
                });
            }
        }
        if !intent.arrival {
            out.push(Record {
                t,
                note: Some(note.into()),
                ..r.clone()
            });
        }
        return Outcome::Happened(out);
    }
    let Some(k) = kept else {
        return Outcome::Undone;
    };
    // Not done: put back what was set aside for the entry it would have replaced.
    let items: Vec<PathBuf> = match &k.trash {
        Some(tr) => vec![tr.clone()],
        None if k.object.is_some() => Vec::new(),
        // Stopped while setting it aside: look for it where it would be.
        None => set_aside_candidates(store, to, k.t),
    };
    for tr in items.iter().filter(|tr| !known.contains(*tr)) {
        let Ok(item) =
            nix::sys::stat::fstatat(store.dir(), tr, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        let is_dir = item.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let ours = k.ino == Some(item.st_ino)
            // A copy (of a special file with other links) made for this rename.
            || (k.trash.is_some()
                || item.st_ctime.saturating_mul(1_000_000_000) + item.st_ctime_nsec
                    >= k.t - crate::recover::COARSE_CLOCK_NS);
        if !ours {
            continue;
        }
        let res = match &now_at_to {
            // The replaced entry is still in place: this second name or copy stands for
            // nothing.
            Some(st) if k.ino == Some(st.st_ino) && !is_dir => nix::unistd::unlinkat(
                store.dir(),
                tr.as_path(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ),
            Some(_) => continue,
            // The empty directory moved into the trash: back to its name.
            None if is_dir && k.ino == Some(item.st_ino) => nix::fcntl::renameat2(
                store.dir(),
                tr.as_path(),
                store.project(),
                to_now,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            ),
            None => continue,
        };
        if let Err(e) = res {
            return Outcome::Stuck(format!(
                "could not put back {} (set aside for a rename the daemon did not do): {e}",
                tr.display()
            ));
        }
    }
    Outcome::Undone
}

/// A rename or exchange that moved `from` to `to` at `t` (journaled, or recovered).
#[derive(Debug, Clone)]
pub struct Move {
    pub t: i64,
    pub exchange: bool,
    pub from: PathBuf,
    pub to: PathBuf,
}

impl Move {
    /// The move a rename or exchange record describes.
    pub fn of(r: &Record) -> Option<Move> {
        let exchange = match r.op {
            journal::Op::Rename => false,
            journal::Op::Exchange => true,
            _ => return None,
        };
        Some(Move {
            t: r.t,
            exchange,
            from: r.path.clone(),
            to: r.to.clone()?,
        })
    }
}

/// Where `path`, as it was at `t`, is after the `moves` made later (of it or of a directory
/// above it), in time order.
pub fn follow(moves: &[Move], t: i64, path: &Path) -> PathBuf {
    let mut later: Vec<&Move> = moves.iter().filter(|m| m.t > t).collect();
    later.sort_by_key(|m| m.t);
    let mut p = path.to_path_buf();
    for m in later {
        // (`join` of an empty rest would add a trailing slash, which lstat of a file refuses.)
        let moved = |base: &Path, rest: &Path| {
            if rest.as_os_str().is_empty() {
                base.to_path_buf()
            } else {
                base.join(rest)
            }
        };
        if let Ok(rest) = p.strip_prefix(&m.from) {
            p = moved(&m.to, rest);
        } else if m.exchange {
            if let Ok(rest) = p.strip_prefix(&m.to) {
                p = moved(&m.from, rest);
            }
        }
    }
    p
}

/// [`settle`] for a move into a scratch tree (`happened`: the moved inode is at its
/// destination). Done: its records are journaled unless they landed. Not done: the copies it
/// made in the trash (of symlinks, fifos, device nodes) are removed; its objects are left to
/// `gc` (they may hold bytes other records name).
fn settle_leaving(
    store: &Store,
    records: &[Record],
    known: &HashSet<PathBuf>,
    intent: &Intent,
    happened: bool,
) -> Outcome {
    let recs = &intent.leaving_records;
    if happened {
        // All were written in one write(2), which a crash can still cut part-way: add those
        // that did not land.
        let landed: HashSet<(&Path, journal::Op, Option<u64>)> = records
            .iter()
            .filter(|j| recs.first().is_some_and(|f| j.t == f.t))
            .map(|j| (j.path.as_path(), j.op, j.ino))
            .collect();
        let out = recs
            .iter()
            .filter(|r| !landed.contains(&(r.path.as_path(), r.op, r.ino)))
            .map(|r| Record {
                note: Some(format!(
                    "{} (recovered: the daemon stopped after this move, before journaling it)",
                    r.note.as_deref().unwrap_or("moved into scratch")
                )),
                ..r.clone()
            })
            .collect();
        return Outcome::Happened(out);
    }
    for tr in recs.iter().filter_map(|r| r.trash.as_ref()) {
        if known.contains(tr) {
            continue;
        }
        if let Err(e) = nix::unistd::unlinkat(
            store.dir(),
            tr.as_path(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            if e != nix::errno::Errno::ENOENT {
                return Outcome::Stuck(format!(
                    "could not remove {} (copied for a move the daemon did not do): {e}",
                    tr.display()
                ));
            }
        }
    }
    Outcome::Undone
}

/// Where the entry `rel` set aside at instant `t` would be in the trash: one path per bucket
/// of that second that exists.
fn set_aside_candidates(store: &Store, rel: &Path, t: i64) -> Vec<PathBuf> {
    let stamp = crate::store::trash_stamp(t);
    let mut out = Vec::new();
    for n in 0..10_000u32 {
        let bucket = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}.{n}")
        };
        let b = Path::new(TRASH_DIR).join(&bucket);
        if nix::sys::stat::fstatat(store.dir(), &b, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_err()
        {
            break;
        }
        out.push(b.join(rel));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Op;

    #[test]
    fn a_move_into_scratch_cut_off_in_its_journal_write_gets_the_rest() {
        use std::os::fd::OwnedFd;
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Store::open_or_create(root.as_fd(), t.path()).unwrap();
        let rec = |p: &str, op, ino| Record {
            ino: Some(ino),
            ..Record::new(9, op, p, 1, "mv")
        };
        let recs = vec![
            rec("d/a", Op::Unlink, 2),
            rec("d/b", Op::Unlink, 3),
            rec("d", Op::Rmdir, 1),
        ];
        let intent = Intent {
            leaving: true,
            leaving_records: recs.clone(),
            ..Intent::new(Record {
                to: Some("target/d".into()),
                ino: Some(1),
                ..Record::new(9, Op::Rename, "d", 1, "mv")
            })
        };
        let journal = vec![recs[0].clone()];
        let Outcome::Happened(out) =
            settle_leaving(&store, &journal, &HashSet::new(), &intent, true)
        else {
            panic!("the move happened");
        };
        let paths: Vec<_> = out.iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("d/b"), PathBuf::from("d")]);
        let Outcome::Happened(out) = settle_leaving(&store, &recs, &HashSet::new(), &intent, true)
        else {
            panic!("the move happened");
        };
        assert!(out.is_empty(), "all landed: nothing to add");
    }

    #[test]
    fn done_marks_are_bound_to_their_intent() {
        let mut slot = vec![0u8; 100];
        slot[100 - MARK_BYTES as usize..].copy_from_slice(&mark(42, 7));
        assert_eq!(read_mark(&slot, 7), Some(42));
        assert_eq!(
            read_mark(&slot, 8),
            None,
            "a mark of an earlier intent of the slot"
        );
        slot[90] ^= 1;
        assert_eq!(read_mark(&slot, 7), None, "a torn mark");
        assert_eq!(read_mark(&[0u8; 10], 7), None);
    }

    #[test]
    fn follow_takes_a_path_through_later_moves_of_its_directories() {
        let mv = |t, exchange, from: &str, to: &str| Move {
            t,
            exchange,
            from: from.into(),
            to: to.into(),
        };
        let moves = [
            mv(5, false, "d1", "d2"),
            mv(1, false, "d0", "d1"),
            mv(7, true, "x", "d2/sub"),
            mv(9, false, "d2x", "gone"),
        ];
        assert_eq!(follow(&moves, 3, Path::new("d1/t")), Path::new("d2/t"));
        assert_eq!(follow(&moves, 3, Path::new("d1/sub/f")), Path::new("x/f"));
        assert_eq!(follow(&moves, 0, Path::new("d0/t")), Path::new("d2/t"));
        assert_eq!(follow(&moves, 6, Path::new("d1/t")), Path::new("d1/t"));
        assert_eq!(follow(&moves, 6, Path::new("x/y")), Path::new("d2/sub/y"));
        let g = follow(&[mv(2, false, "a/f", "b/g")], 1, Path::new("a/f"));
        assert_eq!(g.as_os_str(), "b/g", "no trailing slash");
    }

    #[test]
    fn slots_round_trip_and_reject_torn_writes() {
        let i = Intent {
            kept: Some(Record {
                trash: Some("trash/x/b/1".into()),
                ..Record::new(5, Op::Unlink, "b/1", 1, "mv")
            }),
            ..Intent::new(Record {
                to: Some("b/1".into()),
                ino: Some(7),
                ..Record::new(5, Op::Rename, "a/1", 1, "mv")
            })
        };
        let mut line = encode(&i);
        line.push(0);
        assert_eq!(decode(&line), Some(i.clone()));
        // Cut off part-way, or followed by an older, longer intent's bytes: never a wrong one.
        assert_eq!(decode(&line[..line.len() / 2]), None);
        let mut torn = line.clone();
        torn[30] ^= 1;
        assert_eq!(decode(&torn), None);
        assert_eq!(decode(&[0u8; 16]), None);
    }
}
