#!/usr/bin/env bash
# `make stress`: the stress and fault campaign of rust/ksm-stress in a guest
# of each kernel, one after the other, then their closing tables side by
# side (docs/stress.md).
#
#   ci/stress.sh [--duration D] [--phase P] [--no-build] [--out DIR]
#                [--run-args "ARGS"] [KERNEL...]
#
#   KERNEL       a variant of ci/kernel.sh, built first unless --no-build,
#                or a build directory or bzImage (default: stress
#                stock-stress, the debug kernels with kprobe events)
#   --duration   per kernel: seconds, or 90s, 30m, 1h (default 30m)
#   --phase      between two checks of every page (default 60s)
#   --run-args   more options for `ksm-stress run` (--workers, --pages, --seed)
#   --out        results (default out/stress): per kernel its console log and
#                the guest's files, and report.md, the table
#
# The guests boot with 2 GiB on two NUMA nodes, half of it movable
# (movablecore=50%: the blocks the campaign takes offline), and slab_nomerge
# (so that failslab can be narrowed to KSM's own caches). Exit status: 0 if
# every kernel's campaign passed (no corrupted page, no failed check, no
# kernel warning or splat in its console), 1 if not.
source "$(dirname "$0")/lib.sh"

duration=30m phase=60s build=1 res=$KSMRS_ROOT/out/stress run_args=""
kernels=()
while [ $# -gt 0 ]; do
	case "$1" in
		--duration|--phase|--out|--run-args) [ $# -ge 2 ] || die "$1 needs a value (see --help)" ;;
	esac
	case "$1" in
		--duration) duration=$2; shift 2 ;;
		--phase) phase=$2; shift 2 ;;
		--no-build) build=0; shift ;;
		--out) res=$2; shift 2 ;;
		--run-args) run_args=$2; shift 2 ;;
		-h|--help) sed -n '2,/^source/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) die "unknown option $1 (see --help)" ;;
		*) kernels+=("$1"); shift ;;
	esac
done
[ ${#kernels[@]} -gt 0 ] || kernels=(stress stock-stress)

# Seconds in "90", "90s", "30m", "1h" (what ksm-stress accepts).
seconds() {
	case "$1" in
		*[!0-9smh]*|"") return 1 ;;
		*h) echo $(( ${1%h} * 3600 )) ;;
		*m) echo $(( ${1%m} * 60 )) ;;
		*s) echo "${1%s}" ;;
		*) echo "$1" ;;
	esac
}
secs=$(seconds "$duration") || die "--duration: expected seconds, or 90s, 30m, 1h; got '$duration'"
seconds "$phase" >/dev/null || die "--phase: expected seconds, or 90s, 30m, 1h; got '$phase'"

stress=$KSMRS_ROOT/rust/target/release/ksm-stress
[ -x "$stress" ] || die "no $stress: build it with 'make suite'"
# Options the guest's ksm-stress would reject are rejected here, before any
# build or boot (clap checks every value it meets before --help).
# shellcheck disable=SC2086 # the options are words
"$stress" run --duration "$duration" --phase "$phase" $run_args --help >/dev/null ||
	die "ksm-stress run rejects: --duration $duration --phase $phase $run_args"

mkdir -p "$res"
# The guests run a copy: a rebuild of the tree during a long campaign must
# not change the program under the running guest (9p shows it the new file).
cp "$stress" "$res/ksm-stress"
stress=$res/ksm-stress
columns=()
for k in "${kernels[@]}"; do
	if [[ $k == */* ]]; then
		# A build directory, or a bzImage in one: named after the directory.
		out=$k label=$(basename "$k")
		[ ! -f "$k" ] || label=$(basename "$(dirname "$k")")
	else
		out=$(variant_out "$k") label=$k
		[ "$build" = 0 ] || "$KSMRS_ROOT/ci/kernel.sh" "$k"
	fi
	dir=$res/$label
	rm -rf "$dir"
	mkdir -p "$dir/guest"
	log "stress campaign on $label ($out): $duration"
	start=$(date +%s)
	# Boot, the campaign's own set-up and its final checks: 20 min at most
	# beyond the campaign under TCG with KASAN.
	# shellcheck disable=SC2086 # the options are words
	if ! "$KSMRS_ROOT/virtme/boot.sh" --kernel "$out" --memory 2G --timeout $((secs + 1200)) \
		--append "movablecore=50% slab_nomerge" --rwdir "$dir/guest" --log "$dir/console.log" -- \
		"$KSMRS_ROOT/virtme/guest-stress.sh" "$dir/guest" "$stress" \
		--duration "$duration" --phase "$phase" $run_args; then
		log "the $label guest did not finish cleanly (see $dir/console.log)"
	fi
	log "$label: $(since "$start") s, guest status $(cat "$dir/guest/stress.rc" 2>/dev/null || echo none)"
	columns+=(--column "$label=$dir/guest/stress.json,$dir/console.log")
done

rc=0
"$stress" report "${columns[@]}" --out "$res/report.md" || rc=$?
log "the table: $res/report.md"
exit "$rc"
