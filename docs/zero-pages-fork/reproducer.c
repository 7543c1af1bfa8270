// SPDX-License-Identifier: GPL-2.0
/*
 * ksm_zero_pages at fork: the child inherits the parent's count (a memcpy of
 * the mm) instead of counting the KSM zeropages it gets, and ksm_fork() adds
 * that count to the global counter only when dup_mmap() succeeded.
 * docs/zero-pages-fork.md; ci/zero-pages-fork.sh runs it in guests.
 *
 * 256 zero-filled pages at a low address become KSM zeropages
 * (use_zero_pages=1); an untouched 1 GiB private mapping lies above them.
 * 1. With MADV_DONTFORK on the zeropages, a child that copies none of them
 *    must count none, and its exit must leave ksm_zero_pages as it was.
 * 2. With vm.overcommit_memory=2 and a limit with room for everything but
 *    the 1 GiB, fork() copies the zeropages and then fails with ENOMEM at
 *    the 1 GiB mapping's accounting: ksm_zero_pages must stay as it was.
 *
 * Root, in a guest (it takes KSM over and changes overcommit for an
 * instant; everything is put back). Exit 0: the counter stayed right;
 * 1: it drifted; 2: could not set up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define KSM "/sys/kernel/mm/ksm/"
#define NPAGES 256

static long readl(const char *path, const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!key) { v = atol(line); break; }
		if (!strncmp(line, key, strlen(key))) { v = atol(line + strlen(key)); break; }
	}
	fclose(f);
	return v;
}

/* Put back from the last: kbytes before ratio (writing one zeroes the other). */
static char saved[8][64];
static const char *knobs[] = { KSM "use_zero_pages", KSM "pages_to_scan", KSM "sleep_millisecs", KSM "run",
			       "/proc/sys/vm/overcommit_memory", "/proc/sys/vm/overcommit_ratio",
			       "/proc/sys/vm/overcommit_kbytes", NULL };

static int writes(const char *path, const char *v)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(v, f) < 0 || fclose(f)) {
		fprintf(stderr, "write %s=%s: %s\n", path, v, strerror(errno));
		return -1;
	}
	return 0;
}

static void save(void)
{
	for (int i = 0; knobs[i]; i++) {
		FILE *f = fopen(knobs[i], "r");
		if (!f || !fgets(saved[i], sizeof(saved[i]), f)) { perror(knobs[i]); exit(2); }
		fclose(f);
	}
}

static void restore(void)
{
	for (int i = 6; i >= 0; i--)
		writes(knobs[i], saved[i]);
}

int main(void)
{
	long psz = sysconf(_SC_PAGESIZE), g0, g1, own, limit_kb;
	char buf[64];
	save();
	char *a = mmap((void *)0x100000000000UL, NPAGES * psz, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	size_t blen = 1UL << 30;
	char *b = mmap((void *)0x200000000000UL, blen, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED) { perror("mmap"); return 2; }
	for (int i = 0; i < NPAGES; i++)
		a[i * psz] = 0;			/* present, and zero-filled */
	if (writes(KSM "use_zero_pages", "1") || writes(KSM "pages_to_scan", "1000") ||
	    writes(KSM "sleep_millisecs", "0") || writes(KSM "run", "1"))
		goto fail;
	if (madvise(a, NPAGES * psz, MADV_MERGEABLE)) { perror("madvise"); goto fail; }
	for (int t = 0; readl("/proc/self/ksm_stat", "ksm_zero_pages ") < NPAGES; t++) {
		if (t == 600) { fprintf(stderr, "KSM did not map the zero pages in 60 s\n"); goto fail; }
		usleep(100000);
	}
	writes(KSM "run", "0");

	/* 1: the zeropages are not copied (MADV_DONTFORK); the child exits. */
	long d0 = readl(KSM "ksm_zero_pages", NULL), child, d1;
	int fds[2];
	if (madvise(a, NPAGES * psz, MADV_DONTFORK) || pipe(fds)) { perror("MADV_DONTFORK"); goto fail; }
	pid_t c = fork();
	if (c == 0) {
		child = readl("/proc/self/ksm_stat", "ksm_zero_pages ");
		if (write(fds[1], &child, sizeof(child)) != sizeof(child))
			_exit(1);
		_exit(0);
	}
	if (c < 0 || read(fds[0], &child, sizeof(child)) != sizeof(child)) { perror("fork"); goto fail; }
	waitpid(c, NULL, 0);
	d1 = readl(KSM "ksm_zero_pages", NULL);
	printf("MADV_DONTFORK: the child counts %ld zeropages; ksm_zero_pages %ld before, %ld after it exited\n",
	       child, d0, d1);
	if (madvise(a, NPAGES * psz, MADV_DOFORK)) { perror("MADV_DOFORK"); goto fail; }

	/* 2: fork copies them and fails after them. */
	g0 = readl(KSM "ksm_zero_pages", NULL);
	/* Room for every accounted mapping but the last, b: fork fails there. */
	limit_kb = readl("/proc/meminfo", "Committed_AS:") - readl("/proc/meminfo", "SwapTotal:") + 65536;
	snprintf(buf, sizeof(buf), "%ld", limit_kb);
	if (writes("/proc/sys/vm/overcommit_kbytes", buf) || writes("/proc/sys/vm/overcommit_memory", "2"))
		goto fail;
	pid_t pid = fork();
	int err = errno;
	writes("/proc/sys/vm/overcommit_memory", saved[4]);
	if (pid == 0)
		_exit(0);
	if (pid > 0) {
		waitpid(pid, NULL, 0);
		fprintf(stderr, "fork succeeded: the setup did not make it fail\n");
		goto fail;
	}
	g1 = readl(KSM "ksm_zero_pages", NULL);
	own = readl("/proc/self/ksm_stat", "ksm_zero_pages ");
	printf("fork failed (%s); ksm_zero_pages %ld before, %ld after; this process maps %ld\n",
	       strerror(err), g0, g1, own);
	munmap(a, NPAGES * psz);
	munmap(b, blen);
	printf("after unmapping them: ksm_zero_pages %ld\n", readl(KSM "ksm_zero_pages", NULL));
	restore();
	return (g1 == g0 && d1 == d0 && child == 0) ? 0 : 1;
fail:
	restore();
	return 2;
}
