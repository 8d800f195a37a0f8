//! Hot reload through the real binary (embedded source): a new threshold applies from one point
//! of event time on, on every worker; a broken file changes nothing and is logged.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The running binary (embedded source, 2 000 records/s, 2 workers) on a rules file and a
/// generator config of its own, and its alerts as they come, with when each came.
struct Running {
    child: Child,
    alerts: mpsc::Receiver<(Instant, serde_json::Value)>,
    rules: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts the binary with the rules file `rules` and the generator config `generator`.
    fn start(rules: &str, generator: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.yaml");
        let generator_path = dir.path().join("generator.yaml");
        std::fs::write(&rules_path, rules).unwrap();
        std::fs::write(&generator_path, generator).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dataflow"))
            .arg("--no-lakehouse")
            .arg("--rules")
            .arg(&rules_path)
            .arg("--generator-config")
            .arg(&generator_path)
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
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            alerts,
            rules: rules_path,
            _dir: dir,
        }
    }

    /// Replaces the rules file, at once (a watcher never sees half a file).
    fn rewrite_rules(&self, text: &str) {
        write_atomically(&self.rules, text);
    }

    /// The alerts of `rule` that come within `d`, into `seen`.
    fn collect_for<T>(
        &self,
        d: Duration,
        seen: &mut Vec<(Instant, T)>,
        rule: &str,
        f: impl Fn(&serde_json::Value) -> T,
    ) {
        let until = Instant::now() + d;
        while let Ok((at, v)) = self
            .alerts
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if v["rule"] == rule {
                seen.push((at, f(&v)));
            }
        }
    }

    /// The alerts of `rule` until `done(seen)` (30 s at most), and a second more.
    fn collect_until<T>(
        &self,
        seen: &mut Vec<(Instant, T)>,
        rule: &str,
        f: impl Fn(&serde_json::Value) -> T,
        done: impl Fn(&[(Instant, T)]) -> bool,
    ) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done(seen) && Instant::now() < until {
            self.collect_for(Duration::from_millis(100), seen, rule, &f);
        }
        self.collect_for(Duration::from_secs(1), seen, rule, &f);
    }

    /// Stops the binary; returns its stderr.
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        let _ = self.child.wait();
        std::io::read_to_string(self.child.stderr.take().unwrap()).unwrap()
    }
}

#[derive(Debug)]
struct Seen {
    version: u64,
    event_time: String,
    amount_usd: Decimal,
}

fn high_value(v: &serde_json::Value) -> Seen {
    Seen {
        version: v["rules_version"].as_u64().unwrap(),
        event_time: v["event_time"].as_str().unwrap().to_owned(),
        amount_usd: v["details"]["amount_usd"].to_string().parse().unwrap(),
    }
}

#[test]
fn a_new_threshold_applies_from_one_point_of_the_stream() {
    // No back-dated night records: they are late, and judged at the watermark, not their time.
    let running = Running::start(
        "version: 1\nrules: {high_value: {threshold_usd: 10000}}\n",
        "patterns: {high_value: 0.05, night: 0}\n",
    );
    let mut seen: Vec<(Instant, Seen)> = Vec::new();

    running.collect_for(Duration::from_secs(3), &mut seen, "high_value", high_value);
    assert!(
        seen.len() > 5,
        "high-value alerts under version 1: {}",
        seen.len()
    );

    // A broken file: refused, version 1 stays.
    running.rewrite_rules("version: 2\nrules: {high_value: {threshold_usd: -5}}\n");
    running.collect_for(Duration::from_secs(3), &mut seen, "high_value", high_value);

    // A new threshold: 100 USD, so that most transactions alert.
    running.rewrite_rules("version: 3\nrules: {high_value: {threshold_usd: 100}}\n");
    let changed = Instant::now();
    running.collect_until(&mut seen, "high_value", high_value, |seen| {
        seen.iter().any(|(_, s)| s.version == 3)
    });
    let stderr = running.stop();

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

/// A rapid_activity alert: its version, event time, and the window and count it reports.
#[derive(Debug)]
struct Rapid {
    version: u64,
    event_time: String,
    window_seconds: u64,
    count: u64,
    ids: usize,
}

fn rapid(v: &serde_json::Value) -> Rapid {
    let d = &v["details"];
    Rapid {
        version: v["rules_version"].as_u64().unwrap(),
        event_time: v["event_time"].as_str().unwrap().to_owned(),
        window_seconds: d["window_seconds"].as_u64().unwrap(),
        count: d["count"].as_u64().unwrap(),
        ids: d["transaction_ids"].as_array().unwrap().len(),
    }
}

/// The window and count of rapid_activity are looked up by event time, apart from the version
/// the judge applies: each alert must count under the version it carries.
#[test]
fn a_new_window_and_count_apply_from_one_point_of_the_stream() {
    // Twenty bursts a second, and nothing late.
    let running = Running::start(
        "version: 1\nrules: {rapid_activity: {min_count: 5, window_seconds: 60}}\n",
        "patterns: {high_value: 0, night: 0, bursts: {share: 0.01}}\n",
    );
    let mut seen: Vec<(Instant, Rapid)> = Vec::new();
    // Bursts alert once the allowed lateness (5 s) has passed them.
    running.collect_until(&mut seen, "rapid_activity", rapid, |seen| seen.len() > 5);
    running
        .rewrite_rules("version: 2\nrules: {rapid_activity: {min_count: 3, window_seconds: 20}}\n");
    running.collect_until(&mut seen, "rapid_activity", rapid, |seen| {
        seen.iter().filter(|(_, r)| r.version == 2).count() > 5
    });
    running.stop();

    let of = |version| -> Vec<&Rapid> {
        seen.iter()
            .map(|(_, r)| r)
            .filter(|r| r.version == version)
            .collect()
    };
    let (v1, v2) = (of(1), of(2));
    assert!(
        v1.len() > 5 && v2.len() > 5,
        "{} and {}",
        v1.len(),
        v2.len()
    );
    for (r, (window, count)) in v1
        .iter()
        .map(|r| (r, (60, 5)))
        .chain(v2.iter().map(|r| (r, (20, 3))))
    {
        assert_eq!(
            (r.window_seconds, r.count, r.ids as u64),
            (window, count, count),
            "{r:?}"
        );
    }
    let last_v1 = v1.iter().map(|r| r.event_time.as_str()).max().unwrap();
    let first_v2 = v2.iter().map(|r| r.event_time.as_str()).min().unwrap();
    assert!(
        last_v1 < first_v2,
        "version 1 up to {last_v1}, version 2 from {first_v2}"
    );
}
