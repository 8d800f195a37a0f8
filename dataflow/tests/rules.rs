//! The rules through the real dataflow (in-process inputs): the shared vectors, and random
//! streams against the brute-force model for 1, 2 and 4 workers and any arrival order within
//! the allowed lateness.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use dataflow::emit::{Collected, Emitter};
use dataflow::graph::{run, Settings};
use dataflow::metrics::Metrics;
use dataflow::rules_feed::RulesVersion;
use dataflow::source::{assigned, Partition, Replay, SourceConfig};
use model::{Rules, Transaction};
use proptest::prelude::*;

const RULES: &str = "version: 1\n";

/// Runs the dataflow over `partitions` (each a list of JSON records in arrival order) with
/// `workers` workers; returns the sorted (rule, transaction id) of every alert.
fn alerts_of(
    partitions: &[Vec<String>],
    workers: usize,
) -> (BTreeSet<(String, String)>, Collected) {
    alerts_of_batched(partitions, workers, 7)
}

/// As [`alerts_of`], the sources reading `batch` records per partition at a time.
fn alerts_of_batched(
    partitions: &[Vec<String>],
    workers: usize,
    batch: usize,
) -> (BTreeSet<(String, String)>, Collected) {
    let collected = Collected::default();
    let parts: Vec<Vec<String>> = partitions.to_vec();
    let n = parts.len() as i32;
    let settings = Settings {
        topic: "raw-transactions".into(),
        rules: RulesVersion {
            version: 1,
            origin: "test".into(),
            text: RULES.into(),
        },
        rules_path: None,
        source: SourceConfig {
            lateness: 5_000_000,
            idle_after: Duration::from_secs(1),
            batch,
            max_lead: 2_000_000,
            commit_interval: None,
            resume: None,
        },
        lakehouse: None,
    };
    let out = collected.clone();
    run(
        timely::Config::process(workers),
        settings,
        move |index, peers| {
            Ok(assigned(n, index, peers)
                .map(|p| {
                    let records = parts[p as usize]
                        .iter()
                        .map(|r| (None, r.clone().into_bytes()));
                    Box::new(Replay::new(p, records)) as Box<dyn Partition>
                })
                .collect())
        },
        move |_| Rc::new(RefCell::new(out.clone())) as Rc<RefCell<dyn Emitter>>,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let alerts = collected
        .alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| (a.rule.to_string(), a.transaction_id.to_string()))
        .collect();
    (alerts, collected)
}

#[test]
fn shared_vectors_through_the_dataflow() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/rules.json");
    let scenarios: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for s in scenarios.as_array().unwrap() {
        let note = s["note"].as_str().unwrap();
        let records: Vec<String> = s["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        let want: BTreeSet<(String, String)> = s["expect_alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a[0].as_str().unwrap().to_owned(),
                    a[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for workers in [1, 2] {
            // All in one partition, in the given arrival order.
            let (got, _) = alerts_of(std::slice::from_ref(&records), workers);
            assert_eq!(got, want, "{note} ({workers} workers)");
        }
    }
}

/// The model's alerts for a set of valid, non-late transactions.
fn model_alerts(txns: &[Transaction]) -> BTreeSet<(String, String)> {
    let valid: Vec<(Transaction, bool)> = txns.iter().map(|t| (t.clone(), true)).collect();
    dataflow::rules::model_alerts(&valid, &Rules::default())
        .into_iter()
        .map(|(rule, id)| (rule.to_string(), id.to_string()))
        .collect()
}

/// A random stream: few accounts, bursts, equal timestamps, spread over partitions by
/// account, each partition's arrival order shuffled within the allowed lateness.
fn stream() -> impl Strategy<Value = (Vec<Transaction>, Vec<Vec<String>>)> {
    let txn = (0u32..4, 0i64..240, 0u8..3, 1i64..2_000_000, any::<u128>());
    (proptest::collection::vec(txn, 1..80), 1usize..4, any::<u64>()).prop_map(|(raw, partitions, shuffle)| {
        let base = 1_772_438_400_000_000i64; // 2026-03-02T08:00:00Z
        let txns: Vec<Transaction> = raw
            .into_iter()
            .map(|(acc, sec, sub, cents, id)| {
                // Whole seconds, sometimes equal, sometimes a microsecond apart.
                let t = base + sec * 1_000_000 + i64::from(sub);
                let json = format!(
                    r#"{{"transaction_id":"{}","account_id":"ACC000000{acc}","amount":{}.{:02},"currency":"EUR","merchant_id":"M","transaction_type":"purchase","channel":"pos","event_time":"{}"}}"#,
                    uuid::Uuid::from_u128(id),
                    cents / 100,
                    cents % 100,
                    model::EventTime::from_micros(t)
                );
                model::validate(json.as_bytes(), &Rules::default()).unwrap()
            })
            .collect();
        // Partition by account; in each, event-time order disturbed by less than the lateness:
        // sort by a key that moves each record by up to 4.9 s.
        let mut parts = vec![Vec::new(); partitions];
        let mut x = shuffle | 1;
        let mut keyed: Vec<(i64, &Transaction)> = txns
            .iter()
            .map(|t| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (t.event_time.as_micros() + (x % 4_900_000) as i64, t)
            })
            .collect();
        keyed.sort_by_key(|(k, t)| (*k, t.transaction_id));
        for (_, t) in keyed {
            parts[t.account_id.number() as usize % partitions].push(t.to_json());
        }
        (txns, parts)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn alerts_match_the_model_for_any_worker_count((txns, parts) in stream()) {
        let want = model_alerts(&txns);
        for workers in [1, 2, 4] {
            let (got, collected) = alerts_of(&parts, workers);
            prop_assert_eq!(&got, &want, "{} workers", workers);
            prop_assert_eq!(collected.transactions.lock().unwrap().len(), txns.len());
            prop_assert!(collected.transactions.lock().unwrap().iter().all(|v| !v.late));
        }
    }
}

/// `late` is a function of the input: the same records are late whatever the read pace (records
/// per poll) and the number of workers. A record an hour older than its partition is late once
/// its partition's first block (256 offsets) is read, and not within it, where records are not
/// judged against each other.
#[test]
fn late_does_not_depend_on_the_read_pace() {
    let record = |p: usize, i: usize, secs: i64| {
        let t = model::EventTime::from_micros(1_772_442_000_000_000 + secs * 1_000_000 + i as i64);
        format!(
            r#"{{"transaction_id":"00000000-0000-4000-8000-{p:04}{i:08}","account_id":"ACC{:07}","amount":12.5,"currency":"USD","merchant_id":"M1","transaction_type":"purchase","channel":"online","event_time":"{t}"}}"#,
            1_000_000 + p * 1000 + i
        )
    };
    let back_dated = [100, 300, 500];
    let partitions: Vec<Vec<String>> = (0..2)
        .map(|p| {
            (0..600)
                .map(|i| {
                    let secs = (i / 10) as i64;
                    record(
                        p,
                        i,
                        if p == 0 && back_dated.contains(&i) {
                            secs - 3600
                        } else {
                            secs
                        },
                    )
                })
                .collect()
        })
        .collect();
    let late_of = |workers, batch| -> BTreeSet<i64> {
        let (_, collected) = alerts_of_batched(&partitions, workers, batch);
        let txns = collected.transactions.lock().unwrap();
        assert_eq!(txns.len(), 1200);
        txns.iter().filter(|v| v.late).map(|v| v.offset).collect()
    };
    let expected = BTreeSet::from([300, 500]);
    for workers in [1, 2] {
        for batch in [1, 7, 1024] {
            assert_eq!(
                late_of(workers, batch),
                expected,
                "{workers} workers, {batch} a poll"
            );
        }
    }
}
