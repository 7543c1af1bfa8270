//! ksm-stress: a bounded stress and fault campaign against KSM, in a guest
//! of its own (ci/stress.sh), with every page's content verified.
//!
//!   ksm-stress run [--duration 30m] [--phase 60s] [--json PATH] ...
//!   ksm-stress report --column LABEL=RESULT.json[,CONSOLE.log] ... [--out FILE]
//!
//! `run` needs root and a machine where nothing else uses KSM; it exits 0
//! if every page held what was written and every check held, 1 if not, 2
//! if it could not run. `report` renders the closing table of one or more
//! kernels side by side (exit 1 if any column failed, 2 on bad input).

mod content;
mod coordinator;
mod counters;
mod crash;
mod ctl;
mod faults;
mod frames;
mod hotplug;
mod knobs;
mod memcg;
mod migration;
mod probes;
mod proto;
mod report;
mod stats;
mod sys;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ksm-stress",
    about = "A stress and fault campaign against KSM, every page verified"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the campaign on this kernel (root; in a guest of its own).
    Run {
        /// How long: seconds, or with a unit: 90s, 30m, 1h.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        duration: Duration,
        /// Length of a phase, at whose end every page and the counters are checked.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        phase: Duration,
        /// Worker processes (every other one by prctl merge-any).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
        workers: u32,
        /// Pages per worker, a multiple of 16.
        #[arg(long, default_value_t = 1024, value_parser = parse_pages)]
        pages: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A worker's pause between operations, at most (ms).
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
        /// ksmd's pages_to_scan while the knob actor does not vary it.
        #[arg(long, default_value_t = 1000)]
        pages_to_scan: u64,
        /// How long a memory block may take to go offline.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        offline_timeout: Duration,
        /// Write the result here (JSON), as well as the table on stdout.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The closing table of one or more kernels' results, side by side.
    Report {
        /// LABEL=RESULT.json[,CONSOLE.log]; a missing result is a column
        /// without one (its guest crashed or timed out).
        #[arg(long = "column", required = true)]
        columns: Vec<String>,
        /// Also write the table here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    #[command(hide = true)]
    Worker(WorkerArgs),
    #[command(hide = true)]
    MemcgWorker(WorkerArgs),
    /// Write VALUE to PATH; exit with the errno (memory offline runs so,
    /// in a process that can be killed).
    #[command(hide = true)]
    WriteFile { path: PathBuf, value: String },
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long)]
    id: u32,
    #[arg(long)]
    pages: usize,
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    #[arg(long)]
    merge_any: bool,
    #[arg(long)]
    faults: bool,
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<usize>,
}

impl WorkerArgs {
    fn into_args(self) -> worker::Args {
        worker::Args {
            id: self.id,
            pages: self.pages,
            seed: self.seed,
            merge_any: self.merge_any,
            faults: self.faults,
            gap_ms: self.gap_ms,
            nodes: self.nodes,
        }
    }
}

/// "90", "90s", "30m", "1h".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds, or 90s, 30m, 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(Duration::from_secs(secs))
}

/// A positive multiple of the worker's chunk.
fn parse_pages(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 && n % worker::CHUNK == 0 => Ok(n),
        _ => Err(format!(
            "{s:?}: expected a positive multiple of {}",
            worker::CHUNK
        )),
    }
}

fn fail(msg: &str, code: u8) -> ExitCode {
    eprintln!("ksm-stress: error: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run {
            duration,
            phase,
            workers,
            pages,
            seed,
            gap_ms,
            pages_to_scan,
            offline_timeout,
            json,
        } => {
            if !nix::unistd::geteuid().is_root() {
                return fail(
                    "must run as root (KSM's knobs, pagemap frames, memory blocks)",
                    2,
                );
            }
            if let Some(dir) = json.as_ref().and_then(|p| p.parent()) {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    return fail(&format!("--json: no directory {}", dir.display()), 2);
                }
            }
            let cfg = coordinator::Config {
                duration,
                phase,
                workers,
                pages,
                seed,
                gap_ms,
                pages_to_scan,
                offline_timeout,
            };
            let result = match coordinator::run(&cfg) {
                Ok(r) => r,
                Err(e) => return fail(&e, 2),
            };
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&result).expect("results serialise");
                let tmp = path.with_extension("json.tmp");
                if let Err(e) =
                    std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path))
                {
                    return fail(&format!("writing {}: {e}", path.display()), 2);
                }
            }
            let column = report::Column {
                label: result.release.clone(),
                result: Ok(result),
                splats: Vec::new(),
            };
            print!("{}", report::render(std::slice::from_ref(&column)));
            if column.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Report { columns, out } => {
            let mut cols = Vec::new();
            for spec in &columns {
                match load_column(spec) {
                    Ok(c) => cols.push(c),
                    Err(e) => return fail(&e, 2),
                }
            }
            let table = report::render(&cols);
            if let Some(out) = out {
                if let Err(e) = std::fs::write(&out, &table) {
                    return fail(&format!("writing {}: {e}", out.display()), 2);
                }
            }
            print!("{table}");
            if cols.iter().all(report::Column::passed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Worker(args) => match worker::Worker::new(args.into_args()) {
            Ok(w) => ExitCode::from(w.run() as u8),
            Err(e) => fail(&e, 2),
        },
        Cmd::MemcgWorker(args) => ExitCode::from(memcg::worker_main(args.into_args()) as u8),
        Cmd::WriteFile { path, value } => {
            ExitCode::from(hotplug::write_and_exit(&path, &value) as u8)
        }
    }
}

/// LABEL=RESULT.json[,CONSOLE.log]: the result must parse if it exists.
/// A missing result, or a console named but missing (the guest never
/// booted), makes a column without a result.
fn load_column(spec: &str) -> Result<report::Column, String> {
    let (label, files) = spec
        .split_once('=')
        .ok_or_else(|| format!("--column {spec:?}: expected LABEL=RESULT.json[,CONSOLE.log]"))?;
    let (json, console) = match files.split_once(',') {
        Some((j, c)) => (PathBuf::from(j), Some(PathBuf::from(c))),
        None => (PathBuf::from(files), None),
    };
    let console = match &console {
        Some(c) => std::fs::read_to_string(c)
            .map(Some)
            .map_err(|e| format!("{}: {e}", c.display())),
        None => Ok(None),
    };
    let splats = match &console {
        Ok(Some(text)) => report::splats(text),
        _ => Vec::new(),
    };
    let result = match (std::fs::read_to_string(&json), console) {
        (_, Err(e)) => Err(e),
        (Ok(text), Ok(_)) => Ok(serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a ksm-stress result: {e}", json.display()))?),
        (Err(e), Ok(_)) => Err(format!("{}: {e}", json.display())),
    };
    Ok(report::Column {
        label: label.to_string(),
        result,
        splats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "0", "5d", "m", "-3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("ksm-stress").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn run_takes_its_defaults_and_options() {
        let Cmd::Run {
            duration,
            phase,
            workers,
            pages,
            json,
            ..
        } = parse(&["run"]).unwrap().cmd
        else {
            panic!("not run");
        };
        assert_eq!((duration.as_secs(), phase.as_secs()), (1800, 60));
        assert_eq!((workers, pages, json), (6, 1024, None));
        let Cmd::Run {
            duration, pages, ..
        } = parse(&["run", "--duration", "2m", "--pages", "32"])
            .unwrap()
            .cmd
        else {
            panic!("not run");
        };
        assert_eq!((duration.as_secs(), pages), (120, 32));
    }

    #[test]
    fn a_worker_takes_its_nodes_or_none() {
        let base = ["worker", "--id", "1", "--pages", "16", "--seed", "7"];
        let Cmd::Worker(w) = parse(&base).unwrap().cmd else {
            panic!("not worker");
        };
        assert!(w.nodes.is_empty());
        let with: Vec<&str> = base.iter().copied().chain(["--nodes", "0,1"]).collect();
        let Cmd::Worker(w) = parse(&with).unwrap().cmd else {
            panic!("not worker");
        };
        assert_eq!(w.nodes, [0, 1]);
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        for (args, says) in [
            (&["run", "--pages", "100"][..], "multiple of 16"),
            (&["run", "--pages", "0"], "multiple of 16"),
            (&["run", "--pages", "lots"], "multiple of 16"),
            (&["run", "--workers", "0"], "--workers"),
            (&["run", "--workers", "65"], "--workers"),
            (&["run", "--duration", "5d"], "unit must be s, m or h"),
            (&["run", "--phase", "0"], "must be more than 0"),
            (&["run", "--seed", "x"], "--seed"),
            (&["run", "--bogus"], "--bogus"),
            (&["report"], "--column"),
            (&["fly"], "fly"),
        ] {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn columns_need_a_label_and_a_result_that_parses() {
        assert!(load_column("no-equals").is_err());
        let no_console = load_column("x=/nonexistent.json,/nonexistent.log").unwrap();
        assert!(no_console.result.unwrap_err().contains("nonexistent.log"));
        let missing = load_column("x=/nonexistent.json").unwrap();
        assert!(missing.result.is_err() && !missing.passed());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("r.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(load_column(&format!("x={}", bad.display())).is_err());
    }
}
