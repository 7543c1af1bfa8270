//! The sequence of issue 11. With merge_across_nodes=0 KSM keeps one
//! unstable tree per NUMA node; after a switch to 1 (in the middle of a scan
//! or not) the trees of nodes 1.. are no longer reset at a scan start (only
//! the trees in use are), and keep linking the rmap_items inserted before
//! the switch. Those items are then relinked into tree 0 or freed, and once
//! merge_across_nodes is switched back to 0 part way through a scan, the rest
//! of that scan walks and inserts into node 1's stale tree.
//!
//! Two areas of distinct pages (never mergeable, so pages_shared stays 0 and
//! merge_across_nodes may change at any time), one bound to each of nodes 0
//! and 1, and each round:
//!   wait 2 full scans; pause 0-20 ms; merge_across_nodes=1;
//!   wait 2 full scans; replace the node-1 area by a new one;
//!   wait 2 full scans; pause 0-20 ms; merge_across_nodes=0.
//! The pauses land the switches at random points of a scan; the one to 0
//! must land inside a scan (at a scan's start every tree is reset).

use std::time::{Duration, Instant};

use ksm::mem::{Advice, Mapping, mbind_to_node, page_nodes, page_size};
use ksm::{Error, Knob, KnobGuard, Result, Sysfs};

/// How the run is bounded and shaped.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds to run at most.
    pub rounds: u64,
    /// No step starts after this.
    pub deadline: Instant,
    /// Pages of each area.
    pub pages: usize,
    /// A wait in which ksmd completes no full scan for this long is an error.
    pub stall: Duration,
    /// Upper bound of the random pauses before a switch.
    pub max_pause: Duration,
}

/// How a run that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every round of the bound ran.
    AllRounds(u64),
    /// The time bound came first, after this many whole rounds.
    TimeUp(u64),
    /// ksmd stopped completing full scans after this many whole rounds (a
    /// finding about the kernel, like a crash): what was awaited, and
    /// samples of ksmd's state and kernel stack taken then.
    Stalled {
        rounds: u64,
        what: String,
        ksmd: Vec<String>,
    },
}

/// How a wait for full scans ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    Done,
    /// The run's deadline came first.
    Deadline,
    /// ksmd completed no full scan for [`Settings::stall`].
    Stalled(String),
}

/// One finished round, for the progress line.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub number: u64,
    pub took: Duration,
    pub full_scans: u64,
}

/// The knobs of the sequence: no advisor (it would move pages_to_scan),
/// ksmd stopped and everything unmerged while they change.
pub fn set_up(guard: &mut KnobGuard<'_>) -> Result<()> {
    let sysfs = guard.sysfs().clone();
    if sysfs.has(Knob::AdvisorMode) && sysfs.read(Knob::AdvisorMode)? != "none" {
        guard.set(Knob::AdvisorMode, "none")?;
    }
    guard.set(Knob::Run, "2")?;
    guard.set(Knob::MergeAcrossNodes, "0")?;
    guard.set(Knob::PagesToScan, "64")?;
    guard.set(Knob::SleepMillisecs, "0")?;
    // smart_scan (6.7 and later) would skip the unchanging pages.
    if sysfs.has(Knob::SmartScan) {
        guard.set(Knob::SmartScan, "0")?;
    }
    Ok(())
}

/// Anonymous memory of distinct pages bound to one NUMA node and advised
/// mergeable; unmapped on drop.
pub struct Area {
    _map: Mapping,
}

impl Area {
    /// Page contents come from `seed`, which is advanced past every page:
    /// no two pages of a run are alike.
    pub fn new(node: usize, pages: usize, seed: &mut u64) -> Result<Area> {
        let mut map = Mapping::anon(pages)?;
        // Bound before the first touch, so every page is allocated there.
        mbind_to_node(map.addr(), map.len(), node).map_err(|errno| Error::Call {
            call: "mbind",
            errno,
        })?;
        for i in 0..pages {
            *seed += 1;
            map.fill(i, *seed);
        }
        let ends = [map.page_addr(0), map.page_addr(pages - 1)];
        let nodes = page_nodes(&ends).map_err(|errno| Error::Call {
            call: "get_mempolicy",
            errno,
        })?;
        if nodes.iter().any(|&n| n != node as i32) {
            return Err(Error::Other(format!(
                "the area bound to node {node} has its first and last page on nodes {nodes:?}"
            )));
        }
        map.advise(Advice::Mergeable).map_err(|errno| Error::Call {
            call: "madvise(MADV_MERGEABLE)",
            errno,
        })?;
        Ok(Area { _map: map })
    }
}

/// Pages of an area of `mib` MiB.
pub fn pages_of(mib: u64) -> usize {
    (mib as usize) << 20 >> page_size().trailing_zeros()
}

/// Wait for `n` more full scans. A ksmd that completes no scan for `stall`
/// has stalled: not a slow kernel, a stuck one.
pub fn wait_scans(sysfs: &Sysfs, n: u64, s: &Settings) -> Result<Wait> {
    const POLL: Duration = Duration::from_millis(5);
    let mut last = sysfs.read_u64(Knob::FullScans)?;
    let target = last + n;
    let mut progress = Instant::now();
    loop {
        let now = sysfs.read_u64(Knob::FullScans)?;
        if now >= target {
            return Ok(Wait::Done);
        }
        if now != last {
            last = now;
            progress = Instant::now();
        }
        if Instant::now() >= s.deadline {
            return Ok(Wait::Deadline);
        }
        if progress.elapsed() >= s.stall {
            return Ok(Wait::Stalled(format!(
                "ksmd completed no full scan in {:.1} s (full_scans stays {now}, {target} awaited)",
                s.stall.as_secs_f64()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Write merge_across_nodes; -EBUSY would mean that pages got merged.
fn switch(guard: &mut KnobGuard<'_>, value: &str) -> Result<()> {
    guard.set(Knob::MergeAcrossNodes, value).map_err(|e| {
        let shared = guard.sysfs().read(Knob::PagesShared).unwrap_or_default();
        Error::Other(format!(
            "merge_across_nodes={value}: {e} (pages_shared {shared})"
        ))
    })
}

/// ksmd's state and kernel stack, a few samples apart: where a stalled ksmd
/// spends its time. Empty if ksmd or /proc/<pid>/stack cannot be read.
pub fn ksmd_samples() -> Vec<String> {
    let Some(pid) = std::fs::read_dir("/proc").ok().and_then(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| ksm::procfs::stat(pid).is_some_and(|s| s.comm == "ksmd" && s.ppid == 2))
    }) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for sample in 1..=3 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .unwrap_or("?")
            .trim();
        lines.push(format!("ksmd (pid {pid}) sample {sample}: state {state}"));
        if let Ok(stack) = std::fs::read_to_string(format!("/proc/{pid}/stack")) {
            lines.extend(stack.lines().map(|l| format!("  {l}")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    lines
}

/// Sleep a random time from 0 to `max`, in whole milliseconds.
fn pause(rng: &mut fastrand::Rng, max: Duration) {
    let ms = rng.u64(0..=max.as_millis() as u64);
    std::thread::sleep(Duration::from_millis(ms));
}

/// Run the rounds; `progress` hears of each finished one. The knobs must
/// have been set up ([`set_up`]); ksmd is started here.
pub fn run(
    guard: &mut KnobGuard<'_>,
    s: &Settings,
    rng: &mut fastrand::Rng,
    mut progress: impl FnMut(Round),
) -> Result<Outcome> {
    let sysfs = guard.sysfs().clone();
    let mut seed = 0;
    let _node0 = Area::new(0, s.pages, &mut seed)?;
    let mut node1 = Area::new(1, s.pages, &mut seed)?;
    guard.set(Knob::Run, "1")?;
    // The end of the run, unless the scans came.
    let scans = |rounds: u64| -> Result<Option<Outcome>> {
        Ok(match wait_scans(&sysfs, 2, s)? {
            Wait::Done => None,
            Wait::Deadline => Some(Outcome::TimeUp(rounds)),
            Wait::Stalled(what) => Some(Outcome::Stalled {
                rounds,
                what,
                ksmd: ksmd_samples(),
            }),
        })
    };
    for number in 1..=s.rounds {
        let start = Instant::now();
        let done = number - 1;
        if let Some(end) = scans(done)? {
            return Ok(end);
        }
        pause(rng, s.max_pause);
        switch(guard, "1")?;
        if let Some(end) = scans(done)? {
            return Ok(end);
        }
        drop(node1);
        node1 = Area::new(1, s.pages, &mut seed)?;
        if let Some(end) = scans(done)? {
            return Ok(end);
        }
        pause(rng, s.max_pause);
        switch(guard, "0")?;
        progress(Round {
            number,
            took: start.elapsed(),
            full_scans: sysfs.read_u64(Knob::FullScans)?,
        });
    }
    Ok(Outcome::AllRounds(s.rounds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn settings(deadline: Duration, stall: Duration) -> Settings {
        Settings {
            rounds: 1,
            deadline: Instant::now() + deadline,
            pages: 1,
            stall,
            max_pause: Duration::ZERO,
        }
    }

    #[test]
    fn area_sizes() {
        assert_eq!(pages_of(8) * page_size(), 8 << 20);
        assert_eq!(pages_of(1) * page_size(), 1 << 20);
    }

    #[test]
    fn scans_that_come_end_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full_scans");
        fs::write(&path, "5\n").unwrap();
        let sysfs = Sysfs::at(dir.path());
        let bump = std::thread::spawn(move || {
            for n in 6..=7 {
                std::thread::sleep(Duration::from_millis(20));
                // Renamed into place: the reader never sees a half-written file.
                let tmp = path.with_extension("tmp");
                fs::write(&tmp, format!("{n}\n")).unwrap();
                fs::rename(&tmp, &path).unwrap();
            }
        });
        let s = settings(Duration::from_secs(30), Duration::from_secs(30));
        assert_eq!(wait_scans(&sysfs, 2, &s).unwrap(), Wait::Done);
        bump.join().unwrap();
    }

    #[test]
    fn the_deadline_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("full_scans"), "5\n").unwrap();
        let sysfs = Sysfs::at(dir.path());
        let s = settings(Duration::from_millis(30), Duration::from_secs(30));
        assert_eq!(wait_scans(&sysfs, 1, &s).unwrap(), Wait::Deadline);
    }

    #[test]
    fn a_stalled_ksmd_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("full_scans"), "5\n").unwrap();
        let sysfs = Sysfs::at(dir.path());
        let s = settings(Duration::from_secs(30), Duration::from_millis(30));
        let Wait::Stalled(what) = wait_scans(&sysfs, 1, &s).unwrap() else {
            panic!("no stall");
        };
        assert!(what.contains("no full scan"), "{what}");
        assert!(what.contains("full_scans stays 5, 6 awaited"), "{what}");
    }

    #[test]
    fn no_full_scans_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(Duration::from_secs(30), Duration::from_secs(30));
        assert!(wait_scans(&Sysfs::at(dir.path()), 1, &s).is_err());
    }
}
