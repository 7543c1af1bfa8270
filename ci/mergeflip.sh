#!/usr/bin/env bash
# The reproducer of issue 11 (rust/ksm-mergeflip: merge_across_nodes switched
# in the middle of ksmd's scans) in a fresh guest of each KERNEL, bounded,
# one TAP line each:
#   ci/mergeflip.sh [--rounds N] [--seconds S] [--timeout S] [--results DIR] KERNEL...
#
# KERNEL: a variant of ci/kernel.sh (patched, stock, debug, stock-debug, fix,
# fix-debug: built already), debian-6.1|debian-6.12|debian-7.3
# (ci/debian-kernel.sh), a path virtme/boot.sh --kernel takes, or NAME=PATH.
# The guest panics on an oops or a warning (virtme/guest-mergeflip.sh), so a
# crash ends it at once. Defaults: 1000 rounds or 60 s, whichever comes first
# (a round takes about a second: the minute is the bound); the guest is
# killed after the bound plus 180 s (--timeout).
#
# RESULTS (default out/mergeflip) gets mergeflip.tap, and per kernel NAME/:
#   console.log  run.log (the reproducer's progress)  splat.txt (a crash's
#   report and call trace)  stall.txt (a stalled ksmd's kernel stacks)
#   result (key=value: kernel, outcome = clean, crashed, stalled, skipped or
#   failed, rounds survived, seconds, splat, rip, reason, bound,
#   linux_version)
# TAP: "ok" clean, "ok # SKIP" cannot run there (no NUMA, no KSM), "not ok"
# crashed (the splat's first line), stalled (ksmd completed no more full
# scans) or failed (why). Exit status: 0 if every kernel was clean or
# skipped, 1 otherwise, 2 for bad usage.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

MERGEFLIP=$KSMRS_ROOT/rust/target/release/ksm-mergeflip

usage() {
	printf '\033[1;31m[ksm-rs] error:\033[0m %s\n' "$*" >&2
	echo "usage: ci/mergeflip.sh [--rounds N] [--seconds S] [--timeout S] [--results DIR] KERNEL..." >&2
	exit 2
}

rounds=1000 seconds=60 timeout="" results=$KSMRS_ROOT/out/mergeflip
while [ $# -gt 0 ]; do
	case "$1" in
		--rounds|--seconds|--timeout|--results) [ $# -ge 2 ] || usage "$1 needs a value" ;;&
		--rounds) rounds=$2; shift 2 ;;
		--seconds) seconds=$2; shift 2 ;;
		--timeout) timeout=$2; shift 2 ;;
		--results) results=$2; shift 2 ;;
		-h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		--) shift; break ;;
		-*) usage "unknown option $1" ;;
		*) break ;;
	esac
done
[ $# -gt 0 ] || usage "no kernel given"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage "--rounds must be a positive number, got '$rounds'"
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage "--seconds must be a positive number, got '$seconds'"
timeout=${timeout:-$((seconds + 180))}
[[ $timeout =~ ^[1-9][0-9]*$ ]] || usage "--timeout must be a positive number, got '$timeout'"

# Every kernel resolved before the first boot: a typo costs no guest.
names=() paths=()
for k in "$@"; do
	r=$(resolve_kernel "$k") || usage "cannot use kernel '$k'"
	names+=("${r%% *}") paths+=("${r#* }")
done
[ -x "$MERGEFLIP" ] || die "no $MERGEFLIP: build it with 'cd rust && cargo build --release'"
mkdir -p "$results"
tap=$results/mergeflip.tap
rm -f "$tap"

# The console from the reproducer's start on, without timestamps.
after_start() {
	sed -n '/ksm-mergeflip: start/,$p' "$1" 2>/dev/null | sed -E 's/^\[ *[0-9.]+\] //'
}

# judge NAME RES BOOT_RC: the outcome of one guest (boot.sh's exit status:
# 124 at the timeout), as RES/result and a TAP line.
judge() {
	local name=$1 res=$2 boot_rc=$3 rc outcome reason="" splat rip last n took
	rc=$(cat "$res/mergeflip.rc" 2>/dev/null || true)
	n=$(grep -c 'ksm-mergeflip: round [0-9]*/[0-9]* survived' "$res/run.log" 2>/dev/null || true)
	splat=$(after_start "$res/console.log" | grep -m1 -E "$KSMRS_SPLATS" || true)
	rip=$(after_start "$res/console.log" | grep -m1 -oE 'RIP: [0-9a-f]{4}:[^ ]+' | sed 's/^RIP: [0-9a-f]*://' || true)
	last=$(grep 'ksm-mergeflip: ' "$res/run.log" 2>/dev/null | tail -n 1 | sed 's/^ksm-mergeflip: //' || true)
	took=$(sed -nE 's/.*(clean|stalled) after [0-9]+ rounds in ([0-9.]+) s.*/\2/p' "$res/run.log" 2>/dev/null | tail -n 1)
	if [ -n "$splat" ]; then
		outcome=crashed
		# The report and its call trace, up to the panic.
		after_start "$res/console.log" |
			awk -v splat="$splat" 'index($0, splat) { on = 1 } on { print } on && /end Kernel panic/ { exit }' >"$res/splat.txt"
		# Seconds from the start mark to the splat, from the console's clock.
		took=$(awk -v splat="$splat" '
			match($0, /^\[ *[0-9.]+\]/) { t = substr($0, 2, RLENGTH - 2) + 0 }
			/ksm-mergeflip: start/ { s = t }
			s != "" && index($0, splat) { printf "%.1f", t - s; exit }' "$res/console.log")
	elif [ "$rc" = 0 ]; then
		outcome=clean
	elif [ "$rc" = 3 ]; then
		outcome=stalled reason=${last#stalled after * s: }
		grep 'ksm-mergeflip: ksmd\|ksm-mergeflip:   ' "$res/run.log" | sed 's/^ksm-mergeflip: //' >"$res/stall.txt"
	elif [ "$rc" = 4 ]; then
		outcome=skipped reason=$last
	elif [ -n "$rc" ]; then
		outcome=failed reason="exit status $rc: $last"
	elif [ "$boot_rc" = 124 ]; then
		outcome=failed reason="no result within ${timeout} s, no splat: a hang? (last: ${last:-nothing})"
	else
		outcome=failed reason="the guest ended (status $boot_rc) without a result or a splat (last: ${last:-nothing})"
	fi
	{
		echo "kernel=$name"
		echo "outcome=$outcome"
		echo "rounds=$n"
		[ -n "$took" ] && echo "seconds=$took"
		echo "bound=$rounds rounds or $seconds s"
		[ -n "$splat" ] && echo "splat=$splat"
		[ -n "$rip" ] && echo "rip=$rip"
		[ -n "$reason" ] && echo "reason=$reason"
		grep -m1 -o 'Linux version .*' "$res/console.log" 2>/dev/null | sed 's/^/linux_version=/'
	} >"$res/result"
	case "$outcome" in
		clean) tap_line "$tap" OK "mergeflip on $name: clean after $n rounds in ${took} s" ;;
		crashed) tap_line "$tap" FAIL "mergeflip on $name" "crashed in round $((n + 1)) after ${took:-?} s: $splat${rip:+ (RIP $rip)}" ;;
		stalled) tap_line "$tap" FAIL "mergeflip on $name" "ksmd stalled in round $((n + 1)) after ${took:-?} s: $reason" ;;
		skipped) tap_line "$tap" SKIP "mergeflip on $name" "$reason" ;;
		failed) tap_line "$tap" FAIL "mergeflip on $name" "$reason" ;;
	esac
	log "$(tail -n 1 "$tap")"
}

for i in "${!names[@]}"; do
	name=${names[$i]} res=$results/${names[$i]}
	rm -rf "$res"
	mkdir -p "$res"
	log "mergeflip on $name (${paths[$i]}): up to $rounds rounds or $seconds s, guest timeout ${timeout} s"
	boot_rc=0
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "${paths[$i]}" --rwdir "$res" --log "$res/console.log" \
		--timeout "$timeout" -- "$KSMRS_ROOT/virtme/guest-mergeflip.sh" "$res" "$MERGEFLIP" \
		--rounds "$rounds" --seconds "$seconds" | tee "$res/run.log" || boot_rc=${PIPESTATUS[0]}
	judge "$name" "$res" "$boot_rc"
done
! grep -q '^not ok' "$tap"
