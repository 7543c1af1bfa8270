#!/usr/bin/env bash
# Build the kernel's own KSM selftests (tools/testing/selftests/mm: ksm_tests,
# ksm_functional_tests) from the patched tree, against its uapi headers, into
# $KSMRS_CACHE/selftests. Prints the directory.
source "$(dirname "$0")/lib.sh"

out=$(variant_out patched)
dest=$KSMRS_CACHE/selftests
[ -f "$TREE/Makefile" ] || die "no kernel tree at $TREE: run ci/tree.sh (make tree)"
mkdir -p "$out" "$dest"

# The uapi headers; `make headers` refuses an unconfigured output directory.
[ -f "$out/.config" ] || die "$out is not configured: build the patched kernel first (make kernel)"
run_logged "$dest/headers.log" "uapi headers" make -C "$TREE" O="$out" -s headers
run_logged "$dest/build.log" "KSM selftests" \
	make -C "$TREE/tools/testing/selftests/mm" OUTPUT="$dest" \
	KHDR_INCLUDES="-isystem $out/usr/include" \
	"$dest/ksm_tests" "$dest/ksm_functional_tests"
echo "$dest"
