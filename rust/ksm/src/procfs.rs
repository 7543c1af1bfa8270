//! The per-process side of KSM in /proc: ksm_stat, ksm_merging_pages, the
//! "mg" VmFlag in smaps, and pagemap/kpageflags to see which physical page
//! backs an address.
//!
//! What the `procfs` crate parses (stat, smaps, pagemap, kpageflags,
//! vmstat, the process list) goes through it; KSM's own files, which it
//! does not know, are parsed here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ::procfs::process::{MemoryPageFlags, PageInfo, Pfn, Process, SwapPageFlags};
use ::procfs::{FromRead, KPageFlags, PhysicalPageFlags, ProcError};

use crate::error::{Error, Result};
use crate::mem::page_size;

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::file("read", path, e))
}

/// A procfs crate error as ours: an errno where the kernel gave one.
fn proc_error(op: &'static str, path: &Path, e: ProcError) -> Error {
    let errno = |errno| Error::File {
        op,
        path: path.to_path_buf(),
        errno,
    };
    match e {
        ProcError::PermissionDenied(_) => errno(nix::errno::Errno::EACCES),
        ProcError::NotFound(_) => errno(nix::errno::Errno::ENOENT),
        ProcError::Io(io, _) => Error::file(op, path, io),
        other => Error::Parse {
            path: path.to_path_buf(),
            content: String::new(),
            why: other.to_string(),
        },
    }
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

/// The VmFlags of the mapping of this process that contains `addr`, by
/// their smaps names ("rd", "wr", "mg", ...).
pub fn vm_flags(addr: usize) -> Result<Vec<String>> {
    let path = PathBuf::from("/proc/self/smaps");
    vm_flags_in(&read(&path)?, addr).ok_or_else(|| Error::Parse {
        path,
        content: format!("{addr:#x}"),
        why: "no mapping with VmFlags contains this address".into(),
    })
}

/// Parse smaps text: the VmFlags of the mapping whose range holds `addr`.
pub fn vm_flags_in(smaps: &str, addr: usize) -> Option<Vec<String>> {
    let maps = ::procfs::process::MemoryMaps::from_read(smaps.as_bytes()).ok()?;
    let map = maps
        .into_iter()
        .find(|m| m.address.0 <= addr as u64 && (addr as u64) < m.address.1)?;
    Some(
        map.extension
            .vm_flags
            .iter_names()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect(),
    )
}

/// Whether the mapping containing `addr` carries VM_MERGEABLE ("mg").
pub fn is_mergeable(addr: usize) -> Result<bool> {
    Ok(vm_flags(addr)?.iter().any(|f| f == "mg"))
}

/// One /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst),
/// its 64 bits as the kernel wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageMapEntry(pub u64);

impl PageMapEntry {
    fn info(self) -> PageInfo {
        PageInfo::parse_info(self.0)
    }
    pub fn present(self) -> bool {
        match self.info() {
            PageInfo::MemoryPage(f) => f.contains(MemoryPageFlags::PRESENT),
            PageInfo::SwapPage(f) => f.contains(SwapPageFlags::PRESENT),
        }
    }
    pub fn swapped(self) -> bool {
        matches!(self.info(), PageInfo::SwapPage(_))
    }
    /// The page frame number; 0 when not present or not exposed (no
    /// CAP_SYS_ADMIN).
    pub fn pfn(self) -> u64 {
        match self.info() {
            PageInfo::MemoryPage(f) if self.present() => f.get_page_frame_number().0,
            _ => 0,
        }
    }
}

pub fn pagemap(addr: usize) -> Result<PageMapEntry> {
    let path = Path::new("/proc/self/pagemap");
    let info = Process::myself()
        .and_then(|p| p.pagemap())
        .and_then(|mut map| map.get_info(addr / page_size()))
        .map_err(|e| proc_error("read", path, e))?;
    Ok(PageMapEntry(match info {
        PageInfo::MemoryPage(f) => f.bits(),
        PageInfo::SwapPage(f) => f.bits(),
    }))
}

/// KPF_KSM in /proc/kpageflags: the page at `addr` is a KSM page. None if
/// the page is not present or its frame is not visible.
pub fn is_ksm_page(addr: usize) -> Result<Option<bool>> {
    let pfn = pagemap(addr)?.pfn();
    if pfn == 0 {
        return Ok(None);
    }
    let flags = KPageFlags::new()
        .and_then(|mut k| k.get_info(Pfn(pfn)))
        .map_err(|e| proc_error("read", Path::new("/proc/kpageflags"), e))?;
    Ok(Some(flags.contains(PhysicalPageFlags::KSM)))
}

/// A process whose memory KSM may be merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsmUser {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Its pages mapped to KSM pages (ksm_merging_pages).
    pub merging_pages: u64,
    /// Its pages merged with the zero page (ksm_stat's ksm_zero_pages, 6.10+).
    pub zero_pages: u64,
}

impl KsmUser {
    /// Pages that `run=2` or MADV_UNMERGEABLE would copy back apart.
    pub fn merged_pages(&self) -> u64 {
        self.merging_pages + self.zero_pages
    }
}

/// The pids in /proc, in order.
pub fn pids() -> Vec<u32> {
    let Ok(all) = ::procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect()
}

/// Every process with memory registered with KSM: ksm_mergeable (6.14+), or
/// else rmap_items or merged pages in ksm_stat / ksm_merging_pages.
pub fn ksm_users() -> Vec<KsmUser> {
    let mut users = Vec::new();
    for pid in pids() {
        // Kernel threads and processes that are gone have no ksm_stat.
        let Ok(stat) = KsmStat::read(Some(pid)) else {
            continue;
        };
        let merging_pages = ksm_merging_pages(Some(pid)).unwrap_or(0);
        let zero_pages = stat.number("ksm_zero_pages").unwrap_or(0).max(0) as u64;
        let active = match stat.flag("ksm_mergeable") {
            Some(m) => m,
            None => stat.number("ksm_rmap_items").unwrap_or(0) > 0 || merging_pages > 0,
        };
        if active || merging_pages > 0 || zero_pages > 0 {
            let (ppid, comm) = ppid_comm(pid).unwrap_or((0, String::new()));
            users.push(KsmUser {
                pid,
                ppid,
                comm,
                merging_pages,
                zero_pages,
            });
        }
    }
    users
}

/// The fields of /proc/<pid>/stat that we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// R, S, D, Z, ... (proc(5)).
    pub state: char,
    pub ppid: u32,
    /// CPU time in user and kernel mode, in clock ticks (sysconf(_SC_CLK_TCK)).
    pub utime: u64,
    pub stime: u64,
}

impl From<::procfs::process::Stat> for Stat {
    fn from(s: ::procfs::process::Stat) -> Self {
        Stat {
            comm: s.comm,
            state: s.state,
            ppid: u32::try_from(s.ppid).unwrap_or(0),
            utime: s.utime,
            stime: s.stime,
        }
    }
}

/// /proc/<pid>/stat, parsed; None if the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    process.stat().ok().map(Stat::from)
}

/// Parse /proc/<pid>/stat. comm is in parentheses and may contain spaces and
/// parentheses itself: the fields after it start after the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    ::procfs::process::Stat::from_read(text.as_bytes())
        .ok()
        .map(Stat::from)
}

/// Parent pid and command name from /proc/<pid>/stat.
pub fn ppid_comm(pid: u32) -> Option<(u32, String)> {
    stat(pid).map(|s| (s.ppid, s.comm))
}

/// /proc/<pid>/wchan: the kernel function a sleeping task waits in ("0"
/// while it runs, or without CONFIG_KALLSYMS); None if it cannot be read.
pub fn wchan(pid: u32) -> Option<String> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    process.wchan().ok().map(|w| w.trim().to_string())
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
    let all = ::procfs::vmstat().map_err(|e| proc_error("read", Path::new("/proc/vmstat"), e))?;
    Ok(all.get(name).and_then(|v| u64::try_from(*v).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// ksmd's /proc/<pid>/stat on 7.3 (52 fields).
    const KSMD_STAT: &str = "41 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 17 305 0 0 25 5 1 0 9 0 0 \
        18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_of_a_kernel_thread() {
        let want = Stat {
            comm: "ksmd".into(),
            state: 'S',
            ppid: 2,
            utime: 17,
            stime: 305,
        };
        assert_eq!(parse_stat(KSMD_STAT), Some(want));
    }

    #[test]
    fn stat_comm_with_spaces_and_parentheses() {
        let text = KSMD_STAT.replace("(ksmd) S 2", "(a) b (c)) R 1");
        let s = parse_stat(&text).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.state, s.ppid, s.utime, s.stime),
            ("a) b (c)", 'R', 1, 17, 305)
        );
    }

    #[test]
    fn stat_of_this_process_and_wchan_of_ksmd_free_pid() {
        let me = stat(std::process::id()).unwrap();
        assert!(matches!(me.state, 'R' | 'S'), "{me:?}");
        assert_eq!(stat(u32::MAX), None);
        assert_eq!(wchan(u32::MAX), None);
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

    /// As the kernel writes it: a space after the inode even without a name.
    const SMAPS: &str = "\
7f0000000000-7f0000003000 rw-p 00000000 00:00 0 \n\
Size:                 12 kB
VmFlags: rd wr mr mw me ac mg
7f0000004000-7f0000005000 rw-p 00000000 00:00 0                          [heap]
Size:                  4 kB
VmFlags: rd wr mr mw me ac
";

    #[test]
    fn smaps_flag_names() {
        let flags = vm_flags_in(SMAPS, 0x7f0000000000).unwrap();
        assert_eq!(flags, ["rd", "wr", "mr", "mw", "me", "ac", "mg"]);
    }

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
    #[case(1 << 63 | 1 << 56 | 1234, true, false, 1234)]
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

    #[test]
    fn pagemap_of_a_touched_and_an_untouched_page() {
        let mut m = crate::Mapping::anon(2).unwrap();
        m.fill(0, 3);
        assert!(pagemap(m.page_addr(0)).unwrap().present());
        assert!(!pagemap(m.page_addr(1)).unwrap().present());
    }

    #[test]
    fn vmstat_counters() {
        assert!(vmstat("pgfault").unwrap().is_some_and(|n| n > 0));
        assert_eq!(vmstat("no_such_counter").unwrap(), None);
    }

    #[test]
    fn this_process_mapping_flags() {
        let m = crate::Mapping::anon(1).unwrap();
        let flags = vm_flags(m.addr()).unwrap();
        assert!(flags.iter().any(|f| f == "rd") && flags.iter().any(|f| f == "wr"));
        assert!(!is_mergeable(m.addr()).unwrap());
    }
}
