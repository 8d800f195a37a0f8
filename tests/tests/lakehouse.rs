//! The lakehouse end to end on the real broker: the generator's records in, `dataflow
//! --until-caught-up`, then the three tables read back (iceberg-rust, pyiceberg, DuckDB) and
//! compared with the input; the same after SIGKILLs at random moments, and through a catalog
//! outage.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
use e2e::{
    bin, brokers, create_topic, read_all, read_tables, row_texts, succeed, temp_file, unique_topic,
};
use model::{validate, Rules, Transaction};
use rand::{Rng, SeedableRng};

const COUNT: usize = 1_000_000;

/// Every pattern and 2 % invalid records, over enough accounts for bursts to be rare.
const GENERATOR_CONFIG: &str = "accounts: 20000\ninvalid: {share: 0.02}\npatterns: {high_value: 0.005, night: 0.01, bursts: {share: 0.005}}\n";

/// The input, produced once for all the tests of this file.
struct Input {
    topic: String,
    /// Valid records by (partition, offset).
    valid: BTreeMap<(i32, i64), Transaction>,
    /// Invalid records' (partition, offset).
    invalid: BTreeSet<(i32, i64)>,
    /// Each partition's end offset.
    ends: BTreeMap<i32, i64>,
}

fn input() -> &'static Input {
    static INPUT: OnceLock<Input> = OnceLock::new();
    INPUT.get_or_init(|| {
        let topic = unique_topic("e2e-lakehouse");
        create_topic(&topic, 4);
        create_topic(&format!("{topic}-alerts"), 2);
        create_topic(&format!("{topic}-dead"), 2);
        let (_dir, config) = temp_file("generator.yaml", GENERATOR_CONFIG);
        let status = bin("generator")
            .args(["--brokers", brokers(), "--topic", &topic])
            .args(["--config", config.to_str().unwrap()])
            .args(["--seed", "5", "--count", &COUNT.to_string(), "--rate", "0"])
            .args(["--progress", "0"])
            .status()
            .unwrap();
        assert!(status.success());
        let rules = Rules::default();
        let mut valid = BTreeMap::new();
        let mut invalid = BTreeSet::new();
        let mut ends = BTreeMap::new();
        for c in read_all(&topic) {
            match validate(&c.value, &rules) {
                Ok(t) => {
                    valid.insert((c.partition, c.offset), t);
                }
                Err(_) => {
                    invalid.insert((c.partition, c.offset));
                }
            }
            ends.insert(c.partition, c.offset + 1);
        }
        assert_eq!(valid.len() + invalid.len(), COUNT);
        assert!(!invalid.is_empty());
        Input {
            topic,
            valid,
            invalid,
            ends,
        }
    })
}

/// `dataflow` over the input into `warehouse`, until caught up.
fn dataflow(warehouse: &Path, extra: &[&str]) -> Command {
    let input = input();
    let mut c = bin("dataflow");
    c.args(["--brokers", brokers(), "--input-topic", &input.topic])
        .args(["--alerts-topic", &format!("{}-alerts", input.topic)])
        .args(["--dead-letter-topic", &format!("{}-dead", input.topic)])
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--until-caught-up", "--progress", "0", "-w", "2"])
        .args(extra);
    c
}

fn run_to_the_end(warehouse: &Path, extra: &[&str]) -> String {
    let out = dataflow(warehouse, extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dataflow failed: {stderr}");
    stderr
}

/// The rows of the transactions table by (kafka_partition, kafka_offset), as the values of the
/// Transaction they must equal, checking that no (partition, offset) is there twice.
fn transactions_by_offset(tables: &e2e::Tables) -> BTreeMap<(i32, i64), String> {
    let mut rows = BTreeMap::new();
    for b in &tables.transactions {
        let col = |n: &str| b.column_by_name(n).unwrap();
        let s = |n: &str, i: usize| {
            let a = col(n).as_string::<i32>();
            a.is_valid(i).then(|| a.value(i).to_owned())
        };
        let amounts = col("amount").as_primitive::<Decimal128Type>();
        let times = col("event_time").as_primitive::<TimestampMicrosecondType>();
        let partitions = col("kafka_partition").as_primitive::<Int32Type>();
        let offsets = col("kafka_offset").as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let text = format!(
                "{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
                s("transaction_id", i),
                s("account_id", i),
                amounts.value(i),
                s("currency", i),
                s("merchant_id", i),
                s("merchant_category", i),
                s("transaction_type", i),
                s("channel", i),
                s("country", i),
                s("city", i),
                times.value(i),
            );
            let at = (partitions.value(i), offsets.value(i));
            assert!(
                rows.insert(at, text).is_none(),
                "{at:?} is in the table twice"
            );
        }
    }
    rows
}

fn expected_text(t: &Transaction) -> String {
    let s = |v: &str| Some(v.to_owned());
    format!(
        "{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        s(&t.transaction_id.to_string()),
        s(&t.account_id.to_string()),
        t.amount.cents(),
        s(t.currency.as_str()),
        s(&t.merchant_id),
        t.merchant_category_str().map(str::to_owned),
        s(t.transaction_type.as_str()),
        s(t.channel.as_str()),
        t.country_str().map(str::to_owned),
        t.city.clone(),
        t.event_time.as_micros(),
    )
}

#[test]
fn every_record_lands_once_with_its_values_and_other_engines_read_the_same() {
    let input = input();
    let warehouse = tempfile::tempdir().unwrap();
    run_to_the_end(warehouse.path(), &[]);
    let tables = read_tables(warehouse.path());

    // transactions: every valid record once, with the values the generator made.
    let rows = transactions_by_offset(&tables);
    assert_eq!(rows.len(), input.valid.len(), "one row per valid record");
    for (at, t) in &input.valid {
        let row = rows
            .get(at)
            .unwrap_or_else(|| panic!("valid record {at:?} missing"));
        assert_eq!(row, &expected_text(t), "the row of {at:?}");
    }

    // dead_letters: every invalid record once.
    let mut dead = BTreeSet::new();
    for b in &tables.dead_letters {
        let p = b
            .column_by_name("source_partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        let o = b
            .column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(dead.insert((p.value(i), o.value(i))), "a dead letter twice");
        }
    }
    assert_eq!(dead, input.invalid);

    // alerts: each once, the same as on the alerts topic, each of a stored transaction.
    let ids: Vec<String> = row_texts(&tables.alerts, &[])
        .iter()
        .map(|r| r.split('\u{1f}').next().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an alert twice");
    let topic: BTreeSet<String> = read_all(&format!("{}-alerts", input.topic))
        .iter()
        .map(|c| {
            let v: serde_json::Value = serde_json::from_slice(&c.value).unwrap();
            v["alert_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(topic.len() > 100, "the input raises alerts");
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), topic);

    // The snapshots record where the input ends.
    let key = format!("finstream.offsets.{}", input.topic);
    for summary in &tables.summaries {
        let v: serde_json::Value = serde_json::from_str(&summary[&key]).unwrap();
        for (p, end) in &input.ends {
            assert_eq!(v["position"]["partitions"][p.to_string()]["through"], *end);
            assert_eq!(v["position"]["partitions"][p.to_string()]["resume"], *end);
        }
    }

    // pyiceberg (the same SQLite catalog) and DuckDB (the files of the same snapshot), before
    // and after a compaction: our replace snapshots read the same in another implementation.
    let interop = || {
        let out = Command::new("python3")
            .arg(e2e::root().join("tests/interop/read_tables.py"))
            .arg(warehouse.path().join("catalog.db"))
            .arg(warehouse.path())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let cents: i64 = input.valid.values().map(|t| t.amount.cents()).sum();
    let sum = format!("{}.{:02}", cents / 100, cents % 100);
    let before = interop();
    succeed(
        bin("query")
            .arg("--warehouse")
            .arg(warehouse.path())
            .arg("compact"),
    );
    let after = interop();
    for other in [&before, &after] {
        let tx = &other["transactions"];
        assert_eq!(tx["pyiceberg_rows"], input.valid.len());
        assert_eq!(tx["duckdb_rows"], input.valid.len());
        assert_eq!(tx["pyiceberg_distinct_offsets"], input.valid.len());
        assert_eq!(tx["pyiceberg_amount_sum"], sum);
        assert_eq!(tx["duckdb_amount_sum"], sum);
        assert_eq!(other["dead_letters"]["pyiceberg_rows"], input.invalid.len());
        assert_eq!(other["dead_letters"]["duckdb_rows"], input.invalid.len());
        assert_eq!(other["alerts"]["pyiceberg_rows"], ids.len());
        assert_eq!(other["alerts"]["pyiceberg_distinct_ids"], ids.len());
        assert_eq!(other["alerts"]["duckdb_rows"], ids.len());
    }
    for t in ["transactions", "alerts", "dead_letters"] {
        let files = |v: &serde_json::Value| v[t]["files"].as_u64().unwrap();
        assert!(files(&after) < files(&before), "{t}: {before} then {after}");
    }
}

/// How many snapshots the warehouse's `transactions` table has (its manifest lists).
fn snapshots(warehouse: &Path) -> usize {
    std::fs::read_dir(warehouse.join("finance/transactions/metadata")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
            .count()
    })
}

/// The columns two runs over the same input may differ in: wall-clock times.
const WALL_CLOCK: &[&str] = &["ingested_at", "detected_at", "received_at"];

#[test]
fn sigkill_at_twenty_random_moments_changes_no_row() {
    let clean = tempfile::tempdir().unwrap();
    run_to_the_end(clean.path(), &["--commit-interval", "2"]);

    let crashed = tempfile::tempdir().unwrap();
    let seed = std::process::id() as u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Half the kills come at a random moment of the run, half at a random moment after the
    // run's first commit: so some always land between commits, however slow the start.
    let mut between_commits = 0;
    for kill in 0..20 {
        let before = snapshots(crashed.path());
        let mut child = dataflow(crashed.path(), &["--commit-interval", "2"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kill % 2 == 1 {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while snapshots(crashed.path()) == before
                && child.try_wait().unwrap().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let after = Duration::from_millis(if kill % 2 == 1 {
            rng.random_range(0..1500)
        } else {
            rng.random_range(50..3000)
        });
        std::thread::sleep(after);
        let ended = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !ended && snapshots(crashed.path()) > before {
            between_commits += 1;
        }
        eprintln!("kill {kill} after {after:?} (seed {seed}): {status}");
    }
    assert!(
        between_commits > 0,
        "no run was killed after committing (seed {seed})"
    );
    run_to_the_end(crashed.path(), &["--commit-interval", "2"]);

    let (a, b) = (read_tables(clean.path()), read_tables(crashed.path()));
    for (name, x, y) in [
        ("transactions", &a.transactions, &b.transactions),
        ("alerts", &a.alerts, &b.alerts),
        ("dead_letters", &a.dead_letters, &b.dead_letters),
    ] {
        let (x, y) = (row_texts(x, WALL_CLOCK), row_texts(y, WALL_CLOCK));
        assert!(!x.is_empty());
        let first_difference = x.iter().zip(&y).position(|(r, s)| r != s);
        assert!(
            x.len() == y.len() && first_difference.is_none(),
            "{name} differs after the crashes (seed {seed}): {} rows against {}, first difference {:?}",
            x.len(),
            y.len(),
            first_difference.map(|i| (&x[i], &y[i]))
        );
    }
}

#[test]
fn a_locked_catalog_delays_commits_and_loses_nothing() {
    let input = input();
    let warehouse = tempfile::tempdir().unwrap();
    let mut child = dataflow(warehouse.path(), &["--commit-interval", "1"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it has committed (so its catalog is open), hold the SQLite catalog's write lock for
    // longer than its busy timeout. A fixed wait could land before the catalog is open, or
    // after the run, on a machine busier or quieter than expected.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while snapshots(warehouse.path()) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the dataflow ended before its first commit"
        );
        assert!(std::time::Instant::now() < deadline, "no commit in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(12)\n\
             c.execute('ROLLBACK')\n",
        ])
        .arg(warehouse.path().join("catalog.db"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let out = child.wait_with_output().unwrap();
    assert!(locker.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("trying again"),
        "no commit waited: {stderr}"
    );

    let tables = read_tables(warehouse.path());
    let rows = transactions_by_offset(&tables);
    assert_eq!(rows.len(), input.valid.len());
    assert!(input.valid.keys().all(|k| rows.contains_key(k)));
    let dead: usize = tables.dead_letters.iter().map(|b| b.num_rows()).sum();
    assert_eq!(dead, input.invalid.len());
}
