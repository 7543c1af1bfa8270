//! One column of the matrix: a `<kernel>.run` file written by ci/matrix.sh
//! and, when the run produced one, the ksm-conform JSON report it names.
//!
//! A run file is `key=value` lines:
//!
//! ```text
//! kernel=debian-6.1                 column name (required)
//! status=ok                         ok: the suite ran; failed: it did not (required)
//! reason=guest did not finish ...   why a failed column failed
//! report=debian-6.1.json            the JSON report, relative to the run file (status=ok)
//! title=Debian linux-image-...      what kernel this is
//! how=virtme-ng guest ...           how the suite ran
//! host=Debian GNU/Linux 12, ...     the machine that ran it
//! started=2026-11-27T20:30:00Z      when the column started
//! fetch_seconds=3                   download, unpack or build
//! run_seconds=95                    boot and run
//! wait_seconds=0                    waiting for another QEMU or build to finish first
//! console_splat=WARNING: ...        first kernel warning in the console
//! linux_version=Linux version ...   the booted kernel's /proc/version
//! sysfs.<file>=<value>              /sys/kernel/mm/ksm/<file> before the suite ran
//! ```
//!
//! Unknown keys are ignored; blank lines and `#` comments are allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ksm_conform::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: not a ksm-conform JSON report: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How a column ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The suite ran and wrote this report (checks may still have failed).
    Ran(Box<Report>),
    /// The suite did not run: build, download, boot or timeout.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub kernel: String,
    pub title: String,
    pub how: String,
    pub host: String,
    pub started: String,
    pub fetch_seconds: Option<u64>,
    pub run_seconds: Option<u64>,
    pub wait_seconds: Option<u64>,
    pub console_splat: Option<String>,
    pub linux_version: Option<String>,
    /// /sys/kernel/mm/ksm before the suite ran, file name to value.
    pub sysfs: BTreeMap<String, String>,
    pub outcome: Outcome,
}

/// A parsed run file, before its report is read.
#[derive(Debug, Clone)]
pub struct RunFile {
    pub column: Column,
    /// The report's path relative to the run file, for status=ok.
    pub report: Option<String>,
}

impl RunFile {
    pub fn parse(text: &str, path: &Path) -> Result<RunFile, Error> {
        let mut fields = BTreeMap::new();
        let mut sysfs = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::Syntax {
                    path: path.into(),
                    line: i + 1,
                    msg: format!("expected key=value, got {line:?}"),
                });
            };
            if let Some(file) = key.strip_prefix("sysfs.") {
                sysfs.insert(file.to_string(), value.to_string());
            } else if fields.insert(key.to_string(), value.to_string()).is_some() {
                return Err(Error::Syntax {
                    path: path.into(),
                    line: i + 1,
                    msg: format!("{key} given twice"),
                });
            }
        }
        let invalid = |msg: String| Error::Invalid {
            path: path.into(),
            msg,
        };
        let seconds = |key: &str| -> Result<Option<u64>, Error> {
            fields
                .get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| invalid(format!("{key}={v} is not a number of seconds")))
                })
                .transpose()
        };
        let kernel = fields
            .get("kernel")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("no kernel= line".into()))?
            .clone();
        let get = |key: &str| fields.get(key).cloned().unwrap_or_default();
        let (outcome, report) = match fields.get("status").map(String::as_str) {
            Some("ok") => {
                let report = fields
                    .get("report")
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| invalid("status=ok but no report= line".into()))?;
                // A placeholder until the report is read.
                (Outcome::Failed(String::new()), Some(report.clone()))
            }
            Some("failed") => {
                let reason = fields
                    .get("reason")
                    .filter(|r| !r.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "no reason recorded".into());
                (Outcome::Failed(reason), None)
            }
            Some(other) => return Err(invalid(format!("status={other}: expected ok or failed"))),
            None => return Err(invalid("no status= line".into())),
        };
        Ok(RunFile {
            column: Column {
                kernel,
                title: get("title"),
                how: get("how"),
                host: get("host"),
                started: get("started"),
                fetch_seconds: seconds("fetch_seconds")?,
                run_seconds: seconds("run_seconds")?,
                wait_seconds: seconds("wait_seconds")?,
                console_splat: fields.get("console_splat").cloned(),
                linux_version: fields.get("linux_version").cloned(),
                sysfs,
                outcome,
            },
            report,
        })
    }
}

/// A ksm-conform report of any schema up to the one this build writes
/// (schema 1, the reports from before the field, included).
pub fn parse_report(text: &str, path: &Path) -> Result<Report, Error> {
    let report: Report = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    if report.schema > ksm_conform::report::SCHEMA {
        return Err(Error::Invalid {
            path: path.into(),
            msg: format!(
                "report schema {}, newer than this ksm-matrix reads ({})",
                report.schema,
                ksm_conform::report::SCHEMA
            ),
        });
    }
    Ok(report)
}

/// A whole text file, with its path in the error.
pub fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

impl Column {
    /// Read a run file and the report it names (beside it).
    pub fn load(path: &Path) -> Result<Column, Error> {
        let run = RunFile::parse(&read(path)?, path)?;
        let mut column = run.column;
        if let Some(rel) = run.report {
            let report_path = path.parent().unwrap_or(Path::new(".")).join(rel);
            let report = parse_report(&read(&report_path)?, &report_path)?;
            column.outcome = Outcome::Ran(Box::new(report));
        }
        Ok(column)
    }

    pub fn report(&self) -> Option<&Report> {
        match &self.outcome {
            Outcome::Ran(r) => Some(r),
            Outcome::Failed(_) => None,
        }
    }
}
