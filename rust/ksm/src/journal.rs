//! The on-disk record of the knobs a guard changed, written before the first
//! change so that a run killed with SIGKILL can be repaired by the next one.
//!
//! Format, one entry a line, in the order the knobs were first changed:
//!
//! ```text
//! # comment
//! drain
//! run 0
//! pages_to_scan 100
//! ```
//!
//! `drain` asks the restore to pass run through 2 (unmerge everything) before
//! putting run back, because KSM held no merged page when the guard started.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::knob::Knob;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    pub drain: bool,
    /// Original values in first-change order.
    pub saved: Vec<(Knob, String)>,
}

impl Journal {
    pub fn render(&self) -> String {
        let mut out =
            String::from("# ksm-conform: original KSM knob values, restored at next start\n");
        if self.drain {
            out.push_str("drain\n");
        }
        for (knob, value) in &self.saved {
            out.push_str(&format!("{} {}\n", knob.name(), value));
        }
        out
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
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected \"knob value\""))?;
            let knob = Knob::from_name(name).ok_or_else(|| bad("unknown knob"))?;
            if !knob.writable() {
                return Err(bad("not a writable knob"));
            }
            journal.saved.push((knob, value.trim().to_string()));
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

    /// Write to a temporary file in the same directory, fsync, then rename,
    /// so that a reader sees either the old or the new journal, never half.
    pub fn store(&self, path: &Path) -> Result<()> {
        let tmp = tmp_path(path);
        let mut file = fs::File::create(&tmp).map_err(|e| Error::file("create", &tmp, e))?;
        file.write_all(self.render().as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::file("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::file("rename", path, e))
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

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
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
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved-knobs");
        journal.store(&path).unwrap();
        assert!(!tmp_path(&path).exists());
        assert_eq!(Journal::load(&path).unwrap(), Some(journal));
        Journal::remove(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), None);
    }

    #[rstest::rstest]
    #[case("run")]
    #[case("no_such_knob 1")]
    #[case("full_scans 3")]
    fn rejects_bad_lines(#[case] line: &str) {
        assert!(Journal::parse(line, Path::new("j")).is_err());
    }
}
