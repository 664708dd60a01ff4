//! Per-worker counters: plain relaxed atomics written by their worker only, read by anyone as a
//! snapshot. No I/O and no locks of its own; exporters (the daemon's Prometheus endpoint, the
//! CLI's `--json`) format snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct WorkerMetrics {
    pub transfers_started: AtomicU64,
    pub transfers_ok: AtomicU64,
    pub transfers_failed: AtomicU64,
    pub bytes: AtomicU64,
    pub ops_completed: AtomicU64,
    pub ring_submitted: AtomicU64,
    pub cq_overflow: AtomicU64,
    pub active: AtomicU64,
}

/// A worker's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub transfers_started: u64,
    pub transfers_ok: u64,
    pub transfers_failed: u64,
    pub bytes: u64,
    pub ops_completed: u64,
    pub ring_submitted: u64,
    /// Completions the kernel had to hold back because the CQ was full (should stay 0).
    pub cq_overflow: u64,
    pub active: u64,
}

impl WorkerMetrics {
    pub fn snapshot(&self) -> WorkerSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerSnapshot {
            transfers_started: l(&self.transfers_started),
            transfers_ok: l(&self.transfers_ok),
            transfers_failed: l(&self.transfers_failed),
            bytes: l(&self.bytes),
            ops_completed: l(&self.ops_completed),
            ring_submitted: l(&self.ring_submitted),
            cq_overflow: l(&self.cq_overflow),
            active: l(&self.active),
        }
    }
}
