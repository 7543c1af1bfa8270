//! Whether this machine is in use by KSM, decided before anything changes.
//!
//! The checks that need root change /sys/kernel/mm/ksm: they start and stop
//! ksmd, change max_page_sharing or merge_across_nodes, and run=2, which
//! unmerges every KSM page on the machine. On a host whose virtual machines
//! rely on KSM that is an outage (their memory grows back to what KSM
//! saved) and the suite refuses to run it, unless told that the user
//! accepts it (`--allow-unmerge`, or KSM_CONFORM_ALLOW_UNMERGE=1 under
//! cargo test / nextest), when:
//! - another process has pages merged (its ksm_merging_pages, or zero pages
//!   in its ksm_stat), or KSM holds pages at all (pages_shared,
//!   ksm_zero_pages);
//! - ksmd runs (run=1) for another process that registered memory: it may
//!   merge any moment, and a check's run=2 would unmerge it again;
//! - something manages KSM: a process named ksmtuned, or systemd's ksm or
//!   ksmtuned service active.
//!
//! The suite's own processes (this one and its descendants) do not count.

use std::path::Path;
use std::process::Command;

use ksm::{Knob, Sysfs};

/// The flag that accepts unmerging, for messages.
pub const FLAG: &str = "--allow-unmerge";
/// The same for the cargo test front end.
pub const ENV: &str = "KSM_CONFORM_ALLOW_UNMERGE";

/// What the gate saw: a process and its KSM pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub merged: u64,
}

/// The machine as the gate sees it, read once; decided by [`Usage::reasons`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Other processes with merged pages.
    pub holders: Vec<Holder>,
    /// Other processes registered with KSM, merged or not.
    pub registered: Vec<Holder>,
    pub run: Option<String>,
    pub pages_shared: u64,
    pub zero_pages: u64,
    /// Processes named ksmtuned.
    pub ksmtuned: Vec<u32>,
    /// systemd units that manage KSM and are active.
    pub units: Vec<String>,
}

impl Usage {
    pub fn probe(sysfs: &Sysfs) -> Usage {
        let me = std::process::id();
        let others: Vec<ksm::procfs::KsmUser> = ksm::procfs::ksm_users()
            .into_iter()
            .filter(|u| !ksm::procfs::descends_from(u.pid, me))
            .collect();
        let holder = |u: &ksm::procfs::KsmUser| Holder {
            pid: u.pid,
            comm: u.comm.clone(),
            merged: u.merged_pages(),
        };
        Usage {
            holders: others
                .iter()
                .filter(|u| u.merged_pages() > 0)
                .map(holder)
                .collect(),
            registered: others.iter().map(holder).collect(),
            run: sysfs.read(Knob::Run).ok(),
            pages_shared: sysfs.read_u64(Knob::PagesShared).unwrap_or(0),
            zero_pages: sysfs.read_u64(Knob::KsmZeroPages).unwrap_or(0),
            ksmtuned: processes_named("ksmtuned"),
            units: active_units(&["ksm.service", "ksmtuned.service"]),
        }
    }

    /// Why the machine is in use, one reason a line; empty if it is not.
    pub fn reasons(&self) -> Vec<String> {
        let mut why = Vec::new();
        let list = |hs: &[Holder], pages: bool| {
            hs.iter()
                .map(|h| {
                    if pages {
                        format!("pid {} ({}): {} pages", h.pid, h.comm, h.merged)
                    } else {
                        format!("pid {} ({})", h.pid, h.comm)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.holders.is_empty() {
            why.push(format!(
                "other processes have pages merged by KSM: {}",
                list(&self.holders, true)
            ));
        }
        if self.pages_shared > 0 || self.zero_pages > 0 {
            why.push(format!(
                "KSM holds pages: pages_shared {}, ksm_zero_pages {}",
                self.pages_shared, self.zero_pages
            ));
        }
        if self.run.as_deref() == Some("1") && !self.registered.is_empty() {
            why.push(format!(
                "ksmd runs (run=1) for other processes: {}",
                list(&self.registered, false)
            ));
        }
        if !self.ksmtuned.is_empty() {
            let pids: Vec<String> = self.ksmtuned.iter().map(u32::to_string).collect();
            why.push(format!("ksmtuned runs (pid {})", pids.join(", ")));
        }
        for unit in &self.units {
            why.push(format!("systemd's {unit} is active"));
        }
        why
    }
}

/// The refusal, for stderr and the TAP plan line.
pub fn refusal(reasons: &[String]) -> String {
    format!(
        "this machine uses KSM, and the suite would change /sys/kernel/mm/ksm and unmerge \
         every KSM page (run=2): {}; nothing was changed (pass {FLAG} to accept unmerging)",
        reasons.join("; ")
    )
}

/// Pids of the processes whose comm is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    ksm::procfs::pids()
        .into_iter()
        .filter(|&pid| ksm::procfs::stat(pid).is_some_and(|s| s.comm == name))
        .collect()
}

/// The units among `units` that systemd reports active; none where systemd
/// is not the init system.
fn active_units(units: &[&str]) -> Vec<String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Vec::new();
    }
    units
        .iter()
        .filter(|unit| {
            Command::new("systemctl")
                .args(["is-active", "--quiet", unit])
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|u| u.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: u32, comm: &str, merged: u64) -> Holder {
        Holder {
            pid,
            comm: comm.into(),
            merged,
        }
    }

    #[test]
    fn a_free_machine_has_no_reason() {
        let usage = Usage {
            run: Some("0".into()),
            ..Usage::default()
        };
        assert!(usage.reasons().is_empty());
        // Registered but nothing merged and ksmd stopped: not in use.
        let usage = Usage {
            registered: vec![h(7, "qemu-system-x86", 0)],
            ..usage
        };
        assert!(usage.reasons().is_empty());
    }

    #[test]
    fn every_reason_names_who() {
        let usage = Usage {
            holders: vec![h(4242, "qemu-system-x86", 5120)],
            registered: vec![h(4242, "qemu-system-x86", 5120), h(17, "db", 0)],
            run: Some("1".into()),
            pages_shared: 800,
            zero_pages: 3,
            ksmtuned: vec![99],
            units: vec!["ksm.service".into()],
        };
        assert_eq!(
            usage.reasons(),
            [
                "other processes have pages merged by KSM: pid 4242 (qemu-system-x86): 5120 pages",
                "KSM holds pages: pages_shared 800, ksm_zero_pages 3",
                "ksmd runs (run=1) for other processes: pid 4242 (qemu-system-x86), pid 17 (db)",
                "ksmtuned runs (pid 99)",
                "systemd's ksm.service is active",
            ]
        );
        let msg = refusal(&usage.reasons());
        assert!(
            msg.contains("nothing was changed (pass --allow-unmerge"),
            "{msg}"
        );
    }

    #[test]
    fn probe_leaves_out_this_process() {
        let mut m = ksm::Mapping::anon(2).unwrap();
        m.fill(0, 1);
        m.advise(ksm::Advice::Mergeable).ok();
        let usage = Usage::probe(&Sysfs::system());
        let me = std::process::id();
        assert!(usage.registered.iter().all(|h| h.pid != me));
    }
}
