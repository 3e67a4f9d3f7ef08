//! Counters and latency histograms written by one thread and read by any (the metrics page, the
//! stats log): an update is a plain load and store, no locked instruction. The fan-out's counters
//! ([`crate::fanout::stats`]) and the NATS link's ([`crate::nats`]) are built from these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called from the owning thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge. Owning thread only.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Subtracts `n` (gauges). Owning thread only.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A fixed-bucket histogram (seconds) written by one thread, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len()],
    count: Counter,
    sum_ns: Counter,
}

/// Upper bounds of the histogram buckets, seconds (a `+Inf` bucket is implied).
pub const BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

impl Histogram {
    /// Records one observation. Owning thread only.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].add(1);
        }
        self.count.add(1);
        self.sum_ns.add(d.as_nanos() as u64);
    }

    /// (cumulative count per bucket, count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut acc = 0;
        let cumulative = self.buckets.iter().map(|b| {
            acc += b.get();
            acc
        });
        (
            cumulative.collect(),
            self.count.get(),
            self.sum_ns.get() as f64 / 1e9,
        )
    }
}
