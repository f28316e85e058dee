//! A latency objective: "p99 within 20 ms", written `p99=20ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{BenchError, LatencySummary};

/// Which latency figure an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantile {
    P50,
    P90,
    P99,
    Max,
}

impl Quantile {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P90 => "p90",
            Quantile::P99 => "p99",
            Quantile::Max => "max",
        }
    }

    /// This figure of a summary, in microseconds.
    pub fn of(self, l: &LatencySummary) -> u64 {
        match self {
            Quantile::P50 => l.p50_us,
            Quantile::P90 => l.p90_us,
            Quantile::P99 => l.p99_us,
            Quantile::Max => l.max_us,
        }
    }
}

impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service level objective on latency: `quantile` at most `limit` (microsecond precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slo {
    pub quantile: Quantile,
    pub limit: Duration,
}

impl Default for Slo {
    /// p99 within 100 ms.
    fn default() -> Slo {
        Slo {
            quantile: Quantile::P99,
            limit: Duration::from_millis(100),
        }
    }
}

impl Slo {
    /// Whether the summary's figure is within the limit. A summary of no responses (all zeros)
    /// meets nothing.
    pub fn met_by(&self, l: &LatencySummary) -> bool {
        l.max_us > 0 && self.quantile.of(l) as u128 <= self.limit.as_micros()
    }
}

impl FromStr for Slo {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Slo, BenchError> {
        let err = |reason: String| BenchError::InvalidSlo {
            value: s.to_string(),
            reason,
        };
        let (q, d) = s
            .split_once('=')
            .ok_or_else(|| err("it has no `=` between the quantile and the limit".to_string()))?;
        let quantile = match q.trim().to_ascii_lowercase().as_str() {
            "p50" => Quantile::P50,
            "p90" => Quantile::P90,
            "p99" => Quantile::P99,
            "max" => Quantile::Max,
            other => {
                return Err(err(format!(
                    "unknown quantile `{other}`; expected p50, p90, p99 or max"
                )))
            }
        };
        let d = d.trim();
        let split = d
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(d.len());
        let (number, unit) = d.split_at(split);
        if number.is_empty() {
            return Err(err(format!("`{d}` does not start with a number")));
        }
        let scale_us = match unit.trim() {
            "us" | "µs" => 1.0,
            "ms" => 1_000.0,
            "s" => 1_000_000.0,
            "" => return Err(err(format!("the limit `{d}` has no unit; use us, ms or s"))),
            u => return Err(err(format!("unknown unit `{u}`; use us, ms or s"))),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| err(format!("`{number}` is not a number")))?;
        let us = (value * scale_us).round();
        if us < 1.0 {
            return Err(err("the limit must be at least 1 µs".to_string()));
        }
        let limit = Duration::from_micros(us as u64);
        if limit > crate::MAX_DURATION {
            return Err(err("the limit must be at most an hour".to_string()));
        }
        Ok(Slo { quantile, limit })
    }
}

impl fmt::Display for Slo {
    /// `p99=20ms`, `p99=1500us`, `max=2s`: parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.limit.as_micros();
        let q = self.quantile;
        if us.is_multiple_of(1_000_000) {
            write!(f, "{q}={}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{q}={}ms", us / 1_000)
        } else {
            write!(f, "{q}={us}us")
        }
    }
}

impl Serialize for Slo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Slo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Slo, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(s: &str) -> Slo {
        s.parse().unwrap()
    }

    #[test]
    fn objectives_parse_and_print_back() {
        let cases = [
            ("p99=20ms", Quantile::P99, 20_000, "p99=20ms"),
            ("p50=5ms", Quantile::P50, 5_000, "p50=5ms"),
            ("p99=1.5s", Quantile::P99, 1_500_000, "p99=1500ms"),
            ("max=200ms", Quantile::Max, 200_000, "max=200ms"),
            ("p90=250us", Quantile::P90, 250, "p90=250us"),
            ("P99 = 2s", Quantile::P99, 2_000_000, "p99=2s"),
            ("p99=0.5ms", Quantile::P99, 500, "p99=500us"),
        ];
        for (input, q, us, shown) in cases {
            let s = slo(input);
            assert_eq!(
                (s.quantile, s.limit),
                (q, Duration::from_micros(us)),
                "{input}"
            );
            assert_eq!(s.to_string(), shown);
            assert_eq!(slo(shown), s);
        }
        assert_eq!(Slo::default().to_string(), "p99=100ms");
    }

    #[test]
    fn bad_objectives_say_what_is_wrong_in_one_sentence() {
        let cases = [
            (
                "p42=5ms",
                "unknown quantile `p42`; expected p50, p90, p99 or max",
            ),
            ("p99", "it has no `=` between the quantile and the limit"),
            ("p99=20", "the limit `20` has no unit; use us, ms or s"),
            ("p99=20min", "unknown unit `min`; use us, ms or s"),
            ("p99=fast", "`fast` does not start with a number"),
            ("p99=1.2.3ms", "`1.2.3` is not a number"),
            ("p99=0ms", "the limit must be at least 1 µs"),
            ("p99=-5ms", "`-5ms` does not start with a number"),
            ("p99=2h", "unknown unit `h`; use us, ms or s"),
            ("max=7200s", "the limit must be at most an hour"),
        ];
        for (input, reason) in cases {
            let e = input.parse::<Slo>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid latency objective `{input}`: {reason} (write it like p99=20ms, p50=5ms, p99=1.5s or max=200ms)")
            );
        }
    }

    #[test]
    fn met_by_compares_the_chosen_quantile() {
        let l = LatencySummary {
            min_us: 100,
            p50_us: 1_000,
            p90_us: 5_000,
            p99_us: 20_000,
            max_us: 80_000,
            ..LatencySummary::default()
        };
        assert!(slo("p99=20ms").met_by(&l));
        assert!(!slo("p99=19ms").met_by(&l));
        assert!(slo("p50=1ms").met_by(&l));
        assert!(!slo("p90=4ms").met_by(&l));
        assert!(!slo("max=50ms").met_by(&l));
        assert!(slo("max=80ms").met_by(&l));
        assert!(
            !slo("p99=1s").met_by(&LatencySummary::default()),
            "no responses meet nothing"
        );
    }

    #[test]
    fn serde_is_the_written_form() {
        let json = serde_json::to_string(&slo("p99=20ms")).unwrap();
        assert_eq!(json, r#""p99=20ms""#);
        assert_eq!(serde_json::from_str::<Slo>(&json).unwrap(), slo("p99=20ms"));
        assert!(serde_json::from_str::<Slo>(r#""p98=1ms""#).is_err());
    }
}
