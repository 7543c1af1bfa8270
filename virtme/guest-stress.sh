#!/bin/sh
# Runs inside a stress guest (see ci/stress.sh):
#   guest-stress.sh RESULTS KSM_STRESS [ksm-stress run args...]
# and leaves in RESULTS, for the host to tabulate:
#   stress.json   the campaign's result (ksm-stress run --json)
#   stress.txt    its progress and its own table
#   stress.rc     its exit status (0 passed, 1 failed, 2 could not run)
#   dmesg.txt     the kernel log
# Its exit status is 0 unless it could not run at all: results are judged
# on the host.
set -u
res=$1 stress=$2
shift 2
mkdir -p "$res"

# Swap for MADV_PAGEOUT: zram, in memory.
if [ -e /sys/block/zram0 ] || modprobe zram 2>/dev/null; then
	echo 512M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null &&
		swapon /dev/zram0 && echo "guest: 512 MiB of zram swap"
fi
# Fault injection's attributes and the kprobe events' counts.
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

echo "guest: ksm-stress run $*"
{ "$stress" run --json "$res/stress.json" "$@" 2>&1; echo $? > "$res/stress.rc"; } |
	tee "$res/stress.txt"
dmesg > "$res/dmesg.txt"
