//! A worker process: mergeable memory whose every page holds
//! `Content::of(worker, page, generation)`, and a loop of operations on it
//! that KSM must survive without changing a byte: COW-breaking writes,
//! MADV_MERGEABLE/UNMERGEABLE toggles (or PR_SET_MEMORY_MERGE for a
//! merge-any worker), munmap and re-mmap, mremap away and back, mprotect,
//! MADV_PAGEOUT, move_pages to the other NUMA node, and fork children that
//! check what they inherited, write some of it and exit at once or later.
//!
//! The memory is one range of chunks of [`CHUNK`] pages. The worker is
//! single-threaded (fork is safe), reads its commands between operations
//! (crate::proto), and with `faults` arms fault injection for itself
//! (/proc/self/make-it-fail) around some MADV_UNMERGEABLE calls and forks.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ksm::mem::{Advice, madvise, set_memory_merge};
use nix::errno::Errno;

use crate::content::{Content, PAGE_WORDS, Rng};
use crate::crash;
use crate::frames::{self, PAGE};
use crate::proto::{Command, Reply};
use crate::stats::{Corruption, Stats, errno_name};

/// Pages per chunk: the unit of munmap, mremap, mprotect, madvise.
pub const CHUNK: usize = 16;

/// Errnos the kernel returns when an injected fault or a memory limit
/// stops an operation: refusals, not failures.
const NO_MEMORY: [Errno; 2] = [Errno::EAGAIN, Errno::ENOMEM];

/// The children a worker has at once, at most.
const MAX_CHILDREN: usize = 2;

#[derive(Debug, Clone)]
pub struct Args {
    pub id: u32,
    pub pages: usize,
    pub seed: u64,
    /// PR_SET_MEMORY_MERGE instead of MADV_MERGEABLE.
    pub merge_any: bool,
    /// Arm fault injection for itself around some calls.
    pub faults: bool,
    /// Pause between operations, at most.
    pub gap_ms: u64,
    /// NUMA nodes with memory (move_pages targets).
    pub nodes: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Live { advised: bool },
    Hole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Verify,
    Toggle,
    Unmap,
    Mremap,
    Mprotect,
    Pageout,
    MovePages,
    Fork,
    MergeAnyToggle,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Write,
        Op::Verify,
        Op::Toggle,
        Op::Unmap,
        Op::Mremap,
        Op::Mprotect,
        Op::Pageout,
        Op::MovePages,
        Op::Fork,
        Op::MergeAnyToggle,
    ];

    /// Relative frequency: writes are frequent but small, so that ksmd
    /// keeps most pages merged.
    fn weight(self, merge_any: bool, numa: bool) -> u64 {
        match self {
            Op::Write => 25,
            Op::Verify => 15,
            Op::Toggle => 10,
            Op::Unmap | Op::Mremap | Op::Mprotect | Op::Fork => 6,
            Op::Pageout => 8,
            Op::MovePages if numa => 8,
            Op::MergeAnyToggle if merge_any => 3,
            Op::MovePages | Op::MergeAnyToggle => 0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Write => "write (COW break)",
            Op::Verify => "verify chunk",
            Op::Toggle => "madvise MERGEABLE/UNMERGEABLE",
            Op::Unmap => "munmap + mmap",
            Op::Mremap => "mremap away and back",
            Op::Mprotect => "mprotect read-only and back",
            Op::Pageout => "MADV_PAGEOUT",
            Op::MovePages => "move_pages",
            Op::Fork => "fork",
            Op::MergeAnyToggle => "PR_SET_MEMORY_MERGE 0/1",
        }
    }
}

pub struct Worker {
    args: Args,
    rng: Rng,
    base: usize,
    gens: Vec<u32>,
    chunks: Vec<Chunk>,
    /// A PROT_NONE reservation one chunk long, where mremap moves a chunk.
    scratch: usize,
    /// The reservation could not be made again: no more mremaps.
    scratch_lost: bool,
    children: Vec<libc::pid_t>,
    make_it_fail: Option<File>,
    /// Active swap areas when the worker started (the guest's zram).
    swap_areas: u64,
    stats: Stats,
    pid: u32,
}

fn errno_of(rc: libc::c_long) -> Result<(), Errno> {
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// mmap of private anonymous memory, at `at` exactly (never replacing
/// anything) or wherever the kernel likes.
fn map_anon(at: Option<usize>, len: usize, prot: libc::c_int) -> Result<usize, Errno> {
    let fixed = if at.is_some() {
        libc::MAP_FIXED_NOREPLACE
    } else {
        0
    };
    // SAFETY: a new mapping; MAP_FIXED_NOREPLACE never replaces one.
    let p = unsafe {
        libc::mmap(
            at.unwrap_or(0) as *mut libc::c_void,
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    if let Some(at) = at {
        if p as usize != at {
            // An old kernel that ignores MAP_FIXED_NOREPLACE: give it back.
            // SAFETY: the mapping just made, nothing else.
            unsafe { libc::munmap(p, len) };
            return Err(Errno::EEXIST);
        }
    }
    Ok(p as usize)
}

/// Write one line to fd 1 in one write(2): fork children share the pipe.
fn send(reply: &Reply) {
    let line = reply.line();
    let mut buf = line.as_bytes();
    while !buf.is_empty() {
        // SAFETY: writes from a live buffer of that length.
        let n = unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            // The coordinator is gone (or the pipe failed us): so are we.
            eprintln!(
                "ksm-stress worker {}: writing a reply: {}; exiting",
                std::process::id(),
                errno_name(Errno::last())
            );
            // SAFETY: leave without running anything of the parent's.
            unsafe { libc::_exit(1) };
        }
        buf = &buf[n as usize..];
    }
}

impl Worker {
    /// Map, fill and advise the memory.
    pub fn new(args: Args) -> Result<Worker, String> {
        if args.pages == 0 || args.pages % CHUNK != 0 {
            return Err(format!(
                "--pages must be a positive multiple of {CHUNK}, got {}",
                args.pages
            ));
        }
        if args.merge_any {
            set_memory_merge(true).map_err(|e| format!("PR_SET_MEMORY_MERGE 1: {e}"))?;
        }
        let len = args.pages * PAGE;
        let base = map_anon(None, len, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("mmap {len} bytes: {e}"))?;
        let scratch = map_anon(None, CHUNK * PAGE, libc::PROT_NONE)
            .map_err(|e| format!("mmap scratch: {e}"))?;
        let make_it_fail = if args.faults {
            Some(
                File::options()
                    .write(true)
                    .open("/proc/self/make-it-fail")
                    .map_err(|e| format!("/proc/self/make-it-fail: {e}"))?,
            )
        } else {
            None
        };
        let mut w = Worker {
            rng: Rng::new(args.seed ^ (u64::from(args.id) << 32)),
            gens: vec![0; args.pages],
            chunks: vec![Chunk::Live { advised: false }; args.pages / CHUNK],
            base,
            scratch,
            scratch_lost: false,
            children: Vec::new(),
            make_it_fail,
            swap_areas: frames::swap_areas(
                &std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
            ),
            stats: Stats::default(),
            pid: std::process::id(),
            args,
        };
        // No THP: KSM merges small pages (a THP would be split first).
        let _ = madvise(base, len, Advice::NoHugePage);
        crash::install();
        crash::areas(w.base, len, w.scratch, CHUNK * PAGE);
        crash::doing("filling its pages");
        for page in 0..w.args.pages {
            w.fill(page);
        }
        for chunk in 0..w.chunks.len() {
            w.advise(chunk, true, false);
        }
        Ok(w)
    }

    /// The whole range of the worker's memory: (address, bytes).
    pub fn range(&self) -> (usize, usize) {
        (self.base, self.args.pages * PAGE)
    }

    /// What was counted since the last call.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    fn chunk_addr(&self, chunk: usize) -> usize {
        self.base + chunk * CHUNK * PAGE
    }

    fn content(&self, page: usize) -> Content {
        Content::of(self.args.id, page as u32, self.gens[page])
    }

    /// Write page `page`'s content for its current generation.
    fn fill(&mut self, page: usize) {
        let content = self.content(page);
        let addr = self.base + page * PAGE;
        // SAFETY: the page lies in a live chunk of our read/write mapping
        // (callers only fill live chunks, never while read-only), and no
        // reference to it outlives this call.
        let words = unsafe { std::slice::from_raw_parts_mut(addr as *mut u64, PAGE_WORDS) };
        content.fill(words);
    }

    /// Check the pages of `chunk`, which now lie at `at` (its own address,
    /// or where mremap moved it).
    fn verify_at(&mut self, chunk: usize, at: usize, when: &str) {
        for i in 0..CHUNK {
            let page = chunk * CHUNK + i;
            let addr = at + i * PAGE;
            // SAFETY: a live, readable chunk of ours; read-only access.
            let words = unsafe { std::slice::from_raw_parts(addr as *const u64, PAGE_WORDS) };
            let content = self.content(page);
            self.stats.pages_verified += 1;
            if let Some(m) = content.check(words) {
                let c = corruption(
                    self.args.id,
                    self.pid,
                    page,
                    self.gens[page],
                    content,
                    m,
                    when,
                );
                self.stats.corrupted(c);
            }
        }
    }

    fn verify_chunk(&mut self, chunk: usize, when: &str) {
        if self.chunks[chunk] != Chunk::Hole {
            self.verify_at(chunk, self.chunk_addr(chunk), when);
        }
    }

    pub fn verify_all(&mut self, when: &str) {
        for chunk in 0..self.chunks.len() {
            self.verify_chunk(chunk, when);
        }
    }

    /// MADV_MERGEABLE or MADV_UNMERGEABLE on a live chunk (merge-any
    /// workers too: the advice applies to the range). `faulty`: with
    /// make-it-fail set for the call.
    fn advise(&mut self, chunk: usize, on: bool, faulty: bool) {
        let advice = if on {
            Advice::Mergeable
        } else {
            Advice::Unmergeable
        };
        let faulty = faulty && self.arm_faults(true);
        let r = madvise(self.chunk_addr(chunk), CHUNK * PAGE, advice);
        if faulty {
            self.arm_faults(false);
        }
        let op = if on {
            "MADV_MERGEABLE"
        } else {
            "MADV_UNMERGEABLE"
        };
        let op = if faulty {
            format!("{op} (faults armed)")
        } else {
            op.to_string()
        };
        // Without injected faults, only an unmerge that finds no memory
        // may fail (never here: no limit on this worker).
        let expected: &[Errno] = if faulty { &NO_MEMORY } else { &[] };
        self.stats.record(&op, r, expected);
        if r.is_ok() {
            self.chunks[chunk] = Chunk::Live { advised: on };
        }
    }

    /// Set or clear make-it-fail for this task; false if faults are off.
    fn arm_faults(&mut self, on: bool) -> bool {
        let Some(f) = &self.make_it_fail else {
            return false;
        };
        f.write_at(if on { b"1" } else { b"0" }, 0).is_ok()
    }

    fn random_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.chunks.len())
            .filter(|&c| self.chunks[c] != Chunk::Hole)
            .collect();
        (!live.is_empty()).then(|| live[self.rng.below(live.len() as u64) as usize])
    }

    fn step(&mut self) {
        let numa = self.args.nodes.len() > 1;
        let weights: Vec<u64> = Op::ALL
            .iter()
            .map(|o| o.weight(self.args.merge_any, numa))
            .collect();
        let op = Op::ALL[self.rng.weighted(&weights)];
        crash::doing(op.name());
        match op {
            Op::Unmap => self.unmap_or_remap(),
            Op::Fork => self.fork(),
            Op::MergeAnyToggle => self.merge_any_toggle(),
            _ => {
                if let Some(chunk) = self.random_live() {
                    self.on_chunk(op, chunk);
                }
            }
        }
    }

    /// The operations on one live chunk.
    fn on_chunk(&mut self, op: Op, chunk: usize) {
        match op {
            Op::Write => self.write(chunk),
            Op::Verify => {
                self.verify_chunk(chunk, "verify op");
                self.stats.ok(op.name());
            }
            Op::Toggle => {
                let advised = self.chunks[chunk] == Chunk::Live { advised: true };
                // Faults only around MADV_UNMERGEABLE (its COW copies):
                // MADV_MERGEABLE allocates only for an mm new to KSM.
                let faulty = advised && self.rng.chance(50);
                self.advise(chunk, !advised, faulty);
            }
            Op::Mremap => self.mremap(chunk),
            Op::Mprotect => self.mprotect(chunk),
            Op::Pageout => self.pageout(chunk),
            Op::MovePages => self.move_pages(chunk),
            Op::Unmap | Op::Fork | Op::MergeAnyToggle => {}
        }
    }

    /// New generations of a few pages of `chunk`: a COW break of every
    /// one that was merged.
    fn write(&mut self, chunk: usize) {
        let n = self.rng.between(1, 4) as usize;
        for _ in 0..n {
            let page = chunk * CHUNK + self.rng.below(CHUNK as u64) as usize;
            self.gens[page] = self.gens[page].wrapping_add(1);
            self.fill(page);
        }
        self.stats.ok(Op::Write.name());
    }

    /// munmap a live chunk (its pages are gone), or map a hole again with
    /// new generations.
    fn unmap_or_remap(&mut self) {
        let chunk = self.rng.below(self.chunks.len() as u64) as usize;
        let addr = self.chunk_addr(chunk);
        let len = CHUNK * PAGE;
        match self.chunks[chunk] {
            Chunk::Live { .. } => {
                // SAFETY: a chunk of our own mapping; nothing refers to it.
                let r = errno_of(unsafe { libc::munmap(addr as *mut libc::c_void, len) } as _);
                self.stats.record("munmap", r, &[]);
                if r.is_ok() {
                    self.chunks[chunk] = Chunk::Hole;
                }
            }
            Chunk::Hole => {
                let r = map_anon(Some(addr), len, libc::PROT_READ | libc::PROT_WRITE);
                // EEXIST: something else was mapped in the hole; try later.
                self.stats
                    .record("mmap into a hole", r.map(drop), &[Errno::EEXIST]);
                if r.is_ok() {
                    let _ = madvise(addr, len, Advice::NoHugePage);
                    self.chunks[chunk] = Chunk::Live { advised: false };
                    for page in chunk * CHUNK..(chunk + 1) * CHUNK {
                        self.gens[page] = self.gens[page].wrapping_add(1);
                        self.fill(page);
                    }
                    self.advise(chunk, true, false);
                }
            }
        }
    }

    /// Move a chunk onto the scratch reservation, check it there, move it
    /// back, and reserve the scratch again.
    fn mremap(&mut self, chunk: usize) {
        if self.scratch_lost {
            return;
        }
        let (addr, len) = (self.chunk_addr(chunk), CHUNK * PAGE);
        let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
        // SAFETY: moves our chunk onto our scratch reservation (which it
        // replaces); no reference into either is live.
        let p = unsafe {
            libc::mremap(
                addr as *mut libc::c_void,
                len,
                len,
                flags,
                self.scratch as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            self.stats
                .failed(Op::Mremap.name(), &errno_name(Errno::last()));
            return;
        }
        self.verify_at(chunk, self.scratch, "after mremap away");
        // SAFETY: back to the hole the chunk left, which nothing took: the
        // worker is single-threaded and maps nothing meanwhile.
        let back = unsafe {
            libc::mremap(
                self.scratch as *mut libc::c_void,
                len,
                len,
                flags,
                addr as *mut libc::c_void,
            )
        };
        if back == libc::MAP_FAILED {
            let e = errno_name(Errno::last());
            self.stats.error(format!(
                "worker {}: mremap of chunk {chunk} back failed: {e}",
                self.args.id
            ));
            self.chunks[chunk] = Chunk::Hole;
            return;
        }
        self.verify_chunk(chunk, "after mremap back");
        // Reserve the scratch again: mremap with MREMAP_FIXED replaces
        // whatever lies there, so it must stay ours.
        match map_anon(Some(self.scratch), len, libc::PROT_NONE)
            .or_else(|_| map_anon(None, len, libc::PROT_NONE))
        {
            Ok(at) => self.scratch = at,
            Err(e) => {
                self.stats.error(format!(
                    "worker {}: no scratch reservation after mremap: {}",
                    self.args.id,
                    errno_name(e)
                ));
                self.scratch_lost = true;
            }
        }
        self.stats.ok(Op::Mremap.name());
    }

    fn mprotect(&mut self, chunk: usize) {
        let (addr, len) = (self.chunk_addr(chunk), CHUNK * PAGE);
        let protect = |prot| {
            // SAFETY: our own chunk; while it is read-only nothing writes it.
            errno_of(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } as _)
        };
        let r = protect(libc::PROT_READ);
        self.stats.record(Op::Mprotect.name(), r, &[]);
        if r.is_err() {
            return;
        }
        self.verify_chunk(chunk, "while read-only");
        std::thread::sleep(Duration::from_millis(self.rng.below(20)));
        if let Err(e) = protect(libc::PROT_READ | libc::PROT_WRITE) {
            self.stats.error(format!(
                "worker {}: mprotect of chunk {chunk} back to read/write: {}",
                self.args.id,
                errno_name(e)
            ));
        }
    }

    fn frames(&self, chunk: usize) -> Option<Vec<Option<(u64, bool)>>> {
        let entries = frames::pagemap(
            Path::new("/proc/self/pagemap"),
            self.chunk_addr(chunk),
            CHUNK,
        )
        .ok()?;
        frames::ksm_frames(&entries).ok()
    }

    fn pageout(&mut self, chunk: usize) {
        let before = self.frames(chunk);
        let r = madvise(self.chunk_addr(chunk), CHUNK * PAGE, Advice::PageOut);
        self.stats.record(Op::Pageout.name(), r, &[]);
        let after = frames::pagemap(
            Path::new("/proc/self/pagemap"),
            self.chunk_addr(chunk),
            CHUNK,
        );
        if let (Some(before), Ok(after)) = (before, after) {
            for (b, a) in before.iter().zip(&after) {
                if frames::swapped_out(*a, self.swap_areas) {
                    self.stats.event("pages paged out to swap", 1);
                    if matches!(b, Some((_, true))) {
                        self.stats.event("KSM pages paged out to swap", 1);
                    }
                }
            }
        }
        // Half the time read them back at once (swap-in); else later.
        if self.rng.chance(50) {
            self.verify_chunk(chunk, "after MADV_PAGEOUT");
        }
    }

    fn move_pages(&mut self, chunk: usize) {
        const MPOL_MF_MOVE_ALL: libc::c_int = 1 << 2;
        let addrs: Vec<*mut libc::c_void> = (0..CHUNK)
            .map(|i| (self.chunk_addr(chunk) + i * PAGE) as *mut libc::c_void)
            .collect();
        let before = self.frames(chunk);
        let current = ksm::mem::page_nodes(&[self.chunk_addr(chunk)])
            .ok()
            .and_then(|n| n.first().copied())
            .unwrap_or(-1);
        let others: Vec<usize> = self
            .args
            .nodes
            .iter()
            .copied()
            .filter(|&n| n as i32 != current)
            .collect();
        let target = others[self.rng.below(others.len() as u64) as usize] as i32;
        let mab_off = std::fs::read_to_string("/sys/kernel/mm/ksm/merge_across_nodes")
            .is_ok_and(|v| v.trim() == "0");
        let nodes = [target; CHUNK];
        let mut status = vec![0i32; CHUNK];
        // SAFETY: the arrays outlive the call and hold CHUNK entries each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0,
                CHUNK as libc::c_ulong,
                addrs.as_ptr(),
                nodes.as_ptr(),
                status.as_mut_ptr(),
                MPOL_MF_MOVE_ALL,
            )
        };
        // A positive count: pages that could not be moved (busy, pinned).
        self.stats
            .record(Op::MovePages.name(), errno_of(rc), &[Errno::ENOMEM]);
        if rc > 0 {
            self.stats
                .event("pages move_pages left in place", rc as u64);
        }
        let after = self.frames(chunk);
        if let (Some(before), Some(after)) = (before, after) {
            for i in 0..CHUNK {
                let (Some((pfn, ksm)), Some((pfn2, _))) = (before[i], after[i]) else {
                    continue;
                };
                if status[i] == target && pfn2 != pfn {
                    self.stats.event("pages migrated by move_pages", 1);
                    if ksm {
                        self.stats.event("KSM pages migrated by move_pages", 1);
                        if mab_off {
                            self.stats
                                .event("KSM pages migrated by move_pages, merge_across_nodes=0", 1);
                        }
                    }
                }
            }
        }
        self.verify_chunk(chunk, "after move_pages");
    }

    fn merge_any_toggle(&mut self) {
        let r = set_memory_merge(false);
        self.stats
            .record("PR_SET_MEMORY_MERGE 0 (unmerges all)", r, &[]);
        self.verify_all("after PR_SET_MEMORY_MERGE 0");
        let r = set_memory_merge(true);
        self.stats.record("PR_SET_MEMORY_MERGE 1", r, &[]);
    }

    fn fork(&mut self) {
        self.reap(false);
        if self.children.len() >= MAX_CHILDREN {
            return;
        }
        let faulty = self.rng.chance(30) && self.arm_faults(true);
        let seed = self.rng.next_u64();
        // SAFETY: the worker is single-threaded; the child only touches its
        // copy of our memory and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            self.child(seed, faulty);
        }
        if faulty {
            self.arm_faults(false);
        }
        let op = if faulty {
            "fork (faults armed)"
        } else {
            "fork"
        };
        if pid < 0 {
            let expected: &[Errno] = if faulty { &NO_MEMORY } else { &[] };
            self.stats.record(op, Err(Errno::last()), expected);
        } else {
            self.stats.ok(op);
            self.children.push(pid);
        }
    }

    /// A fork child: check what it inherited, write some of it, live a
    /// little while ksmd scans it (or exit at once, racing the scanner),
    /// check again, report, exit.
    fn child(&mut self, seed: u64, faulty: bool) -> ! {
        crash::doing("a fork child's life");
        // The child inherited make-it-fail: clear it first.
        if faulty && !clear_own_make_it_fail() {
            // SAFETY: leave at once, running nothing of the parent's.
            unsafe { libc::_exit(5) };
        }
        // SAFETY: PR_SET_PDEATHSIG takes a signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        self.pid = std::process::id();
        self.make_it_fail = None;
        self.stats = Stats::default();
        self.rng = Rng::new(seed);
        let when = "fork child";
        match self.rng.below(3) {
            0 => {}
            1 => {
                if let Some(chunk) = self.random_live() {
                    self.verify_chunk(chunk, when);
                    self.write(chunk);
                    std::thread::sleep(Duration::from_millis(self.rng.below(300)));
                    self.verify_chunk(chunk, when);
                }
            }
            _ => {
                std::thread::sleep(Duration::from_millis(self.rng.below(1000)));
                self.verify_all(when);
            }
        }
        send(&Reply::Child {
            pid: self.pid,
            verified: self.stats.pages_verified,
            corruptions: self.stats.corruptions.iter().take(5).cloned().collect(),
        });
        let code = if self.stats.pages_corrupted > 0 { 3 } else { 0 };
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }

    /// Reap the children that exited (all of them, waiting, if `all`).
    fn reap(&mut self, all: bool) {
        let flags = if all { 0 } else { libc::WNOHANG };
        let mut left = Vec::new();
        for pid in std::mem::take(&mut self.children) {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
            if rc == 0 {
                left.push(pid);
                continue;
            }
            if rc < 0 {
                self.stats
                    .error(format!("waitpid({pid}): {}", errno_name(Errno::last())));
                continue;
            }
            match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
                // 3: corrupted pages, reported by the child itself.
                (true, 0 | 3) => self.stats.event("fork children exited", 1),
                (true, 5) => self.stats.refused(
                    "fork child clears make-it-fail",
                    "EAGAIN or ENOMEM (faults armed)",
                ),
                _ => self.stats.error(format!(
                    "worker {}: fork child {pid} ended with wait status {status:#x}",
                    self.args.id
                )),
            }
        }
        self.children = left;
    }

    fn report(&mut self) {
        let stats = self.take_stats();
        send(&Reply::Report { stats });
    }

    /// The worker's life: ready, then operations until told to stop.
    pub fn run(mut self) -> i32 {
        send(&Reply::Ready { pid: self.pid });
        let mut stdin = BufReader::new(std::io::stdin());
        let mut running = false;
        let mut phase_verifies = 0u32;
        loop {
            let wait = if running {
                self.rng.below(self.args.gap_ms + 1) as i32
            } else {
                -1
            };
            if readable(0, wait) {
                let mut line = String::new();
                if stdin.read_line(&mut line).unwrap_or(0) == 0 {
                    // The coordinator is gone.
                    self.reap(true);
                    return 1;
                }
                match Command::parse(&line) {
                    Some(Command::Pause) => {
                        self.reap(true);
                        running = false;
                        self.report();
                    }
                    Some(Command::Verify) => {
                        crash::doing("the phase's check of every page");
                        phase_verifies += 1;
                        self.verify_all(&format!("check {phase_verifies} of every page"));
                        self.report();
                    }
                    Some(Command::Resume) => {
                        running = true;
                        send(&Reply::Ack);
                    }
                    Some(Command::Stop) => {
                        crash::doing("the final check of every page");
                        self.reap(true);
                        self.verify_all("final check of every page");
                        self.report();
                        return 0;
                    }
                    None => {
                        self.stats
                            .error(format!("worker {}: unknown command {line:?}", self.args.id));
                    }
                }
                continue;
            }
            if running {
                self.step();
                self.reap(false);
            }
        }
    }
}

/// Whether `fd` has input within `timeout_ms` (-1: wait for it).
fn readable(fd: libc::c_int, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    loop {
        // SAFETY: one pollfd, valid for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc >= 0 {
            return rc > 0;
        }
        if Errno::last() != Errno::EINTR || (timeout_ms >= 0 && Instant::now() >= deadline) {
            return false;
        }
    }
}

/// A fork child's make-it-fail was copied from its parent: clear it,
/// retrying while the injected faults refuse the open.
fn clear_own_make_it_fail() -> bool {
    for _ in 0..200 {
        if let Ok(f) = File::options().write(true).open("/proc/self/make-it-fail") {
            if f.write_at(b"0", 0).is_ok() {
                return true;
            }
        }
    }
    false
}

fn corruption(
    worker: u32,
    pid: u32,
    page: usize,
    generation: u32,
    content: Content,
    m: crate::content::Mismatch,
    when: &str,
) -> Corruption {
    Corruption {
        worker,
        pid,
        page: page as u32,
        generation,
        when: when.to_string(),
        expected: content.describe(),
        first_word: m.word,
        words: m.words,
        expected_word: format!("{:#018x}", m.expected),
        got_word: format!("{:#018x}", m.got),
        holds: m.holds.map(Content::describe),
    }
}
