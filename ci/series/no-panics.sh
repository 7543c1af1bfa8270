#!/usr/bin/env bash
# No panicking construct in the kernel's KSM Rust outside its KUnit tests:
#   ci/series/no-panics.sh TREE
# Prints each offending line (file:line: text) and exits 1 if there is any.
#
# Clippy denies what it can see (indexing, unwrap, expect, panic!, unreachable!,
# todo!, unimplemented!, arithmetic that can overflow) through the lints the
# crate root sets, on every CLIPPY=1 build; this checks that those lints are
# set, and the assert! family, which no clippy lint covers. The KUnit tests
# (fake.rs, and each file's `mod tests` at its end) may assert; so may a
# `const _: () = { ... };` block, which the compiler evaluates.
set -euo pipefail
tree=${1:?usage: ci/series/no-panics.sh TREE}
dir=$tree/mm/ksm
root=$dir/ksm_rust.rs
[ -f "$root" ] || { echo "no $root"; exit 1; }

bad=0
for lint in arithmetic_side_effects expect_used indexing_slicing panic todo \
	unimplemented unreachable unwrap_used; do
	if ! sed -n '/^#!\[deny(/,/^)\]/p' "$root" | grep -qw "clippy::$lint"; then
		echo "$root: the crate root does not deny clippy::$lint"
		bad=1
	fi
done

for f in "$dir"/*.rs; do
	[ "$(basename "$f")" = fake.rs ] && continue
	awk -v file="$f" '
		/^#\[cfg\(CONFIG_KSM_KUNIT_TEST\)\]$/ { getline next_line; if (next_line ~ /kunit_tests/) exit; }
		/const _: \(\) = \{/ { in_const = 1 }
		in_const { if (/^[[:space:]]*\};/) in_const = 0; next }
		/^[[:space:]]*\/\// { next }
		/(^|[^_[:alnum:]])(assert|assert_eq|assert_ne|debug_assert|panic|unreachable|todo|unimplemented)!/ ||
		/\.unwrap\(\)|\.expect\(/ {
			printf "%s:%d: %s\n", file, NR, $0; found = 1
		}
		END { exit found }' "$f" || bad=1
done
exit "$bad"
