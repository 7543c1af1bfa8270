#!/usr/bin/env bash
# The slow reviewer checks of patches/ (`make check-series`), each a TAP line
# appended to $1 (default out/check-series.tap):
#   - every patch of the series builds on its own (bisectable), with clippy;
#   - the tip builds with CONFIG_KSM_KUNIT_TEST=n too: nothing in the Rust
#     half is used by its tests only;
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

for commit in $(tgit -C "$TREE" rev-list --reverse "$BASE_TAG..$tip"); do
	subject=$(tgit -C "$TREE" log -1 --format=%s "$commit")
	tgit -C "$TREE" checkout -q -f "$commit"
	if "$KSMRS_ROOT/ci/kernel.sh" patched >"$logs/bisect-$commit.log" 2>&1; then
		tap_line "$tap" OK "builds on its own: $subject"
	else
		tap_line "$tap" FAIL "builds on its own: $subject" "see $logs/bisect-$commit.log"
	fi
done
restore

# The Rust half without its KUnit tests, in a build directory of its own.
out=$(variant_out patched)
nokunit=$(variant_out nokunit)
mkdir -p "$nokunit"
cp "$out/.config" "$nokunit/.config"
(
	export PATH=$KERNEL_PATH
	"$TREE/scripts/config" --file "$nokunit/.config" --disable KSM_KUNIT_TEST
	make -C "$TREE" O="$nokunit" -s olddefconfig
	grep -q '^# CONFIG_KSM_KUNIT_TEST is not set' "$nokunit/.config"
	run_logged "$nokunit/build.log" "build without KUnit tests" \
		make -C "$TREE" O="$nokunit" CC="ccache gcc" CLIPPY=1 -j"$(nproc)" mm/ksm/
) >"$logs/nokunit.log" 2>&1 &&
	tap_line "$tap" OK "the Rust half builds without CONFIG_KSM_KUNIT_TEST" ||
	tap_line "$tap" FAIL "the Rust half builds without CONFIG_KSM_KUNIT_TEST" "see $logs/nokunit.log"

if PATH=$KERNEL_PATH make -C "$TREE" O="$out" -s rustdoc >"$logs/rustdoc.log" 2>&1; then
	tap_line "$tap" OK "make rustdoc"
else
	tap_line "$tap" FAIL "make rustdoc" "see $logs/rustdoc.log"
fi

"$KSMRS_ROOT/ci/check-series.sh" "$tap"
cat "$tap"
tally "$tap"
