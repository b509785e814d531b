//! saferoot's store: the trash, the blake3 object store and index, the append-only journal,
//! time resolution, and restore planning and execution.
//!
//! Everything here works on a plain directory through file descriptors (`*at()` calls on the
//! project directory and on its `.saferoot/` store), with or without a FUSE mount in front of it.
//! This crate knows nothing about FUSE, Landlock or the command line.

pub mod config;
pub mod denials;
pub mod doctor;
pub mod gc;
mod hashcache;
pub mod index;
pub mod inflight;
pub mod journal;
pub mod manifest;
pub mod progress;
pub mod recover;
pub mod relpath;
pub mod restore;
pub mod store;
pub mod time;

pub use journal::{Journal, Kind, Op, Record};
pub use store::Store;

use std::path::{Path, PathBuf};

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Errors name the operation and the path they happened on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message and deliberately not named `source` (thiserror would make
    // it the error source, and error-chain printers would repeat it).
    #[error("{op} {}: {}", path.display(), strip_os_error(cause))]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(op: &'static str, path: &Path, errno: nix::errno::Errno) -> Error {
        Error::Io {
            op,
            path: path.to_owned(),
            cause: std::io::Error::from_raw_os_error(errno as i32),
        }
    }

    /// The errno to hand back to a filesystem caller when this error stops an operation.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { cause, .. } => cause.raw_os_error().unwrap_or(libc::EIO),
            Error::Format { .. } => libc::EIO,
            Error::Invalid(_) => libc::EINVAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "No such file or directory (os error 2)" → "No such file or directory".
pub fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Current UTC time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs() as i64 * 1_000_000_000 + d.subsec_nanos() as i64
}
