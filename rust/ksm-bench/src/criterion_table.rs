//! `ksm-bench sync DIR`: the criterion benchmarks of KSM's synchronous
//! paths (benches/sync_paths.rs) that each boot saved as a baseline named
//! after it (stock-1, patched-1, ...) in one CRITERION_HOME, side by side by
//! kernel: the median time of each boot, and the ratio of the kernels'.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct Benchmark {
    full_id: String,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

/// benchmark -> boot -> median time in ns.
pub type Medians = BTreeMap<String, BTreeMap<String, f64>>;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every baseline under DIR/<group>/<benchmark>/ except criterion's own
/// (new, base, change).
pub fn read(dir: &Path) -> Result<Medians, String> {
    let mut out = Medians::new();
    let entries = |p: &Path| -> Result<Vec<std::path::PathBuf>, String> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        Ok(v)
    };
    for group in entries(dir)? {
        for bench in entries(&group)? {
            for baseline in entries(&bench)? {
                let name = baseline
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if matches!(name.as_str(), "new" | "base" | "change" | "report") {
                    continue;
                }
                let b: Benchmark = read_json(&baseline.join("benchmark.json"))?;
                let e: Estimates = read_json(&baseline.join("estimates.json"))?;
                out.entry(b.full_id)
                    .or_default()
                    .insert(name, e.median.point_estimate);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no criterion baselines under {}", dir.display()));
    }
    Ok(out)
}

/// A boot's kernel: its name without the boot number.
fn kernel(boot: &str) -> &str {
    boot.rsplit_once('-').map_or(boot, |(k, _)| k)
}

fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

pub fn table(m: &Medians) -> String {
    let mut kernels: Vec<&str> = Vec::new();
    for boots in m.values() {
        for b in boots.keys() {
            if !kernels.contains(&kernel(b)) {
                kernels.push(kernel(b));
            }
        }
    }
    // The stock kernel first when there is one.
    kernels.sort_by_key(|k| (*k != "stock", *k));
    let mut t = String::from(
        "KSM's synchronous paths (criterion, TCG wall clock: compare the columns, not with hardware)\nmedian time per iteration in ms, one value per boot\n",
    );
    for (bench, boots) in m {
        let _ = write!(t, "{bench:<44}");
        let mut per_kernel = Vec::new();
        for k in &kernels {
            let v: Vec<f64> = boots
                .iter()
                .filter(|(b, _)| kernel(b) == *k)
                .map(|(_, v)| *v)
                .collect();
            let shown: Vec<String> = v.iter().map(|x| ms(*x)).collect();
            let _ = write!(t, "  {k}: {:<20}", shown.join(" "));
            per_kernel.push(v);
        }
        if let [a, b] = per_kernel.as_slice() {
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            if !a.is_empty() && !b.is_empty() {
                let _ = write!(
                    t,
                    "  {}/{}: {:.2}",
                    kernels[1],
                    kernels[0],
                    mean(b) / mean(a)
                );
            }
        }
        let _ = writeln!(t);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(dir: &Path, bench: &str, boot: &str, median: f64) {
        let d = dir.join("ksm").join(bench).join(boot);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("benchmark.json"),
            format!("{{\"full_id\":\"ksm/{bench}\"}}"),
        )
        .unwrap();
        std::fs::write(
            d.join("estimates.json"),
            format!("{{\"median\":{{\"point_estimate\":{median}}}}}"),
        )
        .unwrap();
    }

    #[test]
    fn boots_are_grouped_by_kernel_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        baseline(dir.path(), "run=2", "stock-1", 2e6);
        baseline(dir.path(), "run=2", "patched-1", 3e6);
        std::fs::create_dir_all(dir.path().join("ksm/run=2/new")).unwrap();
        let m = read(dir.path()).unwrap();
        let t = table(&m);
        assert!(t.contains("stock: 2.000"), "{t}");
        assert!(t.contains("patched/stock: 1.50"), "{t}");
    }

    #[test]
    fn no_baselines_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read(dir.path())
                .unwrap_err()
                .contains("no criterion baselines")
        );
    }
}
