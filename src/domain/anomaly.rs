//! The per-user anomaly rule of ARCHITECTURE §4: Welford's running count, mean and M2 over a user's
//! stream transactions in offset order, updated with the current amount first; from the second
//! transaction on, z = (amount − mean) / sample stddev, skipped when the stddev is 0; an anomaly
//! when |z| > 3. Pure arithmetic: the sink decides which rows count (each tx_id exactly once).

/// |z| above this flags an anomaly.
pub const Z_THRESHOLD: f64 = 3.0;

/// A user's running statistics, as stored in `etl.user_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningStats {
    pub count: i64,
    pub mean: f64,
    pub m2: f64,
}

/// What one transaction's amount scored, with the statistics after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The user's transaction count including this one.
    pub count: i64,
    /// The user's mean including this one.
    pub mean: f64,
    /// `None` for a user's first transaction and while every amount so far is equal.
    pub z: Option<f64>,
    pub is_anomaly: bool,
}

impl RunningStats {
    /// Adds `amount` to the statistics and scores it against them.
    pub fn push(&mut self, amount: f64) -> Score {
        self.count += 1;
        let delta = amount - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (amount - self.mean);
        // Rounding can leave M2 a hair below zero when every amount is the same.
        self.m2 = self.m2.max(0.0);
        let z = (self.count >= 2)
            .then(|| (self.m2 / (self.count - 1) as f64).sqrt())
            .filter(|stddev| *stddev > 0.0)
            .map(|stddev| (amount - self.mean) / stddev);
        Score {
            count: self.count,
            mean: self.mean,
            z,
            is_anomaly: z.is_some_and(|z| z.abs() > Z_THRESHOLD),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_two_pass_formulas() {
        let amounts = [12.5, 80.0, -20.0, 33.3, 41.0, 7.75];
        let mut stats = RunningStats::default();
        for (i, amount) in amounts.iter().enumerate() {
            let score = stats.push(*amount);
            let seen = &amounts[..=i];
            let n = seen.len() as f64;
            let mean = seen.iter().sum::<f64>() / n;
            assert!((score.mean - mean).abs() < 1e-9);
            assert_eq!(score.count, i as i64 + 1);
            if i == 0 {
                assert_eq!(score.z, None);
            } else {
                let var = seen.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
                let z = (amount - mean) / var.sqrt();
                assert!((score.z.unwrap() - z).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn equal_amounts_have_no_z() {
        let mut stats = RunningStats::default();
        for _ in 0..5 {
            assert_eq!(stats.push(10.0).z, None);
        }
    }

    #[test]
    fn nothing_is_flagged_before_the_eleventh_transaction() {
        // |z| ≤ (n−1)/√n: with 10 transactions the bound is 2.85, with 11 it is 3.02.
        let mut stats = RunningStats::default();
        for n in 1..=10 {
            let amount = if n == 10 { 1_000_000.0 } else { 1.0 };
            assert!(!stats.push(amount).is_anomaly);
        }
        let mut stats = RunningStats::default();
        for _ in 0..10 {
            stats.push(1.0);
        }
        let score = stats.push(1_000_000.0);
        assert!(score.is_anomaly, "{score:?}");
    }
}
