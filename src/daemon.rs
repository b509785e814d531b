//! The mount daemon: opens the real project directory, mounts saferoot's filesystem over it,
//! and serves until unmounted.
//!
//! `saferoot mount` starts it as `saferoot __daemon DIR` with its stdout on a pipe; the daemon
//! writes one line, `ok <pid>` once the mount is live or `error: <message>`, then detaches
//! (new session, stdio on /dev/null, cwd `/`) so neither Ctrl-C in the terminal nor the end of
//! the parent stops it. It stops on `saferoot umount` (control socket), on SIGTERM/SIGINT/SIGHUP
//! (unmounting first), or when the kernel ends the FUSE connection.
//!
//! What this module does not do: sandboxing (run.rs) or any formatting for people.

use crate::control::{self, Reply, Request};
use anyhow::{bail, Context, Result};
use fuser::{Config, INodeNo, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use saferoot_fuse::{Options, SaferootFs, Shared};
use saferoot_snapshots::{gc, index, now_ns, Op, Record, Store};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// FUSE_SUPER_MAGIC: `statfs` type of any FUSE filesystem.
pub const FUSE_MAGIC: i64 = 0x6573_5546;

/// Appends warnings to `.saferoot/daemon.log` (the store is reachable only through the fd).
struct FileLogger(Mutex<std::fs::File>);

impl log::Log for FileLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // fuser warns about every request type a filesystem leaves to the kernel (locks,
        // ioctls); those are deliberate here, not news. Its debug lines (one per request)
        // are wanted when SAFEROOT_LOG asks for them.
        if m.target().starts_with("fuser") {
            m.level() == log::Level::Debug && m.level() <= log::max_level()
        } else {
            m.level() <= log::Level::Warn
        }
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(
                f,
                "{} {} {}",
                saferoot_snapshots::time::format_utc(now_ns()),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn start_logging(store: &Store) {
    let Ok(fd) = nix::fcntl::openat(
        store.dir(),
        "daemon.log",
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_APPEND
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    ) else {
        return;
    };
    let logger = Box::leak(Box::new(FileLogger(Mutex::new(std::fs::File::from(fd)))));
    if log::set_logger(logger).is_ok() {
        // SAFEROOT_LOG=debug logs every FUSE request (fuser's own log lines), for profiling:
        // count them per workload in daemon.log. Default: warnings and errors.
        let level = std::env::var("SAFEROOT_LOG")
            .ok()
            .and_then(|v| v.parse::<log::LevelFilter>().ok())
            .unwrap_or(log::LevelFilter::Warn);
        log::set_max_level(level);
    }
}

struct Running {
    dir: PathBuf,
    shared: Arc<Shared>,
    ctl: OwnedFd,
    notifier: fuser::Notifier,
    started_ns: i64,
    sessions: std::sync::Mutex<Vec<control::SessionInfo>>,
    /// Held by the control thread from an `umount` request until its reply is sent. The
    /// unmount ends the FUSE session, and the main thread takes this lock before the process
    /// exits, so the reply is never cut off by the exit (the client would otherwise see a
    /// closed connection, retry, find no daemon and no mount, and report "not mounted").
    answering_umount: Mutex<()>,
}

impl Running {
    /// The live sessions (dead ones dropped, and the FUSE guard told).
    fn live_sessions(&self) -> Vec<control::SessionInfo> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.len();
        s.retain(|x| {
            saferoot_fuse::guard::proc_stat(x.pid).is_some_and(|(_, t)| t == x.start_ticks)
        });
        if s.len() != before {
            self.update_guard(&s);
        }
        s.clone()
    }

    fn update_guard(&self, s: &[control::SessionInfo]) {
        self.shared.guard.set(
            s.iter()
                .map(|x| saferoot_fuse::guard::GuardedSession {
                    pid: x.pid,
                    start_ticks: x.start_ticks,
                    session: x.session,
                })
                .collect(),
        );
    }

    fn begin_session(
        &self,
        info: control::SessionInfo,
        join: bool,
        peer: Option<u32>,
    ) -> Result<()> {
        if peer != Some(info.pid) {
            bail!("a session can only be registered by its own `saferoot run` process");
        }
        if saferoot_fuse::guard::proc_stat(info.pid).map(|(_, t)| t) != Some(info.start_ticks) {
            bail!("process {} is not the one that asked", info.pid);
        }
        let live = self.live_sessions();
        if !join {
            if let Some(h) = live.first() {
                bail!(
                    "{} already has a live agent session: pid {}, `{}`, since {}                      (pass --join to run beside it)",
                    self.dir.display(),
                    h.pid,
                    h.cmd,
                    saferoot_snapshots::time::format_local_short(h.session)
                );
            }
        }
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|x| x.pid != info.pid);
        s.push(info);
        self.update_guard(&s);
        Ok(())
    }

    fn end_session(&self, pid: u32) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|x| x.pid != pid);
        self.update_guard(&s);
    }
}

fn record(store: &Store, op: Op) {
    let comm = "saferoot";
    let rec = Record::new(now_ns(), op, ".", std::process::id(), comm);
    if let Err(e) = store.journal().append(&rec) {
        log::warn!("journal: {e}");
    }
}

/// Entry point of `saferoot __daemon DIR`. Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    // Signals that stop the daemon are handled by one thread (below), not asynchronously.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(s);
    }
    let _ = stop.thread_block();
    // SAFETY: ignoring SIGPIPE installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
    }

    let (session, running) = match setup(dir) {
        Ok(x) => x,
        Err(e) => {
            println!("error: {e:#}");
            let _ = std::io::stdout().flush();
            return 1;
        }
    };
    println!("ok {}", std::process::id());
    let _ = std::io::stdout().flush();
    detach_stdio();

    let running = Arc::new(running);
    {
        let r = running.clone();
        let _ = std::thread::Builder::new()
            .name("saferoot-ctl".into())
            .spawn(move || control_loop(&r));
    }
    {
        let r = running.clone();
        let _ = std::thread::Builder::new()
            .name("saferoot-sig".into())
            .spawn(move || {
                if stop.wait().is_ok() {
                    let _ = unmount(&r, false).or_else(|_| unmount(&r, true));
                }
            });
    }
    let result = session.run();
    // An `umount` request that ended the session gets its answer before we exit.
    drop(
        running
            .answering_umount
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let store = running.shared.store().clone();
    // The mount is gone: nothing changes the tree any more.
    if let Err(e) = saferoot_snapshots::manifest::take(&store, "umount") {
        log::warn!("snapshot at unmount: {e}");
    }
    record(&store, Op::Umount);
    let _ = store.journal().sync();
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::warn!("FUSE session ended with an error: {e}");
            1
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    ) {
        for target in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe {
                libc::dup2(null.as_raw_fd(), target);
            }
        }
    }
}

fn setup(dir: &Path) -> Result<(fuser::Session<SaferootFs>, Running)> {
    let _ = nix::unistd::setsid();
    // Modes given by callers are already masked by the kernel; ours must not mask again.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let root: OwnedFd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {}", dir.display()))?;
    let sfs = nix::sys::statfs::fstatfs(root.as_fd())
        .with_context(|| format!("statfs {}", dir.display()))?;
    if sfs.filesystem_type().0 as i64 == FUSE_MAGIC && crate::mounts::saferoot_mounted(dir) {
        bail!("{} is already mounted by saferoot", dir.display());
    }
    std::env::set_current_dir("/").ok();

    let ctl = match control::bind(dir) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EADDRINUSE) => {
            bail!("{} is already mounted by saferoot", dir.display())
        }
        Err(e) => bail!("create control socket: {e}"),
    };
    let store = Arc::new(
        Store::open_or_create(root.as_fd(), dir)
            .with_context(|| format!("open the store of {}", dir.display()))?,
    );
    // A journal of another version is never appended to (nor rewritten): refuse to mount.
    saferoot_snapshots::journal::check_version(store.dir(), store.dir_path())
        .context("the journal was written by another version of saferoot")?;
    start_logging(&store);
    // Room for the journal to grow into when the disk fills up.
    store.journal().keep_reserve();
    if let Some(why) = saferoot_snapshots::recover::journal_lost(&store)? {
        bail!("{why}");
    }
    match saferoot_snapshots::recover::recover(&store) {
        Ok(0) => {}
        Ok(n) => {
            log::warn!("journaled {n} trash item(s) left unrecorded by a crash");
            // Still on the terminal of `mount` or `run` here (stdio is detached once live).
            eprintln!(
                "saferoot: journaled {n} trash item(s) that had no record (the daemon stopped, \
                 or the disk was full, before writing it); `saferoot trash list` shows them"
            );
        }
        Err(e) => log::warn!("recovering unjournaled trash items: {e}"),
    }
    // Before the mount, while nothing can change the tree through it; it precedes the `mount`
    // record. A failure costs only this restore point: mount anyway.
    if let Err(e) = saferoot_snapshots::manifest::take(&store, "mount") {
        log::warn!("snapshot at mount: {e}");
    }
    // Retention at every mount (never past the snapshot just taken), then the index: without
    // entries of what is gone, with those of what is new.
    let gc_base = run_gc(&store, "at mount");
    if let Some(note) = LAST_GC_NOTE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        eprintln!("saferoot: {note}");
    }
    if let Err(e) = index::prune(&store).and_then(|_| index::reindex(&store)) {
        log::warn!("re-indexing the trash: {e}");
    }
    // The snapshot of a large tree allocates and frees much: do not keep that as resident size.
    saferoot_fuse::node::trim_heap();
    let config = saferoot_snapshots::config::Config::load(&store)?;
    let fs = SaferootFs::new(
        root.try_clone().context("dup project fd")?,
        store.clone(),
        Options {
            config,
            ttl: cache_ttl(sfs.filesystem_type().0 as i64),
        },
    )
    .context("start the filesystem")?;
    let shared = fs.shared();
    let threads = request_threads();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("saferoot".into()),
        MountOption::Subtype("saferoot".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let session = fuser::Session::new(fs, dir, &config)
        .with_context(|| format!("mount FUSE over {}", dir.display()))?;
    record(&store, Op::Mount);
    start_auto_gc(store.clone(), gc_base);
    let notifier = session.notifier();
    shared.set_notifier(notifier.clone());
    Ok((
        session,
        Running {
            dir: dir.to_owned(),
            shared,
            ctl,
            notifier,
            started_ns: now_ns(),
            sessions: std::sync::Mutex::new(Vec::new()),
            answering_umount: Mutex::new(()),
        },
    ))
}

/// Collect by the configured policy; log what was freed or why not. Returns the store size
/// after (what automatic collection counts growth from).
/// What the last collection that dropped history did, for `mount` to tell on its terminal.
static LAST_GC_NOTE: Mutex<Option<String>> = Mutex::new(None);

fn run_gc(store: &Store, when: &str) -> u64 {
    let policy = match gc::policy(store, None, None) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("gc {when}: {e}");
            return gc::usage(store).total();
        }
    };
    let opts = gc::Options {
        retention: policy,
        dry_run: false,
        pid: std::process::id(),
        comm: "saferoot".into(),
    };
    match gc::gc(store, &opts) {
        Ok(rep) => {
            if rep.records_dropped > 0 {
                *LAST_GC_NOTE.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "gc {when} collected {} of history ({} record(s)) to keep the store to its \
                     policy ({}); the oldest restorable instant is now {} (`saferoot status`, \
                     [retention] in .saferoot/config.toml)",
                    saferoot_snapshots::human_bytes(rep.size_before.saturating_sub(rep.size_after)),
                    rep.records_dropped,
                    rep.policy,
                    rep.oldest_after
                        .map(saferoot_snapshots::time::format_utc)
                        .unwrap_or_default()
                ));
                log::warn!(
                    "gc {when}: freed {} ({} record(s)); oldest restorable instant now {}",
                    saferoot_snapshots::human_bytes(rep.size_before.saturating_sub(rep.size_after)),
                    rep.records_dropped,
                    rep.oldest_after
                        .map(saferoot_snapshots::time::format_utc)
                        .unwrap_or_default()
                );
            }
            if let Some(why) = &rep.cap_unmet {
                log::warn!("gc {when}: {why}");
            }
            rep.size_after
        }
        Err(e) => {
            log::warn!("gc {when}: {e}");
            gc::usage(store).total()
        }
    }
}

/// How often the daemon looks at how much the store grew.
const AUTO_GC_TICK: std::time::Duration = std::time::Duration::from_secs(5);
/// And collects by age anyway.
const AUTO_GC_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Collect whenever the store grows past its cap (estimated from what was added since the
/// last collection, measured then), and every few hours for age.
fn start_auto_gc(store: Arc<Store>, mut base: u64) {
    let spawned = std::thread::Builder::new()
        .name("saferoot-gc".into())
        .spawn(move || {
            let mut added = store.added_bytes();
            let mut last = std::time::Instant::now();
            loop {
                std::thread::sleep(AUTO_GC_TICK);
                let cap = gc::policy(&store, None, None)
                    .ok()
                    .and_then(|p| gc::cap_bytes(&store, &p));
                let grown = store.added_bytes().saturating_sub(added);
                let over = cap.is_some_and(|c| base + grown > c);
                // Still over the cap after collecting (nothing more was collectable): try
                // again only after real growth, not on every write.
                let worth = match cap {
                    Some(c) if base > c => grown > (c / 100).max(1 << 20),
                    _ => true,
                };
                if !(over && worth) && last.elapsed() < AUTO_GC_EVERY {
                    continue;
                }
                added = store.added_bytes();
                base = run_gc(&store, "(automatic)");
                last = std::time::Instant::now();
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start automatic gc: {e}");
    }
}

/// How long the kernel may cache names and attributes: `SAFEROOT_TTL_MS` if set, else the
/// filesystem's default.
fn cache_ttl(fs_type: i64) -> std::time::Duration {
    if let Some(ms) = std::env::var("SAFEROOT_TTL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return std::time::Duration::from_millis(ms.min(3_600_000));
    }
    if SHARED_FS_MAGICS.contains(&fs_type) {
        // Other machines (or the host of a VM) can change the files behind this daemon.
        return std::time::Duration::from_secs(1);
    }
    saferoot_fuse::Options::default().ttl
}

/// `statfs` types of filesystems that others can change underneath the mount: NFS, SMB/CIFS,
/// 9p, Ceph, AFS, and FUSE ones (sshfs, virtiofs): the kernel's cache is kept for 1 s there.
const SHARED_FS_MAGICS: [i64; 8] = [
    0x6969,      // NFS
    0x517B,      // SMB
    0xFE53_4D42, // SMB2
    0xFF53_4D42, // CIFS
    0x0102_1997, // 9p
    0x00C3_6400, // Ceph
    0x5346_414F, // AFS
    FUSE_MAGIC,
];

/// How many threads serve FUSE requests: `SAFEROOT_THREADS` if set (1 to 64), else one per
/// core plus one, at least 2 (a request that blocks — an fsync, a large pre-image copy — must
/// not stall the others; more threads than cores mostly add wake-up contention).
fn request_threads() -> usize {
    if let Some(n) = std::env::var("SAFEROOT_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3)
        .clamp(2, 16)
}

fn unmount(r: &Running, lazy: bool) -> Result<()> {
    let _ = r.shared.store().journal().sync();
    // umount2 directly: fuser's SessionUnmounter gives up its handle on the first attempt, so
    // after one EBUSY it would never try again. Once the kernel drops the mount, the session
    // loop sees ENODEV and ends.
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    // A path walk passing through the mount at that moment (a `find /tmp` elsewhere) holds it
    // for an instant: EBUSY is tried again for half a second before it is believed.
    let mut result = nix::mount::umount2(&r.dir, flags);
    for _ in 0..5 {
        if result != Err(nix::errno::Errno::EBUSY) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        result = nix::mount::umount2(&r.dir, flags);
    }
    match result {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => bail!(
            "{} is busy: a process still has its working directory or open files under it \
             (close them, or use `saferoot umount --lazy`)",
            r.dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("unmount {}", r.dir.display())),
    }
}

fn peer_allowed(fd: &OwnedFd) -> bool {
    match nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn control_loop(r: &Running) {
    loop {
        let conn = match nix::sys::socket::accept4(
            r.ctl.as_raw_fd(),
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        ) {
            // SAFETY: accept4 returned a new descriptor that we now own.
            Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
            Err(e) => {
                log::warn!("control socket: {e}");
                return;
            }
        };
        // One client at a time: a client that connects and says nothing must not stall others.
        control::set_timeout(&conn, std::time::Duration::from_secs(5));
        if !peer_allowed(&conn) {
            let _ = reply(
                &conn,
                Reply {
                    ok: false,
                    error: Some("permission denied".into()),
                    ..Default::default()
                },
                None,
            );
            continue;
        }
        let line = match control::recv_line(&conn) {
            Ok((line, _)) => line,
            Err(e) => {
                log::warn!("control socket: reading a request: {e}");
                continue;
            }
        };
        let req: Request = match serde_json::from_slice(&line) {
            Ok(req) => req,
            Err(e) => {
                let _ = reply(&conn, err_reply(format!("bad request: {e}")), None);
                continue;
            }
        };
        let base = Reply {
            ok: true,
            pid: std::process::id(),
            dir: Some(r.dir.clone()),
            started_ns: Some(r.started_ns),
            error: None,
            sessions: Vec::new(),
            gc: None,
            purge: None,
        };
        match req {
            Request::Status => {
                let rep = Reply {
                    sessions: r.live_sessions(),
                    ..base
                };
                let _ = reply(&conn, rep, None);
            }
            Request::BeginSession { info, join } => {
                let peer =
                    nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
                        .ok()
                        .map(|c| c.pid() as u32);
                let rep = match r.begin_session(info, join, peer) {
                    Ok(()) => base,
                    Err(e) => err_reply(format!("{e:#}")),
                };
                let _ = reply(&conn, rep, None);
            }
            Request::EndSession { pid } => {
                r.end_session(pid);
                let _ = reply(&conn, base, None);
            }
            Request::Fd => {
                let fd = r.shared.store().project().as_raw_fd();
                let _ = reply(&conn, base, Some(fd));
            }
            Request::Invalidate { paths } => {
                let paths: Vec<PathBuf> = paths
                    .iter()
                    .filter_map(|h| control::path_from_hex(h))
                    .collect();
                invalidate(r, &paths);
                let _ = reply(&conn, base, None);
            }
            Request::Gc {
                dry_run,
                keep_within,
                max_size,
            } => {
                let store = r.shared.store().clone();
                // In its own thread: the control socket keeps answering meanwhile.
                std::thread::spawn(move || {
                    let rep = gc::policy(&store, keep_within.as_deref(), max_size.as_deref())
                        .and_then(|retention| {
                            gc::gc(
                                &store,
                                &gc::Options {
                                    retention,
                                    dry_run,
                                    pid: std::process::id(),
                                    comm: "saferoot".into(),
                                },
                            )
                        });
                    let rep = match rep {
                        Ok(g) => Reply {
                            gc: Some(g),
                            ..base
                        },
                        Err(e) => err_reply(e.to_string()),
                    };
                    let _ = reply(&conn, rep, None);
                });
            }
            Request::Purge { paths, dry_run } => {
                let store = r.shared.store().clone();
                let paths: Vec<PathBuf> = paths
                    .iter()
                    .filter_map(|h| control::path_from_hex(h))
                    .collect();
                std::thread::spawn(move || {
                    let rep = match gc::purge(&store, &paths, dry_run) {
                        Ok(p) => Reply {
                            purge: Some(p),
                            ..base
                        },
                        Err(e) => err_reply(e.to_string()),
                    };
                    let _ = reply(&conn, rep, None);
                });
            }
            Request::Umount { lazy } => {
                let _answering = r.answering_umount.lock().unwrap_or_else(|p| p.into_inner());
                let res = unmount(r, lazy);
                let rep = match res {
                    Ok(()) => base,
                    Err(e) => err_reply(format!("{e:#}")),
                };
                let _ = reply(&conn, rep, None);
            }
        }
    }
}

fn err_reply(msg: String) -> Reply {
    Reply {
        ok: false,
        error: Some(msg),
        pid: std::process::id(),
        ..Default::default()
    }
}

fn reply(conn: &OwnedFd, rep: Reply, pass: Option<std::os::fd::RawFd>) -> nix::Result<()> {
    let line = serde_json::to_vec(&rep).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    control::send_line(conn, &line, pass)
}

/// Drop the kernel's cached view of `paths` (and their parent directories).
fn invalidate(r: &Running, paths: &[PathBuf]) {
    for (parent, name, node) in r.shared.cached_entries(paths) {
        let _ = r.notifier.inval_entry(INodeNo(parent), &name);
        let _ = r.notifier.inval_inode(INodeNo(parent), 0, 0);
        if let Some(n) = node {
            let _ = r.notifier.inval_inode(INodeNo(n), 0, 0);
        }
    }
}
