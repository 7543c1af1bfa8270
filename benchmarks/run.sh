#!/usr/bin/env bash
# `make bench`: how fast ksmd merges and what it costs in CPU, the stock 7.3
# kernel (C) against the patched one (Rust), built with the same
# configuration and booted the same way (TCG, two NUMA nodes, 2 GiB).
#
#   benchmarks/run.sh [ksm-bench run options, e.g. --runs 9 --mib 64]
#
# In each guest, ksm-bench (rust/ksm-bench) times its workloads round-robin
# and writes its samples; then `ksm-bench compare` prints medians, ranges
# and ratios. Results in out/bench/: stock.json, patched.json, compare.json,
# compare.txt and the guests' console logs (stock-console.log, ...). Under
# TCG the absolute numbers are those of an emulated CPU: compare the two
# columns with each other, not with a real machine.
source "$(dirname "$0")/../ci/lib.sh"

bench=$KSMRS_ROOT/rust/target/release/ksm-bench
[ -x "$bench" ] || die "no $bench: build it with 'make suite'"
res=$KSMRS_ROOT/out/bench
rm -rf "$res"
mkdir -p "$res"

for variant in stock patched; do
	log "== $variant"
	"$KSMRS_ROOT/ci/kernel.sh" "$variant"
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "$(variant_out "$variant")" --rwdir "$res" \
		--log "$res/$variant-console.log" --timeout 1800 -- \
		"$bench" run --label "$variant" --json "$res/$variant.json" "$@" ||
		die "the $variant guest did not complete the benchmark: see $res/$variant-console.log"
	if grep -qE "$KSMRS_SPLATS" "$res/$variant-console.log"; then
		die "kernel splat in the $variant guest: see $res/$variant-console.log"
	fi
done

"$bench" compare "$res/stock.json" "$res/patched.json" --json "$res/compare.json" | tee "$res/compare.txt"
log "results in $res"
