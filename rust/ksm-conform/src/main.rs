//! ksm-conform: run the KSM conformance checks against the running kernel,
//! print kselftest TAP, optionally write a JSON report.
//!
//! Exit status: 0 all ran checks passed (skips allowed), 1 a check failed,
//! 2 the run could not be done (not root, no KSM, unknown name, a knob that
//! could not be restored).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use ksm::guard::default_state_dir;
use ksm::{Session, Sysfs};
use ksm_conform::env::{Env, Options};
use ksm_conform::exec::execute;
use ksm_conform::registry::{self, Check};
use ksm_conform::report::{Report, Tap};

#[derive(Parser)]
#[command(
    version,
    about = "Check the running kernel against the documented KSM contract"
)]
struct Args {
    /// Run only this group (repeatable): madvise, sysfs, run, merging, numa, swap, pressure, process, scan.
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
    eprintln!("ksm-conform: {msg}");
    ExitCode::from(2)
}

fn select(args: &Args, all: &[&'static Check]) -> Result<Vec<&'static Check>, String> {
    let groups = registry::groups(all);
    for g in &args.groups {
        if !groups.contains(&g.as_str()) {
            return Err(format!(
                "unknown group {g:?} (groups: {})",
                groups.join(", ")
            ));
        }
    }
    for t in &args.tests {
        if !all.iter().any(|c| c.name == t) {
            return Err(format!("unknown test {t:?} (see --list)"));
        }
    }
    Ok(all
        .iter()
        .copied()
        .filter(|c| c.for_kernel_without_ksm() == args.without_ksm)
        .filter(|c| args.groups.is_empty() || args.groups.iter().any(|g| g == c.group()))
        .filter(|c| args.tests.is_empty() || args.tests.iter().any(|t| t == c.name))
        .collect())
}

fn main() -> ExitCode {
    ksm_conform::helper::dispatch();
    let args = Args::parse();
    let all = registry::all();
    let checks = match select(&args, &all) {
        Ok(c) => c,
        Err(e) => return die(&e),
    };
    if args.list {
        for c in &checks {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
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
    if session.recovered() > 0 {
        let msg = format!(
            "restored {} knobs left by an interrupted run",
            session.recovered()
        );
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
            tap.totals(&report.totals);
            return die(&format!("after {}: {e}", check.name));
        }
    }
    report.duration_ms = start.elapsed().as_millis();
    tap.diag(&format!("ran in {:.1} s", start.elapsed().as_secs_f64()));
    tap.totals(&report.totals);
    drop(tap);

    let changed: Vec<String> = sysfs
        .snapshot()
        .into_iter()
        .filter(|(k, v)| k.writable() && before.get(k) != Some(v))
        .map(|(k, v)| format!("{k}={v} (was {:?})", before.get(&k)))
        .collect();
    if !changed.is_empty() {
        return die(&format!("knobs not restored: {}", changed.join(", ")));
    }
    if let Some(path) = &args.json {
        if let Err(e) = report.write(path) {
            return die(&format!("cannot write {}: {e}", path.display()));
        }
    }
    if report.totals.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
