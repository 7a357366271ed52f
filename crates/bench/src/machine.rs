//! The machine a run was made on, for the report: results mean little without it.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub nproc: usize,
    pub memory_gb: f64,
    pub kernel: String,
    pub date: String,
    /// `/proc/loadavg` when the run started: other work on a shared machine shows here.
    pub load_at_start: String,
    pub load_at_end: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string()),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gb: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib * 1024.0 / 1e9),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            date: Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
            load_at_start: load(),
            load_at_end: String::new(),
        }
    }
}

pub fn load() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
