#!/usr/bin/env bash
# Reviewer checks of patches/ as TAP lines appended to $1:
#   - every patch in patches/series applied with git am (ci/tree.sh did it);
#   - scripts/checkpatch.pl --strict is clean on each patch, or the commit
#     message justifies each remaining report in a "checkpatch:" paragraph;
#   - the kernel's Rust, ours included, is rustfmt-clean (make rustfmtcheck).
# The slow checks (each patch builds, CLIPPY=1, rustdoc) are in
# ci/check-series-full.sh.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"
tap=${1:?usage: ci/check-series.sh TAPFILE}
logs=$(dirname "$tap")

applied=$(tgit -C "$TREE" rev-list --count "$BASE_TAG..$PATCHED_BRANCH")
want=$(series_patches | wc -l)
if [ "$applied" = "$want" ]; then
	tap_line "$tap" OK "series: $want patches apply with git am to $LINUX_SRC_PKG $LINUX_SRC_VERSION"
else
	tap_line "$tap" FAIL "series: $want patches apply" "$applied commits on $PATCHED_BRANCH"
fi

for p in $(series_patches); do
	logf="$logs/checkpatch-$p.log"
	(cd "$TREE" && PATH=$KERNEL_PATH scripts/checkpatch.pl --strict --no-color "$KSMRS_ROOT/patches/$p") >"$logf" 2>&1
	if grep -q '^total: 0 errors, 0 warnings, 0 checks' "$logf"; then
		tap_line "$tap" OK "checkpatch --strict: $p"
	elif ! grep -q '^total: 0 errors' "$logf"; then
		tap_line "$tap" FAIL "checkpatch --strict: $p" "$(grep '^total:' "$logf")"
	elif grep -q '^checkpatch:' "$KSMRS_ROOT/patches/$p"; then
		tap_line "$tap" OK "checkpatch --strict: $p ($(grep '^total:' "$logf" | cut -d' ' -f4-), justified in the commit message)"
	else
		tap_line "$tap" FAIL "checkpatch --strict: $p" "$(grep '^total:' "$logf"), none justified"
	fi
done

out=$(variant_out patched)
if [ -f "$out/.config" ]; then
	if PATH=$KERNEL_PATH make -C "$TREE" O="$out" -s rustfmtcheck >"$logs/rustfmtcheck.log" 2>&1; then
		tap_line "$tap" OK "kernel Rust is rustfmt-clean"
	else
		tap_line "$tap" FAIL "kernel Rust is rustfmt-clean" "see $logs/rustfmtcheck.log"
	fi
fi
