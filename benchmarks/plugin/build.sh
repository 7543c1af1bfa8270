#!/usr/bin/env bash
# Build the ksmcount QEMU plugin (benchmarks/plugin/ksmcount.c) against the
# plugin API of the QEMU installed here, and print the path of the .so.
#
#   benchmarks/plugin/build.sh        (as root the first time: apt-get)
#
# No Debian package ships qemu-plugin.h: it comes from the source package
# of the installed qemu-system-x86 (a deb-src entry for bookworm and
# bookworm-security, added here, then `apt-get source --download-only`).
# The header and the plugin are cached under $KSMRS_CACHE/qemu-plugin/,
# keyed on QEMU's version and the plugin source's hash: a second run
# prints the path at once.
source "$(dirname "$0")/../../ci/lib.sh"

src=$KSMRS_ROOT/benchmarks/plugin/ksmcount.c
qemu_version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null) ||
	die "qemu-system-x86 is not installed: run ci/setup.sh"
# The upstream part (no epoch, no Debian revision) names the orig tarball.
upstream=${qemu_version#*:}
upstream=${upstream%-*}
cache=$KSMRS_CACHE/qemu-plugin/${qemu_version//:/_}
header=$cache/include/qemu-plugin.h
so=$cache/ksmcount-$(sha256sum "$src" | cut -c1-16).so

if [ ! -f "$header" ]; then
	[ "$(id -u)" = 0 ] || die "fetching QEMU's plugin header needs root (apt-get): run ci/setup.sh"
	sources=/etc/apt/sources.list.d/ksm-rs-src.sources
	if ! grep -qs '^Types: deb-src' "$sources"; then
		log "adding deb-src entries for bookworm and bookworm-security (QEMU's source)"
		cat >"$sources" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		apt-get update -q >&2
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# apt downloads as _apt where it can.
	chown _apt "$tmp" 2>/dev/null || true
	log "fetching the source of qemu $qemu_version for qemu-plugin.h (about 24 MB)"
	# The orig tarball is shared by every Debian revision of one upstream
	# version: if the mirror no longer has ours, any revision of it will do.
	if ! (cd "$tmp" && apt-get source -q --download-only "qemu=$qemu_version" >&2); then
		candidate=$(apt-cache showsrc qemu 2>/dev/null | awk '/^Version:/ {print $2}' |
			grep -F ":$upstream-" | head -n 1)
		[ -n "$candidate" ] ||
			die "no source of qemu $upstream on the mirrors apt knows (installed: $qemu_version)"
		log "qemu $qemu_version is gone from the mirror: using $candidate, same upstream $upstream"
		(cd "$tmp" && apt-get source -q --download-only "qemu=$candidate" >&2)
	fi
	orig=$tmp/qemu_$upstream.orig.tar.xz
	[ -f "$orig" ] || die "apt-get source gave no $orig"
	tar xJf "$orig" -C "$tmp" --wildcards '*/include/qemu/qemu-plugin.h'
	mkdir -p "$cache/include"
	mv "$tmp"/*/include/qemu/qemu-plugin.h "$header.tmp"
	mv "$header.tmp" "$header"
fi

if [ ! -f "$so" ]; then
	log "building the ksmcount plugin for qemu $qemu_version"
	gcc -O2 -Wall -Wextra -Wno-unused-parameter -Werror -shared -fPIC \
		-I"$cache/include" -o "$so.tmp" "$src" -lpthread
	mv "$so.tmp" "$so"
fi
echo "$so"
