//! Latency from a record reaching the broker to its alert on the alerts topic, per rule.
//!
//!     cargo run --release -p e2e --bin latency -- [RATE] [SECONDS] [WORKERS] [WARMUP]
//!                                                      (50000 20 2 3)
//!
//! Starts the local broker (scripts/kafka.sh) if need be, a live `dataflow` on fresh topics,
//! then the generator at RATE records/s for SECONDS with wall-clock event times. Latency is
//! the alert record's broker timestamp minus its transaction's input record's: both topics
//! use `LogAppendTime`, so each timestamp is when the broker appended the record (ms). Records produced in the first WARMUP
//! seconds are left out: until every partition has delivered its first record the watermark
//! cannot move, which is a start-up cost, not the steady state.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use e2e::{bin, brokers, create_topic, create_topic_with, delete_topics, read_all, unique_topic};

fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().map_or(50_000, |a| a.parse().expect("RATE"));
    let seconds: u64 = args.next().map_or(20, |a| a.parse().expect("SECONDS"));
    let workers = args.next().unwrap_or_else(|| "2".into());
    let warmup_ms: i64 = args.next().map_or(3, |a| a.parse::<i64>().expect("WARMUP")) * 1000;

    let topic = unique_topic("latency");
    let (alerts, dead) = (format!("{topic}-alerts"), format!("{topic}-dead"));
    let append_time = [("message.timestamp.type", "LogAppendTime")];
    create_topic_with(&topic, 4, &append_time);
    create_topic_with(&alerts, 2, &append_time);
    create_topic(&dead, 2);

    let mut dataflow = bin("dataflow")
        .args([
            "--brokers",
            brokers(),
            "--input-topic",
            &topic,
            "--alerts-topic",
            &alerts,
        ])
        .args([
            "--dead-letter-topic",
            &dead,
            "-w",
            &workers,
            "--progress",
            "5",
        ])
        .spawn()
        .expect("starting the dataflow");
    std::thread::sleep(Duration::from_secs(3));
    let status = bin("generator")
        .args(["--brokers", brokers(), "--topic", &topic, "--progress", "5"])
        .args([
            "--rate",
            &rate.to_string(),
            "--count",
            &(rate * seconds).to_string(),
        ])
        .status()
        .expect("running the generator");
    assert!(status.success());
    // Rapid-activity alerts wait for the watermark: lateness plus a step.
    std::thread::sleep(Duration::from_secs(10));
    let _ = dataflow.kill();
    let _ = dataflow.wait();

    let produced: HashMap<String, i64> = read_all(&topic)
        .into_iter()
        .filter_map(|c| {
            let v: serde_json::Value = serde_json::from_slice(&c.value).ok()?;
            Some((v["transaction_id"].as_str()?.to_owned(), c.timestamp_ms?))
        })
        .collect();
    let first = produced.values().copied().min().unwrap_or(0);
    let mut by_rule: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in read_all(&alerts) {
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        let id = v["transaction_id"].as_str().unwrap();
        if let (Some(&sent), Some(alerted)) = (produced.get(id), a.timestamp_ms) {
            if sent < first + warmup_ms {
                continue;
            }
            by_rule
                .entry(v["rule"].as_str().unwrap().to_owned())
                .or_default()
                .push(alerted - sent);
        }
    }
    println!(
        "{rate} records/s for {seconds} s, {workers} workers, the first {} s left out: broker to alert (ms)",
        warmup_ms / 1000
    );
    for (rule, mut l) in by_rule {
        l.sort();
        let q = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
        println!(
            "{rule:>15}: n={:>6}  p50={:>6}  p99={:>6}  max={:>6}",
            l.len(),
            q(0.5),
            q(0.99),
            l[l.len() - 1]
        );
    }
    delete_topics(&[&topic, &alerts, &dead]);
}
