//! Persistence of the store's hash cache: `.saferoot/hashcache`, so that a snapshot taken by
//! another process (the next mount, a `saferoot snapshot`) still does not re-read unchanged
//! files.
//!
//! Format (version 1), little-endian:
//!
//! ```text
//! "saferoot-hashcache 1\n"
//! count: u64
//! count × { dev: u64, ino: u64, size: i64, mtime_ns: i64, ctime_ns: i64, blake3: [u8; 32] }
//! blake3 of every byte above: [u8; 32]
//! ```
//!
//! The cache is only an optimization, and every entry is checked against the file's current
//! stat before use, so a missing, foreign-version, truncated or damaged file loads as an empty
//! cache, and the file is replaced by rename without fsync (a crash can at worst lose it).
//! Device numbers may change across reboots on some filesystems; entries then simply miss.
//!
//! What this module does not do: decide what is worth keeping (the snapshot walk passes the
//! files it saw: anything else is gone or changed), or validate entries (the store does, on
//! lookup).

use crate::store::{CacheKey, Store, TMP_DIR};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::path::Path;

pub const HASHCACHE_FILE: &str = "hashcache";
const MAGIC: &[u8] = b"saferoot-hashcache 1\n";
const RECORD: usize = 8 * 5 + 32;

/// The in-memory cache: blake3 (hex) of files by (dev, ino), valid while the key is unchanged.
pub(crate) type Map = HashMap<(u64, u64), (CacheKey, String)>;

/// Load the cache of the store directory `dir`; empty if absent or unreadable.
pub(crate) fn load(dir: BorrowedFd<'_>) -> Map {
    let Ok(fd) = nix::fcntl::openat(
        dir,
        HASHCACHE_FILE,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return Map::new();
    };
    let mut buf = Vec::new();
    if std::fs::File::from(fd).read_to_end(&mut buf).is_err() {
        return Map::new();
    }
    decode(&buf).unwrap_or_default()
}

/// Replace the saved cache with the store's in-memory cache restricted to the files in `keep`
/// (the in-memory cache is pruned the same way). `learned` says whether the caller added
/// hashes; when it did not, nothing was pruned and the file exists, the saved cache already
/// holds everything useful and is left alone. Returns the number of entries in memory.
pub(crate) fn save(store: &Store, keep: &HashSet<(u64, u64)>, learned: bool) -> Result<usize> {
    let bytes = {
        let mut map = store.hash_cache().lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|k, _| keep.contains(k));
        if !learned
            && map.len() == before
            && nix::sys::stat::fstatat(
                store.dir(),
                HASHCACHE_FILE,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
        {
            return Ok(map.len());
        }
        encode(&map)
    };
    let count = (bytes.len() - MAGIC.len() - 8 - 32) / RECORD;
    match nix::sys::stat::mkdirat(store.dir(), TMP_DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(Error::io("mkdir", &store.dir_path().join(TMP_DIR), e)),
    }
    let tmp = Path::new(TMP_DIR).join(format!(
        "hashcache.{}.{}",
        std::process::id(),
        crate::now_ns()
    ));
    let shown = store.dir_path().join(HASHCACHE_FILE);
    let fd = nix::fcntl::openat(
        store.dir(),
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &store.dir_path().join(&tmp), e))?;
    let placed = std::fs::File::from(fd)
        .write_all(&bytes)
        .map_err(|e| Error::Io {
            op: "write hash cache",
            path: shown.clone(),
            cause: e,
        })
        .and_then(|()| {
            nix::fcntl::renameat(store.dir(), &tmp, store.dir(), HASHCACHE_FILE)
                .map_err(|e| Error::io("replace hash cache", &shown, e))
        });
    if placed.is_err() {
        let _ = nix::unistd::unlinkat(store.dir(), &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    placed.map(|()| count)
}

fn encode(map: &Map) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + map.len() * RECORD + 32);
    out.extend_from_slice(MAGIC);
    let valid: Vec<_> = map
        .iter()
        .filter_map(|(k, (key, hex))| Some((k, key, decode_hex(hex)?)))
        .collect();
    out.extend_from_slice(&(valid.len() as u64).to_le_bytes());
    for ((dev, ino), key, hash) in valid {
        out.extend_from_slice(&dev.to_le_bytes());
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(&key.size.to_le_bytes());
        out.extend_from_slice(&key.mtime_ns.to_le_bytes());
        out.extend_from_slice(&key.ctime_ns.to_le_bytes());
        out.extend_from_slice(&hash);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn decode(buf: &[u8]) -> Option<Map> {
    let body = buf.get(..buf.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != &buf[body.len()..] {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    let count = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let records = &rest[8..];
    if records.len() as u64 != count.checked_mul(RECORD as u64)? {
        return None;
    }
    let u =
        |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let mut map = Map::with_capacity(count as usize);
    for r in records.chunks_exact(RECORD) {
        let key = CacheKey {
            size: u(r, 2) as i64,
            mtime_ns: u(r, 3) as i64,
            ctime_ns: u(r, 4) as i64,
        };
        let hex = encode_hex(&r[40..72]);
        map.insert((u(r, 0), u(r, 1)), (key, hex));
    }
    Some(map)
}

/// Hex to bytes (lowercase, as the store writes it). Hand-written: `blake3::Hash::from_hex`
/// was a tenth of the time of an unchanged snapshot.
fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let h = hex.as_bytes();
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = val(h[2 * i])? << 4 | val(h[2 * i + 1])?;
    }
    Some(out)
}

fn encode_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(DIGITS[usize::from(c >> 4)] as char);
        s.push(DIGITS[usize::from(c & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Map {
        let mut m = Map::new();
        for i in 0..5u64 {
            m.insert(
                (7, 100 + i),
                (
                    CacheKey {
                        size: i as i64,
                        mtime_ns: -5 + i as i64,
                        ctime_ns: 1_700_000_000_000_000_000 + i as i64,
                    },
                    blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                ),
            );
        }
        m
    }

    #[test]
    fn hex_matches_blake3() {
        let h = blake3::hash(b"x");
        assert_eq!(encode_hex(h.as_bytes()), h.to_hex().as_str());
        assert_eq!(decode_hex(h.to_hex().as_str()), Some(*h.as_bytes()));
        assert_eq!(decode_hex("00"), None);
        assert_eq!(decode_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode(&encode(&Map::new())), Some(Map::new()));
    }

    #[test]
    fn damage_gives_nothing() {
        let b = encode(&sample());
        assert_eq!(decode(&b[..b.len() - 1]), None);
        assert_eq!(decode(&b[..10]), None);
        assert_eq!(decode(b""), None);
        let mut flipped = b.clone();
        flipped[MAGIC.len() + 20] ^= 1;
        assert_eq!(decode(&flipped), None);
        let mut other = b.clone();
        other[MAGIC.len() - 2] = b'2';
        assert_eq!(decode(&other), None);
    }
}
