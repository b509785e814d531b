//! POSIX-visible behaviour through the mount equals the native filesystem's (design invariant
//! 6): the same Python script of file operations runs in a plain directory and in a mounted
//! one, and must print exactly the same observations (link counts, errors, modes, contents).

mod common;
use common::*;

const SCRIPT: &str = r#"
import ctypes, errno, os, stat, struct
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    r = libc.renameat2(-100, a.encode(), -100, b.encode(), flags)
    return "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]
def attempt(f, *a):
    try:
        r = f(*a)
        return "ok" if r is None else r
    except OSError as e:
        return errno.errorcode[e.errno]
def st(p):
    s = os.lstat(p)
    return (stat.filemode(s.st_mode), s.st_nlink, s.st_size)
def put(p, data):
    with open(p, "wb") as f:
        f.write(data)
def get(p):
    with open(p, "rb") as f:
        return f.read()
out = []
say = out.append

put("a", b"alpha")
say(("create", st("a")))
os.link("a", "a2")
say(("link", st("a"), st("a2")))
os.unlink("a2")
say(("unlink one of two links", st("a")))

put("open-then-unlinked", b"still readable")
fd = os.open("open-then-unlinked", os.O_RDONLY)
os.unlink("open-then-unlinked")
say(("fstat after unlink", os.fstat(fd).st_nlink, os.pread(fd, 100, 0), os.path.exists("open-then-unlinked")))
os.close(fd)

put("target", b"old")
put("source", b"new")
fd = os.open("target", os.O_RDONLY)
os.rename("source", "target")
say(("rename over: old fd", os.fstat(fd).st_nlink, os.pread(fd, 10, 0), get("target"), os.path.exists("source")))
os.close(fd)

put("x", b"x"); put("y", b"y")
say(("noreplace", renameat2("x", "y", 1), get("x"), get("y")))
say(("exchange", renameat2("x", "y", 2), get("x"), get("y")))
say(("exchange missing", renameat2("x", "nope", 2)))

os.makedirs("d1/sub"); os.mkdir("d2"); os.mkdir("d3")
put("d3/inner", b"i")
say(("dir over non-empty dir", attempt(os.rename, "d2", "d3")))
say(("dir over empty dir", attempt(os.rename, "d1", "d2"), sorted(os.listdir("d2")), os.path.exists("d1")))
say(("file over dir", attempt(os.rename, "x", "d3")))
say(("dir over file", attempt(os.rename, "d3", "x")))
say(("rmdir non-empty", attempt(os.rmdir, "d3")))
say(("unlink dir", attempt(os.unlink, "d3")))
say(("rmdir file", attempt(os.rmdir, "x")))
say(("unlink missing", attempt(os.unlink, "missing")))
say(("dir into itself", attempt(os.rename, "d2", "d2/sub/d2")))

os.link("x", "x-link")
say(("rename onto own hard link", attempt(os.rename, "x", "x-link"), os.path.exists("x"), st("x-link")))

os.symlink("x-link", "sym")
say(("symlink", os.readlink("sym"), st("sym")[0], get("sym")))
os.chmod("x-link", 0o640)
say(("chmod", st("x-link")))
os.truncate("x-link", 0)
say(("truncate", st("x-link")))
os.mkfifo("fifo", 0o600)
say(("fifo", st("fifo")))
os.setxattr("x-link", "user.test", b"value")
say(("xattr", os.getxattr("x-link", "user.test"), "user.test" in os.listxattr("x-link")))
os.removexattr("x-link", "user.test")
say(("xattr removed", attempt(os.getxattr, "x-link", "user.test")))
say(("excl create of existing", attempt(os.open, "x-link", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
os.utime("x-link", ns=(1_000_000_123, 2_000_000_456))
say(("utime", os.stat("x-link").st_mtime_ns))
put("trunc", b"0123456789")
with open("trunc", "r+b") as f:
    f.seek(4); f.write(b"AB"); f.truncate(8)
with open("trunc", "ab") as f:
    f.write(b"+")
say(("write at offset, truncate, append", get("trunc")))
say(("statvfs", os.statvfs(".").f_bsize > 0))
put("capfile", b"x")
os.setxattr("capfile", "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
say(("file capability set", "security.capability" in os.listxattr("capfile")))
with open("capfile", "ab") as f:
    f.write(b"y")
say(("a write drops it", "security.capability" in os.listxattr("capfile")))
os.mkdir("modes", 0o711)
say(("mkdir mode", st("modes")[0]))
say(("listing", sorted(os.listdir("."))))
for line in out:
    print(repr(line))
"#;

fn run_script(dir: &std::path::Path) -> String {
    python(&["-c".as_ref(), SCRIPT.as_ref()], dir)
}

#[test]
fn file_operations_through_the_mount_match_native() {
    if !fuse_available() {
        return;
    }
    let native = Project::empty();
    let expected = run_script(native.dir());

    let p = Project::empty();
    p.mount();
    let through = run_script(p.dir());
    p.umount();
    let e: Vec<&str> = expected.lines().collect();
    let t: Vec<&str> = through.lines().collect();
    for (a, b) in e.iter().zip(t.iter()) {
        assert_eq!(a, b, "first difference (native vs through saferoot)");
    }
    assert_eq!(e.len(), t.len());
    // And the bytes the script destroyed are kept: last links in the trash. The removed hard
    // link's content is not copied: its other name `a` (made by link through the mount) still
    // holds it, and restore takes it from there.
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for sub in ["trash", "objects"] {
        for e in walkdir::WalkDir::new(p.dir().join(".saferoot").join(sub))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            kept.push(std::fs::read(e.path()).unwrap());
        }
    }
    for want in [&b"still readable"[..], b"old"] {
        assert!(
            kept.iter().any(|k| k == want),
            "{:?} not kept",
            String::from_utf8_lossy(want)
        );
    }
    assert!(!kept.iter().any(|k| k == b"alpha"), "a2 was copied");
}

/// A directory read in small pieces while an entry is removed between two reads lists every
/// other entry exactly once, natively and through the mount, on ext4 and on overlayfs (whose
/// offsets mean something only to the descriptor that returned them); a directory removed while
/// a descriptor of it is open lists nothing and can still be fsynced.
#[test]
fn listings_survive_changes_between_reads_and_removal() {
    if !fuse_available() {
        return;
    }
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def entries(buf, n):
    out, pos = [], 0
    while pos < n:
        reclen = int.from_bytes(buf[pos + 16:pos + 18], 'little')
        name = buf[pos + 19:pos + reclen].split(b'\0', 1)[0]
        out.append(name)
        pos += reclen
    return out
fd = os.open('dd', os.O_RDONLY | os.O_DIRECTORY)
buf = ctypes.create_string_buffer(512)
seen = []
first = True
while True:
    n = libc.syscall(217, fd, buf, 512)   # getdents64
    assert n >= 0, ctypes.get_errno()
    if n == 0:
        break
    names = entries(buf.raw, n)
    seen += names
    if first:
        first = False
        # one already listed: positions after it shift by one where offsets are positions
        os.unlink(b'dd/' + [x for x in names if x not in (b'.', b'..')][4])
os.close(fd)
files = [x for x in seen if x not in (b'.', b'..')]
dups = sorted({x for x in files if files.count(x) > 1})
missing = sorted(set(x.encode() for x in os.listdir('dd')) - set(files))
print('dups', dups, 'missing', missing)
os.mkdir('gone')
g = os.open('gone', os.O_RDONLY | os.O_DIRECTORY)
os.rmdir('gone')
print('removed', os.listdir(g), os.fsync(g))
"#;
    let run = |dir: &std::path::Path| python(&["-c".as_ref(), script.as_ref()], dir);
    let fill = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir.join("dd")).unwrap();
        for i in 100..400 {
            std::fs::write(dir.join(format!("dd/u{i}")), b"").unwrap();
        }
    };
    let want = "dups [] missing []\nremoved [] None\n";
    // ext4 (or whatever holds the temporary directories), natively and through the mount.
    let native = Project::empty();
    fill(native.dir());
    assert_eq!(run(native.dir()), want);
    let p = Project::empty();
    fill(p.dir());
    p.mount();
    assert_eq!(run(p.dir()), want, "through the mount");
    p.umount();
    // A project on overlayfs (a container's root), its lower layer holding one file.
    let o = tempfile::Builder::new()
        .prefix("saferoot-ovl.")
        .tempdir()
        .unwrap();
    for d in ["lower/proj/dd", "upper", "work", "merged"] {
        std::fs::create_dir_all(o.path().join(d)).unwrap();
    }
    std::fs::write(o.path().join("lower/proj/dd/lowfile"), b"").unwrap();
    std::fs::create_dir_all(o.path().join("lower/proj/big")).unwrap();
    for i in 0..1500 {
        std::fs::write(o.path().join(format!("lower/proj/big/l{i:04}")), b"").unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        o.path().join("lower").display(),
        o.path().join("upper").display(),
        o.path().join("work").display()
    );
    let merged = o.path().join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .expect("mount overlayfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _overlay = Unmount(merged.clone());
    let proj = merged.join("proj");
    fill(&proj);
    let pr = proj.to_str().unwrap();
    assert_ok(&saferoot(&["-C", pr, "mount"]));
    let through = run(&proj);
    // Two processes listing one directory again and again while a third adds and removes
    // other names: each listing holds every unchanged name exactly once.
    let concurrent = r#"
import os, multiprocessing as mp
for i in range(500):
    open('big/f%04d' % i, 'w').close()
want = {'f%04d' % i for i in range(500)} | {'l%04d' % i for i in range(1500)}
def churn(stop):
    i = 0
    while not stop.is_set():
        p = 'big/zz%d' % (i % 50)
        open(p, 'w').close(); os.unlink(p); i += 1
def lister(q):
    bad = 0
    for _ in range(25):
        names = [n for n in os.listdir('big') if not n.startswith('zz')]
        if len(names) != len(want) or set(names) != want:
            bad += 1
    q.put(bad)
stop, q = mp.Event(), mp.Queue()
c = mp.Process(target=churn, args=(stop,)); c.start()
ls = [mp.Process(target=lister, args=(q,)) for _ in range(3)]
[p.start() for p in ls]; [p.join() for p in ls]
stop.set(); c.join()
print('bad listings', sum(q.get() for _ in ls))
"#;
    let listed = python(&["-c".as_ref(), concurrent.as_ref()], &proj);
    assert_ok(&saferoot(&["-C", pr, "umount"]));
    assert_eq!(through, want, "through the mount, on overlayfs");
    assert_eq!(
        listed.trim(),
        "bad listings 0",
        "concurrent listings on overlayfs"
    );
}
