//! Summaries of repeated timings, and how times and sizes are written in the report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Order statistics of a set of samples, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `samples`; all zero when there are none.
    pub fn of(samples: &[Duration]) -> Summary {
        let mut seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        seconds.sort_by(f64::total_cmp);
        Summary {
            count: seconds.len(),
            median: percentile(&seconds, 0.5),
            p99: percentile(&seconds, 0.99),
            max: seconds.last().copied().unwrap_or(0.0),
        }
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in seconds, in the unit that suits it: `42 µs`, `2.40 ms`, `16.5 ms`, `1.95 s`.
pub fn time(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 1e-2 {
        format!("{:.2} ms", seconds * 1e3)
    } else if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{:.2} s", seconds)
    }
}

/// A count with thin groups of thousands, as the docs write them: `198,894`.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`), as MB.
pub fn proc_status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.count, 100);
        assert!((s.median - 0.050).abs() < 1e-9);
        assert!((s.p99 - 0.099).abs() < 1e-9);
        assert!((s.max - 0.100).abs() < 1e-9);
        assert_eq!(Summary::of(&[]).max, 0.0);
    }

    #[test]
    fn numbers_read_like_the_docs() {
        assert_eq!(time(42e-6), "42 µs");
        assert_eq!(time(2.4e-3), "2.40 ms");
        assert_eq!(time(0.0165), "16.5 ms");
        assert_eq!(time(1.95), "1.95 s");
        assert_eq!(count(198_894), "198,894");
        assert_eq!(count(500), "500");
        assert_eq!(count(1_000_000), "1,000,000");
    }
}
