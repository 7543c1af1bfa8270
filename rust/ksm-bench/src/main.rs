//! ksm-bench: how fast ksmd merges and what it costs in CPU, on the running
//! kernel; and two kernels' results side by side.
//!
//!   ksm-bench run [--label L] [--runs N] [--mib M] [--json PATH]
//!   ksm-bench merge A1.json A2.json... --json A.json
//!   ksm-bench compare A.json B.json [--json PATH]
//!
//! and the exact cost, in instructions counted by the ksmcount QEMU plugin
//! (benchmarks/plugin/ksmcount.c; docs/benchmarks.md):
//!
//!   ksm-bench count --log LOG [--mib M]... [--reps N]        in the guest
//!   ksm-bench join --plugin OUT --log LOG --build DIR --json J   on the host
//!   ksm-bench counts A-1.json... B-1.json... [--json PATH] [--svg PATH]
//!   ksm-bench sync CRITERION_HOME    the criterion baselines of the boots
//!
//! Exit status: 0 done; 2 it could not be (not root, no KSM, a knob that
//! could not be set or restored, a phase that timed out, bad reports), with
//! one line "ksm-bench: error: ..." on stderr.

mod count;
mod counts;
mod criterion_table;
mod guestlog;
mod join;
mod ksmd;
mod marker;
mod plot;
mod plugin;
mod report;
mod stats;
mod symbols;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ksm::guard::default_state_dir;
use ksm::{Session, Sysfs};

use crate::count::{Marks, Plan, Spec};
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
        /// Only this workload (repeatable): groups-of-4, identical, unique, prefix.
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
    /// Step ksmd one full scan at a time, marking each for the ksmcount
    /// QEMU plugin (in a guest booted with it; root; changes KSM's knobs
    /// and puts them back).
    Count {
        /// The kernel's name in tables.
        #[arg(long, default_value = "this kernel")]
        label: String,
        /// Only this workload (repeatable): groups-of-4, identical, unique,
        /// prefix, volatile.
        #[arg(long = "workload", value_name = "W")]
        workloads: Vec<String>,
        /// Memory per sample, in MiB (repeatable: every size is sampled).
        #[arg(long = "mib", value_name = "M", default_values_t = [64u64],
              value_parser = clap::value_parser!(u64).range(1..=4096))]
        sizes: Vec<u64>,
        /// Samples of each workload and size.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        reps: u64,
        /// Full scans measured once merging is done.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
        steady_scans: u64,
        /// Full scans after which merging that has not completed is
        /// recorded as incomplete.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=1000))]
        max_merge_scans: u64,
        /// Append the marks here (JSON lines; the host joins them with the
        /// plugin's counts).
        #[arg(long, value_name = "PATH")]
        log: PathBuf,
    },
    /// Join the ksmcount plugin's output and `count`'s log of one boot into
    /// the cost of each sample, per function (host side).
    Join {
        /// The plugin's output (its out= file).
        #[arg(long, value_name = "PATH")]
        plugin: PathBuf,
        /// The log `ksm-bench count --log` wrote in the guest.
        #[arg(long, value_name = "PATH")]
        log: PathBuf,
        /// The kernel's build directory (vmlinux.a, System.map): which
        /// object each function comes from.
        #[arg(long, value_name = "DIR")]
        build: PathBuf,
        /// The System.map the plugin was given (default: the build's).
        #[arg(long, value_name = "PATH")]
        map: Option<PathBuf>,
        /// A name for this boot (e.g. stock-1).
        #[arg(long, default_value = "boot")]
        boot: String,
        /// How QEMU ran, for the report (e.g. "tcg").
        #[arg(long, default_value = "tcg")]
        qemu: String,
        /// Write the joined counts here (atomically).
        #[arg(long, value_name = "PATH")]
        json: PathBuf,
    },
    /// The joined counts of one kernel, or two side by side: instructions
    /// per scanned page, per merged page and per full scan, their spread,
    /// and where they go.
    Counts {
        /// Outputs of `join` (several boots of a kernel are read together;
        /// the first kernel named is the baseline).
        #[arg(required = true, num_args = 1..)]
        joined: Vec<PathBuf>,
        /// Functions listed where the second kernel executes more.
        #[arg(long, default_value_t = 12)]
        top: usize,
        /// Write the main table here (atomically).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Plot instructions per scanned page against the pages here (SVG).
        #[arg(long, value_name = "PATH")]
        svg: Option<PathBuf>,
    },
    /// The criterion baselines of benches/sync_paths.rs that boots saved
    /// (named after them) in one CRITERION_HOME, side by side by kernel.
    Sync {
        /// The CRITERION_HOME the boots shared.
        dir: PathBuf,
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
        } => select(&workloads, &Workload::TIMED).and_then(|w| {
            run(
                label,
                &w,
                runs as usize,
                mib as usize,
                scans,
                json.as_deref(),
            )
        }),
        Command::Count {
            label,
            workloads,
            sizes,
            reps,
            steady_scans,
            max_merge_scans,
            log,
        } => select(&workloads, &Workload::ALL).and_then(|workloads| {
            count(
                label,
                &Plan {
                    workloads,
                    sizes_mib: sizes,
                    reps,
                    steady_scans,
                    max_merge_scans,
                },
                &log,
            )
        }),
        Command::Join {
            plugin,
            log,
            build,
            map,
            boot,
            qemu,
            json,
        } => join_files(&plugin, &log, &build, map.as_deref(), &boot, &qemu, &json),
        Command::Counts {
            joined,
            top,
            json,
            svg,
        } => counts_files(&joined, top, json.as_deref(), svg.as_deref()),
        Command::Sync { dir } => {
            criterion_table::read(&dir).map(|m| print!("{}", criterion_table::table(&m)))
        }
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

/// The workloads named, among `known`; all of them if none is.
fn select(names: &[String], known: &[Workload]) -> Result<Vec<Workload>, String> {
    if names.is_empty() {
        return Ok(known.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Workload::from_name(n)
                .filter(|w| known.contains(w))
                .ok_or_else(|| {
                    let names: Vec<&str> = known.iter().map(|w| w.name()).collect();
                    format!("no workload {n:?} here; there are {}", names.join(", "))
                })
        })
        .collect()
}

/// What every run on a kernel needs: root, KSM, ksmd, the memory for
/// `mib`, and the knobs' session.
fn open_session(mib: u64) -> Result<(Session, Ksmd), String> {
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
    if mib * 2 > available_mib {
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
    Ok((session, ksmd))
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.version().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn count(label: String, plan: &Plan, log: &Path) -> Result<(), String> {
    if !marker::SUPPORTED {
        return Err("the ksmcount plugin's marks are x86-64 instructions".into());
    }
    let writer = guestlog::Writer::append(log)?;
    let biggest = plan.sizes_mib.iter().copied().max().unwrap_or(0);
    let (session, ksmd) = open_session(biggest)?;
    let settings = Settings {
        mib: biggest as usize,
        pages_to_scan: 1000,
        scans: plan.steady_scans,
    };
    let total = plan.reps * (plan.sizes_mib.len() * plan.workloads.len()) as u64;
    let mut guard = session.guard();
    drive_hard(&mut guard, &settings).map_err(|e| e.to_string())?;
    let mut marks = Marks::start(
        writer,
        guestlog::Line::Session {
            label,
            kernel: ksm::kernel::uname().0,
            version: kernel_version(),
        },
    )?;
    let mut id = 0;
    for rep in 1..=plan.reps {
        for &mib in &plan.sizes_mib {
            for &workload in &plan.workloads {
                id += 1;
                let pages = (mib as usize) * 1024 * 1024 / ksm::mem::page_size();
                let spec = Spec {
                    id,
                    workload,
                    pages,
                    rep,
                };
                let t = std::time::Instant::now();
                let line =
                    count::sample(&mut guard, &ksmd, &mut marks, spec, plan).map_err(|e| {
                        format!("{} pages of {}, rep {rep}: {e}", pages, workload.name())
                    })?;
                if let guestlog::Line::Sample {
                    merge_scans,
                    steady_to,
                    ..
                } = line
                {
                    println!(
                        "ksm-bench: [{id}/{total}] {:<11} {mib:>5} MiB rep {rep}: {steady_to} full scans, merged after {}, {:.0} s",
                        workload.name(),
                        merge_scans.map_or("-".into(), |m| format!("{m}")),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    guard
        .restore()
        .map_err(|e| format!("cannot restore the KSM knobs: {e}"))?;
    Ok(())
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
    let (session, ksmd) = open_session(mib as u64)?;

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
        version: kernel_version(),
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

fn join_files(
    plugin_out: &Path,
    log: &Path,
    build: &Path,
    map: Option<&Path>,
    boot: &str,
    qemu: &str,
    json: &Path,
) -> Result<(), String> {
    check_output(json)?;
    let out = plugin::read(plugin_out)?;
    let lines = guestlog::read(log)?;
    let map_path = map.map_or_else(|| build.join("System.map"), Path::to_path_buf);
    let map_text = std::fs::read_to_string(&map_path)
        .map_err(|e| format!("cannot read {}: {e}", map_path.display()))?;
    let names = symbols::Objects::read(build)?.describe(&join::symbols(&out), &map_text);
    let joined = join::join(&lines, &out, &names, boot, qemu)?;
    write_json(json, &joined)
}

fn counts_files(
    paths: &[PathBuf],
    top: usize,
    json: Option<&Path>,
    svg: Option<&Path>,
) -> Result<(), String> {
    for path in json.iter().chain(svg.iter()) {
        check_output(path)?;
    }
    let all = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            serde_json::from_str::<join::Joined>(&text)
                .map_err(|e| format!("{} is not an output of ksm-bench join: {e}", p.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ks = counts::kernels(&all)?;
    print!("{}", counts::report(&ks, top));
    if let Some(path) = svg {
        let labels: Vec<&str> = ks.iter().map(|k| k.label).collect();
        let title = format!(
            "ksmd's instructions per scanned page: {}",
            labels.join(" (dashed) against ")
        );
        ksm::atomic::write_atomically(path, counts_svg(&ks, &title)?.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    match json {
        Some(path) => write_json(path, &counts::rows(&ks)),
        None => Ok(()),
    }
}

fn counts_svg(ks: &[counts::Kernel<'_>], title: &str) -> Result<String, String> {
    plot::svg(ks, title)
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
        assert_eq!(select(&[], &Workload::ALL).unwrap(), Workload::ALL.to_vec());
    }

    #[test]
    fn workloads_are_picked_by_name_in_the_order_given() {
        let names = ["unique".to_string(), "identical".to_string()];
        assert_eq!(
            select(&names, &Workload::ALL).unwrap(),
            [Workload::Unique, Workload::Identical]
        );
    }

    #[test]
    fn an_unknown_workload_names_the_known_ones() {
        let e = select(&["nope".to_string()], &Workload::TIMED).unwrap_err();
        assert!(e.contains("groups-of-4, identical, unique, prefix"), "{e}");
        // Volatile pages need ksmd stepped: only `count` has them.
        let e = select(&["volatile".to_string()], &Workload::TIMED).unwrap_err();
        assert!(
            e.ends_with("there are groups-of-4, identical, unique, prefix"),
            "{e}"
        );
    }
}
