//! Hot reload through the real binary (embedded source): a new threshold applies from one point
//! of event time on, on every worker; a broken file changes nothing and is logged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[derive(Debug)]
struct Seen {
    version: u64,
    event_time: String,
    amount_usd: Decimal,
}

#[test]
fn a_new_threshold_applies_from_one_point_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "version: 1\nrules: {high_value: {threshold_usd: 10000}}\n",
    )
    .unwrap();
    // No back-dated night records: they are late, and judged at the watermark, not their time.
    let generator = dir.path().join("generator.yaml");
    std::fs::write(&generator, "patterns: {high_value: 0.05, night: 0}\n").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_dataflow"))
        .arg("--no-lakehouse")
        .args([
            "--rules",
            rules.to_str().unwrap(),
            "--generator-config",
            generator.to_str().unwrap(),
        ])
        .args(["--rate", "2000", "-w", "2", "--progress", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, alerts) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["rule"] == "high_value" {
                let seen = Seen {
                    version: v["rules_version"].as_u64().unwrap(),
                    event_time: v["event_time"].as_str().unwrap().to_owned(),
                    amount_usd: v["details"]["amount_usd"].to_string().parse().unwrap(),
                };
                if tx.send((Instant::now(), seen)).is_err() {
                    return;
                }
            }
        }
    });
    let mut seen: Vec<(Instant, Seen)> = Vec::new();
    let collect_for = |d: Duration, seen: &mut Vec<(Instant, Seen)>| {
        let until = Instant::now() + d;
        while let Ok(x) = alerts.recv_timeout(until.saturating_duration_since(Instant::now())) {
            seen.push(x);
        }
    };

    collect_for(Duration::from_secs(3), &mut seen);
    assert!(
        seen.len() > 5,
        "high-value alerts under version 1: {}",
        seen.len()
    );

    // A broken file: refused, version 1 stays.
    write_atomically(
        &rules,
        "version: 2\nrules: {high_value: {threshold_usd: -5}}\n",
    );
    collect_for(Duration::from_secs(3), &mut seen);

    // A new threshold: 100 USD, so that most transactions alert.
    write_atomically(
        &rules,
        "version: 3\nrules: {high_value: {threshold_usd: 100}}\n",
    );
    let changed = Instant::now();
    // Until the first alert of version 3 (30 s at most), and a second more.
    let until = changed + Duration::from_secs(30);
    while !seen.iter().any(|(_, s)| s.version == 3) {
        match alerts.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(x) => seen.push(x),
            Err(_) => break,
        }
    }
    collect_for(Duration::from_secs(1), &mut seen);
    child.kill().unwrap();
    let _ = child.wait();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();

    assert!(
        stderr.contains("threshold_usd") && stderr.contains("refused"),
        "the broken file is logged:\n{stderr}"
    );
    assert!(
        seen.iter().all(|(_, s)| s.version != 2),
        "the refused version was never used"
    );
    let v1: Vec<&Seen> = seen
        .iter()
        .filter(|(_, s)| s.version == 1)
        .map(|(_, s)| s)
        .collect();
    let v3: Vec<&Seen> = seen
        .iter()
        .filter(|(_, s)| s.version == 3)
        .map(|(_, s)| s)
        .collect();
    assert!(
        v1.iter().all(|s| s.amount_usd > Decimal::from(10_000)),
        "version 1 alerts follow its threshold"
    );
    assert!(
        v3.iter().all(|s| s.amount_usd > Decimal::from(100)),
        "version 3 alerts follow its threshold"
    );
    assert!(
        v3.iter().any(|s| s.amount_usd <= Decimal::from(10_000)),
        "version 3 alerts on amounts version 1 let pass"
    );
    // One switch point in event time for every worker: all of version 1 before all of version 3.
    // (Canonical UTC times with six digits sort as text.)
    let last_v1 = v1.iter().map(|s| s.event_time.as_str()).max().unwrap();
    let first_v3 = v3
        .iter()
        .map(|s| s.event_time.as_str())
        .min()
        .expect("version 3 in force within 30 s");
    assert!(
        last_v1 < first_v3,
        "version 1 up to {last_v1}, version 3 from {first_v3}"
    );
    // A liveness bound, not a benchmark: the contract's 2 s plus slack for a loaded machine.
    let first_v3_at = seen.iter().find(|(_, s)| s.version == 3).unwrap().0;
    assert!(
        first_v3_at - changed < Duration::from_secs(4),
        "took {:?}",
        first_v3_at - changed
    );
}
