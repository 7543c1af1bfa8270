#!/usr/bin/env bash
# `make run`, the main job: boot the patched 7.3 kernel (built by `make
# kernel`) under TCG with two NUMA nodes, run the conformance suite in it, and
# print the report; the exit status is 0 only if every check passed.
# Results in out/run/: conform.tap, conform.json, dmesg.txt, console.log.
source "$(dirname "$0")/lib.sh"
source "$KSMRS_ROOT/ci/tap.sh"

res=$KSMRS_ROOT/out/run
rm -rf "$res"
mkdir -p "$res"
conform=$KSMRS_ROOT/rust/target/release/ksm-conform
[ -x "$conform" ] || die "no $conform: build it with 'make suite'"
kernel=$(variant_out patched)

"$KSMRS_ROOT/virtme/boot.sh" --kernel "$kernel" --rwdir "$res" --log "$res/console.log" \
	--timeout 1200 -- "$KSMRS_ROOT/virtme/guest-test.sh" "$res" "" "$conform" --fresh-boot ||
	log "the guest reported failures (see above)"

[ -f "$res/conform.tap" ] || die "the guest produced no results; console: $res/console.log"
# shellcheck disable=SC2046 # one suite a word
kunit_tap "$res/dmesg.txt" $(kunit_suites "$TREE") >"$res/kunit.tap"
cat <<REPORT

================ ksm-rs report ================
kernel      $(grep -m1 -o 'Linux version [^ ]*' "$res/dmesg.txt" | cut -d' ' -f3) ($(tgit -C "$TREE" log -1 --format=%s))
NUMA nodes  $(grep -m1 -oE 'Brought up [0-9]+ nodes' "$res/dmesg.txt" | awk '{print $3}')
KUnit       $(tally "$res/kunit.tap")
conformance $(tally "$res/conform.tap")
report      $res/conform.json
console     $res/console.log
REPORT
tap_complete "$res/conform.tap" "$res/conform.rc" "ksm-conform" 0 1
if grep -h '^not ok' "$res/kunit.tap" "$res/conform.tap"; then
	exit 1
fi
