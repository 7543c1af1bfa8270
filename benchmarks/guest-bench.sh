#!/bin/sh
# In a guest of benchmarks/run.sh: the counted run, then (if SYNC is not
# empty) the criterion benchmarks of the synchronous paths, saved as a
# baseline named after the boot.
#
#   guest-bench.sh KSM-BENCH SYNC RESULTS BOOT LABEL [COUNT-OPTIONS...]
set -e
bench=$1 sync=$2 res=$3 boot=$4 label=$5
shift 5
"$bench" count --label "$label" --log "$res/$boot.log" "$@"
if [ -n "$sync" ]; then
	CRITERION_HOME=$res/criterion "$sync" --bench --noplot --save-baseline "$boot"
fi
