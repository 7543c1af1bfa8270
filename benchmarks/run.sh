#!/usr/bin/env bash
# `make bench`: what ksmd costs on the stock 7.3 kernel (C) against the
# patched one (Rust), in instructions the guest executes for ksmd, counted
# exactly and per function by the ksmcount QEMU plugin
# (benchmarks/plugin/ksmcount.c; how and why: docs/benchmarks.md).
#
#   benchmarks/run.sh [--quick] [--no-icount] [--no-sync] [--no-build] [--boots N]
#                     [--out DIR] [-- COUNT-OPTIONS]
#
#   --quick     a developer's loop: 16 and 64 MiB, one boot of each kernel,
#               no criterion benchmarks
#   --no-icount run QEMU without -icount shift=0,sleep=off: multi-threaded
#               TCG, whose vCPUs interleave as the host schedules them, so that
#               ksmd's spinning on contended locks varies from run to run
#               (measured: up to 4.6% per scanned page at 16 MiB, against 0.01%
#               with it; docs/benchmarks.md)
#   --no-sync   skip the criterion benchmarks of the synchronous paths
#   --no-build  boot the kernels as they are built now (no ci/kernel.sh)
#   --boots N   boots of each kernel, alternating (default 2: stock, patched,
#               patched, stock)
#   --out DIR   results (default out/bench)
#   COUNT-OPTIONS go to `ksm-bench count` in each guest (default: every
#               workload at 64, 256 and 1024 MiB, one steady scan each)
#
# In each guest `ksm-bench count` steps ksmd one full scan at a time and
# marks each scan; on the host `ksm-bench join` joins the plugin's counts
# with the guest's log, and `ksm-bench counts` prints both kernels side by
# side (counts.txt) and plots the cost per scanned page (cost-per-page.svg).
# Then each guest times KSM's synchronous paths with criterion
# (rust/ksm-bench/benches/sync_paths.rs; sync.txt; TCG wall clock). Per
# boot: BOOT.ksmcount (the plugin's output), BOOT.log (the guest's),
# BOOT.json (joined), BOOT-console.log; criterion/ (the baselines).
source "$(dirname "$0")/../ci/lib.sh"

quick=0 icount=1 sync=1 build=1 boots=2 res=$KSMRS_ROOT/out/bench
while [ $# -gt 0 ]; do
	case "$1" in
		--quick) quick=1; shift ;;
		--no-icount) icount=0; shift ;;
		--no-sync) sync=0; shift ;;
		--no-build) build=0; shift ;;
		--boots) boots=$2; shift 2 ;;
		--out) res=$2; shift 2 ;;
		--) shift; break ;;
		-h|--help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		*) die "unknown option $1 (see --help)" ;;
	esac
done
[[ $boots =~ ^[1-9][0-9]?$ ]] || die "--boots must be 1..99, got '$boots'"
count_args=("$@")
if [ ${#count_args[@]} = 0 ]; then
	if [ "$quick" = 1 ]; then
		count_args=(--mib 16 --mib 64)
		boots=1 sync=0
	else
		count_args=(--mib 64 --mib 256 --mib 1024 --steady-scans 1)
	fi
fi
# The guest needs twice the largest mapping available (ksm-bench checks).
biggest=$(printf '%s\n' "${count_args[@]}" | awk 'prev == "--mib" && $1 > m { m = $1 } { prev = $1 } END { print m + 0 }')
memory=$(( biggest >= 512 ? (biggest * 3 / 1024 + 2) : 2 ))G

bench=$KSMRS_ROOT/rust/target/release/ksm-bench
[ -x "$bench" ] || die "no $bench: build it with 'make suite'"
plugin=$("$KSMRS_ROOT/benchmarks/plugin/build.sh")
sync_bench=""
if [ "$sync" = 1 ]; then
	log "building the criterion benchmarks of the synchronous paths"
	sync_bench=$(cd "$KSMRS_ROOT/rust" &&
		cargo bench --locked -q -p ksm-bench --bench sync_paths --no-run --message-format=json 2>/dev/null |
		sed -n 's/.*"executable":"\([^"]*sync_paths[^"]*\)".*/\1/p' | tail -n 1)
	[ -x "$sync_bench" ] || die "cannot build the sync_paths benchmark: cd rust && cargo bench --bench sync_paths --no-run"
fi
qemu=tcg
qemu_opts=()
if [ "$icount" = 1 ]; then
	qemu="tcg -icount shift=0,sleep=off"
	qemu_opts=(--qemu-opts "-icount shift=0,sleep=off")
fi

for variant in stock patched; do
	if [ "$build" = 1 ]; then
		"$KSMRS_ROOT/ci/kernel.sh" "$variant"
	fi
	out=$(variant_out "$variant")
	for f in arch/x86/boot/bzImage System.map vmlinux.a; do
		[ -f "$out/$f" ] || die "no $out/$f: build the $variant kernel (ci/kernel.sh $variant)"
	done
done
# The last results go only once there is a run to replace them.
rm -rf "$res"
mkdir -p "$res"
start=$(date +%s)
order=()
for ((b = 1; b <= boots; b++)); do
	if ((b % 2)); then order+=("stock-$b" "patched-$b"); else order+=("patched-$b" "stock-$b"); fi
done
n=0
for boot in "${order[@]}"; do
	n=$((n + 1))
	variant=${boot%-*}
	out=$(variant_out "$variant")
	log "== [$n/${#order[@]}] $boot ($(since "$start") s so far): ksm-bench count ${count_args[*]}"
	# nokaslr: the plugin places instructions by System.map's addresses.
	"$KSMRS_ROOT/virtme/boot.sh" --kernel "$out" --rwdir "$res" --memory "$memory" \
		--log "$res/$boot-console.log" --timeout 14400 --append nokaslr "${qemu_opts[@]}" \
		--qemu-opts "-plugin file=$plugin,map=$out/System.map,out=$res/$boot.ksmcount" -- \
		"$KSMRS_ROOT/benchmarks/guest-bench.sh" "$bench" "$sync_bench" "$res" "$boot" "$variant" \
		"${count_args[@]}" ||
		die "the $boot guest did not complete the benchmark: see $res/$boot-console.log"
	if grep -qE "$KSMRS_SPLATS" "$res/$boot-console.log"; then
		die "kernel splat in the $boot guest: see $res/$boot-console.log"
	fi
	"$bench" join --plugin "$res/$boot.ksmcount" --log "$res/$boot.log" --build "$out" \
		--boot "$boot" --qemu "$qemu" --json "$res/$boot.json"
done

"$bench" counts "$res"/stock-*.json "$res"/patched-*.json --json "$res/counts.json" \
	--svg "$res/cost-per-page.svg" | tee "$res/counts.txt"
if [ "$sync" = 1 ]; then
	"$bench" sync "$res/criterion" | tee "$res/sync.txt"
fi
log "results in $res ($(since "$start") s)"
