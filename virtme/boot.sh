#!/usr/bin/env bash
# Boot a kernel with virtme-ng under TCG and run one command in it.
#
#   virtme/boot.sh [options] -- COMMAND [ARGS...]
#
#   --kernel K     a build directory of ours (ci/kernel.sh), a bzImage, or the
#                  root of an unpacked Debian kernel package (usr/lib/modules/)
#   --memory M     guest memory (default 2G)
#   --nodes N      NUMA nodes, memory split evenly, one CPU each (default 2)
#   --timeout S    kill the guest after S seconds (default 900)
#   --log FILE     console log (default OUT/console.log)
#   --rwdir DIR    a host directory the guest may write (results)
#   --qemu-opts O  more QEMU options, e.g. "-icount shift=0,sleep=off" or
#                  "-plugin file=X.so,arg=..." (repeatable; split at spaces)
#   --append A     more kernel command line (repeatable)
#
# The command's stdout/stderr come back on ours and its exit status is ours;
# 124 if the guest was killed at the timeout (as timeout(1) says it).
# The kernel console is kept in the log; a progress line shows the boot.
source "$(dirname "$0")/../ci/lib.sh"

kernel=$(variant_out patched) memory=2G nodes=2 timeout=900 logfile="" rwdir=""
extra_qemu="" append="proc_mem.force_override=always"
while [ $# -gt 0 ]; do
	case "$1" in
		--kernel) kernel=$2; shift 2 ;;
		--memory) memory=$2; shift 2 ;;
		--nodes) nodes=$2; shift 2 ;;
		--timeout) timeout=$2; shift 2 ;;
		--log) logfile=$2; shift 2 ;;
		--rwdir) rwdir=$2; shift 2 ;;
		--qemu-opts) extra_qemu+=" $2"; shift 2 ;;
		--append) append+=" $2"; shift 2 ;;
		--) shift; break ;;
		-h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) die "unknown option $1 (see --help)" ;;
	esac
done
[ $# -gt 0 ] || die "no command given: virtme/boot.sh [options] -- COMMAND"
[ -x "$VENV/bin/vng" ] || die "virtme-ng is not installed: run ci/setup.sh"
[[ $nodes =~ ^[1-8]$ ]] || die "--nodes must be 1..8, got '$nodes'"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout must be seconds, got '$timeout'"

# What to hand to `vng --run`.
if [ -f "$kernel/arch/x86/boot/bzImage" ]; then
	image=$kernel/arch/x86/boot/bzImage
elif [ -f "$kernel" ]; then
	image=$kernel
else
	images=()
	for i in "$kernel"/usr/lib/modules/*/vmlinuz "$kernel"/boot/vmlinuz-*; do
		if [ -f "$i" ]; then images+=("$i"); fi
	done
	[ ${#images[@]} -gt 0 ] ||
		die "no kernel image at $kernel (build one with ci/kernel.sh, or unpack a Debian kernel)"
	[ ${#images[@]} = 1 ] ||
		die "several kernel images under $kernel (${images[*]}): pass one with --kernel"
	image=${images[0]}
fi

mem_mb=$(numfmt --from=iec "${memory}" 2>/dev/null) || die "--memory: bad size '$memory'"
mem_mb=$((mem_mb / 1048576))
numa=() qemu_opts=()
if [ "$nodes" -gt 1 ]; then
	# One socket per node: CPUs of one socket on two nodes make the
	# scheduler's topology check WARN at boot, noise in every console log.
	qemu_opts=(--qemu-opts "-smp $nodes,sockets=$nodes,cores=1,threads=1")
	for ((i = 0; i < nodes; i++)); do
		numa+=(--numa "$((mem_mb / nodes))M,cpus=$i")
	done
fi
# vng joins its --qemu-opts with spaces into one shell command line. The
# --qemu-opts=VALUE form: argparse would take "-plugin ..." for vng's -p.
[[ $extra_qemu != *[\'\"\;\&\|\$\`]* ]] || die "--qemu-opts: no quotes or shell metacharacters, got '$extra_qemu'"
[ -z "$extra_qemu" ] || qemu_opts+=("--qemu-opts=${extra_qemu# }")

logfile=${logfile:-${rwdir:-$KSMRS_CACHE}/console.log}
mkdir -p "$(dirname "$logfile")"
rw=()
[ -n "$rwdir" ] && { mkdir -p "$rwdir"; rw=(--rwdir "$rwdir"); }

# One guest at a time on this machine: two TCG guests on two cores slow each
# other down, and a benchmark's wall-clock figures would mean nothing.
exec 8>"${KSMRS_LOCK_DIR:-/run/lock}/ksm-rs-qemu.lock"
if ! flock -n 8; then
	log "waiting for another guest on this machine to finish"
	flock 8
fi

log "booting $(basename "$image") ($image) under TCG: ${memory} RAM, $nodes node(s), timeout ${timeout}s; console: $logfile"
start=$(date +%s)

# proc_mem.force_override=always: ksm_functional_tests writes to PROT_NONE
# memory through /proc/self/mem, which kernels since 6.12 (Debian's among
# them) only allow to active ptracers by default.
# The console goes to stderr (--verbose), the command's output to stdout.
# Both must be pipes: QEMU reopens /proc/self/fd/N, which truncates files.
set +e
PATH=$VENV/bin:$PATH timeout -k 10 "$timeout" vng --run "$image" --disable-kvm --verbose \
	--cpus "$nodes" --memory "${mem_mb}M" "${numa[@]}" "${rw[@]}" "${qemu_opts[@]}" \
	--append "$append" \
	-- "$KSMRS_ROOT/virtme/guest-exec.sh" "$@" \
	2> >(awk -v start="$start" -v logf="$logfile" -v splats="$KSMRS_SPLATS" '
		{ print > logf; fflush(logf) }
		!up && /virtme-ng-init:|Run \/init|Freeing unused kernel/ {
			up = 1; printf "[guest] kernel up after %d s\n", systime() - start > "/dev/stderr"
		}
		$0 ~ splats { print "[guest console] " $0 > "/dev/stderr" }
	') | cat
rc=${PIPESTATUS[0]}
set -e
wait
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	printf '\033[1;31m[ksm-rs] error:\033[0m %s\n' "guest did not finish within ${timeout}s; console log: $logfile" >&2
	exit 124
fi
log "guest exited with status $rc after $(since "$start") s"
exit "$rc"
