#!/usr/bin/env bash
# `make test`: everything ksm-rs checks, from a fresh machine if need be.
#   0. the rig's scripts: shellcheck
#   1. userspace: rustfmt, clippy, and the test suite under cargo nextest
#      (unit tests, and the conformance suite natively on this machine's kernel)
#   2. the patched kernel: apply the series to 7.3 with git am, build
#   3. the series: checkpatch --strict, rustfmt of the kernel's Rust
#   4. boot the patched kernel under TCG (ci/guest-tests.sh), and in the
#      guest: KUnit, the conformance suite, the kernel's own KSM selftests
# Every check is one TAP line in $RESULTS/*.tap; the last line of the output
# is "N passed, N failed, N skipped", and the exit status is 0 only if no
# check failed.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

RESULTS=${RESULTS:-$KSMRS_ROOT/out/test}
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
start=$(date +%s)

stage() { log "== $* ($(since "$start") s)"; }

# The results so far, however the run ends: the last line of the output is
# the tally, and the exit status says whether anything failed.
finish() {
	local rc=$?
	[ "$rc" = 0 ] || tap_line "$RESULTS/stages.tap" FAIL "make test ran to the end" "exit status $rc"
	log "results in $RESULTS ($(since "$start") s in all)"
	grep -sh '^not ok' "$RESULTS"/*.tap >&2 || true
	exit_with_tally "$RESULTS"/*.tap
}
trap finish EXIT

passed() { grep -sqxF "ok - $2" "$RESULTS/$1"; }

stage "setup"
# Nothing runs without it; its failure is in the tally, which finish prints.
tap_shown "$RESULTS/stages.tap" "setup: packages and tools" "$KSMRS_ROOT/ci/setup.sh" || exit 0

stage "scripts: shellcheck"
tap_check "$RESULTS/scripts.tap" "scripts: shellcheck -S warning" \
	shellcheck -x -P SCRIPTDIR -S warning "$KSMRS_ROOT"/ci/*.sh "$KSMRS_ROOT"/virtme/*.sh "$KSMRS_ROOT"/benchmarks/*.sh "$KSMRS_ROOT/.ci/run"

stage "userspace: fmt, clippy, nextest"
tap_shown "$RESULTS/stages.tap" "userspace checks ran" "$KSMRS_ROOT/ci/userspace-test.sh" "$RESULTS/userspace.tap" || true

stage "patched kernel: apply the series, build"
if tap_shown "$RESULTS/stages.tap" "the 7.3 tree with the series applied" "$KSMRS_ROOT/ci/tree.sh"; then
	tap_shown "$RESULTS/kernel.tap" "patched 7.3 kernel builds" "$KSMRS_ROOT/ci/kernel.sh" patched || true
	passed kernel.tap "patched 7.3 kernel builds" &&
		tap_check "$RESULTS/kernel.tap" "KSM selftests build" "$KSMRS_ROOT/ci/selftests.sh"
fi

stage "series: git am, checkpatch, kernel rustfmt"
tap_shown "$RESULTS/stages.tap" "series checks ran" "$KSMRS_ROOT/ci/check-series.sh" "$RESULTS/series.tap" || true

stage "patched kernel: guest run"
if ! passed kernel.tap "patched 7.3 kernel builds"; then
	tap_line "$RESULTS/kernel.tap" FAIL "patched kernel guest tests" "no patched kernel was built"
elif ! passed userspace.tap "rust: release build"; then
	tap_line "$RESULTS/kernel.tap" FAIL "patched kernel guest tests" "ksm-conform did not build"
else
	tap_shown "$RESULTS/stages.tap" "patched kernel guest tests ran" "$KSMRS_ROOT/ci/guest-tests.sh" patched "$RESULTS" || true
fi
