//! `saferoot snapshot` and `saferoot snapshots`, and TIME resolution for commands that need
//! the store anyway (`@N`, `@start`).
//!
//! Both commands work whether DIR is mounted or not: the store (and the real directory under
//! the mount) is reached through [`cli::open_store`]. What this module does not do: anything
//! about the manifest format (`saferoot_snapshots::manifest`).

use crate::cli;
use anyhow::Result;
use saferoot_snapshots::{manifest, time, Store};
use std::path::Path;
use std::time::Instant;

/// Resolve TIME for a command on `dir`. An `@` form (`@N`, `@start`) needs the store, which is
/// opened and handed back so the caller does not open it twice; any other form is read before
/// the store is opened, so a mistyped TIME is reported before "no saferoot history".
pub fn resolve_time(dir: &Path, when: &str, now: i64) -> Result<(i64, Option<(Store, bool)>)> {
    if when.trim_start().starts_with('@') {
        let (store, mounted) = cli::open_store(dir)?;
        let t = time::resolve(&store, when, now)?;
        Ok((t, Some((store, mounted))))
    } else {
        Ok((time::parse_time(when, now)?, None))
    }
}

/// `saferoot snapshot`: take one now.
pub fn snapshot(dir: &Path) -> Result<i32> {
    let (store, _mounted) = cli::open_store(dir)?;
    let started = Instant::now();
    let info = manifest::take(&store, "manual")?;
    println!(
        "snapshot {}: {} entries, hashed {} files ({} bytes) in {} ms",
        info.n,
        info.entries,
        info.hashed_files,
        info.hashed_bytes,
        started.elapsed().as_millis()
    );
    Ok(0)
}

/// `saferoot snapshots`: list them, oldest first.
pub fn snapshots(dir: &Path, json: bool) -> Result<i32> {
    let (store, _) = cli::open_store(dir)?;
    // Each manifest is read whole and its checksum verified: a damaged one is named, and the
    // rest are listed.
    let mut list = Vec::new();
    for (_, r) in manifest::list_verified(&store)? {
        match r {
            Ok(info) => list.push(info),
            Err(e) => eprintln!("saferoot: warning: {e}; run `saferoot doctor`"),
        }
    }
    if json {
        for s in &list {
            println!(
                "{}",
                serde_json::json!({
                    "n": s.n,
                    "time": time::format_utc(s.t),
                    "t_ns": s.t,
                    "reason": s.reason,
                    "entries": s.entries,
                    "bytes": s.bytes,
                })
            );
        }
        return Ok(0);
    }
    if list.is_empty() {
        println!(
            "no snapshots yet (one is taken at every mount and unmount; `saferoot snapshot` \
             takes one now)"
        );
        return Ok(0);
    }
    println!(
        "{:>5}  {:<30}  {:<8}  {:>9}  {:>14}",
        "N", "TIME (UTC)", "REASON", "ENTRIES", "BYTES"
    );
    for s in &list {
        println!(
            "{:>5}  {:<30}  {:<8}  {:>9}  {:>14}",
            format!("@{}", s.n),
            time::format_utc(s.t),
            s.reason,
            s.entries,
            s.bytes
        );
    }
    Ok(0)
}
