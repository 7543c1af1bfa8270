//! Forked children for anything that changes process-wide state (prctl,
//! setuid, make-it-fail, cgroup membership) or must be observed from outside.
//! Parent and child talk in lines over two pipes; the child's last line is
//! its verdict ("ok ..." or "err ..."), and it leaves with _exit(2) so that
//! nothing of the parent (guards, buffered output) runs twice. A child never
//! outlives the runner: it dies with it ([`die_with_parent`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe2};

use crate::ctx::{CheckResult, Fail, TIMEOUT};

/// The child's end of the conversation.
pub struct Channel {
    to_parent: File,
    from_parent: BufReader<File>,
}

impl Channel {
    pub fn send(&mut self, line: &str) {
        // A parent that went away cannot be told anything; the child exits.
        let _ = writeln!(self.to_parent, "{}", one_line(line));
    }

    /// The next line from the parent; an error once the parent is gone.
    pub fn recv(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.from_parent.read_line(&mut line) {
            Ok(0) | Err(_) => Err("parent closed the channel".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

pub struct Child {
    pid: Pid,
    to_child: Option<File>,
    from_child: BufReader<File>,
    reaped: Option<Exit>,
}

fn one_line(s: &str) -> String {
    s.replace('\n', " | ")
}

/// Close-on-exec: a helper the child runs must not hold the pipes open.
fn pipe_pair() -> CheckResult<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Fail::Failed(format!("pipe2: {e}")))
}

/// First thing in a child of `parent`, forked or about to exec: the
/// runner's handlers for SIGINT/SIGTERM/SIGHUP only feed its signal thread,
/// which a fork does not copy, so they go back to the default; and the
/// child dies with the runner (PR_SET_PDEATHSIG), also if the runner died
/// before this ran. Only async-signal-safe calls.
pub(crate) fn die_with_parent(parent: Pid) {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory involved.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if getppid() != parent {
        // SAFETY: leave at once; the runner is gone.
        unsafe { libc::_exit(1) }
    }
}

impl Child {
    /// Fork and run `body` in the child. Its `Ok` text or `Err` message is
    /// sent as the verdict line.
    pub fn spawn(body: impl FnOnce(&mut Channel) -> Result<String, String>) -> CheckResult<Child> {
        let (down_r, down_w) = pipe_pair()?;
        let (up_r, up_w) = pipe_pair()?;
        let parent = getpid();
        // SAFETY: the child only runs `body` and exits with _exit; the test
        // processes hold no locks across this call that the child needs.
        match unsafe { fork() }.map_err(|e| Fail::Failed(format!("fork: {e}")))? {
            ForkResult::Child => {
                die_with_parent(parent);
                drop(down_w);
                drop(up_r);
                let mut chan = Channel {
                    to_parent: File::from(up_w),
                    from_parent: BufReader::new(File::from(down_r)),
                };
                let verdict =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut chan)));
                let (line, code) = match verdict {
                    Ok(Ok(msg)) => (format!("ok {msg}"), 0),
                    Ok(Err(msg)) => (format!("err {msg}"), 1),
                    Err(_) => ("err child panicked".to_string(), 1),
                };
                chan.send(&line);
                // SAFETY: leave without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok(Child {
                pid: child,
                to_child: Some(File::from(down_w)),
                from_child: BufReader::new(File::from(up_r)),
                reaped: None,
            }),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    pub fn send(&mut self, line: &str) -> CheckResult {
        let to = self.to_child.as_mut().expect("channel open");
        writeln!(to, "{}", one_line(line))
            .map_err(|e| Fail::Failed(format!("child {}: {e}", self.pid)))
    }

    /// The next line from the child, waiting at most `TIMEOUT`. None once
    /// the child closed its end (exited or was killed).
    pub fn recv(&mut self) -> CheckResult<Option<String>> {
        read_line_within(&mut self.from_child, &format!("child {}", self.pid))
    }

    /// Read up to the verdict, reap the child, and return how it ended with
    /// its verdict line ("ok ..."/"err ..."), if it got to write one.
    pub fn finish(mut self) -> CheckResult<(Exit, Option<String>)> {
        self.to_child = None;
        let mut verdict = None;
        while let Some(line) = self.recv()? {
            if line.starts_with("ok") || line.starts_with("err") {
                verdict = Some(line);
            }
        }
        let exit = self.reap()?;
        Ok((exit, verdict))
    }

    fn reap(&mut self) -> CheckResult<Exit> {
        if let Some(exit) = self.reaped {
            return Ok(exit);
        }
        let exit = loop {
            match waitpid(self.pid, None)
                .map_err(|e| Fail::Failed(format!("waitpid {}: {e}", self.pid)))?
            {
                WaitStatus::Exited(_, code) => break Exit::Code(code),
                WaitStatus::Signaled(_, sig, _) => break Exit::Signal(sig),
                _ => continue,
            }
        };
        self.reaped = Some(exit);
        Ok(exit)
    }

    /// Expect the child to finish with an "ok" verdict; return its text.
    pub fn expect_ok(self) -> CheckResult<String> {
        let pid = self.pid;
        match self.finish()? {
            (Exit::Code(0), Some(v)) => {
                Ok(v.strip_prefix("ok").unwrap_or_default().trim().to_string())
            }
            (_, Some(v)) if v.starts_with("err") => {
                Err(Fail::Failed(v["err".len()..].trim().to_string()))
            }
            (exit, _) => Err(Fail::Failed(format!(
                "child {pid} ended with {exit:?} and no verdict"
            ))),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// The next line `who` writes on `from`, waiting at most `TIMEOUT`; None
/// once its end is closed.
pub(crate) fn read_line_within(
    from: &mut BufReader<File>,
    who: &str,
) -> CheckResult<Option<String>> {
    let fd = from.get_ref().as_fd().as_raw_fd();
    let deadline = Instant::now() + TIMEOUT;
    if from.buffer().is_empty() {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if rc > 0 {
                break;
            }
            if rc == 0 || left == Duration::ZERO {
                return Err(Fail::Failed(format!(
                    "{who} said nothing for {}s",
                    TIMEOUT.as_secs()
                )));
            }
        }
    }
    let mut line = String::new();
    match from.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line.trim_end().to_string())),
        Err(e) => Err(Fail::Failed(format!("{who}: {e}"))),
    }
}

/// Run `body` in a forked child and return its "ok" text, or fail with its
/// error message.
pub fn in_child(body: impl FnOnce() -> Result<String, String>) -> CheckResult<String> {
    Child::spawn(|_| body())?.expect_ok()
}
