//! Memory the tests hand to KSM: mappings that unmap on drop, and the
//! madvise/prctl/mbind calls with the kernel's errno kept.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::errno::Errno;

use crate::error::{Error, Result};

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    Mergeable,
    Unmergeable,
    PageOut,
    NoHugePage,
    HugePage,
    DontNeed,
    Remove,
}

impl Advice {
    fn raw(self) -> libc::c_int {
        match self {
            Advice::Mergeable => libc::MADV_MERGEABLE,
            Advice::Unmergeable => libc::MADV_UNMERGEABLE,
            Advice::PageOut => libc::MADV_PAGEOUT,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::Remove => libc::MADV_REMOVE,
        }
    }
}

/// madvise(2) on any range, valid or not: the tests pass bad arguments on
/// purpose and compare the errno.
pub fn madvise(addr: usize, len: usize, advice: Advice) -> Result<(), Errno> {
    // SAFETY: the syscall checks the range itself; none of these advices
    // invalidates memory a Rust reference could point to (PAGEOUT keeps the
    // content, MERGEABLE/UNMERGEABLE only change sharing, DONTNEED and
    // REMOVE empty pages that the callers read again only as zeroes or
    // pagecache).
    let rc = unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice.raw()) };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub const PR_SET_MEMORY_MERGE: libc::c_int = 67;
pub const PR_GET_MEMORY_MERGE: libc::c_int = 68;

/// prctl with all five arguments, for PR_{SET,GET}_MEMORY_MERGE.
pub fn prctl(option: libc::c_int, args: [libc::c_ulong; 4]) -> Result<libc::c_int, Errno> {
    // SAFETY: these prctl options take integers only.
    let rc = unsafe { libc::prctl(option, args[0], args[1], args[2], args[3]) };
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

pub fn set_memory_merge(on: bool) -> Result<(), Errno> {
    prctl(PR_SET_MEMORY_MERGE, [on as libc::c_ulong, 0, 0, 0]).map(drop)
}

pub fn get_memory_merge() -> Result<bool, Errno> {
    prctl(PR_GET_MEMORY_MERGE, [0; 4]).map(|v| v != 0)
}

/// A mapping that is unmapped when dropped.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// The mapping is plain memory owned by this value.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Private anonymous read/write memory, THP off so that KSM sees small
    /// pages (as the upstream selftests do).
    pub fn anon(pages: usize) -> Result<Mapping> {
        let m = Mapping::map(
            pages * page_size(),
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            None,
        )?;
        m.no_huge_pages()?;
        Ok(m)
    }

    /// MAP_SHARED anonymous memory (shmem underneath).
    pub fn shared_anon(pages: usize) -> Result<Mapping> {
        Mapping::map(
            pages * page_size(),
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            None,
        )
    }

    /// A private (copy-on-write) mapping of a file.
    pub fn file_private(fd: BorrowedFd<'_>, pages: usize) -> Result<Mapping> {
        Mapping::map(pages * page_size(), libc::MAP_PRIVATE, Some(fd.as_raw_fd()))
    }

    /// A shared mapping of a file: its pages are the file's pagecache.
    pub fn file_shared(fd: BorrowedFd<'_>, pages: usize) -> Result<Mapping> {
        Mapping::map(pages * page_size(), libc::MAP_SHARED, Some(fd.as_raw_fd()))
    }

    /// Private anonymous memory of `huge` PMD-sized (2 MiB on x86_64)
    /// pages, aligned to that size and advised MADV_HUGEPAGE, so that the
    /// first write can fault in a transparent huge page.
    pub fn anon_thp(huge: usize) -> Result<Mapping> {
        const HUGE: usize = 2 << 20;
        let len = huge * HUGE;
        let raw = Mapping::map(len + HUGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None)?;
        let start = raw.addr().next_multiple_of(HUGE);
        let (head, tail) = (start - raw.addr(), raw.addr() + raw.len - (start + len));
        let unmap = |addr: usize, len: usize| {
            // SAFETY: the parts of our fresh mapping outside the aligned
            // range; nothing refers to them.
            if len > 0 && unsafe { libc::munmap(addr as *mut libc::c_void, len) } != 0 {
                return Err(Error::Call {
                    call: "munmap",
                    errno: Errno::last(),
                });
            }
            Ok(())
        };
        let parts = (raw.addr(), start + len);
        std::mem::forget(raw);
        unmap(parts.0, head)?;
        unmap(parts.1, tail)?;
        let m = Mapping {
            ptr: NonNull::new(start as *mut u8).expect("aligned start is not NULL"),
            len,
        };
        m.advise(Advice::HugePage).map_err(|errno| Error::Call {
            call: "madvise(MADV_HUGEPAGE)",
            errno,
        })?;
        Ok(m)
    }

    fn map(len: usize, flags: libc::c_int, fd: Option<libc::c_int>) -> Result<Mapping> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        unsafe {
            Mapping::map_at(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
            )
        }
    }

    /// # Safety
    /// With MAP_FIXED in `flags`, `addr..addr + len` must be memory that no
    /// live reference points into: whatever is mapped there is replaced.
    unsafe fn map_at(
        addr: *mut libc::c_void,
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: Option<libc::c_int>,
    ) -> Result<Mapping> {
        // SAFETY: the caller vouches for a MAP_FIXED range; otherwise the
        // kernel picks a free one.
        let ptr = unsafe { libc::mmap(addr, len, prot, flags, fd.unwrap_or(-1), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Call {
                call: "mmap",
                errno: Errno::last(),
            });
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL"),
            len,
        })
    }

    fn no_huge_pages(&self) -> Result<()> {
        match self.advise(Advice::NoHugePage) {
            Ok(()) | Err(Errno::EINVAL) => Ok(()), // EINVAL: no THP in this kernel
            Err(errno) => Err(Error::Call {
                call: "madvise(MADV_NOHUGEPAGE)",
                errno,
            }),
        }
    }

    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pages(&self) -> usize {
        self.len / page_size()
    }

    pub fn page_addr(&self, i: usize) -> usize {
        assert!(i < self.pages());
        self.addr() + i * page_size()
    }

    pub fn advise(&self, advice: Advice) -> Result<(), Errno> {
        madvise(self.addr(), self.len, advice)
    }

    pub fn advise_pages(&self, first: usize, count: usize, advice: Advice) -> Result<(), Errno> {
        assert!(first + count <= self.pages());
        madvise(self.page_addr(first), count * page_size(), advice)
    }

    /// mprotect(2) the pages [first, first + count). With PROT_NONE (or
    /// without PROT_READ) the pages must not be read through `page` until
    /// read access is given back.
    pub fn protect(&self, first: usize, count: usize, prot: libc::c_int) -> Result<(), Errno> {
        assert!(first + count <= self.pages());
        // SAFETY: changes access rights within our own mapping only.
        let rc = unsafe {
            libc::mprotect(
                self.page_addr(first) as *mut libc::c_void,
                count * page_size(),
                prot,
            )
        };
        if rc == 0 { Ok(()) } else { Err(Errno::last()) }
    }

    /// The bytes of page `i`. Reading faults the page in.
    pub fn page(&self, i: usize) -> &[u8] {
        assert!(i < self.pages());
        // SAFETY: in bounds of a live read/write mapping we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(i * page_size()), page_size()) }
    }

    pub fn page_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.pages());
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(i * page_size()), page_size())
        }
    }

    /// Fill page `i` with a pattern derived from `seed`: pages with equal
    /// seeds are identical, pages with different seeds differ; seed 0 gives
    /// a page of zeroes.
    pub fn fill(&mut self, i: usize, seed: u64) {
        for (n, chunk) in self.page_mut(i).chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&pattern(seed, n).to_ne_bytes());
        }
    }

    /// Whether page `i` still holds what `fill(i, seed)` wrote.
    pub fn holds(&self, i: usize, seed: u64) -> bool {
        self.page(i)
            .chunks_exact(8)
            .enumerate()
            .all(|(n, chunk)| chunk == pattern(seed, n).to_ne_bytes())
    }

    /// Unmap pages [first, first + count) now, leaving a hole. The hole is
    /// not unmapped again on drop.
    pub fn punch_hole(&mut self, first: usize, count: usize) -> Result<()> {
        assert!(first + count <= self.pages());
        // SAFETY: the range lies within our mapping; `page`/`page_mut` are
        // not used on it afterwards by the callers that punch holes.
        let rc = unsafe {
            libc::munmap(
                self.page_addr(first) as *mut libc::c_void,
                count * page_size(),
            )
        };
        if rc != 0 {
            return Err(Error::Call {
                call: "munmap",
                errno: Errno::last(),
            });
        }
        Ok(())
    }
}

fn pattern(seed: u64, word: usize) -> u64 {
    // Distinct seeds give distinct words; a zero seed gives a zero page.
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (word as u64).wrapping_mul(seed)
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; unmapping a punched hole is harmless.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A node mask with only `node` set, and its size in bits (maxnode).
fn node_mask(node: usize) -> ([libc::c_ulong; 16], libc::c_ulong) {
    let mut mask = [0 as libc::c_ulong; 16];
    let bits = 8 * std::mem::size_of::<libc::c_ulong>();
    mask[node / bits] |= 1 << (node % bits);
    (mask, (mask.len() * bits) as libc::c_ulong)
}

/// Address space set aside (PROT_NONE, nothing committed) so that the
/// mappings carved out of it lie at known offsets from one another: their
/// order in the address space, which is the order in which ksmd scans them,
/// does not depend on where the kernel happens to place each mmap.
pub struct Reservation {
    space: Mapping,
}

impl Reservation {
    pub fn new(pages: usize) -> Result<Reservation> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let space = unsafe {
            Mapping::map_at(
                std::ptr::null_mut(),
                pages * page_size(),
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                None,
            )
        }?;
        Ok(Reservation { space })
    }

    pub fn pages(&self) -> usize {
        self.space.pages()
    }

    /// Private anonymous read/write memory (THP off, as [`Mapping::anon`])
    /// in place of pages [first, first + pages) of the reservation. When it
    /// is dropped the range becomes a hole: carve each range once.
    pub fn carve(&self, first: usize, pages: usize) -> Result<Mapping> {
        assert!(
            pages > 0 && first + pages <= self.pages(),
            "carve out of bounds"
        );
        // SAFETY: the range lies within our PROT_NONE reservation, which no
        // reference can point into.
        let m = unsafe {
            Mapping::map_at(
                self.space.page_addr(first) as *mut libc::c_void,
                pages * page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                None,
            )
        }?;
        m.no_huge_pages()?;
        Ok(m)
    }
}

/// Bind `len` bytes at `addr` to NUMA node `node` and move the pages there
/// (mbind(MPOL_BIND, MPOL_MF_MOVE | MPOL_MF_STRICT)).
pub fn mbind_to_node(addr: usize, len: usize, node: usize) -> Result<(), Errno> {
    const MPOL_BIND: libc::c_ulong = 2;
    const MPOL_MF_STRICT: libc::c_ulong = 1;
    const MPOL_MF_MOVE: libc::c_ulong = 2;
    let (mask, maxnode) = node_mask(node);
    // SAFETY: the node mask outlives the call; maxnode matches its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_BIND,
            mask.as_ptr(),
            maxnode,
            MPOL_MF_MOVE | MPOL_MF_STRICT,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Bind all future allocations of the calling process to NUMA node `node`
/// (set_mempolicy(MPOL_BIND)).
pub fn set_mempolicy_bind(node: usize) -> Result<(), Errno> {
    const MPOL_BIND: libc::c_long = 2;
    let (mask, maxnode) = node_mask(node);
    // SAFETY: the node mask outlives the call; maxnode matches its size.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, MPOL_BIND, mask.as_ptr(), maxnode) };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// The NUMA node each page at `addrs` is on: get_mempolicy(MPOL_F_NODE |
/// MPOL_F_ADDR), which needs only CONFIG_NUMA (move_pages may be configured
/// out).
pub fn page_nodes(addrs: &[usize]) -> Result<Vec<i32>, Errno> {
    const MPOL_F_NODE: libc::c_ulong = 1;
    const MPOL_F_ADDR: libc::c_ulong = 2;
    addrs
        .iter()
        .map(|addr| {
            let mut node: libc::c_int = -1;
            // SAFETY: `node` outlives the call; no node mask is passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_mempolicy,
                    &mut node as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_ulong>(),
                    0 as libc::c_ulong,
                    *addr,
                    MPOL_F_NODE | MPOL_F_ADDR,
                )
            };
            if rc == 0 {
                Ok(node)
            } else {
                Err(Errno::last())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_patterns() {
        let mut m = Mapping::anon(3).unwrap();
        m.fill(0, 7);
        m.fill(1, 7);
        m.fill(2, 8);
        assert_eq!(m.page(0), m.page(1));
        assert_ne!(m.page(0), m.page(2));
        assert!(m.holds(2, 8) && !m.holds(2, 7));
        m.fill(0, 0);
        assert!(m.page(0).iter().all(|b| *b == 0));
    }

    #[test]
    fn page_node_of_a_touched_page() {
        let mut m = Mapping::anon(1).unwrap();
        m.fill(0, 1);
        let nodes = page_nodes(&[m.addr()]).unwrap();
        assert!(
            crate::kernel::memory_nodes().contains(&(nodes[0] as usize)),
            "{nodes:?}"
        );
    }

    #[test]
    fn carved_mappings_keep_their_offsets() {
        let space = Reservation::new(16).unwrap();
        let mut a = space.carve(8, 2).unwrap();
        let mut b = space.carve(2, 3).unwrap();
        assert_eq!(a.addr() - b.addr(), 6 * page_size());
        a.fill(1, 5);
        b.fill(2, 5);
        assert_eq!(a.page(1), b.page(2));
        drop(b);
        let c = space.carve(12, 4).unwrap();
        assert_eq!(c.addr() - a.addr(), 4 * page_size());
    }

    #[test]
    fn bad_madvise_keeps_errno() {
        let m = Mapping::anon(1).unwrap();
        assert_eq!(
            madvise(m.addr() + 1, page_size(), Advice::NoHugePage),
            Err(Errno::EINVAL)
        );
    }
}
