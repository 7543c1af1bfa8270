//! Waiting for ksmd: by its full_scans counter, polling, with a deadline.
//! A full scan is one pass over every registered mm; two are needed before
//! identical pages merge (first checksum, then the unstable tree).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::knob::Knob;
use crate::sysfs::Sysfs;

const POLL: Duration = Duration::from_millis(2);

/// Poll `cond` until it holds, failing with a timeout after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Wait until ksmd completed `n` more full scans than when called; returns
/// the new full_scans value.
pub fn wait_full_scans(sysfs: &Sysfs, n: u64, timeout: Duration) -> Result<u64> {
    let target = sysfs.read_u64(Knob::FullScans)? + n;
    let mut now = 0;
    wait_until(&format!("{n} more full scans of ksmd"), timeout, || {
        now = sysfs.read_u64(Knob::FullScans)?;
        Ok(now >= target)
    })?;
    Ok(now)
}

/// Poll `cond` until it holds, but give up once ksmd completed `scans` more
/// full scans without it holding: then ksmd has had every chance and the
/// condition is false, not late. `timeout` bounds a ksmd that makes no
/// progress at all.
pub fn wait_within_scans(
    sysfs: &Sysfs,
    what: &str,
    scans: u64,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let limit = sysfs.read_u64(Knob::FullScans)? + scans;
    let start = Instant::now();
    loop {
        // Sample the counter before the condition, so a scan that ends in
        // between still gets its check.
        let done = sysfs.read_u64(Knob::FullScans)?;
        if cond()? {
            return Ok(());
        }
        if done >= limit {
            return Err(Error::Other(format!(
                "{what}: still false after {scans} full scans"
            )));
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("{what} (ksmd is not completing scans)"),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_reported() {
        let err = wait_until("nothing", Duration::from_millis(10), || Ok(false)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("waiting for nothing"));
    }

    #[test]
    fn full_scans_that_never_come_time_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("full_scans"), "7\n").unwrap();
        let sysfs = Sysfs::at(dir.path());
        let err = wait_full_scans(&sysfs, 1, Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("1 more full scans"), "{err}");
        std::fs::write(dir.path().join("full_scans"), "8\n").unwrap();
        assert_eq!(
            wait_full_scans(&sysfs, 0, Duration::from_millis(20)).unwrap(),
            8
        );
    }

    #[test]
    fn condition_false_after_enough_scans_is_an_error_not_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("full_scans"), "100\n").unwrap();
        let sysfs = Sysfs::at(dir.path());
        let mut polls = 0;
        let err = wait_within_scans(&sysfs, "merged", 2, Duration::from_secs(5), || {
            polls += 1;
            std::fs::write(dir.path().join("full_scans"), format!("{}\n", 100 + polls)).unwrap();
            Ok(false)
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("still false after 2 full scans"),
            "{err}"
        );
    }
}
