//! KSM's counters and what must hold of them: no value that can only be a
//! wrapped negative, at any time; and once everything is quiet (workers
//! paused, ksmd stopped after a full scan that cleaned up what exited),
//! exact sums: pages_shared + pages_sharing is what the processes'
//! ksm_merging_pages add up to, ksm_zero_pages what their ksm_zero_pages
//! add up to, and none of it exceeds the memory they advised.

use std::collections::BTreeMap;

use ksm::{Knob, Sysfs};

use crate::sys::KsmProcess;

/// The statistics of /sys/kernel/mm/ksm, as read (i128 holds them all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<Knob, i128>);

/// Counters the kernel prints unsigned: above this, a wrapped negative.
const WRAPPED: i128 = 1 << 62;

impl Counters {
    pub fn read(sysfs: &Sysfs) -> Counters {
        Counters(
            Knob::ALL
                .into_iter()
                .filter(|k| !k.writable())
                .filter_map(|k| Some((k, sysfs.read(k).ok()?.parse().ok()?)))
                .collect(),
        )
    }

    pub fn get(&self, k: Knob) -> i128 {
        self.0.get(&k).copied().unwrap_or(0)
    }

    /// How far ksm_zero_pages reads below zero: at least that many zero
    /// pages are missing from it.
    pub fn zero_pages_below_zero(&self) -> u64 {
        (-self.get(Knob::KsmZeroPages)).max(0) as u64
    }

    /// Values no correct kernel shows: an unsigned counter wrapped below
    /// zero.
    pub fn insane_values(&self) -> Vec<(Knob, i128)> {
        self.0
            .iter()
            .filter(|&(&k, &v)| match k {
                // Signed, and negative only when KSM costs more than it saves.
                Knob::GeneralProfit => false,
                // Signed: judged by what it falls short of (zero_deficit).
                Knob::KsmZeroPages => false,
                _ => !(0..WRAPPED).contains(&v),
            })
            .map(|(&k, &v)| (k, v))
            .collect()
    }

    /// [`Counters::insane_values`], said.
    pub fn insane(&self) -> Vec<String> {
        self.insane_values()
            .into_iter()
            .map(|(k, v)| format!("{k} reads {v}"))
            .collect()
    }
}

/// Everything the quiet check compares.
#[derive(Debug, Clone, Default)]
pub struct Quiet {
    pub counters: Counters,
    pub processes: Vec<KsmProcess>,
    /// Pages in VM_MERGEABLE mappings of those processes.
    pub advised: u64,
}

impl Quiet {
    /// ksm_zero_pages less the processes' KSM zero pages: what the
    /// counter holds beyond them (above zero) or misses (below).
    fn zero_drift(&self) -> i128 {
        let zeros: i128 = self
            .processes
            .iter()
            .map(|p| i128::from(p.number("ksm_zero_pages")))
            .sum();
        self.counters.get(Knob::KsmZeroPages) - zeros
    }

    /// How far ksm_zero_pages falls short of the processes' KSM zero pages.
    pub fn zero_deficit(&self) -> u64 {
        (-self.zero_drift()).max(0) as u64
    }

    /// How far ksm_zero_pages exceeds the processes' KSM zero pages.
    pub fn zero_surplus(&self) -> u64 {
        self.zero_drift().max(0) as u64
    }

    /// What does not add up.
    pub fn problems(&self) -> Vec<String> {
        let c = &self.counters;
        let shared = c.get(Knob::PagesShared);
        let sharing = c.get(Knob::PagesSharing);
        let zero = c.get(Knob::KsmZeroPages);
        let sum =
            |f: &str| -> i128 { self.processes.iter().map(|p| i128::from(p.number(f))).sum() };
        let mut bad = c.insane();
        let merging = sum("ksm_merging_pages");
        if shared + sharing != merging {
            bad.push(format!(
                "pages_shared {shared} + pages_sharing {sharing} != {merging}, the sum of the \
                 processes' ksm_merging_pages"
            ));
        }
        // ksm_zero_pages against the processes' is judged over the whole
        // run (zero_deficit, zero_surplus): forks make it drift upstream.
        if shared + sharing + zero > i128::from(self.advised) {
            bad.push(format!(
                "pages_shared {shared} + pages_sharing {sharing} + ksm_zero_pages {zero} > {} \
                 pages advised",
                self.advised
            ));
        }
        for p in &self.processes {
            let (m, z, r) = (
                p.number("ksm_merging_pages"),
                p.number("ksm_zero_pages"),
                p.number("ksm_rmap_items"),
            );
            if m < 0 || z < 0 || m + z > r {
                bad.push(format!(
                    "pid {} ({}): ksm_merging_pages {m} + ksm_zero_pages {z} against \
                     ksm_rmap_items {r}",
                    p.pid, p.comm
                ));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksm::procfs::KsmStat;
    use std::path::Path;

    fn counters(pairs: &[(Knob, i128)]) -> Counters {
        Counters(pairs.iter().copied().collect())
    }

    fn process(pid: u32, merging: i64, zero: i64, rmap: i64) -> KsmProcess {
        let text =
            format!("ksm_rmap_items {rmap}\nksm_zero_pages {zero}\nksm_merging_pages {merging}\n");
        KsmProcess {
            pid,
            comm: "w".into(),
            stat: KsmStat::parse(&text, Path::new("ksm_stat")).unwrap(),
        }
    }

    #[test]
    fn wrapped_values_are_insane() {
        let c = counters(&[
            (Knob::PagesShared, (1 << 64) - 1),
            (Knob::PagesSharing, 3),
            (Knob::KsmZeroPages, -1),
            (Knob::GeneralProfit, -4096),
        ]);
        let bad = c.insane();
        assert_eq!(bad, ["pages_shared reads 18446744073709551615"]);
    }

    #[test]
    fn quiet_sums_must_match() {
        let good = Quiet {
            counters: counters(&[
                (Knob::PagesShared, 2),
                (Knob::PagesSharing, 5),
                (Knob::KsmZeroPages, 1),
            ]),
            processes: vec![process(1, 4, 1, 10), process(2, 3, 0, 3)],
            advised: 13,
        };
        assert_eq!(good.problems(), Vec::<String>::new());

        let mut off_by_one = good.clone();
        off_by_one.counters.0.insert(Knob::PagesSharing, 6);
        assert_eq!(
            off_by_one.problems().len(),
            1,
            "{:?}",
            off_by_one.problems()
        );

        let mut over = good.clone();
        over.advised = 7;
        assert!(over.problems()[0].contains("pages advised"));

        let mut more = good.clone();
        more.counters.0.insert(Knob::KsmZeroPages, 2);
        assert_eq!(more.problems(), Vec::<String>::new());
        assert_eq!((more.zero_deficit(), more.zero_surplus()), (0, 1));

        let mut fewer = good.clone();
        fewer.counters.0.insert(Knob::KsmZeroPages, -3);
        assert_eq!(fewer.problems(), Vec::<String>::new());
        assert_eq!((fewer.zero_deficit(), fewer.zero_surplus()), (4, 0));

        let mut items = good;
        items.processes[1] = process(2, 3, 0, 2);
        assert!(items.problems()[0].contains("pid 2"));
    }
}
