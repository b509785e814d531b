//! The daemon's control channel: an abstract Unix socket named after the project directory.
//!
//! Abstract, not a file: the sandbox's Landlock domain is scoped against abstract sockets
//! created outside it (ABI 6), so an agent cannot connect and ask the daemon to unmount or hand
//! over the real directory. The daemon also checks the peer's uid (root or its own).
//!
//! Requests and replies are single JSON lines. The reply to `fd` carries the daemon's
//! descriptor on the real project directory (SCM_RIGHTS): offline commands (`log`, `restore`)
//! then work on exactly the same code path whether or not the directory is mounted.
//!
//! What this module does not do: act on requests (see daemon.rs).

use anyhow::{anyhow, Context, Result};
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Send the descriptor of the real project directory.
    Fd,
    /// Drop the kernel's cached names/attributes for these project-relative paths, each the
    /// hex of its bytes (a path need not be UTF-8). Sent in chunks by [`invalidate`].
    Invalidate {
        #[serde(default)]
        paths: Vec<String>,
    },
    /// Unmount and exit. `lazy`: detach even if busy.
    Umount {
        #[serde(default)]
        lazy: bool,
    },
    /// A `saferoot run` process (the caller) starts a session. Refused while another session is
    /// live, unless `join`.
    BeginSession {
        info: SessionInfo,
        join: bool,
    },
    /// The session of `run` process `pid` ended.
    EndSession {
        pid: u32,
    },
    /// Collect old history (`saferoot gc`); overrides of the configured policy as typed.
    Gc {
        dry_run: bool,
        #[serde(default)]
        keep_within: Option<String>,
        #[serde(default)]
        max_size: Option<String>,
    },
    /// Delete the kept bytes of these project-relative paths for good (`trash purge`), each
    /// the hex of its bytes.
    Purge {
        paths: Vec<String>,
        dry_run: bool,
    },
}

/// A live `saferoot run` session, as the daemon knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The `run` process.
    pub pid: u32,
    /// Its start time in clock ticks after boot (tells a recycled pid apart).
    pub start_ticks: u64,
    /// The session id: the time of its `run` journal record (ns since the epoch).
    pub session: i64,
    /// The command it runs.
    pub cmd: String,
    /// Whether the agent runs inside the sandbox.
    pub sandboxed: bool,
    /// The profile in force, if sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What the sandbox enforces on this kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ns: Option<i64>,
    /// Live `run` sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionInfo>,
    /// What a `Gc` request did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<saferoot_snapshots::gc::Report>,
    /// What a `Purge` request did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge: Option<saferoot_snapshots::gc::PurgeReport>,
}

/// The abstract socket name for a (canonical) project directory.
pub fn socket_name(dir: &Path) -> Vec<u8> {
    let h = blake3::hash(dir.as_os_str().as_bytes());
    format!("saferoot/{}", &h.to_hex()[..32]).into_bytes()
}

fn addr(dir: &Path) -> Result<UnixAddr> {
    UnixAddr::new_abstract(&socket_name(dir)).context("abstract socket address")
}

/// Bind the control socket; fails with EADDRINUSE if a daemon already serves `dir`.
pub fn bind(dir: &Path) -> Result<OwnedFd, nix::errno::Errno> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let a = UnixAddr::new_abstract(&socket_name(dir))?;
    socket::bind(fd.as_raw_fd(), &a)?;
    socket::listen(
        &fd,
        socket::Backlog::new(16).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(fd)
}

/// Connect to the daemon serving `dir`; `Ok(None)` if there is none.
pub fn connect(dir: &Path) -> Result<Option<OwnedFd>> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("create control socket")?;
    match socket::connect(fd.as_raw_fd(), &addr(dir)?) {
        Ok(()) => {
            // A daemon that stops answering must not hang the CLI forever (an unmount that
            // waits on a slow flush is the longest legitimate wait).
            set_timeout(&fd, std::time::Duration::from_secs(120));
            Ok(Some(fd))
        }
        Err(nix::errno::Errno::ECONNREFUSED) | Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(anyhow!("connect to saferoot daemon: {e}")),
    }
}

/// Bound how long reads and writes on `fd` may block.
pub fn set_timeout(fd: &OwnedFd, d: std::time::Duration) {
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as i64, 0);
    let _ = socket::setsockopt(fd, socket::sockopt::ReceiveTimeout, &tv);
    let _ = socket::setsockopt(fd, socket::sockopt::SendTimeout, &tv);
}

/// Send one line, optionally with a descriptor attached.
pub fn send_line(fd: &OwnedFd, line: &[u8], pass: Option<RawFd>) -> nix::Result<()> {
    let mut buf = line.to_vec();
    buf.push(b'\n');
    let iov = [IoSlice::new(&buf)];
    let fds;
    let cmsgs: Vec<ControlMessage> = match pass {
        Some(p) => {
            fds = [p];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => vec![],
    };
    let mut sent =
        socket::sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    while sent < buf.len() {
        sent += socket::send(fd.as_raw_fd(), &buf[sent..], MsgFlags::MSG_NOSIGNAL)?;
    }
    Ok(())
}

/// Receive one line (up to 1 MiB) and any descriptor that came with it.
pub fn recv_line(fd: &OwnedFd) -> nix::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut out = Vec::new();
    let mut passed = None;
    loop {
        let mut buf = [0u8; 8192];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, got) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = socket::recvmsg::<()>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut got = None;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: the kernel installed this descriptor for us.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        if got.is_none() {
                            got = Some(owned);
                        }
                    }
                }
            }
            (msg.bytes, got)
        };
        if got.is_some() {
            passed = got;
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\n") || out.len() > (1 << 20) {
            break;
        }
    }
    if out.ends_with(b"\n") {
        out.pop();
    }
    Ok((out, passed))
}

/// Is a daemon serving `dir`? Its status if so.
pub fn status(dir: &Path) -> Result<Option<Reply>> {
    Ok(call(dir, &Request::Status)?.map(|(rep, _)| rep))
}

/// Send a request to the daemon serving `dir` and read its reply. `Ok(None)` if no daemon.
///
/// A daemon that is exiting (unmounted, or killed) can still accept a connection and then
/// reset or close it unanswered: such a failure is retried once, a moment later, when the
/// socket is gone or answers.
pub fn call(dir: &Path, req: &Request) -> Result<Option<(Reply, Option<OwnedFd>)>> {
    match call_once(dir, req, None) {
        Err(e) if e.downcast_ref::<Unanswered>().is_some() => {
            std::thread::sleep(std::time::Duration::from_millis(300));
            call_once(dir, req, None)
        }
        r => r,
    }
}

/// [`call`] for a request that may take long (a `gc` of a large store): waits up to a day,
/// and is not sent twice.
pub fn call_patient(dir: &Path, req: &Request) -> Result<Option<Reply>> {
    Ok(call_once(dir, req, Some(std::time::Duration::from_secs(86_400)))?.map(|(r, _)| r))
}

/// The daemon accepted the connection but did not answer.
#[derive(Debug)]
struct Unanswered(String);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unanswered {}

fn call_once(
    dir: &Path,
    req: &Request,
    timeout: Option<std::time::Duration>,
) -> Result<Option<(Reply, Option<OwnedFd>)>> {
    let Some(fd) = connect(dir)? else {
        return Ok(None);
    };
    if let Some(t) = timeout {
        set_timeout(&fd, t);
    }
    let line = serde_json::to_vec(req)?;
    match send_line(&fd, &line, None) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => {
            return Err(Unanswered("the saferoot daemon closed the connection".into()).into())
        }
        Err(e) => return Err(anyhow!("send to saferoot daemon: {e}")),
    }
    let (reply, passed) = match recv_line(&fd) {
        Ok(x) => x,
        Err(nix::errno::Errno::ECONNRESET) => {
            return Err(Unanswered("the saferoot daemon reset the connection".into()).into())
        }
        Err(e) => return Err(anyhow!("read from saferoot daemon: {e}")),
    };
    if reply.is_empty() {
        let peer = socket::getsockopt(&fd, socket::sockopt::PeerCredentials)
            .map(|c| c.pid())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{peer}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        // A daemon that died has no command line left (a zombie, or gone): say so.
        let who = if cmdline.is_empty() {
            format!("pid {peer}, which has exited")
        } else {
            format!("pid {peer}: {cmdline}")
        };
        return Err(Unanswered(format!(
            "the saferoot daemon ({who}) closed the connection without answering"
        ))
        .into());
    }
    let reply: Reply = serde_json::from_slice(&reply).context("parse daemon reply")?;
    Ok(Some((reply, passed)))
}

/// Paths per `Invalidate` request: far below the 1 MiB a request line may take.
const INVALIDATE_CHUNK: usize = 1000;

/// Tell the daemon serving `dir` (if any) that `paths` changed behind the kernel's back, so
/// that the mount does not show what it cached of them. An error means the mount may show
/// stale names or attributes until they expire (the entry TTL) or it is mounted again.
pub fn invalidate(dir: &Path, paths: &[PathBuf]) -> Result<()> {
    for chunk in paths.chunks(INVALIDATE_CHUNK) {
        let hex = chunk.iter().map(|p| path_to_hex(p)).collect();
        match call(dir, &Request::Invalidate { paths: hex })? {
            Some((rep, _)) if !rep.ok => anyhow::bail!(
                "the daemon refused to invalidate its cache: {}",
                rep.error.unwrap_or_default()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// A path as the hex of its bytes (how [`invalidate`] sends paths that need not be UTF-8).
pub fn path_to_hex(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The inverse of [`path_to_hex`]; `None` for text that is not even-length hex.
pub fn path_from_hex(h: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    if h.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect();
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes?)))
}

#[cfg(test)]
mod invalidate_tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn paths_survive_the_hex_encoding_whatever_their_bytes() {
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xe9/new\nline \xff.txt"));
        let hex = path_to_hex(&p);
        assert_eq!(hex, "636166e92f6e65770a6c696e6520ff2e747874");
        assert_eq!(path_from_hex(&hex), Some(p));
        assert_eq!(path_from_hex("6"), None);
        assert_eq!(path_from_hex("zz"), None);
        assert_eq!(path_from_hex(""), Some(PathBuf::new()));
    }
}
