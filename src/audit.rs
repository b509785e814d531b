//! Which accesses the sandbox denied during a session, read from the kernel audit subsystem.
//!
//! After a sandboxed session saferoot lists every denial (the path or port, the operation and
//! the process) so the user knows which `--allow-…` option would have let it through. Neither
//! Landlock nor seccomp tells the sandboxed program *why* a call failed (it just sees `EACCES` or
//! `EPERM`), and nothing is visible from the outside either, except through audit:
//!
//! - Landlock logs denials to audit since Linux 6.15 (Landlock ABI 7): an
//!   `AUDIT_LANDLOCK_ACCESS` (1423) record names the domain and the blocked rights
//!   (`blockers=fs.read_file path="/etc/passwd" …`, `blockers=net.connect_tcp daddr=127.0.0.1
//!   dest=9`), and at a domain's first denial an `AUDIT_LANDLOCK_DOMAIN` (1424) record says which
//!   process created the domain (`status=allocated … pid=…`). The records of one event share a
//!   serial and are followed by the `AUDIT_SYSCALL` (1300) record of the denied process and an
//!   end-of-event (1320) record. By default Landlock logs only until the next `execve`; the
//!   sandbox therefore creates its domain with `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`.
//! - seccomp logs `RET_ERRNO` (and other non-allow) actions of filters installed with
//!   `SECCOMP_FILTER_FLAG_LOG` as `AUDIT_SECCOMP` (1326) records (`pid= comm= exe= syscall=`).
//!
//! # How
//!
//! [`Collector::start`] opens a `NETLINK_AUDIT` socket, subscribes to the read-only multicast
//! group `AUDIT_NLGRP_READLOG` (this needs `CAP_AUDIT_READ`, but no `auditd` and no audit rules),
//! and, when audit is disabled (the usual state without `auditd`), enables it with `AUDIT_SET`
//! (`CAP_AUDIT_CONTROL`). A thread assembles the records into events and keeps the session's
//! denials. [`Collector::watch`] names the sandboxed child: Landlock denials belong to the session
//! when their domain was allocated by that child (so another sandboxed process, even another
//! saferoot session, is never mixed in), seccomp denials when the denied process descends from
//! the child (checked in `/proc` when the record arrives). [`Collector::finish`] waits briefly for
//! late records, stops the thread and puts audit back as it was.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use saferoot::audit::Collector;
//! let collector = Collector::start(); // before spawning, so no record is missed
//! let mut child = std::process::Command::new("agent").spawn()?; // sandboxed in pre_exec
//! if let Ok(c) = &collector {
//!     c.watch(child.id());
//! }
//! child.wait()?;
//! match collector {
//!     Ok(c) => {
//!         let report = c.finish();
//!         for d in &report.denials {
//!             println!("{} {} {:?} {:?}", d.comm, d.access, d.path, d.port);
//!         }
//!         if report.lost > 0 {
//!             println!("{} audit records were lost", report.lost);
//!         }
//!     }
//!     Err(e) => println!("denials not recorded: {e}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Side effects
//!
//! - While a session runs, audit is enabled system-wide (when nothing else had enabled it). Once
//!   audit has been enabled, the kernel gives new processes an audit context, a small cost that
//!   stays until reboot. Records from other programs flow too; they are ignored.
//! - While saferoot owns the setting it also raises the kernel's audit queue limit
//!   (`backlog_limit`, default 64 records) to 8192, and puts the old value back at the end:
//!   Landlock cannot wait for a full queue, so with 64 a burst of denials is mostly dropped.
//!   When the queue is full anyway, a process that is denied thousands of times a second is
//!   slowed down to the rate at which the kernel delivers records.
//! - Without `auditd`, the kernel also prints every record to the kernel log (`dmesg`,
//!   rate-limited by printk), so denials and some of saferoot's own netlink calls show up there.
//! - Audit is disabled again at the end only if saferoot enabled it, no other saferoot collector
//!   is still live (registry: one file per collector in [`REGISTRY_DIR`], flock-serialised) and
//!   no `auditd` has registered meanwhile. If `auditd` or anyone else had enabled audit, saferoot
//!   never changes the setting. A crashed session leaves audit enabled; the next session that
//!   finishes cleans up.
//!
//! # Fallback and limits
//!
//! When audit cannot be used (kernel without `CONFIG_AUDIT`, not root, not in the initial user
//! and network namespaces, where audit lives), [`Collector::start`] returns a one-line
//! [`AuditError`] and the caller runs the session without a denial report. Records can be lost:
//! the socket's receive buffer is 16 MiB, and [`Report::lost`] estimates the loss (gaps in the
//! records' serial numbers, up to a marker record `finish` writes, plus the kernel's own "lost"
//! counter). The marker is a user message (`type=1121 … msg='saferoot-barrier=<pid>.<n>'`) and
//! also shows up in the kernel log. Pids are those of the initial pid namespace. A
//! seccomp denial by a process that left the child's process tree (daemonised, re-parented to
//! init) and that never had a Landlock denial is not attributed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where live collectors register (one file per collector, named `<pid>.<n>`).
pub const REGISTRY_DIR: &str = "/run/saferoot/audit";
/// Lock file in [`REGISTRY_DIR`] serialising start/finish across processes.
const LOCK_NAME: &str = ".lock";
/// Present while audit is enabled because a saferoot collector enabled it.
const MARKER_NAME: &str = "enabled-by-saferoot";

/// `<linux/audit.h>` message types.
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_SYSCALL: u16 = 1300;
const AUDIT_EOE: u16 = 1320;
const AUDIT_SECCOMP: u16 = 1326;
/// "Trusted application" free-text user message, used as an end-of-session marker.
const AUDIT_TRUSTED_APP: u16 = 1121;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_STATUS_ENABLED: u32 = 1;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
/// Queue length saferoot sets while it owns the audit setting. The default (64 records, about
/// 16 Landlock events) drops most records of a burst of denials: Landlock logs from contexts that
/// cannot wait for the queue to drain.
const BACKLOG_LIMIT: u32 = 8192;
/// Multicast group of the read-only audit log.
const AUDIT_NLGRP_READLOG: u32 = 1;

/// `<linux/netlink.h>`.
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;

/// Receive buffer of the listening socket (the kernel doubles it). Memory is only used while
/// records wait; a full buffer loses everything until the reader has emptied it.
const RCVBUF: libc::c_int = 16 << 20;
/// How long [`Collector::finish`] waits for late records when it cannot write a marker record,
/// and how long at most.
const LATE_RECORDS_WAIT: Duration = Duration::from_millis(200);
const LATE_RECORDS_MAX_WAIT: Duration = Duration::from_secs(3);
/// Poll interval of the reader thread (bounds how long stopping takes).
const POLL_MS: libc::c_int = 50;
/// An event whose end-of-event record never came is processed after this long.
const EVENT_TIMEOUT: Duration = Duration::from_millis(300);
/// Replies to `AUDIT_GET`/`AUDIT_SET` must come within this long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds on memory kept for records that may or may not be the session's.
const MAX_DENIALS: usize = 100_000;
const MAX_PENDING: usize = 10_000;
const MAX_PARTIAL_EVENTS: usize = 4096;
const MAX_ALLOCATIONS: usize = 65_536;

/// Which mechanism denied the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Landlock,
    Seccomp,
}

/// One denied access of the session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Denial {
    pub source: Source,
    /// The denied process (thread group id, initial pid namespace); 0 if unknown.
    pub pid: u32,
    /// Its command name (at most 15 bytes, as the kernel keeps it); empty if unknown.
    pub comm: String,
    pub exe: Option<String>,
    /// Landlock's blocked rights, comma-separated as the kernel prints them (`fs.read_file`,
    /// `fs.make_reg`, `net.connect_tcp`, `net.bind_tcp`, `scope.signal`, …); `syscall` for
    /// seccomp.
    pub access: String,
    /// File system denials: the file, or for creations and removals the directory. Abstract unix
    /// socket denials: the socket name with a leading `@`.
    pub path: Option<String>,
    /// Network denials: the destination port (connect) or the local port (bind).
    pub port: Option<u16>,
    /// Network denials: the destination (connect) or local (bind) address.
    pub addr: Option<String>,
    /// Signal denials: the target process, `pid N (comm)`.
    pub target: Option<String>,
    /// System call number (x86_64 numbering unless the process is a 32-bit one).
    pub syscall: Option<i64>,
    /// Time of the record, nanoseconds since the epoch (millisecond resolution).
    pub time_ns: i64,
}

/// What [`Collector::finish`] returns.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The session's denials in the order they happened (not deduplicated).
    pub denials: Vec<Denial>,
    /// Audit events or records lost during the session, of any process: events the socket
    /// missed (receive-buffer overflow, counted by the gaps in the serial numbers) plus records
    /// the kernel dropped (its "lost" counter). An estimate, not specific to this session's
    /// denials; non-zero means the denial list may be incomplete.
    pub lost: u64,
    /// Denials beyond the first 100 000, counted but not kept.
    pub omitted: u64,
}

/// Why denials cannot be collected; one line, for "denials not recorded: <reason>".
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the kernel has no audit support (CONFIG_AUDIT)")]
    NotSupported,
    #[error(
        "not allowed to {0} (needs CAP_AUDIT_CONTROL and CAP_AUDIT_READ in the initial user \
         and network namespaces)"
    )]
    NotPermitted(&'static str),
    #[error("could not {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

impl AuditError {
    fn from_io(what: &'static str, e: io::Error) -> AuditError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ECONNREFUSED) => {
                AuditError::NotPermitted(what)
            }
            Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) => AuditError::NotSupported,
            _ => AuditError::Io { what, source: e },
        }
    }
}

/// The parts of `struct audit_status` saferoot looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStatus {
    /// 0 disabled, 1 enabled, 2 enabled and locked.
    pub enabled: u32,
    /// Pid of the registered audit daemon, 0 if none.
    pub pid: u32,
    /// Records the kernel queues before dropping (0: unlimited).
    pub backlog_limit: u32,
    /// Records the kernel dropped since boot (or since someone reset the counter).
    pub lost: u32,
    /// Records queued in the kernel, not yet delivered.
    pub backlog: u32,
}

/// The kernel's audit status (`AUDIT_GET`).
pub fn status() -> Result<AuditStatus, AuditError> {
    let sock = NetlinkSocket::open()?;
    sock.get_status()
}

// ---------------------------------------------------------------------------------------------
// Netlink

struct NetlinkSocket(OwnedFd);

static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);

impl NetlinkSocket {
    fn open() -> Result<NetlinkSocket, AuditError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_AUDIT,
            )
        };
        if fd < 0 {
            return Err(AuditError::from_io(
                "open an audit netlink socket",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(NetlinkSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn fd(&self) -> libc::c_int {
        self.0.as_raw_fd()
    }

    fn bind(&self, groups: u32) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: addr is a valid sockaddr_nl of the given length.
        let r = unsafe {
            libc::bind(
                self.fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_int_opt(&self, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: value is a c_int of the given length.
        let r = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                opt,
                &value as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Large receive buffer: `SO_RCVBUFFORCE` (root may exceed `rmem_max`), else `SO_RCVBUF`.
    fn set_large_rcvbuf(&self) {
        if self.set_int_opt(libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = self.set_int_opt(libc::SO_RCVBUF, RCVBUF);
        }
    }

    fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: tv is a timeval of the given length.
        let r = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Send one netlink message to the kernel.
    fn send(&self, ty: u16, flags: u16, seq: u32, payload: &[u8]) -> io::Result<()> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: sockaddr_nl is plain data; all-zero (nl_pid 0) addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: msg and addr are valid for the lengths given.
            let r = unsafe {
                libc::sendto(
                    self.fd(),
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                flags,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Send a request and wait for the reply of type `reply_type` (or, with `ack`, for the
    /// acknowledgement). Returns the reply's payload (empty for an acknowledgement).
    fn request(&self, ty: u16, payload: &[u8], ack: bool) -> io::Result<Vec<u8>> {
        self.set_recv_timeout(REPLY_TIMEOUT)?;
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let flags = if ack {
            NLM_F_REQUEST | NLM_F_ACK
        } else {
            NLM_F_REQUEST
        };
        self.send(ty, flags, seq, payload)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            let n = match self.recv(&mut buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            for msg in NetlinkMessages::new(&buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                if msg.ty == NLMSG_ERROR {
                    let code = msg
                        .payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EPROTO);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    if ack {
                        return Ok(Vec::new());
                    }
                } else if msg.ty == ty && !ack {
                    return Ok(msg.payload.to_vec());
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no reply from the kernel's audit socket",
        ))
    }

    fn get_status(&self) -> Result<AuditStatus, AuditError> {
        let reply = self
            .request(AUDIT_GET, &[], false)
            .map_err(|e| AuditError::from_io("read the audit status", e))?;
        let word = |i: usize| {
            reply
                .get(i * 4..i * 4 + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        // struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit, lost, …
        match (word(1), word(3), word(5), word(6), word(7)) {
            (Some(enabled), Some(pid), Some(backlog_limit), Some(lost), Some(backlog)) => {
                Ok(AuditStatus {
                    enabled,
                    pid,
                    backlog_limit,
                    lost,
                    backlog,
                })
            }
            _ => Err(AuditError::Io {
                what: "read the audit status",
                source: io::Error::new(io::ErrorKind::InvalidData, "short AUDIT_GET reply"),
            }),
        }
    }

    /// Write a user message into the audit log.
    fn send_user_message(&self, text: &str) -> io::Result<()> {
        let mut payload = text.as_bytes().to_vec();
        payload.push(0);
        self.request(AUDIT_TRUSTED_APP, &payload, true).map(drop)
    }

    /// `AUDIT_SET` of `enabled` and, if given, `backlog_limit`.
    fn set(&self, enabled: bool, backlog_limit: Option<u32>) -> Result<(), AuditError> {
        // struct audit_status has 11 u32 fields on current kernels; fields the mask does not
        // name are ignored.
        let mut mask = AUDIT_STATUS_ENABLED;
        let mut payload = [0u8; 44];
        payload[4..8].copy_from_slice(&u32::from(enabled).to_ne_bytes());
        if let Some(limit) = backlog_limit {
            mask |= AUDIT_STATUS_BACKLOG_LIMIT;
            payload[20..24].copy_from_slice(&limit.to_ne_bytes());
        }
        payload[0..4].copy_from_slice(&mask.to_ne_bytes());
        let what = if enabled {
            "enable audit"
        } else {
            "disable audit"
        };
        self.request(AUDIT_SET, &payload, true)
            .map(drop)
            .map_err(|e| AuditError::from_io(what, e))
    }
}

struct NetlinkMessage<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages in one datagram (malformed tails are ignored).
struct NetlinkMessages<'a> {
    buf: &'a [u8],
}

impl<'a> NetlinkMessages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        NetlinkMessages { buf }
    }
}

impl<'a> Iterator for NetlinkMessages<'a> {
    type Item = NetlinkMessage<'a>;

    fn next(&mut self) -> Option<NetlinkMessage<'a>> {
        let buf = self.buf;
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        // Some kernels have sent audit records whose nlmsg_len does not count the header; be
        // lenient and take what is there.
        let end = if len < NLMSG_HDRLEN || len > buf.len() {
            buf.len()
        } else {
            len
        };
        let payload = &buf[NLMSG_HDRLEN..end];
        let next = (end + 3) & !3;
        self.buf = buf.get(next..).unwrap_or(&[]);
        Some(NetlinkMessage { ty, seq, payload })
    }
}

// ---------------------------------------------------------------------------------------------
// Record parsing

/// `audit(1796308849.221:3): rest` → (time in ns, serial, rest).
fn parse_header(text: &str) -> Option<(i64, u64, &str)> {
    let rest = text.strip_prefix("audit(")?;
    let close = rest.find(')')?;
    let (stamp, body) = (&rest[..close], &rest[close + 1..]);
    let body = body.strip_prefix(':').unwrap_or(body).trim_start();
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    let secs: i64 = secs.parse().ok()?;
    let millis: i64 = millis.parse().ok()?;
    let serial: u64 = serial.parse().ok()?;
    let ns = secs
        .checked_mul(1_000_000_000)?
        .checked_add(millis.checked_mul(1_000_000)?)?;
    Some((ns, serial, body))
}

/// `key=value` fields of a record body. Audit never puts spaces inside values: strings that
/// would need them are hex-encoded.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn parse(body: &'a str) -> Fields<'a> {
        Fields(
            body.split_ascii_whitespace()
                .filter_map(|tok| tok.split_once('='))
                .collect(),
        )
    }

    fn raw(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.raw(key)?.parse().ok()
    }

    /// A string field in audit's "untrusted string" encoding: `"text"`, or unquoted hex when the
    /// text contains a space, a quote, a control or a non-ASCII byte. `(null)`, `(none)` and `?`
    /// mean absent.
    fn string(&self, key: &str) -> Option<String> {
        decode_untrusted(self.raw(key)?).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

fn decode_untrusted(value: &str) -> Option<Vec<u8>> {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return Some(value.as_bytes()[1..value.len() - 1].to_vec());
    }
    if matches!(value, "(null)" | "(none)" | "?" | "") {
        return None;
    }
    if value.len() & 1 == 0 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes = value.as_bytes();
        let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
        return Some(
            bytes
                .chunks_exact(2)
                .map(|p| (hex(p[0]) << 4) | hex(p[1]))
                .collect(),
        );
    }
    Some(value.as_bytes().to_vec())
}

/// The process fields of an `AUDIT_SYSCALL` record.
struct SyscallInfo {
    pid: u32,
    comm: String,
    exe: Option<String>,
    syscall: Option<i64>,
}

fn parse_syscall_record(body: &str) -> Option<SyscallInfo> {
    let f = Fields::parse(body);
    Some(SyscallInfo {
        pid: f.num("pid")?,
        comm: f.string("comm").unwrap_or_default(),
        exe: f.string("exe"),
        syscall: f.num("syscall"),
    })
}

/// An `AUDIT_LANDLOCK_ACCESS` record: (domain, denial without process fields).
fn parse_landlock_access(body: &str, time_ns: i64) -> Option<(u64, Denial)> {
    let f = Fields::parse(body);
    let domain = u64::from_str_radix(f.raw("domain")?, 16).ok()?;
    let access = f.raw("blockers")?.to_owned();
    let path = if access.starts_with("scope.abstract_unix_socket") {
        decode_untrusted(f.raw("path")?).map(|b| {
            let name = b.strip_prefix(&[0u8][..]).unwrap_or(&b);
            format!("@{}", String::from_utf8_lossy(name))
        })
    } else {
        f.string("path")
    };
    let (addr, port) = match (f.raw("daddr"), f.raw("saddr")) {
        (Some(d), _) => (Some(d.to_owned()), f.num("dest")),
        (None, Some(s)) => (Some(s.to_owned()), f.num("src")),
        (None, None) => (None, f.num("dest").or_else(|| f.num("src"))),
    };
    let target = f.num::<u32>("opid").map(|opid| match f.string("ocomm") {
        Some(ocomm) => format!("pid {opid} ({ocomm})"),
        None => format!("pid {opid}"),
    });
    Some((
        domain,
        Denial {
            source: Source::Landlock,
            pid: 0,
            comm: String::new(),
            exe: None,
            access,
            path,
            port,
            addr,
            target,
            syscall: None,
            time_ns,
        },
    ))
}

/// An `AUDIT_LANDLOCK_DOMAIN` record with `status=allocated`: (domain, creator pid).
fn parse_landlock_allocation(body: &str) -> Option<(u64, u32)> {
    let f = Fields::parse(body);
    if f.raw("status")? != "allocated" {
        return None;
    }
    let domain = u64::from_str_radix(f.raw("domain")?, 16).ok()?;
    Some((domain, f.num("pid")?))
}

fn parse_seccomp(body: &str, time_ns: i64) -> Option<Denial> {
    let f = Fields::parse(body);
    Some(Denial {
        source: Source::Seccomp,
        pid: f.num("pid")?,
        comm: f.string("comm").unwrap_or_default(),
        exe: f.string("exe"),
        access: "syscall".to_owned(),
        path: None,
        port: None,
        addr: None,
        target: None,
        syscall: Some(f.num("syscall")?),
        time_ns,
    })
}

/// A native `clone3` refused with ENOSYS by design: libc (glibc, musl, Node's libuv through
/// glibc) takes that as "no clone3 on this kernel" and retries with `clone`, whose flags the
/// filter does check (a `CLONE_NEW*` there is refused and reported). Nothing the agent needs was
/// denied, so these records are not reported: every threaded program would otherwise show one
/// per thread it starts.
fn is_clone3_fallback(body: &str) -> bool {
    let f = Fields::parse(body);
    f.num::<i64>("syscall") == Some(libc::SYS_clone3)
        && f.raw("arch")
            .and_then(|a| u32::from_str_radix(a, 16).ok())
            .is_some_and(|a| Some(a) == crate::seccomp::native_audit_arch())
}

/// `pid` and its ancestors, from `/proc/<pid>/stat`; empty if `pid` is gone.
fn ancestry(pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut cur = pid;
    while cur != 0 && chain.len() < 256 && !chain.contains(&cur) {
        let Some(ppid) = parent_of(cur) else { break };
        chain.push(cur);
        cur = ppid;
    }
    chain
}

/// This process's audit session id (`u32::MAX` when unset).
fn own_session_id() -> u32 {
    std::fs::read_to_string("/proc/self/sessionid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn parent_of(pid: u32) -> Option<u32> {
    saferoot_fuse::guard::proc_stat(pid).map(|(ppid, _)| ppid)
}

// ---------------------------------------------------------------------------------------------
// Attribution

enum Origin {
    Landlock {
        domain: u64,
    },
    /// The denied process and its ancestors when the record arrived (empty: already gone),
    /// and its audit session id (`ses=`).
    Seccomp {
        ancestry: Vec<u32>,
        ses: Option<u32>,
    },
}

struct Candidate {
    serial: u64,
    denial: Denial,
    origin: Origin,
}

enum Verdict {
    Accept,
    Reject,
    Wait,
}

#[derive(Default)]
struct State {
    child: Option<u32>,
    /// The audit session id of the watched child, when it has one of its own (`run` sets the
    /// agent's login uid, which gives it a fresh session id inherited by all it starts).
    session_ses: Option<u32>,
    /// Landlock domain → pid of the process that created it (from "allocated" records).
    allocations: HashMap<u64, u32>,
    session_domains: HashSet<u64>,
    /// Processes known to belong to the session.
    session_pids: HashSet<u32>,
    /// Denials that cannot be attributed yet (before `watch`, or process already gone).
    pending: VecDeque<Candidate>,
    accepted: Vec<(u64, Denial)>,
    omitted: u64,
    /// `ENOBUFS` errors: the receive buffer overflowed (each time, one or more records lost).
    overflows: u64,
    /// Serial numbers never received (see [`SerialTracker`]).
    missing_events: u64,
    /// The marker record `finish` waits for, and whether it has arrived.
    barrier: Option<(String, bool)>,
    malformed: u64,
}

impl State {
    fn judge(&self, c: &Candidate) -> Verdict {
        match &c.origin {
            Origin::Landlock { domain } => {
                if self.session_domains.contains(domain) {
                    Verdict::Accept
                } else if self.child.is_some() && self.allocations.contains_key(domain) {
                    Verdict::Reject
                } else {
                    Verdict::Wait
                }
            }
            Origin::Seccomp { ancestry, ses } => {
                let Some(child) = self.child else {
                    return Verdict::Wait;
                };
                // The agent's own audit session (see `Collector::watch`) identifies its
                // processes even after they are gone, and after they left its process tree.
                if self.session_ses.is_some() && *ses == self.session_ses {
                    return Verdict::Accept;
                }
                if ancestry.contains(&child) || self.session_pids.contains(&c.denial.pid) {
                    Verdict::Accept
                } else if ancestry.is_empty() {
                    Verdict::Wait
                } else {
                    Verdict::Reject
                }
            }
        }
    }

    fn accept(&mut self, c: Candidate) {
        if c.denial.pid != 0 {
            self.session_pids.insert(c.denial.pid);
        }
        if self.accepted.len() < MAX_DENIALS {
            self.accepted.push((c.serial, c.denial));
        } else {
            self.omitted += 1;
        }
    }

    fn consider(&mut self, c: Candidate) {
        match self.judge(&c) {
            Verdict::Accept => self.accept(c),
            Verdict::Reject => {}
            Verdict::Wait => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                }
                self.pending.push_back(c);
            }
        }
    }

    /// Re-judge the pending denials (after `watch` or a new allocation). Accepting one can make
    /// another acceptable (its pid becomes known), hence the loop.
    fn resolve(&mut self) {
        loop {
            let before = self.accepted.len() + self.omitted as usize;
            let mut still = VecDeque::new();
            while let Some(c) = self.pending.pop_front() {
                match self.judge(&c) {
                    Verdict::Accept => self.accept(c),
                    Verdict::Reject => {}
                    Verdict::Wait => still.push_back(c),
                }
            }
            self.pending = still;
            if self.accepted.len() + self.omitted as usize == before || self.pending.is_empty() {
                break;
            }
        }
    }

    fn note_allocation(&mut self, domain: u64, pid: u32) {
        if self.allocations.len() < MAX_ALLOCATIONS {
            self.allocations.insert(domain, pid);
        }
        if self.child == Some(pid) {
            self.session_domains.insert(domain);
        }
    }

    fn watch(&mut self, child: u32) {
        self.child = Some(child);
        self.session_ses = std::fs::read_to_string(format!("/proc/{child}/sessionid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&s| s != u32::MAX && s != own_session_id());
        self.session_pids.insert(child);
        let mine: Vec<u64> = self
            .allocations
            .iter()
            .filter(|(_, pid)| **pid == child)
            .map(|(domain, _)| *domain)
            .collect();
        self.session_domains.extend(mine);
        self.resolve();
    }

    /// One complete Landlock event: its 1423, 1424 and 1300 records (full texts).
    fn landlock_event(&mut self, serial: u64, records: &[(u16, String)]) {
        let bodies: Vec<(u16, i64, &str)> = records
            .iter()
            .filter_map(|(ty, text)| match parse_header(text) {
                Some((time_ns, _, body)) => Some((*ty, time_ns, body)),
                None => {
                    self.malformed += 1;
                    None
                }
            })
            .collect();
        let process = bodies
            .iter()
            .filter(|(ty, _, _)| *ty == AUDIT_SYSCALL)
            .find_map(|(_, _, body)| parse_syscall_record(body));
        let mut new_allocation = false;
        for &(ty, _, body) in &bodies {
            if ty == AUDIT_LANDLOCK_DOMAIN {
                if let Some((domain, pid)) = parse_landlock_allocation(body) {
                    self.note_allocation(domain, pid);
                    new_allocation = true;
                }
            }
        }
        for &(ty, time_ns, body) in &bodies {
            if ty != AUDIT_LANDLOCK_ACCESS {
                continue;
            }
            let Some((domain, mut denial)) = parse_landlock_access(body, time_ns) else {
                self.malformed += 1;
                continue;
            };
            if let Some(p) = &process {
                denial.pid = p.pid;
                denial.comm.clone_from(&p.comm);
                denial.exe.clone_from(&p.exe);
                denial.syscall = p.syscall;
            }
            self.consider(Candidate {
                serial,
                denial,
                origin: Origin::Landlock { domain },
            });
        }
        if new_allocation && !self.pending.is_empty() {
            self.resolve();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records of one event (same serial) not yet closed by an end-of-event record.
struct PartialEvent {
    first_seen: Instant,
    /// (type, full text including the `audit(…)` header).
    records: Vec<(u16, String)>,
}

struct Reader {
    sock: NetlinkSocket,
    shared: Arc<Shared>,
    partial: HashMap<u64, PartialEvent>,
    serials: SerialTracker,
}

/// Counts the audit events the socket never received. Every event gets the next serial number
/// when its first record is written and all records go to the multicast group, so missing
/// serials are events dropped after that point: receive-buffer overflows, whose `ENOBUFS` says
/// that records were dropped but not how many. (Records the kernel drops before writing them,
/// for a full queue, take no serial; its own "lost" counter has those.)
#[derive(Default)]
struct SerialTracker {
    first: Option<u64>,
    lowest: u64,
    highest: u64,
    distinct: u64,
    /// Serials seen recently (events of different CPUs arrive slightly out of order).
    recent: HashSet<u64>,
}

/// How far out of order an event may arrive and still be matched.
const SERIAL_WINDOW: u64 = 4096;

impl SerialTracker {
    fn see(&mut self, serial: u64) {
        if self.first.is_none() {
            self.first = Some(serial);
            self.lowest = serial;
            self.highest = serial;
        }
        if serial.saturating_add(SERIAL_WINDOW) < self.highest {
            return; // Far too late (or the counter wrapped): leave it out.
        }
        if self.recent.insert(serial) {
            self.distinct += 1;
            self.lowest = self.lowest.min(serial);
            self.highest = self.highest.max(serial);
        }
        if self.recent.len() as u64 > 2 * SERIAL_WINDOW {
            let floor = self.highest.saturating_sub(SERIAL_WINDOW);
            self.recent.retain(|&s| s >= floor);
        }
    }

    fn missing(&self) -> u64 {
        match self.first {
            Some(_) => (self.highest - self.lowest + 1).saturating_sub(self.distinct),
            None => 0,
        }
    }
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            let mut pfd = libc::pollfd {
                fd: self.sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, if stopping { 0 } else { POLL_MS }) };
            let healthy = self.drain(&mut buf);
            self.flush(stopping);
            if stopping {
                self.shared.state().missing_events = self.serials.missing();
                return;
            }
            if !healthy {
                // Do not spin on a socket that keeps failing.
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
            }
        }
    }

    /// Read everything queued on the socket; false if the socket failed.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match self.sock.recv(buf, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    let datagram = &buf[..n];
                    for msg in NetlinkMessages::new(datagram) {
                        self.record(msg.ty, msg.payload);
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.shared.state().overflows += 1;
                        continue;
                    }
                    Some(libc::EAGAIN) => return true,
                    _ => {
                        log::debug!("audit: recv failed: {e}");
                        return false;
                    }
                },
            }
        }
    }

    fn record(&mut self, ty: u16, payload: &[u8]) {
        let end = payload
            .iter()
            .rposition(|&b| b != 0 && b != b'\n')
            .map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&payload[..end]);
        let Some((time_ns, serial, body)) = parse_header(&text) else {
            self.shared.state().malformed += 1;
            return;
        };
        self.serials.see(serial);
        if ty == AUDIT_TRUSTED_APP {
            let mut state = self.shared.state();
            if let Some((token, seen)) = &mut state.barrier {
                // `msg='saferoot-barrier=…'`; tokens differ in their pid, so match exactly.
                *seen |= body.contains(&format!("'{token}'"));
            }
            return;
        }
        if !matches!(
            ty,
            AUDIT_SECCOMP
                | AUDIT_LANDLOCK_ACCESS
                | AUDIT_LANDLOCK_DOMAIN
                | AUDIT_SYSCALL
                | AUDIT_EOE
        ) {
            return;
        }
        match ty {
            AUDIT_SECCOMP => {
                let Some(denial) = parse_seccomp(body, time_ns) else {
                    self.shared.state().malformed += 1;
                    return;
                };
                if is_clone3_fallback(body) {
                    return;
                }
                // Look at the process tree now, while the process most likely still exists.
                let ancestry = ancestry(denial.pid);
                let ses = Fields::parse(body).num::<u32>("ses");
                self.shared.state().consider(Candidate {
                    serial,
                    denial,
                    origin: Origin::Seccomp { ancestry, ses },
                });
            }
            AUDIT_LANDLOCK_ACCESS | AUDIT_LANDLOCK_DOMAIN => {
                if self.partial.len() >= MAX_PARTIAL_EVENTS {
                    self.flush(true);
                }
                self.partial
                    .entry(serial)
                    .or_insert_with(|| PartialEvent {
                        first_seen: Instant::now(),
                        records: Vec::new(),
                    })
                    .records
                    .push((ty, text.into_owned()));
            }
            AUDIT_SYSCALL => {
                // Only interesting as part of a Landlock event, whose records come first.
                if let Some(ev) = self.partial.get_mut(&serial) {
                    ev.records.push((ty, text.into_owned()));
                }
            }
            AUDIT_EOE => {
                if let Some(ev) = self.partial.remove(&serial) {
                    self.shared.state().landlock_event(serial, &ev.records);
                }
            }
            _ => {}
        }
    }

    /// Process events whose end never came (processes without an audit context), or all.
    fn flush(&mut self, all: bool) {
        if self.partial.is_empty() {
            return;
        }
        let mut due: Vec<u64> = self
            .partial
            .iter()
            .filter(|(_, ev)| all || ev.first_seen.elapsed() >= EVENT_TIMEOUT)
            .map(|(serial, _)| *serial)
            .collect();
        due.sort_unstable();
        for serial in due {
            if let Some(ev) = self.partial.remove(&serial) {
                self.shared.state().landlock_event(serial, &ev.records);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registry of live collectors

static NEXT_COLLECTOR: AtomicU32 = AtomicU32::new(0);

/// Exclusive lock on the registry; released when the file is closed.
fn lock_registry(dir: &Path) -> io::Result<File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(LOCK_NAME))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Whether a collector other than `own` is registered and alive; removes stale entries. Call
/// with the registry locked.
fn other_live_collectors(dir: &Path, own: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut live = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name == MARKER_NAME || name == own {
            continue;
        }
        let pid = name.split('.').next().and_then(|p| p.parse::<i32>().ok());
        match pid {
            Some(pid) if pid_alive(pid) => live = true,
            Some(_) => {
                let _ = fs::remove_file(entry.path());
            }
            None => {}
        }
    }
    live
}

// ---------------------------------------------------------------------------------------------
// Collector

/// Collects the denials of one sandboxed session. See the module documentation.
pub struct Collector {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    control: NetlinkSocket,
    registry_dir: PathBuf,
    registry_name: String,
    lost_at_start: u32,
    kernel_lost: u64,
    done: bool,
}

impl Collector {
    /// Subscribe to the audit log, enable audit if it is off, start the reader thread.
    ///
    /// Call it before spawning the sandboxed child, so that no record is missed.
    pub fn start() -> Result<Collector, AuditError> {
        let registry_dir = Path::new(REGISTRY_DIR);
        let listener = NetlinkSocket::open()?;
        listener.set_large_rcvbuf();
        listener
            .bind(AUDIT_NLGRP_READLOG)
            .map_err(|e| AuditError::from_io("subscribe to the audit log", e))?;
        let control = NetlinkSocket::open()?;

        let lock = lock_registry(registry_dir)
            .map_err(|e| AuditError::from_io("lock the audit registry in /run/saferoot", e))?;
        let status = control.get_status()?;
        let registry_name = format!(
            "{}.{}",
            std::process::id(),
            NEXT_COLLECTOR.fetch_add(1, Ordering::Relaxed)
        );
        let entry = registry_dir.join(&registry_name);
        fs::write(&entry, format!("{}\n", std::process::id()))
            .map_err(|e| AuditError::from_io("register in /run/saferoot/audit", e))?;
        if status.enabled == 0 {
            // Remember that saferoot, not an administrator, turns audit on, and the queue
            // length to put back.
            let marker = registry_dir.join(MARKER_NAME);
            let raise = (status.backlog_limit != 0 && status.backlog_limit < BACKLOG_LIMIT)
                .then_some(BACKLOG_LIMIT);
            let contents = match raise {
                Some(_) => format!("backlog_limit={}\n", status.backlog_limit),
                None => String::new(),
            };
            let enabled = fs::write(&marker, contents)
                .map_err(|e| AuditError::from_io("register in /run/saferoot/audit", e))
                .and_then(|()| control.set(true, raise));
            if let Err(e) = enabled {
                let _ = fs::remove_file(&marker);
                let _ = fs::remove_file(&entry);
                return Err(e);
            }
        }
        drop(lock);

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
        });
        let reader = Reader {
            sock: listener,
            shared: Arc::clone(&shared),
            partial: HashMap::new(),
            serials: SerialTracker::default(),
        };
        let mut collector = Collector {
            shared,
            thread: None,
            control,
            registry_dir: registry_dir.to_path_buf(),
            registry_name,
            lost_at_start: status.lost,
            kernel_lost: 0,
            done: false,
        };
        match std::thread::Builder::new()
            .name("saferoot-audit".into())
            .spawn(move || reader.run())
        {
            Ok(handle) => collector.thread = Some(handle),
            Err(e) => {
                collector.shutdown();
                return Err(AuditError::Io {
                    what: "start the audit reader thread",
                    source: e,
                });
            }
        }
        Ok(collector)
    }

    /// Name the session's sandboxed child (the process that called `landlock_restrict_self`).
    /// Records that arrived earlier are attributed now.
    pub fn watch(&self, child_pid: u32) {
        self.shared.state().watch(child_pid);
    }

    /// Wait for late records (until a marker record written now comes back: usually a few
    /// milliseconds, at most 3 s), stop, restore the audit setting and return the session's
    /// denials. Call it after the sandboxed processes have exited.
    pub fn finish(mut self) -> Report {
        self.wait_for_late_records();
        self.shutdown();
        let mut state = self.shared.state();
        state.resolve();
        state.pending.clear();
        if state.malformed > 0 {
            log::debug!("audit: skipped {} malformed records", state.malformed);
        }
        let mut accepted = mem::take(&mut state.accepted);
        accepted.sort_by_key(|(serial, d)| (d.time_ns, *serial));
        Report {
            denials: accepted.into_iter().map(|(_, d)| d).collect(),
            lost: state.overflows.max(state.missing_events) + self.kernel_lost,
            omitted: state.omitted,
        }
    }

    /// Records reach the socket asynchronously (through kauditd), and after a burst of denials
    /// the kernel's queue can take a while to drain. The kernel delivers records in the order
    /// they were written, so write a marker record of our own (a user message, which needs
    /// `CAP_AUDIT_WRITE`) and wait until it comes back: everything the session's processes
    /// logged before has then been delivered or dropped (and the drop shows as a serial gap).
    /// Without the marker, wait at least [`LATE_RECORDS_WAIT`] and until the queue is empty.
    fn wait_for_late_records(&self) {
        let token = format!("saferoot-barrier={}", self.registry_name);
        self.shared.state().barrier = Some((token.clone(), false));
        let start = Instant::now();
        let mut marked = self.control.send_user_message(&token).is_ok();
        let mut last_marker = start;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let elapsed = start.elapsed();
            if marked && last_marker.elapsed() >= Duration::from_millis(250) {
                // The socket was full when the marker came (or kauditd is slow): mark again.
                marked = self.control.send_user_message(&token).is_ok();
                last_marker = Instant::now();
            }
            if elapsed >= LATE_RECORDS_MAX_WAIT {
                log::debug!("audit: gave up waiting for late records");
                return;
            }
            if marked {
                if self.shared.state().barrier.as_ref().is_some_and(|b| b.1) {
                    return;
                }
            } else if elapsed >= LATE_RECORDS_WAIT
                && self.control.get_status().map_or(true, |s| s.backlog == 0)
            {
                // What kauditd has just taken off the queue may still be on its way.
                std::thread::sleep(Duration::from_millis(20));
                return;
            }
        }
    }

    /// Stop the reader, unregister, and disable audit if saferoot enabled it and no other
    /// collector is live. Idempotent; also run by `Drop`.
    fn shutdown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.shared.stop.store(true, Ordering::Release);
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
        let lock = lock_registry(&self.registry_dir);
        let _ = fs::remove_file(self.registry_dir.join(&self.registry_name));
        let status = self.control.get_status().ok();
        if let Some(s) = status {
            self.kernel_lost = u64::from(s.lost.saturating_sub(self.lost_at_start));
        }
        if lock.is_err() {
            // Without the lock another session may be starting; leave audit on (harmless).
            return;
        }
        let others = other_live_collectors(&self.registry_dir, &self.registry_name);
        let marker = self.registry_dir.join(MARKER_NAME);
        if marker.exists() && !others {
            // Only turn it off if it is still plainly "on" and no audit daemon took over.
            let backlog_limit = fs::read_to_string(&marker).ok().and_then(|text| {
                text.trim()
                    .strip_prefix("backlog_limit=")
                    .and_then(|v| v.parse::<u32>().ok())
            });
            let Some(s) = status else {
                // Unknown state: keep the marker so that the next session cleans up.
                return;
            };
            if s.enabled == 1 && s.pid == 0 {
                if let Err(e) = self.control.set(false, backlog_limit) {
                    log::warn!("could not disable audit again: {e}");
                    return;
                }
            }
            let _ = fs::remove_file(marker);
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    /// Tests that start collectors change (and check) the global audit setting.
    static AUDIT_TESTS: Mutex<()> = Mutex::new(());

    /// Serialise the audit tests; `None` (test skipped) where they cannot run: no audit support,
    /// not root, or Landlock without audit (ABI < 7). As root on a 6.15+ kernel they must run.
    fn serial() -> Option<MutexGuard<'static, ()>> {
        // SAFETY: LANDLOCK_CREATE_RULESET_VERSION query, no pointers.
        let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
        if abi < 7 {
            eprintln!("audit test skipped: Landlock ABI {abi} has no audit support");
            return None;
        }
        match status() {
            Err(e @ (AuditError::NotSupported | AuditError::NotPermitted(_))) => {
                eprintln!("audit test skipped: {e}");
                None
            }
            _ => Some(AUDIT_TESTS.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    const ACCESS_FS_READ_FILE: u64 = 1 << 2;
    const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;
    const RULE_PATH_BENEATH: libc::c_int = 1;
    const RESTRICT_SELF_LOG_NEW_EXEC_ON: libc::c_uint = 1 << 1;
    const SYS_MOUNT: i64 = 165;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }

    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// A Landlock ruleset handling `fs`/`net`, allowing `READ_FILE` beneath `readable`.
    fn ruleset(fs: u64, net: u64, readable: &[&str]) -> OwnedFd {
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: net,
            scoped: 0,
        };
        // SAFETY: attr is a valid landlock_ruleset_attr of the given size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        assert!(
            fd >= 0,
            "landlock_create_ruleset: {}",
            io::Error::last_os_error()
        );
        // SAFETY: fresh descriptor.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for dir in readable {
            let Ok(file) = File::open(dir) else { continue };
            let rule = PathBeneathAttr {
                allowed_access: ACCESS_FS_READ_FILE,
                parent_fd: file.as_raw_fd(),
            };
            // SAFETY: rule is a valid landlock_path_beneath_attr.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset.as_raw_fd(),
                    RULE_PATH_BENEATH,
                    &rule as *const PathBeneathAttr,
                    0u32,
                )
            };
            assert_eq!(
                r,
                0,
                "landlock_add_rule {dir}: {}",
                io::Error::last_os_error()
            );
        }
        ruleset
    }

    /// Spawn `cmd` inside the Landlock domain of `ruleset`, with logging after exec.
    fn spawn_landlocked(cmd: &mut Command, ruleset: &OwnedFd) -> Child {
        let fd = ruleset.as_raw_fd();
        // SAFETY: the closure only makes raw system calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(
                        libc::SYS_landlock_restrict_self,
                        fd,
                        RESTRICT_SELF_LOG_NEW_EXEC_ON,
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    }

    const READABLE_SYSTEM: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/etc"];

    /// A file outside [`READABLE_SYSTEM`], with a name that audit hex-encodes.
    fn unreadable_dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("saferoot-audit-test")
            .tempdir_in("/tmp")
            .unwrap();
        fs::write(dir.path().join("secret"), "x").unwrap();
        fs::write(dir.path().join("odd \"name\" é"), "x").unwrap();
        dir
    }

    fn fmt(report: &Report) -> String {
        report
            .denials
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn file_denials_are_reported_with_path_and_process() {
        let Some(_g) = serial() else { return };
        let dir = unreadable_dir();
        let secret = dir.path().join("secret").display().to_string();
        let odd = dir.path().join("odd \"name\" é").display().to_string();
        let collector = Collector::start().unwrap();
        let rs = ruleset(ACCESS_FS_READ_FILE, 0, READABLE_SYSTEM);
        let mut child = spawn_landlocked(Command::new("cat").arg(&secret).arg(&odd), &rs);
        collector.watch(child.id());
        assert!(!child.wait().unwrap().success());
        let report = collector.finish();
        let all = fmt(&report);
        for path in [&secret, &odd] {
            let d = report
                .denials
                .iter()
                .find(|d| d.path.as_deref() == Some(path.as_str()))
                .unwrap_or_else(|| panic!("no denial for {path} in\n{all}"));
            assert_eq!(d.source, Source::Landlock);
            assert_eq!(d.access, "fs.read_file");
            assert_eq!(d.comm, "cat");
            assert_eq!(d.pid, child.id());
            assert_eq!(d.exe.as_deref(), Some("/usr/bin/cat"));
            assert_eq!(d.syscall, Some(libc::SYS_openat));
            assert!(d.time_ns > 1_600_000_000_000_000_000);
        }
        assert_eq!(report.denials.len(), 2, "{all}");
        let json = serde_json::to_value(&report.denials[0]).unwrap();
        assert_eq!(json["source"], "landlock");
    }

    #[test]
    fn grandchild_denials_and_a_late_watch_are_attributed() {
        let Some(_g) = serial() else { return };
        let dir = unreadable_dir();
        let secret = dir.path().join("secret").display().to_string();
        let collector = Collector::start().unwrap();
        let rs = ruleset(ACCESS_FS_READ_FILE, 0, READABLE_SYSTEM);
        // The domain's first denial comes from a grandchild (`cat` forked by `sh`).
        let mut child = spawn_landlocked(
            Command::new("sh")
                .arg("-c")
                .arg("cat \"$1\"; true")
                .arg("sh")
                .arg(&secret),
            &rs,
        );
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Watch only after the records have arrived and the child is gone.
        collector.watch(child.id());
        let report = collector.finish();
        let all = fmt(&report);
        let d = report
            .denials
            .iter()
            .find(|d| d.path.as_deref() == Some(secret.as_str()))
            .unwrap_or_else(|| panic!("no denial for {secret} in\n{all}"));
        assert_eq!(d.comm, "cat");
        assert_ne!(d.pid, child.id(), "the denied process is the grandchild");
    }

    #[test]
    fn network_denials_are_reported_with_port() {
        let Some(_g) = serial() else { return };
        let collector = Collector::start().unwrap();
        let rs = ruleset(0, ACCESS_NET_CONNECT_TCP, &[]);
        let script = "import socket\n\
                      try:\n    socket.create_connection(('127.0.0.1', 9))\n\
                      except PermissionError:\n    raise SystemExit(0)\n\
                      raise SystemExit(3)";
        let mut child = spawn_landlocked(Command::new("python3").arg("-c").arg(script), &rs);
        collector.watch(child.id());
        assert!(
            child.wait().unwrap().success(),
            "connect was not denied with EACCES"
        );
        let report = collector.finish();
        let all = fmt(&report);
        let d = report
            .denials
            .iter()
            .find(|d| d.access == "net.connect_tcp")
            .unwrap_or_else(|| panic!("no connect denial in\n{all}"));
        assert_eq!(d.port, Some(9));
        assert_eq!(d.addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.path, None);
        assert!(d.comm.starts_with("python"), "{all}");
        assert_eq!(d.syscall, Some(libc::SYS_connect));
    }

    /// BPF: `mount` → `ERRNO(EPERM)`, everything else allowed (x86_64 only).
    fn deny_mount_filter() -> Vec<libc::sock_filter> {
        const LD_W_ABS: u16 = 0x20;
        const JEQ_K: u16 = 0x15;
        const RET_K: u16 = 0x06;
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        vec![
            insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
            insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
            insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
            insn(JEQ_K, 0, 1, SYS_MOUNT as u32),
            insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ]
    }

    fn spawn_seccomped(cmd: &mut Command) -> Child {
        let filter = deny_mount_filter();
        // SAFETY: the closure only makes raw system calls on data it owns.
        unsafe {
            cmd.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        libc::SECCOMP_FILTER_FLAG_LOG,
                        &prog as *const libc::sock_fprog,
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    }

    const CALL_MOUNT: &str = "import ctypes\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        r = libc.syscall(165, 0, 0, 0, 0, 0)\n\
        raise SystemExit(0 if r == -1 and ctypes.get_errno() == 1 else 3)";

    #[test]
    fn seccomp_denials_are_reported_with_syscall() {
        let Some(_g) = serial() else { return };
        let collector = Collector::start().unwrap();
        let mut child = spawn_seccomped(Command::new("python3").arg("-c").arg(CALL_MOUNT));
        collector.watch(child.id());
        assert!(
            child.wait().unwrap().success(),
            "mount was not denied with EPERM"
        );
        let report = collector.finish();
        let all = fmt(&report);
        let d = report
            .denials
            .iter()
            .find(|d| d.source == Source::Seccomp)
            .unwrap_or_else(|| panic!("no seccomp denial in\n{all}"));
        assert_eq!(d.syscall, Some(SYS_MOUNT));
        assert_eq!(d.access, "syscall");
        assert!(d.comm.starts_with("python"), "{all}");
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(json["source"], "seccomp");
    }

    #[test]
    fn denials_of_unwatched_processes_are_not_attributed() {
        let Some(_g) = serial() else { return };
        let dir = unreadable_dir();
        let secret = dir.path().join("secret").display().to_string();
        let odd = dir.path().join("odd \"name\" é").display().to_string();
        // Three concurrent sessions: each must get its own denials only.
        let mine_c = Collector::start().unwrap();
        let other_c = Collector::start().unwrap();
        let other_sc_c = Collector::start().unwrap();
        let rs_mine = ruleset(ACCESS_FS_READ_FILE, 0, READABLE_SYSTEM);
        let rs_other = ruleset(ACCESS_FS_READ_FILE, 0, READABLE_SYSTEM);
        // The unrelated ones run first, so their records are pending when `watch` comes.
        let mut other = spawn_landlocked(Command::new("cat").arg(&odd), &rs_other);
        let mut other_sc = spawn_seccomped(Command::new("python3").arg("-c").arg(CALL_MOUNT));
        other.wait().unwrap();
        other_sc.wait().unwrap();
        let mut mine = spawn_landlocked(Command::new("cat").arg(&secret), &rs_mine);
        mine_c.watch(mine.id());
        mine.wait().unwrap();
        other_c.watch(other.id());
        other_sc_c.watch(other_sc.id());

        let report = mine_c.finish();
        let all = fmt(&report);
        assert!(
            report
                .denials
                .iter()
                .any(|d| d.path.as_deref() == Some(secret.as_str())),
            "own denial missing:\n{all}"
        );
        assert!(
            report
                .denials
                .iter()
                .all(|d| d.pid == mine.id() && d.source == Source::Landlock),
            "foreign denials attributed:\n{all}"
        );
        // The unrelated denials did happen, and went to their own sessions.
        let report = other_c.finish();
        let all = fmt(&report);
        assert!(
            report.denials.iter().all(|d| d.pid == other.id())
                && report
                    .denials
                    .iter()
                    .any(|d| d.path.as_deref() == Some(odd.as_str())),
            "{all}"
        );
        let report = other_sc_c.finish();
        let all = fmt(&report);
        assert!(
            !report.denials.is_empty()
                && report
                    .denials
                    .iter()
                    .all(|d| d.source == Source::Seccomp && d.syscall == Some(SYS_MOUNT)),
            "{all}"
        );
    }

    /// The audit status, taken with the registry locked, or `None` if a collector of another
    /// process (another saferoot, a concurrent `cargo test`) is live and may change it, or a
    /// crashed one left audit enabled (the next collector to finish rightly disables it).
    fn quiet_status() -> Option<AuditStatus> {
        let dir = Path::new(REGISTRY_DIR);
        let _lock = lock_registry(dir).unwrap();
        let own = std::process::id().to_string();
        let foreign = fs::read_dir(dir).unwrap().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('.').next().unwrap_or("");
            !name.starts_with('.')
                && name != MARKER_NAME
                && pid != own
                && pid.parse::<i32>().is_ok_and(pid_alive)
        });
        let stale_marker = dir.join(MARKER_NAME).exists();
        (!foreign && !stale_marker).then(|| status().unwrap())
    }

    fn assert_restored(before: Option<AuditStatus>) {
        if let (Some(before), Some(after)) = (before, quiet_status()) {
            assert_eq!(after.enabled, before.enabled);
            assert_eq!(after.backlog_limit, before.backlog_limit);
        }
    }

    #[test]
    fn audit_setting_is_restored_with_overlapping_collectors() {
        let Some(_g) = serial() else { return };
        let before = quiet_status();
        let a = Collector::start().unwrap();
        let during = status().unwrap();
        assert_ne!(during.enabled, 0);
        if before.is_some_and(|b| b.enabled == 0) {
            assert!(during.backlog_limit == 0 || during.backlog_limit >= BACKLOG_LIMIT);
        }
        let b = Collector::start().unwrap();
        let _ = a.finish();
        assert_ne!(status().unwrap().enabled, 0, "b is still live");
        let _ = b.finish();
        assert_restored(before);

        // Dropped without finish: cleaned up all the same (and the other order of overlap).
        let before = quiet_status();
        let c = Collector::start().unwrap();
        let d = Collector::start().unwrap();
        drop(d);
        assert_ne!(status().unwrap().enabled, 0, "c is still live");
        drop(c);
        assert_restored(before);

        let own = format!("{}.", std::process::id());
        let leftovers: Vec<_> = fs::read_dir(REGISTRY_DIR)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&own))
            .collect();
        assert!(leftovers.is_empty(), "registry entries left: {leftovers:?}");
    }

    #[test]
    fn stale_registry_entries_are_ignored() {
        let Some(_g) = serial() else { return };
        let before = quiet_status();
        // A collector that crashed: its pid (above pid_max) does not exist.
        fs::create_dir_all(REGISTRY_DIR).unwrap();
        let stale = Path::new(REGISTRY_DIR).join(format!("2147483646.{}", std::process::id()));
        fs::write(&stale, "").unwrap();
        let _ = Collector::start().unwrap().finish();
        assert!(!stale.exists(), "stale entry not removed");
        assert_restored(before);
    }

    #[test]
    fn records_are_parsed() {
        let (ns, serial, body) = parse_header(
            "audit(1796308849.221:3): domain=1e2168826 blockers=fs.read_file \
             path=2F746D702F6D7920636174 dev=\"vda\" ino=737",
        )
        .unwrap();
        assert_eq!(ns, 1_796_308_849_221_000_000);
        assert_eq!(serial, 3);
        let (domain, d) = parse_landlock_access(body, ns).unwrap();
        assert_eq!(domain, 0x1e2168826);
        assert_eq!(d.path.as_deref(), Some("/tmp/my cat"));
        assert_eq!(d.access, "fs.read_file");

        let (_, d) =
            parse_landlock_access("domain=1 blockers=net.bind_tcp saddr=::1 src=5555", 0).unwrap();
        assert_eq!((d.addr.as_deref(), d.port), (Some("::1"), Some(5555)));
        let (_, d) = parse_landlock_access(
            "domain=1 blockers=scope.abstract_unix_socket path=006162632078",
            0,
        )
        .unwrap();
        assert_eq!(d.path.as_deref(), Some("@abc x"));
        let (_, d) =
            parse_landlock_access("domain=1 blockers=scope.signal opid=1 ocomm=\"init\"", 0)
                .unwrap();
        assert_eq!(d.target.as_deref(), Some("pid 1 (init)"));

        assert_eq!(
            parse_landlock_allocation(
                "domain=1e2168826 status=allocated mode=enforcing pid=21869 uid=0 exe=\"/x\""
            ),
            Some((0x1e2168826, 21869))
        );
        assert_eq!(
            parse_landlock_allocation("domain=1e2168826 status=deallocated"),
            None
        );

        let d = parse_seccomp(
            "auid=4294967295 uid=0 gid=0 ses=4294967295 pid=23474 comm=\"python3\" \
             exe=\"/usr/bin/python3.11\" sig=0 arch=c000003e syscall=165 compat=0 \
             ip=0x7f873e91f829 code=0x50000",
            5,
        )
        .unwrap();
        assert_eq!(
            (d.pid, d.comm.as_str(), d.syscall),
            (23474, "python3", Some(165))
        );
        #[cfg(target_arch = "x86_64")]
        {
            let rec = |arch: &str, nr: i64| {
                format!("pid=1 comm=\"node\" sig=0 arch={arch} syscall={nr} compat=0 code=0x50026")
            };
            assert!(is_clone3_fallback(&rec("c000003e", libc::SYS_clone3)));
            assert!(!is_clone3_fallback(&rec("c000003e", libc::SYS_clone)));
            assert!(
                !is_clone3_fallback(&rec("40000003", libc::SYS_clone3)),
                "i386"
            );
            assert!(!is_clone3_fallback(&rec("c000003e", 165)));
        }

        let s = parse_syscall_record(
            "arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=7 comm=6D7920636174 \
             exe=(null) key=(null)",
        )
        .unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.exe, s.syscall),
            (7, "my cat", None, Some(257))
        );
    }

    #[test]
    fn missing_serials_are_counted() {
        let mut t = SerialTracker::default();
        assert_eq!(t.missing(), 0);
        // Out of order and repeated (several records per event); 5 and 6 never come.
        for serial in [10, 11, 11, 13, 12, 12, 14, 17, 17] {
            t.see(serial);
        }
        assert_eq!(t.missing(), 2);
        for serial in 18..20_000 {
            t.see(serial);
        }
        t.see(15); // late beyond the window: not matched, stays missing
        assert_eq!(t.missing(), 2);
    }

    #[test]
    fn malformed_records_are_skipped() {
        for text in [
            "",
            "audit(",
            "audit(1.2:x): a=b",
            "audit(99999999999999999999.1:1): a",
            "audit(1.1:1): domain=zz blockers=fs.read_file",
            "audit(1.1:1): domain=1",
            "audit(1.1:1): pid=abc syscall=",
            "audit(1.1:1): path=ABC dest=999999 ==== =",
            "\u{0}\u{0}",
        ] {
            if let Some((ns, _, body)) = parse_header(text) {
                let _ = parse_landlock_access(body, ns);
                let _ = parse_landlock_allocation(body);
                let _ = parse_seccomp(body, ns);
                let _ = parse_syscall_record(body);
            }
        }
        let mut state = State::default();
        state.landlock_event(1, &[(AUDIT_LANDLOCK_ACCESS, "garbage".into())]);
        assert_eq!(state.malformed, 1);
        for bytes in [&[0u8; 3][..], &[255u8; 20][..], &[20, 0, 0, 0, 1, 0][..]] {
            let _ = NetlinkMessages::new(bytes).count();
        }
        assert_eq!(decode_untrusted("4A4b"), Some(b"JK".to_vec()));
        assert_eq!(decode_untrusted("\""), Some(b"\"".to_vec()));
    }
}
