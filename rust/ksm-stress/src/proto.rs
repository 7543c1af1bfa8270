//! What the coordinator and its worker processes say to each other: one
//! command a line on the worker's stdin, one JSON reply a line on its
//! stdout. The worker's fork children write to the same stdout, each reply
//! in one write(2) shorter than PIPE_BUF, so lines never interleave.

use serde::{Deserialize, Serialize};

use crate::stats::{Corruption, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Finish the operation under way, reap every child, stop; reply Report.
    Pause,
    /// Check every live page; reply Report.
    Verify,
    /// Go on with operations; reply Ack.
    Resume,
    /// Pause, check every page, unmap everything, reply Report and exit.
    Stop,
}

impl Command {
    pub fn word(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Verify => "verify",
            Command::Resume => "resume",
            Command::Stop => "stop",
        }
    }

    pub fn parse(line: &str) -> Option<Command> {
        [
            Command::Pause,
            Command::Verify,
            Command::Resume,
            Command::Stop,
        ]
        .into_iter()
        .find(|c| c.word() == line.trim())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The worker's memory is filled and advised.
    Ready {
        pid: u32,
    },
    Ack,
    /// What the worker counted since its last report.
    Report {
        stats: Stats,
    },
    /// A fork child's last word before it exits.
    Child {
        pid: u32,
        verified: u64,
        corruptions: Vec<Corruption>,
    },
}

impl Reply {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("replies serialise");
        s.push('\n');
        s
    }

    pub fn parse(line: &str) -> Result<Reply, String> {
        serde_json::from_str(line.trim()).map_err(|e| format!("bad reply {line:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip() {
        for c in [
            Command::Pause,
            Command::Verify,
            Command::Resume,
            Command::Stop,
        ] {
            assert_eq!(Command::parse(&format!("{}\n", c.word())), Some(c));
        }
        assert_eq!(Command::parse("jump"), None);
        let mut stats = Stats::default();
        stats.ok("write");
        for r in [
            Reply::Ready { pid: 7 },
            Reply::Ack,
            Reply::Report { stats },
            Reply::Child {
                pid: 9,
                verified: 3,
                corruptions: vec![],
            },
        ] {
            let line = r.line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(Reply::parse(&line).unwrap(), r);
        }
        assert!(Reply::parse("{").is_err());
    }
}
