#!/usr/bin/env bash
# KSM stays available where the kernel has no Rust:
#   ci/series/no-rust-config.sh TREE PATCHED_CONFIG SCRATCH_DIR
# Configures, in SCRATCH_DIR, (1) x86_64's defconfig with KSM asked for and
# Rust off, and (2) our patched configuration with CONFIG_RUST turned off;
# each must keep CONFIG_KSM=y, with the C implementation. Prints the result of
# each; exits 1 if KSM was dropped from either.
set -euo pipefail
tree=${1:?usage: ci/series/no-rust-config.sh TREE PATCHED_CONFIG SCRATCH_DIR}
config=${2:?usage: ci/series/no-rust-config.sh TREE PATCHED_CONFIG SCRATCH_DIR}
scratch=${3:?usage: ci/series/no-rust-config.sh TREE PATCHED_CONFIG SCRATCH_DIR}
[ -f "$config" ] || { echo "no $config"; exit 1; }

check() {
	local name=$1 dir=$scratch/$1 got
	got=$(grep -E '^(# )?CONFIG_(RUST|KSM|KSM_C|KSM_RUST)[= ]' "$dir/.config" | sort | paste -sd' ')
	if grep -qx 'CONFIG_KSM=y' "$dir/.config" && grep -qx 'CONFIG_KSM_C=y' "$dir/.config" &&
		! grep -qx 'CONFIG_RUST=y' "$dir/.config"; then
		echo "$name: KSM kept, with the C implementation ($got)"
	else
		echo "$name: KSM not kept ($got)"
		return 1
	fi
}

rm -rf "$scratch"
mkdir -p "$scratch/defconfig" "$scratch/patched-without-rust"
make -C "$tree" O="$scratch/defconfig" -s defconfig >/dev/null
"$tree/scripts/config" --file "$scratch/defconfig/.config" --enable KSM --disable RUST
make -C "$tree" O="$scratch/defconfig" -s olddefconfig >/dev/null
cp "$config" "$scratch/patched-without-rust/.config"
"$tree/scripts/config" --file "$scratch/patched-without-rust/.config" --disable RUST
make -C "$tree" O="$scratch/patched-without-rust" -s olddefconfig >/dev/null

bad=0
check defconfig || bad=1
check patched-without-rust || bad=1
exit "$bad"
