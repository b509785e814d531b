//! The blake3 index of trash items: `.saferoot/index`, one JSON line per regular file in the
//! trash, `{"trash": "<path relative to the store>", "blake3": "<hex>", "size": N}`.
//!
//! Hashing is kept off the request path: the daemon hands trash paths to an [`Indexer`] thread,
//! which hashes and appends. If the daemon dies first, [`reindex`] (run at the next mount) walks
//! the trash and indexes whatever the index does not know: the trash is the source of truth,
//! the index only a way to find bytes by content.

use crate::{relpath, store::TRASH_DIR, Error, Result, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

pub const INDEX_FILE: &str = "index";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    #[serde(with = "relpath")]
    pub trash: PathBuf,
    pub blake3: String,
    pub size: u64,
}

fn open_index(store: &Store) -> Result<std::fs::File> {
    let fd = nix::fcntl::openat(
        store.dir(),
        INDEX_FILE,
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_APPEND
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("open index", &store.dir_path().join(INDEX_FILE), e))?;
    Ok(std::fs::File::from(fd))
}

/// Hash one trash item (regular files only; others return `Ok(None)`).
pub fn hash_trash_item(store: &Store, rel: &Path) -> Result<Option<Entry>> {
    let fd = match nix::fcntl::openat(
        store.dir(),
        rel,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A symlink (ELOOP), or gone: nothing to hash.
        Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::io("open trash item", &store.dir_path().join(rel), e)),
    };
    let st = nix::sys::stat::fstat(fd.as_fd())
        .map_err(|e| Error::io("stat trash item", &store.dir_path().join(rel), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let h = crate::store::hash_fd(fd.as_fd())
        .map_err(|e| Error::io("hash trash item", &store.dir_path().join(rel), e))?;
    Ok(Some(Entry {
        trash: rel.to_owned(),
        blake3: h.to_hex().to_string(),
        size: st.st_size as u64,
    }))
}

fn append(f: &mut std::fs::File, e: &Entry, store: &Store) -> Result<()> {
    let mut line = serde_json::to_vec(e).expect("index entries serialize");
    line.push(b'\n');
    f.write_all(&line).map_err(|err| Error::Io {
        op: "append to index",
        path: store.dir_path().join(INDEX_FILE),
        cause: err,
    })
}

/// The store's index handle, locked, opened here on first use.
fn locked_handle(store: &Store) -> Result<std::sync::MutexGuard<'_, Option<std::fs::File>>> {
    let mut held = store
        .index_handle()
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if held.is_none() {
        *held = Some(open_index(store)?);
    }
    Ok(held)
}

/// Append `e` through the store's shared handle, under its lock, unless its trash item is
/// gone: hashing happens outside the lock, and a `gc` or `trash purge` that removed the item
/// meanwhile has pruned the index already (it removes items before it takes the lock).
fn append_shared(store: &Store, e: &Entry) -> Result<()> {
    let mut held = locked_handle(store)?;
    let present = nix::sys::stat::fstatat(
        store.dir(),
        &e.trash,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok();
    match held.as_mut() {
        Some(f) if present => append(f, e, store),
        _ => Ok(()),
    }
}

/// Every entry of the index (lines that do not parse, e.g. a torn last line, are skipped).
pub fn read(store: &Store) -> Result<Vec<Entry>> {
    let fd = match nix::fcntl::openat(
        store.dir(),
        INDEX_FILE,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                "open index",
                &store.dir_path().join(INDEX_FILE),
                e,
            ))
        }
    };
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Io {
            op: "read index",
            path: store.dir_path().join(INDEX_FILE),
            cause: e,
        })?;
    Ok(buf
        .split(|&c| c == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

/// Drop the entries of trash items that are gone (collected by `gc` or purged), rewriting
/// the index (through a temporary file and a rename) only if there are any. Holds the store's
/// index lock throughout, so a daemon's [`Indexer`] appending meanwhile waits, then appends to
/// the new file. Returns how many were dropped.
pub fn prune(store: &Store) -> Result<usize> {
    let mut held = store
        .index_handle()
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entries = read(store)?;
    let (keep, gone): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
        nix::sys::stat::fstatat(
            store.dir(),
            &e.trash,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    });
    if gone.is_empty() {
        return Ok(0);
    }
    let path = store.dir_path().join(INDEX_FILE);
    let tmp = Path::new(crate::store::TMP_DIR).join(format!("index.new.{}", std::process::id()));
    let fd = nix::fcntl::openat(
        store.dir(),
        &tmp,
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_TRUNC
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &store.dir_path().join(&tmp), e))?;
    let mut f = std::fs::File::from(fd);
    let written = keep
        .iter()
        .try_for_each(|e| append(&mut f, e, store))
        .and_then(|()| {
            f.sync_all().map_err(|e| Error::Io {
                op: "fsync",
                path: path.clone(),
                cause: e,
            })
        })
        .and_then(|()| {
            nix::fcntl::renameat(store.dir(), &tmp, store.dir(), INDEX_FILE)
                .map_err(|e| Error::io("replace", &path, e))
        });
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(store.dir(), &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    // The old handle appends to the replaced file: the next append opens the new one.
    *held = None;
    Ok(gone.len())
}

/// Index every regular file in the trash that the index does not list yet. Returns how many
/// were added.
pub fn reindex(store: &Store) -> Result<usize> {
    let known: HashSet<PathBuf> = read(store)?.into_iter().map(|e| e.trash).collect();
    let mut added = 0;
    // The store path is reachable by name only when nothing is mounted over the project; walk
    // through /proc/self/fd so this also works from the daemon behind its own mount.
    let walk_root = PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        std::os::fd::AsRawFd::as_raw_fd(&store.dir()),
        TRASH_DIR
    ));
    for ent in walkdir::WalkDir::new(&walk_root).follow_links(false) {
        let Ok(ent) = ent else { continue };
        if !ent.file_type().is_file() {
            continue;
        }
        let Ok(sub) = ent.path().strip_prefix(&walk_root) else {
            continue;
        };
        let rel = Path::new(TRASH_DIR).join(sub);
        if known.contains(&rel) {
            continue;
        }
        if let Some(e) = hash_trash_item(store, &rel)? {
            append_shared(store, &e)?;
            added += 1;
        }
    }
    Ok(added)
}

/// A background thread that hashes trash items as they arrive.
pub struct Indexer {
    tx: Option<mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    pub fn start(store: Arc<Store>) -> Result<Indexer> {
        // Open the index now, so that a store where it cannot be written fails the mount.
        drop(locked_handle(&store)?);
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("saferoot-index".into())
            .spawn(move || {
                for rel in rx {
                    // Failures are not fatal: reindex() at the next mount catches up.
                    if let Ok(Some(e)) = hash_trash_item(&store, &rel) {
                        let _ = append_shared(&store, &e);
                    }
                }
            })
            .map_err(|e| Error::Io {
                op: "start indexer thread",
                path: PathBuf::new(),
                cause: e,
            })?;
        Ok(Indexer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue a trash item (path relative to the store) for hashing.
    pub fn queue(&self, rel: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(rel);
        }
    }

    /// Finish hashing everything queued.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::fd::OwnedFd;

    #[test]
    fn indexer_and_reindex_cover_every_trash_file_once() {
        let t = tempfile::tempdir().unwrap();
        let root: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store = Arc::new(Store::open_or_create(root.as_fd(), t.path()).unwrap());
        std::fs::write(t.path().join("a"), b"one").unwrap();
        std::fs::write(t.path().join("b"), b"two").unwrap();
        let ra = store
            .divert_to_trash(root.as_fd(), OsStr::new("a"), Path::new("a"), 5)
            .unwrap();
        let _rb = store
            .divert_to_trash(root.as_fd(), OsStr::new("b"), Path::new("b"), 5)
            .unwrap();
        let ix = Indexer::start(store.clone()).unwrap();
        ix.queue(ra.clone());
        ix.finish();
        let idx = read(&store).unwrap();
        assert_eq!(idx.len(), 1);
        assert_eq!(idx[0].blake3, blake3::hash(b"one").to_hex().to_string());
        // "b" was never queued (a crash): reindex finds it, and only it.
        assert_eq!(reindex(&store).unwrap(), 1);
        assert_eq!(reindex(&store).unwrap(), 0);
        let idx = read(&store).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx[1].size, 3);
    }
}
