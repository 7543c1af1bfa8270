//! The actor that moves pages under KSM's feet from outside the workers:
//! migrate_pages(2) of a whole worker from one NUMA node to the other (KSM
//! pages included: the caller has CAP_SYS_NICE, so MPOL_MF_MOVE_ALL), and
//! compaction of all memory or of one node. With merge_across_nodes=0, a
//! KSM page that lands on the other node must leave its node's stable tree
//! (ksmd moves its stable node to migrate_nodes when it meets it).

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::content::Rng;
use crate::coordinator::Shared;
use crate::sys::write_file;

fn node_mask(node: usize) -> [libc::c_ulong; 4] {
    let mut mask = [0; 4];
    let bits = libc::c_ulong::BITS as usize;
    mask[node / bits] |= 1 << (node % bits);
    mask
}

/// migrate_pages(pid, from, to): pages that could not be moved, or the errno.
fn migrate_pages(pid: u32, from: usize, to: usize) -> Result<u64, Errno> {
    let (old, new) = (node_mask(from), node_mask(to));
    // SAFETY: both masks outlive the call; maxnode is their size in bits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            pid as libc::c_long,
            (old.len() * libc::c_ulong::BITS as usize) as libc::c_ulong,
            old.as_ptr(),
            new.as_ptr(),
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc as u64)
    }
}

/// Whether this kernel has the migration system calls: move_pages(2) of no
/// page at all returns 0 with them and ENOSYS without.
pub fn available() -> bool {
    // SAFETY: a count of 0 makes the kernel read none of the null arrays.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            0 as libc::c_ulong,
            std::ptr::null::<*mut libc::c_void>(),
            std::ptr::null::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0,
        )
    };
    rc == 0
}

pub fn actor(sh: &Shared) {
    let mut rng = Rng::new(sh.seed ^ 0x6d69_6772);
    while sh.ctl.proceed() {
        let nodes = &sh.move_nodes;
        let migrate = nodes.len() > 1 && !sh.workers.is_empty();
        let numa = sh.nodes.len() > 1;
        match rng.weighted(&[if migrate { 3 } else { 0 }, 1, if numa { 1 } else { 0 }]) {
            0 => {
                let pid = sh.workers[rng.below(sh.workers.len() as u64) as usize];
                let from = nodes[rng.below(nodes.len() as u64) as usize];
                let to = *nodes.iter().find(|&&n| n != from).expect("two nodes");
                // ESRCH: the worker is gone (reported where it is reaped).
                let r = migrate_pages(pid, from, to);
                if let Ok(left) = r {
                    sh.stats().event("pages migrate_pages left in place", left);
                }
                sh.stats()
                    .record("migrate_pages of a worker", r.map(drop), &[]);
            }
            1 => {
                let r = write_file(Path::new("/proc/sys/vm/compact_memory"), "1");
                sh.stats().record("compact all memory", r, &[]);
            }
            _ => {
                let node = sh.nodes[rng.below(sh.nodes.len() as u64) as usize];
                let path = format!("/sys/devices/system/node/node{node}/compact");
                let r = write_file(Path::new(&path), "1");
                sh.stats().record("compact one node", r, &[]);
            }
        }
        sh.ctl.sleep(Duration::from_millis(rng.between(2000, 8000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_masks() {
        assert_eq!(node_mask(0)[0], 1);
        assert_eq!(node_mask(1)[0], 2);
        assert_eq!(node_mask(65)[1], 2);
    }
}
