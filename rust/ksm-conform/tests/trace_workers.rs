//! The trace's workers, driven as a trace drives them, without KSM's knobs:
//! exec'd and forked workers follow commands, keep what they were told to
//! write, report their errors, and leave when told. A harness of its own
//! (harness = false): a worker is a re-exec of this binary, which must
//! dispatch it first thing in main.

use ksm_conform::trace::worker::{Command, Workers};
use libtest_mimic::{Arguments, Failed, Trial};

fn fill(area: usize, first: usize, seeds: &[u64]) -> Command {
    Command::Fill {
        area,
        first,
        seeds: seeds.to_vec(),
    }
}

fn workers_follow_commands() -> Result<(), Failed> {
    let mut w = Workers::new()?;
    let a = w.spawn("a")?;
    assert_ne!(a, std::process::id());
    w.run(
        "a",
        &Command::Map {
            area: 0,
            pages: 8,
            node: None,
        },
    )?;
    w.run("a", &fill(0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]))?;
    w.run(
        "a",
        &Command::Advise {
            area: 0,
            first: 0,
            count: 8,
            mergeable: true,
        },
    )?;
    let a1 = w.fork("a", "a1")?;
    assert!(a1 != a && a1 != std::process::id());
    // The child writes its copies; the parent keeps its own.
    w.run("a1", &fill(0, 0, &[9, 9]))?;
    w.run("a", &Command::Verify)?;
    w.run("a1", &Command::Verify)?;
    let ids: Vec<&str> = w.live().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a", "a1"]);

    // Errors come back as errors, and the worker carries on.
    let err = |r: Result<(), String>| r.expect_err("an error");
    assert!(err(w.run("a", &fill(0, 7, &[1, 2]))).contains("past the end of area 0"));
    assert!(err(w.run("a", &fill(3, 0, &[1]))).contains("no area 3"));
    assert!(
        err(w.run(
            "a",
            &Command::Map {
                area: 0,
                pages: 1,
                node: None
            }
        ))
        .contains("cannot map area 0")
    );
    assert!(err(w.run("nobody", &Command::Verify)).contains("no worker nobody"));
    assert!(err(w.spawn("a").map(drop)).contains("exists already"));
    w.run("a", &Command::Unmap { area: 0 })?;
    w.run("a", &Command::Verify)?;

    // Leaving: the parent first, the forked child goes on alone.
    w.exit("a")?;
    w.run("a1", &Command::Verify)?;
    w.exit("a1")?;
    assert!(w.is_empty());
    for pid in [a, a1] {
        assert!(
            ksm::procfs::stat(pid).is_none_or(|s| s.state == 'Z'),
            "pid {pid} is still running"
        );
    }
    Ok(())
}

fn main() {
    ksm_conform::helper::dispatch();
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "trace/workers_follow_commands",
        workers_follow_commands,
    )];
    libtest_mimic::run(&args, trials).exit();
}
