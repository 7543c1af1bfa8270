//! Sample run files and reports in, markdown fragments out; and the errors
//! for inputs that cannot be used.

use std::path::{Path, PathBuf};

use ksm_matrix::column::{RunFile, parse_report};
use ksm_matrix::{Column, Options, Outcome, check_pairs, load, render};
use rstest::rstest;

/// A report with these (name, result, skip reason or failure, diagnostics).
fn report(release: &str, fresh: bool, tests: &[(&str, &str, &str, &[&str])]) -> String {
    let tests: Vec<serde_json::Value> = tests
        .iter()
        .map(|(name, result, why, diags)| {
            let mut t = serde_json::json!({
                "name": name,
                "group": name.split('/').next().unwrap(),
                "result": result,
                "diagnostics": diags,
                "duration_ms": 1,
            });
            match *result {
                "skip" => t["skip_reason"] = (*why).into(),
                "fail" => t["failure"] = (*why).into(),
                _ => {}
            }
            t
        })
        .collect();
    let count = |r: &str| tests.iter().filter(|t| t["result"] == r).count();
    serde_json::json!({
        "kernel_release": release,
        "machine": "x86_64",
        "config_source": null,
        "config": {},
        "numa_nodes": 2,
        "swap_free_kib": 524284,
        "fresh_boot": fresh,
        "without_ksm": false,
        "totals": {"passed": count("pass"), "failed": count("fail"), "skipped": count("skip")},
        "tests": tests,
        "duration_ms": 10,
    })
    .to_string()
}

/// A column from a run file's text and, for status=ok, a report's JSON.
fn column(run: &str, json: Option<String>) -> Column {
    let path = Path::new("x.run");
    let parsed = RunFile::parse(run, path).expect("run file parses");
    let mut c = parsed.column;
    if let Some(json) = json {
        c.outcome = Outcome::Ran(Box::new(parse_report(&json, path).expect("report parses")));
    }
    c
}

fn ran(kernel: &str, release: &str, sysfs: &str, tests: &[(&str, &str, &str, &[&str])]) -> Column {
    column(
        &format!(
            "kernel={kernel}\nstatus=ok\nreport={kernel}.json\ntitle=T {kernel}\n\
             linux_version=Linux version {release} #1\n\
             how=guest\nstarted=2026-11-27T20:0{}:00Z\nfetch_seconds=2\nrun_seconds=60\nwait_seconds={}\n{sysfs}",
            kernel.len() % 10,
            if kernel == "new" { 30 } else { 0 }
        ),
        Some(report(release, true, tests)),
    )
}

fn sample() -> Vec<Column> {
    vec![
        ran(
            "old",
            "6.1.0-56-amd64",
            "sysfs.run=0\nsysfs.pages_to_scan=100\n",
            &[
                ("madvise/a", "pass", "", &["mg: false"]),
                (
                    "scan/smart",
                    "skip",
                    "kernel 6.1 has no /sys/kernel/mm/ksm/smart_scan",
                    &[],
                ),
                ("swap/s", "skip", "no active swap", &[]),
            ],
        ),
        ran(
            "new",
            "7.3.4+deb13-amd64",
            "sysfs.run=0\nsysfs.pages_to_scan=100\nsysfs.smart_scan=1\n",
            &[
                ("madvise/a", "pass", "", &["mg: true"]),
                ("scan/smart", "pass", "", &["skipped 8640 pages"]),
                ("swap/s", "skip", "no active swap", &[]),
            ],
        ),
        ran(
            "patched",
            "7.3.4-ksm-rs",
            "sysfs.run=0\nsysfs.pages_to_scan=200\nsysfs.smart_scan=1\n",
            &[
                ("madvise/a", "pass", "", &["mg: true"]),
                (
                    "scan/smart",
                    "fail",
                    "pages_skipped stayed 0\nexpected > 0",
                    &["skipped 0 pages"],
                ),
                ("swap/s", "skip", "no active swap", &[]),
            ],
        ),
        column(
            "kernel=broken\nstatus=failed\nreason=guest did not finish within 900s\n",
            None,
        ),
    ]
}

#[rstest]
// One row per check, one column per kernel, in order.
#[case("| check | old | new | patched | broken |")]
#[case("| madvise/a | pass | pass | pass | — |")]
// Skips carry a numbered reason; the same reason keeps its number.
#[case("| scan/smart | skip (1) | pass | **FAIL** (F1) | — |")]
#[case("| swap/s | skip (2) | skip (2) | skip (2) | — |")]
#[case("1. kernel 6.1 has no /sys/kernel/mm/ksm/smart_scan\n2. no active swap\n")]
// Failures with the first lines of their message.
#[case("- F1: patched, `scan/smart`: pages_skipped stayed 0 / expected > 0")]
// The header names releases, times and totals; a failed column its reason.
#[case(
    "| old | `6.1.0-56-amd64` | T old | 2026-11-27T20:03:00Z | 2 s | 60 s | 1 passed, 0 failed, 2 skipped |"
)]
#[case("| broken | ? |  |  | ? | ? | **no results**: guest did not finish within 900s |")]
#[case("runs started between 2026-11-27T20:03:00Z and 2026-11-27T20:07:00Z")]
#[case("Sum over the columns: 186 s.")]
#[case("- broken: guest did not finish within 900s")]
#[case(
    "(/proc/version):\n\n- old: `Linux version 6.1.0-56-amd64 #1`\n- new: `Linux version 7.3.4+deb13-amd64 #1`\n"
)]
#[case("build of the same kernel, to finish first (new 30 s).")]
// sysfs at boot, absent files, and the differences they make.
#[case("| smart_scan | absent | 1 | 1 | — |")]
#[case("- absent on old, present on new and patched: `smart_scan`")]
#[case("- `pages_to_scan`: `100` on old and new; `200` on patched")]
// Results that differ, and observations that differ in more than numbers.
#[case(
    "- skip (kernel 6.1 has no /sys/kernel/mm/ksm/smart_scan) on old; pass on new; fail on patched: `scan/smart` (F1)"
)]
#[case("- `madvise/a`:\n  - old: `mg: false`\n  - new and patched: `mg: true`\n")]
// A pair compared check by check.
#[case("## new against patched\n\n2 difference(s):")]
#[case("- `scan/smart`: new pass; patched fail (pages_skipped stayed 0 / expected > 0)")]
#[case("- sysfs `pages_to_scan` at boot: new `100`; patched `200`")]
fn page_has(#[case] fragment: &str) {
    let options = Options {
        pairs: vec![("new".into(), "patched".into())],
        ..Options::default()
    };
    let md = render(&sample(), &options);
    assert!(
        md.contains(fragment),
        "missing:\n{fragment}\n--- in ---\n{md}"
    );
}

#[rstest]
// Counts differ, the observation is the same: not a difference.
#[case("- `scan/smart`:\n")]
// Same reason for the same skip everywhere: no difference listed.
#[case("- `swap/s`")]
// No clock in the output.
#[case("generated at")]
// No column had a warning in its console.
#[case("Kernel warnings")]
fn page_lacks(#[case] fragment: &str) {
    let cols: Vec<Column> = sample().into_iter().take(2).collect();
    let md = render(&cols, &Options::default());
    assert!(
        !md.contains(fragment),
        "unexpected:\n{fragment}\n--- in ---\n{md}"
    );
}

#[test]
fn console_warnings_are_listed_per_column() {
    let mut cols = sample();
    cols[1].console_splat = Some("WARNING: CPU: 0 PID: 1 at mm/ksm.c:1".into());
    let md = render(&cols, &Options::default());
    assert!(
        md.contains("Kernel warnings in the guest console:\n\n- new: `WARNING: CPU: 0 PID: 1 at mm/ksm.c:1`\n\n"),
        "{md}"
    );
    assert!(md.contains("The kernels as they booted (/proc/version):\n\n- old: `Linux version 6.1.0-56-amd64 #1`\n"), "{md}");
}

#[test]
fn identical_pair_says_so() {
    let a = ran(
        "stock",
        "7.3.4-ksm-rs",
        "sysfs.run=0\n",
        &[("madvise/a", "pass", "", &["n 3"])],
    );
    let b = ran(
        "patched",
        "7.3.4-ksm-rs",
        "sysfs.run=0\n",
        &[("madvise/a", "pass", "", &["n 4"])],
    );
    let md = render(
        &[a, b],
        &Options {
            pairs: vec![("stock".into(), "patched".into())],
            summary: Some("  Read this.\n\n".into()),
            ..Options::default()
        },
    );
    assert!(
        md.contains("## stock against patched\n\nNo difference"),
        "{md}"
    );
    assert!(md.contains("None: every column that ran agrees."), "{md}");
}

/// A pair naming a column that is not there is refused up front, and
/// named on the page if it gets there anyway.
#[test]
fn pair_with_a_missing_column() {
    let cols = sample();
    let pairs = vec![("stock".to_string(), "patched".to_string())];
    let err = check_pairs(&cols, &pairs).unwrap_err();
    assert_eq!(
        err,
        "--pair stock,patched: no column stock (columns: old, new, patched, broken)"
    );
    assert!(check_pairs(&cols, &[("old".into(), "new".into())]).is_ok());
    let md = render(
        &cols,
        &Options {
            pairs,
            ..Options::default()
        },
    );
    assert!(
        md.contains("## stock against patched\n\nNot compared: no column stock.\n"),
        "{md}"
    );
}

/// A run that stopped on a knob it could not restore says so beside its
/// totals.
#[test]
fn stopped_run_is_shown() {
    let mut json: serde_json::Value =
        serde_json::from_str(&report("6.18", false, &[("run/a", "pass", "", &[])])).unwrap();
    json["error"] = "after run/a: could not restore run to \"0\"".into();
    let c = column(
        "kernel=native\nstatus=ok\nreport=n.json\n",
        Some(json.to_string()),
    );
    let md = render(&[c], &Options::default());
    assert!(
        md.contains("1 passed, 0 failed, 0 skipped; **stopped**: after run/a: could not restore run to \"0\" |"),
        "{md}"
    );
}

#[test]
fn pipes_in_text_do_not_break_the_table() {
    let c = ran("k", "7.3", "", &[("g/a", "skip", "a | b", &[])]);
    let md = render(&[c], &Options::default());
    assert!(md.contains("1. a \\| b"), "{md}");
}

#[rstest]
#[case("status=ok\nreport=a.json\n", "no kernel= line")]
#[case("kernel=a\n", "no status= line")]
#[case("kernel=a\nstatus=maybe\n", "status=maybe: expected ok or failed")]
#[case("kernel=a\nstatus=ok\n", "status=ok but no report= line")]
#[case(
    "kernel=a\nstatus=failed\nrun_seconds=soon\n",
    "run_seconds=soon is not a number"
)]
#[case(
    "kernel=a\nthis line has no equals sign\n",
    "x.run:2: expected key=value"
)]
#[case("kernel=a\nkernel=b\n", "x.run:2: kernel given twice")]
fn bad_run_files(#[case] text: &str, #[case] message: &str) {
    let err = RunFile::parse(text, Path::new("x.run"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(message), "{err}");
}

#[test]
fn failed_run_without_reason_gets_one() {
    let c = column("kernel=a\nstatus=failed\n# a comment\n\n", None);
    assert!(matches!(c.outcome, Outcome::Failed(ref r) if r == "no reason recorded"));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn loads_run_files_and_reports_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = write(dir.path(), "k.run", "kernel=k\nstatus=ok\nreport=k.json\n");
    write(
        dir.path(),
        "k.json",
        &report("7.3", true, &[("g/a", "pass", "", &[])]),
    );
    let cols = load(&[run]).unwrap();
    assert_eq!(cols[0].report().unwrap().kernel_release, "7.3");
}

#[rstest]
#[case::missing_run_file(None, None, "cannot read")]
#[case::missing_report(
    Some("kernel=k\nstatus=ok\nreport=k.json\n"),
    None,
    "k.json: No such file"
)]
#[case::malformed_json(
    Some("kernel=k\nstatus=ok\nreport=k.json\n"),
    Some("{\"kernel_release\": "),
    "k.json: not a ksm-conform JSON report: EOF while parsing"
)]
#[case::not_a_report(
    Some("kernel=k\nstatus=ok\nreport=k.json\n"),
    Some("{\"tests\": []}"),
    "not a ksm-conform JSON report: missing field"
)]
fn bad_inputs_are_errors(
    #[case] run: Option<&str>,
    #[case] json: Option<&str>,
    #[case] message: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.run");
    if let Some(run) = run {
        std::fs::write(&path, run).unwrap();
    }
    if let Some(json) = json {
        write(dir.path(), "k.json", json);
    }
    let err = load(&[path]).unwrap_err().to_string();
    assert!(err.contains(message), "{err}");
}

/// Reports of every schema read: 1 (no schema field, as the committed
/// docs/matrix reports were written), 2 (schema, needs_machine per check);
/// a later one is refused rather than misread.
#[rstest]
#[case::schema_1(None, Ok((1, None)))]
#[case::schema_2(Some(2), Ok((2, Some(true))))]
#[case::schema_from_the_future(
    Some(3),
    Err("report schema 3, newer than this ksm-matrix reads (2)")
)]
fn reports_of_each_schema(
    #[case] schema: Option<u32>,
    #[case] want: Result<(u32, Option<bool>), &str>,
) {
    let mut json: serde_json::Value =
        serde_json::from_str(&report("7.3", true, &[("run/x", "pass", "", &[])])).unwrap();
    if let Some(schema) = schema {
        json["schema"] = schema.into();
        json["tests"][0]["needs_machine"] = true.into();
    }
    match (parse_report(&json.to_string(), Path::new("k.json")), want) {
        (Ok(r), Ok((schema, needs))) => {
            assert_eq!((r.schema, r.tests[0].needs_machine), (schema, needs));
        }
        (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{e}"),
        (got, want) => panic!("{:?}, expected {want:?}", got.map(|r| r.schema)),
    }
}

#[test]
fn the_committed_reports_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/matrix");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            parse_report(&text, &path).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "no reports in {}", dir.display());
}

#[test]
fn two_columns_of_one_name_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.run", "kernel=k\nstatus=failed\n");
    let b = write(dir.path(), "b.run", "kernel=k\nstatus=failed\n");
    let err = load(&[a, b]).unwrap_err().to_string();
    assert!(err.contains("a second column named k"), "{err}");
}

/// The binary: an error exits 1 with a message and leaves the old page alone.
#[test]
fn binary_keeps_the_old_page_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = write(dir.path(), "page.md", "old page\n");
    let run = write(dir.path(), "k.run", "kernel=k\nstatus=ok\nreport=k.json\n");
    write(dir.path(), "k.json", "not json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .arg("--out")
        .arg(&out)
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.starts_with("ksm-matrix: error: "), "{stderr}");
    assert!(
        stderr.contains("k.json: not a ksm-conform JSON report"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old page\n");
    assert!(!dir.path().join("page.md.tmp").exists());
}

#[test]
fn binary_writes_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("page.md");
    let run = write(
        dir.path(),
        "k.run",
        "kernel=k\nstatus=failed\nreason=no boot\n",
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .args(["--pair", "k,k", "--out"])
        .arg(&out)
        .arg(&run)
        .status()
        .unwrap();
    assert!(status.success());
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.starts_with("# KSM conformance matrix\n"), "{md}");
    assert!(md.contains("- k: no boot"), "{md}");
    assert!(!dir.path().join("page.md.tmp").exists());
}

#[test]
fn binary_missing_summary_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = write(dir.path(), "k.run", "kernel=k\nstatus=failed\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .arg("--summary")
        .arg(dir.path().join("nope.md"))
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("nope.md"),
        "{stderr}"
    );
}

#[rstest]
#[case::no_runs(&["--out", "x.md"])]
#[case::bad_pair(&["--pair", "stock", "k.run"])]
fn binary_usage_errors_exit_2(#[case] args: &[&str]) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
}

#[test]
fn binary_pair_of_a_missing_column_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("page.md");
    let run = write(dir.path(), "k.run", "kernel=k\nstatus=failed\n");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .args(["--pair", "stock,k", "--out"])
        .arg(&out)
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(
        stderr,
        "ksm-matrix: error: --pair stock,k: no column stock (columns: k)\n"
    );
    assert!(!out.exists());
}

#[test]
fn native_column_is_compared_to_the_guests_apart() {
    let mut cols = sample();
    cols.push(column(
        "kernel=native\nstatus=ok\nreport=n.json\nhow=natively\nsysfs.run=1\n",
        Some(report(
            "6.18",
            false,
            &[
                ("madvise/a", "pass", "", &["mg: true"]),
                ("scan/smart", "pass", "", &[]),
                ("swap/s", "skip", "no swap here", &[]),
                ("madvise/b", "fail", "boom", &[]),
            ],
        )),
    ));
    let md = render(&cols, &Options::default());
    // The guests' differences do not include the native column...
    assert!(
        md.contains("between the freshly booted guests (old, new and patched):"),
        "{md}"
    );
    // ...which gets its own list, against what every guest did.
    assert!(
        md.contains(
            "native ran differently (natively); results no guest had:\n\n\
             - skip (no swap here): `swap/s`\n\n"
        ),
        "{md}"
    );
    // A check no guest ran is not a difference.
    assert!(!md.contains("fail: `madvise/b`"), "{md}");
    assert!(
        md.contains("| madvise/b | — | — | — | — | **FAIL** (F1) |"),
        "{md}"
    );
    // Boot values compare fresh boots only.
    assert!(!md.contains("`1` on native"), "{md}");
}

/// The binary: --mergeflip files become the issue-11 section; a bad one is
/// an error that writes nothing.
#[test]
fn binary_renders_mergeflip_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("page.md");
    let run = write(dir.path(), "k.run", "kernel=k\nstatus=failed\n");
    let flip = write(
        dir.path(),
        "k.mergeflip",
        "kernel=k\noutcome=crashed\nrounds=0\nseconds=3.2\nsplat=BUG: oops\n",
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .arg("--mergeflip")
        .arg(&flip)
        .arg("--out")
        .arg(&out)
        .arg(&run)
        .status()
        .unwrap();
    assert!(status.success());
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(
        md.contains("| k | **crashed** in round 1 after 3.2 s: `BUG: oops` | ? |"),
        "{md}"
    );

    let bad = write(dir.path(), "bad.mergeflip", "kernel=k\n");
    std::fs::remove_file(&out).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-matrix"))
        .arg("--mergeflip")
        .arg(&bad)
        .arg("--out")
        .arg(&out)
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.mergeflip: no outcome= line"),
        "{stderr}"
    );
    assert!(!out.exists());
}
