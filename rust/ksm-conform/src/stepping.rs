//! Driving ksmd one full scan at a time, so that a check can say exactly
//! what the counters are after a given number of scans, and the counters
//! that describe the trees.
//!
//! ksmd runs batches of pages_to_scan pages and sleeps sleep_millisecs after
//! each (ksm_scan_thread). A batch also ends where a full scan ends
//! (scan_get_next_rmap_item() returns NULL there), so with pages_to_scan
//! above the number of pages registered every batch is the rest of one full
//! scan. The stepper parks ksmd with an hour-long sleep_millisecs; a step
//! writes another hour-long value: sleep_millisecs_store() wakes ksmd, whose
//! wait ends because the value differs from the one it slept with, and ksmd
//! runs one batch and parks again. Counters read while it is parked are
//! those of a finished scan: no rmap_item is half-way between the unstable
//! tree of the last scan and that of this one.

use std::fmt;
use std::time::{Duration, Instant};

use ksm::{Knob, Sysfs};

use crate::ctx::{CheckResult, Ctx, Fail, TIMEOUT};

/// sleep_millisecs while parked: an hour (two values, so that every step
/// writes a different one).
const PARKED_MS: u64 = 3_600_000;
/// Larger than any check's page count: one batch is one full scan.
const ONE_SCAN_BATCH: &str = "1000000";
/// A step whose scan has not finished after this long is poked again: the
/// first poke can land in the instant between the end of the previous
/// batch and ksmd reading sleep_millisecs, and then only wakes it an hour
/// later. Poking during a batch does not add a scan.
const REPOKE: Duration = Duration::from_secs(2);
/// After a scan ends ksmd still has to go to sleep before the next poke.
const PARK: Duration = Duration::from_millis(10);

pub struct Stepper {
    flip: u64,
}

impl Stepper {
    /// Stop ksmd, let one batch be a full scan, start it again: it finishes
    /// the scan it was in (a whole scan after run=2) and parks.
    pub fn start(ctx: &mut Ctx) -> CheckResult<Stepper> {
        ctx.set(Knob::Run, "0")?;
        if ctx.sysfs().has(Knob::AdvisorMode) && ctx.sysfs().read(Knob::AdvisorMode)? != "none" {
            ctx.set(Knob::AdvisorMode, "none")?;
        }
        ctx.set(Knob::PagesToScan, ONE_SCAN_BATCH)?;
        let mut stepper = Stepper { flip: 0 };
        stepper.poke(ctx)?;
        let before = ctx.read(Knob::FullScans)?;
        ctx.set(Knob::Run, "1")?;
        stepper.wait_for(ctx, before + 1)?;
        Ok(stepper)
    }

    fn poke(&mut self, ctx: &mut Ctx) -> CheckResult {
        self.flip ^= 1;
        ctx.set(Knob::SleepMillisecs, &(PARKED_MS + self.flip).to_string())
    }

    /// Exactly one more full scan.
    pub fn step(&mut self, ctx: &mut Ctx) -> CheckResult {
        let before = ctx.read(Knob::FullScans)?;
        self.poke(ctx)?;
        self.wait_for(ctx, before + 1)
    }

    pub fn steps(&mut self, ctx: &mut Ctx, n: u64) -> CheckResult {
        for _ in 0..n {
            self.step(ctx)?;
        }
        Ok(())
    }

    fn wait_for(&mut self, ctx: &mut Ctx, target: u64) -> CheckResult {
        let start = Instant::now();
        let mut poked = start;
        loop {
            let now = ctx.read(Knob::FullScans)?;
            if now >= target {
                break;
            }
            if start.elapsed() > TIMEOUT {
                return Err(Fail::Failed(format!(
                    "ksmd did not finish a full scan within {}s (full_scans {now})",
                    TIMEOUT.as_secs()
                )));
            }
            if poked.elapsed() > REPOKE {
                self.poke(ctx)?;
                poked = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(PARK);
        let now = ctx.read(Knob::FullScans)?;
        if now != target {
            return Err(Fail::Failed(format!(
                "ksmd made {} full scans where one was asked (full_scans {now})",
                now + 1 - target
            )));
        }
        Ok(())
    }

    /// Step `scans` scans and expect `want`; then one more scan must change
    /// nothing (the state is settled, not passing through).
    pub fn settle(&mut self, ctx: &mut Ctx, scans: u64, want: Counters, when: &str) -> CheckResult {
        self.steps(ctx, scans)?;
        expect(ctx, want, when)?;
        self.step(ctx)?;
        expect(ctx, want, &format!("{when}, and one more scan"))
    }
}

/// The counters that describe the stable and unstable trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub shared: u64,
    pub sharing: u64,
    pub unshared: u64,
    pub volatile: u64,
    pub chains: u64,
    pub dups: u64,
}

impl Counters {
    pub fn read(sysfs: &Sysfs) -> ksm::Result<Counters> {
        Ok(Counters {
            shared: sysfs.read_u64(Knob::PagesShared)?,
            sharing: sysfs.read_u64(Knob::PagesSharing)?,
            unshared: sysfs.read_u64(Knob::PagesUnshared)?,
            volatile: sysfs.read_u64(Knob::PagesVolatile)?,
            chains: sysfs.read_u64(Knob::StableNodeChains)?,
            dups: sysfs.read_u64(Knob::StableNodeDups)?,
        })
    }

    fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("pages_shared", self.shared),
            ("pages_sharing", self.sharing),
            ("pages_unshared", self.unshared),
            ("pages_volatile", self.volatile),
            ("stable_node_chains", self.chains),
            ("stable_node_dups", self.dups),
        ]
    }

    /// "name got (expected want)" for each field that differs.
    pub fn differences(&self, want: &Counters) -> Vec<String> {
        self.fields()
            .iter()
            .zip(want.fields())
            .filter(|((_, got), (_, want))| got != want)
            .map(|((name, got), (_, want))| format!("{name} {got} (expected {want})"))
            .collect()
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .fields()
            .iter()
            .map(|(name, v)| format!("{name} {v}"))
            .collect();
        f.write_str(&fields.join(", "))
    }
}

/// The global counters must be `want` now (nobody else may use KSM).
pub fn expect(ctx: &mut Ctx, want: Counters, when: &str) -> CheckResult {
    ctx.sole_ksm_user()?;
    let got = Counters::read(ctx.sysfs())?;
    ctx.note(format!("{when}: {got}"));
    let wrong = got.differences(&want);
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Fail::Failed(format!("{when}: {}", wrong.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_wrong_counter() {
        let want = Counters {
            shared: 2,
            sharing: 5,
            ..Counters::default()
        };
        let got = Counters {
            shared: 2,
            sharing: 4,
            unshared: 1,
            ..Counters::default()
        };
        assert_eq!(
            got.differences(&want),
            [
                "pages_sharing 4 (expected 5)",
                "pages_unshared 1 (expected 0)"
            ]
        );
        assert!(want.differences(&want).is_empty());
    }

    #[test]
    fn display_names_every_counter() {
        let c = Counters {
            chains: 1,
            ..Counters::default()
        };
        assert!(c.to_string().contains("stable_node_chains 1"));
    }
}
