#!/usr/bin/env bash
# `saferoot snapshot` of an N-file tree (first: every file hashed; then unchanged: none read)
# against the native ways of walking the same tree (`find -type f | wc -l`, `du -s`), measured
# in the same run with a warm page cache.
# Usage: scripts/bench-snapshot.sh [FILES] [SAFEROOT_BINARY]   (as root; FILES defaults to 100000)
# Prints the median of 5 rounds for each walk and the ratios. No thresholds: this measures.
set -euo pipefail
files=${1:-100000}
bin=${2:-target/release/saferoot}
rounds=5
work=$(mktemp -d /tmp/saferoot-bench-snap.XXXXXX)
dir="$work/project"
trap '"$bin" -C "$dir" umount >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

make_tree() { # 100 files per directory, 10 directories per parent, sizes 0..990 bytes
  python3 - "$1" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "t", f"a{i // 10000}", f"d{i // 100}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100}.txt"), "w") as f:
        f.write("x" * ((i % 100) * 10) + str(i))
PY
}
usecs() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.0f ms", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
count_files() { find "$dir" -type f | wc -l; }

# The store is made by a first mount (of the empty directory, so that mount's snapshot hashes
# nothing); then the tree is created, and left for a second so no file is "just written".
mkdir -p "$dir"
"$bin" -C "$dir" mount >/dev/null
"$bin" -C "$dir" umount >/dev/null
make_tree "$dir"
sync
sleep 1

first_out=$("$bin" -C "$dir" snapshot)
first=$(echo "$first_out" | sed -n 's/.* in \([0-9]*\) ms$/\1/p')
echo "first:     $first_out"

find_t=(); du_t=(); snap_t=(); last_out=
for r in $(seq $rounds); do
  find_t+=("$(usecs count_files)")
  du_t+=("$(usecs du -s "$dir")")
  s=$(date +%s%N)
  last_out=$("$bin" -C "$dir" snapshot)
  e=$(date +%s%N)
  snap_t+=("$(( (e - s) / 1000 ))")
done
echo "unchanged: $last_out"
case "$last_out" in
  *"hashed 0 files (0 bytes)"*) ;;
  *) echo "an unchanged tree had files re-read" >&2; exit 1 ;;
esac

f=$(printf '%s\n' "${find_t[@]}" | median)
d=$(printf '%s\n' "${du_t[@]}" | median)
u=$(printf '%s\n' "${snap_t[@]}" | median)
entries=$(echo "$last_out" | sed -n 's/^snapshot [0-9]*: \([0-9]*\) entries.*/\1/p')
n=$(echo "$last_out" | sed -n 's/^snapshot \([0-9]*\):.*/\1/p')
echo "tree: $files files, $entries entries (median of $rounds rounds, warm cache)"
echo "native:   find -type f | wc -l  $(ms "$f")    du -s  $(ms "$d")"
echo "saferoot: first snapshot $(ms $((first * 1000))) (whole process: reported time of take())," \
     "unchanged $(ms "$u") (whole process)"
echo "ratio unchanged snapshot / du -s: $(ratio "$u" "$d"), / find: $(ratio "$u" "$f");" \
     "first snapshot / du -s: $(ratio $((first * 1000)) "$d")"
echo "manifest $(stat -c %s "$dir/.saferoot/snapshots/$n") bytes," \
     "hash cache $(stat -c %s "$dir/.saferoot/hashcache") bytes"
