//! Processes that hold memory for a check: forked children, and fresh execs
//! of this binary (unrelated processes, each with an mm of its own from the
//! start). Both run the same command loop, one line in, one line out
//! ("ok ..." or "err ..."), so a check drives its memory in several
//! processes step by step. A worker dies with the runner, and is killed
//! when its handle is dropped.
//!
//! Commands (pages are numbered within the named mapping):
//!
//! ```text
//! map NAME PAGES                    private anonymous pages, THP off
//! fill NAME FIRST COUNT SEED        pages FIRST.. get fill(SEED)
//! seeds NAME FIRST S,S,...          page FIRST+i gets fill(S_i)
//! byte NAME PAGE OFFSET VALUE       one byte of a page changed
//! advise NAME ADVICE [FIRST COUNT]  mergeable, unmergeable, dontneed
//! verify NAME                       every page holds what was written last
//! frames NAME                       the page frame of each page (0: not present)
//! nodes NAME                        the NUMA node of each page
//! unmap NAME
//! bind NODE                         set_mempolicy(MPOL_BIND) to NODE
//! merge-any 0|1                     prctl(PR_SET_MEMORY_MERGE)
//! hello                             answers its pid (an exec'd worker is up)
//! exit
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use ksm::mem::{page_nodes, set_mempolicy_bind};
use ksm::{Advice, Mapping};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::child::{Channel, Child, die_with_parent, read_line_within};
use crate::ctx::{CheckResult, Fail};

/// How a worker comes to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// fork(): a child of the runner; its mm starts as a copy of ours.
    Fork,
    /// A fresh exec of this binary: an unrelated mm.
    Exec,
}

/// The helper name (crate::helper) under which this binary serves as a
/// worker.
pub const HELPER: &str = "worker";

/// The runner's handle on a worker.
pub struct Worker {
    pid: u32,
    link: Link,
}

enum Link {
    Forked(Child),
    Exec(Exec),
}

/// A worker exec'd from this binary, talking over its stdin and stdout;
/// killed and reaped when dropped.
struct Exec {
    process: std::process::Child,
    to: std::process::ChildStdin,
    from: BufReader<File>,
    reaped: bool,
}

impl Exec {
    fn wait(&mut self) -> CheckResult<std::process::ExitStatus> {
        let status = self.process.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

impl Worker {
    pub fn spawn(kind: Kind) -> CheckResult<Worker> {
        match kind {
            Kind::Fork => {
                let child = Child::spawn(serve)?;
                Ok(Worker {
                    pid: child.pid(),
                    link: Link::Forked(child),
                })
            }
            Kind::Exec => {
                let exe = std::env::current_exe()?;
                let parent = nix::unistd::getpid();
                let mut command = Command::new(&exe);
                command
                    .env(crate::helper::VAR, HELPER)
                    .env_remove("RUST_BACKTRACE")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                // SAFETY: die_with_parent makes only async-signal-safe calls.
                unsafe {
                    command.pre_exec(move || {
                        die_with_parent(parent);
                        Ok(())
                    })
                };
                let mut process = command.spawn()?;
                let to = process.stdin.take().expect("piped stdin");
                let from = OwnedFd::from(process.stdout.take().expect("piped stdout"));
                let mut worker = Worker {
                    pid: process.id(),
                    link: Link::Exec(Exec {
                        process,
                        to,
                        from: BufReader::new(File::from(from)),
                        reaped: false,
                    }),
                };
                // It answers once it runs the command loop.
                worker.call("hello")?;
                Ok(worker)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send one command and return the text of its "ok" answer.
    pub fn call(&mut self, command: &str) -> CheckResult<String> {
        let who = format!("worker {}", self.pid);
        let answer = match &mut self.link {
            Link::Forked(child) => {
                child.send(command)?;
                child.recv()?
            }
            Link::Exec(exec) => {
                writeln!(exec.to, "{command}").map_err(|e| Fail::Failed(format!("{who}: {e}")))?;
                read_line_within(&mut exec.from, &who)?
            }
        };
        match answer {
            Some(line) => match line.split_once(' ').unwrap_or((&line, "")) {
                ("ok", text) => Ok(text.to_string()),
                ("err", msg) => Err(Fail::Failed(format!("{who}: {command}: {msg}"))),
                _ => Err(Fail::Failed(format!("{who}: {command}: answered {line:?}"))),
            },
            None => Err(Fail::Failed(format!(
                "{who} ended before answering {command:?}"
            ))),
        }
    }

    /// Numbers answered by a command, e.g. one per page.
    pub fn numbers(&mut self, command: &str) -> CheckResult<Vec<u64>> {
        let text = self.call(command)?;
        parse_numbers(&text)
            .ok_or_else(|| Fail::Failed(format!("worker {}: {command}: {text:?}", self.pid)))
    }

    /// Ask the worker to leave, and reap it.
    pub fn exit(mut self) -> CheckResult {
        self.call("exit")?;
        match self.link {
            Link::Forked(child) => child.expect_ok().map(drop),
            Link::Exec(mut exec) => match exec.wait()? {
                status if status.success() => Ok(()),
                status => Err(Fail::Failed(format!("worker {}: {status}", self.pid))),
            },
        }
    }

    /// SIGKILL the worker and reap it.
    pub fn kill(self) -> CheckResult {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        match self.link {
            Link::Forked(child) => child.finish().map(drop),
            Link::Exec(mut exec) => exec.wait().map(drop),
        }
    }
}

fn parse_numbers(text: &str) -> Option<Vec<u64>> {
    text.split_whitespace().map(|n| n.parse().ok()).collect()
}

/// The worker's side on a forked child's channel.
fn serve(chan: &mut Channel) -> Result<String, String> {
    let mut state = Memory::default();
    loop {
        let Ok(line) = chan.recv() else {
            return Ok(String::new()); // the runner is gone
        };
        match state.run(&line) {
            Ok(Step::Answer(text)) => chan.send(&format!("ok {text}")),
            Ok(Step::Exit) => {
                chan.send("ok bye");
                return Ok(String::new());
            }
            Err(e) => chan.send(&format!("err {e}")),
        }
    }
}

/// The worker's side as an exec'd helper: commands on stdin, answers on
/// stdout. Returns when told to exit or when stdin closes.
pub fn serve_stdio() {
    let mut state = Memory::default();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let answer = match state.run(&line) {
            Ok(Step::Answer(text)) => format!("ok {text}"),
            Ok(Step::Exit) => "ok bye".to_string(),
            Err(e) => format!("err {}", e.replace('\n', " | ")),
        };
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() || answer == "ok bye" {
            return;
        }
    }
}

enum Step {
    Answer(String),
    Exit,
}

/// What a page was last given: fill(seed), then single bytes changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Written {
    seed: u64,
    bytes: Vec<(usize, u8)>,
}

#[derive(Default)]
struct Memory {
    maps: BTreeMap<String, (Mapping, Vec<Option<Written>>)>,
}

fn arg<T: std::str::FromStr>(words: &[&str], i: usize) -> Result<T, String> {
    let word = words
        .get(i)
        .ok_or_else(|| format!("argument {i} missing"))?;
    word.parse().map_err(|_| format!("bad argument {word:?}"))
}

fn advice(word: &str) -> Result<Advice, String> {
    Ok(match word {
        "mergeable" => Advice::Mergeable,
        "unmergeable" => Advice::Unmergeable,
        "dontneed" => Advice::DontNeed,
        _ => return Err(format!("unknown advice {word:?}")),
    })
}

impl Memory {
    fn map(&mut self, name: &str) -> Result<&mut (Mapping, Vec<Option<Written>>), String> {
        self.maps
            .get_mut(name)
            .ok_or_else(|| format!("no mapping {name:?}"))
    }

    /// Page `first + i` of mapping `name` gets fill(seeds[i]).
    fn write(&mut self, name: &str, first: usize, seeds: &[u64]) -> Result<(), String> {
        let (m, written) = self.map(name)?;
        if first + seeds.len() > m.pages() {
            return Err(format!(
                "pages {first}+{} beyond {}",
                seeds.len(),
                m.pages()
            ));
        }
        for (i, seed) in (first..).zip(seeds) {
            m.fill(i, *seed);
            written[i] = Some(Written {
                seed: *seed,
                bytes: Vec::new(),
            });
        }
        Ok(())
    }

    fn run(&mut self, line: &str) -> Result<Step, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = |text: String| Ok(Step::Answer(text));
        match words.first().copied().unwrap_or("") {
            "hello" => answer(std::process::id().to_string()),
            "exit" => Ok(Step::Exit),
            "bind" => {
                set_mempolicy_bind(arg(&words, 1)?).map_err(|e| format!("set_mempolicy: {e}"))?;
                answer(String::new())
            }
            "merge-any" => {
                let on: u8 = arg(&words, 1)?;
                ksm::mem::set_memory_merge(on == 1)
                    .map_err(|e| format!("PR_SET_MEMORY_MERGE {on}: {e}"))?;
                answer(String::new())
            }
            "map" => {
                let (name, pages): (String, usize) = (arg(&words, 1)?, arg(&words, 2)?);
                let m = Mapping::anon(pages).map_err(|e| e.to_string())?;
                self.maps.insert(name, (m, vec![None; pages]));
                answer(String::new())
            }
            "unmap" => {
                self.maps
                    .remove(words.get(1).copied().unwrap_or(""))
                    .ok_or("no such mapping")?;
                answer(String::new())
            }
            "fill" => {
                let (first, count, seed): (usize, usize, u64) =
                    (arg(&words, 2)?, arg(&words, 3)?, arg(&words, 4)?);
                self.write(words[1], first, &vec![seed; count])?;
                answer(String::new())
            }
            "seeds" => {
                let first: usize = arg(&words, 2)?;
                let seeds = words
                    .get(3)
                    .ok_or("no seeds")?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad seed {s:?}")))
                    .collect::<Result<Vec<u64>, String>>()?;
                self.write(words[1], first, &seeds)?;
                answer(String::new())
            }
            "byte" => {
                let (page, offset, value): (usize, usize, u8) =
                    (arg(&words, 2)?, arg(&words, 3)?, arg(&words, 4)?);
                let (m, written) = self.map(words[1])?;
                let w = written
                    .get_mut(page)
                    .and_then(Option::as_mut)
                    .ok_or("page never filled")?;
                m.page_mut(page)[offset] = value;
                w.bytes.push((offset, value));
                answer(String::new())
            }
            "advise" => {
                let how = advice(words.get(2).copied().unwrap_or(""))?;
                let (m, written) = self.map(words[1])?;
                let r = if words.len() > 3 {
                    let (first, count): (usize, usize) = (arg(&words, 3)?, arg(&words, 4)?);
                    if how == Advice::DontNeed {
                        written[first..first + count].fill(None);
                    }
                    m.advise_pages(first, count, how)
                } else {
                    if how == Advice::DontNeed {
                        written.fill(None);
                    }
                    m.advise(how)
                };
                r.map_err(|e| format!("madvise: {e}"))?;
                answer(String::new())
            }
            "verify" => {
                let (m, written) = self.map(words[1])?;
                for (i, w) in written.iter().enumerate() {
                    if !holds(m, i, w.as_ref()) {
                        return Err(format!("page {i} does not hold {w:?}"));
                    }
                }
                answer(String::new())
            }
            "frames" => {
                let (m, _) = self.map(words[1])?;
                let frames = (0..m.pages())
                    .map(|i| ksm::procfs::pagemap(m.page_addr(i)).map(|e| e.pfn().to_string()))
                    .collect::<ksm::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                answer(frames.join(" "))
            }
            "nodes" => {
                let (m, _) = self.map(words[1])?;
                let addrs: Vec<usize> = (0..m.pages()).map(|i| m.page_addr(i)).collect();
                let nodes = page_nodes(&addrs).map_err(|e| format!("get_mempolicy: {e}"))?;
                answer(
                    nodes
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

/// Whether page `i` holds what was written to it (zeroes if nothing was).
fn holds(m: &Mapping, i: usize, w: Option<&Written>) -> bool {
    let Some(w) = w else {
        return m.page(i).iter().all(|b| *b == 0);
    };
    if w.bytes.is_empty() {
        return m.holds(i, w.seed);
    }
    let mut want = Mapping::anon(1).expect("one page");
    want.fill(0, w.seed);
    for (offset, value) in &w.bytes {
        want.page_mut(0)[*offset] = *value;
    }
    m.page(i) == want.page(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(memory: &mut Memory, line: &str) -> Result<String, String> {
        match memory.run(line)? {
            Step::Answer(text) => Ok(text),
            Step::Exit => Ok("exit".into()),
        }
    }

    /// The command loop, in this process (frames need root: not asked).
    #[test]
    fn commands_write_and_verify_pages() {
        let mut memory = Memory::default();
        run(&mut memory, "map a 4").unwrap();
        run(&mut memory, "fill a 0 3 7").unwrap();
        run(&mut memory, "byte a 2 100 9").unwrap();
        run(&mut memory, "seeds a 3 5").unwrap();
        run(&mut memory, "verify a").unwrap();
        let (m, _) = memory.map("a").unwrap();
        assert!(m.holds(0, 7) && m.holds(1, 7) && !m.holds(2, 7) && m.holds(3, 5));
        assert_eq!(m.page(2)[100], 9);
        run(&mut memory, "advise a dontneed 0 1").unwrap();
        run(&mut memory, "verify a").unwrap();
        assert!(run(&mut memory, "fill a 3 2 1").is_err());
        assert!(run(&mut memory, "fill b 0 1 1").is_err());
        assert!(run(&mut memory, "advise a sideways").is_err());
        assert!(run(&mut memory, "jump").is_err());
        run(&mut memory, "unmap a").unwrap();
        assert_eq!(run(&mut memory, "exit").unwrap(), "exit");
    }

    #[test]
    fn numbers_parse_or_fail() {
        assert_eq!(parse_numbers("1 2 30"), Some(vec![1, 2, 30]));
        assert_eq!(parse_numbers(""), Some(vec![]));
        assert_eq!(parse_numbers("1 x"), None);
    }
}
