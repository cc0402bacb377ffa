//! Readers for /proc: RSS, CPU time of a process, thread and the whole machine.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) fn unix_secs() -> u64 {
    now_ns() / 1_000_000_000
}

/// VmRSS of a process in KiB.
pub(crate) fn rss_kb(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime+stime in clock ticks (USER_HZ = 100 on Linux) from /proc/{pid}/stat.
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sum of on-CPU nanoseconds of the process's live threads (/proc/PID/task/*/schedstat).
pub(crate) fn cpu_sched_ns(pid: &str) -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let p = e.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// On-CPU nanoseconds of the calling thread.
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
pub(crate) fn machine_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let l = s.lines().next().unwrap_or("");
    let v: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A snapshot of the server processes' CPU use plus the machine's.
#[derive(Clone, Debug, Default)]
pub(crate) struct CpuSnap {
    /// utime+stime ticks, summed over the server processes.
    pub(crate) ticks: u64,
    /// schedstat nanoseconds, summed over the server processes.
    pub(crate) sched_ns: u64,
    pub(crate) machine_busy: u64,
    pub(crate) wall_ns: u64,
    /// utime+stime ticks of this (parent) process.
    pub(crate) own_ticks: u64,
    /// The servers' `write`/`writev` calls so far (`syscw` in /proc/PID/io). `send` and
    /// `sendmsg` are not counted there (Rust's `TcpStream::write` is a `send`), so for a
    /// server that uses them the figure is low or zero and says nothing.
    pub(crate) write_syscalls: u64,
    /// (ticks, schedstat ns) of each server process, in the order given.
    pub(crate) per_pid: Vec<(u64, u64)>,
    /// (ticks, schedstat ns) of the Redis server, when its pid is known.
    pub(crate) redis: Option<(u64, u64)>,
    /// Redis `INFO stats`, when its address is known.
    pub(crate) redis_info: Option<crate::redis::Stats>,
}

/// `syscw` of /proc/PID/io.
pub(crate) fn write_syscalls(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

/// (ticks, schedstat ns) of one process, zeros when it cannot be read.
pub(crate) fn proc_cpu(pid: &str) -> (u64, u64) {
    (cpu_ticks(pid).unwrap_or(0), cpu_sched_ns(pid).unwrap_or(0))
}

/// Snapshot of the processes `pids` (summed; one by one in `per_pid`) and of the machine.
pub(crate) fn snap(pids: &[&str]) -> CpuSnap {
    let (busy, _) = machine_jiffies();
    let per_pid: Vec<(u64, u64)> = pids.iter().map(|p| proc_cpu(p)).collect();
    CpuSnap {
        ticks: per_pid.iter().map(|p| p.0).sum(),
        sched_ns: per_pid.iter().map(|p| p.1).sum(),
        machine_busy: busy,
        wall_ns: now_ns(),
        own_ticks: cpu_ticks("self").unwrap_or(0),
        write_syscalls: pids.iter().filter_map(|p| write_syscalls(p)).sum(),
        per_pid,
        redis: None,
        redis_info: None,
    }
}

/// CPU used between two snapshots: (stat-based seconds, schedstat-based seconds, machine busy seconds).
pub(crate) fn cpu_delta(a: &CpuSnap, b: &CpuSnap) -> (f64, f64, f64) {
    (
        b.ticks.saturating_sub(a.ticks) as f64 / 100.0,
        b.sched_ns.saturating_sub(a.sched_ns) as f64 / 1e9,
        b.machine_busy.saturating_sub(a.machine_busy) as f64 / 100.0,
    )
}
