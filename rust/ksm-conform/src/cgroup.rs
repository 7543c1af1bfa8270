//! A memory-limited cgroup for the memory-pressure checks: cgroup v2
//! (memory.max) where its memory controller is available, else cgroup v1
//! (memory.limit_in_bytes), as on hosts that still mount the v1 hierarchy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memcg {
    V2(PathBuf),
    V1(PathBuf),
}

impl Memcg {
    /// Find a mounted hierarchy with the memory controller.
    pub fn probe() -> Result<Memcg, String> {
        let mounts = fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("/proc/self/mounts: {e}"))?;
        let mut v2_without_memory = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (dir, fstype, opts) = (PathBuf::from(f[1]), f[2], f[3]);
            if fstype == "cgroup2" {
                let controllers =
                    fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "memory") {
                    return Ok(Memcg::V2(dir));
                }
                v2_without_memory = Some(dir);
            } else if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
                return Ok(Memcg::V1(dir));
            }
        }
        Err(match v2_without_memory {
            Some(dir) => format!(
                "cgroup2 at {} has no memory controller and no cgroup v1 memory hierarchy is mounted",
                dir.display()
            ),
            None => "no cgroup hierarchy with the memory controller is mounted".into(),
        })
    }

    fn root(&self) -> &Path {
        match self {
            Memcg::V2(r) | Memcg::V1(r) => r,
        }
    }

    /// Remove empty groups named `<prefix><pid>` whose process is gone: what
    /// a run killed with SIGKILL leaves. Returns their names.
    pub fn remove_stale(&self, prefix: &str) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.root()) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(prefix)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if fs::remove_dir(entry.path()).is_ok() {
                removed.push(name);
            }
        }
        removed
    }

    pub fn create(&self, name: &str) -> io::Result<Group> {
        let (root, v2) = match self {
            Memcg::V2(r) => (r, true),
            Memcg::V1(r) => (r, false),
        };
        let mut enabled_memory = false;
        if v2 {
            let control = root.join("cgroup.subtree_control");
            if !fs::read_to_string(&control)?
                .split_whitespace()
                .any(|c| c == "memory")
            {
                fs::write(&control, "+memory")?;
                enabled_memory = true;
            }
        }
        let dir = root.join(name);
        fs::create_dir(&dir)?;
        Ok(Group {
            dir,
            v2,
            enabled_memory,
            root: root.clone(),
            removed: false,
        })
    }
}

pub struct Group {
    dir: PathBuf,
    v2: bool,
    root: PathBuf,
    /// create() enabled the memory controller for the root's children and
    /// remove() must disable it again.
    enabled_memory: bool,
    removed: bool,
}

impl Group {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(file), value).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", self.dir.join(file).display()))
        })
    }

    fn read_u64(&self, file: &str) -> io::Result<u64> {
        let text = fs::read_to_string(self.dir.join(file))?;
        text.trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {text:?}")))
    }

    pub fn add(&self, pid: u32) -> io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    pub fn usage(&self) -> io::Result<u64> {
        self.read_u64(if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        })
    }

    /// Limit memory and keep the group from swapping instead of failing.
    pub fn limit(&self, bytes: u64) -> io::Result<()> {
        if self.v2 {
            if self.dir.join("memory.swap.max").exists() {
                self.write("memory.swap.max", "0")?;
            }
            self.write("memory.max", &bytes.to_string())
        } else {
            self.write("memory.swappiness", "0")?;
            self.write("memory.limit_in_bytes", &bytes.to_string())?;
            if self.dir.join("memory.memsw.limit_in_bytes").exists() {
                self.write("memory.memsw.limit_in_bytes", &bytes.to_string())?;
            }
            Ok(())
        }
    }

    /// OOM kills counted in this group, if the kernel reports them.
    pub fn oom_kills(&self) -> Option<u64> {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = fs::read_to_string(self.dir.join(file)).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k == key {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Remove the group once its processes are gone, and undo what create
    /// enabled. Waits a little: a killed task leaves the group
    /// asynchronously.
    pub fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("rmdir {}: {e}", self.dir.display()),
                    ));
                }
            }
        }
        self.removed = true;
        if self.enabled_memory {
            fs::write(self.root.join("cgroup.subtree_control"), "-memory")?;
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("ksm-conform: {e}");
        }
    }
}
