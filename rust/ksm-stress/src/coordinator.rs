//! The campaign: worker processes (crate::worker) and, beside them, actor
//! threads that change KSM's knobs, run 1 -> 2 -> 1, migrate and compact,
//! take memory offline, inject faults on ksmd and unmerge under a memory
//! limit, all at once, for the requested time, in phases. At each phase's
//! end everything pauses in its resting state, every worker checks every
//! page, and the counters are checked exactly while ksmd stands still. At
//! the end the workers check their pages once more and exit, and nothing
//! may be left merged or mergeable.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ksm::scan::{wait_full_scans, wait_within_scans};
use ksm::{Knob, KnobGuard, Session, Sysfs};
use ksm_conform::cgroup::Hierarchy;
use nix::errno::Errno;

use crate::counters::{Counters, Quiet};
use crate::ctl::Control;
use crate::faults::{self, Faults};
use crate::frames;
use crate::knobs::{self, MAX_PAGE_SHARING};
use crate::probes::Probes;
use crate::proto::{Command as Cmd, Reply};
use crate::report::RunResult;
use crate::stats::Stats;
use crate::sys::{self, ksm_processes, mergeable_pages};
use crate::{hotplug, memcg, migration};

#[derive(Debug, Clone)]
pub struct Config {
    pub duration: Duration,
    pub phase: Duration,
    pub workers: u32,
    pub pages: usize,
    pub seed: u64,
    pub gap_ms: u64,
    pub pages_to_scan: u64,
    pub offline_timeout: Duration,
}

/// How long a worker may take to answer a command (a check of every page
/// under TCG with KASAN is slow; a worker stuck in the kernel is not).
const ANSWER: Duration = Duration::from_secs(600);
/// How long ksmd may take for the full scans the checks wait for.
const SCANS: Duration = Duration::from_secs(600);
/// How long the last check waits for exited processes to be let go.
const FINAL_WAIT: Duration = Duration::from_secs(120);

/// An actor thread's body: it returns when the campaign stops, or at once
/// if it has nothing to do on this kernel.
type Actor = fn(&Shared);

/// The actors that park at each phase's end.
const ACTORS: [(&str, Actor); 6] = [
    ("knobs", knobs::knob_actor),
    ("run", knobs::run_actor),
    ("migration", migration::actor),
    ("hotplug", hotplug::actor),
    ("faults", faults::ksmd_actor),
    ("memcg", memcg::actor),
];

/// What the actor threads share.
pub struct Shared<'s> {
    pub ctl: Control,
    pub session: &'s Session,
    pub knobs: Mutex<KnobGuard<'s>>,
    stats: Mutex<Stats>,
    faults: Option<Mutex<Faults<'s>>>,
    pub workers: Vec<u32>,
    pub nodes: Vec<usize>,
    /// Nodes pages may be moved between (empty without migration).
    pub move_nodes: Vec<usize>,
    pub ksmd: Option<u32>,
    pub memcg: Option<Hierarchy>,
    pub exe: PathBuf,
    pub seed: u64,
    pub pages_to_scan: u64,
    pub offline_timeout: Duration,
}

impl Shared<'_> {
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sysfs(&self) -> &Sysfs {
        self.session.sysfs()
    }

    /// Set or clear make-it-fail of a task; false without fault injection.
    pub fn target_faults(&self, make_it_fail: &Path, on: bool) -> bool {
        let Some(f) = &self.faults else {
            return false;
        };
        match f
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .target(make_it_fail, on)
        {
            Ok(()) => true,
            Err(e) => {
                self.stats().error(format!("make-it-fail: {e}"));
                false
            }
        }
    }

    /// This program with a subcommand, dying with us.
    pub fn command(&self, sub: &str) -> Command {
        die_with_us(&self.exe, sub)
    }
}

fn die_with_us(exe: &Path, sub: &str) -> Command {
    let mut c = Command::new(exe);
    c.arg(sub);
    // Without restartable sequences: after a fork with faults armed, the
    // kernel's rseq update on the way back to user space writes the (now
    // copy-on-write) TLS page; an injected allocation failure there makes
    // it kill the task with SIGSEGV (si_code SI_KERNEL), parent or child,
    // which says nothing about KSM.
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:glibc.pthread.rseq=0"),
        _ => "glibc.pthread.rseq=0".into(),
    };
    c.env("GLIBC_TUNABLES", tunables);
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c
}

struct WorkerProc {
    id: u32,
    pid: u32,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dead: bool,
}

impl WorkerProc {
    fn spawn(
        cfg: &Config,
        exe: &Path,
        id: u32,
        faults: bool,
        nodes: &[usize],
    ) -> Result<WorkerProc, String> {
        let mut cmd = die_with_us(exe, "worker");
        cmd.args(["--id", &id.to_string()])
            .args(["--pages", &cfg.pages.to_string()])
            .args(["--seed", &cfg.seed.to_string()])
            .args(["--gap-ms", &cfg.gap_ms.to_string()]);
        // None without migration: an empty --nodes is no list at all.
        if !nodes.is_empty() {
            let list: Vec<String> = nodes.iter().map(usize::to_string).collect();
            cmd.args(["--nodes", &list.join(",")]);
        }
        // Every other worker: the whole process, by prctl.
        if id % 2 == 1 {
            cmd.arg("--merge-any");
        }
        if faults {
            cmd.arg("--faults");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning worker {id}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(WorkerProc {
            id,
            pid: child.id(),
            stdin: child.stdin.take().expect("piped"),
            child,
            lines,
            dead: false,
        })
    }

    /// Wait for the reply that ends `what` (children's lines are counted on
    /// the way); Ok(None) for Ready/Ack, Ok(Some) for a report.
    fn wait_reply(&mut self, what: &str, stats: &mut Stats) -> Result<Option<Stats>, String> {
        let deadline = Instant::now() + ANSWER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "worker {} (pid {}) did not answer {what} within {} s",
                        self.id,
                        self.pid,
                        ANSWER.as_secs()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .map(|s| format!("{s}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "worker {} (pid {}) died before answering {what}: {status}",
                        self.id, self.pid
                    ));
                }
            };
            match Reply::parse(&line)? {
                Reply::Child {
                    verified,
                    corruptions,
                    ..
                } => {
                    stats.pages_verified += verified;
                    for c in corruptions {
                        stats.corrupted(c);
                    }
                }
                Reply::Report { stats: s } => return Ok(Some(s)),
                Reply::Ready { .. } | Reply::Ack => return Ok(None),
            }
        }
    }

    /// Send a command and wait for its reply; a worker that does not
    /// answer is killed and counted as an error.
    fn tell(&mut self, cmd: Cmd, stats: &mut Stats) {
        if self.dead {
            return;
        }
        let sent = writeln!(self.stdin, "{}", cmd.word()).and_then(|_| self.stdin.flush());
        let r = sent
            .map_err(|e| {
                // Its input is closed: it exited, and how says why.
                let exited = (0..20).find_map(|_| {
                    let s = self.child.try_wait().ok().flatten();
                    if s.is_none() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    s
                });
                let status = match exited {
                    Some(s) => format!("it had exited: {s}"),
                    None => "it had closed its input".into(),
                };
                format!(
                    "worker {} (pid {}): sending {}: {e}; {status}",
                    self.id,
                    self.pid,
                    cmd.word()
                )
            })
            .and_then(|_| self.wait_reply(cmd.word(), stats));
        match r {
            Ok(Some(s)) => stats.add(&s),
            Ok(None) => {}
            Err(e) => {
                stats.error(e);
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.dead = true;
            }
        }
    }
}

/// Refuse to run where others use KSM: the campaign takes KSM over.
fn machine_is_free(sysfs: &Sysfs) -> Result<(), String> {
    let users = ksm::procfs::ksm_users();
    if !users.is_empty() {
        let who: Vec<String> = users
            .iter()
            .take(5)
            .map(|u| format!("{} ({})", u.pid, u.comm))
            .collect();
        return Err(format!(
            "other processes use KSM here ({}): run ksm-stress in a guest of its own \
             (ci/stress.sh), never on a machine in use",
            who.join(", ")
        ));
    }
    let shared = sysfs.read_u64(Knob::PagesShared).unwrap_or(0);
    if shared != 0 {
        return Err(format!(
            "KSM holds {shared} pages here: run ksm-stress in a guest of its own (ci/stress.sh)"
        ));
    }
    Ok(())
}

fn log(start: Instant, msg: &str) {
    eprintln!("[ksm-stress {:>5} s] {msg}", start.elapsed().as_secs());
}

/// vmstat counters whose growth the report shows.
const VMSTAT: [&str; 10] = [
    "pgmigrate_success",
    "pgmigrate_fail",
    "compact_success",
    "compact_fail",
    "cow_ksm",
    "ksm_swpin_copy",
    "pswpout",
    "pswpin",
    "thp_split_page",
    "oom_kill",
];

pub fn run(cfg: &Config) -> Result<RunResult, String> {
    let start = Instant::now();
    let sysfs = Sysfs::system();
    if !sysfs.present() {
        return Err("no /sys/kernel/mm/ksm: this kernel has no KSM".into());
    }
    machine_is_free(&sysfs)?;
    let session =
        Session::open(sysfs.clone(), ksm::guard::default_state_dir()).map_err(|e| e.to_string())?;
    ksm::signals::restore_on_termination(sysfs.clone(), session.journal_path())
        .map_err(|e| format!("signal handling: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let nodes = ksm::kernel::memory_nodes();
    let mut skipped = Vec::new();
    let mut faults = match faults::available() {
        Ok(()) => Some(Faults::arm(&session)?),
        Err(why) => {
            skipped.push(format!("fault injection: {why}"));
            None
        }
    };
    let memcg = Hierarchy::probe("memory")
        .inspect_err(|why| skipped.push(format!("memory cgroup: {why}")))
        .ok();
    let ram = hotplug::system_ram(&std::fs::read_to_string(hotplug::IOMEM).unwrap_or_default());
    match hotplug::movable_blocks(Path::new(hotplug::MEMORY), &ram) {
        Ok(b) if !b.is_empty() => {}
        Ok(_) => skipped.push(
            "memory offline: no online block in ZONE_MOVABLE without holes (boot with movablecore=)".into(),
        ),
        Err(e) => skipped.push(format!("memory offline: {}: {e}", hotplug::MEMORY)),
    }
    let migration = nodes.len() >= 2 && migration::available();
    if nodes.len() < 2 {
        skipped.push("NUMA migration: fewer than two nodes with memory".into());
    } else if !migration {
        skipped.push(
            "NUMA migration: no migrate_pages/move_pages in this kernel (ENOSYS: \
             CONFIG_NUMA_MIGRATION=n)"
                .into(),
        );
    }
    // The nodes pages may be moved between: none without migration.
    let move_nodes: Vec<usize> = if migration { nodes.clone() } else { Vec::new() };
    if sys::meminfo_kib("SwapTotal") == 0 {
        skipped.push("swap: no swap device (MADV_PAGEOUT only drops clean pages)".into());
    }
    for s in &skipped {
        log(start, &format!("skipped: {s}"));
    }

    let mut guard = session.guard();
    let set = |g: &mut KnobGuard, k: Knob, v: &str| {
        g.set(k, v).map_err(|e| format!("setting {k}={v}: {e}"))
    };
    if sysfs.read(Knob::AdvisorMode).is_ok() {
        set(&mut guard, Knob::AdvisorMode, "none")?;
    }
    set(&mut guard, Knob::Run, "0")?;
    set(
        &mut guard,
        Knob::MaxPageSharing,
        &MAX_PAGE_SHARING[0].to_string(),
    )?;
    set(
        &mut guard,
        Knob::PagesToScan,
        &cfg.pages_to_scan.to_string(),
    )?;
    set(&mut guard, Knob::SleepMillisecs, "10")?;
    set(&mut guard, Knob::StableNodeChainsPruneMillisecs, "100")?;

    let probes = Probes::start();
    if let Some(why) = probes.unavailable() {
        log(start, &format!("no function counts: {why}"));
    }
    let vmstat_before = sys::vmstat();

    let mut workers = Vec::new();
    let mut stats = Stats::default();
    for id in 0..cfg.workers {
        workers.push(WorkerProc::spawn(
            cfg,
            &exe,
            id,
            faults.is_some(),
            &move_nodes,
        )?);
    }
    for w in &mut workers {
        w.wait_reply("ready", &mut stats)?;
    }
    log(
        start,
        &format!(
            "{} workers of {} pages each ready; nodes {nodes:?}; ksmd pid {:?}",
            cfg.workers,
            cfg.pages,
            sys::ksmd_pid()
        ),
    );
    set(&mut guard, Knob::Run, "1")?;

    let shared = Shared {
        ctl: Control::paused(ACTORS.len()),
        session: &session,
        knobs: Mutex::new(guard),
        stats: Mutex::new(stats),
        faults: faults.take().map(Mutex::new),
        workers: workers.iter().map(|w| w.pid).collect(),
        nodes,
        move_nodes,
        ksmd: sys::ksmd_pid(),
        memcg,
        exe,
        seed: cfg.seed,
        pages_to_scan: cfg.pages_to_scan,
        offline_timeout: cfg.offline_timeout,
    };
    let mut maxima = BTreeMap::new();
    let mut phases = 0;
    std::thread::scope(|s| {
        let sh = &shared;
        for (name, actor) in ACTORS {
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(s, move || {
                    actor(sh);
                    sh.ctl.retire();
                })
                .expect("spawn an actor thread");
        }
        // The counters' sampler never parks.
        std::thread::Builder::new()
            .name("counters".into())
            .spawn_scoped(s, move || sample_counters(sh))
            .expect("spawn the counters' sampler");
        while start.elapsed() < cfg.duration {
            phases += 1;
            phase(&shared, &mut workers, phases, cfg, start, &mut maxima);
        }
        shared.ctl.stop();
    });
    let mut stats = std::mem::take(&mut *shared.stats());
    for w in &mut workers {
        w.tell(Cmd::Pause, &mut stats);
        w.tell(Cmd::Stop, &mut stats);
        if !w.dead {
            match w.child.wait() {
                Ok(s) if s.success() => {}
                other => stats.error(format!("worker {} exited with {other:?}", w.id)),
            }
        }
    }
    let faults = shared
        .faults
        .map(|f| f.into_inner().unwrap_or_else(|p| p.into_inner()));
    let (injected, fault_caches) = match faults {
        Some(mut f) => {
            let injected = f.injected();
            if let Err(e) = f.disarm() {
                stats.error(format!("disarming fault injection: {e}"));
            }
            (injected, f.caches.clone())
        }
        None => (BTreeMap::new(), Vec::new()),
    };
    let mut guard = shared.knobs.into_inner().unwrap_or_else(|p| p.into_inner());
    log(
        start,
        "every worker exited: waiting for KSM to let go of everything",
    );
    final_checks(&mut guard, &mut stats);
    stats.judge_zero_pages_drift();
    let probes = probes.finish();
    let vmstat_after = sys::vmstat();
    let vmstat = VMSTAT
        .iter()
        .filter_map(|k| {
            let d = vmstat_after
                .get(*k)?
                .saturating_sub(*vmstat_before.get(*k)?);
            Some((k.to_string(), d))
        })
        .collect();
    if let Err(e) = guard.restore() {
        stats.error(format!("restoring the knobs: {e}"));
    }
    Ok(RunResult::new(
        cfg,
        start.elapsed(),
        phases,
        stats,
        maxima,
        injected,
        fault_caches,
        vmstat,
        probes,
        skipped,
    ))
}

/// One phase: set its knobs (run=2 first), let everything run, pause,
/// check every page and the counters.
fn phase(
    sh: &Shared,
    workers: &mut [WorkerProc],
    n: u32,
    cfg: &Config,
    start: Instant,
    maxima: &mut BTreeMap<String, u64>,
) {
    let mut stats = Stats::default();
    // Even phases without merge_across_nodes (two nodes), and a different
    // max_page_sharing each phase; both need run=2 first.
    let mab = if sh.nodes.len() > 1 && n % 2 == 0 {
        "0"
    } else {
        "1"
    };
    let mps = MAX_PAGE_SHARING[n as usize % MAX_PAGE_SHARING.len()].to_string();
    if knobs::set(sh, Knob::Run, "2", "run=2 between phases", &[Errno::ENOMEM]).is_ok() {
        // Nothing runs and nothing exits now: no KSM page may be left.
        let c = Counters::read(sh.sysfs());
        stats.event(
            "run=2 with every worker paused, then no KSM page checked",
            1,
        );
        for k in [Knob::PagesShared, Knob::PagesSharing] {
            if c.get(k) != 0 {
                stats.error(format!(
                    "phase {n}: right after run=2 with every worker paused: {k} reads {}",
                    c.get(k)
                ));
            }
        }
        let _ = knobs::set(
            sh,
            Knob::MergeAcrossNodes,
            mab,
            "merge_across_nodes between phases",
            &[Errno::EBUSY],
        );
        let _ = knobs::set(
            sh,
            Knob::MaxPageSharing,
            &mps,
            "max_page_sharing between phases",
            &[Errno::EBUSY],
        );
    }
    if knobs::set(sh, Knob::Run, "1", "run=1", &[]).is_err() {
        sh.stats().error(format!("phase {n}: run=1 refused"));
    }
    for w in workers.iter_mut() {
        w.tell(Cmd::Resume, &mut stats);
    }
    sh.ctl.resume();
    log(
        start,
        &format!("phase {n}: merge_across_nodes={mab} max_page_sharing={mps}"),
    );
    let end = (start + cfg.duration).min(Instant::now() + cfg.phase);
    let mut next_progress = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_progress {
            progress(sh, start, cfg, n, &stats);
            next_progress += Duration::from_secs(10);
        }
        std::thread::sleep(
            Duration::from_millis(250).min(end.saturating_duration_since(Instant::now())),
        );
    }
    sh.ctl.pause();
    for w in workers.iter_mut() {
        w.tell(Cmd::Pause, &mut stats);
    }
    for w in workers.iter_mut() {
        w.tell(Cmd::Verify, &mut stats);
    }
    let c = Counters::read(sh.sysfs());
    for (k, name) in [
        (Knob::PagesShared, "max pages_shared"),
        (Knob::PagesSharing, "max pages_sharing"),
        (Knob::StableNodeChains, "max stable_node_chains"),
        (Knob::StableNodeDups, "max stable_node_dups"),
    ] {
        let v = c.get(k).max(0) as u64;
        let m = maxima.entry(name.to_string()).or_insert(0);
        *m = (*m).max(v);
    }
    quiet_check(sh, n, &mut stats);
    let (verified, corrupted) = (stats.pages_verified, stats.pages_corrupted);
    sh.stats().add(&stats);
    log(
        start,
        &format!(
            "phase {n} checked: {verified} pages verified, {corrupted} corrupted; at its end \
             pages_shared {} pages_sharing {} chains {} dups {}",
            c.get(Knob::PagesShared),
            c.get(Knob::PagesSharing),
            c.get(Knob::StableNodeChains),
            c.get(Knob::StableNodeDups)
        ),
    );
}

fn progress(sh: &Shared, start: Instant, cfg: &Config, n: u32, phase: &Stats) {
    let c = Counters::read(sh.sysfs());
    let st = sh.stats();
    let injected: u64 = sh
        .faults
        .as_ref()
        .map(|f| {
            f.lock()
                .unwrap_or_else(|p| p.into_inner())
                .injected()
                .values()
                .sum()
        })
        .unwrap_or(0);
    log(
        start,
        &format!(
            "of {} s, phase {n}: {} operations by the actors, {} pages verified, {} corrupted, \
             {} errors; faults injected {injected}; full_scans {} pages_shared {} pages_sharing {} \
             chains {} dups {} zero pages {}",
            cfg.duration.as_secs(),
            st.op_total(),
            st.pages_verified + phase.pages_verified,
            st.pages_corrupted + phase.pages_corrupted,
            st.errors.len() + phase.errors.len(),
            c.get(Knob::FullScans),
            c.get(Knob::PagesShared),
            c.get(Knob::PagesSharing),
            c.get(Knob::StableNodeChains),
            c.get(Knob::StableNodeDups),
            c.get(Knob::KsmZeroPages),
        ),
    );
}

/// Scan fast while waiting for full scans: the resting knobs of a check.
fn fast_scans(sh_set: &mut dyn FnMut(Knob, &str) -> Result<(), String>) -> Result<(), String> {
    sh_set(Knob::AdvisorMode, "none")?;
    sh_set(Knob::PagesToScan, "5000")?;
    sh_set(Knob::SleepMillisecs, "0")
}

/// With every worker paused: two full scans (what exited is cleaned up),
/// then ksmd stopped, and the counters must add up exactly.
fn quiet_check(sh: &Shared, n: u32, stats: &mut Stats) {
    let mut set = |k: Knob, v: &str| {
        knobs::set(sh, k, v, &format!("write {k} for the check"), &[])
            .map_err(|e| format!("{k}={v}: {e}"))
    };
    if let Err(e) = fast_scans(&mut set) {
        stats.error(format!("phase {n}: {e}"));
        return;
    }
    if let Err(e) = wait_full_scans(sh.sysfs(), 2, SCANS) {
        stats.error(format!("phase {n}: {e}"));
        return;
    }
    if let Err(e) = set(Knob::Run, "0") {
        stats.error(format!("phase {n}: {e}"));
        return;
    }
    let processes = ksm_processes();
    let advised = processes
        .iter()
        .filter_map(|p| mergeable_pages(p.pid))
        .sum();
    let quiet = Quiet {
        counters: Counters::read(sh.sysfs()),
        processes,
        advised,
    };
    stats.event("quiet checks of the counters", 1);
    stats.note_zero_pages_deficit(quiet.zero_deficit());
    stats.note_zero_pages_surplus(quiet.zero_surplus());
    for p in quiet.problems() {
        stats.error(format!("phase {n}: {p}"));
    }
    let _ = set(Knob::PagesToScan, &sh.pages_to_scan.to_string());
    let _ = set(Knob::SleepMillisecs, "10");
    if let Err(e) = set(Knob::Run, "1") {
        stats.error(format!("phase {n}: {e}"));
    }
}

/// Once every worker exited: within a few full scans nothing may be left
/// merged or registered; after run=2 no stable node may be left.
fn final_checks(guard: &mut KnobGuard, stats: &mut Stats) {
    let sysfs = guard.sysfs().clone();
    let mut set = |k: Knob, v: &str| guard.set(k, v).map_err(|e| format!("{k}={v}: {e}"));
    let r = fast_scans(&mut set).and_then(|_| set(Knob::Run, "1"));
    if let Err(e) = r {
        stats.error(format!("final check: {e}"));
        return;
    }
    let leftovers = || {
        let c = Counters::read(&sysfs);
        let users: Vec<String> = ksm::procfs::ksm_users()
            .iter()
            .map(|u| format!("{} ({})", u.pid, u.comm))
            .collect();
        let mut left = Vec::new();
        for k in [Knob::PagesShared, Knob::PagesSharing] {
            if c.get(k) != 0 {
                left.push(format!("{k} {}", c.get(k)));
            }
        }
        if !users.is_empty() {
            left.push(format!(
                "processes still registered with KSM: {}",
                users.join(", ")
            ));
        }
        left
    };
    // Once the last mm is gone ksmd stops scanning (nothing to scan), so
    // the wait is bounded by time as well as by full scans.
    let waited = wait_within_scans(&sysfs, "nothing left merged", 4, FINAL_WAIT, || {
        Ok(leftovers().is_empty())
    });
    stats.event("final checks that nothing is left merged", 1);
    if waited.is_err() {
        stats.error(format!(
            "after every worker exited, 4 full scans or {} s: {}",
            FINAL_WAIT.as_secs(),
            leftovers().join("; ")
        ));
    }
    // Zero pages are unmapped (and uncounted) by the exits themselves,
    // not by ksmd: no waiting makes a wrong count right.
    let counters = Counters::read(&sysfs);
    let zero = counters.get(Knob::KsmZeroPages);
    stats.note_zero_pages_surplus(zero.max(0) as u64);
    stats.note_zero_pages_deficit(counters.zero_pages_below_zero());
    match set(Knob::Run, "2") {
        Ok(()) => {
            let c = Counters::read(&sysfs);
            for k in [
                Knob::PagesShared,
                Knob::PagesSharing,
                Knob::PagesUnshared,
                Knob::StableNodeChains,
                Knob::StableNodeDups,
            ] {
                if c.0.contains_key(&k) && c.get(k) != 0 {
                    stats.error(format!("after the last run=2: {k} reads {}", c.get(k)));
                }
            }
            // general_profit counts ksm_zero_pages, whatever it reads (its
            // deficit is judged on its own); nothing else is left.
            let zero = c.get(Knob::KsmZeroPages);
            let profit = zero * frames::PAGE as i128;
            if c.0.contains_key(&Knob::GeneralProfit) && c.get(Knob::GeneralProfit) != profit {
                stats.error(format!(
                    "after the last run=2: general_profit reads {}, not ksm_zero_pages {zero} \
                     pages",
                    c.get(Knob::GeneralProfit)
                ));
            }
            for bad in c.insane() {
                stats.error(format!("after the last run=2: {bad}"));
            }
        }
        Err(e) => stats.error(format!("final run=2: {e}")),
    }
}

/// The actor that samples the counters every second: a wrapped value at
/// any time is an error, reported once per counter with its first value;
/// how many samples were insane is counted.
fn sample_counters(sh: &Shared) {
    let mut seen = std::collections::BTreeSet::new();
    while sh.ctl.sleep_unpaused(Duration::from_secs(1)) {
        let c = Counters::read(sh.sysfs());
        let below = c.zero_pages_below_zero();
        if below > 0 {
            let mut st = sh.stats();
            st.note_zero_pages_deficit(below);
            st.event("samples of the counters with ksm_zero_pages below zero", 1);
        }
        for (k, v) in c.insane_values() {
            let mut st = sh.stats();
            if seen.insert(k) {
                st.error(format!(
                    "counter sampled: {k} reads {v} (first such sample)"
                ));
            }
            st.event(&format!("samples of the counters with {k} insane"), 1);
        }
        sh.stats().event("samples of the counters", 1);
    }
}
