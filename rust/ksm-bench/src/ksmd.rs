//! The CPU time ksmd has used: what KSM costs, besides the memory it saves.

use std::fs;

/// ksmd's pid: the kernel thread named "ksmd" (a child of kthreadd, pid 2).
pub fn pid() -> Option<u32> {
    let dir = fs::read_dir("/proc").ok()?;
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            parse_stat(&stat).is_some_and(|s| s.comm == "ksmd" && s.ppid == 2)
        })
}

/// Where ksmd's CPU time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// /proc/<pid>/schedstat: nanoseconds (CONFIG_SCHED_INFO).
    Schedstat,
    /// /proc/<pid>/stat's utime + stime: clock ticks (10 ms at USER_HZ 100).
    StatTicks,
}

impl CpuClock {
    /// The exact clock where the kernel has it.
    pub fn probe(pid: u32) -> CpuClock {
        if read_schedstat(pid).is_some() {
            CpuClock::Schedstat
        } else {
            CpuClock::StatTicks
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuClock::Schedstat => "schedstat",
            CpuClock::StatTicks => "stat utime+stime",
        }
    }

    /// CPU time `pid` has used so far, in nanoseconds.
    pub fn read_ns(self, pid: u32) -> Option<u64> {
        match self {
            CpuClock::Schedstat => read_schedstat(pid),
            CpuClock::StatTicks => {
                let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let stat = parse_stat(&text)?;
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
                (hz > 0).then(|| (stat.utime + stat.stime) * 1_000_000_000 / hz as u64)
            }
        }
    }
}

fn read_schedstat(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The fields of /proc/<pid>/stat that we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
}

/// Parse /proc/<pid>/stat. comm is in parentheses and may contain spaces and
/// parentheses itself: the fields after it start after the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields from the 3rd (state) on; ppid is the 4th, utime and stime the
    // 14th and 15th (proc(5)).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse().ok());
    Some(Stat {
        comm,
        ppid: field(4)? as u32,
        utime: field(14)?,
        stime: field(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_a_kernel_thread() {
        let text = "41 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 17 305 0 0 25 5 1 0 9 0 0 \
                    18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                comm: "ksmd".into(),
                ppid: 2,
                utime: 17,
                stime: 305
            })
        );
    }

    #[test]
    fn comm_with_spaces_and_parentheses() {
        let text = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.ppid, s.utime, s.stime),
            ("a) b (c)", 1, 3, 4)
        );
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("7 (x) R 1 2 3"), None);
    }
}
