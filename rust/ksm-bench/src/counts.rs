//! `ksm-bench counts`: the joined instruction counts of one or two kernels
//! (crate::join), as tables: the cost per scanned page, per merged page and
//! per full scan with its spread over runs; where the instructions go, by
//! category and by function; TCG's wall clock beside them; and any sample
//! whose merging did not complete.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::join::{Count, Joined, Phase, Sample};
use crate::stats::Summary;
use crate::symbols::{OTHER, UNKNOWN};

/// A figure of a sample: instructions per what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    ScannedPage,
    MergedPage,
    FullScan,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::ScannedPage, Metric::MergedPage, Metric::FullScan];

    pub fn name(self) -> &'static str {
        match self {
            Metric::ScannedPage => "per scanned page",
            Metric::MergedPage => "per merged page",
            Metric::FullScan => "per full scan",
        }
    }

    /// ksmd's own instructions (interrupts apart), None where the sample
    /// does not have the phase.
    pub fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::ScannedPage => s
                .steady
                .as_ref()
                .map(|p| p.insns.own as f64 / p.pages_scanned as f64),
            Metric::MergedPage => s
                .merge
                .as_ref()
                .filter(|p| p.pages_merged > 0)
                .map(|p| p.insns.own as f64 / p.pages_merged as f64),
            Metric::FullScan => s
                .steady
                .as_ref()
                .map(|p| p.insns.own as f64 / p.scans as f64),
        }
    }

    /// The phase the metric divides, and its divisor.
    fn phase(self, s: &Sample) -> Option<(&Phase, u64)> {
        match self {
            Metric::ScannedPage => s.steady.as_ref().map(|p| (p, p.pages_scanned)),
            Metric::MergedPage => s.merge.as_ref().map(|p| (p, p.pages_merged)),
            Metric::FullScan => s.steady.as_ref().map(|p| (p, p.scans)),
        }
    }
}

/// The samples of one kernel (all its boots).
#[derive(Debug)]
pub struct Kernel<'a> {
    pub label: &'a str,
    pub joined: Vec<&'a Joined>,
}

impl<'a> Kernel<'a> {
    fn samples(&self, workload: &str, pages: u64) -> Vec<&'a Sample> {
        self.joined
            .iter()
            .flat_map(|j| &j.samples)
            .filter(|s| s.workload == workload && s.pages == pages)
            .collect()
    }

    pub fn median(&self, workload: &str, pages: u64, m: Metric) -> Option<f64> {
        self.summary(workload, pages, m).map(|s| s.median)
    }

    fn summary(&self, workload: &str, pages: u64, m: Metric) -> Option<Summary> {
        let v: Vec<f64> = self
            .samples(workload, pages)
            .iter()
            .filter_map(|s| m.of(s))
            .collect();
        Summary::of(&v)
    }

    /// Instructions per unit of `m`, by key (category or function), pooled
    /// over the samples (their counts agree to a fraction of a percent).
    fn split(&self, workload: &str, pages: u64, m: Metric, by_name: bool) -> BTreeMap<String, f64> {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let mut units = 0;
        for s in self.samples(workload, pages) {
            let Some((phase, n)) = m.phase(s) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            units += n;
            for (name, c) in &phase.functions {
                let key = if by_name {
                    name.clone()
                } else {
                    self.category(name)
                };
                *sums.entry(key).or_default() += c.own;
            }
        }
        sums.into_iter()
            .map(|(k, v)| (k, v as f64 / units.max(1) as f64))
            .collect()
    }

    fn category(&self, name: &str) -> String {
        self.joined
            .iter()
            .find_map(|j| j.functions.get(name))
            .map_or_else(
                || if name == "?" { UNKNOWN } else { OTHER }.to_string(),
                |i| i.category.clone(),
            )
    }

    /// Interrupts' share of the instructions while ksmd was current.
    fn irq_share(&self, workload: &str, pages: u64) -> Option<f64> {
        let mut c = Count::default();
        for s in self.samples(workload, pages) {
            if let Some(p) = &s.steady {
                c += p.insns;
            }
        }
        (c.own + c.irq > 0).then(|| c.irq as f64 / (c.own + c.irq) as f64)
    }
}

/// Group boots by label, in the order given; at most two kernels.
pub fn kernels(all: &[Joined]) -> Result<Vec<Kernel<'_>>, String> {
    let mut out: Vec<Kernel<'_>> = Vec::new();
    for j in all {
        match out.iter_mut().find(|k| k.label == j.label) {
            Some(k) => k.joined.push(j),
            None => out.push(Kernel {
                label: &j.label,
                joined: vec![j],
            }),
        }
    }
    match out.len() {
        0 => Err("no counts given".into()),
        1 | 2 => Ok(out),
        n => Err(format!(
            "counts of {n} kernels given ({}): compare two at a time",
            out.iter().map(|k| k.label).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// (workload, pages) in the order the first kernel ran them.
fn cases(k: &Kernel<'_>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    for s in k.joined.iter().flat_map(|j| &j.samples) {
        let key = (s.workload.clone(), s.pages);
        if !v.contains(&key) {
            v.push(key);
        }
    }
    // By workload, then size.
    let order: Vec<String> = v.iter().map(|c| c.0.clone()).fold(Vec::new(), |mut o, w| {
        if !o.contains(&w) {
            o.push(w);
        }
        o
    });
    v.sort_by_key(|(w, p)| (order.iter().position(|o| o == w), *p));
    v
}

/// One line of the main table.
#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub pages: u64,
    pub metric: &'static str,
    pub kernels: Vec<(String, Summary)>,
    /// Second kernel's median over the first's.
    pub ratio: Option<f64>,
}

/// (max - min) / median: how far a kernel's runs fall apart.
pub fn spread(s: &Summary) -> f64 {
    if s.median == 0.0 {
        0.0
    } else {
        (s.max - s.min) / s.median
    }
}

pub fn rows(ks: &[Kernel<'_>]) -> Vec<Row> {
    let mut out = Vec::new();
    for (w, pages) in cases(&ks[0]) {
        for m in Metric::ALL {
            let kernels: Vec<(String, Summary)> = ks
                .iter()
                .filter_map(|k| k.summary(&w, pages, m).map(|s| (k.label.to_string(), s)))
                .collect();
            if kernels.is_empty() {
                continue;
            }
            let ratio = (kernels.len() == 2).then(|| kernels[1].1.median / kernels[0].1.median);
            out.push(Row {
                workload: w.clone(),
                pages,
                metric: m.name(),
                kernels,
                ratio,
            });
        }
    }
    out
}

fn mib(pages: u64) -> String {
    format!("{} MiB", pages * 4096 / (1024 * 1024))
}

/// The whole report, as text.
pub fn report(ks: &[Kernel<'_>], top: usize) -> String {
    let mut t = String::new();
    let labels: Vec<&str> = ks.iter().map(|k| k.label).collect();
    let runs = |k: &Kernel<'_>| {
        let boots = k.joined.len();
        let qemu = k.joined[0].qemu.clone();
        format!(
            "{} ({}, {boots} boot(s), {qemu})",
            k.label, k.joined[0].kernel
        )
    };
    let _ = writeln!(
        t,
        "ksmd's instructions (its own; interrupts apart), counted by the ksmcount QEMU plugin: {}",
        ks.iter().map(runs).collect::<Vec<_>>().join(" against ")
    );
    let _ = writeln!(
        t,
        "median over runs, and spread = (max - min) / median{}\n",
        if ks.len() == 2 {
            format!("; ratio = {} / {}", labels[1], labels[0])
        } else {
            String::new()
        }
    );
    let _ = write!(t, "{:<12} {:>9} {:<17}", "workload", "size", "instructions");
    for l in &labels {
        let _ = write!(t, " {:>24}", format!("{l} (spread, runs)"));
    }
    let _ = writeln!(t, "{}", if ks.len() == 2 { "    ratio" } else { "" });
    for r in rows(ks) {
        let _ = write!(t, "{:<12} {:>9} {:<17}", r.workload, mib(r.pages), r.metric);
        for (_, s) in &r.kernels {
            let cell = format!("{:.1} ({:.3}%, {})", s.median, spread(s) * 100.0, s.n);
            let _ = write!(t, " {cell:>24}");
        }
        if let Some(ratio) = r.ratio {
            let _ = write!(t, " {ratio:>8.4}");
        }
        let _ = writeln!(t);
    }

    let cs = cases(&ks[0]);
    // The split at each workload's largest size.
    let mut largest: Vec<(String, u64)> = Vec::new();
    for (w, p) in &cs {
        match largest.iter_mut().find(|(lw, _)| lw == w) {
            Some(l) => l.1 = l.1.max(*p),
            None => largest.push((w.clone(), *p)),
        }
    }
    for m in [Metric::ScannedPage, Metric::MergedPage] {
        let _ = writeln!(
            t,
            "\nWhere the instructions go, {}, by category (each workload at its largest size):",
            m.name()
        );
        for (w, p) in &largest {
            let splits: Vec<BTreeMap<String, f64>> =
                ks.iter().map(|k| k.split(w, *p, m, false)).collect();
            if splits.iter().all(BTreeMap::is_empty) {
                continue;
            }
            table_of_split(
                &mut t,
                &format!("{w}, {}", mib(*p)),
                &labels,
                &splits,
                usize::MAX,
            );
        }
    }
    if ks.len() == 2 {
        for m in [Metric::ScannedPage, Metric::MergedPage] {
            let _ = writeln!(
                t,
                "\nBy function, {}: the {top} largest differences, {} against {}, most where {} executes more first (each workload at its largest size; a function one kernel inlines shows as 0 there, its instructions in its caller):",
                m.name(),
                labels[1],
                labels[0],
                labels[1]
            );
            for (w, p) in &largest {
                let splits: Vec<BTreeMap<String, f64>> =
                    ks.iter().map(|k| k.split(w, *p, m, true)).collect();
                if splits.iter().all(BTreeMap::is_empty) {
                    continue;
                }
                table_of_split(&mut t, &format!("{w}, {}", mib(*p)), &labels, &splits, top);
            }
        }
    }

    let _ = writeln!(
        t,
        "\nInterrupts taken while ksmd ran, share of all its instructions in the steady scans:"
    );
    for (w, p) in &cs {
        let _ = write!(t, "{:<12} {:>9}", w, mib(*p));
        for k in ks {
            let share = k
                .irq_share(w, *p)
                .map_or("-".into(), |s| format!("{:.3}%", s * 100.0));
            let _ = write!(t, "  {}: {share:>8}", k.label);
        }
        let _ = writeln!(t);
    }

    let _ = writeln!(
        t,
        "\nTCG wall clock (host-dependent: for information only), median (min-max) over runs:"
    );
    let _ = writeln!(
        t,
        "{:<12} {:>9} {:<8} {:>28} {:>28}",
        "workload", "size", "kernel", "merge phase, ms", "full scan, ms"
    );
    for (w, p) in &cs {
        for k in ks {
            let ss = k.samples(w, *p);
            let merge: Vec<f64> = ss
                .iter()
                .filter_map(|s| s.merge.as_ref().map(|m| m.wall_ms))
                .collect();
            let scan: Vec<f64> = ss
                .iter()
                .filter_map(|s| s.steady.as_ref().map(|m| m.wall_ms / m.scans as f64))
                .collect();
            let show = |v: &[f64]| Summary::of(v).map_or("-".into(), |s| s.show(0));
            let _ = writeln!(
                t,
                "{:<12} {:>9} {:<8} {:>28} {:>28}",
                w,
                mib(*p),
                k.label,
                show(&merge),
                show(&scan)
            );
        }
    }

    let incomplete: Vec<(&str, &Sample)> = ks
        .iter()
        .flat_map(|k| {
            k.joined
                .iter()
                .flat_map(|j| &j.samples)
                .filter(|s| !s.merge_complete)
                .map(move |s| (k.label, s))
        })
        .collect();
    let _ = writeln!(t, "\nMerging that did not complete: {}", incomplete.len());
    for (label, s) in incomplete {
        let last = s.scans.last().map(|x| x.counters).unwrap_or_default();
        let _ = writeln!(
            t,
            "  {label} {} {}, {} rep {}: {} of {} pages merged after {} full scans (pages_shared {}, pages_sharing {}, pages_unshared {}, stable_node_chains {}, stable_node_dups {})",
            s.boot,
            s.workload,
            mib(s.pages),
            s.rep,
            last.merging,
            s.expected_merging,
            s.scans.len(),
            last.pages_shared,
            last.pages_sharing,
            last.pages_unshared,
            last.stable_node_chains,
            last.stable_node_dups
        );
    }
    t
}

/// Rows of keys with each kernel's figure; with two kernels, the `top`
/// largest differences either way, sorted by the second's excess; else
/// sorted by the figure.
fn table_of_split(
    t: &mut String,
    title: &str,
    labels: &[&str],
    splits: &[BTreeMap<String, f64>],
    top: usize,
) {
    let mut keys: Vec<&String> = splits.iter().flat_map(|s| s.keys()).collect();
    keys.sort();
    keys.dedup();
    let get = |i: usize, k: &str| splits.get(i).and_then(|s| s.get(k)).copied().unwrap_or(0.0);
    let diff = |k: &str| get(1, k) - get(0, k);
    if splits.len() == 2 {
        if top != usize::MAX {
            // The largest differences, at a tenth of an instruction or more.
            keys.retain(|k| diff(k).abs() >= 0.05);
            keys.sort_by(|a, b| diff(b).abs().total_cmp(&diff(a).abs()));
            keys.truncate(top);
        }
        keys.sort_by(|a, b| diff(b).total_cmp(&diff(a)));
    } else {
        keys.sort_by(|a, b| get(0, b).total_cmp(&get(0, a)));
        keys.truncate(top);
    }
    let _ = write!(t, "  {title}\n    {:<56}", "");
    for l in labels {
        let _ = write!(t, " {l:>12}");
    }
    let _ = writeln!(
        t,
        "{}",
        if splits.len() == 2 {
            "   difference"
        } else {
            ""
        }
    );
    let mut totals = vec![0.0; splits.len()];
    for k in &keys {
        let name = shorten(k, 56);
        let _ = write!(t, "    {name:<56}");
        for (i, total) in totals.iter_mut().enumerate() {
            let _ = write!(t, " {:>12.1}", get(i, k));
            *total += get(i, k);
        }
        if splits.len() == 2 {
            let _ = write!(t, " {:>+12.1}", get(1, k) - get(0, k));
        }
        let _ = writeln!(t);
    }
    if top == usize::MAX {
        let _ = write!(t, "    {:<56}", "total");
        for total in &totals {
            let _ = write!(t, " {total:>12.1}");
        }
        if splits.len() == 2 {
            let _ = write!(t, " {:>+12.1}", totals[1] - totals[0]);
        }
        let _ = writeln!(t);
    }
}

/// At most `n` characters: a long (Rust) name keeps its end, where the
/// function's own name is.
fn shorten(name: &str, n: usize) -> String {
    let len = name.chars().count();
    if len <= n {
        name.to_string()
    } else {
        let tail: String = name.chars().skip(len - (n - 1)).collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::Phase;
    use crate::symbols::Info;

    fn phase(own: u64, pages: u64, scans: u64, functions: &[(&str, u64)]) -> Phase {
        Phase {
            scans,
            insns: Count {
                own,
                irq: own / 100,
            },
            pages_scanned: pages,
            pages_merged: pages,
            wall_ms: 10.0,
            ksmd_cpu_ms: 10.0,
            functions: functions
                .iter()
                .map(|(n, c)| (n.to_string(), Count { own: *c, irq: 0 }))
                .collect(),
        }
    }

    fn joined(label: &str, own: u64) -> Joined {
        let steady = phase(own, 100, 2, &[("memcmp", own / 2), ("scan", own / 2)]);
        Joined {
            label: label.into(),
            kernel: "7.3.4".into(),
            version: "#1".into(),
            qemu: "tcg".into(),
            functions: [
                ("memcmp", "memcmp & co. (lib/string.o)"),
                ("scan", "KSM, C (mm/ksm.o)"),
            ]
            .iter()
            .map(|(n, c)| {
                (
                    n.to_string(),
                    Info {
                        name: n.to_string(),
                        object: "x.o".into(),
                        category: c.to_string(),
                    },
                )
            })
            .collect(),
            samples: vec![Sample {
                workload: "unique".into(),
                pages: 100,
                rep: 1,
                boot: format!("{label}-1"),
                expected_merging: 0,
                merge: None,
                merge_complete: true,
                steady: Some(steady),
                scans: Vec::new(),
            }],
        }
    }

    #[test]
    fn per_page_and_per_scan_come_from_the_steady_phase() {
        let all = [joined("stock", 1000), joined("patched", 1200)];
        let ks = kernels(&all).unwrap();
        let r = rows(&ks);
        let page = r.iter().find(|r| r.metric == "per scanned page").unwrap();
        assert_eq!(page.kernels[0].1.median, 10.0);
        assert_eq!(page.ratio, Some(1.2));
        let scan = r.iter().find(|r| r.metric == "per full scan").unwrap();
        assert_eq!(scan.kernels[1].1.median, 600.0);
        // No merge phase, no per-merged-page row.
        assert!(r.iter().all(|r| r.metric != "per merged page"));
    }

    #[test]
    fn the_report_splits_by_category_and_names_the_excess() {
        let all = [joined("stock", 1000), joined("patched", 1200)];
        let ks = kernels(&all).unwrap();
        let t = report(&ks, 5);
        assert!(t.contains("memcmp & co. (lib/string.o)"), "{t}");
        assert!(t.contains("+1.0"), "{t}");
        assert!(t.contains("Merging that did not complete: 0"), "{t}");
    }

    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("a::b::function", 9), "…function");
    }

    #[test]
    fn three_kernels_are_refused() {
        let all = [joined("a", 1), joined("b", 1), joined("c", 1)];
        assert!(kernels(&all).unwrap_err().contains("two at a time"));
    }

    #[test]
    fn spread_is_the_range_over_the_median() {
        let s = Summary::of(&[99.0, 100.0, 101.0]).unwrap();
        assert!((spread(&s) - 0.02).abs() < 1e-12);
    }
}
