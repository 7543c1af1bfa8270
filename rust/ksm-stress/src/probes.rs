//! Exact counts of the KSM functions the campaign reaches: a kprobe event
//! on each (Documentation/trace/kprobetrace.rst), whose hits
//! kprobe_profile counts whether or not anything is traced.
//!
//! Why kprobes and not ftrace's function profiler: ftrace instruments what
//! the compiler gave an fentry call, and in 7.3 Kbuild asks that of C only
//! (rustc is never passed -Zinstrument-mcount), so no Rust function is in
//! available_filter_functions; [`ftrace_instruments`] shows it in each run.
//! A kprobe traps at any function's first instruction, Rust or C.
//!
//! Probed, where the kernel has them as functions of their own: the entry
//! points C calls in mm/ksm/ (the trees' seam of mm/ksm.h) and the Rust
//! functions of the trees (any symbol of the ksm_rust crate instantiated
//! for the kernel's pages, demangled), the C trees of stock 7.3 under their
//! names there, and the shared C around them (migration, hot-remove,
//! unmerging, swap-in).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const GROUP: &str = "ksmstress";

/// The trees' seam (mm/ksm.h of the series): Rust with CONFIG_KSM_RUST.
/// Patch 13 replaced the five functions only cmp_and_merge_page() called
/// (ksm_unstable_tree_search_insert to ksm_scan_ksm_page) by
/// ksm_cmp_and_merge_page, and patch 18 replaced that one,
/// ksm_trees_start_scan and ksm_remove_rmap_item_from_tree by ksmd's batch,
/// ksm_do_scan, and ksm_remove_trailing_rmap_items; patch 23 took the
/// advisor's arithmetic, ksm_advisor_next_pages_to_scan, into the scan. The
/// older names stay for kernels of the series before them (a name the
/// kernel does not have is not probed).
pub const SEAM: [&str; 14] = [
    "ksm_advisor_next_pages_to_scan",
    "ksm_do_scan",
    "ksm_remove_trailing_rmap_items",
    "ksm_trees_start_scan",
    "ksm_trees_use_node_roots",
    "ksm_cmp_and_merge_page",
    "ksm_unstable_tree_search_insert",
    "ksm_stable_tree_search",
    "ksm_stable_tree_insert",
    "ksm_stable_tree_append",
    "ksm_scan_ksm_page",
    "ksm_remove_rmap_item_from_tree",
    "ksm_remove_all_stable_nodes",
    "ksm_check_stable_tree",
];

/// C: stock 7.3's trees and scan (mm/ksm.c), and the mm code both kernels
/// share (since patch 15, the scan's walks of the mm_slot list and of each
/// mm are glue of their own; since patch 25, run=2's unmerge is
/// ksm_unmerge_and_remove_all_rmap_items).
const C_FUNCTIONS: [&str; 50] = [
    "get_next_rmap_item",
    "scan_time_advisor",
    "should_skip_rmap_item",
    "ksm_mm_walk_next",
    "ksm_scan_next_mm",
    "ksm_alloc_rmap_item",
    "ksm_free_rmap_item",
    "stable_tree_search",
    "stable_tree_insert",
    "stable_tree_append",
    "unstable_tree_search_insert",
    "remove_rmap_item_from_tree",
    "remove_node_from_stable_tree",
    "remove_stable_node",
    "remove_stable_node_chain",
    "remove_all_stable_nodes",
    "ksm_check_stable_tree",
    "stable_node_dup",
    "stable_node_dup_any",
    "__stable_node_chain",
    "chain_prune",
    "stable_node_chain_add_dup",
    "alloc_stable_node_chain",
    "free_stable_node_chain",
    "ksm_get_folio",
    "get_mergeable_page",
    "ksm_get_mergeable_page",
    "ksm_node_folio",
    "scan_get_next_rmap_item",
    "cmp_and_merge_page",
    "try_to_merge_one_page",
    "try_to_merge_with_ksm_page",
    "try_to_merge_two_pages",
    "try_to_merge_with_zero_page",
    "break_cow",
    "ksm_merge_with_ksm_page",
    "ksm_merge_with_zero_page",
    "ksm_break_cow",
    "replace_page",
    "write_protect_page",
    "break_ksm",
    "unmerge_and_remove_all_rmap_items",
    "ksm_unmerge_and_remove_all_rmap_items",
    "ksm_memory_callback",
    "folio_migrate_ksm",
    "rmap_walk_ksm",
    "ksm_might_need_to_copy",
    "__ksm_enter",
    "__ksm_exit",
    "ksm_disable_merge_any",
];

/// What a run learnt from tracing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Why there are no counts (no tracefs, no kprobe events), if so.
    pub unavailable: Option<String>,
    /// What ftrace instruments, as seen in available_filter_functions.
    pub ftrace: Option<String>,
    /// Entries into each function probed.
    pub hits: BTreeMap<String, u64>,
    /// Functions the kernel has that could not be probed, and why.
    pub refused: BTreeMap<String, String>,
}

pub struct Probes {
    tracefs: PathBuf,
    /// event name -> the function's label
    events: BTreeMap<String, String>,
    report: ProbeReport,
}

/// Text symbols of /proc/kallsyms, by name, with how often each appears.
fn text_symbols() -> BTreeMap<String, u32> {
    let mut syms = BTreeMap::new();
    for line in fs::read_to_string("/proc/kallsyms")
        .unwrap_or_default()
        .lines()
    {
        let mut f = line.split_whitespace();
        let (_, kind, name) = (f.next(), f.next(), f.next());
        if let (Some("t" | "T"), Some(name)) = (kind, name) {
            *syms.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    syms
}

/// The label of a Rust symbol of the trees as run by the kernel
/// (KernelPages), or None for anything else (KUnit fakes and tests,
/// other crates).
pub fn rust_label(symbol: &str) -> Option<String> {
    if !symbol.starts_with("_R") {
        return None;
    }
    let name = format!("{:#}", rustc_demangle::demangle(symbol));
    let ours = name.contains("ksm_rust::")
        && !name.contains("fake")
        && !name.contains("::tests::")
        && !name.contains("kunit");
    let kernel = name.contains("KernelPages") || !name.contains("Pages");
    (ours && kernel).then(|| {
        name.replace("ksm_rust::", "")
            .replace("<pages::KernelPages>", "")
    })
}

/// What ftrace can trace of KSM: which seam functions and which C ones
/// are in available_filter_functions.
pub fn ftrace_instruments(tracefs: &Path, syms: &BTreeMap<String, u32>) -> Option<String> {
    let text = fs::read_to_string(tracefs.join("available_filter_functions")).ok()?;
    let traced: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let rust: Vec<&str> = SEAM
        .iter()
        .copied()
        .filter(|s| syms.contains_key(*s))
        .collect();
    let rust_traced = rust.iter().filter(|s| traced.contains(**s)).count();
    let c: Vec<&str> = C_FUNCTIONS
        .iter()
        .copied()
        .filter(|s| syms.contains_key(*s))
        .collect();
    let c_traced = c.iter().filter(|s| traced.contains(**s)).count();
    Some(format!(
        "{c_traced} of the {} C functions listed, {rust_traced} of the {} seam functions",
        c.len(),
        rust.len()
    ))
}

impl Probes {
    /// Define and enable a kprobe event on every function to count.
    pub fn start() -> Probes {
        let tracefs = PathBuf::from(TRACEFS);
        let mut p = Probes {
            tracefs: tracefs.clone(),
            events: BTreeMap::new(),
            report: ProbeReport::default(),
        };
        if !tracefs.join("kprobe_events").exists() {
            p.report.unavailable = Some(format!(
                "no {TRACEFS}/kprobe_events (CONFIG_KPROBE_EVENTS off, or tracefs not mounted)"
            ));
            return p;
        }
        let syms = text_symbols();
        p.report.ftrace = ftrace_instruments(&tracefs, &syms);
        let mut targets: Vec<(String, String)> = SEAM
            .iter()
            .chain(C_FUNCTIONS.iter())
            .filter(|s| syms.contains_key(**s))
            .map(|s| (s.to_string(), s.to_string()))
            .collect();
        targets.sort();
        targets.dedup();
        targets.extend(
            syms.keys()
                .filter_map(|s| Some((s.clone(), rust_label(s)?))),
        );
        // Tracing itself is not needed: hits are counted with it off.
        let _ = fs::write(tracefs.join("tracing_on"), "0");
        for (i, (symbol, label)) in targets.into_iter().enumerate() {
            if syms.get(&symbol).copied().unwrap_or(0) > 1 {
                p.report
                    .refused
                    .insert(label, "several symbols of that name".into());
                continue;
            }
            let event = format!("p{i}");
            match append(
                &tracefs.join("kprobe_events"),
                &format!("p:{GROUP}/{event} {symbol}"),
            ) {
                Ok(()) => {
                    p.events.insert(event, label);
                }
                Err(e) => {
                    p.report.refused.insert(label, e.to_string());
                }
            }
        }
        if !p.events.is_empty() {
            let enable = tracefs.join("events").join(GROUP).join("enable");
            if let Err(e) = fs::write(&enable, "1") {
                p.report.unavailable = Some(format!("enabling {}: {e}", enable.display()));
            }
        }
        p
    }

    /// Why there will be no counts, if so.
    pub fn unavailable(&self) -> Option<String> {
        self.report.unavailable.clone()
    }

    /// Hits so far, by function label.
    pub fn hits(&self) -> BTreeMap<String, u64> {
        let text = fs::read_to_string(self.tracefs.join("kprobe_profile")).unwrap_or_default();
        parse_profile(&text)
            .into_iter()
            .filter_map(|(event, hits)| {
                let event = event.rsplit('/').next().unwrap_or(&event).to_string();
                Some((self.events.get(&event)?.clone(), hits))
            })
            .collect()
    }

    /// Read the counts, then remove every event.
    pub fn finish(mut self) -> ProbeReport {
        self.report.hits = self.hits();
        let _ = fs::write(self.tracefs.join("events").join(GROUP).join("enable"), "0");
        for event in self.events.keys() {
            let _ = append(
                &self.tracefs.join("kprobe_events"),
                &format!("-:{GROUP}/{event}"),
            );
        }
        let _ = fs::write(self.tracefs.join("tracing_on"), "1");
        self.report
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// kprobe_profile: "<event> <hits> <misses>" a line.
pub fn parse_profile(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (event, hits) = (f.next()?, f.next()?.parse().ok()?);
            Some((event.to_string(), hits))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_instances_of_our_crate_are_labelled_and_fakes_are_not() {
        // Symbols of a patched vmlinux (nm).
        let kernel = "_RNvMNtCs8l3N8gumvvY_8ksm_rust5chainINtNtB4_5trees5TreesNtNtB4_5pages11KernelPagesE6lookupB4_";
        let fake = "_RNvMNtCs8l3N8gumvvY_8ksm_rust5chainINtNtB4_5trees5TreesNtNtB4_4fake9FakePagesE6lookupB4_";
        let test = "_RNvNtNtCs8l3N8gumvvY_8ksm_rust6stable5tests49kunit_rust_wrapper_ksm_pages_are_found_by_content";
        let free = "_RNvMs0_NtCs8l3N8gumvvY_8ksm_rust4nodeNtB5_10StableNode11buried_next";
        assert_eq!(rust_label(kernel).unwrap(), "<trees::Trees>::lookup");
        assert_eq!(rust_label(fake), None);
        assert_eq!(rust_label(test), None);
        assert_eq!(rust_label(free).unwrap(), "<node::StableNode>::buried_next");
        assert_eq!(rust_label("stable_tree_search"), None);
        assert_eq!(rust_label("_RNvNtCs1_6kernel5print6printk"), None);
    }

    #[test]
    fn profile_lines() {
        let text =
            "  p0                                          12               0\n  p13   7 1\n";
        assert_eq!(
            parse_profile(text),
            [("p0".to_string(), 12), ("p13".to_string(), 7)]
        );
    }
}
