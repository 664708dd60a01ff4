//! A token bucket shared by any number of transfers (clone the `RateLimit`).
//!
//! `take(n)` never refuses: it debits `n` and returns how long the caller must wait before its
//! *next* op so the long-run rate holds. Debt instead of refusal lets a chunk larger than the
//! bucket pass, and keeps one lock acquisition per op.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimit {
    inner: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `bytes_per_sec` sustained, with bursts up to `burst` bytes.
    pub fn new(bytes_per_sec: u64, burst: u64) -> RateLimit {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = burst.max(1) as f64;
        RateLimit { inner: Arc::new(Mutex::new(Bucket { rate, burst, tokens: burst, last: Instant::now() })) }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rate as u64
    }

    /// Debits `n` bytes; returns the wait before the next op may start.
    pub fn take(&self, n: u64) -> Duration {
        self.take_at(n, Instant::now())
    }

    fn take_at(&self, n: u64, now: Instant) -> Duration {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + dt * b.rate).min(b.burst);
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / b.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_turns_into_wait_at_the_configured_rate() {
        let rl = RateLimit::new(1000, 100);
        let t0 = Instant::now();
        assert_eq!(rl.take_at(100, t0), Duration::ZERO);
        // 500 bytes more with an empty bucket: half a second of debt.
        let w = rl.take_at(500, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        // A second later the debt is repaid and 100 tokens of burst cap the refill.
        let w = rl.take_at(0, t0 + Duration::from_secs(2));
        assert_eq!(w, Duration::ZERO);
        let w = rl.take_at(200, t0 + Duration::from_secs(2));
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn shared_between_clones() {
        let a = RateLimit::new(1000, 1000);
        let b = a.clone();
        let t0 = Instant::now();
        assert_eq!(a.take_at(1000, t0), Duration::ZERO);
        assert!(b.take_at(1000, t0) >= Duration::from_millis(999));
    }
}
