//! Shared helpers for the integration tests: real mounts, real programs, whole-tree digests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_saferoot")
}

/// Can this process mount FUSE? If not: fail under CI, skip (return false) elsewhere.
pub fn fuse_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let dev = Path::new("/dev/fuse").exists();
    if root && dev {
        return true;
    }
    let why = format!("cannot mount FUSE here (root: {root}, /dev/fuse: {dev})");
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Run saferoot with `args`; capture everything.
pub fn saferoot(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run saferoot")
}

pub fn saferoot_in(dir: &Path, args: &[&str]) -> Output {
    let mut a = vec!["-C", dir.to_str().expect("utf-8 temp path")];
    a.extend_from_slice(args);
    saferoot(&a)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// A temporary project directory, unmounted (lazily) when dropped.
pub struct Project {
    pub tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl Project {
    pub fn empty() -> Project {
        let tmp = tempfile::Builder::new()
            .prefix("saferoot-test.")
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().canonicalize().expect("canonical tempdir");
        Project { tmp, path }
    }

    /// A copy of this repository's committed tree (`git archive HEAD`), plus an empty
    /// directory, an executable script and a symlink, so the tree has every kind we restore.
    pub fn source_tree() -> Project {
        let p = Project::empty();
        let repo = env!("CARGO_MANIFEST_DIR");
        let mut git = Command::new("git")
            .args(["-C", repo, "archive", "--format=tar", "HEAD"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("git archive");
        let tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(&p.path)
            .stdin(git.stdout.take().expect("pipe"))
            .status()
            .expect("tar");
        assert!(tar.success() && git.wait().expect("git").success());
        std::fs::create_dir_all(p.path.join("src/empty/deeper")).unwrap();
        std::fs::set_permissions(
            p.path.join("src/empty"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::fs::write(p.path.join("src/tool.sh"), b"#!/bin/sh\necho tool\n").unwrap();
        std::fs::set_permissions(
            p.path.join("src/tool.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("../Cargo.toml", p.path.join("src/cargo-link")).unwrap();
        std::fs::create_dir_all(p.path.join("docs")).unwrap();
        std::fs::write(p.path.join("docs/notes.md"), b"untracked notes\n").unwrap();
        p
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn run(&self, args: &[&str]) -> Output {
        saferoot_in(&self.path, args)
    }

    pub fn mount(&self) {
        assert_ok(&self.run(&["mount"]));
    }

    pub fn umount(&self) {
        assert_ok(&self.run(&["umount"]));
    }

    /// A shell command inside the project (through the mount if mounted), not sandboxed.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("sh")
            .args(["-c", script])
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .output()
            .expect("sh")
    }

    /// Journal records as JSON values, oldest first.
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["log", "--json"]);
        assert_ok(&o);
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).expect("log --json line is JSON"))
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = saferoot_in(&self.path, &["umount"]);
            if is_mounted(&self.path) {
                let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_str().unwrap_or_default();
    text.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4
            && f[4] == p
            && (l.contains(" - fuse saferoot ") || l.contains(" - fuse.saferoot saferoot "))
    })
}

/// One entry of a tree digest: kind, permission bits, and content hash or link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub content: String,
}

/// Every path under `root` (except the store), with what a restore must reproduce exactly.
pub fn digest(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".saferoot"))
    {
        let e = e.expect("walk");
        let md = e.path().symlink_metadata().expect("lstat");
        let ft = md.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                'l',
                std::fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_dir() {
            ('d', String::new())
        } else if ft.is_file() {
            (
                'f',
                blake3::hash(&std::fs::read(e.path()).unwrap())
                    .to_hex()
                    .to_string(),
            )
        } else {
            ('o', String::new())
        };
        m.insert(
            e.path().strip_prefix(root).unwrap().to_owned(),
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                content,
            },
        );
    }
    m
}

/// Describe the differences between two digests (for assertion messages).
pub fn diff(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push_str(&format!("- {}\n", k.display())),
            Some(w) if w != v => out.push_str(&format!("~ {} {:?} != {:?}\n", k.display(), v, w)),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push_str(&format!("+ {}\n", k.display()));
        }
    }
    out
}

#[track_caller]
pub fn assert_same_tree(expected: &BTreeMap<PathBuf, Entry>, actual: &BTreeMap<PathBuf, Entry>) {
    assert!(
        expected == actual,
        "trees differ ({} vs {} entries):\n{}",
        expected.len(),
        actual.len(),
        diff(expected, actual)
    );
}

/// Number of regular files under the store's trash (read on the real directory: unmounted).
pub fn trash_files(root: &Path) -> usize {
    walkdir::WalkDir::new(root.join(".saferoot/trash"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Sleep long enough that instants before and after are distinct and ordered.
pub fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// Run `python3 ARGS…` in `dir` (no bytecode written) and return its stdout; fail the test,
/// with its stderr, if it fails.
pub fn python(args: &[&std::ffi::OsStr], dir: &Path) -> String {
    let o = Command::new("python3")
        .args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "python3 {:?} failed in {}: {}",
        args.first(),
        dir.display(),
        stderr(&o)
    );
    stdout(&o)
}

/// `git ARGS…` in `dir` with a fixed identity and no global configuration; fails the test if
/// git fails.
pub fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("git");
    assert_ok(&o);
}
