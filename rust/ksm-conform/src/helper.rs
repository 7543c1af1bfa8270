//! Helpers that need a brand-new mm, which only execve gives: a forked
//! child shares its parent's KSM registration (ksm_fork), an exec'd program
//! does not. Both front ends call [`dispatch`] first thing in main, and a
//! check runs a helper as a re-exec of the current binary.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::child::die_with_parent;
use crate::ctx::{CheckResult, Fail};

pub(crate) const VAR: &str = "KSM_CONFORM_HELPER";
/// The helper that is a trace workload's worker (see [`crate::trace::worker`]).
pub(crate) const TRACE_WORKER: &str = "trace-worker";

/// If this process was started as a helper, run it and exit.
pub fn dispatch() {
    let Ok(name) = std::env::var(VAR) else {
        return;
    };
    if name == crate::worker::HELPER {
        crate::worker::serve_stdio();
        std::process::exit(0);
    }
    if name == TRACE_WORKER {
        crate::trace::worker::main();
    }
    let result = match name.as_str() {
        "madvise-with-failing-slab" => crate::checks::madvise::helper_madvise_with_failing_slab(),
        "memory-merge-inherited" => crate::checks::process::helper_memory_merge_inherited(),
        "get-memory-merge" => ksm::mem::get_memory_merge()
            .map(|on| format!("{}", on as u8))
            .map_err(|e| format!("PR_GET_MEMORY_MERGE: {e}")),
        _ => Err(format!("unknown helper {name:?}")),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            std::process::exit(0);
        }
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Run helper `name` as a fresh exec of this binary; returns its output
/// line, or fails with it.
pub fn run(name: &str) -> CheckResult<String> {
    let exe = std::env::current_exe()?;
    let parent = nix::unistd::getpid();
    let mut command = Command::new(&exe);
    command.env(VAR, name).env_remove("RUST_BACKTRACE");
    // SAFETY: die_with_parent makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(parent);
            Ok(())
        })
    };
    let out = command.output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(Fail::Failed(format!(
            "helper {name} ({}) {}: {text} {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
