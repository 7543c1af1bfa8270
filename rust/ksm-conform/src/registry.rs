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

    /// Whether the check needs the machine to itself: a check needs root
    /// exactly when it writes /sys/kernel/mm/ksm (it starts ksmd, changes a
    /// knob, or unmerges everything with run=2), which other users of KSM
    /// would feel. The others only read, or advise memory of their own.
    pub fn needs_machine(&self) -> bool {
        self.requires.contains(&Req::Root)
    }
}

/// Shell-style pattern: `*` any run of characters (`/` included), `?` one
/// character, anything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
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

/// What a run asks for: groups and check names (patterns, see
/// [`glob_match`]) to run, patterns to leave out, and whether the kernel is
/// built without KSM.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub groups: Vec<String>,
    pub tests: Vec<String>,
    pub exclude: Vec<String>,
    pub without_ksm: bool,
}

/// The checks a run asks for: those of the groups and tests named (all if
/// none is), less the excluded ones, for a kernel without KSM only with
/// `without_ksm`. A name or pattern that matches no check is an error, and
/// so is a selection that leaves no check.
pub fn select(all: &[&'static Check], sel: &Selection) -> Result<Vec<&'static Check>, String> {
    let known = self::groups(all);
    for g in &sel.groups {
        if !known.iter().any(|k| glob_match(g, k)) {
            return Err(format!(
                "unknown group {g:?} (groups: {})",
                known.join(", ")
            ));
        }
    }
    for (what, patterns) in [("test", &sel.tests), ("--exclude", &sel.exclude)] {
        for t in patterns.iter() {
            if !all.iter().any(|c| glob_match(t, c.name)) {
                return Err(format!(
                    "{} {t:?} matches no check (names are group/check, e.g. 'merging/*'; see --list)",
                    if what == "test" { "unknown test" } else { what }
                ));
            }
        }
    }
    let named = |c: &&'static Check| {
        (sel.groups.is_empty() || sel.groups.iter().any(|g| glob_match(g, c.group())))
            && (sel.tests.is_empty() || sel.tests.iter().any(|t| glob_match(t, c.name)))
            && !sel.exclude.iter().any(|x| glob_match(x, c.name))
    };
    let selected: Vec<&'static Check> = all
        .iter()
        .copied()
        .filter(named)
        .filter(|c| c.for_kernel_without_ksm() == sel.without_ksm)
        .collect();
    if selected.is_empty() {
        let asked: Vec<String> = sel
            .groups
            .iter()
            .map(|g| format!("--group {g}"))
            .chain(sel.tests.iter().map(|t| format!("--test {t}")))
            .chain(sel.exclude.iter().map(|x| format!("--exclude {x}")))
            .collect();
        let why = if !all.iter().any(named) {
            "no check matches them all"
        } else if sel.without_ksm {
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

    fn sel(groups: &[&str], tests: &[&str], exclude: &[&str], without_ksm: bool) -> Selection {
        Selection {
            groups: strings(groups),
            tests: strings(tests),
            exclude: strings(exclude),
            without_ksm,
        }
    }

    #[rstest]
    #[case::all_with_ksm(&[], &[], false, Ok(None))]
    #[case::group_without_ksm(&["madvise"], &[], true, Ok(Some(&["madvise/einval_without_ksm"][..])))]
    #[case::ksm_group_without_ksm(&["scan"], &[], true, Err("no check selected by --group scan: none of the checks named is for a kernel without KSM"))]
    #[case::no_ksm_test_with_ksm(&[], &["sysfs/absent_without_ksm"], false, Err("no check selected by --test sysfs/absent_without_ksm: the checks named are for a kernel without KSM only"))]
    #[case::test_outside_group(&["madvise"], &["sysfs/boot_defaults"], false, Err("no check selected by --group madvise --test sysfs/boot_defaults: no check matches them all"))]
    #[case::unknown_group(&["nope"], &[], false, Err("unknown group \"nope\""))]
    #[case::unknown_test(&[], &["run/nope"], false, Err("unknown test \"run/nope\" matches no check"))]
    #[case::glob_in_a_group(&[], &["sysfs/*without_ksm"], true, Ok(Some(&["sysfs/absent_without_ksm"][..])))]
    #[case::glob_without_the_slash(&[], &["merging.*"], false, Err("unknown test \"merging.*\" matches no check (names are group/check"))]
    fn selection(
        #[case] groups: &[&str],
        #[case] tests: &[&str],
        #[case] without_ksm: bool,
        #[case] want: Result<Option<&[&str]>, &str>,
    ) {
        let got = select(&all(), &sel(groups, tests, &[], without_ksm));
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
    fn exclude_leaves_out_and_must_match() {
        let all = all();
        let madvise = select(&all, &sel(&["madvise"], &[], &[], false)).unwrap();
        let fewer = select(&all, &sel(&["madvise"], &[], &["madvise/e*"], false)).unwrap();
        assert!(!fewer.is_empty() && fewer.len() < madvise.len());
        assert!(fewer.iter().all(|c| !c.name.starts_with("madvise/e")));
        let err = select(&all, &sel(&[], &[], &["nothing/like_this"], false))
            .map(|c| c.len())
            .unwrap_err();
        assert!(
            err.starts_with("--exclude \"nothing/like_this\" matches no check"),
            "{err}"
        );
        let err = select(&all, &sel(&["madvise"], &[], &["madvise/*"], false))
            .map(|c| c.len())
            .unwrap_err();
        assert!(err.contains("no check matches them all"), "{err}");
    }

    #[rstest]
    #[case("merging/*", "merging/two_processes", true)]
    #[case("*", "a/b", true)]
    #[case("m?rging/*", "merging/x", true)]
    #[case("merging/*", "numa/merging_x", false)]
    #[case("*zero*", "sysfs/use_zero_pages_x", true)]
    #[case("a*b*c", "aXbYbZc", true)]
    #[case("a*b*c", "aXbYbZ", false)]
    #[case("run/x", "run/x", true)]
    #[case("run/x", "run/xy", false)]
    #[case("", "", true)]
    fn globs(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(glob_match(pattern, name), want);
    }

    #[test]
    fn checks_that_need_the_machine_need_root() {
        let all = all();
        assert!(all.iter().any(|c| c.needs_machine()));
        assert!(
            all.iter()
                .any(|c| !c.needs_machine() && c.requires.contains(&Req::Ksm))
        );
        for c in &all {
            assert_eq!(
                c.needs_machine(),
                c.requires.contains(&Req::Root),
                "{}",
                c.name
            );
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
