//! What the running kernel and machine offer, probed once per process. Each
//! requirement a check can have maps to one fact here.

use std::path::Path;

use ksm::kernel::{self, Config, Version};
use ksm::{Knob, Sysfs};

use crate::cgroup::Hierarchy;
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
    pub memcg: Result<Hierarchy, String>,
    pub cpuset: Result<Hierarchy, String>,
    /// Transparent huge pages that MADV_HUGEPAGE can ask for, or why not.
    pub thp: Result<(), String>,
    /// userfaultfd(2) (CONFIG_USERFAULTFD), or why not.
    pub userfaultfd: Result<(), String>,
    /// prctl(PR_SET_MEMORY_MERGE): by the kernel version, never by calling
    /// it (a regression there must fail the prctl checks, not skip them).
    pub memory_merge_prctl: Result<(), String>,
    /// /proc/kpageflags shows the flags of our pages, or why not.
    pub kpageflags: Result<(), String>,
    /// ... and its KPF_KSM tells KSM pages from others, or why not. Checks
    /// use it as extra evidence where it holds (checks::kpf_agrees); their
    /// proof of merging is the frames in pagemap.
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
                Hierarchy::probe("memory")
            } else {
                Err("needs root".into())
            },
            cpuset: if root {
                Hierarchy::probe("cpuset")
            } else {
                Err("needs root".into())
            },
            thp: thp_setting(
                std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok(),
            ),
            userfaultfd: if Path::new("/proc/sys/vm/unprivileged_userfaultfd").exists() {
                Ok(())
            } else {
                Err(
                    "kernel has no userfaultfd (/proc/sys/vm/unprivileged_userfaultfd absent, \
                     CONFIG_USERFAULTFD=n)"
                        .into(),
                )
            },
            memory_merge_prctl: memory_merge_prctl(Version::parse(&release)),
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
            Req::Cpuset => self.cpuset.clone().err(),
            Req::Thp => self.thp.clone().err(),
            Req::Userfaultfd => self.userfaultfd.clone().err(),
            Req::FreshBoot if !self.options.fresh_boot => {
                Some("not a freshly booted kernel (pass --fresh-boot or KSM_CONFORM_FRESH_BOOT=1 right after boot)".into())
            }
            Req::MemoryMergePrctl => self.memory_merge_prctl.clone().err(),
            Req::KpageFlags => self.kpageflags.clone().err(),
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

/// prctl(PR_SET_MEMORY_MERGE) came with 6.4.
fn memory_merge_prctl(version: Option<Version>) -> Result<(), String> {
    match version {
        Some(v) if v >= Version::new(6, 4) => Ok(()),
        Some(v) => Err(format!(
            "kernel {v} has no prctl(PR_SET_MEMORY_MERGE) (added in 6.4)"
        )),
        None => Err("cannot tell the kernel version, so whether it has \
                     prctl(PR_SET_MEMORY_MERGE) (6.4)"
            .into()),
    }
}

/// THP as /sys/kernel/mm/transparent_hugepage/enabled allows it: "always"
/// or "madvise" let MADV_HUGEPAGE areas have huge pages.
fn thp_setting(enabled: Option<String>) -> Result<(), String> {
    match enabled {
        None => Err("kernel has no transparent huge pages \
                     (/sys/kernel/mm/transparent_hugepage/enabled absent)"
            .into()),
        Some(e) if e.contains("[never]") => {
            Err("transparent huge pages are off (transparent_hugepage/enabled is never)".into())
        }
        Some(_) => Ok(()),
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
/// page (observed in a guest); there the checks leave KPF_KSM aside, and
/// procfs/kpageflags_ksm_only_on_ksm_pages fails.
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
