//! The commands that look into the past, on real mounts with real programs: `restore --to`,
//! `diff` (text and `--json`), `undelete`, `log PATH --since`, and their errors.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The mtime of every regular file and symlink under `root` (except the store).
fn mtimes(root: &Path) -> BTreeMap<PathBuf, (i64, i64)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".saferoot"))
        .map(|e| e.expect("walk"))
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let m = e.path().symlink_metadata().expect("lstat");
            (
                e.path().strip_prefix(root).unwrap().to_owned(),
                (m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

/// The entries of `d` whose path starts with one of `prefixes`.
fn only(d: &BTreeMap<PathBuf, Entry>, prefixes: &[&str]) -> BTreeMap<PathBuf, Entry> {
    d.iter()
        .filter(|(p, _)| prefixes.iter().any(|x| p.starts_with(x)))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// A failed command: non-zero exit, exactly one line on stderr, containing `want`.
#[track_caller]
fn assert_one_line_error(o: &std::process::Output, want: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail; stdout: {}", stdout(o));
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

/// `restore --to` after `rm -rf` through the mount writes the whole earlier tree elsewhere
/// (bytes, modes, symlinks, empty directories, file mtimes) and leaves the project as it is.
#[test]
fn restore_to_writes_the_tree_from_before_an_rm_rf_into_another_directory() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    p.mount();
    tick();
    let before = digest(p.dir());
    let before_mtimes = mtimes(p.dir());
    let t = now_rfc3339();
    tick();
    assert_ok(&p.sh("rm -rf src docs && rm Cargo.toml"));
    let after = digest(p.dir());
    let out = tempfile::Builder::new()
        .prefix("saferoot-out.")
        .tempdir()
        .unwrap();

    let dest = out.path().join("restored");
    let o = p.run(&["restore", "--to", dest.to_str().unwrap(), &t]);
    assert_ok(&o);
    assert!(stdout(&o).contains("was not changed"), "{}", stdout(&o));
    assert_same_tree(&before, &digest(&dest));
    assert_eq!(before_mtimes, mtimes(&dest));
    assert_same_tree(&after, &digest(p.dir()));

    // Only some paths, with their parent directories.
    let part = out.path().join("part");
    let o = p.run(&[
        "restore",
        "--to",
        part.to_str().unwrap(),
        &t,
        "src/tool.sh",
        "docs",
    ]);
    assert_ok(&o);
    let mut expect = only(&before, &["src/tool.sh", "docs"]);
    expect.insert(PathBuf::from("src"), before[Path::new("src")].clone());
    assert_same_tree(&expect, &digest(&part));

    // A destination that is not empty, or inside the project: refused, nothing written.
    let o = p.run(&["restore", "--to", dest.to_str().unwrap(), &t]);
    assert_one_line_error(&o, "is not empty");
    let inside = p.dir().join("restored");
    let o = p.run(&["restore", "--to", inside.to_str().unwrap(), &t]);
    assert_one_line_error(&o, "inside the project");
    assert!(!inside.exists());
    let o = p.run(&[
        "restore",
        "--to",
        out.path().join("x").to_str().unwrap(),
        "later",
    ]);
    assert_one_line_error(&o, "later");
    assert!(!out.path().join("x").exists());
    p.umount();
    assert_same_tree(&after, &digest(p.dir()));
}

/// `diff` between two instants and up to now, as text, as JSON, and for some paths only.
#[test]
fn diff_lists_real_changes_as_text_and_json() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    let d = p.dir();
    std::fs::write(d.join("gone"), b"gone\n").unwrap();
    std::fs::write(d.join("edited"), b"v1\n").unwrap();
    std::fs::write(d.join("script.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::write(d.join("kind"), b"a file\n").unwrap();
    std::fs::write(d.join("same"), b"same\n").unwrap();
    std::fs::create_dir(d.join("dir")).unwrap();
    p.mount();
    tick();
    let t1 = now_rfc3339();
    tick();
    assert_ok(&p.sh(
        "rm gone && echo new > new && echo v2 >> edited && chmod +x script.sh \
         && rm kind && mkdir kind && rmdir dir && cat same > /dev/null",
    ));
    tick();
    let t2 = now_rfc3339();
    tick();
    assert_ok(&p.sh("echo later > later"));

    let between = "- dir\nM edited\n- gone\nT kind\n+ new\nm script.sh\n";
    let o = p.run(&["diff", &t1, &t2]);
    assert_ok(&o);
    assert_eq!(stdout(&o), between);
    assert_eq!(stderr(&o), "");
    let o = p.run(&["diff", &t1]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "- dir\nM edited\n- gone\nT kind\n+ later\n+ new\nm script.sh\n"
    );
    let o = p.run(&["diff", "--json", &t1, &t2]);
    assert_ok(&o);
    let json: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(json[0], serde_json::json!({"mark": "-", "path": "dir"}));
    let as_text: String = json
        .iter()
        .map(|v| {
            format!(
                "{} {}\n",
                v["mark"].as_str().unwrap(),
                v["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(as_text, between);
    let o = p.run(&["diff", &t1, "--", "kind", "later"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "T kind\n+ later\n");
    // Nothing changed since.
    tick();
    let t3 = now_rfc3339();
    let o = p.run(&["diff", &t3]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "");

    p.umount();
    let o = p.run(&["diff", &t1, &t2]);
    assert_ok(&o);
    assert_eq!(stdout(&o), between);
    for (args, want) in [
        (vec!["diff", "not-a-time"], "not-a-time"),
        (
            vec!["diff", "2001-01-01T00:00:00Z"],
            "nothing is recorded before",
        ),
        (vec!["diff", &t1, "soon"], "soon"),
        (vec!["diff", &t1, "--", "/etc"], "not inside"),
    ] {
        assert_one_line_error(&p.run(&args), want);
    }
}

/// `undelete` of a file and of a directory removed by `rm -rf` through the mount: each comes
/// back as it was, what is in the way goes to the trash, and the mount shows it at once.
#[test]
fn undelete_brings_back_a_file_and_a_directory_removed_by_rm_rf() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    p.mount();
    tick();
    let before = digest(p.dir());
    tick();
    assert_ok(&p.sh("rm -rf src && rm Cargo.toml && echo replacement > Cargo.toml"));
    let after = digest(p.dir());

    let o = p.run(&["undelete", "src", "Cargo.toml"]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("brought back src (directory, removed at"),
        "{out}"
    );
    assert!(
        out.contains("brought back Cargo.toml (file, removed at"),
        "{out}"
    );
    assert!(
        out.contains("+ src/tool.sh") && out.contains("M Cargo.toml"),
        "{out}"
    );
    // Through the mount, at once: src whole, Cargo.toml as before, the rest untouched.
    let now = digest(p.dir());
    assert_same_tree(&only(&before, &["src"]), &only(&now, &["src"]));
    assert_eq!(
        now[Path::new("Cargo.toml")],
        before[Path::new("Cargo.toml")]
    );
    let rest = |d: &BTreeMap<PathBuf, Entry>| -> BTreeMap<PathBuf, Entry> {
        d.iter()
            .filter(|(p, _)| !p.starts_with("src") && !p.starts_with("Cargo.toml"))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    };
    assert_same_tree(&rest(&after), &rest(&now));

    for (args, want) in [
        (
            vec!["undelete", "docs/notes.md"],
            "cannot undelete docs/notes.md",
        ),
        (
            vec!["undelete", "never-existed"],
            "cannot undelete never-existed",
        ),
        (vec!["undelete", "/etc/passwd"], "not inside"),
    ] {
        assert_one_line_error(&p.run(&args), want);
    }
    assert_same_tree(&now, &digest(p.dir()));
    p.umount();
    // The replacement went to the trash, not away.
    let kept = walkdir::WalkDir::new(p.dir().join(".saferoot/trash"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .any(|e| std::fs::read(e.path()).unwrap() == b"replacement\n");
    assert!(kept);
}

/// `log PATH --since TIME`: only what happened to PATH or below it (under either name of a
/// rename), from TIME on, with the process that did it.
#[test]
fn log_shows_the_history_of_a_path_since_a_time() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir(p.dir().join("notes")).unwrap();
    std::fs::write(p.dir().join("notes/a.md"), b"a\n").unwrap();
    std::fs::write(p.dir().join("other.txt"), b"o\n").unwrap();
    p.mount();
    assert_ok(&p.sh("echo 1 >> notes/a.md && echo x >> other.txt"));
    tick();
    let since = now_rfc3339();
    tick();
    assert_ok(&p.sh(
        "echo 2 > notes/a.md && mv notes/a.md notes/b.md && rm other.txt && mv notes/b.md moved.md",
    ));

    let o = p.run(&["log", "--json", "--since", &since, "notes"]);
    assert_ok(&o);
    let recs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &recs {
        assert!(r["time"].as_str().unwrap() >= since.as_str(), "{r}");
        let under = |v: &serde_json::Value| v.as_str().is_some_and(|s| s.starts_with("notes/"));
        assert!(under(&r["path"]) || under(&r["to"]), "{r}");
    }
    let ops: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let w = ("write".to_owned(), "notes/a.md".to_owned());
    assert_eq!(
        ops.iter().filter(|o| **o == w).count(),
        1,
        "one write since TIME: {ops:?}"
    );
    let write = recs.iter().find(|r| r["op"] == "write").unwrap();
    assert_eq!(write["comm"], "sh", "{write}");
    assert!(
        write["kept"]
            .as_str()
            .unwrap()
            .starts_with(".saferoot/objects/"),
        "{write}"
    );
    assert!(
        ops.contains(&("rename".into(), "notes/a.md".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("rename".into(), "notes/b.md".into())),
        "{ops:?}"
    );

    // Text, relative to where the user is; a path outside DIR is an error.
    let o = std::process::Command::new(bin())
        .args([
            "-C",
            p.dir().to_str().unwrap(),
            "log",
            "a.md",
            "--since",
            &since,
        ])
        .current_dir(p.dir().join("notes"))
        .output()
        .unwrap();
    assert_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("rename   notes/a.md -> notes/b.md"), "{text}");
    assert!(
        !text.contains("other.txt") && !text.contains("notes/b.md -> moved.md"),
        "{text}"
    );
    let o = p.run(&["log", "/etc"]);
    assert_one_line_error(&o, "not inside");
    let o = p.run(&["log", "--since", "whenever"]);
    assert_one_line_error(&o, "whenever");
    p.umount();
}

/// `status --json` (issue 6): mounted by which daemon, what the store holds (trash files and
/// objects counted on disk), how many deletions a restore can undo, since when; and the same
/// for an unmounted directory.
#[test]
fn status_json_reports_the_daemon_and_the_store() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir_all(p.dir().join("d")).unwrap();
    for i in 0..3 {
        std::fs::write(p.dir().join(format!("d/f{i}")), vec![b'x'; 5000]).unwrap();
    }
    std::fs::write(p.dir().join("w"), b"old").unwrap();
    p.mount();
    assert_ok(&p.sh("rm -r d && echo new > w"));
    let json = |p: &Project| -> serde_json::Value {
        let o = p.run(&["status", "--json"]);
        assert_ok(&o);
        serde_json::from_str(&stdout(&o)).expect("status --json is one JSON object")
    };
    let v = json(&p);
    let status = stdout(&p.run(&["status"]));
    let pid = v["daemon"]["pid"].as_u64().unwrap();
    assert!(status.contains(&format!("daemon pid {pid}")), "{status}");
    assert_eq!(v["mounted"], true);
    assert_eq!(v["daemon_gone"], false);
    assert_eq!(v["store"]["trash_files"], 3);
    assert!(v["store"]["trash_bytes"].as_u64().unwrap() >= 3 * 4096);
    assert_eq!(v["store"]["objects"], 1, "the overwritten file's old bytes");
    assert!(v["store"]["journal_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        v["history"]["restorable_deletions"], 4,
        "three files and the directory"
    );
    let first = v["history"]["oldest_restorable"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.ends_with('Z'));
    p.umount();
    let v = json(&p);
    assert_eq!(v["mounted"], false);
    assert!(v["daemon"].is_null());
    assert_eq!(v["store"]["trash_files"], 3);
    assert_eq!(v["history"]["oldest_restorable"], first.as_str());
    // The other listings have --json too: one object per line.
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = p.run(args);
        assert_ok(&o);
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    let snaps = lines(&["snapshots", "--json"]);
    let reasons: Vec<&str> = snaps
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["mount", "umount"]);
    assert_eq!(snaps[0]["n"], 1);
    assert!(snaps[1]["entries"].as_u64().unwrap() >= 1);
    let profiles = lines(&["profile", "list", "--json"]);
    assert!(profiles
        .iter()
        .any(|p| p["name"] == "pi" && p["origin"] == "built-in"));
}

/// `saferoot trash list [PATH] [--json]` (issue 6): every removal whose bytes are kept, oldest
/// first, with where they are and whether they are still there.
#[test]
fn trash_list_shows_what_removals_kept() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir_all(p.dir().join("src")).unwrap();
    std::fs::write(p.dir().join("src/a.rs"), b"fn a() {}\n").unwrap();
    std::fs::write(p.dir().join("notes.md"), b"notes\n").unwrap();
    std::fs::write(p.dir().join("old"), b"replaced\n").unwrap();
    p.mount();
    assert_ok(&p.sh("rm -r src && rm notes.md && echo new > new && mv new old"));
    let list = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["trash", "list", "--json"];
        a.extend_from_slice(args);
        let o = p.run(&a);
        assert_ok(&o);
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = list(&[]);
    let paths: Vec<&str> = all.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["src/a.rs", "notes.md", "old"], "{all:?}");
    assert!(all
        .iter()
        .all(|v| v["present"] == true && v["kind"] == "file"));
    assert_eq!(all[0]["size"], 10);
    let only = list(&["src"]);
    assert_eq!(only.len(), 1);
    p.umount();
    // A trash item removed by hand shows as gone.
    let kept = all[1]["kept"].as_str().unwrap();
    std::fs::remove_file(p.dir().join(kept)).unwrap();
    let o = p.run(&["trash", "list", "notes.md"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("notes.md") && stdout(&o).contains("(gone)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(list(&["notes.md"])[0]["present"], false);
}
