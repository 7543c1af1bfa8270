//! ksm-conform: run the KSM conformance checks against the running kernel,
//! print kselftest TAP, optionally write a JSON report.
//!
//! Exit status: 0 all ran checks passed (skips allowed), 1 a check failed,
//! 2 the run could not be done (not root, no KSM, unknown name, nothing
//! selected, no directory for --json, a knob that could not be restored),
//! with one line "ksm-conform: error: ..." on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use ksm::guard::{default_state_dir, kernel_managed};
use ksm::{Knob, Session, Sysfs};
use ksm_conform::env::{Env, Options};
use ksm_conform::exec::execute;
use ksm_conform::registry;
use ksm_conform::report::{Report, Tap};

#[derive(Parser)]
#[command(
    version,
    about = "Check the running kernel against the documented KSM contract"
)]
struct Args {
    /// Run only this group (repeatable): madvise, sysfs, run, merging, numa, swap, pressure, process, procfs, scan.
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
    /// Run only this check (repeatable), e.g. madvise/einval_for_bad_arguments.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Write a JSON report here (atomically).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
    /// The kernel was built without KSM: run only the checks for that.
    #[arg(long)]
    without_ksm: bool,
    /// The kernel was booted for this run: also check boot-time defaults.
    #[arg(long)]
    fresh_boot: bool,
}

fn die(msg: &str) -> ExitCode {
    eprintln!("ksm-conform: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    ksm_conform::helper::dispatch();
    let args = Args::parse();
    let all = registry::all();
    let checks = match registry::select(&all, &args.groups, &args.tests, args.without_ksm) {
        Ok(c) => c,
        Err(e) => return die(&e),
    };
    if args.list {
        for c in &checks {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    // Known before the run, not after it.
    if let Some(path) = &args.json {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return die(&format!(
                "--json {}: no directory {}",
                path.display(),
                dir.display()
            ));
        }
    }
    let env = Env::probe(Options {
        fresh_boot: args.fresh_boot,
    });
    if !env.root {
        return die("must run as root (it changes /sys/kernel/mm/ksm)");
    }
    if args.without_ksm && env.ksm {
        return die("--without-ksm given but this kernel has KSM (/sys/kernel/mm/ksm exists)");
    }
    if !args.without_ksm && !env.ksm {
        return die(
            "this kernel has no KSM (/sys/kernel/mm/ksm absent); use --without-ksm for a CONFIG_KSM=n kernel",
        );
    }
    let sysfs = Sysfs::system();
    let session = match Session::open(sysfs.clone(), default_state_dir()) {
        Ok(s) => s,
        Err(e) => return die(&format!("cannot repair or lock the KSM knobs: {e}")),
    };
    if let Err(e) = ksm::signals::restore_on_termination(sysfs.clone(), session.journal_path()) {
        return die(&format!("cannot install signal handlers: {e}"));
    }
    let before = sysfs.snapshot();

    let start = Instant::now();
    let mut tap = Tap::start(std::io::stdout().lock(), checks.len());
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
    tap.diag(&format!("ran in {:.1} s", start.elapsed().as_secs_f64()));
    tap.totals(&report.totals);
    drop(tap);

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
