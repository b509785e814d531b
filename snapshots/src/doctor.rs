//! `saferoot doctor`: check that the store is whole, and set aside what is not.
//!
//! [`check`] reads the whole store and lists every problem with the file it concerns:
//!
//! - the `format` file ([`format_problem`], checked before the store is opened at all);
//! - the journal: damaged lines (with their numbers), torn writes left by a crash, records that
//!   are still needed (see below) whose trash item or object is missing;
//! - every object: its blake3 must equal its name (the expensive part: every object is read);
//! - trash items that no record refers to (a crash between the move and its record);
//! - the index: lines that do not parse, name a trash item that is missing, or whose size or
//!   blake3 disagree with the item (every indexed item is read and hashed);
//! - snapshot manifests: footer and checksum;
//! - leftover files in `tmp/`.
//!
//! A record is *needed* while some instant that can still be restored would have to undo it:
//! a record newer than the oldest restorable instant (the newest `gc` or `repair` horizon), or
//! a `write` whose session ends after it. Records older than that are history already given
//! up, and what they refer to is not checked.
//!
//! [`repair`] (only while the directory is not mounted) never deletes a kept byte: damaged
//! objects and manifests are moved to `damaged/`, damaged journal lines are copied there before
//! the journal is rewritten without them, and the history that can no longer be restored
//! exactly is closed off by an `Op::Repair` record whose `target_t` is the oldest instant that
//! still can. Trash items without a record are journaled (`recover`), the index is rebuilt from
//! the trash, and `tmp/` is emptied. The exact steps, and their order (chosen so that a crash
//! in the middle leaves a store that restores nothing wrongly, and that the next `doctor`
//! finishes repairing), are in `docs/repair.md`.
//!
//! What this module does not do: guess what a damaged record said, repair a journal whose
//! header is not version 1, or touch the project tree.

use crate::index::{self, INDEX_FILE};
use crate::journal::{self, Op, Record, HEADER, JOURNAL_FILE};
use crate::manifest::{self, SNAPSHOTS_DIR};
use crate::store::{self, check_relative, object_rel, FORMAT, FORMAT_FILE, OBJECTS_DIR, TMP_DIR};
use crate::time::format_utc;
use crate::{recover, Error, Result, Store};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where [`repair`] puts what it sets aside, inside the store.
pub const DAMAGED_DIR: &str = "damaged";

/// While mounted, files in `tmp/` younger than this may be writes in progress, not leftovers.
const TMP_GRACE_NS: i64 = 10 * 60 * 1_000_000_000;

/// One thing wrong with the store.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem: `format`, `journal`, `journal-damaged`, `journal-torn`,
    /// `trash-missing`, `object-missing`, `object-damaged`, `object-stray`, `trash-orphan`,
    /// `index`, `snapshot-damaged`, `tmp-leftover`.
    pub kind: &'static str,
    /// The file it concerns (absolute).
    #[serde(serialize_with = "lossy")]
    pub file: PathBuf,
    /// What is wrong, for people.
    pub detail: String,
}

/// One thing [`repair`] did.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The kind of problem it answers (see [`Problem::kind`]).
    pub kind: &'static str,
    /// The file it concerned (absolute).
    #[serde(serialize_with = "lossy")]
    pub file: PathBuf,
    /// What was done, for people.
    pub action: String,
}

/// How much was checked.
#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: usize,
    pub objects: u64,
    pub object_bytes: u64,
    pub index_lines: usize,
    pub snapshots: usize,
}

/// What [`check`] found, and what [`repair`] would do about it.
#[derive(Debug, Clone, Default)]
pub struct Checkup {
    pub problems: Vec<Problem>,
    pub counts: Counts,
    /// The oldest instant that would still be restorable exactly after a repair, with why,
    /// when a repair has to give up some history; `None` if it gives up none.
    pub horizon: Option<(i64, Vec<String>)>,
    /// Objects to quarantine (paths relative to the store).
    bad_objects: Vec<PathBuf>,
    /// Journal lines to set aside (damaged and torn), by number.
    bad_lines: Vec<usize>,
    damaged_lines: Vec<usize>,
    /// Trash items no record refers to (relative to the store).
    orphans: Vec<PathBuf>,
    /// The index's good entries, when it must be rewritten.
    index_keep: Option<Vec<index::Entry>>,
    /// Manifests to quarantine (relative to the store).
    bad_manifests: Vec<PathBuf>,
    /// Leftovers in `tmp/` (relative to the store).
    tmp: Vec<PathBuf>,
    /// Problems no repair can fix (say why).
    unrepairable: Vec<String>,
}

impl Checkup {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Progress of the reading [`check`] does, in bytes: first the total, then what was read.
pub enum Progress {
    Total(u64),
    Read(u64),
}

pub struct Options {
    /// The directory is mounted: a daemon may be writing to the store (young files in `tmp/`
    /// are left alone).
    pub mounted: bool,
    /// The present (UTC ns): the bound for history whose end is unknown.
    pub now: i64,
}

/// Check the `format` file of the store of `project`, before the store is opened (opening a
/// store with a wrong format fails, and one without a format file completes its creation).
/// `Ok(None)`: it is right. An error if the project has no store.
pub fn format_problem(project: BorrowedFd<'_>, project_path: &Path) -> Result<Option<Problem>> {
    let dir_path = project_path.join(store::STORE_DIR);
    let dir = open_dir(project, Path::new(store::STORE_DIR), &dir_path).map_err(|e| match e {
        Error::Io { cause, .. } if cause.raw_os_error() == Some(libc::ENOENT) => {
            Error::Invalid(format!(
                "{} has no saferoot history yet (it has never been mounted)",
                project_path.display()
            ))
        }
        e => e,
    })?;
    let file = dir_path.join(FORMAT_FILE);
    Ok(match read_small(dir.as_fd(), Path::new(FORMAT_FILE)) {
        Ok(v) if v == FORMAT.as_bytes() => None,
        Ok(v) if other_version(&v).is_some() => Some(Problem {
            kind: "format",
            file,
            detail: format!(
                "this store is version {}, written by another version of saferoot: use that \
                 version (`doctor --repair` does not convert stores)",
                other_version(&v).unwrap_or_default()
            ),
        }),
        Ok(v) => Some(Problem {
            kind: "format",
            file,
            detail: format!(
                "it holds {:?}, not {:?}",
                String::from_utf8_lossy(&v),
                FORMAT
            ),
        }),
        Err(Errno::ENOENT) => Some(Problem {
            kind: "format",
            file,
            detail: "it is missing (the store's creation was interrupted, or it was removed)"
                .into(),
        }),
        Err(e) => return Err(Error::io("read", &file, e)),
    })
}

/// The version a `format` file names, when it is a well-formed one other than this one's.
fn other_version(v: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(v);
    let ver = text.trim_end().strip_prefix("saferoot-store ")?;
    (!ver.is_empty() && ver.bytes().all(|c| c.is_ascii_digit()) && ver != "1")
        .then(|| ver.to_owned())
}

/// Write the `format` file again, if the store is otherwise one of this version (its journal,
/// if any, has the version 1 header) and the file does not name another version.
pub fn repair_format(project: BorrowedFd<'_>, project_path: &Path) -> Result<Repaired> {
    let dir_path = project_path.join(store::STORE_DIR);
    let dir = open_dir(project, Path::new(store::STORE_DIR), &dir_path)?;
    let file = dir_path.join(FORMAT_FILE);
    if let Some(ver) = read_small(dir.as_fd(), Path::new(FORMAT_FILE))
        .ok()
        .and_then(|v| other_version(&v))
    {
        return Err(Error::Invalid(format!(
            "{} says this store is version {ver}, written by another saferoot; not repaired",
            file.display()
        )));
    }
    let journal = journal::read_bytes(dir.as_fd(), &dir_path)?;
    if !journal.is_empty() && !journal.starts_with(HEADER.as_bytes()) {
        return Err(Error::Invalid(format!(
            "{} is wrong and the journal is not version 1 either: not repaired",
            file.display()
        )));
    }
    replace_file(
        dir.as_fd(),
        &dir_path,
        Path::new(FORMAT_FILE),
        FORMAT.as_bytes(),
    )?;
    Ok(Repaired {
        kind: "format",
        file,
        action: format!("written again ({:?})", FORMAT.trim_end()),
    })
}

/// The store keeps something history would name: a trash item, an object or a manifest.
fn holds_history(store: &Store) -> bool {
    let root = PathBuf::from(format!("/proc/self/fd/{}", store.dir().as_raw_fd()));
    [
        crate::store::TRASH_DIR,
        crate::store::OBJECTS_DIR,
        SNAPSHOTS_DIR,
    ]
    .iter()
    .any(|d| {
        walkdir::WalkDir::new(root.join(d))
            .min_depth(1)
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| !e.file_type().is_dir())
    })
}

fn store_journal_exists(store: &Store) -> bool {
    nix::sys::stat::fstatat(
        store.dir(),
        JOURNAL_FILE,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

/// Check the whole store (see the module documentation). Changes nothing.
pub fn check(store: &Store, opts: &Options, progress: &mut dyn FnMut(Progress)) -> Result<Checkup> {
    let mut c = Checkup::default();
    let sp = store.dir_path().to_owned();
    let jpath = sp.join(JOURNAL_FILE);

    // The journal.
    let buf = journal::read_bytes(store.dir(), &sp)?;
    let mut records: Vec<(usize, Record)> = Vec::new();
    match journal::parse_numbered(&buf, &jpath) {
        Err(e) => {
            c.unrepairable.push(e.to_string());
            c.problems.push(Problem {
                kind: "journal",
                file: jpath.clone(),
                detail: match e {
                    Error::Format { what, .. } => what,
                    e => e.to_string(),
                },
            });
        }
        Ok((recs, report)) => {
            records = recs;
            for d in &report.damaged {
                let bound = d.after_t.unwrap_or(opts.now);
                c.problems.push(Problem {
                    kind: "journal-damaged",
                    file: jpath.clone(),
                    detail: format!(
                        "line {} is damaged ({}): the change it recorded is unknown, so no \
                         instant before {} can be restored{}",
                        d.line,
                        d.why,
                        format_utc(bound),
                        match d.before_t {
                            Some(b) => format!(
                                " (it comes after the record of {} in the file)",
                                format_utc(b)
                            ),
                            None => String::new(),
                        }
                    ),
                });
                push_horizon(
                    &mut c.horizon,
                    bound,
                    format!("line {} of the journal was damaged", d.line),
                );
                c.bad_lines.push(d.line);
                c.damaged_lines.push(d.line);
            }
            for &n in &report.torn {
                c.problems.push(Problem {
                    kind: "journal-torn",
                    file: jpath.clone(),
                    detail: format!(
                        "line {n} is a record torn by a crash while it was written (harmless: \
                         the change it was for did not happen, or its bytes are in the trash)"
                    ),
                });
                c.bad_lines.push(n);
            }
            c.bad_lines.sort_unstable();
        }
    }
    c.counts.records = records.len();
    // No record at all, yet the store keeps something: the journal was lost (deleted, or
    // emptied), and with it every change up to now.
    if records.is_empty() && c.unrepairable.is_empty() && holds_history(store) {
        let detail =
            format!(
            "the journal has no record (it was deleted or emptied), yet the store keeps trash, \
             objects or snapshots: the changes before now are unknown, so no earlier instant \
             can be restored exactly{}",
            if store_journal_exists(store) { "" } else { " (the file is missing)" }
        );
        c.problems.push(Problem {
            kind: "journal-missing",
            file: jpath.clone(),
            detail,
        });
        push_horizon(&mut c.horizon, opts.now, "the journal was lost".into());
    }

    // Which records are still needed, and until when.
    records.sort_by_key(|(_, r)| r.t);
    let plain: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
    let horizon_t = journal::horizon(&plain).map(|(h, _)| h);
    let session_end: HashMap<*const Record, i64> = crate::restore::write_sessions(&plain)
        .into_iter()
        .map(|(r, end)| (r as *const Record, end))
        .collect();
    let needed_until = |i: usize| -> i64 {
        let r = &plain[i];
        match session_end.get(&(r as *const Record)) {
            Some(&end) if end == i64::MAX => opts.now,
            Some(&end) => end,
            None => r.t,
        }
    };
    let needed = |i: usize| horizon_t.is_none_or(|h| needed_until(i) > h);
    let describe = |i: usize| {
        let r = &plain[i];
        format!(
            "the {} record of {} at {} (line {})",
            r.op.name(),
            r.path.display(),
            format_utc(r.t),
            records[i].0
        )
    };

    // Objects the needed records refer to: hex → indices of those records.
    let mut wanted: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in plain.iter().enumerate() {
        if !needed(i) {
            continue;
        }
        if let Some(hex) = &r.object {
            wanted.entry(hex.clone()).or_default().push(i);
        } else if let Some(tr) = &r.trash {
            let missing = check_relative(tr).is_err()
                || matches!(
                    nix::sys::stat::fstatat(store.dir(), tr, AtFlags::AT_SYMLINK_NOFOLLOW),
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR)
                );
            if missing {
                let bound = needed_until(i);
                c.problems.push(Problem {
                    kind: "trash-missing",
                    file: sp.join(tr),
                    detail: format!(
                        "{} kept the removed bytes here, but they are gone: no instant before \
                         {} can be restored exactly",
                        describe(i),
                        format_utc(bound)
                    ),
                });
                push_horizon(
                    &mut c.horizon,
                    bound,
                    format!("{} kept {}, which is gone", describe(i), tr.display()),
                );
            }
        }
    }

    // Every object: listed, then read and hashed.
    let objects = list_objects(store)?;
    let index_buf = read_optional(store.dir(), Path::new(INDEX_FILE), &sp.join(INDEX_FILE))?;
    let index_lines = parse_index(&index_buf);
    let index_bytes: u64 = index_lines
        .iter()
        .filter_map(|l| l.entry.as_ref())
        .map(|e| e.size)
        .sum();
    progress(Progress::Total(
        objects.iter().map(|o| o.size).sum::<u64>() + index_bytes,
    ));
    let mut present: HashMap<String, ()> = HashMap::new();
    for o in &objects {
        c.counts.objects += 1;
        c.counts.object_bytes += o.size;
        let shown = sp.join(&o.rel);
        let Some(name) = &o.name else {
            c.problems.push(Problem {
                kind: "object-stray",
                file: shown,
                detail: "not an object: objects are named objects/<2 hex digits>/<62 hex digits> \
                         by their blake3"
                    .into(),
            });
            c.bad_objects.push(o.rel.clone());
            progress(Progress::Read(o.size));
            continue;
        };
        present.insert(name.clone(), ());
        let got = hash_at(store.dir(), &o.rel);
        progress(Progress::Read(o.size));
        let what = match got {
            Ok(h) if h.to_hex().as_str() == name.as_str() => continue,
            Ok(h) => format!("its content hashes to {}, not to its name", h.to_hex()),
            Err(e) => format!("it cannot be read: {}", e.desc()),
        };
        let users = wanted.get(name).cloned().unwrap_or_default();
        let detail = match users.iter().copied().max_by_key(|&i| needed_until(i)) {
            None => format!("{what} ({} bytes); no record still needs it", o.size),
            Some(i) => {
                let bound = needed_until(i);
                push_horizon(
                    &mut c.horizon,
                    bound,
                    format!(
                        "object {name} was damaged ({} record(s) needed it, the newest {})",
                        users.len(),
                        describe(i)
                    ),
                );
                format!(
                    "{what} ({} bytes); {} record(s) need it, the newest {}, so no instant \
                     before {} can be restored exactly",
                    o.size,
                    users.len(),
                    describe(i),
                    format_utc(bound)
                )
            }
        };
        c.problems.push(Problem {
            kind: "object-damaged",
            file: shown,
            detail,
        });
        c.bad_objects.push(o.rel.clone());
    }
    for (hex, users) in &wanted {
        if present.contains_key(hex) {
            continue;
        }
        let Some(i) = users.iter().copied().max_by_key(|&i| needed_until(i)) else {
            continue;
        };
        let bound = needed_until(i);
        c.problems.push(Problem {
            kind: "object-missing",
            file: sp.join(object_rel(hex)),
            detail: format!(
                "{} record(s) need this object, the newest {}, but it is not in the store: no \
                 instant before {} can be restored exactly",
                users.len(),
                describe(i),
                format_utc(bound)
            ),
        });
        push_horizon(
            &mut c.horizon,
            bound,
            format!("object {hex} was missing (needed by {})", describe(i)),
        );
    }

    // A purge cut off part-way: what it was deleting is still there.
    let purging = crate::gc::purging_list(store);
    if !purging.is_empty() {
        c.problems.push(Problem {
            kind: "purge-unfinished",
            file: sp.join(crate::gc::PURGING_FILE),
            detail: format!(
                "a `saferoot trash purge` was cut off: of the {} file(s) it lists, those the \
                 journal no longer names are still there; a repair, the next mount, gc or purge \
                 deletes them",
                purging.len()
            ),
        });
    }

    // Trash items no record refers to (only a journal that reads can say).
    let orphans = match c.unrepairable.is_empty() {
        true => recover::orphans(store)?,
        false => Vec::new(),
    };
    for r in orphans {
        let Some(tr) = r.trash else { continue };
        c.problems.push(Problem {
            kind: "trash-orphan",
            file: sp.join(&tr),
            detail: format!(
                "no journal record refers to it (saferoot stopped between moving it to the \
                 trash and journaling it); a repair, or the next mount, journals it as \
                 removed at {}",
                format_utc(r.t)
            ),
        });
        c.orphans.push(tr);
    }

    // The index.
    let ipath = sp.join(INDEX_FILE);
    let mut keep: Vec<index::Entry> = Vec::new();
    let mut index_bad = false;
    let mut seen: HashMap<PathBuf, ()> = HashMap::new();
    c.counts.index_lines = index_lines.len();
    for l in &index_lines {
        let mut bad = |detail: String| {
            index_bad = true;
            c.problems.push(Problem {
                kind: "index",
                file: ipath.clone(),
                detail: format!("line {}: {detail}", l.number),
            });
        };
        let Some(e) = &l.entry else {
            bad(if l.torn {
                "incomplete (a write torn by a crash)".into()
            } else {
                "does not parse as an index entry".into()
            });
            continue;
        };
        if check_relative(&e.trash).is_err() || !e.trash.starts_with(store::TRASH_DIR) {
            bad(format!(
                "names {}, which is not in the trash",
                e.trash.display()
            ));
            continue;
        }
        let shown = sp.join(&e.trash);
        let st = match nix::sys::stat::fstatat(store.dir(), &e.trash, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) => st,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {
                progress(Progress::Read(e.size));
                bad(format!("names {}, which is not there", shown.display()));
                continue;
            }
            Err(err) => return Err(Error::io("stat", &shown, err)),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            progress(Progress::Read(e.size));
            bad(format!(
                "names {}, which is not a regular file",
                shown.display()
            ));
            continue;
        }
        if st.st_size as u64 != e.size {
            progress(Progress::Read(e.size));
            bad(format!(
                "says {} has {} bytes; it has {}",
                shown.display(),
                e.size,
                st.st_size
            ));
            continue;
        }
        let got = hash_at(store.dir(), &e.trash);
        progress(Progress::Read(e.size));
        match got {
            Ok(h) if h.to_hex().as_str() == e.blake3 => {
                if seen.insert(e.trash.clone(), ()).is_none() {
                    keep.push(e.clone());
                }
            }
            Ok(h) => bad(format!(
                "says {} hashes to {}; it hashes to {}",
                shown.display(),
                e.blake3,
                h.to_hex()
            )),
            Err(err) => bad(format!("cannot read {}: {}", shown.display(), err.desc())),
        }
    }
    if index_bad {
        c.index_keep = Some(keep);
    }

    // Snapshot manifests.
    for (n, rel) in manifest::files(store)? {
        c.counts.snapshots += 1;
        if let Err(what) = manifest::read_verified(store, n)? {
            c.problems.push(Problem {
                kind: "snapshot-damaged",
                file: sp.join(&rel),
                detail: format!("snapshot {n} is damaged: {what}"),
            });
            c.bad_manifests.push(rel);
        }
    }

    // Leftovers in tmp/.
    for (name, st) in list_dir(store.dir(), Path::new(TMP_DIR), &sp.join(TMP_DIR))? {
        let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec;
        if opts.mounted && opts.now - mtime < TMP_GRACE_NS {
            continue;
        }
        let rel = Path::new(TMP_DIR).join(&name);
        c.problems.push(Problem {
            kind: "tmp-leftover",
            file: sp.join(&rel),
            detail: "left by a write that did not finish (nothing refers to it)".into(),
        });
        c.tmp.push(rel);
    }
    Ok(c)
}

/// A path as a JSON string for people and scripts (bytes that are not UTF-8 become U+FFFD;
/// serde would refuse such a path).
fn lossy<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn push_horizon(h: &mut Option<(i64, Vec<String>)>, t: i64, why: String) {
    match h {
        Some((cur, whys)) => {
            *cur = (*cur).max(t);
            whys.push(why);
        }
        None => *h = Some((t, vec![why])),
    }
}

/// Set aside what [`check`] found (see the module documentation). The directory must not be
/// mounted: nothing else may write to the store meanwhile. `project` is the real project
/// directory. Returns what was done, in order.
pub fn repair(store: &Store, c: &Checkup, now: i64) -> Result<Vec<Repaired>> {
    if let Some(why) = c.unrepairable.first() {
        return Err(Error::Invalid(format!("cannot repair: {why}")));
    }
    // No other saferoot process may have the store open meanwhile (each holds its lock).
    let _held = store.exclusive()?;
    let sp = store.dir_path().to_owned();
    let mut done = Vec::new();
    let stamp = format_utc(now);

    // 1. Quarantine damaged objects and manifests (renames: never a copy, never a delete).
    for rel in &c.bad_objects {
        let flat: String = rel
            .strip_prefix(OBJECTS_DIR)
            .unwrap_or(rel)
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let to = quarantine(store, rel, &Path::new("objects").join(flat))?;
        done.push(Repaired {
            kind: "object-damaged",
            file: sp.join(rel),
            action: format!("moved to {}", sp.join(to).display()),
        });
    }
    for rel in &c.bad_manifests {
        let name = rel.file_name().map(PathBuf::from).unwrap_or_default();
        let to = quarantine(store, rel, &Path::new(SNAPSHOTS_DIR).join(name))?;
        done.push(Repaired {
            kind: "snapshot-damaged",
            file: sp.join(rel),
            action: format!("moved to {}", sp.join(to).display()),
        });
    }

    // 2. Copy the damaged and torn journal lines aside, byte for byte.
    let jpath = sp.join(JOURNAL_FILE);
    let mut lines_file = None;
    if !c.bad_lines.is_empty() {
        let buf = journal::read_bytes(store.dir(), &sp)?;
        let mut out = Vec::new();
        let mut numbers = Vec::new();
        for l in journal::lines(&buf, &jpath)? {
            if !matches!(l.state, journal::LineState::Good(_)) {
                out.extend_from_slice(l.bytes);
                out.push(b'\n');
                numbers.push(l.number);
            }
        }
        make_dir(store.dir(), Path::new(DAMAGED_DIR), &sp)?;
        let rel = Path::new(DAMAGED_DIR).join(format!("journal-lines.{stamp}"));
        write_new(store.dir(), &sp, &rel, &out)?;
        lines_file = Some((rel, numbers));
    }

    // 3. Journal the trash items no record refers to.
    let recovered = recover::recover_all(store)?;
    if recovered > 0 {
        for tr in &c.orphans {
            done.push(Repaired {
                kind: "trash-orphan",
                file: sp.join(tr),
                action: "journaled as a removal (a recovered record)".into(),
            });
        }
    }

    // 4. The repair record, before any line leaves the journal: from here on, restores to
    //    instants before the horizon are refused, whatever happens next.
    let mut note = Vec::new();
    if let Some((rel, numbers)) = &lines_file {
        let damaged: Vec<String> = c.damaged_lines.iter().map(|n| n.to_string()).collect();
        let torn = numbers.len().saturating_sub(c.damaged_lines.len());
        note.push(format!(
            "removed {} journal line(s) ({} damaged{}{}; torn by a crash: {}), copied to {}",
            numbers.len(),
            c.damaged_lines.len(),
            if damaged.is_empty() { "" } else { ": line " },
            damaged.join(", "),
            torn,
            rel.display()
        ));
    }
    if !c.bad_objects.is_empty() {
        note.push(format!(
            "moved {} damaged object(s) to {DAMAGED_DIR}/objects",
            c.bad_objects.len()
        ));
    }
    if !c.bad_manifests.is_empty() {
        note.push(format!(
            "moved {} damaged snapshot manifest(s) to {DAMAGED_DIR}/{SNAPSHOTS_DIR}",
            c.bad_manifests.len()
        ));
    }
    if recovered > 0 {
        note.push(format!(
            "journaled {recovered} trash item(s) with no record"
        ));
    }
    if c.index_keep.is_some() {
        note.push("rebuilt the index from the trash".into());
    }
    if !c.tmp.is_empty() {
        note.push(format!("emptied {TMP_DIR}/ ({} leftover(s))", c.tmp.len()));
    }
    if let Some((h, whys)) = &c.horizon {
        note.push(format!(
            "instants before {} can no longer be restored exactly: {}",
            format_utc(*h),
            whys.join("; ")
        ));
    }
    let rec = Record {
        target_t: c.horizon.as_ref().map(|(h, _)| *h),
        note: Some(note.join("; ")),
        ..Record::new(now, Op::Repair, ".", std::process::id(), "saferoot")
    };
    store.journal().append(&rec)?;
    store.journal().sync()?;
    if let Some((h, _)) = &c.horizon {
        done.push(Repaired {
            kind: "journal",
            file: jpath.clone(),
            action: format!(
                "a repair record makes {} the oldest restorable instant",
                format_utc(*h)
            ),
        });
    }

    // 5. Rewrite the journal without its bad lines: every good line byte for byte, through
    //    tmp/, fsynced, renamed over it, and the store directory fsynced.
    if let Some((rel, numbers)) = &lines_file {
        store.journal().rewrite(store.dir(), |buf| {
            let mut out = HEADER.as_bytes().to_vec();
            for l in journal::lines(buf, &jpath)? {
                if matches!(l.state, journal::LineState::Good(_)) {
                    out.extend_from_slice(l.bytes);
                    out.push(b'\n');
                }
            }
            Ok(out)
        })?;
        let list: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
        done.push(Repaired {
            kind: "journal-damaged",
            file: jpath.clone(),
            action: format!(
                "line(s) {} copied to {} and removed from the journal",
                list.join(", "),
                sp.join(rel).display()
            ),
        });
    }

    // 6. The index: its good lines, then whatever the trash holds that they do not list.
    if let Some(keep) = &c.index_keep {
        let mut out = Vec::new();
        for e in keep {
            out.extend(serde_json::to_vec(e).map_err(|e| Error::Invalid(e.to_string()))?);
            out.push(b'\n');
        }
        replace_file(store.dir(), &sp, Path::new(INDEX_FILE), &out)?;
        let added = index::reindex(store)?;
        done.push(Repaired {
            kind: "index",
            file: sp.join(INDEX_FILE),
            action: format!(
                "rewritten with its {} good line(s), then {added} trash file(s) indexed",
                keep.len()
            ),
        });
    }

    // 7. Leftovers in tmp/ (nothing refers to them).
    for rel in &c.tmp {
        let shown = sp.join(rel);
        match nix::unistd::unlinkat(store.dir(), rel, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => {
                let path =
                    PathBuf::from(format!("/proc/self/fd/{}", store.dir().as_raw_fd())).join(rel);
                std::fs::remove_dir_all(&path).map_err(|e| Error::Io {
                    op: "remove",
                    path: shown.clone(),
                    cause: e,
                })?;
            }
            Err(e) => return Err(Error::io("remove", &shown, e)),
        }
        done.push(Repaired {
            kind: "tmp-leftover",
            file: shown,
            action: "removed".into(),
        });
    }
    fsync_dir(store.dir(), Path::new("."), &sp)?;
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Helpers

struct ObjectFile {
    rel: PathBuf,
    /// The hex its path spells, if it is a well-formed object path.
    name: Option<String>,
    size: u64,
}

/// Every non-directory below `objects/`.
fn list_objects(store: &Store) -> Result<Vec<ObjectFile>> {
    let root = PathBuf::from(format!("/proc/self/fd/{}", store.dir().as_raw_fd()));
    let mut out = Vec::new();
    for ent in walkdir::WalkDir::new(root.join(OBJECTS_DIR))
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let ent = match ent {
            Ok(e) => e,
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => {
                return Err(Error::Io {
                    op: "read directory",
                    path: store.dir_path().join(OBJECTS_DIR),
                    cause: e.into(),
                })
            }
        };
        if ent.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = ent.path().strip_prefix(&root) else {
            continue;
        };
        let hexes = |s: &std::ffi::OsStr, n: usize| {
            s.to_str()
                .filter(|s| {
                    s.len() == n && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                })
                .map(str::to_owned)
        };
        let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
        let name = match (comps.len(), ent.file_type().is_file()) {
            (3, true) => hexes(comps[1], 2)
                .zip(hexes(comps[2], 62))
                .map(|(a, b)| a + &b),
            _ => None,
        };
        let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(ObjectFile {
            rel: rel.to_owned(),
            name,
            size,
        });
    }
    Ok(out)
}

struct IndexLine {
    number: usize,
    entry: Option<index::Entry>,
    /// The last line, without its newline.
    torn: bool,
}

fn parse_index(buf: &[u8]) -> Vec<IndexLine> {
    let mut pieces: Vec<&[u8]> = buf.split(|&c| c == b'\n').collect();
    let last = pieces.pop().unwrap_or_default();
    let mut out: Vec<IndexLine> = pieces
        .into_iter()
        .enumerate()
        .map(|(i, l)| IndexLine {
            number: i + 1,
            entry: serde_json::from_slice(l).ok(),
            torn: false,
        })
        .collect();
    if !last.is_empty() {
        out.push(IndexLine {
            number: out.len() + 1,
            entry: None,
            torn: true,
        });
    }
    out
}

fn hash_at(dir: BorrowedFd<'_>, rel: &Path) -> std::result::Result<blake3::Hash, Errno> {
    let fd = nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?;
    store::hash_fd(fd.as_fd())
}

fn open_dir(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", shown, e))
}

fn read_small(dir: BorrowedFd<'_>, rel: &Path) -> std::result::Result<Vec<u8>, Errno> {
    let fd = nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut v = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut v)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(v)
}

/// The bytes of `rel` in `dir`, or nothing if it does not exist.
fn read_optional(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<Vec<u8>> {
    match read_small(dir, rel) {
        Ok(v) => Ok(v),
        Err(Errno::ENOENT) => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", shown, e)),
    }
}

/// Entries of the directory `rel` of `dir` with their lstat (none if it does not exist).
fn list_dir(
    dir: BorrowedFd<'_>,
    rel: &Path,
    shown: &Path,
) -> Result<Vec<(std::ffi::OsString, nix::sys::stat::FileStat)>> {
    let fd = match nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open directory", shown, e)),
    };
    let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| Error::io("read directory", shown, e))?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| Error::io("read directory", shown, e))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(std::ffi::OsString::from_vec(name.to_vec()));
    }
    let mut out = Vec::new();
    for name in names {
        if let Ok(st) =
            nix::sys::stat::fstatat(d.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            out.push((name, st));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn make_dir(dir: BorrowedFd<'_>, rel: &Path, sp: &Path) -> Result<()> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        match nix::sys::stat::mkdirat(dir, &cur, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io("mkdir", &sp.join(&cur), e)),
        }
    }
    Ok(())
}

fn fsync_dir(dir: BorrowedFd<'_>, rel: &Path, sp: &Path) -> Result<()> {
    let fd = open_dir(dir, rel, &sp.join(rel))?;
    nix::unistd::fsync(fd.as_fd()).map_err(|e| Error::io("fsync", &sp.join(rel), e))
}

/// Move `rel` (relative to the store) to `damaged/<to>`, or `damaged/<to>.N` if that is taken;
/// returns where it went (relative to the store).
fn quarantine(store: &Store, rel: &Path, to: &Path) -> Result<PathBuf> {
    let sp = store.dir_path();
    let dest_dir = Path::new(DAMAGED_DIR).join(to.parent().unwrap_or(Path::new("")));
    make_dir(store.dir(), &dest_dir, sp)?;
    let base = Path::new(DAMAGED_DIR).join(to);
    for n in 0..1000 {
        let dest = if n == 0 {
            base.clone()
        } else {
            PathBuf::from(format!("{}.{n}", base.display()))
        };
        match nix::fcntl::renameat2(
            store.dir(),
            rel,
            store.dir(),
            &dest,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                fsync_dir(store.dir(), &dest_dir, sp)?;
                if let Some(parent) = rel.parent() {
                    fsync_dir(store.dir(), parent, sp)?;
                }
                return Ok(dest);
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(Error::io("move aside", &sp.join(rel), e)),
        }
    }
    Err(Error::Invalid(format!(
        "cannot move {} aside: {} and its numbered alternatives are taken",
        sp.join(rel).display(),
        sp.join(&base).display()
    )))
}

/// Create `rel` (relative to the store) with `data`, fsynced; it must not exist.
fn write_new(dir: BorrowedFd<'_>, sp: &Path, rel: &Path, data: &[u8]) -> Result<()> {
    let shown = sp.join(rel);
    let fd = nix::fcntl::openat(
        dir,
        rel,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &shown, e))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Io {
            op: "write",
            path: shown,
            cause: e,
        })
}

/// Replace `rel` (relative to the store) with `data`, crash-safely: written to `tmp/`,
/// fsynced, renamed over it, and the store directory fsynced.
fn replace_file(dir: BorrowedFd<'_>, sp: &Path, rel: &Path, data: &[u8]) -> Result<()> {
    make_dir(dir, Path::new(TMP_DIR), sp)?;
    let name = rel.file_name().map(PathBuf::from).unwrap_or_default();
    let tmp = Path::new(TMP_DIR).join(format!("{}.new", name.display()));
    match nix::unistd::unlinkat(dir, &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::io("remove", &sp.join(&tmp), e)),
    }
    write_new(dir, sp, &tmp, data)?;
    nix::fcntl::renameat(dir, &tmp, dir, rel)
        .map_err(|e| Error::io("replace", &sp.join(rel), e))?;
    fsync_dir(dir, Path::new("."), sp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;

    struct T {
        dir: tempfile::TempDir,
        root: OwnedFd,
        store: Store,
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let root: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
            let store = Store::open_or_create(root.as_fd(), dir.path()).unwrap();
            T { dir, root, store }
        }
        fn rec(&self, r: Record) {
            self.store.journal().append(&r).unwrap();
        }
        fn sp(&self) -> PathBuf {
            self.store.dir_path().to_owned()
        }
        fn check(&self) -> Checkup {
            let opts = Options {
                mounted: false,
                now: crate::now_ns(),
            };
            check(&self.store, &opts, &mut |_| {}).unwrap()
        }
        fn kinds(c: &Checkup) -> Vec<(&'static str, PathBuf)> {
            c.problems
                .iter()
                .map(|p| (p.kind, p.file.clone()))
                .collect()
        }
        fn reopen(&mut self) {
            self.store = Store::open_existing(self.root.as_fd(), self.dir.path())
                .unwrap()
                .unwrap();
        }
    }

    /// A little history: a file kept by a write (its pre-image an object), one removed to the
    /// trash, one created.
    fn history(t: &T) -> (String, i64) {
        let p = t.dir.path();
        t.rec(Record::new(100, Op::Mount, ".", 1, "saferoot"));
        std::fs::write(p.join("a"), b"first").unwrap();
        let f = std::fs::File::open(p.join("a")).unwrap();
        let hex = t.store.put_object(f.as_fd()).unwrap();
        t.rec(Record {
            object: Some(hex.clone()),
            ino: Some(1),
            ..Record::new(200, Op::Write, "a", 2, "sh")
        });
        std::fs::write(p.join("a"), b"second").unwrap();
        t.rec(Record {
            ino: Some(1),
            ..Record::new(300, Op::Close, "a", 2, "sh")
        });
        std::fs::write(p.join("b"), b"bye").unwrap();
        let tr = t
            .store
            .divert_to_trash(t.root.as_fd(), OsStr::new("b"), Path::new("b"), 400)
            .unwrap();
        t.rec(Record {
            trash: Some(tr),
            kind: Some(crate::Kind::File),
            ..Record::new(400, Op::Unlink, "b", 2, "rm")
        });
        index::reindex(&t.store).unwrap();
        t.rec(Record::new(500, Op::Create, "c", 2, "touch"));
        t.rec(Record::new(600, Op::Close, "c", 2, "touch"));
        t.rec(Record::new(700, Op::Umount, ".", 1, "saferoot"));
        (hex, 600)
    }

    #[test]
    fn a_healthy_store_has_no_problems() {
        let t = T::new();
        history(&t);
        let c = t.check();
        assert!(c.ok(), "{:?}", c.problems);
        assert_eq!(c.counts.records, 7);
        assert_eq!(c.counts.objects, 1);
        assert_eq!(c.counts.index_lines, 1);
        assert!(c.horizon.is_none());
        assert!(format_problem(t.root.as_fd(), t.dir.path())
            .unwrap()
            .is_none());
    }

    #[test]
    fn damage_is_found_named_and_set_aside_and_the_store_is_healthy_after() {
        let mut t = T::new();
        let (hex, after_damage) = history(&t);
        let sp = t.sp();
        // Line 6 of the journal (the `create` of "c") cut in half; the object flipped; an index
        // line that does not parse; a leftover in tmp/.
        let jp = sp.join(JOURNAL_FILE);
        let text = std::fs::read(&jp).unwrap();
        let mut lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
        let half = &lines[5][..lines[5].len() / 2];
        lines[5] = half;
        std::fs::write(&jp, lines.join(&b'\n')).unwrap();
        let obj = sp.join(object_rel(&hex));
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&obj, b"firsT").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(sp.join(INDEX_FILE))
            .unwrap();
        f.write_all(b"{not json\n").unwrap();
        std::fs::write(sp.join("tmp/obj.1.2.3"), b"partial").unwrap();

        let c = t.check();
        assert_eq!(
            T::kinds(&c),
            vec![
                ("journal-damaged", jp.clone()),
                ("object-damaged", obj.clone()),
                ("index", sp.join(INDEX_FILE)),
                ("tmp-leftover", sp.join("tmp/obj.1.2.3")),
            ],
            "{:#?}",
            c.problems
        );
        assert!(c.problems[0].detail.starts_with("line 6 is damaged"));
        assert!(c.problems[2].detail.starts_with("line 2:"));
        // The damaged line blocks up to the next good record; the object up to the end of its
        // write session, which is earlier.
        assert_eq!(c.horizon.as_ref().map(|h| h.0), Some(after_damage));

        let done = repair(&t.store, &c, 1_000).unwrap();
        assert!(done.iter().any(|r| r.kind == "object-damaged"));
        t.reopen();
        let again = t.check();
        assert!(again.ok(), "{:#?}", again.problems);
        // Quarantined, not deleted; the damaged line kept byte for byte.
        assert_eq!(
            std::fs::read(sp.join(DAMAGED_DIR).join("objects").join(&hex)).unwrap(),
            b"firsT"
        );
        let kept = std::fs::read(
            sp.join(DAMAGED_DIR)
                .join(format!("journal-lines.{}", format_utc(1_000))),
        )
        .unwrap();
        assert_eq!(kept, [half, b"\n"].concat());
        // The journal: every good line as it was, then the repair record with its horizon.
        let (recs, rep) = journal::read(t.store.dir(), &sp).unwrap();
        assert!(rep.damaged.is_empty() && rep.torn.is_empty());
        assert_eq!(recs.len(), 7);
        let r = recs.last().unwrap();
        assert_eq!(r.op, Op::Repair);
        assert_eq!(r.target_t, Some(after_damage));
        assert_eq!(journal::horizon(&recs).map(|(h, _)| h), Some(after_damage));
        let note = r.note.as_deref().unwrap();
        assert!(
            note.contains("line 6") && note.contains("damaged object"),
            "{note}"
        );
        assert!(std::fs::read_dir(sp.join(TMP_DIR))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn a_torn_tail_and_an_orphan_cost_no_history() {
        let mut t = T::new();
        history(&t);
        let sp = t.sp();
        // A crash: one more record half written, and a trash item never journaled.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(sp.join(JOURNAL_FILE))
            .unwrap();
        f.write_all(&journal::encode(&Record::new(800, Op::Create, "d", 2, "sh"))[..20])
            .unwrap();
        std::fs::write(t.dir.path().join("e"), b"e").unwrap();
        let tr = t
            .store
            .divert_to_trash(t.root.as_fd(), OsStr::new("e"), Path::new("e"), 900)
            .unwrap();
        // As after a crash: the store is opened again (which seals the torn line), then checked.
        t.reopen();
        let c = t.check();
        assert_eq!(
            T::kinds(&c),
            vec![
                ("journal-torn", sp.join(JOURNAL_FILE)),
                ("trash-orphan", sp.join(&tr)),
            ],
            "{:#?}",
            c.problems
        );
        assert!(c.horizon.is_none());
        repair(&t.store, &c, 1_000).unwrap();
        t.reopen();
        let again = t.check();
        assert!(again.ok(), "{:#?}", again.problems);
        let (recs, _) = journal::read(t.store.dir(), &sp).unwrap();
        assert_eq!(journal::horizon(&recs), None, "no history was lost");
        assert!(recs
            .iter()
            .any(|r| r.trash.as_deref() == Some(tr.as_path())));
    }

    #[test]
    fn a_missing_object_needed_by_history_sets_the_horizon_and_old_history_is_not_checked() {
        let mut t = T::new();
        let (hex, _) = history(&t);
        let sp = t.sp();
        std::fs::remove_file(sp.join(object_rel(&hex))).unwrap();
        let c = t.check();
        assert_eq!(
            T::kinds(&c),
            vec![("object-missing", sp.join(object_rel(&hex)))]
        );
        // Needed until its write session ended.
        assert_eq!(c.horizon.as_ref().map(|h| h.0), Some(300));
        repair(&t.store, &c, 1_000).unwrap();
        t.reopen();
        assert!(t.check().ok());
    }

    #[test]
    fn a_journal_of_another_version_is_reported_and_not_repaired() {
        let t = T::new();
        history(&t);
        let jp = t.sp().join(JOURNAL_FILE);
        let text = std::fs::read(&jp).unwrap();
        std::fs::write(
            &jp,
            [b"saferoot-journal 2\n", &text[HEADER.len()..]].concat(),
        )
        .unwrap();
        let c = t.check();
        assert_eq!(
            T::kinds(&c),
            vec![("journal", jp.clone())],
            "{:#?}",
            c.problems
        );
        assert!(c.problems[0].detail.contains("version 1"));
        let e = repair(&t.store, &c, 1_000).unwrap_err();
        assert!(e.to_string().starts_with("cannot repair: "), "{e}");
        assert!(std::fs::read(&jp)
            .unwrap()
            .starts_with(b"saferoot-journal 2\n"));
    }

    #[test]
    fn problems_with_any_file_name_serialize() {
        use std::os::unix::ffi::OsStrExt;
        let p = Problem {
            kind: "trash-orphan",
            file: PathBuf::from(OsStr::from_bytes(b"/p/.saferoot/trash/x\xff")),
            detail: "d".into(),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["file"], "/p/.saferoot/trash/x\u{fffd}");
    }

    #[test]
    fn the_format_file_is_checked_and_written_again() {
        let t = T::new();
        let f = t.sp().join(FORMAT_FILE);
        std::fs::write(&f, b"saferoot-stoRe 1\n").unwrap();
        let p = format_problem(t.root.as_fd(), t.dir.path())
            .unwrap()
            .unwrap();
        assert_eq!((p.kind, p.file.clone()), ("format", f.clone()));
        repair_format(t.root.as_fd(), t.dir.path()).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), FORMAT.as_bytes());
        // Another version is not overwritten.
        std::fs::write(&f, b"saferoot-store 2\n").unwrap();
        assert!(repair_format(t.root.as_fd(), t.dir.path())
            .unwrap_err()
            .to_string()
            .contains("version 2"));
    }
}
