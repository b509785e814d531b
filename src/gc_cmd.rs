//! `saferoot gc` and `saferoot trash purge`: the two commands that truly delete kept bytes.
//!
//! Both run in the daemon when the directory is mounted (it owns the journal and knows which
//! objects its requests are about to journal), and here otherwise. Both hold the store
//! exclusively while they work: another saferoot command using the store makes them fail at
//! once with a message saying so (see `Store::exclusive`).

use crate::cli::{self, project_relative};
use crate::control::{self, Request};
use anyhow::{anyhow, bail, Result};
use saferoot_snapshots::gc::{self, PurgeReport, Report};
use saferoot_snapshots::{human_bytes, time, Store};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The store of an unmounted `dir` (`None` when a daemon serves it).
fn unmounted_store(dir: &Path) -> Result<Option<Store>> {
    if control::status(dir)?.is_some() {
        return Ok(None);
    }
    let (store, mounted) = cli::open_store(dir)?;
    if mounted {
        // Mounted between the two calls: let the daemon do it.
        return Ok(None);
    }
    // What a daemon that died left unrecorded (a rename in flight, whose bytes only its
    // intent names) is journaled first, so that collection keeps what it needs.
    let _ = saferoot_snapshots::recover::recover(&store);
    Ok(Some(store))
}

pub fn gc_cmd(
    dir: &Path,
    dry_run: bool,
    keep_within: Option<&str>,
    max_size: Option<&str>,
    json: bool,
) -> Result<i32> {
    // Bad values are usage errors before anything is touched.
    if let Some(k) = keep_within {
        saferoot_snapshots::config::parse_duration(k)?;
    }
    if let Some(m) = max_size {
        saferoot_snapshots::config::SizeCap::parse(m)?;
    }
    let report = match unmounted_store(dir)? {
        Some(store) => {
            let retention = gc::policy(&store, keep_within, max_size)?;
            gc::gc(
                &store,
                &gc::Options {
                    retention,
                    dry_run,
                    pid: std::process::id(),
                    comm: "saferoot".into(),
                },
            )?
        }
        None => {
            let req = Request::Gc {
                dry_run,
                keep_within: keep_within.map(str::to_owned),
                max_size: max_size.map(str::to_owned),
            };
            let rep = control::call_patient(dir, &req)?
                .ok_or_else(|| anyhow!("the saferoot daemon of {} went away", dir.display()))?;
            if !rep.ok {
                bail!("{}", rep.error.unwrap_or_else(|| "gc failed".into()));
            }
            rep.gc
                .ok_or_else(|| anyhow!("the saferoot daemon sent no gc report"))?
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_gc(&report);
    }
    Ok(0)
}

fn print_gc(r: &Report) {
    let freed = r.size_before.saturating_sub(r.size_after);
    let verb = if r.dry_run {
        "would free about"
    } else {
        "freed"
    };
    println!(
        "gc{}: {verb} {} ({} journal record(s), {} trash item(s), {} object(s), {} \
         snapshot(s)) in {} ms",
        if r.dry_run { " --dry-run" } else { "" },
        human_bytes(freed),
        r.records_dropped,
        r.trash_items_freed,
        r.objects_freed,
        r.snapshots_dropped,
        r.elapsed_ms
    );
    println!(
        "store: {} -> {}{}",
        human_bytes(r.size_before),
        human_bytes(r.size_after),
        r.cap_bytes
            .map(|c| format!(" (cap {})", human_bytes(c)))
            .unwrap_or_default()
    );
    println!("policy: {}", r.policy);
    let when = |t: Option<i64>| t.map(time::format_utc).unwrap_or_else(|| "none".into());
    if r.oldest_after != r.oldest_before {
        println!(
            "oldest restorable instant: {} (was {})",
            when(r.oldest_after),
            when(r.oldest_before)
        );
    } else {
        println!("oldest restorable instant: {}", when(r.oldest_after));
    }
    if let Some(why) = &r.cap_unmet {
        println!("note: {why}");
    }
}

pub fn purge_cmd(dir: &Path, paths: &[PathBuf], yes: bool, json: bool) -> Result<i32> {
    let rel = project_relative(dir, paths)?;
    if rel.is_empty() {
        bail!(
            "trash purge needs paths inside {} (for all of its history, see `saferoot gc`)",
            dir.display()
        );
    }
    // What it would delete, first.
    let preview = purge(dir, &rel, true)?;
    if preview.records == 0 {
        if json {
            println!("{}", serde_json::to_string(&preview)?);
        } else {
            println!("nothing kept for {}", shown(&rel));
        }
        return Ok(0);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete kept bytes for good without a terminal to ask on; \
                 add --yes to confirm"
            );
        }
        eprint!(
            "delete for good the {} kept version(s) of {} ({} path(s))? \
             They cannot be restored afterwards. [y/N] ",
            preview.records,
            shown(&rel),
            preview.paths.len()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nothing deleted");
            return Ok(1);
        }
    }
    let done = purge(dir, &rel, false)?;
    if json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        println!(
            "purged {} kept version(s) of {} path(s): freed {}",
            done.records,
            done.paths.len(),
            human_bytes(done.size_before.saturating_sub(done.size_after))
        );
    }
    Ok(0)
}

fn shown(rel: &[PathBuf]) -> String {
    rel.iter()
        .map(|p| cli::shown(p))
        .collect::<Vec<_>>()
        .join(", ")
}

fn purge(dir: &Path, rel: &[PathBuf], dry_run: bool) -> Result<PurgeReport> {
    match unmounted_store(dir)? {
        Some(store) => Ok(gc::purge(&store, rel, dry_run)?),
        None => {
            let req = Request::Purge {
                paths: rel.iter().map(|p| control::path_to_hex(p)).collect(),
                dry_run,
            };
            let rep = control::call_patient(dir, &req)?
                .ok_or_else(|| anyhow!("the saferoot daemon of {} went away", dir.display()))?;
            if !rep.ok {
                bail!("{}", rep.error.unwrap_or_else(|| "purge failed".into()));
            }
            rep.purge
                .ok_or_else(|| anyhow!("the saferoot daemon sent no purge report"))
        }
    }
}
