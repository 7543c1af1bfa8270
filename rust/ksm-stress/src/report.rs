//! A campaign's result (JSON, written in the guest) and the closing table
//! of one or more kernels side by side, with what each guest's console
//! shows of kernel warnings and splats: any corrupted page, error or splat
//! fails a column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coordinator::Config;
use crate::probes::ProbeReport;
use crate::stats::{Outcomes, Stats};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub release: String,
    pub version: String,
    /// Which implementation of KSM's trees the kernel runs.
    pub implementation: String,
    /// The runtime checkers the kernel was built with.
    pub checkers: Vec<String>,
    pub requested_s: u64,
    pub duration_s: u64,
    pub phases: u32,
    pub workers: u32,
    pub pages_per_worker: usize,
    pub seed: u64,
    pub stats: Stats,
    /// Largest values of a few counters seen at phase ends.
    pub maxima: BTreeMap<String, u64>,
    /// Failures injected, by facility.
    pub faults: BTreeMap<String, u64>,
    /// The slab caches failslab was narrowed to (empty: all).
    pub fault_caches: Vec<String>,
    /// Growth of some /proc/vmstat counters over the run.
    pub vmstat: BTreeMap<String, u64>,
    pub probes: ProbeReport,
    /// What this kernel or guest could not exercise, and why.
    pub skipped: Vec<String>,
}

impl RunResult {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &Config,
        took: Duration,
        phases: u32,
        stats: Stats,
        maxima: BTreeMap<String, u64>,
        faults: BTreeMap<String, u64>,
        fault_caches: Vec<String>,
        vmstat: BTreeMap<String, u64>,
        probes: ProbeReport,
        skipped: Vec<String>,
    ) -> RunResult {
        let (release, _) = ksm::kernel::uname();
        let config = ksm::kernel::Config::load(&release).unwrap_or_default();
        let on = |o: &str| config.get(o) == Some("y");
        let implementation = if on("CONFIG_KSM_RUST") {
            "Rust (CONFIG_KSM_RUST)"
        } else if on("CONFIG_KSM_C") {
            "C (CONFIG_KSM_C)"
        } else {
            "C (no choice: stock)"
        };
        let checkers = [
            ("CONFIG_KASAN", "KASAN"),
            ("CONFIG_PROVE_LOCKING", "lockdep"),
            ("CONFIG_DEBUG_VM", "DEBUG_VM"),
        ]
        .into_iter()
        .filter(|(o, _)| on(o))
        .map(|(_, n)| n.to_string())
        .collect();
        RunResult {
            version: std::fs::read_to_string("/proc/version")
                .unwrap_or_default()
                .trim()
                .to_string(),
            release,
            implementation: implementation.into(),
            checkers,
            requested_s: cfg.duration.as_secs(),
            duration_s: took.as_secs(),
            phases,
            workers: cfg.workers,
            pages_per_worker: cfg.pages,
            seed: cfg.seed,
            stats,
            maxima,
            faults,
            fault_caches,
            vmstat,
            probes,
            skipped,
        }
    }

    pub fn passed(&self) -> bool {
        self.stats.pages_corrupted == 0
            && self.stats.errors.is_empty()
            && self.stats.failures() == 0
    }
}

/// What in a console means the kernel went wrong: the project's list
/// (ci/lib.sh, KSMRS_SPLATS), and stalls and hung tasks.
pub const SPLATS: [&str; 11] = [
    "BUG:",
    "WARNING:",
    "Oops",
    "Kernel panic",
    "KASAN:",
    "possible circular locking",
    "inconsistent lock state",
    "UBSAN:",
    "detected stall",
    "blocked for more than",
    "general protection fault",
];

/// The console lines that are warnings or splats.
pub fn splats(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| SPLATS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// One kernel's column: its result, or why there is none, and its splats.
#[derive(Debug, Clone)]
pub struct Column {
    pub label: String,
    pub result: Result<RunResult, String>,
    pub splats: Vec<String>,
}

impl Column {
    pub fn passed(&self) -> bool {
        self.result.as_ref().is_ok_and(RunResult::passed) && self.splats.is_empty()
    }
}

fn outcome_cell(o: Option<&Outcomes>) -> String {
    let Some(o) = o else {
        return "—".into();
    };
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cell = o.attempts().to_string();
    if !o.refused.is_empty() {
        let _ = write!(cell, " (refused: {})", list(&o.refused));
    }
    if !o.failed.is_empty() {
        let _ = write!(cell, " **failed: {}**", list(&o.failed));
    }
    cell
}

/// The closing table, markdown.
pub fn render(columns: &[Column]) -> String {
    let mut out = String::new();
    let ok: Vec<Option<&RunResult>> = columns.iter().map(|c| c.result.as_ref().ok()).collect();
    let row = |out: &mut String, name: &str, cell: &dyn Fn(&RunResult) -> String| {
        let cells: Vec<String> = ok
            .iter()
            .map(|r| r.map(cell).unwrap_or_else(|| "—".into()))
            .collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    let labels: Vec<&str> = columns.iter().map(|c| c.label.as_str()).collect();
    let _ = writeln!(out, "| | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    let verdicts: Vec<String> = columns
        .iter()
        .map(|c| match (&c.result, c.passed()) {
            (Err(why), _) => format!("**FAIL**: no result ({why})"),
            (Ok(_), true) => "PASS".into(),
            (Ok(_), false) => "**FAIL**".into(),
        })
        .collect();
    let _ = writeln!(out, "| **verdict** | {} |", verdicts.join(" | "));
    row(&mut out, "kernel", &|r| r.release.clone());
    row(&mut out, "KSM's trees", &|r| r.implementation.clone());
    row(&mut out, "checkers", &|r| r.checkers.join(", "));
    row(&mut out, "duration", &|r| {
        format!(
            "{} s ({} asked), {} phases",
            r.duration_s, r.requested_s, r.phases
        )
    });
    row(&mut out, "workers", &|r| {
        format!(
            "{} × {} pages, half by prctl merge-any",
            r.workers, r.pages_per_worker
        )
    });
    row(&mut out, "operations, all kinds", &|r| {
        r.stats.op_total().to_string()
    });
    let kinds: BTreeSet<&String> = ok
        .iter()
        .flatten()
        .flat_map(|r| r.stats.ops.keys())
        .collect();
    for k in kinds {
        row(&mut out, &format!("· {k}"), &|r| {
            outcome_cell(r.stats.ops.get(k))
        });
    }
    row(&mut out, "EBUSY refusals", &|r| {
        r.stats.refusals("EBUSY").to_string()
    });
    row(&mut out, "faults injected", &|r| {
        if r.faults.is_empty() {
            return "none (unavailable)".into();
        }
        let list: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let caches = if r.fault_caches.is_empty() {
            "all caches".to_string()
        } else {
            r.fault_caches.join(", ")
        };
        format!("{} (failslab on {caches})", list.join(", "))
    });
    row(&mut out, "pages verified", &|r| {
        r.stats.pages_verified.to_string()
    });
    row(&mut out, "**corrupted pages**", &|r| {
        r.stats.pages_corrupted.to_string()
    });
    row(&mut out, "**errors** (checks failed, workers lost)", &|r| {
        r.stats.errors.len().to_string()
    });
    row(&mut out, "known upstream bugs met (not failing)", &|r| {
        r.stats.upstream.len().to_string()
    });
    let splat_cells: Vec<String> = columns.iter().map(|c| c.splats.len().to_string()).collect();
    let _ = writeln!(
        out,
        "| **kernel warnings and splats in the console** | {} |",
        splat_cells.join(" | ")
    );
    let events: BTreeSet<&String> = ok
        .iter()
        .flatten()
        .flat_map(|r| r.stats.events.keys())
        .collect();
    for e in events {
        row(&mut out, e, &|r| {
            r.stats.events.get(e).map_or("0".into(), u64::to_string)
        });
    }
    let maxima: BTreeSet<&String> = ok.iter().flatten().flat_map(|r| r.maxima.keys()).collect();
    for m in maxima {
        row(&mut out, m, &|r| {
            r.maxima.get(m).map_or("—".into(), u64::to_string)
        });
    }
    let vm: BTreeSet<&String> = ok.iter().flatten().flat_map(|r| r.vmstat.keys()).collect();
    for v in vm {
        row(&mut out, &format!("/proc/vmstat {v} (growth)"), &|r| {
            r.vmstat.get(v).map_or("—".into(), u64::to_string)
        });
    }
    render_functions(&mut out, columns, &ok);
    render_details(&mut out, columns);
    out
}

fn render_functions(out: &mut String, columns: &[Column], ok: &[Option<&RunResult>]) {
    let names: BTreeSet<&String> = ok
        .iter()
        .flatten()
        .flat_map(|r| r.probes.hits.keys())
        .collect();
    let _ = writeln!(
        out,
        "\nEntries into KSM's functions (kprobe events, kprobe_profile; — where the kernel \
         has no such function of its own, e.g. inlined):\n"
    );
    let labels: Vec<&str> = columns.iter().map(|c| c.label.as_str()).collect();
    let _ = writeln!(out, "| function | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    let ftrace: Vec<String> = ok
        .iter()
        .map(|r| match r {
            Some(r) => r
                .probes
                .ftrace
                .clone()
                .or_else(|| r.probes.unavailable.clone())
                .unwrap_or_else(|| "—".into()),
            None => "—".into(),
        })
        .collect();
    let _ = writeln!(out, "| (ftrace instruments) | {} |", ftrace.join(" | "));
    for n in names {
        let cells: Vec<String> = ok
            .iter()
            .map(|r| {
                r.and_then(|r| r.probes.hits.get(n))
                    .map_or("—".into(), u64::to_string)
            })
            .collect();
        let _ = writeln!(out, "| `{n}` | {} |", cells.join(" | "));
    }
}

fn render_details(out: &mut String, columns: &[Column]) {
    for c in columns {
        let _ = writeln!(out, "\n### {}\n", c.label);
        let r = match &c.result {
            Ok(r) => r,
            Err(why) => {
                let _ = writeln!(out, "No result: {why}");
                &RunResult::default()
            }
        };
        if !r.version.is_empty() {
            let _ = writeln!(out, "`{}`\n", r.version);
        }
        for s in &r.skipped {
            let _ = writeln!(out, "- not exercised: {s}");
        }
        for (k, why) in &r.probes.refused {
            let _ = writeln!(out, "- not counted: `{k}`: {why}");
        }
        for e in &r.stats.errors {
            let _ = writeln!(out, "- **error**: {e}");
        }
        for u in &r.stats.upstream {
            let _ = writeln!(out, "- known upstream bug: {u}");
        }
        for x in &r.stats.corruptions {
            let _ = writeln!(
                out,
                "- **corrupted page**: worker {} pid {} page {} generation {} ({}), found {}: word {} \
                 of 512 is {} not {} ({} words differ){}",
                x.worker,
                x.pid,
                x.page,
                x.generation,
                x.expected,
                x.when,
                x.first_word,
                x.got_word,
                x.expected_word,
                x.words,
                x.holds
                    .as_ref()
                    .map(|h| format!("; the page holds {h}"))
                    .unwrap_or_default()
            );
        }
        let distinct: BTreeSet<&String> = c.splats.iter().collect();
        for s in distinct.iter().take(30) {
            let _ = writeln!(out, "- **console**: `{s}`");
        }
        if distinct.len() > 30 {
            let _ = writeln!(out, "- ... {} more distinct lines", distinct.len() - 30);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(corrupted: u64) -> RunResult {
        let mut stats = Stats::default();
        stats.ok("fork");
        stats.refused("write max_page_sharing", "EBUSY");
        stats.event("memory blocks offlined holding KSM pages", 3);
        stats.pages_verified = 1000;
        stats.pages_corrupted = corrupted;
        let mut probes = ProbeReport::default();
        probes.hits.insert("ksm_check_stable_tree".into(), 3);
        RunResult {
            release: "7.3.4-ksm-rs".into(),
            implementation: "Rust (CONFIG_KSM_RUST)".into(),
            stats,
            probes,
            ..RunResult::default()
        }
    }

    #[test]
    fn console_splats_are_found() {
        let console = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 1 PID: 7 at mm/ksm.c:100\n\
                       [ 3.0] BUG: KASAN: use-after-free in x\n[ 4.0] rcu: INFO: rcu_preempt detected stalls\n";
        assert_eq!(splats(console).len(), 3);
        assert!(splats("Linux version 7.3\nfault injection\n").is_empty());
    }

    #[test]
    fn a_column_fails_on_corruption_splat_or_missing_result() {
        let good = Column {
            label: "debug".into(),
            result: Ok(result(0)),
            splats: vec![],
        };
        assert!(good.passed());
        let corrupt = Column {
            result: Ok(result(1)),
            ..good.clone()
        };
        assert!(!corrupt.passed());
        let splat = Column {
            splats: vec!["BUG: x".into()],
            ..good.clone()
        };
        assert!(!splat.passed());
        let missing = Column {
            result: Err("guest timed out".into()),
            ..good.clone()
        };
        assert!(!missing.passed());
        let table = render(&[good, missing]);
        assert!(
            table.contains("| **verdict** | PASS | **FAIL**: no result (guest timed out) |"),
            "{table}"
        );
        assert!(
            table.contains("| · write max_page_sharing | 1 (refused: EBUSY 1) | — |"),
            "{table}"
        );
        assert!(
            table.contains("| `ksm_check_stable_tree` | 3 | — |"),
            "{table}"
        );
        assert!(
            table.contains("| memory blocks offlined holding KSM pages | 3 | — |"),
            "{table}"
        );
        assert!(table.contains("| EBUSY refusals | 1 | — |"), "{table}");
    }
}
