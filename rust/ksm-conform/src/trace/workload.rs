//! The workloads of a trace: what the processes do, step by step, and how
//! ksmd scans in between. Everything is decided here, from fixed seeds, so
//! that two runs do exactly the same; only the kernel's answers may differ.
//!
//! Contents are `Mapping::fill` seeds: equal seeds, equal pages; 0 is a page
//! of zeroes. A workload's content plan is groups of copies of one content
//! in varied sizes (unique pages, pairs, small groups, groups several times
//! `max_page_sharing`, so that stable node chains and their dups form),
//! dealt out over several processes.

use ksm::Knob;

use super::ksmd::{Batch, FULL};
use super::worker::{AREA_SLOT, Command};
use crate::env::Env;

pub enum Action {
    /// Start worker `id`: a fresh exec, unrelated to the others.
    Spawn(&'static str),
    /// Worker `parent` forks; the child is worker `child`.
    Fork {
        parent: &'static str,
        child: &'static str,
    },
    /// Worker `id` exits.
    Exit(&'static str),
    /// Worker `id` does `command`.
    Do(&'static str, Command),
    /// A knob that may change while KSM pages exist.
    Set(Knob, &'static str),
}

pub struct Step {
    pub what: String,
    pub actions: Vec<Action>,
    pub batches: Vec<Batch>,
}

pub struct Workload {
    pub name: &'static str,
    pub description: &'static str,
    /// Set while ksmd is parked (max_page_sharing and merge_across_nodes
    /// only change while no KSM page exists), before its first batch.
    pub knobs: Vec<(Knob, &'static str)>,
    pub steps: Vec<Step>,
    /// Why this machine cannot run it, if it cannot.
    pub unmet: Option<String>,
}

impl Workload {
    /// The most pages the workers hold at once, bounded by the steps: a
    /// batch of [`FULL`] pages must end only at the end of a full scan.
    fn pages_bound(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| &s.actions)
            .map(|a| match a {
                Action::Do(_, Command::Map { pages, .. }) => *pages,
                _ => 0,
            })
            .sum::<usize>()
            * (1 + self
                .steps
                .iter()
                .flat_map(|s| &s.actions)
                .filter(|a| matches!(a, Action::Fork { .. }))
                .count())
    }
}

/// The seed of the workloads a trace runs unless told otherwise.
pub const DEFAULT_SEED: u64 = 0;

/// Every workload, in the order a trace runs them, their contents drawn
/// from `seed` (each workload mixes in a constant of its own).
pub fn all(env: &Env, seed: u64) -> Vec<Workload> {
    let w = vec![
        chains(seed),
        zero_pages_and_smart_scan(seed),
        numa(env, seed),
    ];
    for workload in &w {
        assert!(
            (workload.pages_bound() as u64) < FULL,
            "workload {} is too large for one batch per full scan",
            workload.name
        );
    }
    w
}

/// The names, for --workload.
pub const NAMES: &[&str] = &["chains", "zero-pages-and-smart-scan", "numa"];

/// splitmix64: a fixed, portable sequence from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw() % n
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// A content no other draw gives (with overwhelming likelihood), never
    /// the zero page.
    pub fn content(&mut self) -> u64 {
        self.draw() | 1
    }
}

/// How many copies each of `distinct` contents gets: 45% unique, 25% pairs,
/// 15% groups of 3-4, 10% of 5-12, 5% of 13-40 (with max_page_sharing 4,
/// the last two make chains of 2 to 10 dups).
fn group_sizes(rng: &mut Rng, distinct: usize) -> Vec<usize> {
    (0..distinct)
        .map(|_| match rng.below(100) {
            0..45 => 1,
            45..70 => 2,
            70..85 => 3 + rng.below(2) as usize,
            85..95 => 5 + rng.below(8) as usize,
            _ => 13 + rng.below(28) as usize,
        })
        .collect()
}

/// A content plan dealt out in shuffled order: the seeds of every copy.
fn copies(rng: &mut Rng, sizes: &[usize], zero_copies: usize) -> Vec<u64> {
    let mut seeds: Vec<u64> = Vec::new();
    for &n in sizes {
        let c = rng.content();
        seeds.extend(std::iter::repeat_n(c, n));
    }
    seeds.extend(std::iter::repeat_n(0, zero_copies));
    rng.shuffle(&mut seeds);
    seeds
}

fn map(id: &'static str, area: usize, pages: usize, node: Option<usize>) -> Action {
    assert!(pages < AREA_SLOT);
    Action::Do(id, Command::Map { area, pages, node })
}

fn fill(id: &'static str, area: usize, first: usize, seeds: Vec<u64>) -> Action {
    Action::Do(id, Command::Fill { area, first, seeds })
}

fn advise(id: &'static str, area: usize, first: usize, count: usize, mergeable: bool) -> Action {
    Action::Do(
        id,
        Command::Advise {
            area,
            first,
            count,
            mergeable,
        },
    )
}

fn unmap(id: &'static str, area: usize) -> Action {
    Action::Do(id, Command::Unmap { area })
}

fn verify(id: &'static str) -> Action {
    Action::Do(id, Command::Verify)
}

/// A new area of `seeds.len()` pages, filled and advised mergeable.
fn area(id: &'static str, n: usize, node: Option<usize>, seeds: Vec<u64>) -> Vec<Action> {
    let pages = seeds.len();
    vec![
        map(id, n, pages, node),
        fill(id, n, 0, seeds),
        advise(id, n, 0, pages, true),
    ]
}

fn step(what: impl Into<String>, actions: Vec<Action>, batches: &[Batch]) -> Step {
    Step {
        what: what.into(),
        actions,
        batches: batches.to_vec(),
    }
}

fn full(n: usize) -> Vec<Batch> {
    vec![Batch::Full; n]
}

/// Thousands of contents over three unrelated processes and forks, with
/// max_page_sharing 4 so that chains of dups form, and chains pruned on
/// every lookup (stable_node_chains_prune_millisecs 0: a prune interval in
/// wall time would make the lookups depend on timing).
fn chains(seed: u64) -> Workload {
    let mut rng = Rng::new(0x6b73_6d2d_7273_0001 ^ seed);
    let sizes = group_sizes(&mut rng, 2400);
    let seeds = copies(&mut rng, &sizes, 64);
    let third = seeds.len() / 3;
    let (a, rest) = seeds.split_at(third);
    let (b, c) = rest.split_at(third);
    let (a, b, c) = (a.to_vec(), b.to_vec(), c.to_vec());

    let mut steps = Vec::new();
    let mut start = vec![Action::Spawn("a"), Action::Spawn("b"), Action::Spawn("c")];
    start.extend(area("a", 0, None, a.clone()));
    start.extend(area("b", 0, None, b.clone()));
    start.extend(area("c", 0, None, c.clone()));
    steps.push(step(
        format!(
            "a, b and c start: {} pages of {} contents (and 64 zero pages), advised mergeable",
            seeds.len(),
            sizes.len()
        ),
        start,
        &full(4),
    ));
    steps.push(step(
        "a forks a1",
        vec![Action::Fork {
            parent: "a",
            child: "a1",
        }],
        &full(2),
    ));
    // Copy-on-write breaks: new contents, copies of contents in the stable
    // tree, and one content written 100 times (a new chain).
    let fresh: Vec<u64> = (0..100).map(|_| rng.content()).collect();
    let known: Vec<u64> = (0..100).map(|i| b[i * 7 % b.len()]).collect();
    let one = rng.content();
    steps.push(step(
        "a1 writes 300 of its pages: 100 new contents, 100 copies of b's, 100 of one new content",
        vec![
            fill("a1", 0, 0, fresh),
            fill("a1", 0, 100, known),
            fill("a1", 0, 200, vec![one; 100]),
            verify("a"),
            verify("a1"),
        ],
        &full(3),
    ));
    // LTP ksm01: every page the same content, but one.
    for round in 0..2 {
        let (common, odd) = (rng.content(), rng.content());
        let mut pages = vec![common; b.len()];
        pages[b.len() / 2 + round] = odd;
        steps.push(step(
            format!(
                "b rewrites all its pages with one content, but one (LTP ksm01, round {round})"
            ),
            vec![fill("b", 0, 0, pages), verify("b")],
            &full(3),
        ));
    }
    let mut again = a[..600].to_vec();
    rng.shuffle(&mut again);
    let mut unmap_c = vec![unmap("c", 0)];
    unmap_c.extend(area("c", 1, None, again));
    steps.push(step(
        "c unmaps its area and maps another of 600 pages with a's contents",
        unmap_c,
        &full(2),
    ));
    steps.push(step(
        "a exits; a1 still maps what they shared",
        vec![Action::Exit("a"), verify("a1")],
        &full(2),
    ));
    steps.push(step(
        "b advises its first 1000 pages unmergeable",
        vec![advise("b", 0, 0, 1000, false), verify("b")],
        &full(2),
    ));
    let mut d: Vec<u64> = c.iter().step_by(3).copied().collect();
    d.extend((0..300).map(|_| rng.content()));
    rng.shuffle(&mut d);
    let mut start_d = vec![Action::Spawn("d")];
    start_d.extend(area("d", 0, None, d));
    steps.push(step(
        "d starts: a third of c's first contents and 300 new ones",
        start_d,
        &full(3),
    ));
    // Now ksmd stops inside full scans: what happens between its batches
    // meets a scan cursor inside the list of mms.
    let mid = Batch::Pages(700);
    steps.push(step(
        "d forks d1 (batches of 700 pages from here on)",
        vec![Action::Fork {
            parent: "d",
            child: "d1",
        }],
        &[mid, mid],
    ));
    steps.push(step(
        "c exits in mid-scan",
        vec![Action::Exit("c")],
        &[mid, mid],
    ));
    let copies_of_a1: Vec<u64> = (0..200).map(|i| a[(i * 11) % a.len()]).collect();
    steps.push(step(
        "d1 writes 200 pages with a's contents in mid-scan",
        vec![fill("d1", 0, 0, copies_of_a1), verify("d1")],
        &[mid, mid, mid],
    ));
    steps.push(step(
        "b unmaps its area in mid-scan",
        vec![unmap("b", 0)],
        &[mid, Batch::Full, Batch::Full],
    ));
    steps.push(step(
        "a1, b, d and d1 exit",
        vec![
            verify("a1"),
            verify("d"),
            verify("d1"),
            Action::Exit("d1"),
            Action::Exit("d"),
            Action::Exit("b"),
            Action::Exit("a1"),
        ],
        &full(2),
    ));
    Workload {
        name: "chains",
        description: "thousands of contents over unrelated and forked processes; \
                      max_page_sharing 4; COW breaks, LTP ksm01 rewrites, munmap, \
                      MADV_UNMERGEABLE, exits, and changes in mid-scan",
        knobs: vec![
            (Knob::MergeAcrossNodes, "1"),
            (Knob::MaxPageSharing, "4"),
            (Knob::StableNodeChainsPruneMillisecs, "0"),
            (Knob::UseZeroPages, "0"),
            (Knob::SmartScan, "0"),
        ],
        steps,
        unmet: None,
    }
}

/// use_zero_pages and smart_scan: zero pages merged with the kernel's zero
/// page and unmerged again by writes, pages that change between scans
/// (volatile), unique pages that smart_scan learns to skip; chains never
/// pruned (the prune interval at its maximum, 49 days).
fn zero_pages_and_smart_scan(seed: u64) -> Workload {
    let mut rng = Rng::new(0x6b73_6d2d_7273_0002 ^ seed);
    let unique: Vec<u64> = (0..1500).map(|_| rng.content()).collect();
    let pairs: Vec<u64> = (0..200).map(|_| rng.content()).collect();
    let mut g: Vec<u64> = Vec::new();
    g.extend(std::iter::repeat_n(0, 400));
    g.extend(&unique);
    g.extend(pairs.iter().flat_map(|&p| [p, p]));
    rng.shuffle(&mut g);
    let volatile = 300;
    let mut h: Vec<u64> = std::iter::repeat_n(0, 300).collect();
    h.extend(pairs.iter().copied());
    rng.shuffle(&mut h);

    let mut steps = Vec::new();
    let mut start = vec![Action::Spawn("g"), Action::Spawn("h")];
    start.extend(area("g", 0, None, g.clone()));
    start.extend(area(
        "g",
        1,
        None,
        (0..volatile).map(|_| rng.content()).collect(),
    ));
    start.extend(area("h", 0, None, h.clone()));
    steps.push(step(
        "g and h start: 700 zero pages, 1500 unique, 200 contents thrice, 300 volatile",
        start,
        &full(3),
    ));
    for round in 0..6 {
        let seeds = (0..volatile).map(|_| rng.content()).collect();
        steps.push(step(
            format!("g rewrites its 300 volatile pages (round {round})"),
            vec![fill("g", 1, 0, seeds)],
            &full(1),
        ));
    }
    let zeroes_of_h: Vec<usize> = h
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == 0)
        .map(|(i, _)| i)
        .take(100)
        .collect();
    let writes = zeroes_of_h
        .iter()
        .map(|&i| fill("h", 0, i, vec![rng.content()]))
        .chain([verify("h")])
        .collect();
    steps.push(step("h writes 100 of its zero pages", writes, &full(2)));
    steps.push(step(
        "use_zero_pages 0: zero pages now merge like any content",
        vec![
            Action::Set(Knob::UseZeroPages, "0"),
            fill("g", 1, 0, vec![0; volatile]),
        ],
        &full(3),
    ));
    steps.push(step(
        "smart_scan 0; g unmaps its first area",
        vec![
            Action::Set(Knob::SmartScan, "0"),
            unmap("g", 0),
            verify("g"),
        ],
        &full(2),
    ));
    steps.push(step(
        "g and h exit",
        vec![verify("h"), Action::Exit("h"), Action::Exit("g")],
        &full(2),
    ));
    Workload {
        name: "zero-pages-and-smart-scan",
        description: "use_zero_pages 1 then 0, smart_scan 1 then 0, volatile pages, \
                      unique pages skipped, zero pages written",
        knobs: vec![
            (Knob::MergeAcrossNodes, "1"),
            (Knob::MaxPageSharing, "256"),
            (Knob::StableNodeChainsPruneMillisecs, "4294967295"),
            (Knob::UseZeroPages, "1"),
            (Knob::SmartScan, "1"),
        ],
        steps,
        unmet: None,
    }
}

/// merge_across_nodes 0: every page bound to node 0 or node 1 (mbind
/// MPOL_BIND before the first touch, so the copies that writes and unmerges
/// make land there too, and a page's node, which picks its trees, is fixed).
fn numa(env: &Env, seed: u64) -> Workload {
    let mut rng = Rng::new(0x6b73_6d2d_7273_0003 ^ seed);
    let sizes = group_sizes(&mut rng, 700);
    let seeds = copies(&mut rng, &sizes, 40);
    let quarter = seeds.len() / 4;
    let part = |i: usize| seeds[i * quarter..(i + 1) * quarter].to_vec();
    let (e0, e1, f0, f1) = (part(0), part(1), part(2), part(3));

    let mut steps = Vec::new();
    let mut start = vec![Action::Spawn("e"), Action::Spawn("f")];
    start.extend(area("e", 0, Some(0), e0.clone()));
    start.extend(area("e", 1, Some(1), e1.clone()));
    start.extend(area("f", 0, Some(1), f0.clone()));
    start.extend(area("f", 1, Some(0), f1.clone()));
    steps.push(step(
        format!(
            "e and f start: {} pages of {} contents, half on node 0, half on node 1",
            4 * quarter,
            sizes.len()
        ),
        start,
        &full(4),
    ));
    steps.push(step(
        "e forks e1",
        vec![Action::Fork {
            parent: "e",
            child: "e1",
        }],
        &full(2),
    ));
    steps.push(step(
        "e1 rewrites its node-1 area with f's node-0 contents",
        vec![
            fill("e1", 1, 0, f1[..e1.len().min(f1.len())].to_vec()),
            verify("e1"),
        ],
        &full(3),
    ));
    steps.push(step("f exits", vec![Action::Exit("f")], &full(2)));
    steps.push(step(
        "e1 unmaps its node-0 area",
        vec![unmap("e1", 0), verify("e1")],
        &full(2),
    ));
    steps.push(step(
        "e and e1 exit",
        vec![verify("e"), Action::Exit("e1"), Action::Exit("e")],
        &full(2),
    ));
    let unmet = if env.memory_nodes.len() < 2 || !env.memory_nodes.contains(&1) {
        Some(format!(
            "needs NUMA nodes 0 and 1 with memory, this machine has {:?}",
            env.memory_nodes
        ))
    } else if !env.has_knob(Knob::MergeAcrossNodes) {
        Some("no /sys/kernel/mm/ksm/merge_across_nodes (CONFIG_NUMA=n)".into())
    } else {
        None
    };
    Workload {
        name: "numa",
        description: "merge_across_nodes 0, max_page_sharing 3, pages bound to nodes 0 and 1",
        knobs: vec![
            (Knob::MergeAcrossNodes, "0"),
            (Knob::MaxPageSharing, "3"),
            (Knob::StableNodeChainsPruneMillisecs, "0"),
            (Knob::UseZeroPages, "0"),
            (Knob::SmartScan, "0"),
        ],
        steps,
        unmet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_fixed() {
        let mut r = Rng::new(1);
        // splitmix64's published sequence for seed 1.
        assert_eq!(r.draw(), 0x910a_2dec_8902_5cc1);
        assert_eq!(r.draw(), 0xbeeb_8da1_658e_ec67);
    }

    #[test]
    fn chains_has_thousands_of_contents_and_chains() {
        let w = chains(DEFAULT_SEED);
        let Action::Do(_, Command::Fill { seeds, .. }) = &w.steps[0].actions[4] else {
            panic!("the first fill is not where expected");
        };
        let mut all: Vec<u64> = w.steps[0]
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Do(_, Command::Fill { seeds, .. }) => Some(seeds.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!seeds.is_empty());
        all.sort_unstable();
        let mut groups: Vec<usize> = Vec::new();
        for chunk in all.chunk_by(|x, y| x == y) {
            groups.push(chunk.len());
        }
        assert!(groups.len() > 2000, "{} contents", groups.len());
        // Groups above 2 * max_page_sharing make chains of several dups.
        assert!(groups.iter().filter(|&&n| n > 8).count() > 100);
        assert!(groups.iter().filter(|&&n| n == 1).count() > 900);
    }

    #[test]
    fn workloads_are_the_same_every_time() {
        let env = Env::probe(crate::env::Options::default());
        let describe = |w: &Workload| {
            w.steps
                .iter()
                .map(|s| {
                    let fills: u64 = s
                        .actions
                        .iter()
                        .filter_map(|a| match a {
                            Action::Do(_, Command::Fill { seeds, .. }) => {
                                Some(seeds.iter().fold(0u64, |h, s| h.rotate_left(5) ^ s))
                            }
                            _ => None,
                        })
                        .fold(0, |h, s| h ^ s);
                    format!("{} {fills:x}", s.what)
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (all(&env, 7), all(&env, 7));
        assert_eq!(a.len(), NAMES.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(describe(x), describe(y));
        }
        // Another seed, other contents, the same steps.
        for (x, y) in a.iter().zip(&all(&env, 8)) {
            assert_ne!(describe(x), describe(y));
            assert_eq!(x.steps.len(), y.steps.len());
        }
        let names: Vec<&str> = a.iter().map(|w| w.name).collect();
        assert_eq!(names, NAMES);
    }
}
