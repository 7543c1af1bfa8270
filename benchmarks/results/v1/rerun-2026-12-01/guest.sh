#!/bin/sh
# The v1 stall probe: the full count run, then criterion's sync benchmarks,
# with KSM's counters logged every 5 s of guest time.
res=$1 bench=$2 sync=$3
k=/sys/kernel/mm/ksm
(
	while :; do
		line="t=$(cut -d' ' -f1 /proc/uptime)"
		for f in run pages_to_scan sleep_millisecs full_scans pages_scanned pages_shared pages_sharing pages_unshared pages_volatile pages_skipped stable_node_chains stable_node_dups; do
			line="$line $f=$(cat $k/$f)"
		done
		echo "$line"
		sleep 5
	done
) > "$res/monitor.log" 2>&1 &
setarch "$(uname -m)" --addr-no-randomize "$bench" count --label v1 --log "$res/count.log" \
	--mib 64 --mib 256 --mib 1024 --steady-scans 1 > "$res/count.out" 2>&1
echo "COUNT-DONE rc=$? t=$(cut -d' ' -f1 /proc/uptime)" >> "$res/monitor.log"
CRITERION_HOME=$res/criterion timeout 1200 "$sync" --bench --noplot --save-baseline v1 > "$res/sync.log" 2>&1
echo "SYNC-DONE rc=$? t=$(cut -d' ' -f1 /proc/uptime)" >> "$res/monitor.log"
