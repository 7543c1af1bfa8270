#!/usr/bin/env bash
# The reproducer of the ksm_zero_pages drift at a failed fork
# (docs/zero-pages-fork.md) in a fresh guest of each KERNEL, one TAP line
# each:
#   ci/zero-pages-fork.sh [--results DIR] KERNEL...
#
# KERNEL: a built variant of ci/kernel.sh, debian-6.12|debian-7.3, a path
# virtme/boot.sh --kernel takes, or NAME=PATH (as ci/mergeflip.sh). RESULTS
# (default out/zero-pages-fork) gets zero-pages-fork.tap, and per kernel
# NAME/run.log and NAME/console.log. "ok": the counter stayed right; "not
# ok": it drifted; "ok # SKIP": no ksm_zero_pages in that kernel (before
# 6.10). Exit status: 0 if no kernel drifted, 1 otherwise, 2 for bad usage.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

usage() {
	printf '\033[1;31m[ksm-rs] error:\033[0m %s\n' "$*" >&2
	echo "usage: ci/zero-pages-fork.sh [--results DIR] KERNEL..." >&2
	exit 2
}

results=$KSMRS_ROOT/out/zero-pages-fork
while [ $# -gt 0 ]; do
	case "$1" in
		--results) [ $# -ge 2 ] || usage "$1 needs a value"; results=$2; shift 2 ;;
		-h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) usage "unknown option $1" ;;
		*) break ;;
	esac
done
[ $# -gt 0 ] || usage "no kernel given"
names=() paths=()
for k in "$@"; do
	r=$(resolve_kernel "$k") || usage "cannot use kernel '$k'"
	names+=("${r%% *}") paths+=("${r#* }")
done

mkdir -p "$results"
tap=$results/zero-pages-fork.tap
rm -f "$tap"
repro=$results/ksm-zero-fork
gcc -O2 -Wall -Wextra -static -o "$repro" "$KSMRS_ROOT/docs/zero-pages-fork/reproducer.c" ||
	die "cannot compile docs/zero-pages-fork/reproducer.c"
drifted=0
for i in "${!names[@]}"; do
	name=${names[$i]} res=$results/${names[$i]}
	mkdir -p "$res"
	# The guest's status is the reproducer's: 0 right, 1 drifted, 2 no set-up.
	rc=0
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "${paths[$i]}" --timeout 300 --log "$res/console.log" -- \
		sh -c "[ -e /sys/kernel/mm/ksm/ksm_zero_pages ] || exit 3; exec $repro" >"$res/run.log" 2>&1 || rc=$?
	what=$(grep '^MADV_DONTFORK\|^fork failed\|^fork succeeded' "$res/run.log" | paste -sd ' ' || true)
	case $rc in
		0) tap_line "$tap" OK "$name: $what" ;;
		1) tap_line "$tap" FAIL "$name: ksm_zero_pages drifted" "$what"; drifted=1 ;;
		3) tap_line "$tap" SKIP "$name" "no ksm_zero_pages in this kernel" ;;
		*) tap_line "$tap" FAIL "$name: could not run" "status $rc, see $res/run.log"; drifted=1 ;;
	esac
	tail -n 1 "$tap"
done
exit "$drifted"
