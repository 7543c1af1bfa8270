#!/usr/bin/env bash
# The tree of the fix variants (ci/kernel.sh fix|fix-debug): $FIX_TREE, a
# worktree of $BASE_TAG (pristine 7.3) with only the stand-alone patches of
# docs/mergeflip/ applied by `git am`, on branch $FIX_BRANCH. ci/kernel.sh
# runs it before a fix build; it re-applies the patches when they changed,
# and otherwise does nothing. Commits or changes in the tree that the patches
# do not hold stop it (KSMRS_RESET_TREE=1 drops them).
source "$(dirname "$0")/lib.sh"

FIX_BRANCH=mergeflip-fix

tgit -C "$TREE" rev-parse -q --verify "refs/tags/$BASE_TAG" >/dev/null 2>&1 ||
	die "no pristine 7.3 tree at $TREE: run ci/tree.sh (make tree)"
patches=("$FIX_PATCHES"/*.patch)
[ -f "${patches[0]}" ] || die "no patch in $FIX_PATCHES"
if [ ! -e "$FIX_TREE/.git" ]; then
	log "adding the worktree $FIX_TREE at $BASE_TAG"
	mkdir -p "$(dirname "$FIX_TREE")"
	tgit -C "$TREE" worktree add -q -B "$FIX_BRANCH" "$FIX_TREE" "$BASE_TAG"
fi

# What the tree was made from last: "<hash of the patches> <HEAD>".
stamp=$(tgit -C "$FIX_TREE" rev-parse --absolute-git-dir)/ksm-rs-fix
want=$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)
head=$(tgit -C "$FIX_TREE" rev-parse HEAD)
dirty=$(tgit -C "$FIX_TREE" status --porcelain --untracked-files=no)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want $head" ] && [ -z "$dirty" ]; then
	log "fix tree up to date: $(tgit -C "$FIX_TREE" log -1 --format='%h %s')"
	exit 0
fi
if [ "${KSMRS_RESET_TREE:-0}" != 1 ]; then
	[ -z "$dirty" ] || die "$FIX_TREE has uncommitted changes; commit and export them to $FIX_PATCHES, or rerun with KSMRS_RESET_TREE=1 to drop them"
	made_from=$(cut -d' ' -f2 "$stamp" 2>/dev/null || true)
	[ "$head" = "$made_from" ] || [ "$head" = "$(tgit -C "$TREE" rev-parse "$BASE_TAG")" ] ||
		die "$FIX_TREE has commits that $FIX_PATCHES does not have; export them (git format-patch), or rerun with KSMRS_RESET_TREE=1 to drop them"
fi
log "applying ${patches[*]##*/} on $BASE_TAG in $FIX_TREE"
tgit -C "$FIX_TREE" am --abort >/dev/null 2>&1 || true
tgit -C "$FIX_TREE" checkout -q -f -B "$FIX_BRANCH" "$BASE_TAG"
for p in "${patches[@]}"; do
	if ! tgit -C "$FIX_TREE" am -q --whitespace=error-all "$p"; then
		tgit -C "$FIX_TREE" am --abort || true
		die "$p does not apply to $BASE_TAG"
	fi
done
echo "$want $(tgit -C "$FIX_TREE" rev-parse HEAD)" >"$stamp"
log "fix tree at $(tgit -C "$FIX_TREE" log -1 --format='%h %s')"
