//! The CPU time ksmd has used: what KSM costs, besides the memory it saves.

use std::fs;
use std::time::Duration;

use ksm::procfs;

/// Where ksmd's CPU time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// /proc/<pid>/schedstat: nanoseconds (CONFIG_SCHED_INFO).
    Schedstat,
    /// /proc/<pid>/stat's utime + stime: clock ticks (10 ms at USER_HZ 100).
    StatTicks,
}

impl CpuClock {
    pub fn name(self) -> &'static str {
        match self {
            CpuClock::Schedstat => "schedstat",
            CpuClock::StatTicks => "stat utime+stime",
        }
    }

    /// CPU time `pid` has used so far, in nanoseconds.
    fn read_ns(self, pid: u32) -> Option<u64> {
        match self {
            CpuClock::Schedstat => read_schedstat(pid),
            CpuClock::StatTicks => {
                let stat = procfs::stat(pid)?;
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
                (hz > 0).then(|| (stat.utime + stat.stime) * 1_000_000_000 / hz as u64)
            }
        }
    }
}

/// The state letter of a /proc/<pid>/stat line: the first field after the
/// command name, which is in parentheses and may contain any of them.
fn stat_state(text: &str) -> Option<char> {
    text.get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn read_schedstat(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The ksmd thread, and how its CPU time is read.
pub struct Ksmd {
    pub pid: u32,
    pub clock: CpuClock,
}

impl Ksmd {
    /// The kernel thread named "ksmd" (a child of kthreadd, pid 2). ksmd has
    /// run at boot, so a schedstat of 0 means the kernel does not keep it.
    pub fn find() -> Option<Ksmd> {
        let pid = fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| procfs::stat(pid).is_some_and(|s| s.comm == "ksmd" && s.ppid == 2))?;
        let clock = match read_schedstat(pid) {
            Some(ns) if ns > 0 => CpuClock::Schedstat,
            _ => CpuClock::StatTicks,
        };
        Some(Ksmd { pid, clock })
    }

    /// ksmd's scheduling state, the letter of /proc/<pid>/stat ('R', 'S',
    /// 'D', ...).
    pub fn state(&self) -> ksm::Result<char> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = fs::read_to_string(&path)
            .map_err(|e| ksm::Error::Other(format!("cannot read {path}: {e}")))?;
        stat_state(&text).ok_or_else(|| ksm::Error::Other(format!("{path}: no state in {text:?}")))
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> ksm::Result<Duration> {
        self.clock
            .read_ns(self.pid)
            .map(Duration::from_nanos)
            .ok_or_else(|| {
                ksm::Error::Other(format!("cannot read ksmd's CPU time (pid {})", self.pid))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_after_the_last_parenthesis() {
        assert_eq!(stat_state("42 (ksmd) S 2 0 0"), Some('S'));
        assert_eq!(stat_state("7 (a) b) R 1"), Some('R'));
        assert_eq!(stat_state("7 (a)"), None);
    }
}
