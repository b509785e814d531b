//! Retention on real mounts (issue 6, test 1): `gc` keeps the store under its cap, the newest
//! history still restores byte for byte, a collected instant is refused with the documented
//! message, the daemon collects by itself when the cap is crossed, and `trash purge` deletes
//! for good and only when told to.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Store size (trash, objects, journal) as `status --json` reports it.
fn store_bytes(p: &Project) -> u64 {
    let o = p.run(&["status", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    v["store"]["total_bytes"].as_u64().expect("total_bytes")
}

/// `saferoot doctor` finds nothing wrong (mounted: through the daemon; else on the store).
fn assert_healthy(p: &Project, when: &str) {
    let o = p.run(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("doctor --json {when}: {e}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(v["problems"], serde_json::json!([]), "{when}: {v}");
    assert_ok(&o);
}

fn write_config(p: &Project, text: &str) {
    std::fs::write(p.dir().join(".saferoot/config.toml"), text).unwrap();
}

/// Every file under `root` whose content contains `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn gc_keeps_the_cap_and_the_newest_history_restores_exactly() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    // The store exists after the first mount; no cap from the config (the test sets it on the
    // command line, so the daemon's own collection stays out of the way).
    p.mount();
    p.umount();
    write_config(
        &p,
        "[retention]\nkeep_within = \"off\"\nmax_size = \"off\"\n",
    );
    p.mount();
    tick();
    let t_first = now_rfc3339();
    tick();
    // Five rounds of history: 1 MiB written and deleted, a source file edited, a file
    // truncated (its old bytes kept as an object), a snapshot.
    for i in 0..5 {
        assert_ok(&p.sh(&format!(
            "mkdir -p blobs && head -c 1048576 /dev/urandom > blobs/b{i} && rm blobs/b{i} && \
             sed -i 's/$/ /' README.md && head -c 4096 /dev/urandom > o && : > o"
        )));
        assert_ok(&p.run(&["snapshot"]));
    }
    let before_gc = store_bytes(&p);
    assert!(
        before_gc > 5 << 20,
        "history should hold 5 MiB: {before_gc}"
    );
    let journal_before = p.log_json().len();

    // A dry run says what it would do and changes nothing.
    let o = p.run(&["gc", "--dry-run", "--max-size", "2MiB"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("would free about"), "{}", stdout(&o));
    assert_eq!(store_bytes(&p), before_gc);
    assert_eq!(p.log_json().len(), journal_before);

    let o = p.run(&["gc", "--dry-run", "--max-size", "2MiB", "--json"]);
    assert_ok(&o);
    let dry: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();

    // The real thing, through the daemon.
    let o = p.run(&["gc", "--max-size", "2MiB", "--json"]);
    assert_ok(&o);
    let rep: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // The dry run counted what the real run did.
    for k in [
        "records_dropped",
        "trash_items_freed",
        "objects_freed",
        "snapshots_dropped",
    ] {
        assert_eq!(dry[k], rep[k], "{k}: dry run {dry}, real {rep}");
    }
    // (Objects the daemon made in the last ten minutes are pinned: it frees none here.)
    for k in ["trash_items_freed", "snapshots_dropped"] {
        assert!(rep[k].as_u64().unwrap() > 0, "{k}: {rep}");
    }
    assert!(rep["records_dropped"].as_u64().unwrap() > 0, "{rep}");
    assert!(rep["cap_unmet"].is_null(), "{rep}");
    let after_gc = store_bytes(&p);
    assert!(
        after_gc <= 2 << 20,
        "cap 2 MiB does not hold: {after_gc} bytes"
    );
    assert_eq!(rep["size_after"].as_u64().unwrap(), after_gc);
    // The daemon's collection left no index line naming a collected trash item, mounted or
    // not (the daemon's indexer appends to the same index meanwhile).
    assert_healthy(&p, "after gc through the daemon");
    assert_ok(&p.sh("echo more > more && rm more"));
    p.umount();
    assert_healthy(&p, "unmounted after gc through the daemon");
    // The indexer's appends after the daemon pruned went to the new index, not to the file
    // the prune replaced.
    let kept_more = p
        .log_json()
        .into_iter()
        .rev()
        .find(|r| r["op"] == "unlink" && r["path"] == "more")
        .and_then(|r| r["kept"].as_str().map(str::to_owned))
        .expect("the removal of more is journaled with its trash item");
    // `log` shows the item under the project (.saferoot/trash/...), the index relative to
    // the store (trash/...).
    let in_store = kept_more.strip_prefix(".saferoot/").unwrap();
    let index = std::fs::read_to_string(p.dir().join(".saferoot/index")).unwrap();
    assert!(
        index.contains(&format!("\"trash\":\"{in_store}\"")),
        "{kept_more} not in the index:\n{index}"
    );
    p.mount();

    // A collected instant is refused, plainly, and nothing changes.
    let live = digest(p.dir());
    let o = p.run(&["restore", &t_first]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("was collected by `saferoot gc`")
            && e.contains("the oldest restorable instant is"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    assert_same_tree(&live, &digest(p.dir()));
    let o = p.run(&["diff", &t_first]);
    assert!(!o.status.success() && stderr(&o).contains("collected by `saferoot gc`"));

    // The newest snapshot and everything since restore byte for byte.
    let newest = {
        let o = p.run(&["snapshots", "--json"]);
        assert_ok(&o);
        let last = stdout(&o).lines().last().unwrap().to_owned();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap();
        format!("@{}", v["n"])
    };
    tick();
    let t_live = now_rfc3339();
    tick();
    assert_ok(&p.sh("rm -rf src docs README.md && echo clobbered > Cargo.toml"));
    assert_ok(&p.run(&["restore", &t_live]));
    assert_same_tree(&live, &digest(p.dir()));
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("t");
    assert_ok(&p.run(&["restore", "--to", to.to_str().unwrap(), &newest]));
    assert_same_tree(&live, &digest(&to));

    // Unmounted, gc works on the store directly, and a second run finds nothing more to do
    // than the newest snapshot (the one taken at unmount) allows.
    p.umount();
    let newest_then = newest.clone();
    // Unmounted, no object is pinned: the dry run and the real run agree on those too.
    let o = p.run(&["gc", "--dry-run", "--keep-within", "0s", "--json"]);
    assert_ok(&o);
    let dry: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let o = p.run(&["gc", "--keep-within", "0s", "--json"]);
    assert_ok(&o);
    let rep: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for k in [
        "records_dropped",
        "trash_items_freed",
        "objects_freed",
        "snapshots_dropped",
    ] {
        assert_eq!(dry[k], rep[k], "{k}: dry run {dry}, real {rep}");
    }
    assert!(rep["objects_freed"].as_u64().unwrap() > 0, "{rep}");
    let o = p.run(&["gc", "--keep-within", "0s", "--json"]);
    assert_ok(&o);
    let rep: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(rep["records_dropped"], 0, "{rep}");
    assert_healthy(&p, "after gc unmounted");
    // No trash item or object is left that no record refers to.
    let mut referenced = std::collections::HashSet::new();
    for r in p.log_json() {
        for k in ["trash", "object"] {
            if let Some(s) = r[k].as_str() {
                referenced.insert(s.to_owned());
            }
        }
    }
    let store = p.dir().join(".saferoot");
    for e in walkdir::WalkDir::new(store.join("objects")).min_depth(2) {
        let e = e.unwrap();
        let hex: String = e
            .path()
            .strip_prefix(store.join("objects"))
            .unwrap()
            .to_string_lossy()
            .replace('/', "");
        assert!(referenced.contains(&hex), "unreferenced object {hex}");
    }
    p.mount();
    let o = p.run(&["restore", "--dry-run", &newest_then]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("snapshot {} is gone", &newest_then[1..]))
            && stderr(&o).contains("collected by `saferoot gc`"),
        "{}",
        stderr(&o)
    );
    // The snapshot taken at unmount (the newest before this mount's) is where history starts.
    let o = p.run(&["snapshots", "--json"]);
    let listing = stdout(&o);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the unmount snapshot and this mount's: {lines:?}"
    );
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let o = p.run(&["restore", "--dry-run", &format!("@{}", v["n"])]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("0 path(s) would change")
            || stderr(&o).contains("0 path(s) would change")
    );
    p.umount();
}

#[test]
fn the_daemon_collects_when_the_cap_is_crossed() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    p.umount();
    write_config(
        &p,
        "[retention]\nkeep_within = \"off\"\nmax_size = \"1MiB\"\n",
    );
    p.mount();
    assert_ok(&p.sh("head -c 3145728 /dev/urandom > big && rm big"));
    // History before this snapshot may go; what comes after it never does.
    assert_ok(&p.run(&["snapshot"]));
    assert_ok(&p.sh("head -c 1572864 /dev/urandom > more && rm more"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gcs = p.log_json().into_iter().filter(|r| r["op"] == "gc").count();
        let size = store_bytes(&p);
        if gcs > 0 && size < 3 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic gc within 30 s (store {size} bytes, {gcs} gc record(s))"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The deletion after the snapshot is still restorable.
    let o = p.run(&["trash", "list", "--json", "more"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("\"present\":true"), "{}", stdout(&o));
    p.umount();
    // The unmount snapshot makes it collectible: the next mount collects it, and says so.
    let o = p.run(&["mount"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("gc at mount collected") && stderr(&o).contains("at most 1.0 MiB"),
        "{}",
        stderr(&o)
    );
    let o = p.run(&["trash", "list", "--json", "more"]);
    assert!(!stdout(&o).contains("\"present\":true"), "{}", stdout(&o));
    p.umount();
}

#[test]
fn trash_purge_asks_then_deletes_for_good() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    let secret = b"s3cr3t-token-4b1f9c";
    std::fs::write(p.dir().join("keep.txt"), b"keep me\n").unwrap();
    std::fs::write(p.dir().join("secret.txt"), secret).unwrap();
    tick();
    let t0 = now_rfc3339();
    tick();
    assert_ok(&p.sh("rm secret.txt keep.txt"));

    // Not on a terminal and no --yes: refused, nothing deleted.
    let o = p.run(&["trash", "purge", "secret.txt"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let o = p.run(&["restore", "--dry-run", &t0]);
    assert!(stdout(&o).contains("+ secret.txt"), "{}", stdout(&o));

    let o = p.run(&["trash", "purge", "--yes", "secret.txt"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("purged 1 kept version"),
        "{}",
        stdout(&o)
    );
    // status counts only the removal whose bytes are still kept.
    let o = p.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["history"]["restorable_deletions"], 1, "{v}");
    // A restore to before brings back what was not purged, and says what it cannot.
    let o = p.run(&["restore", &t0]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("secret.txt")
            && stderr(&o).contains("deleted by `saferoot trash purge`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(p.dir().join("keep.txt")).unwrap(),
        b"keep me\n"
    );
    assert!(!p.dir().join("secret.txt").exists());
    assert_healthy(&p, "after a purge through the daemon");
    p.umount();
    assert_healthy(&p, "unmounted after a purge through the daemon");
    // The bytes are nowhere in the store.
    let found = files_containing(&p.dir().join(".saferoot"), secret);
    assert!(found.is_empty(), "secret still stored in {found:?}");
    let o = p.run(&["trash", "purge", "--yes", "nothing-here"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("nothing kept"), "{}", stdout(&o));
    let o = p.run(&["trash", "list", "nothing-here"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("nothing kept for nothing-here"),
        "{}",
        stderr(&o)
    );
    // The store itself is not a path of the project.
    let journal = std::fs::read(p.dir().join(".saferoot/journal")).unwrap();
    let o = p.run(&["trash", "purge", "--yes", ".saferoot/journal"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(".saferoot is saferoot's own store"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(p.dir().join(".saferoot/journal")).unwrap(),
        journal
    );
}

/// Bad `--keep-within` and `--max-size` values are usage errors (exit 2) that name the value,
/// negative ones included, before anything is opened.
#[test]
fn bad_gc_values_are_usage_errors() {
    for (flag, value, what) in [
        ("--keep-within", "-1d", "invalid duration"),
        ("--keep-within", "5x", "invalid duration"),
        ("--max-size", "-1", "invalid size"),
        ("--max-size", "0.5", "invalid size"),
        ("--max-size", "18446744073709551616", "invalid size"),
    ] {
        let o = saferoot(&["-C", "/nonexistent", "gc", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(what) && e.contains(&format!("{value:?}")),
            "{flag} {value}: {e}"
        );
    }
}

/// After gc collected every `saferoot run` session, `@start` and `denials` say the history was
/// collected (not that no session was ever recorded).
#[test]
fn collected_sessions_are_named_as_collected() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    p.umount();
    write_config(
        &p,
        "[retention]\nkeep_within = \"off\"\nmax_size = \"off\"\n",
    );
    assert_ok(&p.run(&[
        "run",
        "--no-sandbox",
        "--",
        "sh",
        "-c",
        "echo x > f; echo y > g; rm g",
    ]));
    assert!(p.log_json().iter().any(|r| r["op"] == "run"));
    std::thread::sleep(Duration::from_millis(20));
    assert_ok(&p.run(&["snapshot"]));
    assert_ok(&p.run(&["gc", "--keep-within", "0s"]));
    assert!(
        p.log_json().iter().all(|r| r["op"] != "run"),
        "the run record was collected"
    );
    for args in [
        &["restore", "@start"][..],
        &["diff", "@start"],
        &["denials"],
        &["undelete", "g"],
    ] {
        let o = p.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("collected by `saferoot gc`"), "{args:?}: {e}");
        assert!(!e.contains("recorded"), "{args:?}: {e}");
    }
    assert_eq!(std::fs::read(p.dir().join("f")).unwrap(), b"x\n");
}

/// A purge while mounted deletes the objects of what it purges at once, though the daemon
/// pinned them when it kept them (they stayed until a later gc).
#[test]
fn a_purge_while_mounted_deletes_fresh_objects() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    assert_ok(&p.sh("echo SECRET=hunter2 > secret.env && echo rotated > secret.env"));
    let store = p.dir().join(".saferoot");
    let o = p.run(&["trash", "purge", "--yes", "--json", "secret.env"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["objects"], 1, "{v}");
    p.umount();
    assert_eq!(
        files_containing(&store, b"hunter2"),
        Vec::<String>::new(),
        "the purged bytes are gone from the store"
    );
    assert_eq!(
        std::fs::read(p.dir().join("secret.env")).unwrap(),
        b"rotated\n"
    );
    assert_healthy(&p, "after the purge");
}

/// A purge while mounted keeps an object that a record written meanwhile names (the same
/// bytes kept for another path): it deleted it, leaving that record pointing at nothing.
#[test]
fn a_purge_keeps_an_object_another_path_takes_meanwhile() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    assert_ok(&p.sh("echo SECRET2 > f && cp f g && echo changed > f"));
    let purge = std::process::Command::new(bin())
        .args([
            "-C",
            p.dir().to_str().unwrap(),
            "trash",
            "purge",
            "--yes",
            "f",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    tick();
    let before_g = now_rfc3339();
    tick();
    assert_ok(&p.sh("echo other > g"));
    let o = purge.wait_with_output().unwrap();
    assert_ok(&o);
    p.umount();
    assert_healthy(&p, "after the purge");
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("g-before");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &before_g]));
    assert_eq!(std::fs::read(out.join("g")).unwrap(), b"SECRET2\n");
}

/// A purge cut off after its journal rewrite (simulated: the purged trash item and object put
/// back, with the purge's list): doctor names it, and --repair finishes it.
#[test]
fn a_purge_cut_off_is_named_and_finished() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    assert_ok(&p.sh("echo SECRET=1 > s.env && echo SECRET=2 > s.env && rm s.env"));
    p.umount();
    let store = p.dir().join(".saferoot");
    let kept: Vec<String> = files_containing(&store, b"SECRET=")
        .into_iter()
        .filter(|f| f.contains("/trash/") || f.contains("/objects/"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let saved: Vec<(String, Vec<u8>)> = kept
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    assert_ok(&p.run(&["trash", "purge", "--yes", "s.env"]));
    let mut list = Vec::new();
    for (f, bytes) in &saved {
        std::fs::create_dir_all(Path::new(f).parent().unwrap()).unwrap();
        std::fs::write(f, bytes).unwrap();
        list.extend_from_slice(
            f.strip_prefix(&format!("{}/", store.display()))
                .unwrap()
                .as_bytes(),
        );
        list.push(0);
    }
    std::fs::write(store.join("purging"), &list).unwrap();
    let o = p.run(&["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("purge-unfinished"), "{}", stdout(&o));
    assert_ok(&p.run(&["doctor", "--repair"]));
    assert_eq!(files_containing(&store, b"SECRET="), Vec::<String>::new());
    assert!(!store.join("purging").exists());
    assert_healthy(&p, "after the repair");
}
