//! Stable and unstable trees that hold real content: several processes
//! (forked, and unrelated fresh execs), many contents in varied proportions
//! (unique pages, pairs, groups, more copies than max_page_sharing so that
//! chains and dups form), exact counters once merging settles, and what
//! becomes of them when contents change (LTP ksm01), when sharers exit or
//! unmap while ksmd scans (LTP ksm05), and when one copy is written.
//!
//! ksmd is driven one full scan at a time (crate::stepping) with smart_scan
//! off, so that every page is looked at in every scan and the counters are
//! read between scans.

use std::collections::BTreeMap;

use ksm::Knob;
use ksm::procfs::KsmStat;

use crate::ctx::{CheckResult, Ctx, Fail};
use crate::registry::{Check, Req};
use crate::stepping::{Counters, Stepper, expect};
use crate::worker::{Kind, Worker};
use crate::{ensure, ensure_eq};

const REQS: &[Req] = &[
    Req::Root,
    Req::Ksm,
    Req::Knob(Knob::MaxPageSharing),
    Req::SoleKsmUser,
];

pub const CHECKS: &[Check] = &[
    Check {
        name: "trees/contents_in_many_proportions_merge_exactly_across_processes",
        requires: REQS,
        body: many_proportions,
    },
    Check {
        name: "trees/write_to_one_copy_leaves_the_other_copies_merged",
        requires: REQS,
        body: write_to_one_copy,
    },
    Check {
        name: "trees/rewritten_contents_remerge_by_content",
        requires: REQS,
        body: rewritten_contents,
    },
    Check {
        name: "trees/sharers_exiting_or_unmapping_while_ksmd_scans_leave_exact_counters",
        requires: &[
            Req::Root,
            Req::Ksm,
            Req::Knob(Knob::StableNodeChainsPruneMillisecs),
            Req::SoleKsmUser,
        ],
        body: sharers_leave_while_scanning,
    },
];

/// Scans after the first (which only records checksums) until a settled
/// state: the second merges every content, but a page can miss one round
/// (a folio lock held elsewhere), so one more.
pub(crate) const SETTLE: u64 = 2;

/// What mm/ksm.c makes of the copies of one content: KSM pages (how many
/// mappings each has) and copies waiting alone in the unstable tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub groups: Vec<u64>,
    pub waiting: u64,
}

impl Content {
    /// `copies` identical pages, all there from the start, after merging
    /// settles with max_page_sharing `limit`. In the scan that merges them
    /// the first copy waits in the unstable tree and the second merges with
    /// it into a new KSM page (stable_tree_insert); the copies after it find
    /// that page in the stable tree and join it while it has fewer than
    /// `limit` mappings (is_page_sharing_candidate). The copy after a full
    /// page waits in the unstable tree for a partner to start the next KSM
    /// page, a dup chained to the first (stable_node_chain_add_dup). So:
    /// full pages of `limit`, one page of the rest if the rest is 2 or
    /// more, and a last copy without a partner stays unshared.
    pub fn merged(copies: u64, limit: u64) -> Content {
        let (full, rest) = (copies / limit, copies % limit);
        let mut groups = vec![limit; full as usize];
        if rest >= 2 {
            groups.push(rest);
        }
        Content {
            groups,
            waiting: (rest == 1) as u64,
        }
    }

    /// One copy in a KSM page of `size` mappings is written (or unmapped):
    /// at ksmd's next visit its rmap_item leaves that page's stable node
    /// (remove_rmap_item_from_tree), and a copy waiting in the unstable tree
    /// then finds room in it at its next stable-tree search. The page keeps
    /// at least one mapping here: a KSM page without mappings leaves a stale
    /// node that only a later search cleans up.
    pub fn leave(&mut self, size: u64, limit: u64) {
        let i = self
            .groups
            .iter()
            .position(|g| *g == size)
            .expect("a KSM page of that size");
        assert!(size >= 2, "the model keeps every KSM page mapped");
        self.groups[i] -= 1;
        if self.waiting > 0 && self.groups[i] < limit {
            self.groups[i] += 1;
            self.waiting -= 1;
        }
    }

    /// One more copy: it joins a KSM page with room, or waits, and two
    /// waiting copies make a new KSM page.
    pub fn join(&mut self, limit: u64) {
        if let Some(g) = self.groups.iter_mut().find(|g| **g < limit) {
            *g += 1;
        } else if self.waiting == 1 {
            self.waiting = 0;
            self.groups.push(2);
        } else {
            self.waiting += 1;
        }
    }

    /// How many copies map each frame, largest first: one frame per KSM
    /// page, one per waiting copy.
    pub fn frames(&self) -> Vec<u64> {
        let mut sizes: Vec<u64> = self.groups.clone();
        sizes.extend(std::iter::repeat_n(1, self.waiting as usize));
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes
    }
}

/// The global counters for these contents: a KSM page counts once in
/// pages_shared and its other mappings in pages_sharing; a waiting copy is
/// pages_unshared; every content with more than one KSM page is a chain
/// whose KSM pages are all dups.
pub(crate) fn counters<'a>(contents: impl IntoIterator<Item = &'a Content>) -> Counters {
    let mut c = Counters::default();
    for content in contents {
        let pages = content.groups.len() as u64;
        c.shared += pages;
        c.sharing += content.groups.iter().map(|g| g - 1).sum::<u64>();
        c.unshared += content.waiting;
        if pages >= 2 {
            c.chains += 1;
            c.dups += pages;
        }
    }
    c
}

/// Processes with one mergeable mapping "m" each, and the content (seed)
/// of every page of it.
pub(crate) struct Fleet {
    pub workers: Vec<Worker>,
    pub seeds: Vec<Vec<u64>>,
}

impl Fleet {
    pub fn spawn(kinds: &[Kind]) -> CheckResult<Fleet> {
        let workers = kinds
            .iter()
            .map(|k| Worker::spawn(*k))
            .collect::<CheckResult<Vec<_>>>()?;
        let seeds = vec![Vec::new(); workers.len()];
        Ok(Fleet { workers, seeds })
    }

    /// Map, fill and advise each worker's pages.
    pub fn lay_out(&mut self, seeds: Vec<Vec<u64>>) -> CheckResult {
        for (w, pages) in self.workers.iter_mut().zip(&seeds) {
            w.call(&format!("map m {}", pages.len()))?;
            let list: Vec<String> = pages.iter().map(u64::to_string).collect();
            w.call(&format!("seeds m 0 {}", list.join(",")))?;
            w.call("advise m mergeable")?;
        }
        self.seeds = seeds;
        Ok(())
    }

    /// Write `seed` to every page of worker `w`.
    pub fn fill_all(&mut self, w: usize, seed: u64) -> CheckResult {
        let n = self.seeds[w].len();
        self.workers[w].call(&format!("fill m 0 {n} {seed}"))?;
        self.seeds[w].fill(seed);
        Ok(())
    }

    /// Write `seed` to page `page` of worker `w`.
    pub fn write(&mut self, w: usize, page: usize, seed: u64) -> CheckResult {
        self.workers[w].call(&format!("fill m {page} 1 {seed}"))?;
        self.seeds[w][page] = seed;
        Ok(())
    }

    pub fn frames(&mut self) -> CheckResult<Vec<Vec<u64>>> {
        self.workers
            .iter_mut()
            .map(|w| w.numbers("frames m"))
            .collect()
    }

    pub fn verify(&mut self) -> CheckResult {
        for w in &mut self.workers {
            w.call("verify m")?;
        }
        Ok(())
    }

    /// Sum over the workers of a number in their /proc/<pid>/ksm_stat.
    pub fn ksm_stat_sum(&self, field: &str) -> CheckResult<Option<i64>> {
        let mut sum = 0;
        for w in &self.workers {
            match KsmStat::read(Some(w.pid()))?.number(field) {
                Some(n) => sum += n,
                None => return Ok(None),
            }
        }
        Ok(Some(sum))
    }

    pub fn merging_pages_sum(&self) -> CheckResult<u64> {
        let mut sum = 0;
        for w in &self.workers {
            sum += ksm::procfs::ksm_merging_pages(Some(w.pid()))?;
        }
        Ok(sum)
    }

    /// For each content, how many of its copies map each frame (largest
    /// first). A frame that is 0 (page not present) or that holds two
    /// contents fails.
    pub fn frame_groups(&mut self) -> CheckResult<BTreeMap<u64, Vec<u64>>> {
        let frames = self.frames()?;
        by_content(&self.seeds, &frames)
    }

    /// Every content's copies map frames as `want` says.
    pub fn expect_frames(&mut self, want: &BTreeMap<u64, Content>, when: &str) -> CheckResult {
        let got = self.frame_groups()?;
        for (seed, content) in want {
            let frames = got.get(seed).cloned().unwrap_or_default();
            ensure_eq!(
                frames,
                content.frames(),
                "{when}: copies per frame of content {seed}"
            );
        }
        Ok(())
    }
}

fn by_content(seeds: &[Vec<u64>], frames: &[Vec<u64>]) -> CheckResult<BTreeMap<u64, Vec<u64>>> {
    let mut per_frame: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (w, (seeds, frames)) in seeds.iter().zip(frames).enumerate() {
        for (page, (seed, frame)) in seeds.iter().zip(frames).enumerate() {
            ensure!(*frame != 0, "worker {w} page {page}: no frame in pagemap");
            let entry = per_frame.entry(*frame).or_insert((*seed, 0));
            ensure!(
                entry.0 == *seed,
                "frame {frame} holds contents {} and {seed}",
                entry.0
            );
            entry.1 += 1;
        }
    }
    let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (seed, copies) in per_frame.into_values() {
        groups.entry(seed).or_default().push(copies);
    }
    for sizes in groups.values_mut() {
        sizes.sort_unstable_by(|a, b| b.cmp(a));
    }
    Ok(groups)
}

/// The pages of each worker in an order that interleaves the contents
/// (deterministic), so that the trees see them mixed.
fn interleave(mut pages: Vec<u64>) -> Vec<u64> {
    pages.sort_by_key(|s| (s.wrapping_mul(2_654_435_761) % 1013, *s));
    pages
}

/// max_page_sharing for the proportions check: small, so that chains form
/// with few pages.
const LIMIT: u64 = 8;

/// Contents shared between the four workers: (seed, copies in each).
const SHARED: &[(u64, [u64; 4])] = &[
    // pairs: across processes, and both copies in one process
    (11, [1, 1, 0, 0]),
    (12, [0, 0, 1, 1]),
    (13, [1, 0, 1, 0]),
    (14, [0, 2, 0, 0]),
    // groups of 3, 5 and 7
    (21, [1, 1, 1, 0]),
    (22, [2, 0, 1, 2]),
    (23, [2, 2, 2, 1]),
    // LIMIT copies: one full KSM page; LIMIT + 1: one more waits
    (31, [2, 2, 2, 2]),
    (32, [3, 2, 2, 2]),
    // 2 LIMIT: a chain of two full dups; 2 LIMIT + 1: and one waits;
    // 2 LIMIT + 3: a chain of three dups (8, 8, 3)
    (33, [4, 4, 4, 4]),
    (34, [5, 4, 4, 4]),
    (35, [5, 5, 5, 4]),
];
/// Unique pages per worker.
const UNIQUE: u64 = 4;
const KINDS: [Kind; 4] = [Kind::Fork, Kind::Exec, Kind::Fork, Kind::Exec];

fn unique_seed(worker: usize, i: u64) -> u64 {
    1000 + 10 * worker as u64 + i
}

fn proportions_layout() -> Vec<Vec<u64>> {
    (0..KINDS.len())
        .map(|w| {
            let mut pages: Vec<u64> = SHARED
                .iter()
                .flat_map(|(seed, copies)| std::iter::repeat_n(*seed, copies[w] as usize))
                .collect();
            pages.extend((0..UNIQUE).map(|i| unique_seed(w, i)));
            interleave(pages)
        })
        .collect()
}

/// The model of every content of a layout, fresh.
fn model(layout: &[Vec<u64>], limit: u64) -> BTreeMap<u64, Content> {
    let mut copies: BTreeMap<u64, u64> = BTreeMap::new();
    for seed in layout.iter().flatten() {
        *copies.entry(*seed).or_default() += 1;
    }
    copies
        .into_iter()
        .map(|(seed, n)| (seed, Content::merged(n, limit)))
        .collect()
}

/// Four workers with the proportions layout, merged and settled; returns
/// them, the stepper, and the model.
fn merged_proportions(ctx: &mut Ctx) -> CheckResult<(Fleet, Stepper, BTreeMap<u64, Content>)> {
    ctx.clean_slate()?;
    ctx.set(Knob::MaxPageSharing, &LIMIT.to_string())?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let mut fleet = Fleet::spawn(&KINDS)?;
    let layout = proportions_layout();
    let contents = model(&layout, LIMIT);
    fleet.lay_out(layout)?;
    let mut stepper = Stepper::start(ctx)?;
    stepper.settle(ctx, SETTLE, counters(contents.values()), "merged")?;
    Ok((fleet, stepper, contents))
}

/// Twelve shared contents (pairs, groups of 3, 5, 7, and 8, 9, 16, 17, 19
/// copies with max_page_sharing 8) and 16 unique pages in two forked and
/// two exec'd processes, 108 pages: pages_shared 16, pages_sharing 74,
/// pages_unshared 18 (16 unique, and the copies left over by the 9- and
/// 17-copy contents), 3 chains of 7 dups (2 + 2 + 3), nothing volatile.
/// Each content's copies map as many frames as the model has KSM pages and
/// waiting copies, with as many copies each; the workers' ksm_merging_pages
/// add up to pages_shared + pages_sharing and their rmap_items to every
/// page.
fn many_proportions(ctx: &mut Ctx) -> CheckResult {
    let (mut fleet, _stepper, contents) = merged_proportions(ctx)?;
    let want = counters(contents.values());
    fleet.expect_frames(&contents, "merged")?;
    ensure_eq!(
        fleet.merging_pages_sum()?,
        want.shared + want.sharing,
        "ksm_merging_pages over the workers"
    );
    let pages: usize = fleet.seeds.iter().map(Vec::len).sum();
    if let Some(rmap) = fleet.ksm_stat_sum("ksm_rmap_items")? {
        ensure_eq!(rmap, pages as i64, "ksm_rmap_items over the workers");
    }
    fleet.verify()
}

/// A worker and page holding a copy of `seed` on a KSM page of `size`
/// mappings (which copies are where depends on the order ksmd met them).
fn find_copy(fleet: &mut Fleet, seed: u64, size: u64) -> CheckResult<(usize, usize)> {
    let frames = fleet.frames()?;
    let count = |frame: u64| frames.iter().flatten().filter(|f| **f == frame).count() as u64;
    for (w, (seeds, frames)) in fleet.seeds.iter().zip(&frames).enumerate() {
        if let Some(page) = seeds
            .iter()
            .zip(frames)
            .position(|(s, f)| *s == seed && count(*f) == size)
        {
            return Ok((w, page));
        }
    }
    Err(Fail::Failed(format!(
        "no copy of content {seed} on a KSM page of {size} mappings"
    )))
}

/// After the proportions have merged, one copy of several contents is
/// written ("automatically copied if a process later wants to update its
/// content"): the written copy leaves its KSM page at ksmd's next visit,
/// and the other copies stay merged, on the same frames. What the model
/// predicts (Content::leave, Content::join):
/// - a pair: its KSM page stays with one mapping (pages_sharing - 1), the
///   written page is unique (pages_unshared + 1);
/// - a 5-copy and a 2-copy-in-one-process content: the same;
/// - 17 copies (8 + 8 + 1 waiting), a copy in a full dup: the waiting copy
///   takes its place, so the chain is full again and only the written page
///   waits;
/// - 19 copies (8 + 8 + 3), a copy in the dup of 3: 8 + 8 + 2;
/// - 9 copies (8 + 1 waiting), a copy in the KSM page: as for 17;
/// - 8 copies, one rewritten to the 3-copy content: 7 and 4 copies;
/// - a unique page rewritten to another unique content: unchanged.
///
/// From 16/74/18 with 3 chains of 7 dups: pages_shared 16, pages_sharing
/// 70, pages_unshared 22, chains and dups unchanged. Before ksmd has looked
/// at the written pages nothing has moved: the counters count rmap_items
/// in the trees, not mappings.
fn write_to_one_copy(ctx: &mut Ctx) -> CheckResult {
    let (mut fleet, mut stepper, mut contents) = merged_proportions(ctx)?;
    let merged = counters(contents.values());
    let mut new_seed = 5000;
    let mut unique = |contents: &mut BTreeMap<u64, Content>| {
        new_seed += 1;
        contents.insert(new_seed, Content::merged(1, LIMIT));
        new_seed
    };
    // (content, mappings of the KSM page the written copy is on)
    let writes: [(u64, u64); 6] = [(11, 2), (22, 5), (14, 2), (34, LIMIT), (35, 3), (32, LIMIT)];
    for (seed, size) in writes {
        let (w, page) = find_copy(&mut fleet, seed, size)?;
        let to = unique(&mut contents);
        fleet.write(w, page, to)?;
        contents.get_mut(&seed).expect("content").leave(size, LIMIT);
    }
    // A copy of the 8-copy content becomes a copy of the 3-copy one.
    let (w, page) = find_copy(&mut fleet, 31, LIMIT)?;
    fleet.write(w, page, 21)?;
    contents.get_mut(&31).expect("content").leave(LIMIT, LIMIT);
    contents.get_mut(&21).expect("content").join(LIMIT);
    // A unique page becomes another unique page.
    let page = fleet.seeds[3]
        .iter()
        .position(|s| *s == unique_seed(3, 0))
        .expect("unique page");
    let to = unique(&mut contents);
    fleet.write(3, page, to)?;
    contents.remove(&unique_seed(3, 0));

    // The counters count rmap_items in the trees: nothing moves until
    // ksmd visits the written pages.
    expect(ctx, merged, "written, not yet scanned")?;
    let want = counters(contents.values());
    stepper.settle(ctx, SETTLE, want, "after the writes")?;
    fleet.expect_frames(&contents, "after the writes")?;
    ensure_eq!(
        fleet.merging_pages_sum()?,
        want.shared + want.sharing,
        "ksm_merging_pages over the workers"
    );
    fleet.verify()
}

/// Pages per process in the ksm01 pattern.
const KSM01_PAGES: u64 = 64;

/// LTP ksm01's pattern, exact at every step: three processes (two forked,
/// one exec'd) with N pages each, max_page_sharing 3N as LTP sets it so no
/// chain forms.
fn rewritten_contents(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    let mut fleet = Fleet::spawn(&[Kind::Fork, Kind::Exec, Kind::Fork])?;
    ksm01_steps(ctx, &mut fleet, KSM01_PAGES, &mut |_, _, _| Ok(()))
}

/// Seeds of the ksm01 contents ('a' to 'e' in LTP).
const A: u64 = 0x61;
const B: u64 = 0x62;
const C: u64 = 0x63;
const D: u64 = 0x64;

/// Names of two moments of [`ksm01_steps`] for its hook.
pub(crate) const LAID_OUT: &str = "laid out";
pub(crate) const D_EVERYWHERE: &str = "'d' everywhere";

/// A hook of [`ksm01_steps`]: called once the pages are laid out (before
/// the first scan), then after each step's counters are checked, with the
/// step's name. The placement checks look at nodes and memory there.
pub(crate) type Between<'a> = dyn FnMut(&mut Ctx, &mut Fleet, &str) -> CheckResult + 'a;

/// The steps of LTP's ksm01 (create_same_memory) on three workers of N
/// pages each, with the counters each step must reach:
/// 1. 'c', 'a', 'a': two KSM pages, one per content (N and 2N mappings):
///    pages_shared 2, pages_sharing 3N - 2;
/// 2. 'c', 'b', 'a': the second process leaves the 'a' page and its own
///    pages merge: pages_shared 3, pages_sharing 3N - 3;
/// 3. 'd' everywhere: the old KSM pages lose every mapping and go; one KSM
///    page of 3N mappings: pages_shared 1, pages_sharing 3N - 1;
/// 4. the last byte of the second process's last page changed: that page
///    leaves the KSM page and is unique: pages_sharing 3N - 2,
///    pages_unshared 1;
/// 5. run=2: everything unmerged at once, every rmap_item freed: all 0.
///
/// Never any volatile page once settled, and no chain.
pub(crate) fn ksm01_steps(
    ctx: &mut Ctx,
    fleet: &mut Fleet,
    n: u64,
    between: &mut Between,
) -> CheckResult {
    ensure_eq!(fleet.workers.len(), 3, "ksm01 workers");
    ctx.set(Knob::MaxPageSharing, &(3 * n).to_string())?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    let all = |seed: u64| vec![seed; n as usize];
    fleet.lay_out(vec![all(C), all(A), all(A)])?;
    between(ctx, fleet, LAID_OUT)?;
    let mut stepper = Stepper::start(ctx)?;
    let counts = |shared, sharing, unshared| Counters {
        shared,
        sharing,
        unshared,
        ..Counters::default()
    };
    let one_frame_each = |fleet: &mut Fleet, what: &str| -> CheckResult {
        for (w, frames) in fleet.frames()?.iter().enumerate() {
            ensure!(
                frames.iter().all(|f| *f == frames[0] && *f != 0),
                "{what}: worker {w}'s pages are not on one frame: {frames:?}"
            );
        }
        Ok(())
    };

    stepper.settle(ctx, SETTLE, counts(2, 3 * n - 2, 0), "'c', 'a', 'a'")?;
    one_frame_each(fleet, "'c', 'a', 'a'")?;
    let frames = fleet.frames()?;
    ensure!(
        frames[1][0] == frames[2][0] && frames[0][0] != frames[1][0],
        "'c', 'a', 'a': the 'a' pages do not share one frame apart from the 'c' frame"
    );
    between(ctx, fleet, "'c', 'a', 'a'")?;

    fleet.fill_all(1, B)?;
    stepper.settle(ctx, SETTLE, counts(3, 3 * n - 3, 0), "'c', 'b', 'a'")?;
    one_frame_each(fleet, "'c', 'b', 'a'")?;
    between(ctx, fleet, "'c', 'b', 'a'")?;

    for w in 0..3 {
        fleet.fill_all(w, D)?;
    }
    stepper.settle(ctx, SETTLE, counts(1, 3 * n - 1, 0), D_EVERYWHERE)?;
    let frames = fleet.frames()?;
    ensure!(
        frames.iter().flatten().all(|f| *f == frames[0][0]),
        "'d' everywhere: not one frame"
    );
    between(ctx, fleet, D_EVERYWHERE)?;

    let last = n as usize - 1;
    let page_size = ksm::mem::page_size();
    fleet.workers[1].call(&format!("byte m {last} {} 101", page_size - 1))?;
    stepper.settle(ctx, SETTLE, counts(1, 3 * n - 2, 1), "one odd page out")?;
    let frames = fleet.frames()?;
    let odd = frames[1][last];
    ensure!(
        frames.iter().flatten().filter(|f| **f == odd).count() == 1,
        "the odd page shares its frame"
    );
    between(ctx, fleet, "one odd page out")?;
    fleet.verify()?;

    ctx.set(Knob::Run, "2")?;
    expect(ctx, Counters::default(), "run=2")?;
    fleet.verify()?;
    let frames = fleet.frames()?;
    let mut distinct: Vec<u64> = frames.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    ensure_eq!(distinct.len() as u64, 3 * n, "distinct frames after run=2");
    ctx.set(Knob::Run, "0")?;
    expect(ctx, Counters::default(), "run=0")
}

/// Copies of the shared content in the process that stays.
const SURVIVOR_SHARED: u64 = 16;
const SURVIVOR_UNIQUE: u64 = 8;
/// Rounds of sharers that come and go.
const ROUNDS: u64 = 8;
/// Pages of each sharer: copies of the shared content, then unique ones.
const SHARER_SHARED: u64 = 8;
const SHARER_UNIQUE: u64 = 4;
/// Shared content.
const SHARED_SEED: u64 = 7;

/// LTP ksm05's race, with the counters it must leave: while ksmd scans
/// without pause in small batches, sharers of one content come and go
/// around a process that stays: forked and exec'd ones exit, are killed,
/// or unmap their area and live on, some before ksmd saw them, some after
/// it merged them. Once they are gone and ksmd has scanned again, only the
/// survivor is left: its 16 copies on one KSM page (pages_shared 1,
/// pages_sharing 15), its 8 unique pages unshared, nothing volatile (the
/// rmap_items of exited or emptied mms are freed when ksmd next passes
/// their mm_slot), and no chain or dup. A KSM page of the shared content
/// that lost its mappings while still referenced can leave a stale node,
/// even chained to the live one; with stable_node_chains_prune_millisecs 0
/// every stable-tree search (the survivor's unique pages search every scan,
/// and the shared content's node is the only one in the tree) prunes it and
/// collapses the chain (stable_node_dup()).
fn sharers_leave_while_scanning(ctx: &mut Ctx) -> CheckResult {
    ctx.clean_slate()?;
    if ctx.sysfs().has(Knob::SmartScan) {
        ctx.set(Knob::SmartScan, "0")?;
    }
    if ctx.sysfs().has(Knob::AdvisorMode) && ctx.sysfs().read(Knob::AdvisorMode)? != "none" {
        ctx.set(Knob::AdvisorMode, "none")?;
    }
    let survivor_pages: Vec<u64> = std::iter::repeat_n(SHARED_SEED, SURVIVOR_SHARED as usize)
        .chain((0..SURVIVOR_UNIQUE).map(|i| 100 + i))
        .collect();
    let mut survivor = Fleet::spawn(&[Kind::Exec])?;
    survivor.lay_out(vec![interleave(survivor_pages)])?;
    // A full scan spans several batches: exits land in the middle of one.
    ctx.set(Knob::PagesToScan, "16")?;
    ctx.set(Knob::SleepMillisecs, "0")?;
    ctx.set(Knob::Run, "1")?;
    let mut emptied = Vec::new();
    for round in 0..ROUNDS {
        let mut sharers = Fleet::spawn(&[Kind::Fork, Kind::Exec, Kind::Fork])?;
        let layout = (0..3)
            .map(|w| {
                std::iter::repeat_n(SHARED_SEED, SHARER_SHARED as usize)
                    .chain((0..SHARER_UNIQUE).map(|i| 10_000 + 100 * round + 10 * w + i))
                    .collect()
            })
            .collect();
        sharers.lay_out(layout)?;
        if round % 2 == 1 {
            ctx.wait_scans(2)?; // merged with the survivor's copies by now
        }
        let mut workers = sharers.workers.into_iter();
        let (exits, killed, empties) = (
            workers.next().expect("3"),
            workers.next().expect("3"),
            workers.next().expect("3"),
        );
        exits.exit()?;
        killed.kill()?;
        let mut empties = empties;
        empties.call("unmap m")?;
        emptied.push(empties);
    }
    let mut stepper = Stepper::start(ctx)?;
    ctx.set(Knob::StableNodeChainsPruneMillisecs, "0")?;
    let want = Counters {
        shared: 1,
        sharing: SURVIVOR_SHARED - 1,
        unshared: SURVIVOR_UNIQUE,
        ..Counters::default()
    };
    stepper.settle(ctx, SETTLE, want, "sharers gone")?;
    ensure_eq!(
        survivor.merging_pages_sum()?,
        SURVIVOR_SHARED,
        "the survivor's ksm_merging_pages"
    );
    let groups = survivor.frame_groups()?;
    ensure_eq!(
        groups.get(&SHARED_SEED).cloned().unwrap_or_default(),
        vec![SURVIVOR_SHARED],
        "copies per frame of the shared content in the survivor"
    );
    for w in &emptied {
        let stat = KsmStat::read(Some(w.pid()))?;
        if let Some(rmap) = stat.number("ksm_rmap_items") {
            ensure_eq!(
                rmap,
                0,
                "ksm_rmap_items of live process {} that unmapped its area",
                w.pid()
            );
        }
        ensure_eq!(
            ksm::procfs::ksm_merging_pages(Some(w.pid()))?,
            0,
            "ksm_merging_pages of live process {} that unmapped its area",
            w.pid()
        );
    }
    survivor.verify()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::unique(1, 8, vec![], 1)]
    #[case::pair(2, 8, vec![2], 0)]
    #[case::full(8, 8, vec![8], 0)]
    #[case::full_and_one(9, 8, vec![8], 1)]
    #[case::chain(16, 8, vec![8, 8], 0)]
    #[case::chain_and_one(17, 8, vec![8, 8], 1)]
    #[case::chain_of_three(19, 8, vec![8, 8, 3], 0)]
    #[case::limit_2_even(10, 2, vec![2; 5], 0)]
    #[case::limit_2_odd(11, 2, vec![2; 5], 1)]
    fn merged_copies(
        #[case] copies: u64,
        #[case] limit: u64,
        #[case] groups: Vec<u64>,
        #[case] waiting: u64,
    ) {
        assert_eq!(Content::merged(copies, limit), Content { groups, waiting });
    }

    /// The numbers the check documents, from its own table.
    #[test]
    fn proportions_add_up_to_the_documented_counters() {
        let layout = proportions_layout();
        assert_eq!(layout.iter().map(Vec::len).sum::<usize>(), 108);
        let c = counters(model(&layout, LIMIT).values());
        let want = Counters {
            shared: 16,
            sharing: 74,
            unshared: 18,
            volatile: 0,
            chains: 3,
            dups: 7,
        };
        assert_eq!(c, want);
    }

    #[test]
    fn a_waiting_copy_fills_the_place_a_written_copy_left() {
        let mut c = Content::merged(17, 8);
        c.leave(8, 8);
        assert_eq!(c, Content::merged(16, 8));
        let mut c = Content::merged(19, 8);
        c.leave(3, 8);
        assert_eq!(c.frames(), vec![8, 8, 2]);
        let mut pair = Content::merged(2, 8);
        pair.leave(2, 8);
        assert_eq!(pair.frames(), vec![1]);
        assert_eq!(counters([&pair]).shared, 1);
    }

    #[test]
    fn joining_fills_then_waits_then_pairs() {
        let mut c = Content::merged(8, 8);
        c.join(8);
        assert_eq!(c.frames(), vec![8, 1]);
        c.join(8);
        assert_eq!(c.frames(), vec![8, 2]);
        let mut three = Content::merged(3, 8);
        three.join(8);
        assert_eq!(three.frames(), vec![4]);
    }

    #[test]
    fn frames_group_by_content() {
        let seeds = vec![vec![1, 1, 2], vec![1, 3]];
        let frames = vec![vec![10, 10, 11], vec![10, 12]];
        let groups = by_content(&seeds, &frames).unwrap();
        assert_eq!(groups[&1], vec![3]);
        assert_eq!(groups[&2], vec![1]);
        let clash = vec![vec![10, 10, 10], vec![10, 12]];
        assert!(by_content(&seeds, &clash).is_err());
        let absent = vec![vec![10, 0, 11], vec![10, 12]];
        assert!(by_content(&seeds, &absent).is_err());
    }

    #[test]
    fn write_expectations() {
        // The totals write_to_one_copy documents.
        let mut contents = model(&proportions_layout(), LIMIT);
        for (seed, size) in [(11, 2), (22, 5), (14, 2), (34, LIMIT), (35, 3), (32, LIMIT)] {
            contents.get_mut(&seed).unwrap().leave(size, LIMIT);
            contents.insert(9000 + seed, Content::merged(1, LIMIT));
        }
        contents.get_mut(&31).unwrap().leave(LIMIT, LIMIT);
        contents.get_mut(&21).unwrap().join(LIMIT);
        let c = counters(contents.values());
        assert_eq!(
            (c.shared, c.sharing, c.unshared, c.chains, c.dups),
            (16, 70, 22, 3, 7)
        );
    }
}
