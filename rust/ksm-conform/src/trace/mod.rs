//! `ksm-conform trace`: the differential oracle. Deterministic workloads
//! ([`workload`]) run with ksmd driven one batch at a time ([`ksmd`]), and
//! every KSM counter, global and per process, recorded after each step's
//! actions and after each batch ([`record`]). Two kernels that decide alike
//! write identical traces; `ksm-conform trace-diff` names the first record
//! where they do not.
//!
//! What makes a trace repeatable, besides the workloads' fixed seeds:
//! - ksmd runs only when told, one batch at a time, and the counters are
//!   read while it sleeps ([`ksmd`]); the workers are idle between commands
//!   ([`worker`]);
//! - the order ksmd visits pages in is fixed: mms in the order they
//!   registered (the driver's own page first, registered before ksmd
//!   starts, keeps the list from ever emptying), areas in the order of their
//!   fixed offsets in each worker's reservation, pages by address;
//! - nothing holds a transient reference on a page when ksmd looks at it,
//!   since write_protect_page() refuses a page whose refcount is not its
//!   mapcount + 1: after each step's actions the driver drains the per-CPU
//!   LRU batches, which hold a reference on every page faulted in recently
//!   (writing 1 to /proc/sys/vm/drop_caches calls lru_add_drain_all(); ksmd
//!   drains them itself only at the start of a full scan, and some batches
//!   stop inside one); proactive compaction and NUMA balancing, which lock
//!   and move pages at times of their choosing, are off during the trace
//!   (journaled, put back);
//! - nothing depends on time: stable_node_chains_prune_millisecs is 0
//!   (prune on every lookup) or its maximum (never), not an interval that
//!   jiffies decide; the scan-time advisor, which sizes batches from how long
//!   scans take, stays off (advisor_mode none);
//! - nothing depends on physical addresses: with merge_across_nodes 1 a
//!   page's frame does not matter, and with 0 only its node does, which
//!   MPOL_BIND fixes before the first touch, for the workers' pages and the
//!   driver's own (left unbound, the driver's page landed on either node
//!   from one boot to the next, and with it which tree its lookups pruned:
//!   stable_node_chains differed at the end of the numa workload);
//! - counters that accumulate since boot are recorded from the start of
//!   each workload, and sleep_millisecs, the driver's toggle, not at all
//!   ([`record::RELATIVE`], [`record::EXCLUDED`]).

pub mod ksmd;
pub mod record;
pub mod worker;
pub mod workload;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ksm::mem::mbind_to_node;
use ksm::undo::Undo;
use ksm::{Advice, Knob, KnobGuard, Mapping, Session, Sysfs};

use crate::env::Env;
use ksmd::{Batch, Ksmd};
use record::{EXCLUDED, Proc, RELATIVE, Record, Sample, VMSTAT};
use worker::Workers;
use workload::{Action, Workload};

/// What a trace run is asked for.
pub struct Options {
    pub out: PathBuf,
    /// Workload names; all if empty.
    pub workloads: Vec<String>,
    /// The seed the workloads draw their contents from.
    pub seed: u64,
}

/// Sysctls that move pages on their own, set to 0 during a trace.
const QUIET_SYSCTLS: &[&str] = &[
    "/proc/sys/vm/compaction_proactiveness",
    "/proc/sys/kernel/numa_balancing",
];
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";
/// The driver's own registered page (see the module documentation).
const DRIVER_PAGE_SEED: u64 = 0x6b73_6d2d_6472_7672;

/// Check the names asked for before anything runs.
pub fn check_names(names: &[String]) -> Result<(), String> {
    for n in names {
        if !workload::NAMES.contains(&n.as_str()) {
            return Err(format!(
                "unknown workload {n:?} (workloads: {})",
                workload::NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

/// The trace being written: `PATH.tmp`, renamed to PATH once complete.
struct TraceFile {
    file: fs::File,
    tmp: PathBuf,
    samples: usize,
}

impl TraceFile {
    fn create(path: &Path) -> Result<TraceFile, String> {
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let file =
            fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(TraceFile {
            file,
            tmp,
            samples: 0,
        })
    }

    fn write(&mut self, r: &Record) -> Result<(), String> {
        if matches!(r, Record::Sample(_)) {
            self.samples += 1;
        }
        writeln!(self.file, "{}", r.line())
            .map_err(|e| format!("write {}: {e}", self.tmp.display()))
    }

    fn finish(mut self, path: &Path) -> Result<usize, String> {
        self.write(&Record::End {
            samples: self.samples,
        })?;
        self.file
            .sync_all()
            .map_err(|e| format!("sync {}: {e}", self.tmp.display()))?;
        fs::rename(&self.tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
        Ok(self.samples)
    }
}

/// Record the trace into `opts.out`; returns the number of samples.
pub fn run(session: &Session, env: &Env, opts: &Options) -> Result<usize, String> {
    let mut guard = session.guard();
    let mut file = TraceFile::create(&opts.out)?;
    for path in QUIET_SYSCTLS {
        quiet_sysctl(session, Path::new(path))?;
    }
    // The scan-time advisor sizes batches from how long scans take (and
    // refuses pages_to_scan): off.
    if guard.sysfs().has(Knob::AdvisorMode)
        && guard
            .sysfs()
            .read(Knob::AdvisorMode)
            .map_err(|e| e.to_string())?
            != "none"
    {
        guard
            .set(Knob::AdvisorMode, "none")
            .map_err(|e| format!("advisor_mode=none: {e}"))?;
    }
    let mut ksmd = Ksmd::find()?;
    // Registered before ksmd first runs, and for the whole trace. Bound to
    // the first node with memory: with merge_across_nodes 0 its node picks
    // the trees its lookups walk (and prune), and left to itself it lands
    // on the node of whichever CPU the driver ran on.
    let mut driver_page = Mapping::anon(1).map_err(|e| e.to_string())?;
    if let Some(&node) = env.memory_nodes.first() {
        match mbind_to_node(driver_page.addr(), driver_page.len(), node) {
            Ok(()) | Err(nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(format!("mbind the driver's page to node {node}: {e}")),
        }
    }
    driver_page.fill(0, DRIVER_PAGE_SEED);
    driver_page
        .advise(Advice::Mergeable)
        .map_err(|e| format!("madvise(MADV_MERGEABLE): {e}"))?;
    let mut workers = Workers::new()?;
    file.write(&Record::Header {
        format: record::FORMAT.into(),
        schema: record::SCHEMA,
        // The release alone does not tell our builds apart: /proc/version.
        kernel: fs::read_to_string("/proc/version")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| env.release.clone()),
        tool: format!("ksm-conform {}", env!("CARGO_PKG_VERSION")),
        page_size: ksm::mem::page_size(),
        seed: opts.seed,
    })?;
    eprintln!(
        "trace: ksmd is pid {}, the driver pid {}",
        ksmd.pid(),
        std::process::id()
    );
    for w in workload::all(env, opts.seed) {
        if !opts.workloads.is_empty() && !opts.workloads.iter().any(|n| n == w.name) {
            continue;
        }
        // merge_across_nodes exists with CONFIG_NUMA only; its 1 is what a
        // kernel without NUMA does anyway (the numa workload asks for it).
        let missing = w
            .knobs
            .iter()
            .map(|(k, _)| *k)
            .find(|k| *k != Knob::MergeAcrossNodes && !guard.sysfs().has(*k));
        let unmet = w
            .unmet
            .clone()
            .or_else(|| missing.map(|k| format!("no /sys/kernel/mm/ksm/{k} in this kernel")));
        if let Some(reason) = unmet {
            eprintln!("trace: {}: skipped: {reason}", w.name);
            file.write(&Record::Skip {
                workload: w.name.into(),
                reason,
            })?;
            continue;
        }
        let start = Instant::now();
        let mut run = Run {
            guard: &mut guard,
            ksmd: &mut ksmd,
            workers: &mut workers,
            file: &mut file,
            workload: &w,
            baseline: BTreeMap::new(),
        };
        let result = run.workload();
        if result.is_err() {
            // Leave no worker behind to hold pages while the knobs go back.
            let _ = workers.exit_all();
        }
        result.map_err(|e| format!("workload {}: {e}", w.name))?;
        eprintln!(
            "trace: {}: done in {:.1} s",
            w.name,
            start.elapsed().as_secs_f64()
        );
    }
    drop(driver_page);
    let samples = file.finish(&opts.out)?;
    guard.restore().map_err(|e| e.to_string())?;
    Ok(samples)
}

/// Set a sysctl that moves pages on its own to 0, journaled, if it exists
/// and is not 0 already.
fn quiet_sysctl(session: &Session, path: &Path) -> Result<(), String> {
    let Ok(old) = fs::read_to_string(path) else {
        return Ok(());
    };
    let old = old.trim().to_string();
    if old == "0" {
        return Ok(());
    }
    let undo = Undo::Write {
        path: path.to_path_buf(),
        value: old,
    };
    session
        .change(undo, || {
            fs::write(path, "0").map_err(|e| ksm::Error::file("write", path, e))
        })
        .map_err(|e| e.to_string())
}

/// lru_add_drain_all(): every page faulted in so far leaves the per-CPU LRU
/// batches, and with them the reference that would make ksmd skip it.
fn drain_lru_batches() -> Result<(), String> {
    fs::write(DROP_CACHES, "1").map_err(|e| format!("write {DROP_CACHES}: {e}"))
}

/// One workload's run.
struct Run<'a, 's> {
    guard: &'a mut KnobGuard<'s>,
    ksmd: &'a mut Ksmd,
    workers: &'a mut Workers,
    file: &'a mut TraceFile,
    workload: &'a Workload,
    /// The cumulative counters at the workload's start.
    baseline: BTreeMap<String, i64>,
}

impl Run<'_, '_> {
    fn workload(&mut self) -> Result<(), String> {
        let w = self.workload;
        self.ksmd.park(self.guard)?;
        let mut knobs = BTreeMap::new();
        for (knob, value) in &w.knobs {
            if self.guard.sysfs().has(*knob) {
                self.set(*knob, value)?;
                knobs.insert(knob.name().to_string(), value.to_string());
            }
        }
        self.file.write(&Record::Workload {
            workload: w.name.into(),
            description: w.description.into(),
            knobs,
        })?;
        self.ksmd.start(self.guard)?;
        self.baseline = self.cumulative()?;
        for (n, step) in w.steps.iter().enumerate() {
            eprintln!(
                "trace: {} step {}/{}: {}",
                w.name,
                n + 1,
                w.steps.len(),
                step.what
            );
            for action in &step.actions {
                self.act(action)?;
            }
            drain_lru_batches()?;
            self.ksmd.quiet(self.guard.sysfs())?;
            self.sample(n, &step.what, 0, None)?;
            for (b, batch) in step.batches.iter().enumerate() {
                self.ksmd.batch(self.guard, *batch)?;
                self.sample(n, &step.what, b + 1, Some(*batch))?;
            }
        }
        if !self.workers.is_empty() {
            return Err("workers still alive after the last step".into());
        }
        Ok(())
    }

    fn set(&mut self, knob: Knob, value: &str) -> Result<(), String> {
        self.guard
            .set(knob, value)
            .map_err(|e| format!("{knob}={value}: {e}"))
    }

    fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Spawn(id) => self.workers.spawn(id).map(drop),
            Action::Fork { parent, child } => self.workers.fork(parent, child).map(drop),
            Action::Exit(id) => self.workers.exit(id),
            Action::Do(id, command) => self.workers.run(id, command),
            Action::Set(knob, value) => self.set(*knob, value),
        }
    }

    /// The counters recorded relative to the workload's start.
    fn cumulative(&self) -> Result<BTreeMap<String, i64>, String> {
        let mut now = BTreeMap::new();
        for name in RELATIVE {
            if let Some(Knob::FullScans | Knob::PagesScanned | Knob::PagesSkipped) =
                Knob::from_name(name)
            {
                let path = self.guard.sysfs().root().join(name);
                if let Ok(text) = fs::read_to_string(&path) {
                    let v = text
                        .trim()
                        .parse()
                        .map_err(|_| format!("{}: {text:?}", path.display()))?;
                    now.insert(format!("ksm.{name}"), v);
                }
            }
        }
        for name in VMSTAT {
            if let Some(v) = ksm::procfs::vmstat(name).map_err(|e| e.to_string())? {
                now.insert(format!("vmstat.{name}"), v as i64);
            }
        }
        Ok(now)
    }

    fn sample(
        &mut self,
        step: usize,
        action: &str,
        batch: usize,
        scan: Option<Batch>,
    ) -> Result<(), String> {
        let sysfs: &Sysfs = self.guard.sysfs();
        let mut ksm = BTreeMap::new();
        for name in sysfs.entries().map_err(|e| e.to_string())? {
            if EXCLUDED.contains(&name.as_str()) {
                continue;
            }
            let path = sysfs.root().join(&name);
            let text =
                fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            ksm.insert(name, record::value(&text));
        }
        let now = self.cumulative()?;
        let mut vmstat = BTreeMap::new();
        for (key, v) in &now {
            let base = self.baseline.get(key).copied().unwrap_or(0);
            if let Some(name) = key.strip_prefix("ksm.") {
                ksm.insert(name.to_string(), (v - base).into());
            } else if let Some(name) = key.strip_prefix("vmstat.") {
                vmstat.insert(name.to_string(), v - base);
            }
        }
        let mut procs = BTreeMap::new();
        let me = std::process::id();
        for (id, pid) in std::iter::once(("driver", me)).chain(self.workers.live()) {
            procs.insert(id.to_string(), read_proc(pid)?);
        }
        self.file.write(&Record::Sample(Box::new(Sample {
            workload: self.workload.name.into(),
            step,
            action: action.into(),
            batch,
            scan: match scan {
                None => String::new(),
                Some(Batch::Full) => "full".into(),
                Some(Batch::Pages(n)) => format!("{n} pages"),
            },
            ksm,
            vmstat,
            procs,
        })))
    }
}

fn read_proc(pid: u32) -> Result<Proc, String> {
    let stat = ksm::procfs::KsmStat::read(Some(pid)).map_err(|e| e.to_string())?;
    let mut ksm_stat: BTreeMap<String, serde_json::Value> = stat
        .numbers
        .iter()
        .map(|(k, v)| (k.clone(), (*v).into()))
        .collect();
    ksm_stat.extend(stat.flags.iter().map(|(k, v)| (k.clone(), (*v).into())));
    Ok(Proc {
        ksm_merging_pages: ksm::procfs::ksm_merging_pages(Some(pid)).map_err(|e| e.to_string())?,
        ksm_stat,
    })
}
