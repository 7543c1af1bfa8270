#!/usr/bin/env python3
"""The size of each patch as a reviewer reads it: lines added or removed,
not counting lines that move (a removed line added back elsewhere in the
same patch, whitespace aside), which `git diff --color-moved` shows as moved.

    ci/series/patch-size.py LIMIT PATCH...

Prints "PATCH: N changed lines (M moved)" per patch and exits 1 if one
changes more than LIMIT lines besides those it moves.
"""
import collections
import sys


def sizes(path):
    added, removed = collections.Counter(), collections.Counter()
    in_diff = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("diff --git "):
                in_diff = True
            elif not in_diff or line.startswith(("+++ ", "--- ")):
                continue
            elif line.startswith("+"):
                added[line[1:].strip()] += 1
            elif line.startswith("-"):
                removed[line[1:].strip()] += 1
    # Blank lines and lone braces say nothing about a move either way.
    moved = sum(min(added[k], removed[k]) for k in added if k not in ("", "}", "{"))
    total = sum(added.values()) + sum(removed.values())
    return total - 2 * moved, moved


def main():
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit("usage: ci/series/patch-size.py LIMIT PATCH...")
    limit, bad = int(sys.argv[1]), False
    for path in sys.argv[2:]:
        changed, moved = sizes(path)
        over = changed > limit
        bad |= over
        print(f"{path}: {changed} changed lines ({moved} moved)" + ("  <-- over %d" % limit if over else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
