//! ksm-mergeflip: reproduce issue 11, ksmd's crash when merge_across_nodes
//! goes from 0 to 1 and back to 0 in the middle of a scan (the sequence:
//! flip.rs).
//!
//!   ksm-mergeflip --may-crash [--rounds N] [--seconds S] [--mib M] [--seed X]
//!
//! A kernel with the bug crashes, at once or rounds later: run it only in a
//! test guest, with panic_on_oops so that the crash ends the guest
//! (virtme/guest-mergeflip.sh). Surviving the bound is the clean result.
//!
//! Progress on stdout, one line a round. Exit status: 0 the bound ran (all
//! rounds, or the time bound came first); 3 ksmd stalled: it completed no
//! full scan for --stall-seconds (a finding about the kernel, with samples
//! of ksmd's kernel stack on stdout); 1 the run failed (a knob refused,
//! memory not on its node, knobs not restored); 2 bad arguments; 4 it cannot
//! run here (not root, no KSM, no NUMA, fewer than two NUMA nodes with
//! memory). Errors are one line "ksm-mergeflip: ..." on stderr.

mod flip;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ksm::guard::default_state_dir;
use ksm::{Knob, Session, Sysfs};

use crate::flip::{Outcome, Round, Settings};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_STALLED: u8 = 3;
/// As kselftest's KSFT_SKIP.
const EXIT_CANNOT_RUN_HERE: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Switch merge_across_nodes in the middle of ksmd's scans until the kernel crashes or the bound is reached"
)]
struct Args {
    /// Confirm that the running kernel may crash (without the fix it does).
    #[arg(long)]
    may_crash: bool,
    /// Rounds to run at most.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rounds: u64,
    /// Seconds to run at most; no step starts after them.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// MiB of each of the two areas (one per node).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    mib: u64,
    /// Seed of the random pauses before each switch (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// A wait in which ksmd completes no full scan for this many seconds
    /// ends the run: ksmd has stalled.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    stall_seconds: u64,
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("ksm-mergeflip: {msg}");
    ExitCode::from(code)
}

/// Why the sequence cannot run on this machine, if it cannot; decided
/// without touching KSM.
fn cannot_run_here(root: bool, sysfs: &Sysfs, nodes: &[usize]) -> Option<String> {
    if !root {
        Some("must run as root (it changes /sys/kernel/mm/ksm)".into())
    } else if !sysfs.present() {
        Some(format!(
            "this kernel has no KSM ({} absent)",
            sysfs.root().display()
        ))
    } else if !sysfs.has(Knob::MergeAcrossNodes) {
        Some("this kernel has no merge_across_nodes (built without CONFIG_NUMA)".into())
    } else if nodes.len() < 2 || !nodes.contains(&0) || !nodes.contains(&1) {
        Some(format!(
            "needs NUMA nodes 0 and 1 with memory; this machine has {nodes:?}"
        ))
    } else {
        None
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id())
}

fn main() -> ExitCode {
    // clap exits with 2 on bad arguments.
    let args = Args::parse();
    if !args.may_crash {
        return fail(
            EXIT_USAGE,
            "error: this run crashes a kernel that has the bug: pass --may-crash, in a test guest only",
        );
    }
    let sysfs = Sysfs::system();
    let nodes = ksm::kernel::memory_nodes();
    if let Some(why) = cannot_run_here(nix::unistd::geteuid().is_root(), &sysfs, &nodes) {
        return fail(EXIT_CANNOT_RUN_HERE, &format!("cannot run here: {why}"));
    }
    let session = match Session::open(sysfs.clone(), default_state_dir()) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                EXIT_FAILED,
                &format!("error: cannot repair or lock the KSM knobs: {e}"),
            );
        }
    };
    if let Some(msg) = session.recovered().describe() {
        eprintln!("ksm-mergeflip: {msg}");
    }
    if let Err(e) = ksm::signals::restore_on_termination(sysfs, session.journal_path()) {
        return fail(
            EXIT_FAILED,
            &format!("error: cannot install signal handlers: {e}"),
        );
    }

    let seed = args.seed.unwrap_or_else(clock_seed);
    let start = Instant::now();
    let settings = Settings {
        rounds: args.rounds,
        deadline: start + Duration::from_secs(args.seconds),
        pages: flip::pages_of(args.mib),
        stall: Duration::from_secs(args.stall_seconds),
        max_pause: Duration::from_millis(20),
    };
    println!(
        "ksm-mergeflip: kernel {}, NUMA nodes {nodes:?}, {} MiB per area, seed {seed}; up to {} rounds or {} s",
        ksm::kernel::uname().0,
        args.mib,
        args.rounds,
        args.seconds
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let rounds = args.rounds;
    let (outcome, restored) = {
        let mut guard = session.guard();
        let outcome = flip::set_up(&mut guard).and_then(|()| {
            flip::run(&mut guard, &settings, &mut rng, |r: Round| {
                println!(
                    "ksm-mergeflip: round {}/{rounds} survived in {:.1} s (full_scans {})",
                    r.number,
                    r.took.as_secs_f64(),
                    r.full_scans
                );
            })
        });
        (outcome, guard.restore())
    };
    let took = start.elapsed().as_secs_f64();
    let code = match outcome {
        Ok(Outcome::AllRounds(n)) => {
            println!("ksm-mergeflip: clean after {n} rounds in {took:.1} s (all rounds)");
            ExitCode::SUCCESS
        }
        Ok(Outcome::TimeUp(n)) => {
            println!(
                "ksm-mergeflip: clean after {n} rounds in {took:.1} s (time bound of {} s)",
                args.seconds
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stalled { rounds, what, ksmd }) => {
            for line in ksmd {
                println!("ksm-mergeflip: {line}");
            }
            println!("ksm-mergeflip: stalled after {rounds} rounds in {took:.1} s: {what}");
            ExitCode::from(EXIT_STALLED)
        }
        Err(e) => fail(EXIT_FAILED, &format!("error after {took:.1} s: {e}")),
    };
    match restored {
        Ok(_) => code,
        Err(e) => fail(
            EXIT_FAILED,
            &format!("error: cannot restore the KSM knobs: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ksm_dir(knobs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for k in knobs {
            std::fs::write(dir.path().join(k), "0\n").unwrap();
        }
        dir
    }

    #[test]
    fn runs_with_ksm_numa_and_two_nodes() {
        let dir = ksm_dir(&["run", "merge_across_nodes"]);
        assert_eq!(cannot_run_here(true, &Sysfs::at(dir.path()), &[0, 1]), None);
    }

    #[rstest]
    #[case(false, &["run", "merge_across_nodes"], &[0, 1], "root")]
    #[case(true, &["run"], &[0, 1], "CONFIG_NUMA")]
    #[case(true, &["run", "merge_across_nodes"], &[0], "[0]")]
    #[case(true, &["run", "merge_across_nodes"], &[0, 2], "[0, 2]")]
    fn says_why_it_cannot_run(
        #[case] root: bool,
        #[case] knobs: &[&str],
        #[case] nodes: &[usize],
        #[case] why: &str,
    ) {
        let dir = ksm_dir(knobs);
        let got = cannot_run_here(root, &Sysfs::at(dir.path()), nodes).unwrap();
        assert!(got.contains(why), "{got}");
    }

    #[test]
    fn no_ksm_directory() {
        let dir = tempfile::tempdir().unwrap();
        let got = cannot_run_here(true, &Sysfs::at(dir.path().join("ksm")), &[0, 1]).unwrap();
        assert!(got.contains("no KSM"), "{got}");
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["ksm-mergeflip", "--may-crash"]).unwrap();
        assert_eq!((a.rounds, a.seconds, a.mib, a.seed), (20, 60, 8, None));
        assert_eq!(a.stall_seconds, 30);
    }

    #[rstest]
    #[case(&["--rounds", "0"])]
    #[case(&["--seconds", "0"])]
    #[case(&["--mib", "0"])]
    #[case(&["--rounds", "ten"])]
    #[case(&["--seed", "-1"])]
    #[case(&["--bogus"])]
    fn bad_arguments_are_refused(#[case] extra: &[&str]) {
        let argv = ["ksm-mergeflip", "--may-crash"].iter().chain(extra);
        let err = Args::try_parse_from(argv).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
    }
}
