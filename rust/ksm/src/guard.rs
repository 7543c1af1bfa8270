//! Changing KSM knobs, and the few things outside them a check needs,
//! without leaving the machine changed.
//!
//! A [`Session`] is one process's claim on the knobs: it takes an exclusive
//! lock in the state directory, repairs what an interrupted run left in the
//! journal, and journals what this process changes. A [`KnobGuard`] is one
//! check's scope: a knob's original value is recorded (in memory and in the
//! journal, atomically) before its first change, and everything is put back
//! on [`KnobGuard::restore`] or on drop, also when unwinding from a panic.
//! Changes outside the knobs go through [`Session::change`] and
//! [`Session::undo`] (see [`crate::undo`]); the restore undoes those first.
//!
//! The kernel constrains the order of restoring, which [`restore_plan`]
//! encodes once:
//! - merge_across_nodes and max_page_sharing return -EBUSY while KSM pages
//!   exist, so run goes to 2 (unmerge all) before them;
//! - pages_to_scan returns -EINVAL unless advisor_mode is none, and every
//!   switch of advisor_mode resets pages_to_scan, so advisor_mode goes to
//!   none first, pages_to_scan is written after any switch, and advisor_mode
//!   goes back to scan-time last;
//! - while advisor_mode is scan-time the kernel sets pages_to_scan itself
//!   ([`kernel_managed`]): it is then neither written back nor compared;
//! - run is put back last, so ksmd does not scan with half-restored knobs.
//!
//! After the writes every saved knob is read back and must hold its value.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::knob::Knob;
use crate::sysfs::Sysfs;
use crate::undo::Undo;

/// Held while the journal and what it records are being changed, so that
/// the signal thread never restores in the middle of a change.
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

/// The journal a session in `dir` keeps: present while knobs are changed,
/// or after a run was killed before it could put them back.
pub fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL)
}

/// Knobs the kernel sets itself while advisor_mode is `advisor_mode`: in
/// scan-time mode the advisor recomputes pages_to_scan after every scan.
pub fn kernel_managed(advisor_mode: Option<&str>) -> &'static [Knob] {
    match advisor_mode {
        Some("scan-time") => &[Knob::PagesToScan],
        _ => &[],
    }
}

/// What an interrupted run had left and the session put back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Knobs that had to change.
    pub knobs: usize,
    /// The changes outside the knobs that were undone.
    pub undone: Vec<Undo>,
}

impl Recovered {
    /// One line for the output, or None if the last run left nothing.
    pub fn describe(&self) -> Option<String> {
        let undone: Vec<String> = self.undone.iter().rev().map(Undo::to_string).collect();
        match (self.knobs, undone.is_empty()) {
            (0, true) => None,
            (0, false) => Some(format!(
                "undid what an interrupted run left: {}",
                undone.join("; ")
            )),
            (n, true) => Some(format!("restored {n} knobs left by an interrupted run")),
            (n, false) => Some(format!(
                "restored {n} knobs left by an interrupted run, and undid: {}",
                undone.join("; ")
            )),
        }
    }
}

pub struct Session {
    sysfs: Sysfs,
    dir: PathBuf,
    _lock: fs::File,
    recovered: Recovered,
    /// The process that opened the session; forked children inherit its
    /// memory but never change anything through it.
    owner: u32,
    /// What this process changed and has not put back; the journal file
    /// mirrors it.
    journal: Mutex<Journal>,
}

impl Session {
    /// Lock the state directory (waiting for another run to finish) and
    /// put back what an interrupted run left behind.
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
        lock_exclusive(&lock, &lock_path)?;
        // Who holds the lock, for the message of a run that waits for it.
        let owner = std::process::id();
        lock.set_len(0)
            .and_then(|_| lock.write_all_at(format!("{owner}\n").as_bytes(), 0))
            .map_err(|e| Error::file("write", &lock_path, e))?;
        let recovered = recover(&sysfs, &dir.join(JOURNAL))?;
        Ok(Session {
            sysfs,
            dir,
            _lock: lock,
            recovered,
            owner,
            journal: Mutex::new(Journal::default()),
        })
    }

    /// What was put back from an interrupted run's journal.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    pub fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }

    pub fn journal_path(&self) -> PathBuf {
        journal_path(&self.dir)
    }

    pub fn guard(&self) -> KnobGuard<'_> {
        KnobGuard { session: self }
    }

    /// Make a change outside the knobs that `undo` reverses. `undo` is
    /// journaled before `change` runs, so that a signal, or the next run
    /// after a SIGKILL, undoes it; if `change` fails it is forgotten again.
    /// `change` runs with the journal locked and must not call the session.
    pub fn change<T>(&self, undo: Undo, change: impl FnOnce() -> Result<T>) -> Result<T> {
        self.assert_owner();
        recordable(&undo)?;
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut journal = self.journal();
        journal.undo.push(undo);
        if let Err(e) = self.store(&journal) {
            journal.undo.pop();
            return Err(e);
        }
        change().inspect_err(|_| {
            journal.undo.pop();
            // An entry left in the file only undoes what is not done.
            let _ = self.store(&journal);
        })
    }

    /// Undo a change made with [`Session::change`] and forget it. Already
    /// undone (by a restore) is fine; on error it stays journaled.
    pub fn undo(&self, undo: &Undo) -> Result<()> {
        self.assert_owner();
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut journal = self.journal();
        let Some(i) = journal.undo.iter().rposition(|u| u == undo) else {
            return Ok(());
        };
        undo.perform().map_err(|e| Error::Undo {
            undo: undo.to_string(),
            source: Box::new(e),
        })?;
        journal.undo.remove(i);
        self.store(&journal)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn assert_owner(&self) {
        assert_eq!(
            std::process::id(),
            self.owner,
            "only the process that opened the session changes anything through it"
        );
    }

    /// The journal file follows the journal: gone when there is nothing to
    /// put back.
    fn store(&self, journal: &Journal) -> Result<()> {
        if journal.is_empty() {
            Journal::remove(&self.journal_path())
        } else {
            journal.store(&self.journal_path())
        }
    }

    /// Journal `knob` (and what writing it clobbers) before its first
    /// change. Called with WRITE_LOCK held.
    fn save(&self, knob: Knob) -> Result<()> {
        let mut journal = self.journal();
        let mut added = false;
        for k in std::iter::once(knob).chain(knob.clobbers().iter().copied()) {
            if journal.saved.iter().any(|(s, _)| *s == k) || !self.sysfs.has(k) {
                continue;
            }
            let value = self.sysfs.read(k)?;
            if k == Knob::Run && value != "1" {
                // Nothing of ours may stay merged after ksmd stops again if
                // KSM held no page before we started it.
                journal.drain = self.sysfs.read_u64(Knob::PagesShared)? == 0;
            }
            journal.saved.push((k, value));
            added = true;
        }
        if added {
            self.store(&journal)?;
        }
        Ok(())
    }

    /// Put back everything journaled; returns how many knobs had to change.
    /// On error the journal is kept so that the next run can try again.
    fn restore(&self) -> Result<usize> {
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut journal = self.journal();
        if journal.is_empty() {
            return Ok(0);
        }
        let n = apply(&self.sysfs, &journal)?;
        *journal = Journal::default();
        self.store(&journal)?;
        Ok(n)
    }
}

/// Take the lock, saying whom we wait for if another run holds it.
fn lock_exclusive(lock: &fs::File, path: &Path) -> Result<()> {
    let flock = |op| {
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), op) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match flock(libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            eprintln!(
                "ksm: waiting for the run holding {}{}",
                path.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            );
        }
        Err(e) => return Err(Error::file("flock", path, e)),
    }
    flock(libc::LOCK_EX).map_err(|e| Error::file("flock", path, e))
}

/// A journal line holds an undo entry only if its path has no white space
/// and its value is one trimmed, non-empty line.
fn recordable(undo: &Undo) -> Result<()> {
    let path_ok = !undo.path().to_string_lossy().contains(char::is_whitespace);
    let value_ok = match undo {
        Undo::Write { value, .. } => {
            !value.is_empty() && value.trim() == value && !value.contains('\n')
        }
        _ => true,
    };
    if path_ok && value_ok {
        Ok(())
    } else {
        Err(Error::Other(format!("cannot journal {undo}")))
    }
}

/// Put back what the journal at `path` records, if there is one, and
/// remove it.
pub fn recover(sysfs: &Sysfs, path: &Path) -> Result<Recovered> {
    let Some(journal) = Journal::load(path)? else {
        return Ok(Recovered::default());
    };
    let knobs = apply(sysfs, &journal)?;
    Journal::remove(path)?;
    Ok(Recovered {
        knobs,
        undone: journal.undo,
    })
}

/// A check's scope: whatever it changed is put back when it ends.
pub struct KnobGuard<'s> {
    session: &'s Session,
}

impl<'s> KnobGuard<'s> {
    pub fn sysfs(&self) -> &Sysfs {
        &self.session.sysfs
    }

    pub fn session(&self) -> &'s Session {
        self.session
    }

    pub fn set(&mut self, knob: Knob, value: &str) -> Result<()> {
        self.write_bytes(knob, value.as_bytes())
    }

    /// Write raw bytes (for validation tests); the original is saved first
    /// even if the kernel then refuses the write.
    pub fn write_bytes(&mut self, knob: Knob, bytes: &[u8]) -> Result<()> {
        self.session.assert_owner();
        let _held = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.session.save(knob)?;
        self.session.sysfs.write_bytes(knob, bytes)
    }

    /// Put back everything changed so far; returns how many knobs had to
    /// change. On error the journal is kept so that the next run can try
    /// again.
    pub fn restore(&mut self) -> Result<usize> {
        self.session.restore()
    }
}

impl Drop for KnobGuard<'_> {
    fn drop(&mut self) {
        // A forked child inherits the guard's memory but never owns the knobs.
        if std::process::id() != self.session.owner {
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

/// Undo the journal's changes outside the knobs (the last made first), then
/// put its knobs back; returns how many saved knobs differed. Every undo is
/// tried even if one fails; the first error is returned.
pub(crate) fn apply(sysfs: &Sysfs, journal: &Journal) -> Result<usize> {
    let mut failed = None;
    for undo in journal.undo.iter().rev() {
        if let Err(e) = undo.perform() {
            failed.get_or_insert(Error::Undo {
                undo: undo.to_string(),
                source: Box::new(e),
            });
        }
    }
    let knobs = put_back(sysfs, journal, |knob, value| sysfs.write(knob, value));
    match failed {
        Some(e) => Err(e),
        None => knobs,
    }
}

/// Write the journal's knobs with `write` in the order [`restore_plan`]
/// gives, then read every saved knob back: one that does not hold its value
/// is an error, whatever the writes returned.
fn put_back(
    sysfs: &Sysfs,
    journal: &Journal,
    mut write: impl FnMut(Knob, &str) -> Result<()>,
) -> Result<usize> {
    let current = sysfs.snapshot();
    let managed = kernel_managed(advisor_final(journal, &current).as_deref());
    let ours = || journal.saved.iter().filter(|(k, _)| !managed.contains(k));
    let changed = ours().filter(|(k, v)| current.get(k) != Some(v)).count();
    for (knob, value) in restore_plan(journal, &current) {
        write(knob, &value).map_err(|e| Error::Restore {
            knob: knob.name(),
            value: value.clone(),
            source: Box::new(e),
        })?;
    }
    for (knob, want) in ours() {
        let got = sysfs.read(*knob)?;
        if &got != want {
            return Err(Error::NotRestored {
                knob: knob.name(),
                want: want.clone(),
                got,
            });
        }
    }
    Ok(changed)
}

/// advisor_mode once restored: as saved, else as it is now.
fn advisor_final(journal: &Journal, current: &BTreeMap<Knob, String>) -> Option<String> {
    journal
        .saved
        .iter()
        .find(|(k, _)| *k == Knob::AdvisorMode)
        .map(|(_, v)| v.clone())
        .or_else(|| current.get(&Knob::AdvisorMode).cloned())
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
    let advisor_now = current.get(&Knob::AdvisorMode).cloned();
    let advisor_final = advisor_final(journal, current);
    let managed = kernel_managed(advisor_final.as_deref());
    // Reverse order of first change, keeping what differs and is ours to write.
    let pending: Vec<Knob> = journal
        .saved
        .iter()
        .rev()
        .filter(|(k, v)| !managed.contains(k) && differs(*k, v))
        .map(|(k, _)| *k)
        .collect();
    let mut plan = Vec::new();

    let run_now = current.get(&Knob::Run).cloned().unwrap_or_default();
    let run_final = saved(Knob::Run).unwrap_or_else(|| run_now.clone());
    let drain = journal.drain && saved(Knob::Run).is_some() && run_final != "1";
    let quiesce = drain || pending.iter().any(|k| k.needs_no_shared_pages());
    let mut run_effective = run_now;
    if quiesce && run_effective != "2" {
        plan.push((Knob::Run, "2".to_string()));
        run_effective = "2".to_string();
    }

    let touches_pages_to_scan = pending.contains(&Knob::PagesToScan);
    let mut advisor_effective = advisor_now.clone();
    if advisor_now.is_some()
        && advisor_now.as_deref() != Some("none")
        && (touches_pages_to_scan || advisor_final.as_deref() == Some("none"))
    {
        plan.push((Knob::AdvisorMode, "none".to_string()));
        advisor_effective = Some("none".to_string());
    }
    // A switch of advisor_mode resets what it clobbers, even what read right
    // before the switch: that is written back after it.
    let switched = advisor_effective != advisor_now;
    for (knob, value) in journal.saved.iter().rev() {
        if matches!(knob, Knob::Run | Knob::AdvisorMode) || managed.contains(knob) {
            continue;
        }
        if pending.contains(knob) || (switched && Knob::AdvisorMode.clobbers().contains(knob)) {
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
    use nix::errno::Errno;
    use rstest::{fixture, rstest};

    fn state(pairs: &[(Knob, &str)]) -> BTreeMap<Knob, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn journal(drain: bool, pairs: &[(Knob, &str)]) -> Journal {
        Journal {
            drain,
            saved: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            undo: Vec::new(),
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
    // Switching to none resets pages_to_scan to 100: written back although
    // it reads as saved before the switch (the advisor had raised it there).
    #[case(
        journal(false, &[(Knob::AdvisorMode, "none"), (Knob::PagesToScan, "4000"), (Knob::AdvisorMaxPagesToScan, "30000")]),
        state(&[(Knob::AdvisorMode, "scan-time"), (Knob::PagesToScan, "4000"), (Knob::AdvisorMaxPagesToScan, "4000")]),
        &["advisor_mode=none", "advisor_max_pages_to_scan=30000", "pages_to_scan=4000"],
    )]
    // Back to scan-time: the last advisor write; pages_to_scan is the
    // kernel's then and is not written.
    #[case(
        journal(false, &[(Knob::AdvisorMode, "scan-time"), (Knob::PagesToScan, "500"), (Knob::AdvisorMinPagesToScan, "500")]),
        state(&[(Knob::AdvisorMode, "none"), (Knob::PagesToScan, "5000"), (Knob::AdvisorMinPagesToScan, "10")]),
        &["advisor_min_pages_to_scan=500", "advisor_mode=scan-time"],
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
            ("advisor_min_pages_to_scan", "500"),
            ("advisor_max_pages_to_scan", "30000"),
            ("pages_shared", "0"),
        ] {
            fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    /// Writes with what the plain files lack of mm/ksm.c: switching
    /// advisor_mode resets pages_to_scan (100 for none,
    /// advisor_min_pages_to_scan for scan-time), and pages_to_scan is
    /// EINVAL in scan-time mode.
    fn like_the_kernel(sysfs: &Sysfs) -> impl FnMut(Knob, &str) -> Result<()> + '_ {
        move |knob, value| {
            let scan_time = sysfs.read(Knob::AdvisorMode)? == "scan-time";
            match knob {
                Knob::AdvisorMode => {
                    sysfs.write(knob, value)?;
                    if scan_time != (value == "scan-time") {
                        let reset = if scan_time {
                            "100".to_string()
                        } else {
                            sysfs.read(Knob::AdvisorMinPagesToScan)?
                        };
                        sysfs.write(Knob::PagesToScan, &reset)?;
                    }
                    Ok(())
                }
                Knob::PagesToScan if scan_time => Err(Error::File {
                    op: "write",
                    path: sysfs.path(knob),
                    errno: Errno::EINVAL,
                }),
                _ => sysfs.write(knob, value),
            }
        }
    }

    /// What scan/scan_time_advisor_tunes_pages_to_scan leaves before the
    /// restore, on a host with pages_to_scan 4000 (advisor none) or with
    /// the advisor on: every knob but pages_to_scan comes back, and
    /// pages_to_scan too unless the advisor owns it.
    #[rstest]
    #[case::host_advisor_none("none", "4000")]
    #[case::host_advisor_scan_time("scan-time", "1234")]
    fn advisor_switch_does_not_clobber_pages_to_scan(
        fake_sysfs: tempfile::TempDir,
        #[case] host_advisor: &str,
        #[case] host_pages: &str,
    ) {
        let sysfs = Sysfs::at(fake_sysfs.path());
        sysfs.write(Knob::AdvisorMode, host_advisor).unwrap();
        sysfs.write(Knob::PagesToScan, host_pages).unwrap();
        let before = sysfs.snapshot();
        let journal = Journal {
            drain: false,
            saved: [
                Knob::AdvisorMode,
                Knob::PagesToScan,
                Knob::AdvisorMinPagesToScan,
                Knob::AdvisorMaxPagesToScan,
                Knob::SleepMillisecs,
            ]
            .into_iter()
            .map(|k| (k, sysfs.read(k).unwrap()))
            .collect(),
            undo: Vec::new(),
        };
        // The check: min 200, max 4000, then scan-time, and the advisor
        // raises pages_to_scan to the maximum.
        for (knob, value) in [
            (Knob::AdvisorMode, "none"),
            (Knob::AdvisorMinPagesToScan, "200"),
            (Knob::AdvisorMaxPagesToScan, "4000"),
            (Knob::SleepMillisecs, "10"),
            (Knob::AdvisorMode, "scan-time"),
        ] {
            like_the_kernel(&sysfs)(knob, value).unwrap();
        }
        sysfs.write(Knob::PagesToScan, "4000").unwrap();

        put_back(&sysfs, &journal, like_the_kernel(&sysfs)).unwrap();
        let mut after = sysfs.snapshot();
        let mut before = before;
        for k in kernel_managed(Some(host_advisor)) {
            after.remove(k);
            before.remove(k);
        }
        assert_eq!(after, before);
    }

    #[rstest]
    fn a_knob_that_does_not_stick_fails_the_restore(fake_sysfs: tempfile::TempDir) {
        let sysfs = Sysfs::at(fake_sysfs.path());
        let journal = journal(false, &[(Knob::SleepMillisecs, "20")]);
        sysfs.write(Knob::SleepMillisecs, "0").unwrap();
        let err = put_back(&sysfs, &journal, |knob, value| match knob {
            Knob::SleepMillisecs => Ok(()),
            _ => sysfs.write(knob, value),
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRestored {
                    knob: "sleep_millisecs",
                    ..
                }
            ),
            "{err}"
        );
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

    /// Changes outside the knobs: what a run killed with SIGKILL made
    /// (journaled, never undone) is undone by the next session, the last
    /// made first; a change that failed was never journaled.
    #[rstest]
    fn interrupted_run_is_repaired_at_next_open(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let control = outside.path().join("cgroup.subtree_control");
        let group = outside.path().join("ksm-conform-1");
        fs::write(&control, "cpu").unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let before = sysfs.snapshot();
        {
            let session = Session::open(sysfs.clone(), state.path()).unwrap();
            let mut guard = session.guard();
            guard.set(Knob::Run, "1").unwrap();
            guard.set(Knob::MergeAcrossNodes, "0").unwrap();
            let enable = Undo::Write {
                path: control.clone(),
                value: "cpu".into(),
            };
            session
                .change(enable, || {
                    fs::write(&control, "cpu memory").map_err(|e| Error::file("write", &control, e))
                })
                .unwrap();
            session
                .change(Undo::RemoveCgroup(group.clone()), || {
                    fs::create_dir(&group).map_err(|e| Error::file("mkdir", &group, e))
                })
                .unwrap();
            let failed = session.change(Undo::Unmount(outside.path().join("debug")), || {
                Err::<(), _>(Error::Other("mount failed".into()))
            });
            assert!(failed.is_err());
            // As if killed with SIGKILL: no destructor runs.
            std::mem::forget(guard);
        }
        assert_ne!(sysfs.snapshot(), before);
        assert!(group.exists());
        let session = Session::open(sysfs.clone(), state.path()).unwrap();
        assert_eq!(session.recovered().knobs, 2);
        assert_eq!(
            session.recovered().undone,
            [
                Undo::Write {
                    path: control.clone(),
                    value: "cpu".into()
                },
                Undo::RemoveCgroup(group.clone())
            ]
        );
        let line = session.recovered().describe().unwrap();
        assert!(
            line.starts_with(
                "restored 2 knobs left by an interrupted run, and undid: remove cgroup"
            ),
            "{line}"
        );
        assert_eq!(sysfs.snapshot(), before);
        assert_eq!(fs::read_to_string(&control).unwrap(), "cpu");
        assert!(!group.exists());
        assert!(!session.journal_path().exists());
    }

    /// An owner that undoes its change itself leaves nothing journaled; one
    /// that does not is undone by the check's restore.
    #[rstest]
    fn undo_forgets_and_restore_undoes_the_rest(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let attr = outside.path().join("probability");
        fs::write(&attr, "0").unwrap();
        let session = Session::open(Sysfs::at(fake_sysfs.path()), state.path()).unwrap();
        let undo = Undo::Write {
            path: attr.clone(),
            value: "0".into(),
        };
        let arm = || fs::write(&attr, "100").map_err(|e| Error::file("write", &attr, e));
        session.change(undo.clone(), arm).unwrap();
        session.undo(&undo).unwrap();
        assert!(!session.journal_path().exists());
        session.undo(&undo).unwrap(); // already undone

        let mut guard = session.guard();
        session.change(undo, arm).unwrap();
        assert_eq!(fs::read_to_string(&attr).unwrap(), "100");
        guard.restore().unwrap();
        assert_eq!(fs::read_to_string(&attr).unwrap(), "0");
        assert!(!session.journal_path().exists());
    }

    #[rstest]
    #[case(Undo::RemoveCgroup("/sys/fs/cgroup/a b".into()))]
    #[case(Undo::Write { path: "/x".into(), value: "".into() })]
    #[case(Undo::Write { path: "/x".into(), value: "a\nb".into() })]
    fn what_a_journal_line_cannot_hold_is_refused(
        fake_sysfs: tempfile::TempDir,
        #[case] undo: Undo,
    ) {
        let state = tempfile::tempdir().unwrap();
        let session = Session::open(Sysfs::at(fake_sysfs.path()), state.path()).unwrap();
        let mut ran = false;
        assert!(
            session
                .change(undo, || {
                    ran = true;
                    Ok(())
                })
                .is_err()
        );
        assert!(!ran);
    }

    #[rstest]
    fn a_second_session_waits_for_the_first(fake_sysfs: tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(fake_sysfs.path());
        let first = Session::open(sysfs.clone(), state.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = state.path().to_path_buf();
        let second = std::thread::spawn(move || {
            let session = Session::open(sysfs, dir).unwrap();
            tx.send(()).unwrap();
            drop(session);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the second session did not wait"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second session got the lock");
        second.join().unwrap();
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
