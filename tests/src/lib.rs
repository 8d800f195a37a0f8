//! Support for the workspace's end-to-end tests (in `tests/tests/`): the real binaries, a real
//! Kafka broker started by `scripts/kafka.sh`, and helpers to create topics and read them back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The workspace's root directory.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A binary of the workspace, built by the same `cargo test` run (in the same profile).
pub fn bin(name: &str) -> Command {
    // Tests run as target/<profile>/deps/<test>-<hash>, bench binaries as target/<profile>/<bin>;
    // the workspace's binaries sit in target/<profile>/.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("target/<profile>");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --release --workspace`",
        path.display()
    );
    let mut c = Command::new(path);
    c.current_dir(root());
    c
}

/// Runs `command` to the end and asserts it succeeded, showing its stderr if not; its output.
pub fn succeed(command: &mut Command) -> std::process::Output {
    let out = command.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The bootstrap address of a running broker: `KAFKA_BROKERS` when set, else the one
/// `scripts/kafka.sh start` runs (started here if need be; the script is idempotent).
pub fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        if let Ok(b) = std::env::var("KAFKA_BROKERS") {
            return b;
        }
        let status = Command::new(root().join("scripts/kafka.sh"))
            .arg("start")
            .status()
            .expect("running scripts/kafka.sh start");
        assert!(status.success(), "scripts/kafka.sh start failed");
        let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into());
        format!("127.0.0.1:{port}")
    })
}

/// A topic name no other test run uses.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates `topic` with `partitions` partitions and waits until it is visible.
pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_with(topic, partitions, &[]);
}

/// An admin client, the runtime to drive its requests, and their options.
fn admin() -> (
    AdminClient<DefaultClientContext>,
    tokio::runtime::Runtime,
    AdminOptions,
) {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    (admin, rt, options)
}

/// Deletes `topics` (a benchmark's, whose records would otherwise stay on the local broker).
pub fn delete_topics(topics: &[&str]) {
    let (admin, rt, options) = admin();
    let results = rt
        .block_on(admin.delete_topics(topics, &options))
        .expect("delete_topics");
    for r in results {
        if let Err((t, e)) = r {
            eprintln!("deleting topic {t}: {e}");
        }
    }
}

/// As [`create_topic`], with topic configs (`("message.timestamp.type", "LogAppendTime")`).
pub fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let (admin, rt, options) = admin();
    let results = rt
        .block_on(admin.create_topics(
            &[configs.iter().fold(
                NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )],
            &options,
        ))
        .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    let start = Instant::now();
    loop {
        if partition_count(topic) == partitions as usize {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "topic {topic} never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many partitions `topic` has (0 while the broker does not know it, or did not answer
/// within 5 s: callers poll).
pub fn partition_count(topic: &str) -> usize {
    consumer()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_or(0, |m| {
            m.topics().first().map_or(0, |t| t.partitions().len())
        })
}

/// One record read back from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The record's broker timestamp (its producer's create time), in milliseconds.
    pub timestamp_ms: Option<i64>,
}

fn consumer() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer")
}

/// Every record in `topic` at the time of the call, in partition and offset order.
pub fn read_all(topic: &str) -> Vec<Consumed> {
    let consumer = consumer();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0;
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assignment
            .add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        remaining += high - low;
        ends.insert(p, high);
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::with_capacity(remaining as usize);
    let start = Instant::now();
    while (out.len() as i64) < remaining {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "reading {topic} timed out"
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("consume");
        if m.offset() < ends[&m.partition()] {
            out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
            });
        }
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// A scratch file holding `text`, kept alive by the returned guard.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The tables as the pipeline committed them, read back through the same catalog with
/// iceberg-rust (`sink::read::scan` of each current snapshot).
pub struct Tables {
    pub transactions: Vec<RecordBatch>,
    pub alerts: Vec<RecordBatch>,
    pub dead_letters: Vec<RecordBatch>,
    /// Each table's current snapshot summary.
    pub summaries: Vec<std::collections::HashMap<String, String>>,
}

/// Reads every table of the lakehouse in `warehouse` (its default SQLite catalog).
pub fn read_tables(warehouse: &Path) -> Tables {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = sink::catalog::CatalogConfig {
            warehouse: warehouse.display().to_string(),
            ..Default::default()
        };
        let catalog = sink::catalog::open(&config).await.expect("catalog");
        let mut batches = Vec::new();
        let mut summaries = Vec::new();
        for t in sink::schema::Table::ALL {
            let table = sink::catalog::load(catalog.as_ref(), t)
                .await
                .expect("table");
            summaries.push(
                table
                    .metadata()
                    .current_snapshot()
                    .map(|s| s.summary().additional_properties.clone())
                    .unwrap_or_default(),
            );
            batches.push(sink::read::scan(&table, None, None).await.expect("scan"));
        }
        let dead_letters = batches.pop().unwrap();
        let alerts = batches.pop().unwrap();
        let transactions = batches.pop().unwrap();
        Tables {
            transactions,
            alerts,
            dead_letters,
            summaries,
        }
    })
}

/// Each row of `batches` as one text (its columns but `skip`, in order), sorted: two tables
/// hold the same rows exactly when these are equal.
pub fn row_texts(batches: &[RecordBatch], skip: &[&str]) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        let columns: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .zip(schema.fields())
            .filter(|(_, f)| !skip.contains(&f.name().as_str()))
            .map(|(c, _)| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            let mut row = String::new();
            for c in &columns {
                use std::fmt::Write as _;
                let _ = write!(row, "{}\u{1f}", c.value(i));
            }
            rows.push(row);
        }
    }
    rows.sort_unstable();
    rows
}
