//! The commands that look into the past without going back to it: `restore --to DEST`,
//! `diff`, and `undelete` (which does change the tree, but only the paths it is given).
//!
//! Everything here is formatting and argument resolution at the CLI edge; the work is done by
//! `saferoot_snapshots::restore` (`materialize`, `diff`, `undelete`). What this module does not
//! do: decide what a change or a deletion is (the library does), or print more than one line on
//! stderr for an error (`cli::main` prints the first line of the error chain).

use crate::cli::{self, open_store, project_relative};
use crate::snapshot_cmd::resolve_time;
use anyhow::Result;
use saferoot_snapshots::restore;
use saferoot_snapshots::{now_ns, time, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const UNDELETE_HELP: &str = "For each PATH, saferoot finds the most recent change that \
removed it (rm, rmdir, a rename that moved it away or replaced it, or a restore that displaced \
it) and restores PATH alone to the instant just before. A directory removed by `rm -rf` comes \
back with everything it held when the `rm -rf` began. Whatever is at PATH now is moved to the \
trash first, and the undelete is journaled like a restore: `saferoot restore` to the instant \
before it undoes it. PATHs are relative to the current directory, or absolute, inside DIR.";

/// `diff --help`: the marks, the PATH syntax, and the TIME forms.
pub fn diff_help() -> String {
    format!(
        "Marks: + exists at T2 only, - exists at T1 only, M other content (or symlink target), \
m other permission bits only, T other type of file. Paths are sorted. Give paths after `--` to \
see only them and what is below them: `saferoot diff 10:42 -- src notes.md`, \
`saferoot diff @1 @start -- src`. Nothing is changed.\n\n{}",
        cli::TIME_HELP
    )
}

/// The store, reusing one `resolve_time` had to open for an `@` form.
/// The store, for a command that reads history (`diff`, `restore --to`). Unmounted, what a
/// daemon that died left unrecorded is settled first, as the next mount would (renames it
/// was in the middle of, trash items it had not journaled): the answer is then the one a
/// `restore` would act on. Mounted, a live daemon owns that, and nothing is written.
fn store_for(dir: &Path, opened: Option<(Store, bool)>) -> Result<(Store, bool)> {
    let (store, mounted) = match opened {
        Some(o) => o,
        None => open_store(dir)?,
    };
    if !mounted {
        let _ = saferoot_snapshots::recover::recover(&store);
    }
    Ok((store, mounted))
}

fn at(t: i64) -> String {
    format!(
        "{} ({} local)",
        time::format_utc(t),
        time::format_local_short(t)
    )
}

/// `saferoot restore --to DEST TIME [PATH…]`.
pub fn restore_to(dir: &Path, dest: &Path, when: &str, paths: &[PathBuf]) -> Result<i32> {
    let (t, opened) = resolve_time(dir, when, now_ns())?;
    let rel = project_relative(dir, paths)?;
    let (store, _) = store_for(dir, opened)?;
    let report = restore::materialize(&store, t, &rel, dest)?;
    let shown = std::path::absolute(dest).unwrap_or_else(|_| dest.to_owned());
    println!(
        "saferoot: wrote {} as it was at {} into {}",
        dir.display(),
        at(t),
        shown.display()
    );
    for w in &report.warnings {
        eprintln!("saferoot: warning: {}", crate::cli::shown_text(w));
    }
    for e in &report.errors {
        eprintln!("saferoot: error: {}", crate::cli::shown_text(e));
    }
    println!(
        "saferoot: {} path(s) written; {} was not changed",
        report.changes.len(),
        dir.display()
    );
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}

/// `saferoot diff [--json] T1 [T2] [-- PATH…]`.
pub fn diff(dir: &Path, json: bool, t1: &str, t2: Option<&str>, paths: &[PathBuf]) -> Result<i32> {
    let now = now_ns();
    let (a, opened) = resolve_time(dir, t1, now)?;
    let (b, opened) = match t2 {
        Some(s) => {
            let (b, o) = resolve_time(dir, s, now)?;
            (Some(b), opened.or(o))
        }
        None => (None, opened),
    };
    let rel = project_relative(dir, paths)?;
    let (store, _) = store_for(dir, opened)?;
    let report = restore::read_consistently(|| restore::diff(&store, a, b, &rel))?;
    let out = std::io::stdout();
    let mut out = out.lock();
    for c in &report.changes {
        if json {
            let v = serde_json::json!({
                "mark": c.mark.symbol().to_string(),
                "path": c.path.to_string_lossy(),
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "{} {}", c.mark.symbol(), crate::cli::shown(&c.path))?;
        }
    }
    for w in &report.warnings {
        eprintln!("saferoot: warning: {}", crate::cli::shown_text(w));
    }
    Ok(0)
}

/// `saferoot undelete PATH…`.
pub fn undelete(dir: &Path, paths: &[PathBuf]) -> Result<i32> {
    let rel = project_relative(dir, paths)?;
    let (store, mounted) = open_store(dir)?;
    let now = now_ns();
    let _ = saferoot_snapshots::recover::recover(&store);
    let report = restore::undelete(&store, &rel, std::process::id(), "saferoot")
        .map_err(|e| crate::cli::stopped_part_way(dir, &store, mounted, now, e, "undelete"))?;
    if mounted {
        let changed: Vec<PathBuf> = report
            .items
            .iter()
            .flat_map(|i| i.changes.iter().map(|c| c.path.clone()))
            .collect();
        if !changed.is_empty() {
            crate::cli::tell_daemon_changed(dir, &changed);
        }
    }
    for it in &report.items {
        let removed = format!(
            "{}, removed at {} by {}[{}], {}",
            it.kind.name(),
            time::format_utc(it.removed_t),
            crate::cli::shown_text(&it.removed_comm),
            it.removed_pid,
            it.removed_op.name(),
        );
        if it.changes.is_empty() {
            println!(
                "saferoot: {} ({removed}) is already as it was at {}; nothing to do",
                crate::cli::shown(&it.path),
                at(it.target_t)
            );
            continue;
        }
        println!(
            "saferoot: brought back {} ({removed}) as it was at {}",
            crate::cli::shown(&it.path),
            at(it.target_t)
        );
        for c in &it.changes {
            println!("{} {}", c.mark.symbol(), crate::cli::shown(&c.path));
        }
    }
    for w in &report.warnings {
        eprintln!("saferoot: warning: {}", crate::cli::shown_text(w));
    }
    for e in &report.errors {
        eprintln!("saferoot: error: {}", crate::cli::shown_text(e));
    }
    let changes = report.items.iter().flat_map(|i| i.changes.iter());
    let displaced = changes.clone().any(|c| c.mark != restore::Mark::Added);
    if changes.clone().next().is_some() {
        if displaced {
            println!(
                "saferoot: what was in the way is in {}/.saferoot/trash (undo with `saferoot restore {}`)",
                dir.display(),
                time::format_utc(now)
            );
        } else {
            println!(
                "saferoot: undo with `saferoot restore {}`",
                time::format_utc(now)
            );
        }
    }
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}
