//! One error type for the library. A failed system call keeps its errno so
//! that callers can assert on the exact value the kernel returned.

use std::path::PathBuf;
use std::time::Duration;

pub use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a file failed; `errno` is what the kernel returned.
    #[error("{op} {}: {errno} ({})", path.display(), errno.desc())]
    File {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    /// A system call that is not about a file (madvise, prctl, mbind, ...).
    #[error("{call}: {errno} ({})", errno.desc())]
    Call { call: &'static str, errno: Errno },
    /// A file had content we could not make sense of.
    #[error("{}: cannot parse {content:?}: {why}", path.display())]
    Parse {
        path: PathBuf,
        content: String,
        why: String,
    },
    /// A condition polled for did not become true in time.
    #[error("timed out after {:.1}s waiting for {what}", waited.as_secs_f64())]
    Timeout { what: String, waited: Duration },
    /// Knobs could not be put back; the journal is left for the next run.
    #[error("could not restore {knob} to {value:?}: {source}")]
    Restore {
        knob: &'static str,
        value: String,
        source: Box<Error>,
    },
    /// A knob was written back but reads something else.
    #[error("{knob} reads {got:?} after it was restored to {want:?}")]
    NotRestored {
        knob: &'static str,
        want: String,
        got: String,
    },
    /// A change outside the knobs could not be undone; it stays journaled.
    #[error("could not {undo}: {source}")]
    Undo { undo: String, source: Box<Error> },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno of the failed system call, if this error came from one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::File { errno, .. } | Error::Call { errno, .. } => Some(*errno),
            Error::Restore { source, .. } | Error::Undo { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// A failed system call on `path`, with the errno of `err`.
    pub fn file(op: &'static str, path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::File {
            op,
            path: path.into(),
            errno: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
        }
    }
}
