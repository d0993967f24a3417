//! CPU time and memory of a process, read from `/proc`.

use std::time::Instant;

use serde::Serialize;

/// One reading of a process's counters.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the reading was taken.
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kb: u64,
    /// Peak resident set size in KiB (`VmHWM`).
    pub hwm_kb: u64,
    /// Number of threads.
    pub threads: u64,
    /// Open file descriptors, when `/proc/PID/fd` is readable.
    pub fds: Option<u64>,
}

/// Reads `/proc/<pid>/{stat,status,fd}`; `pid` 0 means this process.
pub fn sample(pid: u32) -> Result<Sample, String> {
    let dir = if pid == 0 {
        "/proc/self".to_owned()
    } else {
        format!("/proc/{pid}")
    };
    let at = Instant::now();
    let stat =
        std::fs::read_to_string(format!("{dir}/stat")).map_err(|e| format!("{dir}/stat: {e}"))?;
    // Fields after the parenthesised command name start at field 3 (state).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{dir}/stat: unexpected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{dir}/stat: field {n} missing"))
    };
    let cpu_ticks = field(14)? + field(15)?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .map_err(|e| format!("{dir}/status: {e}"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("{dir}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    Ok(Sample {
        at,
        cpu_ticks,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
        threads: kb("Threads:"),
        fds,
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Converts clock ticks to seconds.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_second()
}

/// CPU seconds (utime + stime) between two samples.
pub fn cpu_seconds(from: &Sample, to: &Sample) -> f64 {
    to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / ticks_per_second()
}

/// CPU use between two samples as percent of one core.
pub fn cpu_percent(from: &Sample, to: &Sample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    100.0 * cpu_seconds(from, to) / wall
}

/// What the report says about one process over one interval.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// CPU use over the interval, percent of one core.
    pub cpu_pct: f64,
    /// CPU seconds over the interval.
    pub cpu_s: f64,
    /// RSS at the start, KiB.
    pub rss_start_kb: u64,
    /// RSS at the end, KiB.
    pub rss_end_kb: u64,
    /// Peak RSS at the end, KiB.
    pub hwm_kb: u64,
    /// Threads at the end.
    pub threads: u64,
    /// Open fds at the end.
    pub fds: Option<u64>,
}

/// Summarises two samples.
pub fn usage(from: &Sample, to: &Sample) -> Usage {
    Usage {
        cpu_pct: round1(cpu_percent(from, to)),
        cpu_s: (cpu_seconds(from, to) * 100.0).round() / 100.0,
        rss_start_kb: from.rss_kb,
        rss_end_kb: to.rss_kb,
        hwm_kb: to.hwm_kb,
        threads: to.threads,
        fds: to.fds,
    }
}

/// Rounds to one decimal.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Samples `pid` if given, printing (not failing on) errors.
pub fn maybe_sample(pid: Option<u32>) -> Option<Sample> {
    let pid = pid?;
    match sample(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: cannot sample server pid {pid}: {e}");
            None
        }
    }
}

/// Formats a usage line for humans.
pub fn describe(u: &Usage) -> String {
    format!(
        "cpu {:.1}% of one core ({:.2} s), RSS {:.1} -> {:.1} MiB (peak {:.1} MiB), {} threads{}",
        u.cpu_pct,
        u.cpu_s,
        u.rss_start_kb as f64 / 1024.0,
        u.rss_end_kb as f64 / 1024.0,
        u.hwm_kb as f64 / 1024.0,
        u.threads,
        u.fds.map(|f| format!(", {f} fds")).unwrap_or_default()
    )
}

/// Machine-wide CPU counters from the first line of `/proc/stat`.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Ticks spent busy (everything except idle and iowait), all cores.
    pub busy_ticks: u64,
    /// Wall time of the reading.
    pub at: Instant,
}

/// Reads the machine-wide CPU counters.
pub fn machine() -> Option<Machine> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(Machine {
        busy_ticks: total.saturating_sub(idle),
        at: Instant::now(),
    })
}

/// CPU used by everything except the listed processes, percent of one core, between two
/// machine readings; `used` are the CPU seconds of the processes to leave out. Tells whether
/// something else (a build, a test run) competed with the measurement.
pub fn other_load_percent(from: &Machine, to: &Machine, used: f64) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    let busy = ticks_to_seconds(to.busy_ticks.saturating_sub(from.busy_ticks));
    round1((100.0 * (busy - used) / wall).max(0.0))
}

/// [`other_load_percent`] over a window, leaving out the processes sampled in `pairs`
/// (start, end); `None` when the machine could not be read.
pub fn other_load<const N: usize>(
    from: &Option<Machine>,
    to: &Option<Machine>,
    pairs: [(&Option<Sample>, &Option<Sample>); N],
) -> Option<f64> {
    let (from, to) = (from.as_ref()?, to.as_ref()?);
    let used: f64 = pairs
        .iter()
        .filter_map(|(a, b)| Some(cpu_seconds(a.as_ref()?, b.as_ref()?)))
        .sum();
    Some(other_load_percent(from, to, used))
}

/// CPU and memory over one measured window: the server (when its pid is known), this process,
/// and everything else on the machine.
pub struct Window {
    /// Server usage over the window; its RSS at start is `server0`'s when given.
    pub server: Option<Usage>,
    /// This load generator's usage.
    pub bench: Option<Usage>,
    /// CPU used by other processes, % of one core.
    pub other_cpu_pct: Option<f64>,
}

/// Samples at `start`, waits until `end`, samples again. `server0` is a sample from before the
/// clients connected, so the reported starting RSS is the idle server's.
pub async fn measure_window(
    server_pid: Option<u32>,
    server0: Option<&Sample>,
    start: std::time::Instant,
    end: std::time::Instant,
) -> Window {
    tokio::time::sleep_until(start.into()).await;
    let server1 = maybe_sample(server_pid);
    let bench1 = sample(0).ok();
    let machine1 = machine();
    tokio::time::sleep_until(end.into()).await;
    let server2 = maybe_sample(server_pid);
    let bench2 = sample(0).ok();
    let machine2 = machine();
    let other_cpu_pct = other_load(
        &machine1,
        &machine2,
        [(&server1, &server2), (&bench1, &bench2)],
    );
    let server = match (&server1, &server2) {
        (Some(a), Some(b)) => {
            let mut u = usage(a, b);
            if let Some(s0) = server0 {
                u.rss_start_kb = s0.rss_kb;
            }
            Some(u)
        }
        _ => None,
    };
    let bench = match (&bench1, &bench2) {
        (Some(a), Some(b)) => Some(usage(a, b)),
        _ => None,
    };
    Window {
        server,
        bench,
        other_cpu_pct,
    }
}

/// Prints the load of other processes, with a warning when it may have skewed the numbers.
pub fn describe_other(other: Option<f64>) {
    if let Some(o) = other {
        let warn = if o > 10.0 {
            "  WARNING: something else competed for the CPU; rerun on a quiet machine"
        } else {
            ""
        };
        println!("  other processes:      {o:.1}% of one core{warn}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_self() {
        let a = sample(0).expect("self");
        assert!(a.rss_kb > 0);
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = sample(0).expect("self");
        assert!(cpu_percent(&a, &b) >= 0.0);
    }
}
