//! Connection and message limits: per-document and per-address connection counts, and a
//! per-connection message rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Connections per client address.
pub type AddrCounter = Counter<IpAddr>;
/// Connections per document.
pub type DocCounter = Counter<Arc<str>>;

/// Token bucket: `rate` messages per second on average, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket. `rate == 0` means unlimited.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate).max(1)),
            tokens: f64::from(burst.max(rate).max(1)),
            last: now,
        }
    }

    /// Takes `n` tokens; false if the bucket is empty (the caller is over its rate).
    pub fn allow(&mut self, n: u32, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 20, t0);
        assert!((0..20).all(|_| r.allow(1, t0)));
        assert!(!r.allow(1, t0));
        assert!(r.allow(5, t0 + Duration::from_millis(500)));
        assert!(!r.allow(1, t0 + Duration::from_millis(500)));
        let mut unlimited = RateLimiter::new(0, 0, t0);
        assert!((0..10_000).all(|_| unlimited.allow(1, t0)));
    }
}
