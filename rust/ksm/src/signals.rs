//! SIGINT/SIGTERM/SIGHUP during a run: put back what the journal records
//! (the knobs, and the changes outside them: failslab, debugfs, the memory
//! cgroup and what is left in it) and exit non-zero. The journal is the
//! source of truth, so the handler needs nothing from the interrupted code
//! but the journal's path. Forked children die with the process
//! (PR_SET_PDEATHSIG, set by their creator).

use std::path::PathBuf;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::guard::{self, WRITE_LOCK};
use crate::sysfs::Sysfs;

/// Start a thread that waits for a terminating signal, restores, and exits
/// with 128 + the signal number.
pub fn restore_on_termination(sysfs: Sysfs, journal: PathBuf) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("ksm-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Taken and never released: no knob changes after this.
                let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                match guard::recover(&sysfs, &journal) {
                    Ok(r) => eprintln!(
                        "ksm: signal {sig}: restored {} knobs{}",
                        r.knobs,
                        r.undone
                            .iter()
                            .rev()
                            .map(|u| format!("; {u}"))
                            .collect::<String>()
                    ),
                    Err(e) => eprintln!(
                        "ksm: signal {sig}: {e}; the journal {} is kept",
                        journal.display()
                    ),
                }
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
