//! The generator's main loop: generate, pace, send, reload the config, report progress.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use model::reload::Reloader;

use crate::config::GeneratorConfig;
use crate::generate::{Generator, Label};
use crate::output::{self, Output};

/// Where records go.
#[derive(Clone, Debug)]
pub enum Destination {
    Kafka {
        brokers: String,
        topic: String,
        /// Extra librdkafka properties.
        options: Vec<(String, String)>,
        /// How long to keep trying to reach the broker at start.
        connect_timeout: Duration,
    },
    Stdout,
    File(PathBuf),
}

/// Everything a run needs, gathered from the flags and the config file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config file, watched for changes when it exists.
    pub config_path: PathBuf,
    /// The config as loaded at start (defaults when the default file is absent).
    pub config: GeneratorConfig,
    /// `--rate`: wins over the file's `rate`, also after a reload.
    pub rate_override: Option<u64>,
    pub seed: Option<u64>,
    /// Stop after this many records (all delivered); run until stopped without.
    pub count: Option<u64>,
    pub destination: Destination,
    /// How often a progress line goes to stderr; `None` for none.
    pub progress: Option<Duration>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub invalid: u64,
    pub failed: u64,
}

/// Runs until `count` records are sent or `stop` is set, then flushes everything.
pub fn run(settings: Settings, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let mut out: Box<dyn Output> = match &settings.destination {
        Destination::Kafka {
            brokers,
            topic,
            options,
            connect_timeout,
        } => Box::new(output::Kafka::connect(
            brokers,
            topic,
            options,
            *connect_timeout,
        )?),
        Destination::Stdout => Box::new(output::Lines(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        ))),
        Destination::File(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating output file {}", path.display()))?;
            Box::new(output::Lines(std::io::BufWriter::with_capacity(
                1 << 20,
                file,
            )))
        }
    };

    let with_override = |mut c: GeneratorConfig| {
        if let Some(r) = settings.rate_override {
            c.rate = r;
        }
        c
    };
    let reloader = settings.config_path.exists().then(|| {
        Reloader::watch(
            &settings.config_path,
            Duration::from_secs(1),
            GeneratorConfig::load,
        )
    });
    let mut generator = Generator::new(with_override(settings.config.clone()), settings.seed);
    let mut pacer = Pacer::new(generator.config().rate);
    let mut progress = Progress::new(settings.progress);
    let mut summary = Summary::default();
    let mut buf = Vec::with_capacity(512);

    while settings.count.is_none_or(|c| summary.records < c) {
        // Cheap enough per record when paced; every 256 records flat out.
        if generator.config().rate > 0 || summary.records % 256 == 0 {
            if stop.load(Ordering::Relaxed) {
                tracing::info!("stopping on request");
                break;
            }
            if let Some(config) = reloader.as_ref().and_then(Reloader::latest) {
                let config = with_override(config);
                pacer = Pacer::new(config.rate);
                generator.set_config(config);
            }
        }
        let meta = generator.next_into(&mut buf);
        out.send(meta.key, &buf)?;
        summary.records += 1;
        if meta.label != Label::Valid {
            summary.invalid += 1;
        }
        if pacer.wait(summary.records) {
            out.push()?;
        }
        progress.tick(&summary, out.failed());
    }

    progress.finish(&summary);
    out.flush()?;
    summary.failed = out.failed();
    progress.done(&summary);
    Ok(summary)
}

/// Keeps to a rate: record `n` (since the last rate change) is due `n / rate` seconds after the
/// start, so short stalls are caught up instead of accumulating.
struct Pacer {
    rate: u64,
    start: Instant,
    /// The record count when this rate took effect.
    base: Option<u64>,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Pacer {
            rate,
            start: Instant::now(),
            base: None,
        }
    }

    /// Sleeps until record `n + 1` is due; says whether it slept.
    fn wait(&mut self, n: u64) -> bool {
        if self.rate == 0 {
            return false;
        }
        let base = *self.base.get_or_insert(n);
        let due = self.start + Duration::from_secs_f64((n - base) as f64 / self.rate as f64);
        let now = Instant::now();
        if due > now + Duration::from_micros(500) {
            std::thread::sleep(due - now);
            return true;
        }
        false
    }
}

/// A line on stderr every `every`: records, rate, invalid, failed deliveries.
struct Progress {
    every: Option<Duration>,
    start: Instant,
    last: Instant,
    printed: bool,
}

impl Progress {
    fn new(every: Option<Duration>) -> Self {
        let now = Instant::now();
        Progress {
            every,
            start: now,
            last: now,
            printed: false,
        }
    }

    fn tick(&mut self, s: &Summary, failed: u64) {
        let Some(every) = self.every else { return };
        // Look at the clock only every 4096 records: Instant::now is not free at 1M records/s.
        if !s.records.is_multiple_of(4096) && s.records > 1 {
            return;
        }
        let now = Instant::now();
        if now - self.last >= every {
            self.last = now;
            self.printed = true;
            self.line("generated", s, failed);
        }
    }

    fn finish(&mut self, s: &Summary) {
        if self.printed {
            self.line("generated", s, 0);
            eprintln!("generator: flushing");
        }
    }

    fn done(&self, s: &Summary) {
        if self.every.is_some() {
            self.line("done:", s, s.failed);
        }
    }

    fn line(&self, what: &str, s: &Summary, failed: u64) {
        let secs = self.start.elapsed().as_secs_f64();
        let _ = writeln!(
            std::io::stderr(),
            "generator: {what} {} records ({} invalid, {failed} failed) in {secs:.1} s, {:.0} records/s",
            s.records,
            s.invalid,
            s.records as f64 / secs.max(1e-9)
        );
    }
}
