//! The `generator` binary as a user runs it (no broker needed: see tests/ for Kafka).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{validate, Rules};

fn generator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_generator"));
    // Run from the workspace root, where the default config file lives.
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

fn stdout_of(args: &[&str]) -> Vec<u8> {
    let out = generator().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_seed_and_count_give_identical_bytes() {
    let args = [
        "--seed", "7", "--count", "3000", "--rate", "0", "--output", "stdout",
    ];
    let a = stdout_of(&args);
    let b = stdout_of(&args);
    assert_eq!(a, b);
    assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 3000);
    let c = stdout_of(&["--seed", "8", "--count", "3000", "--rate", "0"]);
    assert_ne!(a, c);
}

#[test]
fn file_output_matches_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let path_s = path.to_str().unwrap();
    stdout_of(&[
        "--seed", "3", "--count", "500", "--rate", "0", "--output", path_s,
    ]);
    let from_file = std::fs::read(&path).unwrap();
    assert_eq!(
        from_file,
        stdout_of(&["--seed", "3", "--count", "500", "--rate", "0"])
    );
    let rules = Rules::default();
    let valid = from_file
        .split(|&c| c == b'\n')
        .filter(|l| validate(l, &rules).is_ok())
        .count();
    assert!(
        (470..500).contains(&valid),
        "{valid} of 500 valid at a 1 % invalid share"
    );
}

#[test]
fn help_explains_the_flags() {
    let out = generator().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--brokers",
        "--topic",
        "--output",
        "--rate",
        "--seed",
        "--count",
        "--config",
        "KAFKA_BROKERS",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_bad_config_file_is_refused_with_the_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, "invalid: {share: 2}\n").unwrap();
    let out = generator()
        .args(["--config", path.to_str().unwrap(), "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid.share") && err.contains("g.yaml"),
        "{err}"
    );
}

#[test]
fn an_unreachable_broker_is_reported_after_retrying() {
    // Port 1 on loopback: nothing listens there.
    let out = generator()
        .args([
            "--brokers",
            "127.0.0.1:1",
            "--count",
            "1",
            "--connect-timeout",
            "3",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not reach topic raw-transactions on Kafka at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("scripts/kafka.sh start"), "{err}");
}

#[test]
fn editing_the_config_changes_a_running_generator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    // No bursts: a burst's later transactions, drawn before a reload, stay valid after it.
    std::fs::write(
        &path,
        "rate: 200\ninvalid: {share: 0}\npatterns: {bursts: {share: 0}}\n",
    )
    .unwrap();
    let mut child = generator()
        .args([
            "--config",
            path.to_str().unwrap(),
            "--seed",
            "1",
            "--progress",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines as bytes: some invalid records are not UTF-8.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).split(b'\n');
    let rules = Rules::default();
    let mut next_valid = || validate(&lines.next().unwrap().unwrap(), &rules).is_ok();
    for _ in 0..50 {
        assert!(next_valid(), "invalid share 0: every record is valid");
    }

    // A broken file is refused: the old settings stay.
    // Written whole: a reader between a truncation and a write would see an empty file,
    // which is the default config, not a broken one.
    write_atomically(&path, "rate: 200\ninvalid: {share: nope}\n");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(next_valid(), "a refused file changed the stream");
    }

    // A good one takes over within 5 s.
    write_atomically(
        &path,
        "rate: 200\ninvalid: {share: 1}\npatterns: {bursts: {share: 0}}\n",
    );
    let changed = Instant::now();
    while next_valid() {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "no reload within 5 s"
        );
    }
    for _ in 0..20 {
        assert!(!next_valid(), "invalid share 1: every record is invalid");
    }
    child.kill().unwrap();
    let _ = child.wait();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(
        stderr.contains("refused the new version of") && stderr.contains("invalid.share"),
        "{stderr}"
    );
    assert!(stderr.contains("reloaded"), "{stderr}");
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}
