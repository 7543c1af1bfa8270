#!/usr/bin/env bash
# Which implementation of KSM's trees a build holds:
#   ci/series/objects.sh TREE OUT c|rust
# Every function mm/ksm.h declares under "The trees" ("The trees and the
# scan" since the scan joined them) must be defined exactly once in vmlinux,
# by mm/ksm_c.o for the C choice or by mm/ksm/ksm_rust.o for the Rust one,
# and the other implementation's object must not be linked in.
# Prints what it finds; exits 1 if anything is not so.
set -euo pipefail
tree=${1:?usage: ci/series/objects.sh TREE OUT c|rust}
out=${2:?usage: ci/series/objects.sh TREE OUT c|rust}
choice=${3:?usage: ci/series/objects.sh TREE OUT c|rust}
case "$choice" in
	c) want=mm/ksm_c.o; other=mm/ksm/ksm_rust.o ;;
	rust) want=mm/ksm/ksm_rust.o; other=mm/ksm_c.o ;;
	*) echo "choice must be c or rust, not '$choice'"; exit 2 ;;
esac
[ -f "$out/vmlinux" ] || { echo "no $out/vmlinux: build it first"; exit 1; }

# The names declared between the comment "The trees" and the next comment.
mapfile -t funcs < <(awk '/^ \* The trees( and the scan)?:/ { on = 1; next } on && /^\/\*/ { exit } on' "$tree/mm/ksm.h" |
	tr -s ' \t\n' ' ' | grep -oE '[a-z_]+\(' | tr -d '(' | grep '^ksm_' | sort -u)
[ "${#funcs[@]}" -ge 3 ] || { echo "found only ${#funcs[@]} functions under 'The trees' in mm/ksm.h"; exit 1; }

bad=0
# Member names of a thin archive are printed relative to the current directory.
members=$(cd "$out" && ar t mm/built-in.a 2>/dev/null || true)
if ! grep -qxF "$want" <<<"$members"; then
	echo "$want is not in mm/built-in.a"; bad=1
fi
if grep -qxF "$other" <<<"$members"; then
	echo "$other is in mm/built-in.a: both implementations are linked"; bad=1
fi
defined=$(nm --defined-only "$out/$want" 2>/dev/null | awk '$2 ~ /^[TW]$/ { print $3 }')
in_vmlinux=$(nm --defined-only "$out/vmlinux" | awk '$2 ~ /^[TtWw]$/ { print $3 }')
for f in "${funcs[@]}"; do
	n=$(grep -cxF "$f" <<<"$in_vmlinux" || true)
	if ! grep -qxF "$f" <<<"$defined"; then
		# Built only with an option this configuration lacks (SYSFS,
		# MEMORY_HOTREMOVE): then nothing may define it.
		[ "$n" = 0 ] && { echo "$f: not built in this configuration"; continue; }
		echo "$f: defined in vmlinux but not by $want"; bad=1
	elif [ "$n" != 1 ]; then
		echo "$f: defined $n times in vmlinux"; bad=1
	else
		echo "$f: $want"
	fi
done
exit "$bad"
