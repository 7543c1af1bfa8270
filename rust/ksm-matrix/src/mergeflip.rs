//! The reproducer of issue 11 (ksm-mergeflip: merge_across_nodes switched
//! in the middle of ksmd's scans) on each kernel, as one section of the
//! page. Its input is one `<kernel>.mergeflip` file per column, the `result`
//! ci/mergeflip.sh writes, `key=value` lines:
//!
//! ```text
//! kernel=stock                      column name (required)
//! outcome=crashed                   clean, crashed, stalled, skipped or failed (required)
//! rounds=3                          rounds the kernel survived
//! seconds=7.5                       from the start to the crash or stall, or of the clean run
//! bound=20 rounds or 60 s           how the run was bounded
//! splat=BUG: kernel NULL pointer .. the crash's first line in the console
//! rip=rb_insert_color+0x14/0x1a0    where it faulted, for an oops
//! reason=...                        how ksmd stalled, why it was skipped or failed
//! ```
//!
//! Unknown keys are ignored; blank lines and `#` comments are allowed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::column::{Error, read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No crash within the bound.
    Clean,
    /// The kernel crashed: the column's finding.
    Crashed,
    /// ksmd stopped completing full scans: a finding too.
    Stalled,
    /// The reproducer cannot run on that kernel (no KSM, no NUMA).
    Skipped,
    /// The run itself went wrong (a hang, a refused knob, no guest).
    Failed,
}

#[derive(Debug, Clone)]
pub struct Mergeflip {
    pub kernel: String,
    pub verdict: Verdict,
    pub rounds: Option<u64>,
    pub seconds: Option<String>,
    pub bound: Option<String>,
    pub splat: Option<String>,
    pub rip: Option<String>,
    pub reason: Option<String>,
}

impl Mergeflip {
    pub fn parse(text: &str, path: &Path) -> Result<Mergeflip, Error> {
        let mut fields = BTreeMap::new();
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
            fields.insert(key.to_string(), value.to_string());
        }
        let invalid = |msg: String| Error::Invalid {
            path: path.into(),
            msg,
        };
        let kernel = fields
            .get("kernel")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("no kernel= line".into()))?
            .clone();
        let verdict = match fields.get("outcome").map(String::as_str) {
            Some("clean") => Verdict::Clean,
            Some("crashed") => Verdict::Crashed,
            Some("stalled") => Verdict::Stalled,
            Some("skipped") => Verdict::Skipped,
            Some("failed") => Verdict::Failed,
            Some(other) => {
                return Err(invalid(format!(
                    "outcome={other}: expected clean, crashed, stalled, skipped or failed"
                )));
            }
            None => return Err(invalid("no outcome= line".into())),
        };
        let rounds = fields
            .get("rounds")
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("rounds={v} is not a number")))
            })
            .transpose()?;
        let text = |key: &str| fields.get(key).filter(|v| !v.is_empty()).cloned();
        Ok(Mergeflip {
            kernel,
            verdict,
            rounds,
            seconds: text("seconds"),
            bound: text("bound"),
            splat: text("splat"),
            rip: text("rip"),
            reason: text("reason"),
        })
    }

    pub fn load(path: &Path) -> Result<Mergeflip, Error> {
        Mergeflip::parse(&read(path)?, path)
    }

    /// The table cell that says how it went.
    fn result(&self) -> String {
        let rounds = self.rounds.map_or("?".into(), |n| n.to_string());
        let seconds = self.seconds.as_deref().unwrap_or("?");
        let why = || cell(self.reason.as_deref().unwrap_or("no reason recorded"));
        let round = self.rounds.map_or("?".into(), |n| (n + 1).to_string());
        match self.verdict {
            Verdict::Clean => format!("clean: {rounds} rounds in {seconds} s"),
            Verdict::Stalled => {
                format!(
                    "**ksmd stalled** in round {round} after {seconds} s: {}",
                    why()
                )
            }
            Verdict::Crashed => format!(
                "**crashed** in round {round} after {seconds} s: `{}`{}",
                cell(self.splat.as_deref().unwrap_or("?")),
                self.rip
                    .as_deref()
                    .map(|r| format!(" at `{}`", cell(r)))
                    .unwrap_or_default()
            ),
            Verdict::Skipped => format!("not run: {}", why()),
            Verdict::Failed => format!("**no result**: {}", why()),
        }
    }
}

/// Text for a table cell: no pipes, no backquotes, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
}

/// The section: a row per column, in the order given; nothing without results.
pub fn section(md: &mut String, results: &[Mergeflip]) {
    if results.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Issue 11: merge_across_nodes switched in the middle of a scan\n"
    );
    let _ = writeln!(
        md,
        "`ksm-mergeflip` (ci/mergeflip.sh) in a fresh guest of each kernel: two areas of \
         distinct pages, one on each NUMA node; each round switches merge_across_nodes from \
         0 to 1 and back at random points of ksmd's scans, and replaces the node-1 area in \
         between. The guest panics on an oops or a warning. A crash is that kernel's \
         finding (the bug docs/mergeflip.md describes), not a failure of the run; \"clean\" \
         is no crash within the bound. \"ksmd stalled\": it completed no full scan for \
         `--stall-seconds` (30 by default), a finding too.\n"
    );
    let _ = writeln!(md, "| column | result | bound |");
    let _ = writeln!(md, "| --- | --- | --- |");
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            r.kernel,
            r.result(),
            cell(r.bound.as_deref().unwrap_or("?"))
        );
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parsed(text: &str) -> Mergeflip {
        Mergeflip::parse(text, Path::new("x.mergeflip")).unwrap()
    }

    fn rendered(texts: &[&str]) -> String {
        let results: Vec<Mergeflip> = texts.iter().map(|t| parsed(t)).collect();
        let mut md = String::new();
        section(&mut md, &results);
        md
    }

    #[rstest]
    #[case(
        "kernel=stock\noutcome=crashed\nrounds=2\nseconds=7.5\nbound=20 rounds or 60 s\n\
         splat=BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
         rip=rb_insert_color+0x14/0x1a0\n",
        "| stock | **crashed** in round 3 after 7.5 s: `BUG: kernel NULL pointer dereference, \
         address: 0000000000000008` at `rb_insert_color+0x14/0x1a0` | 20 rounds or 60 s |"
    )]
    #[case(
        "kernel=fix\noutcome=clean\nrounds=20\nseconds=51.0\nbound=20 rounds or 60 s\n",
        "| fix | clean: 20 rounds in 51.0 s | 20 rounds or 60 s |"
    )]
    #[case(
        "kernel=noksm\noutcome=skipped\nrounds=0\nbound=20 rounds or 60 s\n\
         reason=cannot run here: this kernel has no KSM (/sys/kernel/mm/ksm absent)\n",
        "| noksm | not run: cannot run here: this kernel has no KSM (/sys/kernel/mm/ksm absent) | 20 rounds or 60 s |"
    )]
    #[case(
        "kernel=stuck\noutcome=stalled\nrounds=9\nseconds=50.7\n\
         reason=ksmd completed no full scan in 30.0 s (full_scans stays 93, 95 awaited)\n",
        "| stuck | **ksmd stalled** in round 10 after 50.7 s: ksmd completed no full scan \
         in 30.0 s (full_scans stays 93, 95 awaited) | ? |"
    )]
    #[case(
        "kernel=hung\noutcome=failed\nrounds=4\nreason=no result within 240 s | no splat\n",
        "| hung | **no result**: no result within 240 s \\| no splat | ? |"
    )]
    fn rows(#[case] text: &str, #[case] row: &str) {
        let md = rendered(&[text]);
        assert!(md.contains(&format!("{row}\n")), "{md}");
    }

    #[test]
    fn rows_keep_the_order_given_and_nothing_renders_without_results() {
        let md = rendered(&[
            "kernel=b\noutcome=clean\nrounds=1\n",
            "kernel=a\noutcome=clean\nrounds=1\n",
        ]);
        assert!(
            md.find("| b |").unwrap() < md.find("| a |").unwrap(),
            "{md}"
        );
        assert!(md.starts_with("## Issue 11"), "{md}");
        assert_eq!(rendered(&[]), "");
    }

    #[rstest]
    #[case("outcome=clean\n", "no kernel= line")]
    #[case("kernel=k\n", "no outcome= line")]
    #[case("kernel=k\noutcome=exploded\n", "outcome=exploded")]
    #[case(
        "kernel=k\noutcome=clean\nrounds=many\n",
        "rounds=many is not a number"
    )]
    #[case("kernel=k\njunk\n", "x.mergeflip:2: expected key=value")]
    fn bad_files(#[case] text: &str, #[case] message: &str) {
        let err = Mergeflip::parse(text, Path::new("x.mergeflip"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{err}");
    }
}
