//! /sys/kernel/mm/ksm/run: "set to 0 to stop ksmd from running but keep
//! merged pages, 1 to run ksmd, 2 to stop ksmd and unmerge all pages
//! currently merged, but leave mergeable areas registered for next run".

use std::time::{Duration, Instant};

use ksm::Knob;
use ksm::procfs::{self, is_mergeable};
use nix::errno::Errno;

use super::{distinct_frames, ensure_content, kpf_agrees, mergeable, one_frame};
use crate::ctx::{CheckResult, Ctx};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "run/accepts_only_0_1_2",
        requires: &[Req::Root, Req::Ksm],
        body: accepts_only_0_1_2,
    },
    Check {
        name: "run/0_stops_ksmd_and_keeps_merged_pages",
        requires: &[Req::Root, Req::Ksm],
        body: zero_stops_and_keeps,
    },
    Check {
        name: "run/2_unmerges_all_and_keeps_areas_registered",
        requires: &[Req::Root, Req::Ksm],
        body: two_unmerges_and_keeps_registered,
    },
];

const PAGES: usize = 8;

fn accepts_only_0_1_2(ctx: &mut Ctx) -> CheckResult {
    for value in ["2", "0", "1", "0"] {
        ctx.set(Knob::Run, value)?;
        ensure_eq!(
            ctx.sysfs().read(Knob::Run)?,
            value,
            "run after writing {value}"
        );
    }
    for bad in ["3", "-1", "4294967296"] {
        let got = ctx.guard.set(Knob::Run, bad).map_err(|e| e.errno());
        ensure_eq!(got, Err(Some(Errno::EINVAL)), "run <- {bad}");
        ensure_eq!(ctx.sysfs().read(Knob::Run)?, "0", "run after refused {bad}");
    }
    Ok(())
}

/// Merge PAGES identical pages and return them.
fn merged(ctx: &mut Ctx) -> CheckResult<ksm::Mapping> {
    ctx.clean_slate()?;
    let m = mergeable(PAGES, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, PAGES as u64, 5)?;
    Ok(m)
}

fn zero_stops_and_keeps(ctx: &mut Ctx) -> CheckResult {
    let m = merged(ctx)?;
    let ksm_frame = one_frame(&m, 0..PAGES)?;
    // Time one scan while ksmd runs, to know how long "stopped" must last
    // before it means something.
    let t = Instant::now();
    ctx.wait_scans(1)?;
    let window = (t.elapsed() * 20).max(Duration::from_millis(300));
    ctx.set(Knob::Run, "0")?;
    let scans = ctx.read(Knob::FullScans)?;
    let sharing = ctx.read(Knob::PagesSharing)?;
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        ensure_eq!(ctx.read(Knob::FullScans)?, scans, "full_scans with run=0");
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.note(format!(
        "full_scans stayed {scans} for {} ms",
        window.as_millis()
    ));
    ensure_eq!(
        ctx.read(Knob::PagesSharing)?,
        sharing,
        "pages_sharing after run=0"
    );
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        PAGES as u64,
        "ksm_merging_pages after run=0"
    );
    ensure_eq!(
        one_frame(&m, 0..PAGES)?,
        ksm_frame,
        "frame of the merged pages after run=0"
    );
    kpf_agrees(ctx, &m, |_| true)?;
    ensure_content(&m, |_| 1)
}

fn two_unmerges_and_keeps_registered(ctx: &mut Ctx) -> CheckResult {
    let m = merged(ctx)?;
    ctx.set(Knob::Run, "2")?;
    // Unmerging is done by the write itself, not later by ksmd.
    ensure_eq!(ctx.read(Knob::PagesShared)?, 0, "pages_shared after run=2");
    ensure_eq!(
        ctx.read(Knob::PagesSharing)?,
        0,
        "pages_sharing after run=2"
    );
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        0,
        "ksm_merging_pages after run=2"
    );
    distinct_frames(&m, 0..PAGES, "after run=2")?;
    kpf_agrees(ctx, &m, |_| false)?;
    ensure_content(&m, |_| 1)?;
    ensure!(
        is_mergeable(m.addr())?,
        "run=2 dropped the area's registration (no mg)"
    );
    // No new madvise: run=1 merges the registered area again.
    ctx.set(Knob::Run, "1")?;
    ctx.wait_merging_pages(None, PAGES as u64, 5)?;
    ensure_content(&m, |_| 1)
}
