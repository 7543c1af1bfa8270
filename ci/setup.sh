#!/usr/bin/env bash
# Install everything ksm-rs needs on a Debian 12 machine (as root).
# Idempotent: a second run checks and returns in seconds.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "setup needs root (apt-get, /sys/kernel/mm/ksm)"
grep -q 'VERSION_CODENAME=bookworm' /etc/os-release ||
	log "warning: not Debian 12; package names may differ"

PACKAGES=(
	# kernel build
	build-essential flex bison bc libelf-dev libssl-dev dwarves cpio kmod
	zstd xz-utils rsync ccache git python3 python3-venv
	# scripts/checkpatch.pl runs scripts/spdxcheck.py
	python3-ply python3-git
	# kernel Rust: Debian's rustc ships the core library source
	rustc-web rust-web-src rust-web-clippy rustfmt-web clang-19 libclang-19-dev
	# the debug variant (KASAN with Rust needs Clang): LLVM=-19
	lld-19 llvm-19
	# the kernel's KSM selftests link libnuma
	libnuma-dev
	# guests
	qemu-system-x86 busybox-static
	# make test lints the scripts
	shellcheck
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing packages: ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# trixie-backports is only a source of linux-source-7.3 (and of the stock
# Debian 7.3 image for the matrix): pinned so that nothing is ever upgraded
# or installed from it.
sources=/etc/apt/sources.list.d/ksm-rs-trixie-backports.sources
pin=/etc/apt/preferences.d/ksm-rs-trixie-backports
if [ ! -f "$pin" ]; then
	log "pinning trixie-backports to -1 (download only)"
	cat > "$pin" <<'PIN'
Package: *
Pin: release n=trixie-backports
Pin-Priority: -1
PIN
fi
if [ ! -f "$sources" ]; then
	log "adding trixie-backports"
	cat > "$sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	apt-get update -q
fi

# cargo for bindgen: rustup's if present, else Debian's.
command -v cargo >/dev/null || {
	log "no cargo on PATH: installing Debian's cargo-web"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends cargo-web
}

if ! "$CARGO_TOOLS/bin/bindgen" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
	log "building bindgen-cli $BINDGEN_VERSION (about 80 s)"
	cargo install --locked --root "$CARGO_TOOLS" "bindgen-cli@$BINDGEN_VERSION"
fi

if ! "$VENV/bin/vng" --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
	log "installing virtme-ng $VIRTME_NG_VERSION in $VENV"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
fi

# make bench counts ksmd's instructions with a QEMU plugin built against the
# installed QEMU's plugin header (from its Debian source package).
"$KSMRS_ROOT/benchmarks/plugin/build.sh" >/dev/null

# The userspace tests run under cargo-nextest: this machine's if it is the
# pinned version, else ours.
if ! cargo-nextest --version 2>/dev/null | grep -q "^cargo-nextest $NEXTEST_VERSION " &&
   ! "$CARGO_TOOLS/bin/cargo-nextest" --version 2>/dev/null | grep -q "^cargo-nextest $NEXTEST_VERSION "; then
	log "building cargo-nextest $NEXTEST_VERSION (a few minutes)"
	cargo install --locked --root "$CARGO_TOOLS" "cargo-nextest@$NEXTEST_VERSION"
fi

log "setup complete ($(/usr/bin/rustc --version), $("$CARGO_TOOLS/bin/bindgen" --version), virtme-ng $("$VENV/bin/vng" --version 2>&1 | awk '{print $2}'))"
