//! ksm-matrix: write docs/conformance-matrix.md from the run files of
//! `make matrix` (see ci/matrix.sh and the `column` module for their format).
//!
//! Exit status: 0 written, 1 an input could not be read or parsed or the
//! page could not be written (nothing is written then), 2 bad arguments
//! (a --pair naming a column that is not given among them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Tabulate ksm-conform reports of several kernels as markdown"
)]
struct Args {
    /// Write the page here (through PATH.tmp and a rename); default stdout.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Compare two columns check by check, e.g. --pair stock,patched (repeatable).
    #[arg(long, value_name = "A,B", value_parser = parse_pair)]
    pair: Vec<(String, String)>,
    /// A hand-written reading of the results, shown as the page's summary.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// The reproducer of issue 11 on a column: a `<kernel>.mergeflip` file
    /// (repeatable, in row order).
    #[arg(long, value_name = "FILE")]
    mergeflip: Vec<PathBuf>,
    /// The columns: `<kernel>.run` files, in column order.
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("expected two column names as A,B, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let columns = match ksm_matrix::load(&args.runs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ksm-matrix: error: {e}");
            return ExitCode::from(1);
        }
    };
    let summary = match args
        .summary
        .as_deref()
        .map(ksm_matrix::column::read)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ksm-matrix: error: {e}");
            return ExitCode::from(1);
        }
    };
    let mergeflip = match args
        .mergeflip
        .iter()
        .map(|p| ksm_matrix::Mergeflip::load(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ksm-matrix: error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = ksm_matrix::check_pairs(&columns, &args.pair) {
        eprintln!("ksm-matrix: error: {e}");
        return ExitCode::from(2);
    }
    let options = ksm_matrix::Options {
        pairs: args.pair,
        summary,
        mergeflip,
    };
    let text = ksm_matrix::render(&columns, &options);
    match &args.out {
        Some(path) => {
            if let Err(e) = ksm_matrix::write_atomically(path, &text) {
                eprintln!("ksm-matrix: error: {e}");
                return ExitCode::from(1);
            }
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}
