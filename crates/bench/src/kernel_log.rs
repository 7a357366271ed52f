//! The kernel log around a measurement: the lines that appeared while it ran, and among them
//! the ones that mean the kernel struggled (soft lockups, RCU stalls, hung tasks, oopses).
//! A large transaction holds the nf_tables mutex for seconds; the issue asks that it never
//! trips the soft-lockup or RCU-stall detectors.

use std::process::Command;

use serde::{Deserialize, Serialize};

/// Lines that mean trouble, matched case-insensitively.
const WARNINGS: [&str; 8] = [
    "soft lockup",
    "rcu_sched",
    "rcu stall",
    "rcu: info",
    "self-detected stall",
    "hung_task",
    "blocked for more than",
    "bug:",
];

/// The log as it was when a measurement started.
pub struct Mark {
    /// `None` when `dmesg` could not be read.
    lines: Option<Vec<String>>,
}

/// What the kernel logged during a measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct News {
    /// False when `dmesg` could not be read: nothing is known.
    pub readable: bool,
    pub new_lines: usize,
    pub warnings: Vec<String>,
}

pub fn mark() -> Mark {
    Mark { lines: read() }
}

impl Mark {
    pub fn news(&self) -> News {
        let (Some(before), Some(after)) = (&self.lines, read()) else {
            return News::default();
        };
        let fresh = new_lines(before, &after);
        News {
            readable: true,
            new_lines: fresh.len(),
            warnings: fresh
                .iter()
                .filter(|line| is_warning(line))
                .map(|line| line.to_string())
                .collect(),
        }
    }
}

fn read() -> Option<Vec<String>> {
    let out = Command::new("dmesg").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
}

/// The lines of `after` past the last line of `before` (all of them if the ring buffer wrapped
/// past it).
fn new_lines<'a>(before: &[String], after: &'a [String]) -> &'a [String] {
    let Some(last) = before.last() else {
        return after;
    };
    match after.iter().rposition(|line| line == last) {
        Some(at) => &after[at + 1..],
        None => after,
    }
}

fn is_warning(line: &str) -> bool {
    let line = line.to_lowercase();
    WARNINGS.iter().any(|w| line.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn only_lines_after_the_mark_are_new() {
        let before = lines(&["[1] a", "[2] b"]);
        let after = lines(&["[1] a", "[2] b", "[3] c"]);
        assert_eq!(new_lines(&before, &after), &after[2..]);
        let wrapped = lines(&["[9] x"]);
        assert_eq!(new_lines(&before, &wrapped), &wrapped[..]);
        assert!(new_lines(&before, &before).is_empty());
    }

    #[test]
    fn lockups_and_stalls_are_warnings() {
        assert!(is_warning(
            "[ 12.3] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [nft:123]"
        ));
        assert!(is_warning(
            "[ 40.1] rcu: INFO: rcu_sched self-detected stall on CPU"
        ));
        assert!(!is_warning("[ 8145.77] idle-reclaim (81): drop_caches: 1"));
    }
}
