//! The registry of checks as cargo/nextest trials (harness = false), so
//! `cargo nextest run` runs the same checks as the ksm-conform binary.
//! Requirements are evaluated when the trials are listed: an unmet one makes
//! the trial ignored, which nextest reports as skipped. nextest has no skip
//! decided while running, so a check that turns out not to be runnable here
//! (or an ignored one run with --run-ignored) fails with the reason rather
//! than pass. Set KSM_CONFORM_FRESH_BOOT=1 to include the boot-default check.
//!
//! On a machine that other processes use KSM on (see ksm_conform::gate),
//! the checks that need the machine to themselves are ignored, the reason
//! on stderr when the trials are listed, and the others run: `cargo nextest
//! run` never unmerges anyone's pages unless KSM_CONFORM_ALLOW_UNMERGE=1.

use std::sync::{Arc, OnceLock};

use ksm::guard::default_state_dir;
use ksm::{Session, Sysfs};
use ksm_conform::env::{Env, Options};
use ksm_conform::exec::{Verdict, execute};
use ksm_conform::gate::{self, Usage};
use ksm_conform::registry;
use libtest_mimic::{Arguments, Failed, Trial};

/// One session per process; cargo test runs trials on threads of one
/// process, nextest runs each trial in its own.
fn session() -> Result<&'static Session, Failed> {
    static SESSION: OnceLock<Result<Session, String>> = OnceLock::new();
    SESSION
        .get_or_init(|| {
            let session =
                Session::open(Sysfs::system(), default_state_dir()).map_err(|e| e.to_string())?;
            ksm::signals::restore_on_termination(Sysfs::system(), session.journal_path())
                .map_err(|e| e.to_string())?;
            if let Some(msg) = session.recovered().describe() {
                eprintln!("{msg}");
            }
            Ok(session)
        })
        .as_ref()
        .map_err(|e| Failed::from(e.as_str()))
}

fn main() {
    ksm_conform::helper::dispatch();
    let mut args = Arguments::from_args();
    // The checks share global KSM state: one at a time.
    args.test_threads = Some(1);
    let env = Arc::new(Env::probe(Options::from_environment()));
    let allowed = std::env::var(gate::ENV).is_ok_and(|v| v == "1");
    let in_use = if env.root && env.ksm && !allowed {
        let reasons = Usage::probe(&Sysfs::system()).reasons();
        (!reasons.is_empty())
            .then(|| gate::refusal(&reasons).replace(gate::FLAG, &format!("{}=1", gate::ENV)))
    } else {
        None
    };
    if let Some(reason) = &in_use {
        eprintln!("ksm-conform: the checks that need the machine are skipped: {reason}");
    }
    let trials = registry::all()
        .into_iter()
        .map(|check| {
            let skip = check
                .unmet(&env)
                .or_else(|| in_use.as_ref().filter(|_| check.needs_machine()).cloned());
            let env = Arc::clone(&env);
            Trial::test(check.name, move || {
                let outcome = execute(check, session()?, &env);
                for d in &outcome.diagnostics {
                    eprintln!("# {d}");
                }
                if let Some(e) = outcome.restore_error {
                    return Err(format!("knobs not restored: {e}").into());
                }
                match outcome.verdict {
                    Verdict::Pass => Ok(()),
                    Verdict::Skip(reason) => Err(format!("cannot run here: {reason}").into()),
                    Verdict::Fail(msg) => Err(msg.into()),
                }
            })
            .with_ignored_flag(skip.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
