#!/usr/bin/env bash
# `make matrix`: the conformance suite on several kernels, one column each.
#   ci/matrix.sh [KERNEL...]     (default: all, in this order)
#
#   debian-6.1 debian-6.12 debian-7.3   stock Debian kernels (ci/debian-kernel.sh)
#   stock patched-c noksm patched       our 7.3 builds (ci/kernel.sh, always run:
#                                       it is incremental)
#   native                              this machine's running kernel, as root
#
# Each guest is freshly booted with virtme/boot.sh (TCG, 2 NUMA nodes, zram
# swap) and runs `ksm-conform --fresh-boot` (noksm: `--without-ksm`). Then a
# second guest of the same kernel runs the reproducer of issue 11
# (ci/mergeflip.sh, MATRIX_MERGEFLIP_ROUNDS rounds or MATRIX_MERGEFLIP_SECONDS
# seconds): a crash there is the column's finding, not a failure of the run;
# it never runs natively. Results:
#   out/matrix/<kernel>/      console.log, run.log, dmesg.txt, sysfs.txt,
#                             mergeflip/ (the reproducer's guest)
#   docs/matrix/<kernel>.json the suite's JSON report, .tap its TAP output
#   docs/matrix/<kernel>.run  what ran, when, how long, and how it ended
#                             (written last, after the .json and .tap)
#   docs/matrix/<kernel>.mergeflip  the reproducer's outcome (ci/mergeflip.sh)
#   docs/conformance-matrix.md  the table, regenerated from every .run and
#                             .mergeflip file (and docs/matrix/summary.md, a
#                             reading by hand)
# A column that cannot be built, fetched or booted, or whose guest times out,
# is a failed column with its reason; the others still run. Exit status: 0 if
# every column asked for produced a report, 1 otherwise (failing checks are
# results, not errors), 2 for a bad kernel name.
source "$(dirname "$0")/lib.sh"

ALL_KERNELS=(debian-6.1 debian-6.12 debian-7.3 stock patched-c noksm patched native)
TIMEOUT=${MATRIX_TIMEOUT:-900}      # per guest, boot included
QEMU_WAIT=${MATRIX_QEMU_WAIT:-1800} # how long to wait for someone else's qemu
BUILD_WAIT=${MATRIX_BUILD_WAIT:-3600} # ... and for someone else's build of a variant
MERGEFLIP_ROUNDS=${MATRIX_MERGEFLIP_ROUNDS:-1000}
MERGEFLIP_SECONDS=${MATRIX_MERGEFLIP_SECONDS:-60}
CONFORM=$KSMRS_ROOT/rust/target/release/ksm-conform
GENERATE=$KSMRS_ROOT/rust/target/release/ksm-matrix
DOCS=$KSMRS_ROOT/docs/matrix
OUT=$KSMRS_ROOT/out/matrix
# Kernel warnings worth a note in a column (extended regex; ci/lib.sh's list).
SPLATS=${KSMRS_SPLATS:-'BUG:|WARNING:|Oops|Kernel panic|KASAN:|possible circular locking|inconsistent lock state|UBSAN:'}

# Which kernels, checked before anything runs.
kernels=()
for k in "$@"; do
	known=0
	for a in "${ALL_KERNELS[@]}"; do [ "$k" = "$a" ] && known=1; done
	if [ $known = 0 ]; then
		printf '\033[1;31m[ksm-rs] error:\033[0m unknown kernel "%s" in KERNELS; known: %s\n' "$k" "${ALL_KERNELS[*]}" >&2
		exit 2
	fi
	[[ " ${kernels[*]} " == *" $k "* ]] || kernels+=("$k")
done
[ ${#kernels[@]} -gt 0 ] || kernels=("${ALL_KERNELS[@]}")
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "MATRIX_TIMEOUT must be seconds, got '$TIMEOUT'"
[[ $QEMU_WAIT =~ ^[0-9]+$ ]] || die "MATRIX_QEMU_WAIT must be seconds, got '$QEMU_WAIT'"
[[ $BUILD_WAIT =~ ^[0-9]+$ ]] || die "MATRIX_BUILD_WAIT must be seconds, got '$BUILD_WAIT'"
[[ $MERGEFLIP_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "MATRIX_MERGEFLIP_ROUNDS must be a positive number, got '$MERGEFLIP_ROUNDS'"
[[ $MERGEFLIP_SECONDS =~ ^[1-9][0-9]*$ ]] || die "MATRIX_MERGEFLIP_SECONDS must be seconds, got '$MERGEFLIP_SECONDS'"
[ "$(id -u)" = 0 ] || die "the matrix needs root (the native column, and guests run the suite as root)"

# What `make suite` does, after the names were checked: a typo in KERNELS
# is reported at once, not after a first-time setup.
"$KSMRS_ROOT/ci/setup.sh"
(cd "$KSMRS_ROOT/rust" && cargo build --release --locked -q) || die "building ksm-conform and ksm-matrix failed"

mkdir -p "$DOCS" "$OUT"
matrix_start=$(date +%s)
# shellcheck disable=SC1091 # the machine's, not ours
HOST="$(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), $(qemu-system-x86_64 --version 2>/dev/null | head -n 1 || echo "no QEMU")"
log "matrix: ${kernels[*]} (guest timeout ${TIMEOUT}s)"

# wait_while_running PATTERN LIMIT WHAT: wait until no process matches
# PATTERN (pgrep -f), saying WHAT once a minute; 1 after LIMIT seconds.
wait_while_running() {
	local pattern=$1 limit=$2 what=$3 waited=0 pids
	while pids=$(pgrep -f "$pattern" | paste -sd' ' -); [ -n "$pids" ]; do
		[ "$waited" -ge "$limit" ] && return 1
		[ $((waited % 60)) = 0 ] && log "$what (pid $pids, ${waited}s so far)"
		sleep 10
		waited=$((waited + 10))
	done
}

# Wait until no qemu runs on this machine: one guest at a time on 2 cores.
wait_for_qemu() {
	wait_while_running '^(\S*/)?qemu-system' "$QEMU_WAIT" "$k: waiting for another qemu to finish"
}

# Wait while someone builds variant $1 with ci/kernel.sh: its bzImage is
# about to be replaced, and a second build in the same directory breaks both.
wait_for_build() {
	wait_while_running "ci/kernel\.sh $1( |\$)" "$BUILD_WAIT" "$1: waiting for a running 'ci/kernel.sh $1' to finish"
}

# The last error line of a log, without colours.
last_error() {
	{ sed -E 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -E 'error:|ksm-conform: skip:' | tail -n 1 | sed -E 's/.*(error|skip): *//'; } || true
}

# tee_stderr FILE CMD...: CMD's stderr both on ours and in FILE, its stdout
# untouched; returns CMD's status.
tee_stderr() {
	local f=$1 rc
	shift
	{ "$@" 2>&1 1>&3 3>&- | tee "$f" >&2; rc=${PIPESTATUS[0]}; } 3>&1
	return "$rc"
}

# build_variant K TREE FILE: make the kernel trees if TREE is missing, write
# to FILE the commit of TREE the build starts from ("<sha>", or "<sha> dirty"
# with uncommitted changes to tracked files), and build K with ci/kernel.sh,
# which is incremental: the bzImage is then what TREE holds.
# shellcheck disable=SC2317 # run through tee_stderr
build_variant() {
	local sha
	{ [ -f "$2/Makefile" ] || "$KSMRS_ROOT/ci/tree.sh"; } &&
		sha=$(tgit -C "$2" rev-parse HEAD) &&
		if [ -n "$(tgit -C "$2" status --porcelain --untracked-files=no)" ]; then
			echo "$sha dirty"
		else
			echo "$sha"
		fi >"$3" &&
		"$KSMRS_ROOT/ci/kernel.sh" "$1"
}

# describe_build TREE FILE: 'commit <short> "<subject>"' for what
# build_variant wrote to FILE.
describe_build() {
	local sha dirty
	read -r sha dirty <"$2" || return 0
	printf 'commit %s%s' "$(tgit -C "$1" log -1 --format='%h "%s"' "$sha")" "${dirty:+ with uncommitted changes}"
}

# run_column K: fetch or build, boot, run; leaves docs/matrix/K.{run,json,tap}.
run_column() {
	local k=$1 res=$OUT/$1 kernel="" config="" title="" how="" status=ok reason="" tree="" from=""
	local started t0 t1 tb linux_version splat fetch_s=0 wait_s=0 build_wait=0 run_s=0 rc=0 args=(--fresh-boot) ready=
	rm -rf "$res"
	mkdir -p "$res"
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	t0=$(date +%s)
	how="virtme-ng $VIRTME_NG_VERSION guest under TCG: 2 vCPUs, 2 NUMA nodes, 2 GiB, 512 MiB zram swap; ksm-conform --fresh-boot"

	# Phase 1: the kernel.
	case "$k" in
		debian-*)
			log "[$k] fetch: pinned Debian packages"
			if kernel=$(tee_stderr "$res/fetch.log" "$KSMRS_ROOT/ci/debian-kernel.sh" "$k"); then
				config=$(compgen -G "$kernel/boot/config-*" || compgen -G "$kernel/usr/lib/modules/*/config" || true)
				title="Debian $(sed -e 's/=/ /g' -e 's/ \([a-z]\)/, \1/g' "$kernel/.ksm-rs-unpacked")"
			else
				status=failed reason="fetching the Debian packages failed: $(last_error "$res/fetch.log")"
			fi
			;;
		stock|patched-c|noksm|patched)
			kernel=$(variant_out "$k")
			tree=$TREE
			[ "$k" = stock ] && tree=$STOCK_TREE
			tb=$(date +%s)
			wait_for_build "$k" || status=failed reason="ci/kernel.sh $k was still running after ${BUILD_WAIT}s"
			build_wait=$(($(date +%s) - tb))
			if [ "$status" = ok ]; then
				# Always, not only when no bzImage is there: an up to date build
				# costs little, and a stale one would not be what the tree holds.
				log "[$k] build: ci/kernel.sh $k ($tree)"
				if ! tee_stderr "$res/build.log" build_variant "$k" "$tree" "$res/built-from"; then
					status=failed reason="ci/kernel.sh $k failed: $(last_error "$res/build.log")"
				fi
			fi
			[ -s "$res/built-from" ] && from=$(describe_build "$tree" "$res/built-from")
			config=$kernel/.config
			case "$k" in
				stock) title="our 7.3 build, pristine ($LINUX_SRC_PKG $LINUX_SRC_VERSION${from:+, $from}; kernel-config base, mm, rust)" ;;
				noksm) title="our 7.3 build with the series${from:+ at $from}, CONFIG_KSM=n (kernel-config base, mm, rust, noksm)" ;;
				patched-c) title="our 7.3 build with the series${from:+ at $from}, the C choice (kernel-config base, mm, rust, ksm-rs, ksm-c)" ;;
				patched) title="our 7.3 build with the series${from:+ at $from}, the Rust choice (kernel-config base, mm, rust, ksm-rs)" ;;
			esac
			[ -f "$kernel/arch/x86/boot/bzImage" ] &&
				title="$title, built $(date -u -r "$kernel/arch/x86/boot/bzImage" '+%F %R UTC')"
			if [ "$k" = noksm ]; then
				args=(--without-ksm)
				how=${how/--fresh-boot/--without-ksm}
			fi
			;;
		native)
			title="this machine's running kernel"
			how="natively on the host ($(nproc) CPUs), as root; ksm-conform (not a fresh boot)"
			;;
	esac
	t1=$(date +%s)
	fetch_s=$((t1 - t0 - build_wait))
	# The kernel the reproducer of issue 11 boots: only one fetched or built.
	[ "$status" = ok ] && ready=$kernel

	# Phase 2: boot and run.
	# A native run waits for qemu too: QEMU advises guest memory mergeable,
	# and the checks of global counters skip while another process uses KSM.
	if [ "$status" = ok ] && ! wait_for_qemu; then
		status=failed reason="another qemu was still running after ${QEMU_WAIT}s"
	fi
	wait_s=$(($(date +%s) - t1 + build_wait))
	t1=$(date +%s)
	if [ "$status" = ok ] && [ "$k" = native ]; then
		log "[$k] run: ksm-conform on $(uname -r)"
		"$KSMRS_ROOT/virtme/guest-matrix.sh" --record-sysfs "$res/sysfs.txt"
		tee_stderr "$res/run.log" "$CONFORM" --json "$res/conform.json" | tee "$res/conform.tap" || rc=$?
		[ -f "$res/conform.json" ] || status=failed reason="ksm-conform exited with $rc and wrote no report: $(last_error "$res/run.log")"
	elif [ "$status" = ok ]; then
		log "[$k] boot and run: $kernel"
		tee_stderr "$res/run.log" "$KSMRS_ROOT/virtme/boot.sh" --kernel "$kernel" --rwdir "$res" --log "$res/console.log" \
			--timeout "$TIMEOUT" -- "$KSMRS_ROOT/virtme/guest-matrix.sh" "$config" "$res" "$CONFORM" "${args[@]}" || rc=$?
		if [ ! -f "$res/conform.json" ]; then
			reason=$(last_error "$res/run.log")
			[ -n "$reason" ] || reason="the guest exited with status $rc and left no report"
			panic=$(grep -m1 -E 'Kernel panic' "$res/console.log" 2>/dev/null | sed -E 's/^\[ *[0-9.]+\] //') || true
			status=failed reason="$reason${panic:+ ($panic)}"
		fi
	fi
	run_s=$(($(date +%s) - t1))

	if [ "$k" = native ]; then
		linux_version=$(cat /proc/version)
	else
		linux_version=$(grep -m1 -o 'Linux version .*' "$res/dmesg.txt" 2>/dev/null) || true
	fi
	splat=$(grep -m1 -E "$SPLATS" "$res/console.log" 2>/dev/null | sed -E 's/^\[ *[0-9.]+\] //') || true
	{
		echo "kernel=$k"
		echo "title=$title"
		echo "how=$how"
		echo "host=$HOST"
		echo "started=$started"
		echo "fetch_seconds=$fetch_s"
		echo "run_seconds=$run_s"
		echo "wait_seconds=$wait_s"
		echo "status=$status"
		# One line, paths relative to the repository (the page is committed).
		[ -n "$reason" ] && echo "reason=$(echo "${reason//$KSMRS_ROOT\//}" | tr '\n\t' '  ' | sed 's/ *$//')"
		[ -n "$splat" ] && echo "console_splat=$splat"
		[ -n "$linux_version" ] && echo "linux_version=$linux_version"
		[ "$status" = ok ] && echo "report=$k.json" && echo "tap=$k.tap"
		if [ -s "$res/sysfs.txt" ]; then sed 's/^\([^ ]*\) \{0,1\}/sysfs.\1=/' "$res/sysfs.txt"; fi
	} >"$DOCS/$k.run.tmp"
	# Results beside the docs, each renamed into place, the .run last: it is
	# what names the others. A failed column leaves no stale report behind.
	if [ "$status" = ok ]; then
		cp "$res/conform.json" "$DOCS/$k.json.tmp"
		cp "$res/conform.tap" "$DOCS/$k.tap.tmp"
		mv "$DOCS/$k.json.tmp" "$DOCS/$k.json"
		mv "$DOCS/$k.tap.tmp" "$DOCS/$k.tap"
		mv "$DOCS/$k.run.tmp" "$DOCS/$k.run"
	else
		mv "$DOCS/$k.run.tmp" "$DOCS/$k.run"
		rm -f "$DOCS/$k.json" "$DOCS/$k.tap"
	fi

	if [ "$status" = ok ]; then
		log "[$k] done: $(tail -n 1 "$res/conform.tap") (kernel ${fetch_s}s, waited ${wait_s}s, run ${run_s}s)"
	else
		log "[$k] FAILED: $reason"
	fi
	mergeflip_column "$k" "$ready"
}

# mergeflip_column K KERNEL: the reproducer of issue 11 in a guest of its own
# of KERNEL (what column K booted; empty if there was none); leaves
# docs/matrix/K.mergeflip, a crash as the column's finding.
mergeflip_column() {
	local k=$1 kernel=$2 res=$OUT/$1/mergeflip
	rm -rf "$res"
	if [ "$k" = native ]; then
		printf 'kernel=native\noutcome=skipped\nreason=never natively: on a kernel with the bug it crashes the host\n'
	elif [ -z "$kernel" ]; then
		printf 'kernel=%s\noutcome=failed\nreason=no kernel to boot: %s\n' "$k" "$reason"
	else
		log "[$k] mergeflip: up to $MERGEFLIP_ROUNDS rounds or $MERGEFLIP_SECONDS s"
		# Its exit status says crashed or not: both are results here. Its
		# progress goes to our stderr, only the result to the file.
		"$KSMRS_ROOT/ci/mergeflip.sh" --rounds "$MERGEFLIP_ROUNDS" --seconds "$MERGEFLIP_SECONDS" \
			--results "$res" "$k=$kernel" >&2 || true
		cat "$res/$k/result" 2>/dev/null ||
			printf 'kernel=%s\noutcome=failed\nreason=ci/mergeflip.sh left no result (see out/matrix/%s/mergeflip)\n' "$k" "$k"
	fi >"$DOCS/$k.mergeflip.tmp"
	mv "$DOCS/$k.mergeflip.tmp" "$DOCS/$k.mergeflip"
	log "[$k] mergeflip: $(sed -n 's/^outcome=//p' "$DOCS/$k.mergeflip")"
}

n=0
for k in "${kernels[@]}"; do
	n=$((n + 1))
	log "== [$n/${#kernels[@]}] $k ($(since "$matrix_start") s into the matrix)"
	run_column "$k"
done

# The table, from every column run so far (this run's and earlier ones').
runs=() flips=()
for k in "${ALL_KERNELS[@]}"; do
	[ -f "$DOCS/$k.run" ] && runs+=("$DOCS/$k.run")
	[ -f "$DOCS/$k.mergeflip" ] && flips+=(--mergeflip "$DOCS/$k.mergeflip")
done
log "writing docs/conformance-matrix.md from ${#runs[@]} column(s)"
# docs/matrix/summary.md, if there, is a reading of the results by hand.
summary=()
[ -f "$DOCS/summary.md" ] && summary=(--summary "$DOCS/summary.md")
# Pairs compared check by check, of the columns there are (ksm-matrix refuses
# a pair naming a missing one).
pairs=()
for p in stock,patched stock,patched-c debian-7.3,stock; do
	[ -f "$DOCS/${p%,*}.run" ] && [ -f "$DOCS/${p#*,}.run" ] && pairs+=(--pair "$p")
done
"$GENERATE" --out "$KSMRS_ROOT/docs/conformance-matrix.md" "${summary[@]}" "${pairs[@]}" "${flips[@]}" "${runs[@]}"

total=$(since "$matrix_start")
echo
printf '%-12s %-7s %8s %8s %8s %-9s %s\n' kernel status kernel_s wait_s run_s mergeflip result
bad=0
for k in "${kernels[@]}"; do
	st=$(sed -n 's/^status=//p' "$DOCS/$k.run")
	if [ "$st" = ok ]; then
		what=$(tail -n 1 "$DOCS/$k.tap")
	else
		what=$(sed -n 's/^reason=//p' "$DOCS/$k.run") bad=1
	fi
	printf '%-12s %-7s %8s %8s %8s %-9s %s\n' "$k" "$st" "$(sed -n 's/^fetch_seconds=//p' "$DOCS/$k.run")" \
		"$(sed -n 's/^wait_seconds=//p' "$DOCS/$k.run")" "$(sed -n 's/^run_seconds=//p' "$DOCS/$k.run")" \
		"$(sed -n 's/^outcome=//p' "$DOCS/$k.mergeflip" 2>/dev/null)" "$what"
done
echo "matrix of ${#kernels[@]} kernel(s) in ${total} s; table: docs/conformance-matrix.md"
exit $bad
