//! A check is a name, the requirements the running kernel must meet, and a
//! body. Requirements are evaluated at run time; an unmet one is a named
//! skip with its reason, never a pass.

use ksm::Knob;

use crate::ctx::{CheckResult, Ctx};
use crate::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Req {
    Root,
    /// CONFIG_KSM=y: /sys/kernel/mm/ksm exists.
    Ksm,
    /// CONFIG_KSM=n: only run with --without-ksm.
    NoKsm,
    Knob(Knob),
    /// At least this many NUMA nodes with memory.
    NumaNodes(usize),
    Swap,
    Failslab,
    MemoryCgroup,
    /// Boot-time defaults only hold right after boot.
    FreshBoot,
    /// prctl(PR_SET_MEMORY_MERGE), Linux 6.4.
    MemoryMergePrctl,
    /// /proc/kpageflags to see whether an address maps a KSM page, and a
    /// kernel whose KPF_KSM is clear on pages that are not KSM pages.
    PageFlags,
    /// No other process uses KSM: the check asserts exact global counters.
    SoleKsmUser,
}

pub struct Check {
    /// "group/what_the_kernel_promises".
    pub name: &'static str,
    pub requires: &'static [Req],
    pub body: fn(&mut Ctx) -> CheckResult,
}

impl Check {
    pub fn group(&self) -> &'static str {
        self.name.split_once('/').map_or(self.name, |(g, _)| g)
    }

    /// The reason this check cannot run here, if any.
    pub fn unmet(&self, env: &Env) -> Option<String> {
        self.requires.iter().find_map(|r| env.unmet(*r))
    }

    /// Checks for a kernel built without KSM.
    pub fn for_kernel_without_ksm(&self) -> bool {
        self.requires.contains(&Req::NoKsm)
    }
}

/// Every check, grouped the way docs/conformance.md lists them.
pub fn all() -> Vec<&'static Check> {
    use crate::checks::*;
    [
        madvise::CHECKS,
        sysfs::CHECKS,
        run::CHECKS,
        merging::CHECKS,
        numa::CHECKS,
        swap::CHECKS,
        pressure::CHECKS,
        process::CHECKS,
        scan::CHECKS,
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn groups(checks: &[&'static Check]) -> Vec<&'static str> {
    let mut groups: Vec<&str> = checks.iter().map(|c| c.group()).collect();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_grouped() {
        let checks = all();
        let mut seen = HashSet::new();
        for c in &checks {
            assert!(seen.insert(c.name), "duplicate check {}", c.name);
            let (group, rest) = c.name.split_once('/').expect("group/name");
            assert!(!group.is_empty() && !rest.is_empty(), "{}", c.name);
            assert!(
                rest.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn groups_are_contiguous() {
        let checks = all();
        let groups = groups(&checks);
        let unique: HashSet<_> = groups.iter().collect();
        assert_eq!(unique.len(), groups.len(), "{groups:?}");
    }
}
