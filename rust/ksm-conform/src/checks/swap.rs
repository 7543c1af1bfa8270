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

use super::{ensure_content, ksm_pages, mergeable, pfns};
use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[Check {
    name: "swap/ksm_page_swapped_out_keeps_content_and_merges_again",
    requires: &[Req::Root, Req::Ksm, Req::Swap, Req::PageFlags],
    body: swapped_ksm_page,
}];

fn swapped_ksm_page(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let mut m = mergeable(2, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 2, 5)?;
    ctx.set(Knob::Run, "0")?;
    // Leave the KSM page mapped once, by page 0 only.
    m.fill(1, 2);
    m.fill(1, 1);
    ensure_eq!(
        ksm_pages(&m)?,
        vec![true, false],
        "KSM pages after copying page 1"
    );
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
    let back_ksm = procfs::is_ksm_page(m.page_addr(0))?;
    ctx.note(format!(
        "after swap-in page 0 is a KSM page: {back_ksm:?}; ksm_swpin_copy {:?} -> {:?}",
        swpin_copy,
        procfs::vmstat("ksm_swpin_copy")?
    ));
    // ksmd finds both copies again.
    ctx.set(Knob::Run, "1")?;
    ctx.wait_within_scans("both pages merged again into one KSM page", 6, || {
        let a = procfs::pagemap(m.page_addr(0))?.pfn();
        let b = procfs::pagemap(m.page_addr(1))?.pfn();
        Ok(a != 0 && a == b && procfs::is_ksm_page(m.page_addr(0))? == Some(true))
    })?;
    ctx.note(format!("frames after re-merge: {:?}", pfns(&m)?));
    // What the kernel does with a KSM page mapped twice: reported only.
    ctx.set(Knob::Run, "0")?;
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
