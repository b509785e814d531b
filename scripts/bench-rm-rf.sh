#!/usr/bin/env bash
# rm -rf of an N-file tree, natively and through saferoot, measured in the same run.
# Usage: scripts/bench-rm-rf.sh [FILES] [SAFEROOT_BINARY]   (as root; FILES defaults to 5000)
# Prints the median of 5 rounds for each side and their ratio. No thresholds: this measures.
set -euo pipefail
files=${1:-5000}
bin=${2:-target/release/saferoot}
rounds=5
work=$(mktemp -d /tmp/saferoot-bench.XXXXXX)
trap 'for d in "$work"/s*; do "$bin" -C "$d" umount >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT

make_tree() { # dir: 100 files per directory, sizes 0..990 bytes
  python3 - "$1" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "t", f"d{i // 100}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100}.txt"), "w") as f:
        f.write("x" * ((i % 100) * 10))
PY
}
secs() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

native=(); through=()
for r in $(seq $rounds); do
  mkdir -p "$work/n$r" "$work/s$r"
  make_tree "$work/n$r"; make_tree "$work/s$r"; sync
  native+=("$(secs rm -rf "$work/n$r/t")")
  "$bin" -C "$work/s$r" mount >/dev/null
  through+=("$(secs rm -rf "$work/s$r/t")")
  "$bin" -C "$work/s$r" umount >/dev/null
  kept=$(find "$work/s$r/.saferoot/trash" -type f | wc -l)
  [ "$kept" -eq "$files" ] || { echo "only $kept of $files files reached the trash" >&2; exit 1; }
done
n=$(printf '%s\n' "${native[@]}" | median)
t=$(printf '%s\n' "${through[@]}" | median)
echo "rm -rf of $files files (median of $rounds): native $((n / 1000)) ms, saferoot $((t / 1000)) ms, ratio $(awk -v a="$t" -v b="$n" 'BEGIN {printf "%.2f", a / b}')x"
