#!/usr/bin/env bash
# The borrow checker, not a comment, keeps a stable node's handle from
# outliving the call that frees it:
#   ci/series/negative-example.sh TREE OUT
# Adds ci/series/handle_after_collect.rs to mm/ksm/ of TREE for one build of
# mm/ksm/ in OUT (a configured build directory with KSM_RUST), then puts the
# tree back. Passes if that build fails with error E0502 in that file, and
# the same build without the example succeeds (so the error is the example's).
source "$(dirname "$0")/../lib.sh"
tree=${1:?usage: ci/series/negative-example.sh TREE OUT}
out=${2:?usage: ci/series/negative-example.sh TREE OUT}
root=$tree/mm/ksm/ksm_rust.rs
[ -f "$root" ] || die "no $root"
grep -q '^CONFIG_KSM_RUST=y' "$out/.config" 2>/dev/null || die "$out is not configured with KSM_RUST"

export PATH=$KERNEL_PATH
build() { make -C "$tree" O="$out" CC="ccache gcc" CLIPPY=1 -j"$(nproc)" mm/ksm/ 2>&1; }

saved=$(mktemp)
cp "$root" "$saved"
restore() {
	rm -f "$tree/mm/ksm/handle_after_collect.rs"
	cp "$saved" "$root"
}
trap 'restore; rm -f "$saved"' EXIT
cp "$KSMRS_ROOT/ci/series/handle_after_collect.rs" "$tree/mm/ksm/"
printf '\nmod handle_after_collect;\n' >>"$root"
if output=$(build); then
	echo "the negative example built: a handle outlived collect()"
	exit 1
fi
restore
if ! grep -q 'error\[E0502\]' <<<"$output" || ! grep -q 'handle_after_collect.rs' <<<"$output"; then
	echo "the build failed, but not with E0502 in the example:"
	grep -m 5 -A 5 'error' <<<"$output"
	exit 1
fi
grep -m 1 -A 12 'error\[E0502\]' <<<"$output"
build >/dev/null || { echo "the tree does not build without the example either"; exit 1; }
