//! Merging in confined processes, as LTP's ksm02, ksm03 and ksm04 run it:
//! ksm01's steps (trees::ksm01_steps, exact counters at every step) with
//! the three processes bound to a NUMA node by set_mempolicy(MPOL_BIND)
//! or by a cpuset, and under a memory cgroup's limit. Pages, the KSM pages
//! among them, stay on the node; merged pages are uncharged from the
//! memory cgroup, so the memory they held can be used again under the same
//! limit.

use ksm::Knob;

use super::trees::{D_EVERYWHERE, Fleet, LAID_OUT, ksm01_steps};
use crate::cgroup::Group;
use crate::ctx::{CheckResult, Ctx, Fail};
use crate::ensure_eq;
use crate::registry::{Check, Req};
use crate::worker::Kind;

pub const CHECKS: &[Check] = &[
    Check {
        name: "placement/merging_under_set_mempolicy_keeps_pages_on_the_node",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::NumaNodes(2),
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: under_mempolicy,
    },
    Check {
        name: "placement/merging_in_a_cpuset_keeps_pages_on_its_node",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::NumaNodes(2),
            Req::Cpuset,
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: in_cpuset,
    },
    Check {
        name: "placement/merged_pages_are_uncharged_under_a_memory_limit",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::MemoryCgroup,
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: under_memory_limit,
    },
    Check {
        name: "placement/merging_in_a_cpuset_under_a_memory_limit",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::NumaNodes(2),
            Req::Cpuset,
            Req::MemoryCgroup,
            Req::Knob(Knob::MaxPageSharing),
            Req::SoleKsmUser,
        ],
        body: in_cpuset_under_memory_limit,
    },
];

/// Pages per process, as in trees/rewritten_contents_remerge_by_content.
const PAGES: u64 = 64;
/// Pages per process under a memory limit: enough that what merging frees
/// is more than the limit's head room.
const LIMITED_PAGES: u64 = 512;
/// Head room of the memory limit above the usage with every page written
/// and none merged: about what the transient copies of a step need, and
/// less than what merging frees.
const HEADROOM_PAGES: u64 = 512;
const KINDS: [Kind; 3] = [Kind::Fork, Kind::Exec, Kind::Fork];

/// The last memory node: not the one a process starts on by default.
fn target_node(ctx: &Ctx) -> usize {
    *ctx.env.memory_nodes.last().expect("NumaNodes(2)")
}

fn cgroup_name(what: &str) -> String {
    format!("ksm-conform-{}-{what}", std::process::id())
}

/// As LTP does: pages from different nodes may merge (they are all on one
/// node here anyway).
fn across_nodes(ctx: &mut Ctx) -> CheckResult {
    if ctx.sysfs().has(Knob::MergeAcrossNodes) {
        ctx.set(Knob::MergeAcrossNodes, "1")?;
    }
    Ok(())
}

/// Every page of every worker, KSM pages included, is on `node`.
fn on_node(fleet: &mut Fleet, node: usize, when: &str) -> CheckResult {
    for (w, worker) in fleet.workers.iter_mut().enumerate() {
        let nodes = worker.numbers("nodes m")?;
        let elsewhere: Vec<u64> = nodes.into_iter().filter(|n| *n != node as u64).collect();
        ensure_eq!(
            elsewhere,
            Vec::<u64>::new(),
            "{when}: nodes of worker {w}'s pages that are not node {node}"
        );
    }
    Ok(())
}

/// LTP ksm02's first half: every process bound to the node with
/// set_mempolicy(MPOL_BIND) before it allocates.
fn under_mempolicy(ctx: &mut Ctx) -> CheckResult {
    let node = target_node(ctx);
    ctx.clean_slate()?;
    across_nodes(ctx)?;
    let mut fleet = Fleet::spawn(&KINDS)?;
    for w in &mut fleet.workers {
        w.call(&format!("bind {node}"))?;
    }
    ksm01_steps(ctx, &mut fleet, PAGES, &mut |_, fleet, when| {
        on_node(fleet, node, when)
    })
}

/// The workers join `groups` before they allocate anything.
fn join(fleet: &Fleet, groups: &[Group]) -> CheckResult {
    for group in groups {
        for w in &fleet.workers {
            group.add(w.pid())?;
        }
    }
    Ok(())
}

/// LTP ksm02's second half: the processes in a cpuset whose only memory
/// node is the node.
fn in_cpuset(ctx: &mut Ctx) -> CheckResult {
    let node = target_node(ctx);
    let cpuset = ctx.env.cpuset.clone().map_err(Fail::Skip)?;
    ctx.clean_slate()?;
    across_nodes(ctx)?;
    let group = cpuset.create(ctx.session(), &cgroup_name("cpuset"))?;
    group.confine_to_node(node)?;
    let mut fleet = Fleet::spawn(&KINDS)?;
    join(&fleet, std::slice::from_ref(&group))?;
    ksm01_steps(ctx, &mut fleet, PAGES, &mut |_, fleet, when| {
        on_node(fleet, node, when)
    })?;
    drop(fleet);
    let mut group = group;
    group.remove()?;
    Ok(())
}

/// What the memory-limited variants do at the hook of ksm01_steps: once
/// every page is written, limit the group to that usage plus head room
/// (swap off for it); once everything is 'd' and merged on one page, one
/// process maps and writes 2N new pages of distinct content, which fits
/// only if the 3N - 1 pages merging freed were uncharged. No process may
/// be OOM-killed.
fn memory_limit_hook(
    ctx: &mut Ctx,
    fleet: &mut Fleet,
    memcg: &Group,
    n: u64,
    when: &str,
) -> CheckResult {
    let page = ksm::mem::page_size() as u64;
    if when == LAID_OUT {
        let usage = memcg.usage()?;
        let limit = usage + HEADROOM_PAGES * page;
        memcg.limit(limit)?;
        ctx.note(format!(
            "usage with {} pages written {} KiB, limit {} KiB",
            3 * n,
            usage >> 10,
            limit >> 10
        ));
    } else if when == D_EVERYWHERE {
        let before = memcg.usage()?;
        let extra = 2 * n;
        let seeds: Vec<String> = (0..extra).map(|i| (90_000 + i).to_string()).collect();
        let worker = &mut fleet.workers[0];
        worker.call(&format!("map extra {extra}"))?;
        worker.call(&format!("seeds extra 0 {}", seeds.join(",")))?;
        worker.call("verify extra")?;
        let during = memcg.usage()?;
        worker.call("unmap extra")?;
        ctx.note(format!(
            "usage merged {} KiB, with {extra} more pages {} KiB",
            before >> 10,
            during >> 10
        ));
    }
    ensure_eq!(memcg.oom_kills()?, 0, "OOM kills in the memory cgroup");
    Ok(())
}

/// LTP ksm03: ksm01's steps in a memory cgroup, with a limit. N is 512
/// pages here, the head room 512 pages, and the new pages 1024: without
/// the uncharge of merged pages they would need 2N + 512 pages over the
/// limit.
fn under_memory_limit(ctx: &mut Ctx) -> CheckResult {
    let memcg = ctx.env.memcg.clone().map_err(Fail::Skip)?;
    ctx.clean_slate()?;
    let mut group = memcg.create(ctx.session(), &cgroup_name("memory"))?;
    let mut fleet = Fleet::spawn(&KINDS)?;
    join(&fleet, std::slice::from_ref(&group))?;
    ksm01_steps(ctx, &mut fleet, LIMITED_PAGES, &mut |ctx, fleet, when| {
        memory_limit_hook(ctx, fleet, &group, LIMITED_PAGES, when)
    })?;
    drop(fleet);
    group.remove()?;
    Ok(())
}

/// LTP ksm04: both at once, the processes in a cpuset on the node and in
/// a memory cgroup with a limit.
fn in_cpuset_under_memory_limit(ctx: &mut Ctx) -> CheckResult {
    let node = target_node(ctx);
    let memcg = ctx.env.memcg.clone().map_err(Fail::Skip)?;
    let cpuset = ctx.env.cpuset.clone().map_err(Fail::Skip)?;
    ctx.clean_slate()?;
    across_nodes(ctx)?;
    let mut groups = memcg.create_joint(&cpuset, ctx.session(), &cgroup_name("both"))?;
    // The cpuset is the last group (or the only one, with both controllers).
    groups.last().expect("a group").confine_to_node(node)?;
    let mut fleet = Fleet::spawn(&KINDS)?;
    join(&fleet, &groups)?;
    let memory = &groups[0];
    ksm01_steps(ctx, &mut fleet, LIMITED_PAGES, &mut |ctx, fleet, when| {
        memory_limit_hook(ctx, fleet, memory, LIMITED_PAGES, when)?;
        on_node(fleet, node, when)
    })?;
    drop(fleet);
    for group in groups.iter_mut().rev() {
        group.remove()?;
    }
    Ok(())
}
