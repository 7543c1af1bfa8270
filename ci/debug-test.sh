#!/usr/bin/env bash
# `make debug-test`: the guest tests of `make test` on the debug build of the
# patched kernel (KASAN, lockdep, DEBUG_VM: kernel-config/debug.config), where
# any splat in the console is a failure. Results in out/debug-test/; the last
# line is "N passed, N failed, N skipped".
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

res=$KSMRS_ROOT/out/debug-test
rm -rf "$res"
mkdir -p "$res"
"$KSMRS_ROOT/ci/guest-tests.sh" debug "$res"
grep -h '^not ok' "$res"/*.tap >&2 || true
exit_with_tally "$res"/*.tap
