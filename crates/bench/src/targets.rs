//! The targets, each checked against what this run measured. A target whose
//! measurement did not run (or ran at other sizes) says so instead of passing.

use crate::incremental::Change;
use crate::stats::time;
use crate::suite::Results;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    NotMeasured,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "**missed**",
            Status::NotMeasured => "not measured",
        }
    }

    fn of(met: bool) -> Status {
        if met {
            Status::Met
        } else {
            Status::Missed
        }
    }
}

pub struct Verdict {
    pub target: &'static str,
    pub measured: String,
    pub status: Status,
}

impl Verdict {
    fn not_measured(target: &'static str, why: &str) -> Verdict {
        Verdict {
            target,
            measured: why.to_string(),
            status: Status::NotMeasured,
        }
    }
}

pub fn evaluate(results: &Results) -> Vec<Verdict> {
    vec![
        cold_apply(results),
        cold_start(results),
        endpoint_change(results),
        endpoint_change_ratio(results),
        dataplane(results),
        daemon_rss(results),
    ]
}

fn cold_apply(results: &Results) -> Verdict {
    const TARGET: &str = "cold apply 10k × 10 ≤ 1 s";
    match results
        .cold
        .iter()
        .find(|c| c.services == 10_000 && c.endpoints == 10)
    {
        Some(c) => Verdict {
            target: TARGET,
            measured: crate::report::apply_with_range(c),
            status: Status::of(c.apply <= 1.0),
        },
        None => Verdict::not_measured(TARGET, "10k not in --sizes"),
    }
}

fn cold_start(results: &Results) -> Verdict {
    const TARGET: &str = "cold start 44k × 6 ≤ 10 s, no soft lockup or RCU stall";
    let Some(c) = &results.cold_start else {
        return Verdict::not_measured(TARGET, "cold start not run");
    };
    let label = format!("{} × {}", c.services, c.endpoints);
    let log = results
        .kernel_log
        .iter()
        .find(|(l, _)| l.starts_with("cold start"))
        .map(|(_, news)| news);
    let (log_text, log_ok) = match log {
        Some(news) if news.readable && news.warnings.is_empty() => (
            format!("kernel log: {} new lines, no warning", news.new_lines),
            true,
        ),
        Some(news) if news.readable => (
            format!("kernel log: {} warning line(s)", news.warnings.len()),
            false,
        ),
        _ => ("kernel log unreadable".to_string(), false),
    };
    let measured = format!("{label}: {}; {log_text}", time(c.apply));
    if (c.services, c.endpoints) != (44_000, 6) {
        return Verdict::not_measured(TARGET, &format!("only {measured}"));
    }
    Verdict {
        target: TARGET,
        measured,
        status: Status::of(c.apply <= 10.0 && log_ok),
    }
}

/// Median update + sync of the endpoint changes (added and removed) at each size.
fn endpoint_medians(results: &Results) -> Vec<(usize, f64)> {
    results
        .incremental
        .iter()
        .map(|run| {
            let worst = run
                .changes
                .iter()
                .filter(|c| matches!(c.change, Change::EndpointAdded | Change::EndpointRemoved))
                .map(|c| c.whole.median)
                .fold(0.0, f64::max);
            (run.services, worst)
        })
        .collect()
}

fn endpoint_change(results: &Results) -> Verdict {
    const TARGET: &str =
        "incremental endpoint change ≤ 5 ms at every size (median update + sync, worse of added/removed)";
    let medians = endpoint_medians(results);
    if medians.is_empty() {
        return Verdict::not_measured(TARGET, "incremental not run");
    }
    let measured: Vec<String> = medians
        .iter()
        .map(|(n, t)| format!("{n}: {}", time(*t)))
        .collect();
    Verdict {
        target: TARGET,
        measured: measured.join(", "),
        status: Status::of(medians.iter().all(|(_, t)| *t <= 5e-3)),
    }
}

fn endpoint_change_ratio(results: &Results) -> Verdict {
    const TARGET: &str = "endpoint change 50k / 1k ≤ 1.5";
    let medians = endpoint_medians(results);
    let at = |n| medians.iter().find(|(s, _)| *s == n).map(|(_, t)| *t);
    match (at(1000), at(50_000)) {
        (Some(small), Some(large)) if small > 0.0 => Verdict {
            target: TARGET,
            measured: format!("{:.2} ({} / {})", large / small, time(large), time(small)),
            status: Status::of(large / small <= 1.5),
        },
        _ => Verdict::not_measured(TARGET, "needs 1000 and 50000 in --sizes"),
    }
}

fn dataplane(results: &Results) -> Verdict {
    const TARGET: &str = "dataplane connect p50 at 50k within 10 % of 100 Services";
    let Some(dataplane) = &results.dataplane else {
        return Verdict::not_measured(TARGET, "dataplane not run");
    };
    let at = |n| dataplane.rows.iter().find(|r| r.services == n);
    // The 100-Service node measured interleaved with the 50k one, when there is one.
    if let Some((large, base)) = at(50_000).and_then(|r| Some((r, r.baseline?))) {
        if base.connect.median > 0.0 {
            let ratio = large.cluster_ip.connect.median / base.connect.median;
            return Verdict {
                target: TARGET,
                measured: format!(
                    "{} vs {} on a 100-Service node, interleaved (×{ratio:.2})",
                    time(large.cluster_ip.connect.median),
                    time(base.connect.median)
                ),
                status: Status::of(ratio <= 1.10),
            };
        }
    }
    match (at(100), at(50_000)) {
        (Some(base), Some(large)) if base.cluster_ip.connect.median > 0.0 => {
            let ratio = large.cluster_ip.connect.median / base.cluster_ip.connect.median;
            Verdict {
                target: TARGET,
                measured: format!(
                    "{} vs {} (×{ratio:.2})",
                    time(large.cluster_ip.connect.median),
                    time(base.cluster_ip.connect.median)
                ),
                status: Status::of(ratio <= 1.10),
            }
        }
        _ => Verdict::not_measured(TARGET, "needs 50000 in --sizes"),
    }
}

fn daemon_rss(results: &Results) -> Verdict {
    const TARGET: &str = "daemon RSS at 50k ≤ 150 MB";
    match results.daemon.iter().find(|d| d.services == 50_000) {
        Some(d) => {
            let rss = d.rss_first_sync_mb.max(d.rss_after_changes_mb);
            Verdict {
                target: TARGET,
                measured: format!("{rss:.0} MB"),
                status: Status::of(rss <= 150.0),
            }
        }
        None => Verdict::not_measured(TARGET, "daemon not run at 50000"),
    }
}
