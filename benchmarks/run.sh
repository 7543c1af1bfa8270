#!/usr/bin/env bash
# `make bench`: how fast ksmd merges and what it costs in CPU, the stock 7.3
# kernel (C) against the patched one (Rust), built with the same
# configuration and booted the same way (TCG, two NUMA nodes, 2 GiB).
#
#   benchmarks/run.sh [ksm-bench run options, e.g. --runs 9 --mib 64]
#
# Each kernel boots twice, in the order stock, patched, patched, stock, so
# that a drift of the machine over the run weighs on both alike; in each
# guest ksm-bench (rust/ksm-bench) times its workloads round-robin. The
# samples of a kernel's two boots are merged, then `ksm-bench compare`
# prints medians, ranges and ratios. Results in out/bench/: stock.json,
# patched.json, compare.json, compare.txt, and per boot its report and
# console log (stock-1.json, stock-1-console.log, ...). Under TCG the
# absolute numbers are those of an emulated CPU: compare the two columns
# with each other, not with a real machine.
source "$(dirname "$0")/../ci/lib.sh"

bench=$KSMRS_ROOT/rust/target/release/ksm-bench
[ -x "$bench" ] || die "no $bench: build it with 'make suite'"
res=$KSMRS_ROOT/out/bench

for variant in stock patched; do
	"$KSMRS_ROOT/ci/kernel.sh" "$variant"
done
# The last results go only once there is a run to replace them.
rm -rf "$res"
mkdir -p "$res"
n=0
for variant in stock patched patched stock; do
	n=$((n + 1))
	boot=$variant-$(( n < 3 ? 1 : 2 ))
	log "== [$n/4] $variant"
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "$(variant_out "$variant")" --rwdir "$res" \
		--log "$res/$boot-console.log" --timeout 1800 -- \
		"$bench" run --label "$variant" --json "$res/$boot.json" "$@" ||
		die "the $variant guest did not complete the benchmark: see $res/$boot-console.log"
	if grep -qE "$KSMRS_SPLATS" "$res/$boot-console.log"; then
		die "kernel splat in the $variant guest: see $res/$boot-console.log"
	fi
done

for variant in stock patched; do
	"$bench" merge "$res/$variant-1.json" "$res/$variant-2.json" --json "$res/$variant.json"
done
"$bench" compare "$res/stock.json" "$res/patched.json" --json "$res/compare.json" | tee "$res/compare.txt"
log "results in $res"
