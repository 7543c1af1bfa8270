//! Memory blocks of ZONE_MOVABLE (the guest boots with movablecore=) taken
//! offline while they hold KSM pages, and online again: offlining migrates
//! the KSM pages away and makes ksm_check_stable_tree() prune the stable
//! nodes whose frames were in the block
//! (Documentation/admin-guide/mm/memory-hotplug.rst).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::content::Rng;
use crate::coordinator::Shared;
use crate::frames::{self, PAGE};
use crate::sys::{read_trimmed, write_file};

pub const MEMORY: &str = "/sys/devices/system/memory";
pub const IOMEM: &str = "/proc/iomem";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub dir: PathBuf,
    pub start_pfn: u64,
    pub pages: u64,
}

impl Block {
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn state(&self) -> Option<String> {
        read_trimmed(&self.dir.join("state"))
    }
}

/// The ranges of "System RAM" in /proc/iomem's text (top level), adjacent
/// ones joined, as [start, end) byte addresses.
pub fn system_ram(iomem: &str) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = iomem
        .lines()
        .filter(|l| !l.starts_with(' ') && l.trim_end().ends_with(": System RAM"))
        .filter_map(|l| {
            let (range, _) = l.split_once(" : ")?;
            let (a, b) = range.trim().split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            Some((a, b + 1))
        })
        .collect();
    ranges.sort_unstable();
    let mut joined: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match joined.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => joined.push((a, b)),
        }
    }
    joined
}

/// Online blocks of ZONE_MOVABLE under `root` (/sys/devices/system/memory)
/// without holes: the kernel refuses to offline a block that is not all
/// System RAM (EINVAL, "memory holes"), such as the last one of a QEMU
/// guest, whose RAM ends in firmware-reserved pages.
pub fn movable_blocks(root: &Path, ram: &[(u64, u64)]) -> io::Result<Vec<Block>> {
    let size_text = fs::read_to_string(root.join("block_size_bytes"))?;
    let size = u64::from_str_radix(size_text.trim(), 16).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("block_size_bytes: {e}"))
    })?;
    let mut blocks = Vec::new();
    for entry in fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("memory") {
            continue;
        }
        let dir = entry.path();
        let online = read_trimmed(&dir.join("state")).as_deref() == Some("online");
        let movable = read_trimmed(&dir.join("valid_zones")).as_deref() == Some("Movable");
        let index =
            read_trimmed(&dir.join("phys_index")).and_then(|i| u64::from_str_radix(&i, 16).ok());
        let Some(start) = index.map(|i| i * size) else {
            continue;
        };
        let whole = ram.iter().any(|&(a, b)| a <= start && start + size <= b);
        if online && movable && whole {
            blocks.push(Block {
                dir,
                start_pfn: start / PAGE as u64,
                pages: size / PAGE as u64,
            });
        }
    }
    blocks.sort_by_key(|b| b.start_pfn);
    Ok(blocks)
}

/// How an offline attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offline {
    Done,
    /// The kernel refused (EBUSY: a page could not be migrated, ...).
    Refused(Errno),
    /// Still migrating after the timeout: the writer was killed (the
    /// kernel gives up with EINTR on a fatal signal).
    TimedOut,
}

/// Take `block` offline: the write runs in a child process (`writer`, this
/// program's `write-file` subcommand, see [`write_and_exit`]) that is
/// killed after `timeout`.
pub fn offline(block: &Block, mut writer: Command, timeout: Duration) -> io::Result<Offline> {
    let mut child = writer.arg(block.dir.join("state")).arg("offline").spawn()?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(match status.code() {
                Some(0) => Offline::Done,
                Some(code) => Offline::Refused(Errno::from_raw(code)),
                None => Offline::TimedOut,
            });
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            child.wait()?;
            return Ok(Offline::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Put `block` back online in ZONE_MOVABLE.
pub fn online(block: &Block) -> Result<(), Errno> {
    write_file(&block.dir.join("state"), "online_movable")
}

/// The writer's side: write VALUE to PATH and exit with the errno (0 when
/// done).
pub fn write_and_exit(path: &Path, value: &str) -> i32 {
    match write_file(path, value) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

/// The actor: now and then, take offline the movable block that holds KSM
/// pages (counted in /proc/kpageflags just before), and online again.
pub fn actor(sh: &Shared) {
    let mut rng = Rng::new(sh.seed ^ 0x686f_7470);
    while sh
        .ctl
        .sleep(Duration::from_millis(rng.between(6_000, 20_000)))
        && sh.ctl.proceed()
    {
        let ram = system_ram(&fs::read_to_string(IOMEM).unwrap_or_default());
        let blocks = match movable_blocks(Path::new(MEMORY), &ram) {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => continue,
            Err(e) => {
                sh.stats().error(format!("reading {MEMORY}: {e}"));
                return;
            }
        };
        let ksm: Vec<u64> = blocks
            .iter()
            .map(|b| {
                frames::count_ksm(Path::new("/proc/kpageflags"), b.start_pfn, b.pages as usize)
                    .unwrap_or(0)
            })
            .collect();
        let holding: Vec<usize> = (0..blocks.len()).filter(|&i| ksm[i] > 0).collect();
        let i = if holding.is_empty() {
            rng.below(blocks.len() as u64) as usize
        } else {
            holding[rng.below(holding.len() as u64) as usize]
        };
        let (block, held) = (&blocks[i], ksm[i]);
        match offline(block, sh.command("write-file"), sh.offline_timeout) {
            Ok(Offline::Done) => {
                let mut st = sh.stats();
                st.ok("offline a movable memory block");
                st.event("memory blocks offlined", 1);
                if held > 0 {
                    st.event("memory blocks offlined holding KSM pages", 1);
                    st.event("KSM pages in the blocks offlined (before)", held);
                }
            }
            // EBUSY: a page could not be isolated or migrated in time.
            Ok(Offline::Refused(e)) => sh.stats().record(
                "offline a movable memory block",
                Err(e),
                &[Errno::EBUSY, Errno::EAGAIN, Errno::ENOMEM],
            ),
            Ok(Offline::TimedOut) => sh
                .stats()
                .refused("offline a movable memory block", "timed out, writer killed"),
            Err(e) => sh.stats().error(format!("offlining {}: {e}", block.name())),
        }
        std::thread::sleep(Duration::from_millis(rng.below(2000)));
        if block.state().as_deref() != Some("online") {
            let r = online(block);
            sh.stats().record("online a memory block (movable)", r, &[]);
            if let Err(e) = r {
                sh.stats()
                    .error(format!("{} stays offline: {e}", block.name()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(root: &Path, name: &str, index: &str, state: &str, zones: &str) {
        let d = root.join(name);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("phys_index"), format!("{index}\n")).unwrap();
        fs::write(d.join("state"), format!("{state}\n")).unwrap();
        fs::write(d.join("valid_zones"), format!("{zones}\n")).unwrap();
    }

    #[test]
    fn only_online_movable_blocks_are_taken() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("block_size_bytes"), "8000000\n").unwrap();
        block(root.path(), "memory0", "00000000", "online", "Normal");
        block(root.path(), "memory9", "00000009", "online", "Movable");
        block(
            root.path(),
            "memory10",
            "0000000a",
            "offline",
            "Normal Movable",
        );
        block(root.path(), "memory11", "0000000b", "online", "Movable");
        block(root.path(), "memory15", "0000000f", "online", "Movable");
        fs::create_dir(root.path().join("power")).unwrap();
        // RAM ends 128 KiB short of memory15's end: a hole in it.
        let iomem = "00000000-00000fff : Reserved\n\
                     00001000-0009fbff : System RAM\n\
                     00100000-3fffffff : System RAM\n\
                     \x20 01000000-01ffffff : Kernel code\n\
                     40000000-7ffdffff : System RAM\n\
                     7ffe0000-7fffffff : Reserved\n";
        let ram = system_ram(iomem);
        assert_eq!(ram, [(0x1000, 0x9fc00), (0x100000, 0x7ffe0000)]);
        let blocks = movable_blocks(root.path(), &ram).unwrap();
        let names: Vec<String> = blocks.iter().map(Block::name).collect();
        assert_eq!(names, ["memory9", "memory11"]);
        // 128 MiB blocks: 32768 pages each.
        assert_eq!(blocks[0].pages, 32768);
        assert_eq!(blocks[0].start_pfn, 9 * 32768);
    }

    #[test]
    fn the_writer_reports_the_errno() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_and_exit(&dir.path().join("no/such"), "offline"),
            libc::ENOENT
        );
        let f = dir.path().join("state");
        fs::write(&f, "").unwrap();
        assert_eq!(write_and_exit(&f, "offline"), 0);
        assert_eq!(fs::read_to_string(f).unwrap(), "offline");
    }
}
