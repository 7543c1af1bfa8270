# ksm-rs: KSM's trees in Rust beside the C ones, and a conformance suite for KSM.
#
#   make run     the main job: build the patched 7.3 kernel, boot it, run the
#                conformance suite in it, print the report
#   make test    everything that is checked (see ci/test.sh)
#
# Steps they are made of: setup, tree, kernel, c-kernel, stock-kernel, noksm-kernel,
# debug-kernel, selftests, suite, vm CMD=..., patches (regenerate patches/
# from the tree), check-series (each patch builds, CLIPPY=1, rustdoc).
# Beyond make test: compare (stock 7.3 and the series with either choice side by
# side: the suite and the trace oracle; COMPARE_ARGS=... for ci/compare.sh),
# bench (ksmd's cost in instructions counted by a QEMU plugin, BENCH_ARGS=...
# for benchmarks/run.sh; bench-quick: small sizes, one boot each), debug-test
# (the guest tests on the KASAN/lockdep/DEBUG_VM build), matrix (the suite on
# several kernels, KERNELS=... for some), mergeflip KERNELS=... (the reproducer
# of issue 11 in a guest of each), stress DURATION=30m (the stress and fault
# campaign of docs/stress.md on the patched and the stock debug kernels with
# kprobe events, side by side; STRESS_ARGS=... for ci/stress.sh),
# zero-pages-fork KERNELS=... (the reproducer of docs/zero-pages-fork.md).
# Everything heavy lives in $(KSMRS_CACHE) (default ~/.cache/ksm-rs).

SHELL := /bin/bash
KERNEL ?= patched

.PHONY: run test setup tree kernel c-kernel stock-kernel noksm-kernel debug-kernel \
	selftests suite vm patches check-series matrix compare bench bench-quick debug-test mergeflip stress zero-pages-fork

run: suite kernel
	ci/run.sh

test:
	ci/test.sh

setup:
	ci/setup.sh

tree: setup
	ci/tree.sh

kernel: tree
	ci/kernel.sh patched

c-kernel: tree
	ci/kernel.sh patched-c

stock-kernel: tree
	ci/kernel.sh stock

noksm-kernel: tree
	ci/kernel.sh noksm

debug-kernel: tree
	ci/kernel.sh debug

selftests: kernel
	ci/selftests.sh

suite: setup
	cd rust && cargo build --release --locked

# CMD goes to the guest as one shell command line, KERNEL as one path: both
# verbatim ($(value), no make expansion) through the environment, so no
# quoting of theirs can break ours.
vm: override CMD := $(value CMD)
vm: override KERNEL := $(value KERNEL)
export CMD KERNEL
vm:
	@[ -n "$$CMD" ] || { echo 'usage: make vm CMD="command" [KERNEL=patched|stock|noksm|debug|PATH]'; exit 2; }
	virtme/boot.sh --kernel "$$(source ci/lib.sh && case "$$KERNEL" in */*) echo "$$KERNEL";; *) variant_out "$$KERNEL";; esac)" -- sh -c "$$CMD"

patches: tree
	ci/format-patches.sh

check-series: tree
	ci/check-series-full.sh

matrix:
	ci/matrix.sh $(KERNELS)

compare: suite kernel c-kernel stock-kernel
	ci/compare.sh $(COMPARE_ARGS)

bench: suite kernel stock-kernel
	benchmarks/run.sh $(BENCH_ARGS)

bench-quick: suite kernel stock-kernel
	benchmarks/run.sh --quick $(BENCH_ARGS)

debug-test: suite debug-kernel
	ci/debug-test.sh

mergeflip: suite
	ci/mergeflip.sh $(KERNELS)

zero-pages-fork:
	ci/zero-pages-fork.sh $(KERNELS)

DURATION ?= 30m
stress: suite
	ci/stress.sh --duration $(DURATION) $(STRESS_ARGS)
