//! Cgroups for the checks: a memory-limited group (cgroup v2 memory.max
//! where its memory controller is available, else cgroup v1
//! memory.limit_in_bytes, as on hosts that still mount the v1 hierarchy),
//! and a cpuset confining processes to a NUMA node. What creating one
//! changes (the group, and the controller enabled for the children of a v2
//! root) is journaled through the session: undone by [`Group::remove`], or
//! by a signal or the next run if this one dies.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ksm::{Session, Undo};
use nix::errno::Errno;

use crate::ctx::{CheckResult, Fail};

/// A mounted hierarchy with one controller ("memory", "cpuset").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub controller: &'static str,
    pub root: PathBuf,
    pub v2: bool,
}

impl Hierarchy {
    /// Find a mounted hierarchy with `controller`: cgroup v2 if it has it,
    /// else a v1 hierarchy of that controller.
    pub fn probe(controller: &'static str) -> Result<Hierarchy, String> {
        let mounts = fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("/proc/self/mounts: {e}"))?;
        let mut v2_without = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (dir, fstype, opts) = (PathBuf::from(f[1]), f[2], f[3]);
            let found = |v2| {
                Ok(Hierarchy {
                    controller,
                    root: dir.clone(),
                    v2,
                })
            };
            if fstype == "cgroup2" {
                let controllers =
                    fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == controller) {
                    return found(true);
                }
                v2_without = Some(dir);
            } else if fstype == "cgroup" && opts.split(',').any(|o| o == controller) {
                return found(false);
            }
        }
        Err(match v2_without {
            Some(dir) => format!(
                "cgroup2 at {} has no {controller} controller and no cgroup v1 {controller} \
                 hierarchy is mounted",
                dir.display()
            ),
            None => format!("no cgroup hierarchy with the {controller} controller is mounted"),
        })
    }

    /// Create the group `name` under the hierarchy's root.
    pub fn create<'s>(&self, session: &'s Session, name: &str) -> CheckResult<Group<'s>> {
        create_group(session, &self.root, self.v2, &[self.controller], name)
    }

    /// One group with both controllers where they share a v2 hierarchy,
    /// else a group in each.
    pub fn create_joint<'s>(
        &self,
        other: &Hierarchy,
        session: &'s Session,
        name: &str,
    ) -> CheckResult<Vec<Group<'s>>> {
        if self.v2 && other.v2 && self.root == other.root {
            let controllers = [self.controller, other.controller];
            return Ok(vec![create_group(
                session,
                &self.root,
                true,
                &controllers,
                name,
            )?]);
        }
        Ok(vec![
            self.create(session, name)?,
            other.create(session, name)?,
        ])
    }
}

/// Make the group `root`/`name`, enabling `controllers` for the children
/// of a v2 root first where they are not.
fn create_group<'s>(
    session: &'s Session,
    root: &Path,
    v2: bool,
    controllers: &[&'static str],
    name: &str,
) -> CheckResult<Group<'s>> {
    // Made first: if a step below fails, dropping it undoes the others.
    let mut group = Group {
        session,
        dir: root.join(name),
        root: root.to_path_buf(),
        v2,
        made: Vec::new(),
    };
    if v2 {
        let control = root.join("cgroup.subtree_control");
        for controller in controllers {
            let enabled = fs::read_to_string(&control)
                .map_err(|e| Fail::Failed(format!("{}: {e}", control.display())))?;
            if enabled.split_whitespace().any(|c| c == *controller) {
                continue;
            }
            let undo = Undo::Write {
                path: control.clone(),
                value: format!("-{controller}"),
            };
            session
                .change(undo.clone(), || {
                    fs::write(&control, format!("+{controller}"))
                        .map_err(|e| ksm::Error::file("write +controller to", &control, e))
                })
                .map_err(|e| enabling_failed(controller, e))?;
            group.made.push(undo);
        }
    }
    let undo = Undo::RemoveCgroup(group.dir.clone());
    session.change(undo.clone(), || {
        fs::create_dir(&group.dir).map_err(|e| ksm::Error::file("mkdir", &group.dir, e))
    })?;
    group.made.push(undo);
    Ok(group)
}

/// EBUSY from "+memory": the v2 root has processes of its own (it is a
/// container's root, not the machine's), so no child of it can have that
/// controller. That is this machine's limit, not a kernel failure.
fn enabling_failed(controller: &str, e: ksm::Error) -> Fail {
    if e.errno() == Some(Errno::EBUSY) {
        Fail::Skip(format!(
            "cannot enable the {controller} controller for child cgroups ({e}): the cgroup v2 \
             root has processes of its own, as in a container"
        ))
    } else {
        Fail::from(e)
    }
}

pub struct Group<'s> {
    session: &'s Session,
    dir: PathBuf,
    root: PathBuf,
    v2: bool,
    /// What create() changed, undone by remove() the last first.
    made: Vec<Undo>,
}

impl Group<'_> {
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

    /// Confine the group's processes to memory node `node`, on every CPU
    /// of the parent (v1 needs both set before a process can join).
    pub fn confine_to_node(&self, node: usize) -> io::Result<()> {
        let parent_cpus = if self.v2 {
            "cpuset.cpus.effective"
        } else {
            "cpuset.cpus"
        };
        let cpus = fs::read_to_string(self.root.join(parent_cpus))?;
        self.write("cpuset.cpus", cpus.trim())?;
        self.write("cpuset.mems", &node.to_string())
    }

    /// OOM kills counted in this group.
    pub fn oom_kills(&self) -> io::Result<u64> {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let path = self.dir.join(file);
        let text = fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                if k == key {
                    v.trim().parse().ok()
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: no {key} count", path.display()),
                )
            })
    }

    /// Remove the group (killing what is left in it) and undo what create
    /// enabled.
    pub fn remove(&mut self) -> ksm::Result<()> {
        while let Some(undo) = self.made.last() {
            self.session.undo(undo)?;
            self.made.pop();
        }
        Ok(())
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("ksm-conform: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksm::Sysfs;
    use rstest::rstest;

    fn session(state: &Path) -> Session {
        Session::open(Sysfs::at(state.join("no-ksm")), state).unwrap()
    }

    /// A v2 root without the memory controller for its children: it is
    /// enabled for the group, and disabled again when the group goes, also
    /// when the group could not be made.
    #[rstest]
    #[case::made(false)]
    #[case::mkdir_fails(true)]
    fn memory_controller_is_disabled_again(#[case] in_the_way: bool) {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let control = root.path().join("cgroup.subtree_control");
        fs::write(&control, "cpu").unwrap();
        if in_the_way {
            fs::write(root.path().join("ksm-conform-1"), "").unwrap();
        }
        let session = session(state.path());
        let memcg = Hierarchy {
            controller: "memory",
            root: root.path().to_path_buf(),
            v2: true,
        };
        match memcg.create(&session, "ksm-conform-1") {
            Ok(group) => {
                assert!(!in_the_way);
                assert!(group.dir().is_dir());
                assert_eq!(fs::read_to_string(&control).unwrap(), "+memory");
                assert!(session.journal_path().exists());
                drop(group);
                assert!(!root.path().join("ksm-conform-1").exists());
            }
            Err(e) => assert!(in_the_way, "{e}"),
        }
        assert_eq!(fs::read_to_string(&control).unwrap(), "-memory");
        assert!(!session.journal_path().exists());
    }

    #[rstest]
    #[case(Errno::EBUSY, true)]
    #[case(Errno::EACCES, false)]
    fn ebusy_enabling_memory_is_a_skip(#[case] errno: Errno, #[case] skip: bool) {
        let e = ksm::Error::File {
            op: "write +memory to",
            path: "/sys/fs/cgroup/cgroup.subtree_control".into(),
            errno,
        };
        assert_eq!(matches!(enabling_failed("memory", e), Fail::Skip(_)), skip);
    }
}
