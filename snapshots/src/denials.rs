//! The denial log: `.saferoot/denials.jsonl`, one JSON object per line, each an access that the
//! sandbox refused during a `saferoot run` session — by the FUSE layer (a protected path), by
//! Landlock (a path or port outside the profile) or by seccomp (a forbidden system call).
//!
//! It is advice for the user, not history of the tree: restore never reads it. Lines are
//! appended with one `write(2)` on an `O_APPEND` descriptor each, so the daemon and the `run`
//! process can both append; a torn or malformed line is skipped when reading.

use crate::{Error, Result, Store};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};

pub const DENIALS_FILE: &str = "denials.jsonl";

/// One refused access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// When it was refused (ns since the epoch).
    pub t: i64,
    /// The session: the `t` of its `run` journal record.
    pub session: i64,
    /// Who refused it: `fuse`, `landlock` or `seccomp`.
    pub by: String,
    /// What was refused: a FUSE operation (`open for writing`, `unlink`, …), a Landlock access
    /// (`fs.read_file`, `net.connect_tcp`, …) or `syscall`.
    pub access: String,
    /// Absolute path (Landlock) or project-relative path (FUSE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The system call, by name when known, else its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    pub pid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

fn open_append(store: &Store) -> Result<std::fs::File> {
    let path = store.dir_path().join(DENIALS_FILE);
    let fd = nix::fcntl::openat(
        store.dir(),
        DENIALS_FILE,
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_APPEND
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("open", &path, e))?;
    Ok(std::fs::File::from(fd))
}

/// Append `denials` to the log, one line (and one write) each.
pub fn append(store: &Store, denials: &[Denial]) -> Result<()> {
    if denials.is_empty() {
        return Ok(());
    }
    let mut f = open_append(store)?;
    for d in denials {
        let mut line = serde_json::to_vec(d).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push(b'\n');
        f.write_all(&line).map_err(|e| Error::Io {
            op: "append to",
            path: store.dir_path().join(DENIALS_FILE),
            cause: e,
        })?;
    }
    Ok(())
}

/// Every denial in the log, oldest first; lines that do not parse are skipped.
pub fn read(store: &Store) -> Result<Vec<Denial>> {
    let path = store.dir_path().join(DENIALS_FILE);
    let fd = match nix::fcntl::openat(
        store.dir(),
        DENIALS_FILE,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(std::fs::File::from(fd)).split(b'\n') {
        let line = line.map_err(|e| Error::Io {
            op: "read",
            path: path.clone(),
            cause: e,
        })?;
        if let Ok(d) = serde_json::from_slice::<Denial>(&line) {
            out.push(d);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_read_back_skipping_torn_lines() {
        let t = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(t.path()).unwrap();
        let store = Store::open_or_create(std::os::fd::AsFd::as_fd(&dir), t.path()).unwrap();
        let d = Denial {
            t: 1,
            session: 0,
            by: "fuse".into(),
            access: "open for writing".into(),
            path: Some(".git/config".into()),
            port: None,
            addr: None,
            syscall: None,
            pid: 7,
            comm: "sh".into(),
            exe: None,
        };
        append(&store, std::slice::from_ref(&d)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(store.dir_path().join(DENIALS_FILE))
            .unwrap()
            .write_all(b"{\"t\":2,\"sess")
            .unwrap();
        let e = Denial { t: 3, ..d.clone() };
        append(&store, std::slice::from_ref(&e)).unwrap();
        let got = read(&store).unwrap();
        assert_eq!(
            got,
            vec![d],
            "the torn line swallows the next line's start only"
        );
    }
}
