//! Swapping KSM pages: "KSM's merged pages ... can now be swapped out just
//! like other user pages (but sharing is broken when they are swapped back
//! in: ksmd must rediscover their identity and merge again)".
//!
//! MADV_PAGEOUT in 7.3 skips folios mapped more than once
//! (madvise_cold_or_pageout_pte_range: folio_maybe_mapped_shared()), so the
//! KSM page is first reduced to a single mapping by writing to its other
//! sharer, with ksmd stopped.

use ksm::procfs;
use ksm::{Advice, Knob};

use super::trees::SETTLE;
use super::{ensure_content, kpf_agrees, mergeable, one_frame, pfns};
use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[Check {
    name: "swap/ksm_page_swapped_out_keeps_content_and_merges_again",
    requires: &[Req::Root, Req::Ksm, Req::Swap, Req::SoleKsmUser],
    body: swapped_ksm_page,
}];

/// Scan by scan. Two identical pages merge (pages_shared 1, pages_sharing
/// 1); page 1 is written back to the same bytes, which copies it, so the
/// KSM page is mapped by page 0 alone; MADV_PAGEOUT swaps it out (pagemap:
/// swapped, not present). Reading page 0 swaps it in as an ordinary page:
/// writing it again copies nothing (cow_ksm stays), and where
/// /proc/kpageflags can be trusted it is not a KSM page. ksmd then finds
/// the KSM page gone: its next scan drops the stale stable node with both
/// rmap_items (remove_node_from_stable_tree(), counters 0, both pages
/// volatile by their reset checksums) and the scan after merges the two
/// pages again: pages_shared 1, pages_sharing 1 once more.
fn swapped_ksm_page(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let mut m = mergeable(2, 1)?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let mut stepper = Stepper::start(ctx)?;
    let merged = Counters {
        shared: 1,
        sharing: 1,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, merged, "merged")?;
    let ksm_frame = one_frame(&m, 0..2)?;
    // ksmd is parked between steps: nothing merges behind our back.
    m.fill(1, 2);
    m.fill(1, 1);
    let frames = pfns(&m)?;
    ensure!(
        frames[0] == ksm_frame && frames[1] != ksm_frame,
        "after copying page 1, page 0 should keep the KSM frame {ksm_frame} alone: {frames:?}"
    );
    kpf_agrees(ctx, &m, |i| i == 0)?;
    let swpin_copy = procfs::vmstat("ksm_swpin_copy")?;
    call(
        "madvise(MADV_PAGEOUT) of page 0",
        m.advise_pages(0, 1, Advice::PageOut),
    )?;
    let entry = procfs::pagemap(m.page_addr(0))?;
    ensure!(
        entry.swapped() && !entry.present(),
        "the KSM page was not swapped out: pagemap {:#x}",
        entry.0
    );
    ensure_content(&m, |_| 1)?; // swaps page 0 back in
    kpf_agrees(ctx, &m, |_| false)?;
    let cow_before = procfs::vmstat("cow_ksm")?;
    m.fill(0, 1);
    if let (Some(before), Some(after)) = (cow_before, procfs::vmstat("cow_ksm")?) {
        ensure_eq!(
            after - before,
            0,
            "cow_ksm for a write to the page swapped back in (a KSM page would be copied)"
        );
    }
    ctx.note(format!(
        "ksm_swpin_copy {:?} -> {:?}",
        swpin_copy,
        procfs::vmstat("ksm_swpin_copy")?
    ));
    // The stale node still counts until ksmd looks.
    expect(ctx, merged, "swapped in, before ksmd looks")?;
    stepper.step(ctx)?;
    let volatile = Counters {
        volatile: 2,
        ..Counters::default()
    };
    expect(ctx, volatile, "one scan after the swap-in")?;
    stepper.settle(ctx, SETTLE - 1, merged, "merged again")?;
    one_frame(&m, 0..2)?;
    // What the kernel does with a KSM page mapped twice: reported only.
    call(
        "madvise(MADV_PAGEOUT) of a KSM page mapped twice",
        m.advise(Advice::PageOut),
    )?;
    ctx.note(format!(
        "PAGEOUT of a KSM page mapped twice: swapped out {}",
        procfs::pagemap(m.page_addr(0))?.swapped()
    ));
    ensure_content(&m, |_| 1)
}
