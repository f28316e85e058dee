use serde::{Deserialize, Serialize};

use crate::BenchError;

/// A summary of N samples of one quantity (seconds, bytes, requests per second ...).
/// The raw samples are kept so that a report can be re-summarised or re-plotted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    /// Summarises samples; the median of an even count is the mean of the two middle values.
    /// Fails on an empty slice or a sample that is not a finite number.
    pub fn from_samples(samples: &[f64]) -> Result<Stat, BenchError> {
        let err = |reason: String| BenchError::InvalidSamples {
            what: "samples".to_string(),
            reason,
        };
        if samples.is_empty() {
            return Err(err("there are no samples".to_string()));
        }
        if let Some((i, v)) = samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(err(format!("sample {} is {v}, not a finite number", i + 1)));
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Ok(Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            mean: sorted.iter().sum::<f64>() / n as f64,
            samples: samples.to_vec(),
        })
    }

    /// A single measurement.
    pub fn single(value: f64) -> Result<Stat, BenchError> {
        Stat::from_samples(&[value])
    }

    /// `from_samples` with `what` named in the error, e.g. "launch-to-ready of qemu".
    pub fn of(what: &str, samples: &[f64]) -> Result<Stat, BenchError> {
        Stat::from_samples(samples).map_err(|e| match e {
            BenchError::InvalidSamples { reason, .. } => BenchError::InvalidSamples {
                what: what.to_string(),
                reason,
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_median_is_the_middle_value() {
        let s = Stat::from_samples(&[3.0, 1.0, 2.0, 10.0, 0.5]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 0.5, 10.0));
        assert_eq!(s.mean, 16.5 / 5.0);
        assert_eq!(
            s.samples,
            vec![3.0, 1.0, 2.0, 10.0, 0.5],
            "samples keep their order"
        );
    }

    #[test]
    fn even_count_median_is_the_mean_of_the_middle_two() {
        let s = Stat::from_samples(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(Stat::single(7.0).unwrap().median, 7.0);
    }

    #[test]
    fn empty_and_non_finite_samples_are_refused_with_a_reason() {
        assert_eq!(
            Stat::from_samples(&[]).unwrap_err().to_string(),
            "cannot summarise samples: there are no samples"
        );
        assert_eq!(
            Stat::of("launch-to-ready of qemu", &[1.0, f64::NAN])
                .unwrap_err()
                .to_string(),
            "cannot summarise launch-to-ready of qemu: sample 2 is NaN, not a finite number"
        );
        assert!(Stat::from_samples(&[f64::INFINITY]).is_err());
    }
}
