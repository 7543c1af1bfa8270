#!/usr/bin/env bash
# Configure and build one kernel variant:
#   ci/kernel.sh VARIANT [make targets...]
#
#   patched  the series, the Rust choice (kernel-config base mm rust ksm-rs)
#   patched-c  the series, the C choice (base mm rust ksm-rs ksm-c)
#   patched-base  the series' tree configured as stock, for its patches
#            before the choice exists
#   stock    pristine 7.3 (base mm rust)
#   noksm    the series, CONFIG_KSM=n (base mm rust noksm)
#   debug    the series with KASAN, lockdep, DEBUG_VM (base mm rust ksm-rs debug)
#   stock-debug  pristine 7.3, the same checkers (base mm rust debug)
#   fix, fix-debug  pristine 7.3 with only the stand-alone fix of
#            docs/mergeflip/ (ci/fix-tree.sh), configured as stock, stock-debug
#   stress, stock-stress  debug, stock-debug with kprobe events and the
#            function tracer, for the stress campaign's counts (ci/stress.sh)
#
# Each variant has its own output directory under $KSMRS_CACHE (variant_out in ci/lib.sh), its .config merged
# from kernel-config/ fragments with scripts/kconfig/merge_config.sh on top of
# allnoconfig, and checked: an option asked for that did not stick is an error.
source "$(dirname "$0")/lib.sh"

variant=${1:-}
shift || true
case "$variant" in
	patched) tree=$TREE;       frags=(base mm rust ksm-rs) ;;
	patched-c) tree=$TREE;     frags=(base mm rust ksm-rs ksm-c) ;;
	patched-base) tree=$TREE;  frags=(base mm rust) ;;
	stock)   tree=$STOCK_TREE; frags=(base mm rust) ;;
	noksm)   tree=$TREE;       frags=(base mm rust noksm) ;;
	debug)   tree=$TREE;       frags=(base mm rust ksm-rs debug) ;;
	stock-debug) tree=$STOCK_TREE; frags=(base mm rust debug) ;;
	fix)     tree=$FIX_TREE;   frags=(base mm rust) ;;
	fix-debug) tree=$FIX_TREE; frags=(base mm rust debug) ;;
	stress)  tree=$TREE;       frags=(base mm rust ksm-rs debug stress) ;;
	stock-stress) tree=$STOCK_TREE; frags=(base mm rust debug stress) ;;
	*) die "usage: ci/kernel.sh patched|patched-c|patched-base|stock|noksm|debug|stock-debug|fix|fix-debug|stress|stock-stress [make targets]" ;;
esac
[ "$tree" = "$FIX_TREE" ] || [ -f "$tree/Makefile" ] || die "no kernel tree at $tree: run ci/tree.sh (make tree)"

out=$(variant_out "$variant")
# One kernel build at a time on this machine, whichever cache or checkout
# asks: two builds on two cores take longer together than one after the other.
exec 9>"${KSMRS_LOCK_DIR:-/run/lock}/ksm-rs-kernel-build.lock"
if ! flock -n 9; then
	log "waiting for another kernel build on this machine to finish"
	flock 9
fi
# The fix tree follows docs/mergeflip/*.patch; refreshed under the lock, so
# never under a build of it.
if [ "$tree" = "$FIX_TREE" ]; then "$KSMRS_ROOT/ci/fix-tree.sh"; fi
mkdir -p "$out" "$CCACHE_DIR"
export PATH=$KERNEL_PATH
if [[ $variant == *debug || $variant == *stress ]]; then
	# Rust with KASAN needs Clang.
	MAKEFLAGS_KSMRS=(LLVM=-19 CC="ccache clang-19")
else
	MAKEFLAGS_KSMRS=(CC="ccache gcc")
fi
# Our Rust goes through clippy on every build; with CONFIG_WERROR a lint is
# an error, so a build of the patched tree is also the `make CLIPPY=1` check.
[ "$tree" = "$TREE" ] && MAKEFLAGS_KSMRS+=(CLIPPY=1)
kmake() { make -C "$tree" O="$out" "${MAKEFLAGS_KSMRS[@]}" "$@"; }

frag_files=()
for f in "${frags[@]}"; do frag_files+=("$KSMRS_ROOT/kernel-config/$f.config"); done

# Every CONFIG_ line the fragments ask for must be in the final .config; the
# last fragment to mention an option wins, as in merge_config.sh.
check_config() {
	local line opt bad=0
	declare -A want=()
	while IFS= read -r line; do
		case "$line" in
			CONFIG_*=*) opt=${line%%=*}; want[$opt]=$line ;;
			"# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}; want[$opt]=$line ;;
		esac
	done < <(cat "${frag_files[@]}")
	for opt in "${!want[@]}"; do
		line=${want[$opt]}
		if [[ $line == "# "* ]]; then
			grep -q "^$opt=" "$out/.config" || continue
		else
			grep -qxF "$line" "$out/.config" && continue
		fi
		printf '  asked: %-40s got: %s\n' "$line" \
			"$(grep -E "^$opt=|^# $opt is not set" "$out/.config" || echo "(absent)")" >&2
		bad=1
	done
	[ $bad = 0 ] || die "options above did not stick in $out/.config (for CONFIG_RUST: is /usr/bin/rustc with rust-src first on PATH? see 'make -C $tree O=$out rustavailable')"
}

stamp=$out/.ksm-rs-config
want_stamp=$(cat "${frag_files[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$out/.config" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
	log "configuring $variant (${frags[*]})"
	# merge_config.sh runs make itself: the compiler must be known then, since
	# options depend on it (RUST with KASAN needs Clang).
	(cd "$tree" && env "${MAKEFLAGS_KSMRS[@]}" scripts/kconfig/merge_config.sh -n -O "$out" \
		"${frag_files[@]}" >"$out/merge_config.log" 2>&1) ||
		{ cat "$out/merge_config.log" >&2; die "merge_config.sh failed"; }
	kmake -s olddefconfig >/dev/null
	check_config
	echo "$want_stamp" > "$stamp"
else
	kmake -s olddefconfig >/dev/null
	check_config
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(bzImage)
run_logged "$out/build.log" "build of $variant (${targets[*]})" kmake -j"$(nproc)" "${targets[@]}"
