//! The command line: argument parsing, and each subcommand's work at the CLI edge
//! (resolving the directory, talking to the daemon, printing for people).

use crate::control::{self, Request};
use crate::mounts;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use saferoot_snapshots::{journal, restore, time, Op, Store};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TIME_HELP: &str =
    "TIME is one of: an RFC 3339 instant (2026-12-03T12:34:56.123456789Z, \
or with an offset such as +01:00); a local date and time (2026-12-03 10:42[:05]); a local time \
today (10:42 or 10:42:05); a duration ago: 90s, 10m, 2h, 3d, 1h30m (m is minutes); @N, the \
instant snapshot N was taken (`saferoot snapshots` lists them); or @start, the moment the current \
or last `saferoot run` session started (`saferoot restore @start` undoes everything it did).";

#[derive(Parser, Debug)]
#[command(
    name = "saferoot",
    version,
    about = "Make it safe to hand a project directory to an AI coding agent",
    long_about = "saferoot mounts a project directory over itself. Every deletion, and every \
rename over an existing file, made through the mount first moves the old file into \
DIR/.saferoot/trash (by rename: instant, whatever the size); before a file is first opened \
for writing or truncated, its bytes are copied into DIR/.saferoot/objects (appends keep \
nothing: restore cuts the file back). Each change is recorded in a journal. \
`saferoot restore TIME` brings the tree back as it was at TIME. `saferoot run -- CMD` runs an \
agent inside the mount under a Landlock sandbox that lets it write only through the mount.",
    after_help = "Example:\n  saferoot run -- pi          # run an agent in the current directory\n  \
saferoot log                # what was deleted, when, and by which process\n  \
saferoot restore 10:42      # the tree as it was at 10:42 today"
)]
pub struct Cli {
    /// The project directory [default: the nearest directory at or above the current one
    /// that saferoot protects, else the current directory]
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount DIR over itself and return once the mount is live (a daemon keeps serving it)
    Mount,
    /// Unmount DIR cleanly (flushes the journal, stops the daemon)
    #[command(alias = "unmount")]
    Umount {
        /// Detach even if processes still use DIR (the daemon serves them until they finish)
        #[arg(long)]
        lazy: bool,
        /// Also when the daemon does not answer (stopped, stuck) or DIR is busy: the daemon is
        /// asked to stop with SIGTERM, killed if it has not unmounted 5 s later, and the mount
        /// detached; nothing is lost (the files never left DIR; what the daemon had not yet
        /// journaled is recovered from the trash)
        #[arg(long, conflicts_with = "lazy")]
        force: bool,
    },
    /// Run CMD in DIR, mounted, inside the sandbox; exit with CMD's status
    #[command(after_help = RUN_HELP)]
    Run {
        /// Run without the sandbox: CMD can then write anywhere, including around the mount
        #[arg(long)]
        no_sandbox: bool,
        /// The sandbox profile: which home paths, ports and environment CMD gets
        /// (`saferoot profile list`) [default: generic]
        #[arg(long, short = 'p', value_name = "NAME")]
        profile: Option<String>,
        /// Also let CMD read (and execute) PATH and what is below it
        #[arg(long, value_name = "PATH")]
        allow_read: Vec<PathBuf>,
        /// Also let CMD write PATH and what is below it (never the real project or its store)
        #[arg(long, value_name = "PATH")]
        allow_write: Vec<PathBuf>,
        /// Also let CMD connect to TCP port N (any address)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        allow_port: Vec<u16>,
        /// Also let CMD listen on TCP port N
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        allow_bind: Vec<u16>,
        /// Run CMD as this unprivileged account (the daemon and the store stay yours)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Run even though another session is live on DIR
        #[arg(long)]
        join: bool,
        /// Print the profile, every sandbox rule and the enforced features before starting
        #[arg(long, short = 'v')]
        verbose: bool,
        /// The command and its arguments (put them after `--`)
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<OsString>,
    },
    /// List the sandbox profiles, or show one with everything it allows
    Profile {
        #[command(subcommand)]
        action: ProfileCmd,
    },
    /// Show what the sandbox refused in a session, and the flag that would allow each
    Denials {
        /// Session number (1 is the first `saferoot run` in this directory; negative counts
        /// from the newest: -1 is the last) [default: the last session]
        #[arg(long, short = 's', value_name = "N", allow_negative_numbers = true)]
        session: Option<i64>,
        /// One JSON object per denial
        #[arg(long)]
        json: bool,
    },
    /// Show the journal of changes, oldest first (all of it, or the history of some paths)
    #[command(after_help = TIME_HELP)]
    Log {
        /// One JSON object per line, times to the nanosecond
        #[arg(long)]
        json: bool,
        /// Only changes at or after TIME (see below)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only changes to these paths or below them, including renames to or from them
        /// (relative to the current directory, or absolute, inside DIR)
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Bring DIR (or the given paths) back to how it was at TIME
    #[command(after_help = TIME_HELP)]
    Restore {
        /// List what would change (+ added, - removed, M content, m mode, T type) and change nothing
        #[arg(long, short = 'n', conflicts_with = "to")]
        dry_run: bool,
        /// Write the tree of TIME (or just the PATHs, with their parent directories) into DEST
        /// instead, leaving DIR untouched; DEST must be new or empty, and outside DIR
        #[arg(long, value_name = "DEST")]
        to: Option<PathBuf>,
        /// The instant to go back to (see below)
        #[arg(value_name = "TIME", allow_hyphen_values = false)]
        time: String,
        /// Restore only these paths (relative to the current directory, or absolute, inside DIR)
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// List what changed between T1 and T2 (default: now), one path a line
    #[command(after_help = crate::history_cmd::diff_help())]
    Diff {
        /// One JSON object per line: {"mark":"+","path":"..."}
        #[arg(long)]
        json: bool,
        /// From this instant
        #[arg(value_name = "T1")]
        t1: String,
        /// To this instant [default: now]
        #[arg(value_name = "T2")]
        t2: Option<String>,
        /// Only these paths and what is below them (after `--`)
        #[arg(value_name = "PATH", last = true)]
        paths: Vec<PathBuf>,
    },
    /// Bring back the most recently deleted version of each PATH (a directory with all it held)
    #[command(after_help = crate::history_cmd::UNDELETE_HELP)]
    Undelete {
        /// Paths as they were before deletion (relative to the current directory, or absolute,
        /// inside DIR)
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Say whether DIR is mounted and how much history its store holds
    Status {
        /// One JSON object instead of text (fields in docs/user-guide.md)
        #[arg(long)]
        json: bool,
    },
    /// Record the whole tree now (path, type, mode, size, mtime, blake3) as snapshot N (`@N`)
    #[command(
        after_help = "Snapshots are also taken at every mount and unmount. Unchanged files are \
not read again (a cache keyed by inode, size, mtime and ctime), so a snapshot of an unchanged \
tree costs about a `stat` of every entry."
    )]
    Snapshot,
    /// List the snapshots: number (`@N`), time, why it was taken, entries and bytes
    Snapshots {
        /// One JSON object per line: {"n","time","t_ns","reason","entries","bytes"}
        #[arg(long)]
        json: bool,
    },
    /// Collect the oldest history so the store keeps to its retention policy
    #[command(after_help = GC_HELP)]
    Gc {
        /// Say what would be collected, and collect nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Keep history younger than this (e.g. 14d, 36h, 1d12h, off) instead of the
        /// configured `keep_within`
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration_arg)]
        keep_within: Option<String>,
        /// Keep the store (trash, objects, journal) under this size (e.g. 10GiB, 500MiB, 10%,
        /// off) instead of the configured `max_size`
        #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = size_arg)]
        max_size: Option<String>,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Check the store for damage (format, journal, objects, trash, index, snapshots, tmp);
    /// with --repair, set what is damaged aside (while DIR is not mounted)
    #[command(after_help = crate::doctor_cmd::DOCTOR_HELP)]
    Doctor {
        /// Set aside what is damaged, so the store is healthy again (refused while mounted)
        #[arg(long)]
        repair: bool,
        /// One JSON object: {"ok","problems":[{"kind","file","detail"}],"repaired":[...],...}
        #[arg(long)]
        json: bool,
    },
    /// What the trash holds: every removed or replaced file whose old bytes are kept
    Trash {
        #[command(subcommand)]
        action: TrashCmd,
    },
    /// Print a completion script for SHELL (e.g. `saferoot completions bash > /etc/bash_completion.d/saferoot`)
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the manual page, made from this help (e.g. `saferoot man | man -l -`)
    Man,
    /// (internal) the mount daemon
    #[command(name = "__daemon", hide = true)]
    Daemon { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum TrashCmd {
    /// The removals whose bytes are kept (all, or to or below the PATHs), oldest first: when,
    /// what, its size, where the bytes are, and whether they are still there
    List {
        /// One JSON object per line: {"time","t_ns","op","path","kind","size","kept","present"}
        #[arg(long)]
        json: bool,
        /// Only removals of these paths or of what was below them (relative to the current
        /// directory inside DIR; default: all)
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Delete for good every kept old version of PATH (and of what was below it): the only
    /// way besides `gc` to make saferoot forget bytes. Asks first, unless --yes
    Purge {
        /// Do not ask (needed when not on a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
        /// Paths whose kept versions go, each with everything that was below it (relative to
        /// the current directory inside DIR; `saferoot trash list PATH` shows what that is)
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
}

/// `--keep-within`: checked here, so that a bad value is a usage error (exit 2).
fn duration_arg(s: &str) -> std::result::Result<String, String> {
    saferoot_snapshots::config::parse_duration(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// `--max-size`: checked here, so that a bad value is a usage error (exit 2).
fn size_arg(s: &str) -> std::result::Result<String, String> {
    saferoot_snapshots::config::SizeCap::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

const GC_HELP: &str = "The policy comes from `[retention]` in DIR/.saferoot/config.toml (keep_within, default 14d; max_size, default 10 GiB or 10% of the filesystem, whichever is smaller); the options override it for this run. History goes oldest first: every change older than a cutoff instant, with the trash items and objects only those changes kept. Instants from the cutoff on restore exactly as before; `restore` to an earlier instant says it was collected. Nothing since the newest snapshot is ever collected. The daemon also runs gc at every mount and whenever the store grows past max_size.";

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Every profile: name, where it comes from, what it is for
    List {
        /// One JSON object per line: {"name","origin","description"}
        #[arg(long)]
        json: bool,
    },
    /// A profile with its `extends` chain applied, as TOML
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

const RUN_HELP: &str = "CMD runs with DIR as its working directory, under Landlock and seccomp. \
It may write only inside DIR (through the mount, so every change can be undone), in a private \
temporary directory (TMPDIR), and to terminal and null devices. It may read the system \
(/usr, /etc, /opt, …) and, in your home directory, only what the profile lists: secrets such as \
~/.ssh, ~/.aws or shell history stay unreadable. TCP connections go only to the profile's ports. \
It cannot mount, trace, use io_uring, create namespaces, or signal the saferoot daemon. \
Changes to .git/hooks, .git/config and the paths under `protect` in DIR/.saferoot/config.toml are \
refused.\n\nWhen CMD ends, saferoot prints what changed (undo with `saferoot restore @start`) and \
what was refused, each with the --allow-… flag that would permit it. If DIR was not mounted, \
saferoot mounts it for the run and unmounts it afterwards. One session per directory: a second \
`run` is refused while one is live, unless --join.\n\nExamples:\n  saferoot run --profile pi -- pi\n  \
saferoot run --allow-port 8080 -- npm test\n  saferoot run -v -- sh";

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // Bad usage: one line, like every other error.
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            // Point at the help of the subcommand that was meant, where its arguments are.
            let sub = std::env::args().skip(1).find(|a| {
                !a.starts_with('-')
                    && <Cli as clap::CommandFactory>::command()
                        .find_subcommand(a)
                        .is_some()
            });
            let help = match sub {
                Some(s) => format!("saferoot {s} --help"),
                None => "saferoot --help".to_owned(),
            };
            eprintln!("saferoot: {first} (see `{help}`)");
            return 2;
        }
    };
    if let Cmd::Daemon { dir } = &cli.cmd {
        return crate::daemon::main(dir);
    }
    // Like other command-line tools: `saferoot log | head` ends quietly when head does.
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crate::progress_bar::install();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("saferoot: {}", msg.lines().next().unwrap_or_default());
            1
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Mount => {
            let dir = resolve_dir_recovering(cli.dir.as_deref())?;
            let (pid, _child) = mount(&dir)?;
            println!("saferoot: mounted {} (daemon pid {pid})", dir.display());
            warn_if_inside(&dir);
            Ok(0)
        }
        Cmd::Umount { lazy, force } => {
            let dir = resolve_dir_maybe_dead(cli.dir.as_deref())?;
            if force {
                force_umount(&dir)?;
            } else {
                umount(&dir, lazy)?;
            }
            println!("saferoot: unmounted {}", dir.display());
            Ok(0)
        }
        Cmd::Run {
            no_sandbox,
            profile,
            allow_read,
            allow_write,
            allow_port,
            allow_bind,
            user,
            join,
            verbose,
            cmd,
        } => {
            let dir = resolve_dir_recovering(cli.dir.as_deref())?;
            let opts = crate::run::Options {
                no_sandbox,
                profile,
                extra: crate::policy::Extra {
                    allow_read,
                    allow_write,
                    allow_port,
                    allow_bind,
                },
                user,
                join,
                verbose,
            };
            crate::run::run(&dir, &cmd, &opts)
        }
        Cmd::Profile { action } => crate::denials_cmd::profile(action),
        Cmd::Denials { session, json } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::denials_cmd::denials(&dir, session, json)
        }
        Cmd::Log { json, since, paths } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            log(&dir, json, since.as_deref(), &paths).map(|()| 0)
        }
        Cmd::Restore {
            to: Some(dest),
            time,
            paths,
            ..
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::history_cmd::restore_to(&dir, &dest, &time, &paths)
        }
        Cmd::Restore {
            dry_run,
            to: None,
            time,
            paths,
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            restore_cmd(&dir, dry_run, &time, &paths)
        }
        Cmd::Diff {
            json,
            t1,
            t2,
            paths,
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::history_cmd::diff(&dir, json, &t1, t2.as_deref(), &paths)
        }
        Cmd::Undelete { paths } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::history_cmd::undelete(&dir, &paths)
        }
        Cmd::Status { json } => {
            // A dead mount is a state to report, not an error.
            let dir = resolve_dir_maybe_dead(cli.dir.as_deref())?;
            if json {
                status_json(&dir)
            } else {
                status(&dir)
            }
        }
        Cmd::Snapshot => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::snapshot_cmd::snapshot(&dir)
        }
        Cmd::Snapshots { json } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::snapshot_cmd::snapshots(&dir, json)
        }
        Cmd::Doctor { repair, json } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::doctor_cmd::doctor(&dir, repair, json)
        }
        Cmd::Trash {
            action: TrashCmd::List { json, paths },
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            trash_list(&dir, json, &paths).map(|()| 0)
        }
        Cmd::Trash {
            action: TrashCmd::Purge { yes, json, paths },
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::gc_cmd::purge_cmd(&dir, &paths, yes, json)
        }
        Cmd::Gc {
            dry_run,
            keep_within,
            max_size,
            json,
        } => {
            let dir = resolve_dir(cli.dir.as_deref())?;
            crate::gc_cmd::gc_cmd(
                &dir,
                dry_run,
                keep_within.as_deref(),
                max_size.as_deref(),
                json,
            )
        }
        Cmd::Completions { shell } => {
            let mut cmd = public_command();
            clap_complete::generate(shell, &mut cmd, "saferoot", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man => {
            clap_mangen::Man::new(public_command())
                .render(&mut std::io::stdout())
                .context("write the manual page")?;
            Ok(0)
        }
        Cmd::Daemon { .. } => unreachable!("handled in main"),
    }
}

/// The project directory, absolute and canonical, or a one-line error. Without `-C`, it is
/// the nearest directory at or above the current one that saferoot protects (mounted, or
/// holding a store), like git finds its work tree; failing that, the current directory.
pub fn resolve_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let discovered;
    let given = match dir {
        Some(d) => d,
        None => {
            discovered = discover_project();
            discovered.as_deref().unwrap_or(Path::new("."))
        }
    };
    let dead = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    let dead_msg = || {
        anyhow!(
            "{} is a saferoot mount whose daemon is gone; {}",
            given.display(),
            dead_mount_hint(given)
        )
    };
    let p = match std::fs::canonicalize(given) {
        Ok(p) => p,
        Err(e) if dead(&e) => return Err(dead_msg()),
        Err(e) => bail!("{}: {}", given.display(), strip_os_error(&e)),
    };
    if p.iter().any(|c| c == saferoot_fuse::STORE_DIR) {
        bail!(
            "{} is inside a saferoot store; use the project directory that contains it",
            given.display()
        );
    }
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => bail!("{} is not a directory", given.display()),
        Err(e) if dead(&e) => Err(dead_msg()),
        Err(e) => bail!("{}: {}", given.display(), strip_os_error(&e)),
    }
}

/// The nearest directory at or above the current one that is a saferoot mount or has a store.
fn discover_project() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|a| {
            mounts::saferoot_mounted(a)
                || a.join(saferoot_fuse::STORE_DIR)
                    .join(saferoot_snapshots::store::FORMAT_FILE)
                    .is_file()
        })
        .map(Path::to_path_buf)
}

/// Like [`resolve_dir`], but accepts a dead mount (whose root cannot even be stat'ed): for
/// `umount`, `mount` and `run`, which recover it, and `status`, which reports it.
fn resolve_dir_maybe_dead(dir: Option<&Path>) -> Result<PathBuf> {
    let discovered;
    let given = match dir {
        Some(d) => d,
        None => {
            discovered = std::env::var_os("PWD").map(PathBuf::from).and_then(|p| {
                p.ancestors()
                    .find(|a| mounts::saferoot_mounted(a))
                    .map(Path::to_path_buf)
            });
            discovered.as_deref().unwrap_or(Path::new("."))
        }
    };
    let abs = std::path::absolute(given).map(|p| normalize(&p))?;
    if mounts::saferoot_mounted(&abs) {
        return Ok(abs);
    }
    resolve_dir(dir)
}

/// [`shown`] for text that is not a path (notes, warnings).
pub fn shown_text(s: &str) -> String {
    shown(Path::new(s))
}

/// A path for a line of text output: control characters (a newline in a file name could
/// forge a line) are shown escaped, as `\n`, `\t`, `\u{1b}`…; other bytes that are not
/// UTF-8 show as U+FFFD.
pub fn shown(p: &Path) -> String {
    let s = p.to_string_lossy();
    if !s.chars().any(char::is_control) {
        return s.into_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// "No such file or directory (os error 2)" → "No such file or directory".
pub fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Lexical normalization: drop `.`, resolve `..` against preceding components.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A shell whose working directory was already inside DIR keeps using the real directory
/// underneath the new mount (a working directory is an inode, not a path): say so.
fn warn_if_inside(dir: &Path) {
    let Ok(cwd) = std::env::var("PWD").map(PathBuf::from) else {
        return;
    };
    if cwd.starts_with(dir) {
        eprintln!(
            "saferoot: note: your shell is inside {} and still sees the unprotected directory \
             under the mount; run `cd \"$PWD\"` to enter the mount",
            dir.display()
        );
    }
}

/// Mount `dir` by starting the daemon; returns its pid once the mount is live.
pub fn mount(dir: &Path) -> Result<(u32, Child)> {
    if let Some(rep) = control::status(dir)? {
        bail!(
            "{} is already mounted by saferoot (daemon pid {})",
            dir.display(),
            rep.pid
        );
    }
    if mounts::saferoot_mounted(dir) {
        recover_dead_mount(dir)?;
    }
    if let Some(outer) = dir
        .ancestors()
        .skip(1)
        .find(|a| mounts::saferoot_mounted(a))
    {
        bail!(
            "{} is inside {}, which saferoot already protects; work on that one (`saferoot -C {} ...`)",
            dir.display(),
            outer.display(),
            outer.display()
        );
    }
    let exe = std::env::current_exe().context("find the saferoot executable")?;
    let mut child = Command::new(exe)
        .arg("__daemon")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the saferoot daemon")?;
    let out = child.stdout.take().context("daemon stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("read from the saferoot daemon")?;
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("ok ") {
        return Ok((pid.parse().unwrap_or(0), child));
    }
    let _ = child.wait();
    match line.strip_prefix("error: ") {
        Some(msg) => bail!("{msg}"),
        None => bail!(
            "the saferoot daemon exited before mounting {}",
            dir.display()
        ),
    }
}

/// The error of a restore or undelete that failed after changing some paths: it journaled
/// every change it made since `now`, so say how to undo them, and make the mount show them.
pub fn stopped_part_way(
    dir: &Path,
    store: &saferoot_snapshots::Store,
    mounted: bool,
    now: i64,
    e: saferoot_snapshots::Error,
    what: &str,
) -> anyhow::Error {
    let (recs, _) = journal::read(store.dir(), store.dir_path()).unwrap_or_default();
    let mine: Vec<PathBuf> = recs
        .iter()
        .filter(|r| r.t >= now && r.pid == std::process::id() && r.op != Op::Restore)
        .flat_map(|r| std::iter::once(r.path.clone()).chain(r.to.clone()))
        .collect();
    if mine.is_empty() {
        return e.into();
    }
    if mounted {
        tell_daemon_changed(dir, &mine);
    }
    anyhow!(
        "{e}; the {what} stopped after changing some paths: undo that with `saferoot restore {}`",
        time::format_utc(now)
    )
}

/// Ask the daemon serving `dir` to unmount, then wait until the mount is gone.
pub fn umount(dir: &Path, lazy: bool) -> Result<()> {
    match control::call(dir, &Request::Umount { lazy })? {
        Some((rep, _)) if !rep.ok => bail!("{}", rep.error.unwrap_or_default()),
        Some(_) => {}
        None => {
            if !mounts::saferoot_mounted(dir) {
                bail!("{} is not mounted", dir.display());
            }
            recover_dead_mount(dir)?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while mounts::saferoot_mounted(dir) && !lazy {
        if Instant::now() > deadline {
            bail!("{} is still mounted after 30 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Wait for the daemon to finish (it writes its last journal record after the unmount).
    while control::connect(dir)?.is_some() && !lazy {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The daemon of the saferoot mount at `dir` died (crash or kill -9) and left the kernel mount
/// dangling: detach it, and journal what the daemon moved to the trash but did not live to
/// record. Nothing is lost: the files never left the real directory and its store.
fn recover_dead_mount(dir: &Path) -> Result<()> {
    nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("unmount the dead mount at {}", dir.display()))?;
    if let Ok((store, _)) = open_store(dir) {
        if let Ok(n) = saferoot_snapshots::recover::recover(&store) {
            if n > 0 {
                eprintln!(
                    "saferoot: journaled {n} item(s) the daemon had moved to the trash without \
                     recording them"
                );
            }
        }
    }
    eprintln!(
        "saferoot: the daemon for {} was gone; detached its mount (nothing is lost: the trash \
         and journal are in {}/.saferoot)",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// The command line as users see it, for completions and the manual page: without the hidden
/// internal subcommands (clap_complete would offer them).
fn public_command() -> clap::Command {
    let full = <Cli as clap::CommandFactory>::command();
    let mut c = clap::Command::new("saferoot")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(a) = full.get_about() {
        c = c.about(a.clone());
    }
    if let Some(a) = full.get_long_about() {
        c = c.long_about(a.clone());
    }
    if let Some(a) = full.get_after_help() {
        c = c.after_help(a.clone());
    }
    c
}

/// `umount --force`: stop the daemon of `dir` by signal (SIGTERM, then SIGKILL after 5 s)
/// without asking it anything, then detach what is left and recover the journal.
fn force_umount(dir: &Path) -> Result<()> {
    if !mounts::saferoot_mounted(dir) {
        bail!("{} is not mounted", dir.display());
    }
    let pids = daemon_pids(dir);
    let signal = |sig| {
        for &pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    let alive = |pids: &[i32]| {
        pids.iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
    };
    // A stopped daemon must run to handle SIGTERM.
    signal(nix::sys::signal::Signal::SIGTERM);
    signal(nix::sys::signal::Signal::SIGCONT);
    // It unmounts, takes its last snapshot and journals `umount`: give it 5 s for all that.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (mounts::saferoot_mounted(dir) || alive(&pids)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if mounts::saferoot_mounted(dir) || alive(&pids) {
        signal(nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&pids) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if mounts::saferoot_mounted(dir) {
        recover_dead_mount(dir)?;
    }
    Ok(())
}

/// The processes serving `dir` as its daemon (`saferoot __daemon DIR`), from `/proc`.
fn daemon_pids(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.len() >= 3
                    && args[1] == b"__daemon"
                    && Path::new(std::ffi::OsStr::from_bytes(args[2])) == dir
            })
        })
        .collect()
}

/// What to do about a mount whose daemon died (both commands journal what it left unrecorded).
fn dead_mount_hint(dir: &Path) -> String {
    let d = dir.display();
    format!("`saferoot -C {d} mount` mounts it again, `saferoot -C {d} umount` unmounts it; both keep everything")
}

/// Like [`resolve_dir`], for `mount` and `run`: a saferoot mount whose daemon is gone is
/// recovered first ([`recover_dead_mount`]), so that they can mount afresh.
fn resolve_dir_recovering(dir: Option<&Path>) -> Result<PathBuf> {
    let abs = resolve_dir_maybe_dead(dir)?;
    if mounts::saferoot_mounted(&abs) && control::connect(&abs)?.is_none() {
        recover_dead_mount(&abs)?;
    }
    resolve_dir(Some(&abs))
}

/// The real project directory `dir` (the daemon's descriptor of it when mounted, else `dir`
/// opened here), and whether it is mounted.
pub fn project_dir_fd(dir: &Path) -> Result<(OwnedFd, bool)> {
    match control::call(dir, &Request::Fd)? {
        Some((rep, Some(fd))) if rep.ok => Ok((fd, true)),
        Some((rep, _)) => bail!(
            "the saferoot daemon refused: {}",
            rep.error.unwrap_or_else(|| "no descriptor".into())
        ),
        None => {
            if mounts::saferoot_mounted(dir) {
                bail!(
                    "{} is a saferoot mount whose daemon is gone; {}",
                    dir.display(),
                    dead_mount_hint(dir)
                );
            }
            let fd = nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(|| format!("open {}", dir.display()))?;
            Ok((fd, false))
        }
    }
}

/// The store of `dir`, reached through the daemon's descriptor when mounted.
/// Returns the store and whether the directory is mounted.
pub fn open_store(dir: &Path) -> Result<(Store, bool)> {
    let (fd, mounted) = project_dir_fd(dir)?;
    let store = Store::open_existing(fd.as_fd(), dir)?.ok_or_else(|| {
        anyhow!(
            "{} has no saferoot history yet (it has never been mounted)",
            dir.display()
        )
    })?;
    Ok((store, mounted))
}

fn mode_str(m: Option<u32>) -> String {
    m.map(|m| format!("{:o}", m & 0o7777)).unwrap_or_default()
}

/// `saferoot trash list`: the journal's removals that kept bytes (a trash item or an object).
fn trash_list(dir: &Path, json: bool, paths: &[PathBuf]) -> Result<()> {
    let scopes = project_relative(dir, paths)?;
    let (store, _) = open_store(dir)?;
    let (mut recs, _) = journal::read(store.dir(), store.dir_path())?;
    recs.sort_by_key(|r| r.t);
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut listed = 0usize;
    for r in &recs {
        // A removal, or a rename over something (older journals put the replaced file there).
        let removed = match r.op {
            journal::Op::Unlink => Some(&r.path),
            journal::Op::Rename if r.trash.is_some() || r.object.is_some() => r.to.as_ref(),
            _ => None,
        };
        let Some(path) = removed else { continue };
        if !scopes.is_empty() && !scopes.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        // The bytes as they were at that instant: the object if there is one, else the trash.
        let kept = match (&r.object, &r.trash) {
            (Some(o), _) => saferoot_snapshots::store::object_rel(o),
            (None, Some(t)) => t.clone(),
            (None, None) => continue,
        };
        let present =
            nix::sys::stat::fstatat(store.dir(), &kept, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok();
        let kept = Path::new(".saferoot").join(kept);
        listed += 1;
        if json {
            let v = serde_json::json!({
                "time": time::format_utc(r.t),
                "t_ns": r.t,
                "op": r.op.name(),
                "path": path.to_string_lossy(),
                "kind": r.kind,
                "size": r.size,
                "kept": kept.to_string_lossy(),
                "present": present,
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "{}  {:<9}  {:>12}  {}  {}{}",
                time::format_utc(r.t),
                r.kind.map(|k| k.name()).unwrap_or("?"),
                r.size.map(|s| s.to_string()).unwrap_or_default(),
                shown(path),
                shown(&kept),
                if present { "" } else { "  (gone)" }
            )?;
        }
    }
    if listed == 0 && !json {
        // Said on stderr, so that the listing itself stays empty for scripts.
        if scopes.is_empty() {
            eprintln!("saferoot: the trash keeps nothing");
        } else {
            let names: Vec<String> = scopes.iter().map(|p| shown(p)).collect();
            eprintln!("saferoot: nothing kept for {}", names.join(", "));
        }
    }
    Ok(())
}

fn log(dir: &Path, json: bool, since: Option<&str>, paths: &[PathBuf]) -> Result<()> {
    let since = match since {
        Some(s) => Some(crate::snapshot_cmd::resolve_time(dir, s, saferoot_snapshots::now_ns())?.0),
        None => None,
    };
    let scopes = project_relative(dir, paths)?;
    let (store, _) = open_store(dir)?;
    let (mut recs, report) = journal::read(store.dir(), store.dir_path())?;
    recs.sort_by_key(|r| r.t);
    // The history of a path: what happened to it or below it, under either of a record's names.
    let about = |r: &journal::Record| {
        scopes.is_empty()
            || scopes
                .iter()
                .any(|s| r.path.starts_with(s) || r.to.as_ref().is_some_and(|to| to.starts_with(s)))
    };
    recs.retain(|r| since.is_none_or(|t| r.t >= t) && about(r));
    let config = saferoot_snapshots::config::Config::load(&store)?;
    let is_file = |s: &Path| dir.join(s).symlink_metadata().is_ok_and(|m| !m.is_dir());
    for s in scopes.iter().filter(|s| config.is_scratch(s, !is_file(s))) {
        eprintln!(
            "saferoot: note: {} is in a scratch tree (not versioned): changes there are not journaled",
            s.display()
        );
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    for r in &recs {
        let kept = r
            .trash
            .as_ref()
            .map(|t| Path::new(".saferoot").join(t).display().to_string())
            .or_else(|| {
                r.object.as_ref().map(|o| {
                    Path::new(".saferoot")
                        .join(saferoot_snapshots::store::object_rel(o))
                        .display()
                        .to_string()
                })
            });
        if json {
            let v = serde_json::json!({
                "time": time::format_utc(r.t),
                "t_ns": r.t,
                "op": r.op.name(),
                "path": r.path.to_string_lossy(),
                "to": r.to.as_ref().map(|p| p.to_string_lossy()),
                "kind": r.kind,
                "mode": r.mode.map(|m| format!("{:o}", m & 0o7777)),
                "pid": r.pid,
                "comm": r.comm,
                "kept": kept,
                "object": r.object,
                "target": r.target.as_ref().map(|p| p.to_string_lossy()),
                "target_time": r.target_t.map(time::format_utc),
                "note": r.note,
                "old_mode": r.old_mode.map(|m| format!("{:o}", m & 0o7777)),
                "size": r.size,
                "ino": r.ino,
                "links": r.links,
                "snapshot": r.snapshot,
            });
            writeln!(out, "{v}")?;
        } else {
            let mut line = format!(
                "{}  {:<8} {}",
                time::format_utc(r.t),
                r.op.name(),
                shown(&r.path)
            );
            if let Some(to) = &r.to {
                line.push_str(&format!(" -> {}", shown(to)));
            }
            if let Some(tt) = r.target_t {
                line.push_str(&format!(" (to {})", time::format_utc(tt)));
            }
            if r.op == saferoot_snapshots::Op::Setattr {
                if let (Some(o), Some(n)) = (r.old_mode, r.mode) {
                    line.push_str(&format!(
                        " mode {} -> {}",
                        mode_str(Some(o)),
                        mode_str(Some(n))
                    ));
                }
                if let Some(s) = r.size {
                    line.push_str(&format!(" size -> {s}"));
                }
            }
            line.push_str(&format!("  {}[{}]", r.comm, r.pid));
            if let Some(n) = &r.note {
                line.push_str(&format!("  ({})", shown_text(n)));
            }
            if let Some(k) = kept {
                line.push_str(&format!("  kept: {}", shown_text(&k)));
            }
            writeln!(out, "{line}")?;
        }
    }
    crate::doctor_cmd::warn_damaged_lines(&store, &report);
    Ok(())
}

/// Turn PATH arguments into project-relative paths.
pub(crate) fn project_relative(dir: &Path, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let cwd = std::env::current_dir().ok().map(|c| normalize(&c));
    let mut out = Vec::new();
    for p in paths {
        let abs = if p.is_absolute() {
            normalize(p)
        } else {
            match &cwd {
                // Inside the project: relative to where the user is.
                Some(c) if c.starts_with(dir) => normalize(&c.join(p)),
                // Elsewhere (e.g. with -C): relative to the project.
                _ => normalize(&dir.join(p)),
            }
        };
        let rel = abs
            .strip_prefix(dir)
            .map_err(|_| anyhow!("{} is not inside {}", p.display(), dir.display()))?;
        if rel.as_os_str().is_empty() {
            // The project itself: the whole tree.
            return Ok(Vec::new());
        }
        if saferoot_snapshots::restore::under_store(rel) {
            bail!(
                "{}: {} is saferoot's own store; give paths of the project",
                p.display(),
                saferoot_fuse::STORE_DIR
            );
        }
        out.push(rel.to_owned());
    }
    Ok(out)
}

fn restore_cmd(dir: &Path, dry_run: bool, when: &str, paths: &[PathBuf]) -> Result<i32> {
    let now = saferoot_snapshots::now_ns();
    let (target, opened) = crate::snapshot_cmd::resolve_time(dir, when, now)?;
    let rel = project_relative(dir, paths)?;
    let (store, mounted) = match opened {
        Some(opened) => opened,
        None => open_store(dir)?,
    };
    if !dry_run || !mounted {
        // A restore (or daemon) killed part-way may have left trash items without records,
        // or renames it had not journaled; journal them first so this restore sees them (a
        // dry run too when unmounted, so that it lists what the restore would do).
        let _ = saferoot_snapshots::recover::recover(&store);
    }
    let opts = restore::Options {
        target_t: target,
        paths: rel,
        dry_run,
        pid: std::process::id(),
        comm: "saferoot".into(),
    };
    let report = match if dry_run {
        restore::read_consistently(|| restore::restore(&store, &opts))
    } else {
        restore::restore(&store, &opts)
    } {
        Ok(r) => r,
        Err(e) => return Err(stopped_part_way(dir, &store, mounted, now, e, "restore")),
    };
    let verb = match (dry_run, report.changes.is_empty()) {
        (true, _) => "would restore",
        (false, true) => "compared",
        (false, false) => "restored",
    };
    println!(
        "saferoot: {verb} {} to {} ({} local)",
        dir.display(),
        time::format_utc(target),
        time::format_local_short(target)
    );
    if mounted && !dry_run && !report.changes.is_empty() {
        let changed: Vec<PathBuf> = report.changes.iter().map(|c| c.path.clone()).collect();
        tell_daemon_changed(dir, &changed);
    }
    for c in &report.changes {
        println!("{} {}", c.mark.symbol(), shown(&c.path));
    }
    for w in &report.warnings {
        eprintln!("saferoot: warning: {}", shown_text(w));
    }
    for e in &report.errors {
        eprintln!("saferoot: error: {}", shown_text(e));
    }
    let n = report.changes.len();
    if dry_run {
        println!("saferoot: {n} path(s) would change; nothing was changed");
    } else if n == 0 {
        println!("saferoot: nothing to do: the tree already matches that instant");
    } else {
        println!(
            "saferoot: {n} path(s) changed; what they replaced is in {}/.saferoot/trash \
             (undo with `saferoot restore {}`)",
            dir.display(),
            time::format_utc(now)
        );
    }
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}

fn status(dir: &Path) -> Result<i32> {
    match control::status(dir)? {
        Some(rep) => {
            println!(
                "{}: mounted (daemon pid {}, since {})",
                dir.display(),
                rep.pid,
                rep.started_ns.map(time::format_utc).unwrap_or_default()
            );
            if rep.sessions.is_empty() {
                println!("sessions: none live");
            }
            for s in &rep.sessions {
                println!(
                    "session: pid {}, since {}, `{}`, {}",
                    s.pid,
                    time::format_local_short(s.session),
                    shown_text(&s.cmd),
                    match (&s.profile, s.sandboxed) {
                        (Some(p), true) => format!("sandboxed (profile {p})"),
                        (None, true) => "sandboxed".to_string(),
                        (_, false) => "NOT sandboxed (--no-sandbox)".to_string(),
                    }
                );
                for f in &s.features {
                    println!("  enforced: {f}");
                }
            }
        }
        None if mounts::saferoot_mounted(dir) => println!(
            "{}: mounted, but the daemon is gone ({})",
            dir.display(),
            dead_mount_hint(dir)
        ),
        None => println!("{}: not mounted", dir.display()),
    }
    match open_store(dir) {
        Ok((store, _)) => {
            let h = History::of(&store)?;
            println!(
                "history: {} journal record(s){}",
                h.records,
                h.first
                    .map(|t| format!(", oldest restorable instant {}", time::format_utc(t)))
                    .unwrap_or_default()
            );
            println!(
                "store: {} ({} in {} trash file(s), {} in {} object(s), journal {}); {} \
                 restorable deletion(s)",
                human_bytes(h.trash_bytes + h.object_bytes + h.journal_bytes),
                human_bytes(h.trash_bytes),
                h.trash_files,
                human_bytes(h.object_bytes),
                h.objects,
                human_bytes(h.journal_bytes),
                h.deletions
            );
            match &h.policy {
                Ok(p) => println!(
                    "retention: {p}{} (`saferoot gc`; at mount and when the cap is crossed)",
                    h.cap
                        .map(|c| format!(" = {} here", human_bytes(c)))
                        .unwrap_or_default()
                ),
                Err(e) => println!("retention: {e}"),
            }
        }
        Err(e) => println!("history: {e:#}"),
    }
    match crate::sandbox::landlock_abi() {
        Some(abi) => println!(
            "sandbox on this kernel: {}",
            crate::sandbox::features_for_abi(abi).join("; ")
        ),
        None => println!("sandbox on this kernel: no Landlock (`run` needs --no-sandbox)"),
    }
    Ok(0)
}

/// What a store holds, for `status`.
struct History {
    records: usize,
    /// The oldest instant a restore accepts.
    first: Option<i64>,
    /// `unlink` and `rmdir` records: each a removal a restore can undo.
    deletions: usize,
    trash_files: u64,
    trash_bytes: u64,
    objects: u64,
    object_bytes: u64,
    journal_bytes: u64,
    /// The retention policy in force (or why config.toml could not be read), and its cap.
    policy: std::result::Result<String, String>,
    cap: Option<u64>,
}

impl History {
    fn of(store: &Store) -> Result<History> {
        let (recs, _) = journal::read(store.dir(), store.dir_path())?;
        // Sizes are what the files take on disk (holes take nothing), read through the store's
        // own descriptor (the store is hidden under the mount).
        let u = saferoot_snapshots::gc::usage(store);
        let policy = saferoot_snapshots::gc::policy(store, None, None);
        Ok(History {
            records: recs.len(),
            first: saferoot_snapshots::gc::oldest_restorable(&recs),
            deletions: recs
                .iter()
                // Not those whose bytes `trash purge` deleted (their records stay).
                .filter(|r| {
                    matches!(r.op, journal::Op::Unlink | journal::Op::Rmdir)
                        && !r
                            .note
                            .as_deref()
                            .is_some_and(|n| n.contains(saferoot_snapshots::gc::PURGE_NOTE))
                })
                .count(),
            trash_files: u.trash_files,
            trash_bytes: u.trash_bytes,
            objects: u.objects,
            object_bytes: u.object_bytes,
            journal_bytes: u.journal_bytes,
            cap: policy
                .as_ref()
                .ok()
                .and_then(|p| saferoot_snapshots::gc::cap_bytes(store, p)),
            policy: policy.map(|p| p.describe()).map_err(|e| e.to_string()),
        })
    }
}

use saferoot_snapshots::human_bytes;

/// `status --json`: the same facts as one JSON object.
fn status_json(dir: &Path) -> Result<i32> {
    let daemon = control::status(dir)?;
    let dead = daemon.is_none() && mounts::saferoot_mounted(dir);
    let (store, history, retention) = match open_store(dir) {
        Ok((store, _)) => {
            let h = History::of(&store)?;
            (
                serde_json::json!({
                    "trash_files": h.trash_files,
                    "trash_bytes": h.trash_bytes,
                    "objects": h.objects,
                    "object_bytes": h.object_bytes,
                    "journal_bytes": h.journal_bytes,
                    "total_bytes": h.trash_bytes + h.object_bytes + h.journal_bytes,
                }),
                serde_json::json!({
                    "journal_records": h.records,
                    "restorable_deletions": h.deletions,
                    "oldest_restorable": h.first.map(time::format_utc),
                }),
                match &h.policy {
                    Ok(p) => serde_json::json!({ "policy": p, "cap_bytes": h.cap }),
                    Err(e) => serde_json::json!({ "error": e }),
                },
            )
        }
        Err(e) => (
            serde_json::Value::Null,
            serde_json::json!({ "error": format!("{e:#}") }),
            serde_json::Value::Null,
        ),
    };
    let v = serde_json::json!({
        "dir": dir.to_string_lossy(),
        "mounted": daemon.is_some() || dead,
        "daemon": daemon.as_ref().map(|r| serde_json::json!({
            "pid": r.pid,
            "since": r.started_ns.map(time::format_utc),
        })),
        "daemon_gone": dead,
        "sessions": daemon.as_ref().map(|r| r.sessions.iter().map(|s| serde_json::json!({
            "pid": s.pid,
            "since": time::format_utc(s.session),
            "command": s.cmd,
            "sandboxed": s.sandboxed,
            "profile": s.profile,
            "enforced": s.features,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "store": store,
        "history": history,
        "retention": retention,
        "sandbox_on_this_kernel": crate::sandbox::landlock_abi()
            .map(crate::sandbox::features_for_abi),
    });
    println!("{v}");
    Ok(0)
}

/// Tell the daemon what a restore changed; say so when that fails (the mount may then show the
/// old names for a while).
pub fn tell_daemon_changed(dir: &Path, paths: &[PathBuf]) {
    if let Err(e) = control::invalidate(dir, paths) {
        eprintln!(
            "saferoot: warning: the mount may show some of the {} changed path(s) as they were \
             until they expire from the kernel's cache (up to an hour): {e:#}; \
             `saferoot umount` and `saferoot mount` show them at once",
            paths.len()
        );
    }
}
