//! ksmd driven one batch at a time, so that every counter is read while it
//! sleeps and nothing moves.
//!
//! mm/ksm.c's ksm_scan_thread() (7.3) loops over:
//!
//! ```text
//! mutex_lock(&ksm_thread_mutex);
//! if (ksmd_should_run()) ksm_do_scan(ksm_thread_pages_to_scan);
//! mutex_unlock(&ksm_thread_mutex);
//! if (ksmd_should_run()) {
//!     sleep_ms = READ_ONCE(ksm_thread_sleep_millisecs);
//!     wait_event_freezable_timeout(ksm_iter_wait,
//!         sleep_ms != READ_ONCE(ksm_thread_sleep_millisecs),
//!         msecs_to_jiffies(sleep_ms));
//! } else {
//!     wait_event_freezable(ksm_thread_wait, ksmd_should_run() || ...);
//! }
//! ```
//!
//! and sleep_millisecs_store() wakes ksm_iter_wait. So with run=1 and a
//! sleep of about 10^9 ms ([`SLEEP`], 11 days: the timeout never ends a wait
//! during a trace), ksmd sleeps after each batch until sleep_millisecs is
//! written with a value other than the one it read: each such write is
//! exactly one batch. The write is only safe once ksmd has read the value it
//! waits on, that is once it sleeps: /proc/<ksmd>/stat says S (it is never S
//! during a batch, whose sleeps, on mmap_lock, folio locks,
//! lru_add_drain_all() and the mutex, are uninterruptible: D) and
//! /proc/<ksmd>/wchan says ksm_scan_thread (get_wchan() reports a blocked
//! task only). And it must be one write, of a value other than the current
//! one: a second write that puts back the value ksmd holds, before ksmd has
//! run to look at the first, leaves the condition false when it does, and
//! ksmd goes back to sleep (seen on stock 7.3 when waking it twice in a
//! row).
//!
//! A batch is ksm_do_scan(pages_to_scan): it ends after pages_to_scan pages
//! or at the end of a full scan (scan_get_next_rmap_item() returns NULL
//! once it wrapped around the mm list, after full_scans++), whichever comes
//! first. With pages_to_scan above the pages of the workload ([`FULL`]) a
//! batch finishes the full scan in progress; with fewer, it stops inside
//! one. Either way its end shows in the counters (pages_scanned went up by
//! pages_to_scan, or full_scans by one); ksmd is then asleep again once it
//! shows S and ksm_scan_thread.
//!
//! ksmd is only woken from ksm_thread_wait when the list of mms turns
//! non-empty (__ksm_enter) or run is set to 1: the driver keeps a page of
//! its own registered for the whole trace, so the list is never empty, and
//! only writes run=1 when it means ksmd to start.

use std::time::{Duration, Instant};

use ksm::{Knob, KnobGuard, Sysfs};

/// The sleep_millisecs values written: each write of one that differs from
/// the current value wakes ksmd.
const SLEEP: [&str; 3] = ["1000000000", "1000000001", "1000000002"];
/// pages_to_scan for a batch that runs to the end of the full scan.
pub const FULL: u64 = 1_000_000;
/// Longest a batch may take (a full scan of tens of thousands of pages
/// under TCG takes seconds).
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How much a batch scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// To the end of the full scan in progress.
    Full,
    /// At most this many pages (fewer if the full scan ends first).
    Pages(u64),
}

impl Batch {
    fn pages_to_scan(self) -> u64 {
        match self {
            Batch::Full => FULL,
            Batch::Pages(n) => n,
        }
    }
}

pub struct Ksmd {
    pid: u32,
    pages_to_scan: Option<u64>,
    /// pages_scanned and full_scans when ksmd last went to sleep.
    last: Option<(u64, u64)>,
}

impl Ksmd {
    /// The kernel thread named ksmd (a child of kthreadd, pid 2).
    pub fn find() -> Result<Ksmd, String> {
        let pid = ksm::procfs::pids()
            .into_iter()
            .find(|&pid| ksm::procfs::stat(pid).is_some_and(|s| s.comm == "ksmd" && s.ppid == 2))
            .ok_or("no ksmd thread in /proc")?;
        Ok(Ksmd {
            pid,
            pages_to_scan: None,
            last: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether ksmd sleeps in ksm_scan_thread, or why that cannot be told.
    fn asleep(&self) -> Result<bool, String> {
        let state = ksm::procfs::stat(self.pid)
            .ok_or_else(|| format!("ksmd (pid {}) is gone", self.pid))?
            .state;
        let wchan = ksm::procfs::wchan(self.pid)
            .ok_or_else(|| format!("cannot read /proc/{}/wchan", self.pid))?;
        Ok(state == 'S' && wchan == "ksm_scan_thread")
    }

    fn wait_asleep(&self) -> Result<(), String> {
        let start = Instant::now();
        while !self.asleep()? {
            if start.elapsed() > BATCH_TIMEOUT {
                let wchan = ksm::procfs::wchan(self.pid).unwrap_or_default();
                return Err(format!(
                    "ksmd did not go to sleep in ksm_scan_thread within {} s (wchan {wchan:?}; \
                     a kernel without CONFIG_KALLSYMS shows 0 there and cannot be traced)",
                    BATCH_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Wake ksmd from ksm_iter_wait: one write of a sleep_millisecs that
    /// differs from the value it sleeps on, the current one.
    fn wake(&mut self, guard: &mut KnobGuard) -> Result<(), String> {
        let now = guard
            .sysfs()
            .read(Knob::SleepMillisecs)
            .map_err(|e| e.to_string())?;
        let other = SLEEP.iter().find(|v| **v != now).expect("three values");
        guard
            .set(Knob::SleepMillisecs, other)
            .map_err(|e| e.to_string())
    }

    fn counters(sysfs: &Sysfs) -> Result<(u64, u64), String> {
        let read = |k| sysfs.read_u64(k).map_err(|e| e.to_string());
        Ok((read(Knob::PagesScanned)?, read(Knob::FullScans)?))
    }

    /// Stop ksmd with run=2 (which unmerges everything and empties the
    /// trees) and leave it asleep on ksm_thread_wait, where run=1 wakes it:
    /// if it slept on ksm_iter_wait, [`Ksmd::wake`] wakes it, and with run 2
    /// it goes to ksm_thread_wait; if it slept there, it stays.
    pub fn park(&mut self, guard: &mut KnobGuard) -> Result<(), String> {
        guard.set(Knob::Run, "2").map_err(|e| e.to_string())?;
        self.wake(guard)?;
        self.wait_asleep()?;
        self.last = None;
        Ok(())
    }

    /// run=1 after [`Ksmd::park`]: ksmd wakes and does its first batch
    /// (pages_to_scan [`FULL`]: one full scan).
    pub fn start(&mut self, guard: &mut KnobGuard) -> Result<(), String> {
        let sysfs = guard.sysfs().clone();
        self.set_pages_to_scan(guard, FULL)?;
        let (_, full0) = Ksmd::counters(&sysfs)?;
        guard.set(Knob::Run, "1").map_err(|e| e.to_string())?;
        self.finish(&sysfs, Batch::Full, None, full0)
    }

    fn set_pages_to_scan(&mut self, guard: &mut KnobGuard, n: u64) -> Result<(), String> {
        if self.pages_to_scan != Some(n) {
            guard
                .set(Knob::PagesToScan, &n.to_string())
                .map_err(|e| e.to_string())?;
            self.pages_to_scan = Some(n);
        }
        Ok(())
    }

    /// Check that ksmd sleeps and did nothing since it last went to sleep:
    /// the counters must be read now, not mid-batch.
    pub fn quiet(&self, sysfs: &Sysfs) -> Result<(), String> {
        if !self.asleep()? {
            return Err("ksmd is awake between batches: something else woke it".into());
        }
        if let Some(last) = self.last {
            let now = Ksmd::counters(sysfs)?;
            if now != last {
                return Err(format!(
                    "ksmd scanned between batches: (pages_scanned, full_scans) went from \
                     {last:?} to {now:?}"
                ));
            }
        }
        Ok(())
    }

    /// One batch; returns once ksmd sleeps again.
    pub fn batch(&mut self, guard: &mut KnobGuard, batch: Batch) -> Result<(), String> {
        let sysfs = guard.sysfs().clone();
        self.quiet(&sysfs)?;
        self.set_pages_to_scan(guard, batch.pages_to_scan())?;
        let (scanned0, full0) = Ksmd::counters(&sysfs)?;
        self.wake(guard)?;
        self.finish(&sysfs, batch, Some(scanned0), full0)
    }

    /// Wait for the batch's end in the counters, then for ksmd's sleep.
    fn finish(
        &mut self,
        sysfs: &Sysfs,
        batch: Batch,
        scanned0: Option<u64>,
        full0: u64,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let (scanned, full) = Ksmd::counters(sysfs)?;
            let by_pages = match (batch, scanned0) {
                (Batch::Pages(n), Some(s0)) => scanned - s0 >= n,
                _ => false,
            };
            if full > full0 || by_pages {
                break;
            }
            if start.elapsed() > BATCH_TIMEOUT {
                return Err(format!(
                    "ksmd's batch ({batch:?}) did not end within {} s",
                    BATCH_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.wait_asleep()?;
        let (scanned, full) = Ksmd::counters(sysfs)?;
        // One batch, not more: a full scan at most, and no more pages than asked.
        if full > full0 + 1 || scanned0.is_some_and(|s0| scanned - s0 > batch.pages_to_scan()) {
            return Err(format!(
                "ksmd did more than one batch ({batch:?}): full_scans {full0} -> {full}, \
                 pages_scanned {scanned0:?} -> {scanned}"
            ));
        }
        self.last = Some((scanned, full));
        Ok(())
    }
}
