//! The KSM conformance suite: one registry of checks, each named after the
//! clause of Documentation/admin-guide/mm/ksm.rst it checks, run either by
//! the `ksm-conform` binary (TAP + JSON) or as cargo/nextest trials.

pub mod cgroup;
pub mod checks;
pub mod child;
pub mod ctx;
pub mod env;
pub mod exec;
pub mod gate;
pub mod helper;
pub mod registry;
pub mod report;
pub mod stepping;
pub mod trace;
pub mod worker;

pub use ctx::{Ctx, Fail};
pub use env::Env;
pub use registry::{Check, Req};
