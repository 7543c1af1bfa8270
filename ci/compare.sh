#!/usr/bin/env bash
# `make compare`: kernels side by side, each booted under TCG with two NUMA
# nodes (virtme/boot.sh), by two kinds of evidence:
#   1. the guest tests (ci/guest-tests.sh: the conformance suite and the
#      kernel's own KSM selftests), one verdict per check and kernel;
#   2. the differential oracle: `ksm-conform trace` in a fresh boot of each
#      kernel (RUNS boots each), every KSM counter after every step and every
#      ksmd batch of deterministic workloads; `ksm-conform trace-diff`
#      requires every trace to be identical to the first, record by record,
#      and prints the first record that differs with both values.
#
#   ci/compare.sh [--runs N] [--trace-only] [--workload W]... [--seed N] [KERNEL...]
#
# A KERNEL is a variant of ci/kernel.sh (stock, patched, ...; built if need
# be) or NAME=PATH, a kernel already built (a build directory or a bzImage)
# named NAME in the results. Default: stock patched-c patched (the stock 7.3
# kernel, and the series with each choice of KSM implementation: the C trees,
# the Rust ones), built with the same configuration. The first kernel is the
# reference. --runs N boots each kernel N times for the trace (default 1), so
# that one kernel's traces also show they repeat; --trace-only leaves out the
# guest tests; --workload runs only that trace workload (repeatable); --seed
# draws the workloads' contents from another seed (default 0).
# Results in out/compare/<name>/ and out/compare/compare.txt (verdicts),
# out/compare/trace-diff.txt. Exit status 1 if anything differs.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

runs=1 suite=1 workloads=() kernels=()
while [ $# -gt 0 ]; do
	case "$1" in
		--runs) runs=$2; shift 2 ;;
		--trace-only) suite=0; shift ;;
		--workload) workloads+=(--workload "$2"); shift 2 ;;
		--seed) workloads+=(--seed "$2"); shift 2 ;;
		-h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) die "unknown option $1 (see --help)" ;;
		*) kernels+=("$1"); shift ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number, got '$runs'"
[ ${#kernels[@]} -gt 0 ] || kernels=(stock patched-c patched)
[ ${#kernels[@]} -ge 2 ] || [ "$runs" -ge 2 ] ||
	die "nothing to compare: give two kernels or more, or --runs 2 or more"

conform=$KSMRS_ROOT/rust/target/release/ksm-conform
[ -x "$conform" ] || die "no $conform: build it with 'make suite'"

names=() images=()
for k in "${kernels[@]}"; do
	case "$k" in
		*=*) name=${k%%=*} image=${k#*=}
			[ -e "$image" ] || die "$k: no kernel at $image" ;;
		*) name=$k image="" ;;
	esac
	[[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "$k: a name is letters, digits, '.', '_' or '-'"
	for n in "${names[@]}"; do [ "$n" != "$name" ] || die "$name given twice"; done
	names+=("$name") images+=("$image")
done
res=$KSMRS_ROOT/out/compare
rm -rf "$res"
mkdir -p "$res"

traces=()
for i in "${!names[@]}"; do
	name=${names[$i]} image=${images[$i]}
	mkdir -p "$res/$name"
	if [ -z "$image" ]; then
		"$KSMRS_ROOT/ci/kernel.sh" "$name"
		image=$(variant_out "$name")
	fi
	if [ "$suite" = 1 ]; then
		log "== $name: guest tests"
		"$KSMRS_ROOT/ci/guest-tests.sh" "$name" "$res/$name" "$image"
	fi
	for ((r = 1; r <= runs; r++)); do
		log "== $name: trace, boot $r of $runs"
		dir=$res/$name/trace.$r
		mkdir -p "$dir"
		if ! "$KSMRS_ROOT/virtme/boot.sh" --kernel "$image" --rwdir "$dir" --log "$dir/console.log" \
			--timeout 1500 -- "$KSMRS_ROOT/virtme/guest-trace.sh" "$dir" "$conform" "${workloads[@]}"; then
			log "$name: the trace did not complete (see $dir/trace.log, $dir/console.log)"
		fi
		if grep -qE "$KSMRS_SPLATS" "$dir/console.log" 2>/dev/null; then
			grep -E "$KSMRS_SPLATS" "$dir/console.log" | head -n 5 >&2
			die "$name: kernel splat during the trace: see $dir/console.log"
		fi
		# An incomplete trace is compared too: trace-diff says where it stops.
		for f in "$dir/trace.jsonl" "$dir/trace.jsonl.tmp"; do
			if [ -f "$f" ]; then traces+=("${f#"$res"/}"); break; fi
		done
	done
done

differ=0

# 1. One "name<TAB>verdict" line per check of a results directory.
verdicts() {
	local dir=$1/guest
	{
		sed -nE 's/^(not ok|ok) - ([^#]*[^ #]).*$/\2\t\1/p' "$1/kernel.tap" | sed -E "s/^$2 //"
		sed -nE 's/^(not ok|ok) [0-9]+ ([^ #]+)( # SKIP.*)?$/\2\t\1\3/p' "$dir/conform.tap"
		sed -nE 's/^(not ok|ok) [0-9]+ (refusal: [^#]*[^ #]).*$/\2\t\1/p' "$dir/refusal.tap"
		# Numbered: several of its tests print the same name.
		sed -nE 's/^(not ok|ok) ([0-9]+) (.*) # SKIP.*$/functional \2: \3\tskip/p; s/^(not ok|ok) ([0-9]+) ([^#]*)$/functional \2: \3\t\1/p' \
			"$dir/ksm_functional_tests.tap"
		sed -nE 's/^(not ok|ok) [0-9]+ (ksm_tests [^#(]*[^ #(]).*$/\2\t\1/p' "$dir/selftests.tap"
	} 2>/dev/null | sed -E 's/\t# SKIP.*/\tskip/' | sort
}

if [ "$suite" = 1 ]; then
	for name in "${names[@]}"; do
		verdicts "$res/$name" "$name" >"$res/$name.verdicts"
		[ -s "$res/$name.verdicts" ] || die "no results from the $name guest: see $res/$name/console.log"
	done
	# One row per check, one column per kernel: a check missing from a
	# kernel's results is "missing" there.
	{
		printf '%-72s' check
		printf ' %-10s' "${names[@]}"
		echo
		for name in "${names[@]}"; do sed "s/^/$name\t/" "$res/$name.verdicts"; done |
			awk -F'\t' -v order="${names[*]}" '
				BEGIN { n = split(order, k, " ") }
				{ v[$2, $1] = $3; if (!($2 in seen)) { seen[$2] = 1; checks[++c] = $2 } }
				END {
					for (i = 1; i <= c; i++) {
						line = sprintf("%-72s", checks[i]); same = 1
						for (j = 1; j <= n; j++) {
							x = ((checks[i], k[j]) in v) ? v[checks[i], k[j]] : "missing"
							line = line sprintf(" %-10s", x)
							if (j > 1 && x != first) same = 0
							if (j == 1) first = x
						}
						print line (same ? "" : "   <-- differs")
					}
				}' | sort
	} | tee "$res/compare.txt"
	d=$(grep -c 'differs$' "$res/compare.txt" || true)
	total=$(($(wc -l <"$res/compare.txt") - 1))
	if [ "$d" = 0 ]; then
		log "${names[*]}: the same verdict on all $total checks"
	else
		log "$d of $total checks differ between ${names[*]}"
		differ=1
	fi
fi

# 2. Every trace against the first.
[ ${#traces[@]} -gt 0 ] || die "no trace was recorded: see $res/*/trace.*/console.log"
if (cd "$res" && "$conform" trace-diff "${traces[@]}") >"$res/trace-diff.txt" 2>&1; then
	cat "$res/trace-diff.txt"
	log "all ${#traces[@]} traces are identical, record by record"
else
	cat "$res/trace-diff.txt"
	log "the traces differ (or one did not complete): $res/trace-diff.txt"
	differ=1
fi
exit "$differ"
