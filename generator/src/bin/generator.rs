//! `generator`: synthetic card transactions to Kafka, standard output or a file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use generator::run::{self, Destination, Settings};
use generator::GeneratorConfig;

/// Generates synthetic card transactions, with a configured share of suspicious patterns
/// (high values, bursts of rapid activity, night hours) and of invalid records.
///
/// Examples:
///   generator --seed 7 --count 1000 --output stdout      # the same 1000 records every time
///   generator --brokers 127.0.0.1:9092 --rate 5000       # to Kafka, until Ctrl-C
///   generator --seed 1 --count 1000000 --rate 0 --output records.jsonl
///
/// Settings come from the config file (hot-reloaded: edit it while this runs); flags win.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The config file. The default one is optional: built-in defaults apply without it.
    #[arg(
        long,
        env = "GENERATOR_CONFIG",
        default_value = "config/generator.yaml"
    )]
    config: PathBuf,

    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092. Without them, output goes to stdout.
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,

    /// The topic to produce to.
    #[arg(long, default_value = "raw-transactions")]
    topic: String,

    /// `kafka`, `stdout`, or a file path for JSON lines [default: kafka with --brokers, else stdout]
    #[arg(long)]
    output: Option<String>,

    /// Records per second; 0 = as fast as possible [default: the config file's `rate`]
    #[arg(long)]
    rate: Option<u64>,

    /// Seed the randomness and use the config's simulated clock: the same seed, count and
    /// config give byte-identical output.
    #[arg(long)]
    seed: Option<u64>,

    /// Stop after this many records, all delivered [default: run until Ctrl-C]
    #[arg(long)]
    count: Option<u64>,

    /// Extra librdkafka producer property, repeatable, e.g. -X compression.type=gzip
    #[arg(short = 'X', long = "kafka-option", value_name = "KEY=VALUE", value_parser = key_value)]
    kafka_options: Vec<(String, String)>,

    /// Seconds to keep trying to reach the broker at start before giving up.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,

    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 2)]
    progress: u64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    let args = Args::parse();

    // The default config file is optional so that the binary runs from any directory; a file
    // named explicitly must exist.
    let explicit = args.config != std::path::Path::new("config/generator.yaml");
    let config = if args.config.exists() || explicit {
        GeneratorConfig::load(&args.config)?
    } else {
        tracing::info!("no {} here: using built-in defaults", args.config.display());
        GeneratorConfig::default()
    };

    let destination = match (args.output.as_deref(), &args.brokers) {
        (None | Some("kafka"), Some(brokers)) => Destination::Kafka {
            brokers: brokers.clone(),
            topic: args.topic.clone(),
            options: args.kafka_options.clone(),
            connect_timeout: Duration::from_secs(args.connect_timeout),
        },
        (Some("kafka"), None) => bail!("--output kafka needs --brokers (or KAFKA_BROKERS)"),
        (None | Some("stdout") | Some("-"), _) => Destination::Stdout,
        (Some(path), _) => Destination::File(path.into()),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    run::run(
        Settings {
            config_path: args.config,
            config,
            rate_override: args.rate,
            seed: args.seed,
            count: args.count,
            destination,
            progress: (args.progress > 0).then(|| Duration::from_secs(args.progress)),
        },
        stop,
    )?;
    Ok(())
}
