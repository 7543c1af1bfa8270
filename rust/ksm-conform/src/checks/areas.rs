//! Kinds of areas around merging, as LTP and the kernel's selftests
//! (ksm_tests, ksm_functional_tests) exercise them: a transparent huge page,
//! PROT_NONE and read-only areas, ranges discarded or write-protected by
//! userfaultfd before they are unmerged, and file pages, which KSM never
//! merges ("KSM only merges anonymous (private) pages, never pagecache
//! (file) pages").

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use ksm::procfs::{KsmStat, is_mergeable};
use ksm::{Advice, Knob, Mapping};
use nix::errno::Errno;

use super::trees::{Content, SETTLE, counters};
use super::{distinct_frames, ensure_content, kpf_agrees, one_frame, pfns};
use crate::ctx::{CheckResult, Ctx, Fail, call};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[
    Check {
        name: "areas/transparent_huge_page_is_split_and_its_pages_merge",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Thp,
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: transparent_huge_page,
    },
    Check {
        name: "areas/prot_none_and_read_only_areas_merge_and_unmerge",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: prot_none_and_read_only,
    },
    Check {
        name: "areas/discarded_pages_leave_and_the_rest_unmerges",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: discarded,
    },
    Check {
        name: "areas/uffd_write_protected_range_unmerges",
        requires: &[Req::Root, Req::Ksm, Req::Userfaultfd, Req::SoleKsmUser],
        body: uffd_write_protected,
    },
    Check {
        name: "areas/pagecache_pages_are_never_scanned_only_anonymous_copies",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: pagecache,
    },
];

fn counts(shared: u64, sharing: u64) -> Counters {
    Counters {
        shared,
        sharing,
        ..Counters::default()
    }
}

/// Clean slate, smart_scan off, and a stepper that has made the first scan.
fn start(ctx: &mut Ctx) -> CheckResult<Stepper> {
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    Stepper::start(ctx)
}

/// This process has no mergeable area left: one more scan frees its
/// rmap_items and takes it off ksmd's list (scan_get_next_rmap_item()), so
/// nothing is counted; with no process on the list ksmd then scans no more.
fn leave_ksm(ctx: &mut Ctx, stepper: &mut Stepper) -> CheckResult {
    stepper.step(ctx)?;
    expect(ctx, Counters::default(), "unmerged")
}

/// "AnonHugePages" of the mapping of this process that contains `addr`,
/// in kB, from /proc/self/smaps.
fn anon_huge_kb(addr: usize) -> CheckResult<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps")?;
    anon_huge_kb_in(&smaps, addr)
        .ok_or_else(|| Fail::Failed(format!("no mapping with AnonHugePages holds {addr:#x}")))
}

fn anon_huge_kb_in(smaps: &str, addr: usize) -> Option<u64> {
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = range.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                inside = start <= addr && addr < end;
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
    }
    None
}

/// ksm_tests -H: a THP of identical 4 KiB pages. KSM cannot merge a page
/// of a large folio: the first attempt (two subpages of one folio, in
/// cmp_and_merge_page) splits the THP, and its pages then merge like any
/// others. 512 identical pages with max_page_sharing 256: two full KSM
/// pages chained (pages_shared 2, pages_sharing 510, one chain of two
/// dups), none left over. The page whose merge attempt split the folio
/// waits one scan more, hence one scan more than elsewhere.
fn transparent_huge_page(ctx: &mut Ctx) -> CheckResult {
    const LIMIT: u64 = 256;
    ctx.clean_slate()?;
    ctx.set(Knob::MaxPageSharing, &LIMIT.to_string())?;
    let mut m = Mapping::anon_thp(1)?;
    for i in 0..m.pages() {
        m.fill(i, 1);
    }
    let huge = anon_huge_kb(m.addr())?;
    if huge == 0 {
        return Err(Fail::Skip(
            "the kernel gave the MADV_HUGEPAGE area no huge page (memory too fragmented?)".into(),
        ));
    }
    ensure_eq!(huge, 2048, "AnonHugePages of the area before merging");
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    let mut stepper = start(ctx)?;
    let pages = m.pages() as u64;
    let want = counters([&Content::merged(pages, LIMIT)]);
    stepper.settle(ctx, SETTLE + 1, want, "THP merged")?;
    ensure_eq!(anon_huge_kb(m.addr())?, 0, "AnonHugePages once merged");
    let mut frames = pfns(&m)?;
    frames.sort_unstable();
    frames.dedup();
    ensure_eq!(frames.len(), 2, "frames of the merged THP");
    ensure_content(&m, |_| 1)
}

/// ksm_functional_tests' test_prot_none, and a read-only area: pages
/// written, then made PROT_NONE or PROT_READ, then advised, merge like any
/// others (ksmd reads page tables, not access rights): 64 copies, one KSM
/// page. MADV_UNMERGEABLE works without access rights too (break_ksm
/// faults with FAULT_FLAG_UNSHARE): half of the PROT_NONE area and the
/// whole read-only area get private copies at once, and once ksmd has seen
/// it only the other 16 PROT_NONE pages share the KSM page.
fn prot_none_and_read_only(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 32;
    ctx.clean_slate()?;
    let mut none = Mapping::anon(PAGES)?;
    let mut read_only = Mapping::anon(PAGES)?;
    for i in 0..PAGES {
        none.fill(i, 1);
        read_only.fill(i, 1);
    }
    call(
        "mprotect(PROT_NONE)",
        none.protect(0, PAGES, libc::PROT_NONE),
    )?;
    call(
        "mprotect(PROT_READ)",
        read_only.protect(0, PAGES, libc::PROT_READ),
    )?;
    for m in [&none, &read_only] {
        call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    }
    let mut stepper = start(ctx)?;
    let all = 2 * PAGES as u64;
    stepper.settle(ctx, SETTLE, counts(1, all - 1), "merged")?;
    let ksm_frame = one_frame(&none, 0..PAGES)?;
    ensure_eq!(
        one_frame(&read_only, 0..PAGES)?,
        ksm_frame,
        "frame of the read-only pages"
    );
    let half = PAGES / 2;
    call(
        "madvise(MADV_UNMERGEABLE) of half the PROT_NONE area",
        none.advise_pages(0, half, Advice::Unmergeable),
    )?;
    call(
        "madvise(MADV_UNMERGEABLE) of the read-only area",
        read_only.advise(Advice::Unmergeable),
    )?;
    distinct_frames(&none, 0..half, "unmerged PROT_NONE pages")?;
    distinct_frames(&read_only, 0..PAGES, "unmerged read-only pages")?;
    ensure_eq!(
        one_frame(&none, half..PAGES)?,
        ksm_frame,
        "frame of the PROT_NONE pages still advised"
    );
    let frames = pfns(&none)?;
    ensure!(
        !frames[..half].contains(&ksm_frame) && !pfns(&read_only)?.contains(&ksm_frame),
        "an unmerged page still maps the KSM page"
    );
    stepper.settle(ctx, SETTLE, counts(1, half as u64 - 1), "half unmerged")?;
    call(
        "mprotect(PROT_READ)",
        none.protect(0, PAGES, libc::PROT_READ),
    )?;
    ensure_content(&none, |_| 1)?;
    ensure_content(&read_only, |_| 1)
}

/// ksm_functional_tests' test_unmerge_discarded: MADV_DONTNEED empties half
/// of a merged area (pte_none entries); at ksmd's next pass their
/// rmap_items leave the KSM page (32 of 64 copies left: pages_sharing 31).
/// MADV_UNMERGEABLE of the whole area then succeeds over the holes and
/// leaves no page on a shared frame; the discarded pages read as zeroes.
/// MADV_REMOVE, the other discard, does not apply to such memory: it is
/// EINVAL for anonymous memory (mm/madvise.c madvise_remove()), and the
/// pages stay merged.
fn discarded(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 64;
    let half = PAGES / 2;
    ctx.clean_slate()?;
    let m = super::mergeable(PAGES, 1)?;
    let mut stepper = start(ctx)?;
    stepper.settle(ctx, SETTLE, counts(1, PAGES as u64 - 1), "merged")?;
    ensure_eq!(
        m.advise_pages(0, half, Advice::Remove),
        Err(Errno::EINVAL),
        "MADV_REMOVE on merged anonymous pages"
    );
    one_frame(&m, 0..PAGES)?;
    call(
        "madvise(MADV_DONTNEED) of half the area",
        m.advise_pages(0, half, Advice::DontNeed),
    )?;
    for i in 0..half {
        let entry = ksm::procfs::pagemap(m.page_addr(i))?;
        ensure!(!entry.present(), "discarded page {i} is still present");
    }
    stepper.settle(ctx, SETTLE, counts(1, half as u64 - 1), "half discarded")?;
    call("madvise(MADV_UNMERGEABLE)", m.advise(Advice::Unmergeable))?;
    distinct_frames(&m, half..PAGES, "unmerged pages")?;
    leave_ksm(ctx, &mut stepper)?;
    ensure_content(&m, |i| if i < half { 0 } else { 1 })
}

/// What userfaultfd(2) needs here: ioctl numbers and structures of
/// include/uapi/linux/userfaultfd.h (not in the libc crate).
mod uffd {
    pub const API: u64 = 0xAA;
    pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
    pub const REGISTER_MODE_WP: u64 = 1 << 1;
    pub const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
    /// _IOWR(0xAA, nr, size)
    const fn iowr(nr: u64, size: usize) -> u64 {
        (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
    }
    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Range {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct Register {
        pub range: Range,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct WriteProtect {
        pub range: Range,
        pub mode: u64,
    }
    pub const IOC_API: u64 = iowr(0x3F, std::mem::size_of::<Api>());
    pub const IOC_REGISTER: u64 = iowr(0x00, std::mem::size_of::<Register>());
    pub const IOC_WRITEPROTECT: u64 = iowr(0x06, std::mem::size_of::<WriteProtect>());
}

fn userfaultfd() -> CheckResult<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(Fail::Failed(format!("userfaultfd: {}", Errno::last())));
    }
    // SAFETY: the descriptor was just returned to us and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl<T>(fd: &OwnedFd, request: u64, arg: &mut T, what: &str) -> CheckResult {
    // SAFETY: `arg` is the structure this request reads and writes.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, arg as *mut T) };
    if rc < 0 {
        return Err(Fail::Failed(format!("{what}: {}", Errno::last())));
    }
    Ok(())
}

/// Write-protect `m` with userfaultfd (registered in WP mode, no handler
/// needed); the descriptor keeps the registration.
fn uffd_write_protect(m: &Mapping) -> CheckResult<OwnedFd> {
    // UFFDIO_API enables features once per descriptor: ask what there is
    // on one, then enable write-protection on another (the selftest's
    // two-step handshake).
    let probe = userfaultfd()?;
    let mut api = uffd::Api {
        api: uffd::API,
        features: 0,
        ioctls: 0,
    };
    ioctl(&probe, uffd::IOC_API, &mut api, "UFFDIO_API")?;
    if api.features & uffd::FEATURE_PAGEFAULT_FLAG_WP == 0 {
        return Err(Fail::Skip(
            "userfaultfd without UFFD_FEATURE_PAGEFAULT_FLAG_WP".into(),
        ));
    }
    drop(probe);
    let fd = userfaultfd()?;
    let mut api = uffd::Api {
        api: uffd::API,
        features: uffd::FEATURE_PAGEFAULT_FLAG_WP,
        ioctls: 0,
    };
    ioctl(&fd, uffd::IOC_API, &mut api, "UFFDIO_API with WP")?;
    let range = || uffd::Range {
        start: m.addr() as u64,
        len: m.len() as u64,
    };
    let mut register = uffd::Register {
        range: range(),
        mode: uffd::REGISTER_MODE_WP,
        ioctls: 0,
    };
    ioctl(
        &fd,
        uffd::IOC_REGISTER,
        &mut register,
        "UFFDIO_REGISTER (WP)",
    )?;
    let mut protect = uffd::WriteProtect {
        range: range(),
        mode: uffd::WRITEPROTECT_MODE_WP,
    };
    ioctl(
        &fd,
        uffd::IOC_WRITEPROTECT,
        &mut protect,
        "UFFDIO_WRITEPROTECT",
    )?;
    Ok(fd)
}

/// ksm_functional_tests' test_unmerge_uffd_wp: a merged area
/// write-protected with userfaultfd still unmerges with MADV_UNMERGEABLE
/// (the unshare fault is not a write fault userfaultfd would catch): every
/// page gets its own frame at once, the content stays, and once ksmd has
/// seen it nothing is merged.
fn uffd_write_protected(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 64;
    ctx.clean_slate()?;
    let m = super::mergeable(PAGES, 2)?;
    let mut stepper = start(ctx)?;
    stepper.settle(ctx, SETTLE, counts(1, PAGES as u64 - 1), "merged")?;
    let _uffd = uffd_write_protect(&m)?;
    call("madvise(MADV_UNMERGEABLE)", m.advise(Advice::Unmergeable))?;
    distinct_frames(&m, 0..PAGES, "unmerged write-protected pages")?;
    kpf_agrees(ctx, &m, |_| false)?;
    leave_ksm(ctx, &mut stepper)?;
    ensure_content(&m, |_| 2)
}

/// "never pagecache (file) pages", and which code refuses them. Three
/// mappings of one file of 16 identical pages, all read:
/// - MAP_SHARED: MADV_MERGEABLE succeeds and does nothing (ksm_madvise():
///   !vma_ksm_compatible(), VM_SHARED: the advice is ignored), no `mg`;
/// - MAP_PRIVATE, only read: advised (`mg`), but it has no anon_vma, so
///   scan_get_next_rmap_item() skips the whole area;
/// - MAP_PRIVATE, its first 8 pages written with the same bytes: the
///   copy-on-write copies are anonymous, the area has an anon_vma, and the
///   scan walks it: ksm_next_page_pmd_entry() passes over the 8 pagecache
///   pages (!folio_test_anon) and returns the 8 copies.
///
/// So this process has exactly 8 rmap_items, the 8 copies make one KSM
/// page (pages_sharing 7), and the pagecache pages stay on their frames,
/// the same in all three mappings. MADV_DONTNEED of 4 copies maps the
/// pagecache back under them when read: their rmap_items go, 4 copies stay
/// merged.
fn pagecache(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 16;
    let half = PAGES / 2;
    ctx.clean_slate()?;
    let file = super::madvise::tempfile_with_identical_pages(PAGES)?;
    let shared = Mapping::file_shared(file.as_fd(), PAGES)?;
    let read = Mapping::file_private(file.as_fd(), PAGES)?;
    let mut written = Mapping::file_private(file.as_fd(), PAGES)?;
    for m in [&shared, &read, &written] {
        ensure_content(m, |_| 1)?;
    }
    for i in 0..half {
        written.fill(i, 1);
    }
    for m in [&shared, &read, &written] {
        call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    }
    ensure!(
        !is_mergeable(shared.addr())?,
        "a MAP_SHARED file mapping got VM_MERGEABLE (mg)"
    );
    ensure!(
        is_mergeable(read.addr())? && is_mergeable(written.addr())?,
        "a MAP_PRIVATE file mapping was not marked mg"
    );
    let cache = pfns(&shared)?;
    ensure!(cache.iter().all(|f| *f != 0), "pagecache frames not seen");
    let mut stepper = start(ctx)?;
    stepper.settle(ctx, SETTLE, counts(1, half as u64 - 1), "merged")?;
    let rmap_items =
        || -> CheckResult<Option<i64>> { Ok(KsmStat::read(None)?.number("ksm_rmap_items")) };
    if let Some(n) = rmap_items()? {
        ensure_eq!(n, half as i64, "rmap_items of this process");
    }
    ensure_eq!(
        pfns(&read)?,
        cache,
        "frames of the read-only private mapping"
    );
    ensure_eq!(
        pfns(&written)?[half..],
        cache[half..],
        "frames of the pages not written"
    );
    let ksm_frame = one_frame(&written, 0..half)?;
    ensure!(
        !cache.contains(&ksm_frame),
        "the KSM page is a pagecache page"
    );

    let quarter = half / 2;
    call(
        "madvise(MADV_DONTNEED) of 4 copies",
        written.advise_pages(0, quarter, Advice::DontNeed),
    )?;
    ensure_content(&written, |_| 1)?; // faults the pagecache back in
    ensure_eq!(
        pfns(&written)?[..quarter],
        cache[..quarter],
        "frames of the discarded copies, read again"
    );
    stepper.settle(ctx, SETTLE, counts(1, quarter as u64 - 1), "4 copies left")?;
    if let Some(n) = rmap_items()? {
        ensure_eq!(n, quarter as i64, "rmap_items of this process");
    }
    ensure_content(&read, |_| 1)?;
    ensure_content(&shared, |_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
AnonHugePages:      2048 kB
VmFlags: rd wr mr mw me ac hg
7f0000200000-7f0000201000 rw-p 00000000 00:00 0
Size:                  4 kB
AnonHugePages:         0 kB
";

    #[test]
    fn anon_huge_pages_of_the_mapping_holding_an_address() {
        assert_eq!(anon_huge_kb_in(SMAPS, 0x7f0000100000), Some(2048));
        assert_eq!(anon_huge_kb_in(SMAPS, 0x7f0000200000), Some(0));
        assert_eq!(anon_huge_kb_in(SMAPS, 0x7f0000300000), None);
    }

    #[test]
    fn uffd_ioctl_numbers_match_the_uapi_header() {
        assert_eq!(uffd::IOC_API, 0xc018_aa3f);
        assert_eq!(uffd::IOC_REGISTER, 0xc020_aa00);
        assert_eq!(uffd::IOC_WRITEPROTECT, 0xc018_aa06);
    }
}
