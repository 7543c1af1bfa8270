//! The files in /sys/kernel/mm/ksm, as an enum so that a typo is a compile
//! error and every file is accounted for in one place.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Knob {
    // Tunables (mode 0644).
    Run,
    PagesToScan,
    SleepMillisecs,
    MergeAcrossNodes,
    UseZeroPages,
    MaxPageSharing,
    StableNodeChainsPruneMillisecs,
    SmartScan,
    AdvisorMode,
    AdvisorMaxCpu,
    AdvisorMinPagesToScan,
    AdvisorMaxPagesToScan,
    AdvisorTargetScanTime,
    // Statistics (mode 0444).
    FullScans,
    PagesScanned,
    PagesShared,
    PagesSharing,
    PagesUnshared,
    PagesVolatile,
    PagesSkipped,
    StableNodeChains,
    StableNodeDups,
    KsmZeroPages,
    GeneralProfit,
}

impl Knob {
    pub const ALL: [Knob; 24] = [
        Knob::Run,
        Knob::PagesToScan,
        Knob::SleepMillisecs,
        Knob::MergeAcrossNodes,
        Knob::UseZeroPages,
        Knob::MaxPageSharing,
        Knob::StableNodeChainsPruneMillisecs,
        Knob::SmartScan,
        Knob::AdvisorMode,
        Knob::AdvisorMaxCpu,
        Knob::AdvisorMinPagesToScan,
        Knob::AdvisorMaxPagesToScan,
        Knob::AdvisorTargetScanTime,
        Knob::FullScans,
        Knob::PagesScanned,
        Knob::PagesShared,
        Knob::PagesSharing,
        Knob::PagesUnshared,
        Knob::PagesVolatile,
        Knob::PagesSkipped,
        Knob::StableNodeChains,
        Knob::StableNodeDups,
        Knob::KsmZeroPages,
        Knob::GeneralProfit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Knob::Run => "run",
            Knob::PagesToScan => "pages_to_scan",
            Knob::SleepMillisecs => "sleep_millisecs",
            Knob::MergeAcrossNodes => "merge_across_nodes",
            Knob::UseZeroPages => "use_zero_pages",
            Knob::MaxPageSharing => "max_page_sharing",
            Knob::StableNodeChainsPruneMillisecs => "stable_node_chains_prune_millisecs",
            Knob::SmartScan => "smart_scan",
            Knob::AdvisorMode => "advisor_mode",
            Knob::AdvisorMaxCpu => "advisor_max_cpu",
            Knob::AdvisorMinPagesToScan => "advisor_min_pages_to_scan",
            Knob::AdvisorMaxPagesToScan => "advisor_max_pages_to_scan",
            Knob::AdvisorTargetScanTime => "advisor_target_scan_time",
            Knob::FullScans => "full_scans",
            Knob::PagesScanned => "pages_scanned",
            Knob::PagesShared => "pages_shared",
            Knob::PagesSharing => "pages_sharing",
            Knob::PagesUnshared => "pages_unshared",
            Knob::PagesVolatile => "pages_volatile",
            Knob::PagesSkipped => "pages_skipped",
            Knob::StableNodeChains => "stable_node_chains",
            Knob::StableNodeDups => "stable_node_dups",
            Knob::KsmZeroPages => "ksm_zero_pages",
            Knob::GeneralProfit => "general_profit",
        }
    }

    pub fn from_name(name: &str) -> Option<Knob> {
        Knob::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Tunables are root-writable (0644); statistics are read-only (0444).
    pub fn writable(self) -> bool {
        self <= Knob::AdvisorTargetScanTime
    }

    /// Knobs the kernel rewrites as a side effect of a write to `self`:
    /// switching advisor_mode resets pages_to_scan (set_advisor_defaults()).
    /// A guard that saves `self` must save these too.
    pub fn clobbers(self) -> &'static [Knob] {
        match self {
            Knob::AdvisorMode => &[Knob::PagesToScan],
            _ => &[],
        }
    }

    /// Knobs that can only change while no KSM page exists (-EBUSY
    /// otherwise): run must be set to 2 first.
    pub fn needs_no_shared_pages(self) -> bool {
        matches!(self, Knob::MergeAcrossNodes | Knob::MaxPageSharing)
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn names_round_trip() {
        for k in Knob::ALL {
            assert_eq!(Knob::from_name(k.name()), Some(k));
        }
        assert_eq!(Knob::from_name("no_such_knob"), None);
    }

    #[rstest]
    #[case(Knob::Run, true)]
    #[case(Knob::AdvisorTargetScanTime, true)]
    #[case(Knob::FullScans, false)]
    #[case(Knob::GeneralProfit, false)]
    fn writability(#[case] knob: Knob, #[case] writable: bool) {
        assert_eq!(knob.writable(), writable);
    }
}
