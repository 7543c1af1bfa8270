//! What merging does to pages and counters: ksm.rst's overview (identical
//! pages become one write-protected page, copied on write), use_zero_pages,
//! max_page_sharing, and the meaning of the statistics files.

use ksm::kernel::Version;
use ksm::mem::page_size;
use ksm::procfs::{self, KsmStat, is_mergeable};
use ksm::{Advice, Knob, Mapping};
use nix::errno::Errno;

use super::{ensure_content, ksm_pages, mergeable, pfns};
use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "merging/identical_pages_merge_distinct_pages_do_not",
        requires: &[Req::Root, Req::Ksm, Req::PageFlags, Req::SoleKsmUser],
        body: identical_merge_distinct_do_not,
    },
    Check {
        name: "merging/write_copies_only_the_written_page",
        requires: &[Req::Root, Req::Ksm, Req::PageFlags],
        body: write_copies_only_that_page,
    },
    Check {
        name: "merging/unmergeable_restores_private_pages",
        requires: &[Req::Root, Req::Ksm, Req::PageFlags],
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
        body: counters,
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
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, SAME as u64, 5)?;
    // Give the distinct pages every chance to (wrongly) merge.
    ctx.wait_scans(3)?;
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        SAME as u64,
        "ksm_merging_pages"
    );
    ensure!(
        ksm_pages(&same)?.iter().all(|k| *k),
        "an identical page is not a KSM page"
    );
    let frames = pfns(&same)?;
    ensure!(
        frames.iter().all(|f| *f == frames[0]),
        "identical pages map different frames: {frames:?}"
    );
    ensure!(
        ksm_pages(&distinct)?.iter().all(|k| !k),
        "a distinct page became a KSM page"
    );
    ctx.sole_ksm_user()?;
    ensure_eq!(
        ctx.read(Knob::PagesShared)?,
        1,
        "pages_shared (one KSM page)"
    );
    ensure_eq!(
        ctx.read(Knob::PagesSharing)?,
        SAME as u64 - 1,
        "pages_sharing (\"how much saved\")"
    );
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
    m.fill(WRITTEN, 2);
    let seed = |i| if i == WRITTEN { 2 } else { 1 };
    ensure_content(&m, seed)?;
    let ksm = ksm_pages(&m)?;
    for (i, is_ksm) in ksm.iter().enumerate() {
        ensure_eq!(*is_ksm, i != WRITTEN, "page {i} is a KSM page");
    }
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
    ensure!(
        ksm_pages(&m)?.iter().all(|k| !k),
        "a KSM page survived MADV_UNMERGEABLE"
    );
    let mut frames = pfns(&m)?;
    frames.sort_unstable();
    frames.dedup();
    ensure_eq!(
        frames.len(),
        PAGES,
        "distinct frames after MADV_UNMERGEABLE"
    );
    ensure!(
        !is_mergeable(m.addr())?,
        "mg still set after MADV_UNMERGEABLE"
    );
    ensure_content(&m, |_| 1)?;
    ctx.wait_merging_pages(None, 0, 5)?;
    ensure_content(&m, |_| 1)
}

/// "When set to 1, empty pages are merged with the kernel zero page(s)
/// instead of with each other", counted in ksm_zero_pages (sysfs, and
/// ksm_stat per process), not in pages_sharing.
fn use_zero_pages(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 16;
    ctx.clean_slate()?;
    ctx.set(Knob::UseZeroPages, "1")?;
    let zero_pfn = {
        let probe = Mapping::anon(1)?;
        std::hint::black_box(probe.page(0)[0]); // a read fault maps the zero page
        procfs::pagemap(probe.addr())?.pfn()
    };
    ensure!(zero_pfn != 0, "cannot see the zero page's frame in pagemap");
    let mut m = Mapping::anon(PAGES)?;
    for i in 0..PAGES {
        m.fill(i, 1); // a real page ...
        m.fill(i, 0); // ... that is empty
    }
    ensure!(
        pfns(&m)?.iter().all(|f| *f != zero_pfn),
        "pages are on the zero page before merging"
    );
    let zero_before = ctx
        .sysfs()
        .has(Knob::KsmZeroPages)
        .then(|| ctx.read(Knob::KsmZeroPages))
        .transpose()?;
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
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

/// "The maximum possible pages_sharing/pages_shared ratio is limited by
/// the max_page_sharing tunable"; pages beyond it go to duplicate KSM pages
/// chained together (stable_node_chains, stable_node_dups). mm/ksm.c also
/// refuses to change the limit while KSM pages exist (EBUSY).
fn max_page_sharing(ctx: &mut Ctx) -> CheckResult {
    const PAGES: u64 = 10;
    const LIMIT: u64 = 2;
    ctx.clean_slate()?;
    ctx.set(Knob::MaxPageSharing, &LIMIT.to_string())?;
    let m = mergeable(PAGES as usize, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, PAGES, 10)?;
    ctx.set(Knob::Run, "0")?; // freeze the counters
    ctx.sole_ksm_user()?;
    let shared = ctx.read(Knob::PagesShared)?;
    let sharing = ctx.read(Knob::PagesSharing)?;
    let chains = ctx.read(Knob::StableNodeChains)?;
    let dups = ctx.read(Knob::StableNodeDups)?;
    ctx.note(format!(
        "pages_shared {shared} pages_sharing {sharing} chains {chains} dups {dups}"
    ));
    ensure_eq!(shared + sharing, PAGES, "pages_shared + pages_sharing");
    ensure!(
        sharing <= shared * (LIMIT - 1),
        "pages_sharing/pages_shared = {sharing}/{shared} exceeds max_page_sharing - 1"
    );
    ensure!(
        chains >= 1,
        "no stable_node_chains although pages hit max_page_sharing"
    );
    ensure!(
        dups >= 2,
        "stable_node_dups {dups}: expected duplicated KSM pages"
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
fn counters(ctx: &mut Ctx) -> CheckResult {
    const SAME: usize = 8;
    const UNIQUE: usize = 8;
    ctx.clean_slate()?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?; // every page is looked at every scan
    }
    let same = mergeable(SAME, 1)?;
    let mut unique = Mapping::anon(UNIQUE)?;
    for i in 0..UNIQUE {
        unique.fill(i, 1000 + i as u64);
    }
    call("madvise(MADV_MERGEABLE)", unique.advise(Advice::Mergeable))?;
    let scanned_before = ctx
        .sysfs()
        .has(Knob::PagesScanned)
        .then(|| ctx.read(Knob::PagesScanned))
        .transpose()?;
    let full_before = ctx.read(Knob::FullScans)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, SAME as u64, 5)?;
    ctx.wait_scans(2)?;
    ctx.set(Knob::Run, "0")?;
    let full = ctx.read(Knob::FullScans)?;
    ensure!(
        full >= full_before + 3,
        "full_scans went from {full_before} to {full} only"
    );
    if let Some(before) = scanned_before {
        let after = ctx.read(Knob::PagesScanned)?;
        ensure!(
            after - before >= ((SAME + UNIQUE) as u64) * 3,
            "pages_scanned grew by {} over 3+ full scans of {} pages",
            after - before,
            SAME + UNIQUE
        );
    }
    ctx.sole_ksm_user()?;
    let shared = ctx.read(Knob::PagesShared)? as i64;
    let sharing = ctx.read(Knob::PagesSharing)? as i64;
    let unshared = ctx.read(Knob::PagesUnshared)? as i64;
    let volatile = ctx.read(Knob::PagesVolatile)? as i64;
    ctx.note(format!(
        "shared {shared} sharing {sharing} unshared {unshared} volatile {volatile}"
    ));
    ensure_eq!(shared, 1, "pages_shared");
    ensure_eq!(sharing, SAME as i64 - 1, "pages_sharing");
    ensure!(
        unshared >= UNIQUE as i64,
        "pages_unshared {unshared} < {UNIQUE} unique pages"
    );
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
fn volatile(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 32;
    ctx.clean_slate()?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let mut m = Mapping::anon(PAGES)?;
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    ctx.start_ksmd()?;
    // A pause between scans so the rewrites land between two visits.
    ctx.set(Knob::SleepMillisecs, "50")?;
    let mut seed = 5000;
    for _ in 0..4 {
        ctx.wait_scans(1)?;
        for i in 0..PAGES {
            seed += 1;
            m.fill(i, seed);
        }
    }
    ctx.wait_scans(1)?;
    ctx.set(Knob::Run, "0")?;
    ctx.sole_ksm_user()?;
    let volatile = ctx.read(Knob::PagesVolatile)?;
    let unshared = ctx.read(Knob::PagesUnshared)?;
    ctx.note(format!(
        "pages_volatile {volatile} pages_unshared {unshared}"
    ));
    ensure!(
        volatile >= PAGES as u64 / 2,
        "pages_volatile {volatile}: expected most of {PAGES} constantly rewritten pages"
    );
    Ok(())
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
