//! Latency histograms, send-time logs and result formatting.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks: 10 minutes in µs (larger values saturate).
const MAX_US: u64 = 600_000_000;

/// A latency histogram in µs, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

static BASE: OnceLock<Instant> = OnceLock::new();

/// Process-wide time origin for µs timestamps.
pub fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// µs since [`base`] of an instant.
pub fn us_of(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_micros() as u64
}

/// The timetable every client of a measured run follows, fixed once all are synced: sending
/// starts at `start`, the window `measure_start..measure_end` is measured (after a warm-up),
/// and everything stops by `deadline` (after a drain).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// When the clients start sending.
    pub start: Instant,
    /// Start of the measured window.
    pub measure_start: Instant,
    /// `measure_start` in µs since [`base`].
    pub measure_start_us: u64,
    /// End of the measured window.
    pub measure_end: Instant,
    /// `measure_end` in µs since [`base`].
    pub measure_end_us: u64,
    /// When clients give up waiting for what is still in flight.
    pub deadline: Instant,
}

impl Plan {
    /// A plan starting `lead` from now, with `warmup`, `duration` and `drain` in seconds.
    pub fn new(lead: Duration, warmup: f64, duration: f64, drain: f64) -> Plan {
        let start = Instant::now() + lead;
        let measure_start = start + Duration::from_secs_f64(warmup);
        let measure_end = measure_start + Duration::from_secs_f64(duration);
        Plan {
            start,
            measure_start,
            measure_start_us: us_of(measure_start),
            measure_end,
            measure_end_us: us_of(measure_end),
            deadline: measure_end + Duration::from_secs_f64(drain),
        }
    }

    /// Whether a send at `t_us` (µs since [`base`]) falls in the measured window.
    pub fn in_window(&self, t_us: u64) -> bool {
        t_us >= self.measure_start_us && t_us < self.measure_end_us
    }
}

/// µs since [`base`], now.
pub fn now_us() -> u64 {
    us_of(Instant::now())
}

const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const TAG_MASK: u64 = (1 << (64 - TIME_BITS)) - 1;

/// Send times of one client's updates, indexed by clock, shared with the tasks that receive them.
///
/// A ring of `2^bits` slots; each slot packs the send time (40 bits of µs) with a tag of the
/// clock's high bits, so a lookup of a clock whose slot was reused returns `None` instead of a
/// wrong time. Lock-free: one writer, many readers.
pub struct SendLog {
    slots: Box<[AtomicU64]>,
    bits: u32,
}

impl SendLog {
    /// A log with room for at least `capacity` clocks before slots are reused.
    pub fn new(capacity: usize) -> Self {
        let size = capacity.max(2).next_power_of_two();
        SendLog {
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            bits: size.trailing_zeros(),
        }
    }

    fn tag(&self, clock: u32) -> u64 {
        ((u64::from(clock) >> self.bits) + 1) & TAG_MASK
    }

    fn slot(&self, clock: u32) -> &AtomicU64 {
        &self.slots[clock as usize & (self.slots.len() - 1)]
    }

    /// Records that `clock` was sent at `t_us`.
    pub fn record(&self, clock: u32, t_us: u64) {
        let v = (self.tag(clock) << TIME_BITS) | (t_us & TIME_MASK);
        self.slot(clock).store(v, Ordering::Release);
    }

    /// The send time of `clock`, if still in the ring.
    pub fn get(&self, clock: u32) -> Option<u64> {
        let v = self.slot(clock).load(Ordering::Acquire);
        (v >> TIME_BITS == self.tag(clock)).then_some(v & TIME_MASK)
    }
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

impl Latency {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean().round() as u64,
        }
    }

    /// One line for humans, in ms.
    pub fn describe(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// Prints the machine-readable result: exactly one line of JSON, last on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot serialise result: {e}"),
    }
}

/// splitmix64: reproducible random points without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_log_rejects_reused_slots() {
        let log = SendLog::new(4);
        log.record(1, 100);
        assert_eq!(log.get(1), Some(100));
        assert_eq!(log.get(5), None);
        log.record(5, 200);
        assert_eq!(log.get(1), None);
        assert_eq!(log.get(5), Some(200));
        assert_eq!(log.get(2), None);
    }
}
