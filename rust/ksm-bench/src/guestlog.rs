//! The log `ksm-bench count` writes in the guest: one JSON object a line,
//! appended and flushed as it goes, so that a run cut short keeps what it
//! measured. It says what each mark of the ksmcount plugin was; the host
//! joins the two (crate::join).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use ksm::{Knob, Sysfs};
use serde::{Deserialize, Serialize};

/// KSM's counters at a mark, ksmd asleep: exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub full_scans: u64,
    pub pages_scanned: u64,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    pub pages_unshared: u64,
    pub pages_volatile: u64,
    pub stable_node_chains: u64,
    pub stable_node_dups: u64,
    /// This process's pages mapped to a KSM page (/proc/self/ksm_merging_pages).
    pub merging: u64,
}

impl Counters {
    pub fn read(sysfs: &Sysfs) -> ksm::Result<Counters> {
        Ok(Counters {
            full_scans: sysfs.read_u64(Knob::FullScans)?,
            pages_scanned: sysfs.read_u64(Knob::PagesScanned)?,
            pages_shared: sysfs.read_u64(Knob::PagesShared)?,
            pages_sharing: sysfs.read_u64(Knob::PagesSharing)?,
            pages_unshared: sysfs.read_u64(Knob::PagesUnshared)?,
            pages_volatile: sysfs.read_u64(Knob::PagesVolatile)?,
            stable_node_chains: sysfs.read_u64(Knob::StableNodeChains)?,
            stable_node_dups: sysfs.read_u64(Knob::StableNodeDups)?,
            merging: ksm::procfs::ksm_merging_pages(None)?,
        })
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A run of `ksm-bench count`: its mark is number 1.
    Session {
        label: String,
        kernel: String,
        version: String,
    },
    /// A mark: `scan` 0 is the sample's start (advised, ksmd stopped),
    /// `scan` k the end of its k-th full scan. wall_ms and ksmd_cpu_ms run
    /// from the sample's start (TCG time: for information only).
    Mark {
        seq: u64,
        sample: u64,
        scan: u64,
        counters: Counters,
        wall_ms: f64,
        ksmd_cpu_ms: f64,
    },
    /// A sample, written after its marks. Scans 1..=merge_scans merged
    /// every page that can merge (None: merging did not complete within the
    /// scans allowed, or the workload does not merge); scans
    /// steady_from..=steady_to are the steady state.
    Sample {
        sample: u64,
        workload: String,
        pages: u64,
        rep: u64,
        expected_merging: u64,
        merge_scans: Option<u64>,
        steady_from: u64,
        steady_to: u64,
    },
}

/// The log being written.
pub struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    pub fn append(path: &Path) -> Result<Writer, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, line: &Line) -> Result<(), String> {
        let mut text = serde_json::to_string(line).map_err(|e| e.to_string())?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// A log's lines, split into sessions (each starts with its Session line).
pub fn read(path: &Path) -> Result<Vec<Vec<Line>>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut sessions: Vec<Vec<Line>> = Vec::new();
    for (n, text) in BufReader::new(file).lines().enumerate() {
        let text = text.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}:{}: not a line of ksm-bench count's log: {e}",
                path.display(),
                n + 1
            )
        })?;
        match (&line, sessions.last_mut()) {
            (Line::Session { .. }, _) => sessions.push(vec![line]),
            (_, Some(session)) => session.push(line),
            (_, None) => {
                return Err(format!(
                    "{}:{}: a line before any session",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_reads_back_as_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut w = Writer::append(&path).unwrap();
        let session = Line::Session {
            label: "stock".into(),
            kernel: "7.3.4".into(),
            version: "#1".into(),
        };
        let mark = Line::Mark {
            seq: 2,
            sample: 1,
            scan: 0,
            counters: Counters::default(),
            wall_ms: 0.0,
            ksmd_cpu_ms: 0.0,
        };
        w.write(&session).unwrap();
        w.write(&mark).unwrap();
        w.write(&session).unwrap();
        let sessions = read(&path).unwrap();
        assert_eq!(sessions, vec![vec![session.clone(), mark], vec![session]]);
    }

    #[test]
    fn a_line_before_any_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"type\":\"sample\",\"sample\":1,\"workload\":\"unique\",\"pages\":1,\"rep\":1,\"expected_merging\":0,\"merge_scans\":null,\"steady_from\":3,\"steady_to\":5}\n").unwrap();
        assert!(read(&path).unwrap_err().contains("before any session"));
        std::fs::write(&path, "nonsense\n").unwrap();
        assert!(read(&path).unwrap_err().contains(":1: not a line"));
    }
}
