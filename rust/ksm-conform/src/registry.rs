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
    /// A cpuset hierarchy (cgroup v2 cpuset controller, or v1 cpuset).
    Cpuset,
    /// Transparent huge pages for MADV_HUGEPAGE areas.
    Thp,
    /// userfaultfd(2).
    Userfaultfd,
    /// Boot-time defaults only hold right after boot.
    FreshBoot,
    /// prctl(PR_SET_MEMORY_MERGE), Linux 6.4.
    MemoryMergePrctl,
    /// /proc/kpageflags readable for our pages (root: pagemap shows frames).
    KpageFlags,
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
        procfs::CHECKS,
        scan::CHECKS,
        trees::CHECKS,
        areas::CHECKS,
        placement::CHECKS,
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

/// The checks a run asks for: those of the `groups` and `tests` named (all
/// if none is), for a kernel without KSM only with `without_ksm`. An unknown
/// name is an error, and so is a selection that leaves no check.
pub fn select(
    all: &[&'static Check],
    groups: &[String],
    tests: &[String],
    without_ksm: bool,
) -> Result<Vec<&'static Check>, String> {
    let known = self::groups(all);
    for g in groups {
        if !known.contains(&g.as_str()) {
            return Err(format!(
                "unknown group {g:?} (groups: {})",
                known.join(", ")
            ));
        }
    }
    for t in tests {
        if !all.iter().any(|c| c.name == t) {
            return Err(format!("unknown test {t:?} (see --list)"));
        }
    }
    let named = |c: &&'static Check| {
        (groups.is_empty() || groups.iter().any(|g| g == c.group()))
            && (tests.is_empty() || tests.iter().any(|t| t == c.name))
    };
    let selected: Vec<&'static Check> = all
        .iter()
        .copied()
        .filter(named)
        .filter(|c| c.for_kernel_without_ksm() == without_ksm)
        .collect();
    if selected.is_empty() {
        let asked: Vec<String> = groups
            .iter()
            .map(|g| format!("--group {g}"))
            .chain(tests.iter().map(|t| format!("--test {t}")))
            .collect();
        let why = if !all.iter().any(named) {
            "no check matches them all"
        } else if without_ksm {
            "none of the checks named is for a kernel without KSM (--without-ksm)"
        } else {
            "the checks named are for a kernel without KSM only (run them with --without-ksm)"
        };
        return Err(format!("no check selected by {}: {why}", asked.join(" ")));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashSet;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[rstest]
    #[case::all_with_ksm(&[], &[], false, Ok(None))]
    #[case::group_without_ksm(&["madvise"], &[], true, Ok(Some(&["madvise/einval_without_ksm"][..])))]
    #[case::ksm_group_without_ksm(&["scan"], &[], true, Err("no check selected by --group scan: none of the checks named is for a kernel without KSM"))]
    #[case::no_ksm_test_with_ksm(&[], &["sysfs/absent_without_ksm"], false, Err("no check selected by --test sysfs/absent_without_ksm: the checks named are for a kernel without KSM only"))]
    #[case::test_outside_group(&["madvise"], &["sysfs/boot_defaults"], false, Err("no check selected by --group madvise --test sysfs/boot_defaults: no check matches them all"))]
    #[case::unknown_group(&["nope"], &[], false, Err("unknown group \"nope\""))]
    #[case::unknown_test(&[], &["run/nope"], false, Err("unknown test \"run/nope\""))]
    fn selection(
        #[case] groups: &[&str],
        #[case] tests: &[&str],
        #[case] without_ksm: bool,
        #[case] want: Result<Option<&[&str]>, &str>,
    ) {
        let got = select(&all(), &strings(groups), &strings(tests), without_ksm);
        match (got, want) {
            (Ok(checks), Ok(names)) => {
                let got: Vec<&str> = checks.iter().map(|c| c.name).collect();
                match names {
                    Some(names) => assert_eq!(got, names),
                    None => assert!(got.len() > 30, "{got:?}"),
                }
            }
            (Err(e), Err(start)) => assert!(e.starts_with(start), "{e}"),
            (got, want) => panic!("{:?}, expected {want:?}", got.map(|c| c.len())),
        }
    }

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
