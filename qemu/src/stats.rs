//! Statistics of repeated measurements: median, minimum and maximum.
//!
//! The benchmark reports each metric as the median of its runs with the spread beside it, and the
//! stress summary reports the median and maximum convergence time; both take their numbers from
//! [`Stats::of`]. A sample set that is empty or holds a NaN has no statistics (`None`), so a
//! failed measurement never turns into a plausible number.

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub runs: usize,
    /// Middle sample, or the mean of the two middle samples for an even count.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stats {
    /// Statistics of `samples`; `None` when there are none or one is NaN.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            runs: n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_odd_count() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).unwrap();
        assert_eq!(
            s,
            Stats {
                runs: 5,
                median: 3.0,
                min: 1.0,
                max: 5.0
            }
        );
    }

    #[test]
    fn stats_even_count_averages_the_middle_pair() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.runs, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn stats_single_and_empty() {
        let s = Stats::of(&[0.75]).unwrap();
        assert_eq!((s.runs, s.median, s.min, s.max), (1, 0.75, 0.75, 0.75));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }
}
