//! The per-process interface: prctl(PR_SET_MEMORY_MERGE) ("The KSM profit
//! inner a single process"), /proc/<pid>/ksm_stat and ksm_merging_pages.

use ksm::kernel::Version;
use ksm::mem::{
    PR_GET_MEMORY_MERGE, PR_SET_MEMORY_MERGE, get_memory_merge, prctl, set_memory_merge,
};
use ksm::procfs::{self, KsmStat, is_mergeable};
use ksm::{Advice, Knob, Mapping, Sysfs};
use nix::errno::Errno;

use super::trees::{Fleet, SETTLE};
use super::{mergeable, one_frame};
use crate::child::{Child, in_child};
use crate::ctx::{CheckResult, Ctx, TIMEOUT};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::worker::Kind;
use crate::{ensure, ensure_eq, helper};

pub const CHECKS: &[Check] = &[
    Check {
        name: "process/prctl_memory_merge_set_and_get",
        requires: &[Req::Ksm, Req::MemoryMergePrctl],
        body: prctl_set_get,
    },
    Check {
        name: "process/prctl_memory_merge_inherited_by_fork_and_exec",
        requires: &[Req::Root, Req::Ksm, Req::MemoryMergePrctl],
        body: prctl_inherited,
    },
    Check {
        name: "process/ksm_stat_has_the_fields_of_this_kernel",
        requires: &[Req::Ksm],
        body: ksm_stat_fields,
    },
    Check {
        name: "process/ksm_merging_pages_of_another_process",
        requires: &[Req::Root, Req::Ksm],
        body: merging_pages_of_another_process,
    },
    Check {
        name: "process/prctl_memory_merge_0_unmerges_every_area",
        requires: &[Req::Root, Req::Ksm, Req::MemoryMergePrctl, Req::SoleKsmUser],
        body: prctl_unmerges,
    },
    Check {
        name: "process/forked_child_maps_the_ksm_page_and_counts_it_once_scanned",
        requires: &[Req::Root, Req::Ksm, Req::SoleKsmUser],
        body: forked_child_counts_once_scanned,
    },
    Check {
        name: "process/prctl_einval_without_ksm",
        requires: &[Req::NoKsm],
        body: prctl_without_ksm,
    },
];

fn errno<T>(r: Result<T, Errno>) -> String {
    r.map_or_else(|e| format!("{e:?}"), |_| "ok".into())
}

/// PR_SET_MEMORY_MERGE=1 makes every compatible VMA mergeable, now and
/// later; 0 undoes it; PR_GET_MEMORY_MERGE reports it; unused arguments
/// must be 0 (kernel/sys.c).
fn prctl_set_get(_: &mut Ctx) -> CheckResult {
    in_child(|| {
        let before = Mapping::anon(2).map_err(|e| e.to_string())?;
        let mg = |m: &Mapping| is_mergeable(m.addr()).map_err(|e| e.to_string());
        let merge_any = || {
            KsmStat::read(None)
                .map(|s| s.flag("ksm_merge_any"))
                .map_err(|e| e.to_string())
        };
        if get_memory_merge() != Ok(false) {
            return Err(format!(
                "PR_GET_MEMORY_MERGE in a fresh child: {:?}",
                get_memory_merge()
            ));
        }
        set_memory_merge(true).map_err(|e| format!("PR_SET_MEMORY_MERGE 1: {e}"))?;
        if get_memory_merge() != Ok(true) {
            return Err(format!(
                "PR_GET_MEMORY_MERGE after set: {:?}",
                get_memory_merge()
            ));
        }
        let after = Mapping::anon(2).map_err(|e| e.to_string())?;
        if !mg(&before)? || !mg(&after)? {
            return Err("PR_SET_MEMORY_MERGE 1 left a mapping without mg".into());
        }
        if merge_any()? == Some(false) {
            return Err("ksm_stat says ksm_merge_any: no after PR_SET_MEMORY_MERGE 1".into());
        }
        set_memory_merge(false).map_err(|e| format!("PR_SET_MEMORY_MERGE 0: {e}"))?;
        if get_memory_merge() != Ok(false) || mg(&before)? || mg(&after)? {
            return Err("PR_SET_MEMORY_MERGE 0 did not undo the merging".into());
        }
        let bad_set = prctl(PR_SET_MEMORY_MERGE, [1, 1, 0, 0]);
        let bad_get = prctl(PR_GET_MEMORY_MERGE, [1, 0, 0, 0]);
        if bad_set != Err(Errno::EINVAL) || bad_get != Err(Errno::EINVAL) {
            return Err(format!(
                "non-zero unused arguments: set {}, get {} (expected EINVAL)",
                errno(bad_set),
                errno(bad_get)
            ));
        }
        Ok(String::new())
    })?;
    Ok(())
}

/// MMF_VM_MERGE_ANY is inherited by fork and kept across execve, and the
/// child's new memory merges with no madvise at all. (All of the child's
/// anonymous memory is mergeable then, so its ksm_merging_pages may count
/// more than our pages: the pages sharing one frame tell that ours merged.)
///
/// The process that sets the prctl is a fresh exec, not a fork of this
/// one: with all its memory mergeable, ksmd turns the pages a fork still
/// shares copy-on-write with its parent into KSM pages, which the parent
/// then maps in areas it never advised, where run=2 cannot unmerge them
/// (merge_across_nodes and max_page_sharing stay EBUSY while it lives).
fn prctl_inherited(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    ctx.start_ksmd()?;
    helper::run("memory-merge-inherited")?;
    Ok(())
}

/// The helper side of prctl_inherited, in a fresh exec.
pub fn helper_memory_merge_inherited() -> Result<String, String> {
    const PAGES: u64 = 8;
    set_memory_merge(true).map_err(|e| format!("PR_SET_MEMORY_MERGE: {e}"))?;
    let exec_view = helper::run("get-memory-merge").map_err(|e| e.to_string())?;
    if exec_view != "1" {
        return Err(format!("PR_GET_MEMORY_MERGE after execve: {exec_view}"));
    }
    in_child(|| {
        if get_memory_merge() != Ok(true) {
            return Err(format!(
                "PR_GET_MEMORY_MERGE in the forked child: {:?}",
                get_memory_merge()
            ));
        }
        let mut m = Mapping::anon(PAGES as usize).map_err(|e| e.to_string())?;
        for i in 0..PAGES as usize {
            m.fill(i, 1);
        }
        ksm::scan::wait_within_scans(&Sysfs::system(), "child pages merged", 5, TIMEOUT, || {
            let first = procfs::pagemap(m.page_addr(0))?.pfn();
            for i in 0..PAGES as usize {
                if first == 0 || procfs::pagemap(m.page_addr(i))?.pfn() != first {
                    return Ok(false);
                }
            }
            Ok(procfs::ksm_merging_pages(None)? >= PAGES)
        })
        .map_err(|e| format!("forked child without madvise: {e}"))?;
        Ok(String::new())
    })
    .map_err(|e| e.to_string())
}

/// Which ksm_stat fields each kernel has (fs/proc/base.c).
pub const KSM_STAT_FIELDS: &[(&str, Version)] = &[
    ("ksm_rmap_items", Version::new(6, 1)),
    ("ksm_merging_pages", Version::new(6, 4)),
    ("ksm_process_profit", Version::new(6, 4)),
    ("ksm_zero_pages", Version::new(6, 5)),
    ("ksm_merge_any", Version::new(6, 14)),
    ("ksm_mergeable", Version::new(6, 14)),
];

fn ksm_stat_fields(ctx: &mut Ctx) -> CheckResult {
    let Some(version) = ctx.env.version else {
        return Err(crate::Fail::Skip(format!(
            "cannot parse kernel release {:?}",
            ctx.env.release
        )));
    };
    let expected: Vec<&str> = KSM_STAT_FIELDS
        .iter()
        .filter(|(_, since)| *since <= version)
        .map(|(f, _)| *f)
        .collect();
    let report = in_child(move || {
        let stat = KsmStat::read(None).map_err(|e| e.to_string())?;
        let fields = stat.fields();
        let missing: Vec<_> = expected.iter().filter(|f| !fields.contains(f)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "/proc/self/ksm_stat lacks {missing:?} (has {fields:?})"
            ));
        }
        if stat.flag("ksm_mergeable") == Some(true) {
            return Err("ksm_mergeable: yes before any madvise".into());
        }
        let m = Mapping::anon(2).map_err(|e| e.to_string())?;
        m.advise(Advice::Mergeable)
            .map_err(|e| format!("madvise: {e}"))?;
        let stat = KsmStat::read(None).map_err(|e| e.to_string())?;
        if stat.flag("ksm_mergeable") == Some(false) {
            return Err("ksm_mergeable: no with a MADV_MERGEABLE area".into());
        }
        let file = procfs::ksm_merging_pages(None).map_err(|e| e.to_string())?;
        if let Some(n) = stat.number("ksm_merging_pages") {
            if n != file as i64 {
                return Err(format!(
                    "ksm_stat ksm_merging_pages {n} != ksm_merging_pages file {file}"
                ));
            }
        }
        Ok(format!("{fields:?}"))
    })?;
    ctx.note(format!("ksm_stat fields: {report}"));
    Ok(())
}

/// /proc/<pid>/ksm_merging_pages and ksm_stat describe that pid's mm.
fn merging_pages_of_another_process(ctx: &mut Ctx) -> CheckResult {
    const PAGES: u64 = 8;
    ctx.clean_slate()?;
    let mut child = Child::spawn(|chan| {
        let _m = mergeable(PAGES as usize, 1).map_err(|e| e.to_string())?;
        chan.send("ready");
        chan.recv()?;
        Ok(String::new())
    })?;
    ensure_eq!(child.recv()?, Some("ready".to_string()), "child");
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(Some(child.pid()), PAGES, 5)?;
    if let Some(n) = KsmStat::read(Some(child.pid()))?.number("ksm_merging_pages") {
        ensure_eq!(
            n,
            PAGES as i64,
            "ksm_merging_pages in /proc/{}/ksm_stat",
            child.pid()
        );
    }
    ensure_eq!(
        procfs::ksm_merging_pages(None)?,
        0,
        "our own ksm_merging_pages"
    );
    child.send("done")?;
    child.expect_ok()?;
    Ok(())
}

/// ksm_functional_tests' test_prctl_unmerge: in a fresh exec (so that no
/// page it shares with the runner merges) PR_SET_MEMORY_MERGE 1 makes a
/// new mapping mergeable without madvise, and its 64 identical pages merge
/// onto one frame; PR_SET_MEMORY_MERGE 0 unmerges every area at once
/// (ksm_disable_merge_any(): each page on its own frame), and the next
/// scan frees the process's rmap_items: ksm_merging_pages 0 and, as
/// nothing else is merged, every counter 0.
fn prctl_unmerges(ctx: &mut Ctx) -> CheckResult {
    const PAGES: usize = 64;
    ctx.clean_slate()?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let mut fleet = Fleet::spawn(&[Kind::Exec])?;
    let worker = &mut fleet.workers[0];
    worker.call("merge-any 1")?;
    worker.call(&format!("map m {PAGES}"))?;
    worker.call(&format!("fill m 0 {PAGES} 1"))?;
    let pid = worker.pid();
    let mut stepper = Stepper::start(ctx)?;
    stepper.steps(ctx, SETTLE)?;
    let frames = fleet.workers[0].numbers("frames m")?;
    ensure!(
        frames[0] != 0 && frames.iter().all(|f| *f == frames[0]),
        "pages of a PR_SET_MEMORY_MERGE process did not merge: {frames:?}"
    );
    ensure!(
        procfs::ksm_merging_pages(Some(pid))? >= PAGES as u64,
        "ksm_merging_pages of the process below its {PAGES} merged pages"
    );
    fleet.workers[0].call("merge-any 0")?;
    let mut frames = fleet.workers[0].numbers("frames m")?;
    frames.sort_unstable();
    frames.dedup();
    ensure_eq!(frames.len(), PAGES, "frames after PR_SET_MEMORY_MERGE 0");
    stepper.step(ctx)?;
    ensure_eq!(
        procfs::ksm_merging_pages(Some(pid))?,
        0,
        "ksm_merging_pages after PR_SET_MEMORY_MERGE 0 and a scan"
    );
    if let Some(merge_any) = KsmStat::read(Some(pid))?.flag("ksm_merge_any") {
        ensure!(!merge_any, "ksm_merge_any still yes");
    }
    expect(
        ctx,
        Counters::default(),
        "PR_SET_MEMORY_MERGE 0, one scan later",
    )?;
    fleet.verify()
}

/// ksm_functional_tests' test_fork_ksm_merging_page_count, and what comes
/// after: a child forked from a process with 64 pages on one KSM page maps
/// that KSM page too (fork copies the page table entries) but counts no
/// ksm_merging_pages, and the global counters do not move, until ksmd has
/// scanned it: then each of its pages joins the KSM page's stable node at
/// once ("ksm page forked": stable_tree_search() returns the page itself,
/// and max_page_sharing may be exceeded), so after one scan pages_sharing
/// is 63 + 64 = 127 and the child counts 64. When it exits, the scan after
/// takes its 64 rmap_items out again: pages_sharing 63.
fn forked_child_counts_once_scanned(ctx: &mut Ctx) -> CheckResult {
    const PAGES: u64 = 64;
    ctx.clean_slate()?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let m = mergeable(PAGES as usize, 1)?;
    let mut stepper = Stepper::start(ctx)?;
    let parent_only = Counters {
        shared: 1,
        sharing: PAGES - 1,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, parent_only, "merged in the parent")?;
    let ksm_frame = one_frame(&m, 0..PAGES as usize)?;
    let (addr, pages) = (m.addr(), m.pages());
    let mut child = Child::spawn(move |chan| {
        let merging = procfs::ksm_merging_pages(None).map_err(|e| e.to_string())?;
        let frames = (0..pages)
            .map(|i| procfs::pagemap(addr + i * ksm::mem::page_size()).map(|e| e.pfn()))
            .collect::<ksm::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let one = frames.iter().all(|f| *f == frames[0]);
        chan.send(&format!("{merging} {} {one}", frames[0]));
        chan.recv()?;
        Ok(String::new())
    })?;
    let report = child.recv()?.unwrap_or_default();
    ensure_eq!(
        report,
        format!("0 {ksm_frame} true"),
        "the forked child's ksm_merging_pages, frame, and one frame for all"
    );
    expect(ctx, parent_only, "forked, not yet scanned")?;
    stepper.step(ctx)?;
    let with_child = Counters {
        sharing: 2 * PAGES - 1,
        ..parent_only
    };
    expect(ctx, with_child, "the child scanned once")?;
    ensure_eq!(
        procfs::ksm_merging_pages(Some(child.pid()))?,
        PAGES,
        "the forked child's ksm_merging_pages once scanned"
    );
    child.send("exit")?;
    child.expect_ok()?;
    stepper.step(ctx)?;
    expect(ctx, parent_only, "the child gone")?;
    super::ensure_content(&m, |_| 1)
}

/// kernel/sys.c only knows the KSM prctls with CONFIG_KSM.
fn prctl_without_ksm(_: &mut Ctx) -> CheckResult {
    ensure_eq!(
        get_memory_merge(),
        Err(Errno::EINVAL),
        "PR_GET_MEMORY_MERGE without KSM"
    );
    let r = in_child(|| match set_memory_merge(true) {
        Err(Errno::EINVAL) => Ok(String::new()),
        other => Err(format!(
            "PR_SET_MEMORY_MERGE 1 without KSM: {other:?}, expected EINVAL"
        )),
    });
    ensure!(r.is_ok(), "{}", r.unwrap_err());
    Ok(())
}
