//! What is mounted where, from `/proc/self/mountinfo`.
//!
//! Used to refuse a second mount over the same directory, to notice a mount whose daemon died
//! (the kernel answers "Transport endpoint is not connected"), and to clean such a mount up.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The filesystem type saferoot's mounts show in mountinfo: `fuse` when mounted with
/// mount(2) directly (as root), `fuse.saferoot` when mounted through fusermount3.
pub const FSTYPES: &[&str] = &["fuse", "fuse.saferoot"];
/// The source ("device") saferoot's mounts show in mountinfo.
pub const SOURCE: &str = "saferoot";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 2 {
            continue;
        }
        v.push(MountEntry {
            mount_point: unescape(pre[4]),
            fstype: post[0].to_owned(),
            source: post[1].to_owned(),
        });
    }
    v
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// Is a saferoot filesystem mounted at `path` (alive or not)?
pub fn saferoot_mounted(path: &Path) -> bool {
    mount_at(path).is_some_and(|m| FSTYPES.contains(&m.fstype.as_str()) && m.source == SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_lines_with_escapes() {
        let t = "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.saferoot saferoot rw,user_id=0\n\
                 37 35 98:0 / /home rw - ext4 /dev/sda1 rw\n";
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/my dir"));
        assert_eq!(m[0].fstype, "fuse.saferoot");
        assert_eq!(m[0].source, SOURCE);
        assert_eq!(m[1].source, "/dev/sda1");
    }
}
