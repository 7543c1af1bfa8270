# shellcheck shell=bash
# TAP helpers for ci/test.sh. Every stage of the tests leaves one flat TAP file
# (one "ok"/"not ok" line per check, "# SKIP reason" for skips) in a results
# directory; tally counts them all.

# tap_line FILE OK|FAIL|SKIP NAME [REASON]: append one result.
tap_line() {
	local file=$1 verdict=$2 name=$3 reason=${4:-}
	case "$verdict" in
		OK) echo "ok - $name" ;;
		FAIL) echo "not ok - $name${reason:+ # $reason}" ;;
		SKIP) echo "ok - $name # SKIP $reason" ;;
	esac >>"$file"
}

# tap_log FILE NAME: the log of check NAME, beside FILE.
tap_log() {
	echo "$(dirname "$1")/$(echo "$2" | tr -c 'A-Za-z0-9_.-' '_').log"
}

# tap_check FILE NAME CMD...: run CMD, its output in a log beside FILE, and
# append one result for it; a failure also shows the log's tail.
tap_check() {
	local file=$1 name=$2 logf
	shift 2
	logf=$(tap_log "$file" "$name")
	if "$@" >"$logf" 2>&1; then
		tap_line "$file" OK "$name"
	else
		tap_line "$file" FAIL "$name" "see $logf"
		tail -n 30 "$logf" >&2
	fi
}

# tap_shown FILE NAME CMD...: the same for long work whose output is its
# progress: shown as it comes (on stderr), and kept in the log too. Returns
# CMD's status.
tap_shown() {
	local file=$1 name=$2 logf
	shift 2
	logf=$(tap_log "$file" "$name")
	if "$@" 2>&1 | tee "$logf" >&2; then
		tap_line "$file" OK "$name"
	else
		tap_line "$file" FAIL "$name" "see $logf"
		return 1
	fi
}

# tap_complete TAP RCFILE NAME CODES...: a program that writes TAP can die
# half-way and leave only passes behind. Append a failure to TAP unless the
# program exited with one of CODES (its verdicts are in the TAP then) and
# printed as many results as its plan (1..N) announced.
tap_complete() {
	local tap=$1 rcfile=$2 name=$3 rc plan results
	shift 3
	rc=$(cat "$rcfile" 2>/dev/null || echo none)
	plan=$(sed -nE 's/^1\.\.([0-9]+).*/\1/p' "$tap" | head -n 1)
	results=$(grep -cE '^(not )?ok [0-9]+' "$tap" || true)
	case " $* " in
		*" $rc "*) ;;
		*) tap_line "$tap" FAIL "$name ran to the end" "exit status $rc"; return ;;
	esac
	[ "${plan:-none}" = "$results" ] ||
		tap_line "$tap" FAIL "$name ran to the end" "plan 1..${plan:-?}, $results results"
}

# kunit_tap DMESG SUITE...: KUnit's test cases from a kernel log, as flat TAP
# named suite.case; a suite that did not run at all is a failure.
kunit_tap() {
	local dmesg=$1 suite
	shift
	sed -E 's/^\[ *[0-9]+\.[0-9]+\] //' "$dmesg" | awk '
		/^    # Subtest: / { suite = $3 }
		/^    (not )?ok [0-9]+ / {
			line = $0; sub(/^    /, "", line)
			verdict = (line ~ /^not ok/) ? "not ok" : "ok"
			sub(/^(not )?ok [0-9]+ /, "", line)
			print verdict " - kunit " suite "." line
		}'
	for suite in "$@"; do
		grep -qE "^(\[ *[0-9.]+\] )?    # Subtest: $suite\$" "$dmesg" ||
			echo "not ok - kunit $suite # the suite did not run"
	done
}

# tally FILE...: print "N passed, N failed, N skipped" over all results.
tally() {
	cat "$@" 2>/dev/null | awk '
		/^ok .*# *SKIP/ { s++; next }
		/^ok / { p++; next }
		/^not ok / { f++ }
		END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
}

# exit_with_tally FILE...: print the tally of the TAP files and exit 0 if no
# check failed, 1 otherwise.
exit_with_tally() {
	local summary
	summary=$(tally "$@")
	echo "$summary"
	case "$summary" in *" 0 failed"*) exit 0 ;; *) exit 1 ;; esac
}

# kunit_suites TREE: the KUnit suites KSM's Rust defines, which must all run.
kunit_suites() {
	grep -rhoE 'kunit_tests\([a-z0-9_]+\)' "$1/mm/ksm" 2>/dev/null | sed -E 's/.*\((.*)\)/\1/' | sort -u
}

# nextest_tap [REASONS]: nextest's per-test status lines (--status-level all)
# as TAP. nextest cannot say why a test was skipped; REASONS, a TAP file of
# the same checks from ksm-conform itself, gives the reason of each skip, or
# one for all ("1..0 # SKIP reason": it refused to run, the machine in use).
nextest_tap() {
	sed -E 's/\x1b\[[0-9;]*m//g' | awk -v reasons="${1:-/dev/null}" '
		BEGIN {
			while ((getline line < reasons) > 0)
				if (match(line, /^ok [0-9]+ [^ ]+ # SKIP /)) {
					name = line; sub(/^ok [0-9]+ /, "", name); sub(/ .*/, "", name)
					why[name] = substr(line, RLENGTH + 1)
				} else if (match(line, /^1\.\.0 # SKIP /)) {
					all = substr(line, RLENGTH + 1)
				}
		}
		match($0, /^ *(PASS|FAIL|SKIP|SIGSEGV|SIGABRT|SIGKILL|TIMEOUT|LEAK|LEAK-FAIL|ABORT|TRY [0-9]+ FAIL) +\[[^]]*\] +(\([^)]*\) +)?/) {
			status = $0; sub(/^ */, "", status); sub(/ .*/, "", status)
			name = substr($0, RLENGTH + 1)
			check = name; sub(/.* /, "", check)
			if (status == "PASS" || status == "LEAK") print "ok - nextest " name
			else if (status == "SKIP") {
				reason = (check in why) ? why[check] : (all != "" ? all : "ignored")
				if (check ~ /without_ksm$/) reason = "checks a kernel built without KSM (ksm-conform --without-ksm)"
				print "ok - nextest " name " # SKIP " reason
			}
			else print "not ok - nextest " name " # " status
		}'
}
