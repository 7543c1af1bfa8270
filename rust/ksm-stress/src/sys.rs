//! What the coordinator reads of the system outside /sys/kernel/mm/ksm:
//! ksmd's pid, /proc/vmstat, the processes KSM knows, how much memory a
//! process has advised, and writes that keep the kernel's errno.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use ksm::procfs::{KsmStat, ksm_users};
use nix::errno::Errno;

/// write(2) of `value` to `path`, with the kernel's errno.
pub fn write_file(path: &Path, value: &str) -> Result<(), Errno> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_errno)?;
    f.write_all(value.as_bytes()).map_err(io_errno)
}

pub fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

pub fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The pid of ksmd.
pub fn ksmd_pid() -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (read_trimmed(&e.path().join("comm"))? == "ksmd").then_some(pid)
    })
}

/// Every counter of /proc/vmstat.
pub fn vmstat() -> BTreeMap<String, u64> {
    parse_vmstat(&fs::read_to_string("/proc/vmstat").unwrap_or_default())
}

pub fn parse_vmstat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A process KSM knows, with its /proc/<pid>/ksm_stat.
#[derive(Debug, Clone)]
pub struct KsmProcess {
    pub pid: u32,
    pub comm: String,
    pub stat: KsmStat,
}

impl KsmProcess {
    pub fn number(&self, field: &str) -> i64 {
        self.stat.number(field).unwrap_or(0)
    }
}

/// Processes with memory registered with KSM.
pub fn ksm_processes() -> Vec<KsmProcess> {
    ksm_users()
        .into_iter()
        .filter_map(|u| {
            Some(KsmProcess {
                pid: u.pid,
                comm: u.comm,
                stat: KsmStat::read(Some(u.pid)).ok()?,
            })
        })
        .collect()
}

/// Pages in the mappings of `pid` that carry VM_MERGEABLE ("mg"), or None
/// if its smaps cannot be read (it exited).
pub fn mergeable_pages(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(mergeable_pages_in(&text))
}

pub fn mergeable_pages_in(smaps: &str) -> u64 {
    let mut pages = 0;
    let mut size = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                size = (end - start) / 4096;
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "mg") {
                pages += size;
            }
        }
    }
    pages
}

/// One field of /proc/meminfo in KiB.
pub fn meminfo_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mergeable_mappings_are_added_up() {
        let smaps = "\
7f0000000000-7f0000010000 rw-p 00000000 00:00 0
Size:                 64 kB
VmFlags: rd wr mr mw me ac mg
7f0000010000-7f0000011000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
7f0000020000-7f0000022000 r--p 00000000 00:00 0 [heap]
VmFlags: rd mr mw me ac mg
";
        assert_eq!(mergeable_pages_in(smaps), 16 + 2);
        assert_eq!(mergeable_pages_in(""), 0);
    }

    #[test]
    fn vmstat_lines() {
        let v = parse_vmstat("pgmigrate_success 12\ncow_ksm 3\nbad line\n");
        assert_eq!(v["pgmigrate_success"], 12);
        assert_eq!(v["cow_ksm"], 3);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn a_write_keeps_the_errno() {
        let e = write_file(Path::new("/nonexistent/x"), "1").unwrap_err();
        assert_eq!(e, Errno::ENOENT);
    }
}
