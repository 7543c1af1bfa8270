//! Reading and writing /sys/kernel/mm/ksm. The root is injectable so that the
//! guard and journal logic can be tested against a plain directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::knob::Knob;

pub const SYSFS_KSM: &str = "/sys/kernel/mm/ksm";

#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn system() -> Self {
        Sysfs::at(SYSFS_KSM)
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, knob: Knob) -> PathBuf {
        self.root.join(knob.name())
    }

    /// /sys/kernel/mm/ksm exists only on a CONFIG_KSM=y kernel.
    pub fn present(&self) -> bool {
        self.root.is_dir()
    }

    pub fn has(&self, knob: Knob) -> bool {
        self.path(knob).exists()
    }

    /// The names of all files in the directory, known or not.
    pub fn entries(&self) -> Result<Vec<String>> {
        let dir = fs::read_dir(&self.root).map_err(|e| Error::file("readdir", &self.root, e))?;
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The value in the form it is written back: trimmed, and for
    /// advisor_mode the selected entry of "[none] scan-time".
    pub fn read(&self, knob: Knob) -> Result<String> {
        let path = self.path(knob);
        let raw = fs::read_to_string(&path).map_err(|e| Error::file("read", &path, e))?;
        Ok(normalize(knob, &raw))
    }

    pub fn read_u64(&self, knob: Knob) -> Result<u64> {
        self.parse(knob)
    }

    pub fn read_i64(&self, knob: Knob) -> Result<i64> {
        self.parse(knob)
    }

    fn parse<T: std::str::FromStr>(&self, knob: Knob) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.read(knob)?;
        text.parse().map_err(|e: T::Err| Error::Parse {
            path: self.path(knob),
            content: text.clone(),
            why: e.to_string(),
        })
    }

    /// One write(2) of exactly `bytes` on a file opened with O_TRUNC, as
    /// `echo -n >` would do. The kernel's errno is kept; a short write is an
    /// error too.
    pub fn write_bytes(&self, knob: Knob, bytes: &[u8]) -> Result<()> {
        let path = self.path(knob);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::file("open", &path, e))?;
        match file.write(bytes) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(Error::Other(format!(
                "write {}: short write {n} of {}",
                path.display(),
                bytes.len()
            ))),
            Err(e) => Err(Error::file("write", &path, e)),
        }
    }

    pub fn write(&self, knob: Knob, value: &str) -> Result<()> {
        self.write_bytes(knob, value.as_bytes())
    }

    /// Every known knob present, by name, for before/after comparisons.
    pub fn snapshot(&self) -> BTreeMap<Knob, String> {
        Knob::ALL
            .into_iter()
            .filter_map(|k| self.read(k).ok().map(|v| (k, v)))
            .collect()
    }
}

/// advisor_mode reads back as "[none] scan-time"; everything else is a number.
pub fn normalize(knob: Knob, raw: &str) -> String {
    let raw = raw.trim();
    if knob == Knob::AdvisorMode {
        if let (Some(a), Some(b)) = (raw.find('['), raw.find(']')) {
            if a < b {
                return raw[a + 1..b].to_string();
            }
        }
    }
    raw.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Knob::AdvisorMode, "[none] scan-time\n", "none")]
    #[case(Knob::AdvisorMode, "none [scan-time]\n", "scan-time")]
    #[case(Knob::AdvisorMode, "scan-time", "scan-time")]
    #[case(Knob::Run, "1\n", "1")]
    #[case(Knob::GeneralProfit, "-4096\n", "-4096")]
    fn normalizes(#[case] knob: Knob, #[case] raw: &str, #[case] want: &str) {
        assert_eq!(normalize(knob, raw), want);
    }

    #[test]
    fn read_write_round_trip_on_a_plain_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::at(dir.path());
        fs::write(dir.path().join("run"), "0\n").unwrap();
        assert_eq!(sysfs.read_u64(Knob::Run).unwrap(), 0);
        sysfs.write(Knob::Run, "1").unwrap();
        assert_eq!(sysfs.read(Knob::Run).unwrap(), "1");
    }

    #[test]
    fn errno_of_a_missing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sysfs::at(dir.path()).read(Knob::Run).unwrap_err();
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT));
        let err = Sysfs::at(dir.path()).write(Knob::Run, "1").unwrap_err();
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT));
    }
}
