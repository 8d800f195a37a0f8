//! The `dataflow` binary as a user runs it (no broker needed: see tests/ for Kafka).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// The binary, run from the workspace root (where the default rules file lives), with a
/// lakehouse of its own that lives as long as the returned directory.
fn dataflow() -> (Command, tempfile::TempDir) {
    let warehouse = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_dataflow"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c.env("ICEBERG_WAREHOUSE", warehouse.path());
    (c, warehouse)
}

#[test]
fn help_explains_the_flags() {
    let out = dataflow().0.arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--workers",
        "--processes",
        "--hostfile",
        "--brokers",
        "--until-caught-up",
        "--rules",
        "RULES_FILE",
        "KAFKA_BROKERS",
        "--catalog-uri",
        "ICEBERG_WAREHOUSE",
        "--commit-interval",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_bounded_embedded_run_reports_what_it_did() {
    let (mut dataflow, _warehouse) = dataflow();
    let out = dataflow
        .args([
            "--rate",
            "0",
            "--count",
            "20000",
            "--until-caught-up",
            "-w",
            "2",
            "--progress",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dataflow: 20000 read"), "{stderr}");
    // Alerts on stdout, one JSON object a line.
    let alerts = String::from_utf8(out.stdout).unwrap();
    assert!(alerts.lines().count() > 10);
    for line in alerts.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["alert_id"].is_string() && v["rule"].is_string());
    }
}

#[test]
fn a_bad_rules_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, "rules: {rapid_activity: {min_count: 0}}\n").unwrap();
    let out = dataflow()
        .0
        .args(["--rules", path.to_str().unwrap(), "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules.rapid_activity.min_count: must be at least 1"),
        "{err}"
    );
}

#[test]
fn an_unreachable_broker_is_reported() {
    let out = dataflow()
        .0
        .args(["--brokers", "127.0.0.1:1", "--connect-timeout", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Kafka at 127.0.0.1:1") && err.contains("scripts/kafka.sh start"),
        "{err}"
    );
}

#[test]
fn ctrl_c_stops_in_order() {
    let (mut dataflow, _warehouse) = dataflow();
    let mut child = dataflow
        .args(["--progress", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the job runs (its first progress line), not after a fixed wait that a busy machine
    // could spend starting up.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("dataflow: ") {
        assert!(stderr.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}: {seen}");
    assert!(seen.contains("dataflow: done in"), "{seen}");
}
