//! The processes of a trace workload. Each is a worker: a re-exec of this
//! binary (a fresh mm, unrelated to the others) or a fork of one (sharing
//! its parent's pages copy-on-write and, through ksm_fork, its KSM
//! registration). A worker does only what the driver tells it, one command
//! at a time, and answers once the command is done: between commands it is
//! idle, so ksmd always finds its memory as the last command left it.
//!
//! Driver and workers talk in JSON lines over Unix sockets. Every worker,
//! exec'd or forked, connects to the driver's listening socket (an abstract
//! name) and introduces itself, so a fork needs no descriptor passing. A
//! worker exits when the driver's end closes, so none outlives it.
//!
//! A worker's memory lives in one [`Reservation`]: area `n` is carved at a
//! fixed offset, so the areas lie in the address space, and ksmd scans them,
//! in the order of their numbers however the kernel places mmaps.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ksm::mem::{Reservation, mbind_to_node};
use ksm::{Advice, Mapping};
use nix::unistd::{ForkResult, fork};
use serde::{Deserialize, Serialize};

use crate::child::die_with_parent;

/// One area's slot in a worker's reservation, in pages (64 MiB of 4 KiB
/// pages); an area is at most a page smaller, so that two areas never touch
/// and each stays a VMA of its own.
pub const AREA_SLOT: usize = 16384;
/// Areas per worker.
pub const AREAS: usize = 16;

const ENV_SOCKET: &str = "KSM_CONFORM_TRACE_SOCKET";
const ENV_ID: &str = "KSM_CONFORM_TRACE_ID";
/// How long a command may take (filling thousands of pages under TCG).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// What a worker is told to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Command {
    /// Carve area `area` of `pages` pages, its pages allocated on `node`
    /// (mbind MPOL_BIND) if given; nothing is touched yet.
    Map {
        area: usize,
        pages: usize,
        node: Option<usize>,
    },
    /// Write pages `first..` of `area` with the contents `seeds`
    /// ([`Mapping::fill`]: equal seeds, equal pages; 0, a page of zeroes).
    Fill {
        area: usize,
        first: usize,
        seeds: Vec<u64>,
    },
    /// madvise(MADV_MERGEABLE or MADV_UNMERGEABLE) on pages
    /// `first..first + count` of `area`.
    Advise {
        area: usize,
        first: usize,
        count: usize,
        mergeable: bool,
    },
    /// munmap the whole area.
    Unmap { area: usize },
    /// Read every page written and compare it with what was written last.
    Verify,
    /// fork(); the child becomes worker `id`.
    Fork { id: String },
    /// Leave.
    Exit,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    /// The error, if the command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Fork: the child's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    id: String,
    pid: u32,
}

struct Area {
    map: Mapping,
    /// What each page was last filled with (None: never written).
    seeds: Vec<Option<u64>>,
}

/// The worker's side: never returns.
pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ksm-conform trace worker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

fn connect(socket: &str, id: &str) -> Result<BufReader<UnixStream>, String> {
    let addr = SocketAddr::from_abstract_name(socket.as_bytes()).map_err(|e| e.to_string())?;
    let mut stream =
        UnixStream::connect_addr(&addr).map_err(|e| format!("connect to the driver: {e}"))?;
    let hello = Hello {
        id: id.to_string(),
        pid: std::process::id(),
    };
    send_line(&mut stream, &hello)?;
    Ok(BufReader::new(stream))
}

fn send_line(stream: &mut UnixStream, value: &impl Serialize) -> Result<(), String> {
    let mut line = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| e.to_string())
}

fn serve() -> Result<(), String> {
    let socket = std::env::var(ENV_SOCKET).map_err(|_| format!("{ENV_SOCKET} not set"))?;
    let id = std::env::var(ENV_ID).map_err(|_| format!("{ENV_ID} not set"))?;
    let space = Reservation::new(AREAS * AREA_SLOT).map_err(|e| e.to_string())?;
    let mut areas: BTreeMap<usize, Area> = BTreeMap::new();
    let mut conn = connect(&socket, &id)?;
    loop {
        let mut line = String::new();
        match conn.read_line(&mut line) {
            // The driver is gone: so are we.
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let command: Command =
            serde_json::from_str(&line).map_err(|e| format!("bad command {line:?}: {e}"))?;
        let mut reply = Reply {
            error: None,
            pid: None,
        };
        match command {
            Command::Fork { id } => {
                // SAFETY: a worker has a single thread; the child goes on
                // running this loop, which is all it would do anyway.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        // The parent's connection stays the parent's.
                        conn = connect(&socket, &id)?;
                        continue;
                    }
                    Ok(ForkResult::Parent { child }) => reply.pid = Some(child.as_raw() as u32),
                    Err(e) => reply.error = Some(format!("fork: {e}")),
                }
            }
            Command::Exit => {
                send_line(conn.get_mut(), &reply)?;
                return Ok(());
            }
            other => reply.error = perform(&space, &mut areas, other).err(),
        }
        send_line(conn.get_mut(), &reply)?;
    }
}

fn area(areas: &mut BTreeMap<usize, Area>, n: usize) -> Result<&mut Area, String> {
    areas.get_mut(&n).ok_or_else(|| format!("no area {n}"))
}

fn perform(
    space: &Reservation,
    areas: &mut BTreeMap<usize, Area>,
    command: Command,
) -> Result<(), String> {
    match command {
        Command::Map { area, pages, node } => {
            if area >= AREAS || pages == 0 || pages >= AREA_SLOT || areas.contains_key(&area) {
                return Err(format!("cannot map area {area} of {pages} pages"));
            }
            let map = space
                .carve(area * AREA_SLOT, pages)
                .map_err(|e| e.to_string())?;
            if let Some(node) = node {
                mbind_to_node(map.addr(), map.len(), node)
                    .map_err(|e| format!("mbind to node {node}: {e}"))?;
            }
            areas.insert(
                area,
                Area {
                    map,
                    seeds: vec![None; pages],
                },
            );
        }
        Command::Fill {
            area: n,
            first,
            seeds,
        } => {
            let a = area(areas, n)?;
            if first + seeds.len() > a.seeds.len() {
                return Err(format!("fill past the end of area {n}"));
            }
            for (i, seed) in seeds.into_iter().enumerate() {
                a.map.fill(first + i, seed);
                a.seeds[first + i] = Some(seed);
            }
        }
        Command::Advise {
            area: n,
            first,
            count,
            mergeable,
        } => {
            let a = area(areas, n)?;
            if first + count > a.seeds.len() {
                return Err(format!("advise past the end of area {n}"));
            }
            let advice = if mergeable {
                Advice::Mergeable
            } else {
                Advice::Unmergeable
            };
            a.map
                .advise_pages(first, count, advice)
                .map_err(|e| format!("madvise({advice:?}) on area {n}: {e}"))?;
        }
        Command::Unmap { area: n } => {
            areas.remove(&n).ok_or_else(|| format!("no area {n}"))?;
        }
        Command::Verify => {
            for (n, a) in areas.iter() {
                for (i, seed) in a.seeds.iter().enumerate() {
                    if let Some(seed) = seed {
                        if !a.map.holds(i, *seed) {
                            return Err(format!(
                                "area {n} page {i} lost its content (seed {seed})"
                            ));
                        }
                    }
                }
            }
        }
        Command::Fork { .. } | Command::Exit => unreachable!("handled by the loop"),
    }
    Ok(())
}

/// The driver's side: the live workers by id.
pub struct Workers {
    listener: UnixListener,
    name: String,
    live: BTreeMap<String, Worker>,
}

struct Worker {
    pid: u32,
    conn: BufReader<UnixStream>,
    /// An exec'd worker is our child and is reaped; a forked one is not.
    child: Option<Child>,
}

impl Workers {
    pub fn new() -> Result<Workers, String> {
        let name = format!("ksm-conform-trace-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| e.to_string())?;
        let listener = UnixListener::bind_addr(&addr).map_err(|e| format!("bind @{name}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listen on @{name}: {e}"))?;
        Ok(Workers {
            listener,
            name,
            live: BTreeMap::new(),
        })
    }

    /// The live workers: id and pid.
    pub fn live(&self) -> impl Iterator<Item = (&str, u32)> {
        self.live.iter().map(|(id, w)| (id.as_str(), w.pid))
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The next worker to connect, which must be `id`.
    fn accept(&mut self, id: &str) -> Result<(u32, BufReader<UnixStream>), String> {
        let start = Instant::now();
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > REPLY_TIMEOUT {
                        return Err(format!("worker {id} did not connect"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream
            .set_nonblocking(false)
            .and_then(|_| stream.set_read_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let mut conn = BufReader::new(stream);
        let mut line = String::new();
        conn.read_line(&mut line)
            .map_err(|e| format!("worker {id}: {e}"))?;
        let hello: Hello =
            serde_json::from_str(&line).map_err(|e| format!("worker {id} said {line:?}: {e}"))?;
        if hello.id != id {
            return Err(format!("expected worker {id}, {} connected", hello.id));
        }
        Ok((hello.pid, conn))
    }

    /// Start worker `id` as a fresh exec of this binary.
    pub fn spawn(&mut self, id: &str) -> Result<u32, String> {
        self.check_new(id)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let parent = nix::unistd::getpid();
        let mut command = std::process::Command::new(exe);
        command
            .env(crate::helper::VAR, crate::helper::TRACE_WORKER)
            .env(ENV_SOCKET, &self.name)
            .env(ENV_ID, id)
            .stdin(Stdio::null());
        // SAFETY: die_with_parent makes only async-signal-safe calls.
        unsafe {
            command.pre_exec(move || {
                die_with_parent(parent);
                Ok(())
            })
        };
        let child = command
            .spawn()
            .map_err(|e| format!("start worker {id}: {e}"))?;
        let (pid, conn) = self.accept(id)?;
        if pid != child.id() {
            return Err(format!(
                "worker {id} is pid {pid}, started as {}",
                child.id()
            ));
        }
        self.live.insert(
            id.to_string(),
            Worker {
                pid,
                conn,
                child: Some(child),
            },
        );
        Ok(pid)
    }

    fn check_new(&self, id: &str) -> Result<(), String> {
        if self.live.contains_key(id) {
            return Err(format!("worker {id} exists already"));
        }
        Ok(())
    }

    fn call(&mut self, id: &str, command: &Command) -> Result<Reply, String> {
        let w = self
            .live
            .get_mut(id)
            .ok_or_else(|| format!("no worker {id}"))?;
        send_line(w.conn.get_mut(), command).map_err(|e| format!("worker {id}: {e}"))?;
        let mut line = String::new();
        match w.conn.read_line(&mut line) {
            Ok(0) => return Err(format!("worker {id} (pid {}) died", w.pid)),
            Ok(_) => {}
            Err(e) => return Err(format!("worker {id} (pid {}): {e}", w.pid)),
        }
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| format!("worker {id} said {line:?}: {e}"))?;
        match reply.error {
            Some(e) => Err(format!("worker {id}: {e}")),
            None => Ok(reply),
        }
    }

    /// Have worker `id` do `command` (not Fork or Exit) and wait until done.
    pub fn run(&mut self, id: &str, command: &Command) -> Result<(), String> {
        assert!(!matches!(command, Command::Fork { .. } | Command::Exit));
        self.call(id, command).map(drop)
    }

    /// Worker `parent` forks; the child becomes worker `id`.
    pub fn fork(&mut self, parent: &str, id: &str) -> Result<u32, String> {
        self.check_new(id)?;
        let reply = self.call(parent, &Command::Fork { id: id.to_string() })?;
        let (pid, conn) = self.accept(id)?;
        if reply.pid != Some(pid) {
            return Err(format!(
                "worker {id} is pid {pid}, forked as {:?}",
                reply.pid
            ));
        }
        self.live.insert(
            id.to_string(),
            Worker {
                pid,
                conn,
                child: None,
            },
        );
        Ok(pid)
    }

    /// Worker `id` exits; returns once its mm is gone (exit_mm() runs
    /// before a task becomes a zombie, and it tears the mm down then, KSM's
    /// part included, since nothing else holds it).
    pub fn exit(&mut self, id: &str) -> Result<(), String> {
        self.call(id, &Command::Exit)?;
        let mut w = self.live.remove(id).expect("called above");
        match w.child.as_mut() {
            Some(child) => {
                child
                    .wait()
                    .map_err(|e| format!("wait for worker {id}: {e}"))?;
            }
            None => wait_gone(w.pid).map_err(|e| format!("worker {id}: {e}"))?,
        }
        Ok(())
    }

    /// Every worker exits (the last forked first, then the rest).
    pub fn exit_all(&mut self) -> Result<(), String> {
        let ids: Vec<String> = self.live.keys().cloned().collect();
        for id in ids.iter().rev() {
            self.exit(id)?;
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the connections makes every worker leave; reap ours.
        for (_, mut w) in std::mem::take(&mut self.live) {
            drop(w.conn);
            if let Some(child) = w.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Wait until `pid` is a zombie or gone.
fn wait_gone(pid: u32) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ksm::procfs::stat(pid) {
            None => return Ok(()),
            Some(s) if matches!(s.state, 'Z' | 'X') => return Ok(()),
            Some(_) if start.elapsed() > REPLY_TIMEOUT => {
                return Err(format!("pid {pid} did not exit"));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}
