//! The checks, one module per group. Each check's name reads as the
//! ksm.rst clause (or the mm/ksm.c behaviour behind it) that it verifies.

pub mod areas;
pub mod madvise;
pub mod merging;
pub mod numa;
pub mod placement;
pub mod pressure;
pub mod process;
pub mod procfs;
pub mod run;
pub mod scan;
pub mod swap;
pub mod sysfs;
pub mod trees;

use std::ops::Range;

use ksm::procfs::{is_ksm_page, pagemap};
use ksm::{Advice, Mapping};

use crate::ctx::{CheckResult, Ctx, Fail, call};
use crate::{ensure, ensure_eq};

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

/// The pages `range` of `m` all map one frame, which is returned: for
/// private anonymous pages that were written, one KSM page. Frames (from
/// /proc/self/pagemap, as root) are the evidence of merging that every
/// kernel gives; /proc/kpageflags is not trustworthy everywhere.
pub(crate) fn one_frame(m: &Mapping, range: Range<usize>) -> CheckResult<u64> {
    let frames = &pfns(m)?[range.clone()];
    ensure!(
        !frames.is_empty() && frames[0] != 0 && frames.iter().all(|f| *f == frames[0]),
        "pages {range:?} do not map one frame: {frames:?}"
    );
    Ok(frames[0])
}

/// Every page of `range` in `m` is present on a frame of its own.
pub(crate) fn distinct_frames(m: &Mapping, range: Range<usize>, what: &str) -> CheckResult {
    let frames = &pfns(m)?[range];
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(
        !frames.contains(&0) && sorted.len() == frames.len(),
        "{what}: not a frame of their own each: {frames:?}"
    );
    Ok(())
}

/// Where /proc/kpageflags tells KSM pages apart (Env::page_flags), page i
/// of `m` must be a KSM page exactly when `ksm(i)`; elsewhere the frames
/// are the evidence and this adds nothing.
pub(crate) fn kpf_agrees(ctx: &Ctx, m: &Mapping, ksm: impl Fn(usize) -> bool) -> CheckResult {
    if ctx.env.page_flags.is_err() {
        return Ok(());
    }
    for (i, is_ksm) in ksm_pages(m)?.into_iter().enumerate() {
        ensure_eq!(is_ksm, ksm(i), "KPF_KSM of page {i}");
    }
    Ok(())
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
