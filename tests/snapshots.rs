//! Snapshots on real mounts: taken at mount, at unmount and on demand, listed, named by `@N`,
//! and `@start` for the start of the last `saferoot run`, with the errors for bad input.

mod common;
use common::*;
use std::time::Duration;

/// Files written just before a snapshot are hashed but not cached (same clock tick): wait so
/// the cache is what the test exercises.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

fn snapshot_line(o: &std::process::Output) -> (u64, u64, u64, u64) {
    assert_ok(o);
    let out = stdout(o);
    let line = out.lines().next().unwrap_or_default();
    // snapshot N: E entries, hashed H files (B bytes) in X ms
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        line.starts_with("snapshot ") && line.ends_with(" ms") && nums.len() == 5,
        "{line}"
    );
    (nums[0], nums[1], nums[2], nums[3])
}

#[test]
fn snapshots_at_mount_unmount_and_on_demand_and_restore_to_one() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir(p.dir().join("src")).unwrap();
    std::fs::write(p.dir().join("src/lib.rs"), b"pub fn f() {}\n").unwrap();
    std::fs::write(p.dir().join("notes.md"), b"notes\n").unwrap();
    std::fs::create_dir(p.dir().join("empty")).unwrap();

    // Nothing to snapshot into before the first mount.
    let o = p.run(&["snapshot"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("has no saferoot history yet"),
        "{}",
        stderr(&o)
    );

    settle();
    p.mount();
    // Mounted: the daemon's mount snapshot cached every hash, and the CLI finds the cache.
    let (n, entries, hashed, bytes) = snapshot_line(&p.run(&["snapshot"]));
    assert_eq!((n, entries, hashed, bytes), (2, 4, 0, 0));
    let at_2 = digest(p.dir());

    std::fs::write(p.dir().join("notes.md"), b"rewritten\n").unwrap();
    std::fs::remove_file(p.dir().join("src/lib.rs")).unwrap();
    std::fs::write(p.dir().join("new.txt"), b"new\n").unwrap();
    let (n, entries, hashed, _) = snapshot_line(&p.run(&["snapshot"]));
    assert_eq!((n, entries, hashed), (3, 4, 2));
    p.umount();

    let o = p.run(&["snapshots"]);
    assert_ok(&o);
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let reasons: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[2])).collect();
    assert_eq!(
        reasons,
        [
            ("@1", "mount"),
            ("@2", "manual"),
            ("@3", "manual"),
            ("@4", "umount")
        ],
        "{out}"
    );
    assert!(rows[0][1].ends_with('Z') && rows[0][3] == "4", "{out}");
    // The journal names each snapshot.
    let log = p.log_json();
    assert_eq!(log.iter().filter(|r| r["op"] == "snapshot").count(), 4);

    let o = p.run(&["restore", "@2"]);
    assert_ok(&o);
    assert_same_tree(&at_2, &digest(p.dir()));

    let o = p.run(&["restore", "@9"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "saferoot: no snapshot 9; `saferoot snapshots` lists them"
    );
    let o = p.run(&["restore", "@start"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "saferoot: no `saferoot run` session recorded yet"
    );
    let o = p.run(&["restore", "@last"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("after `@` give a snapshot number"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_time_is_reported_before_missing_history() {
    let p = Project::empty();
    let o = p.run(&["restore", "yesterday"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read time \"yesterday\""),
        "{}",
        stderr(&o)
    );
    // `@` forms need the history to mean anything.
    for t in ["@1", "@start"] {
        let o = p.run(&["restore", t]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("has no saferoot history yet"),
            "{t}: {}",
            stderr(&o)
        );
    }
    let o = p.run(&["snapshots"]);
    assert!(stderr(&o).contains("has no saferoot history yet"));
}

#[test]
fn restore_at_start_undoes_the_whole_run_session() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    p.mount();
    // A change before the session: @start must keep it.
    std::fs::write(p.dir().join("docs/before-run.md"), b"kept\n").unwrap();
    tick();
    let before_run = digest(p.dir());
    let o = p.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo clobbered > Cargo.toml; rm -rf src; mkdir out; echo x > out/new",
    ]);
    assert_ok(&o);
    assert!(!p.dir().join("src").exists());
    let log = p.log_json();
    let runs: Vec<_> = log.iter().filter(|r| r["op"] == "run").collect();
    assert_eq!(runs.len(), 1);
    p.umount();

    let o = p.run(&["restore", "@start"]);
    assert_ok(&o);
    assert_same_tree(&before_run, &digest(p.dir()));
}
