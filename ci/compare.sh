#!/usr/bin/env bash
# `make compare`: the stock 7.3 kernel and the patched one with each choice of
# KSM implementation (patched-c: the C trees, patched: the Rust ones), built
# with the same configuration, side by side. Each boots under TCG with two
# NUMA nodes and runs the same guest tests (virtme/guest-test.sh): the
# conformance suite and the kernel's own KSM selftests. Prints one line per
# check with the three results and exits 1 if any result differs. Speed is
# `make bench`'s (benchmarks/). Results in out/compare/{stock,patched-c,patched}/
# (ci/guest-tests.sh) and out/compare/compare.txt.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

res=$KSMRS_ROOT/out/compare
rm -rf "$res"
mkdir -p "$res"

for variant in stock patched-c patched; do
	log "== $variant"
	"$KSMRS_ROOT/ci/guest-tests.sh" "$variant" "$res/$variant"
done

# One "name<TAB>verdict" line per check of a results directory.
verdicts() {
	local dir=$1/guest
	{
		sed -nE 's/^(not ok|ok) - ([^#]*[^ #]).*$/\2\t\1/p' "$1/kernel.tap" | sed 's/^\(stock\|patched-c\|patched\) //'
		sed -nE 's/^(not ok|ok) [0-9]+ ([^ #]+)( # SKIP.*)?$/\2\t\1\3/p' "$dir/conform.tap"
		# Numbered: several of its tests print the same name.
		sed -nE 's/^(not ok|ok) ([0-9]+) (.*) # SKIP.*$/functional \2: \3\tskip/p; s/^(not ok|ok) ([0-9]+) ([^#]*)$/functional \2: \3\t\1/p' \
			"$dir/ksm_functional_tests.tap"
		sed -nE 's/^(not ok|ok) [0-9]+ (ksm_tests [^#(]*[^ #(]).*$/\2\t\1/p' "$dir/selftests.tap"
	} 2>/dev/null | sed -E 's/\t# SKIP.*/\tskip/' | sort
}

for variant in stock patched-c patched; do
	verdicts "$res/$variant" >"$res/$variant.verdicts"
done
{
	printf '%-72s %-8s %-9s %s\n' "check" "stock" "patched-c" "patched"
	join -t $'\t' -a1 -a2 -e missing -o 0,1.2,2.2 "$res/stock.verdicts" "$res/patched-c.verdicts" |
		join -t $'\t' -a1 -a2 -e missing -o 0,1.2,1.3,2.2 - "$res/patched.verdicts" |
		awk -F'\t' '{ mark = ($2 == $3 && $3 == $4) ? "" : "   <-- differs"; printf "%-72s %-8s %-9s %s%s\n", $1, $2, $3, $4, mark }'
} | tee "$res/compare.txt"

differ=$(grep -c 'differs$' "$res/compare.txt" || true)
total=$(wc -l <"$res/stock.verdicts")
[ "$total" -gt 0 ] || die "no results from the stock guest: see $res/stock/console.log"
if [ "$differ" = 0 ]; then
	log "stock, patched-c and patched agree on all $total checks"
else
	die "$differ of $total checks differ between stock, patched-c and patched"
fi
