#!/bin/sh
# A day-like workload through a saferoot mount, then the store's size and how long gc and
# doctor take on it (issue 6). As root, after `cargo build --release`:
#
#     scripts/day.sh [EDITS] [RMRFS]        # defaults: 2000 edits, 20 rm -rf
#
# The project holds a 1,000-file directory `work/` of real source files (the first 1,000
# `*.rs` files of the Cargo registry, in 20 subdirectories) plus a README. The day: EDITS
# `sed -i` edits, each of one file of `work/` (sed writes a new file and renames it over the
# old one: the old version goes to the trash), and, spread evenly among them, RMRFS times
# `rm -rf work` followed by `cp -a` of the pristine copy back (an agent regenerating the
# directory). Then: `saferoot status --json` (store size), `saferoot snapshot`, `saferoot gc`
# by the default policy (collects nothing: the day is younger than 14 days), `saferoot gc
# --keep-within 0s` (collects the whole day up to the snapshot), `saferoot doctor` on the
# day's store (mounted) and again after the gc (unmounted), each timed; a doctor that finds a
# problem fails the script. Prints a Markdown table (docs/benchmarks.md has the results).
set -eu
EDITS=${1:-2000}
RMRFS=${2:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
B=${SAFEROOT:-$here/target/release/saferoot}
[ -x "$B" ] || { echo "build first: cargo build --release" >&2; exit 1; }
reg=${CARGO_HOME:-$HOME/.cargo}/registry/src
W=$(mktemp -d /var/tmp/saferoot-day.XXXXXX)
trap 'cd /; "$B" -C "$W/p" umount >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
mkdir -p "$W/pristine" "$W/p"
i=0
find "$reg" -name '*.rs' -type f -size -64k 2>/dev/null | sort | head -1000 | while read -r f; do
    d="$W/pristine/$((i % 20))"
    mkdir -p "$d"
    cp "$f" "$d/f$i.rs"
    i=$((i + 1))
done
n=$(find "$W/pristine" -type f | wc -l)
[ "$n" -ge 1000 ] || { echo "need 1000 .rs files under $reg, found $n" >&2; exit 1; }
tree_kib=$(du -sk "$W/pristine" | cut -f1)
cp -a "$W/pristine" "$W/p/work"
echo "a project" > "$W/p/README"
ms() { date +%s%3N; }

"$B" -C "$W/p" mount >/dev/null
cd "$W/p"
files=$(cd work && find . -type f | sort)
every=$((EDITS / RMRFS))
t0=$(ms)
e=0
while [ "$e" -lt "$EDITS" ]; do
    # Each edit: one file, picked by a fixed stride through the sorted list.
    k=$(( (e * 7919) % n + 1 ))
    f=$(printf '%s\n' "$files" | sed -n "${k}p")
    sed -i "1s|^|// edit $e\n|" "work/$f"
    e=$((e + 1))
    if [ $((e % every)) -eq 0 ]; then
        rm -rf work
        cp -a "$W/pristine" work
    fi
done
t1=$(ms)
cd /
size() { "$B" -C "$W/p" status --json | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print(s["total_bytes"]//1024, s["trash_files"], s["objects"], s["journal_bytes"]//1024)'; }
read -r store_kib trash_files objects journal_kib <<EOF2
$(size)
EOF2
records=$("$B" -C "$W/p" log --json | wc -l)
a=$(ms); "$B" -C "$W/p" snapshot >/dev/null; snap_ms=$(( $(ms) - a ))
# doctor on the whole day's store (through the daemon, which owns the journal while mounted).
a=$(ms); "$B" -C "$W/p" doctor >"$W/doctor.out" || { cat "$W/doctor.out"; exit 1; }; doctor_full_ms=$(( $(ms) - a ))
a=$(ms); "$B" -C "$W/p" gc >/dev/null; gc_nothing_ms=$(( $(ms) - a ))
a=$(ms); "$B" -C "$W/p" gc --keep-within 0s --json > "$W/gc.json"; gc_all_ms=$(( $(ms) - a ))
after_kib=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["size_after"]//1024)' "$W/gc.json")
dropped=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records_dropped"])' "$W/gc.json")
"$B" -C "$W/p" umount >/dev/null
a=$(ms); "$B" -C "$W/p" doctor >"$W/doctor.out" || { cat "$W/doctor.out"; exit 1; }; doctor_ms=$(( $(ms) - a ))

echo "| what | value |"
echo "|---|---|"
echo "| tree | $n files in work/, $tree_kib KiB |"
echo "| day | $EDITS sed -i edits, $RMRFS rm -rf + cp -a of work/, in $(( (t1 - t0) / 1000 )) s |"
echo "| store after the day | $store_kib KiB ($trash_files trash files, $objects objects, journal $journal_kib KiB, $records records) |"
echo "| snapshot | $snap_ms ms |"
echo "| gc by the default policy (nothing to collect) | $gc_nothing_ms ms |"
echo "| gc --keep-within 0s (the whole day) | $gc_all_ms ms: $dropped records dropped, store $store_kib -> $after_kib KiB |"
echo "| doctor on the day's store (mounted; every object and trash file read) | $doctor_full_ms ms |"
echo "| doctor after the gc (unmounted) | $doctor_ms ms |"
