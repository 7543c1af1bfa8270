//! The checks, one module per group. Each check's name reads as the
//! ksm.rst clause (or the mm/ksm.c behaviour behind it) that it verifies.

pub mod madvise;
pub mod merging;
pub mod numa;
pub mod pressure;
pub mod process;
pub mod run;
pub mod scan;
pub mod swap;
pub mod sysfs;

use ksm::procfs;
use ksm::{Advice, Mapping};

use crate::ctx::{CheckResult, call};
use crate::ensure;

/// `pages` private anonymous pages filled with `seed` (equal seeds, equal
/// pages) and advised MADV_MERGEABLE.
pub(crate) fn mergeable(pages: usize, seed: u64) -> CheckResult<Mapping> {
    let mut m = Mapping::anon(pages)?;
    for i in 0..pages {
        m.fill(i, seed);
    }
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    Ok(m)
}

/// Every page of `m` still holds what `seed_of(page)` wrote.
pub(crate) fn ensure_content(m: &Mapping, seed_of: impl Fn(usize) -> u64) -> CheckResult {
    for i in 0..m.pages() {
        ensure!(
            m.holds(i, seed_of(i)),
            "page {i} lost its content (expected seed {})",
            seed_of(i)
        );
    }
    Ok(())
}

/// Whether each page of `m` is mapped to a KSM page right now.
pub(crate) fn ksm_pages(m: &Mapping) -> CheckResult<Vec<bool>> {
    (0..m.pages())
        .map(|i| Ok(procfs::is_ksm_page(m.page_addr(i))?.unwrap_or(false)))
        .collect()
}

/// The page frame numbers behind `m` (0 where not present).
pub(crate) fn pfns(m: &Mapping) -> CheckResult<Vec<u64>> {
    (0..m.pages())
        .map(|i| Ok(procfs::pagemap(m.page_addr(i))?.pfn()))
        .collect()
}
