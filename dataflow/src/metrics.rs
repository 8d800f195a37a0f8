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

/// What the progress line reports.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Records read from the input.
    pub read: Counter,
    /// Records read again after a restart that were already in the tables, and skipped.
    pub recovered: Counter,
    pub valid: Counter,
    pub invalid: Counter,
    pub late: Counter,
    pub high_value: Counter,
    pub rapid_activity: Counter,
    pub unusual_hour: Counter,
    /// The dataflow's watermark (its frontier), µs; 0 before any.
    pub watermark: AtomicI64,
    /// The largest event time read, µs.
    pub max_event_time: AtomicI64,
    /// The lakehouse committer's state, when the job commits.
    pub commits: std::sync::OnceLock<std::sync::Arc<sink::commit::CommitStatus>>,
}

impl Metrics {
    pub fn alert(&self, rule: Rule) {
        match rule {
            Rule::HighValue => self.high_value.inc(),
            Rule::RapidActivity => self.rapid_activity.inc(),
            Rule::UnusualHour => self.unusual_hour.inc(),
        }
    }

    pub fn saw_event_time(&self, micros: i64) {
        self.max_event_time.fetch_max(micros, Ordering::Relaxed);
    }
}

/// A worker's counts since its last flush: workers count locally and add to the shared
/// [`Metrics`] once per activation, not per record, so they do not contend for its cache lines.
#[derive(Default, Debug)]
pub struct Tally {
    pub valid: u64,
    pub invalid: u64,
    pub late: u64,
    pub high_value: u64,
    pub unusual_hour: u64,
}

impl Tally {
    pub fn alert(&mut self, rule: Rule) {
        match rule {
            Rule::HighValue => self.high_value += 1,
            Rule::UnusualHour => self.unusual_hour += 1,
            // Counted where it is decided, in rapid_activity.
            Rule::RapidActivity => {}
        }
    }

    /// Adds the counts to `metrics` and starts again from zero.
    pub fn flush(&mut self, metrics: &Metrics) {
        let t = std::mem::take(self);
        for (counter, n) in [
            (&metrics.valid, t.valid),
            (&metrics.invalid, t.invalid),
            (&metrics.late, t.late),
            (&metrics.high_value, t.high_value),
            (&metrics.unusual_hour, t.unusual_hour),
        ] {
            if n > 0 {
                counter.add(n);
            }
        }
    }
}

/// Prints a progress line to stderr every `every` until dropped.
pub struct Reporter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(metrics: std::sync::Arc<Metrics>, every: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut last = (start, 0u64);
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if last.0.elapsed() >= every {
                    let read = metrics.read.get();
                    let rate = (read - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    eprintln!("{}", metrics.line(Some(rate)));
                    last = (std::time::Instant::now(), read);
                }
            }
        });
        Reporter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Metrics {
    /// `dataflow: 1200000 read (480000/s) | valid 1188000, invalid 12000, late 0 | alerts:
    /// high_value 2400, rapid_activity 310, unusual_hour 2100 | watermark 2026-…Z, 5.0 s behind`
    pub fn line(&self, rate: Option<f64>) -> String {
        let watermark = self.watermark.load(Ordering::Relaxed);
        let newest = self.max_event_time.load(Ordering::Relaxed);
        let lag = (newest - watermark) as f64 / 1e6;
        let watermark = if watermark > 0 && newest > 0 {
            format!(
                "{}, {lag:.1} s behind the newest event",
                model::EventTime::from_micros(watermark)
            )
        } else {
            "not yet".into()
        };
        let commits = self.commits.get().map_or(String::new(), |c| {
            format!(
                " | committed: {} rows, commit {}{}",
                c.rows.load(Ordering::Relaxed),
                c.committed.load(Ordering::Relaxed),
                if c.retrying.load(Ordering::Relaxed) {
                    " (waiting for the catalog or storage, retrying)"
                } else {
                    ""
                }
            )
        });
        let recovered = match self.recovered.get() {
            0 => String::new(),
            n => format!(" ({n} already committed, skipped)"),
        };
        format!(
            "dataflow: {} read{recovered}{} | valid {}, invalid {}, late {} | alerts: high_value {}, rapid_activity {}, unusual_hour {} | watermark {watermark}{commits}",
            self.read.get(),
            rate.map(|r| format!(" ({r:.0}/s)")).unwrap_or_default(),
            self.valid.get(),
            self.invalid.get(),
            self.late.get(),
            self.high_value.get(),
            self.rapid_activity.get(),
            self.unusual_hour.get(),
        )
    }
}
