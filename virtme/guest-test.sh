#!/bin/sh
# Runs inside a test guest (see ci/test.sh):
#   guest-test.sh RESULTS SELFTESTS CONFORM [ksm-conform args...]
# and leaves in RESULTS, for the host to count:
#   dmesg.txt           the kernel log (KUnit's KTAP is in it)
#   conform.tap/.json   the conformance suite (CONFORM, skipped if empty)
#   refusal.tap         ksm-conform on a guest where another process holds
#                       KSM pages (virtme/guest-refusal.sh)
#   selftests.tap       the kernel's KSM selftests, one TAP line per run
#   ksm_functional_tests.tap  that program's own TAP
#   conform.rc, ksm_functional_tests.rc  their exit statuses (a crash shows)
# Its exit status is 0 unless it could not run at all: results are judged on
# the host.
set -u
res=$1 selftests=$2 conform=$3
shift 3
mkdir -p "$res"

# Swap for the suite's swap group: zram, in memory.
if [ -e /sys/block/zram0 ] || modprobe zram 2>/dev/null; then
	echo 512M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null &&
		swapon /dev/zram0 && echo "guest: 512 MiB of zram swap"
fi

if [ -n "$conform" ]; then
	echo "guest: conformance suite"
	{ "$conform" --json "$res/conform.json" "$@"; echo $? > "$res/conform.rc"; } |
		tee "$res/conform.tap"
	echo "guest: the suite refuses while another process holds KSM pages"
	"$(dirname "$0")/guest-refusal.sh" "$res" "$conform"
fi

if [ -n "$selftests" ]; then
	# ksm_functional_tests re-executes ./ksm_functional_tests: run from there.
	cd "$selftests" || exit 1
	echo "guest: ksm_functional_tests"
	{ ./ksm_functional_tests 2>&1; echo $? > "$res/ksm_functional_tests.rc"; } |
		tee "$res/ksm_functional_tests.tap"
	# The ksm_tests variants that run_vmtests.sh runs (-t ksm, ksm_numa).
	# ksm_tests -N expects a page to merge within two full scans of its
	# twin, but smart_scan (on by default since 6.7) skips a page that
	# waited unmerged for a few scans: about one -N -m 1 run in three fails
	# on stock 7.3 (10 of 30 runs, and 9 of 30 on the patched kernel; 0 of
	# 30 with smart_scan=0). So -N runs with smart_scan off.
	smart_scan=$(cat /sys/kernel/mm/ksm/smart_scan 2>/dev/null)
	n=0
	: > "$res/selftests.tap"
	for args in "-H -s 100" "-P -s 100" "-M -p 10" "-U" "-Z -p 10 -z 0" \
		"-Z -p 10 -z 1" "-N -m 1" "-N -m 0"; do
		n=$((n + 1))
		echo "guest: ksm_tests $args"
		case "$args" in
			-N*) [ -n "$smart_scan" ] && echo 0 > /sys/kernel/mm/ksm/smart_scan ;;
		esac
		# shellcheck disable=SC2086 # the options are words
		./ksm_tests $args > "$res/ksm_tests.$n.log" 2>&1
		rc=$?
		[ -n "$smart_scan" ] && echo "$smart_scan" > /sys/kernel/mm/ksm/smart_scan
		cat "$res/ksm_tests.$n.log"
		case $rc in
			0) echo "ok $n ksm_tests $args" ;;
			4) echo "ok $n ksm_tests $args # SKIP $(tail -n 1 "$res/ksm_tests.$n.log")" ;;
			*) echo "not ok $n ksm_tests $args (exit $rc)" ;;
		esac >> "$res/selftests.tap"
	done
fi

dmesg > "$res/dmesg.txt"
