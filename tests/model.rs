//! Issue 3, test 1: a model-based property test of exact point-in-time restore.
//!
//! Random sequences of file operations are applied twice, step by step: through a real
//! saferoot mount, and to a plain directory on the native filesystem, which is the model (it
//! defines what the tree must be). After each step the instant is recorded together with the
//! model's tree. At the end, `saferoot restore --to` each recorded instant must reproduce the
//! model's tree at that instant exactly (paths, types, modes, bytes, symlink targets, empty
//! directories). Every step must also succeed or fail identically on both sides, and the mount
//! must show the model's tree after every step.
//!
//! The number of cases is `PROPTEST_CASES` (default 16); a failure shrinks to a short, readable
//! list of operations.

mod common;
use common::*;
use proptest::prelude::*;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NAMES: &[&str] = &["a", "b", "d/c", "d/e", "d/f/g", "h"];
const DIRS: &[&str] = &["d", "d/f", "k"];

#[derive(Clone, Debug)]
enum Op {
    Create(&'static str, Vec<u8>),
    WriteAt(&'static str, u64, Vec<u8>),
    Append(&'static str, Vec<u8>),
    Truncate(&'static str, u64),
    Rewrite(&'static str, Vec<u8>),
    Rename(&'static str, &'static str),
    RenameDir(&'static str, &'static str),
    Exchange(&'static str, &'static str),
    Unlink(&'static str),
    Link(&'static str, &'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Symlink(&'static str, &'static str),
    Chmod(&'static str, u32),
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES)
}
fn dir() -> impl Strategy<Value = &'static str> {
    prop::sample::select(DIRS)
}
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(&b"abcxyz\n"[..]), 0..40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (name(), bytes()).prop_map(|(n, b)| Op::Create(n, b)),
        2 => (name(), 0u64..50, bytes()).prop_map(|(n, o, b)| Op::WriteAt(n, o, b)),
        2 => (name(), bytes()).prop_map(|(n, b)| Op::Append(n, b)),
        1 => (name(), 0u64..30).prop_map(|(n, l)| Op::Truncate(n, l)),
        2 => (name(), bytes()).prop_map(|(n, b)| Op::Rewrite(n, b)),
        2 => (name(), name()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (dir(), dir()).prop_map(|(a, b)| Op::RenameDir(a, b)),
        1 => (name(), name()).prop_map(|(a, b)| Op::Exchange(a, b)),
        2 => name().prop_map(Op::Unlink),
        1 => (name(), name()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => dir().prop_map(Op::Mkdir),
        1 => dir().prop_map(Op::Rmdir),
        1 => (name(), name()).prop_map(|(t, l)| Op::Symlink(t, l)),
        1 => (name(), prop::sample::select(&[0o600u32, 0o644, 0o755, 0o400][..]))
            .prop_map(|(n, m)| Op::Chmod(n, m)),
    ]
}

fn renameat2(root: &Path, a: &str, b: &str, flags: libc::c_uint) -> std::io::Result<()> {
    let ca = std::ffi::CString::new(root.join(a).into_os_string().into_encoded_bytes()).unwrap();
    let cb = std::ffi::CString::new(root.join(b).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Apply one operation under `root`; the outcome is compared between mount and model.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |n: &str| root.join(n);
    let r: std::io::Result<()> = (|| match op {
        Op::Create(n, b) => std::fs::write(p(n), b),
        Op::WriteAt(n, off, b) => {
            let mut f = std::fs::OpenOptions::new().write(true).open(p(n))?;
            f.seek(SeekFrom::Start(*off))?;
            f.write_all(b)
        }
        Op::Append(n, b) => std::fs::OpenOptions::new()
            .append(true)
            .open(p(n))?
            .write_all(b),
        Op::Truncate(n, l) => std::fs::OpenOptions::new()
            .write(true)
            .open(p(n))?
            .set_len(*l),
        Op::Rewrite(n, b) => std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p(n))?
            .write_all(b),
        Op::Rename(a, b) | Op::RenameDir(a, b) => std::fs::rename(p(a), p(b)),
        Op::Exchange(a, b) => renameat2(root, a, b, libc::RENAME_EXCHANGE),
        Op::Unlink(n) => std::fs::remove_file(p(n)),
        Op::Link(a, b) => std::fs::hard_link(p(a), p(b)),
        Op::Mkdir(d) => std::fs::create_dir(p(d)),
        Op::Rmdir(d) => std::fs::remove_dir(p(d)),
        Op::Symlink(t, l) => std::os::unix::fs::symlink(t, p(l)),
        Op::Chmod(n, m) => {
            // Like chmod(1) on a symlink: follow it (and fail if it dangles).
            std::fs::set_permissions(p(n), std::fs::Permissions::from_mode(*m))
        }
    })();
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let model = Project::empty();
    let p = Project::empty();
    p.mount();
    let mut instants = vec![(now_rfc3339(), digest(model.dir()))];
    for (i, op) in ops.iter().enumerate() {
        let want = apply(model.dir(), op);
        let got = apply(p.dir(), op);
        prop_assert_eq!(got, want, "step {} {:?}: outcome differs", i, op);
        let tree = digest(model.dir());
        prop_assert_eq!(
            &digest(p.dir()),
            &tree,
            "step {} {:?}: the mount differs from the model",
            i,
            op
        );
        tick();
        instants.push((now_rfc3339(), tree));
        tick();
    }
    p.umount();
    let dest_root = tempfile::Builder::new()
        .prefix("saferoot-model-to.")
        .tempdir()
        .unwrap();
    for (i, (t, tree)) in instants.iter().enumerate() {
        let dest: PathBuf = dest_root.path().join(format!("at{i}"));
        let o = p.run(&["restore", "--to", dest.to_str().unwrap(), t]);
        prop_assert!(
            o.status.success(),
            "restore --to {} (after step {}): {}",
            t,
            i,
            stderr(&o)
        );
        let got = if dest.exists() {
            digest(&dest)
        } else {
            Default::default()
        };
        prop_assert!(
            &got == tree,
            "the tree at instant {} (after {} steps: {:?}) differs:\n{}",
            t,
            i,
            &ops[..i],
            diff(tree, &got)
        );
    }
    Ok(())
}

#[test]
fn restore_to_any_recorded_instant_equals_the_model() {
    if !fuse_available() {
        return;
    }
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..24), |ops| check(&ops));
    if let Err(e) = result {
        panic!("{e}");
    }
}
