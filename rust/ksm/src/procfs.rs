//! The per-process side of KSM in /proc: ksm_stat, ksm_merging_pages, the
//! "mg" VmFlag in smaps, and pagemap/kpageflags to see which physical page
//! backs an address.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mem::page_size;

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::file("read", path, e))
}

fn pid_path(pid: Option<u32>, file: &str) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        None => PathBuf::from(format!("/proc/self/{file}")),
    }
}

/// /proc/<pid>/ksm_stat: "name value" lines, and since 6.14 "name: yes|no".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KsmStat {
    pub numbers: BTreeMap<String, i64>,
    pub flags: BTreeMap<String, bool>,
}

impl KsmStat {
    pub fn read(pid: Option<u32>) -> Result<KsmStat> {
        let path = pid_path(pid, "ksm_stat");
        KsmStat::parse(&read(&path)?, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<KsmStat> {
        let mut stat = KsmStat::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let bad = |why: &str| Error::Parse {
                path: path.to_path_buf(),
                content: line.to_string(),
                why: why.to_string(),
            };
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected \"name value\""))?;
            let value = value.trim();
            if let Some(name) = name.strip_suffix(':') {
                let flag = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("expected yes or no")),
                };
                stat.flags.insert(name.to_string(), flag);
            } else {
                let n = value.parse().map_err(|_| bad("expected a number"))?;
                stat.numbers.insert(name.to_string(), n);
            }
        }
        Ok(stat)
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        self.numbers.get(name).copied()
    }

    pub fn flag(&self, name: &str) -> Option<bool> {
        self.flags.get(name).copied()
    }

    pub fn fields(&self) -> Vec<&str> {
        self.numbers
            .keys()
            .chain(self.flags.keys())
            .map(String::as_str)
            .collect()
    }
}

/// /proc/<pid>/ksm_merging_pages: pages of the process mapped to a KSM page.
pub fn ksm_merging_pages(pid: Option<u32>) -> Result<u64> {
    let path = pid_path(pid, "ksm_merging_pages");
    let text = read(&path)?;
    text.trim().parse().map_err(|_| Error::Parse {
        path,
        content: text.clone(),
        why: "expected a number".into(),
    })
}

/// The VmFlags of the mapping of this process that contains `addr`.
pub fn vm_flags(addr: usize) -> Result<Vec<String>> {
    let path = PathBuf::from("/proc/self/smaps");
    let text = read(&path)?;
    vm_flags_in(&text, addr).ok_or_else(|| Error::Parse {
        path,
        content: format!("{addr:#x}"),
        why: "no mapping with VmFlags contains this address".into(),
    })
}

/// Parse smaps text: find the block whose "start-end" range holds `addr`.
pub fn vm_flags_in(smaps: &str, addr: usize) -> Option<Vec<String>> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = start <= addr && addr < end;
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.split_whitespace().map(str::to_string).collect());
            }
        }
    }
    None
}

/// Whether the mapping containing `addr` carries VM_MERGEABLE ("mg").
pub fn is_mergeable(addr: usize) -> Result<bool> {
    Ok(vm_flags(addr)?.iter().any(|f| f == "mg"))
}

/// One /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageMapEntry(pub u64);

impl PageMapEntry {
    pub fn present(self) -> bool {
        self.0 & (1 << 63) != 0
    }
    pub fn swapped(self) -> bool {
        self.0 & (1 << 62) != 0
    }
    /// The page frame number; 0 when not present or not exposed (no
    /// CAP_SYS_ADMIN).
    pub fn pfn(self) -> u64 {
        if self.present() {
            self.0 & ((1 << 55) - 1)
        } else {
            0
        }
    }
}

pub fn pagemap(addr: usize) -> Result<PageMapEntry> {
    let path = Path::new("/proc/self/pagemap");
    let file = fs::File::open(path).map_err(|e| Error::file("open", path, e))?;
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, (addr / page_size() * 8) as u64)
        .map_err(|e| Error::file("read", path, e))?;
    Ok(PageMapEntry(u64::from_ne_bytes(buf)))
}

/// KPF_KSM in /proc/kpageflags: the page at `addr` is a KSM page. None if
/// the page is not present or its frame is not visible.
pub fn is_ksm_page(addr: usize) -> Result<Option<bool>> {
    const KPF_KSM: u64 = 21;
    let pfn = pagemap(addr)?.pfn();
    if pfn == 0 {
        return Ok(None);
    }
    let path = Path::new("/proc/kpageflags");
    let file = fs::File::open(path).map_err(|e| Error::file("open", path, e))?;
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, pfn * 8)
        .map_err(|e| Error::file("read", path, e))?;
    Ok(Some(u64::from_ne_bytes(buf) & (1 << KPF_KSM) != 0))
}

/// A process whose memory KSM may be merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsmUser {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
}

/// Processes with memory registered with KSM: ksm_mergeable (6.14+), or
/// else rmap_items or merged pages in ksm_stat / ksm_merging_pages.
pub fn ksm_users() -> Vec<KsmUser> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut users = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = KsmStat::read(Some(pid)) else {
            continue;
        };
        let active = match stat.flag("ksm_mergeable") {
            Some(m) => m,
            None => {
                stat.number("ksm_rmap_items").unwrap_or(0) > 0
                    || ksm_merging_pages(Some(pid)).unwrap_or(0) > 0
            }
        };
        if active {
            let (ppid, comm) = ppid_comm(pid).unwrap_or((0, String::new()));
            users.push(KsmUser { pid, ppid, comm });
        }
    }
    users
}

/// The fields of /proc/<pid>/stat that we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// CPU time in user and kernel mode, in clock ticks (sysconf(_SC_CLK_TCK)).
    pub utime: u64,
    pub stime: u64,
}

/// /proc/<pid>/stat, parsed.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parse /proc/<pid>/stat. comm is in parentheses and may contain spaces and
/// parentheses itself: the fields after it start after the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // From field 3 (state) on; ppid is field 4, utime and stime 14 and 15
    // (proc(5)).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

/// Parent pid and command name from /proc/<pid>/stat.
pub fn ppid_comm(pid: u32) -> Option<(u32, String)> {
    stat(pid).map(|s| (s.ppid, s.comm))
}

/// Whether `pid` is `ancestor` or descends from it.
pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match ppid_comm(pid) {
            Some((ppid, _)) if ppid != 0 && ppid != pid => pid = ppid,
            _ => return false,
        }
    }
    false
}

/// A counter from /proc/vmstat (cow_ksm, ksm_swpin_copy, ...), if present.
pub fn vmstat(name: &str) -> Result<Option<u64>> {
    let text = read(Path::new("/proc/vmstat"))?;
    Ok(text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        if n == name {
            v.trim().parse().ok()
        } else {
            None
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn stat_of_a_kernel_thread() {
        let text = "41 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 17 305 0 0 25 5 1 0 9 0 0 \
                    18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 0 0 0 0 0 0 0";
        let want = Stat {
            comm: "ksmd".into(),
            ppid: 2,
            utime: 17,
            stime: 305,
        };
        assert_eq!(parse_stat(text), Some(want));
    }

    #[test]
    fn stat_comm_with_spaces_and_parentheses() {
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

    const STAT_7_3: &str = "ksm_rmap_items 12\nksm_zero_pages 0\nksm_merging_pages 10\n\
        ksm_process_profit 40192\nksm_merge_any: no\nksm_mergeable: yes\n";
    const STAT_6_1: &str = "ksm_rmap_items 3\n";

    #[rstest]
    #[case(STAT_7_3, &["ksm_merging_pages", "ksm_process_profit", "ksm_rmap_items", "ksm_zero_pages", "ksm_merge_any", "ksm_mergeable"])]
    #[case(STAT_6_1, &["ksm_rmap_items"])]
    fn ksm_stat_fields(#[case] text: &str, #[case] fields: &[&str]) {
        let stat = KsmStat::parse(text, Path::new("ksm_stat")).unwrap();
        assert_eq!(stat.fields(), fields);
    }

    #[test]
    fn ksm_stat_values() {
        let stat = KsmStat::parse(STAT_7_3, Path::new("ksm_stat")).unwrap();
        assert_eq!(stat.number("ksm_process_profit"), Some(40192));
        assert_eq!(stat.flag("ksm_merge_any"), Some(false));
        assert_eq!(stat.flag("ksm_mergeable"), Some(true));
        assert_eq!(stat.number("ksm_merge_any"), None);
    }

    #[rstest]
    #[case("ksm_rmap_items")]
    #[case("ksm_rmap_items x")]
    #[case("ksm_merge_any: maybe")]
    fn ksm_stat_rejects(#[case] text: &str) {
        assert!(KsmStat::parse(text, Path::new("ksm_stat")).is_err());
    }

    const SMAPS: &str = "\
7f0000000000-7f0000003000 rw-p 00000000 00:00 0
Size:                 12 kB
VmFlags: rd wr mr mw me ac mg
7f0000004000-7f0000005000 rw-p 00000000 00:00 0
Size:                  4 kB
VmFlags: rd wr mr mw me ac
";

    #[rstest]
    #[case(0x7f0000000000, Some(true))]
    #[case(0x7f0000002fff, Some(true))]
    #[case(0x7f0000004000, Some(false))]
    #[case(0x7f0000003000, None)]
    fn smaps_vmflags(#[case] addr: usize, #[case] mergeable: Option<bool>) {
        let flags = vm_flags_in(SMAPS, addr);
        assert_eq!(flags.map(|f| f.iter().any(|f| f == "mg")), mergeable);
    }

    #[test]
    fn this_process_and_its_parent_chain() {
        let me = std::process::id();
        let (ppid, comm) = ppid_comm(me).unwrap();
        assert!(!comm.is_empty());
        assert!(descends_from(me, me));
        assert!(descends_from(me, ppid));
        assert!(!descends_from(ppid, me));
    }

    #[rstest]
    #[case(0, false, false, 0)]
    #[case(1 << 63 | 1234, true, false, 1234)]
    #[case(1 << 62 | 99, false, true, 0)]
    fn pagemap_bits(
        #[case] raw: u64,
        #[case] present: bool,
        #[case] swapped: bool,
        #[case] pfn: u64,
    ) {
        let e = PageMapEntry(raw);
        assert_eq!((e.present(), e.swapped(), e.pfn()), (present, swapped, pfn));
    }
}
