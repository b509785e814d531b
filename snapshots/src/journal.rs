//! The append-only journal: one line per change made through the mount (or by `restore`).
//!
//! Format (version 1, documented in `docs/on-disk-format.md`):
//!
//! ```text
//! saferoot-journal 1
//! <16 hex digits: first 8 bytes of blake3(json)> <json record>\n
//! ```
//!
//! Every record is written with a single `write(2)` on an `O_APPEND` descriptor, so records from
//! the daemon and from an offline `restore` interleave whole. A last line without its newline (or
//! whose checksum does not match) is a torn write from a crash and is ignored on read: the bytes
//! it would have described are already in the trash (the store writes data first), and the trash
//! can be re-indexed from itself. The next open seals such a line with [`TORN_SEAL`], so it is
//! still known for a torn write once records follow it. Any other bad line is *damaged*: it is
//! skipped, and [`ReadReport::damaged`] says where it is, so that restore can refuse to go back
//! past a change it does not know (see `restore.rs`) and `saferoot doctor` can set it aside.
//!
//! What this module does not do: decide what an operation means for restore (see `restore`), or
//! fsync after every record (that would make `rm -rf` of a large tree disk-bound; the journal is
//! fsynced on unmount and by [`Journal::sync`]).

use crate::relpath;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const JOURNAL_FILE: &str = "journal";
pub const HEADER: &str = "saferoot-journal 1\n";
/// What [`Journal::open`] appends to a torn last line (one without its newline) to end it. A
/// record never contains a raw tab (JSON escapes it), so a line ending in this is known for a
/// torn write sealed after a crash, not for a damaged record, wherever it ends up in the file.
pub const TORN_SEAL: &[u8] = b"\t(torn)\n";

/// What happened. The inverse of each is applied by restore to go back in time.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A daemon started serving the directory. No change to the tree.
    Mount,
    /// A daemon stopped serving the directory. No change to the tree.
    Umount,
    /// A regular file was created (`path` did not exist before).
    Create,
    /// A directory was created.
    Mkdir,
    /// A fifo, socket or device node was created.
    Mknod,
    /// A symlink was created; `target` holds its target.
    Symlink,
    /// A new hard link `to` was made to the existing file `path`; `to` did not exist before.
    Link,
    /// `path` was removed. If it was the file's last link, the file was moved to `trash`;
    /// otherwise its content was stored as `object` (if a regular file) and the link removed.
    Unlink,
    /// The empty directory `path` (with `mode`) was removed.
    Rmdir,
    /// `path` was renamed to `to`. If `to` existed, the replaced file went to `trash` first.
    Rename,
    /// `path` and `to` were swapped atomically (`RENAME_EXCHANGE`).
    Exchange,
    /// Metadata change on `path`: `mode` is the new mode, `old_mode` the previous one;
    /// `size` is set for a truncate.
    Setattr,
    /// `path` was opened for writing and a write session began (the first writer of its inode,
    /// or the first after the previous session's close); `object` is its content just before
    /// (the pre-image). Everything that changes bytes in place (writes, appends, mmap, fallocate
    /// punch/collapse, copy_file_range) needs such a descriptor, so it is covered by this record.
    Write,
    /// `path` was opened for appending only (`O_WRONLY|O_APPEND`, as `>>` does) and a write
    /// session began without keeping anything: such a session can only add bytes, so the
    /// content before it is the first `size` bytes of the content after it. If something in
    /// the session could change those bytes after all (a write below `size` once `O_APPEND`
    /// is cleared, a truncate, another writer), a `write` record with the pre-image comes
    /// first.
    Append,
    /// Marker: a restore to instant `target_t` started. The changes it made follow as ordinary
    /// records (`unlink` to trash for what it displaced, `create`/`mkdir`/`symlink` for what it
    /// put back), so a later restore can undo it like any other change.
    Restore,
    /// The last handle open for writing on `path` (inode `ino`) was closed: the write session
    /// that began with the matching `write` record ended. Restore uses it to tell whether a
    /// file was being written at an instant.
    Close,
    /// Marker: a `saferoot run` session started (`note` holds the command). `@start` is the
    /// newest of these.
    Run,
    /// Marker: snapshot number `snapshot` (a manifest of the whole tree) was taken.
    Snapshot,
    /// Marker: `saferoot gc` collected the history before `target_t`, which is from then on
    /// the oldest instant that can be restored (see [`horizon`]). `note` says what was freed.
    Gc,
    /// Marker: `saferoot doctor --repair` set damaged history aside; instants before
    /// `target_t` can no longer be restored exactly (see [`horizon`]). `note` says what.
    Repair,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Mount => "mount",
            Op::Umount => "umount",
            Op::Create => "create",
            Op::Mkdir => "mkdir",
            Op::Mknod => "mknod",
            Op::Symlink => "symlink",
            Op::Link => "link",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Exchange => "exchange",
            Op::Setattr => "setattr",
            Op::Write => "write",
            Op::Append => "append",
            Op::Restore => "restore",
            Op::Close => "close",
            Op::Run => "run",
            Op::Snapshot => "snapshot",
            Op::Gc => "gc",
            Op::Repair => "repair",
        }
    }
}

/// The type of a file system object, as recorded in the journal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    /// The type as people say it ("file", "directory", "symlink", …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "character device",
            Kind::BlockDev => "block device",
        }
    }

    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }
}

/// One journal record. Paths are relative to the project root; `trash` is relative to the
/// store directory. Optional fields are omitted from the JSON when absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// UTC nanoseconds since the Unix epoch.
    pub t: i64,
    pub op: Op,
    #[serde(with = "relpath")]
    pub path: PathBuf,
    /// Second path: rename/exchange destination; for `link`, the new name.
    #[serde(
        with = "relpath::opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub to: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Permission bits (and file type bits) of the object the record is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Backing inode number: file identity across renames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// The inode's link count, when it has other names (> 1): a change to it shows under
    /// every one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<u64>,
    /// Where the old bytes are, relative to the store directory.
    #[serde(
        with = "relpath::opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trash: Option<PathBuf>,
    /// blake3 (hex) of content kept in `objects/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// For an `unlink` of one of two names that kept nothing: the other name, which held the
    /// same file (`ino`) at that instant.
    #[serde(
        with = "relpath::opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peer: Option<PathBuf>,
    /// Symlink target for `symlink` records.
    #[serde(
        with = "relpath::opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target: Option<PathBuf>,
    /// For `restore` markers: the instant restored to (UTC ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_t: Option<i64>,
    /// Free text for people: the command of a `run` record, the reason of a snapshot, why a
    /// record was recovered, a move across a scratch boundary, a mode changed by an ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For `snapshot` markers: the snapshot number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<u64>,
    /// The process that made the change.
    pub pid: u32,
    pub comm: String,
}

impl Record {
    /// A record with only the mandatory fields set; fill the rest with struct update syntax.
    pub fn new(
        t: i64,
        op: Op,
        path: impl Into<PathBuf>,
        pid: u32,
        comm: impl Into<String>,
    ) -> Self {
        Record {
            t,
            op,
            path: path.into(),
            to: None,
            kind: None,
            mode: None,
            old_mode: None,
            size: None,
            ino: None,
            links: None,
            trash: None,
            object: None,
            peer: None,
            target: None,
            target_t: None,
            note: None,
            snapshot: None,
            pid,
            comm: comm.into(),
        }
    }
}

/// The oldest instant the journal `records` can restore to, when `gc` or `doctor --repair`
/// set one (the newest such limit, with the record that set it); `None`: the whole journal.
pub fn horizon(records: &[Record]) -> Option<(i64, &Record)> {
    records
        .iter()
        .filter(|r| matches!(r.op, Op::Gc | Op::Repair))
        .filter_map(|r| r.target_t.map(|t| (t, r)))
        .max_by_key(|(t, _)| *t)
}

pub(crate) fn checksum(json: &[u8]) -> String {
    let h = blake3::hash(json);
    let mut s = String::with_capacity(16);
    for b in &h.as_bytes()[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Encode one record as its journal line (with checksum and newline).
pub fn encode(rec: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(rec).expect("journal records always serialize");
    let mut line = Vec::with_capacity(json.len() + 18);
    line.extend_from_slice(checksum(&json).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// The open journal, shared by every thread that records changes.
pub struct Journal {
    file: Mutex<Tail>,
    path: PathBuf,
}

/// The append handle, and whether the file ends in a torn line not sealed yet.
struct Tail {
    file: File,
    /// The last line has no newline and its seal could not be written when the journal was
    /// opened (a full disk): the next append writes the seal first. Readers ignore a torn last
    /// line either way, so commands that only read work on a full disk.
    unsealed: bool,
    /// Space kept allocated past the end of the file ([`Journal::keep_reserve`]), if asked.
    reserve: Option<Reserve>,
    /// The file starts with another version's header (what [`unknown_header`] says): it is
    /// never written to, by an append or a rewrite; readers refuse it.
    foreign: Option<String>,
}

/// The journal's reserve: blocks allocated beyond its end (`fallocate` with
/// `FALLOC_FL_KEEP_SIZE`, invisible to readers), so that appends go on when the disk fills
/// up. The daemon's records then still reach the journal: a removal whose record were lost
/// would be known again only at the next mount, and `trash purge` or `log` would not see it.
struct Reserve {
    /// The file's length, as this handle appended to it.
    len: u64,
    /// Allocated up to here.
    until: u64,
    /// Where the last attempt to extend the reserve was made (to retry only after more
    /// appends when the disk is full).
    tried_at: u64,
}

/// How much room the daemon keeps allocated past the journal's end: about 1,500 records.
pub const RESERVE_BYTES: u64 = 256 * 1024;

impl Journal {
    /// Open (creating with its header if new) the journal in the store directory `store`.
    pub fn open(store: BorrowedFd<'_>, store_path: &Path) -> Result<Journal> {
        let path = store_path.join(JOURNAL_FILE);
        let fd = nix::fcntl::openat(
            store,
            JOURNAL_FILE,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_APPEND
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io("open journal", &path, e))?;
        let mut file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|e| Error::Io {
                op: "stat journal",
                path: path.clone(),
                cause: e,
            })?
            .len();
        let mut unsealed = false;
        let foreign = match check_version(store, store_path) {
            Err(Error::Format { what, .. }) => Some(what),
            _ => None,
        };
        if len == 0 {
            file.write_all(HEADER.as_bytes()).map_err(|e| Error::Io {
                op: "write journal header",
                path: path.clone(),
                cause: e,
            })?;
        } else if foreign.is_none() && last_byte(store, &path)? != Some(b'\n') {
            // A crash tore the last record. End that line with a seal, so the fragment stays
            // one line on its own instead of swallowing the next good record, and readers
            // still know it for a torn write (harmless) rather than a damaged record. If the
            // seal cannot be written now (no space), the next append writes it first.
            unsealed = file.write_all(TORN_SEAL).is_err();
        }
        Ok(Journal {
            file: Mutex::new(Tail {
                file,
                unsealed,
                reserve: None,
                foreign,
            }),
            path,
        })
    }

    /// Keep [`RESERVE_BYTES`] allocated past the end of the journal from now on, topped up as
    /// records are appended (for the daemon, the journal's one writer while mounted). Best
    /// effort: where the filesystem has no room or no `fallocate`, appends work as before.
    pub fn keep_reserve(&self) {
        let mut t = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        t.reserve = Some(Reserve {
            len,
            until: len,
            tried_at: 0,
        });
        top_up(&mut t);
    }

    /// Append one record. The caller must have put any bytes the record refers to in place
    /// before calling this.
    pub fn append(&self, rec: &Record) -> Result<()> {
        self.append_all(std::slice::from_ref(rec))
    }

    /// Append several records in one write(2), for records of one change: nothing can come
    /// between them, and a crash can leave the first without the others only by cutting off
    /// that write (the rest is then a torn line, which readers ignore).
    pub fn append_all(&self, recs: &[Record]) -> Result<()> {
        let mut line = Vec::new();
        for rec in recs {
            line.extend_from_slice(&encode(rec));
        }
        if line.is_empty() {
            return Ok(());
        }
        let mut held = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut *held;
        if let Some(what) = &t.foreign {
            return Err(Error::Format {
                path: self.path.clone(),
                what: what.clone(),
            });
        }
        if t.unsealed {
            // One write: the seal never lands without the record, or the record without it.
            let mut sealed = TORN_SEAL.to_vec();
            sealed.append(&mut line);
            line = sealed;
        }
        let mut written = 0;
        let failed = loop {
            if written == line.len() {
                break None;
            }
            match t.file.write(&line[written..]) {
                Ok(0) => break Some(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = failed {
            // Part of the line landed (a full disk): seal it before the next record, which
            // would otherwise extend it into one damaged line. When nothing landed, the file
            // still ends as it did.
            t.unsealed |= written > 0;
            if let Some(r) = t.reserve.as_mut() {
                r.len += written as u64;
            }
            return Err(Error::Io {
                op: "append to journal",
                path: self.path.clone(),
                cause: e,
            });
        }
        t.unsealed = false;
        if let Some(r) = t.reserve.as_mut() {
            r.len += line.len() as u64;
        }
        top_up(t);
        Ok(())
    }

    /// fsync the journal.
    pub fn sync(&self) -> Result<()> {
        let t = self.file.lock().unwrap_or_else(|p| p.into_inner());
        t.file.sync_all().map_err(|e| Error::Io {
            op: "fsync journal",
            path: self.path.clone(),
            cause: e,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace the journal's content: `edit` gets the current bytes and returns the new ones
    /// (starting with the header). Appends from this process wait meanwhile; other processes
    /// must be kept out by the caller ([`crate::Store::exclusive`]). Crash-safe: the new
    /// content is written to `tmp/`, fsynced and renamed over the journal, and the store
    /// directory fsynced, so the journal is always either the old or the new one.
    pub fn rewrite(
        &self,
        store: BorrowedFd<'_>,
        edit: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(what) = &f.foreign {
            return Err(Error::Format {
                path: self.path.clone(),
                what: what.clone(),
            });
        }
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |e: nix::errno::Errno| Error::io(op, &path, e)
        };
        let mut old = Vec::new();
        let rd = nix::fcntl::openat(
            store,
            JOURNAL_FILE,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io("open journal", &self.path))?;
        let mut rd = File::from(rd);
        rd.read_to_end(&mut old).map_err(|e| Error::Io {
            op: "read journal",
            path: self.path.clone(),
            cause: e,
        })?;
        // Allocated past its end: the daemon's reserve (kept after unmount too). The new file
        // keeps one, so a rewrite while unmounted neither gives up the room records need on a
        // full disk nor counts the reserve as freed.
        let had_reserve = rd.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.blocks() * 512).saturating_sub(m.len()) >= RESERVE_BYTES / 2
        });
        drop(rd);
        let new = edit(&old)?;
        let store_dir = self.path.parent().unwrap_or(Path::new("."));
        match nix::sys::stat::mkdirat(
            store,
            crate::store::TMP_DIR,
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::io(
                    "mkdir",
                    &store_dir.join(crate::store::TMP_DIR),
                    e,
                ))
            }
        }
        let tmp =
            Path::new(crate::store::TMP_DIR).join(format!("journal.new.{}", std::process::id()));
        let tmp_shown = store_dir.join(&tmp);
        let fd = nix::fcntl::openat(
            store,
            &tmp,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(io("create", &tmp_shown))?;
        let mut out = File::from(fd);
        let written = out
            .write_all(&new)
            .map(|()| {
                // After the content, best effort: the reserve never takes the room the
                // content needs (gc and purge are what people run when the disk is full).
                if let (true, Ok(off), Ok(n)) = (
                    had_reserve,
                    i64::try_from(new.len()),
                    i64::try_from(RESERVE_BYTES),
                ) {
                    let _ = nix::fcntl::fallocate(
                        out.as_fd(),
                        nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        off,
                        n,
                    );
                }
            })
            .and_then(|()| out.sync_all())
            .map_err(|e| Error::Io {
                op: "write",
                path: tmp_shown.clone(),
                cause: e,
            });
        if let Err(e) = written {
            let _ = nix::unistd::unlinkat(store, &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        drop(out);
        nix::fcntl::renameat(store, &tmp, store, JOURNAL_FILE)
            .map_err(io("replace journal", &self.path))?;
        nix::unistd::fsync(store).map_err(io("fsync", store_dir))?;
        let fd = nix::fcntl::openat(
            store,
            JOURNAL_FILE,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_APPEND
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io("open journal", &self.path))?;
        f.file = File::from(fd);
        f.unsealed = false;
        if let Some(r) = f.reserve.as_mut() {
            // A new file: nothing is allocated past its end yet.
            let len = new.len() as u64;
            *r = Reserve {
                len,
                until: len,
                tried_at: 0,
            };
        }
        top_up(&mut f);
        Ok(())
    }
}

/// The journal's lines for a rewrite (gc, purge): each one's bytes (without the newline) and
/// its record, `None` when it is damaged. Lines torn by a crash are left out: they hold no
/// change, and a torn line followed by more records would read as damage.
pub fn records_and_lines<'a>(
    buf: &'a [u8],
    path: &Path,
) -> Result<Vec<(&'a [u8], Option<Record>)>> {
    Ok(lines(buf, path)?
        .into_iter()
        .filter_map(|l| match l.state {
            LineState::Good(r) => Some((l.bytes, Some(*r))),
            LineState::Torn => None,
            LineState::Damaged(_) => Some((l.bytes, None)),
        })
        .collect())
}

fn last_byte(store: BorrowedFd<'_>, path: &Path) -> Result<Option<u8>> {
    let fd = nix::fcntl::openat(
        store,
        JOURNAL_FILE,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io("open journal", path, e))?;
    let len = nix::sys::stat::fstat(fd.as_fd())
        .map_err(|e| Error::io("stat journal", path, e))?
        .st_size;
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    nix::sys::uio::pread(fd.as_fd(), &mut b, len - 1)
        .map_err(|e| Error::io("read journal", path, e))?;
    Ok(Some(b[0]))
}

/// What [`read`] found besides the records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// Lines in the middle of the journal whose checksum or JSON was bad (skipped): the number
    /// of [`ReadReport::damaged`] lines.
    pub corrupt: usize,
    /// Each of those lines, in file order.
    pub damaged: Vec<Damaged>,
    /// A torn last line was ignored.
    pub torn_tail: bool,
    /// Line numbers of torn writes: the torn last line, and torn lines sealed by a later
    /// [`Journal::open`] (see [`TORN_SEAL`]). Ignored on read: nothing was lost with them.
    pub torn: Vec<usize>,
}

/// A damaged line of the journal: its record is unknown, and so is the change it described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    /// `t` of the last good record before it in the file, if any.
    pub before_t: Option<i64>,
    /// The oldest instant the damaged record cannot matter to: `t` of the first good record
    /// after it in the file, or later when a write session was open across it (its content is
    /// unknown until the session ends: see `past_sessions`). `None`: no such instant yet. A
    /// walk back in time to an instant before this would have to undo the damaged record.
    pub after_t: Option<i64>,
    /// What is wrong with it, for people.
    pub why: &'static str,
}

/// What one line of the journal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    Good(Box<Record>),
    /// A torn write from a crash: the torn last line, or one sealed with [`TORN_SEAL`].
    Torn,
    /// Neither a record nor a torn write; says why.
    Damaged(&'static str),
}

/// One line of the journal after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number in the file (the header is line 1).
    pub number: usize,
    /// The line's bytes, without its newline.
    pub bytes: &'a [u8],
    pub state: LineState,
}

/// Read every valid record, in file order (which is time order up to clock steps; callers that
/// need strict time order sort stably by `t`).
pub fn read(store: BorrowedFd<'_>, store_path: &Path) -> Result<(Vec<Record>, ReadReport)> {
    let path = store_path.join(JOURNAL_FILE);
    let buf = read_bytes(store, store_path)?;
    parse(&buf, &path)
}

/// The journal's bytes (empty if it does not exist).
pub fn read_bytes(store: BorrowedFd<'_>, store_path: &Path) -> Result<Vec<u8>> {
    let path = store_path.join(JOURNAL_FILE);
    let fd = match nix::fcntl::openat(
        store,
        JOURNAL_FILE,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open journal", &path, e)),
    };
    let mut buf = Vec::new();
    File::from(fd)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Io {
            op: "read journal",
            path: path.clone(),
            cause: e,
        })?;
    Ok(buf)
}

/// Extend the reserve when less than half of it is left. When that fails (a full disk), try
/// again only after another eighth of it has been appended.
fn top_up(t: &mut Tail) {
    let Some(r) = t.reserve.as_mut() else { return };
    let due = |r: &Reserve| {
        r.until.saturating_sub(r.len) < RESERVE_BYTES / 2
            && (r.tried_at == 0 || r.len >= r.tried_at + RESERVE_BYTES / 8)
    };
    if !due(r) {
        return;
    }
    // Other processes append too (a restore while mounted): the file may be longer than what
    // this handle counted.
    if let Ok(m) = t.file.metadata() {
        r.len = r.len.max(m.len());
    }
    r.tried_at = r.len.max(1);
    let (Ok(off), Ok(n)) = (i64::try_from(r.len), i64::try_from(RESERVE_BYTES)) else {
        return;
    };
    if nix::fcntl::fallocate(
        t.file.as_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off,
        n,
    )
    .is_ok()
    {
        r.until = r.len + RESERVE_BYTES;
        r.tried_at = 0;
    }
}

/// The error for a journal whose first line is not this version's header.
fn unknown_header(buf: &[u8], path: &Path) -> Error {
    let first = buf.split(|&c| c == b'\n').next().unwrap_or_default();
    Error::Format {
        path: path.to_owned(),
        what: format!(
            "unknown journal header {:?} (this saferoot reads version 1)",
            String::from_utf8_lossy(first)
        ),
    }
}

/// Refuse a journal written in another format version (its header), reading only its first
/// line: what the daemon checks before it appends anything.
pub fn check_version(store: BorrowedFd<'_>, store_path: &Path) -> Result<()> {
    let path = store_path.join(JOURNAL_FILE);
    let fd = match nix::fcntl::openat(
        store,
        JOURNAL_FILE,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::io("open journal", &path, e)),
    };
    let mut head = [0u8; 128];
    let n = nix::sys::uio::pread(fd.as_fd(), &mut head, 0)
        .map_err(|e| Error::io("read journal", &path, e))?;
    let head = &head[..n];
    if head.is_empty() || head.starts_with(HEADER.as_bytes()) {
        Ok(())
    } else {
        Err(unknown_header(head, &path))
    }
}

/// Parse journal bytes (see [`read`]).
pub fn parse(buf: &[u8], path: &Path) -> Result<(Vec<Record>, ReadReport)> {
    let (numbered, report) = parse_numbered(buf, path)?;
    Ok((numbered.into_iter().map(|(_, r)| r).collect(), report))
}

/// [`parse`], with the line number of each record.
pub fn parse_numbered(buf: &[u8], path: &Path) -> Result<(Vec<(usize, Record)>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut records = Vec::new();
    let mut last_good: Option<i64> = None;
    // Damaged lines still waiting for the next good record (their `after_t`).
    let mut waiting: Vec<usize> = Vec::new();
    let all = lines(buf, path)?;
    report.torn_tail = all.last().is_some_and(|l| l.state == LineState::Torn);
    for l in all {
        match l.state {
            LineState::Good(r) => {
                for i in waiting.drain(..) {
                    report.damaged[i].after_t = Some(r.t);
                }
                last_good = Some(r.t);
                records.push((l.number, *r));
            }
            LineState::Torn => {
                report.torn.push(l.number);
            }
            LineState::Damaged(why) => {
                waiting.push(report.damaged.len());
                report.damaged.push(Damaged {
                    line: l.number,
                    before_t: last_good,
                    after_t: None,
                    why,
                });
            }
        }
    }
    report.corrupt = report.damaged.len();
    // Where each damaged line sits among the good records (file order).
    let mut pos = Vec::with_capacity(report.damaged.len());
    let mut next = 0;
    for d in &report.damaged {
        while next < records.len() && records[next].0 < d.line {
            next += 1;
        }
        pos.push(next);
    }
    for (d, p) in report.damaged.iter_mut().zip(pos) {
        if d.after_t.is_some() {
            d.after_t = past_sessions(&records, p, d.after_t);
        }
    }
    Ok((records, report))
}

/// The oldest instant a damaged line at position `pos` among `records` (file order) cannot
/// matter to, from the first good record after it (`after_t`): a write session that was open
/// across the damaged line may have had its end (a `close`) there, and one that ends after it
/// without a known start may have had its start (`write`, `append`) there. Either way the
/// file's content is unknown until the session ends: at its `close`, or at the next `mount` or
/// `umount` (which no session outlives). `None`: a session across it has not ended yet.
fn past_sessions(records: &[(usize, Record)], pos: usize, after_t: Option<i64>) -> Option<i64> {
    use std::collections::HashSet;
    let mut bound = after_t?;
    // Since the last mount or umount, by inode: sessions begun with a kept pre-image (`write`,
    // `append`) and not closed, and every file whose session start was seen (those, or a
    // `create`) and not closed since.
    let mut open: HashSet<u64> = HashSet::new();
    let mut started: HashSet<u64> = HashSet::new();
    let start = records[..pos]
        .iter()
        .rposition(|(_, r)| matches!(r.op, Op::Mount | Op::Umount))
        .map_or(0, |i| i + 1);
    fn note(r: &Record, open: &mut HashSet<u64>, started: &mut HashSet<u64>) {
        let Some(ino) = r.ino else { return };
        match r.op {
            Op::Write | Op::Append => {
                open.insert(ino);
                started.insert(ino);
            }
            Op::Create => {
                started.insert(ino);
            }
            Op::Close => {
                open.remove(&ino);
                started.remove(&ino);
            }
            _ => {}
        }
    }
    for (_, r) in &records[start..pos] {
        note(r, &mut open, &mut started);
    }
    let mut across = open.clone();
    for (_, r) in &records[pos..] {
        if matches!(r.op, Op::Mount | Op::Umount) {
            if !across.is_empty() {
                bound = bound.max(r.t.saturating_add(1));
            }
            return Some(bound);
        }
        if let (Op::Close, Some(ino)) = (r.op, r.ino) {
            // Open across the damaged line, or closed with no start seen: the damaged line
            // may have been that start.
            if across.remove(&ino) || !started.contains(&ino) {
                bound = bound.max(r.t.saturating_add(1));
            }
        }
        note(r, &mut open, &mut started);
    }
    across.is_empty().then_some(bound)
}

/// Every line of journal bytes after the header, classified. An empty journal has none; one
/// with another header is refused.
pub fn lines<'a>(buf: &'a [u8], path: &Path) -> Result<Vec<Line<'a>>> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let body = match buf.strip_prefix(HEADER.as_bytes()) {
        Some(b) => b,
        None => return Err(unknown_header(buf, path)),
    };
    let mut pieces: Vec<&[u8]> = body.split(|&c| c == b'\n').collect();
    // split() yields a final empty piece when the body ends with '\n'; anything else there is a
    // line without its newline: a torn write.
    let last = pieces.pop().unwrap_or_default();
    let seal = &TORN_SEAL[..TORN_SEAL.len() - 1];
    let n = pieces.len();
    let mut out = Vec::with_capacity(n + 1);
    for (i, line) in pieces.into_iter().enumerate() {
        let state = match decode(line) {
            Ok(r) => LineState::Good(Box::new(r)),
            Err(_) if line.ends_with(seal) => LineState::Torn,
            // The last complete line, bad: the crash came before it was whole (or, with an
            // older saferoot, it was ended by a bare newline and nothing followed it yet).
            Err(_) if i + 1 == n => LineState::Torn,
            Err(why) => LineState::Damaged(why),
        };
        out.push(Line {
            number: i + 2,
            bytes: line,
            state,
        });
    }
    if !last.is_empty() {
        out.push(Line {
            number: n + 2,
            bytes: last,
            state: LineState::Torn,
        });
    }
    Ok(out)
}

pub(crate) fn decode(line: &[u8]) -> std::result::Result<Record, &'static str> {
    if line.len() < 18 || line[16] != b' ' {
        return Err("it does not start with a checksum");
    }
    let (sum, json) = (&line[..16], &line[17..]);
    if checksum(json).as_bytes() != sum {
        return Err("its checksum does not match its content");
    }
    serde_json::from_slice(json)
        .map_err(|_| "its JSON is not a record this saferoot reads (written by a newer version?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64, p: &str) -> Record {
        Record {
            trash: Some(PathBuf::from("trash/x")),
            ..Record::new(t, Op::Unlink, p, 42, "rm")
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let mut buf = HEADER.as_bytes().to_vec();
        buf.extend(encode(&rec(1, "a")));
        buf.extend(encode(&rec(2, "b")));
        let (r, rep) = parse(&buf, Path::new("j")).unwrap();
        assert_eq!(r, vec![rec(1, "a"), rec(2, "b")]);
        assert_eq!(rep, ReadReport::default());

        // Torn: half a line at the end.
        let third = encode(&rec(3, "c"));
        buf.extend_from_slice(&third[..third.len() / 2]);
        let (r, rep) = parse(&buf, Path::new("j")).unwrap();
        assert_eq!(r.len(), 2);
        assert!(rep.torn_tail);
    }

    #[test]
    fn corrupt_middle_line_is_skipped_and_counted() {
        let mut buf = HEADER.as_bytes().to_vec();
        let mut bad = encode(&rec(1, "a"));
        bad[20] ^= 1;
        buf.extend(bad);
        buf.extend(encode(&rec(2, "b")));
        let (r, rep) = parse(&buf, Path::new("j")).unwrap();
        assert_eq!(r, vec![rec(2, "b")]);
        assert_eq!(rep.corrupt, 1);
        assert!(!rep.torn_tail);
    }

    #[test]
    fn reopening_after_a_torn_write_keeps_the_next_record() {
        let t = tempfile::tempdir().unwrap();
        let dir: std::os::fd::OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let j = Journal::open(dir.as_fd(), t.path()).unwrap();
        j.append(&rec(1, "a")).unwrap();
        drop(j);
        // Simulate a crash in the middle of writing the second record.
        let torn = encode(&rec(2, "b"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(t.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let j = Journal::open(dir.as_fd(), t.path()).unwrap();
        j.append(&rec(3, "c")).unwrap();
        let (r, rep) = read(dir.as_fd(), t.path()).unwrap();
        assert_eq!(r, vec![rec(1, "a"), rec(3, "c")]);
        // The sealed fragment is known for a torn write, not counted as damage.
        assert_eq!(rep.corrupt, 0);
        assert_eq!(rep.torn, vec![3]);
        assert!(!rep.torn_tail);
    }

    #[test]
    fn damaged_lines_are_numbered_with_their_neighbours() {
        let mut buf = HEADER.as_bytes().to_vec();
        buf.extend(encode(&rec(10, "a")));
        // Line 3: cut in half, the rest of the file kept.
        let cut = encode(&rec(20, "b"));
        buf.extend_from_slice(&cut[..cut.len() / 2]);
        buf.push(b'\n');
        // Line 4: one byte changed.
        let mut flipped = encode(&rec(25, "c"));
        flipped[30] ^= 0x20;
        buf.extend(flipped);
        buf.extend(encode(&rec(30, "d")));
        // Line 6: a torn write sealed by a later open.
        let torn = encode(&rec(35, "e"));
        buf.extend_from_slice(&torn[..10]);
        buf.extend_from_slice(TORN_SEAL);
        buf.extend(encode(&rec(40, "f")));
        // Line 8: torn last line.
        buf.extend_from_slice(&encode(&rec(50, "g"))[..20]);
        let (numbered, rep) = parse_numbered(&buf, Path::new("j")).unwrap();
        let lines: Vec<(usize, i64)> = numbered.iter().map(|(n, r)| (*n, r.t)).collect();
        assert_eq!(lines, vec![(2, 10), (5, 30), (7, 40)]);
        assert_eq!(rep.corrupt, 2);
        assert_eq!(
            rep.damaged
                .iter()
                .map(|d| (d.line, d.before_t, d.after_t))
                .collect::<Vec<_>>(),
            vec![(3, Some(10), Some(30)), (4, Some(10), Some(30))]
        );
        assert_eq!(rep.torn, vec![6, 8]);
        assert!(rep.torn_tail);
    }

    /// A damaged line inside a write session: nothing before the session's end is exact.
    #[test]
    fn damage_inside_a_write_session_bounds_at_its_end() {
        let r = |t: i64, op: Op, path: &str, ino: u64| Record {
            ino: Some(ino),
            ..Record::new(t, op, path, 1, "x")
        };
        let damaged = |rec: &Record| {
            let mut l = encode(rec);
            l[30] ^= 0x20;
            l
        };
        let after = |lines: Vec<Vec<u8>>| {
            let mut buf = HEADER.as_bytes().to_vec();
            for l in lines {
                buf.extend(l);
            }
            let (_, rep) = parse_numbered(&buf, Path::new("j")).unwrap();
            rep.damaged.iter().map(|d| d.after_t).collect::<Vec<_>>()
        };
        // The close of f is damaged: f's session ends at the umount.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            encode(&r(20, Op::Write, "f", 7)),
            damaged(&r(30, Op::Close, "f", 7)),
            encode(&r(40, Op::Create, "n", 8)),
            encode(&r(50, Op::Snapshot, ".", 0)),
            encode(&r(60, Op::Umount, ".", 0)),
        ];
        assert_eq!(after(lines), vec![Some(61)]);
        // The write (the session's start) of a is damaged: its end is its close.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            damaged(&r(20, Op::Write, "a", 7)),
            encode(&r(30, Op::Unlink, "b", 9)),
            encode(&r(40, Op::Close, "a", 7)),
            encode(&r(50, Op::Unlink, "c", 10)),
        ];
        assert_eq!(after(lines), vec![Some(41)]);
        // The same, with a truncate of a between its damaged start and its close.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            damaged(&r(20, Op::Write, "a", 7)),
            encode(&r(30, Op::Setattr, "a", 7)),
            encode(&r(40, Op::Close, "a", 7)),
        ];
        assert_eq!(after(lines), vec![Some(41)]);
        // A created file's session, seen whole after the damage: no later bound.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            damaged(&r(20, Op::Unlink, "g", 9)),
            encode(&r(30, Op::Create, "n", 8)),
            encode(&r(40, Op::Close, "n", 8)),
        ];
        assert_eq!(after(lines), vec![Some(30)]);
        // A session still open now: no instant is exact.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            encode(&r(20, Op::Write, "f", 7)),
            damaged(&r(30, Op::Unlink, "g", 9)),
            encode(&r(40, Op::Create, "n", 8)),
        ];
        assert_eq!(after(lines), vec![None]);
        // No session across it: the next good record, as before.
        let lines = vec![
            encode(&r(10, Op::Mount, ".", 0)),
            encode(&r(20, Op::Write, "f", 7)),
            encode(&r(25, Op::Close, "f", 7)),
            damaged(&r(30, Op::Unlink, "g", 9)),
            encode(&r(40, Op::Create, "n", 8)),
            encode(&r(45, Op::Close, "n", 8)),
        ];
        assert_eq!(after(lines), vec![Some(40)]);
    }

    #[test]
    fn unknown_header_is_an_error() {
        let e = parse(b"saferoot-journal 9\n", Path::new("j")).unwrap_err();
        assert!(e.to_string().contains("version 1"), "{e}");
    }
}
