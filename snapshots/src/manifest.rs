//! Snapshots: a manifest of the whole project tree at one instant (every path with its type,
//! mode, size, mtime, and the blake3 of each regular file or the target of each symlink),
//! stored as `.saferoot/snapshots/<n>`.
//!
//! A snapshot is what `@N` names and what `diff` of whole instants can be checked against;
//! restore itself walks the journal back from the live tree (see docs/versioning.md for why).
//! It records *identity*, not bytes: the bytes of
//! a file as it was in snapshot N are found by their blake3 (live tree, object store, trash
//! index). Taking one is incremental through the store's hash cache, which is keyed by
//! (dev, ino) and valid while size, mtime and ctime are unchanged: a second snapshot of an
//! unchanged tree stats every entry but reads no file. The cache is persisted in
//! `.saferoot/hashcache` (see `hashcache.rs`) so this holds across processes.
//!
//! The tree is read through the store's descriptor on the real project directory with `*at()`
//! calls, never through the project path (which a FUSE mount may cover). `.saferoot` at the top
//! is left out, and so are scratch trees (`config.rs`: `target/`, `node_modules/`, …): their
//! changes are not journaled, so a manifest of them could not be replayed forward, and hashing
//! a build tree at every mount would be most of the cost. Other mount points below the project
//! are walked like plain directories.
//!
//! # Format (version 1)
//!
//! ```text
//! saferoot-manifest 1
//! {"t":<UTC ns>,"reason":"mount","entries":E,"bytes":B,"hashed_files":H,"hashed_bytes":HB}
//! <kind>\t<mode>\t<size>\t<mtime ns>\t<data>\t<path>        one line per entry
//! end\t<E>\t<blake3 hex of every byte above this line>
//! ```
//!
//! - The snapshot number is the file name, not part of the content.
//! - `t` is the instant the walk started. The tree is expected to be quiescent (the daemon
//!   snapshots before mounting and after unmounting); a snapshot taken while something writes
//!   reflects each entry at some moment between `t` and the end of the walk, and every change
//!   journaled after `t` may or may not be in it (a replay from `t` is a superset).
//! - `kind` is one letter: `f` file, `d` directory, `l` symlink, `p` fifo, `s` socket,
//!   `c` character device, `b` block device. `mode` is the full `st_mode` in octal (type bits
//!   included, like the journal's `mode`). `size` is `st_size`; `bytes` in the header is the
//!   sum over regular files.
//! - `data` is the blake3 (64 hex digits) of a regular file, or `-` when its content could not
//!   be read consistently (unreadable, or still being written after three attempts); the
//!   target of a symlink (escaped); `-` for every other kind.
//! - Paths are relative to the project, in depth-first order with the names of each directory
//!   sorted bytewise, so a directory always comes before what it contains.
//! - Escaping (paths and symlink targets are bytes): `\` is written `\\`; bytes below 0x20,
//!   0x7f, and bytes that are not part of valid UTF-8 are written `\xHH`. Every line is
//!   therefore valid UTF-8 without tabs or newlines, and `grep` finds ordinary paths as they are.
//! - About 115 bytes per entry (100,000 small files in 1,000 directories: 11.6 MB).
//! - Written to `.saferoot/tmp/`, fsynced, then renamed (never over an existing manifest) into
//!   `snapshots/`, and the directory fsynced; only then is the `snapshot` journal record
//!   appended. [`load`] refuses a file whose footer is missing or whose checksum does not
//!   match. [`list`] reads only the first two lines of each manifest; [`verify`] and
//!   [`list_verified`] (what `saferoot snapshots` and `@N` use) read them whole and name a
//!   damaged one.
//! - Numbers are 1 + the highest manifest present (also counting those `saferoot doctor
//!   --repair` set aside in `damaged/snapshots/`), so retention must always keep the newest
//!   manifest (it would anyway) for numbers never to be reused.
//!
//! What this module does not do: store file contents (pre-images and the trash do), record
//! device numbers of device nodes, hard-link structure (each name is an entry of its own), or
//! the project directory's own mode; decide retention; use manifests for restore (restore.rs).

use crate::journal::{Kind, Op, Record};
use crate::store::{check_relative, CacheKey, Store, STORE_DIR, TMP_DIR};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

/// Directory of the manifests, inside the store.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// First line of every manifest.
pub const HEADER: &str = "saferoot-manifest 1\n";

/// A file whose ctime is this close to the moment it was read is hashed but its hash is not
/// cached: a write in the same timestamp tick (coarse clocks advance every 1 to 10 ms) would
/// leave size, mtime and ctime unchanged, and the cache would then describe old bytes.
const RACY_NS: i64 = 100_000_000;
/// Files opened and waiting for a hashing thread, at most.
const QUEUE: usize = 256;
/// Attempts at hashing a file that keeps changing while it is read.
const ATTEMPTS: usize = 3;

/// What a snapshot holds, without its entries: the header of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Snapshot number (`@N`).
    pub n: u64,
    /// The instant the walk started, UTC ns.
    pub t: i64,
    /// Entries below the project root.
    pub entries: u64,
    /// Sum of the sizes of the regular files.
    pub bytes: u64,
    /// Files whose content was read to take this snapshot (hash cache misses).
    pub hashed_files: u64,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Why it was taken: "mount", "umount", "manual", …
    pub reason: String,
}

/// A whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub n: u64,
    pub t: i64,
    pub entries: Vec<ManifestEntry>,
}

/// One path of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative to the project root.
    pub path: PathBuf,
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// blake3 (hex) of a regular file's content; `None` for other kinds, and for a file whose
    /// content could not be read consistently.
    pub blake3: Option<String>,
    /// Target of a symlink.
    pub target: Option<PathBuf>,
}

/// The second line of a manifest.
#[derive(Serialize, Deserialize)]
struct Meta {
    t: i64,
    reason: String,
    entries: u64,
    bytes: u64,
    hashed_files: u64,
    hashed_bytes: u64,
}

impl Meta {
    fn info(self, n: u64) -> SnapshotInfo {
        SnapshotInfo {
            n,
            t: self.t,
            entries: self.entries,
            bytes: self.bytes,
            hashed_files: self.hashed_files,
            hashed_bytes: self.hashed_bytes,
            reason: self.reason,
        }
    }
}

fn mtime_ns(st: &FileStat) -> i64 {
    st.st_mtime * 1_000_000_000 + st.st_mtime_nsec
}

fn ctime_ns(st: &FileStat) -> i64 {
    st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
}

/// Take a snapshot of the whole tree now; `reason` says why ("mount", "umount", "manual").
///
/// Writes the manifest, then journals an `Op::Snapshot` record naming it, then saves the hash
/// cache (best effort: a cache that cannot be saved only costs re-reading next time).
pub fn take(store: &Store, reason: &str) -> Result<SnapshotInfo> {
    let t = crate::now_ns();
    let config = crate::config::Config::load(store)?;
    let progress = crate::progress::task("snapshot", None);
    let (entries, stats) = scan(store, &config)?;
    drop(progress);
    let meta = Meta {
        t,
        reason: reason.to_owned(),
        entries: entries.len() as u64,
        bytes: entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum(),
        hashed_files: stats.hashed_files,
        hashed_bytes: stats.hashed_bytes,
    };
    let n = write_manifest(store, &meta, &entries)?;
    // The record carries the snapshot's own instant (when the walk began), so `@N` is never
    // before the journal's first record: a first mount's snapshot makes the tree known from
    // exactly that instant.
    let rec = Record {
        snapshot: Some(n),
        note: Some(reason.to_owned()),
        ..Record::new(t, Op::Snapshot, ".", std::process::id(), "saferoot")
    };
    store.journal().append(&rec)?;
    let _ = crate::hashcache::save(store, &stats.seen, stats.hashed_files > 0);
    Ok(meta.info(n))
}

/// Every snapshot whose header reads, oldest number first. Damaged manifests are left out
/// (see [`load`] for the reason one is refused).
pub fn list(store: &Store) -> Result<Vec<SnapshotInfo>> {
    let mut out: Vec<SnapshotInfo> = numbers(store)?
        .into_iter()
        .filter_map(|n| info(store, n).ok())
        .collect();
    out.sort_by_key(|i| i.n);
    Ok(out)
}

/// Every snapshot, oldest number first, each read whole and verified ([`verify`]): its header,
/// or why it is damaged.
pub fn list_verified(store: &Store) -> Result<Vec<(u64, Result<SnapshotInfo>)>> {
    let mut ns = numbers(store)?;
    ns.sort_unstable();
    Ok(ns.into_iter().map(|n| (n, verify(store, n))).collect())
}

/// The header of snapshot `n`, after reading the whole manifest and checking its footer and
/// checksum. A manifest that fails says `snapshot N (<path>) is damaged: <what>`; a missing
/// one, `no snapshot N`.
pub fn verify(store: &Store, n: u64) -> Result<SnapshotInfo> {
    let shown = store.dir_path().join(manifest_rel(n));
    match read_verified(store, n)? {
        Ok(info) => Ok(info),
        Err(what) => Err(Error::Invalid(format!(
            "snapshot {n} ({}) is damaged: {what}",
            shown.display()
        ))),
    }
}

/// The manifest files present as (number, path relative to the store), oldest number first.
pub fn files(store: &Store) -> Result<Vec<(u64, PathBuf)>> {
    let mut ns = numbers(store)?;
    ns.sort_unstable();
    Ok(ns.into_iter().map(|n| (n, manifest_rel(n))).collect())
}

/// Read snapshot `n` whole: its header, or what is wrong with it (`Err` inside), or the error
/// that kept it from being read at all.
pub fn read_verified(store: &Store, n: u64) -> Result<std::result::Result<SnapshotInfo, String>> {
    let shown = store.dir_path().join(manifest_rel(n));
    let mut buf = Vec::new();
    open_manifest(store, n)?
        .read_to_end(&mut buf)
        .map_err(|e| Error::Io {
            op: "read manifest",
            path: shown.clone(),
            cause: e,
        })?;
    if let Some(what) = diagnose(&buf) {
        return Ok(Err(what));
    }
    match parse(&buf, &shown) {
        Ok((meta, _)) => Ok(Ok(meta.info(n))),
        Err(Error::Format { what, .. }) => Ok(Err(what)),
        Err(e) => Err(e),
    }
}

/// What is wrong with the manifest bytes `buf` at the level of the file (header, footer,
/// checksum), in words; `None` if that much is right.
fn diagnose(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return Some("it is empty".into());
    }
    if !buf.starts_with(HEADER.as_bytes()) {
        let first = buf.split(|&c| c == b'\n').next().unwrap_or_default();
        return Some(format!(
            "its first line is {:?}, not {:?}",
            String::from_utf8_lossy(first),
            HEADER.trim_end()
        ));
    }
    let Some(whole) = buf.strip_suffix(b"\n") else {
        return Some("it is truncated (its last line is incomplete)".into());
    };
    let start = whole.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    let footer = &whole[start..];
    let mut f = footer.split(|&c| c == b'\t');
    let (Some(b"end"), Some(_), Some(sum), None) = (f.next(), f.next(), f.next(), f.next()) else {
        return Some("it is truncated (its `end` line with the checksum is missing)".into());
    };
    if blake3::hash(&buf[..start]).to_hex().as_bytes() != sum {
        return Some("its checksum does not match its content".into());
    }
    None
}

/// The header of snapshot `n` (reads two lines, does not verify the checksum).
pub fn info(store: &Store, n: u64) -> Result<SnapshotInfo> {
    let rel = manifest_rel(n);
    let shown = store.dir_path().join(&rel);
    let f = open_manifest(store, n)?;
    let mut r = std::io::BufReader::new(f);
    let mut head = Vec::new();
    let mut meta = Vec::new();
    let io = |e: std::io::Error| Error::Io {
        op: "read manifest",
        path: shown.clone(),
        cause: e,
    };
    r.read_until(b'\n', &mut head).map_err(io)?;
    if head != HEADER.as_bytes() {
        return Err(bad_header(&shown, &head));
    }
    r.read_until(b'\n', &mut meta).map_err(io)?;
    parse_meta(&meta, &shown).map(|m| m.info(n))
}

/// Read snapshot `n` in full, refusing it if it is incomplete or damaged.
pub fn load(store: &Store, n: u64) -> Result<Manifest> {
    let shown = store.dir_path().join(manifest_rel(n));
    let mut buf = Vec::new();
    open_manifest(store, n)?
        .read_to_end(&mut buf)
        .map_err(|e| Error::Io {
            op: "read manifest",
            path: shown.clone(),
            cause: e,
        })?;
    let (meta, entries) = parse(&buf, &shown)?;
    Ok(Manifest {
        n,
        t: meta.t,
        entries,
    })
}

fn manifest_rel(n: u64) -> PathBuf {
    Path::new(SNAPSHOTS_DIR).join(n.to_string())
}

fn open_manifest(store: &Store, n: u64) -> Result<std::fs::File> {
    let rel = manifest_rel(n);
    match nix::fcntl::openat(
        store.dir(),
        &rel,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(Errno::ENOENT) if set_aside(store, n) => Err(Error::Invalid(format!(
            "snapshot {n} was set aside as damaged by `saferoot doctor --repair` (it is in {})",
            store.dir_path().join(damaged_rel(n)).display()
        ))),
        Err(Errno::ENOENT) => Err(Error::Invalid(format!(
            "no snapshot {n}; `saferoot snapshots` lists them"
        ))),
        Err(e) => Err(Error::io("open manifest", &store.dir_path().join(rel), e)),
    }
}

/// Where `saferoot doctor --repair` puts a damaged manifest `n`.
fn damaged_rel(n: u64) -> PathBuf {
    Path::new(crate::doctor::DAMAGED_DIR)
        .join(SNAPSHOTS_DIR)
        .join(n.to_string())
}

fn set_aside(store: &Store, n: u64) -> bool {
    nix::sys::stat::fstatat(store.dir(), &damaged_rel(n), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// Numbers of the manifests present (unordered).
fn numbers(store: &Store) -> Result<Vec<u64>> {
    numbers_in(store, Path::new(SNAPSHOTS_DIR))
}

/// Numbers of the manifests in the store directory `rel` (unordered).
fn numbers_in(store: &Store, rel: &Path) -> Result<Vec<u64>> {
    let shown = store.dir_path().join(rel);
    let mut d = match nix::dir::Dir::openat(
        store.dir(),
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &shown, e)),
    };
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| Error::io("read directory", &shown, e))?;
        let name = ent.file_name().to_bytes();
        // Canonical decimal only: "007" or "+7" are not snapshot 7.
        if name.first().is_some_and(|c| (b'1'..=b'9').contains(c))
            && name.iter().all(u8::is_ascii_digit)
        {
            if let Some(n) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Walking and hashing

#[derive(Default)]
struct Stats {
    hashed_files: u64,
    hashed_bytes: u64,
    /// (dev, ino) of every regular file seen: what the saved hash cache keeps.
    seen: HashSet<(u64, u64)>,
    /// Files queued for hashing by (dev, ino), so another hard link to one is read only once.
    queued: HashMap<(u64, u64), usize>,
    /// (entry, entry it is a hard link of): filled from the other once hashed.
    links: Vec<(usize, usize)>,
}

/// A regular file opened by the walker, for a hashing thread.
struct Job {
    index: usize,
    fd: OwnedFd,
}

enum Outcome {
    /// Hashed consistently: `st` is the file's stat while it was read.
    Hashed {
        st: FileStat,
        hex: String,
        cacheable: bool,
    },
    /// Not a regular file any more, unreadable, or never stable while read.
    Unknown,
}

struct Done {
    index: usize,
    outcome: Outcome,
    read: u64,
}

/// Walk the tree, hashing what the cache does not know on a few threads while the walk goes on.
fn scan(store: &Store, config: &crate::config::Config) -> Result<(Vec<ManifestEntry>, Stats)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let mut stats = Stats::default();
    let mut entries = Vec::new();
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(QUEUE);
    let job_rx = Mutex::new(job_rx);
    let walked = std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        for _ in 0..workers {
            let rx = &job_rx;
            let tx = done_tx.clone();
            s.spawn(move || hash_worker(rx, tx));
        }
        drop(done_tx);
        let mut w = Walker {
            store,
            config,
            entries: &mut entries,
            stats: &mut stats,
            jobs: job_tx,
        };
        let root = nix::dir::Dir::openat(
            store.project(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("read directory", store.project_path(), e));
        let walked = root.and_then(|root| w.dir(root, Path::new("")));
        // Closing the queue lets the workers finish what is queued and stop.
        drop(w);
        let done: Vec<Done> = done_rx.iter().collect();
        (walked, done)
    });
    let (walked, done) = walked;
    walked?;
    for d in done {
        stats.hashed_bytes += d.read;
        let e = &mut entries[d.index];
        match d.outcome {
            Outcome::Hashed { st, hex, cacheable } => {
                stats.hashed_files += 1;
                if cacheable {
                    store.remember_hash(&st, &hex);
                }
                stats.seen.insert((st.st_dev, st.st_ino));
                e.mode = st.st_mode;
                e.size = st.st_size as u64;
                e.mtime_ns = mtime_ns(&st);
                e.blake3 = Some(hex);
            }
            Outcome::Unknown => {
                if d.read > 0 {
                    stats.hashed_files += 1;
                }
                e.blake3 = None;
            }
        }
    }
    for &(link, first) in &stats.links {
        let f = entries[first].clone();
        let e = &mut entries[link];
        e.mode = f.mode;
        e.size = f.size;
        e.mtime_ns = f.mtime_ns;
        e.blake3 = f.blake3;
    }
    Ok((entries, stats))
}

struct Walker<'a> {
    store: &'a Store,
    config: &'a crate::config::Config,
    entries: &'a mut Vec<ManifestEntry>,
    stats: &'a mut Stats,
    jobs: mpsc::SyncSender<Job>,
}

impl Walker<'_> {
    fn shown(&self, rel: &Path) -> PathBuf {
        self.store.project_path().join(rel)
    }

    /// Add every entry below the open directory `d` (whose path is `rel`).
    fn dir(&mut self, mut d: nix::dir::Dir, rel: &Path) -> Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in d.iter() {
            let ent = ent.map_err(|e| Error::io("read directory", &self.shown(rel), e))?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if rel.as_os_str().is_empty() && name == STORE_DIR.as_bytes() {
                continue;
            }
            names.push(name.to_vec());
        }
        names.sort_unstable();
        for name in names {
            let name = std::ffi::OsString::from_vec(name);
            let sub = rel.join(&name);
            let st =
                match nix::sys::stat::fstatat(&d, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    // Removed since it was listed: not part of the tree any more.
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(Error::io("stat", &self.shown(&sub), e)),
                };
            let Some(kind) = Kind::from_mode(st.st_mode) else {
                continue;
            };
            crate::progress::advance(1);
            let mut entry = ManifestEntry {
                path: sub.clone(),
                kind,
                mode: st.st_mode,
                size: st.st_size as u64,
                mtime_ns: mtime_ns(&st),
                blake3: None,
                target: None,
            };
            match kind {
                Kind::Dir if self.config.is_scratch(&sub, true) => continue,
                Kind::Dir => {
                    let child = match nix::dir::Dir::openat(
                        &d,
                        name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(c) => c,
                        // Removed or replaced since the stat.
                        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                        Err(e) => return Err(Error::io("open directory", &self.shown(&sub), e)),
                    };
                    self.entries.push(entry);
                    self.dir(child, &sub)?;
                }
                Kind::Symlink => {
                    match nix::fcntl::readlinkat(&d, name.as_os_str()) {
                        Ok(t) => entry.target = Some(PathBuf::from(t)),
                        Err(Errno::ENOENT) | Err(Errno::EINVAL) => continue,
                        Err(e) => return Err(Error::io("read symlink", &self.shown(&sub), e)),
                    }
                    self.entries.push(entry);
                }
                Kind::File => {
                    if let Some(h) = self.store.cached_hash(&st) {
                        entry.blake3 = Some(h);
                        self.stats.seen.insert((st.st_dev, st.st_ino));
                        self.entries.push(entry);
                        continue;
                    }
                    let id = (st.st_dev, st.st_ino);
                    if let Some(&first) = self.stats.queued.get(&id) {
                        self.entries.push(entry);
                        self.stats.links.push((self.entries.len() - 1, first));
                        continue;
                    }
                    let fd = open_for_hash(&d, name.as_os_str());
                    self.entries.push(entry);
                    self.stats.queued.insert(id, self.entries.len() - 1);
                    if let Ok(fd) = fd {
                        let index = self.entries.len() - 1;
                        // Fails only if every worker died; the entry then stays unknown.
                        let _ = self.jobs.send(Job { index, fd });
                    }
                }
                _ => self.entries.push(entry),
            }
        }
        Ok(())
    }
}

/// Open a regular file to hash it without changing its atime (when allowed) and without
/// blocking if it was replaced by a fifo since it was listed.
fn open_for_hash(dir: &nix::dir::Dir, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(Errno::EPERM) => nix::fcntl::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

fn hash_worker(jobs: &Mutex<mpsc::Receiver<Job>>, done: mpsc::Sender<Done>) {
    let mut buf = vec![0u8; 1 << 18];
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let (outcome, read) = hash_file(job.fd.as_fd(), &mut buf);
        if done
            .send(Done {
                index: job.index,
                outcome,
                read,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Hash an open regular file; retry while it changes under us. Returns the outcome and the
/// number of bytes read.
fn hash_file(fd: BorrowedFd<'_>, buf: &mut [u8]) -> (Outcome, u64) {
    let mut read = 0u64;
    for _ in 0..ATTEMPTS {
        let Ok(before) = nix::sys::stat::fstat(fd) else {
            break;
        };
        if before.st_mode & libc::S_IFMT != libc::S_IFREG {
            break;
        }
        let started = crate::now_ns();
        let mut h = blake3::Hasher::new();
        let Ok(n) = crate::store::hash_into(fd, &mut h, buf) else {
            break;
        };
        let off = n as i64;
        read += n;
        let Ok(after) = nix::sys::stat::fstat(fd) else {
            break;
        };
        if CacheKey::of(&after) == CacheKey::of(&before) && off == after.st_size {
            let cacheable = ctime_ns(&after) < started - RACY_NS;
            let hex = h.finalize().to_hex().to_string();
            return (
                Outcome::Hashed {
                    st: after,
                    hex,
                    cacheable,
                },
                read,
            );
        }
    }
    (Outcome::Unknown, read)
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes through to a file while hashing everything written.
struct HashingWriter {
    file: std::fs::File,
    hasher: blake3::Hasher,
}

impl Write for HashingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(b)?;
        self.hasher.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn kind_letter(k: Kind) -> u8 {
    match k {
        Kind::File => b'f',
        Kind::Dir => b'd',
        Kind::Symlink => b'l',
        Kind::Fifo => b'p',
        Kind::Socket => b's',
        Kind::CharDev => b'c',
        Kind::BlockDev => b'b',
    }
}

fn kind_of_letter(c: &[u8]) -> Option<Kind> {
    Some(match c {
        b"f" => Kind::File,
        b"d" => Kind::Dir,
        b"l" => Kind::Symlink,
        b"p" => Kind::Fifo,
        b"s" => Kind::Socket,
        b"c" => Kind::CharDev,
        b"b" => Kind::BlockDev,
        _ => return None,
    })
}

/// Append `bytes` escaped (see the module comment) to `out`.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s.len(), 0),
            Err(e) => (
                e.valid_up_to(),
                e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
            ),
        };
        for &c in &rest[..valid] {
            match c {
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                _ => out.push(c),
            }
        }
        for &c in &rest[valid..valid + bad] {
            out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
        }
        rest = &rest[valid + bad..];
    }
}

fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        match s.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(s.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn encode_entry(e: &ManifestEntry, line: &mut Vec<u8>) {
    line.clear();
    line.push(kind_letter(e.kind));
    // Writing into a Vec cannot fail.
    let _ = write!(line, "\t{:o}\t{}\t{}\t", e.mode, e.size, e.mtime_ns);
    match (e.kind, &e.blake3, &e.target) {
        (Kind::File, Some(h), _) => line.extend_from_slice(h.as_bytes()),
        (Kind::Symlink, _, Some(t)) => escape(t.as_os_str().as_bytes(), line),
        _ => line.push(b'-'),
    }
    line.push(b'\t');
    escape(e.path.as_os_str().as_bytes(), line);
    line.push(b'\n');
}

/// Write the manifest and give it the next free number.
fn write_manifest(store: &Store, meta: &Meta, entries: &[ManifestEntry]) -> Result<u64> {
    let dir_shown = store.dir_path().join(SNAPSHOTS_DIR);
    for d in [SNAPSHOTS_DIR, TMP_DIR] {
        match nix::sys::stat::mkdirat(store.dir(), d, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io("mkdir", &store.dir_path().join(d), e)),
        }
    }
    let tmp = Path::new(TMP_DIR).join(format!(
        "manifest.{}.{}",
        std::process::id(),
        crate::now_ns()
    ));
    let tmp_shown = store.dir_path().join(&tmp);
    let fd = nix::fcntl::openat(
        store.dir(),
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create manifest", &tmp_shown, e))?;
    let unlink_tmp = || {
        let _ = nix::unistd::unlinkat(store.dir(), &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    };
    let written = (|| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            HashingWriter {
                file: std::fs::File::from(fd),
                hasher: blake3::Hasher::new(),
            },
        );
        w.write_all(HEADER.as_bytes())?;
        serde_json::to_writer(&mut w, meta)?;
        w.write_all(b"\n")?;
        let mut line = Vec::with_capacity(256);
        for e in entries {
            encode_entry(e, &mut line);
            w.write_all(&line)?;
        }
        let mut hw = w.into_inner().map_err(|e| e.into_error())?;
        let sum = hw.hasher.finalize().to_hex();
        hw.file
            .write_all(format!("end\t{}\t{sum}\n", entries.len()).as_bytes())?;
        hw.file.sync_all()
    })();
    if let Err(e) = written {
        unlink_tmp();
        return Err(Error::Io {
            op: "write manifest",
            path: tmp_shown,
            cause: e,
        });
    }
    // Numbers of manifests set aside as damaged are not given again either: journal records
    // and people may still name them.
    let set_aside = numbers_in(
        store,
        &Path::new(crate::doctor::DAMAGED_DIR).join(SNAPSHOTS_DIR),
    )?;
    let mut n = numbers(store)?
        .into_iter()
        .chain(set_aside)
        .max()
        .unwrap_or(0)
        + 1;
    loop {
        match nix::fcntl::renameat2(
            store.dir(),
            &tmp,
            store.dir(),
            &manifest_rel(n),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => break,
            // Another process took this number at the same moment.
            Err(Errno::EEXIST) => n += 1,
            Err(e) => {
                unlink_tmp();
                return Err(Error::io(
                    "store manifest",
                    &dir_shown.join(n.to_string()),
                    e,
                ));
            }
        }
    }
    if let Ok(d) = nix::fcntl::openat(
        store.dir(),
        SNAPSHOTS_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        nix::unistd::fsync(&d).map_err(|e| Error::io("fsync", &dir_shown, e))?;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Reading

fn bad_header(shown: &Path, head: &[u8]) -> Error {
    Error::Format {
        path: shown.to_owned(),
        what: format!(
            "not a manifest this saferoot can read (first line {:?}, expected {:?})",
            String::from_utf8_lossy(head).trim_end(),
            HEADER.trim_end()
        ),
    }
}

fn parse_meta(line: &[u8], shown: &Path) -> Result<Meta> {
    let body = line.strip_suffix(b"\n").ok_or_else(|| torn(shown))?;
    serde_json::from_slice(body).map_err(|e| Error::Format {
        path: shown.to_owned(),
        what: format!("bad manifest header: {e}"),
    })
}

fn torn(shown: &Path) -> Error {
    Error::Format {
        path: shown.to_owned(),
        what: "incomplete or damaged manifest (missing footer or checksum mismatch); refusing it"
            .into(),
    }
}

/// Parse and verify a whole manifest.
fn parse(buf: &[u8], shown: &Path) -> Result<(Meta, Vec<ManifestEntry>)> {
    if !buf.starts_with(HEADER.as_bytes()) {
        let first = buf.split(|&c| c == b'\n').next().unwrap_or_default();
        return Err(bad_header(shown, first));
    }
    // The footer is the last line; everything before it is checksummed.
    let body_end = buf
        .strip_suffix(b"\n")
        .and_then(|b| b.iter().rposition(|&c| c == b'\n'))
        .map(|i| i + 1)
        .ok_or_else(|| torn(shown))?;
    let (body, footer) = buf.split_at(body_end);
    let footer = footer.strip_suffix(b"\n").ok_or_else(|| torn(shown))?;
    let mut f = footer.split(|&c| c == b'\t');
    let (Some(b"end"), Some(count), Some(sum), None) = (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(torn(shown));
    };
    if blake3::hash(body).to_hex().as_bytes() != sum {
        return Err(torn(shown));
    }
    let count: usize = std::str::from_utf8(count)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| torn(shown))?;
    let rest = &body[HEADER.len()..];
    let meta_end = rest
        .iter()
        .position(|&c| c == b'\n')
        .ok_or_else(|| torn(shown))?;
    let meta = parse_meta(&rest[..=meta_end], shown)?;
    // Ends with a newline (the footer starts after one), or is empty.
    let lines = &rest[meta_end + 1..];
    let mut entries = Vec::with_capacity(count.min(lines.len() / 16));
    if let Some(lines) = lines.strip_suffix(b"\n") {
        for (i, line) in lines.split(|&c| c == b'\n').enumerate() {
            entries.push(decode_entry(line).ok_or_else(|| Error::Format {
                path: shown.to_owned(),
                what: format!("bad manifest entry on line {}", i + 3),
            })?);
        }
    }
    if entries.len() != count || meta.entries != count as u64 {
        return Err(Error::Format {
            path: shown.to_owned(),
            what: format!(
                "manifest lists {} entries but says {count} (header: {})",
                entries.len(),
                meta.entries
            ),
        });
    }
    Ok((meta, entries))
}

fn decode_entry(line: &[u8]) -> Option<ManifestEntry> {
    let mut f = line.splitn(6, |&c| c == b'\t');
    let kind = kind_of_letter(f.next()?)?;
    let num = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let mode = u32::from_str_radix(&num(f.next()?)?, 8).ok()?;
    let size: u64 = num(f.next()?)?.parse().ok()?;
    let mtime_ns: i64 = num(f.next()?)?.parse().ok()?;
    let data = f.next()?;
    let path = PathBuf::from(std::ffi::OsString::from_vec(unescape(f.next()?)?));
    check_relative(&path).ok()?;
    if Kind::from_mode(mode) != Some(kind) {
        return None;
    }
    let (blake3, target) = match (kind, data) {
        (Kind::File, b"-") => (None, None),
        (Kind::File, h) => {
            if h.len() != 64 || !h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            (Some(num(h)?), None)
        }
        (Kind::Symlink, t) => (
            None,
            Some(PathBuf::from(std::ffi::OsString::from_vec(unescape(t)?))),
        ),
        (_, b"-") => (None, None),
        _ => return None,
    };
    Some(ManifestEntry {
        path,
        kind,
        mode,
        size,
        mtime_ns,
        blake3,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::Duration;

    fn setup() -> (tempfile::TempDir, OwnedFd, Store) {
        let t = tempfile::tempdir().unwrap();
        let fd: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let s = Store::open_or_create(fd.as_fd(), t.path()).unwrap();
        (t, fd, s)
    }

    fn reopen(t: &tempfile::TempDir, fd: &OwnedFd) -> Store {
        Store::open_existing(fd.as_fd(), t.path()).unwrap().unwrap()
    }

    /// Let the files just written age past the racy window, so their hashes are cached.
    fn settle() {
        std::thread::sleep(Duration::from_nanos(RACY_NS as u64 + 50_000_000));
    }

    fn by_path(m: &Manifest) -> std::collections::BTreeMap<PathBuf, ManifestEntry> {
        m.entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    }

    fn odd_name() -> std::ffi::OsString {
        std::ffi::OsString::from_vec(b"tab\there\nnl\\bs\xff\xfe \xc3\xa9".to_vec())
    }

    #[test]
    fn records_every_kind_mode_and_target() {
        let (t, _fd, s) = setup();
        let p = t.path();
        std::fs::create_dir_all(p.join("src/deep")).unwrap();
        std::fs::write(p.join("src/main.rs"), b"fn main() {}\n").unwrap();
        std::fs::set_permissions(
            p.join("src/main.rs"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::fs::create_dir(p.join("empty")).unwrap();
        std::fs::set_permissions(p.join("empty"), std::fs::Permissions::from_mode(0o705)).unwrap();
        symlink("src/main.rs", p.join("link")).unwrap();
        symlink(odd_name(), p.join("weird-link")).unwrap();
        nix::unistd::mkfifo(&p.join("pipe"), Mode::from_bits_truncate(0o640)).unwrap();
        std::fs::write(p.join(odd_name()), b"odd").unwrap();
        std::fs::write(p.join("zero"), b"").unwrap();

        let info = take(&s, "manual").unwrap();
        assert_eq!(info.n, 1);
        assert_eq!(info.reason, "manual");
        assert_eq!(info.entries, 9);
        assert_eq!(info.bytes, 13 + 3);
        assert_eq!(info.hashed_files, 3);
        assert_eq!(info.hashed_bytes, 16);

        let m = load(&s, 1).unwrap();
        assert_eq!((m.n, m.t), (1, info.t));
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.clone()).collect();
        let mut want: Vec<PathBuf> = [
            "empty",
            "link",
            "pipe",
            "src",
            "src/deep",
            "src/main.rs",
            "weird-link",
            "zero",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        want.insert(6, PathBuf::from(odd_name()));
        assert_eq!(
            paths, want,
            "depth first, names sorted bytewise, no .saferoot"
        );

        let e = by_path(&m);
        let main = &e[Path::new("src/main.rs")];
        assert_eq!(main.kind, Kind::File);
        assert_eq!(main.mode, libc::S_IFREG | 0o751);
        assert_eq!(main.size, 13);
        assert_eq!(
            main.blake3.as_deref(),
            Some(&*blake3::hash(b"fn main() {}\n").to_hex())
        );
        let meta = std::fs::metadata(p.join("src/main.rs")).unwrap();
        assert_eq!(
            main.mtime_ns,
            std::os::unix::fs::MetadataExt::mtime(&meta) * 1_000_000_000
                + std::os::unix::fs::MetadataExt::mtime_nsec(&meta)
        );
        assert_eq!(e[Path::new("empty")].kind, Kind::Dir);
        assert_eq!(e[Path::new("empty")].mode, libc::S_IFDIR | 0o705);
        assert_eq!(e[Path::new("link")].kind, Kind::Symlink);
        assert_eq!(
            e[Path::new("link")].target.as_deref(),
            Some(Path::new("src/main.rs"))
        );
        assert_eq!(e[Path::new("link")].blake3, None);
        assert_eq!(
            e[Path::new("weird-link")].target.as_deref(),
            Some(Path::new(&odd_name()))
        );
        assert_eq!(e[Path::new("pipe")].kind, Kind::Fifo);
        assert_eq!(e[Path::new("pipe")].mode, libc::S_IFIFO | 0o640);
        assert_eq!(
            e[Path::new(&odd_name())].blake3.as_deref(),
            Some(&*blake3::hash(b"odd").to_hex())
        );
        assert_eq!(
            e[Path::new("zero")].blake3.as_deref(),
            Some(&*blake3::hash(b"").to_hex())
        );

        // The escaped lines stay one line each, and are valid UTF-8.
        let raw = std::fs::read(p.join(".saferoot/snapshots/1")).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert_eq!(text.lines().count(), 2 + 9 + 1);
        assert!(text.contains("\tsrc/main.rs\n"), "{text}");
        assert!(
            text.contains("\ttab\\x09here\\x0anl\\\\bs\\xff\\xfe é\n"),
            "{text}"
        );

        // Journaled after the manifest, with the number and the reason.
        let (recs, _) = crate::journal::read(s.dir(), s.dir_path()).unwrap();
        let r = recs.last().unwrap();
        assert_eq!(r.op, Op::Snapshot);
        assert_eq!(r.snapshot, Some(1));
        assert_eq!(r.note.as_deref(), Some("manual"));
        assert_eq!(r.pid, std::process::id());
        assert_eq!(r.comm, "saferoot");
        assert!(r.t >= info.t);
    }

    #[test]
    fn escaping_round_trips_any_bytes() {
        let all: Vec<u8> = (0..=255u8).chain(b"\\x41\\\\".iter().copied()).collect();
        let mut out = Vec::new();
        escape(&all, &mut out);
        assert!(std::str::from_utf8(&out).is_ok());
        assert!(!out.contains(&b'\t') && !out.contains(&b'\n'));
        assert_eq!(unescape(&out).unwrap(), all);
        assert_eq!(unescape(b"a\\"), None);
        assert_eq!(unescape(b"a\\q"), None);
        assert_eq!(unescape(b"a\\x4"), None);
    }

    #[test]
    fn scratch_trees_are_left_out() {
        let (t, _fd, s) = setup();
        let p = t.path();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::write(p.join("target/debug/app"), b"binary").unwrap();
        std::fs::create_dir_all(p.join("web/node_modules/x")).unwrap();
        std::fs::write(p.join("web/node_modules/x/i.js"), b"js").unwrap();
        std::fs::create_dir_all(p.join("src/target")).unwrap();
        std::fs::write(p.join("src/target/kept"), b"kept").unwrap();
        let info = take(&s, "manual").unwrap();
        let paths: Vec<_> = load(&s, info.n)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.path)
            .collect();
        let want: Vec<PathBuf> = ["src", "src/target", "src/target/kept", "web"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(paths, want);
        assert_eq!(info.hashed_files, 1);
        std::fs::write(s.dir_path().join("config.toml"), "scratch = [\"src/\"]\n").unwrap();
        let info = take(&s, "manual").unwrap();
        assert_eq!(
            info.entries, 7,
            "target/ and web/node_modules/ are versioned now"
        );
    }

    #[test]
    fn list_numbers_and_empty_tree() {
        let (_t, _fd, s) = setup();
        assert!(list(&s).unwrap().is_empty());
        let a = take(&s, "mount").unwrap();
        let b = take(&s, "umount").unwrap();
        assert_eq!((a.entries, a.bytes), (0, 0));
        assert_eq!(load(&s, 1).unwrap().entries, vec![]);
        assert_eq!(list(&s).unwrap(), vec![a, b.clone()]);
        // Numbers follow the highest present, whatever else is in the directory.
        std::fs::write(s.dir_path().join("snapshots/notes"), b"x").unwrap();
        std::fs::write(s.dir_path().join("snapshots/007"), b"x").unwrap();
        let c = take(&s, "manual").unwrap();
        assert_eq!(c.n, 3);
        assert_eq!(list(&s).unwrap().len(), 3);
        assert!(c.t > b.t);
        let e = load(&s, 4).unwrap_err().to_string();
        assert_eq!(e, "no snapshot 4; `saferoot snapshots` lists them");
    }

    #[test]
    fn torn_or_damaged_manifest_is_refused() {
        let (t, _fd, s) = setup();
        for i in 0..20 {
            std::fs::write(t.path().join(format!("f{i}")), format!("content {i}")).unwrap();
        }
        take(&s, "manual").unwrap();
        let path = s.dir_path().join("snapshots/1");
        let good = std::fs::read(&path).unwrap();
        assert_eq!(load(&s, 1).unwrap().entries.len(), 20);

        // Cut anywhere: refused.
        for cut in [
            good.len() - 1,
            good.len() - 30,
            good.len() / 2,
            HEADER.len() + 3,
            0,
        ] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let e = load(&s, 1).unwrap_err().to_string();
            assert!(
                e.contains("incomplete or damaged manifest") || e.contains("not a manifest"),
                "cut at {cut}: {e}"
            );
        }
        // One byte changed in an entry: refused.
        let mut bad = good.clone();
        let i = good.len() / 2;
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        std::fs::write(&path, &bad).unwrap();
        assert!(load(&s, 1)
            .unwrap_err()
            .to_string()
            .contains("incomplete or damaged manifest"));
        // Another version: refused, saying so.
        let mut v2 = good.clone();
        v2[HEADER.len() - 2] = b'2';
        std::fs::write(&path, &v2).unwrap();
        let e = load(&s, 1).unwrap_err().to_string();
        assert!(e.contains("not a manifest this saferoot can read"), "{e}");
        // A damaged manifest is left out of the list.
        std::fs::write(&path, b"garbage").unwrap();
        assert!(list(&s).unwrap().is_empty());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(list(&s).unwrap().len(), 1);
    }

    #[test]
    fn incremental_through_the_persisted_hash_cache() {
        let (t, fd, s) = setup();
        let p = t.path();
        std::fs::create_dir(p.join("d")).unwrap();
        for i in 0..50 {
            std::fs::write(p.join(format!("d/f{i}")), format!("file number {i:04}")).unwrap();
        }
        std::fs::write(p.join("big"), vec![7u8; 1 << 20]).unwrap();
        std::fs::hard_link(p.join("big"), p.join("big-link")).unwrap();
        settle();
        let first = take(&s, "manual").unwrap();
        // The hard link is read once.
        assert_eq!(first.hashed_files, 51);
        assert_eq!(first.hashed_bytes, 50 * 16 + (1 << 20));

        let second = take(&s, "manual").unwrap();
        assert_eq!((second.hashed_files, second.hashed_bytes), (0, 0));
        assert_eq!(load(&s, 1).unwrap().entries, load(&s, 2).unwrap().entries);

        // Another process (a new Store) finds the cache on disk.
        drop(s);
        let s = reopen(&t, &fd);
        let third = take(&s, "mount").unwrap();
        assert_eq!((third.hashed_files, third.hashed_bytes), (0, 0));

        // Same size, new content: re-hashed, and only that file.
        std::fs::write(p.join("d/f7"), b"FILE NUMBER 0007").unwrap();
        std::fs::write(p.join("d/f8"), b"file number 0008").unwrap(); // same bytes again
        std::fs::set_permissions(p.join("d/f9"), std::fs::Permissions::from_mode(0o600)).unwrap();
        settle();
        let fourth = take(&s, "manual").unwrap();
        assert_eq!(
            fourth.hashed_files, 3,
            "rewritten, rewritten, chmod (ctime)"
        );
        let m = by_path(&load(&s, fourth.n).unwrap());
        assert_eq!(
            m[Path::new("d/f7")].blake3.as_deref(),
            Some(&*blake3::hash(b"FILE NUMBER 0007").to_hex())
        );
        assert_eq!(m[Path::new("d/f9")].mode & 0o7777, 0o600);
        let fifth = take(&s, "manual").unwrap();
        assert_eq!(fifth.hashed_files, 0);

        // A damaged cache is just empty: everything is read again, nothing fails.
        std::fs::write(s.dir_path().join("hashcache"), b"saferoot-hashcache 1\nxx").unwrap();
        let s = reopen(&t, &fd);
        assert_eq!(take(&s, "manual").unwrap().hashed_files, 51);
        // Entries of deleted files are dropped when the cache is saved.
        std::fs::remove_dir_all(p.join("d")).unwrap();
        take(&s, "manual").unwrap();
        let saved = crate::hashcache::load(s.dir());
        assert_eq!(saved.len(), 1);
    }

    #[test]
    fn just_written_files_are_hashed_again_rather_than_trusted() {
        let (t, _fd, s) = setup();
        std::fs::write(t.path().join("hot"), b"1").unwrap();
        let a = take(&s, "manual").unwrap();
        assert_eq!(a.hashed_files, 1);
        // Within the racy window the hash is not cached: a write in the same clock tick
        // could have left size, mtime and ctime unchanged.
        let b = take(&s, "manual").unwrap();
        assert_eq!(b.hashed_files, 1);
        settle();
        take(&s, "manual").unwrap();
        assert_eq!(take(&s, "manual").unwrap().hashed_files, 0);
    }
}
