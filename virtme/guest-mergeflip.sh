#!/bin/sh
# Runs inside a guest (see ci/mergeflip.sh): the reproducer of issue 11,
#   guest-mergeflip.sh RESULTS MERGEFLIP [ksm-mergeflip args...]
# with the kernel set to panic on an oops or a warning (a KASAN report is
# one), so that a crash ends the guest at once (virtme-ng boots with panic=-1
# and QEMU -no-reboot) instead of leaving ksmd dead with its mutex held and
# the guest hung. Leaves in RESULTS:
#   mergeflip.log   the reproducer's output
#   mergeflip.rc    its exit status (absent if the kernel died first)
# and marks its start in the kernel log, after which a splat is its finding.
set -u
res=$1 bin=$2
shift 2
mkdir -p "$res"
rm -f "$res/mergeflip.rc"

saved=""
for knob in panic_on_oops panic_on_warn; do
	f=/proc/sys/kernel/$knob
	[ -w "$f" ] || continue
	saved="$saved $knob=$(cat "$f")"
	echo 1 >"$f"
done
echo "ksm-mergeflip: start" >/dev/kmsg
{ "$bin" --may-crash "$@" 2>&1; echo $? >"$res/mergeflip.rc"; } | tee "$res/mergeflip.log"
echo "ksm-mergeflip: end" >/dev/kmsg
for knob in $saved; do echo "${knob#*=}" >"/proc/sys/kernel/${knob%%=*}"; done
