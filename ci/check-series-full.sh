#!/usr/bin/env bash
# The slow reviewer checks of patches/ (`make check-series`), each a TAP line
# appended to $1 (default out/check-series.tap):
#   - every patch of the series builds on its own (bisectable), with clippy;
#   - the Rust half of the tip builds with CONFIG_KSM_KUNIT_TEST=n (nothing is
#     used by its tests only) and with CONFIG_NUMA=n (the tests included);
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
n=0 total=$(wc -w <<<"$commits")
for commit in $commits; do
	n=$((n + 1))
	subject=$(tgit -C "$TREE" log -1 --format=%s "$commit")
	log "[$n/$total] building: $subject"
	tgit -C "$TREE" checkout -q -f "$commit"
	if "$KSMRS_ROOT/ci/kernel.sh" patched >"$logs/bisect-$commit.log" 2>&1; then
		tap_line "$tap" OK "builds on its own: $subject"
	else
		tap_line "$tap" FAIL "builds on its own: $subject" "see $logs/bisect-$commit.log"
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

log "make rustdoc"
if PATH=$KERNEL_PATH make -C "$TREE" O="$(variant_out patched)" -s rustdoc >"$logs/rustdoc.log" 2>&1; then
	tap_line "$tap" OK "make rustdoc"
else
	tap_line "$tap" FAIL "make rustdoc" "see $logs/rustdoc.log"
fi

"$KSMRS_ROOT/ci/check-series.sh" "$tap"
cat "$tap"
tally "$tap"
