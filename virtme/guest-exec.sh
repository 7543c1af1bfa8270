#!/bin/sh
# Runs inside the guest as virtme-ng's command: `guest-exec.sh CMD ARGS...`.
#
# Without udev on the host image, virtme-ng-init cannot find its script I/O
# ports by their /dev/virtio-ports/ names, so the command's output would go to
# the serial console and its exit status would be lost. Find the ports by
# their sysfs names instead, and report the status on virtme.ret ourselves.

port() {
	for name in /sys/class/virtio-ports/vport*/name; do
		[ "$(cat "$name" 2>/dev/null)" = "$1" ] || continue
		dev=${name%/name}
		echo "/dev/${dev##*/}"
		return
	done
}

out=$(port virtme.stdout)
err=$(port virtme.stderr)
ret=$(port virtme.ret)
[ -n "$out" ] && exec >"$out"
[ -n "$err" ] && exec 2>"$err"

"$@"
rc=$?
[ -n "$ret" ] && echo "$rc" >"$ret"
exit "$rc"
