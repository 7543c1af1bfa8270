//! Which object file of a kernel build each counted symbol comes from, and
//! so its category: read from the build directory (`nm` of the objects
//! linked into vmlinux, listed by its thin archive vmlinux.a), never from
//! lists of function names, so that a later patch that adds or renames
//! functions is measured the same way. Rust symbols are demangled.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::plugin::Symbol;

/// Categories, by the object a symbol is defined in: the first that
/// matches (a path ending in '/' is a directory and everything under it).
pub const CATEGORIES: &[(&str, &[&str])] = &[
    ("KSM, C (mm/ksm.o)", &["mm/ksm.o"]),
    ("KSM, Rust (mm/ksm/)", &["mm/ksm/"]),
    ("Rust glue (rust/)", &["rust/"]),
    ("memcmp & co. (lib/string.o)", &["lib/string.o"]),
    ("checksum (lib/xxhash.o)", &["lib/xxhash.o"]),
    ("page-table walk (mm/pagewalk.o)", &["mm/pagewalk.o"]),
    ("VMA tree (lib/maple_tree.o)", &["lib/maple_tree.o"]),
    ("locking (kernel/locking/)", &["kernel/locking/"]),
    ("scheduler (kernel/sched/)", &["kernel/sched/"]),
    ("RCU (kernel/rcu/)", &["kernel/rcu/"]),
    ("other mm (mm/)", &["mm/"]),
    (
        "entry, interrupts, timers",
        &[
            "arch/x86/entry/",
            "kernel/irq/",
            "kernel/time/",
            "arch/x86/kernel/apic/",
        ],
    ),
];

pub const OTHER: &str = "other";
pub const UNKNOWN: &str = "outside the kernel image";

pub fn category(object: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(_, paths)| {
            paths.iter().any(|p| {
                if p.ends_with('/') {
                    object.starts_with(p)
                } else {
                    object == *p
                }
            })
        })
        .map_or(OTHER, |(name, _)| name)
}

/// What a counted symbol is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Demangled (Rust), without hashes; for a static function whose name
    /// several objects define, the object follows in brackets.
    pub name: String,
    /// The object (relative to the build directory); several if they could
    /// not be told apart, "?" if none defines it.
    pub object: String,
    pub category: String,
}

/// A text symbol of an object: its offset in its section.
#[derive(Debug, Clone)]
struct Def {
    object: String,
    offset: u64,
}

/// The text symbols of every object in vmlinux.a, by name.
pub struct Objects {
    defs: HashMap<String, Vec<Def>>,
}

impl Objects {
    pub fn read(build: &Path) -> Result<Objects, String> {
        let archive = build.join("vmlinux.a");
        if !archive.is_file() {
            return Err(format!(
                "{}: no vmlinux.a: not the output directory of a kernel build",
                build.display()
            ));
        }
        // nm on a thin archive reads its members where they lie.
        let out = Command::new("nm")
            .args(["--defined-only", "-A"])
            .arg(&archive)
            .current_dir(build)
            .output()
            .map_err(|e| format!("cannot run nm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nm {} failed: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Members are recorded by absolute path: make them relative.
        let root = build
            .canonicalize()
            .map_err(|e| format!("{}: {e}", build.display()))?;
        let mut objects = Objects::parse(&String::from_utf8_lossy(&out.stdout));
        objects.relative_to(&format!("{}/", root.display()));
        Ok(objects)
    }

    /// Make the members' absolute paths relative to the build directory
    /// they lie in: `build` (ending in '/'), or, for a copy of a build
    /// whose thin archive still names the original's files, the directory
    /// that holds the original's init/main.o.
    fn relative_to(&mut self, build: &str) {
        const ANCHOR: &str = "init/main.o";
        let lying_in = self
            .defs
            .values()
            .flatten()
            .find_map(|d| d.object.strip_suffix(ANCHOR).filter(|p| p.starts_with('/')))
            .unwrap_or(build)
            .to_string();
        for defs in self.defs.values_mut() {
            for d in defs {
                if let Some(rel) = d.object.strip_prefix(&lying_in) {
                    d.object = rel.to_string();
                }
            }
        }
    }

    /// `nm -A` lines: "vmlinux.a:/build/mm/ksm.o:0000000000000120 t name"
    /// (thin archive, as Debian 12's binutils prints it) or
    /// "vmlinux.a[mm/ksm.o]:...".
    pub fn parse(text: &str) -> Objects {
        let mut defs: HashMap<String, Vec<Def>> = HashMap::new();
        for line in text.lines() {
            let Some((path, rest)) = line.rsplit_once(':') else {
                continue;
            };
            let object = match path.split_once('[') {
                Some((_, member)) => member.trim_end_matches(']'),
                None => path.rsplit_once(':').map_or(path, |(_, m)| m),
            };
            let mut f = rest.split_whitespace();
            let (Some(offset), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(offset) = u64::from_str_radix(offset, 16) else {
                continue;
            };
            defs.entry(name.to_string()).or_default().push(Def {
                object: object.to_string(),
                offset,
            });
        }
        Objects { defs }
    }

    /// The object that defines `sym`. A name several objects define
    /// (static functions) is told apart by address: in vmlinux an object's
    /// section keeps its layout, so the right object is the one where a
    /// neighbour with a name of its own lies at the same distance.
    fn object_of(&self, sym: &Symbol, addrs: &HashMap<&str, u64>) -> String {
        let Some(defs) = self.defs.get(&sym.name) else {
            return "?".into();
        };
        let mut objects: Vec<&str> = defs.iter().map(|d| d.object.as_str()).collect();
        objects.dedup();
        if objects.len() == 1 {
            return objects[0].into();
        }
        let fits = |def: &Def| {
            self.defs.iter().any(|(name, others)| {
                others.len() == 1
                    && others[0].object == def.object
                    && others[0].offset.abs_diff(def.offset) < 0x10000
                    && addrs.get(name.as_str()).is_some_and(|&a| {
                        a.wrapping_sub(others[0].offset) == sym.addr.wrapping_sub(def.offset)
                    })
            })
        };
        let fitting: Vec<&str> = defs
            .iter()
            .filter(|d| fits(d))
            .map(|d| d.object.as_str())
            .collect();
        match fitting.as_slice() {
            [one] => (*one).into(),
            _ => objects.join("|"),
        }
    }

    /// What each of `symbols` is; `map` is the kernel's System.map text
    /// (for the addresses of the neighbours).
    pub fn describe(&self, symbols: &[Symbol], map: &str) -> BTreeMap<Symbol, Info> {
        let mut addrs: HashMap<&str, u64> = HashMap::new();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for line in map.lines() {
            let mut f = line.split_whitespace();
            if let (Some(a), Some(_), Some(name)) = (f.next(), f.next(), f.next()) {
                if let Ok(a) = u64::from_str_radix(a, 16) {
                    addrs.insert(name, a);
                    *seen.entry(name).or_default() += 1;
                }
            }
        }
        // Names several symbols share cannot anchor an address.
        addrs.retain(|name, _| seen[name] == 1);
        symbols
            .iter()
            .map(|s| {
                let info = if s.name == "?" {
                    Info {
                        name: "?".into(),
                        object: "?".into(),
                        category: UNKNOWN.into(),
                    }
                } else {
                    let object = self.object_of(s, &addrs);
                    let mut name = demangle(&s.name);
                    if self.defs.get(&s.name).is_some_and(|d| d.len() > 1) {
                        name = format!("{name} [{object}]");
                    }
                    // Several candidates in one category are still that category.
                    let cats: Vec<&str> = object.split('|').map(category).collect();
                    let category = if cats.iter().all(|c| *c == cats[0]) {
                        cats[0]
                    } else {
                        OTHER
                    };
                    Info {
                        name,
                        object,
                        category: category.into(),
                    }
                };
                (s.clone(), info)
            })
            .collect()
    }
}

/// A Rust symbol's path without its hashes; other names as they are.
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_come_from_the_object_path() {
        assert_eq!(category("mm/ksm.o"), "KSM, C (mm/ksm.o)");
        assert_eq!(category("mm/ksm/ksm_rust.o"), "KSM, Rust (mm/ksm/)");
        assert_eq!(category("mm/ksm.o.old"), "other mm (mm/)");
        assert_eq!(category("lib/xxhash.o"), "checksum (lib/xxhash.o)");
        assert_eq!(category("fs/proc/base.o"), OTHER);
    }

    #[test]
    fn rust_symbols_are_demangled_without_hashes() {
        assert_eq!(
            demangle("_RNvNtCs1234abcd_8ksm_rust6stable11stable_find"),
            "ksm_rust::stable::stable_find"
        );
        assert_eq!(demangle("cmp_and_merge_page"), "cmp_and_merge_page");
    }

    const NM: &str = "\
vmlinux.a[mm/ksm.o]:0000000000000100 t show
vmlinux.a[mm/ksm.o]:0000000000000200 t cmp_and_merge_page
vmlinux.a[mm/khugepaged.o]:0000000000000040 t show
vmlinux.a[mm/khugepaged.o]:0000000000000080 T khugepaged_only
vmlinux.a[lib/string.o]:0000000000000010 T memcmp
vmlinux.a[lib/string.o]:0000000000000000 d some_data
";

    const MAP: &str = "\
ffffffff81000100 t show
ffffffff81000200 t cmp_and_merge_page
ffffffff81100040 t show
ffffffff81100080 T khugepaged_only
ffffffff81200010 T memcmp
";

    #[test]
    fn objects_are_found_and_same_names_told_apart_by_address() {
        let objects = Objects::parse(NM);
        let sym = |addr, name: &str| Symbol {
            addr,
            name: name.into(),
        };
        let syms = [
            sym(0xffffffff81000100, "show"),
            sym(0xffffffff81100040, "show"),
            sym(0xffffffff81200010, "memcmp"),
            sym(0xffffffff81300000, "nowhere"),
            sym(0, "?"),
        ];
        let info = objects.describe(&syms, MAP);
        let get = |i: usize| &info[&syms[i]];
        assert_eq!(get(0).object, "mm/ksm.o");
        assert_eq!(get(0).name, "show [mm/ksm.o]");
        assert_eq!(get(1).object, "mm/khugepaged.o");
        assert_eq!(get(1).category, "other mm (mm/)");
        assert_eq!(get(2).category, "memcmp & co. (lib/string.o)");
        assert_eq!(get(3).object, "?");
        assert_eq!(get(4).category, UNKNOWN);
    }

    #[test]
    fn members_of_a_copied_build_are_relative_to_the_original() {
        let mut objects = Objects::parse(
            "vmlinux.a:/orig/out/init/main.o:0000000000000000 T start_kernel\n\
             vmlinux.a:/orig/out/mm/ksm.o:0000000000000200 t cmp_and_merge_page\n",
        );
        objects.relative_to("/copy/out/");
        assert_eq!(objects.defs["cmp_and_merge_page"][0].object, "mm/ksm.o");
        let mut here =
            Objects::parse("vmlinux.a:/b/mm/ksm.o:0000000000000200 t cmp_and_merge_page\n");
        here.relative_to("/b/");
        assert_eq!(here.defs["cmp_and_merge_page"][0].object, "mm/ksm.o");
    }

    #[test]
    fn the_other_nm_member_format_is_read() {
        let objects = Objects::parse("vmlinux.a:mm/ksm.o:0000000000000200 t cmp_and_merge_page\n");
        assert_eq!(objects.defs["cmp_and_merge_page"][0].object, "mm/ksm.o");
    }
}
