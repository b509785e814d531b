//! End to end on real mounts: `saferoot run` over a real source tree, real `rm`, `mv`, `sh`,
//! then `saferoot restore`, compared byte for byte over the whole tree.

mod common;
use common::*;
use std::path::Path;

/// Issue 2, tests 1 and 5: delete most of a real source tree through `saferoot run`, restore it
/// to the instant the run started, and get every byte, mode, symlink and empty directory back.
#[test]
fn run_rm_rf_then_restore_gives_back_the_exact_tree() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    let before = digest(p.dir());
    assert!(before.len() > 20, "the fixture should be a real tree");

    let o = p.run(&["run", "--", "sh", "-c", "rm -rf src docs; rm -f Cargo.toml"]);
    assert_ok(&o);
    assert!(!is_mounted(p.dir()), "run must unmount what it mounted");
    for gone in ["src", "docs", "Cargo.toml"] {
        assert!(!p.dir().join(gone).exists(), "{gone} should be gone");
    }

    let log = p.log_json();
    // The snapshot taken at mount comes first, then the mount, then the run.
    let ops: Vec<&str> = log
        .iter()
        .take(3)
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["snapshot", "mount", "run"]);
    let first = &log[1];
    // Every file that was deleted appears as an unlink by `rm`, with where it is kept.
    let unlinks: Vec<&serde_json::Value> = log.iter().filter(|r| r["op"] == "unlink").collect();
    let files_before = before.values().filter(|e| e.kind != 'd').count();
    let files_after = digest(p.dir()).values().filter(|e| e.kind != 'd').count();
    assert_eq!(unlinks.len(), files_before - files_after);
    for u in &unlinks {
        assert_eq!(u["comm"], "rm", "{u}");
        assert!(
            u["kept"].as_str().unwrap().starts_with(".saferoot/trash/"),
            "{u}"
        );
    }
    assert!(unlinks.iter().any(|u| u["path"] == "Cargo.toml"));
    assert!(log
        .iter()
        .any(|r| r["op"] == "rmdir" && r["path"] == "src/empty/deeper"));
    // The text log names the process too.
    let text = stdout(&p.run(&["log"]));
    assert!(text.contains("unlink   Cargo.toml  rm["), "{text}");

    let at = first["time"].as_str().unwrap();
    let o = p.run(&["restore", at]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains(at),
        "restore prints the instant: {}",
        stdout(&o)
    );
    assert_same_tree(&before, &digest(p.dir()));
}

/// Issue 2, test 2: `mv new old` keeps the old content; restore brings it back and moves the
/// newer file to the trash, and restoring to just before the restore undoes it.
#[test]
fn rename_over_is_recoverable_and_restore_is_undoable() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::write(p.dir().join("old"), b"old content\n").unwrap();
    std::fs::write(p.dir().join("new"), b"new content\n").unwrap();
    p.mount();
    tick();
    let before_mv = now_rfc3339();
    let state_before = digest(p.dir());
    tick();
    let o = p.sh("mv new old");
    assert_ok(&o);
    assert_eq!(
        std::fs::read(p.dir().join("old")).unwrap(),
        b"new content\n"
    );
    assert!(!p.dir().join("new").exists());
    let state_after = digest(p.dir());
    tick();

    // Restore while mounted (the CLI goes through the daemon).
    let before_restore = now_rfc3339();
    tick();
    let o = p.run(&["restore", &before_mv]);
    assert_ok(&o);
    assert_same_tree(&state_before, &digest(p.dir()));
    p.umount();
    assert_same_tree(&state_before, &digest(p.dir()));
    // The file restore replaced ("old" with the new content) was moved to the trash.
    let kept: Vec<_> = walkdir::WalkDir::new(p.dir().join(".saferoot/trash"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(kept.iter().any(|c| c == b"new content\n"));
    assert!(kept.iter().any(|c| c == b"old content\n"));

    // Undo the restore (unmounted this time: restore works either way).
    let o = p.run(&["restore", &before_restore]);
    assert_ok(&o);
    assert_same_tree(&state_after, &digest(p.dir()));
}

/// Issue 2, test 3: inside `run`, `/usr/bin/rm -rf` of a file outside the project is denied.
#[test]
fn sandbox_denies_rm_outside_the_project() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    let outside = tempfile::Builder::new()
        .prefix("saferoot-outside.")
        .tempdir()
        .unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let script = format!(
        "/usr/bin/rm -rf {v}; echo rm-exit=$?; echo inside > mine.txt",
        v = victim.display()
    );
    let o = p.run(&["run", "--", "sh", "-c", &script]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("Permission denied"),
        "stderr: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("rm-exit=1"), "stdout: {}", stdout(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Writing inside the project worked (through the mount).
    assert_eq!(
        std::fs::read(p.dir().join("mine.txt")).unwrap(),
        b"inside\n"
    );
    // The exit status of CMD is saferoot's.
    let o = p.run(&["run", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
}

/// Issue 2, test 4: the store cannot be seen or touched through the mount.
#[test]
fn store_is_invisible_and_untouchable_through_the_mount() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::write(p.dir().join("a.txt"), b"a").unwrap();
    p.mount();
    // Put something in the trash so the store is not trivially empty.
    assert_ok(&p.sh("rm a.txt"));
    let ls = p.sh("ls -a");
    assert_ok(&ls);
    assert!(!stdout(&ls).contains(".saferoot"), "ls -a: {}", stdout(&ls));
    for cmd in [
        "stat .saferoot",
        "cat .saferoot/journal",
        "ls .saferoot/trash",
        "cd .saferoot",
        "mkdir .saferoot",
        "touch .saferoot",
        "ln -s x .saferoot",
        "echo x > f && mv f .saferoot",
    ] {
        let o = p.sh(cmd);
        assert!(!o.status.success(), "`{cmd}` should fail through the mount");
    }
    // rm -rf says nothing (nothing is there, as far as it can tell) and removes nothing.
    assert_ok(&p.sh("rm -rf .saferoot; rm -rf ./.saferoot/"));
    assert_ok(&p.sh("find . -name '.saferoot*' | grep -q . && exit 1 || exit 0"));
    p.umount();
    assert_eq!(trash_files(p.dir()), 1, "the store survived with its trash");
    assert!(p.dir().join(".saferoot/journal").is_file());
}

/// Issue 2, test 6: each bad input gives a non-zero exit, one line on stderr, and changes
/// nothing on disk.
#[test]
fn bad_input_gives_one_line_and_changes_nothing() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::write(p.dir().join("file"), b"x").unwrap();
    std::fs::write(p.dir().join("noexec.sh"), b"#!/bin/sh\n").unwrap();
    let untouched = digest(p.dir());
    let d = p.dir().to_str().unwrap().to_owned();
    let missing = format!("{d}/does-not-exist");
    let notdir = format!("{d}/file");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-C", &missing, "mount"], "No such file or directory"),
        (vec!["-C", &notdir, "mount"], "not a directory"),
        (
            vec!["-C", &missing, "run", "--", "true"],
            "No such file or directory",
        ),
        (
            vec!["-C", &d, "run", "--", "no-such-command-xyz"],
            "command not found",
        ),
        (
            vec!["-C", &d, "run", "--", "./noexec.sh"],
            "not an executable",
        ),
        (vec!["-C", &d, "umount"], "not mounted"),
        (vec!["-C", &d, "log"], "no saferoot history"),
        (vec!["-C", &d, "restore", "10m"], "no saferoot history"),
        (vec!["-C", &d, "restore", "yesterday-ish"], "yesterday-ish"),
    ];
    for (args, want) in &cases {
        let o = saferoot(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
        assert!(o.stdout.is_empty() || !stdout(&o).contains("restored"));
    }
    assert_same_tree(&untouched, &digest(p.dir()));
    assert!(
        !p.dir().join(".saferoot").exists(),
        "no store was created by bad input"
    );

    // Now with history: an unparsable TIME, a TIME before the first record, already mounted.
    p.mount();
    let o = saferoot(&["-C", &d, "mount"]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("already mounted"), "{}", stderr(&o));
    p.umount();
    let snapshot = digest(p.dir());
    for (args, want) in [
        (vec!["-C", &d, "restore", "25:99"], "25:99"),
        (vec!["-C", &d, "restore", "2001-01-01T00:00:00Z"], "before"),
        (vec!["-C", &d, "restore", "--dry-run", "3d"], "before"),
    ] {
        let o = saferoot(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
    }
    assert_same_tree(&snapshot, &digest(p.dir()));
}

/// `restore --dry-run` lists what would change and changes nothing; PATH limits a restore.
#[test]
fn dry_run_and_path_restricted_restore() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir_all(p.dir().join("keep")).unwrap();
    std::fs::write(p.dir().join("keep/a"), b"a").unwrap();
    std::fs::write(p.dir().join("b"), b"b").unwrap();
    p.mount();
    tick();
    let t0 = now_rfc3339();
    tick();
    assert_ok(&p.sh("rm -rf keep b"));
    let after_rm = digest(p.dir());

    let o = p.run(&["restore", "--dry-run", &t0]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("+ keep/a") && out.contains("+ b"), "{out}");
    assert_same_tree(&after_rm, &digest(p.dir()));

    let o = p.run(&["restore", &t0, "keep"]);
    assert_ok(&o);
    assert_eq!(std::fs::read(p.dir().join("keep/a")).unwrap(), b"a");
    assert!(
        !p.dir().join("b").exists(),
        "only the given path is restored"
    );
    p.umount();
    assert_eq!(
        std::fs::read(Path::new(p.dir()).join("keep/a")).unwrap(),
        b"a"
    );
}

/// A symlink moved to the trash must never be followed when later deletions of the same
/// second need a directory of the same name there (it once let an agent make the daemon
/// move files anywhere, including into the store).
#[test]
fn trashed_symlinks_are_never_followed() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    let outside = tempfile::Builder::new()
        .prefix("saferoot-outside.")
        .tempdir()
        .unwrap();
    let script = format!(
        "ln -s {o} link && rm link && mkdir link && echo evil > link/evil && rm link/evil && \
         ln -s ../.. up && rm up && mkdir up && echo x > up/planted && rm up/planted && \
         ln -s nowhere dangling && rm dangling && mkdir dangling && touch dangling/f && rm dangling/f",
        o = outside.path().display()
    );
    let o = p.run(&["run", "--", "sh", "-c", &script]);
    assert_ok(&o);
    assert!(
        !outside.path().join("evil").exists(),
        "the daemon followed a trashed symlink"
    );
    assert!(!p.dir().join(".saferoot/planted").exists());
    assert!(!p.dir().join("planted").exists());
    // Every deleted file is in the trash, under its own path.
    let kept: Vec<String> = walkdir::WalkDir::new(p.dir().join(".saferoot/trash"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for f in ["evil", "planted", "f"] {
        assert!(kept.iter().any(|k| k == f), "{f} not kept: {kept:?}");
    }
}

/// A directory moved to the trash never receives items deleted later in the same second, so
/// restore does not add files that were not there.
#[test]
fn a_trashed_directory_is_not_reused_as_a_container() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir_all(p.dir().join("d")).unwrap();
    std::fs::create_dir_all(p.dir().join("e")).unwrap();
    std::fs::write(p.dir().join("e/x"), b"x").unwrap();
    p.mount();
    let before = digest(p.dir());
    tick();
    let t0 = now_rfc3339();
    tick();
    assert_ok(&p.sh("mv -T e d && rm d/x"));
    assert_ok(&p.run(&["restore", &t0]));
    assert_same_tree(&before, &digest(p.dir()));
    p.umount();
}

/// Without -C, saferoot finds the project from any subdirectory (like git), runs CMD where the
/// user is, refuses a second mount nested inside a protected project, and prints one log
/// line per record even for a multi-line command.
#[test]
fn subdirectories_find_their_project() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::create_dir_all(p.dir().join("sub/deeper")).unwrap();
    std::fs::write(p.dir().join("sub/f"), b"f").unwrap();
    p.mount();
    let in_sub = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .current_dir(p.dir().join("sub/deeper"))
            .env("PWD", p.dir().join("sub/deeper"))
            .output()
            .unwrap()
    };
    let o = in_sub(&["status"]);
    assert_ok(&o);
    assert!(
        stdout(&o).starts_with(&format!("{}: mounted", p.dir().display())),
        "{}",
        stdout(&o)
    );
    let o = in_sub(&["run", "--", "sh", "-c", "pwd; rm ../f\necho done"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        format!("{}\ndone\n", p.dir().join("sub/deeper").display())
    );
    let o = in_sub(&["log"]);
    assert_ok(&o);
    let log = stdout(&o);
    assert!(log.contains("unlink   sub/f  rm["), "{log}");
    assert!(
        log.lines().all(|l| l.starts_with("20")),
        "one line per record:\n{log}"
    );
    let o = saferoot(&["-C", p.dir().join("sub").to_str().unwrap(), "mount"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already protects"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    p.umount();
}

/// Shell completions and the manual page are made from the same definitions as `--help`
/// (issue 6): the bash script parses and completes every subcommand, the manual page is roff
/// that `man` can format and names them too.
#[test]
fn completions_and_manual_page_cover_every_subcommand() {
    let run = |args: &[&str]| {
        let o = saferoot(args);
        assert_ok(&o);
        stdout(&o)
    };
    let bash = run(&["completions", "bash"]);
    let subcommands = [
        "mount",
        "umount",
        "run",
        "profile",
        "denials",
        "log",
        "restore",
        "diff",
        "undelete",
        "status",
        "snapshot",
        "snapshots",
        "trash",
        "completions",
        "man",
    ];
    for sub in subcommands {
        assert!(
            bash.contains(&format!("saferoot,{sub})")),
            "bash completes {sub}"
        );
    }
    assert!(
        !bash.contains("__daemon"),
        "the internal daemon command stays hidden"
    );
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &bash).unwrap();
    let o = std::process::Command::new("bash")
        .arg("-n")
        .arg(script.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "bash -n: {}", stderr(&o));
    for shell in ["zsh", "fish"] {
        assert!(run(&["completions", shell]).contains("restore"));
    }
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains(".TH saferoot 1"));
    for sub in subcommands {
        assert!(man.contains(sub), "the manual page names {sub}");
    }
    let o = saferoot(&["completions", "tcsh"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("possible values"), "{}", stderr(&o));
}
