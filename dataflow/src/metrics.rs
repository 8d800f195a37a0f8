//! Counters for the progress line, shared by the workers of one process.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use model::Rule;

/// A counter incremented from any worker.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Metrics {
    /// Records read from the input.
    pub read: Counter,
    pub valid: Counter,
    pub invalid: Counter,
    pub late: Counter,
    pub high_value: Counter,
    pub rapid_activity: Counter,
    pub unusual_hour: Counter,
    /// The least watermark over this process's workers, µs (0 before any).
    pub watermark: AtomicI64,
}

impl Metrics {
    pub fn alert(&self, rule: Rule) {
        match rule {
            Rule::HighValue => self.high_value.inc(),
            Rule::RapidActivity => self.rapid_activity.inc(),
            Rule::UnusualHour => self.unusual_hour.inc(),
        }
    }

    pub fn alerts(&self) -> u64 {
        self.high_value.get() + self.rapid_activity.get() + self.unusual_hour.get()
    }
}
