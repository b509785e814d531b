//! `saferoot run -- CMD`: mount if needed, run CMD in the project under the sandbox, wait,
//! unmount if this run mounted, exit with CMD's status.
//!
//! Order matters for the sandbox: the Landlock rule for the project is taken on the path *after*
//! the mount is live, so it names the FUSE root, never the real directory underneath.

use crate::cli;
use crate::control::{self, Request, SessionInfo};
use crate::policy::{self, Extra};
use crate::profile::{self, Profile};
use crate::sandbox;
use anyhow::{anyhow, bail, Context, Result};
use saferoot_snapshots::denials::Denial;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Find CMD the way the shell would (PATH search unless it contains a slash; relative paths
/// are relative to the project, where it will run). Errors use the shell's exit codes.
fn resolve_cmd(dir: &Path, cmd: &OsStr) -> Result<PathBuf, (i32, String)> {
    let shown = cmd.to_string_lossy().into_owned();
    let candidates: Vec<PathBuf> = if cmd.as_bytes().contains(&b'/') {
        vec![dir.join(cmd)]
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
            .as_bytes()
            .split(|&c| c == b':')
            .map(|d| {
                let d = if d.is_empty() { b".".as_slice() } else { d };
                Path::new(OsStr::from_bytes(d)).join(cmd)
            })
            .collect()
    };
    let mut not_executable = None;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() => {
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(c);
                }
                not_executable.get_or_insert(c);
            }
            Ok(_) => {
                not_executable.get_or_insert(c);
            }
            Err(_) => {}
        }
    }
    match not_executable {
        Some(p) => Err((126, format!("{}: not an executable file", p.display()))),
        None if cmd.as_bytes().contains(&b'/') => {
            Err((127, format!("{shown}: no such file or directory")))
        }
        None => Err((127, format!("{shown}: command not found"))),
    }
}

/// Everything `saferoot run` was asked for besides the command.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub no_sandbox: bool,
    pub profile: Option<String>,
    pub extra: Extra,
    pub user: Option<String>,
    pub join: bool,
    pub verbose: bool,
}

/// The account the agent runs as under `--user`.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    home: PathBuf,
    shell: PathBuf,
}

fn account(name: &str) -> Result<Account> {
    let u = nix::unistd::User::from_name(name)
        .map_err(|e| anyhow!("--user {name}: cannot look the account up: {e}"))?
        .ok_or_else(|| anyhow!("--user {name}: no such account"))?;
    if u.uid.is_root() {
        bail!("--user {name}: the agent's account must not be root (uid 0)");
    }
    let cname = CString::new(name).map_err(|_| anyhow!("--user: bad account name"))?;
    let groups = nix::unistd::getgrouplist(&cname, u.gid)
        .map_err(|e| anyhow!("--user {name}: cannot list its groups: {e}"))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(Account {
        name: name.to_string(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        groups,
        home: u.dir,
        shell: u.shell,
    })
}

pub fn run(dir: &Path, cmd: &[OsString], opts: &Options) -> Result<i32> {
    let Some(program) = cmd.first() else {
        bail!("no command given: use `saferoot run -- CMD [ARGS...]`");
    };
    // Check everything we can before touching the disk.
    if opts.no_sandbox
        && (opts.profile.is_some()
            || !opts.extra.allow_read.is_empty()
            || !opts.extra.allow_write.is_empty()
            || !opts.extra.allow_port.is_empty()
            || !opts.extra.allow_bind.is_empty())
    {
        bail!("--no-sandbox cannot be combined with --profile or --allow-*: there is no sandbox to adjust");
    }
    let profile = if opts.no_sandbox {
        None
    } else {
        Some(profile::load(
            opts.profile.as_deref().unwrap_or(profile::DEFAULT_PROFILE),
        )?)
    };
    let account = opts.user.as_deref().map(account).transpose()?;
    // CMD starts where the user is, when that is inside the project (through the mount), else
    // at the project's root.
    let workdir = std::env::current_dir()
        .ok()
        .filter(|c| c.starts_with(dir))
        .unwrap_or_else(|| dir.to_path_buf());
    let exe = match resolve_cmd(&workdir, program) {
        Ok(p) => p,
        Err((code, msg)) => {
            eprintln!("saferoot: {msg}");
            return Ok(code);
        }
    };
    if !opts.no_sandbox && sandbox::landlock_abi().is_none() {
        bail!(
            "Landlock is not available on this kernel (needed to keep the agent inside the \
             project); pass --no-sandbox to run without it"
        );
    }

    let mounted_here = match control::status(dir)? {
        Some(_) => None,
        None => Some(cli::mount(dir)?),
    };
    let result = session(
        dir,
        &workdir,
        &exe,
        cmd,
        opts,
        profile.as_ref(),
        account.as_ref(),
        mounted_here.as_ref().map(|(pid, _)| *pid),
    );
    if let Some((_pid, mut child)) = mounted_here {
        match cli::umount(dir, false) {
            Ok(()) => {
                let _ = child.wait();
            }
            Err(e) => {
                eprintln!("saferoot: {e:#}");
                eprintln!(
                    "saferoot: detaching the mount lazily: processes left running in {} keep \
                     being served (and protected) until they exit",
                    dir.display()
                );
                if let Err(e) = cli::umount(dir, true) {
                    eprintln!("saferoot: {e:#}");
                }
            }
        }
    }
    result
}

/// Journal the start of this session (`@start`) through the daemon's store; returns its time,
/// which is also the session's id.
fn record_run_start(dir: &Path, cmd: &[OsString]) -> Result<i64> {
    let (store, _) = cli::open_store(dir)?;
    let t = saferoot_snapshots::now_ns();
    let rec = saferoot_snapshots::Record {
        note: Some(command_line(cmd)),
        ..saferoot_snapshots::Record::new(
            t,
            saferoot_snapshots::Op::Run,
            ".",
            std::process::id(),
            "saferoot",
        )
    };
    store
        .journal()
        .append(&rec)
        .context("record the start of the session in the journal")?;
    Ok(t)
}

fn command_line(cmd: &[OsString]) -> String {
    let line: Vec<String> = cmd
        .iter()
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    line.join(" ")
}

/// `w` as a POSIX shell would need it typed: as is when it holds only safe characters, else in
/// single quotes (so `sh -c 'rm -rf src; ls'` is shown as the command it was).
fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The home directory of whoever runs saferoot: `$HOME`, else the account's, else `/`.
fn my_home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The agent's home: the `--user` account's, else ours. Home rules are relative to it and
/// `$HOME` in a profile's `set_env` stands for it.
fn agent_home(account: Option<&Account>) -> PathBuf {
    match account {
        Some(a) => a.home.clone(),
        None => my_home(),
    }
}

/// The sandbox, ready to enter in the child.
struct Sandbox {
    landlock: Arc<sandbox::Prepared>,
    seccomp: Arc<crate::seccomp::Filter>,
    built: policy::Built,
}

fn prepare_sandbox(
    dir: &Path,
    tmpdir: &Path,
    profile: &Profile,
    opts: &Options,
    account: Option<&Account>,
) -> Result<Sandbox> {
    let mount = sandbox::verify_fuse_mount(dir)?;
    let store = dir.join(saferoot_fuse::STORE_DIR);
    let home = agent_home(account);
    let others = match account {
        Some(_) => vec![my_home()],
        None => Vec::new(),
    };
    let built = policy::build(&policy::Session {
        profile,
        extra: &opts.extra,
        home: &home,
        other_homes: &others,
        mount: &mount,
        project: dir,
        store: &store,
        tmpdir,
        owner: account.map(|a| (a.uid, a.gid)),
    })?;
    let p = sandbox::prepare(&built.policy)?;
    if p.abi() < 6 {
        // Without ABI 6 scoping, the agent (root, like the daemon) could connect to the
        // daemon's abstract control socket and be handed the real directory.
        bail!(
            "this kernel's Landlock (ABI {}) cannot keep the agent away from saferoot's \
             control socket (needs ABI 6, Linux 6.12 or later); pass --no-sandbox to run \
             without the sandbox",
            p.abi()
        );
    }
    for l in p.limitations() {
        eprintln!("saferoot: warning: this kernel's Landlock cannot {l}");
    }
    let seccomp = crate::seccomp::build()?;
    Ok(Sandbox {
        landlock: Arc::new(p),
        seccomp: Arc::new(seccomp),
        built,
    })
}

/// The agent's environment: what the profile passes of ours, the account's identity under
/// `--user`, then what the profile sets (`set_env`, which wins over both); `TMPDIR` and
/// `SAFEROOT_DIR` are added by the caller.
fn agent_env(
    profile: Option<&Profile>,
    account: Option<&Account>,
) -> Result<Vec<(OsString, OsString)>> {
    let mut out: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let Some(k) = k.to_str() else { return false };
            match profile {
                Some(p) => profile::env_allowed(&p.env, k),
                // Unsandboxed: everything, as the user has it.
                None => true,
            }
        })
        .collect();
    if let Some(a) = account {
        out.retain(|(k, _)| !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME" | "SHELL")));
        out.push(("HOME".into(), a.home.clone().into()));
        out.push(("USER".into(), a.name.clone().into()));
        out.push(("LOGNAME".into(), a.name.clone().into()));
        out.push(("SHELL".into(), a.shell.clone().into()));
    }
    if let Some(p) = profile.filter(|p| !p.set_env.is_empty()) {
        let home = agent_home(account);
        out.retain(|(k, _)| !k.to_str().is_some_and(|k| p.set_env.contains_key(k)));
        for (k, v) in &p.set_env {
            let v = profile::expand_home(v, &home)
                .map_err(|e| anyhow!("profile {:?} ({}): set_env {k:?}: {e}", p.name, p.origin))?;
            out.push((k.into(), v));
        }
    }
    Ok(out)
}

fn start_ticks() -> u64 {
    saferoot_fuse::guard::proc_stat(std::process::id())
        .map(|(_, t)| t)
        .unwrap_or(0)
}

/// One agent session in DIR, mounted (by `daemon` when this run started it).
#[allow(clippy::too_many_arguments)] // each is a distinct input of the run; a struct would only rename them
fn session(
    dir: &Path,
    workdir: &Path,
    exe: &Path,
    cmd: &[OsString],
    opts: &Options,
    profile: Option<&Profile>,
    account: Option<&Account>,
    daemon: Option<u32>,
) -> Result<i32> {
    let env = agent_env(profile, account)?;
    let tmpdir = sandbox::private_tmpdir(dir)?;
    let cleanup_tmp = |t: &Path| {
        let _ = std::fs::remove_dir_all(t);
    };
    if let Some(a) = account {
        if let Err(e) = std::os::unix::fs::chown(&tmpdir, Some(a.uid), Some(a.gid)) {
            cleanup_tmp(&tmpdir);
            bail!("chown {}: {}", tmpdir.display(), cli::strip_os_error(&e));
        }
    }
    let sbx = match profile {
        None => {
            eprintln!(
                "saferoot: WARNING: --no-sandbox: {} can write anywhere, including around the \
                 mount; only changes made through {} are protected",
                cmd[0].to_string_lossy(),
                dir.display()
            );
            None
        }
        Some(p) => match prepare_sandbox(dir, &tmpdir, p, opts, account) {
            Ok(s) => Some(s),
            Err(e) => {
                cleanup_tmp(&tmpdir);
                return Err(e);
            }
        },
    };
    let features = sbx
        .as_ref()
        .map(|s| {
            let mut f = s.landlock.features();
            f.push(format!(
                "seccomp: {} system call rules ({} BPF instructions)",
                crate::seccomp::denied_summary().len(),
                s.seccomp.len()
            ));
            f
        })
        .unwrap_or_default();
    if opts.verbose {
        if let (Some(p), Some(s)) = (profile, &sbx) {
            print_verbose(p, s, &features, account);
        }
    }

    // Orphans of the agent come back to us rather than to init, so they stay recognizable as
    // the agent's (the FUSE guard walks parents) and can be cleaned up at the end.
    // SAFETY: plain prctl on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
    let session_t = match record_run_start(dir, cmd) {
        Ok(t) => t,
        Err(e) => {
            cleanup_tmp(&tmpdir);
            return Err(e);
        }
    };
    let info = SessionInfo {
        pid: std::process::id(),
        start_ticks: start_ticks(),
        session: session_t,
        cmd: command_line(cmd),
        sandboxed: sbx.is_some(),
        profile: profile.map(|p| p.name.clone()),
        features: features.clone(),
    };
    match control::call(
        dir,
        &Request::BeginSession {
            info,
            join: opts.join,
        },
    ) {
        Ok(Some((rep, _))) if rep.ok => {}
        Ok(Some((rep, _))) => {
            cleanup_tmp(&tmpdir);
            bail!(
                "{}",
                rep.error
                    .unwrap_or_else(|| "the daemon refused the session".into())
            );
        }
        Ok(None) => {
            cleanup_tmp(&tmpdir);
            bail!("{} is no longer mounted", dir.display());
        }
        Err(e) => {
            cleanup_tmp(&tmpdir);
            return Err(e);
        }
    }

    let collector = if sbx.is_some() {
        match crate::audit::Collector::start() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("saferoot: note: Landlock and seccomp denials will not be listed: {e}");
                None
            }
        }
    } else {
        None
    };

    let mut command = Command::new(exe);
    command
        .arg0(&cmd[0])
        .args(&cmd[1..])
        .current_dir(workdir)
        .env_clear()
        .envs(env)
        .env("TMPDIR", &tmpdir)
        .env("SAFEROOT_DIR", dir);
    let landlock = sbx.as_ref().map(|s| s.landlock.clone());
    let seccomp = sbx.as_ref().map(|s| s.seccomp.clone());
    let ids = account.map(|a| (a.uid, a.gid, a.groups.clone()));
    // Give the agent its own audit session: writing the login uid makes the kernel assign a
    // fresh session id, inherited by everything the agent starts, so the audit collector can
    // tell the agent's seccomp denials from others' even after the process is gone.
    let loginuid_path = CString::new("/proc/self/loginuid").expect("no NUL");
    let loginuid_value = nix::unistd::getuid().as_raw().to_string().into_bytes();
    let want_ses = collector.is_some();
    // SAFETY: the closure only makes async-signal-safe calls (signal, setgroups/setgid/setuid,
    // prctl, landlock and seccomp system calls, close_range); nothing allocates.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            // If `run` dies (kill -9), the agent must not go on unwatched.
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            if want_ses {
                // Best effort: without it, attribution falls back to the process tree.
                let fd = libc::open(loginuid_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, loginuid_value.as_ptr().cast(), loginuid_value.len());
                    libc::close(fd);
                }
            }
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(*gid, *gid, *gid) != 0
                    || libc::setresuid(*uid, *uid, *uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(l) = &landlock {
                l.apply_in_child()?;
            }
            // Descriptors inherited from whoever started saferoot (a shell's descriptor on the
            // real project directory, say) must not reach the agent: mark them all
            // close-on-exec (closing them now would also close std's exec-error pipe).
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(f) = &seccomp {
                f.apply_in_child()?;
            }
            Ok(())
        });
    }
    // While CMD runs, Ctrl-C is for CMD; we stay to clean up afterwards.
    // SAFETY: ignoring signals installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = command.spawn().and_then(|mut c| {
        if let Some(col) = &collector {
            col.watch(c.id());
        }
        c.wait()
    });
    // What the agent left running would outlive the session unguarded: stop it.
    kill_descendants(daemon);
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let _ = control::call(
        dir,
        &Request::EndSession {
            pid: std::process::id(),
        },
    );
    cleanup_tmp(&tmpdir);
    let report = collector.map(|c| c.finish());
    let lost_note = report.as_ref().and_then(|r| {
        (r.lost > 0).then(|| {
            format!(
                "{} denial records were lost by the kernel's audit queue",
                r.lost
            )
        })
    });
    let kernel_denials: Vec<Denial> = report
        .map(|r| r.denials)
        .unwrap_or_default()
        .into_iter()
        .map(|d| to_denial(d, session_t))
        .collect();
    if let Ok((store, _)) = cli::open_store(dir) {
        if let Err(e) = saferoot_snapshots::denials::append(&store, &kernel_denials) {
            eprintln!("saferoot: warning: cannot record the session's denials: {e}");
        }
    }
    let status = status.with_context(|| format!("run {}", exe.display()))?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    if let Err(e) = summary(dir, session_t, code, sbx.as_ref(), account, lost_note) {
        eprintln!("saferoot: warning: cannot summarize the session: {e:#}");
    }
    Ok(code)
}

fn print_verbose(p: &Profile, s: &Sandbox, features: &[String], account: Option<&Account>) {
    let chain = if p.chain.len() > 1 {
        format!(", extends {}", p.chain[1..].join(" → "))
    } else {
        String::new()
    };
    eprintln!("saferoot: profile {} ({}{chain})", p.name, p.origin);
    if let Some(a) = account {
        eprintln!(
            "saferoot: agent runs as {} (uid {}, gid {})",
            a.name, a.uid, a.gid
        );
    }
    for f in features {
        eprintln!("saferoot: enforced: {f}");
    }
    let pol = &s.built.policy;
    for (label, list) in [
        ("read+exec", &pol.read_exec),
        ("read+write", &pol.write),
        ("device", &pol.write_files),
    ] {
        for path in list {
            let origin = s
                .built
                .origins
                .iter()
                .find(|(x, _)| x == path)
                .map(|(_, o)| format!(" ({o})"))
                .unwrap_or_default();
            eprintln!("saferoot: {label}: {}{origin}", cli::shown(path));
        }
    }
    let ports = |v: &[u16]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    eprintln!("saferoot: tcp connect: {}", ports(&pol.connect));
    eprintln!("saferoot: tcp bind: {}", ports(&pol.bind));
    if !p.set_env.is_empty() {
        let names: Vec<&str> = p.set_env.keys().map(String::as_str).collect();
        eprintln!(
            "saferoot: environment set by the profile: {}",
            names.join(", ")
        );
    }
    for c in &s.built.created {
        eprintln!("saferoot: created {}", cli::shown(c));
    }
}

/// Send SIGKILL to every process that descends from this one (the agent's leftovers; as a
/// child subreaper we are the ancestor of all of them) and reap them; spare the mount daemon
/// this run started.
fn kill_descendants(spare: Option<u32>) {
    let me = std::process::id();
    for _round in 0..20 {
        let mut found = false;
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me
                    || !descends_from(pid, me)
                    || spare.is_some_and(|d| pid == d || descends_from(pid, d))
                {
                    continue;
                }
                found = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Reap our children that died (the agent's orphans were re-parented to us), never
        // the daemon: `run` waits for it after unmounting.
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if spare == Some(pid) {
                    continue;
                }
                if saferoot_fuse::guard::proc_stat(pid).is_some_and(|(pp, _)| pp == me) {
                    let _ = nix::sys::wait::waitpid(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    );
                }
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..128 {
        match saferoot_fuse::guard::proc_stat(pid) {
            Some((ppid, _)) if ppid == ancestor => return true,
            Some((ppid, _)) if ppid > 1 => pid = ppid,
            _ => return false,
        }
    }
    false
}

fn to_denial(d: crate::audit::Denial, session: i64) -> Denial {
    let syscall = d.syscall.map(|n| {
        crate::seccomp::syscall_name(n)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{n}"))
    });
    Denial {
        t: d.time_ns,
        session,
        by: match d.source {
            crate::audit::Source::Landlock => "landlock".into(),
            crate::audit::Source::Seccomp => "seccomp".into(),
        },
        access: d.access,
        // A signal or trace target is a process, not a path; show it where the path goes.
        path: d.path.or(d.target.map(|t| format!("process {t}"))),
        port: d.port,
        addr: d.addr,
        syscall,
        pid: d.pid,
        comm: d.comm,
        exe: d.exe,
    }
}

/// Where a denial's remedy is judged from: the agent's home (for profile lines and secrets) and
/// the real project directory (no write rule may cover it).
#[derive(Clone, Copy, Default)]
pub struct Places<'a> {
    pub home: Option<&'a Path>,
    pub project: Option<&'a Path>,
}

/// How a denial could be allowed: the flag, and the profile line; or why saferoot will not
/// allow it (a secret, a protected path, a forbidden system call, a directory holding the
/// project).
pub fn remedy(d: &Denial, at: Places) -> String {
    let home = at.home;
    let home_rel = |p: &Path| -> Option<PathBuf> {
        home.and_then(|h| p.strip_prefix(h).ok().map(Path::to_path_buf))
    };
    match d.by.as_str() {
        "fuse" => "a protected path: the sandbox never lets an agent change it (it acts outside \
                   the sandbox); do it yourself after the session"
            .to_string(),
        "seccomp" => "a forbidden system call: saferoot does not allow it for agents".to_string(),
        _ if d.access.starts_with("net.connect") => match d.port {
            Some(p) => format!("allow with --allow-port {p} (profile: connect = [{p}])"),
            None => "a network connection".to_string(),
        },
        _ if d.access.starts_with("net.bind") => match d.port {
            Some(p) => format!("allow with --allow-bind {p} (profile: bind = [{p}])"),
            None => "a network bind".to_string(),
        },
        _ if d.access == "fs.make_char" || d.access == "fs.make_block" => {
            "a device node: no rule lets an agent create one (it would open the device to \
             whatever opens it after the session)"
                .to_string()
        }
        _ if d.access.starts_with("scope.") || d.access.starts_with("ptrace") => {
            "a process outside the sandbox: agents may not trace, inspect, signal or connect to it"
                .to_string()
        }
        _ => {
            let Some(path) = d.path.as_deref().map(Path::new) else {
                return "no path reported".to_string();
            };
            let writes = !d.access.starts_with("fs.read") && d.access != "fs.execute";
            // Creating or removing a name needs rights on the directory, which is what Landlock
            // reports for those (`mkdir /tmp/x` is denied on /tmp); a path that is not a
            // directory is taken for the name itself.
            let target: PathBuf = if writes
                && (d.access.starts_with("fs.make") || d.access.starts_with("fs.remove"))
                && !path.is_dir()
            {
                path.parent().unwrap_or(path).to_path_buf()
            } else {
                path.to_path_buf()
            };
            if writes && at.project.is_some_and(|p| p.starts_with(&target)) {
                return format!(
                    "{} holds the project, so no write rule may cover it (it would reach the \
                     real files under the mount): let the agent use its $TMPDIR, or create a \
                     directory for it there and allow that with --allow-write",
                    target.display()
                );
            }
            if let Some(rel) = home_rel(&target) {
                if profile::SECRETS.iter().any(|s| rel.starts_with(s)) {
                    return format!(
                        "a secret: no profile can allow it (only an explicit --allow-read {})",
                        target.display()
                    );
                }
            }
            if writes && is_block_or_char_device(&target) {
                return format!(
                    "a device: allow with --allow-write {} only if the agent is meant to write \
                     to the device itself",
                    target.display()
                );
            }
            let flag = if writes {
                "--allow-write"
            } else {
                "--allow-read"
            };
            let line = match home_rel(&target) {
                Some(rel) => format!(
                    "{} = [{:?}]",
                    if writes { "home_write" } else { "home_read" },
                    rel.display().to_string()
                ),
                None => format!(
                    "{} = [{:?}]",
                    if writes { "write" } else { "read" },
                    target.display().to_string()
                ),
            };
            format!("allow with {flag} {} (profile: {line})", target.display())
        }
    }
}

/// Whether `p` is a character or block device (a disk, a terminal): a write rule on it writes
/// to the device, not to a file.
fn is_block_or_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
}

/// What a denial was about, for grouping: the path or address:port.
fn denial_target(d: &Denial) -> String {
    if let Some(p) = &d.path {
        return cli::shown_text(p);
    }
    match (&d.addr, d.port) {
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (None, Some(p)) => format!("port {p}"),
        _ => d
            .syscall
            .as_deref()
            .map(|s| format!("{s}()"))
            .unwrap_or_else(|| "?".into()),
    }
}

/// One line of a denial listing: (target, "by access", count, commands of the denied
/// processes, remedy).
pub type Group = (String, String, usize, String, String);

/// The denials gathered under one line.
struct Acc {
    n: usize,
    comms: Vec<String>,
    remedy: String,
    /// Process lines: the distinct target pids.
    pids: BTreeSet<u32>,
}

impl Acc {
    fn new(remedy: String) -> Self {
        Acc {
            n: 0,
            comms: Vec::new(),
            remedy,
            pids: BTreeSet::new(),
        }
    }

    fn add(&mut self, d: &Denial) {
        self.n += 1;
        if !self.comms.contains(&d.comm) && self.comms.len() < 4 {
            self.comms.push(d.comm.clone());
        }
    }

    fn merge(&mut self, o: Acc) {
        self.n += o.n;
        for c in o.comms {
            if !self.comms.contains(&c) && self.comms.len() < 4 {
                self.comms.push(c);
            }
        }
        self.pids.extend(o.pids);
    }
}

/// Group denials by (target, source, access), one line each: every path, port and process
/// (`saferoot denials`).
pub fn grouped(denials: &[Denial], at: Places) -> Vec<Group> {
    let mut groups: BTreeMap<(String, String, String), Acc> = BTreeMap::new();
    for d in denials {
        let key = (denial_target(d), d.by.clone(), d.access.clone());
        groups
            .entry(key)
            .or_insert_with(|| Acc::new(remedy(d, at)))
            .add(d);
    }
    groups
        .into_iter()
        .map(|((target, by, access), a)| {
            (
                target,
                format!("{by} {access}"),
                a.n,
                a.comms.join(", "),
                a.remedy,
            )
        })
        .collect()
}

/// A denial about another process (Landlock's ptrace and signal scoping), whose target
/// [`to_denial`] recorded as the path `process pid N (comm)`: (N, comm if known).
fn process_target(d: &Denial) -> Option<(u32, Option<&str>)> {
    if d.by != "landlock" {
        return None;
    }
    let rest = d.path.as_deref()?.strip_prefix("process pid ")?;
    let (pid, comm) = match rest.split_once(' ') {
        Some((pid, c)) => (
            pid,
            c.strip_prefix('(')
                .and_then(|c| c.strip_suffix(')'))
                .filter(|c| !c.is_empty()),
        ),
        None => (rest, None),
    };
    Some((pid.parse().ok()?, comm))
}

/// In the summary, the target command names shown on a line of their own per kind of process
/// denial; the others are merged into "other processes".
const NAMED_PROCESS_LINES: usize = 3;

/// The lines of the end-of-session summary: those of [`grouped`], except that denials about
/// other processes are merged, per kind of denial, by the target's command name (`ps aux`
/// under Landlock's ptrace scoping is refused once per process it reads, each a different
/// pid). The [`NAMED_PROCESS_LINES`] names with the most denials get a line each, the rest
/// (and targets of unknown name) one "other processes" line; a name is not merged when that
/// would only save one line. The second value says whether any line covers several processes.
pub fn summary_groups(denials: &[Denial], at: Places) -> (Vec<Group>, bool) {
    let (procs, rest): (Vec<&Denial>, Vec<&Denial>) =
        denials.iter().partition(|d| process_target(d).is_some());
    let rest: Vec<Denial> = rest.into_iter().cloned().collect();
    let mut out = grouped(&rest, at);
    let mut merged = false;
    // (by, access) → target comm (None: unknown) → denials.
    type ByComm = BTreeMap<Option<String>, Acc>;
    let mut kinds: BTreeMap<(String, String), ByComm> = BTreeMap::new();
    for d in procs {
        let Some((pid, comm)) = process_target(d) else {
            continue;
        };
        let a = kinds
            .entry((d.by.clone(), d.access.clone()))
            .or_default()
            .entry(comm.map(cli::shown_text))
            .or_insert_with(|| Acc::new(remedy(d, at)));
        a.add(d);
        a.pids.insert(pid);
    }
    for ((by, access), comms) in kinds {
        let mut named: Vec<(String, Acc)> = Vec::new();
        let mut other: Option<Acc> = None;
        for (comm, a) in comms {
            match comm {
                Some(c) => named.push((c, a)),
                None => other = Some(a),
            }
        }
        // Most denials first; by name among equals (the map gave them in name order).
        named.sort_by_key(|x| std::cmp::Reverse(x.1.n));
        if named.len() > NAMED_PROCESS_LINES + 1 {
            for (_, a) in named.drain(NAMED_PROCESS_LINES..) {
                match &mut other {
                    Some(o) => o.merge(a),
                    None => other = Some(a),
                }
            }
        }
        let what = format!("{by} {access}");
        let lines = named
            .into_iter()
            .map(|(c, a)| {
                let target = match a.pids.len() {
                    1 => format!("process {c} (pid {})", a.pids.first().unwrap_or(&0)),
                    k => format!("processes named {c} ({k} pids)"),
                };
                (target, a)
            })
            .chain(other.map(|a| {
                let target = match a.pids.len() {
                    1 => format!("process pid {}", a.pids.first().unwrap_or(&0)),
                    k => format!("other processes ({k} pids)"),
                };
                (target, a)
            }));
        for (target, a) in lines {
            merged |= a.pids.len() > 1;
            out.push((target, what.clone(), a.n, a.comms.join(", "), a.remedy));
        }
    }
    (out, merged)
}

/// The end-of-session report on stderr: what changed, how to undo it, what was refused.
fn summary(
    dir: &Path,
    session_t: i64,
    code: i32,
    sbx: Option<&Sandbox>,
    account: Option<&Account>,
    lost_note: Option<String>,
) -> Result<()> {
    let (store, _) = cli::open_store(dir)?;
    let report = saferoot_snapshots::restore::diff(&store, session_t, None, &[])?;
    let (mut added, mut deleted, mut changed) = (0usize, 0usize, 0usize);
    for c in &report.changes {
        match c.mark {
            saferoot_snapshots::restore::Mark::Added => added += 1,
            saferoot_snapshots::restore::Mark::Removed => deleted += 1,
            _ => changed += 1,
        }
    }
    // diff's marks read from the session's start: "added" = exists now only.
    let (created, removed) = (added, deleted);
    let mut line = format!(
        "saferoot: session ended (exit {code}): {changed} changed, {removed} deleted, {created} created"
    );
    if changed + removed + created > 0 {
        line.push_str(" — `saferoot restore @start` undoes it, `saferoot diff @start` lists it");
    }
    eprintln!("{line}");
    if sbx.is_none() {
        return Ok(());
    }
    let denials: Vec<Denial> = saferoot_snapshots::denials::read(&store)?
        .into_iter()
        .filter(|d| d.session == session_t)
        .collect();
    if let Some(n) = lost_note {
        eprintln!("saferoot: warning: {n}");
    }
    if denials.is_empty() {
        return Ok(());
    }
    let home = account
        .map(|a| a.home.clone())
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    let at = Places {
        home: home.as_deref(),
        project: Some(dir),
    };
    let (groups, merged) = summary_groups(&denials, at);
    eprintln!(
        "saferoot: {} denied access{} ({} {}):",
        denials.len(),
        if denials.len() == 1 { "" } else { "es" },
        groups.len(),
        if merged {
            "groups, other processes merged by name; `saferoot denials` lists each"
        } else {
            "distinct; `saferoot denials` shows them again"
        }
    );
    for (target, what, n, comms, remedy) in groups.iter().take(30) {
        let times = if *n > 1 {
            format!(", {n}×")
        } else {
            String::new()
        };
        eprintln!("  {target}  [{what}, by {comms}{times}]\n      {remedy}");
    }
    if groups.len() > 30 {
        eprintln!("  … and {} more", groups.len() - 30);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(by: &str, access: &str, path: &str, comm: &str) -> Denial {
        Denial {
            t: 0,
            session: 1,
            by: by.into(),
            access: access.into(),
            path: Some(path.into()),
            port: None,
            addr: None,
            syscall: None,
            pid: 42,
            comm: comm.into(),
            exe: None,
        }
    }

    /// Landlock reports creating and removing a name on the directory: the remedy names that
    /// directory (not its parent), and refuses one that holds the project.
    #[test]
    fn remedies_name_the_directory_and_never_one_holding_the_project() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().join("proj");
        std::fs::create_dir_all(project.join("src")).unwrap();
        let at = Places {
            home: None,
            project: Some(&project),
        };
        let root = t.path().to_str().unwrap();
        let r = remedy(&denial("landlock", "fs.make_dir", root, "mkdir"), at);
        assert!(r.starts_with(&format!("{root} holds the project")), "{r}");
        let r = remedy(&denial("landlock", "fs.make_reg", "/etc", "touch"), at);
        assert_eq!(
            r,
            "allow with --allow-write /etc (profile: write = [\"/etc\"])"
        );
        let r = remedy(&denial("landlock", "fs.remove_file", "/etc", "rm"), at);
        assert!(r.starts_with("allow with --allow-write /etc "), "{r}");
        // A path that is no directory is the name itself: the rule goes on its directory.
        let f = t.path().join("other/file");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, b"").unwrap();
        let r = remedy(
            &denial("landlock", "fs.remove_file", f.to_str().unwrap(), "rm"),
            at,
        );
        let want = format!("allow with --allow-write {}/other ", root);
        assert!(r.starts_with(&want), "{r}");
        // A write to a device is named as one (the flag would reach the device itself).
        let r = remedy(&denial("landlock", "fs.write_file", "/dev/full", "sh"), at);
        assert!(
            r.starts_with("a device: allow with --allow-write /dev/full only if"),
            "{r}"
        );
        let r = remedy(&denial("landlock", "fs.read_file", "/dev/full", "cat"), at);
        assert!(r.starts_with("allow with --allow-read /dev/full "), "{r}");
        // Reading is not writing: a read of the directory holding the project can be allowed.
        let r = remedy(&denial("landlock", "fs.read_dir", root, "ls"), at);
        assert!(
            r.starts_with(&format!("allow with --allow-read {root} ")),
            "{r}"
        );
    }

    /// What `ps aux` under Landlock's ptrace scoping yields, plus a signal and a file denial.
    #[test]
    fn summary_merges_denials_about_other_processes() {
        let ptrace = |target: &str| denial("landlock", "ptrace", target, "ps");
        let mut ds = vec![
            denial("landlock", "fs.read_file", "/home/me/.config/x", "cat"),
            ptrace("process pid 10 (sshd)"),
            ptrace("process pid 10 (sshd)"),
            ptrace("process pid 11 (sshd)"),
            ptrace("process pid 1 (systemd)"),
            ptrace("process pid 1 (systemd)"),
            ptrace("process pid 200"),
            denial(
                "landlock",
                "scope.signal",
                "process pid 1 (systemd)",
                "kill",
            ),
        ];
        for i in 0..10 {
            ds.push(ptrace(&format!("process pid {} (kworker/0:{i})", 100 + i)));
        }
        let (lines, merged) = summary_groups(
            &ds,
            Places {
                home: Some(Path::new("/home/me")),
                project: None,
            },
        );
        assert!(merged);
        let shown: Vec<(&str, &str, usize, &str)> = lines
            .iter()
            .map(|(t, w, n, c, _)| (t.as_str(), w.as_str(), *n, c.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("/home/me/.config/x", "landlock fs.read_file", 1, "cat"),
                ("processes named sshd (2 pids)", "landlock ptrace", 3, "ps"),
                ("process systemd (pid 1)", "landlock ptrace", 2, "ps"),
                ("process kworker/0:0 (pid 100)", "landlock ptrace", 1, "ps"),
                // kworker/0:1..9 and the nameless pid 200.
                ("other processes (10 pids)", "landlock ptrace", 10, "ps"),
                (
                    "process systemd (pid 1)",
                    "landlock scope.signal",
                    1,
                    "kill"
                ),
            ]
        );
        assert!(lines[4].4.starts_with("a process outside the sandbox"));
        assert_eq!(lines.iter().map(|l| l.2).sum::<usize>(), ds.len());

        // `saferoot denials` still lists every process on its own line.
        let all = grouped(
            &ds,
            Places {
                home: Some(Path::new("/home/me")),
                project: None,
            },
        );
        assert_eq!(all.len(), 1 + 14 + 1, "file, 14 pids traced, 1 signalled");
        assert!(all
            .iter()
            .any(|l| l.0 == "process pid 10 (sshd)" && l.2 == 2 && l.1 == "landlock ptrace"));

        // A few names are not merged at all; nothing else changes.
        let few = vec![
            ptrace("process pid 10 (sshd)"),
            ptrace("process pid 11 (sshd)"),
            ptrace("process pid 1 (systemd)"),
            denial("fuse", "unlink", "process pid 3 (x)", "rm"),
        ];
        let (lines, merged) = summary_groups(&few, Places::default());
        assert!(merged, "sshd covers two pids");
        let targets: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(
            targets,
            [
                "process pid 3 (x)",
                "processes named sshd (2 pids)",
                "process systemd (pid 1)"
            ]
        );
        let (lines, merged) = summary_groups(&few[2..], Places::default());
        assert!(!merged);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            summary_groups(&few[3..], Places::default()).0,
            grouped(&few[3..], Places::default())
        );
    }
}

#[cfg(test)]
mod shell_word_tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_would_need_them() {
        let cmd: Vec<OsString> = ["sh", "-c", "rm -rf src; echo 'done'", "", "a=b"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            command_line(&cmd),
            r#"sh -c 'rm -rf src; echo '\''done'\''' '' a=b"#
        );
    }
}
