#!/usr/bin/env bash
# The userspace checks of `make test`, as TAP lines appended to $1:
# rustfmt and clippy clean, the release build, and every test under nextest
# (run as root: the conformance suite then runs against this machine's KSM).
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"
tap=${1:?usage: ci/userspace-test.sh TAPFILE}
logs=$(dirname "$tap")
cd "$KSMRS_ROOT/rust"
# cargo-nextest: ci/setup.sh builds the pinned one there if this machine lacks it.
export PATH=$CARGO_TOOLS/bin:$PATH

tap_check "$tap" "rust: cargo fmt --check" cargo fmt --all -- --check
tap_check "$tap" "rust: cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
tap_check "$tap" "rust: release build" cargo build --workspace --release --locked

log "cargo nextest run (the conformance suite runs natively as root)"
set +e
cargo nextest run --workspace --locked --status-level all --final-status-level none \
	--no-fail-fast 2>&1 | tee "$logs/nextest.log" | grep -E --line-buffered '^ *(FAIL|SIG|TIMEOUT)|Summary' >&2
set -e
# The same checks once more through ksm-conform, for the reasons of the skips
# (a .log: tally counts the checks once, from nextest). On a machine that
# other processes use KSM on it refuses with one reason ("1..0 # SKIP ..."),
# which stands for the checks that need the machine; those that do not then
# run on their own, for the reasons of theirs.
rc=0
./target/release/ksm-conform >"$logs/native-conform.log" 2>&1 || rc=$?
if [ "$rc" = 4 ] && grep -q '^1\.\.0 # SKIP this machine uses KSM' "$logs/native-conform.log"; then
	exclude=()
	while read -r name; do exclude+=(--exclude "$name"); done \
		< <(./target/release/ksm-conform --list | awk '$2 == "needs" { print $1 }')
	./target/release/ksm-conform "${exclude[@]}" >>"$logs/native-conform.log" 2>&1 || true
fi
nextest_tap "$logs/native-conform.log" <"$logs/nextest.log" >>"$tap"
grep -q 'Summary' "$logs/nextest.log" || tap_line "$tap" FAIL "rust: nextest ran" "see $logs/nextest.log"
