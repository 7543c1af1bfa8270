//! Fault injection on KSM's allocations (Documentation/fault-injection/):
//! failslab and fail_page_alloc armed with a task filter, so that only the
//! tasks whose make-it-fail is set see failures: ksmd (its rmap_item and
//! stable node allocations), the workers around MADV_UNMERGEABLE (the COW
//! copies of unmerging) and fork (the child's mm_slot), and the thread that
//! writes run=2. With the kernel booted with slab_nomerge, failslab is
//! narrowed to KSM's own caches (cache-filter).
//!
//! Each facility gets a budget of failures (`times`): what is left of it at
//! the end says exactly how many were injected. Every attribute changed is
//! journaled with its old value (crate `ksm`'s session), so a signal or the
//! next run puts it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use ksm::{Session, Undo};

use crate::content::Rng;
use crate::coordinator::Shared;
use crate::sys::{read_trimmed, write_file};

pub const FAILSLAB: &str = "/sys/kernel/debug/failslab";
pub const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";
/// KSM's slab caches (mm/ksm.c, ksm_slab_init).
pub const KSM_CACHES: [&str; 3] = ["ksm_rmap_item", "ksm_stable_node", "ksm_mm_slot"];
/// Failures each facility may inject at most: never reached, so that
/// `BUDGET - times` counts them.
const BUDGET: u64 = 1_000_000_000;
/// Percent of a filtered task's allocations that fail.
pub const PROBABILITY: u32 = 10;

/// Whether fault injection with a task filter can be armed here.
pub fn available() -> Result<(), String> {
    if !Path::new("/proc/self/make-it-fail").exists() {
        return Err("no /proc/self/make-it-fail (CONFIG_FAULT_INJECTION=n)".into());
    }
    if !Path::new(FAILSLAB).is_dir() && !Path::new(FAIL_PAGE_ALLOC).is_dir() {
        return Err(format!(
            "neither {FAILSLAB} nor {FAIL_PAGE_ALLOC} (debugfs not mounted, or \
             CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS off)"
        ));
    }
    Ok(())
}

pub struct Faults<'s> {
    session: &'s Session,
    /// (name, directory) of each facility armed.
    facilities: Vec<(&'static str, PathBuf)>,
    /// The caches failslab is narrowed to; empty: every cache.
    pub caches: Vec<String>,
    undos: Vec<Undo>,
}

impl<'s> Faults<'s> {
    pub fn arm(session: &'s Session) -> Result<Faults<'s>, String> {
        let mut f = Faults {
            session,
            facilities: Vec::new(),
            caches: Vec::new(),
            undos: Vec::new(),
        };
        let common = |extra: &[(&'static str, String)]| {
            let mut attrs: Vec<(&'static str, String)> = vec![
                ("task-filter", "Y".into()),
                ("ignore-gfp-wait", "N".into()),
                ("verbose", "0".into()),
                ("space", "0".into()),
                ("interval", "1".into()),
                ("times", BUDGET.to_string()),
            ];
            attrs.extend_from_slice(extra);
            // Last, so that the restore disarms first.
            attrs.push(("probability", PROBABILITY.to_string()));
            attrs
        };
        if Path::new(FAILSLAB).is_dir() {
            let narrowed = KSM_CACHES.iter().all(|c| slab_flag(c).exists());
            if narrowed {
                for cache in KSM_CACHES {
                    let path = slab_flag(cache);
                    // EINVAL: the cache is merged with others (no slab_nomerge).
                    if f.set(&path, "1").is_err() {
                        f.caches.clear();
                        break;
                    }
                    f.caches.push(cache.to_string());
                }
            }
            let filter = if f.caches.len() == KSM_CACHES.len() {
                "Y"
            } else {
                "N"
            };
            for (attr, value) in common(&[("cache-filter", filter.into())]) {
                f.set(&Path::new(FAILSLAB).join(attr), &value)?;
            }
            f.facilities.push(("failslab", FAILSLAB.into()));
        }
        if Path::new(FAIL_PAGE_ALLOC).is_dir() {
            let extra = [
                ("ignore-gfp-highmem", "N".to_string()),
                ("min-order", "0".to_string()),
            ];
            for (attr, value) in common(&extra) {
                f.set(&Path::new(FAIL_PAGE_ALLOC).join(attr), &value)?;
            }
            f.facilities
                .push(("fail_page_alloc", FAIL_PAGE_ALLOC.into()));
        }
        Ok(f)
    }

    /// Write `value` to `path`, journaling its old value the first time.
    fn set(&mut self, path: &Path, value: &str) -> Result<(), String> {
        let write = || {
            write_file(path, value).map_err(|e| ksm::Error::File {
                op: "write",
                path: path.to_path_buf(),
                errno: e,
            })
        };
        if self.undos.iter().any(|u| u.path() == path) {
            return write().map_err(|e| e.to_string());
        }
        let old = read_trimmed(path).ok_or_else(|| format!("cannot read {}", path.display()))?;
        let undo = Undo::Write {
            path: path.to_path_buf(),
            value: old,
        };
        self.session
            .change(undo.clone(), write)
            .map_err(|e| e.to_string())?;
        self.undos.push(undo);
        Ok(())
    }

    /// Set or clear make-it-fail of a task (/proc/<pid>/make-it-fail or
    /// /proc/<pid>/task/<tid>/make-it-fail).
    pub fn target(&mut self, make_it_fail: &Path, on: bool) -> Result<(), String> {
        self.set(make_it_fail, if on { "1" } else { "0" })
    }

    /// Failures injected so far, by facility.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.facilities
            .iter()
            .filter_map(|(name, dir)| {
                let left: u64 = read_trimmed(&dir.join("times"))?.parse().ok()?;
                Some((name.to_string(), BUDGET.saturating_sub(left)))
            })
            .collect()
    }

    /// Put every attribute back, the last changed first.
    pub fn disarm(&mut self) -> Result<(), String> {
        while let Some(undo) = self.undos.last() {
            self.session.undo(undo).map_err(|e| e.to_string())?;
            self.undos.pop();
        }
        Ok(())
    }
}

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.disarm() {
            eprintln!("ksm-stress: putting fault injection back: {e}");
        }
    }
}

/// /sys/kernel/slab/<cache>/failslab.
fn slab_flag(cache: &str) -> PathBuf {
    Path::new("/sys/kernel/slab").join(cache).join("failslab")
}

/// The actor: windows of a few seconds in which ksmd's own allocations
/// fail (rmap_items, stable nodes, chains: with slab_nomerge only those).
pub fn ksmd_actor(sh: &Shared) {
    let Some(ksmd) = sh.ksmd else {
        return;
    };
    let target = PathBuf::from(format!("/proc/{ksmd}/make-it-fail"));
    let mut rng = Rng::new(sh.seed ^ 0x6661_756c);
    while sh
        .ctl
        .sleep(Duration::from_millis(rng.between(3_000, 10_000)))
        && sh.ctl.proceed()
    {
        if sh.target_faults(&target, true) {
            sh.stats().event("fault windows on ksmd", 1);
            std::thread::sleep(Duration::from_millis(rng.between(2_000, 6_000)));
            if !sh.target_faults(&target, false) {
                sh.stats()
                    .error("could not clear ksmd's make-it-fail".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksm::Sysfs;

    #[test]
    fn a_task_target_is_journaled_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let session = Session::open(Sysfs::at(dir.path().join("no-ksm")), state.path()).unwrap();
        let target = dir.path().join("make-it-fail");
        std::fs::write(&target, "0").unwrap();
        let mut f = Faults {
            session: &session,
            facilities: vec![("failslab", dir.path().to_path_buf())],
            caches: Vec::new(),
            undos: Vec::new(),
        };
        std::fs::write(dir.path().join("times"), (BUDGET - 7).to_string()).unwrap();
        assert_eq!(f.injected()["failslab"], 7);
        f.target(&target, true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "1");
        assert!(session.journal_path().exists());
        f.target(&target, false).unwrap();
        f.target(&target, true).unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "0");
        assert!(!session.journal_path().exists());
    }
}
