//! Typed access to the user-visible KSM interface, as documented in
//! Documentation/admin-guide/mm/ksm.rst: the sysfs knobs under
//! /sys/kernel/mm/ksm, madvise(MADV_MERGEABLE) and prctl(PR_SET_MEMORY_MERGE),
//! and the per-process files in /proc/<pid>.
//!
//! Every system call keeps the kernel's errno: the point of the library is to
//! let a test compare it against what the kernel documents.

pub mod atomic;
pub mod error;
pub mod guard;
pub mod journal;
pub mod kernel;
pub mod knob;
pub mod mem;
pub mod procfs;
pub mod scan;
pub mod signals;
pub mod sysfs;
pub mod undo;

pub use error::{Error, Result};
pub use guard::{KnobGuard, Session};
pub use knob::Knob;
pub use mem::{Advice, Mapping};
pub use sysfs::Sysfs;
pub use undo::Undo;
