#!/usr/bin/env bash
# `make test`: everything ksm-rs checks, from a fresh machine if need be.
#   1. userspace: rustfmt, clippy, and the test suite under cargo nextest
#      (unit tests, and the conformance suite natively on this machine's kernel)
#   2. the patched kernel: apply the series to 7.3 with git am, build
#   3. the series: checkpatch --strict, rustfmt of the kernel's Rust
#   4. boot the patched kernel under TCG (ci/guest-tests.sh), and in the
#      guest: KUnit,
#      the conformance suite, the kernel's own KSM selftests
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

# check FILE NAME CMD...: one TAP line for a command, its output in a log.
check() {
	local file=$1 name=$2 logf
	shift 2
	logf="$RESULTS/$(echo "$name" | tr -c 'A-Za-z0-9_.-' '_').log"
	if "$@" >"$logf" 2>&1; then
		tap_line "$file" OK "$name"
	else
		tap_line "$file" FAIL "$name" "see $logf"
		tail -n 20 "$logf" >&2
	fi
}

stage "setup"
"$KSMRS_ROOT/ci/setup.sh"

stage "userspace: fmt, clippy, nextest"
"$KSMRS_ROOT/ci/userspace-test.sh" "$RESULTS/userspace.tap"

stage "patched kernel: apply the series, build"
"$KSMRS_ROOT/ci/tree.sh"
check "$RESULTS/kernel.tap" "patched 7.3 kernel builds" "$KSMRS_ROOT/ci/kernel.sh" patched
check "$RESULTS/kernel.tap" "KSM selftests build" "$KSMRS_ROOT/ci/selftests.sh"

stage "series: git am, checkpatch, kernel rustfmt"
"$KSMRS_ROOT/ci/check-series.sh" "$RESULTS/series.tap"

stage "patched kernel: guest run"
if grep -q '^not ok - patched 7.3 kernel builds' "$RESULTS/kernel.tap"; then
	tap_line "$RESULTS/kernel.tap" FAIL "patched kernel guest tests" "the kernel did not build"
elif ! "$KSMRS_ROOT/ci/guest-tests.sh" patched "$RESULTS"; then
	tap_line "$RESULTS/kernel.tap" FAIL "patched kernel guest tests" "could not run"
fi

log "results in $RESULTS ($(since "$start") s in all)"
grep -h '^not ok' "$RESULTS"/*.tap >&2 || true
summary=$(tally "$RESULTS"/*.tap)
echo "$summary"
case "$summary" in *" 0 failed"*) exit 0 ;; *) exit 1 ;; esac
