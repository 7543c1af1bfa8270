// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * ksmcount: a QEMU TCG plugin that counts the instructions a Linux guest
 * executes on ksmd's behalf, exactly and per kernel function.
 *
 *   qemu-system-x86_64 ... -plugin ksmcount.so,map=System.map,out=FILE
 *
 * What it counts (QEMU 7.2's plugin API: no register reads, no guest memory
 * reads, so everything is inferred from instruction addresses and bytes):
 *
 * - Kernel instructions only: at virtual addresses >= 0xffff800000000000.
 *   Each is attributed at translation time to the System.map text symbol
 *   that contains it; a translation block (TB) gets a list of (symbol,
 *   instructions) runs, and one callback per executed TB adds them up. A TB
 *   runs whole unless an instruction in it faults, which ksmd's code does
 *   not do in the normal course.
 * - Only while ksmd is the current task. The task is followed across
 *   context switches: __switch_to_asm loads the next task's stack pointer
 *   with `movq TASK_threadsp(%rsi), %rsp`; a memory callback on that load
 *   sees the address of next->thread.sp, which identifies the task. ksmd
 *   is the task current on a vCPU that executes ksm_scan_thread (which only
 *   ksmd runs). The instructions of a TB after the switch count for the
 *   new task.
 * - Split into ksmd's own instructions and those of interrupts and
 *   exceptions taken while ksmd was current (a TB that starts an IDT entry
 *   stub, asm_exc_* / asm_sysvec_* / irq_entries_start /
 *   spurious_entries_start, opens one; iretq closes it). Both are
 *   reported, by symbol.
 *
 * Windows: a guest program marks a measurement point by executing
 * `nopl 0x4b534dKK(%rax)` (bytes 0f 1f 80 KK 4d 53 4b): KK 0x00 is a mark,
 * KK 0x01 starts a session (a new numbering). At each mark the plugin
 * appends to FILE the instructions since the previous mark:
 *
 *   ksmcount 1 symbols=N map=PATH               header
 *   session S                                   at a session marker
 *   mark SEQ OWN IRQ LATE                        window totals (see below)
 *   f ADDR OWN IRQ NAME                          per symbol, nonzero only
 *   end SEQ
 *   exit OWN IRQ SWITCHES KSMD CONFLICTS SPURIOUS   at the end: cumulative totals
 *
 * SEQ counts marks from 1 within a session (the session's marker is the
 * first). NAME is "?" for code outside the kernel image (modules, BPF),
 * ADDR its symbol's start.
 *
 * A window ends where ksmd is off every vCPU: the guest marks once ksmd
 * sleeps, but ksmd may still be on its way into schedule() on another vCPU
 * (its state reads 'S' from the moment it prepares to sleep). Then the mark
 * is written when ksmd switches out, and LATE says how many of ksmd's
 * instructions that took; a LATE of more than a few thousand means the
 * guest did not wait for ksmd to sleep, and the window is not what it meant.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define KERNEL_START 0xffff800000000000ULL

/* A text symbol of System.map. */
struct sym {
	uint64_t addr;
	char *name;
};

static struct sym *syms;
static size_t nsyms;      /* the last slot, syms[nsyms], is "?" */
static uint64_t image_end; /* _end: past it, code is not the kernel image's */

/* Symbols whose code the plugin must recognise. */
static size_t sym_switch = SIZE_MAX, sym_scan_thread = SIZE_MAX;

/* A run of consecutive instructions of one TB in one symbol. */
struct run {
	uint32_t sym;
	uint32_t n;
};

enum {
	TB_IRQ_ENTRY = 1,  /* starts an IDT entry stub */
	TB_IRET = 2,       /* ends with iretq */
	TB_KSMD = 4,       /* has code of ksm_scan_thread */
	TB_SWITCH = 8,     /* has the load of next->thread.sp */
};

/* What the exec callback of one kernel TB needs. */
struct tbinfo {
	struct tbinfo *next_alloc; /* all of them, freed when TBs are flushed */
	uint16_t flags;
	uint16_t npre;  /* runs before and including the task switch (all, if none) */
	uint16_t npost; /* runs after it: they count for the new task */
	struct run runs[];
};

/*
 * One vCPU's state, written by its own thread only. Counters are read by
 * whichever vCPU executes a marker: relaxed atomics, single writer.
 */
struct vcpu {
	uint64_t task;  /* &current->thread.sp, 0 before the first switch */
	bool is_ksmd;
	int depth;      /* interrupts/exceptions nested while ksmd is current */
	uint64_t *own;  /* per symbol */
	uint64_t *irq;
	uint64_t total; /* own + irq, all symbols */
	uint64_t switches;
	bool expect_switch; /* in a TB with the switching load, before it */
	uint64_t spurious;  /* memory callbacks outside it (see task_switch) */
} __attribute__((aligned(64)));

static struct vcpu *vcpus;
static int nvcpus;

static uint64_t ksmd_task;       /* 0 until learned */
static int ksmd_saved_depth;     /* ksmd's depth while it is switched out */
static uint64_t ksmd_conflicts;  /* ksm_scan_thread run by another task */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the rest */
static struct tbinfo *tb_allocs;
static FILE *out;
static uint64_t *last_own, *last_irq; /* totals at the previous mark */
static uint64_t seq;
static int pending = -1;       /* kind of a mark waiting for ksmd to sleep */
static uint64_t pending_total; /* ksmd's instructions when it was asked for */

static void add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, *c + n, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static void count_runs(struct vcpu *v, const struct run *r, int n)
{
	uint64_t *c = v->depth > 0 ? v->irq : v->own;
	uint64_t sum = 0;

	for (int i = 0; i < n; i++) {
		add(&c[r[i].sym], r[i].n);
		sum += r[i].n;
	}
	add(&v->total, sum);
}

static uint64_t ksmd_total(void)
{
	uint64_t t = 0;

	for (int c = 0; c < nvcpus; c++)
		t += load(&vcpus[c].total);
	return t;
}

static void write_mark(int kind, uint64_t late);

static void tb_exec(unsigned int vcpu_index, void *udata)
{
	struct tbinfo *ti = udata;
	struct vcpu *v = &vcpus[vcpu_index];

	v->expect_switch = ti->flags & TB_SWITCH;
	if (ti->flags & TB_KSMD && v->task) {
		uint64_t k = __atomic_load_n(&ksmd_task, __ATOMIC_RELAXED);

		if (!k) {
			__atomic_store_n(&ksmd_task, v->task, __ATOMIC_RELAXED);
			__atomic_store_n(&v->is_ksmd, true, __ATOMIC_RELAXED);
			v->depth = 0;
		} else if (k != v->task) {
			__atomic_fetch_add(&ksmd_conflicts, 1, __ATOMIC_RELAXED);
		}
	}
	if (!v->is_ksmd)
		return;
	if (ti->flags & TB_IRQ_ENTRY)
		v->depth++;
	count_runs(v, ti->runs, ti->npre);
	if (ti->flags & TB_IRET && v->depth > 0)
		v->depth--;
}

/*
 * The load of next->thread.sp in __switch_to_asm.
 *
 * QEMU 7.2 calls memory callbacks registered for reads only on stores
 * (plugin-gen.c's op_rw() tests cb->rw against the access's rw + 1), so the
 * callback is registered for reads and writes; the instruction only reads.
 * 7.2 also leaves an instruction's callbacks armed after its TB in some
 * paths, and later memory accesses made by helpers call them: only the
 * first call after the exec callback of a TB holding the load is taken.
 */
static void task_switch(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
			uint64_t vaddr, void *udata)
{
	struct tbinfo *ti = udata;
	struct vcpu *v = &vcpus[vcpu_index];
	bool next_is_ksmd;

	if (!v->expect_switch) {
		v->spurious++;
		return;
	}
	v->expect_switch = false;
	next_is_ksmd = vaddr == __atomic_load_n(&ksmd_task, __ATOMIC_RELAXED);

	v->task = vaddr;
	v->switches++;
	if (v->is_ksmd) {
		/* ksmd leaves: a mark that waited for it is due now. */
		pthread_mutex_lock(&lock);
		ksmd_saved_depth = v->depth;
		__atomic_store_n(&v->is_ksmd, next_is_ksmd, __ATOMIC_RELAXED);
		if (pending >= 0 && !next_is_ksmd) {
			write_mark(pending, ksmd_total() - pending_total);
			pending = -1;
		}
		pthread_mutex_unlock(&lock);
	} else {
		__atomic_store_n(&v->is_ksmd, next_is_ksmd, __ATOMIC_RELAXED);
	}
	v->depth = v->is_ksmd ? ksmd_saved_depth : 0;
	if (v->is_ksmd)
		count_runs(v, ti->runs + ti->npre, ti->npost);
}

static size_t sym_of(uint64_t addr)
{
	size_t lo = 0, hi = nsyms;

	if (!nsyms || addr < syms[0].addr || addr >= image_end)
		return nsyms;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (syms[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Whether a TB starting at addr (in symbol s) enters the kernel from the IDT. */
static bool idt_entry(uint64_t addr, size_t s)
{
	const char *name;

	if (s == nsyms)
		return false;
	name = syms[s].name;
	if (starts_with(name, "irq_entries_start") ||
	    starts_with(name, "spurious_entries_start"))
		return true;
	return addr == syms[s].addr &&
	       (starts_with(name, "asm_exc_") || starts_with(name, "asm_sysvec_"));
}

/* movq disp(%rsi), %rsp: REX.W 8b, ModRM reg=rsp rm=rsi, disp8 or disp32. */
static bool loads_rsp_from_rsi(const uint8_t *b, size_t n)
{
	return (n == 4 && b[0] == 0x48 && b[1] == 0x8b && b[2] == 0x66) ||
	       (n == 7 && b[0] == 0x48 && b[1] == 0x8b && b[2] == 0xa6);
}

static void marker(unsigned int vcpu_index, void *udata);

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	uint64_t start = qemu_plugin_tb_vaddr(tb);
	struct tbinfo *ti;
	size_t switch_at = SIZE_MAX;
	int nruns = 0;
	uint32_t cur = UINT32_MAX;

	if (start < KERNEL_START) {
		/* User code: only markers matter. */
		for (size_t i = 0; i < n; i++) {
			struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
			const uint8_t *b = qemu_plugin_insn_data(insn);

			if (qemu_plugin_insn_size(insn) == 7 && b[0] == 0x0f &&
			    b[1] == 0x1f && b[2] == 0x80 && b[4] == 0x4d &&
			    b[5] == 0x53 && b[6] == 0x4b && b[3] <= 1)
				qemu_plugin_register_vcpu_insn_exec_cb(
					insn, marker, QEMU_PLUGIN_CB_NO_REGS,
					(void *)(uintptr_t)b[3]);
		}
		return;
	}

	/* At most one run per instruction, plus one where a switch splits one. */
	ti = calloc(1, sizeof(*ti) + (n + 1) * sizeof(struct run));
	if (!ti)
		abort();
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint64_t a = qemu_plugin_insn_vaddr(insn);
		size_t s = sym_of(a);

		if (i == 0 && idt_entry(a, s))
			ti->flags |= TB_IRQ_ENTRY;
		if (s == sym_scan_thread)
			ti->flags |= TB_KSMD;
		if (s == sym_switch && switch_at == SIZE_MAX &&
		    loads_rsp_from_rsi(qemu_plugin_insn_data(insn),
				       qemu_plugin_insn_size(insn))) {
			switch_at = i;
			ti->flags |= TB_SWITCH;
			qemu_plugin_register_vcpu_mem_cb(insn, task_switch,
							 QEMU_PLUGIN_CB_NO_REGS,
							 QEMU_PLUGIN_MEM_RW, ti);
		}
		if (i == n - 1 && qemu_plugin_insn_size(insn) == 2) {
			const uint8_t *b = qemu_plugin_insn_data(insn);

			if (b[0] == 0x48 && b[1] == 0xcf)
				ti->flags |= TB_IRET;
		}
		/* A new run at a new symbol, and after the switching load. */
		if (s != cur || (switch_at != SIZE_MAX && i == switch_at + 1)) {
			if (switch_at != SIZE_MAX && i == switch_at + 1)
				ti->npre = nruns;
			ti->runs[nruns].sym = s;
			ti->runs[nruns].n = 0;
			nruns++;
			cur = s;
		}
		ti->runs[nruns - 1].n++;
	}
	if (switch_at == SIZE_MAX || switch_at == n - 1) {
		ti->npre = nruns;
		ti->npost = 0;
	} else {
		ti->npost = nruns - ti->npre;
	}
	pthread_mutex_lock(&lock);
	ti->next_alloc = tb_allocs;
	tb_allocs = ti;
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, ti);
}

/* Every TB is gone: so are the tbinfos their callbacks pointed to. */
static void tb_flush(qemu_plugin_id_t id)
{
	pthread_mutex_lock(&lock);
	while (tb_allocs) {
		struct tbinfo *next = tb_allocs->next_alloc;

		free(tb_allocs);
		tb_allocs = next;
	}
	pthread_mutex_unlock(&lock);
}

static void totals(uint64_t s, uint64_t *own, uint64_t *irq)
{
	*own = *irq = 0;
	for (int c = 0; c < nvcpus; c++) {
		*own += load(&vcpus[c].own[s]);
		*irq += load(&vcpus[c].irq[s]);
	}
}

/* With the lock held. */
static void write_mark(int kind, uint64_t late)
{
	static uint64_t sessions;
	uint64_t own_sum = 0, irq_sum = 0;

	if (kind == 1) {
		seq = 0;
		fprintf(out, "session %" PRIu64 "\n", ++sessions);
	}
	for (size_t s = 0; s <= nsyms; s++) {
		uint64_t own, irq;

		totals(s, &own, &irq);
		own_sum += own - last_own[s];
		irq_sum += irq - last_irq[s];
	}
	fprintf(out, "mark %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", ++seq,
		own_sum, irq_sum, late);
	for (size_t s = 0; s <= nsyms; s++) {
		uint64_t own, irq;

		totals(s, &own, &irq);
		if (own != last_own[s] || irq != last_irq[s])
			fprintf(out, "f %" PRIx64 " %" PRIu64 " %" PRIu64 " %s\n",
				s < nsyms ? syms[s].addr : 0, own - last_own[s],
				irq - last_irq[s], s < nsyms ? syms[s].name : "?");
		last_own[s] = own;
		last_irq[s] = irq;
	}
	fprintf(out, "end %" PRIu64 "\n", seq);
	fflush(out);
}

static void marker(unsigned int vcpu_index, void *udata)
{
	int kind = (int)(uintptr_t)udata;
	bool busy = false;

	pthread_mutex_lock(&lock);
	for (int c = 0; c < nvcpus; c++)
		busy |= c != (int)vcpu_index &&
			__atomic_load_n(&vcpus[c].is_ksmd, __ATOMIC_RELAXED);
	if (busy) {
		if (pending >= 0) /* a mark is lost: say so in the sequence */
			write_mark(pending, UINT64_MAX);
		pending = kind;
		pending_total = ksmd_total();
	} else {
		write_mark(kind, 0);
	}
	pthread_mutex_unlock(&lock);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	uint64_t own = 0, irq = 0, switches = 0, spurious = 0;

	for (int c = 0; c < nvcpus; c++) {
		for (size_t s = 0; s <= nsyms; s++) {
			own += vcpus[c].own[s];
			irq += vcpus[c].irq[s];
		}
		switches += vcpus[c].switches;
		spurious += vcpus[c].spurious;
	}
	fprintf(out, "exit %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIx64 " %" PRIu64 " %" PRIu64 "\n",
		own, irq, switches, ksmd_task, ksmd_conflicts, spurious);
	fclose(out);
}

static int by_addr(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	return strcmp(x->name, y->name);
}

/*
 * The text symbols of a System.map, sorted; of aliases (one address, several
 * names) the first by name stands for all.
 */
static int read_map(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024], name[512], type;
	uint64_t addr;
	size_t cap = 0, n = 0;

	if (!f) {
		fprintf(stderr, "ksmcount: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%" SCNx64 " %c %511s", &addr, &type, name) != 3)
			continue;
		if (!strcmp(name, "_end"))
			image_end = addr;
		if (!strchr("tTwW", type) || addr < KERNEL_START)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			syms = realloc(syms, cap * sizeof(*syms));
			if (!syms)
				abort();
		}
		syms[n].addr = addr;
		syms[n].name = strdup(name);
		n++;
	}
	fclose(f);
	qsort(syms, n, sizeof(*syms), by_addr);
	nsyms = 0;
	for (size_t i = 0; i < n; i++) {
		if (nsyms && syms[nsyms - 1].addr == syms[i].addr) {
			free(syms[i].name);
			continue;
		}
		syms[nsyms++] = syms[i];
	}
	for (size_t i = 0; i < nsyms; i++) {
		if (!strcmp(syms[i].name, "__switch_to_asm"))
			sym_switch = i;
		if (!strcmp(syms[i].name, "ksm_scan_thread"))
			sym_scan_thread = i;
	}
	if (!nsyms || !image_end || sym_switch == SIZE_MAX || sym_scan_thread == SIZE_MAX) {
		fprintf(stderr,
			"ksmcount: %s lacks _end, __switch_to_asm or ksm_scan_thread: not the System.map of a KSM kernel\n",
			path);
		return -1;
	}
	return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
					   const qemu_info_t *info, int argc,
					   char **argv)
{
	const char *map = NULL, *outpath = NULL;

	for (int i = 0; i < argc; i++) {
		if (starts_with(argv[i], "map="))
			map = argv[i] + 4;
		else if (starts_with(argv[i], "out="))
			outpath = argv[i] + 4;
		else {
			fprintf(stderr, "ksmcount: unknown argument %s (map=, out=)\n", argv[i]);
			return -1;
		}
	}
	if (!map || !outpath) {
		fprintf(stderr, "ksmcount: needs map=System.map and out=FILE\n");
		return -1;
	}
	if (info->system_emulation == false) {
		fprintf(stderr, "ksmcount: counts a system guest's kernel, not a user-mode program\n");
		return -1;
	}
	if (read_map(map))
		return -1;
	out = fopen(outpath, "w");
	if (!out) {
		fprintf(stderr, "ksmcount: cannot write %s: %s\n", outpath, strerror(errno));
		return -1;
	}
	nvcpus = info->system.max_vcpus;
	vcpus = aligned_alloc(64, nvcpus * sizeof(*vcpus));
	if (!vcpus)
		abort();
	memset(vcpus, 0, nvcpus * sizeof(*vcpus));
	for (int c = 0; c < nvcpus; c++) {
		vcpus[c].own = calloc(nsyms + 1, sizeof(uint64_t));
		vcpus[c].irq = calloc(nsyms + 1, sizeof(uint64_t));
		if (!vcpus[c].own || !vcpus[c].irq)
			abort();
	}
	last_own = calloc(nsyms + 1, sizeof(uint64_t));
	last_irq = calloc(nsyms + 1, sizeof(uint64_t));
	if (!last_own || !last_irq)
		abort();
	fprintf(out, "ksmcount 1 symbols=%zu map=%s\n", nsyms, map);
	fflush(out);
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_flush_cb(id, tb_flush);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
