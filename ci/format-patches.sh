#!/usr/bin/env bash
# Regenerate patches/ from the commits on $PATCHED_BRANCH in $TREE:
# git format-patch, a cover letter from docs/cover-letter.txt (first line the
# subject, then the body), the reviewers' notes of docs/series-notes.txt below
# the "---" of their patches, and patches/series listing every patch but the
# cover letter, so that `git am $(cat series)` takes the rest.
source "$(dirname "$0")/lib.sh"

[ -z "$(tgit -C "$TREE" status --porcelain --untracked-files=no)" ] ||
	die "$TREE has uncommitted changes: commit them on $PATCHED_BRANCH first"
[ "$(tgit -C "$TREE" rev-parse --abbrev-ref HEAD)" = "$PATCHED_BRANCH" ] ||
	die "$TREE is not on branch $PATCHED_BRANCH"

tgit -C "$TREE" config "branch.$PATCHED_BRANCH.description" "$(cat "$KSMRS_ROOT/docs/cover-letter.txt")"
tmp=$(mktemp -d)
tgit -C "$TREE" format-patch -q --cover-letter --cover-from-description=subject \
	--subject-prefix="PATCH v$SERIES_VERSION" \
	--no-signature -o "$tmp" "$BASE_TAG..$PATCHED_BRANCH"
# The reviewers' notes of docs/series-notes.txt go below each patch's "---".
subjects=$(tgit -C "$TREE" log --reverse --format=%s "$BASE_TAG..$PATCHED_BRANCH")
n=0
while IFS= read -r subject; do
	n=$((n + 1))
	note=$(awk -v want="[$subject]" '
		/^#/ { next }
		/^\[/ { on = ($0 == want); next }
		on && NF { print }
		on && !NF && seen { exit }
		NF { seen = 1 }' "$KSMRS_ROOT/docs/series-notes.txt")
	[ -n "$note" ] || continue
	file=$(ls "$tmp"/"$(printf '%04d' "$n")"-*.patch)
	awk -v note="$note" '!done && $0 == "---" { print; print note; print ""; done = 1; next } { print }' \
		"$file" >"$file.new" && mv "$file.new" "$file"
done <<<"$subjects"
rm -f "$KSMRS_ROOT"/patches/*.patch
mv "$tmp"/*.patch "$KSMRS_ROOT/patches/"
rmdir "$tmp"
(cd "$KSMRS_ROOT/patches" && printf '%s\n' [0-9][0-9][0-9][0-9]-*.patch | grep -v '^0000-cover-letter' > series)
# The tree now is what patches/ describes: tell ci/tree.sh.
record_series_stamp
log "wrote $(wc -l < "$KSMRS_ROOT/patches/series") patches and the cover letter to patches/"
