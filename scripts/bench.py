#!/usr/bin/env python3
"""Side-by-side benchmark: real workloads natively and through a saferoot mount.

Usage (as root, from anywhere):

    sudo scripts/bench.py                      # or scripts/bench.py when already root
    scripts/bench.py --rounds 3 --only untar,grep,rm-rf --json /var/tmp/bench.json

What it does
------------
It builds a real source tree once: whole crate directories from the Cargo registry
(~/.cargo/registry/src/*/, also $CARGO_HOME and the invoking sudo user's, or --registry DIR),
taken in name order until the tree holds at least --files regular files (default 4,000).
Crates holding anything other than regular files, directories and symlinks are skipped. The
crates are packed with GNU tar (--sort=name, owner 0:0, original modes and mtimes) into an
archive in the work directory; the same archive is the starting point of every side and every
round, so the tree is identical everywhere and the run is deterministic for a given registry.

Every round then prepares, for each *side*, a fresh project directory P on the same
filesystem, and mounts it:

  native          P is a plain directory.
  saferoot        `saferoot -C P mount` (P mounted over itself; a fresh .saferoot store
                  per round, default config, so the top-level target/ is a scratch tree).
  bindfs          `bindfs SRC P` (only if bindfs is installed; as root bindfs adds
                  -o allow_other itself; single-threaded, which is bindfs's default).
  fuse-overlayfs  `fuse-overlayfs -o lowerdir=LOWER,upperdir=UPPER,workdir=WORK P` with
                  LOWER an empty directory (mode 0555), so every write lands in UPPER
                  (only if fuse-overlayfs is installed).

Mounts are made before any timing (the mount's steady state is measured) and removed at the
end of the round (saferoot: `saferoot -C P umount`; others: `umount P`).

Workloads (run in this order, each one on every side before the next; names for --only):

  untar        `tar -xf ARCHIVE` in the empty directory P/tree.
  find-stat    `find . -type f -printf '%s %T@ %p\\n'` in P/tree: find lstat()s every file
               for %s and %T@ (output captured and compared between sides).
  grep         `grep -rF NEEDLE .` in P/tree, NEEDLE rare (--needle, default
               unreachable_unchecked); output compared between sides.
  read         `find . -type f -exec cat -- {} + > /dev/null` in P/tree (GNU cat really
               read()s; find exits non-zero if any cat failed).
  git-status   `git status` in P/tree, a git repository made untimed before this row
               (`git init -q && git add -A && git commit -q -m init`).
  append       `sh -c 'for f; do echo x >> "$f"; done' sh FILE...` on 500 files: the
               i-th of 500 evenly spaced files (index i*N//500) of the sorted file list.
  git-commit   `sh -c 'git add -A && git commit -q -m x'` after the appends. Author,
               committer and dates are fixed, so every side must produce the same commit id.
  cargo-build  `cargo build --offline -q` (debug) of a small generated binary crate in
               P/crate whose dependencies are path dependencies on copies (in P/crate/vendor)
               of up to 12 dependency-free crates found in the registry (arrayvec, bitflags,
               cfg-if, equivalent, fastrand, hashbrown, heck, itoa, log, memchr, scopeguard,
               smallvec; newest version present, default-features = false), with
               CARGO_TARGET_DIR=P/target, removed (untimed) before each build. A real rustc
               compile, no network. P/target is at the top of the project, so it is a
               scratch tree for saferoot (passed through, not versioned: its default).
  rm-rf        `rm -rf tree` in P.
  restore      after the rm -rf: through saferoot, `saferoot -C P restore T0 P/tree` (T0 an
               instant just before the rm -rf); on the other sides `cp -a COPY P/tree`, COPY
               being a copy of the native P/tree made (untimed, outside P, on the same
               filesystem) just before the rm -rf: the native way to get a deleted tree back
               from a backup, through that layer.

When a row is not selected with --only, the steps that change the tree (untar, the git
repository, append, git-commit, and rm-rf before restore) still run untimed when a later
selected row needs them, so every row always starts from the same state.

Measurement
-----------
* Only the workload command is timed: time.perf_counter() around subprocess.run(). Mounting,
  preparing and verifying are not timed.
* `sync` runs (untimed) before every timed command, so no side pays for another's writeback.
* Warm caches everywhere. Read-heavy rows (find-stat, grep, read, git-status) are run once
  untimed on each side just before they are timed. The other rows work on what the previous
  rows just wrote, which is in cache, except after a cache drop (next point).
* Caches are dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) at three points: before the
  untar row of every round, and before each side's rm-rf and restore; each time what the
  command reads is then read once, untimed (the archive; an lstat of every entry of the tree;
  the saferoot store .saferoot/, reached under the mount through a descriptor opened before
  mounting, or the copy), so these rows also run warm. Why: ext4 without a journal (this
  project's benchmark VM) skips, in every inode allocation, the free inodes deleted in the last
  60 s whose inode table block is in the buffer cache (recently_deleted() in
  fs/ext4/ialloc.c); after another side's rm -rf, creating a file then costs ~1 ms of kernel
  CPU instead of ~0.05 ms. Without the drop, the row after a deletion would measure that, and
  the order of the sides.
* Sides alternate: for every workload each side runs once, then the next workload; the order
  of the sides is rotated every round (round 1: native, saferoot, bindfs, fuse-overlayfs;
  round 2: saferoot, bindfs, fuse-overlayfs, native; ...).
* Every workload is verified, and the run stops on the first failure: exit codes; file count
  and bytes after untar; find and grep output equal on every side and the right number of
  files; `git status` clean; appended files 2 bytes longer; the same commit id everywhere; the
  built program runs; P/tree gone after rm -rf; and, before the rm -rf, a sha256 digest of the
  whole tree (paths, types, permission bits, file contents, symlink targets) equal on every
  side (ignoring .git/index, which holds inode numbers) and, after the restore, equal to that
  side's digest before the rm -rf (including .git/index for native and saferoot; bindfs and
  fuse-overlayfs get native's .git/index back from the copy).
* Every command runs with LC_ALL=C; git with GIT_CONFIG_NOSYSTEM=1, GIT_CONFIG_GLOBAL=/dev/null
  and a fixed identity and date; cargo without RUSTC_WRAPPER (no sccache).
* The table shows medians over the rounds (ms) and ratios layer/native. --json writes every
  single timing; -v also prints how long each untimed step took.

Requirements: root, /dev/fuse, Python 3 (standard library only), GNU tar, find, grep, git,
cargo (for cargo-build: --cargo PATH if it is not in root's PATH), and the saferoot release
binary (--saferoot PATH, default target/release/saferoot in this repository; build it with
`cargo build --release`). bindfs and fuse-overlayfs are optional; the script only detects them
(Debian: apt-get install bindfs fuse-overlayfs). The work directory defaults to a fresh
directory under /var/tmp (or another disk-backed filesystem when /var/tmp is tmpfs), all
sides on that one filesystem; it is removed at the end unless --keep. Every mount is removed
on exit, also on errors and Ctrl-C, and /proc/self/mountinfo is checked afterwards.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOADS = [
    "untar", "find-stat", "grep", "read", "git-status", "append", "git-commit",
    "cargo-build", "rm-rf", "restore",
]
TREE_ROWS = [w for w in WORKLOADS if w != "cargo-build"]
READ_ROWS = {"find-stat", "grep", "read", "git-status"}
CARGO_CRATES = [
    "arrayvec", "bitflags", "cfg-if", "equivalent", "fastrand", "hashbrown", "heck", "itoa",
    "log", "memchr", "scopeguard", "smallvec",
]
APPENDS = 500
SIDE_ORDER = ["native", "saferoot", "bindfs", "fuse-overlayfs"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
}
MEMORY_FS = {"tmpfs", "ramfs", "devtmpfs", "zram", "squashfs", "overlay", "fuse"}


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log(f"bench.py: error: {msg}")
    sys.exit(2)


# ----------------------------------------------------------------------------- helpers

def run(cmd, cwd=None, env=None, check=True, what=None):
    """Run an untimed command; raise BenchError with its output if it fails."""
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise BenchError(f"{what or ' '.join(map(str, cmd))} failed (exit {p.returncode}) in "
                         f"{cwd}:\n{tail(p.stdout)}{tail(p.stderr)}")
    return p


def tail(b, n=2000):
    s = b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
    return ("..." + s[-n:]) if len(s) > n else s


def unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo():
    """[(mount point, fstype, source)] from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rf = right.split()
            out.append((unescape_mountinfo(fields[4]), rf[0], unescape_mountinfo(rf[1])))
    return out


def mounts_under(path):
    path = os.path.realpath(path)
    return [m for m, _, _ in mountinfo() if m == path or m.startswith(path + "/")]


def is_mountpoint(path):
    return os.path.realpath(path) in {m for m, _, _ in mountinfo()}


def fs_of(path):
    """(fstype, source, mount point) of the filesystem holding path."""
    path = os.path.realpath(path)
    best = None
    for m, t, s in mountinfo():
        if path == m or path.startswith(m.rstrip("/") + "/") or m == "/":
            if best is None or len(m) >= len(best[2]):
                best = (t, s, m)
    return best


def sync():
    os.sync()


def drop_caches():
    """sync, then drop the page cache, dentries and inodes (see "Cache handling")."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm_read(root):
    """Read every file below root (or the file root) once, untimed."""
    paths = [root] if os.path.isfile(root) else \
        [os.path.join(root, rel) for rel, st in walk(root) if stat.S_ISREG(st.st_mode)]
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def rmtree(path):
    if os.path.lexists(path):
        if mounts_under(path):
            raise BenchError(f"refusing to remove {path}: something is mounted below it")
        subprocess.run(["rm", "-rf", "--one-file-system", path], check=True)


def median(xs):
    return statistics.median(xs)


def fmt_ms(x):
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def walk(root):
    """Every entry below root as (relative path, lstat), sorted by path."""
    out = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                p = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                out.append((p, st))
                if stat.S_ISDIR(st.st_mode):
                    stack.append(p)
    out.sort(key=lambda x: x[0])
    return out


def tree_digest(root, ignore=()):
    """sha256 over every path, type, permission bits, file content and symlink target, read
    in one pass: (digest of everything, digest without the paths in ignore, files, bytes)."""
    full, part = hashlib.sha256(), hashlib.sha256()
    files = nbytes = 0
    for rel, st in walk(root):
        m = st.st_mode
        if stat.S_ISREG(m):
            fh = hashlib.sha256()
            with open(os.path.join(root, rel), "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    fh.update(b)
            files += 1
            nbytes += st.st_size
            rec = f"f {oct(m & 0o7777)} {st.st_size} {rel}\0".encode() + fh.digest()
        elif stat.S_ISDIR(m):
            rec = f"d {oct(m & 0o7777)} {rel}\0".encode()
        elif stat.S_ISLNK(m):
            rec = f"l {rel}\0".encode() + os.fsencode(os.readlink(os.path.join(root, rel)))
        else:
            rec = f"o {oct(m)} {rel}\0".encode()
        full.update(rec)
        if rel not in ignore:
            part.update(rec)
    return full.hexdigest(), part.hexdigest(), files, nbytes


def count_tree(root):
    files = nbytes = dirs = links = 0
    for _, st in walk(root):
        if stat.S_ISREG(st.st_mode):
            files += 1
            nbytes += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            links += 1
    return files, nbytes, dirs, links


def version_key(v):
    m = re.match(r"(\d+)\.(\d+)\.(\d+)(.*)", v)
    if not m:
        return (0, 0, 0, 0, v)
    # a pre-release (1.0.0-rc1) sorts before the release
    pre = 0 if m.group(4).startswith("-") else 1
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, v)


# ------------------------------------------------------------------------------- setup

def check_environment(args):
    if os.geteuid() != 0:
        die("must run as root (saferoot mounts with mount(2)): run `sudo scripts/bench.py`")
    try:
        st = os.stat("/dev/fuse")
        if not stat.S_ISCHR(st.st_mode):
            raise FileNotFoundError
    except FileNotFoundError:
        die("/dev/fuse is missing (or not a character device): no FUSE here (load the fuse "
            "module, or in a container pass --device /dev/fuse)")
    for tool in ["tar", "find", "grep", "cat", "cp", "rm", "sh", "git", "umount"]:
        if not shutil.which(tool):
            die(f"`{tool}` is not installed")
    if not os.access(args.saferoot, os.X_OK):
        die(f"no saferoot binary at {args.saferoot}: build it with `cd {REPO} && cargo build "
            "--release`, or pass --saferoot PATH")


def find_cargo(args):
    if args.cargo:
        return args.cargo
    c = shutil.which("cargo")
    if c:
        return c
    homes = [os.path.expanduser("~")]
    if os.environ.get("SUDO_USER"):
        homes.append(os.path.expanduser("~" + os.environ["SUDO_USER"]))
    for h in homes:
        p = os.path.join(h, ".cargo", "bin", "cargo")
        if os.access(p, os.X_OK):
            return p
    return None


def registry_dirs(args):
    if args.registry:
        return [args.registry]
    homes = []
    if os.environ.get("CARGO_HOME"):
        homes.append(os.environ["CARGO_HOME"])
    homes.append(os.path.expanduser("~/.cargo"))
    if os.environ.get("SUDO_USER"):
        homes.append(os.path.expanduser("~" + os.environ["SUDO_USER"]) + "/.cargo")
    out = []
    for h in homes:
        src = os.path.join(h, "registry", "src")
        if os.path.isdir(src):
            for d in sorted(os.listdir(src)):
                p = os.path.join(src, d)
                if os.path.isdir(p) and os.path.realpath(p) not in map(os.path.realpath, out):
                    out.append(p)
    return out


def choose_work_parent(args):
    if args.work:
        return args.work
    candidates = ["/var/tmp", REPO, "/tmp"]
    for c in candidates:
        if os.path.isdir(c) and fs_of(c)[0] not in MEMORY_FS:
            return c
    log("bench.py: warning: no disk-backed filesystem among /var/tmp, the repository, /tmp;"
        " using /var/tmp")
    return "/var/tmp"


def select_crates(regs, min_files):
    """Whole crate directories in name order until >= min_files regular files."""
    seen = set()
    crates = []
    for reg in regs:
        for name in os.listdir(reg):
            if name not in seen and os.path.isdir(os.path.join(reg, name)):
                seen.add(name)
                crates.append((name, reg))
    crates.sort()
    chosen, skipped = [], []
    files = nbytes = 0
    for name, reg in crates:
        ok = True
        cf = cb = 0
        for _, st in walk(os.path.join(reg, name)):
            m = st.st_mode
            if stat.S_ISREG(m):
                cf += 1
                cb += st.st_size
            elif not (stat.S_ISDIR(m) or stat.S_ISLNK(m)):
                ok = False
                break
        if not ok:
            skipped.append(name)
            continue
        chosen.append((name, reg))
        files += cf
        nbytes += cb
        if files >= min_files:
            break
    if files < min_files:
        raise BenchError(f"the registry ({', '.join(regs)}) holds only {files} files in usable "
                         f"crates; need {min_files} (lower --files, or fetch more crates)")
    return chosen, skipped


def build_archive(work, chosen):
    archive = os.path.join(work, "tree.tar")
    cmd = ["tar", "--sort=name", "--format=gnu", "--numeric-owner", "--owner=0", "--group=0",
           "-cf", archive]
    for name, reg in chosen:
        cmd += ["-C", reg, name]
    run(cmd, what="tar -c (building the archive)")
    files = []  # (path, size) of the regular files, sorted
    nbytes = ndirs = nlinks = 0
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isreg():
                files.append((m.name.rstrip("/"), m.size))
                nbytes += m.size
            elif m.isdir():
                ndirs += 1
            elif m.issym():
                nlinks += 1
            else:
                raise BenchError(f"unexpected member type in the archive: {m.name}")
    files.sort()
    return archive, files, nbytes, ndirs, nlinks


def lib_name(crate_dir, name):
    try:
        import tomllib
        with open(os.path.join(crate_dir, "Cargo.toml"), "rb") as f:
            return tomllib.load(f).get("lib", {}).get("name") or name.replace("-", "_")
    except Exception:
        return name.replace("-", "_")


def build_crate_template(work, regs, cargo, env):
    """A small binary crate with path dependencies on copies of dependency-free registry
    crates; built once natively (untimed) to produce Cargo.lock and prove it compiles."""
    found = {}
    for reg in regs:
        for d in os.listdir(reg):
            m = re.match(r"^(.+?)-(\d+\.\d+\.\d+.*)$", d)
            if m and m.group(1) in CARGO_CRATES:
                cur = found.get(m.group(1))
                if cur is None or version_key(m.group(2)) > version_key(cur[1]):
                    found[m.group(1)] = (os.path.join(reg, d), m.group(2))
    if len(found) < 3:
        raise BenchError("cargo-build needs at least 3 of these crates in the registry: "
                         + ", ".join(CARGO_CRATES) + " (found: " + (", ".join(found) or "none")
                         + "); leave cargo-build out with --only")
    tpl = os.path.join(work, "crate-template")
    os.makedirs(os.path.join(tpl, "src"))
    os.makedirs(os.path.join(tpl, "vendor"))
    deps, uses = [], []
    for name in sorted(found):
        src, ver = found[name]
        dst = os.path.join(tpl, "vendor", os.path.basename(src))
        run(["cp", "-a", src, dst])
        deps.append(f'{name} = {{ path = "vendor/{os.path.basename(src)}", '
                    'default-features = false }')
        uses.append(f"use {lib_name(src, name)} as _;")
    with open(os.path.join(tpl, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "benchcrate"\nversion = "0.1.0"\nedition = "2021"\n'
                "publish = false\n\n[dependencies]\n" + "\n".join(deps) + "\n")
    with open(os.path.join(tpl, "src", "main.rs"), "w") as f:
        f.write("// Generated by scripts/bench.py.\n" + "\n".join(uses)
                + '\n\nfn main() {\n    println!("benchcrate ok");\n}\n')
    target = os.path.join(work, "crate-check-target")
    env = dict(env, CARGO_TARGET_DIR=target)
    t0 = time.perf_counter()
    run([cargo, "build", "--offline", "-q"], cwd=tpl, env=env,
        what="the untimed check build of the cargo-build crate")
    dt = time.perf_counter() - t0
    rmtree(target)
    return tpl, sorted(f"{n}-{found[n][1]}" for n in found), dt


# ------------------------------------------------------------------------------- sides

class Side:
    name = "?"
    mount_cmd_doc = ""

    def __init__(self, work, ctx):
        self.base = os.path.join(work, self.name)
        self.view = self.base  # the project directory P as programs see it
        self.ctx = ctx
        self.mounted = False

    def backing(self):
        """Where P's content lives, written before mounting."""
        return self.base

    def prepare(self):
        rmtree(self.base)
        os.makedirs(self.backing())

    def mount(self):
        pass

    def umount(self, quiet=False):
        pass


class Native(Side):
    name = "native"


class Saferoot(Side):
    name = "saferoot"
    mount_cmd_doc = "saferoot -C P mount"

    under = None

    def mount(self):
        # A descriptor of the real directory, to reach the store under the mount (warming the
        # trash before the restore row).
        self.under = os.open(self.base, os.O_PATH | os.O_DIRECTORY)
        run([self.ctx.saferoot, "-C", self.base, "mount"], what="saferoot mount")
        self.mounted = True
        if not is_mountpoint(self.base):
            raise BenchError(f"saferoot mount returned but {self.base} is not a mount point")

    def umount(self, quiet=False):
        if not self.mounted and not is_mountpoint(self.base):
            if self.under is not None:
                os.close(self.under)
                self.under = None
            return
        p = run([self.ctx.saferoot, "-C", self.base, "umount"], check=False)
        if p.returncode != 0 or is_mountpoint(self.base):
            if not quiet:
                log(f"bench.py: saferoot umount failed ({tail(p.stderr).strip()}); "
                    "trying umount --lazy")
            run([self.ctx.saferoot, "-C", self.base, "umount", "--lazy"], check=False)
        self.mounted = False
        if self.under is not None:
            os.close(self.under)
            self.under = None


class FuseLayer(Side):
    def __init__(self, work, ctx):
        super().__init__(work, ctx)
        self.view = os.path.join(self.base, "mnt")

    def umount(self, quiet=False):
        if not self.mounted and not is_mountpoint(self.view):
            return
        if is_mountpoint(self.view):
            p = run(["umount", self.view], check=False)
            if p.returncode != 0 or is_mountpoint(self.view):
                run(["umount", "-l", self.view], check=False)
        self.mounted = False


class Bindfs(FuseLayer):
    name = "bindfs"
    mount_cmd_doc = "bindfs SRC P"

    def backing(self):
        return os.path.join(self.base, "src")

    def prepare(self):
        super().prepare()
        os.makedirs(self.view)

    def mount(self):
        run([self.ctx.bindfs, self.backing(), self.view], what="bindfs mount")
        self.mounted = True
        if not is_mountpoint(self.view):
            raise BenchError(f"bindfs returned but {self.view} is not a mount point")


class Overlay(FuseLayer):
    name = "fuse-overlayfs"
    mount_cmd_doc = "fuse-overlayfs -o lowerdir=LOWER,upperdir=UPPER,workdir=WORK P"

    def backing(self):
        return os.path.join(self.base, "upper")

    def prepare(self):
        super().prepare()
        lower = os.path.join(self.base, "lower")
        os.makedirs(lower)
        os.chmod(lower, 0o555)
        os.makedirs(os.path.join(self.base, "work"))
        os.makedirs(self.view)

    def mount(self):
        opts = (f"lowerdir={self.base}/lower,upperdir={self.backing()},"
                f"workdir={self.base}/work")
        run([self.ctx.overlay, "-o", opts, self.view], what="fuse-overlayfs mount")
        self.mounted = True
        if not is_mountpoint(self.view):
            raise BenchError(f"fuse-overlayfs returned but {self.view} is not a mount point")


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args, ctx):
        self.args = args
        self.ctx = ctx
        self.timings = {w: {s.name: [] for s in ctx.sides} for w in WORKLOADS}
        self.state = {}  # per side, per round: digests, T0, ...
        self.ref = {}    # per round and workload: the first side's output, to compare with
        self.find_full = {}
        self.timed_total = 0.0
        self.copy = os.path.join(ctx.work, "restore-source")

    def env(self, side):
        e = dict(os.environ)
        for k in ["RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER", "GIT_DIR", "GIT_WORK_TREE",
                  "GIT_INDEX_FILE", "CDPATH"]:
            e.pop(k, None)
        e.update(GIT_ENV)
        e["LC_ALL"] = "C"
        e["CARGO_TARGET_DIR"] = os.path.join(side.view, "target")
        e["CARGO_TERM_COLOR"] = "never"
        if self.ctx.rustup_home:
            e.setdefault("RUSTUP_HOME", self.ctx.rustup_home)
        return e

    def timed(self, workload, side, cmd, cwd, rnd, stdout=subprocess.PIPE):
        sync()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=self.env(side), stdout=stdout,
                           stderr=subprocess.PIPE)
        dt = (time.perf_counter() - t0) * 1000.0
        self.timed_total += dt
        if workload in self.args.only:
            self.timings[workload][side.name].append(dt)
            log(f"  [{rnd + 1}/{self.args.rounds}] {workload:<11} {side.name:<15} "
                f"{fmt_ms(dt):>7} ms")
        return p, dt

    def fail(self, workload, side, msg, p=None):
        out = ""
        if p is not None:
            out = (f"\n--- exit {p.returncode}; stdout:\n{tail(p.stdout)}\n--- stderr:\n"
                   f"{tail(p.stderr)}")
        raise BenchError(f"workload {workload} failed on {side.name} ({side.view}): {msg}{out}")

    def same_as_first(self, rnd, workload, side, value, what):
        key = (rnd, workload)
        if key not in self.ref:
            self.ref[key] = (side.name, value)
        elif self.ref[key][1] != value:
            self.fail(workload, side, f"{what} differs from {self.ref[key][0]}'s "
                      f"({str(value)[:200]!r} vs {str(self.ref[key][1])[:200]!r})")

    # --- the steps; each takes (side, round) and leaves the next state

    def untar(self, s, r):
        tree = os.path.join(s.view, "tree")
        os.mkdir(tree)
        p, _ = self.timed("untar", s, ["tar", "-xf", self.ctx.archive], tree, r)
        if p.returncode != 0:
            self.fail("untar", s, "tar failed", p)
        files, nbytes, _, _ = count_tree(tree)
        if (files, nbytes) != (len(self.ctx.files), self.ctx.nbytes):
            self.fail("untar", s, f"{files} files / {nbytes} bytes after untar, expected "
                      f"{len(self.ctx.files)} / {self.ctx.nbytes}")

    def find_stat(self, s, r):
        cmd = ["find", ".", "-type", "f", "-printf", "%s %T@ %p\n"]
        self.warm(s, cmd)
        p, _ = self.timed("find-stat", s, cmd, os.path.join(s.view, "tree"), r)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or len(lines) != len(self.ctx.files):
            self.fail("find-stat", s, f"{len(lines)} lines, expected {len(self.ctx.files)}", p)
        # Sizes and paths must agree everywhere. The mtimes too, for native and saferoot;
        # bindfs, for one, does not keep the mtimes tar sets (noted in the report).
        full = hashlib.sha256(b"\n".join(sorted(lines))).hexdigest()
        short = hashlib.sha256(b"\n".join(sorted(
            b"%s %s" % (l.split(b" ", 2)[0], l.split(b" ", 2)[2]) for l in lines))).hexdigest()
        self.same_as_first(r, "find-stat", s, short, "find output (sizes and paths)")
        if s.name in ("native", "saferoot"):
            self.same_as_first(r, "find-stat-mtimes", s, full, "find output (with mtimes)")
        self.find_full[(r, s.name)] = full
        ref = self.find_full.get((r, "native"))
        if s.name not in ("native", "saferoot") and ref and ref != full:
            self.ctx.notes.add(f"{s.name}: `find -printf %T@` shows other mtimes than native "
                               "after the untar (the mtimes tar sets are not kept)")

    def grep(self, s, r):
        cmd = ["grep", "-rF", "--", self.args.needle, "."]
        self.warm(s, cmd, ok=(0, 1))
        p, _ = self.timed("grep", s, cmd, os.path.join(s.view, "tree"), r)
        # grep 3.5+ reports "binary file matches" on stderr; anything else there is an error
        errs = [e for e in p.stderr.splitlines() if not e.endswith(b": binary file matches")]
        if p.returncode not in (0, 1) or errs:
            self.fail("grep", s, "grep failed", p)
        lines = sorted(p.stdout.splitlines() + p.stderr.splitlines())
        self.ctx.grep_matches = len(lines)
        self.same_as_first(r, "grep", s,
                           (p.returncode, hashlib.sha256(b"\n".join(lines)).hexdigest()),
                           "grep output")

    def read(self, s, r):
        cmd = ["find", ".", "-type", "f", "-exec", "cat", "--", "{}", "+"]
        self.warm(s, cmd, stdout=subprocess.DEVNULL)
        p, _ = self.timed("read", s, cmd, os.path.join(s.view, "tree"), r,
                          stdout=subprocess.DEVNULL)
        if p.returncode != 0 or p.stderr:
            self.fail("read", s, "find -exec cat failed", p)

    def git_prep(self, s, r):
        tree = os.path.join(s.view, "tree")
        run(["sh", "-c", "git init -q && git add -A && git commit -q -m init"], cwd=tree,
            env=self.env(s), what=f"git init/add/commit (untimed preparation) on {s.name}")

    def git_status(self, s, r):
        cmd = ["git", "status"]
        self.warm(s, cmd)
        p, _ = self.timed("git-status", s, cmd, os.path.join(s.view, "tree"), r)
        if p.returncode != 0 or b"nothing to commit, working tree clean" not in p.stdout:
            self.fail("git-status", s, "git status failed or the tree is not clean", p)

    def append(self, s, r):
        tree = os.path.join(s.view, "tree")
        sel = self.ctx.append_files
        cmd = ["sh", "-c", 'for f; do echo x >> "$f"; done', "sh"] + [f for f, _ in sel]
        p, _ = self.timed("append", s, cmd, tree, r)
        if p.returncode != 0:
            self.fail("append", s, "the append loop failed", p)
        for f, size in sel:
            got = os.lstat(os.path.join(tree, f)).st_size
            if got != size + 2:
                self.fail("append", s, f"{f} is {got} bytes, expected {size + 2}")

    def git_commit(self, s, r):
        tree = os.path.join(s.view, "tree")
        p, _ = self.timed("git-commit", s, ["sh", "-c", "git add -A && git commit -q -m x"],
                          tree, r)
        if p.returncode != 0:
            self.fail("git-commit", s, "git add/commit failed", p)
        head = run(["git", "rev-parse", "HEAD"], cwd=tree, env=self.env(s)).stdout.strip()
        st = run(["git", "status", "--porcelain"], cwd=tree, env=self.env(s)).stdout
        if st:
            self.fail("git-commit", s, f"the tree is not clean after the commit: {tail(st)}")
        self.same_as_first(r, "git-commit", s, head, "the commit id")

    def cargo_build(self, s, r):
        target = os.path.join(s.view, "target")
        rmtree(target)
        p, _ = self.timed("cargo-build", s, [self.ctx.cargo, "build", "--offline", "-q"],
                          os.path.join(s.view, "crate"), r)
        if p.returncode != 0:
            self.fail("cargo-build", s, "cargo build failed", p)
        exe = run([os.path.join(target, "debug", "benchcrate")], what="the built benchcrate")
        if exe.stdout.strip() != b"benchcrate ok":
            self.fail("cargo-build", s, f"the built program printed {exe.stdout!r}")

    def before_rm(self, s, r):
        tree = os.path.join(s.view, "tree")
        full, cross, files, nbytes = tree_digest(tree, ignore={".git/index"})
        self.state[s.name] = {"digest": (full, files, nbytes), "cross": (cross, files, nbytes)}
        self.same_as_first(r, "digest", s, (cross, files, nbytes),
                           "the tree digest (without .git/index) before rm -rf")
        if "restore" in self.args.only and s.name == "native":
            # The source of the cp -a restores (native, bindfs, fuse-overlayfs): a copy of the
            # native tree, identical to theirs but for .git/index (checked just above).
            rmtree(self.copy)
            run(["cp", "-a", tree, self.copy], what="cp -a (untimed copy for the restore row)")
        # the instant to restore to: after every change above, before the rm -rf
        time.sleep(0.05)
        ns = time.time_ns()
        t = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
        self.state[s.name]["t0"] = t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"
        time.sleep(0.05)

    def rm_rf(self, s, r):
        drop_caches()
        count_tree(os.path.join(s.view, "tree"))  # lstat every entry again: warm metadata
        run(["rm", "--version"])
        p, _ = self.timed("rm-rf", s, ["rm", "-rf", "tree"], s.view, r)
        if p.returncode != 0 or os.path.lexists(os.path.join(s.view, "tree")):
            self.fail("rm-rf", s, "rm -rf failed or left the tree behind", p)
        if set(os.listdir(s.view)) - {"crate", "target"}:
            self.fail("rm-rf", s, f"unexpected entries after rm -rf: {os.listdir(s.view)}")

    def restore(self, s, r):
        tree = os.path.join(s.view, "tree")
        st = self.state[s.name]
        if s.name == "saferoot":
            cmd = [self.ctx.saferoot, "-C", s.view, "restore", st["t0"], tree]
        else:
            cmd = ["cp", "-a", self.copy, tree]
        drop_caches()
        # warm what the restore reads: the store (trash, journal) or the copy
        if s.name == "saferoot":
            warm_read(f"/proc/self/fd/{s.under}/.saferoot")
        else:
            warm_read(self.copy)
        run([cmd[0], "--version"])
        p, _ = self.timed("restore", s, cmd, s.view, r)
        if p.returncode != 0:
            self.fail("restore", s, "the restore failed", p)
        full, cross, files, nbytes = tree_digest(tree, ignore={".git/index"})
        # bindfs and fuse-overlayfs got native's tree back, whose .git/index differs from theirs
        key, got = ("digest", (full, files, nbytes)) if s.name in ("native", "saferoot") \
            else ("cross", (cross, files, nbytes))
        if got != st[key]:
            self.fail("restore", s, f"the tree after the restore differs from the tree before "
                      f"the rm -rf: {got[1]} files / {got[2]} bytes, expected "
                      f"{st[key][1]} / {st[key][2]} (digest {got[0][:16]} vs "
                      f"{st[key][0][:16]})", p)

    def warm(self, s, cmd, ok=(0,), stdout=subprocess.PIPE):
        p = subprocess.run(cmd, cwd=os.path.join(s.view, "tree"), env=self.env(s),
                           stdout=stdout, stderr=subprocess.PIPE)
        if p.returncode not in ok:
            raise BenchError(f"warm-up run of {cmd[0]} failed on {s.name}: {tail(p.stderr)}")

    # --- rounds

    def steps(self):
        only = self.args.only
        need_tree = any(w in only for w in TREE_ROWS)
        out = []
        if need_tree:
            out.append(("untar", self.untar))
            for w, f in [("find-stat", self.find_stat), ("grep", self.grep), ("read", self.read)]:
                if w in only:
                    out.append((w, f))
            out.append(("git-prep", self.git_prep))
            if "git-status" in only:
                out.append(("git-status", self.git_status))
            out.append(("append", self.append))
            out.append(("git-commit", self.git_commit))
        if "cargo-build" in only:
            out.append(("cargo-build", self.cargo_build))
        if "rm-rf" in only or "restore" in only:
            out.append(("before-rm", self.before_rm))
            out.append(("rm-rf", self.rm_rf))
        if "restore" in only:
            out.append(("restore", self.restore))
        return out

    def round(self, r):
        sides = self.ctx.sides
        k = r % len(sides)
        order = sides[k:] + sides[:k]
        log(f"round {r + 1}/{self.args.rounds}: order {', '.join(s.name for s in order)}")
        t_round = time.perf_counter()
        timed_before = self.timed_total
        verbose = self.args.verbose
        t = time.perf_counter()

        def phase(what):
            nonlocal t
            now = time.perf_counter()
            if verbose:
                log(f"    ({what}: {now - t:.1f} s)")
            t = now
        try:
            for s in order:
                s.prepare()
                if "cargo-build" in self.args.only:
                    run(["cp", "-a", self.ctx.crate_template, os.path.join(s.backing(), "crate")])
                s.mount()
                phase(f"prepare and mount {s.name}")
            drop_caches()
            warm_read(self.ctx.archive)
            run(["tar", "--version"])
            phase("drop caches, warm the archive")
            for name, fn in self.steps():
                for s in order:
                    fn(s, r)
                    phase(f"{name} on {s.name}, all included")
        finally:
            for s in order:
                s.umount()
                phase(f"unmount {s.name}")
        left = mounts_under(self.ctx.work)
        if left:
            raise BenchError(f"mounts left after round {r + 1}: {left}")
        for s in order:
            rmtree(s.base)
        rmtree(self.copy)
        sync()
        phase("remove the directories, sync")
        log(f"round {r + 1} took {time.perf_counter() - t_round:.0f} s, "
            f"{(self.timed_total - timed_before) / 1000:.0f} s of it timed")


class Ctx:
    pass


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return cpu, os.cpu_count(), ram


def tool_version(cmd):
    """The first line of `cmd --version` that names a version (fuse-overlayfs prints a
    warning first)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode(errors="replace").strip().splitlines()
        name = os.path.basename(cmd[0]).lower()
        return next((l for l in out if l.lower().startswith(name)),
                    out[0] if out else "?").strip()
    except Exception:
        return "?"


def saferoot_commit():
    p = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty", "--abbrev=12"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return p.stdout.decode().strip() if p.returncode == 0 else "unknown"


LABELS = {
    "untar": "untar (`tar -xf`)",
    "find-stat": "`find -type f -printf '%s %T@ %p'` (stat every file), warm",
    "grep": "`grep -rF {needle}`, warm",
    "read": "`find -type f -exec cat {{}} +` (read every file), warm",
    "git-status": "`git status`, warm",
    "append": "append a line to 500 files",
    "git-commit": "`git add -A && git commit` after the appends",
    "cargo-build": "`cargo build` ({ncrates} crates, debug, offline)",
    "rm-rf": "`rm -rf` of the tree",
    "restore": "restore after `rm -rf` (saferoot: `saferoot restore`; others: `cp -a`)",
}


def report(args, ctx, bench, elapsed):
    lines = []
    cpu, cores, ram = machine_info()
    fstype, fssrc, _ = ctx.fs
    lines.append("## saferoot side-by-side benchmark")
    lines.append("")
    lines.append(f"- machine: {cpu}, {cores} cores, {ram} RAM")
    lines.append(f"- kernel: {platform.release()}")
    lines.append(f"- filesystem: {fstype} ({fssrc}), work directory {ctx.work}")
    lines.append(f"- date (UTC): {ctx.started:%Y-%m-%d %H:%M}")
    lines.append(f"- saferoot: commit {ctx.commit}, binary {args.saferoot}")
    lines.append(f"- rounds: {args.rounds} (medians shown; sides alternate, order rotated "
                 "each round; `sync` before every timed command)")
    lines.append(f"- tree: {len(ctx.files)} files, {ctx.nbytes} bytes "
                 f"({ctx.nbytes / 1e6:.1f} MB), {ctx.ndirs} directories, {ctx.nlinks} "
                 f"symlinks: {len(ctx.chosen)} crates from the Cargo registry "
                 f"({ctx.chosen[0][0]} .. {ctx.chosen[-1][0]})")
    if "grep" in args.only:
        lines.append(f"- grep needle: `{args.needle}` ({ctx.grep_matches} matching lines)")
    if "cargo-build" in args.only:
        lines.append(f"- cargo build: {ctx.cargo_version}, {ctx.rustc_version}; "
                     f"crates: {', '.join(ctx.crate_list)}")
    layers = [s for s in ctx.sides if s.name != "native"]
    mounts = "; ".join(f"{s.name}: `{s.mount_cmd_doc}`" for s in layers)
    lines.append(f"- mounts: {mounts}")
    for s in layers:
        if s.name in ("bindfs", "fuse-overlayfs"):
            lines.append(f"- {s.name}: {ctx.versions[s.name]}")
    lines.append("- caches: warm for every row (read rows run once untimed first); before untar, "
                 "rm-rf and restore: sync, drop_caches, then an untimed read of the command's "
                 "input (see --help)")
    if "restore" in args.only:
        lines.append("- restore row: saferoot `saferoot -C P restore T0 P/tree`; the others "
                     "`cp -a COPY P/tree` from an untimed copy of the native tree")
    if "cargo-build" in args.only:
        lines.append("- cargo-build: CARGO_TARGET_DIR=P/target (a scratch tree for saferoot: "
                     "passed through, not versioned)")
    lines.append(f"- run took {elapsed / 60:.1f} min")
    lines.append("")
    head = "| workload | native ms |"
    rule = "|---|---:|"
    for s in layers:
        head += f" {s.name} ms | ratio |"
        rule += "---:|---:|"
    lines.append(head)
    lines.append(rule)
    for w in WORKLOADS:
        if w not in args.only:
            continue
        label = LABELS[w].format(needle=args.needle, ncrates=len(ctx.crate_list))
        n = median(bench.timings[w]["native"])
        row = f"| {label} | {fmt_ms(n)} |"
        for s in layers:
            v = median(bench.timings[w][s.name])
            row += f" {fmt_ms(v)} | {v / n:.2f}× |"
        lines.append(row)
    if ctx.notes:
        lines.append("")
        lines.append("Notes:")
        lines.append("")
        lines.extend(f"- {n}" for n in sorted(ctx.notes))
    lines.append("")
    lines.append("All rounds (ms, in round order):")
    lines.append("")
    for w in WORKLOADS:
        if w in args.only:
            parts = [f"{s.name} " + " ".join(fmt_ms(x) for x in bench.timings[w][s.name])
                     for s in ctx.sides]
            lines.append(f"- {w}: " + "; ".join(parts))
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(
        prog="scripts/bench.py", description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, metavar="N",
                    help="rounds per workload and side (default 5); the table shows medians")
    ap.add_argument("--only", metavar="W,...",
                    help="only these workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--json", metavar="PATH", help="also write every timing to PATH as JSON")
    ap.add_argument("--saferoot", metavar="PATH",
                    default=os.path.join(REPO, "target", "release", "saferoot"),
                    help="the saferoot binary (default: target/release/saferoot of this repo)")
    ap.add_argument("--work", metavar="DIR",
                    help="make the fresh work directory inside DIR (default /var/tmp, or the "
                    "repository's filesystem if /var/tmp is in memory); all sides live there")
    ap.add_argument("--keep", action="store_true", help="keep the work directory at the end")
    ap.add_argument("--files", type=int, default=4000, metavar="N",
                    help="take crates until the tree has at least N files (default 4000)")
    ap.add_argument("--registry", metavar="DIR",
                    help="take the crates from DIR instead of ~/.cargo/registry/src/*/")
    ap.add_argument("--needle", default="unreachable_unchecked",
                    help="the rare string for the grep row (default unreachable_unchecked)")
    ap.add_argument("--cargo", metavar="PATH", help="the cargo binary (default: from PATH)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also say how long every untimed step took")
    ap.add_argument("--no-bindfs", action="store_true", help="leave bindfs out even if installed")
    ap.add_argument("--no-fuse-overlayfs", action="store_true",
                    help="leave fuse-overlayfs out even if installed")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.only:
        only = [w.strip() for w in args.only.split(",") if w.strip()]
        bad = [w for w in only if w not in WORKLOADS]
        if bad:
            ap.error(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
        args.only = set(only)
    else:
        args.only = set(WORKLOADS)
    args.saferoot = os.path.abspath(args.saferoot)
    return args


def cleanup(ctx):
    """Unmount everything we mounted; check /proc/self/mountinfo; remove the work dir."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    work = getattr(ctx, "work", None)
    for s in getattr(ctx, "sides", []):
        try:
            s.umount(quiet=True)
        except Exception as e:  # keep going: the others must be unmounted too
            log(f"bench.py: unmounting {s.name}: {e}")
    if not work:
        return
    left = mounts_under(work)
    for m in sorted(left, key=len, reverse=True):
        log(f"bench.py: {m} is still mounted; unmounting it lazily")
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
    left = mounts_under(work)
    if left:
        log(f"bench.py: WARNING: still mounted: {left}; not removing {work}")
        return
    if ctx.keep:
        log(f"bench.py: kept {work}")
    else:
        subprocess.run(["rm", "-rf", "--one-file-system", work])


def main():
    args = parse_args()
    check_environment(args)
    started = time.perf_counter()
    ctx = Ctx()
    ctx.keep = args.keep
    ctx.saferoot = args.saferoot
    ctx.started = datetime.datetime.now(datetime.timezone.utc)
    ctx.grep_matches = 0
    ctx.notes = set()
    ctx.sides = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        ctx.cargo = find_cargo(args)
        if "cargo-build" in args.only and not ctx.cargo:
            raise BenchError("cargo not found: pass --cargo PATH, or leave cargo-build out "
                             "with --only")
        ctx.rustup_home = None
        if ctx.cargo and not os.environ.get("RUSTUP_HOME"):
            cand = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.realpath(ctx.cargo)))), ".rustup")
            if os.path.isdir(cand):
                ctx.rustup_home = cand
        ctx.bindfs = None if args.no_bindfs else shutil.which("bindfs")
        ctx.overlay = None if args.no_fuse_overlayfs else shutil.which("fuse-overlayfs")
        ctx.versions = {"bindfs": tool_version(["bindfs", "--version"]) if ctx.bindfs else "",
                        "fuse-overlayfs": tool_version(["fuse-overlayfs", "--version"])
                        if ctx.overlay else ""}
        parent = choose_work_parent(args)
        os.makedirs(parent, exist_ok=True)
        ctx.work = tempfile.mkdtemp(prefix="saferoot-bench.", dir=parent)
        ctx.fs = fs_of(ctx.work)
        if ctx.fs[0] in MEMORY_FS:
            log(f"bench.py: warning: {ctx.work} is on {ctx.fs[0]}, not a disk")
        free = shutil.disk_usage(ctx.work).free
        if free < 4 * 10**9:
            raise BenchError(f"only {free // 10**6} MB free in {ctx.work}; need about 4 GB")
        log(f"work directory {ctx.work} on {ctx.fs[0]} ({ctx.fs[1]})")
        missing = [n for n, have in [("bindfs", ctx.bindfs), ("fuse-overlayfs", ctx.overlay)]
                   if not have]
        if missing:
            log(f"not measured (not installed or left out): {', '.join(missing)}")
        ctx.commit = saferoot_commit()

        regs = registry_dirs(args)
        if not regs:
            raise BenchError("no Cargo registry sources found (~/.cargo/registry/src/*/); "
                             "pass --registry DIR")
        ctx.chosen, skipped = select_crates(regs, args.files)
        if skipped:
            log(f"skipped crates holding special files: {', '.join(skipped)}")
        (ctx.archive, ctx.files, ctx.nbytes, ctx.ndirs,
         ctx.nlinks) = build_archive(ctx.work, ctx.chosen)
        log(f"tree: {len(ctx.files)} files, {ctx.nbytes} bytes, {ctx.ndirs} directories, "
            f"{ctx.nlinks} symlinks from {len(ctx.chosen)} crates "
            f"({ctx.chosen[0][0]} .. {ctx.chosen[-1][0]}); archive {ctx.archive}")
        n = len(ctx.files)
        if n < APPENDS:
            raise BenchError(f"the tree has fewer than {APPENDS} files")
        ctx.append_files = [ctx.files[i * n // APPENDS] for i in range(APPENDS)]

        ctx.crate_list = []
        if "cargo-build" in args.only:
            base_env = dict(os.environ, CARGO_TERM_COLOR="never")
            for k in ["RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"]:
                base_env.pop(k, None)
            if ctx.rustup_home:
                base_env.setdefault("RUSTUP_HOME", ctx.rustup_home)
            ctx.crate_template, ctx.crate_list, dt = build_crate_template(
                ctx.work, regs, ctx.cargo, base_env)
            ctx.cargo_version = tool_version([ctx.cargo, "--version"])
            ctx.rustc_version = tool_version(
                [os.path.join(os.path.dirname(ctx.cargo), "rustc"), "--version"]) \
                if os.path.exists(os.path.join(os.path.dirname(ctx.cargo), "rustc")) \
                else tool_version(["rustc", "--version"])
            log(f"cargo-build crate: {', '.join(ctx.crate_list)}; untimed check build "
                f"{dt:.1f} s")

        sides = [Native(ctx.work, ctx), Saferoot(ctx.work, ctx)]
        if ctx.bindfs:
            sides.append(Bindfs(ctx.work, ctx))
        if ctx.overlay:
            sides.append(Overlay(ctx.work, ctx))
        ctx.sides = sides

        bench = Bench(args, ctx)
        for r in range(args.rounds):
            bench.round(r)
        elapsed = time.perf_counter() - started
        text = report(args, ctx, bench, elapsed)
        print(text, flush=True)
        if args.json:
            data = {
                "date_utc": ctx.started.isoformat(), "commit": ctx.commit,
                "kernel": platform.release(), "machine": machine_info(),
                "filesystem": ctx.fs[0], "rounds": args.rounds, "files": len(ctx.files),
                "bytes": ctx.nbytes, "crates": [c for c, _ in ctx.chosen],
                "cargo_crates": ctx.crate_list, "needle": args.needle,
                "sides": [s.name for s in ctx.sides],
                "mount_commands": {s.name: s.mount_cmd_doc for s in ctx.sides},
                "timings_ms": {w: bench.timings[w] for w in WORKLOADS if w in args.only},
                "medians_ms": {w: {s: median(v) for s, v in bench.timings[w].items()}
                               for w in WORKLOADS if w in args.only},
                "elapsed_s": elapsed,
            }
            with open(args.json, "w") as f:
                json.dump(data, f, indent=2)
            log(f"wrote {args.json}")
        return 0
    except BenchError as e:
        log(f"bench.py: error: {e}")
        return 1
    except KeyboardInterrupt:
        log("bench.py: interrupted")
        return 130
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    sys.exit(main())
