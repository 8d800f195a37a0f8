//! The dataflow end to end on the real broker: the generator's records in, `dataflow
//! --until-caught-up`, then the alerts and dead-letter topics read back and compared with a
//! model computed from the same input records. The same result with 1, 2 and 4 workers and
//! with two processes of a timely cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Child;

use e2e::{bin, brokers, create_topic, read_all, temp_file, unique_topic, Consumed};
use model::{validate, Rule, Rules, Transaction};

const COUNT: &str = "30000";
const LATENESS_MICROS: i64 = 5_000_000;

/// More of every pattern than the default, so that each rule fires a fair number of times.
const GENERATOR_CONFIG: &str = "accounts: 2000\ninvalid: {share: 0.03}\npatterns: {high_value: 0.01, night: 0.01, bursts: {share: 0.01}}\n";

/// An invalid record's expected dead letter: error, field, key.
type DeadLetterOf = (String, Option<String>, Option<Vec<u8>>);

/// What the contract says the dataflow must emit for `input`.
struct Expected {
    alerts: BTreeSet<(String, String)>,
    /// (partition, offset) of each invalid record → (error, field, key).
    dead: BTreeMap<(i32, i64), DeadLetterOf>,
}

fn model(input: &[Consumed]) -> Expected {
    let rules = Rules::default();
    let mut dead = BTreeMap::new();
    let mut newest: HashMap<i32, i64> = HashMap::new();
    let mut valid: Vec<(Transaction, bool)> = Vec::new();
    for c in input {
        match validate(&c.value, &rules) {
            Ok(t) => {
                let e = t.event_time.as_micros();
                let max = newest.entry(c.partition).or_insert(i64::MIN);
                // Late: older than its partition's newest event time by more than the lateness.
                // The generator's only such records are back-dated night records, none of them
                // in a burst, so whether the dataflow sees one as late (it may not, while
                // another partition has read nothing yet) cannot change a rapid_activity alert.
                let late = *max != i64::MIN && e < *max - LATENESS_MICROS;
                *max = (*max).max(e);
                valid.push((t, !late));
            }
            Err(r) => {
                dead.insert(
                    (c.partition, c.offset),
                    (
                        r.error.to_string(),
                        r.field.map(|f| f.name().to_owned()),
                        c.key.clone(),
                    ),
                );
            }
        }
    }
    let alerts = dataflow::rules::model_alerts(&valid, &rules)
        .into_iter()
        .map(|(rule, id)| (rule.to_string(), id.to_string()))
        .collect();
    Expected { alerts, dead }
}

/// Runs the dataflow over `topic` into fresh output topics; returns what they hold.
fn run(topic: &str, label: &str, processes: &[Vec<&str>]) -> (Vec<Consumed>, Vec<Consumed>) {
    let alerts = format!("{topic}-alerts-{label}");
    let dead = format!("{topic}-dead-{label}");
    create_topic(&alerts, 2);
    create_topic(&dead, 2);
    // The processes of one job share a lakehouse.
    let warehouse = tempfile::tempdir().unwrap();
    let children: Vec<Child> = processes
        .iter()
        .map(|extra| {
            bin("dataflow")
                .args(["--brokers", brokers(), "--input-topic", topic])
                .arg("--warehouse")
                .arg(warehouse.path())
                .args(["--alerts-topic", &alerts, "--dead-letter-topic", &dead])
                .args(["--until-caught-up", "--progress", "0"])
                .args(extra)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "dataflow {label} failed");
    }
    (read_all(&alerts), read_all(&dead))
}

fn check(expected: &Expected, alerts: &[Consumed], dead: &[Consumed], label: &str) {
    let mut got = BTreeSet::new();
    for a in alerts {
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        let rule = v["rule"].as_str().unwrap().to_owned();
        let id = v["transaction_id"].as_str().unwrap().to_owned();
        assert_eq!(
            a.key.as_deref(),
            Some(v["account_id"].as_str().unwrap().as_bytes()),
            "{label}: alerts keyed by account"
        );
        assert_eq!(v["rules_version"], 1);
        let expected_id = model::Alert::id_for(Rule::parse(&rule).unwrap(), id.parse().unwrap());
        assert_eq!(
            v["alert_id"],
            expected_id.to_string(),
            "{label}: deterministic alert id"
        );
        assert!(got.insert((rule, id)), "{label}: an alert emitted twice");
    }
    for a in alerts {
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        let key = (
            v["rule"].as_str().unwrap().to_owned(),
            v["transaction_id"].as_str().unwrap().to_owned(),
        );
        if !expected.alerts.contains(&key) {
            eprintln!("{label}: unexpected {v}");
        }
    }
    let missing: Vec<_> = expected.alerts.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&expected.alerts).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{label}: missing {missing:?}, extra {extra:?}"
    );

    assert_eq!(
        dead.len(),
        expected.dead.len(),
        "{label}: one dead letter per invalid record"
    );
    for d in dead {
        let v: serde_json::Value = serde_json::from_slice(&d.value).unwrap();
        let at = (
            v["source"]["partition"].as_i64().unwrap() as i32,
            v["source"]["offset"].as_i64().unwrap(),
        );
        let (error, field, key) = expected
            .dead
            .get(&at)
            .unwrap_or_else(|| panic!("{label}: a dead letter for a valid record {at:?}"));
        assert_eq!(v["error"].as_str().unwrap(), error, "{label}");
        assert_eq!(v["field"].as_str().map(str::to_owned), *field, "{label}");
        assert_eq!(
            &d.key, key,
            "{label}: the dead letter keeps the input's key"
        );
    }
}

#[test]
fn alerts_and_dead_letters_match_the_model_for_any_layout() {
    let topic = unique_topic("e2e-dataflow");
    create_topic(&topic, 4);
    let (_dir, config) = temp_file("generator.yaml", GENERATOR_CONFIG);
    let status = bin("generator")
        .args([
            "--brokers",
            brokers(),
            "--topic",
            &topic,
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "--seed",
            "21",
            "--count",
            COUNT,
            "--rate",
            "0",
            "--progress",
            "0",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let input = read_all(&topic);
    let expected = model(&input);
    assert!(
        expected.alerts.iter().any(|a| a.0 == "rapid_activity"),
        "the input has bursts"
    );
    assert!(expected.alerts.iter().any(|a| a.0 == "high_value"));
    assert!(expected.alerts.iter().any(|a| a.0 == "unusual_hour"));

    for workers in ["1", "2", "4"] {
        let (alerts, dead) = run(&topic, &format!("w{workers}"), &[vec!["-w", workers]]);
        check(&expected, &alerts, &dead, &format!("{workers} workers"));
    }

    // Two processes of one timely cluster, two workers each.
    // Ports under Linux's ephemeral range (32768 and up), where no client socket of this
    // machine (the broker's, say) can hold them.
    let port = 20_000 + std::process::id() % 12_000;
    let (_hosts_dir, hosts) = temp_file(
        "hosts.txt",
        &format!("127.0.0.1:{port}\n127.0.0.1:{}\n", port + 1),
    );
    let hosts = hosts.to_str().unwrap();
    let (alerts, dead) = run(
        &topic,
        "cluster",
        &[
            vec!["-w", "2", "-n", "2", "-p", "0", "--hostfile", hosts],
            vec!["-w", "2", "-n", "2", "-p", "1", "--hostfile", hosts],
        ],
    );
    check(&expected, &alerts, &dead, "2 processes");
}
