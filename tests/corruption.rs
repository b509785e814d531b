//! Corruption of the store, on real mounts: a journal line damaged in the middle bounds what
//! can be restored and is named; a torn last line (a crash) costs nothing; a flipped object is
//! never restored as a file; `saferoot doctor` names exactly what is wrong and `--repair` sets
//! it aside, after which the store is healthy and restores exact.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn journal(p: &Project) -> PathBuf {
    p.dir().join(".saferoot/journal")
}

/// The 1-based line number of the first journal line containing `needle`.
fn line_of(p: &Project, needle: &str) -> usize {
    let text = std::fs::read_to_string(journal(p)).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no journal line with {needle}:\n{text}"))
        + 1
}

/// Cut line `n` (1-based) of the journal in half, keeping every line after it.
fn cut_line(p: &Project, n: usize) {
    let text = std::fs::read(journal(p)).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
    let l = &mut lines[n - 1];
    l.truncate(l.len() / 2);
    std::fs::write(journal(p), lines.join(&b'\n')).unwrap();
}

/// Run `sh -c script` in the project (through the mount) and wait a tick.
fn sh(p: &Project, script: &str) {
    let o = p.sh(script);
    assert_ok(&o);
    tick();
}

fn doctor_json(p: &Project, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["doctor", "--json"];
    a.extend_from_slice(args);
    let o = p.run(&a);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}{}", stdout(&o), stderr(&o)));
    (o.status.code().unwrap_or(-1), v)
}

/// The `kind` of each problem `doctor --json` reported, in order.
fn problem_kinds(v: &serde_json::Value) -> Vec<&str> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect()
}

fn fails_with(o: &std::process::Output, parts: &[&str]) {
    assert!(
        !o.status.success(),
        "should fail: {}{}",
        stdout(o),
        stderr(o)
    );
    for part in parts {
        assert!(
            stderr(o).contains(part),
            "stderr lacks {part:?}: {}",
            stderr(o)
        );
    }
}

/// A damaged line in the middle of the journal and a flipped object: named, bounded, repaired.
#[test]
fn middle_damage_and_a_flipped_object_are_named_bounded_and_repaired() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    let d = p.dir().to_owned();
    std::fs::write(d.join("a.txt"), b"one\n").unwrap();
    std::fs::write(d.join("b.txt"), b"keep\n").unwrap();
    std::fs::write(d.join("notes.md"), b"notes\n").unwrap();
    p.mount();
    tick();
    let t0 = now_rfc3339();
    tick();
    sh(&p, "echo two > a.txt");
    sh(&p, "sed -i s/keep/kept/ b.txt");
    sh(&p, "echo created > c.txt");
    let t3 = now_rfc3339();
    tick();
    sh(&p, "echo three > a.txt");
    let t4 = now_rfc3339();
    let at_t4 = digest(&d);
    tick();
    sh(&p, "rm notes.md && mkdir -p sub && echo deep > sub/x");
    p.umount();
    let live = digest(&d);

    // The pre-image kept when a.txt was opened the second time ("two\n").
    let log = p.log_json();
    let hex = log
        .iter()
        .filter(|r| r["op"] == "write" && r["path"] == "a.txt")
        .filter_map(|r| r["object"].as_str())
        .next_back()
        .unwrap()
        .to_owned();
    assert_eq!(hex, blake3::hash(b"two\n").to_hex().as_str());
    let object = d.join(".saferoot/objects").join(&hex[..2]).join(&hex[2..]);

    // Damage: the `create` of c.txt cut in half (the lines after it stay), and one bit of the
    // object flipped.
    let n = line_of(&p, r#""op":"create","path":"c.txt""#);
    let lines = std::fs::read_to_string(journal(&p))
        .unwrap()
        .lines()
        .count();
    assert!(n > 2 && n < lines, "line {n} of {lines} is in the middle");
    cut_line(&p, n);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[0] ^= 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let jpath = journal(&p).display().to_string();
    let line = format!("line {n} of {jpath}");

    // `log` shows the rest and names the line.
    let o = p.run(&["log"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains(&format!("{line} is damaged")),
        "{}",
        stderr(&o)
    );
    // Before the damage: refused, naming the file and the line.
    let o = p.run(&["restore", "--dry-run", &t0]);
    fails_with(
        &o,
        &[
            "cannot go back to ",
            &format!("{line} is damaged (its change is unknown)"),
            "can still be restored; run `saferoot doctor`",
        ],
    );
    let dest = tempfile::tempdir().unwrap();
    fails_with(
        &p.run(&[
            "restore",
            "--to",
            dest.path().join("x").to_str().unwrap(),
            &t0,
        ]),
        &[&line],
    );
    fails_with(&p.run(&["diff", &t0]), &[&line]);
    // After it: exact.
    let out = dest.path().join("t4");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &t4]));
    assert_same_tree(&at_t4, &digest(&out));
    // An instant that needs the flipped object: that file is not written, and the command
    // names the object and the file.
    let out = dest.path().join("t3");
    let o = p.run(&["restore", "--to", out.to_str().unwrap(), &t3]);
    fails_with(
        &o,
        &[&format!(
            "object {} is damaged (its content does not match its name): a.txt was not restored",
            object.display()
        )],
    );
    assert!(!out.join("a.txt").exists());
    assert_eq!(std::fs::read(out.join("c.txt")).unwrap(), b"created\n");

    // doctor names exactly the damaged line and the damaged object.
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["file"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("journal-damaged", jpath.as_str()),
            ("object-damaged", object.to_str().unwrap())
        ],
        "{v}"
    );
    assert!(problems[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with(&format!("line {n} is damaged")));
    let o = p.run(&["doctor"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 3, "{text}");
    assert!(shown[0].starts_with(&format!("journal-damaged {jpath}: line {n} is damaged")));
    assert!(shown[1].starts_with(&format!("object-damaged {}: ", object.display())));
    assert!(shown[2].starts_with("saferoot: 2 problem(s)"), "{text}");

    // Mounted, doctor reads the store through the daemon and finds the same; it does not
    // repair.
    p.mount();
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        problem_kinds(&v),
        ["journal-damaged", "object-damaged"],
        "{v}"
    );
    fails_with(
        &p.run(&["doctor", "--repair"]),
        &["unmount first: saferoot umount"],
    );
    p.umount();

    let o = p.run(&["doctor", "--repair"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("it is healthy now"), "{}", stdout(&o));
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let damaged = d.join(".saferoot/damaged");
    assert_eq!(
        std::fs::read(damaged.join("objects").join(&hex)).unwrap(),
        bytes
    );
    assert!(std::fs::read_dir(&damaged).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("journal-lines.")));

    // Consistent: the newest instant is the live tree, byte for byte.
    let out = dest.path().join("now");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &now_rfc3339()]));
    assert_same_tree(&live, &digest(&out));
    let o = p.run(&["restore", &now_rfc3339()]);
    assert_ok(&o);
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    // After the repair, what was set aside is refused with the repair's reason; t4 still works.
    fails_with(
        &p.run(&["restore", "--dry-run", &t0]),
        &[
            "set aside as damaged by `saferoot doctor --repair`",
            "the oldest restorable instant is",
        ],
    );
    let out = dest.path().join("t4-again");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &t4]));
    assert_same_tree(&at_t4, &digest(&out));
    let log = p.log_json();
    let repair = log
        .iter()
        .find(|r| r["op"] == "repair")
        .expect("a repair record");
    assert!(repair["target_time"].is_string(), "{repair}");
    // And it still mounts and works.
    p.mount();
    sh(&p, "echo four > a.txt");
    p.umount();
    assert_eq!(std::fs::read(d.join("a.txt")).unwrap(), b"four\n");
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 0, "{v}");
}

/// A crash tore the last record: nothing is refused, before or after the next mount seals it;
/// doctor mentions it and --repair removes it without giving up any history. A damaged
/// snapshot manifest is named by `snapshots` and `@N`.
#[test]
fn a_torn_tail_costs_nothing_and_a_damaged_snapshot_is_named() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    let d = p.dir().to_owned();
    std::fs::write(d.join("a.txt"), b"one\n").unwrap();
    p.mount();
    tick();
    let t0 = now_rfc3339();
    let before = digest(&d);
    tick();
    sh(&p, "echo two > a.txt && rm a.txt && echo b > b.txt");
    p.umount();

    // Half of one more record, as a crash in the middle of its write leaves it.
    let last = std::fs::read_to_string(journal(&p))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(journal(&p))
        .unwrap();
    f.write_all(&last.as_bytes()[..last.len() / 2]).unwrap();
    drop(f);
    let torn_line = std::fs::read_to_string(journal(&p))
        .unwrap()
        .lines()
        .count();
    let o = p.run(&["log"]);
    assert_ok(&o);
    assert!(!stderr(&o).contains("damaged"), "{}", stderr(&o));
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("t0");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &t0]));
    assert_same_tree(&before, &digest(&out));

    // The next mount ends the torn line and journals after it: still harmless.
    p.mount();
    sh(&p, "echo c > c.txt");
    p.umount();
    let o = p.run(&["log"]);
    assert_ok(&o);
    assert!(!stderr(&o).contains("damaged"), "{}", stderr(&o));
    let out = dest.path().join("t0-again");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &t0]));
    assert_same_tree(&before, &digest(&out));

    // A snapshot manifest cut short.
    let m = d.join(".saferoot/snapshots/1");
    let len = std::fs::metadata(&m).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let damaged = format!("snapshot 1 ({}) is damaged: it is truncated", m.display());
    let o = p.run(&["snapshots"]);
    assert_ok(&o);
    assert!(stderr(&o).contains(&damaged), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("@2") && !stdout(&o).contains("@1 "),
        "{}",
        stdout(&o)
    );
    fails_with(&p.run(&["restore", "--dry-run", "@1"]), &[&damaged]);

    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    let got: Vec<(&str, &str)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["file"].as_str().unwrap()))
        .collect();
    let jpath = journal(&p).display().to_string();
    assert_eq!(
        got,
        vec![
            ("journal-torn", jpath.as_str()),
            ("snapshot-damaged", m.to_str().unwrap())
        ],
        "{v}"
    );
    assert!(v["problems"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with(&format!("line {torn_line} is a record torn by a crash")));
    assert!(v["horizon"].is_null(), "no history is given up: {v}");

    let (code, v) = doctor_json(&p, &["--repair"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["repaired"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(doctor_json(&p, &[]).0, 0);
    assert!(Path::new(&d.join(".saferoot/damaged/snapshots/1")).exists());
    fails_with(
        &p.run(&["restore", "--dry-run", "@1"]),
        &["snapshot 1 was set aside as damaged by `saferoot doctor --repair`"],
    );
    // Every instant is still restorable, exactly.
    let out = dest.path().join("t0-after-repair");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &t0]));
    assert_same_tree(&before, &digest(&out));
    let live = digest(&d);
    let out = dest.path().join("now");
    assert_ok(&p.run(&["restore", "--to", out.to_str().unwrap(), &now_rfc3339()]));
    assert_same_tree(&live, &digest(&out));
    // A new snapshot does not take the number set aside.
    p.mount();
    p.umount();
    assert!(!m.exists(), "snapshot 1 is not written again");
}

/// `doctor` is a subcommand like the others: completed by the shell, in the manual page.
#[test]
fn doctor_is_completed_and_documented() {
    let o = saferoot(&["completions", "bash"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("saferoot,doctor)"));
    let o = saferoot(&["man"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("doctor"));
    let o = saferoot(&["doctor", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

/// A crash that loses the journal's tail after `rm -rf` of a directory: the next mount
/// journals the trash items again, but the directory's own removal is gone with the lost
/// records. Restoring to before still gives the directory back with everything in it, in
/// place and with `--to`, byte for byte, and says which directory it had to recreate; the
/// restore's own undo works.
#[test]
fn a_lost_tail_after_rm_rf_still_restores_the_directory() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    let d = p.dir().to_owned();
    std::fs::create_dir_all(d.join("gen/deep")).unwrap();
    for i in 0..5 {
        std::fs::write(d.join(format!("gen/deep/f{i}")), format!("generated {i}\n")).unwrap();
    }
    p.mount();
    tick();
    let t0 = now_rfc3339();
    let before = digest(&d);
    tick();
    sh(&p, "rm -rf gen");
    p.umount();
    // The crash: every record from the first unlink under gen/ on is lost.
    let n = line_of(&p, r#""op":"unlink","path":"gen/"#);
    let text = std::fs::read_to_string(journal(&p)).unwrap();
    let kept: String = text.lines().take(n - 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(journal(&p), kept).unwrap();
    // The next mount finds the trash items without records and journals them.
    p.mount();
    p.umount();
    assert!(
        p.log_json()
            .iter()
            .any(|r| r["op"] == "unlink" && r["path"] == "gen/deep/f0"),
        "recovered"
    );
    let o = p.run(&["diff", &t0]);
    assert_ok(&o);
    for want in ["- gen\n", "- gen/deep\n", "- gen/deep/f0\n"] {
        assert!(stdout(&o).contains(want), "{want:?}: {}", stdout(&o));
    }
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("t");
    let o = p.run(&["restore", "--to", to.to_str().unwrap(), &t0]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("given mode 0755: gen"),
        "{}",
        stderr(&o)
    );
    let mut want = before.clone();
    want.retain(|k, _| !k.starts_with(".saferoot"));
    let mut got = digest(&to);
    got.retain(|k, _| !k.starts_with(".saferoot"));
    assert_same_tree(&want, &got);
    let live = digest(&d);
    let o = p.run(&["restore", &t0]);
    assert_ok(&o);
    assert_same_tree(&before, &digest(&d));
    let undo = stdout(&o)
        .split("undo with `saferoot restore ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no undo command: {}", stdout(&o)))
        .to_owned();
    assert_ok(&p.run(&["restore", &undo]));
    assert_same_tree(&live, &digest(&d));
}

/// A journal written by another format version is never appended to: `mount` refuses it,
/// naming the file and the header, and leaves every byte of it as it was.
#[test]
fn mount_refuses_a_journal_of_another_version() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::write(p.dir().join("a.txt"), b"one\n").unwrap();
    p.mount();
    sh(&p, "echo two > a.txt");
    p.umount();
    let text = std::fs::read_to_string(journal(&p)).unwrap();
    let (_, rest) = text.split_once('\n').unwrap();
    // Version 2, and a last line without its newline (which version 1 would seal).
    let foreign = format!("saferoot-journal 2\n{rest}{{\"future\":");
    std::fs::write(journal(&p), &foreign).unwrap();
    let o = p.run(&["mount"]);
    fails_with(
        &o,
        &[
            "another version of saferoot",
            &journal(&p).display().to_string(),
            "saferoot-journal 2",
        ],
    );
    assert!(!is_mounted(p.dir()));
    assert_eq!(std::fs::read_to_string(journal(&p)).unwrap(), foreign);
    // Nor does any command that appends unmounted (a snapshot's record, a restore's).
    for args in [
        &["snapshot"][..],
        &["restore", "1m"],
        &["gc", "--keep-within", "0s"],
    ] {
        let o = p.run(args);
        fails_with(&o, &["saferoot-journal 2"]);
        assert_eq!(
            std::fs::read_to_string(journal(&p)).unwrap(),
            foreign,
            "{args:?}"
        );
    }
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(v.to_string().contains("saferoot-journal 2"), "{v}");
    assert_eq!(std::fs::read_to_string(journal(&p)).unwrap(), foreign);
}

/// A damaged `format` file: doctor names it; --repair writes it again and says the store is
/// healthy (exit 0), which a second doctor confirms.
#[test]
fn a_damaged_format_file_is_repaired_and_reported_healthy() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    p.mount();
    p.umount();
    let format = p.dir().join(".saferoot/format");
    std::fs::write(&format, b"garbage\n").unwrap();
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problems"][0]["kind"], "format", "{v}");
    let (code, v) = doctor_json(&p, &["--repair"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["remaining"], serde_json::json!([]), "{v}");
    assert_eq!(v["repaired"][0]["kind"], "format", "{v}");
    assert_eq!(
        std::fs::read(&format).unwrap(),
        b"saferoot-store 1\n".to_vec()
    );
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 0, "{v}");
    // A store of another version: named, and --repair is not offered (it refuses).
    std::fs::write(&format, b"saferoot-store 9\n").unwrap();
    let o = p.run(&["doctor"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("version 9"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("sets them aside"), "{}", stdout(&o));
    fails_with(
        &p.run(&["doctor", "--repair"]),
        &["version 9", "not repaired"],
    );
    assert_eq!(
        std::fs::read(&format).unwrap(),
        b"saferoot-store 9\n".to_vec()
    );
}

/// A deleted journal: doctor names it, --repair journals the trash it finds and refuses every
/// instant before the repair (it said "healthy; no history was lost", and restores after the
/// trash items' recovered records came back wrong).
#[test]
fn a_deleted_journal_is_named_and_bounds_every_restore() {
    if !fuse_available() {
        return;
    }
    let p = Project::source_tree();
    p.mount();
    sh(&p, "rm -f src/main.rs && echo changed > README.md");
    let t = now_rfc3339();
    tick();
    p.umount();
    std::fs::remove_file(journal(&p)).unwrap();
    // Mounting would take the trash for crash leftovers, dated in a past nothing is known of.
    fails_with(
        &p.run(&["mount"]),
        &["journal", "was lost", "doctor --repair"],
    );
    let scratch = tempfile::tempdir().unwrap();
    let early = scratch.path().join("early");
    fails_with(
        &p.run(&["restore", "--to", early.to_str().unwrap(), &t]),
        &["was lost", "doctor --repair"],
    );
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(problem_kinds(&v).contains(&"journal-missing"), "{v}");
    let (code, v) = doctor_json(&p, &["--repair"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = doctor_json(&p, &[]);
    assert_eq!((code, &v["problems"]), (0, &serde_json::json!([])), "{v}");
    let out = scratch.path().join("restored");
    let o = p.run(&["restore", "--to", out.to_str().unwrap(), &t]);
    fails_with(&o, &["cannot go back to", "doctor --repair"]);
    assert_eq!(
        std::fs::read(p.dir().join("README.md")).unwrap(),
        b"changed\n"
    );
    p.mount();
    p.umount();
}
