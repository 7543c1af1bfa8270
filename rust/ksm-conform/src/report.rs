//! Output of the ksm-conform binary: kselftest-style TAP on stdout and a
//! JSON report written atomically (temporary file, then rename). The report
//! types also deserialize, for tools that read reports back (ksm-matrix).

use std::io::Write;
use std::path::Path;

use ksm::atomic::write_atomically;

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::exec::{Outcome, Verdict};
use crate::registry::Check;

pub struct Tap<W: Write> {
    out: W,
    n: usize,
}

impl<W: Write> Tap<W> {
    pub fn start(mut out: W, total: usize) -> Self {
        let _ = writeln!(out, "TAP version 13");
        let _ = writeln!(out, "1..{total}");
        Tap { out, n: 0 }
    }

    pub fn diag(&mut self, line: &str) {
        for l in line.lines() {
            let _ = writeln!(self.out, "# {l}");
        }
        let _ = self.out.flush();
    }

    /// The plan of a run that skips as a whole (kselftest's
    /// ksft_exit_skip()): "1..0 # SKIP reason", then the closing lines.
    pub fn skip_all(mut out: W, reason: &str) {
        let _ = writeln!(out, "TAP version 13");
        let _ = writeln!(out, "1..0 # SKIP {}", reason.replace('\n', " "));
        Tap { out, n: 0 }.totals(&Totals::default(), false);
    }

    /// One check's result, its diagnostics first (as kselftest prints
    /// them: a reader of a failure sees why before the verdict).
    pub fn result(&mut self, name: &str, outcome: &Outcome) {
        self.n += 1;
        for d in &outcome.diagnostics {
            self.diag(d);
        }
        if let Verdict::Fail(msg) = &outcome.verdict {
            self.diag(msg);
        }
        let _ = match &outcome.verdict {
            Verdict::Pass => writeln!(self.out, "ok {} {name}", self.n),
            Verdict::Skip(reason) => writeln!(self.out, "ok {} {name} # SKIP {reason}", self.n),
            Verdict::Fail(_) => writeln!(self.out, "not ok {} {name}", self.n),
        };
        let _ = self.out.flush();
    }

    /// The closing lines: kselftest's "# Totals: ..." (error:1 when the run
    /// stopped on an error), then exactly "N passed, N failed, N skipped",
    /// the last line.
    pub fn totals(&mut self, t: &Totals, error: bool) {
        let _ = writeln!(
            self.out,
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
            t.passed,
            t.failed,
            t.skipped,
            u8::from(error)
        );
        let _ = writeln!(
            self.out,
            "{} passed, {} failed, {} skipped",
            t.passed, t.failed, t.skipped
        );
        let _ = self.out.flush();
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Totals {
    pub fn add(&mut self, v: &Verdict) {
        match v {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail(_) => self.failed += 1,
            Verdict::Skip(_) => self.skipped += 1,
        }
    }
}

/// The version of the JSON report's layout. 1: the reports before the
/// field existed (read as 1); 2: `schema` itself, and per check whether it
/// needs the machine to itself (`needs_machine`).
pub const SCHEMA: u32 = 2;

fn schema_1() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(default = "schema_1")]
    pub schema: u32,
    pub kernel_release: String,
    pub machine: String,
    pub config_source: Option<String>,
    pub config: std::collections::BTreeMap<String, String>,
    pub numa_nodes: usize,
    pub swap_free_kib: u64,
    pub fresh_boot: bool,
    pub without_ksm: bool,
    pub tests: Vec<TestReport>,
    pub totals: Totals,
    pub duration_ms: u128,
    /// Why the run stopped early or left the machine changed (a knob that
    /// could not be restored); the checks after it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of one check, "pass", "skip" or "fail" in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Skip,
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestReport {
    pub name: String,
    pub group: String,
    pub result: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub diagnostics: Vec<String>,
    pub duration_ms: u128,
    /// The check changes /sys/kernel/mm/ksm (schema 2; None in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_machine: Option<bool>,
}

/// The config options the report records.
const CONFIG_FACTS: &[&str] = &[
    "CONFIG_KSM",
    "CONFIG_NUMA",
    "CONFIG_SWAP",
    "CONFIG_MEMCG",
    "CONFIG_TRANSPARENT_HUGEPAGE",
    "CONFIG_FAULT_INJECTION",
    "CONFIG_FAILSLAB",
    "CONFIG_PROC_PAGE_MONITOR",
];

impl Report {
    pub fn new(env: &Env, without_ksm: bool) -> Report {
        Report {
            schema: SCHEMA,
            kernel_release: env.release.clone(),
            machine: env.machine.clone(),
            config_source: env.config.as_ref().map(|c| c.source.clone()),
            config: CONFIG_FACTS
                .iter()
                .map(|o| (o.to_string(), env.config_value(o)))
                .collect(),
            numa_nodes: env.memory_nodes.len(),
            swap_free_kib: env.swap_free_kib,
            fresh_boot: env.options.fresh_boot,
            without_ksm,
            tests: Vec::new(),
            totals: Totals::default(),
            duration_ms: 0,
            error: None,
        }
    }

    pub fn add(&mut self, check: &Check, outcome: &Outcome) {
        let (result, skip_reason, failure) = match &outcome.verdict {
            Verdict::Pass => (Status::Pass, None, None),
            Verdict::Skip(r) => (Status::Skip, Some(r.clone()), None),
            Verdict::Fail(m) => (Status::Fail, None, Some(m.clone())),
        };
        self.totals.add(&outcome.verdict);
        self.tests.push(TestReport {
            name: check.name.to_string(),
            group: check.group().to_string(),
            result,
            skip_reason,
            failure,
            diagnostics: outcome.diagnostics.clone(),
            duration_ms: outcome.duration.as_millis(),
            needs_machine: Some(check.needs_machine()),
        });
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_atomically(path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            diagnostics: vec!["a note".into()],
            duration: Duration::from_millis(3),
            restore_error: None,
        }
    }

    #[test]
    fn json_report_reads_back() {
        let json = r#"{"kernel_release":"7.3.4-ksm-rs","machine":"x86_64",
            "config_source":null,"config":{"CONFIG_KSM":"y"},"numa_nodes":2,
            "swap_free_kib":524284,"fresh_boot":true,"without_ksm":false,
            "tests":[{"name":"g/a","group":"g","result":"skip","skip_reason":"no swap",
            "diagnostics":[],"duration_ms":1}],
            "totals":{"passed":0,"failed":0,"skipped":1},"duration_ms":5}"#;
        let report: Report = serde_json::from_str(json).unwrap();
        // Written before the schema field: schema 1.
        assert_eq!(report.schema, 1);
        assert_eq!(report.tests[0].needs_machine, None);
        assert_eq!(report.tests[0].result, Status::Skip);
        assert_eq!(report.tests[0].skip_reason.as_deref(), Some("no swap"));
        assert_eq!(report.tests[0].failure, None);
        assert_eq!(report.error, None);
        let again = serde_json::to_string(&report).unwrap();
        assert!(again.contains(r#""result":"skip""#), "{again}");
        assert!(!again.contains("failure"), "{again}");
        assert!(!again.contains("error"), "{again}");
    }

    #[test]
    fn tap_lines() {
        let mut buf = Vec::new();
        let mut tap = Tap::start(&mut buf, 3);
        tap.result("g/a", &outcome(Verdict::Pass));
        tap.result("g/b", &outcome(Verdict::Skip("no swap".into())));
        tap.result("g/c", &outcome(Verdict::Fail("got 1\nexpected 2".into())));
        tap.totals(
            &Totals {
                passed: 1,
                failed: 1,
                skipped: 1,
            },
            false,
        );
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "TAP version 13\n1..3\n# a note\nok 1 g/a\n# a note\nok 2 g/b # SKIP no swap\n\
             # a note\n# got 1\n# expected 2\nnot ok 3 g/c\n\
             # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0\n\
             1 passed, 1 failed, 1 skipped\n"
        );
    }

    #[test]
    fn a_run_skipped_as_a_whole() {
        let mut buf = Vec::new();
        Tap::skip_all(&mut buf, "needs root");
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "TAP version 13\n1..0 # SKIP needs root\n\
             # Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0\n\
             0 passed, 0 failed, 0 skipped\n"
        );
    }

    #[test]
    fn a_new_report_says_its_schema() {
        let env = Env::probe(crate::env::Options::default());
        let text = serde_json::to_string(&Report::new(&env, false)).unwrap();
        assert!(
            text.starts_with(&format!("{{\"schema\":{SCHEMA},")),
            "{text}"
        );
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.schema, SCHEMA);
    }
}
