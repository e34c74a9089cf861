//! Exact order statistics of measured values: percentiles as PostgreSQL's `percentile_cont`
//! computes them (linear interpolation between the closest ranks), and medians of rounds.

use serde::Serialize;

/// The `p` quantile (0.0–1.0) of `sorted` (ascending), interpolated linearly between the two
/// closest ranks; `None` for no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let weight = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}

/// The median of `values` in any order; `None` for no values.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

/// How a set of values spreads: count, mean and exact percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Distribution {
    /// `None` for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().collect();
        values.sort_by(f64::total_cmp);
        let at = |p| percentile(&values, p);
        Some(Self {
            count: values.len(),
            mean: values.iter().sum::<f64>() / values.len().max(1) as f64,
            min: at(0.0)?,
            p50: at(0.5)?,
            p90: at(0.9)?,
            p95: at(0.95)?,
            p99: at(0.99)?,
            p999: at(0.999)?,
            max: at(1.0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        // SELECT percentile_cont(p) WITHIN GROUP (ORDER BY x) FROM unnest('{1,2,3,4}'::float8[]) x
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&sorted, 0.5), Some(2.5));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&sorted, 1.0), Some(4.0));
        assert!((percentile(&sorted, 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_median_does_not_care_about_order() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([]), None);
    }

    #[test]
    fn a_distribution_of_one_to_a_thousand() {
        let d = Distribution::of((1..=1000).rev().map(f64::from)).unwrap();
        assert_eq!(d.count, 1000);
        assert_eq!((d.min, d.max), (1.0, 1000.0));
        assert_eq!(d.mean, 500.5);
        assert_eq!(d.p50, 500.5);
        assert!((d.p99 - 990.01).abs() < 1e-9, "{}", d.p99);
        assert!((d.p999 - 999.001).abs() < 1e-9, "{}", d.p999);
        assert_eq!(Distribution::of([]), None);
    }
}
