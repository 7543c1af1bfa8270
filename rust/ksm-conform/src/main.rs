//! ksm-conform: run the KSM conformance checks against the running kernel,
//! print kselftest TAP, optionally write a JSON report; or record a trace of
//! KSM's counters under a deterministic workload (`trace`), or compare
//! traces (`trace-diff`).
//!
//! Exit status, as kselftest's: 0 all ran checks passed (skips allowed), 1
//! a check failed, 4 the run was skipped as a whole (not root, no KSM, or a
//! machine in use that the run would disturb: "1..0 # SKIP reason"). And 2,
//! with one line "ksm-conform: error: ..." on stderr, when the run cannot
//! be done as asked: an unknown name, nothing selected, no directory for
//! --json, --without-ksm on a kernel with KSM, a knob that could not be
//! restored.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ksm::guard::{default_state_dir, journal_path, kernel_managed};
use ksm::{Knob, Session, Sysfs};
use ksm_conform::env::{Env, Options};
use ksm_conform::exec::execute;
use ksm_conform::gate::{self, Usage};
use ksm_conform::registry::{self, Selection};
use ksm_conform::report::{Report, Tap};
use ksm_conform::trace;

#[derive(Parser)]
#[command(
    version,
    about = "Check the running kernel against the documented KSM contract",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Run only this group (repeatable; a pattern): madvise, sysfs, run, merging, numa, swap, pressure, process, procfs, scan.
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
    /// Run only the checks this pattern names (repeatable; `*` and `?` as in
    /// the shell), e.g. madvise/einval_for_bad_arguments or 'merging/*'.
    #[arg(long = "test", value_name = "PATTERN")]
    tests: Vec<String>,
    /// Leave out the checks this pattern names (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Write a JSON report here (atomically).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// List the checks and exit; "needs the machine" marks those that change
    /// /sys/kernel/mm/ksm (they refuse to run while others use KSM).
    #[arg(long)]
    list: bool,
    /// The kernel was built without KSM: run only the checks for that.
    #[arg(long)]
    without_ksm: bool,
    /// The kernel was booted for this run: also check boot-time defaults.
    #[arg(long)]
    fresh_boot: bool,
    /// Run even though other processes use KSM: accept that every KSM page on
    /// this machine gets unmerged (run=2) and the knobs change meanwhile.
    #[arg(long)]
    allow_unmerge: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// Record KSM's counters, global and per process, after every step and
    /// every ksmd batch of deterministic workloads (JSON lines), for
    /// trace-diff to compare between kernels.
    Trace {
        /// The trace file (written to PATH.tmp, renamed when complete).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Run only this workload (repeatable): chains, zero-pages-and-smart-scan, numa.
        #[arg(long = "workload", value_name = "NAME")]
        workloads: Vec<String>,
        /// Draw the workloads' contents from this seed (traces to compare
        /// must use the same).
        #[arg(long, value_name = "N", default_value_t = trace::workload::DEFAULT_SEED)]
        seed: u64,
        /// As for the checks: run although other processes use KSM.
        #[arg(long)]
        allow_unmerge: bool,
    },
    /// Compare traces with the first, record by record: exit 0 if all are
    /// identical, 1 and the first difference of each that is not.
    TraceDiff {
        #[arg(required = true, num_args = 2.., value_name = "TRACE")]
        traces: Vec<PathBuf>,
    },
}

fn die(msg: &str) -> ExitCode {
    eprintln!("ksm-conform: error: {msg}");
    ExitCode::from(2)
}

/// kselftest's KSFT_SKIP, with the reason as TAP and on stderr.
fn skip(reason: &str) -> ExitCode {
    eprintln!("ksm-conform: skip: {reason}");
    Tap::skip_all(std::io::stdout().lock(), reason);
    ExitCode::from(4)
}

fn main() -> ExitCode {
    ksm_conform::helper::dispatch();
    let args = Args::parse();
    match args.command {
        Some(Sub::Trace {
            ref out,
            ref workloads,
            seed,
            allow_unmerge,
        }) => record_trace(out, workloads, seed, allow_unmerge),
        Some(Sub::TraceDiff { ref traces }) => diff_traces(traces),
        None => run_checks(args),
    }
}

/// Why this machine is not the suite's to change, if it is not: another
/// user of KSM, or what an interrupted run left (its repair writes knobs).
fn machine_refusal(sysfs: &Sysfs) -> Option<String> {
    let mut reasons = Usage::probe(sysfs).reasons();
    if reasons.is_empty() {
        return None;
    }
    let journal = journal_path(&default_state_dir());
    if journal.exists() {
        reasons.push(format!(
            "an interrupted run left knobs to put back ({}), which a run with {} does first",
            journal.display(),
            gate::FLAG
        ));
    }
    Some(gate::refusal(&reasons))
}

/// Root and KSM, as a skip reason if missing.
fn runnable(env: &Env, without_ksm: bool) -> Result<(), ExitCode> {
    if !env.root {
        return Err(skip("must run as root (it changes /sys/kernel/mm/ksm)"));
    }
    if without_ksm && env.ksm {
        return Err(die(
            "--without-ksm given but this kernel has KSM (/sys/kernel/mm/ksm exists)",
        ));
    }
    if !without_ksm && !env.ksm {
        return Err(skip(
            "this kernel has no KSM (/sys/kernel/mm/ksm absent); use --without-ksm for a CONFIG_KSM=n kernel",
        ));
    }
    Ok(())
}

fn open_session(sysfs: &Sysfs) -> Result<Session, ExitCode> {
    let session = Session::open(sysfs.clone(), default_state_dir())
        .map_err(|e| die(&format!("cannot repair or lock the KSM knobs: {e}")))?;
    ksm::signals::restore_on_termination(sysfs.clone(), session.journal_path())
        .map_err(|e| die(&format!("cannot install signal handlers: {e}")))?;
    Ok(session)
}

fn run_checks(args: Args) -> ExitCode {
    let all = registry::all();
    let selection = Selection {
        groups: args.groups,
        tests: args.tests,
        exclude: args.exclude,
        without_ksm: args.without_ksm,
    };
    let checks = match registry::select(&all, &selection) {
        Ok(c) => c,
        Err(e) => return die(&e),
    };
    if args.list {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &checks {
            if c.needs_machine() {
                println!("{:width$}  needs the machine", c.name);
            } else {
                println!("{}", c.name);
            }
        }
        return ExitCode::SUCCESS;
    }
    // Known before the run, not after it.
    if let Some(path) = &args.json {
        if let Err(e) = output_dir_exists("--json", path) {
            return die(&e);
        }
    }
    let env = Env::probe(Options {
        fresh_boot: args.fresh_boot,
    });
    if let Err(code) = runnable(&env, args.without_ksm) {
        return code;
    }
    let sysfs = Sysfs::system();
    // Before the session: opening it repairs what an interrupted run left.
    let in_use = if args.without_ksm {
        None
    } else {
        machine_refusal(&sysfs)
    };
    if let Some(reason) = &in_use {
        if !args.allow_unmerge && checks.iter().any(|c| c.needs_machine()) {
            return skip(reason);
        }
    }
    let session = match open_session(&sysfs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let before = sysfs.snapshot();

    let start = Instant::now();
    let mut tap = Tap::start(std::io::stdout().lock(), checks.len());
    if let Some(reason) = &in_use {
        tap.diag(&format!("running anyway ({}): {reason}", gate::FLAG));
    }
    if let Some(msg) = session.recovered().describe() {
        eprintln!("ksm-conform: {msg}");
        tap.diag(&msg);
    }
    tap.diag(&format!(
        "kernel {} {}, {} NUMA node(s), swap free {} KiB",
        env.release,
        env.machine,
        env.memory_nodes.len(),
        env.swap_free_kib
    ));
    let mut report = Report::new(&env, args.without_ksm);
    for check in &checks {
        let outcome = execute(check, &session, &env);
        tap.result(check.name, &outcome);
        report.add(check, &outcome);
        if let Some(e) = &outcome.restore_error {
            report.error = Some(format!("after {}: {e}", check.name));
            break;
        }
    }
    report.duration_ms = start.elapsed().as_millis();
    if report.error.is_none() {
        // In scan-time mode the kernel moves pages_to_scan itself.
        let managed = kernel_managed(before.get(&Knob::AdvisorMode).map(String::as_str));
        let changed: Vec<String> = sysfs
            .snapshot()
            .into_iter()
            .filter(|(k, v)| k.writable() && !managed.contains(k) && before.get(k) != Some(v))
            .map(|(k, v)| format!("{k}={v} (was {:?})", before.get(&k)))
            .collect();
        if !changed.is_empty() {
            report.error = Some(format!("knobs not restored: {}", changed.join(", ")));
        }
    }
    tap.diag(&format!("ran in {:.1} s", start.elapsed().as_secs_f64()));
    tap.totals(&report.totals, report.error.is_some());
    drop(tap);

    if let Some(path) = &args.json {
        if let Err(e) = report.write(path) {
            return die(&format!("cannot write {}: {e}", path.display()));
        }
    }
    if let Some(e) = &report.error {
        return die(e);
    }
    if report.totals.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The directory a file named by `option` will be written in must exist
/// before anything runs, not be found missing after it.
fn output_dir_exists(option: &str, path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{option} {}: no directory {}",
            path.display(),
            dir.display()
        ))
    }
}

fn record_trace(out: &Path, workloads: &[String], seed: u64, allow_unmerge: bool) -> ExitCode {
    if let Err(e) = trace::check_names(workloads) {
        return die(&e);
    }
    if let Err(e) = output_dir_exists("--out", out) {
        return die(&e);
    }
    let env = Env::probe(Options::default());
    if let Err(code) = runnable(&env, false) {
        return code;
    }
    let sysfs = Sysfs::system();
    if let Some(reason) = machine_refusal(&sysfs) {
        if !allow_unmerge {
            return skip(&reason);
        }
        eprintln!("ksm-conform: running anyway ({}): {reason}", gate::FLAG);
    }
    let session = match open_session(&sysfs) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let start = Instant::now();
    let opts = trace::Options {
        out: out.to_path_buf(),
        workloads: workloads.to_vec(),
        seed,
    };
    match trace::run(&session, &env, &opts) {
        Ok(samples) => {
            eprintln!(
                "ksm-conform: trace of {samples} samples in {} ({:.1} s)",
                out.display(),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => die(&format!(
            "trace stopped: {e} (what was recorded is in {}.tmp)",
            out.display()
        )),
    }
}

fn diff_traces(paths: &[PathBuf]) -> ExitCode {
    let mut traces = Vec::new();
    for p in paths {
        match trace::record::Trace::load(p) {
            Ok(t) => traces.push(t),
            Err(e) => return die(&e),
        }
    }
    let base = &traces[0];
    let mut differ = 0;
    for other in &traces[1..] {
        match trace::record::first_difference(base, other) {
            None => println!(
                "{} and {}: identical, {} samples",
                base.name,
                other.name,
                other.samples()
            ),
            Some(report) => {
                differ += 1;
                println!("{} and {} differ at {report}", base.name, other.name);
            }
        }
    }
    let stopped: Vec<&str> = traces
        .iter()
        .filter(|t| !t.complete())
        .map(|t| t.name.as_str())
        .collect();
    if !stopped.is_empty() {
        return die(&format!(
            "no end record in {}: the run that wrote it stopped",
            stopped.join(", ")
        ));
    }
    if differ > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
