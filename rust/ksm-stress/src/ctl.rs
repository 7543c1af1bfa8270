//! Pausing the coordinator's actor threads at a phase's end and stopping
//! them at the campaign's end. An actor calls [`Control::proceed`] before
//! each operation and sleeps with [`Control::sleep`], which a pause or a
//! stop cuts short; an operation under way is always finished first, so
//! that every actor parks with the system in its resting state (run=1,
//! every block online, no fault armed on ksmd). An actor with nothing to
//! do on this kernel returns at once and [`Control::retire`]s: a pause does
//! not wait for it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    paused: bool,
    stop: bool,
    parked: usize,
    /// Actors that park on a pause (started and not retired).
    active: usize,
}

#[derive(Debug, Default)]
pub struct Control {
    state: Mutex<State>,
    cv: Condvar,
}

impl Control {
    /// `actors` threads that park on a pause; they start parked: the
    /// first phase resumes them.
    pub fn paused(actors: usize) -> Control {
        let c = Control::default();
        {
            let mut s = c.lock();
            s.paused = true;
            s.active = actors;
        }
        c
    }

    /// An actor leaves for good: pauses no longer wait for it.
    pub fn retire(&self) {
        let mut s = self.lock();
        s.active = s.active.saturating_sub(1);
        self.cv.notify_all();
    }

    /// Whether a pause or the stop was asked for: a long operation's
    /// waits end early then.
    pub fn pausing(&self) -> bool {
        let s = self.lock();
        s.paused || s.stop
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block while paused; false once the campaign stops.
    pub fn proceed(&self) -> bool {
        let mut s = self.lock();
        while s.paused && !s.stop {
            s.parked += 1;
            self.cv.notify_all();
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            s.parked -= 1;
        }
        !s.stop
    }

    /// Sleep for `d`, or less if a pause or the stop comes; false if
    /// stopping.
    pub fn sleep(&self, d: Duration) -> bool {
        self.sleep_until_woken(d, |s| s.paused || s.stop)
    }

    /// Sleep for `d` whatever the pauses (an actor that never parks);
    /// false if stopping.
    pub fn sleep_unpaused(&self, d: Duration) -> bool {
        self.sleep_until_woken(d, |s| s.stop)
    }

    /// Sleep for `d`, or less once `woken` holds; false if stopping.
    fn sleep_until_woken(&self, d: Duration, woken: impl Fn(&State) -> bool) -> bool {
        let end = Instant::now() + d;
        let mut s = self.lock();
        while !woken(&s) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            s = self
                .cv
                .wait_timeout(s, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !s.stop
    }

    /// Ask every actor to park, and wait until every active one has.
    pub fn pause(&self) {
        let mut s = self.lock();
        s.paused = true;
        self.cv.notify_all();
        while s.parked < s.active && !s.stop {
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn resume(&self) {
        self.lock().paused = false;
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn actors_park_on_pause_and_leave_on_stop() {
        let ctl = Control::paused(4);
        let ops = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while ctl.proceed() {
                        ops.fetch_add(1, Ordering::SeqCst);
                        ctl.sleep(Duration::from_secs(60));
                    }
                    ctl.retire();
                });
            }
            // The fourth has nothing to do: without its retiring, every
            // pause would wait for it forever.
            s.spawn(|| ctl.retire());
            ctl.pause();
            assert_eq!(ops.load(Ordering::SeqCst), 0, "started paused");
            ctl.resume();
            while ops.load(Ordering::SeqCst) < 3 {
                std::thread::yield_now();
            }
            assert!(!ctl.pausing());
            // The 60 s sleeps are cut short by the pause.
            ctl.pause();
            assert!(ctl.pausing());
            let parked = ops.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(ops.load(Ordering::SeqCst), parked, "nothing runs paused");
            ctl.stop();
        });
        assert!(!ctl.proceed(), "stopped");
    }

    #[test]
    fn the_unpaused_sleep_ignores_pauses_but_not_the_stop() {
        let ctl = Control::paused(0);
        ctl.pause();
        let start = Instant::now();
        assert!(ctl.sleep_unpaused(Duration::from_millis(50)));
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "a pause cut it short"
        );
        assert!(
            ctl.sleep(Duration::from_secs(60)),
            "paused: the pausing sleep returns at once"
        );
        ctl.stop();
        assert!(!ctl.sleep_unpaused(Duration::from_secs(60)), "stopped");
    }
}
