#!/usr/bin/env bash
# Costs of versioning, each measured against the native equivalent in the same run:
#  1. store growth and time of a `sed -i` loop over 1,000 files through the mount;
#  2. `saferoot restore` of a 5,000-file tree after `rm -rf`, against `cp -a` of the same tree.
# Usage (as root): scripts/bench-versioning.sh [SAFEROOT_BINARY]
set -euo pipefail
bin=${1:-target/release/saferoot}
work=$(mktemp -d /tmp/saferoot-bench.XXXXXX)
trap '"$bin" -C "$work/s" umount >/dev/null 2>&1 || true; "$bin" -C "$work/r" umount >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
files() { # DIR COUNT: COUNT files of 1-2 KiB in directories of 100
  python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 100}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(("alpha beta gamma %d\n" % i) * (50 + i % 50))
PY
}
sedloop() { find "$1" -name '*.txt' -not -path '*/.saferoot/*' -print0 | xargs -0 -n 50 sed -i 's/beta/BETA/'; }

mkdir -p "$work/n" "$work/s"
files "$work/n" 1000; files "$work/s" 1000
tree_kb=$(du -sk --exclude=.saferoot "$work/s" | cut -f1)
"$bin" -C "$work/s" mount >/dev/null
before=$(du -sk "$work/s/.saferoot" 2>/dev/null | cut -f1 || echo 0)
"$bin" -C "$work/s" umount >/dev/null
before=$(du -sk "$work/s/.saferoot" | cut -f1)
"$bin" -C "$work/s" mount >/dev/null
tn=$(ms sedloop "$work/n")
ts=$(ms sedloop "$work/s")
"$bin" -C "$work/s" umount >/dev/null
after=$(du -sk "$work/s/.saferoot" | cut -f1)
echo "sed -i over 1000 files (${tree_kb} KiB): native ${tn} ms, saferoot ${ts} ms, ratio $(awk -v a="$ts" -v b="$tn" 'BEGIN{printf "%.2f", a/b}')x; store grew $((after - before)) KiB ($(awk -v a="$((after - before))" -v b="$tree_kb" 'BEGIN{printf "%.2f", a/b}')x the tree)"

mkdir -p "$work/r" "$work/orig"
files "$work/r" 5000; cp -a "$work/r/." "$work/orig/"
"$bin" -C "$work/r" mount >/dev/null
sleep 0.05; t0=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ); sleep 0.05
rm -rf "$work/r"/d*
"$bin" -C "$work/r" umount >/dev/null
tr=$(ms "$bin" -C "$work/r" restore "$t0")
tc=$(ms cp -a "$work/orig" "$work/copy")
diff -r --exclude=.saferoot "$work/orig" "$work/r" >/dev/null || { echo "restore differs" >&2; exit 1; }
echo "restore of 5000 files after rm -rf: saferoot ${tr} ms, native cp -a ${tc} ms, ratio $(awk -v a="$tr" -v b="$tc" 'BEGIN{printf "%.2f", a/b}')x"
