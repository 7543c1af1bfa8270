//! The trace file: JSON lines, one record each, and the comparison of two
//! or more traces record by record.
//!
//! A sample holds what the kernel shows of KSM at one quiet point:
//! - every file of /sys/kernel/mm/ksm, whatever this kernel has, as a
//!   number where it reads as one; except sleep_millisecs, the driver's
//!   toggle, and with pages_scanned, full_scans and pages_skipped counted
//!   from the start of the workload (they are cumulative since boot; run=2
//!   resets full_scans only);
//! - cow_ksm and ksm_swpin_copy from /proc/vmstat, counted from the start of
//!   the workload;
//! - for every process of the workload, by its name in the workload (pids
//!   differ from run to run): /proc/<pid>/ksm_stat and ksm_merging_pages.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format's name and version, in the header.
pub const FORMAT: &str = "ksm-conform-trace";
pub const SCHEMA: u32 = 1;

/// Counted from the start of each workload.
pub const RELATIVE: &[&str] = &["pages_scanned", "full_scans", "pages_skipped"];
/// Not recorded: the driver writes it to wake ksmd.
pub const EXCLUDED: &[&str] = &["sleep_millisecs"];
/// /proc/vmstat counters recorded, counted from the start of each workload.
pub const VMSTAT: &[&str] = &["cow_ksm", "ksm_swpin_copy"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// First line. Format, schema, page_size and seed must match between
    /// traces; kernel (/proc/version) and tool say what ran.
    Header {
        format: String,
        schema: u32,
        kernel: String,
        tool: String,
        page_size: usize,
        seed: u64,
    },
    /// A workload starts, with the knobs it runs under.
    Workload {
        workload: String,
        description: String,
        knobs: BTreeMap<String, String>,
    },
    /// A workload that cannot run on this machine, and why.
    Skip { workload: String, reason: String },
    /// The state after a step's actions (batch 0) or after its n-th batch.
    Sample(Box<Sample>),
    /// Last line: the trace is complete.
    End { samples: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub workload: String,
    pub step: usize,
    pub action: String,
    pub batch: usize,
    /// How much the batch scanned: "full" or a number of pages; "" for 0.
    pub scan: String,
    pub ksm: BTreeMap<String, Value>,
    pub vmstat: BTreeMap<String, i64>,
    pub procs: BTreeMap<String, Proc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proc {
    pub ksm_merging_pages: u64,
    pub ksm_stat: BTreeMap<String, Value>,
}

impl Record {
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// A value as recorded: a number if it reads as one.
pub fn value(text: &str) -> Value {
    let text = text.trim();
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(text),
    }
}

/// A trace read back.
#[derive(Debug)]
pub struct Trace {
    pub name: String,
    pub records: Vec<Record>,
}

impl Trace {
    pub fn parse(name: &str, text: &str) -> Result<Trace, String> {
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(line)
                .map_err(|e| format!("{name}:{}: not a trace record: {e}", i + 1))?;
            records.push(record);
        }
        match records.first() {
            Some(Record::Header { format, schema, .. }) if format == FORMAT => {
                if *schema != SCHEMA {
                    return Err(format!(
                        "{name}: trace schema {schema}, this tool reads {SCHEMA}"
                    ));
                }
            }
            _ => return Err(format!("{name}: no {FORMAT} header on the first line")),
        }
        Ok(Trace {
            name: name.to_string(),
            records,
        })
    }

    pub fn load(path: &Path) -> Result<Trace, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Trace::parse(&path.display().to_string(), &text)
    }

    pub fn complete(&self) -> bool {
        matches!(self.records.last(), Some(Record::End { .. }))
    }

    pub fn samples(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Sample(_)))
            .count()
    }
}

/// Where a record is, for a reader.
fn locate(r: &Record) -> String {
    match r {
        Record::Header { .. } => "the header".into(),
        Record::Workload { workload, .. } => format!("the start of workload {workload}"),
        Record::Skip { workload, .. } => format!("workload {workload} (skipped)"),
        Record::Sample(s) => {
            let after = if s.batch == 0 {
                "after its actions".to_string()
            } else {
                format!("after batch {} ({})", s.batch, s.scan)
            };
            format!(
                "workload {}, step {} ({}), {after}",
                s.workload, s.step, s.action
            )
        }
        Record::End { .. } => "the end".into(),
    }
}

/// A record as "a.b.c" paths to its leaf values.
fn flatten(r: &Record) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(r).expect("a record serializes"),
        &mut out,
    );
    if matches!(r, Record::Header { .. }) {
        // What ran where may differ; the format may not.
        out.remove("kernel");
        out.remove("tool");
    }
    out
}

/// The fields in which two records differ, with both values.
fn fields_differing(a: &Record, b: &Record) -> Vec<(String, String, String)> {
    let (x, y) = (flatten(a), flatten(b));
    let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    keys.into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .map(|k| (k.clone(), show(x.get(k)), show(y.get(k))))
        .collect()
}

/// Compare `other` with `base` record by record; None if identical, else a
/// report of the first record that differs, every differing field with
/// both values.
pub fn first_difference(base: &Trace, other: &Trace) -> Option<String> {
    let n = base.records.len().max(other.records.len());
    for i in 0..n {
        let (a, b) = (base.records.get(i), other.records.get(i));
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => {
                return Some(format!(
                    "{} ends before {} (record {}): {} stops at {} record(s){}",
                    other.name,
                    locate(a),
                    i + 1,
                    other.name,
                    other.records.len(),
                    if other.complete() {
                        ""
                    } else {
                        ", without its end record (the run stopped)"
                    }
                ));
            }
            (None, Some(b)) => {
                return Some(format!(
                    "{} ends before {} (record {}) of {}",
                    base.name,
                    locate(b),
                    i + 1,
                    other.name
                ));
            }
            (None, None) => unreachable!(),
        };
        let fields = fields_differing(a, b);
        if fields.is_empty() {
            continue;
        }
        let mut out = format!("record {}: {}\n", i + 1, locate(a));
        if locate(a) != locate(b) {
            let _ = writeln!(out, "  ({} has: {})", other.name, locate(b));
        }
        let width = fields.iter().map(|(f, _, _)| f.len()).max().unwrap_or(0);
        let _ = writeln!(out, "  {:width$}  {} | {}", "field", base.name, other.name);
        for (field, x, y) in fields {
            let _ = writeln!(out, "  {field:width$}  {x} | {y}");
        }
        if i > 0 {
            let _ = writeln!(out, "  (records 1 to {i} are identical)");
        }
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: usize, batch: usize, shared: i64, merging: u64) -> Record {
        Record::Sample(Box::new(Sample {
            workload: "w".into(),
            step,
            action: "a forks b".into(),
            batch,
            scan: if batch == 0 {
                String::new()
            } else {
                "full".into()
            },
            ksm: [("pages_shared".to_string(), Value::from(shared))]
                .into_iter()
                .collect(),
            vmstat: [("cow_ksm".to_string(), 0)].into_iter().collect(),
            procs: [(
                "a".to_string(),
                Proc {
                    ksm_merging_pages: merging,
                    ksm_stat: BTreeMap::new(),
                },
            )]
            .into_iter()
            .collect(),
        }))
    }

    fn trace(name: &str, kernel: &str, samples: Vec<Record>, end: bool) -> Trace {
        let mut records = vec![Record::Header {
            format: FORMAT.into(),
            schema: SCHEMA,
            kernel: kernel.into(),
            tool: "t".into(),
            page_size: 4096,
            seed: 0,
        }];
        let n = samples.len();
        records.extend(samples);
        if end {
            records.push(Record::End { samples: n });
        }
        let text: String = records.iter().map(|r| r.line() + "\n").collect();
        Trace::parse(name, &text).unwrap()
    }

    #[test]
    fn identical_traces_of_different_kernels() {
        let a = trace(
            "stock",
            "7.3.4",
            vec![sample(0, 0, 0, 0), sample(0, 1, 5, 9)],
            true,
        );
        let b = trace(
            "patched",
            "7.3.4-rs",
            vec![sample(0, 0, 0, 0), sample(0, 1, 5, 9)],
            true,
        );
        assert_eq!(first_difference(&a, &b), None);
        assert!(a.complete() && a.samples() == 2);
    }

    #[test]
    fn first_differing_sample_with_both_values() {
        let a = trace(
            "stock",
            "k",
            vec![sample(0, 1, 5, 9), sample(1, 1, 6, 9), sample(2, 1, 7, 7)],
            true,
        );
        let b = trace(
            "patched",
            "k",
            vec![sample(0, 1, 5, 9), sample(1, 1, 6, 8), sample(2, 1, 8, 7)],
            true,
        );
        let diff = first_difference(&a, &b).unwrap();
        assert!(
            diff.starts_with("record 3: workload w, step 1 (a forks b), after batch 1 (full)"),
            "{diff}"
        );
        assert!(diff.contains("procs.a.ksm_merging_pages  9 | 8"), "{diff}");
        assert!(!diff.contains("pages_shared"), "{diff}");
        assert!(diff.contains("records 1 to 2 are identical"), "{diff}");
    }

    #[test]
    fn a_trace_that_stopped() {
        let a = trace(
            "stock",
            "k",
            vec![sample(0, 1, 5, 9), sample(1, 1, 6, 9)],
            true,
        );
        let b = trace("patched", "k", vec![sample(0, 1, 5, 9)], false);
        let diff = first_difference(&a, &b).unwrap();
        assert!(
            diff.contains("patched ends before workload w, step 1"),
            "{diff}"
        );
        assert!(diff.contains("the run stopped"), "{diff}");
    }

    #[test]
    fn bad_traces_are_errors() {
        assert!(
            Trace::parse("x", "{\"record\":\"end\",\"samples\":0}\n")
                .unwrap_err()
                .contains("no ksm-conform-trace header")
        );
        assert!(
            Trace::parse("x", "not json\n")
                .unwrap_err()
                .starts_with("x:1:")
        );
        let future = Record::Header {
            format: FORMAT.into(),
            schema: SCHEMA + 1,
            kernel: String::new(),
            tool: String::new(),
            page_size: 4096,
            seed: 0,
        };
        assert!(
            Trace::parse("x", &future.line())
                .unwrap_err()
                .contains("schema")
        );
    }

    #[test]
    fn values_are_numbers_where_they_read_as_numbers() {
        assert_eq!(value("-4096\n"), Value::from(-4096));
        assert_eq!(value("[none] scan-time\n"), Value::from("[none] scan-time"));
    }
}
