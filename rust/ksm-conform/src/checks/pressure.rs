//! "Note: this unmerging call may suddenly require more memory than is
//! available - possibly failing with EAGAIN, but more probably arousing the
//! Out-Of-Memory killer." MADV_UNMERGEABLE runs in a child confined to a
//! memory cgroup too small for the unmerged pages: the call must fail with
//! EAGAIN (or ENOMEM), or the child be OOM-killed within its group.

use ksm::{Advice, Knob};

use super::mergeable;
use crate::child::{Child, Exit};
use crate::ctx::{CheckResult, Ctx, Fail};
use crate::registry::{Check, Req};
use crate::{ensure, ensure_eq};

pub const CHECKS: &[Check] = &[Check {
    name: "pressure/unmergeable_beyond_memory_limit_fails_or_is_oom_killed",
    requires: &[Req::Root, Req::Ksm, Req::MemoryCgroup],
    body: unmergeable_beyond_limit,
}];

const GROUP_PREFIX: &str = "ksm-conform-";
/// 32 MiB of identical pages: one KSM page when merged.
const PAGES: usize = 8192;
/// Head room above the merged usage: far less than unmerging needs.
const HEADROOM: u64 = 8 << 20;

fn unmergeable_beyond_limit(ctx: &mut Ctx) -> CheckResult {
    let memcg = ctx.env.memcg.clone().map_err(Fail::Skip)?;
    ctx.clean_slate()?;
    let mut group = memcg.create(
        ctx.session(),
        &format!("{GROUP_PREFIX}{}", std::process::id()),
    )?;
    let mut child = Child::spawn(|chan| {
        chan.recv()?; // moved into the cgroup
        let m = mergeable(PAGES, 1).map_err(|e| e.to_string())?;
        chan.send("ready");
        chan.recv()?; // limited
        match m.advise(Advice::Unmergeable) {
            Ok(()) => Ok("unmerged".into()),
            Err(e) => Ok(format!("{e:?}")),
        }
    })?;
    group.add(child.pid())?;
    child.send("go")?;
    ensure_eq!(child.recv()?, Some("ready".to_string()), "child");
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(Some(child.pid()), PAGES as u64, 5)?;
    ctx.set(Knob::Run, "0")?;
    let usage = group.usage()?;
    let limit = usage + HEADROOM;
    group.limit(limit)?;
    ctx.note(format!(
        "merged usage {} KiB, limit {} KiB",
        usage >> 10,
        limit >> 10
    ));
    child.send("unmerge")?;
    let (exit, verdict) = child.finish()?;
    let ooms = group.oom_kills()?;
    ctx.note(format!(
        "child: {exit:?}, {verdict:?}, oom kills in group {ooms}"
    ));
    match (exit, verdict.as_deref()) {
        (Exit::Code(0), Some("ok EAGAIN" | "ok ENOMEM")) => {}
        (Exit::Signal(nix::sys::signal::Signal::SIGKILL), _) => {
            // The child is the group's only process: one OOM kill.
            ensure_eq!(ooms, 1, "OOM kills in the group of the SIGKILLed child");
        }
        (Exit::Code(0), Some("ok unmerged")) => {
            return Err(Fail::Failed(format!(
                "MADV_UNMERGEABLE of {} MiB succeeded under a limit of {} KiB",
                (PAGES * ksm::mem::page_size()) >> 20,
                limit >> 10
            )));
        }
        other => {
            return Err(Fail::Failed(format!(
                "unexpected end of the child: {other:?}"
            )));
        }
    }
    group.remove()?;
    ensure!(
        !group.dir().exists(),
        "cgroup {} still exists",
        group.dir().display()
    );
    Ok(())
}
