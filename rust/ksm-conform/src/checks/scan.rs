//! How ksmd picks what to scan: smart_scan ("pages that have previously
//! not been de-duplicated get skipped", counted in pages_skipped) and the
//! scan-time advisor ("changes the pages_to_scan parameter based on the
//! observed scan times").

use ksm::{Advice, Knob, Mapping};

use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::stepping::Stepper;
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "scan/smart_scan_skips_pages_that_never_merge",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::SmartScan),
            Req::Knob(Knob::PagesSkipped),
            Req::SoleKsmUser,
        ],
        body: smart_scan,
    },
    Check {
        name: "scan/scan_time_advisor_tunes_pages_to_scan",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::AdvisorMode),
            Req::SoleKsmUser,
        ],
        body: scan_time_advisor,
    },
];

fn unique_pages(pages: usize) -> CheckResult<Mapping> {
    let mut m = Mapping::anon(pages)?;
    for i in 0..pages {
        m.fill(i, 10_000 + i as u64);
    }
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    Ok(m)
}

/// How many of a page's first `scans` visits smart scan skips, for a page
/// that never merges (should_skip_rmap_item()): every visit ages it; the
/// first three are never skipped; after that each visit that finds no
/// skips left is made and grants skip_age(age) skips (1 up to age 3, 2 up
/// to 5, 4 up to 8, then 8), which the next visits use up. So visits 5,
/// 7-8, 10-13, 15-22, 24-31, ... are skipped: 3 of the first 9, 23 of the
/// first 31, tending to 8 of every 9.
pub fn skipped_visits(scans: u64) -> u64 {
    let skip_age = |age: u64| match age {
        0..=3 => 1,
        4..=5 => 2,
        6..=8 => 4,
        _ => 8,
    };
    let (mut age, mut remaining, mut skipped) = (0u64, 0u64, 0);
    for _ in 0..scans {
        let visit_age = age;
        age = (age + 1).min(u8::MAX as u64);
        if visit_age < 3 {
            continue;
        }
        if remaining == 0 {
            remaining = skip_age(visit_age);
        } else {
            remaining -= 1;
            skipped += 1;
        }
    }
    skipped
}

/// LTP ksm07 asks that smart scan skip at least half the visits to pages
/// that never merge; scan by scan the number is exact: 64 unique pages
/// over their first 31 scans are skipped 64 * 23 times (74 %), and with
/// smart_scan 0 nine more scans skip none.
fn smart_scan(ctx: &mut Ctx) -> CheckResult {
    const PAGES: u64 = 64;
    const SCANS: u64 = 31;
    const PLAIN_SCANS: u64 = 9;
    ctx.clean_slate()?;
    let _m = unique_pages(PAGES as usize)?;
    ctx.set(Knob::SmartScan, "1")?;
    let before = ctx.read(Knob::PagesSkipped)?;
    // The stepper's start is the pages' first scan.
    let mut stepper = Stepper::start(ctx)?;
    stepper.steps(ctx, SCANS - 1)?;
    let with = ctx.read(Knob::PagesSkipped)? - before;
    ctx.set(Knob::SmartScan, "0")?;
    let before = ctx.read(Knob::PagesSkipped)?;
    stepper.steps(ctx, PLAIN_SCANS)?;
    let without = ctx.read(Knob::PagesSkipped)? - before;
    ctx.note(format!(
        "pages_skipped: {with} in {SCANS} scans of {PAGES} pages with smart_scan=1, \
         {without} in {PLAIN_SCANS} with 0"
    ));
    // pages_skipped counts every process's pages.
    ctx.sole_ksm_user()?;
    ensure_eq!(
        with,
        PAGES * skipped_visits(SCANS),
        "pages skipped in {SCANS} scans with smart_scan=1"
    );
    ensure!(
        2 * with >= PAGES * SCANS,
        "smart_scan skipped {with} of {} visits, less than half (LTP ksm07)",
        PAGES * SCANS
    );
    ensure_eq!(without, 0, "pages skipped with smart_scan=0");
    Ok(())
}

/// Switching to scan-time starts pages_to_scan at advisor_min_pages_to_scan
/// ("The initial value and the maximum value can be changed with
/// advisor_min_pages_to_scan and advisor_max_pages_to_scan"); after each
/// scan the advisor recomputes it, never above advisor_max_pages_to_scan.
///
/// What it must do with this workload: 64 pages make every full scan far
/// shorter than advisor_target_scan_time (200 s) and cost ksmd next to no
/// CPU, so scan_time_advisor() raises pages_to_scan (by up to
/// KSM_ADVISOR_MIN_CPU = 10 times per scan, while ksmd's CPU share stays
/// near 1 %) until advisor_max_pages_to_scan caps it: it never falls, and
/// ends at the maximum. The first value varies: that scan charges all of
/// ksmd's CPU time since boot (the advisor's context starts at zero), so it
/// may be below the minimum (10 natively, 30 in a TCG guest).
fn scan_time_advisor(ctx: &mut Ctx) -> CheckResult {
    const MIN: u64 = 200;
    const MAX: u64 = 4000;
    /// From 10 to 4000 takes 4 scans at 10 times each; 16 leaves room for
    /// a CPU share of up to 5 % (twice per scan).
    const SCANS: usize = 16;
    ctx.clean_slate()?;
    ctx.set(Knob::AdvisorMode, "none")?;
    ctx.set(Knob::AdvisorMinPagesToScan, &MIN.to_string())?;
    ctx.set(Knob::AdvisorMaxPagesToScan, &MAX.to_string())?;
    ctx.set(Knob::SleepMillisecs, "10")?;
    let _m = unique_pages(64)?;
    ctx.set(Knob::AdvisorMode, "scan-time")?;
    ensure_eq!(
        ctx.read(Knob::PagesToScan)?,
        MIN,
        "pages_to_scan right after switching to scan-time"
    );
    ctx.set(Knob::Run, "1")?;
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < SCANS && !seen.ends_with(&[MAX, MAX]) {
        ctx.wait_scans(1)?;
        let p = ctx.read(Knob::PagesToScan)?;
        ensure!(
            p <= MAX,
            "pages_to_scan {p} above advisor_max_pages_to_scan {MAX}"
        );
        seen.push(p);
    }
    ctx.note(format!("pages_to_scan after each scan: {seen:?}"));
    // Another process's memory would make the scans long.
    ctx.sole_ksm_user()?;
    ensure!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "pages_to_scan fell although every scan stayed far below advisor_target_scan_time: {seen:?}"
    );
    ensure!(
        seen.last() == Some(&MAX),
        "pages_to_scan did not reach advisor_max_pages_to_scan {MAX} in {} scans: {seen:?}",
        seen.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(4, 0)]
    #[case(5, 1)]
    #[case(9, 3)]
    #[case(13, 7)]
    #[case(31, 23)]
    #[case(40, 31)]
    fn skips_follow_the_age_of_the_page(#[case] scans: u64, #[case] skipped: u64) {
        assert_eq!(skipped_visits(scans), skipped);
    }
}
