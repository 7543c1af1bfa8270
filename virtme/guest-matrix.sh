#!/bin/sh
# Runs inside a matrix guest (see ci/matrix.sh):
#   guest-matrix.sh CONFIG RESULTS CONFORM [ksm-conform args...]
# or, for the native column, only records the KSM sysfs files:
#   guest-matrix.sh --record-sysfs FILE
# CONFIG is the kernel's build configuration on the host, or empty. The
# guest's root is the host's, whose /boot has no config of this kernel;
# ksm-conform reads /proc/config.gz or /boot/config-$(uname -r), so a kernel
# without IKCONFIG_PROC (Debian's) gets its config on a tmpfs over /boot.
# Before the suite runs, the KSM sysfs files of the freshly booted kernel are
# recorded in RESULTS/sysfs.txt ("name value" lines), then guest-test.sh
# runs the suite (no kernel selftests).
set -u

# record_sysfs FILE: /sys/kernel/mm/ksm as "name value" lines (none without KSM).
record_sysfs() {
	: >"$1"
	for f in /sys/kernel/mm/ksm/*; do
		if [ -f "$f" ]; then echo "${f##*/} $(tr -d '\n' <"$f" 2>/dev/null)" >>"$1"; fi
	done
}

if [ "${1:-}" = --record-sysfs ]; then
	record_sysfs "$2"
	exit
fi
config=$1 res=$2
shift 2
mkdir -p "$res"
release=$(uname -r)
if [ -n "$config" ] && [ ! -e /proc/config.gz ] && [ ! -e "/boot/config-$release" ]; then
	mount -t tmpfs -o size=16M,mode=0755 ksm-rs-boot /boot &&
		cp "$config" "/boot/config-$release" &&
		echo "guest: $config as /boot/config-$release"
fi
record_sysfs "$res/sysfs.txt"
exec "$(dirname "$0")/guest-test.sh" "$res" "" "$@"
