//! What a check body gets: the knob guard, the environment, a place for
//! diagnostics, and the few helpers every KSM check needs (drive ksmd fast,
//! wait for merging within a bounded number of full scans).

use std::fmt;
use std::time::Duration;

use ksm::procfs;
use ksm::{Knob, KnobGuard, Session, Sysfs};

use crate::env::Env;

/// Why a check did not pass: a failure, or a skip discovered only while
/// running (requirements known up front are [`crate::Req`]s instead).
#[derive(Debug)]
pub enum Fail {
    Failed(String),
    Skip(String),
}

pub type CheckResult<T = ()> = Result<T, Fail>;

impl From<ksm::Error> for Fail {
    fn from(e: ksm::Error) -> Self {
        Fail::Failed(e.to_string())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Failed(e.to_string())
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Failed(m) | Fail::Skip(m) => f.write_str(m),
        }
    }
}

/// Fail the check with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Fail::Failed(format!($($fmt)+)));
        }
    };
}

/// Fail unless `left == right`, naming what was compared.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::Fail::Failed(format!("{}: got {:?}, expected {:?}", format!($($fmt)+), l, r)));
        }
    }};
}

/// Turn an errno result into a failure naming the call.
pub fn call<T>(what: &str, r: Result<T, nix::errno::Errno>) -> CheckResult<T> {
    r.map_err(|e| Fail::Failed(format!("{what}: {e} ({})", e.desc())))
}

/// Upper bound for anything that waits on ksmd; generous for TCG guests.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// ksmd settings that make scans of a few hundred pages take milliseconds.
pub const FAST_PAGES_TO_SCAN: &str = "5000";
pub const FAST_SLEEP_MILLISECS: &str = "0";

pub struct Ctx<'s> {
    pub guard: KnobGuard<'s>,
    pub env: &'s Env,
    diagnostics: Vec<String>,
}

impl<'s> Ctx<'s> {
    pub fn new(guard: KnobGuard<'s>, env: &'s Env) -> Self {
        Ctx {
            guard,
            env,
            diagnostics: Vec::new(),
        }
    }

    /// A line for the TAP output and the JSON report.
    pub fn note(&mut self, line: impl Into<String>) {
        self.diagnostics.push(line.into());
    }

    pub fn take_diagnostics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.diagnostics)
    }

    pub fn sysfs(&self) -> &Sysfs {
        self.guard.sysfs()
    }

    /// For changes outside the knobs (failslab, debugfs, cgroups): they are
    /// journaled like the knobs and undone at the latest when the check ends.
    pub fn session(&self) -> &'s Session {
        self.guard.session()
    }

    pub fn read(&self, knob: Knob) -> CheckResult<u64> {
        Ok(self.sysfs().read_u64(knob)?)
    }

    pub fn set(&mut self, knob: Knob, value: &str) -> CheckResult {
        Ok(self.guard.set(knob, value)?)
    }

    /// run=2: unmerge everything, drop all rmap_items and stable nodes, so
    /// the global counters start from zero (assuming no other KSM user).
    pub fn clean_slate(&mut self) -> CheckResult {
        self.set(Knob::Run, "2")?;
        for knob in [Knob::PagesShared, Knob::PagesSharing, Knob::PagesUnshared] {
            let n = self.read(knob)?;
            ensure!(
                n == 0,
                "{knob} is {n} right after run=2 unmerged everything"
            );
        }
        Ok(())
    }

    /// Make ksmd scan fast (the scan-time advisor off so pages_to_scan can be
    /// set) and start it.
    pub fn start_ksmd(&mut self) -> CheckResult {
        if self.sysfs().has(Knob::AdvisorMode) && self.sysfs().read(Knob::AdvisorMode)? != "none" {
            self.set(Knob::AdvisorMode, "none")?;
        }
        self.set(Knob::PagesToScan, FAST_PAGES_TO_SCAN)?;
        self.set(Knob::SleepMillisecs, FAST_SLEEP_MILLISECS)?;
        self.set(Knob::Run, "1")
    }

    /// Before reading global counters: nobody else may have started using
    /// KSM since the check began.
    pub fn sole_ksm_user(&self) -> CheckResult {
        match crate::env::other_ksm_users() {
            Some(reason) => Err(Fail::Skip(reason)),
            None => Ok(()),
        }
    }

    pub fn wait_scans(&self, n: u64) -> CheckResult<u64> {
        Ok(ksm::scan::wait_full_scans(self.sysfs(), n, TIMEOUT)?)
    }

    /// Wait until `cond` holds, failing if ksmd completed `scans` full
    /// scans without it holding.
    pub fn wait_within_scans(
        &self,
        what: &str,
        scans: u64,
        cond: impl FnMut() -> ksm::Result<bool>,
    ) -> CheckResult {
        Ok(ksm::scan::wait_within_scans(
            self.sysfs(),
            what,
            scans,
            TIMEOUT,
            cond,
        )?)
    }

    /// Wait until /proc/<pid>/ksm_merging_pages reads `want`.
    pub fn wait_merging_pages(&self, pid: Option<u32>, want: u64, scans: u64) -> CheckResult {
        let mut last = 0;
        let r = self.wait_within_scans(&format!("ksm_merging_pages == {want}"), scans, || {
            last = procfs::ksm_merging_pages(pid)?;
            Ok(last == want)
        });
        r.map_err(|e| Fail::Failed(format!("{e} (last read {last})")))
    }
}
