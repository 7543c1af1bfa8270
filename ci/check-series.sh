#!/usr/bin/env bash
# Reviewer checks of patches/ as TAP lines appended to $1:
#   - every patch in patches/series applied with git am (ci/tree.sh did it);
#   - scripts/checkpatch.pl --strict is clean on each patch, or a note below
#     its "---" (docs/series-notes.txt) justifies each type of report left;
#   - the kernel's Rust, ours included, is rustfmt-clean (make rustfmtcheck);
#   - the cover letter says what docs/cover-letter.txt says (make patches
#     regenerates it from there);
#   - KSM's Rust has no panicking construct outside its tests
#     (ci/series/no-panics.sh);
#   - no patch changes more than about a thousand lines but for lines it
#     moves (ci/series/patch-size.py);
#   - the KSM_RUST build links mm/ksm/'s trees and not mm/ksm_c.o
#     (ci/series/objects.sh).
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
	(cd "$TREE" && PATH=$KERNEL_PATH scripts/checkpatch.pl --strict --show-types --no-color \
		"$KSMRS_ROOT/patches/$p") >"$logf" 2>&1 || true
	total=$(grep '^total:' "$logf" || echo "total: checkpatch did not finish")
	# The types reported, and those a "checkpatch: TYPE, ...: why" note
	# below the patch's "---" justifies.
	reported=$(grep -oE '^(ERROR|WARNING|CHECK):[A-Z_]+' "$logf" | cut -d: -f2 | sort -u || true)
	justified=$(sed -n '/^---$/,/^diff --git/p' "$KSMRS_ROOT/patches/$p" |
		sed -nE 's/^checkpatch: ([A-Z_, ]+):.*/\1/p' | tr ', ' '\n\n' | sed '/^$/d' | sort -u || true)
	unjustified=$(comm -23 <(echo "$reported" | sed '/^$/d') <(echo "$justified" | sed '/^$/d') | paste -sd' ' || true)
	if ! grep -q '^total: 0 errors' "$logf"; then
		tap_line "$tap" FAIL "checkpatch --strict: $p" "$total"
	elif [ -n "$unjustified" ]; then
		tap_line "$tap" FAIL "checkpatch --strict: $p" "$total; not justified: $unjustified"
	elif [ -n "$reported" ]; then
		tap_line "$tap" OK "checkpatch --strict: $p ($(echo "$reported" | paste -sd' '), justified below ---)"
	else
		tap_line "$tap" OK "checkpatch --strict: $p"
	fi
done

out=$(variant_out patched)
if [ -f "$out/.config" ]; then
	if PATH=$KERNEL_PATH make -C "$TREE" O="$out" -s rustfmtcheck >"$logs/rustfmtcheck.log" 2>&1; then
		tap_line "$tap" OK "kernel Rust is rustfmt-clean"
	else
		tap_line "$tap" FAIL "kernel Rust is rustfmt-clean" "see $logs/rustfmtcheck.log"
	fi
else
	tap_line "$tap" FAIL "kernel Rust is rustfmt-clean" "$out is not configured (make kernel)"
fi

# The Rust implementation may not panic outside its KUnit tests.
if "$KSMRS_ROOT/ci/series/no-panics.sh" "$TREE" >"$logs/no-panics.log" 2>&1; then
	tap_line "$tap" OK "KSM's Rust has no panicking construct outside its tests"
else
	tap_line "$tap" FAIL "KSM's Rust has no panicking construct outside its tests" "$(head -n 1 "$logs/no-panics.log")"
fi

# No patch changes more than about a thousand lines, but for lines it moves.
patch_files=()
for p in $(series_patches); do patch_files+=("$KSMRS_ROOT/patches/$p"); done
if "$KSMRS_ROOT/ci/series/patch-size.py" 1100 "${patch_files[@]}" >"$logs/patch-size.log" 2>&1; then
	tap_line "$tap" OK "no patch changes more than 1100 lines besides those it moves"
else
	tap_line "$tap" FAIL "no patch changes more than 1100 lines besides those it moves" "$(grep -- '<--' "$logs/patch-size.log" | head -n 1)"
fi

# The Rust choice links the Rust implementation of the trees, and no C one.
if [ -f "$out/vmlinux" ]; then
	if "$KSMRS_ROOT/ci/series/objects.sh" "$TREE" "$out" rust >"$logs/objects-rust.log" 2>&1; then
		tap_line "$tap" OK "KSM_RUST: the trees are mm/ksm/'s, mm/ksm_c.o is not linked"
	else
		tap_line "$tap" FAIL "KSM_RUST: the trees are mm/ksm/'s, mm/ksm_c.o is not linked" "see $logs/objects-rust.log"
	fi
else
	tap_line "$tap" FAIL "KSM_RUST: the trees are mm/ksm/'s, mm/ksm_c.o is not linked" "$out/vmlinux is not built (make kernel)"
fi

# Subject and body of the cover letter, up to the shortlog format-patch adds.
cover=$KSMRS_ROOT/patches/0000-cover-letter.patch
if diff -u "$KSMRS_ROOT/docs/cover-letter.txt" <(
	sed -n 's/^Subject: \[PATCH v[0-9]* [0-9]*\/[0-9]*\] //p' "$cover"
	sed -n '/^Subject: /,/^[^ ].* ([0-9]*):$/p' "$cover" | sed '1d;$d' | sed '$d'
) >"$logs/cover-letter.diff"; then
	tap_line "$tap" OK "the cover letter is docs/cover-letter.txt"
else
	tap_line "$tap" FAIL "the cover letter is docs/cover-letter.txt" "run make patches; see $logs/cover-letter.diff"
fi
