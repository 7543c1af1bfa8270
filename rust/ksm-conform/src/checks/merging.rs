//! What merging does to pages and counters: ksm.rst's overview (identical
//! pages become one write-protected page, copied on write), use_zero_pages,
//! max_page_sharing, and the meaning of the statistics files.

use ksm::kernel::Version;
use ksm::mem::page_size;
use ksm::procfs::{self, KsmStat, is_mergeable};
use ksm::{Advice, Knob, Mapping};
use nix::errno::Errno;

use super::trees::{Content, SETTLE, counters};
use super::{distinct_frames, ensure_content, kpf_agrees, mergeable, one_frame, pfns};
use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "merging/identical_pages_merge_distinct_pages_do_not",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: identical_merge_distinct_do_not,
    },
    Check {
        name: "merging/write_copies_only_the_written_page",
        requires: &[Req::Root, Req::Ksm],
        body: write_copies_only_that_page,
    },
    Check {
        name: "merging/unmergeable_restores_private_pages",
        requires: &[Req::Root, Req::Ksm],
        body: unmergeable_restores_private_pages,
    },
    Check {
        name: "merging/use_zero_pages_maps_empty_pages_to_the_zero_page",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::UseZeroPages),
            Req::SoleKsmUser,
        ],
        body: use_zero_pages,
    },
    Check {
        name: "merging/empty_pages_merge_like_any_content_without_use_zero_pages",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::UseZeroPages),
            Req::SoleKsmUser,
        ],
        body: empty_pages_without_use_zero_pages,
    },
    Check {
        name: "merging/ksm_zero_pages_fall_when_unmerged_written_discarded_or_unmapped",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::UseZeroPages),
            Req::Knob(Knob::KsmZeroPages),
            Req::SoleKsmUser,
        ],
        body: ksm_zero_pages_fall,
    },
    Check {
        name: "merging/max_page_sharing_caps_sharers_per_ksm_page",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: max_page_sharing,
    },
    Check {
        name: "merging/counters_keep_their_documented_meaning",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: counters_meaning,
    },
    Check {
        name: "merging/pages_changing_between_scans_are_volatile",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: volatile,
    },
];

/// sizeof(struct ksm_rmap_item) on 64-bit, as ksm.rst says ("64B on 64-bit
/// CPU architecture"); the profit formulas use it.
const RMAP_ITEM_SIZE: i64 = 64;

/// Clean slate, smart_scan off (every page looked at in every scan), and
/// ksmd stepping scan by scan from its first scan.
fn stepping(ctx: &mut Ctx) -> CheckResult<Stepper> {
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    Stepper::start(ctx)
}

/// 16 identical pages share one frame, a KSM page (pages_shared 1,
/// pages_sharing 15: "how much saved"); 16 distinct pages keep their
/// frames, checked every scan against the unstable tree (pages_unshared
/// 16), and nothing is volatile.
fn identical_merge_distinct_do_not(ctx: &mut Ctx) -> CheckResult {
    const SAME: usize = 16;
    const DISTINCT: usize = 16;
    ctx.clean_slate()?;
    let same = mergeable(SAME, 1)?;
    let mut distinct = Mapping::anon(DISTINCT)?;
    for i in 0..DISTINCT {
        distinct.fill(i, 100 + i as u64);
    }
    call(
        "madvise(MADV_MERGEABLE)",
        distinct.advise(Advice::Mergeable),
    )?;
    let before = pfns(&distinct)?;
    let mut stepper = stepping(ctx)?;
    let want = Counters {
        shared: 1,
        sharing: SAME as u64 - 1,
        unshared: DISTINCT as u64,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, want, "merged")?;
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        SAME as u64,
        "ksm_merging_pages"
    );
    one_frame(&same, 0..SAME)?;
    ensure_eq!(pfns(&distinct)?, before, "frames of the distinct pages");
    kpf_agrees(ctx, &same, |_| true)?;
    kpf_agrees(ctx, &distinct, |_| false)?;
    ensure_content(&same, |_| 1)?;
    ensure_content(&distinct, |i| 100 + i as u64)
}

/// /proc/vmstat's cow_ksm counts the copies of KSM pages made on write.
/// Required from 6.1, the oldest kernel the suite targets (Debian's 6.1
/// image has it; mainline added it earlier, in "mm/vmstat: add events for
/// ksm cow"), wherever VM events are counted at all (pgfault is there).
const COW_KSM_SINCE: Version = Version::new(6, 1);

fn cow_ksm_required(version: Option<Version>, counts_events: bool) -> bool {
    counts_events && version.is_some_and(|v| v >= COW_KSM_SINCE)
}

/// "a single write-protected page (which is automatically copied if a
/// process later wants to update its content)".
fn write_copies_only_that_page(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 8;
    const WRITTEN: usize = 3;
    ctx.clean_slate()?;
    let mut m = mergeable(PAGES, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, PAGES as u64, 5)?;
    ctx.set(Knob::Run, "0")?; // nothing re-merges behind our back
    let cow_before = procfs::vmstat("cow_ksm")?;
    if cow_ksm_required(ctx.env.version, procfs::vmstat("pgfault")?.is_some()) {
        ensure!(
            cow_before.is_some(),
            "/proc/vmstat has no cow_ksm, although it counts VM events and the kernel is {} \
             (cow_ksm is there since {COW_KSM_SINCE} at the latest)",
            ctx.env.release
        );
    }
    let ksm_frame = one_frame(&m, 0..PAGES)?;
    m.fill(WRITTEN, 2);
    let seed = |i| if i == WRITTEN { 2 } else { 1 };
    ensure_content(&m, seed)?;
    let frames = pfns(&m)?;
    for (i, frame) in frames.iter().enumerate() {
        ensure_eq!(
            *frame == ksm_frame,
            i != WRITTEN,
            "page {i} maps the KSM page"
        );
    }
    kpf_agrees(ctx, &m, |i| i != WRITTEN)?;
    if let (Some(before), Some(after)) = (cow_before, procfs::vmstat("cow_ksm")?) {
        ensure_eq!(after - before, 1, "cow_ksm in /proc/vmstat after one write");
    }
    // The per-process count follows once ksmd has looked again.
    ctx.set(Knob::Run, "1")?;
    ctx.wait_merging_pages(None, PAGES as u64 - 1, 5)?;
    ensure_content(&m, seed)
}

/// "MADV_UNMERGEABLE ... restore unshared pages: whereupon KSM unmerges
/// whatever it merged in that range."
fn unmergeable_restores_private_pages(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 8;
    ctx.clean_slate()?;
    let m = mergeable(PAGES, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, PAGES as u64, 5)?;
    call("madvise(MADV_UNMERGEABLE)", m.advise(Advice::Unmergeable))?;
    // Unmerged by the call itself.
    distinct_frames(&m, 0..PAGES, "after MADV_UNMERGEABLE")?;
    kpf_agrees(ctx, &m, |_| false)?;
    ensure!(
        !is_mergeable(m.addr())?,
        "mg still set after MADV_UNMERGEABLE"
    );
    ensure_content(&m, |_| 1)?;
    ctx.wait_merging_pages(None, 0, 5)?;
    ensure_content(&m, |_| 1)
}

/// The frame of the zero page, as a read fault maps it.
fn zero_pfn() -> CheckResult<u64> {
    let probe = Mapping::anon(1)?;
    std::hint::black_box(probe.page(0)[0]);
    let pfn = procfs::pagemap(probe.addr())?.pfn();
    ensure!(pfn != 0, "cannot see the zero page's frame in pagemap");
    Ok(pfn)
}

/// `pages` anonymous pages that were written (real pages, not the zero
/// page) and hold only zeroes, advised MADV_MERGEABLE.
fn empty_pages(pages: usize) -> CheckResult<Mapping> {
    let zero = zero_pfn()?;
    let mut m = Mapping::anon(pages)?;
    for i in 0..pages {
        m.fill(i, 1);
        m.fill(i, 0);
    }
    ensure!(
        pfns(&m)?.iter().all(|f| *f != zero),
        "empty pages are on the zero page before merging"
    );
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    Ok(m)
}

/// ksm_zero_pages in sysfs, 0 where the kernel has no such file.
fn ksm_zero_pages(ctx: &Ctx) -> CheckResult<u64> {
    if ctx.sysfs().has(Knob::KsmZeroPages) {
        ctx.read(Knob::KsmZeroPages)
    } else {
        Ok(0)
    }
}

/// "When set to 1, empty pages are merged with the kernel zero page(s)
/// instead of with each other", counted in ksm_zero_pages (sysfs, and
/// ksm_stat per process), not in pages_sharing.
fn use_zero_pages(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 16;
    ctx.clean_slate()?;
    ctx.set(Knob::UseZeroPages, "1")?;
    let zero_pfn = zero_pfn()?;
    let m = empty_pages(PAGES)?;
    ensure!(
        pfns(&m)?.iter().all(|f| *f != zero_pfn),
        "pages are on the zero page before merging"
    );
    let zero_before = ctx
        .sysfs()
        .has(Knob::KsmZeroPages)
        .then(|| ctx.read(Knob::KsmZeroPages))
        .transpose()?;
    ctx.start_ksmd()?;
    ctx.wait_within_scans("every empty page mapped to the zero page", 5, || {
        Ok((0..PAGES).all(|i| procfs::pagemap(m.page_addr(i)).is_ok_and(|e| e.pfn() == zero_pfn)))
    })?;
    ensure_content(&m, |_| 0)?;
    ctx.sole_ksm_user()?;
    ensure_eq!(
        ctx.read(Knob::PagesSharing)?,
        0,
        "pages_sharing (zero pages are not KSM pages)"
    );
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        0,
        "ksm_merging_pages (not including zero pages)"
    );
    if let Some(before) = zero_before {
        let after = ctx.read(Knob::KsmZeroPages)?;
        ensure_eq!(
            after - before,
            PAGES as u64,
            "growth of /sys/kernel/mm/ksm/ksm_zero_pages"
        );
    }
    if let Some(n) = KsmStat::read(None)?.number("ksm_zero_pages") {
        ensure_eq!(n, PAGES as i64, "ksm_zero_pages in /proc/self/ksm_stat");
    }
    Ok(())
}

/// A KSM-placed zero page stays in its rmap_item for one more scan (the
/// next scan frees the rmap_items of addresses that map no page): zero
/// pages settle a scan later than merged pages.
const ZERO_SETTLE: u64 = SETTLE + 1;

/// use_zero_pages 0, "normal KSM behaviour": empty pages are a content like
/// any other, 16 of them on one KSM page (pages_shared 1, pages_sharing
/// 15), and ksm_zero_pages does not move. "This setting can be changed at
/// any time, it is only effective for pages merged after the change": with
/// 1, that KSM page stays as it is, and 8 new empty pages go to the zero
/// page (try_to_merge_with_zero_page() comes before the stable tree), not
/// to it: ksm_zero_pages + 8.
fn empty_pages_without_use_zero_pages(ctx: &mut Ctx) -> CheckResult {
    const OLD: usize = 16;
    const NEW: usize = 8;
    ctx.clean_slate()?;
    ctx.set(Knob::UseZeroPages, "0")?;
    let zero = zero_pfn()?;
    let zero_before = ksm_zero_pages(ctx)?;
    let old = empty_pages(OLD)?;
    let mut stepper = stepping(ctx)?;
    let merged = Counters {
        shared: 1,
        sharing: OLD as u64 - 1,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, merged, "empty pages, use_zero_pages 0")?;
    let ksm_frame = one_frame(&old, 0..OLD)?;
    ensure!(ksm_frame != zero, "empty pages merged into the zero page");
    ensure_eq!(
        ksm_zero_pages(ctx)?,
        zero_before,
        "ksm_zero_pages with use_zero_pages 0"
    );
    ctx.set(Knob::UseZeroPages, "1")?;
    let new = empty_pages(NEW)?;
    stepper.settle(ctx, ZERO_SETTLE, merged, "8 more, use_zero_pages 1")?;
    ensure_eq!(
        one_frame(&old, 0..OLD)?,
        ksm_frame,
        "frame of the pages merged before the change"
    );
    ensure_eq!(
        one_frame(&new, 0..NEW)?,
        zero,
        "frame of the new empty pages"
    );
    if ctx.sysfs().has(Knob::KsmZeroPages) {
        ensure_eq!(
            ksm_zero_pages(ctx)? - zero_before,
            NEW as u64,
            "growth of ksm_zero_pages"
        );
    }
    ensure_content(&old, |_| 0)?;
    ensure_content(&new, |_| 0)
}

/// ksm_functional_tests' test_unmerge_zero_pages, and the other ways a
/// KSM-placed zero page goes: 16 empty pages on the zero page count 16 in
/// ksm_zero_pages (sysfs, and this process's ksm_stat), and it falls at
/// once by 4 for each of MADV_UNMERGEABLE (break_ksm() finds the KSM zero
/// page by its dirty pte and unshares it), a write (the copy-on-write of
/// the zero page: ksm_might_unmap_zero_page()), MADV_DONTNEED and munmap
/// (zap_pte_range()), back to where it was. The pages read as zeroes
/// throughout, and none of this is a KSM page.
fn ksm_zero_pages_fall(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 16;
    const Q: usize = PAGES / 4;
    ctx.clean_slate()?;
    ctx.set(Knob::UseZeroPages, "1")?;
    let zero = zero_pfn()?;
    let before = ksm_zero_pages(ctx)?;
    let mut m = empty_pages(PAGES)?;
    let mut stepper = stepping(ctx)?;
    stepper.settle(ctx, ZERO_SETTLE, Counters::default(), "empty pages merged")?;
    ensure_eq!(one_frame(&m, 0..PAGES)?, zero, "frame of the empty pages");
    let count = |ctx: &Ctx, want: usize, after: &str| -> CheckResult {
        ensure_eq!(
            ksm_zero_pages(ctx)? - before,
            want as u64,
            "ksm_zero_pages after {after}"
        );
        if let Some(n) = KsmStat::read(None)?.number("ksm_zero_pages") {
            ensure_eq!(n, want as i64, "ksm_zero_pages in ksm_stat after {after}");
        }
        Ok(())
    };
    count(ctx, PAGES, "merging")?;
    call(
        "madvise(MADV_UNMERGEABLE) of 4",
        m.advise_pages(0, Q, Advice::Unmergeable),
    )?;
    count(ctx, PAGES - Q, "MADV_UNMERGEABLE of 4")?;
    distinct_frames(&m, 0..Q, "unmerged zero pages")?;
    for i in Q..2 * Q {
        m.fill(i, 3);
    }
    count(ctx, PAGES - 2 * Q, "writing 4")?;
    call(
        "madvise(MADV_DONTNEED) of 4",
        m.advise_pages(2 * Q, Q, Advice::DontNeed),
    )?;
    count(ctx, PAGES - 3 * Q, "MADV_DONTNEED of 4")?;
    m.punch_hole(3 * Q, Q)?;
    count(ctx, 0, "munmap of 4")?;
    for i in 0..3 * Q {
        let seed = if (Q..2 * Q).contains(&i) { 3 } else { 0 };
        ensure!(m.holds(i, seed), "page {i} lost its content");
    }
    expect(ctx, Counters::default(), "after all")
}

/// "The maximum possible pages_sharing/pages_shared ratio is limited by
/// the max_page_sharing tunable"; pages beyond it go to duplicate KSM pages
/// chained together (stable_node_chains, stable_node_dups). mm/ksm.c also
/// refuses to change the limit while KSM pages exist (EBUSY).
///
/// With max_page_sharing 2 every KSM page holds two mappings: 11 identical
/// pages make five KSM pages, the first of which became a chain when the
/// second was inserted, all five its dups, and the 11th page waits alone in
/// the unstable tree (trees::Content::merged): pages_shared 5,
/// pages_sharing 5, pages_unshared 1, 1 chain, 5 dups.
fn max_page_sharing(ctx: &mut Ctx) -> CheckResult {
    const PAGES: u64 = 11;
    const LIMIT: u64 = 2;
    ctx.clean_slate()?;
    ctx.set(Knob::MaxPageSharing, &LIMIT.to_string())?;
    let m = mergeable(PAGES as usize, 1)?;
    let mut stepper = stepping(ctx)?;
    let want = counters([&Content::merged(PAGES, LIMIT)]);
    stepper.settle(ctx, SETTLE, want, "merged")?;
    let mut frames = pfns(&m)?;
    frames.sort_unstable();
    let mut per_frame: Vec<usize> = frames.chunk_by(|a, b| a == b).map(<[u64]>::len).collect();
    per_frame.sort_unstable();
    ensure_eq!(
        per_frame,
        vec![1, 2, 2, 2, 2, 2],
        "pages per frame (max_page_sharing 2)"
    );
    let busy = ctx
        .guard
        .set(Knob::MaxPageSharing, "256")
        .map_err(|e| e.errno());
    ensure_eq!(
        busy,
        Err(Some(Errno::EBUSY)),
        "max_page_sharing changed while KSM pages exist"
    );
    ctx.set(Knob::Run, "2")?;
    ctx.set(Knob::MaxPageSharing, "256")?;
    ensure_content(&m, |_| 1)
}

/// pages_scanned and full_scans grow; unique pages count as pages_unshared;
/// general_profit and ksm_process_profit follow the formulas of "Monitoring
/// KSM profit" (exactly, with ksmd stopped so nothing moves in between).
///
/// Scan by scan, with smart_scan off, ksmd looks at every page once per
/// full scan: full_scans grows by one and pages_scanned by 16 per step.
/// The 8 unique pages are pages_unshared; nothing is volatile.
fn counters_meaning(ctx: &mut Ctx) -> CheckResult {
    const SAME: usize = 8;
    const UNIQUE: usize = 8;
    const SCANS: u64 = 4;
    ctx.clean_slate()?;
    let same = mergeable(SAME, 1)?;
    let mut unique = Mapping::anon(UNIQUE)?;
    for i in 0..UNIQUE {
        unique.fill(i, 1000 + i as u64);
    }
    call("madvise(MADV_MERGEABLE)", unique.advise(Advice::Mergeable))?;
    let mut stepper = stepping(ctx)?;
    let scanned_before = ctx
        .sysfs()
        .has(Knob::PagesScanned)
        .then(|| ctx.read(Knob::PagesScanned))
        .transpose()?;
    let full_before = ctx.read(Knob::FullScans)?;
    stepper.steps(ctx, SCANS)?;
    ensure_eq!(
        ctx.read(Knob::FullScans)? - full_before,
        SCANS,
        "full_scans after {SCANS} full scans"
    );
    if let Some(before) = scanned_before {
        ensure_eq!(
            ctx.read(Knob::PagesScanned)? - before,
            SCANS * (SAME + UNIQUE) as u64,
            "pages_scanned after {SCANS} full scans of {} pages",
            SAME + UNIQUE
        );
    }
    let want = Counters {
        shared: 1,
        sharing: SAME as u64 - 1,
        unshared: UNIQUE as u64,
        ..Counters::default()
    };
    expect(ctx, want, "merged")?;
    let shared = want.shared as i64;
    let sharing = want.sharing as i64;
    let unshared = want.unshared as i64;
    let volatile = 0;
    let ps = page_size() as i64;
    if ctx.sysfs().has(Knob::GeneralProfit) && cfg!(target_pointer_width = "64") {
        let zero = if ctx.sysfs().has(Knob::KsmZeroPages) {
            ctx.read(Knob::KsmZeroPages)? as i64
        } else {
            0
        };
        let rmap_items = shared + sharing + unshared + volatile;
        let want = (sharing + zero) * ps - rmap_items * RMAP_ITEM_SIZE;
        ensure_eq!(
            ctx.sysfs().read_i64(Knob::GeneralProfit)?,
            want,
            "general_profit"
        );
    }
    let stat = KsmStat::read(None)?;
    if let (Some(profit), Some(merging), Some(rmap)) = (
        stat.number("ksm_process_profit"),
        stat.number("ksm_merging_pages"),
        stat.number("ksm_rmap_items"),
    ) {
        let zero = stat.number("ksm_zero_pages").unwrap_or(0);
        ensure_eq!(merging, SAME as i64, "ksm_merging_pages in ksm_stat");
        ensure_eq!(rmap, (SAME + UNIQUE) as i64, "ksm_rmap_items in ksm_stat");
        ensure_eq!(
            profit,
            (merging + zero) * ps - rmap * RMAP_ITEM_SIZE,
            "ksm_process_profit"
        );
    }
    ensure_content(&same, |_| 1)?;
    ensure_content(&unique, |i| 1000 + i as u64)
}

/// pages_volatile: "how many pages changing too fast to be placed in a
/// tree". Rewriting every page between scans keeps their checksums moving.
///
/// Scan by scan: after the first scan every page has only a checksum
/// (volatile by the formula, rmap_items in no tree); a page whose checksum
/// changed since the last scan stays out of the trees
/// (cmp_and_merge_page()), so rewriting all 32 between scans keeps all 32
/// volatile; once they stop changing the next scan puts them, all
/// distinct, in the unstable tree: 32 unshared, none volatile.
fn volatile(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 32;
    const ROUNDS: u64 = 3;
    ctx.clean_slate()?;
    let mut m = Mapping::anon(PAGES)?;
    let mut seed = 5000;
    let mut rewrite = |m: &mut Mapping| {
        for i in 0..PAGES {
            seed += 1;
            m.fill(i, seed);
        }
    };
    rewrite(&mut m);
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    let mut stepper = stepping(ctx)?;
    let volatile = Counters {
        volatile: PAGES as u64,
        ..Counters::default()
    };
    expect(ctx, volatile, "after the first scan")?;
    for round in 1..=ROUNDS {
        rewrite(&mut m);
        stepper.step(ctx)?;
        expect(ctx, volatile, &format!("rewritten before scan {round}"))?;
    }
    let settled = Counters {
        unshared: PAGES as u64,
        ..Counters::default()
    };
    stepper.settle(ctx, 1, settled, "left alone")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Some(Version::new(6, 1)), true, true)]
    #[case(Some(Version::new(7, 3)), true, true)]
    #[case(Some(Version::new(7, 3)), false, false)]
    #[case(Some(Version::new(5, 15)), true, false)]
    #[case(None, true, false)]
    fn cow_ksm_is_required_from_6_1_with_vm_events(
        #[case] version: Option<Version>,
        #[case] counts_events: bool,
        #[case] required: bool,
    ) {
        assert_eq!(cow_ksm_required(version, counts_events), required);
    }
}
