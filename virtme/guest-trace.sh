#!/bin/sh
# Runs inside a guest (ci/compare.sh): one trace of the differential oracle,
#   guest-trace.sh RESULTS CONFORM [ksm-conform trace args...]
# leaving in RESULTS trace.jsonl (trace.jsonl.tmp if it stopped), trace.log
# (its progress and errors) and trace.rc (its exit status). The progress
# goes to a file, not to the console: once, with the progress on the
# console, the console stopped passing output and the trace stopped with it,
# its driver blocked writing a progress line. Exits with the trace's status.
set -u
res=$1 conform=$2
shift 2
mkdir -p "$res"
"$conform" trace --out "$res/trace.jsonl" "$@" 2>"$res/trace.log"
rc=$?
echo "$rc" >"$res/trace.rc"
tail -n 3 "$res/trace.log"
exit "$rc"
