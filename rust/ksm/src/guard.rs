//! Changing KSM knobs without leaving the machine changed.
//!
//! A [`Session`] is one process's claim on the knobs: it takes an exclusive
//! lock in the state directory and repairs what an interrupted run left in
//! the journal. A [`KnobGuard`] records each knob's original value before the
//! first change (in memory and in the journal, atomically) and puts all back
//! on [`KnobGuard::restore`] or on drop, also when unwinding from a panic.
//!
//! The kernel constrains the order of restoring, which [`restore_plan`]
//! encodes once:
//! - merge_across_nodes and max_page_sharing return -EBUSY while KSM pages
//!   exist, so run goes to 2 (unmerge all) before them;
//! - pages_to_scan returns -EINVAL unless advisor_mode is none, and switching
//!   advisor_mode resets pages_to_scan, so advisor_mode goes to none first and
//!   back to scan-time last;
//! - run is put back last, so ksmd does not scan with half-restored knobs.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::knob::Knob;
use crate::sysfs::Sysfs;

/// Held while the journal and the knobs are being changed, so that the
/// signal thread never restores in the middle of a change.
pub(crate) static WRITE_LOCK: Mutex<()> = Mutex::new(());

const ROOT_STATE_DIR: &str = "/run/ksm-conform";

/// Where the lock and the journal live: /run/ksm-conform for root. Anyone
/// else cannot change a knob, so a private directory in $TMPDIR does for
/// the lock.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from(ROOT_STATE_DIR)
    } else {
        std::env::temp_dir().join(format!("ksm-conform-{}", nix::unistd::geteuid()))
    }
}
const JOURNAL: &str = "saved-knobs";
const LOCK: &str = "lock";

pub struct Session {
    sysfs: Sysfs,
    dir: PathBuf,
    _lock: fs::File,
    recovered: usize,
}

impl Session {
    /// Lock the state directory (waiting for another run to finish) and
    /// restore the knobs an interrupted run left behind.
    pub fn open(sysfs: Sysfs, dir: impl Into<PathBuf>) -> Result<Session> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::file("mkdir", &dir, e))?;
        let lock_path = dir.join(LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::file("open", &lock_path, e))?;
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::file(
                "flock",
                &lock_path,
                std::io::Error::last_os_error(),
            ));
        }
        let journal = dir.join(JOURNAL);
        let recovered = recover(&sysfs, &journal)?;
        Ok(Session {
            sysfs,
            dir,
            _lock: lock,
            recovered,
        })
    }

    /// How many knobs were restored from an interrupted run's journal.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    pub fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    pub fn guard(&self) -> KnobGuard<'_> {
        KnobGuard {
            session: self,
            journal: Journal::default(),
            owner: std::process::id(),
            dirty: false,
        }
    }
}

/// Restore from the journal at `path`, if any, and remove it.
pub fn recover(sysfs: &Sysfs, path: &Path) -> Result<usize> {
    let Some(journal) = Journal::load(path)? else {
        return Ok(0);
    };
    let n = apply(sysfs, &journal)?;
    Journal::remove(path)?;
    Ok(n)
}

pub struct KnobGuard<'s> {
    session: &'s Session,
    journal: Journal,
    owner: u32,
    dirty: bool,
}

impl KnobGuard<'_> {
    pub fn sysfs(&self) -> &Sysfs {
        &self.session.sysfs
    }

    pub fn set(&mut self, knob: Knob, value: &str) -> Result<()> {
        self.write_bytes(knob, value.as_bytes())
    }

    /// Write raw bytes (for validation tests); the original is saved first
    /// even if the kernel then refuses the write.
    pub fn write_bytes(&mut self, knob: Knob, bytes: &[u8]) -> Result<()> {
        assert_eq!(
            std::process::id(),
            self.owner,
            "knobs are changed only by the process owning the guard"
        );
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.save(knob)?;
        self.session.sysfs.write_bytes(knob, bytes)
    }

    /// The original values saved so far, in first-change order.
    pub fn saved(&self) -> Vec<(Knob, String)> {
        self.journal.saved.clone()
    }

    fn save(&mut self, knob: Knob) -> Result<()> {
        let mut added = false;
        for k in std::iter::once(knob).chain(knob.clobbers().iter().copied()) {
            if self.journal.saved.iter().any(|(s, _)| *s == k) || !self.session.sysfs.has(k) {
                continue;
            }
            let value = self.session.sysfs.read(k)?;
            if k == Knob::Run && value != "1" {
                // Nothing of ours may stay merged after ksmd stops again if
                // KSM held no page before we started it.
                self.journal.drain = self.session.sysfs.read_u64(Knob::PagesShared)? == 0;
            }
            self.journal.saved.push((k, value));
            added = true;
        }
        if added {
            self.journal.store(&self.session.journal_path())?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Put every saved knob back; returns how many had to change. On error
    /// the journal is kept so that the next run can try again.
    pub fn restore(&mut self) -> Result<usize> {
        if !self.dirty {
            return Ok(0);
        }
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let n = apply(&self.session.sysfs, &self.journal)?;
        Journal::remove(&self.session.journal_path())?;
        self.journal = Journal::default();
        self.dirty = false;
        Ok(n)
    }
}

impl Drop for KnobGuard<'_> {
    fn drop(&mut self) {
        // A forked child inherits the guard's memory but never owns the knobs.
        if std::process::id() != self.owner {
            return;
        }
        if let Err(e) = self.restore() {
            eprintln!(
                "ksm: {e}; the journal {} is kept",
                self.session.journal_path().display()
            );
        }
    }
}

/// Apply a journal to sysfs; returns how many saved knobs differed.
pub(crate) fn apply(sysfs: &Sysfs, journal: &Journal) -> Result<usize> {
    let current = sysfs.snapshot();
    let changed = journal
        .saved
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .count();
    for (knob, value) in restore_plan(journal, &current) {
        sysfs.write(knob, &value).map_err(|e| Error::Restore {
            knob: knob.name(),
            value: value.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(changed)
}

/// The writes that put `journal` back, given the `current` values, in an
/// order the kernel accepts (see the module documentation).
pub fn restore_plan(journal: &Journal, current: &BTreeMap<Knob, String>) -> Vec<(Knob, String)> {
    let differs = |k: Knob, v: &str| current.get(&k).map(String::as_str) != Some(v);
    let saved = |k: Knob| {
        journal
            .saved
            .iter()
            .find(|(s, _)| *s == k)
            .map(|(_, v)| v.clone())
    };
    // Reverse order of first change, keeping only what differs.
    let pending: Vec<(Knob, String)> = journal
        .saved
        .iter()
        .rev()
        .filter(|(k, v)| differs(*k, v))
        .cloned()
        .collect();
    let mut plan = Vec::new();

    let run_now = current.get(&Knob::Run).cloned().unwrap_or_default();
    let run_final = saved(Knob::Run).unwrap_or_else(|| run_now.clone());
    let drain = journal.drain && saved(Knob::Run).is_some() && run_final != "1";
    let quiesce = drain || pending.iter().any(|(k, _)| k.needs_no_shared_pages());
    let mut run_effective = run_now;
    if quiesce && run_effective != "2" {
        plan.push((Knob::Run, "2".to_string()));
        run_effective = "2".to_string();
    }

    let advisor_now = current.get(&Knob::AdvisorMode).cloned();
    let advisor_final = saved(Knob::AdvisorMode).or_else(|| advisor_now.clone());
    let touches_pages_to_scan = pending.iter().any(|(k, _)| *k == Knob::PagesToScan);
    let mut advisor_effective = advisor_now.clone();
    if advisor_now.is_some()
        && advisor_now.as_deref() != Some("none")
        && (touches_pages_to_scan || advisor_final.as_deref() == Some("none"))
    {
        plan.push((Knob::AdvisorMode, "none".to_string()));
        advisor_effective = Some("none".to_string());
    }

    for (knob, value) in &pending {
        if !matches!(knob, Knob::Run | Knob::AdvisorMode) {
            plan.push((*knob, value.clone()));
        }
    }

    if let Some(target) = advisor_final {
        if advisor_effective.as_deref() != Some(target.as_str()) {
            plan.push((Knob::AdvisorMode, target));
        }
    }
    if run_effective != run_final {
        plan.push((Knob::Run, run_final));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::{fixture, rstest};

    fn state(pairs: &[(Knob, &str)]) -> BTreeMap<Knob, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn journal(drain: bool, pairs: &[(Knob, &str)]) -> Journal {
        Journal {
            drain,
            saved: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn names(plan: &[(Knob, String)]) -> Vec<String> {
        plan.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[rstest]
    // Plain knobs come back in reverse order of change, run last.
    #[case(
        journal(false, &[(Knob::Run, "0"), (Knob::SleepMillisecs, "20"), (Knob::PagesToScan, "100")]),
        state(&[(Knob::Run, "1"), (Knob::SleepMillisecs, "0"), (Knob::PagesToScan, "5000"), (Knob::AdvisorMode, "none")]),
        &["pages_to_scan=100", "sleep_millisecs=20", "run=0"],
    )]
    // merge_across_nodes needs run=2 first, then run goes back.
    #[case(
        journal(false, &[(Knob::Run, "0"), (Knob::MergeAcrossNodes, "1")]),
        state(&[(Knob::Run, "1"), (Knob::MergeAcrossNodes, "0")]),
        &["run=2", "merge_across_nodes=1", "run=0"],
    )]
    // max_page_sharing while run was never touched: run is put back as found.
    #[case(
        journal(false, &[(Knob::MaxPageSharing, "256")]),
        state(&[(Knob::Run, "1"), (Knob::MaxPageSharing, "2")]),
        &["run=2", "max_page_sharing=256", "run=1"],
    )]
    // pages_to_scan cannot be written in scan-time mode: advisor to none first.
    #[case(
        journal(false, &[(Knob::PagesToScan, "100"), (Knob::AdvisorMode, "none")]),
        state(&[(Knob::PagesToScan, "500"), (Knob::AdvisorMode, "scan-time")]),
        &["advisor_mode=none", "pages_to_scan=100"],
    )]
    // Back to scan-time: that must be the last advisor write.
    #[case(
        journal(false, &[(Knob::AdvisorMode, "scan-time"), (Knob::PagesToScan, "500"), (Knob::AdvisorMinPagesToScan, "500")]),
        state(&[(Knob::AdvisorMode, "none"), (Knob::PagesToScan, "5000"), (Knob::AdvisorMinPagesToScan, "10")]),
        &["advisor_min_pages_to_scan=500", "pages_to_scan=500", "advisor_mode=scan-time"],
    )]
    // Drain: KSM was empty before, so nothing merged by us stays after.
    #[case(
        journal(true, &[(Knob::Run, "0"), (Knob::SleepMillisecs, "20")]),
        state(&[(Knob::Run, "1"), (Knob::SleepMillisecs, "0")]),
        &["run=2", "sleep_millisecs=20", "run=0"],
    )]
    // Nothing differs: nothing is written.
    #[case(
        journal(false, &[(Knob::Run, "0"), (Knob::SleepMillisecs, "20")]),
        state(&[(Knob::Run, "0"), (Knob::SleepMillisecs, "20")]),
        &[],
    )]
    fn plan_order(
        #[case] journal: Journal,
        #[case] current: BTreeMap<Knob, String>,
        #[case] want: &[&str],
    ) {
        assert_eq!(names(&restore_plan(&journal, &current)), want);
    }

    /// A directory laid out like /sys/kernel/mm/ksm with boot defaults.
    #[fixture]
    fn fake_sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("run", "0"),
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("merge_across_nodes", "1"),
            ("max_page_sharing", "256"),
            ("advisor_mode", "[none] scan-time"),
            ("pages_shared", "0"),
        ] {
            fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    #[rstest]
    fn guard_restores_on_drop_and_removes_journal(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let before = sysfs.snapshot();
        let session = Session::open(sysfs.clone(), state.path()).unwrap();
        {
            let mut guard = session.guard();
            guard.set(Knob::SleepMillisecs, "0").unwrap();
            guard.set(Knob::Run, "1").unwrap();
            guard.set(Knob::AdvisorMode, "scan-time").unwrap();
            assert!(session.journal_path().exists());
            let journal = Journal::load(&session.journal_path()).unwrap().unwrap();
            let saved: Vec<_> = journal.saved.iter().map(|(k, _)| *k).collect();
            assert_eq!(
                saved,
                [
                    Knob::SleepMillisecs,
                    Knob::Run,
                    Knob::AdvisorMode,
                    Knob::PagesToScan
                ]
            );
        }
        assert_eq!(sysfs.snapshot(), before);
        assert!(!session.journal_path().exists());
    }

    #[rstest]
    fn guard_restores_when_unwinding(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let before = sysfs.snapshot();
        let session = Session::open(sysfs.clone(), state.path()).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut guard = session.guard();
            guard.set(Knob::PagesToScan, "5000").unwrap();
            panic!("check failed");
        }));
        assert!(result.is_err());
        assert_eq!(sysfs.snapshot(), before);
    }

    #[rstest]
    fn interrupted_run_is_repaired_at_next_open(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let before = sysfs.snapshot();
        {
            let session = Session::open(sysfs.clone(), state.path()).unwrap();
            let mut guard = session.guard();
            guard.set(Knob::Run, "1").unwrap();
            guard.set(Knob::MergeAcrossNodes, "0").unwrap();
            // As if killed with SIGKILL: no destructor runs.
            std::mem::forget(guard);
        }
        assert_ne!(sysfs.snapshot(), before);
        let session = Session::open(sysfs.clone(), state.path()).unwrap();
        assert_eq!(session.recovered(), 2);
        assert_eq!(sysfs.snapshot(), before);
        assert!(!session.journal_path().exists());
    }

    #[rstest]
    fn failed_restore_keeps_the_journal(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let session = Session::open(sysfs.clone(), state.path()).unwrap();
        let mut guard = session.guard();
        guard.set(Knob::SleepMillisecs, "0").unwrap();
        fs::remove_file(fake_sysfs.path().join("sleep_millisecs")).unwrap();
        let err = guard.restore().unwrap_err();
        assert!(err.to_string().contains("sleep_millisecs"), "{err}");
        assert!(session.journal_path().exists());
        std::mem::forget(guard);
    }
}
