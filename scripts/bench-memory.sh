#!/usr/bin/env bash
# The daemon's resident memory on a large tree: after `find` has looked up (and stat'ed) every
# file of a FILES-file tree, and again after the kernel forgot those inodes (it sends FORGET for
# each when its dentry and inode caches are dropped).
#
# Usage (as root): scripts/bench-memory.sh [FILES] [SAFEROOT_BINARY]
#   FILES defaults to 200000 (1,000 files in each of FILES/1000 directories, 0 to 99 bytes each);
#   SAFEROOT_BINARY defaults to target/release/saferoot.
# Prints VmRSS and VmHWM of the daemon after mounting, after `find`, and after dropping the
# kernel's caches (echo 2 > /proc/sys/vm/drop_caches), and the number of inodes the daemon
# still holds (from `saferoot status`, when it reports it). Run it on an otherwise idle machine:
# dropping caches affects everything running.
set -euo pipefail
files=${1:-200000}
bin=${2:-$(cd "$(dirname "$0")/.." && pwd)/target/release/saferoot}
[[ $(id -u) == 0 ]] || { echo "bench-memory.sh: run as root (it mounts and drops caches)" >&2; exit 1; }
[[ -x "$bin" ]] || { echo "bench-memory.sh: $bin not found: build with cargo build --release" >&2; exit 1; }

work=$(mktemp -d /var/tmp/saferoot-mem.XXXXXX)
tree=$work/tree
cleanup() {
    "$bin" -C "$tree" umount >/dev/null 2>&1 || umount -l "$tree" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building $files files under $tree ..." >&2
python3 - "$tree" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for d in range((n + per - 1) // per):
    p = os.path.join(root, f"d{d:04}")
    os.makedirs(p)
    for i in range(min(per, n - d * per)):
        with open(os.path.join(p, f"f{i:04}"), "wb") as f:
            f.write(b"x" * (i % 100))
EOF
sync

"$bin" -C "$tree" mount >/dev/null
pid=$("$bin" -C "$tree" status | sed -n 's/.*daemon pid \([0-9]*\).*/\1/p' | head -1)
[[ -n "$pid" ]] || { echo "bench-memory.sh: cannot find the daemon's pid" >&2; exit 1; }
mem() { # label
    local rss hwm
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    printf '%-38s VmRSS %7.1f MiB   VmHWM %7.1f MiB\n' "$1" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)"
}
echo "kernel $(uname -r), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%dT%H:%MZ), daemon pid $pid"
mem "mounted"
start=$(date +%s.%N)
count=$(cd "$tree" && find . -type f -printf '%s\n' | wc -l)
end=$(date +%s.%N)
[[ "$count" == "$files" ]] || { echo "bench-memory.sh: find saw $count files, not $files" >&2; exit 1; }
mem "after find -printf %s ($count files, $(printf '%.1f' "$(echo "$end-$start" | bc -l)") s)"
sync
echo 2 >/proc/sys/vm/drop_caches
sleep 2
mem "after dropping the kernel's caches"
echo 2 >/proc/sys/vm/drop_caches
sleep 5
mem "5 s later"
