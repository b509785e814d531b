#!/usr/bin/env python3
"""What one open costs through the mount: the FUSE round trip that bounds the read-heavy rows.

Usage (as root, after `cargo build --release`):

    scripts/bench-roundtrip.py [--files N] [--rounds N] [--saferoot PATH]

It makes N small files (default 2,000) in a native directory and in a second directory that
it mounts with saferoot, on the same filesystem, then times, alternating the sides, per file:

- `open` + `close` (through the mount: an OPEN request, and a RELEASE sent after close
  returns);
- `open` + `read` + `fstat` + `close`, which is what `grep -r` does with each file (the read
  goes to the real file by passthrough; the kernel then drops the file's cached access time,
  so the `fstat` is a GETATTR request).

It prints the median per file of each side, their ratio, and the daemon's own CPU time per
file (all its threads, from /proc/PID/task/*/schedstat), which shows how much of the round trip is the daemon's
work and how much is waiting to be woken. Nothing else should run on the machine meanwhile.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def daemon_cpu_s(pid):
    """CPU time of all the daemon's threads (schedstat: nanoseconds on a CPU)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def one_pass(names, with_read):
    t = time.perf_counter()
    for n in names:
        fd = os.open(n, os.O_RDONLY)
        if with_read:
            os.read(fd, 4096)
            os.fstat(fd)
        os.close(fd)
    return (time.perf_counter() - t) / len(names) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--saferoot", default=os.path.join(here, "target/release/saferoot"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-roundtrip.py: run as root (saferoot mounts with mount(2))")
    if not os.access(a.saferoot, os.X_OK):
        sys.exit(f"bench-roundtrip.py: no saferoot binary at {a.saferoot}: cargo build --release")
    work = tempfile.mkdtemp(prefix="saferoot-rt.", dir="/var/tmp")
    native, mounted = os.path.join(work, "native"), os.path.join(work, "mounted")
    try:
        for d in (native, mounted):
            os.mkdir(d)
            for i in range(a.files):
                with open(os.path.join(d, f"f{i}"), "w") as f:
                    f.write(f"line {i}\n")
        subprocess.run([a.saferoot, "-C", mounted, "mount"], check=True,
                       stdout=subprocess.DEVNULL)
        pid = int(subprocess.run(["pgrep", "-f", f"__daemon {mounted}$"], check=True,
                                 capture_output=True, text=True).stdout.split()[0])
        sides = {"native": native, "saferoot": mounted}
        names = {k: [os.path.join(d, f"f{i}") for i in range(a.files)] for k, d in sides.items()}
        print(f"{a.files} files, {a.rounds} rounds, median microseconds per file")
        print(f"{'what':<28} {'native':>8} {'saferoot':>9} {'ratio':>7} {'daemon CPU':>11}")
        for label, with_read in (("open+close", False), ("open+read+fstat+close", True)):
            times = {k: [] for k in sides}
            cpu = []
            for k in sides:  # warm both
                one_pass(names[k], with_read)
            for r in range(a.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for k in order:
                    before = daemon_cpu_s(pid) if k == "saferoot" else 0
                    times[k].append(one_pass(names[k], with_read))
                    if k == "saferoot":
                        cpu.append((daemon_cpu_s(pid) - before) / a.files * 1e6)
            n, s = statistics.median(times["native"]), statistics.median(times["saferoot"])
            print(f"{label:<28} {n:8.1f} {s:9.1f} {s / n:6.1f}x {statistics.median(cpu):10.1f}")
    finally:
        subprocess.run([a.saferoot, "-C", mounted, "umount"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
