//! Connection and message limits: per-document and per-address connection counts, and a
//! per-connection message rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts live items per key and refuses past a maximum; a [`Slot`] releases on drop.
#[derive(Debug)]
pub struct Counter<K: Eq + Hash + Clone> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// One held place in a [`Counter`]; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Clone> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    /// A counter allowing `max` per key (`0` = unlimited).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Counter {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for `key`, or `None` if the key is at its maximum.
    pub fn acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.clone()).or_insert(0);
        if self.max != 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }

    /// Current count for `key`.
    pub fn count(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self
            .counter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The shortest pause a throttled connection gets: resuming for a single message at a time
/// would wake the connection once per message; 20 ms of refill lets it read a few at once.
const MIN_PAUSE: Duration = Duration::from_millis(20);

/// What the bucket says about one frame's messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Within the rate: go on reading.
    Pass,
    /// Admitted, but over the rate: stop reading the socket for this long (TCP then slows the
    /// sender down). The bucket is in debt until then.
    Pause(Duration),
    /// More messages in one frame than the whole burst allowance: the frame was already
    /// received and decoded, so pausing afterwards cannot bring that cost back to the rate.
    /// The only case closed with 4429.
    Abuse,
}

/// Token bucket: `rate` messages per second on average, bursts up to `burst`. Over the rate a
/// frame is still admitted and the bucket goes into debt; the caller stops reading until the
/// debt is repaid, so a fast sender is slowed to the rate instead of being disconnected.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket. `rate == 0` means unlimited.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate).max(1)),
            tokens: f64::from(burst.max(rate).max(1)),
            last: now,
        }
    }

    /// Takes `n` tokens for one frame of `n` messages.
    pub(crate) fn admit(&mut self, n: u32, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Pass;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let n = f64::from(n);
        if n > self.burst {
            return Verdict::Abuse;
        }
        self.tokens -= n;
        if self.tokens >= 0.0 {
            return Verdict::Pass;
        }
        // Until the debt is repaid; `n <= burst` bounds it by `burst / rate` (4 s by default).
        let repaid = Duration::from_secs_f64(-self.tokens / self.rate);
        Verdict::Pause(repaid.max(MIN_PAUSE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_refuses_past_max_and_frees_on_drop() {
        let c = Counter::<u8>::new(2);
        let a = c.acquire(1);
        let b = c.acquire(1);
        assert!(a.is_some() && b.is_some());
        assert!(c.acquire(1).is_none());
        assert!(c.acquire(2).is_some());
        drop(a);
        assert_eq!(c.count(&1), 1);
        assert!(c.acquire(1).is_some());
    }

    #[test]
    fn zero_means_unlimited() {
        let c = Counter::<u8>::new(0);
        let slots: Vec<_> = (0..100).filter_map(|_| c.acquire(1)).collect();
        assert_eq!(slots.len(), 100);
    }

    #[test]
    fn bucket_allows_burst_then_pauses_for_the_debt() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 20, t0);
        assert!((0..20).all(|_| r.admit(1, t0) == Verdict::Pass));
        // Over the rate: admitted, with a pause that repays the debt (one token at 10/s).
        let Verdict::Pause(d) = r.admit(1, t0) else {
            panic!("not paused")
        };
        assert!(d.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1));
        // After the pause the bucket has refilled past the debt.
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(r.admit(5, t1), Verdict::Pass);
        assert!(matches!(r.admit(1, t1), Verdict::Pause(_)));
        // Never shorter than MIN_PAUSE, never longer than the burst takes to refill.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(r.admit(20, t2), Verdict::Pass);
        assert_eq!(r.admit(20, t2), Verdict::Pause(Duration::from_secs(2)));
        let mut tiny = RateLimiter::new(1000, 1000, t0);
        assert_eq!(tiny.admit(1000, t0), Verdict::Pass);
        assert_eq!(tiny.admit(1, t0), Verdict::Pause(MIN_PAUSE));
    }

    #[test]
    fn only_a_frame_larger_than_the_burst_is_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 20, t0);
        assert_eq!(r.admit(21, t0), Verdict::Abuse);
        // A refused frame takes nothing from the bucket.
        assert_eq!(r.admit(20, t0), Verdict::Pass);
        let mut unlimited = RateLimiter::new(0, 0, t0);
        assert!((0..10_000).all(|_| unlimited.admit(1_000_000, t0) == Verdict::Pass));
    }
}
