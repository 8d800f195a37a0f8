//! `dataflow`: the stream processor. Thin: flags in, [`dataflow::graph::run`] out.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use dataflow::embedded::GeneratorPartition;
use dataflow::emit::{Emitter, Terminal};
use dataflow::graph::{run, Settings};
use dataflow::lakehouse::Lakehouse;
use dataflow::metrics::{Metrics, Reporter};
use dataflow::progress::Position;
use dataflow::rules_feed::RulesVersion;
use dataflow::source::{assigned, Partition, SourceConfig};
use generator::GeneratorConfig;
use iceberg::expr::Reference;
use iceberg::spec::Datum;
use model::Rules;
use sink::catalog::CatalogConfig;
use sink::commit::Committer;
use sink::schema::Table;

/// The stream processor: validates card transactions, dead-letters the invalid ones and
/// raises fraud alerts (high_value, rapid_activity, unusual_hour) in event time.
///
/// Without --brokers it runs the embedded default: the generator in-process as its source
/// (seeded, deterministic), alerts as JSON lines on stdout and a progress line on stderr:
///
///   dataflow                                  # runs until Ctrl-C, at the generator's rate
///   dataflow --rate 0 --count 5000000 -w 2    # as fast as possible, then stop
///
/// The rules file is hot-reloaded: edit it while this runs.
///
/// A job can span processes (timely's cluster): start each with the same -n and --hostfile
/// and its own -p, e.g. on one machine:
///   dataflow -w 2 -n 2 -p 0 --hostfile hosts.txt & dataflow -w 2 -n 2 -p 1 --hostfile hosts.txt
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Worker threads per process [default: the number of CPUs]
    #[arg(short = 'w', long)]
    workers: Option<usize>,

    /// Processes in the job (timely cluster).
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,

    /// This process's index, 0 to processes - 1.
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,

    /// A file of host:port lines, one per process, in process order [default: localhost from
    /// port 2101]
    #[arg(long)]
    hostfile: Option<PathBuf>,

    /// Kafka bootstrap servers. Without them, the embedded generator is the source.
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,

    /// The input topic (also named in dead letters' `source`).
    #[arg(long, default_value = "raw-transactions")]
    input_topic: String,

    /// The topic alerts are produced to (keyed by account).
    #[arg(long, default_value = "alerts")]
    alerts_topic: String,

    /// The topic dead letters are produced to (keyed by the input record's key).
    #[arg(long, default_value = "dead-letter")]
    dead_letter_topic: String,

    /// Seconds to keep trying to reach the broker and the input topic at start.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,

    /// The rules file, hot-reloaded.
    #[arg(long, env = "RULES_FILE", default_value = "config/alerting-rules.yaml")]
    rules: PathBuf,

    /// Stop after everything in the input at start has been processed and emitted (embedded:
    /// after --count records).
    #[arg(long)]
    until_caught_up: bool,

    /// Embedded source: the seed of the in-process generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Embedded source: records to generate in all [default: no end]
    #[arg(long)]
    count: Option<u64>,

    /// Embedded source: records per second in all; 0 = as fast as possible [default: the
    /// generator config's rate]
    #[arg(long)]
    rate: Option<u64>,

    /// Embedded source: how many partitions the generated stream has (the result depends on
    /// this, never on the number of workers).
    #[arg(long, default_value_t = 4)]
    partitions: i32,

    /// Embedded source: the generator's config file (optional).
    #[arg(
        long,
        env = "GENERATOR_CONFIG",
        default_value = "config/generator.yaml"
    )]
    generator_config: PathBuf,

    /// Do not print alerts on stdout (the progress line stays).
    #[arg(long)]
    quiet: bool,

    /// The Iceberg catalog: sqlite://PATH for the embedded SQL catalog, http(s)://… for a REST
    /// catalog [default: sqlite://<warehouse>/catalog.db]
    #[arg(long, env = "ICEBERG_CATALOG_URI")]
    catalog_uri: Option<String>,

    /// The catalog's name (the one other engines use for the same SQL catalog).
    #[arg(long, env = "ICEBERG_CATALOG_NAME", default_value = "lakehouse")]
    catalog_name: String,

    /// Where the tables' files go: a path, file://… or an object-store URI.
    #[arg(long, env = "ICEBERG_WAREHOUSE", default_value = "./warehouse")]
    warehouse: String,

    /// Seconds of event time per lakehouse commit: one snapshot per table each time the
    /// dataflow's frontier passes a multiple of it.
    #[arg(long, default_value_t = 10)]
    commit_interval: u64,

    /// Do not write the lakehouse (alerts and dead letters still go to Kafka or the terminal).
    #[arg(long)]
    no_lakehouse: bool,

    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 2)]
    progress: u64,
}

/// Large Rust buffers (differential's trace batches) are mapped and unmapped when freed, while
/// librdkafka's fetch buffers stay in malloc's heap: see [`dataflow::allocator`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: dataflow::allocator::MapLarge = dataflow::allocator::MapLarge;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    let args = Args::parse();

    let rules_text = model::config_file::read(&args.rules)?;
    let rules = Rules::from_yaml(&rules_text, &args.rules)?;
    let lateness = u64::from(rules.allowed_lateness_seconds) * 1_000_000;
    let settings = Settings {
        topic: args.input_topic.clone(),
        rules: RulesVersion {
            version: rules.version,
            origin: args.rules.display().to_string(),
            text: rules_text,
        },
        rules_path: Some(args.rules.clone()),
        source: SourceConfig {
            lateness,
            idle_after: Duration::from_secs(1),
            batch: 1024,
            max_lead: 2_000_000,
            commit_interval: None,
            resume: None,
        },
        lakehouse: None,
    };
    let mut settings = settings;

    if args.until_caught_up && args.brokers.is_none() && args.count.is_none() {
        bail!("--until-caught-up with the embedded source needs --count: an endless generator is never caught up");
    }
    let metrics = Arc::new(Metrics::default());
    let metrics_status = &metrics.commits;
    let input = match &args.brokers {
        Some(brokers) => Input::Kafka {
            brokers: brokers.clone(),
            topic: args.input_topic.clone(),
            partitions: dataflow::kafka::partition_count(
                brokers,
                &args.input_topic,
                Duration::from_secs(args.connect_timeout),
            )?,
            until_caught_up: args.until_caught_up,
            alerts_topic: args.alerts_topic.clone(),
            dead_letter_topic: args.dead_letter_topic.clone(),
        },
        None => {
            if args.partitions < 1 {
                bail!("--partitions must be at least 1");
            }
            let config = if args.generator_config.exists() {
                GeneratorConfig::load(&args.generator_config)?
            } else {
                GeneratorConfig::default()
            };
            Input::Embedded {
                rate: args.rate.unwrap_or(config.rate),
                config,
                seed: args.seed,
                count: args.count,
                partitions: args.partitions,
            }
        }
    };

    // The lakehouse: where the last commit left the input, and the committer (process 0).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    if !args.no_lakehouse {
        if args.commit_interval == 0 {
            bail!("--commit-interval must be at least 1 second");
        }
        let lake = open_lakehouse(&args, &input, &rules, &runtime)?;
        settings.source.commit_interval = Some(lake.commit_interval);
        settings.source.resume = lake.resume.clone();
        settings.lakehouse = Some(lake.shared);
        let status = lake
            .committer
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|c| c.status.clone());
        if let Some(status) = status {
            let _ = metrics_status.set(status);
        }
    }

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = timely_config(
        workers,
        args.processes,
        args.process,
        args.hostfile.as_deref(),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let reporter = (args.progress > 0)
        .then(|| Reporter::start(metrics.clone(), Duration::from_secs(args.progress)));
    let quiet = args.quiet;
    let started = std::time::Instant::now();

    tracing::info!(
        "{input}; {workers} workers per process, {} processes",
        args.processes
    );
    let input = Arc::new(input);
    let output_input = input.clone();
    let resume = settings.source.resume.clone();
    let committer = settings.lakehouse.as_ref().map(|l| l.committer.clone());
    let result = run(
        config,
        settings,
        move |index, peers| input.open(index, peers, resume.as_ref()),
        move |_| -> Rc<RefCell<dyn Emitter>> {
            match &*output_input {
                Input::Kafka {
                    brokers,
                    alerts_topic,
                    dead_letter_topic,
                    ..
                } => {
                    match dataflow::kafka::KafkaOutputs::new(
                        brokers,
                        alerts_topic,
                        dead_letter_topic,
                    ) {
                        Ok(k) => Rc::new(RefCell::new(k)),
                        // Creating a producer only fails on bad configuration, known at start.
                        Err(e) => panic!("{e:#}"),
                    }
                }
                Input::Embedded { .. } if quiet => Rc::new(RefCell::new(Quiet)),
                Input::Embedded { .. } => Rc::new(RefCell::new(Terminal::new())),
            }
        },
        metrics.clone(),
        stop,
    );
    // Every commit handed over is made before the job ends, also after a failure elsewhere.
    if let Some(c) = committer.and_then(|c| c.lock().expect("not poisoned").take()) {
        c.finish();
    }
    result.map_err(|e| anyhow::anyhow!("the dataflow failed: {e}"))?;
    drop(reporter);
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{}", metrics.line(Some(metrics.read.get() as f64 / secs)));
    eprintln!("dataflow: done in {secs:.1} s");
    Ok(())
}

/// Where the records come from.
enum Input {
    Kafka {
        brokers: String,
        topic: String,
        partitions: i32,
        until_caught_up: bool,
        alerts_topic: String,
        dead_letter_topic: String,
    },
    Embedded {
        config: GeneratorConfig,
        seed: u64,
        count: Option<u64>,
        rate: u64,
        partitions: i32,
    },
}

impl Input {
    /// The name the lakehouse records the input's offsets under.
    fn topic(&self) -> String {
        match self {
            Input::Kafka { topic, .. } => topic.clone(),
            Input::Embedded {
                seed, partitions, ..
            } => format!("generator-seed-{seed}-of-{partitions}"),
        }
    }

    fn partitions(&self) -> i32 {
        match self {
            Input::Kafka { partitions, .. } | Input::Embedded { partitions, .. } => *partitions,
        }
    }

    /// The partitions worker `index` of `peers` reads, from where `resume` says.
    fn open(
        &self,
        index: usize,
        peers: usize,
        resume: Option<&Position>,
    ) -> anyhow::Result<Vec<Box<dyn Partition>>> {
        match self {
            Input::Kafka {
                brokers,
                topic,
                partitions,
                until_caught_up,
                ..
            } => {
                let ids: Vec<i32> = assigned(*partitions, index, peers).collect();
                dataflow::kafka::open_partitions(brokers, topic, &ids, resume, *until_caught_up)
            }
            Input::Embedded {
                config,
                seed,
                count,
                rate,
                partitions,
            } => Ok(assigned(*partitions, index, peers)
                .map(|p| {
                    Box::new(GeneratorPartition::new(
                        config.clone(),
                        *seed,
                        p,
                        *partitions,
                        *count,
                        *rate,
                        resume
                            .and_then(|r| r.partitions.get(&p))
                            .map_or(0, |at| at.resume),
                    )) as Box<dyn Partition>
                })
                .collect()),
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Kafka {
                brokers,
                topic,
                partitions,
                until_caught_up,
                ..
            } => write!(
                f,
                "reading {topic} ({partitions} partitions) from Kafka at {brokers}{}",
                if *until_caught_up {
                    " until caught up"
                } else {
                    ""
                }
            ),
            Input::Embedded {
                seed,
                count,
                rate,
                partitions,
                ..
            } => write!(
                f,
                "embedded source: {partitions} partitions, seed {seed}, {} records, {}",
                count.map_or("endless".to_string(), |c| c.to_string()),
                if *rate == 0 {
                    "as fast as possible".to_string()
                } else {
                    format!("{rate} records/s")
                },
            ),
        }
    }
}

/// The lakehouse as this process opened it.
struct Opened {
    shared: Lakehouse,
    resume: Option<Position>,
    commit_interval: u64,
    committer: Arc<std::sync::Mutex<Option<Committer>>>,
}

/// Opens the catalog (creating the tables if need be), finishes a commit a crash interrupted,
/// and reads where the input resumes; a resumed run also reads back its last window.
fn open_lakehouse(
    args: &Args,
    input: &Input,
    rules: &Rules,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Opened> {
    let config = CatalogConfig {
        uri: args.catalog_uri.clone(),
        name: args.catalog_name.clone(),
        warehouse: args.warehouse.clone(),
    };
    let topic = input.topic();
    let commit_interval = args.commit_interval * 1_000_000;
    runtime.block_on(async {
        let catalog = sink::catalog::open(&config)
            .await
            .with_context(|| format!("opening the lakehouse catalog in {}", config.warehouse))?;
        // Process 0 commits, so it finishes an interrupted commit; the others wait for it.
        let finish = args.process == 0;
        let mut waited = 0;
        let recorded = loop {
            match sink::commit::recover(catalog.as_ref(), &topic, finish).await {
                Err(e) if e.is::<sink::commit::Unfinished>() && waited < 120 => {
                    if waited % 10 == 0 {
                        tracing::info!("{e}; waiting");
                    }
                    waited += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                other => break other?,
            }
        };
        let mut tables = Vec::new();
        for t in Table::ALL {
            tables.push(sink::catalog::load(catalog.as_ref(), t).await?);
        }
        let resume = recorded.as_ref().map(|r| r.position.clone());
        let seeds = match &resume {
            Some(p) => {
                let r = &rules.rules.rapid_activity;
                let since = p.boundary as i64 - i64::from(r.window_seconds) * 1_000_000;
                let filter = Reference::new("event_time")
                    .greater_than(Datum::timestamptz_micros(since))
                    .and(Reference::new("late").equal_to(Datum::bool(false)));
                let batches = sink::read::scan(&tables[0], None, Some(filter)).await?;
                let seeds = dataflow::lakehouse::window_seeds(&batches)?;
                let others: Vec<String> = sink::commit::topics(&tables[0])
                    .into_iter()
                    .filter(|t| *t != topic)
                    .collect();
                if !others.is_empty() {
                    tracing::warn!(
                        "these tables are also fed by {}: rapid_activity's windows resume with \
                         the transactions of every topic in the last window, so accounts that \
                         {topic} shares with them count those too (docs/commit-protocol.md)",
                        others.join(", ")
                    );
                }
                tracing::info!(
                    "resuming {topic} from commit {} (boundary {}), with {} transactions of its last window",
                    recorded.as_ref().map_or(0, |r| r.seq),
                    model::EventTime::from_micros(p.boundary as i64),
                    seeds.len()
                );
                Some(seeds)
            }
            None => None,
        };
        let committer = (args.process == 0).then(|| {
            Committer::start(
                catalog.clone(),
                runtime.handle().clone(),
                topic.clone(),
                recorded.as_ref().map_or(0, |r| r.seq),
            )
        });
        let committer = Arc::new(std::sync::Mutex::new(committer));
        Ok(Opened {
            shared: Lakehouse {
                tables: Arc::new(tables),
                runtime: runtime.handle().clone(),
                commit_interval,
                partitions: input.partitions(),
                committer: committer.clone(),
                resumed: resume.clone(),
                seeds: Arc::new(std::sync::Mutex::new(seeds)),
            },
            resume,
            commit_interval,
            committer,
        })
    })
}

/// An emitter that drops everything (the progress line still counts it).
struct Quiet;

impl Emitter for Quiet {
    fn alert(&mut self, _: &model::Alert) {}
    fn dead_letter(&mut self, _: &model::DeadLetter, _: Option<&[u8]>) {}
    fn transaction(&mut self, _: &dataflow::judge::Valid) {}
}

/// Timely's configuration from our flags (clap owns `-h`, so the host file is `--hostfile`).
fn timely_config(
    workers: usize,
    processes: usize,
    process: usize,
    hostfile: Option<&std::path::Path>,
) -> anyhow::Result<timely::Config> {
    if workers == 0 || processes == 0 || process >= processes {
        bail!("need --workers >= 1, --processes >= 1 and --process < --processes");
    }
    if processes == 1 {
        return Ok(timely::Config::process(workers));
    }
    let addresses = match hostfile {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the host file {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>(),
        None => (0..processes)
            .map(|i| format!("localhost:{}", 2101 + i))
            .collect(),
    };
    if addresses.len() != processes {
        bail!(
            "the host file lists {} hosts for {processes} processes",
            addresses.len()
        );
    }
    Ok(timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: workers,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    })
}
