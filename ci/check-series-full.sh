#!/usr/bin/env bash
# The slow reviewer checks of patches/ (`make check-series`), each a TAP line
# appended to $1 (default out/check-series.tap):
#   - every patch of the series builds on its own (bisectable), with clippy,
#     with each choice of KSM implementation, and the Rust choice boots: its
#     KUnit suites pass and KSM merges (ksm-conform's merging group);
#   - the Rust half of the tip builds with CONFIG_KSM_KUNIT_TEST=n (nothing is
#     used by its tests only) and with CONFIG_NUMA=n (the tests included);
#   - a handle to a stable node used after Trees::collect() does not build
#     (ci/series/negative-example.sh);
#   - a configuration without Rust keeps CONFIG_KSM=y, with the C choice
#     (ci/series/no-rust-config.sh);
#   - the KSM_C build links mm/ksm_c.o's trees and not mm/ksm/'s;
#   - `make rustdoc` builds;
# plus the quick checks of ci/check-series.sh.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"
tap=${1:-$KSMRS_ROOT/out/check-series.tap}
logs=$(dirname "$tap")
mkdir -p "$logs"
: >"$tap"

"$KSMRS_ROOT/ci/tree.sh"
tip=$(tgit -C "$TREE" rev-parse HEAD)
restore() { tgit -C "$TREE" checkout -q -f "$PATCHED_BRANCH"; }
trap restore EXIT

commits=$(tgit -C "$TREE" rev-list --reverse "$BASE_TAG..$tip")
conform=$KSMRS_ROOT/rust/target/release/ksm-conform
# boot_check VARIANT DIR: the build boots, KSM's KUnit suites (if the tree has
# any) all pass, the conformance suite's merging group passes, and the
# console has no splat.
boot_check() {
	local variant=$1 dir=$2 suites
	rm -rf "$dir"
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "$(variant_out "$variant")" --rwdir "$dir" --log "$dir/console.log" \
		--timeout 600 -- "$KSMRS_ROOT/virtme/guest-test.sh" "$dir" "" "$conform" --fresh-boot --group merging \
		>"$dir.log" 2>&1 || return 1
	grep -q '^ok' "$dir/conform.tap" && ! grep -q '^not ok' "$dir/conform.tap" || return 1
	! grep -qE "$KSMRS_SPLATS" "$dir/console.log" || return 1
	suites=$(kunit_suites "$TREE")
	[ -n "$suites" ] || return 0
	# shellcheck disable=SC2086 # one suite a word
	kunit_tap "$dir/dmesg.txt" $suites >"$dir/kunit.tap"
	grep -q '^ok' "$dir/kunit.tap" && ! grep -q '^not ok' "$dir/kunit.tap"
}

# Each patch builds with each choice of implementation once the choice
# exists (before it, with the stock configuration), and boots.
n=0 total=$(wc -w <<<"$commits")
for commit in $commits; do
	n=$((n + 1))
	subject=$(tgit -C "$TREE" log -1 --format=%s "$commit")
	tgit -C "$TREE" checkout -q -f "$commit"
	if grep -q '^config KSM_RUST$' "$TREE/mm/Kconfig"; then
		variants=(patched-c patched)
	else
		variants=(patched-base)
	fi
	built=1
	for variant in "${variants[@]}"; do
		log "[$n/$total] building ($variant): $subject"
		if "$KSMRS_ROOT/ci/kernel.sh" "$variant" >"$logs/bisect-$variant-$commit.log" 2>&1; then
			tap_line "$tap" OK "builds on its own ($variant): $subject"
		else
			tap_line "$tap" FAIL "builds on its own ($variant): $subject" "see $logs/bisect-$variant-$commit.log"
			built=0
		fi
	done
	[ "$built" = 1 ] && [ -x "$conform" ] || continue
	variant=${variants[-1]}
	log "[$n/$total] booting ($variant): $subject"
	if boot_check "$variant" "$logs/boot-$commit"; then
		tap_line "$tap" OK "boots, KUnit and merging pass ($variant): $subject"
	else
		tap_line "$tap" FAIL "boots, KUnit and merging pass ($variant): $subject" "see $logs/boot-$commit.log and $logs/boot-$commit/"
	fi
done
restore

# The Rust half in configurations `make test` does not build, each in a build
# directory of its own: without its KUnit tests (nothing may be used by the
# tests only), and without NUMA (the tests included).
variant_check() {
	local name=$1 option=$2 dir
	dir=$(variant_out "$name")
	mkdir -p "$dir"
	cp "$(variant_out patched)/.config" "$dir/.config"
	(
		export PATH=$KERNEL_PATH
		# Called in an `if`, where set -e does not act: every step says so.
		"$TREE/scripts/config" --file "$dir/.config" --disable "$option" || exit 1
		make -C "$TREE" O="$dir" -s olddefconfig || exit 1
		grep -q "^# CONFIG_$option is not set" "$dir/.config" || exit 1
		grep -q '^CONFIG_KSM=y' "$dir/.config" || exit 1
		run_logged "$dir/build.log" "build without $option" \
			make -C "$TREE" O="$dir" CC="ccache gcc" CLIPPY=1 -j"$(nproc)" mm/ksm/
	) >"$logs/$name.log" 2>&1
}
for check in "nokunit KSM_KUNIT_TEST" "nonuma NUMA"; do
	set -- $check
	log "building the Rust half without CONFIG_$2"
	if variant_check "$1" "$2"; then
		tap_line "$tap" OK "the Rust half builds without CONFIG_$2"
	else
		tap_line "$tap" FAIL "the Rust half builds without CONFIG_$2" "see $logs/$1.log"
	fi
done

log "a handle used after Trees::collect() must not build"
if "$KSMRS_ROOT/ci/series/negative-example.sh" "$TREE" "$(variant_out nonuma)" >"$logs/negative-example.log" 2>&1; then
	tap_line "$tap" OK "a stable node's handle used after Trees::collect() does not build (E0502)"
else
	tap_line "$tap" FAIL "a stable node's handle used after Trees::collect() does not build (E0502)" "see $logs/negative-example.log"
fi

log "configurations without Rust"
if "$KSMRS_ROOT/ci/series/no-rust-config.sh" "$TREE" "$(variant_out patched)/.config" "$(variant_out norust)" \
	>"$logs/no-rust-config.log" 2>&1; then
	tap_line "$tap" OK "without Rust, KSM stays (CONFIG_KSM=y, KSM_C): $(paste -sd';' "$logs/no-rust-config.log" | cut -c1-120)"
else
	tap_line "$tap" FAIL "without Rust, KSM stays (CONFIG_KSM=y, KSM_C)" "see $logs/no-rust-config.log"
fi

if "$KSMRS_ROOT/ci/series/objects.sh" "$TREE" "$(variant_out patched-c)" c >"$logs/objects-c.log" 2>&1; then
	tap_line "$tap" OK "KSM_C: the trees are mm/ksm_c.o's, mm/ksm/ is not linked"
else
	tap_line "$tap" FAIL "KSM_C: the trees are mm/ksm_c.o's, mm/ksm/ is not linked" "see $logs/objects-c.log"
fi

log "make rustdoc"
if PATH=$KERNEL_PATH make -C "$TREE" O="$(variant_out patched)" -s rustdoc >"$logs/rustdoc.log" 2>&1; then
	tap_line "$tap" OK "make rustdoc"
else
	tap_line "$tap" FAIL "make rustdoc" "see $logs/rustdoc.log"
fi

"$KSMRS_ROOT/ci/check-series.sh" "$tap"
cat "$tap"
exit_with_tally "$tap"
