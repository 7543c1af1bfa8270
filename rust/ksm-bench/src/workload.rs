//! The workloads ksm-bench times. Each sample maps fresh memory, fills it,
//! advises it MADV_MERGEABLE and starts ksmd flat out (sleep_millisecs 0,
//! smart_scan off so that every full scan does the same work), then times
//! two phases:
//!
//! - merging: from run=1 until every page that can merge has (the wall time,
//!   and the CPU time ksmd spent on it);
//! - steady scanning: full scans over memory that is already merged (or can
//!   never merge), which is what KSM costs for as long as it runs.
//!
//! The contents exercise different parts of KSM's trees. Merging groups of
//! four identical pages fills the stable tree with many KSM pages; merging
//! identical pages builds chains of dups (max_page_sharing). Once merged, a
//! page is passed over early by the scan, so their steady state is mostly
//! the scan itself; unique pages never merge, and every scan searches both
//! trees for them and reinserts them in the unstable tree. Prefix pages are
//! unique too, but equal up to their last word, so that every comparison in
//! the trees runs memcmp over the whole page. Volatile pages are rewritten
//! before every scan: their checksum never settles, so they never reach the
//! unstable tree (only `ksm-bench count`, which steps ksmd scan by scan,
//! can rewrite them between scans).

use std::time::{Duration, Instant};

use ksm::scan::{wait_full_scans, wait_within_scans};
use ksm::{Advice, Knob, KnobGuard, Mapping, Result, procfs};
use serde::{Deserialize, Serialize};

use crate::ksmd::Ksmd;

/// How long a phase may take before the sample fails (TCG guests are slow).
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The sharers per KSM page (the default): identical pages form chains of
/// dups of this many.
const MAX_PAGE_SHARING: u64 = 256;

/// Full scans after which merging must be complete: two to merge, and
/// room for a scan that races with the page faults of the fill.
const MERGE_SCANS: u64 = 5;

/// The steady phase lasts at least this long, so that ksmd's CPU time,
/// which without CONFIG_SCHED_INFO the kernel counts in 10 ms ticks, is
/// measured to about 1%.
const MIN_SCAN_PHASE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    GroupsOf4,
    Identical,
    Unique,
    Prefix,
    Volatile,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::GroupsOf4,
        Workload::Identical,
        Workload::Unique,
        Workload::Prefix,
        Workload::Volatile,
    ];

    /// Those `ksm-bench run` times (volatile pages need ksmd stepped).
    pub const TIMED: [Workload; 4] = [
        Workload::GroupsOf4,
        Workload::Identical,
        Workload::Unique,
        Workload::Prefix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::GroupsOf4 => "groups-of-4",
            Workload::Identical => "identical",
            Workload::Unique => "unique",
            Workload::Prefix => "prefix",
            Workload::Volatile => "volatile",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The content of page `i`, as a seed of `Mapping::fill` (never 0: a
    /// page of zeroes is a case of its own, use_zero_pages).
    fn seed(self, i: usize) -> u64 {
        match self {
            Workload::GroupsOf4 => (i / 4) as u64 + 1,
            Workload::Identical | Workload::Prefix => 1,
            Workload::Unique | Workload::Volatile => i as u64 + 1,
        }
    }

    /// Fill page `i` of `mem` with its content.
    pub fn fill(self, mem: &mut Mapping, i: usize) {
        mem.fill(i, self.seed(i));
        if self == Workload::Prefix {
            // Equal up to the last word, which is the page's own.
            let page = mem.page_mut(i);
            let at = page.len() - 8;
            page[at..].copy_from_slice(&(i as u64 + 1).to_ne_bytes());
        }
    }

    /// Before scan `scan` (from 1): rewrite what must change. Only volatile
    /// pages do: their first word becomes unique to the page and the scan.
    pub fn rewrite(self, mem: &mut Mapping, scan: u64) {
        if self != Workload::Volatile {
            return;
        }
        for i in 0..mem.pages() {
            let word = (scan << 40) ^ (i as u64 + 1);
            mem.page_mut(i)[..8].copy_from_slice(&word.to_ne_bytes());
        }
    }

    /// How many of `pages` end up mapped to a KSM page.
    pub fn merging(self, pages: usize) -> u64 {
        match self {
            Workload::GroupsOf4 => (pages - pages % 4) as u64,
            Workload::Identical => pages as u64,
            Workload::Unique | Workload::Prefix | Workload::Volatile => 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mib: usize,
    pub pages_to_scan: u64,
    /// Full scans timed in the steady phase, at least.
    pub scans: u64,
}

/// One timed sample. The merge fields are None for a workload that does
/// not merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub workload: String,
    pub merge_ms: Option<f64>,
    pub merge_ksmd_cpu_ms: Option<f64>,
    pub scan_ms: f64,
    pub scan_ksmd_cpu_ms: f64,
}

/// Set ksmd up to scan flat out, with the merging rules the workloads
/// expect; the guard puts everything back.
pub fn drive_hard(guard: &mut KnobGuard<'_>, settings: &Settings) -> Result<()> {
    // merge_across_nodes may change only with no KSM page left: run=2.
    guard.set(Knob::Run, "2")?;
    guard.set(Knob::MergeAcrossNodes, "1")?;
    guard.set(Knob::MaxPageSharing, &MAX_PAGE_SHARING.to_string())?;
    // In scan-time advisor mode the kernel refuses pages_to_scan.
    if guard.sysfs().has(Knob::AdvisorMode) {
        guard.set(Knob::AdvisorMode, "none")?;
    }
    if guard.sysfs().has(Knob::SmartScan) {
        guard.set(Knob::SmartScan, "0")?;
    }
    guard.set(Knob::PagesToScan, &settings.pages_to_scan.to_string())?;
    guard.set(Knob::SleepMillisecs, "0")
}

/// Time one sample of `workload`.
pub fn sample(
    guard: &mut KnobGuard<'_>,
    ksmd: &Ksmd,
    workload: Workload,
    settings: &Settings,
) -> Result<Sample> {
    // Start from nothing: no KSM pages and no rmap_items left from before.
    guard.set(Knob::Run, "2")?;
    let pages = settings.mib * 1024 * 1024 / ksm::mem::page_size();
    let mut mem = Mapping::anon(pages)?;
    for i in 0..pages {
        workload.fill(&mut mem, i);
    }
    mem.advise(Advice::Mergeable)
        .map_err(|e| ksm::Error::Other(format!("madvise(MADV_MERGEABLE): {e}")))?;

    let (cpu0, t0) = (ksmd.cpu()?, Instant::now());
    guard.set(Knob::Run, "1")?;
    let expected = workload.merging(pages);
    let (merge_ms, merge_ksmd_cpu_ms, first) = if expected > 0 {
        wait_within_scans(
            guard.sysfs(),
            "every page merged",
            MERGE_SCANS,
            PHASE_TIMEOUT,
            || Ok(procfs::ksm_merging_pages(None)? >= expected),
        )?;
        let (merge_ms, merge_cpu_ms) = (ms(t0.elapsed()), ms(ksmd.cpu()? - cpu0));
        // Measure whole scans: the one under way ends first.
        let first = wait_full_scans(guard.sysfs(), 1, PHASE_TIMEOUT)?;
        (Some(merge_ms), Some(merge_cpu_ms), first)
    } else {
        // The scan that takes checksums, and the one that builds the
        // unstable tree: then pages that never merge are in their steady
        // state, at the end of a scan.
        (
            None,
            None,
            wait_full_scans(guard.sysfs(), 2, PHASE_TIMEOUT)?,
        )
    };

    let (cpu1, t1) = (ksmd.cpu()?, Instant::now());
    let mut last = first;
    while last - first < settings.scans || t1.elapsed() < MIN_SCAN_PHASE {
        last = wait_full_scans(guard.sysfs(), 1, PHASE_TIMEOUT)?;
    }
    let scans = (last - first) as f64;
    let sample = Sample {
        workload: workload.name().to_string(),
        merge_ms,
        merge_ksmd_cpu_ms,
        scan_ms: ms(t1.elapsed()) / scans,
        scan_ksmd_cpu_ms: ms(ksmd.cpu()? - cpu1) / scans,
    };
    guard.set(Knob::Run, "2")?;
    drop(mem);
    Ok(sample)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_4_share_a_content_per_group() {
        let seeds: Vec<u64> = (0..9).map(|i| Workload::GroupsOf4.seed(i)).collect();
        assert_eq!(seeds, [1, 1, 1, 1, 2, 2, 2, 2, 3]);
        // The ninth page has no twin.
        assert_eq!(Workload::GroupsOf4.merging(9), 8);
    }

    #[test]
    fn no_workload_writes_pages_of_zeroes() {
        for w in Workload::ALL {
            assert!((0..1000).all(|i| w.seed(i) != 0), "{}", w.name());
        }
    }

    #[test]
    fn prefix_pages_differ_only_in_their_last_word() {
        let mut m = Mapping::anon(3).unwrap();
        for i in 0..3 {
            Workload::Prefix.fill(&mut m, i);
        }
        let n = m.page(0).len();
        assert_eq!(m.page(0)[..n - 8], m.page(2)[..n - 8]);
        assert_ne!(m.page(0)[n - 8..], m.page(1)[n - 8..]);
        assert_eq!(Workload::Prefix.merging(3), 0);
    }

    #[test]
    fn volatile_pages_change_at_every_scan_and_stay_distinct() {
        let mut m = Mapping::anon(2).unwrap();
        for i in 0..2 {
            Workload::Volatile.fill(&mut m, i);
        }
        Workload::Volatile.rewrite(&mut m, 1);
        let first = m.page(0).to_vec();
        assert_ne!(m.page(0), m.page(1));
        Workload::Volatile.rewrite(&mut m, 2);
        assert_ne!(m.page(0), first.as_slice());
        // Other workloads stay as filled.
        Workload::Unique.fill(&mut m, 0);
        let before = m.page(0).to_vec();
        Workload::Unique.rewrite(&mut m, 3);
        assert_eq!(m.page(0), before.as_slice());
    }

    #[test]
    fn unique_pages_never_merge_identical_ones_all_do() {
        assert_eq!(Workload::Unique.merging(100), 0);
        assert_eq!(Workload::Identical.merging(100), 100);
    }
}
