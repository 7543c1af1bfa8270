//! KSM's synchronous paths, timed with criterion: the work done in the
//! caller's context rather than ksmd's.
//!
//! - madvise(MADV_MERGEABLE) of N MiB (registers the range with KSM);
//! - madvise(MADV_UNMERGEABLE) of N MiB of merged memory (breaks COW of
//!   every KSM page, removes the rmap_items from the trees);
//! - writing run=2 with N MiB merged (unmerges everything);
//! - a write fault on a KSM page (COW broken), per page.
//!
//! N is KSM_BENCH_MIB (default 16). Each iteration needs memory merged
//! afresh, which takes ksmd a few full scans: the setup is not timed, and
//! criterion is told to take one iteration per sample.
//!
//! Root, KSM, and no other process with memory registered with KSM (these
//! benchmarks write run=2, which would unmerge theirs): otherwise it says why
//! and exits 0 without measuring. Every knob is put back, by the library's
//! journal, also on SIGINT/SIGTERM.
//!
//!   cargo bench -p ksm-bench --bench sync_paths
//!   (in a guest: the bench binary with --bench, as benchmarks/run.sh does)

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use ksm::guard::default_state_dir;
use ksm::scan::wait_until;
use ksm::{Advice, Knob, KnobGuard, Mapping, Session, Sysfs};

/// Why these benchmarks cannot run here, if they cannot.
fn refusal(sysfs: &Sysfs) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (the benchmarks change /sys/kernel/mm/ksm)".into());
    }
    if !sysfs.present() {
        return Some("this kernel has no KSM".into());
    }
    let others: Vec<String> = ksm::procfs::ksm_users()
        .into_iter()
        .filter(|u| u.pid != std::process::id())
        .map(|u| format!("{} ({})", u.pid, u.comm))
        .collect();
    if !others.is_empty() {
        return Some(format!(
            "other processes have memory registered with KSM, which run=2 would unmerge: {}",
            others.join(", ")
        ));
    }
    None
}

fn mib() -> usize {
    std::env::var("KSM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&m| (1..=4096).contains(&m))
        .unwrap_or(16)
}

/// N MiB of groups of four identical pages (many KSM pages, as in
/// `ksm-bench count`'s groups-of-4), optionally advised and merged; ksmd is
/// stopped again before the timed part.
fn memory(guard: &RefCell<KnobGuard<'_>>, pages: usize, merged: bool) -> Mapping {
    let mut g = guard.borrow_mut();
    g.set(Knob::Run, "2").expect("run=2");
    let mut mem = Mapping::anon(pages).expect("mmap");
    for i in 0..pages {
        mem.fill(i, (i / 4) as u64 + 1);
    }
    if merged {
        mem.advise(Advice::Mergeable).expect("MADV_MERGEABLE");
        g.set(Knob::Run, "1").expect("run=1");
        let expected = (pages - pages % 4) as u64;
        wait_until("memory merged", Duration::from_secs(600), || {
            Ok(ksm::procfs::ksm_merging_pages(None)? >= expected)
        })
        .expect("merging");
        g.set(Knob::Run, "0").expect("run=0");
    }
    mem
}

fn benches(c: &mut Criterion, guard: &RefCell<KnobGuard<'_>>) {
    let n = mib();
    let pages = n * 1024 * 1024 / ksm::mem::page_size();
    let mut group = c.benchmark_group("ksm");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1))
        // Bootstrapping is slow under TCG; ten samples need no more.
        .nresamples(10_000);

    group.bench_function(format!("madvise MERGEABLE {n} MiB"), |b| {
        b.iter_batched(
            || memory(guard, pages, false),
            |mem| {
                mem.advise(Advice::Mergeable).expect("MADV_MERGEABLE");
                mem
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("madvise UNMERGEABLE {n} MiB merged"), |b| {
        b.iter_batched(
            || memory(guard, pages, true),
            |mem| {
                mem.advise(Advice::Unmergeable).expect("MADV_UNMERGEABLE");
                mem
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("run=2 with {n} MiB merged"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mem = memory(guard, pages, true);
                let t = Instant::now();
                guard.borrow_mut().set(Knob::Run, "2").expect("run=2");
                total += t.elapsed();
                drop(mem);
            }
            total
        })
    });
    group.throughput(Throughput::Elements(pages as u64));
    group.bench_function(format!("write fault on a KSM page ({n} MiB)"), |b| {
        b.iter_batched(
            || memory(guard, pages, true),
            |mut mem| {
                for i in 0..pages {
                    mem.page_mut(i)[0] ^= 1;
                }
                mem
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn main() {
    let sysfs = Sysfs::system();
    if let Some(why) = refusal(&sysfs) {
        println!("sync_paths: not measured: {why}");
        return;
    }
    let session = Session::open(sysfs.clone(), default_state_dir())
        .expect("cannot repair or lock the KSM knobs");
    ksm::signals::restore_on_termination(sysfs, session.journal_path())
        .expect("cannot install signal handlers");
    let guard = RefCell::new(session.guard());
    {
        let mut g = guard.borrow_mut();
        g.set(Knob::Run, "2").expect("run=2");
        if g.sysfs().has(Knob::AdvisorMode) {
            g.set(Knob::AdvisorMode, "none").expect("advisor_mode");
        }
        g.set(Knob::PagesToScan, "100000").expect("pages_to_scan");
        g.set(Knob::SleepMillisecs, "0").expect("sleep_millisecs");
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &guard);
    c.final_summary();
    guard
        .borrow_mut()
        .restore()
        .expect("cannot restore the KSM knobs");
}
