//! Which page frames back a range of memory, and which of them are KSM
//! pages: /proc/<pid>/pagemap and /proc/kpageflags read in bulk
//! (Documentation/admin-guide/mm/pagemap.rst). Needs root for the frames.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ksm::procfs::PageMapEntry;

pub const PAGE: usize = 4096;
const KPF_KSM: u64 = 21;

/// The pagemap entries of `pages` pages from `addr` in the process whose
/// pagemap is at `pagemap` ("/proc/self/pagemap", "/proc/<pid>/pagemap").
pub fn pagemap(pagemap: &Path, addr: usize, pages: usize) -> io::Result<Vec<PageMapEntry>> {
    let file = File::open(pagemap)?;
    let mut buf = vec![0u8; pages * 8];
    file.read_exact_at(&mut buf, (addr / PAGE * 8) as u64)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| PageMapEntry(u64::from_ne_bytes(c.try_into().expect("8 bytes"))))
        .collect())
}

/// The flags of frames `first..first + count`, from a kpageflags file.
pub fn kpageflags(file: &File, first: u64, count: usize) -> io::Result<Vec<u64>> {
    let mut buf = vec![0u8; count * 8];
    file.read_exact_at(&mut buf, first * 8)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Whether a pagemap entry is a page swapped out to one of `swap_areas`
/// swap areas: pagemap marks migration entries as swapped too, but their
/// swap type (bits 0-4) lies above every real area's
/// (Documentation/admin-guide/mm/pagemap.rst).
pub fn swapped_out(entry: PageMapEntry, swap_areas: u64) -> bool {
    entry.swapped() && (entry.0 & 0x1f) < swap_areas
}

/// Active swap areas: the lines of /proc/swaps below its header.
pub fn swap_areas(proc_swaps: &str) -> u64 {
    proc_swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

pub fn is_ksm(flags: u64) -> bool {
    flags & (1 << KPF_KSM) != 0
}

/// For each entry: its frame, and whether that frame is a KSM page (None
/// for a page that is not present).
pub fn ksm_frames(entries: &[PageMapEntry]) -> io::Result<Vec<Option<(u64, bool)>>> {
    let flags = File::open("/proc/kpageflags")?;
    entries
        .iter()
        .map(|e| match e.pfn() {
            0 => Ok(None),
            pfn => Ok(Some((pfn, is_ksm(kpageflags(&flags, pfn, 1)?[0])))),
        })
        .collect()
}

/// KSM pages among frames `first..first + count`.
pub fn count_ksm(kpageflags_file: &Path, first: u64, count: usize) -> io::Result<u64> {
    let file = File::open(kpageflags_file)?;
    Ok(kpageflags(&file, first, count)?
        .into_iter()
        .filter(|&f| is_ksm(f))
        .count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksm_pages_are_counted_in_a_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpageflags");
        let flags: Vec<u64> = vec![0, 1 << KPF_KSM, 1 << 5, (1 << KPF_KSM) | 1, 0];
        let bytes: Vec<u8> = flags.iter().flat_map(|f| f.to_ne_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(count_ksm(&path, 0, 5).unwrap(), 2);
        assert_eq!(count_ksm(&path, 2, 2).unwrap(), 1);
        assert!(count_ksm(&path, 4, 2).is_err(), "beyond the end");
    }

    #[test]
    fn only_swap_entries_of_a_real_area_are_swapped_out() {
        let swap = PageMapEntry((1 << 62) | (77 << 5));
        let migration = PageMapEntry((1 << 62) | (77 << 5) | 30);
        let present = PageMapEntry((1 << 63) | 42);
        assert!(swapped_out(swap, 1));
        assert!(!swapped_out(swap, 0), "no swap area");
        assert!(!swapped_out(migration, 1));
        assert!(!swapped_out(present, 1));
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 524284 0 -2\n";
        assert_eq!(swap_areas(swaps), 1);
        assert_eq!(swap_areas("Filename\tType\tSize\tUsed\tPriority\n"), 0);
        assert_eq!(swap_areas(""), 0);
    }

    #[test]
    fn pagemap_of_a_plain_file_is_read_at_the_page_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pagemap");
        let entries: Vec<u64> = vec![0, (1 << 63) | 42, 1 << 62];
        let bytes: Vec<u8> = entries.iter().flat_map(|f| f.to_ne_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let got = pagemap(&path, PAGE, 2).unwrap();
        assert_eq!(got[0].pfn(), 42);
        assert!(got[1].swapped());
    }
}
