//! Facts about the running kernel that decide what a test may expect:
//! version, build configuration, NUMA nodes, swap.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use procfs::{Current, Meminfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Version { major, minor }
    }

    /// From a release string such as "6.18.44-fc-v657" or "7.3.4-ksm-rs".
    pub fn parse(release: &str) -> Option<Version> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Version { major, minor })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

pub fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname().expect("uname cannot fail");
    (
        u.release().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    )
}

/// The kernel's build configuration, from /proc/config.gz or
/// /boot/config-<release>, whichever can be read.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub source: String,
    pub options: BTreeMap<String, String>,
}

impl Config {
    pub fn load(release: &str) -> Option<Config> {
        let gz = Path::new("/proc/config.gz");
        if let Ok(file) = fs::File::open(gz) {
            let mut text = String::new();
            if flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .is_ok()
            {
                return Some(Config::parse(&text, gz.display().to_string()));
            }
        }
        let boot = format!("/boot/config-{release}");
        fs::read_to_string(&boot)
            .ok()
            .map(|text| Config::parse(&text, boot))
    }

    pub fn parse(text: &str, source: String) -> Config {
        let mut options = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    options.insert(k.to_string(), v.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("# ") {
                if let Some(k) = rest.strip_suffix(" is not set") {
                    options.insert(k.to_string(), "n".to_string());
                }
            }
        }
        Config { source, options }
    }

    /// "y", "m", "n", a value, or None if the option is not mentioned.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }
}

/// Parse a node list such as "0", "0-1" or "0,2-3".
pub fn parse_node_list(text: &str) -> Vec<usize> {
    let mut nodes = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    nodes.extend(a..=b);
                }
            }
            None => nodes.extend(part.parse::<usize>().ok()),
        }
    }
    nodes
}

/// NUMA nodes that have memory.
pub fn memory_nodes() -> Vec<usize> {
    fs::read_to_string("/sys/devices/system/node/has_memory")
        .map(|t| parse_node_list(&t))
        .unwrap_or_else(|_| vec![0])
}

/// /proc/meminfo; None if it cannot be read.
fn meminfo() -> Option<Meminfo> {
    Meminfo::current().ok()
}

/// Free swap in KiB, summed over active swap devices; 0 if unknown.
pub fn swap_free_kib() -> u64 {
    meminfo().map_or(0, |m| m.swap_free / 1024)
}

/// Memory available for new allocations without swapping, in KiB; 0 if
/// unknown (or before 3.14, which lacks MemAvailable).
pub fn mem_available_kib() -> u64 {
    meminfo()
        .and_then(|m| m.mem_available)
        .map_or(0, |b| b / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("6.18.44-fc-v657", Some(Version::new(6, 18)))]
    #[case("7.3.4-ksm-rs", Some(Version::new(7, 3)))]
    #[case("6.1.0-37-amd64", Some(Version::new(6, 1)))]
    #[case("garbage", None)]
    fn versions(#[case] release: &str, #[case] want: Option<Version>) {
        assert_eq!(Version::parse(release), want);
    }

    #[rstest]
    #[case("0\n", vec![0])]
    #[case("0-1\n", vec![0, 1])]
    #[case("0,2-3", vec![0, 2, 3])]
    fn node_lists(#[case] text: &str, #[case] want: Vec<usize>) {
        assert_eq!(parse_node_list(text), want);
    }

    #[test]
    fn meminfo_in_kib() {
        let total_kib = meminfo().unwrap().mem_total / 1024;
        let available = mem_available_kib();
        assert!(
            available > 0 && available <= total_kib,
            "{available} of {total_kib}"
        );
    }

    #[test]
    fn config_lines() {
        let c = Config::parse(
            "CONFIG_KSM=y\n# CONFIG_NUMA is not set\nCONFIG_NR_CPUS=8\n",
            "t".into(),
        );
        assert_eq!(c.get("CONFIG_KSM"), Some("y"));
        assert_eq!(c.get("CONFIG_NUMA"), Some("n"));
        assert_eq!(c.get("CONFIG_NR_CPUS"), Some("8"));
        assert_eq!(c.get("CONFIG_SWAP"), None);
    }
}
