#!/usr/bin/env bash
# Unpack the pinned linux-source-7.3 into $TREE as a git repository tagged
# $BASE_TAG, then apply patches/series with `git am` on branch $PATCHED_BRANCH.
# Also keeps $STOCK_TREE, a worktree of the pristine base, for stock builds.
source "$(dirname "$0")/lib.sh"

dl=$KSMRS_CACHE/dl
deb=$dl/${LINUX_SRC_PKG}_${LINUX_SRC_VERSION}_all.deb

fetch_source() {
	mkdir -p "$dl"
	if [ ! -f "$deb" ]; then
		log "downloading $LINUX_SRC_PKG $LINUX_SRC_VERSION"
		# (grep -v fails when it filters everything out: not our failure.)
		(cd "$dl" && apt-get download -q "$LINUX_SRC_PKG=$LINUX_SRC_VERSION" 2>&1 |
			{ grep -v 'Download is performed unsandboxed' || true; }) || {
			seen=$(apt-cache madison "$LINUX_SRC_PKG" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | paste -sd' ')
			die "$LINUX_SRC_PKG $LINUX_SRC_VERSION is not downloadable; apt sees: ${seen:-no version at all} (run ci/setup.sh, or update LINUX_SRC_VERSION and LINUX_SRC_SHA256 in ci/lib.sh deliberately)"
		}
	fi
	echo "$LINUX_SRC_SHA256  $deb" | sha256sum -c --quiet - ||
		{ rm -f "$deb"; die "$deb does not match the pinned sha256; removed it"; }
}

unpack_base() {
	local tmp
	tmp=$(mktemp -d "$KSMRS_CACHE/unpack.XXXXXX")
	# shellcheck disable=SC2064 # this tmp
	trap "rm -rf '$tmp'" EXIT
	log "unpacking the 7.3 source (about 1 min)"
	dpkg-deb -x "$deb" "$tmp/deb"
	mkdir "$tmp/linux"
	tar -xaf "$tmp"/deb/usr/src/linux-source-7.3.tar.* -C "$tmp/linux" --strip-components=1
	rm -rf "$tmp/deb"
	(
		cd "$tmp/linux"
		tgit init -q -b base
		# Debian's top-level .gitignore ignores everything (/*): add by force.
		tgit add -f -A .
		tgit commit -q -m "Linux $LINUX_SRC_VERSION (Debian $LINUX_SRC_PKG)"
		tgit tag "$BASE_TAG"
	)
	rm -rf "$TREE"
	mkdir -p "$(dirname "$TREE")"
	mv "$tmp/linux" "$TREE"
	rmdir "$tmp"
	trap - EXIT
}

apply_series() {
	local stamp=$TREE/.git/ksm-rs-series head
	head=$(tgit -C "$TREE" rev-parse HEAD)
	if [ "$(cat "$stamp" 2>/dev/null)" = "$(series_hash) $head" ] &&
	   [ -z "$(tgit -C "$TREE" status --porcelain --untracked-files=no)" ]; then
		log "series already applied on $PATCHED_BRANCH"
		return
	fi
	# Never throw away work done in the tree: commits not exported to
	# patches/ (make patches) or uncommitted changes stop us.
	if [ "${KSMRS_RESET_TREE:-0}" != 1 ] && [ -f "$stamp" ]; then
		[ -z "$(tgit -C "$TREE" status --porcelain --untracked-files=no)" ] ||
			die "$TREE has uncommitted changes; commit and 'make patches', or rerun with KSMRS_RESET_TREE=1 to drop them"
		[ "$head" = "$(cut -d' ' -f2 "$stamp")" ] ||
			die "$TREE has commits that patches/ does not have; 'make patches', or rerun with KSMRS_RESET_TREE=1 to drop them"
	fi
	log "applying patches/series on $BASE_TAG"
	tgit -C "$TREE" am --abort >/dev/null 2>&1 || true
	tgit -C "$TREE" checkout -q -f -B "$PATCHED_BRANCH" "$BASE_TAG"
	local p n=0
	for p in $(series_patches); do
		[ -f "$KSMRS_ROOT/patches/$p" ] || die "patches/series names $p, which does not exist"
		if ! tgit -C "$TREE" am -q --whitespace=error-all "$KSMRS_ROOT/patches/$p"; then
			tgit -C "$TREE" am --abort || true
			die "patches/$p does not apply to $BASE_TAG"
		fi
		n=$((n + 1))
	done
	record_series_stamp
	log "applied $n patches; $PATCHED_BRANCH is at $(tgit -C "$TREE" log -1 --format='%h %s')"
}

stock_worktree() {
	[ -d "$STOCK_TREE/.git" ] || [ -f "$STOCK_TREE/.git" ] && return
	log "adding the pristine worktree $STOCK_TREE"
	tgit -C "$TREE" worktree add -q --detach "$STOCK_TREE" "$BASE_TAG"
}

mkdir -p "$KSMRS_CACHE"
if ! tgit -C "$TREE" rev-parse -q --verify "refs/tags/$BASE_TAG" >/dev/null 2>&1; then
	fetch_source
	unpack_base
fi
apply_series
stock_worktree
