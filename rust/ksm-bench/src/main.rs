//! ksm-bench: how fast ksmd merges and what it costs in CPU, on the running
//! kernel; and two kernels' results side by side.
//!
//!   ksm-bench run [--label L] [--runs N] [--mib M] [--json PATH]
//!   ksm-bench merge A1.json A2.json... --json A.json
//!   ksm-bench compare A.json B.json [--json PATH]
//!
//! Exit status: 0 done; 2 it could not be (not root, no KSM, a knob that
//! could not be set or restored, a phase that timed out, bad reports), with
//! one line "ksm-bench: error: ..." on stderr.

mod ksmd;
mod report;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ksm::guard::default_state_dir;
use ksm::{Session, Sysfs};

use crate::ksmd::Ksmd;
use crate::report::{Report, compare, comparison_table, merge};
use crate::workload::{Settings, Workload, drive_hard, sample};

#[derive(Parser)]
#[command(
    version,
    about = "Time ksmd's merging and its CPU cost on the running kernel"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time every workload RUNS times on this kernel (root; changes KSM's
    /// knobs and puts them back).
    Run {
        /// The kernel's name in tables.
        #[arg(long, default_value = "this kernel")]
        label: String,
        /// Only this workload (repeatable): groups-of-4, identical, unique.
        #[arg(long = "workload", value_name = "W")]
        workloads: Vec<String>,
        /// Samples of each workload (TCG guests vary by a third from one
        /// to the next: medians need many).
        #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Memory per sample, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        mib: u64,
        /// Full scans timed per sample once merging is done, at least (and
        /// at least 2 s of them).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        scans: u64,
        /// Write the samples here (atomically).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Several reports of `run --json` of one kernel as one (its boots).
    Merge {
        #[arg(required = true, num_args = 1..)]
        reports: Vec<PathBuf>,
        /// Write the merged report here (atomically).
        #[arg(long, value_name = "PATH")]
        json: PathBuf,
    },
    /// Two reports of `run --json` side by side: medians and their ratio.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Write the comparison here (atomically).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

fn die(msg: &str) -> ExitCode {
    eprintln!("ksm-bench: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let result = match Args::parse().command {
        Command::Run {
            label,
            workloads,
            runs,
            mib,
            scans,
            json,
        } => select(&workloads).and_then(|w| {
            run(
                label,
                &w,
                runs as usize,
                mib as usize,
                scans,
                json.as_deref(),
            )
        }),
        Command::Merge { reports, json } => merge_files(&reports, &json),
        Command::Compare { a, b, json } => compare_files(&a, &b, json.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => die(&e),
    }
}

/// Known before the run, not after it: write the temporary file the result
/// will be written through, and remove it.
fn check_output(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("--json {}: is a directory", path.display()));
    }
    let tmp = ksm::atomic::tmp_path(path);
    std::fs::write(&tmp, b"")
        .and_then(|()| std::fs::remove_file(&tmp))
        .map_err(|e| format!("--json {}: cannot write there: {e}", path.display()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    ksm::atomic::write_atomically(path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The workloads named, all if none is.
fn select(names: &[String]) -> Result<Vec<Workload>, String> {
    if names.is_empty() {
        return Ok(Workload::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Workload::ALL
                .into_iter()
                .find(|w| w.name() == n)
                .ok_or_else(|| {
                    let known: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                    format!("no workload {n:?}; there are {}", known.join(", "))
                })
        })
        .collect()
}

fn run(
    label: String,
    workloads: &[Workload],
    runs: usize,
    mib: usize,
    scans: u64,
    json: Option<&Path>,
) -> Result<(), String> {
    if let Some(path) = json {
        check_output(path)?;
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (it changes /sys/kernel/mm/ksm)".into());
    }
    let sysfs = Sysfs::system();
    if !sysfs.present() {
        return Err("this kernel has no KSM (/sys/kernel/mm/ksm absent)".into());
    }
    let ksmd = Ksmd::find().ok_or("no ksmd thread found in /proc")?;
    // The mapping, and room for the rest of the system: a run that the OOM
    // killer ends would leave ksmd driven hard until the next run.
    let available_mib = ksm::kernel::mem_available_kib() / 1024;
    if mib as u64 * 2 > available_mib {
        return Err(format!(
            "--mib {mib}: needs twice that available, and only {available_mib} MiB are (MemAvailable)"
        ));
    }
    let session = Session::open(sysfs.clone(), default_state_dir())
        .map_err(|e| format!("cannot repair or lock the KSM knobs: {e}"))?;
    if let Some(msg) = session.recovered().describe() {
        eprintln!("ksm-bench: {msg}");
    }
    ksm::signals::restore_on_termination(sysfs, session.journal_path())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let settings = Settings {
        mib,
        pages_to_scan: 1000,
        scans,
    };
    let mut samples = Vec::new();
    {
        let mut guard = session.guard();
        drive_hard(&mut guard, &settings).map_err(|e| e.to_string())?;
        // Round-robin, so that a drift of the machine spreads over all.
        for r in 1..=runs {
            for &w in workloads {
                let s = sample(&mut guard, &ksmd, w, &settings)
                    .map_err(|e| format!("{} run {r}: {e}", w.name()))?;
                // On stdout: a guest's stderr goes to its console log.
                println!(
                    "ksm-bench: [{r}/{runs}] {:<12} merge {} ms, ksmd CPU per full scan {:.1} ms",
                    w.name(),
                    s.merge_ms.map_or("-".into(), |v| format!("{v:.0}")),
                    s.scan_ksmd_cpu_ms
                );
                samples.push(s);
            }
        }
        guard
            .restore()
            .map_err(|e| format!("cannot restore the KSM knobs: {e}"))?;
    }
    let report = Report {
        label,
        kernel: ksm::kernel::uname().0,
        version: nix::sys::utsname::uname()
            .map(|u| u.version().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpu_clock: ksmd.clock.name().into(),
        mib,
        pages_to_scan: settings.pages_to_scan,
        scans,
        runs,
        samples,
    };
    print!("{}", report.table());
    match json {
        Some(path) => write_json(path, &report),
        None => Ok(()),
    }
}

fn read_report(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a ksm-bench report: {e}", path.display()))
}

fn merge_files(paths: &[PathBuf], json: &Path) -> Result<(), String> {
    check_output(json)?;
    let reports = paths
        .iter()
        .map(|p| read_report(p))
        .collect::<Result<Vec<_>, _>>()?;
    write_json(json, &merge(reports)?)
}

fn compare_files(a: &Path, b: &Path, json: Option<&Path>) -> Result<(), String> {
    if let Some(path) = json {
        check_output(path)?;
    }
    let (ra, rb) = (read_report(a)?, read_report(b)?);
    let rows = compare(&ra, &rb)?;
    println!(
        "{} ({}) against {} ({}): {} MiB, {} run(s) and {} run(s); ksmd CPU from {} and {}",
        ra.label,
        ra.kernel,
        rb.label,
        rb.kernel,
        ra.mib,
        ra.runs,
        rb.runs,
        ra.cpu_clock,
        rb.cpu_clock
    );
    print!("{}", comparison_table(&ra, &rb, &rows));
    match json {
        Some(path) => write_json(
            path,
            &serde_json::json!({ "a": ra.label, "b": rb.label, "rows": rows }),
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_workload_named_means_all() {
        assert_eq!(select(&[]).unwrap(), Workload::ALL.to_vec());
    }

    #[test]
    fn workloads_are_picked_by_name_in_the_order_given() {
        let names = ["unique".to_string(), "identical".to_string()];
        assert_eq!(
            select(&names).unwrap(),
            [Workload::Unique, Workload::Identical]
        );
    }

    #[test]
    fn an_unknown_workload_names_the_known_ones() {
        let e = select(&["nope".to_string()]).unwrap_err();
        assert!(e.contains("groups-of-4, identical, unique"), "{e}");
    }
}
