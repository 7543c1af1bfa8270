//! madvise(MADV_MERGEABLE / MADV_UNMERGEABLE): "Controlling KSM with
//! madvise" in ksm.rst, and the errors mm/madvise.c returns.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ksm::mem::{madvise, page_size};
use ksm::procfs::{self, is_mergeable};
use ksm::{Advice, Knob, Mapping, Session, Undo};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::{ensure_content, mergeable};
use crate::child::in_child;
use crate::ctx::{CheckResult, Ctx, Fail, call};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq, helper};

pub const CHECKS: &[Check] = &[
    Check {
        name: "madvise/mergeable_and_unmergeable_succeed_on_private_anon",
        requires: &[Req::Ksm],
        body: mergeable_and_unmergeable_succeed,
    },
    Check {
        name: "madvise/unmergeable_on_never_advised_range_succeeds",
        requires: &[Req::Ksm],
        body: unmergeable_never_advised,
    },
    Check {
        name: "madvise/mergeable_registers_range_while_ksmd_is_stopped",
        requires: &[Req::Root, Req::Ksm],
        body: registers_while_stopped,
    },
    Check {
        name: "madvise/enomem_for_unmapped_gap_but_mapped_parts_advised",
        requires: &[Req::Ksm],
        body: enomem_on_unmapped_gap,
    },
    Check {
        name: "madvise/einval_for_bad_arguments",
        requires: &[Req::Ksm],
        body: einval_for_bad_arguments,
    },
    Check {
        name: "madvise/eagain_when_mm_slot_cannot_be_allocated",
        requires: &[Req::Root, Req::Ksm, Req::Failslab],
        body: eagain_when_mm_slot_cannot_be_allocated,
    },
    Check {
        name: "madvise/shared_anon_accepted_but_never_merged",
        requires: &[Req::Root, Req::Ksm],
        body: shared_anon_never_merged,
    },
    Check {
        name: "madvise/file_pagecache_never_merged_but_its_cow_copies_are",
        requires: &[Req::Root, Req::Ksm],
        body: file_pagecache_never_merged,
    },
    Check {
        name: "madvise/einval_without_ksm",
        requires: &[Req::NoKsm],
        body: einval_without_ksm,
    },
];

fn mergeable_and_unmergeable_succeed(_: &mut Ctx) -> CheckResult {
    let m = Mapping::anon(4)?;
    ensure!(
        !is_mergeable(m.addr())?,
        "a fresh mapping already has VM_MERGEABLE (mg)"
    );
    call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
    ensure!(
        is_mergeable(m.addr())?,
        "MADV_MERGEABLE succeeded but smaps VmFlags lacks mg"
    );
    call("madvise(MADV_UNMERGEABLE)", m.advise(Advice::Unmergeable))?;
    ensure!(
        !is_mergeable(m.addr())?,
        "MADV_UNMERGEABLE succeeded but smaps VmFlags still has mg"
    );
    Ok(())
}

/// "even if MADV_UNMERGEABLE is applied to a range which was never
/// MADV_MERGEABLE".
fn unmergeable_never_advised(_: &mut Ctx) -> CheckResult {
    let m = Mapping::anon(4)?;
    call(
        "madvise(MADV_UNMERGEABLE) on a never advised range",
        m.advise(Advice::Unmergeable),
    )?;
    ensure!(
        !is_mergeable(m.addr())?,
        "UNMERGEABLE made the range mergeable"
    );
    Ok(())
}

/// "even if the KSM daemon is not currently running, MADV_MERGEABLE still
/// registers the range for whenever the KSM daemon is started".
fn registers_while_stopped(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    ctx.set(Knob::Run, "0")?;
    let m = mergeable(8, 1)?;
    ensure!(
        is_mergeable(m.addr())?,
        "range not marked mg while ksmd is stopped"
    );
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 8, 5)?;
    ensure_content(&m, |_| 1)
}

/// "they will report ENOMEM if the specified range includes unmapped gaps
/// (though working on the intervening mapped areas)".
fn enomem_on_unmapped_gap(_: &mut Ctx) -> CheckResult {
    let mut m = Mapping::anon(3)?;
    m.punch_hole(1, 1)?;
    let (first, last) = (m.page_addr(0), m.page_addr(2));
    ensure_eq!(
        madvise(m.addr(), m.len(), Advice::Mergeable),
        Err(Errno::ENOMEM),
        "MADV_MERGEABLE over a gap"
    );
    ensure!(
        is_mergeable(first)? && is_mergeable(last)?,
        "the mapped pages around the gap were not advised (no mg in VmFlags)"
    );
    ensure_eq!(
        madvise(m.addr(), m.len(), Advice::Unmergeable),
        Err(Errno::ENOMEM),
        "MADV_UNMERGEABLE over a gap"
    );
    ensure!(
        !is_mergeable(first)? && !is_mergeable(last)?,
        "the mapped pages around the gap are still mg after UNMERGEABLE"
    );
    Ok(())
}

/// mm/madvise.c check_input_range(): EINVAL for an unaligned start, a
/// length that rounds up to zero, or a range that wraps; a zero length is
/// a successful no-op.
fn einval_for_bad_arguments(ctx: &mut Ctx) -> CheckResult {
    let m = Mapping::anon(2)?;
    let ps = page_size();
    let cases: [(&str, usize, usize, Result<(), Errno>); 5] = [
        (
            "start not page aligned",
            m.addr() + 1,
            ps,
            Err(Errno::EINVAL),
        ),
        (
            "start not page aligned, length 0",
            m.addr() + 1,
            0,
            Err(Errno::EINVAL),
        ),
        (
            "length rounds up to 0 (-1)",
            m.addr(),
            usize::MAX,
            Err(Errno::EINVAL),
        ),
        (
            "start + length wraps around",
            m.addr(),
            0usize.wrapping_sub(m.addr()),
            Err(Errno::EINVAL),
        ),
        ("length 0 (no-op)", m.addr(), 0, Ok(())),
    ];
    for advice in [Advice::Mergeable, Advice::Unmergeable] {
        for (what, addr, len, want) in cases {
            let got = madvise(addr, len, advice);
            ensure_eq!(got, want, "{advice:?} with {what}");
            ctx.note(format!("{advice:?} {what}: {got:?}"));
        }
    }
    Ok(())
}

/// "If KSM is not configured into the running kernel, madvise
/// MADV_MERGEABLE and MADV_UNMERGEABLE simply fail with EINVAL."
fn einval_without_ksm(_: &mut Ctx) -> CheckResult {
    let m = Mapping::anon(2)?;
    ensure_eq!(
        m.advise(Advice::Mergeable),
        Err(Errno::EINVAL),
        "MADV_MERGEABLE without KSM"
    );
    ensure_eq!(
        m.advise(Advice::Unmergeable),
        Err(Errno::EINVAL),
        "MADV_UNMERGEABLE without KSM"
    );
    Ok(())
}

/// "might fail with EAGAIN if not enough memory for internal structures":
/// the first MADV_MERGEABLE of an mm allocates its mm_slot; with failslab
/// failing that allocation, mm/madvise.c turns ksm_madvise()'s -ENOMEM into
/// -EAGAIN. The madvise runs in a fresh exec (never registered with KSM).
fn eagain_when_mm_slot_cannot_be_allocated(ctx: &mut Ctx) -> CheckResult {
    let _debugfs = Debugfs::ensure(ctx.session())?;
    let mut failslab = Failslab::new(ctx.session(), FAILSLAB);
    failslab.arm()?;
    let out = helper::run("madvise-with-failing-slab");
    let left = failslab.read("times")?;
    failslab.restore()?;
    let out = out?;
    ctx.note(format!("helper: {out}; failslab times left {left}"));
    ensure!(
        left == "0",
        "the injected slab failure was never consumed (times {left})"
    );
    ensure!(
        out.starts_with("first=EAGAIN "),
        "first MADV_MERGEABLE with a failing slab: {out}"
    );
    ensure!(
        out.contains(" mg=false "),
        "VM_MERGEABLE was set despite the failure: {out}"
    );
    ensure!(
        out.ends_with(" retry=0"),
        "MADV_MERGEABLE did not succeed once the slab recovered: {out}"
    );
    Ok(())
}

/// The helper side: runs in a fresh exec. Prints "first=<errno> mg=<bool>
/// retry=<errno>".
pub fn helper_madvise_with_failing_slab() -> Result<String, String> {
    let m = Mapping::anon(4).map_err(|e| e.to_string())?;
    // Opened before failures start: opening allocates from slab.
    let mut make_it_fail = fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/make-it-fail")
        .map_err(|e| format!("make-it-fail: {e}"))?;
    make_it_fail
        .write_all(b"1")
        .map_err(|e| format!("make-it-fail: {e}"))?;
    let first = m.advise(Advice::Mergeable);
    make_it_fail
        .write_all(b"0")
        .map_err(|e| format!("make-it-fail: {e}"))?;
    let mg = is_mergeable(m.addr()).map_err(|e| e.to_string())?;
    let retry = m.advise(Advice::Mergeable);
    let name = |r: Result<(), Errno>| r.map_or_else(|e| format!("{e:?}"), |_| "0".to_string());
    Ok(format!(
        "first={} mg={mg} retry={}",
        name(first),
        name(retry)
    ))
}

/// ksm.rst: "KSM only merges anonymous (private) pages"; ksm_compatible()
/// ignores the advice for VM_SHARED, so madvise succeeds without marking.
fn shared_anon_never_merged(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let mut shared = Mapping::shared_anon(16)?;
    for i in 0..16 {
        shared.fill(i, 1);
    }
    call(
        "madvise(MADV_MERGEABLE) on MAP_SHARED",
        shared.advise(Advice::Mergeable),
    )?;
    ensure!(
        !is_mergeable(shared.addr())?,
        "MAP_SHARED anonymous mapping got VM_MERGEABLE (mg)"
    );
    // A private control area proves ksmd ran and merged what it could.
    let control = mergeable(2, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 2, 5)?;
    ctx.wait_scans(2)?;
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        2,
        "merging pages (control only)"
    );
    // Identical shmem pages on frames of their own: not merged.
    super::distinct_frames(&shared, 0..16, "MAP_SHARED pages")?;
    super::kpf_agrees(ctx, &shared, |_| false)?;
    ensure_content(&shared, |_| 1)?;
    ensure_content(&control, |_| 1)
}

/// Pagecache pages are never merged, even in a private file mapping that
/// 7.3's ksm_compatible() accepts (only DAX files are refused); the
/// anonymous copies a write makes in that mapping are ordinary KSM fodder.
fn file_pagecache_never_merged(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 8;
    ctx.clean_slate()?;
    let file = tempfile_with_identical_pages(PAGES)?;
    let mut m = Mapping::file_private(file.as_fd(), PAGES)?;
    ensure_content(&m, |_| 1)?; // fault the pagecache pages in, read-only
    call(
        "madvise(MADV_MERGEABLE) on a private file mapping",
        m.advise(Advice::Mergeable),
    )?;
    ctx.note(format!(
        "private file mapping marked mg: {}",
        is_mergeable(m.addr())?
    ));
    let control = mergeable(2, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 2, 5)?;
    ctx.wait_scans(2)?;
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        2,
        "merging pages with pagecache present (control only)"
    );
    // Copy-on-write: the same bytes, now in anonymous pages.
    for i in 0..PAGES {
        m.fill(i, 1);
    }
    ctx.wait_merging_pages(None, 2 + PAGES as u64, 5)?;
    ensure_content(&m, |_| 1)?;
    ensure_content(&control, |_| 1)
}

/// A file of `pages` identical pages (seed 1), unlinked.
pub(super) fn tempfile_with_identical_pages(pages: usize) -> CheckResult<fs::File> {
    let mut file = tempfile()?;
    let mut page = Mapping::anon(1)?;
    page.fill(0, 1);
    for _ in 0..pages {
        file.write_all(page.page(0))?;
    }
    file.sync_all()?;
    Ok(file)
}

fn tempfile() -> CheckResult<fs::File> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("ksm-conform-{}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

const DEBUGFS: &str = "/sys/kernel/debug";
const FAILSLAB: &str = "/sys/kernel/debug/failslab";

/// debugfs mounted for as long as this lives; unmounted again if we
/// mounted it (journaled: a signal or the next run unmounts it otherwise).
struct Debugfs<'s> {
    session: &'s Session,
    mounted: Option<Undo>,
}

impl<'s> Debugfs<'s> {
    fn ensure(session: &'s Session) -> CheckResult<Debugfs<'s>> {
        if Path::new(FAILSLAB).exists() {
            return Ok(Debugfs {
                session,
                mounted: None,
            });
        }
        let undo = Undo::Unmount(DEBUGFS.into());
        session
            .change(undo.clone(), mount_debugfs)
            .map_err(|e| Fail::Skip(e.to_string()))?;
        Ok(Debugfs {
            session,
            mounted: Some(undo),
        })
    }
}

impl Drop for Debugfs<'_> {
    fn drop(&mut self) {
        if let Some(undo) = &self.mounted {
            if let Err(e) = self.session.undo(undo) {
                eprintln!("ksm-conform: {e}");
            }
        }
    }
}

fn mount_debugfs() -> ksm::Result<()> {
    mount(
        Some("debugfs"),
        DEBUGFS,
        Some("debugfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| ksm::Error::File {
        op: "mount debugfs on",
        path: DEBUGFS.into(),
        errno,
    })
}

/// Whether failslab and per-task fault injection are available. Where
/// debugfs is not mounted, a child looks in a mount namespace of its own:
/// probing leaves no mount behind, whatever happens to this process.
pub fn probe_failslab() -> Result<(), String> {
    if !Path::new("/proc/self/make-it-fail").exists() {
        return Err("kernel has no fault injection (/proc/self/make-it-fail absent, CONFIG_FAULT_INJECTION=n)".into());
    }
    let has_failslab = || Path::new(FAILSLAB).join("probability").exists();
    if has_failslab() {
        return Ok(());
    }
    in_child(|| {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private in a new mount namespace: {e}"))?;
        mount_debugfs().map_err(|e| e.to_string())?;
        if has_failslab() {
            Ok(String::new())
        } else {
            Err(
                "no failslab in debugfs (CONFIG_FAILSLAB or CONFIG_FAULT_INJECTION_DEBUG_FS off)"
                    .into(),
            )
        }
    })
    .map(drop)
    .map_err(|e| e.to_string())
}

/// failslab's debugfs attributes (in `dir`): each is journaled with its
/// original value before its first change and put back on restore or drop,
/// the last changed first.
struct Failslab<'s> {
    session: &'s Session,
    dir: PathBuf,
    saved: Vec<Undo>,
}

/// Only with CONFIG_FAULT_INJECTION_STACKTRACE_FILTER.
const STACKTRACE_FILTER: [&str; 4] = ["require-start", "require-end", "reject-start", "reject-end"];

impl<'s> Failslab<'s> {
    fn new(session: &'s Session, dir: impl Into<PathBuf>) -> Self {
        Failslab {
            session,
            dir: dir.into(),
            saved: Vec::new(),
        }
    }

    /// Fail the next slab allocation of a task with make-it-fail, and only
    /// that one, wherever it comes from: none of the host's filters (cache,
    /// gfp, call site) may keep it away.
    fn arm(&mut self) -> CheckResult {
        let any_address = format!("{:#x}", libc::c_ulong::MAX);
        for (attr, value) in [
            ("task-filter", "Y"),
            ("cache-filter", "N"),
            ("ignore-gfp-wait", "N"),
            ("require-start", "0"),
            ("require-end", any_address.as_str()),
            ("reject-start", "0"),
            ("reject-end", "0"),
            ("space", "0"),
            ("verbose", "0"),
            ("interval", "1"),
            ("times", "1"),
            // Last, so that the restore disarms it first.
            ("probability", "100"),
        ] {
            if STACKTRACE_FILTER.contains(&attr) && !self.dir.join(attr).exists() {
                continue;
            }
            self.set(attr, value)?;
        }
        Ok(())
    }

    fn read(&self, attr: &str) -> CheckResult<String> {
        let path = self.dir.join(attr);
        Ok(fs::read_to_string(&path)
            .map_err(|e| Fail::Failed(format!("{}: {e}", path.display())))?
            .trim()
            .to_string())
    }

    fn set(&mut self, attr: &str, value: &str) -> CheckResult {
        let path = self.dir.join(attr);
        let write = || {
            fs::write(&path, value)
                .map_err(|e| ksm::Error::Other(format!("{} <- {value}: {e}", path.display())))
        };
        if self.saved.iter().any(|u| u.path() == path) {
            return Ok(write()?);
        }
        let undo = Undo::Write {
            path: path.clone(),
            value: self.read(attr)?,
        };
        self.session.change(undo.clone(), write)?;
        self.saved.push(undo);
        Ok(())
    }

    fn restore(&mut self) -> CheckResult {
        while let Some(undo) = self.saved.last() {
            self.session.undo(undo)?;
            self.saved.pop();
        }
        Ok(())
    }
}

impl Drop for Failslab<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("ksm-conform: restoring failslab: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksm::Sysfs;
    use ksm::journal::Journal;

    /// The attributes of a host with filters set come back as they were;
    /// probability is journaled last, so it is put back first.
    #[test]
    fn failslab_is_armed_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let host = [
            ("task-filter", "N"),
            ("cache-filter", "Y"),
            ("ignore-gfp-wait", "Y"),
            ("space", "0"),
            ("verbose", "2"),
            ("interval", "1"),
            ("times", "-1"),
            ("probability", "0"),
        ];
        for (attr, value) in host {
            fs::write(dir.path().join(attr), format!("{value}\n")).unwrap();
        }
        let session = Session::open(Sysfs::at(state.path().join("no-ksm")), state.path()).unwrap();
        let mut failslab = Failslab::new(&session, dir.path());
        failslab.arm().unwrap();
        assert_eq!(failslab.read("cache-filter").unwrap(), "N");
        assert_eq!(failslab.read("probability").unwrap(), "100");
        assert!(!dir.path().join("require-end").exists());
        let journal = Journal::load(&session.journal_path()).unwrap().unwrap();
        assert_eq!(journal.undo.len(), host.len());
        assert_eq!(
            journal.undo.last().unwrap().path(),
            dir.path().join("probability")
        );
        drop(failslab);
        for (attr, value) in host {
            assert_eq!(
                fs::read_to_string(dir.path().join(attr)).unwrap(),
                value,
                "{attr}"
            );
        }
        assert!(!session.journal_path().exists());
    }
}
