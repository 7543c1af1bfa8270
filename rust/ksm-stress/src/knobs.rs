//! The actors that turn KSM's knobs while ksmd scans: every tunable now and
//! then (max_page_sharing and merge_across_nodes are refused with EBUSY
//! while KSM pages exist: counted), and run 1 -> 2 -> 1, after which no
//! page may be left sharing one (pages_sharing 0).

use std::path::PathBuf;
use std::time::Duration;

use ksm::Knob;
use nix::errno::Errno;

use crate::content::Rng;
use crate::coordinator::Shared;

/// Write a knob, record the outcome under "knob NAME" (or `op`), and
/// return it.
pub fn set(
    sh: &Shared,
    knob: Knob,
    value: &str,
    op: &str,
    expected: &[Errno],
) -> Result<(), Errno> {
    let r = sh
        .knobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set(knob, value)
        .map_err(|e| e.errno().unwrap_or(Errno::EIO));
    sh.stats().record(op, r, expected);
    r
}

fn knob_op(knob: Knob) -> String {
    format!("write {knob}")
}

/// Values of max_page_sharing the campaign uses: small, for chains.
pub const MAX_PAGE_SHARING: [u64; 4] = [2, 3, 4, 8];

pub fn knob_actor(sh: &Shared) {
    let mut rng = Rng::new(sh.seed ^ 0x6b6e_6f62);
    let numa = sh.nodes.len() > 1;
    while sh.ctl.proceed() {
        let read = |k: Knob| sh.sysfs().read(k).unwrap_or_default();
        let flip = |k: Knob| if read(k) == "1" { "0" } else { "1" };
        match rng.weighted(&[2, 2, 1, 2, 2, 2, 2, if numa { 2 } else { 0 }]) {
            0 => {
                let _ = set(
                    sh,
                    Knob::UseZeroPages,
                    flip(Knob::UseZeroPages),
                    &knob_op(Knob::UseZeroPages),
                    &[],
                );
            }
            1 => {
                let _ = set(
                    sh,
                    Knob::SmartScan,
                    flip(Knob::SmartScan),
                    &knob_op(Knob::SmartScan),
                    &[],
                );
            }
            2 => {
                let to = if read(Knob::AdvisorMode) == "scan-time" {
                    "none"
                } else {
                    "scan-time"
                };
                let op = knob_op(Knob::AdvisorMode);
                if set(sh, Knob::AdvisorMode, to, &op, &[]).is_ok() && to == "none" {
                    // Leaving scan-time mode resets pages_to_scan to 100.
                    let v = sh.pages_to_scan.to_string();
                    let _ = set(sh, Knob::PagesToScan, &v, &knob_op(Knob::PagesToScan), &[]);
                }
            }
            3 => {
                // EINVAL while the advisor owns pages_to_scan (scan-time).
                let v = rng
                    .between(sh.pages_to_scan / 2, sh.pages_to_scan * 2)
                    .to_string();
                let _ = set(
                    sh,
                    Knob::PagesToScan,
                    &v,
                    &knob_op(Knob::PagesToScan),
                    &[Errno::EINVAL],
                );
            }
            4 => {
                let v = rng.between(0, 30).to_string();
                let _ = set(
                    sh,
                    Knob::SleepMillisecs,
                    &v,
                    &knob_op(Knob::SleepMillisecs),
                    &[],
                );
            }
            5 => {
                let v = rng.between(0, 500).to_string();
                let k = Knob::StableNodeChainsPruneMillisecs;
                let _ = set(sh, k, &v, &knob_op(k), &[]);
            }
            6 => {
                let v = MAX_PAGE_SHARING[rng.below(4) as usize].to_string();
                let op = format!("{} while ksmd runs", knob_op(Knob::MaxPageSharing));
                let _ = set(sh, Knob::MaxPageSharing, &v, &op, &[Errno::EBUSY]);
            }
            _ => {
                let op = format!("{} while ksmd runs", knob_op(Knob::MergeAcrossNodes));
                let _ = set(
                    sh,
                    Knob::MergeAcrossNodes,
                    flip(Knob::MergeAcrossNodes),
                    &op,
                    &[Errno::EBUSY],
                );
            }
        }
        sh.ctl.sleep(Duration::from_millis(rng.between(1000, 4000)));
    }
}

/// This thread's make-it-fail, named by pid (the journal may be replayed
/// by another process, for which /proc/self is not us).
fn own_make_it_fail() -> PathBuf {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let pid = std::process::id();
    PathBuf::from(format!("/proc/{pid}/task/{tid}/make-it-fail"))
}

pub fn run_actor(sh: &Shared) {
    let mut rng = Rng::new(sh.seed ^ 0x7275_6e32);
    let me = own_make_it_fail();
    while sh
        .ctl
        .sleep(Duration::from_millis(rng.between(8_000, 30_000)))
        && sh.ctl.proceed()
    {
        let faulty = rng.chance(30) && sh.target_faults(&me, true);
        // ENOMEM: an unmerge found no memory for a COW copy (injected, or
        // a memory cgroup at its limit): ksmd is stopped then (run=0).
        let op = if faulty {
            "run=2 (faults armed)"
        } else {
            "run=2"
        };
        let r = set(sh, Knob::Run, "2", op, &[Errno::ENOMEM, Errno::EAGAIN]);
        if faulty {
            sh.target_faults(&me, false);
        }
        if r.is_ok() {
            // Every rmap_item is gone when run=2 returns, and ksmd cannot
            // make one before run=1. A stable node may outlive it while a
            // process that is exiting still maps its page (remove_stable_node
            // leaves it then): counted here, checked strictly between phases.
            let shared = sh.sysfs().read_u64(Knob::PagesShared).unwrap_or(u64::MAX);
            let sharing = sh.sysfs().read_u64(Knob::PagesSharing).unwrap_or(u64::MAX);
            let mut st = sh.stats();
            st.event("run=2 while workers run, pages_sharing checked 0", 1);
            if sharing != 0 {
                st.error(format!(
                    "right after run=2 (workers running): pages_sharing {sharing} (want 0)"
                ));
            }
            if shared != 0 {
                st.event("stable nodes left by a run=2 while workers run", shared);
            }
            drop(st);
            // The knobs that need no KSM page: EBUSY only if a process
            // exiting still maps one (remove_stable_node's race with exit).
            if rng.chance(50) {
                let v = MAX_PAGE_SHARING[rng.below(4) as usize].to_string();
                let op = format!("{} after run=2", knob_op(Knob::MaxPageSharing));
                let _ = set(sh, Knob::MaxPageSharing, &v, &op, &[Errno::EBUSY]);
            }
            if sh.nodes.len() > 1 && rng.chance(30) {
                let to = if sh.sysfs().read(Knob::MergeAcrossNodes).unwrap_or_default() == "1" {
                    "0"
                } else {
                    "1"
                };
                let op = format!("{} after run=2", knob_op(Knob::MergeAcrossNodes));
                let _ = set(sh, Knob::MergeAcrossNodes, to, &op, &[Errno::EBUSY]);
            }
            std::thread::sleep(Duration::from_millis(rng.below(2000)));
        }
        if set(sh, Knob::Run, "1", "run=1", &[]).is_err() {
            sh.stats().error("run=1 refused after run=2".into());
        }
    }
}
