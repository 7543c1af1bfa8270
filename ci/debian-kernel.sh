#!/usr/bin/env bash
# Fetch and unpack one stock Debian kernel for the matrix (ci/matrix.sh):
#   ci/debian-kernel.sh debian-6.1|debian-6.12|debian-7.3
# prints the root of the unpacked packages (what virtme/boot.sh --kernel
# takes: boot/vmlinuz-* or usr/lib/modules/<ver>/vmlinuz, and the modules).
#
# The packages are pinned to name=version below and fetched with
# `apt-get download` (nothing is installed). Downloads are kept in
# $KSMRS_CACHE/debian-kernels/debs, unpacked roots in
# $KSMRS_CACHE/debian-kernels/<name>/root; a second run reuses both.
source "$(dirname "$0")/lib.sh"

# name -> "package=version ..." and the package name pattern to list when a
# pinned version is gone from the mirror.
#   6.1:  bookworm's kernel; the signed image package holds image and modules.
#   6.12: bookworm-security's 6.12; same packaging.
#   7.3:  trixie-backports; linux-image-* is a meta package there, the image
#         is in linux-binary-*, the modules in linux-modules-*, the config and
#         System.map in linux-base-*.
debian_pins() {
	case "$1" in
		debian-6.1) echo "linux-image-6.1.0-56-amd64=6.1.192-2" ;;
		debian-6.12) echo "linux-image-6.12.117+deb12-amd64=6.12.117-1~deb12u1" ;;
		debian-7.3) echo "linux-binary-7.3.4+deb13-amd64=7.3.4-1~bpo13+1" \
			"linux-modules-7.3.4+deb13-amd64=7.3.4-1~bpo13+1" \
			"linux-base-7.3.4+deb13-amd64=7.3.4-1~bpo13+1" ;;
		*) return 1 ;;
	esac
}
debian_family() {
	case "$1" in
		debian-6.1) echo '^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
		debian-6.12) echo '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
		debian-7.3) echo '^linux-(binary|modules|base)-7\.3\.[0-9]+\+deb13-amd64$' ;;
	esac
}

name=${1:-}
pins=$(debian_pins "$name") || die "usage: ci/debian-kernel.sh debian-6.1|debian-6.12|debian-7.3 (got '${name}')"
dl=$KSMRS_CACHE/debian-kernels/debs
dest=$KSMRS_CACHE/debian-kernels/$name
stamp=$dest/root/.ksm-rs-unpacked
mkdir -p "$dl"

# For the message when a pin is gone: the versions apt sees of package $1 ...
versions_of() {
	apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | paste -sd, -
}

# ... and the newest packages of the same family, with theirs.
family_seen() {
	local pkgs p
	pkgs=$(apt-cache search --names-only "$(debian_family "$name")" 2>/dev/null | awk '{print $1}' | sort -V | tail -n 6)
	[ -n "$pkgs" ] || { echo "none (run 'apt-get update', and ci/setup.sh for trixie-backports)"; return; }
	for p in $pkgs; do
		printf "%s=%s " "$p" "$(versions_of "$p")"
	done
}

debs=()
for pin in $pins; do
	pkg=${pin%%=*} ver=${pin#*=}
	# The file name apt-get download uses: epoch-less version, ':' -> %3a.
	deb=$dl/${pkg}_${ver//:/%3a}_amd64.deb
	debs+=("$deb")
	[ -f "$deb" ] && continue
	log "$name: downloading $pin"
	out=$(cd "$dl" && apt-get download -q "$pin" 2>&1) || {
		printf '%s\n' "$out" | grep -v 'unsandboxed' >&2
		seen=$(versions_of "$pkg")
		die "$name: $pin is not downloadable from the mirror; apt sees $pkg at: ${seen:-no version at all}; of its family: $(family_seen). Update the pin in ci/debian-kernel.sh deliberately."
	}
	[ -f "$deb" ] || die "$name: apt-get download $pin left no $deb"
done

# Unpacked already, from exactly these packages?
if [ "$(cat "$stamp" 2>/dev/null)" = "$pins" ]; then
	log "$name: reusing $dest/root"
else
	log "$name: unpacking ${pins// /, }"
	# The half-unpacked directory goes however the script ends, interrupted
	# included (a signal becomes an exit, which runs the EXIT trap).
	tmp=""
	trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 143' TERM
	tmp=$(mktemp -d "$KSMRS_CACHE/debian-kernels/unpack.XXXXXX")
	for deb in "${debs[@]}"; do
		dpkg-deb -x "$deb" "$tmp/root" || die "$name: dpkg-deb -x $deb failed"
	done
	echo "$pins" >"$tmp/root/.ksm-rs-unpacked"
	mkdir -p "$dest"
	rm -rf "$dest/root"
	mv "$tmp/root" "$dest/root"
fi
compgen -G "$dest/root/boot/vmlinuz-*" >/dev/null || compgen -G "$dest/root/usr/lib/modules/*/vmlinuz" >/dev/null ||
	die "$name: no kernel image in $dest/root (packaging changed?)"
echo "$dest/root"
