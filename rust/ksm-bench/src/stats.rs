//! Summaries of samples: median, range, and whether two ranges are apart.

use serde::Serialize;

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// "median (min–max)", with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Whether two kernels differ by more than their samples spread: each has
/// at least three samples and their ranges (min-max) do not overlap.
pub fn ranges_apart(a: &Summary, b: &Summary) -> bool {
    a.n >= 3 && b.n >= 3 && (a.max < b.min || b.max < a.min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn min_max_and_count() {
        let s = Summary::of(&[5.0, 9.0, 7.0]).unwrap();
        assert_eq!((s.min, s.max, s.n), (5.0, 9.0, 3));
        assert_eq!(s.show(1), "7.0 (5.0-9.0)");
    }

    #[test]
    fn no_values_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn overlapping_ranges_are_not_apart() {
        let a = Summary::of(&[1.0, 2.0, 3.0]).unwrap();
        let b = Summary::of(&[2.0, 3.0, 4.0]).unwrap();
        let c = Summary::of(&[3.5, 4.0, 5.0]).unwrap();
        assert!(!ranges_apart(&a, &b));
        assert!(ranges_apart(&a, &c));
    }

    #[test]
    fn fewer_than_three_samples_are_never_apart() {
        let a = Summary::of(&[1.0, 1.1]).unwrap();
        let b = Summary::of(&[5.0, 5.1]).unwrap();
        assert!(!ranges_apart(&a, &b));
    }
}
