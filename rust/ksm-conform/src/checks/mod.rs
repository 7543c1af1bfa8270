//! The checks, one module per group. Each check's name reads as the
//! ksm.rst clause (or the mm/ksm.c behaviour behind it) that it verifies.

pub mod madvise;
pub mod merging;
pub mod numa;
pub mod pressure;
pub mod process;
pub mod procfs;
pub mod run;
pub mod scan;
pub mod swap;
pub mod sysfs;

use ksm::procfs::{is_ksm_page, pagemap};
use ksm::{Advice, Mapping};

use crate::ctx::{CheckResult, Fail, call};
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
    let flags = (0..m.pages())
        .map(|i| is_ksm_page(m.page_addr(i)))
        .collect::<ksm::Result<Vec<_>>>()?;
    every_page_seen(flags)
}

/// A page whose frame cannot be seen fails the check: "no page is a KSM
/// page" must not pass for want of looking.
fn every_page_seen(flags: Vec<Option<bool>>) -> CheckResult<Vec<bool>> {
    flags
        .into_iter()
        .enumerate()
        .map(|(i, ksm)| {
            ksm.ok_or_else(|| {
                Fail::Failed(format!(
                    "page {i}: not present, or its frame hidden, in /proc/self/pagemap: \
                     cannot tell whether it is a KSM page"
                ))
            })
        })
        .collect()
}

/// The page frame numbers behind `m` (0 where not present).
pub(crate) fn pfns(m: &Mapping) -> CheckResult<Vec<u64>> {
    (0..m.pages())
        .map(|i| Ok(pagemap(m.page_addr(i))?.pfn()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(vec![Some(true), Some(false)], Ok(vec![true, false]))]
    #[case(vec![Some(false), None], Err("page 1: not present"))]
    #[case(vec![None], Err("page 0: not present"))]
    fn unreadable_page_is_a_failure(
        #[case] flags: Vec<Option<bool>>,
        #[case] want: Result<Vec<bool>, &str>,
    ) {
        match (every_page_seen(flags), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(Fail::Failed(msg)), Err(start)) => assert!(msg.starts_with(start), "{msg}"),
            (got, want) => panic!("{got:?}, expected {want:?}"),
        }
    }
}
