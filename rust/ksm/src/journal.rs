//! The on-disk record of what a run changed, written before each change so
//! that a run killed with SIGKILL can be repaired by the next one.
//!
//! Format, one entry a line; knobs in the order they were first changed,
//! then the other changes in the order they were made:
//!
//! ```text
//! # comment
//! drain
//! run 0
//! pages_to_scan 100
//! write /sys/fs/cgroup/cgroup.subtree_control -memory
//! rmdir-cgroup /sys/fs/cgroup/ksm-conform-1234
//! ```
//!
//! `drain` asks the restore to pass run through 2 (unmerge everything) before
//! putting run back, because KSM held no merged page when the guard started.
//! `write PATH VALUE`, `rmdir-cgroup PATH` and `umount PATH` are
//! [`Undo`] entries; paths have no white space (checked when recorded).

use std::fs;
use std::path::Path;

use crate::atomic::write_atomically;
use crate::error::{Error, Result};
use crate::knob::Knob;
use crate::undo::Undo;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    pub drain: bool,
    /// Original values in first-change order.
    pub saved: Vec<(Knob, String)>,
    /// Changes outside the knobs, in the order they were made.
    pub undo: Vec<Undo>,
}

impl Journal {
    pub fn render(&self) -> String {
        let mut out = String::from("# ksm-conform: what a run changed, put back at next start\n");
        if self.drain {
            out.push_str("drain\n");
        }
        for (knob, value) in &self.saved {
            out.push_str(&format!("{} {}\n", knob.name(), value));
        }
        for undo in &self.undo {
            let line = match undo {
                Undo::Write { path, value } => format!("write {} {value}", path.display()),
                Undo::RemoveCgroup(path) => format!("rmdir-cgroup {}", path.display()),
                Undo::Unmount(path) => format!("umount {}", path.display()),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.saved.is_empty() && self.undo.is_empty()
    }

    pub fn parse(text: &str, path: &Path) -> Result<Journal> {
        let mut journal = Journal::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "drain" {
                journal.drain = true;
                continue;
            }
            let bad = |why: &str| Error::Parse {
                path: path.to_path_buf(),
                content: line.to_string(),
                why: why.to_string(),
            };
            let (name, rest) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected \"knob value\" or \"action path\""))?;
            match name {
                "write" => {
                    let (path, value) = rest
                        .split_once(' ')
                        .ok_or_else(|| bad("expected \"write path value\""))?;
                    journal.undo.push(Undo::Write {
                        path: path.into(),
                        value: value.to_string(),
                    });
                }
                "rmdir-cgroup" => journal.undo.push(Undo::RemoveCgroup(rest.into())),
                "umount" => journal.undo.push(Undo::Unmount(rest.into())),
                _ => {
                    let knob = Knob::from_name(name).ok_or_else(|| bad("unknown knob"))?;
                    if !knob.writable() {
                        return Err(bad("not a writable knob"));
                    }
                    journal.saved.push((knob, rest.trim().to_string()));
                }
            }
        }
        Ok(journal)
    }

    pub fn load(path: &Path) -> Result<Option<Journal>> {
        match fs::read_to_string(path) {
            Ok(text) => Journal::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::file("read", path, e)),
        }
    }

    /// Replace the journal atomically: a reader sees the old one or the new
    /// one, never half.
    pub fn store(&self, path: &Path) -> Result<()> {
        write_atomically(path, self.render().as_bytes()).map_err(|e| Error::file("write", path, e))
    }

    pub fn remove(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::file("unlink", path, e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let journal = Journal {
            drain: true,
            saved: vec![
                (Knob::Run, "0".into()),
                (Knob::AdvisorMode, "none".into()),
                (Knob::PagesToScan, "100".into()),
            ],
            undo: vec![
                Undo::Unmount("/sys/kernel/debug".into()),
                Undo::Write {
                    path: "/sys/kernel/debug/failslab/times".into(),
                    value: "-1".into(),
                },
                Undo::Write {
                    path: "/sys/kernel/debug/failslab/require-end".into(),
                    value: "0xffffffffffffffff".into(),
                },
                Undo::RemoveCgroup("/sys/fs/cgroup/ksm-conform-7".into()),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved-knobs");
        journal.store(&path).unwrap();
        assert!(!crate::atomic::tmp_path(&path).exists());
        assert_eq!(Journal::load(&path).unwrap(), Some(journal));
        Journal::remove(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), None);
    }

    #[rstest::rstest]
    #[case("run")]
    #[case("no_such_knob 1")]
    #[case("full_scans 3")]
    #[case("write /sys/kernel/debug/failslab/times")]
    fn rejects_bad_lines(#[case] line: &str) {
        assert!(Journal::parse(line, Path::new("j")).is_err());
    }
}
