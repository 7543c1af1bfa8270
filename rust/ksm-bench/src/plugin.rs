//! The output of the ksmcount QEMU plugin (benchmarks/plugin/ksmcount.c):
//! for each mark, ksmd's instructions since the previous mark, in total and
//! per kernel symbol, split into ksmd's own and those of interrupts taken
//! while ksmd was current.

use std::collections::BTreeMap;
use std::path::Path;

/// A symbol's start address and name (System.map's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Symbol {
    pub addr: u64,
    pub name: String,
}

/// Instructions: ksmd's own, and of interrupts taken while ksmd was current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Insns {
    pub own: u64,
    pub irq: u64,
}

impl std::ops::AddAssign for Insns {
    fn add_assign(&mut self, o: Insns) {
        self.own += o.own;
        self.irq += o.irq;
    }
}

/// The instructions between one mark and the previous.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub seq: u64,
    pub total: Insns,
    /// ksmd's instructions between the guest's mark and ksmd getting off
    /// the CPU, where the window ends (0: ksmd was already off).
    pub late: u64,
    pub symbols: BTreeMap<Symbol, Insns>,
}

/// The plugin's output: its sessions, each a list of windows numbered from 1.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    pub sessions: Vec<Vec<Window>>,
}

fn num(s: Option<&str>, radix: u32, what: &str) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("no {what}"))?;
    u64::from_str_radix(s, radix).map_err(|_| format!("bad {what} {s:?}"))
}

pub fn parse(text: &str) -> Result<Output, String> {
    let mut out = Output::default();
    let mut window: Option<Window> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        let mut f = line.split(' ');
        match f.next() {
            Some("ksmcount") if n == 0 => {
                if f.next() != Some("1") {
                    return Err(at("not version 1 of ksmcount's output".into()));
                }
            }
            _ if n == 0 => return Err(at("not the output of the ksmcount plugin".into())),
            Some("session") => {
                if window.is_some() {
                    return Err(at("a session inside a mark".into()));
                }
                out.sessions.push(Vec::new());
            }
            Some("mark") => {
                let seq = num(f.next(), 10, "sequence number").map_err(at)?;
                let own = num(f.next(), 10, "count").map_err(at)?;
                let irq = num(f.next(), 10, "count").map_err(at)?;
                let late = num(f.next(), 10, "late count").map_err(at)?;
                let session = out
                    .sessions
                    .last()
                    .ok_or_else(|| at("a mark before any session".into()))?;
                if seq != session.len() as u64 + 1 || window.is_some() {
                    return Err(at(format!("mark out of sequence after {}", session.len())));
                }
                window = Some(Window {
                    seq,
                    total: Insns { own, irq },
                    late,
                    symbols: BTreeMap::new(),
                });
            }
            Some("f") => {
                let w = window
                    .as_mut()
                    .ok_or_else(|| at("a symbol outside a mark".into()))?;
                let addr = num(f.next(), 16, "address").map_err(at)?;
                let own = num(f.next(), 10, "count").map_err(at)?;
                let irq = num(f.next(), 10, "count").map_err(at)?;
                let name = f.next().ok_or_else(|| at("no name".into()))?.to_string();
                *w.symbols.entry(Symbol { addr, name }).or_default() += Insns { own, irq };
            }
            Some("end") => {
                let w = window
                    .take()
                    .ok_or_else(|| at("an end without a mark".into()))?;
                let sum = w.symbols.values().fold(Insns::default(), |mut a, &b| {
                    a += b;
                    a
                });
                if sum != w.total {
                    return Err(at("the symbols' counts do not add up to the mark's".into()));
                }
                out.sessions
                    .last_mut()
                    .expect("a mark is in a session")
                    .push(w);
            }
            // The cumulative totals at QEMU's exit: nothing to join.
            Some("exit") => {}
            _ => return Err(at("unknown line".into())),
        }
    }
    // A mark cut short by the end of the file (QEMU killed) is dropped.
    Ok(out)
}

pub fn read(path: &Path) -> Result<Output, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "ksmcount 1 symbols=3 map=/x/System.map
session 1
mark 1 0 0 0
end 1
mark 2 30 2 5
f ffffffff81000000 10 2 cmp_and_merge_page
f ffffffff81000100 20 0 memcmp
end 2
exit 30 2 7 ffff888000001000 0
";

    #[test]
    fn windows_and_symbols_are_read() {
        let out = parse(OUT).unwrap();
        assert_eq!(out.sessions.len(), 1);
        let w = &out.sessions[0][1];
        assert_eq!((w.seq, w.total, w.late), (2, Insns { own: 30, irq: 2 }, 5));
        let memcmp = Symbol {
            addr: 0xffffffff81000100,
            name: "memcmp".into(),
        };
        assert_eq!(w.symbols[&memcmp], Insns { own: 20, irq: 0 });
    }

    #[test]
    fn counts_that_do_not_add_up_are_refused() {
        let bad = OUT.replace("f ffffffff81000100 20", "f ffffffff81000100 21");
        assert!(parse(&bad).unwrap_err().contains("do not add up"));
    }

    #[test]
    fn a_skipped_mark_is_refused() {
        let bad = OUT.replace("mark 2 30", "mark 3 30");
        assert!(parse(&bad).unwrap_err().contains("out of sequence"));
    }

    #[test]
    fn other_files_are_refused() {
        assert!(parse("hello\n").unwrap_err().contains("not the output"));
    }

    #[test]
    fn a_mark_cut_short_is_dropped() {
        let cut = "ksmcount 1 symbols=1 map=m\nsession 1\nmark 1 5 0 0\nf 1 5 0 x\n";
        assert_eq!(parse(cut).unwrap().sessions, vec![Vec::new()]);
    }
}
