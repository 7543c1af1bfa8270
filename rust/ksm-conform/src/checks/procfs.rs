//! What /proc/kpageflags says about KSM pages (Documentation/admin-guide/
//! mm/pagemap.rst: "KSM: Identical memory pages dynamically shared between
//! one or more processes"). The checks that ask "is this page a KSM page"
//! rely on it, and skip where it cannot be trusted; this one says so as a
//! failure.

use ksm::{Advice, Mapping};

use super::{ensure_content, ksm_pages, mergeable};
use crate::ctx::{CheckResult, Ctx, call};
use crate::ensure;
use crate::registry::{Check, Req};

pub const CHECKS: &[Check] = &[Check {
    name: "procfs/kpageflags_ksm_only_on_ksm_pages",
    requires: &[Req::Root, Req::Ksm, Req::KpageFlags],
    body: kpageflags_ksm_only_on_ksm_pages,
}];

const PAGES: usize = 8;

/// KPF_KSM is clear on anonymous pages never advised MADV_MERGEABLE
/// (Debian's 6.12.117 sets it on every anonymous page) and on advised pages
/// that stay unique, and set on each page of a merged group.
fn kpageflags_ksm_only_on_ksm_pages(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let mut plain = Mapping::anon(PAGES)?;
    for i in 0..PAGES {
        plain.fill(i, 200 + i as u64);
    }
    let flagged = |flags: Vec<bool>| flags.iter().filter(|k| **k).count();
    let wrong = flagged(ksm_pages(&plain)?);
    ensure!(
        wrong == 0,
        "KPF_KSM set on {wrong} of {PAGES} anonymous pages never advised MADV_MERGEABLE"
    );
    let same = mergeable(PAGES, 1)?;
    let mut unique = Mapping::anon(PAGES)?;
    for i in 0..PAGES {
        unique.fill(i, 300 + i as u64);
    }
    call("madvise(MADV_MERGEABLE)", unique.advise(Advice::Mergeable))?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, PAGES as u64, 5)?;
    ctx.wait_scans(2)?; // the unique pages had their chance to be (wrongly) merged
    let merged = flagged(ksm_pages(&same)?);
    ensure!(
        merged == PAGES,
        "KPF_KSM set on {merged} of {PAGES} merged pages"
    );
    let wrong = flagged(ksm_pages(&unique)?);
    ensure!(
        wrong == 0,
        "KPF_KSM set on {wrong} of {PAGES} advised pages that stayed unique"
    );
    let wrong = flagged(ksm_pages(&plain)?);
    ensure!(
        wrong == 0,
        "KPF_KSM set on {wrong} of {PAGES} never advised pages while ksmd ran"
    );
    ensure_content(&same, |_| 1)?;
    ensure_content(&unique, |i| 300 + i as u64)?;
    ensure_content(&plain, |i| 200 + i as u64)
}
