# shellcheck shell=bash disable=SC2034 # settings for the scripts that source this
# Common settings for the ksm-rs scripts. Sourced, never run.
#
# Everything heavy (packages aside) lives under $KSMRS_CACHE, outside the
# repository, so a second run on the same machine is warm while a fresh
# machine still builds everything from scratch.

set -euo pipefail

KSMRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KSMRS_CACHE=${KSMRS_CACHE:-$HOME/.cache/ksm-rs}

# The pinned kernel source: Debian's linux-source-7.3 from trixie-backports.
LINUX_SRC_PKG=linux-source-7.3
LINUX_SRC_VERSION=7.3.4-1~bpo13+1
LINUX_SRC_SHA256=703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3

# Pinned tools.
BINDGEN_VERSION=0.73.2
VIRTME_NG_VERSION=1.42
NEXTEST_VERSION=0.9.143

# Each source tree sits beside its output directories (out-<variant>) so the
# path from any build to its source is the same "../src": with CCACHE_BASEDIR
# that lets the stock and the patched builds share ccache entries.
TREE=$KSMRS_CACHE/linux/src      # the unpacked 7.3 tree, a git repository
VENV=$KSMRS_CACHE/venv           # virtme-ng
CARGO_TOOLS=$KSMRS_CACHE/cargo   # bindgen-cli
export CCACHE_DIR=${CCACHE_DIR:-$KSMRS_CACHE/ccache}
export CCACHE_BASEDIR=$KSMRS_CACHE

# The kernel wants Debian's rustc (it ships rust-src); userspace keeps rustup's.
KERNEL_PATH=/usr/bin:$CARGO_TOOLS/bin:$PATH

# What in a kernel console means the kernel went wrong, whatever the tests said.
KSMRS_SPLATS='BUG:|WARNING:|Oops|Kernel panic|KASAN:|possible circular locking|inconsistent lock state|UBSAN:'

log() { printf '\033[1m[ksm-rs]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[ksm-rs] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Seconds since $1 (an epoch), for progress lines.
since() { echo $(( $(date +%s) - $1 )); }

SERIES_VERSION=2                 # the posting of patches/: [PATCH v2 NN/MM]
BASE_TAG=ksm-rs-base             # first commit of $TREE: pristine 7.3
PATCHED_BRANCH=ksm-rs            # $BASE_TAG + patches/series
STOCK_TREE=$KSMRS_CACHE/stock/src    # a worktree of $BASE_TAG
FIX_TREE=$KSMRS_CACHE/fix/src        # $BASE_TAG + the stand-alone fix (ci/fix-tree.sh)
FIX_PATCHES=$KSMRS_ROOT/docs/mergeflip # ... whose *.patch files that is

# The output directory of a kernel variant (see ci/kernel.sh).
variant_out() {
	case "$1" in
		stock|stock-debug|stock-stress) echo "$KSMRS_CACHE/stock/out-$1" ;;
		fix|fix-debug) echo "$KSMRS_CACHE/fix/out-$1" ;;
		*) echo "$KSMRS_CACHE/linux/out-$1" ;;
	esac
}

# git inside the kernel trees, with an identity for the base commit and `git am`.
KSMRS_IDENT="ksm-rs developers <ksm-rs@lists.example.org>"
tgit() {
	git -c user.name="${KSMRS_IDENT% <*}" -c user.email="$(echo "$KSMRS_IDENT" | sed 's/.*<\(.*\)>/\1/')" \
	    -c advice.detachedHead=false "$@"
}

# The patch files named by patches/series, in order (comments and blanks skipped).
series_patches() {
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$KSMRS_ROOT/patches/series"
}

# run_logged LOG LABEL CMD...: run CMD with its output in LOG, print a
# progress line every 30 s (elapsed time and the log's last line) and the
# compiler's errors and warnings as they come; on failure show the log's tail.
run_logged() {
	local logf=$1 label=$2 start rc pid
	shift 2
	start=$(date +%s)
	: >"$logf"
	"$@" >"$logf" 2>&1 &
	pid=$!
	(
		while kill -0 "$pid" 2>/dev/null; do
			sleep 30
			kill -0 "$pid" 2>/dev/null &&
				printf '  ... %s: %d s, %d log lines, at: %s\n' "$label" "$(since "$start")" \
					"$(wc -l <"$logf")" "$(tail -n 1 "$logf" | cut -c1-80)" >&2
		done
	# Not the caller's lock (ci/kernel.sh holds one on fd 9): a ticker
	# that outlives a killed build must not keep the next one waiting.
	) 9>&- &
	local ticker=$!
	tail -n +1 -f --pid="$pid" "$logf" 2>/dev/null 9>&- | grep --line-buffered -E 'error:|warning:|Error [0-9]' >&2 9>&- &
	local tailer=$!
	# Killed ourselves (a CI time limit, a ^C that only we got): take the
	# build and our helpers along rather than leave them running.
	# shellcheck disable=SC2064 # the pids are known now
	trap "kill $pid $ticker $tailer 2>/dev/null; exit 130" INT TERM
	rc=0
	wait "$pid" || rc=$?
	trap - INT TERM
	kill "$ticker" 2>/dev/null || true
	wait "$tailer" "$ticker" 2>/dev/null || true
	if [ "$rc" != 0 ]; then
		tail -n 30 "$logf" >&2
		die "$label failed after $(since "$start") s (exit $rc); full log: $logf"
	fi
	log "$label done in $(since "$start") s"
}

# A hash of patches/series and the patches it names.
series_hash() {
	(cd "$KSMRS_ROOT/patches" && series_patches | xargs -r cat series | sha256sum | cut -d' ' -f1)
}

# Remember that $TREE's HEAD is patches/ applied (read by ci/tree.sh).
record_series_stamp() {
	echo "$(series_hash) $(tgit -C "$TREE" rev-parse HEAD)" >"$TREE/.git/ksm-rs-series"
}

# The variants of ci/kernel.sh a guest script (mergeflip.sh,
# zero-pages-fork.sh) boots by name, once built.
GUEST_VARIANTS=" patched patched-c patched-base stock noksm debug stock-debug fix fix-debug stress stock-stress "

# resolve_kernel KERNEL: "NAME PATH" on stdout for a built variant, a Debian
# kernel (debian-6.1|debian-6.12|debian-7.3, fetched by ci/debian-kernel.sh),
# a path virtme/boot.sh --kernel takes, or NAME=PATH; the reason on stderr
# and status 1 otherwise.
resolve_kernel() {
	local k=$1 path
	case "$k" in
		*=*) echo "${k%%=*} ${k#*=}" ;;
		debian-*) path=$("$KSMRS_ROOT/ci/debian-kernel.sh" "$k") && echo "$k $path" ;;
		*/*) echo "$(basename "$k") $k" ;;
		*)
			[[ $GUEST_VARIANTS == *" $k "* ]] || { echo "unknown kernel '$k' (a variant:$GUEST_VARIANTS, debian-*, a path, or NAME=PATH)" >&2; return 1; }
			path=$(variant_out "$k")
			[ -f "$path/arch/x86/boot/bzImage" ] || { echo "no build of $k in $path: run ci/kernel.sh $k" >&2; return 1; }
			echo "$k $path"
			;;
	esac
}
