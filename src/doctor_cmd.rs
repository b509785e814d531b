//! `saferoot doctor [--repair] [--json]`, and the warnings other commands print about damaged
//! journal lines.
//!
//! The checks and the repair are `saferoot_snapshots::doctor`; this module finds the store
//! (through the daemon when mounted), refuses `--repair` while mounted, shows a progress bar
//! while objects are read (only when stderr is a terminal), and prints the result. What this
//! module does not do: decide what a problem is or how it is repaired.

use crate::control;
use crate::mounts;
use anyhow::{anyhow, bail, Result};
use saferoot_snapshots::doctor::{self, Checkup, Problem, Progress, Repaired};
use saferoot_snapshots::journal::{ReadReport, JOURNAL_FILE};
use saferoot_snapshots::{now_ns, time, Store};
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub const DOCTOR_HELP: &str = "Checks: the format file; the journal (damaged lines, with their \
numbers; records torn by a crash; records still needed whose trash item or object is missing); \
that every object's blake3 is its name (every object is read); trash items no record refers to; \
the index (every line, and every file it lists, read and hashed); the snapshot manifests \
(footer and checksum); leftovers in tmp/. Exit status: 0 healthy, 1 problems found (each \
printed with the file it concerns), 2 usage error.\n\n--repair refuses while DIR is mounted \
(`saferoot umount` first). It never deletes a kept byte: damaged objects and manifests move to \
.saferoot/damaged/, damaged journal lines are copied there before the journal is rewritten \
without them, and a `repair` record makes the oldest instant that can still be restored \
exactly the limit of restore (saferoot log shows it). Trash items without a record are \
journaled, the index is rebuilt from the trash, tmp/ is emptied. Details: docs/repair.md.";

/// `saferoot doctor`.
pub fn doctor(dir: &Path, repair: bool, json: bool) -> Result<i32> {
    let mounted = control::status(dir)?.is_some() || mounts::saferoot_mounted(dir);
    if repair && mounted {
        bail!(
            "cannot repair {} while it is mounted (the daemon writes to the store meanwhile): \
             unmount first: saferoot umount",
            dir.display()
        );
    }
    let (project, _) = crate::cli::project_dir_fd(dir)?;
    let now = now_ns();
    let mut found: Vec<Problem> = Vec::new();
    let mut repaired: Vec<Repaired> = Vec::new();
    if let Some(p) = doctor::format_problem(project.as_fd(), dir)? {
        if !repair {
            // The other checks need a store this saferoot reads.
            let foreign = p.detail.contains("another version of saferoot");
            found.push(p);
            if foreign && !json {
                // Nothing to repair: another saferoot reads it.
                for p in &found {
                    println!(
                        "{} {}: {}",
                        p.kind,
                        crate::cli::shown(&p.file),
                        crate::cli::shown_text(&p.detail)
                    );
                }
                return Ok(1);
            }
            print(dir, json, &found, &[], None, None);
            return Ok(1);
        }
        found.push(p);
        repaired.push(doctor::repair_format(project.as_fd(), dir)?);
    }
    let store = open(&project, dir)?;
    let checkup = check(&store, mounted, now)?;
    found.extend(checkup.problems.iter().cloned());
    if !repair {
        print(dir, json, &found, &repaired, Some(&checkup), None);
        return Ok(if found.is_empty() { 0 } else { 1 });
    }
    if checkup.ok() {
        // Nothing but the format file (repaired above, before this checkup), or nothing at all.
        let after = (!repaired.is_empty()).then_some(&checkup);
        print(dir, json, &found, &repaired, Some(&checkup), after);
        return Ok(0);
    }
    repaired.extend(doctor::repair(&store, &checkup, now)?);
    drop(store);
    let store = open(&project, dir)?;
    let after = check(&store, false, now_ns())?;
    print(dir, json, &found, &repaired, Some(&checkup), Some(&after));
    Ok(if after.ok() { 0 } else { 1 })
}

fn open(project: &OwnedFd, dir: &Path) -> Result<Store> {
    Store::open_existing(project.as_fd(), dir)?.ok_or_else(|| {
        anyhow!(
            "{} has no saferoot history yet (it has never been mounted)",
            dir.display()
        )
    })
}

/// Run the checks, with a progress bar on stderr while objects and trash files are read, only
/// when stderr is a terminal (never in a pipe, a log or a test).
fn check(store: &Store, mounted: bool, now: i64) -> Result<Checkup> {
    let bar = if std::io::stderr().is_terminal() {
        let b =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bytes}/{total_bytes} [{bar:30}] {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = doctor::Options { mounted, now };
    let r = doctor::check(store, &opts, &mut |p| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Read(n) => bar.inc(n),
    });
    bar.finish_and_clear();
    Ok(r?)
}

fn print(
    dir: &Path,
    json: bool,
    found: &[Problem],
    repaired: &[Repaired],
    checkup: Option<&Checkup>,
    after: Option<&Checkup>,
) {
    let store = dir.join(saferoot_snapshots::store::STORE_DIR);
    let repairing = after.is_some();
    let remaining: &[Problem] = match after {
        Some(a) => &a.problems,
        None => found,
    };
    let horizon = checkup.and_then(|c| c.horizon.as_ref());
    if json {
        let mut v = serde_json::json!({
            "ok": remaining.is_empty(),
            "store": store.to_string_lossy(),
            "problems": found,
            "repaired": repaired,
            "checked": checkup.map(|c| &c.counts),
        });
        if repairing {
            v["remaining"] = serde_json::json!(remaining);
        }
        v["horizon"] = serde_json::json!(horizon.map(|(h, _)| time::format_utc(*h)));
        println!("{v}");
        return;
    }
    for p in found {
        println!(
            "{} {}: {}",
            p.kind,
            crate::cli::shown(&p.file),
            crate::cli::shown_text(&p.detail)
        );
    }
    for r in repaired {
        println!(
            "repaired {}: {}",
            crate::cli::shown(&r.file),
            crate::cli::shown_text(&r.action)
        );
    }
    let counts = checkup
        .map(|c| {
            let k = &c.counts;
            format!(
                " ({} journal record(s), {} object(s) of {} byte(s) verified, {} index line(s), \
                 {} snapshot(s))",
                k.records, k.objects, k.object_bytes, k.index_lines, k.snapshots
            )
        })
        .unwrap_or_default();
    if repairing {
        if remaining.is_empty() {
            println!(
                "saferoot: repaired {}; it is healthy now{}",
                store.display(),
                match horizon {
                    Some((h, _)) => format!(
                        "; restores before {} are refused (a repair record in the journal says \
                         why)",
                        time::format_utc(*h)
                    ),
                    None => "; no history was lost".into(),
                }
            );
        } else {
            for p in remaining {
                println!(
                    "remaining {} {}: {}",
                    p.kind,
                    crate::cli::shown(&p.file),
                    crate::cli::shown_text(&p.detail)
                );
            }
            println!(
                "saferoot: {} problem(s) remain in {} after the repair",
                remaining.len(),
                store.display()
            );
        }
    } else if found.is_empty() {
        println!("saferoot: {} is healthy{counts}", store.display());
    } else {
        println!(
            "saferoot: {} problem(s) in {}; `saferoot doctor --repair` (while unmounted) sets \
             them aside{}",
            found.len(),
            store.display(),
            match horizon {
                Some((h, _)) => format!(
                    ", and then no instant before {} can be restored",
                    time::format_utc(*h)
                ),
                None => String::new(),
            }
        );
    }
}

/// For `saferoot log`: one warning per damaged journal line (at most ten), naming the line and
/// what it means for restore. Torn writes left by a crash are not mentioned: nothing was lost
/// with them.
pub fn warn_damaged_lines(store: &Store, report: &ReadReport) {
    let path = store.dir_path().join(JOURNAL_FILE);
    for d in report.damaged.iter().take(10) {
        let what = match d.after_t {
            Some(a) => format!("instants before {} cannot be restored", time::format_utc(a)),
            None => "no instant after it is known yet (no intact record follows it, or a file \
                     open for writing across it has not been closed), so none can be restored"
                .into(),
        };
        eprintln!(
            "saferoot: warning: line {} of {} is damaged ({}) and was skipped: its change is \
             unknown, so {what}; run `saferoot doctor`",
            d.line,
            path.display(),
            d.why
        );
    }
    if report.damaged.len() > 10 {
        eprintln!(
            "saferoot: warning: and {} more damaged journal line(s); `saferoot doctor` lists them",
            report.damaged.len() - 10
        );
    }
}
