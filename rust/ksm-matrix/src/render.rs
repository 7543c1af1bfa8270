//! The markdown of docs/conformance-matrix.md. Everything on the page comes
//! from the columns: the output is a function of its input (no clock).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ksm_conform::report::{Status, TestReport};

use crate::column::{Column, Outcome};
use crate::mergeflip::{self, Mergeflip};

/// What the page says beyond the columns themselves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Pairs of columns compared check by check (e.g. stock and patched).
    pub pairs: Vec<(String, String)>,
    /// A reading of the results, written by hand, shown before the tables.
    pub summary: Option<String>,
    /// The reproducer of issue 11 per column, a section of its own.
    pub mergeflip: Vec<Mergeflip>,
}

/// Text for a table cell: no pipes, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The first lines of a failure message, on one line.
fn short(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    let mut s = lines.join(" / ");
    if text.lines().filter(|l| !l.trim().is_empty()).count() > 3 {
        s.push_str(" / ...");
    }
    s
}

/// Numbers replaced by `N`: diagnostics that differ only in counts, times
/// and addresses are the same observation.
fn shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// "a, b and c".
fn list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Footnotes numbered in order of first use, each text once.
#[derive(Default)]
struct Notes {
    texts: Vec<String>,
}

impl Notes {
    fn number(&mut self, text: &str) -> usize {
        match self.texts.iter().position(|t| t == text) {
            Some(i) => i + 1,
            None => {
                self.texts.push(text.to_string());
                self.texts.len()
            }
        }
    }
}

/// Check names in registry order: a name first seen in a later column goes
/// after the last known check of its group.
fn check_rows(columns: &[Column]) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for report in columns.iter().filter_map(Column::report) {
        for t in &report.tests {
            if rows.iter().any(|(n, _)| n == &t.name) {
                continue;
            }
            match rows.iter().rposition(|(_, g)| g == &t.group) {
                Some(i) => rows.insert(i + 1, (t.name.clone(), t.group.clone())),
                None => rows.push((t.name.clone(), t.group.clone())),
            }
        }
    }
    rows
}

fn test<'a>(column: &'a Column, name: &str) -> Option<&'a TestReport> {
    column.report()?.tests.iter().find(|t| t.name == name)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Skip => "skip",
        Status::Fail => "fail",
    }
}

/// The columns' names joined, in column order.
fn names(columns: &[&Column]) -> String {
    list(
        &columns
            .iter()
            .map(|c| c.kernel.as_str())
            .collect::<Vec<_>>(),
    )
}

pub fn render(columns: &[Column], options: &Options) -> String {
    let mut md = String::new();
    header(&mut md, columns);
    kernels(&mut md, columns);
    if let Some(summary) = &options.summary {
        let _ = writeln!(md, "## Summary\n");
        let _ = writeln!(md, "{}\n", summary.trim());
    }
    let failures = results(&mut md, columns);
    sysfs(&mut md, columns);
    differences(&mut md, columns, &failures);
    for (a, b) in &options.pairs {
        pair(&mut md, columns, a, b);
    }
    mergeflip::section(&mut md, &options.mergeflip);
    md
}

fn header(md: &mut String, columns: &[Column]) {
    let mut started: Vec<&str> = columns
        .iter()
        .map(|c| c.started.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    started.sort();
    let _ = writeln!(md, "# KSM conformance matrix\n");
    let _ = writeln!(
        md,
        "The conformance suite (`ksm-conform`, see docs/conformance.md) on {} kernel(s), \
         one column each. Produced by `make matrix` (ci/matrix.sh){}; this page is generated \
         by `ksm-matrix` from `docs/matrix/<kernel>.run` and the JSON report beside each. \
         Do not edit it: rerun `make matrix`, or `make matrix KERNELS=\"...\"` for some columns.\n",
        columns.len(),
        match (started.first(), started.last()) {
            (Some(a), Some(b)) if a == b => format!(", run started {a}"),
            (Some(a), Some(b)) => format!(", runs started between {a} and {b}"),
            _ => String::new(),
        }
    );
    let hosts: BTreeSet<&str> = columns
        .iter()
        .map(|c| c.host.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    for h in hosts {
        let _ = writeln!(md, "Host: {h}.\n");
    }
}

fn kernels(md: &mut String, columns: &[Column]) {
    let _ = writeln!(md, "## Kernels\n");
    let _ = writeln!(
        md,
        "| column | kernel release | kernel | started | kernel ready | boot + run | result |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |");
    let secs = |s: Option<u64>| s.map_or("?".to_string(), |s| format!("{s} s"));
    for c in columns {
        let (release, result) = match &c.outcome {
            Outcome::Ran(r) => (
                format!("`{}`", r.kernel_release),
                format!(
                    "{} passed, {} failed, {} skipped{}",
                    r.totals.passed,
                    r.totals.failed,
                    r.totals.skipped,
                    r.error
                        .as_deref()
                        .map(|e| format!("; **stopped**: {}", cell(e)))
                        .unwrap_or_default()
                ),
            ),
            Outcome::Failed(reason) => ("?".into(), format!("**no results**: {}", cell(reason))),
        };
        let _ = writeln!(
            md,
            "| {} | {release} | {} | {} | {} | {} | {result} |",
            c.kernel,
            cell(&c.title),
            cell(&c.started),
            secs(c.fetch_seconds),
            secs(c.run_seconds),
        );
    }
    let total: u64 = columns
        .iter()
        .map(|c| c.fetch_seconds.unwrap_or(0) + c.run_seconds.unwrap_or(0))
        .sum();
    let _ = writeln!(
        md,
        "\n\"kernel ready\" is the download and unpacking of Debian's packages, or our \
         build (ci/kernel.sh, incremental: short when the tree did not change); \"boot + \
         run\" the guest from start to exit, or the native run. Sum over the columns: \
         {total} s.\n"
    );
    let waits: Vec<String> = columns
        .iter()
        .filter_map(|c| {
            c.wait_seconds
                .filter(|&w| w > 0)
                .map(|w| format!("{} {w} s", c.kernel))
        })
        .collect();
    if !waits.is_empty() {
        let _ = writeln!(
            md,
            "Not counted above: waiting for another QEMU on the machine, or another \
             build of the same kernel, to finish first ({}).\n",
            waits.join(", ")
        );
    }
    // How the columns ran, grouped.
    let mut hows: Vec<(&str, Vec<&Column>)> = Vec::new();
    for c in columns {
        match hows.iter_mut().find(|(h, _)| *h == c.how) {
            Some((_, cs)) => cs.push(c),
            None => hows.push((&c.how, vec![c])),
        }
    }
    let _ = writeln!(md, "How each column ran:\n");
    for (how, cs) in hows {
        let how = if how.is_empty() { "not recorded" } else { how };
        let _ = writeln!(md, "- {}: {how}", names(&cs));
    }
    let _ = writeln!(md);
    per_column(
        md,
        columns,
        "The kernels as they booted (/proc/version)",
        |c| c.linux_version.as_deref(),
    );
    per_column(md, columns, "Kernel warnings in the guest console", |c| {
        c.console_splat.as_deref()
    });
}

/// A list under `title` of each column's `field`, for the columns that have
/// it; nothing if none has.
fn per_column(
    md: &mut String,
    columns: &[Column],
    title: &str,
    field: impl Fn(&Column) -> Option<&str>,
) {
    let items: Vec<(&str, &str)> = columns
        .iter()
        .filter_map(|c| Some((c.kernel.as_str(), field(c)?)))
        .collect();
    if items.is_empty() {
        return;
    }
    let _ = writeln!(md, "{title}:\n");
    for (kernel, value) in items {
        let _ = writeln!(md, "- {kernel}: `{value}`");
    }
    let _ = writeln!(md);
}

/// Results of one check grouped: what it did, on which columns.
type Groups<'a> = Vec<(String, Vec<&'a Column>)>;

/// A failure's label per (column, check), for the differences section.
type FailureLabels = BTreeMap<(String, String), String>;

fn results(md: &mut String, columns: &[Column]) -> FailureLabels {
    let rows = check_rows(columns);
    let mut skips = Notes::default();
    let mut failures: Vec<(String, String, String)> = Vec::new();
    let mut labels = FailureLabels::new();
    let _ = writeln!(md, "## Results\n");
    let _ = write!(md, "| check |");
    for c in columns {
        let _ = write!(md, " {} |", c.kernel);
    }
    let _ = write!(md, "\n| --- |");
    for _ in columns {
        let _ = write!(md, " --- |");
    }
    let _ = writeln!(md);
    for (name, _) in &rows {
        let _ = write!(md, "| {name} |");
        for c in columns {
            let text = match test(c, name) {
                None => "—".to_string(),
                Some(t) => match t.result {
                    Status::Pass => "pass".to_string(),
                    Status::Skip => format!(
                        "skip ({})",
                        skips.number(t.skip_reason.as_deref().unwrap_or("no reason given"))
                    ),
                    Status::Fail => {
                        let label = format!("F{}", failures.len() + 1);
                        failures.push((
                            c.kernel.clone(),
                            name.clone(),
                            t.failure.clone().unwrap_or_default(),
                        ));
                        labels.insert((c.kernel.clone(), name.clone()), label.clone());
                        format!("**FAIL** ({label})")
                    }
                },
            };
            let _ = write!(md, " {text} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\n— : the check is not part of that column's run (a `--without-ksm` run has only \
         the checks for a kernel built without KSM, the other runs lack exactly those), or \
         the column has no results.\n"
    );
    if !skips.texts.is_empty() {
        let _ = writeln!(md, "Skip reasons:\n");
        for (i, t) in skips.texts.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, cell(t));
        }
        let _ = writeln!(md);
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "Failures:\n");
        for (i, (kernel, name, msg)) in failures.iter().enumerate() {
            let _ = writeln!(
                md,
                "- F{}: {kernel}, `{name}`: {}",
                i + 1,
                cell(&short(msg))
            );
        }
        let _ = writeln!(md);
    }
    let failed: Vec<&Column> = columns
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "Columns without results:\n");
        for c in failed {
            if let Outcome::Failed(reason) = &c.outcome {
                let _ = writeln!(md, "- {}: {}", c.kernel, cell(reason));
            }
        }
        let _ = writeln!(md);
    }
    labels
}

/// Columns that recorded /sys/kernel/mm/ksm (a kernel without KSM has none).
fn with_sysfs(columns: &[Column]) -> Vec<&Column> {
    columns.iter().filter(|c| !c.sysfs.is_empty()).collect()
}

fn sysfs_files(columns: &[&Column]) -> Vec<String> {
    let set: BTreeSet<&String> = columns.iter().flat_map(|c| c.sysfs.keys()).collect();
    set.into_iter().cloned().collect()
}

fn fresh(c: &Column) -> bool {
    c.report().is_some_and(|r| r.fresh_boot)
}

fn sysfs(md: &mut String, columns: &[Column]) {
    let files = sysfs_files(&with_sysfs(columns));
    if files.is_empty() {
        return;
    }
    let _ = writeln!(md, "## /sys/kernel/mm/ksm before the suite ran\n");
    let _ = writeln!(
        md,
        "Values right after boot in a guest; on a column that is not a fresh boot \
         (native), whatever the machine had. \"absent\": the kernel has no such file.\n"
    );
    let _ = write!(md, "| file |");
    for c in columns {
        let _ = write!(md, " {} |", c.kernel);
    }
    let _ = write!(md, "\n| --- |");
    for _ in columns {
        let _ = write!(md, " --- |");
    }
    let _ = writeln!(md);
    for f in &files {
        let _ = write!(md, "| {f} |");
        for c in columns {
            let v = match c.sysfs.get(f) {
                Some(v) => cell(v),
                None if c.sysfs.is_empty() => "—".to_string(),
                None => "absent".to_string(),
            };
            let _ = write!(md, " {v} |");
        }
        let _ = writeln!(md);
    }
    let none: Vec<&Column> = columns.iter().filter(|c| c.sysfs.is_empty()).collect();
    if !none.is_empty() {
        let _ = writeln!(
            md,
            "\n—: no /sys/kernel/mm/ksm recorded on {}.",
            names(&none)
        );
    }
    let _ = writeln!(md);
}

fn differences(md: &mut String, columns: &[Column], failures: &FailureLabels) {
    let _ = writeln!(md, "## Differences between the kernels\n");
    let _ = writeln!(
        md,
        "Computed by `ksm-matrix` from the tables above: what is listed here differs \
         between columns in the data; nothing else is claimed.\n"
    );
    let mut said = false;

    // Files present on some kernels only.
    let ksm_cols = with_sysfs(columns);
    let files = sysfs_files(&ksm_cols);
    let mut by_absence: Vec<(Vec<&Column>, Vec<&str>)> = Vec::new();
    for f in &files {
        let absent: Vec<&Column> = ksm_cols
            .iter()
            .copied()
            .filter(|c| !c.sysfs.contains_key(f))
            .collect();
        if absent.is_empty() {
            continue;
        }
        let key: Vec<&str> = absent.iter().map(|c| c.kernel.as_str()).collect();
        match by_absence
            .iter_mut()
            .find(|(cs, _)| cs.iter().map(|c| c.kernel.as_str()).eq(key.iter().copied()))
        {
            Some((_, fs)) => fs.push(f),
            None => by_absence.push((absent, vec![f])),
        }
    }
    if !by_absence.is_empty() {
        said = true;
        let _ = writeln!(md, "sysfs files that only some kernels have:\n");
        for (absent, fs) in &by_absence {
            let present: Vec<&Column> = ksm_cols
                .iter()
                .copied()
                .filter(|c| !absent.iter().any(|a| a.kernel == c.kernel))
                .collect();
            let _ = writeln!(
                md,
                "- absent on {}, present on {}: {}",
                names(absent),
                names(&present),
                fs.iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(md);
    }

    // Boot values, among fresh boots that have the file.
    let fresh_cols: Vec<&Column> = ksm_cols.iter().copied().filter(|c| fresh(c)).collect();
    let mut values_said = false;
    for f in &files {
        let mut groups: Vec<(&str, Vec<&Column>)> = Vec::new();
        for c in &fresh_cols {
            if let Some(v) = c.sysfs.get(f) {
                match groups.iter_mut().find(|(g, _)| *g == v) {
                    Some((_, cs)) => cs.push(c),
                    None => groups.push((v, vec![c])),
                }
            }
        }
        if groups.len() < 2 {
            continue;
        }
        if !values_said {
            let _ = writeln!(md, "Boot values that differ (fresh boots only):\n");
            values_said = true;
            said = true;
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|(v, cs)| format!("`{}` on {}", cell(v), names(cs)))
            .collect();
        let _ = writeln!(md, "- `{f}`: {}", parts.join("; "));
    }
    if values_said {
        let _ = writeln!(md);
    }

    // Check results: among the freshly booted guests, which share one
    // setup, a different result is the kernel's doing. Checks with the same
    // pattern of results are listed together.
    let ran: Vec<&Column> = columns.iter().filter(|c| c.report().is_some()).collect();
    let guests: Vec<&Column> = ran.iter().copied().filter(|c| fresh(c)).collect();
    let others: Vec<&Column> = ran.iter().copied().filter(|c| !fresh(c)).collect();
    let rows = check_rows(columns);
    let what = |t: &TestReport| match t.result {
        Status::Skip => format!(
            "skip ({})",
            t.skip_reason.as_deref().unwrap_or("no reason given")
        ),
        s => status_word(s).to_string(),
    };
    let mut patterns: Vec<(Groups, Vec<String>)> = Vec::new();
    for (name, _) in &rows {
        let mut groups: Groups = Vec::new();
        for c in &guests {
            if let Some(t) = test(c, name) {
                let w = what(t);
                match groups.iter_mut().find(|(g, _)| *g == w) {
                    Some((_, cs)) => cs.push(c),
                    None => groups.push((w, vec![c])),
                }
            }
        }
        if groups.len() < 2 {
            continue;
        }
        let labels: Vec<&str> = guests
            .iter()
            .filter_map(|c| failures.get(&(c.kernel.clone(), name.clone())))
            .map(String::as_str)
            .collect();
        let entry = if labels.is_empty() {
            format!("`{name}`")
        } else {
            format!("`{name}` ({})", labels.join(", "))
        };
        let same = |a: &Groups| {
            a.len() == groups.len()
                && a.iter().zip(&groups).all(|((wa, ca), (wb, cb))| {
                    wa == wb
                        && ca
                            .iter()
                            .map(|c| &c.kernel)
                            .eq(cb.iter().map(|c| &c.kernel))
                })
        };
        match patterns.iter_mut().find(|(p, _)| same(p)) {
            Some((_, checks)) => checks.push(entry),
            None => patterns.push((groups, vec![entry])),
        }
    }
    if !patterns.is_empty() {
        said = true;
        let _ = writeln!(
            md,
            "Checks whose result differs between the freshly booted guests ({}):\n",
            names(&guests)
        );
        for (groups, checks) in &patterns {
            let parts: Vec<String> = groups
                .iter()
                .map(|(w, cs)| format!("{} on {}", cell(w), names(cs)))
                .collect();
            let _ = writeln!(md, "- {}: {}", parts.join("; "), checks.join(", "));
        }
        let _ = writeln!(md);
    }

    // Columns run another way (natively): where they did what no guest did
    // (mostly the machine's doing: one node, no swap, other KSM users),
    // grouped by what they did.
    for c in &others {
        let mut by_what: Vec<(String, Vec<String>)> = Vec::new();
        for (name, _) in &rows {
            let Some(t) = test(c, name) else { continue };
            let w = what(t);
            let guest_whats: BTreeSet<String> = guests
                .iter()
                .filter_map(|g| test(g, name))
                .map(what)
                .collect();
            if guest_whats.is_empty() || guest_whats.contains(&w) {
                continue;
            }
            let entry = match failures.get(&(c.kernel.clone(), name.clone())) {
                Some(l) => format!("`{name}` ({l})"),
                None => format!("`{name}`"),
            };
            match by_what.iter_mut().find(|(x, _)| *x == w) {
                Some((_, v)) => v.push(entry),
                None => by_what.push((w, vec![entry])),
            }
        }
        if by_what.is_empty() {
            continue;
        }
        said = true;
        let _ = writeln!(
            md,
            "{} ran differently ({}); results no guest had:\n",
            c.kernel,
            if c.how.is_empty() {
                "not a fresh boot"
            } else {
                &c.how
            }
        );
        for (w, checks) in by_what {
            let _ = writeln!(md, "- {}: {}", cell(&w), checks.join(", "));
        }
        let _ = writeln!(md);
    }

    // What the checks that ran saw, where it differs in more than numbers.
    let mut observations: Vec<String> = Vec::new();
    for (name, _) in &rows {
        let mut seen: Vec<(Vec<String>, &TestReport, Vec<&Column>)> = Vec::new();
        for c in &ran {
            let Some(t) = test(c, name) else { continue };
            if t.result == Status::Skip {
                continue;
            }
            let key: Vec<String> = t.diagnostics.iter().map(|d| shape(d)).collect();
            match seen.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, cs)) => cs.push(c),
                None => seen.push((key, t, vec![c])),
            }
        }
        if seen.len() > 1 {
            let mut text = format!("- `{name}`:\n");
            for (_, t, cs) in &seen {
                let diag = if t.diagnostics.is_empty() {
                    "(nothing printed)".to_string()
                } else {
                    t.diagnostics
                        .iter()
                        .map(|d| format!("`{}`", cell(d)))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let _ = writeln!(text, "  - {}: {diag}", names(cs));
            }
            observations.push(text);
        }
    }
    if !observations.is_empty() {
        said = true;
        let _ = writeln!(
            md,
            "What the checks printed, where it differs in more than numbers (counts and \
             times replaced by N before comparing; shown as printed by the first column \
             of each group):\n"
        );
        for o in observations {
            let _ = write!(md, "{o}");
        }
        let _ = writeln!(md);
    }
    if !said {
        let _ = writeln!(md, "None: every column that ran agrees.\n");
    }
}

fn pair(md: &mut String, columns: &[Column], a: &str, b: &str) {
    let _ = writeln!(md, "## {a} against {b}\n");
    let (ca, cb) = (
        columns.iter().find(|c| c.kernel == a),
        columns.iter().find(|c| c.kernel == b),
    );
    let (Some(ca), Some(cb)) = (ca, cb) else {
        let missing = if ca.is_none() { a } else { b };
        let _ = writeln!(md, "Not compared: no column {missing}.\n");
        return;
    };
    let (Some(ra), Some(rb)) = (ca.report(), cb.report()) else {
        let _ = writeln!(md, "Not compared: one of the two columns has no results.\n");
        return;
    };
    let mut diffs: Vec<String> = Vec::new();
    let names: BTreeSet<&str> = ra
        .tests
        .iter()
        .chain(&rb.tests)
        .map(|t| t.name.as_str())
        .collect();
    let describe = |t: Option<&TestReport>| match t {
        None => "not run".to_string(),
        Some(t) => match t.result {
            Status::Pass => "pass".to_string(),
            Status::Skip => format!("skip ({})", t.skip_reason.as_deref().unwrap_or("")),
            Status::Fail => format!("fail ({})", short(t.failure.as_deref().unwrap_or(""))),
        },
    };
    for n in check_rows(columns)
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| names.contains(n))
    {
        let (ta, tb) = (test(ca, n), test(cb, n));
        let (da, db) = (describe(ta), describe(tb));
        if ta.map(|t| t.result) != tb.map(|t| t.result) || da != db {
            diffs.push(format!("- `{n}`: {a} {}; {b} {}", cell(&da), cell(&db)));
            continue;
        }
        if let (Some(ta), Some(tb)) = (ta, tb) {
            let sa: Vec<String> = ta.diagnostics.iter().map(|d| shape(d)).collect();
            let sb: Vec<String> = tb.diagnostics.iter().map(|d| shape(d)).collect();
            if sa != sb {
                diffs.push(format!(
                    "- `{n}` printed: {a} `{}`; {b} `{}`",
                    cell(&ta.diagnostics.join("; ")),
                    cell(&tb.diagnostics.join("; "))
                ));
            }
        }
    }
    let files: BTreeSet<&String> = ca.sysfs.keys().chain(cb.sysfs.keys()).collect();
    for f in files {
        let (va, vb) = (ca.sysfs.get(f), cb.sysfs.get(f));
        if va != vb {
            let show =
                |v: Option<&String>| v.map_or("absent".to_string(), |v| format!("`{}`", cell(v)));
            diffs.push(format!(
                "- sysfs `{f}` at boot: {a} {}; {b} {}",
                show(va),
                show(vb)
            ));
        }
    }
    if ca.console_splat != cb.console_splat {
        diffs.push(format!(
            "- console: {a} {}; {b} {}",
            ca.console_splat
                .as_deref()
                .map_or("clean".to_string(), |s| format!("`{}`", cell(s))),
            cb.console_splat
                .as_deref()
                .map_or("clean".to_string(), |s| format!("`{}`", cell(s))),
        ));
    }
    if diffs.is_empty() {
        let _ = writeln!(
            md,
            "No difference: every check has the same result and prints the same \
             observations (up to numbers), and /sys/kernel/mm/ksm reads the same at boot.\n"
        );
    } else {
        let _ = writeln!(md, "{} difference(s):\n", diffs.len());
        for d in diffs {
            let _ = writeln!(md, "{d}");
        }
        let _ = writeln!(md);
    }
}
