//! Changes a run makes outside /sys/kernel/mm/ksm: a failslab attribute, the
//! memory controller enabled in a cgroup v2 root, a memory cgroup, a debugfs
//! mount. Each is journaled before it is made ([`crate::Session::change`]),
//! so that its owner, a signal, or the next run after a SIGKILL undoes it.
//! Undoing twice does no harm: what is already undone is success.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Write `value` back to `path`.
    Write { path: PathBuf, value: String },
    /// Remove a cgroup, killing what is left in it first.
    RemoveCgroup(PathBuf),
    /// Unmount a filesystem the run mounted.
    Unmount(PathBuf),
}

/// How long a cgroup may take to empty once its processes are killed: they
/// leave it asynchronously.
const CGROUP_EMPTY: Duration = Duration::from_secs(10);

impl Undo {
    pub fn path(&self) -> &Path {
        match self {
            Undo::Write { path, .. } | Undo::RemoveCgroup(path) | Undo::Unmount(path) => path,
        }
    }

    pub fn perform(&self) -> Result<()> {
        match self {
            Undo::Write { path, value } => match fs::write(path, value) {
                // A task's attribute (/proc/<pid>/...) went with the task.
                Err(e) if path.starts_with("/proc") && e.raw_os_error() == Some(libc::ENOENT) => {
                    Ok(())
                }
                r => r.map_err(|e| Error::file("write", path, e)),
            },
            Undo::RemoveCgroup(dir) => remove_cgroup(dir),
            Undo::Unmount(dir) => match nix::mount::umount(dir) {
                // EINVAL: not a mount point (any more).
                Ok(()) | Err(Errno::EINVAL) => Ok(()),
                Err(errno) => Err(Error::File {
                    op: "umount",
                    path: dir.clone(),
                    errno,
                }),
            },
        }
    }
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::Write { path, value } => write!(f, "write {value:?} to {}", path.display()),
            Undo::RemoveCgroup(dir) => write!(f, "remove cgroup {}", dir.display()),
            Undo::Unmount(dir) => write!(f, "unmount {}", dir.display()),
        }
    }
}

/// Kill what is left in the cgroup at `dir`, wait for it to empty, remove
/// it. A cgroup that does not exist is removed already.
fn remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + CGROUP_EMPTY;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                kill_members(dir);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::file("rmdir", dir, e)),
        }
    }
}

fn kill_members(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoing_twice_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("ksm-conform-1");
        fs::create_dir(&group).unwrap();
        let file = dir.path().join("probability");
        for undo in [
            Undo::RemoveCgroup(group.clone()),
            Undo::Write {
                path: file.clone(),
                value: "0".into(),
            },
        ] {
            undo.perform().unwrap_or_else(|e| panic!("{undo}: {e}"));
            undo.perform()
                .unwrap_or_else(|e| panic!("{undo} again: {e}"));
        }
        assert!(!group.exists());
        assert_eq!(fs::read_to_string(&file).unwrap(), "0");
    }

    #[test]
    fn a_gone_tasks_attribute_needs_no_undo() {
        // pid_max is at most 2^22: this task cannot exist.
        let gone = Undo::Write {
            path: "/proc/99999999/make-it-fail".into(),
            value: "0".into(),
        };
        gone.perform().unwrap_or_else(|e| panic!("{gone}: {e}"));
        let missing = Undo::Write {
            path: "/nonexistent-ksm-rs/make-it-fail".into(),
            value: "0".into(),
        };
        assert!(missing.perform().is_err(), "only /proc's tasks go away");
    }
}
