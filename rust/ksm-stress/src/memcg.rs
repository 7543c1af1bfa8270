//! Unmerging under a tight memory cgroup limit (ksm.rst: "this unmerging
//! call may suddenly require more memory than is available - possibly
//! failing with EAGAIN, but more probably arousing the Out-Of-Memory
//! killer"). One episode: a worker process in a cgroup of its own fills and
//! advises memory, waits until most of it is merged, the group's limit is
//! set just above what it uses (no swap), and the worker unmerges
//! everything. MADV_UNMERGEABLE must fail with EAGAIN/ENOMEM, or the worker
//! be OOM-killed within its group; either way every page it still has
//! holds what it wrote.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ksm::Session;
use ksm::mem::{Advice, madvise};
use ksm_conform::cgroup::Hierarchy;
use nix::errno::Errno;

use crate::content::Rng;
use crate::coordinator::Shared;
use crate::crash;
use crate::ctl::Control;
use crate::proto::Reply;
use crate::stats::Stats;
use crate::worker::{self, Worker};

/// Pages of an episode's worker.
pub const PAGES: usize = 2048;
/// Room above the merged usage: far less than unmerging needs.
const HEADROOM: u64 = 512 << 10;
/// How long the worker may wait for ksmd to merge half its pages.
const MERGE_WAIT: Duration = Duration::from_secs(90);
const OP: &str = "MADV_UNMERGEABLE under a memory.max just above usage";

/// The worker's side, in its own process (`ksm-stress memcg-worker`):
/// wait for "go" (it is in the group then), fill and advise, say Ready,
/// wait for "unmerge", unmerge everything, check every page, report.
pub fn worker_main(args: worker::Args) -> i32 {
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        return 1;
    }
    let mut w = match Worker::new(args) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("ksm-stress memcg-worker: {e}");
            return 1;
        }
    };
    crash::doing("a memcg worker's unmerge under its limit");
    print_line(&Reply::Ready {
        pid: std::process::id(),
    });
    line.clear();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        return 1;
    }
    let (addr, len) = w.range();
    let r = madvise(addr, len, Advice::Unmergeable);
    let mut stats = Stats::default();
    stats.record(OP, r, &[Errno::EAGAIN, Errno::ENOMEM]);
    if r.is_ok() {
        stats.event("memcg unmerges that fit under the limit", 1);
    }
    w.verify_all("after unmerging under a memory limit");
    let mut report = w.take_stats();
    report.add(&stats);
    print_line(&Reply::Report { stats: report });
    0
}

fn print_line(reply: &Reply) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(reply.line().as_bytes());
    let _ = out.flush();
}

struct Episode {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Episode {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()
    }

    fn hear(&mut self) -> Result<Reply, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the memcg worker closed its output".into()),
            Ok(_) => Reply::parse(&line),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One episode; what it counted goes to `stats`. `spawn` makes the worker
/// process (stdin and stdout piped).
pub fn episode(
    memcg: &Hierarchy,
    session: &Session,
    name: &str,
    mut spawn: Command,
    ctl: &Control,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut group = memcg.create(session, name).map_err(|e| e.to_string())?;
    let mut child = spawn
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the memcg worker: {e}"))?;
    let mut ep = Episode {
        stdin: child.stdin.take().expect("piped"),
        stdout: BufReader::new(child.stdout.take().expect("piped")),
        child,
    };
    let pid = ep.child.id();
    let result = (|| {
        group
            .add(pid)
            .map_err(|e| format!("moving {pid} into {}: {e}", group.dir().display()))?;
        ep.say("go").map_err(|e| e.to_string())?;
        match ep.hear()? {
            Reply::Ready { .. } => {}
            other => return Err(format!("memcg worker said {other:?}")),
        }
        let start = Instant::now();
        let mut merged = 0;
        // Cut short by a pause: the episode goes on with what is merged.
        while start.elapsed() < MERGE_WAIT && !ctl.pausing() {
            ctl.sleep(Duration::from_millis(500));
            merged = ksm::procfs::ksm_merging_pages(Some(pid)).unwrap_or(0);
            if merged as usize >= PAGES / 2 {
                break;
            }
        }
        stats.event("memcg episodes", 1);
        stats.event("memcg worker pages merged before the limit", merged);
        let usage = group.usage().map_err(|e| e.to_string())?;
        group
            .limit(usage + HEADROOM)
            .map_err(|e| format!("limiting {}: {e}", group.dir().display()))?;
        ep.say("unmerge").map_err(|e| e.to_string())?;
        match ep.hear() {
            Ok(Reply::Report { stats: s }) => stats.add(&s),
            Ok(other) => return Err(format!("memcg worker said {other:?}")),
            // Killed before it could report: judged from its exit below.
            Err(_) => {}
        }
        Ok(())
    })();
    let status = wait_or_kill(&mut ep.child, Duration::from_secs(120));
    let ooms = group.oom_kills().unwrap_or(0);
    match status {
        Some(s) if s.success() => {}
        Some(s) if s.code().is_none() && ooms > 0 => {
            stats.refused(OP, "OOM-killed in its group");
            stats.event("memcg OOM kills during unmerge", 1);
        }
        other => stats.error(format!(
            "memcg worker {pid} ended with {other:?}, {ooms} OOM kills in its group"
        )),
    }
    group.remove().map_err(|e| e.to_string())?;
    result
}

fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                return child.wait().ok().filter(|_| false);
            }
        }
    }
}

/// The actor: an episode now and then.
pub fn actor(sh: &Shared) {
    let Some(memcg) = &sh.memcg else {
        return;
    };
    let mut rng = Rng::new(sh.seed ^ 0x6d65_6d63);
    let mut n = 0u32;
    while sh
        .ctl
        .sleep(Duration::from_millis(rng.between(10_000, 30_000)))
        && sh.ctl.proceed()
    {
        n += 1;
        let mut cmd = sh.command("memcg-worker");
        cmd.args(["--id", &(1000 + n).to_string()])
            .args(["--pages", &PAGES.to_string()])
            .args(["--seed", &rng.next_u64().to_string()]);
        let name = format!("ksm-stress-{}-{n}", std::process::id());
        let mut stats = Stats::default();
        if let Err(e) = episode(memcg, sh.session, &name, cmd, &sh.ctl, &mut stats) {
            stats.error(format!("memcg episode {n}: {e}"));
        }
        sh.stats().add(&stats);
    }
}
