//! `ksm-bench count`: step ksmd one full scan at a time, with a mark of the
//! ksmcount plugin between scans, so that the plugin's instruction counts
//! cover whole scans and nothing else.
//!
//! How ksmd is stepped: pages_to_scan above the pages of the mapping makes
//! every batch of ksm_do_scan() end at the end of a full scan (it stops
//! when scan_get_next_rmap_item() returns NULL at the end of the mm list);
//! a sleep_millisecs of an hour makes ksmd sleep after each batch until
//! sleep_millisecs is written again (sleep_millisecs_store() wakes it).
//! After each scan the guest waits until ksmd sleeps, reads KSM's counters
//! (exact: nothing changes them while ksmd sleeps), marks, and writes
//! sleep_millisecs to start the next scan. Every scan is checked to have
//! covered the mapping's pages exactly once.

use std::time::{Duration, Instant};

use ksm::{Advice, Knob, KnobGuard, Mapping};

use crate::guestlog::{Counters, Line, Writer};
use crate::ksmd::Ksmd;
use crate::marker;
use crate::workload::Workload;

/// ksmd's sleep between scans: long enough that only our writes wake it.
/// Two values, so that each write changes it (the wake-up condition).
const SLEEP_MS: [u64; 2] = [3_600_000, 3_600_001];

/// How long a scan may take (TCG with the plugin: 1 GiB of unique pages
/// takes tens of seconds).
const SCAN_TIMEOUT: Duration = Duration::from_secs(900);

/// Once ksmd reads 'S' after its scan, it may still be on its way into
/// schedule(): give it this long to get off the CPU before marking.
const SETTLE: Duration = Duration::from_millis(5);

/// Polls while ksmd scans: a twentieth of the time it has taken so far, so
/// that the guest's own activity (reading sysfs and /proc, being scheduled)
/// disturbs it as little as it can, and the wait ends within 5% of the scan.
fn poll_interval(elapsed: Duration) -> Duration {
    (elapsed / 20).clamp(Duration::from_millis(1), Duration::from_millis(200))
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub workloads: Vec<Workload>,
    pub sizes_mib: Vec<u64>,
    pub reps: u64,
    /// Full scans measured in the steady state.
    pub steady_scans: u64,
    /// Scans after which a merging workload that has not merged every page
    /// is recorded as incomplete.
    pub max_merge_scans: u64,
}

/// Marks so far, for the log's sequence numbers (the plugin's: the
/// session's mark is 1).
pub struct Marks {
    seq: u64,
    log: Writer,
}

impl Marks {
    pub fn start(mut log: Writer, session: Line) -> Result<Marks, String> {
        log.write(&session)?;
        marker::session();
        Ok(Marks { seq: 1, log })
    }
}

fn err(e: ksm::Error) -> String {
    e.to_string()
}

/// Wait until ksmd has completed `full_scans` scans and sleeps.
fn wait_asleep(guard: &KnobGuard<'_>, ksmd: &Ksmd, full_scans: u64) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let done = guard.sysfs().read_u64(Knob::FullScans).map_err(err)?;
        if done > full_scans {
            return Err(format!(
                "ksmd completed {done} full scans, more than the {full_scans} asked for: it is not stepped"
            ));
        }
        if done == full_scans && ksmd.state().map_err(err)? == 'S' {
            std::thread::sleep(SETTLE);
            if ksmd.state().map_err(err)? == 'S' {
                return Ok(());
            }
        }
        if start.elapsed() > SCAN_TIMEOUT {
            return Err(format!(
                "ksmd did not complete full scan {full_scans} within {} s",
                SCAN_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(poll_interval(start.elapsed()));
    }
}

/// What to do after a scan.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Scan,
    Stop,
    /// Merging did not complete within the scans allowed.
    GiveUp,
}

/// Where a sample is: merged yet, and which scans are its steady state.
#[derive(Debug)]
struct Progress {
    /// Pages that end up merged (0: the workload does not merge).
    expected: u64,
    max_merge_scans: u64,
    steady_scans: u64,
    merge_scans: Option<u64>,
    steady_from: u64,
}

impl Progress {
    fn new(expected: u64, plan: &Plan) -> Progress {
        Progress {
            expected,
            max_merge_scans: plan.max_merge_scans,
            steady_scans: plan.steady_scans,
            merge_scans: None,
            // Non-merging workloads: the first scan takes checksums, the
            // second fills the unstable tree, the third is the first to
            // find its pages in the tree of the scan before (measured: it
            // differs from the next); from then on every scan is alike.
            steady_from: 4,
        }
    }

    /// After `scan`, with `merging` pages mapped to KSM pages.
    fn after(&mut self, scan: u64, merging: u64) -> Next {
        if self.expected > 0 && self.merge_scans.is_none() {
            if merging >= self.expected {
                // Merging ones settle one scan after the last merge.
                self.merge_scans = Some(scan);
                self.steady_from = scan + 2;
            } else if scan >= self.max_merge_scans {
                self.steady_from = scan + 1;
                return Next::GiveUp;
            } else {
                return Next::Scan;
            }
        }
        if scan + 1 >= self.steady_from + self.steady_scans {
            Next::Stop
        } else {
            Next::Scan
        }
    }
}

/// Which sample to take.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub id: u64,
    pub workload: Workload,
    pub pages: usize,
    pub rep: u64,
}

/// Where a sample is: its start in time and ksmd's CPU then.
struct Clock<'k> {
    ksmd: &'k Ksmd,
    t0: Instant,
    cpu0: Duration,
}

/// Read the counters, mark, and log the mark.
fn mark(
    guard: &KnobGuard<'_>,
    clock: &Clock<'_>,
    marks: &mut Marks,
    sample: u64,
    scan: u64,
) -> Result<Counters, String> {
    let counters = Counters::read(guard.sysfs()).map_err(err)?;
    let cpu = clock.ksmd.cpu().map_err(err)? - clock.cpu0;
    let line = Line::Mark {
        seq: marks.seq + 1,
        sample,
        scan,
        counters,
        wall_ms: clock.t0.elapsed().as_secs_f64() * 1000.0,
        ksmd_cpu_ms: cpu.as_secs_f64() * 1000.0,
    };
    marker::point();
    marks.seq += 1;
    marks.log.write(&line)?;
    Ok(counters)
}

/// One sample: map, fill, advise; step ksmd until merged and steady.
pub fn sample(
    guard: &mut KnobGuard<'_>,
    ksmd: &Ksmd,
    marks: &mut Marks,
    spec: Spec,
    plan: &Plan,
) -> Result<Line, String> {
    let Spec {
        id,
        workload,
        pages,
        rep,
    } = spec;
    // No KSM page and no rmap_item from before; ksmd stopped.
    guard.set(Knob::Run, "2").map_err(err)?;
    guard
        .set(Knob::PagesToScan, &(pages * 2 + 16).to_string())
        .map_err(err)?;
    guard
        .set(Knob::SleepMillisecs, &SLEEP_MS[0].to_string())
        .map_err(err)?;
    let mut mem = Mapping::anon(pages).map_err(err)?;
    for i in 0..pages {
        workload.fill(&mut mem, i);
    }
    mem.advise(Advice::Mergeable)
        .map_err(|e| format!("madvise(MADV_MERGEABLE): {e}"))?;

    let first = guard.sysfs().read_u64(Knob::FullScans).map_err(err)?;
    wait_asleep(guard, ksmd, first)?;
    let clock = Clock {
        ksmd,
        t0: Instant::now(),
        cpu0: ksmd.cpu().map_err(err)?,
    };
    let mut previous = mark(guard, &clock, marks, id, 0)?;

    let mut progress = Progress::new(workload.merging(pages), plan);
    let mut scan = 0;
    loop {
        scan += 1;
        workload.rewrite(&mut mem, scan);
        if scan == 1 {
            guard.set(Knob::Run, "1").map_err(err)?;
        } else {
            // Scan 1 ran with SLEEP_MS[0]: alternate from there.
            let ms = SLEEP_MS[((scan - 1) % 2) as usize];
            guard
                .set(Knob::SleepMillisecs, &ms.to_string())
                .map_err(err)?;
        }
        wait_asleep(guard, ksmd, first + scan)?;
        let now = mark(guard, &clock, marks, id, scan)?;
        let covered = now.pages_scanned - previous.pages_scanned;
        if covered != pages as u64 {
            return Err(format!(
                "full scan {scan} covered {covered} pages, not the {pages} of the mapping: another process has mergeable memory, or ksmd is not stepped"
            ));
        }
        previous = now;
        match progress.after(scan, now.merging) {
            Next::Scan => {}
            Next::Stop => break,
            Next::GiveUp => {
                println!(
                    "ksm-bench: {} of {} pages of {} merged after {scan} full scans: merging incomplete",
                    now.merging,
                    progress.expected,
                    workload.name(),
                );
                break;
            }
        }
    }
    guard.set(Knob::Run, "2").map_err(err)?;
    drop(mem);
    let line = Line::Sample {
        sample: id,
        workload: workload.name().into(),
        pages: pages as u64,
        rep,
        expected_merging: progress.expected,
        merge_scans: progress.merge_scans,
        steady_from: progress.steady_from,
        steady_to: scan.max(progress.steady_from - 1),
    };
    marks.log.write(&line)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steady_scans: u64) -> Plan {
        Plan {
            workloads: Vec::new(),
            sizes_mib: Vec::new(),
            reps: 1,
            steady_scans,
            max_merge_scans: 5,
        }
    }

    #[test]
    fn merging_workloads_settle_a_scan_then_measure() {
        let mut p = Progress::new(100, &plan(2));
        assert_eq!(p.after(1, 0), Next::Scan);
        assert_eq!(p.after(2, 100), Next::Scan);
        assert_eq!((p.merge_scans, p.steady_from), (Some(2), 4));
        assert_eq!(p.after(3, 100), Next::Scan);
        assert_eq!(p.after(4, 100), Next::Scan);
        assert_eq!(p.after(5, 100), Next::Stop);
    }

    #[test]
    fn other_workloads_measure_from_the_fourth_scan() {
        let mut p = Progress::new(0, &plan(1));
        assert_eq!(p.after(1, 0), Next::Scan);
        assert_eq!(p.after(2, 0), Next::Scan);
        assert_eq!(p.after(3, 0), Next::Scan);
        assert_eq!(p.after(4, 0), Next::Stop);
        assert_eq!(p.merge_scans, None);
    }

    #[test]
    fn merging_that_does_not_complete_is_given_up() {
        let mut p = Progress::new(100, &plan(1));
        for scan in 1..5 {
            assert_eq!(p.after(scan, 99), Next::Scan);
        }
        assert_eq!(p.after(5, 99), Next::GiveUp);
        assert_eq!(p.merge_scans, None);
    }
}
