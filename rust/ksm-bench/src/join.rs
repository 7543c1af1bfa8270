//! `ksm-bench join`: the plugin's counts (crate::plugin) and the guest's
//! log (crate::guestlog) of one boot, joined mark by mark into the cost of
//! each sample's phases: merging, and the steady state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::guestlog::{Counters, Line};
use crate::plugin::{Insns, Output, Symbol, Window};
use crate::symbols::Info;

/// A mark whose window ran on for more of ksmd's instructions than its way
/// into schedule() takes was not taken while ksmd slept: refuse the run.
pub const LATE_LIMIT: u64 = 20_000;

/// Instructions as a pair that serialises as {"own":..,"irq":..}.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub own: u64,
    pub irq: u64,
}

impl From<Insns> for Count {
    fn from(i: Insns) -> Count {
        Count {
            own: i.own,
            irq: i.irq,
        }
    }
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.own += o.own;
        self.irq += o.irq;
    }
}

/// Consecutive full scans of one sample, summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub scans: u64,
    pub insns: Count,
    pub pages_scanned: u64,
    /// Pages that became mapped to a KSM page during the phase.
    pub pages_merged: u64,
    /// TCG time, for information only.
    pub wall_ms: f64,
    pub ksmd_cpu_ms: f64,
    /// Per function (the display name of crate::symbols::Info).
    pub functions: BTreeMap<String, Count>,
}

/// One full scan, with the counters at its end: the run's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub insns: Count,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub workload: String,
    pub pages: u64,
    pub rep: u64,
    /// Which boot of the kernel (several boots of one kernel are joined
    /// separately and read together).
    pub boot: String,
    pub expected_merging: u64,
    /// Scans 1..=merge_scans; None if the workload does not merge or
    /// merging did not complete (then `scans` shows how far it got).
    pub merge: Option<Phase>,
    pub merge_complete: bool,
    pub steady: Option<Phase>,
    pub scans: Vec<Scan>,
}

/// One boot's joined counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub label: String,
    pub kernel: String,
    pub version: String,
    /// How QEMU ran (e.g. "tcg", "tcg -icount shift=0,sleep=off").
    pub qemu: String,
    /// What each function name is: object and category.
    pub functions: BTreeMap<String, Info>,
    pub samples: Vec<Sample>,
}

/// A mark of the guest's log with the plugin's window that ends at it.
#[derive(Clone, Copy)]
struct At<'w> {
    window: &'w Window,
    counters: Counters,
    wall_ms: f64,
    ksmd_cpu_ms: f64,
}

/// Sum windows into a phase: scans `from..=to` of a sample whose marks are
/// `marks` (by scan); the mark of scan `from - 1` is the starting point.
fn phase(
    marks: &BTreeMap<u64, At<'_>>,
    from: u64,
    to: u64,
    names: &BTreeMap<Symbol, Info>,
) -> Result<Phase, String> {
    let before = marks
        .get(&(from - 1))
        .ok_or_else(|| format!("no mark at scan {}", from - 1))?;
    let after = marks
        .get(&to)
        .ok_or_else(|| format!("no mark at scan {to}"))?;
    let mut insns = Count::default();
    let mut functions: BTreeMap<String, Count> = BTreeMap::new();
    for scan in from..=to {
        let w = marks
            .get(&scan)
            .ok_or_else(|| format!("no mark at scan {scan}"))?
            .window;
        insns += w.total.into();
        for (sym, &n) in &w.symbols {
            let name = names
                .get(sym)
                .map_or(sym.name.as_str(), |i| i.name.as_str());
            *functions.entry(name.to_string()).or_default() += n.into();
        }
    }
    Ok(Phase {
        scans: to - from + 1,
        insns,
        pages_scanned: after.counters.pages_scanned - before.counters.pages_scanned,
        pages_merged: after
            .counters
            .merging
            .saturating_sub(before.counters.merging),
        wall_ms: after.wall_ms - before.wall_ms,
        ksmd_cpu_ms: after.ksmd_cpu_ms - before.ksmd_cpu_ms,
        functions,
    })
}

/// Every symbol the windows name.
pub fn symbols(out: &Output) -> Vec<Symbol> {
    let mut all: Vec<Symbol> = out
        .sessions
        .iter()
        .flatten()
        .flat_map(|w| w.symbols.keys().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Join one boot: its log's sessions with the plugin's, in order.
pub fn join(
    log: &[Vec<Line>],
    out: &Output,
    names: &BTreeMap<Symbol, Info>,
    boot: &str,
    qemu: &str,
) -> Result<Joined, String> {
    if log.len() != out.sessions.len() {
        return Err(format!(
            "the guest's log has {} session(s), the plugin's output {}: not the same boot",
            log.len(),
            out.sessions.len()
        ));
    }
    let mut joined: Option<Joined> = None;
    for (lines, windows) in log.iter().zip(&out.sessions) {
        let Some(Line::Session {
            label,
            kernel,
            version,
        }) = lines.first()
        else {
            return Err("a session of the log does not start with its session line".into());
        };
        let j = joined.get_or_insert_with(|| Joined {
            label: label.clone(),
            kernel: kernel.clone(),
            version: version.clone(),
            qemu: qemu.into(),
            functions: names
                .values()
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
            samples: Vec::new(),
        });
        if (&j.label, &j.kernel, &j.version) != (label, kernel, version) {
            return Err("sessions of different kernels in one boot".into());
        }
        let mut marks: BTreeMap<u64, BTreeMap<u64, At<'_>>> = BTreeMap::new();
        for line in &lines[1..] {
            match line {
                Line::Session { .. } => unreachable!("sessions are split"),
                Line::Mark {
                    seq,
                    sample,
                    scan,
                    counters,
                    wall_ms,
                    ksmd_cpu_ms,
                } => {
                    let w = windows.get(*seq as usize - 1).ok_or_else(|| {
                        format!(
                            "mark {seq} is in the guest's log but not in the plugin's output (it has {})",
                            windows.len()
                        )
                    })?;
                    if w.late > LATE_LIMIT {
                        return Err(format!(
                            "mark {seq}: ksmd ran {} instructions after it: it was not asleep, the window is not exact",
                            w.late
                        ));
                    }
                    let at = At {
                        window: w,
                        counters: *counters,
                        wall_ms: *wall_ms,
                        ksmd_cpu_ms: *ksmd_cpu_ms,
                    };
                    marks.entry(*sample).or_default().insert(*scan, at);
                }
                Line::Sample {
                    sample,
                    workload,
                    pages,
                    rep,
                    expected_merging,
                    merge_scans,
                    steady_from,
                    steady_to,
                } => {
                    let m = marks
                        .get(sample)
                        .ok_or_else(|| format!("sample {sample} has no marks"))?;
                    let last = *m.keys().last().unwrap_or(&0);
                    let scans = (1..=last)
                        .map(|k| Scan {
                            insns: m[&k].window.total.into(),
                            counters: m[&k].counters,
                        })
                        .collect();
                    let what =
                        |e: String| format!("sample {sample} ({workload}, {pages} pages): {e}");
                    let merge = match merge_scans {
                        Some(n) => Some(phase(m, 1, *n, names).map_err(what)?),
                        None => None,
                    };
                    let steady = if steady_to >= steady_from {
                        Some(phase(m, *steady_from, *steady_to, names).map_err(what)?)
                    } else {
                        None
                    };
                    j.samples.push(Sample {
                        workload: workload.clone(),
                        pages: *pages,
                        rep: *rep,
                        boot: boot.into(),
                        expected_merging: *expected_merging,
                        merge_complete: *expected_merging == 0 || merge_scans.is_some(),
                        merge,
                        steady,
                        scans,
                    });
                }
            }
        }
    }
    joined.ok_or_else(|| "the guest's log has no session".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::parse;

    fn counters(full_scans: u64, pages_scanned: u64, merging: u64) -> Counters {
        Counters {
            full_scans,
            pages_scanned,
            merging,
            ..Counters::default()
        }
    }

    fn mark(seq: u64, scan: u64, c: Counters) -> Line {
        Line::Mark {
            seq,
            sample: 1,
            scan,
            counters: c,
            wall_ms: scan as f64 * 10.0,
            ksmd_cpu_ms: scan as f64 * 9.0,
        }
    }

    /// A sample of 4 identical pages: merged by scan 2, steady scans 4-5.
    fn log() -> Vec<Vec<Line>> {
        vec![vec![
            Line::Session {
                label: "stock".into(),
                kernel: "7.3.4".into(),
                version: "#1".into(),
            },
            mark(2, 0, counters(0, 0, 0)),
            mark(3, 1, counters(1, 4, 0)),
            mark(4, 2, counters(2, 8, 4)),
            mark(5, 3, counters(3, 12, 4)),
            mark(6, 4, counters(4, 16, 4)),
            mark(7, 5, counters(5, 20, 4)),
            Line::Sample {
                sample: 1,
                workload: "identical".into(),
                pages: 4,
                rep: 1,
                expected_merging: 4,
                merge_scans: Some(2),
                steady_from: 4,
                steady_to: 5,
            },
        ]]
    }

    fn plugin(late: u64) -> Output {
        let mut text = "ksmcount 1 symbols=2 map=m\nsession 1\nmark 1 0 0 0\nend 1\n".to_string();
        for seq in 2..=7 {
            let (own, irq) = (seq * 100, seq);
            text += &format!(
                "mark {seq} {own} {irq} {}\nf 10 {} {irq} memcmp\nf 20 {} 0 _RNvCs1_8ksm_rust4scan\nend {seq}\n",
                if seq == 5 { late } else { 0 },
                own / 2,
                own / 2
            );
        }
        parse(&text).unwrap()
    }

    #[test]
    fn phases_sum_their_scans() {
        let j = join(&log(), &plugin(0), &BTreeMap::new(), "stock-1", "tcg").unwrap();
        let s = &j.samples[0];
        let merge = s.merge.as_ref().unwrap();
        // Scans 1 and 2: marks 3 and 4.
        assert_eq!(merge.insns, Count { own: 700, irq: 7 });
        assert_eq!((merge.scans, merge.pages_merged), (2, 4));
        let steady = s.steady.as_ref().unwrap();
        // Scans 4 and 5: marks 6 and 7.
        assert_eq!(steady.insns, Count { own: 1300, irq: 13 });
        assert_eq!((steady.scans, steady.pages_scanned), (2, 8));
        assert_eq!(steady.functions["memcmp"], Count { own: 650, irq: 13 });
        assert_eq!(steady.wall_ms, 20.0);
        assert_eq!(s.scans.len(), 5);
        assert!(s.merge_complete);
    }

    #[test]
    fn a_late_mark_is_refused() {
        let e = join(
            &log(),
            &plugin(LATE_LIMIT + 1),
            &BTreeMap::new(),
            "b",
            "tcg",
        )
        .unwrap_err();
        assert!(e.contains("not asleep"), "{e}");
    }

    #[test]
    fn sessions_must_pair_up() {
        let mut two = log();
        two.push(two[0][..1].to_vec());
        let e = join(&two, &plugin(0), &BTreeMap::new(), "b", "tcg").unwrap_err();
        assert!(e.contains("not the same boot"), "{e}");
    }

    #[test]
    fn a_mark_missing_from_the_plugin_is_refused() {
        let mut out = plugin(0);
        out.sessions[0].truncate(4);
        let e = join(&log(), &out, &BTreeMap::new(), "b", "tcg").unwrap_err();
        assert!(e.contains("not in the plugin's output"), "{e}");
    }
}
