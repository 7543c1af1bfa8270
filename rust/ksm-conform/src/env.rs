//! What the running kernel and machine offer, probed once per process. Each
//! requirement a check can have maps to one fact here.

use std::path::Path;

use ksm::kernel::{self, Config, Version};
use ksm::{Knob, Sysfs};

use crate::cgroup::Memcg;
use crate::registry::Req;

/// Choices the kernel cannot tell us.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The kernel was booted for this run, so boot-time defaults hold.
    pub fresh_boot: bool,
}

impl Options {
    /// For the nextest front end: KSM_CONFORM_FRESH_BOOT=1.
    pub fn from_environment() -> Self {
        Options {
            fresh_boot: std::env::var("KSM_CONFORM_FRESH_BOOT").is_ok_and(|v| v == "1"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Env {
    pub release: String,
    pub machine: String,
    pub version: Option<Version>,
    pub config: Option<Config>,
    pub root: bool,
    pub ksm: bool,
    /// CONFIG_NUMA: /sys/devices/system/node exists.
    pub numa_built: bool,
    pub memory_nodes: Vec<usize>,
    pub swap_free_kib: u64,
    pub failslab: Result<(), String>,
    pub memcg: Result<Memcg, String>,
    pub memory_merge_prctl: bool,
    /// /proc/kpageflags shows the flags of our pages, or why not.
    pub kpageflags: Result<(), String>,
    /// ... and its KPF_KSM tells KSM pages from others, or why not.
    pub page_flags: Result<(), String>,
    pub options: Options,
}

impl Env {
    pub fn probe(options: Options) -> Env {
        let (release, machine) = kernel::uname();
        let root = nix::unistd::geteuid().is_root();
        let never_advised = kpf_ksm_of_a_never_advised_page();
        Env {
            version: Version::parse(&release),
            config: Config::load(&release),
            ksm: Sysfs::system().present(),
            numa_built: Path::new("/sys/devices/system/node").is_dir(),
            memory_nodes: kernel::memory_nodes(),
            swap_free_kib: kernel::swap_free_kib(),
            failslab: if root {
                crate::checks::madvise::probe_failslab()
            } else {
                Err("needs root".into())
            },
            memcg: if root {
                Memcg::probe()
            } else {
                Err("needs root".into())
            },
            // PR_GET_MEMORY_MERGE reads a flag; EINVAL means the option is unknown.
            memory_merge_prctl: ksm::mem::get_memory_merge().is_ok(),
            kpageflags: never_advised.clone().map(drop),
            page_flags: trusted_kpf_ksm(never_advised),
            release,
            machine,
            root,
            options,
        }
    }

    pub fn has_knob(&self, knob: Knob) -> bool {
        Sysfs::system().has(knob)
    }

    pub fn unmet(&self, req: Req) -> Option<String> {
        let version = self.version.map_or("?".to_string(), |v| v.to_string());
        match req {
            Req::Root if !self.root => Some("needs root".into()),
            Req::Ksm if !self.ksm => Some("kernel has no KSM (/sys/kernel/mm/ksm absent)".into()),
            Req::NoKsm if self.ksm => Some("kernel has KSM; this check is for a CONFIG_KSM=n kernel (--without-ksm)".into()),
            Req::Knob(k) if !self.has_knob(k) => Some(format!("kernel {version} has no /sys/kernel/mm/ksm/{k}")),
            Req::NumaNodes(n) if self.memory_nodes.len() < n => Some(format!(
                "needs {n} NUMA nodes with memory, this machine has {}",
                self.memory_nodes.len()
            )),
            Req::Swap if self.swap_free_kib < 64 * 1024 => Some("no active swap with 64 MiB free (see /proc/swaps)".into()),
            Req::Failslab => self.failslab.clone().err(),
            Req::MemoryCgroup => self.memcg.clone().err(),
            Req::FreshBoot if !self.options.fresh_boot => {
                Some("not a freshly booted kernel (pass --fresh-boot or KSM_CONFORM_FRESH_BOOT=1 right after boot)".into())
            }
            Req::MemoryMergePrctl if !self.memory_merge_prctl => {
                Some(format!("kernel {version} has no prctl(PR_SET_MEMORY_MERGE) (added in 6.4)"))
            }
            Req::KpageFlags => self.kpageflags.clone().err(),
            Req::PageFlags => self.page_flags.clone().err(),
            Req::SoleKsmUser => other_ksm_users(),
            _ => None,
        }
    }

    /// A config option for the report, "?" if the config is not readable.
    pub fn config_value(&self, option: &str) -> String {
        match &self.config {
            Some(c) => c.get(option).unwrap_or("n").to_string(),
            None => "?".to_string(),
        }
    }
}

/// KPF_KSM in /proc/kpageflags for a private anonymous page of ours that
/// was never advised MADV_MERGEABLE; an error if the flags cannot be read
/// (no /proc/kpageflags, or page frames hidden without CAP_SYS_ADMIN).
fn kpf_ksm_of_a_never_advised_page() -> Result<bool, String> {
    if std::fs::File::open("/proc/kpageflags").is_err() {
        return Err("/proc/kpageflags is not readable".into());
    }
    let probe = || -> ksm::Result<Option<bool>> {
        let mut m = ksm::Mapping::anon(1)?;
        m.fill(0, 0x6b70_6673);
        ksm::procfs::is_ksm_page(m.page_addr(0))
    };
    match probe() {
        Ok(Some(ksm)) => Ok(ksm),
        Ok(None) => Err("/proc/self/pagemap hides page frame numbers (needs CAP_SYS_ADMIN)".into()),
        Err(e) => Err(format!("cannot probe /proc/kpageflags: {e}")),
    }
}

/// Whether KPF_KSM can be trusted to tell a KSM page: clear on a page that
/// was never advised. Debian's 6.12.117 sets KPF_KSM on every anonymous
/// page (observed in a guest); there the checks that ask "is this page a
/// KSM page" cannot run, and procfs/kpageflags_ksm_only_on_ksm_pages fails.
fn trusted_kpf_ksm(never_advised: Result<bool, String>) -> Result<(), String> {
    match never_advised? {
        false => Ok(()),
        true => Err(
            "this kernel's /proc/kpageflags sets KPF_KSM on an anonymous page that was never \
             advised, so KSM pages cannot be told from others"
                .into(),
        ),
    }
}

/// Other processes using KSM (not this one or its children), as a skip
/// reason: their pages would show up in the global counters.
pub fn other_ksm_users() -> Option<String> {
    let me = std::process::id();
    let others: Vec<String> = ksm::procfs::ksm_users()
        .into_iter()
        .filter(|u| !ksm::procfs::descends_from(u.pid, me))
        .map(|u| format!("{} ({})", u.pid, u.comm))
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "other processes use KSM and move the global counters: {}",
            others.join(", ")
        )
    })
}
