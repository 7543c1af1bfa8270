//! What a campaign counts: every operation by kind and outcome, the events
//! that show a path was reached, and the pages verified. Workers send theirs
//! to the coordinator, which adds them up.

use std::collections::BTreeMap;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// How the attempts of one kind of operation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub ok: u64,
    /// Refusals the kernel documents for the situation (EBUSY from a knob
    /// while KSM pages exist, EAGAIN/ENOMEM under injected faults or a
    /// memory limit, ...), by errno name: counted, not errors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
    /// Anything else, by errno or reason: each one fails the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, u64>,
}

impl Outcomes {
    pub fn attempts(&self) -> u64 {
        self.ok + self.refused.values().sum::<u64>() + self.failed.values().sum::<u64>()
    }

    fn add(&mut self, other: &Outcomes) {
        self.ok += other.ok;
        for (k, v) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
    }
}

/// A corrupted page: what it should hold and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    pub worker: u32,
    pub pid: u32,
    pub page: u32,
    pub generation: u32,
    /// Where it was found: "phase 3 verify", "fork child", "after mremap", ...
    pub when: String,
    pub expected: String,
    pub first_word: usize,
    pub words: usize,
    pub expected_word: String,
    pub got_word: String,
    /// The known content the page holds instead, if any.
    pub holds: Option<String>,
}

/// Everything counted by one process, or added up over many.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub ops: BTreeMap<String, Outcomes>,
    /// Counts that show a path was reached: "KSM pages migrated by
    /// move_pages", "memory blocks offlined holding KSM pages", ...
    pub events: BTreeMap<String, u64>,
    pub pages_verified: u64,
    pub pages_corrupted: u64,
    /// The first corruptions in detail (all are counted above).
    pub corruptions: Vec<Corruption>,
    /// Things that went wrong outside any operation (a worker that died, a
    /// check that failed): each one fails the run.
    pub errors: Vec<String>,
    /// The most ksm_zero_pages read below the KSM zero pages mapped (the
    /// processes' own counts; none once they exited): what failed forks
    /// lose of it on every kernel (docs/zero-pages-fork.md).
    #[serde(default)]
    pub zero_pages_deficit: u64,
    /// The most ksm_zero_pages read above the KSM zero pages mapped: what
    /// a fork racing an unmerge adds to it for good on every kernel
    /// (docs/zero-pages-fork.md).
    #[serde(default)]
    pub zero_pages_surplus: u64,
    /// Known upstream bugs the run met, each with its evidence: reported,
    /// and not failing the run (both kernels have them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
}

/// Corruptions kept in detail per process; more are only counted.
pub const MAX_CORRUPTIONS: usize = 20;

impl Stats {
    fn outcomes(&mut self, op: &str) -> &mut Outcomes {
        self.ops.entry(op.to_string()).or_default()
    }

    pub fn ok(&mut self, op: &str) {
        self.outcomes(op).ok += 1;
    }

    pub fn refused(&mut self, op: &str, why: &str) {
        *self.outcomes(op).refused.entry(why.into()).or_default() += 1;
    }

    pub fn failed(&mut self, op: &str, why: &str) {
        *self.outcomes(op).failed.entry(why.into()).or_default() += 1;
    }

    /// Record `result`: Ok, an errno in `expected` (a refusal), or a failure.
    pub fn record(&mut self, op: &str, result: Result<(), Errno>, expected: &[Errno]) {
        match result {
            Ok(()) => self.ok(op),
            Err(e) if expected.contains(&e) => self.refused(op, &errno_name(e)),
            Err(e) => self.failed(op, &errno_name(e)),
        }
    }

    pub fn event(&mut self, name: &str, n: u64) {
        *self.events.entry(name.to_string()).or_default() += n;
    }

    /// An error, also printed at once: a run stopped before its table
    /// still shows what went wrong.
    pub fn error(&mut self, what: String) {
        eprintln!("ksm-stress: error: {what}");
        self.errors.push(what);
    }

    pub fn corrupted(&mut self, c: Corruption) {
        self.pages_corrupted += 1;
        if self.corruptions.len() < MAX_CORRUPTIONS {
            self.corruptions.push(c);
        }
    }

    pub fn add(&mut self, other: &Stats) {
        for (k, v) in &other.ops {
            self.outcomes(k).add(v);
        }
        for (k, v) in &other.events {
            self.event(k, *v);
        }
        self.pages_verified += other.pages_verified;
        self.pages_corrupted += other.pages_corrupted;
        let room = (4 * MAX_CORRUPTIONS).saturating_sub(self.corruptions.len());
        self.corruptions
            .extend(other.corruptions.iter().take(room).cloned());
        self.errors.extend(other.errors.iter().cloned());
        self.note_zero_pages_deficit(other.zero_pages_deficit);
        self.note_zero_pages_surplus(other.zero_pages_surplus);
        self.upstream.extend(other.upstream.iter().cloned());
    }

    /// A reading of how many zero pages ksm_zero_pages misses: the run
    /// keeps the most.
    pub fn note_zero_pages_deficit(&mut self, deficit: u64) {
        self.zero_pages_deficit = self.zero_pages_deficit.max(deficit);
    }

    /// A reading of how many zero pages ksm_zero_pages counts that no
    /// process maps: the run keeps the most.
    pub fn note_zero_pages_surplus(&mut self, surplus: u64) {
        self.zero_pages_surplus = self.zero_pages_surplus.max(surplus);
    }

    /// The unmerges of every process (run=2) made while workers ran, and
    /// so may have raced their forks.
    fn unmerges_racing_forks(&self) -> u64 {
        ["run=2", "run=2 (faults armed)"]
            .iter()
            .filter_map(|op| self.ops.get(*op))
            .map(|o| o.ok)
            .sum()
    }

    /// The outcomes of the fork operations (with faults armed or not).
    fn fork_outcomes(&self) -> impl Iterator<Item = &Outcomes> {
        self.ops
            .iter()
            .filter(|(op, _)| op.starts_with("fork"))
            .map(|(_, o)| o)
    }

    /// Forks that succeeded.
    fn forks(&self) -> u64 {
        self.fork_outcomes().map(|o| o.ok).sum()
    }

    /// Forks refused under injected faults: the only forks that fail in
    /// dup_mmap() after copying page tables.
    pub fn failed_forks(&self) -> u64 {
        self.fork_outcomes()
            .map(|o| o.refused.values().sum::<u64>())
            .sum()
    }

    /// Judge how ksm_zero_pages drifted from the KSM zero pages mapped once
    /// the run is over: each way is the known upstream bug only where its
    /// cause happened, a fork that failed (below) or a fork that may have
    /// raced an unmerge (above); otherwise an error.
    pub fn judge_zero_pages_drift(&mut self) {
        let (deficit, failed) = (self.zero_pages_deficit, self.failed_forks());
        if deficit > 0 && failed > 0 {
            self.upstream.push(format!(
                "ksm_zero_pages read up to {deficit} below the KSM zero pages mapped, after \
                 {failed} forks failed under injected faults: dup_mmap()'s error path unmaps \
                 the copied KSM zero pages, which decrements the counter that only a \
                 successful fork's ksm_fork() adds to (docs/zero-pages-fork.md)"
            ));
        } else if deficit > 0 {
            self.error(format!(
                "ksm_zero_pages read up to {deficit} below the KSM zero pages mapped, and no \
                 fork failed"
            ));
        }
        let (surplus, forks, unmerges) = (
            self.zero_pages_surplus,
            self.forks(),
            self.unmerges_racing_forks(),
        );
        if surplus > 0 && forks > 0 && unmerges > 0 {
            self.upstream.push(format!(
                "ksm_zero_pages read up to {surplus} above the KSM zero pages mapped, after \
                 {forks} forks while {unmerges} run=2 unmerged the workers: a child inherits \
                 its parent's count, copied before dup_mmap() locks the parent, and an unmerge \
                 in between leaves the child counted zero pages it never maps, which stay in \
                 the counter after it exits (docs/zero-pages-fork.md)"
            ));
        } else if surplus > 0 {
            self.error(format!(
                "ksm_zero_pages read up to {surplus} above the KSM zero pages mapped, and no \
                 fork raced an unmerge"
            ));
        }
    }

    pub fn op_total(&self) -> u64 {
        self.ops.values().map(Outcomes::attempts).sum()
    }

    pub fn refusals(&self, errno: &str) -> u64 {
        self.ops.values().filter_map(|o| o.refused.get(errno)).sum()
    }

    pub fn failures(&self) -> u64 {
        self.ops
            .values()
            .map(|o| o.failed.values().sum::<u64>())
            .sum()
    }
}

/// "EBUSY", "ENOMEM", ...
pub fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified_and_added() {
        let mut a = Stats::default();
        a.record("knob", Ok(()), &[Errno::EBUSY]);
        a.record("knob", Err(Errno::EBUSY), &[Errno::EBUSY]);
        a.record("knob", Err(Errno::EINVAL), &[Errno::EBUSY]);
        a.event("forks", 2);
        let mut b = Stats::default();
        b.record("knob", Err(Errno::EBUSY), &[Errno::EBUSY]);
        b.event("forks", 3);
        b.pages_verified = 10;
        a.add(&b);
        let knob = &a.ops["knob"];
        assert_eq!(knob.ok, 1);
        assert_eq!(knob.refused["EBUSY"], 2);
        assert_eq!(knob.failed["EINVAL"], 1);
        assert_eq!(knob.attempts(), 4);
        assert_eq!(a.events["forks"], 5);
        assert_eq!(a.pages_verified, 10);
        assert_eq!((a.refusals("EBUSY"), a.failures(), a.op_total()), (2, 1, 4));
    }

    #[test]
    fn a_zero_pages_deficit_is_upstreams_only_after_a_failed_fork() {
        let mut quiet = Stats::default();
        quiet.judge_zero_pages_drift();
        assert!(quiet.errors.is_empty() && quiet.upstream.is_empty());

        let mut no_fork_failed = Stats {
            zero_pages_deficit: 7,
            ..Stats::default()
        };
        no_fork_failed.ok("fork (faults armed)");
        no_fork_failed.judge_zero_pages_drift();
        assert_eq!(no_fork_failed.errors.len(), 1);
        assert!(no_fork_failed.upstream.is_empty());

        let mut a = Stats {
            zero_pages_deficit: 3,
            ..Stats::default()
        };
        let mut b = Stats {
            zero_pages_deficit: 7,
            ..Stats::default()
        };
        b.record("fork (faults armed)", Err(Errno::ENOMEM), &[Errno::ENOMEM]);
        a.add(&b);
        assert_eq!((a.zero_pages_deficit, a.failed_forks()), (7, 1));
        a.judge_zero_pages_drift();
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        assert!(a.upstream[0].starts_with("ksm_zero_pages read up to 7 below"));
    }

    #[test]
    fn a_zero_pages_surplus_is_upstreams_only_after_forks_raced_by_run_2() {
        let surplus = || Stats {
            zero_pages_surplus: 1,
            ..Stats::default()
        };
        let mut forks_alone = surplus();
        forks_alone.ok("fork");
        forks_alone.ok("run=2 between phases");
        forks_alone.judge_zero_pages_drift();
        assert_eq!(forks_alone.errors.len(), 1);
        assert!(forks_alone.upstream.is_empty());

        let mut raced = surplus();
        raced.ok("fork (faults armed)");
        raced.ok("run=2");
        raced.judge_zero_pages_drift();
        assert!(raced.errors.is_empty(), "{:?}", raced.errors);
        assert!(raced.upstream[0].starts_with("ksm_zero_pages read up to 1 above"));
    }

    #[test]
    fn only_the_first_corruptions_are_kept_in_detail() {
        let mut s = Stats::default();
        for page in 0..(MAX_CORRUPTIONS as u32 + 5) {
            s.corrupted(Corruption {
                worker: 0,
                pid: 1,
                page,
                generation: 0,
                when: "test".into(),
                expected: "zero".into(),
                first_word: 0,
                words: 1,
                expected_word: "0".into(),
                got_word: "1".into(),
                holds: None,
            });
        }
        assert_eq!(s.pages_corrupted, MAX_CORRUPTIONS as u64 + 5);
        assert_eq!(s.corruptions.len(), MAX_CORRUPTIONS);
    }
}
