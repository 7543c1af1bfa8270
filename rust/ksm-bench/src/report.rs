//! A run's JSON report, its table, and the table comparing two reports.

use serde::{Deserialize, Serialize};

use crate::stats::{Summary, ranges_apart};
use crate::workload::Sample;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// A name for the kernel in tables (e.g. "stock", "patched").
    pub label: String,
    /// uname -r.
    pub kernel: String,
    /// uname -v: the build (stock and patched builds share a release).
    pub version: String,
    pub cpu_clock: String,
    pub mib: usize,
    pub pages_to_scan: u64,
    pub scans: u64,
    pub runs: usize,
    pub samples: Vec<Sample>,
}

/// A figure computed from each sample.
struct Metric {
    name: &'static str,
    decimals: usize,
    /// A speed, not a time or a cost.
    higher_is_better: bool,
    /// None: not measured for that workload.
    value: fn(&Report, &Sample) -> Option<f64>,
}

impl Metric {
    /// The best of the samples: the fastest.
    fn best(&self, s: &Summary) -> f64 {
        if self.higher_is_better { s.max } else { s.min }
    }
}

const fn cost(
    name: &'static str,
    decimals: usize,
    value: fn(&Report, &Sample) -> Option<f64>,
) -> Metric {
    Metric {
        name,
        decimals,
        higher_is_better: false,
        value,
    }
}

/// The metrics of a table, in its order.
const METRICS: [Metric; 5] = [
    cost("merge time (ms)", 0, |_, s| s.merge_ms),
    Metric {
        name: "merge speed (MiB/s)",
        decimals: 1,
        higher_is_better: true,
        value: |r, s| s.merge_ms.map(|ms| r.mib as f64 * 1000.0 / ms),
    },
    cost("ksmd CPU to merge (ms)", 0, |_, s| s.merge_ksmd_cpu_ms),
    cost("full scan, wall time (ms)", 1, |_, s| Some(s.scan_ms)),
    cost("ksmd CPU per full scan (ms)", 1, |_, s| {
        Some(s.scan_ksmd_cpu_ms)
    }),
];

impl Report {
    /// The workloads in the order they ran.
    fn workloads(&self) -> Vec<&str> {
        let mut w: Vec<&str> = Vec::new();
        for s in &self.samples {
            if !w.contains(&s.workload.as_str()) {
                w.push(&s.workload);
            }
        }
        w
    }

    fn summary(&self, workload: &str, metric: &Metric) -> Option<Summary> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.workload == workload)
            .filter_map(|s| (metric.value)(self, s))
            .collect();
        Summary::of(&values)
    }

    /// The run's table: median (min-max) of every metric.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} ({}): {} MiB, pages_to_scan {}, sleep_millisecs 0, smart_scan 0; {} run(s), ksmd CPU from {}\n",
            self.label, self.kernel, self.mib, self.pages_to_scan, self.runs, self.cpu_clock
        );
        out += &format!("{:<12} {:<28} median (min-max)\n", "workload", "metric");
        for w in self.workloads() {
            for m in &METRICS {
                if let Some(s) = self.summary(w, m) {
                    out += &format!("{:<12} {:<28} {}\n", w, m.name, s.show(m.decimals));
                }
            }
        }
        out
    }
}

/// The samples of several runs of one kernel (several boots) as one
/// report; refuses runs of different kernels or settings.
pub fn merge(reports: Vec<Report>) -> Result<Report, String> {
    let mut it = reports.into_iter();
    let mut merged = it.next().ok_or("no report to merge")?;
    for r in it {
        let key = |r: &Report| {
            (
                r.label.clone(),
                r.kernel.clone(),
                r.version.clone(),
                r.cpu_clock.clone(),
                r.mib,
                r.pages_to_scan,
                r.scans,
            )
        };
        if key(&r) != key(&merged) {
            return Err(format!(
                "cannot merge runs of different kernels or settings: {:?} and {:?}",
                key(&merged),
                key(&r)
            ));
        }
        merged.runs += r.runs;
        merged.samples.extend(r.samples);
    }
    Ok(merged)
}

/// One line of a comparison.
#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: &'static str,
    pub a: Summary,
    pub b: Summary,
    /// b's median over a's.
    pub ratio: f64,
    /// b's best sample over a's (the shortest time, the highest speed).
    /// Under TCG the samples of one kernel spread up to twofold and the
    /// median moves with where they fell; the best moves much less.
    pub best_ratio: f64,
    #[serde(skip)]
    pub decimals: usize,
    /// The samples' ranges do not overlap.
    pub apart: bool,
}

/// `a` and `b` side by side, metric by metric; refuses reports measured
/// differently, which would compare nothing.
pub fn compare(a: &Report, b: &Report) -> Result<Vec<Row>, String> {
    if a.cpu_clock != b.cpu_clock {
        return Err(format!(
            "{} measured ksmd's CPU from {}, {} from {}: not comparable",
            a.label, a.cpu_clock, b.label, b.cpu_clock
        ));
    }
    if a.workloads() != b.workloads() {
        return Err(format!(
            "{} ran {:?}, {} ran {:?}: not the same workloads",
            a.label,
            a.workloads(),
            b.label,
            b.workloads()
        ));
    }
    if (a.mib, a.pages_to_scan, a.scans) != (b.mib, b.pages_to_scan, b.scans) {
        return Err(format!(
            "{} and {} ran with different settings (MiB, pages_to_scan, scans): {:?} and {:?}",
            a.label,
            b.label,
            (a.mib, a.pages_to_scan, a.scans),
            (b.mib, b.pages_to_scan, b.scans)
        ));
    }
    let mut rows = Vec::new();
    for w in a.workloads() {
        for m in &METRICS {
            if let (Some(sa), Some(sb)) = (a.summary(w, m), b.summary(w, m)) {
                rows.push(Row {
                    workload: w.to_string(),
                    metric: m.name,
                    a: sa,
                    b: sb,
                    ratio: sb.median / sa.median,
                    best_ratio: m.best(&sb) / m.best(&sa),
                    decimals: m.decimals,
                    apart: ranges_apart(&sa, &sb),
                });
            }
        }
    }
    if rows.is_empty() {
        return Err(format!("{} and {} have no samples", a.label, b.label));
    }
    Ok(rows)
}

pub fn comparison_table(a: &Report, b: &Report, rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<28} {:<24} {:<24} {}/{}: median, best\n",
        "workload", "metric", a.label, b.label, b.label, a.label
    );
    for r in rows {
        out += &format!(
            "{:<12} {:<28} {:<24} {:<24} {:.2}, {:.2}{}\n",
            r.workload,
            r.metric,
            r.a.show(r.decimals),
            r.b.show(r.decimals),
            r.ratio,
            r.best_ratio,
            if r.apart { "  (ranges apart)" } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(workload: &str, merge_ms: Option<f64>, scan_cpu: f64) -> Sample {
        Sample {
            workload: workload.into(),
            merge_ms,
            merge_ksmd_cpu_ms: merge_ms,
            scan_ms: scan_cpu,
            scan_ksmd_cpu_ms: scan_cpu,
        }
    }

    fn report(label: &str, samples: Vec<Sample>) -> Report {
        Report {
            label: label.into(),
            kernel: "7.3.4".into(),
            version: "#1 SMP PREEMPT".into(),
            cpu_clock: "schedstat".into(),
            mib: 32,
            pages_to_scan: 1000,
            scans: 5,
            runs: 2,
            samples,
        }
    }

    #[test]
    fn speed_is_the_size_over_the_merge_time() {
        let r = report("k", vec![sample("identical", Some(500.0), 1.0)]);
        assert!(
            r.table()
                .contains("merge speed (MiB/s)          64.0 (64.0-64.0)")
        );
    }

    #[test]
    fn a_workload_without_merging_has_only_scan_metrics() {
        let r = report("k", vec![sample("unique", None, 2.0)]);
        let t = r.table();
        assert!(!t.contains("merge"), "{t}");
        assert!(t.contains("ksmd CPU per full scan (ms)"), "{t}");
    }

    #[test]
    fn comparison_gives_ratios_and_marks_ranges_apart() {
        let a = report(
            "stock",
            [2.0, 2.5, 3.0].map(|v| sample("unique", None, v)).to_vec(),
        );
        let b = report(
            "patched",
            [5.0, 5.0, 6.0].map(|v| sample("unique", None, v)).to_vec(),
        );
        let rows = compare(&a, &b).unwrap();
        let cpu = rows
            .iter()
            .find(|r| r.metric == "ksmd CPU per full scan (ms)")
            .unwrap();
        assert_eq!((cpu.ratio, cpu.best_ratio), (2.0, 2.5));
        assert!(cpu.apart);
    }

    #[test]
    fn the_best_speed_is_the_highest() {
        let a = report(
            "stock",
            [500.0, 1000.0]
                .map(|ms| sample("identical", Some(ms), 1.0))
                .to_vec(),
        );
        let b = report(
            "patched",
            [250.0, 1000.0]
                .map(|ms| sample("identical", Some(ms), 1.0))
                .to_vec(),
        );
        let rows = compare(&a, &b).unwrap();
        let speed = rows
            .iter()
            .find(|r| r.metric == "merge speed (MiB/s)")
            .unwrap();
        // 256 MiB/s against 128 MiB/s at best.
        assert_eq!(speed.best_ratio, 2.0);
        let time = rows.iter().find(|r| r.metric == "merge time (ms)").unwrap();
        assert_eq!(time.best_ratio, 0.5);
    }

    #[test]
    fn merging_boots_of_one_kernel_adds_their_samples() {
        let a = report("stock", vec![sample("unique", None, 2.0)]);
        let b = report("stock", vec![sample("unique", None, 4.0)]);
        let m = merge(vec![a, b]).unwrap();
        assert_eq!((m.runs, m.samples.len()), (4, 2));
    }

    #[test]
    fn runs_of_different_kernels_do_not_merge() {
        let a = report("stock", vec![sample("unique", None, 2.0)]);
        let b = report("patched", vec![sample("unique", None, 4.0)]);
        assert!(merge(vec![a, b]).unwrap_err().contains("different kernels"));
    }

    #[test]
    fn reports_of_other_workloads_or_clocks_are_not_compared() {
        let a = report("stock", vec![sample("unique", None, 2.0)]);
        let b = report("patched", vec![sample("identical", None, 2.0)]);
        assert!(
            compare(&a, &b)
                .unwrap_err()
                .contains("not the same workloads")
        );
        let mut c = report("patched", vec![sample("unique", None, 2.0)]);
        c.cpu_clock = "stat utime+stime".into();
        assert!(compare(&a, &c).unwrap_err().contains("not comparable"));
    }

    #[test]
    fn reports_measured_differently_are_not_compared() {
        let a = report("stock", vec![sample("unique", None, 2.0)]);
        let mut b = report("patched", vec![sample("unique", None, 2.0)]);
        b.mib = 64;
        assert!(compare(&a, &b).unwrap_err().contains("different settings"));
    }
}
