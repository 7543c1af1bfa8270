#!/bin/sh
# In a guest of benchmarks/run.sh: the counted run, then (if SYNC is not
# empty) the criterion benchmarks of the synchronous paths, saved as a
# baseline named after the boot.
#
#   guest-bench.sh KSM-BENCH SYNC RESULTS BOOT LABEL [COUNT-OPTIONS...]
set -e
bench=$1 sync=$2 res=$3 boot=$4 label=$5
shift 5
# Without address-space randomization: where the workloads' mappings land
# shapes the VMA tree, whose lookup ksmd does for every page it scans (a
# boot-to-boot spread of 3% per scanned page at 16 MiB, all of it in
# mas_walk(), with randomization).
setarch "$(uname -m)" --addr-no-randomize \
	"$bench" count --label "$label" --log "$res/$boot.log" "$@"
if [ -n "$sync" ]; then
	CRITERION_HOME=$res/criterion "$sync" --bench --noplot --save-baseline "$boot"
fi
