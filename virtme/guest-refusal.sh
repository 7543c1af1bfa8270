#!/bin/sh
# Runs inside a test guest, after the suite (virtme/guest-test.sh):
#   guest-refusal.sh RESULTS CONFORM
# A process merges pages with ksmd running, as a virtual machine on a host
# would; then ksm-conform, the checks and the trace, must refuse (exit 4),
# name that process, and leave /sys/kernel/mm/ksm and its pages as they
# were. Leaves one TAP line per claim in RESULTS/refusal.tap.
set -u
res=$1 conform=$2
ksm=/sys/kernel/mm/ksm
tap=$res/refusal.tap
: >"$tap"
n=0
result() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n $2"; else echo "not ok $n $2 # $3"; fi >>"$tap"
}
snapshot() {
	for f in "$ksm"/*; do
		# Statistics (0444) move with ksmd; the tunables (0644) must not
		# move at all. (test -w is true for root whatever the mode.)
		[ "$(stat -c %a "$f")" = 644 ] && echo "$(basename "$f")=$(cat "$f")"
	done
}

python3 -c '
import mmap, sys, time
m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.write(b"k" * 64 * 4096)
m.madvise(mmap.MADV_MERGEABLE)
sys.stdout.write("ready\n"); sys.stdout.flush()
time.sleep(900)
' >"$res/holder.out" &
holder=$!
old_run=$(cat "$ksm/run")
echo 1 >"$ksm/run"
# All 64 merged, so that the count stays put while ksm-conform looks.
i=0
while [ "$(cat "/proc/$holder/ksm_merging_pages" 2>/dev/null || echo 0)" != 64 ] && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
merged=$(cat "/proc/$holder/ksm_merging_pages" 2>/dev/null || echo 0)
if [ "$merged" != 64 ]; then
	result 1 "refusal: a process merges pages" "pid $holder has $merged of 64 merged after 60 s"
else
	before=$(snapshot)
	"$conform" >"$res/refusal.checks.out" 2>"$res/refusal.checks.err"
	rc=$?
	after=$(snapshot)
	now=$(cat "/proc/$holder/ksm_merging_pages")
	why=$(cat "$res/refusal.checks.err")
	ok=0
	[ "$rc" = 4 ] || ok=1
	case "$why" in *"pid $holder (python3): $merged pages"*) ;; *) ok=1 ;; esac
	grep -q "^1\.\.0 # SKIP this machine uses KSM" "$res/refusal.checks.out" || ok=1
	result $ok "refusal: ksm-conform refuses (exit 4) and names pid, command and pages" \
		"exit $rc, stderr: $why"
	ok=0
	[ "$before" = "$after" ] && [ "$now" = "$merged" ] || ok=1
	result $ok "refusal: ksm-conform changed no knob and unmerged nothing" \
		"knobs before: $(echo "$before" | tr '\n' ' ') after: $(echo "$after" | tr '\n' ' '); merged $merged, now $now"
	"$conform" trace --out "$res/refused.trace" >/dev/null 2>"$res/refusal.trace.err"
	rc=$?
	now=$(cat "/proc/$holder/ksm_merging_pages")
	ok=0
	[ "$rc" = 4 ] && [ ! -e "$res/refused.trace" ] && [ ! -e "$res/refused.trace.tmp" ] || ok=1
	[ "$before" = "$(snapshot)" ] && [ "$now" = "$merged" ] || ok=1
	result $ok "refusal: ksm-conform trace refuses and changes nothing" \
		"exit $rc, stderr: $(cat "$res/refusal.trace.err")"
	# Only the checks that do not need the machine (--list says which do):
	# they run, and change nothing either.
	set --
	for name in $("$conform" --list | awk '$2 == "needs" { print $1 }'); do
		set -- "$@" --exclude "$name"
	done
	"$conform" "$@" >"$res/refusal.shared.out" 2>&1
	rc=$?
	ok=0
	[ "$rc" = 0 ] && [ "$before" = "$(snapshot)" ] || ok=1
	result $ok "refusal: the checks that do not need the machine still run" "exit $rc"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
echo "$old_run" >"$ksm/run"
cat "$tap"
