//! `saferoot run -- CMD`: mount if needed, run CMD in the project under the sandbox, wait,
//! unmount if this run mounted, exit with CMD's status.
//!
//! Order matters for the sandbox: the Landlock rule for the project is taken on the path *after*
//! the mount is live, so it names the FUSE root, never the real directory underneath.

use crate::cli;
use crate::sandbox;
use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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

pub fn run(dir: &Path, cmd: &[OsString], no_sandbox: bool) -> Result<i32> {
    let Some(program) = cmd.first() else {
        bail!("no command given: use `saferoot run -- CMD [ARGS...]`");
    };
    // Check everything we can before touching the disk.
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
    if !no_sandbox && sandbox::landlock_abi().is_none() {
        bail!(
            "Landlock is not available on this kernel (needed to keep the agent inside the \
             project); pass --no-sandbox to run without it"
        );
    }

    let mounted_here = match crate::control::status(dir)? {
        Some(_) => None,
        None => Some(cli::mount(dir)?),
    };
    let result = run_mounted(dir, &workdir, &exe, cmd, no_sandbox);
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

/// Journal the start of this session (`@start`) through the daemon's store.
fn record_run_start(dir: &Path, cmd: &[OsString]) -> Result<()> {
    let (store, _) = cli::open_store(dir)?;
    let line: Vec<_> = cmd.iter().map(|a| a.to_string_lossy()).collect();
    let rec = saferoot_snapshots::Record {
        note: Some(line.join(" ")),
        ..saferoot_snapshots::Record::new(
            saferoot_snapshots::now_ns(),
            saferoot_snapshots::Op::Run,
            ".",
            std::process::id(),
            "saferoot",
        )
    };
    store
        .journal()
        .append(&rec)
        .context("record the start of the session in the journal")
}

fn run_mounted(
    dir: &Path,
    workdir: &Path,
    exe: &Path,
    cmd: &[OsString],
    no_sandbox: bool,
) -> Result<i32> {
    let tmpdir = sandbox::private_tmpdir(dir)?;
    let prepared = if no_sandbox {
        eprintln!(
            "saferoot: WARNING: --no-sandbox: {} can write anywhere, including around the \
             mount; only changes made through {} are protected",
            cmd[0].to_string_lossy(),
            dir.display()
        );
        None
    } else {
        let mount = sandbox::verify_fuse_mount(dir)?;
        let policy = sandbox::Policy::for_project(dir, &tmpdir);
        let store = dir.join(saferoot_fuse::STORE_DIR);
        sandbox::ensure_no_write_rule_contains(&policy, &[dir, &store], &[mount])?;
        let p = sandbox::prepare(&policy)?;
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
        Some(Arc::new(p))
    };

    if let Err(e) = record_run_start(dir, cmd) {
        let _ = std::fs::remove_dir_all(&tmpdir);
        return Err(e);
    }
    let mut command = Command::new(exe);
    command
        .arg0(&cmd[0])
        .args(&cmd[1..])
        .current_dir(workdir)
        .env("TMPDIR", &tmpdir)
        .env("SAFEROOT_DIR", dir);
    let p2 = prepared.clone();
    // SAFETY: the closure only makes async-signal-safe calls (signal, prctl, landlock syscalls).
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            if let Some(p) = &p2 {
                p.apply_in_child()?;
            }
            Ok(())
        });
    }
    // While CMD runs, Ctrl-C is for CMD; we stay to unmount afterwards.
    // SAFETY: ignoring signals installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = command.spawn().and_then(|mut c| c.wait());
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let _ = std::fs::remove_dir_all(&tmpdir);
    let status = status.with_context(|| format!("run {}", exe.display()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    })
}
