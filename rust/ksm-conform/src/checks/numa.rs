//! merge_across_nodes: "specifies if pages from different NUMA nodes can be
//! merged ... can be changed only when there are no ksm shared pages in the
//! system: set run 2 to unmerge pages first".

use ksm::mem::{mbind_to_node, page_nodes};
use ksm::{Advice, Knob, Mapping};
use nix::errno::Errno;

use super::trees::SETTLE;
use super::{ensure_content, mergeable, one_frame};
use crate::ctx::{CheckResult, Ctx, call};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::{ensure, ensure_eq};

const REQS: &[Req] = &[
    Req::Root,
    Req::Ksm,
    Req::NumaNodes(2),
    Req::Knob(Knob::MergeAcrossNodes),
];
/// Those that count KSM pages system-wide.
const COUNTING: &[Req] = &[
    Req::Root,
    Req::Ksm,
    Req::NumaNodes(2),
    Req::Knob(Knob::MergeAcrossNodes),
    Req::SoleKsmUser,
];

pub const CHECKS: &[Check] = &[
    Check {
        name: "numa/merge_across_nodes_busy_while_pages_are_shared",
        requires: REQS,
        body: busy_while_shared,
    },
    Check {
        name: "numa/merge_across_nodes_1_shares_one_page_across_nodes",
        requires: COUNTING,
        body: across_nodes_1,
    },
    Check {
        name: "numa/merge_across_nodes_0_keeps_one_ksm_page_per_node",
        requires: COUNTING,
        body: across_nodes_0,
    },
    Check {
        name: "numa/pages_on_every_node_merge_per_node_or_across_nodes",
        requires: COUNTING,
        body: every_node,
    },
];

const PER_NODE: usize = 4;

fn busy_while_shared(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let current = ctx.sysfs().read(Knob::MergeAcrossNodes)?;
    let other = if current == "1" { "0" } else { "1" };
    let m = mergeable(8, 1)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 8, 5)?;
    let got = ctx
        .guard
        .set(Knob::MergeAcrossNodes, other)
        .map_err(|e| e.errno());
    ensure_eq!(
        got,
        Err(Some(Errno::EBUSY)),
        "merge_across_nodes <- {other} with pages shared"
    );
    ensure_eq!(
        ctx.sysfs().read(Knob::MergeAcrossNodes)?,
        current,
        "merge_across_nodes after EBUSY"
    );
    ctx.set(Knob::Run, "2")?;
    ctx.set(Knob::MergeAcrossNodes, other)?;
    ensure_eq!(
        ctx.sysfs().read(Knob::MergeAcrossNodes)?,
        other,
        "merge_across_nodes after run=2"
    );
    ensure_content(&m, |_| 1)
}

/// PER_NODE identical pages on each of the first two memory nodes.
fn pages_on_two_nodes(ctx: &mut Ctx) -> CheckResult<(Mapping, Mapping)> {
    let nodes = [ctx.env.memory_nodes[0], ctx.env.memory_nodes[1]];
    let mut maps = Vec::new();
    for node in nodes {
        let mut m = Mapping::anon(PER_NODE)?;
        call(
            &format!("mbind to node {node}"),
            mbind_to_node(m.addr(), m.len(), node),
        )?;
        for i in 0..PER_NODE {
            m.fill(i, 1);
        }
        let addrs: Vec<usize> = (0..PER_NODE).map(|i| m.page_addr(i)).collect();
        let placed = call(
            "get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)",
            page_nodes(&addrs),
        )?;
        ensure!(
            placed.iter().all(|n| *n == node as i32),
            "pages meant for node {node} are on {placed:?}"
        );
        call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
        maps.push(m);
    }
    let b = maps.pop().expect("two mappings");
    let a = maps.pop().expect("two mappings");
    Ok((a, b))
}

fn merged_across(ctx: &mut Ctx, setting: &str) -> CheckResult<(u64, Mapping, Mapping)> {
    ctx.clean_slate()?;
    ctx.set(Knob::MergeAcrossNodes, setting)?;
    let (a, b) = pages_on_two_nodes(ctx)?;
    ctx.start_ksmd()?;
    ctx.wait_merging_pages(None, 2 * PER_NODE as u64, 5)?;
    ctx.set(Knob::Run, "0")?;
    ctx.sole_ksm_user()?;
    let (shared, sharing) = (ctx.read(Knob::PagesShared)?, ctx.read(Knob::PagesSharing)?);
    ensure_eq!(
        shared + sharing,
        2 * PER_NODE as u64,
        "pages_shared + pages_sharing"
    );
    Ok((shared, a, b))
}

fn across_nodes_1(ctx: &mut Ctx) -> CheckResult {
    let (shared, a, b) = merged_across(ctx, "1")?;
    ensure_eq!(shared, 1, "pages_shared with merge_across_nodes=1");
    ensure_content(&a, |_| 1)?;
    ensure_content(&b, |_| 1)
}

fn across_nodes_0(ctx: &mut Ctx) -> CheckResult {
    let (shared, a, b) = merged_across(ctx, "0")?;
    ensure_eq!(
        shared,
        2,
        "pages_shared with merge_across_nodes=0 (one per node)"
    );
    for (m, node) in [(&a, ctx.env.memory_nodes[0]), (&b, ctx.env.memory_nodes[1])] {
        let addrs: Vec<usize> = (0..PER_NODE).map(|i| m.page_addr(i)).collect();
        let placed = call(
            "get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)",
            page_nodes(&addrs),
        )?;
        ensure!(
            placed.iter().all(|n| *n == node as i32),
            "KSM pages for node {node} are on {placed:?}"
        );
    }
    ensure_content(&a, |_| 1)?;
    ensure_content(&b, |_| 1)
}

/// Identical pages on every memory node.
const EVERY_NODE_PAGES: usize = 16;

/// LTP ksm06: 16 identical pages bound to each memory node. With
/// merge_across_nodes 1 they all share one KSM page (pages_shared 1,
/// pages_sharing 16 * nodes - 1); after run=2 and merge_across_nodes 0
/// each node has its own stable and unstable tree (get_kpfn_nid()): one
/// KSM page per node, on that node (pages_shared = nodes, pages_sharing
/// 15 * nodes).
fn every_node(ctx: &mut Ctx) -> CheckResult {
    let nodes = ctx.env.memory_nodes.clone();
    let n = nodes.len() as u64;
    ctx.clean_slate()?;
    ctx.set(Knob::MergeAcrossNodes, "1")?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let mut maps = Vec::new();
    for node in &nodes {
        let mut m = Mapping::anon(EVERY_NODE_PAGES)?;
        call(
            &format!("mbind to node {node}"),
            mbind_to_node(m.addr(), m.len(), *node),
        )?;
        for i in 0..EVERY_NODE_PAGES {
            m.fill(i, 1);
        }
        call("madvise(MADV_MERGEABLE)", m.advise(Advice::Mergeable))?;
        maps.push(m);
    }
    let per_node = EVERY_NODE_PAGES as u64;
    let mut stepper = Stepper::start(ctx)?;
    let across = Counters {
        shared: 1,
        sharing: per_node * n - 1,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, across, "merge_across_nodes 1")?;
    let frame = one_frame(&maps[0], 0..EVERY_NODE_PAGES)?;
    for m in &maps {
        ensure_eq!(
            one_frame(m, 0..EVERY_NODE_PAGES)?,
            frame,
            "one KSM page for every node"
        );
    }
    ctx.set(Knob::Run, "2")?;
    expect(ctx, Counters::default(), "run=2")?;
    ctx.set(Knob::MergeAcrossNodes, "0")?;
    let mut stepper = Stepper::start(ctx)?;
    let apart = Counters {
        shared: n,
        sharing: (per_node - 1) * n,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, apart, "merge_across_nodes 0")?;
    let mut frames = Vec::new();
    for (m, node) in maps.iter().zip(&nodes) {
        frames.push(one_frame(m, 0..EVERY_NODE_PAGES)?);
        let addrs: Vec<usize> = (0..EVERY_NODE_PAGES).map(|i| m.page_addr(i)).collect();
        let placed = call(
            "get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)",
            page_nodes(&addrs),
        )?;
        ensure!(
            placed.iter().all(|p| *p == *node as i32),
            "the KSM page for node {node} is on {placed:?}"
        );
    }
    frames.sort_unstable();
    frames.dedup();
    ensure_eq!(frames.len(), nodes.len(), "KSM pages, one per node");
    for m in &maps {
        ensure_content(m, |_| 1)?;
    }
    Ok(())
}
