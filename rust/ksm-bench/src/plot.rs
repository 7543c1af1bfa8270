//! The report's plot, as SVG written by hand: ksmd's instructions per
//! scanned page against the number of pages, a line per workload and
//! kernel (the first kernel dashed, the second solid).

use std::fmt::Write as _;

use crate::counts::{Kernel, Metric};

const W: f64 = 960.0;
const H: f64 = 600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// One line: (pages, median instructions per scanned page).
struct Series {
    label: String,
    colour: &'static str,
    dashed: bool,
    points: Vec<(u64, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(ks: &[Kernel<'_>], title: &str) -> Result<String, String> {
    let mut workloads: Vec<String> = Vec::new();
    for s in ks
        .iter()
        .flat_map(|k| k.joined.iter().flat_map(|j| &j.samples))
    {
        if !workloads.contains(&s.workload) {
            workloads.push(s.workload.clone());
        }
    }
    let mut series = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for (ki, k) in ks.iter().enumerate() {
            let mut pages: Vec<u64> = k
                .joined
                .iter()
                .flat_map(|j| &j.samples)
                .filter(|s| &s.workload == w)
                .map(|s| s.pages)
                .collect();
            pages.sort_unstable();
            pages.dedup();
            let points: Vec<(u64, f64)> = pages
                .into_iter()
                .filter_map(|p| k.median(w, p, Metric::ScannedPage).map(|v| (p, v)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{w}, {}", k.label),
                    colour: COLOURS[wi % COLOURS.len()],
                    dashed: ki == 0 && ks.len() == 2,
                    points,
                });
            }
        }
    }
    let all: Vec<(u64, f64)> = series.iter().flat_map(|s| s.points.clone()).collect();
    if all.is_empty() {
        return Err("nothing to plot: no steady scans".into());
    }
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (p, _)| {
        let l = (*p as f64).log2();
        (lo.min(l), hi.max(l))
    });
    let (xmin, xmax) = if xmax > xmin {
        (xmin - 0.25, xmax + 0.25)
    } else {
        (xmin - 1.0, xmax + 1.0)
    };
    // Log scale: the workloads' costs differ a hundredfold, and a few
    // percent between kernels must still show.
    let positive: Vec<f64> = all.iter().map(|(_, v)| *v).filter(|v| *v > 0.0).collect();
    let lmin = positive
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .log10()
        .floor();
    let lmax = positive
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(lmin + 1.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |p: u64| LEFT + ((p as f64).log2() - xmin) / (xmax - xmin) * pw;
    let y = |v: f64| TOP + ph - (v.max(1e-9).log10() - lmin) / (lmax - lmin) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Y grid at 1, 2 and 5 times each power of ten, labelled at 1 and 5.
    let mut e = lmin as i32;
    while e <= lmax as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > lmax + 1e-9 {
                break;
            }
            let yy = y(v);
            let label = if m == 2.0 {
                String::new()
            } else {
                format!("{v}")
            };
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + pw,
                if m == 1.0 { "#bbb" } else { "#eee" },
                LEFT - 8.0,
                yy + 4.0
            );
        }
        e += 1;
    }
    // X ticks at each size measured.
    let mut sizes: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for p in &sizes {
        let xx = x(*p);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">2^{}</text><text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#555">{} MiB</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            p.trailing_zeros(),
            TOP + ph + 33.0,
            p * 4096 / (1024 * 1024)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">pages advised (4 KiB each; log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">ksmd instructions per scanned page (steady scans; log scale)</text>"#,
        TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let dash = if se.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x(*p), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            se.colour
        );
        for (p, v) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: {:.1} at {p} pages</title></circle>"#,
                x(*p),
                y(*v),
                se.colour,
                escape(&se.label),
                v
            );
        }
        let ly = TOP + 10.0 + i as f64 * 22.0;
        let lx = LEFT + pw + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 34.0,
            se.colour,
            lx + 42.0,
            ly + 4.0,
            escape(&se.label)
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
