//! Running one check, the same way for both front ends: requirements first,
//! the body under catch_unwind, then the knobs put back.

use std::time::{Duration, Instant};

use ksm::Session;

use crate::ctx::{Ctx, Fail};
use crate::env::Env;
use crate::registry::Check;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub diagnostics: Vec<String>,
    pub duration: Duration,
    /// The knobs could not be put back: the run must stop.
    pub restore_error: Option<String>,
}

pub fn execute(check: &Check, session: &Session, env: &Env) -> Outcome {
    let start = Instant::now();
    if let Some(reason) = check.unmet(env) {
        return Outcome {
            verdict: Verdict::Skip(reason),
            diagnostics: Vec::new(),
            duration: start.elapsed(),
            restore_error: None,
        };
    }
    let mut ctx = Ctx::new(session.guard(), env);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (check.body)(&mut ctx)));
    let verdict = match result {
        Ok(Ok(())) => Verdict::Pass,
        Ok(Err(Fail::Failed(msg))) => Verdict::Fail(msg),
        Ok(Err(Fail::Skip(reason))) => Verdict::Skip(reason),
        Err(panic) => Verdict::Fail(format!("panicked: {}", panic_message(&panic))),
    };
    let restore_error = ctx.guard.restore().err().map(|e| e.to_string());
    Outcome {
        verdict,
        diagnostics: ctx.take_diagnostics(),
        duration: start.elapsed(),
        restore_error,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
