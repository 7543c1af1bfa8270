#!/usr/bin/env bash
# Boot one kernel variant (ci/kernel.sh builds it if need be) and run the guest
# tests in it (virtme/guest-test.sh: the conformance suite and the kernel's KSM
# selftests), then count them as flat TAP in RESULTS:
#   ci/guest-tests.sh VARIANT RESULTS [KERNEL]
# With KERNEL (a build directory or a bzImage) that kernel boots instead, as
# is, and VARIANT only names it.
# RESULTS gets kunit.tap, guest-conform.tap, guest-refusal.tap, guest-ksm_functional_tests.tap,
# guest-selftests.tap and kernel.tap (boot and console), with the console log
# and the guest's own files under RESULTS/guest; then mergeflip.tap, the
# reproducer of issue 11 for a minute in a second guest (ci/mergeflip.sh,
# its files under RESULTS/mergeflip), where a crash cannot cost the results
# above; then stress.tap, a stress campaign of two minutes in a third
# (ci/stress.sh, its table in RESULTS/stress/report.md). Exit status: 0 if
# the guests ran; the results tell how the tests went.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

variant=${1:?usage: ci/guest-tests.sh VARIANT RESULTS [KERNEL]}
res=${2:?usage: ci/guest-tests.sh VARIANT RESULTS [KERNEL]}
out=${3:-}
conform=$KSMRS_ROOT/rust/target/release/ksm-conform
[ -x "$conform" ] || die "no $conform: build it with 'make suite'"
# Both are incremental: seconds when nothing changed, and never a stale kernel.
if [ -z "$out" ]; then
	"$KSMRS_ROOT/ci/kernel.sh" "$variant"
	out=$(variant_out "$variant")
fi
"$KSMRS_ROOT/ci/selftests.sh" >/dev/null

guest=$res/guest
mkdir -p "$guest"
if "$KSMRS_ROOT/virtme/boot.sh" --kernel "$out" --rwdir "$guest" --log "$res/console.log" \
	--timeout 1500 -- \
	"$KSMRS_ROOT/virtme/guest-test.sh" "$guest" "$KSMRS_CACHE/selftests" "$conform" --fresh-boot; then
	tap_line "$res/kernel.tap" OK "$variant kernel boots and runs the guest tests"
else
	tap_line "$res/kernel.tap" FAIL "$variant kernel boots and runs the guest tests" "console: $res/console.log"
fi
if [ -f "$guest/dmesg.txt" ]; then
	# shellcheck disable=SC2046 # one suite a word
	kunit_tap "$guest/dmesg.txt" $(kunit_suites "$TREE") >"$res/kunit.tap"
fi
for f in conform refusal ksm_functional_tests selftests; do
	if [ -f "$guest/$f.tap" ]; then
		cp "$guest/$f.tap" "$res/guest-$f.tap"
	else
		tap_line "$res/guest-$f.tap" FAIL "guest $f" "no results"
	fi
done
# ksm-conform: 0 all passed, 1 some failed; kselftest: 0, 1 and 4 (skip).
if [ -f "$guest/conform.tap" ]; then
	tap_complete "$res/guest-conform.tap" "$guest/conform.rc" "ksm-conform" 0 1
fi
if [ -f "$guest/ksm_functional_tests.tap" ]; then
	tap_complete "$res/guest-ksm_functional_tests.tap" "$guest/ksm_functional_tests.rc" \
		"ksm_functional_tests" 0 1 4
fi
# A kernel splat in the console is a failure however the tests went.
if grep -qE "$KSMRS_SPLATS" "$res/console.log" 2>/dev/null; then
	grep -E "$KSMRS_SPLATS" "$res/console.log" | head -n 5 >&2
	tap_line "$res/kernel.tap" FAIL "$variant guest console has no kernel splat" "see $res/console.log"
else
	tap_line "$res/kernel.tap" OK "$variant guest console has no kernel splat"
fi

# The reproducer of issue 11 (merge_across_nodes switched mid-scan): one TAP
# line, a crash a failure.
"$KSMRS_ROOT/ci/mergeflip.sh" --seconds 60 --results "$res/mergeflip" "$variant" || true
cp "$res/mergeflip/mergeflip.tap" "$res/mergeflip.tap" 2>/dev/null ||
	tap_line "$res/mergeflip.tap" FAIL "mergeflip on $variant" "ci/mergeflip.sh left no result (see $res/mergeflip)"

# A short stress campaign (docs/stress.md) in a guest of its own: one TAP
# line; the closing table is RESULTS/stress/report.md.
rm -f "$res/stress.tap"
if "$KSMRS_ROOT/ci/stress.sh" --no-build --duration 2m --phase 60s --out "$res/stress" "$out" \
	>"$res/stress.log" 2>&1; then
	tap_line "$res/stress.tap" OK "stress campaign of 2 min on $variant"
else
	tap_line "$res/stress.tap" FAIL "stress campaign of 2 min on $variant" "see $res/stress/report.md"
fi
