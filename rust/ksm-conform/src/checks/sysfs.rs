//! /sys/kernel/mm/ksm: "KSM daemon sysfs interface" in ksm.rst, with the
//! exact validation of the store functions at the end of mm/ksm.c.

use std::os::unix::fs::PermissionsExt;

use ksm::kernel::Version;
use ksm::{Knob, Sysfs};
use nix::errno::Errno;

use crate::child::in_child;
use crate::ctx::{CheckResult, Ctx};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "sysfs/expected_files_for_kernel_version",
        requires: &[Req::Ksm],
        body: expected_files,
    },
    Check {
        name: "sysfs/tunables_0644_statistics_0444",
        requires: &[Req::Ksm],
        body: modes,
    },
    Check {
        name: "sysfs/readable_by_all_writable_only_by_root",
        requires: &[Req::Root, Req::Ksm],
        body: writable_only_by_root,
    },
    Check {
        name: "sysfs/boot_defaults",
        requires: &[Req::Ksm, Req::FreshBoot],
        body: boot_defaults,
    },
    Check {
        name: "sysfs/invalid_writes_refused_with_exact_errno_and_no_change",
        requires: &[Req::Root, Req::Ksm],
        body: invalid_writes,
    },
    Check {
        name: "sysfs/pages_to_scan_refused_in_scan_time_advisor_mode",
        requires: &[Req::Root, Req::Ksm, Req::Knob(Knob::AdvisorMode)],
        body: pages_to_scan_refused_in_scan_time,
    },
    Check {
        name: "sysfs/absent_without_ksm",
        requires: &[Req::NoKsm],
        body: absent_without_ksm,
    },
];

/// When each file first appeared in mainline, and its boot default as set
/// in mm/ksm.c (tunables only).
pub struct KnobFacts {
    pub knob: Knob,
    pub since: Version,
    pub default: Option<&'static str>,
}

const fn facts(knob: Knob, major: u32, minor: u32, default: Option<&'static str>) -> KnobFacts {
    KnobFacts {
        knob,
        since: Version::new(major, minor),
        default,
    }
}

pub const KNOB_FACTS: &[KnobFacts] = &[
    facts(Knob::Run, 2, 6, Some("0")),
    facts(Knob::PagesToScan, 2, 6, Some("100")),
    facts(Knob::SleepMillisecs, 2, 6, Some("20")),
    facts(Knob::FullScans, 2, 6, None),
    facts(Knob::PagesShared, 2, 6, None),
    facts(Knob::PagesSharing, 2, 6, None),
    facts(Knob::PagesUnshared, 2, 6, None),
    facts(Knob::PagesVolatile, 2, 6, None),
    // Only with CONFIG_NUMA.
    facts(Knob::MergeAcrossNodes, 3, 9, Some("1")),
    facts(Knob::UseZeroPages, 4, 10, Some("0")),
    facts(Knob::MaxPageSharing, 4, 13, Some("256")),
    facts(Knob::StableNodeChainsPruneMillisecs, 4, 13, Some("2000")),
    facts(Knob::StableNodeChains, 4, 13, None),
    facts(Knob::StableNodeDups, 4, 13, None),
    facts(Knob::GeneralProfit, 6, 4, None),
    facts(Knob::KsmZeroPages, 6, 5, None),
    facts(Knob::PagesScanned, 6, 6, None),
    facts(Knob::SmartScan, 6, 7, Some("1")),
    facts(Knob::PagesSkipped, 6, 7, None),
    facts(Knob::AdvisorMode, 6, 8, Some("none")),
    facts(Knob::AdvisorMaxCpu, 6, 8, Some("70")),
    facts(Knob::AdvisorMinPagesToScan, 6, 8, Some("500")),
    facts(Knob::AdvisorMaxPagesToScan, 6, 8, Some("30000")),
    facts(Knob::AdvisorTargetScanTime, 6, 8, Some("200")),
];

/// The files this kernel should have: by version, and merge_across_nodes
/// only with CONFIG_NUMA.
pub fn expected_knobs(version: Version, numa: bool) -> Vec<Knob> {
    KNOB_FACTS
        .iter()
        .filter(|f| f.since <= version && (f.knob != Knob::MergeAcrossNodes || numa))
        .map(|f| f.knob)
        .collect()
}

fn expected_files(ctx: &mut Ctx) -> CheckResult {
    let Some(version) = ctx.env.version else {
        return Err(crate::Fail::Skip(format!(
            "cannot parse kernel release {:?}",
            ctx.env.release
        )));
    };
    let present = Sysfs::system().entries()?;
    let expected = expected_knobs(version, ctx.env.numa_built);
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| !present.iter().any(|p| p == k.name()))
        .collect();
    let extra: Vec<_> = present
        .iter()
        .filter(|p| !expected.iter().any(|k| k.name() == p.as_str()))
        .collect();
    if !extra.is_empty() {
        ctx.note(format!("files not expected for {version}: {extra:?}"));
    }
    ensure!(missing.is_empty(), "kernel {version} lacks {missing:?}");
    Ok(())
}

/// "readable by all but writable only by root".
fn modes(_: &mut Ctx) -> CheckResult {
    let sysfs = Sysfs::system();
    for knob in Knob::ALL.into_iter().filter(|k| sysfs.has(*k)) {
        let mode = std::fs::metadata(sysfs.path(knob))?.permissions().mode() & 0o777;
        let want = if knob.writable() { 0o644 } else { 0o444 };
        ensure!(mode == want, "{knob}: mode {mode:o}, expected {want:o}");
    }
    Ok(())
}

/// As uid/gid 65534 every file reads, and writing even the current value
/// fails with EACCES.
fn writable_only_by_root(_: &mut Ctx) -> CheckResult {
    let report = in_child(|| {
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(65534.into()).map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(65534.into()).map_err(|e| format!("setuid: {e}"))?;
        let sysfs = Sysfs::system();
        let mut checked = 0;
        for knob in Knob::ALL.into_iter().filter(|k| sysfs.has(*k)) {
            let value = sysfs.read(knob).map_err(|e| format!("as nobody: {e}"))?;
            if knob.writable() {
                match sysfs.write(knob, &value).map_err(|e| e.errno()) {
                    Err(Some(Errno::EACCES)) => checked += 1,
                    other => {
                        return Err(format!(
                            "{knob} written as nobody: {other:?}, expected EACCES"
                        ));
                    }
                }
            }
        }
        Ok(format!("{checked} tunables refused"))
    })?;
    ensure!(!report.starts_with("0 "), "no tunable was tried");
    Ok(())
}

fn boot_defaults(ctx: &mut Ctx) -> CheckResult {
    let mut wrong = Vec::new();
    for f in KNOB_FACTS.iter().filter(|f| ctx.sysfs().has(f.knob)) {
        if let Some(default) = f.default {
            let value = ctx.sysfs().read(f.knob)?;
            if value != default {
                wrong.push(format!("{}={value} (default {default})", f.knob));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "not at boot defaults: {}",
        wrong.join(", ")
    );
    Ok(())
}

/// How each tunable parses its input in mm/ksm.c, which decides the errno.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parser {
    /// kstrtouint/kstrtoul, any error reported as EINVAL.
    UnsignedEinval,
    /// kstrtoul with its own errno (ERANGE on overflow); values > 1 EINVAL.
    MergeAcrossNodes,
    /// kstrtoint with its own errno; values < 2 EINVAL.
    MaxPageSharing,
    /// kstrtobool: first character decides; anything else EINVAL.
    Bool,
    /// sysfs_streq against "none" / "scan-time".
    AdvisorMode,
}

fn parser(knob: Knob) -> Parser {
    match knob {
        Knob::MergeAcrossNodes => Parser::MergeAcrossNodes,
        Knob::MaxPageSharing => Parser::MaxPageSharing,
        Knob::UseZeroPages | Knob::SmartScan => Parser::Bool,
        Knob::AdvisorMode => Parser::AdvisorMode,
        _ => Parser::UnsignedEinval,
    }
}

/// Invalid inputs and the errno the kernel must answer. Every input here
/// is invalid for its knob, so the value must not change.
fn invalid_inputs(knob: Knob) -> Vec<(&'static str, Errno)> {
    use Errno::{EINVAL, ERANGE};
    let mut cases = match parser(knob) {
        Parser::UnsignedEinval => vec![
            ("abc", EINVAL),
            ("-1", EINVAL),
            ("4294967296999999999999", EINVAL), // overflow, reported as EINVAL
            ("12x", EINVAL),
            (" 12", EINVAL),
            ("0x10", EINVAL),
            ("\n", EINVAL),
        ],
        Parser::MergeAcrossNodes => vec![
            ("abc", EINVAL),
            ("-1", EINVAL),
            ("2", EINVAL),
            ("18446744073709551616", ERANGE),
            ("1x", EINVAL),
            ("\n", EINVAL),
        ],
        Parser::MaxPageSharing => vec![
            ("abc", EINVAL),
            ("1", EINVAL),
            ("0", EINVAL),
            ("-5", EINVAL),
            ("2147483648", ERANGE),
            ("12x", EINVAL),
            ("\n", EINVAL),
        ],
        Parser::Bool => vec![
            ("abc", EINVAL),
            ("2", EINVAL),
            ("-1", EINVAL),
            ("\n", EINVAL),
        ],
        Parser::AdvisorMode => vec![
            ("foo", EINVAL),
            ("scan_time", EINVAL),
            ("SCAN-TIME", EINVAL),
            ("none ", EINVAL),
            ("\n", EINVAL),
        ],
    };
    match knob {
        Knob::Run => cases.extend([("3", EINVAL), ("4294967295", EINVAL)]),
        // 32-bit overflow is EINVAL for the kstrtouint knobs; kstrtoul ones
        // take it, so only the 64-bit overflow above is invalid for them.
        Knob::PagesToScan | Knob::SleepMillisecs | Knob::StableNodeChainsPruneMillisecs => {
            cases.push(("4294967296", EINVAL))
        }
        Knob::AdvisorTargetScanTime => cases.push(("0", EINVAL)),
        _ => {}
    }
    cases
}

fn invalid_writes(ctx: &mut Ctx) -> CheckResult {
    // In scan-time mode every write to pages_to_scan is EINVAL, whatever it
    // says: its parser cases would test nothing.
    if ctx.sysfs().has(Knob::AdvisorMode) && ctx.sysfs().read(Knob::AdvisorMode)? != "none" {
        ctx.set(Knob::AdvisorMode, "none")?;
    }
    let mut tried = 0;
    for knob in Knob::ALL.into_iter().filter(|k| k.writable()) {
        if !ctx.sysfs().has(knob) {
            ctx.note(format!("{knob}: not in this kernel"));
            continue;
        }
        let before = ctx.sysfs().read(knob)?;
        for (input, want) in invalid_inputs(knob) {
            let got = ctx
                .guard
                .write_bytes(knob, input.as_bytes())
                .map_err(|e| e.errno());
            ensure_eq!(got, Err(Some(want)), "{knob} <- {input:?}");
            ensure_eq!(
                ctx.sysfs().read(knob)?,
                before,
                "{knob} after refused {input:?}"
            );
            tried += 1;
        }
        // An empty write reaches no store function (sysfs_kf_write returns
        // 0 for count 0): accepted, nothing changes.
        ctx.guard.write_bytes(knob, b"")?;
        ensure_eq!(
            ctx.sysfs().read(knob)?,
            before,
            "{knob} after an empty write"
        );
    }
    ctx.note(format!("{tried} invalid writes refused"));
    Ok(())
}

/// "The pages_to_scan value cannot be changed if advisor_mode has been set
/// to scan-time."
fn pages_to_scan_refused_in_scan_time(ctx: &mut Ctx) -> CheckResult {
    ctx.set(Knob::AdvisorMode, "none")?;
    ctx.set(Knob::AdvisorMode, "scan-time")?;
    let before = ctx.sysfs().read(Knob::PagesToScan)?;
    let got = ctx
        .guard
        .set(Knob::PagesToScan, "1234")
        .map_err(|e| e.errno());
    ensure_eq!(
        got,
        Err(Some(Errno::EINVAL)),
        "pages_to_scan <- 1234 in scan-time mode"
    );
    ensure_eq!(
        ctx.sysfs().read(Knob::PagesToScan)?,
        before,
        "pages_to_scan after the refused write"
    );
    ctx.set(Knob::AdvisorMode, "none")?;
    ctx.set(Knob::PagesToScan, "1234")?;
    ensure_eq!(
        ctx.sysfs().read(Knob::PagesToScan)?,
        "1234",
        "pages_to_scan with advisor none"
    );
    Ok(())
}

/// Without CONFIG_KSM there is no sysfs directory and no per-process file.
fn absent_without_ksm(_: &mut Ctx) -> CheckResult {
    for path in [
        "/sys/kernel/mm/ksm",
        "/proc/self/ksm_stat",
        "/proc/self/ksm_merging_pages",
    ] {
        ensure!(
            !std::path::Path::new(path).exists(),
            "{path} exists on a kernel without KSM"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Version::new(6, 1), true, 14)]
    #[case(Version::new(6, 1), false, 13)]
    #[case(Version::new(6, 12), true, 24)]
    #[case(Version::new(7, 3), true, 24)]
    fn expected_sets(#[case] v: Version, #[case] numa: bool, #[case] n: usize) {
        assert_eq!(expected_knobs(v, numa).len(), n);
    }

    #[test]
    fn every_knob_has_facts_and_tunables_have_defaults() {
        for knob in Knob::ALL {
            let f = KNOB_FACTS.iter().find(|f| f.knob == knob).expect("facts");
            assert_eq!(f.default.is_some(), knob.writable(), "{knob}");
        }
    }

    #[test]
    fn every_tunable_has_invalid_inputs() {
        for knob in Knob::ALL.into_iter().filter(|k| k.writable()) {
            assert!(invalid_inputs(knob).len() >= 4, "{knob}");
        }
    }
}
