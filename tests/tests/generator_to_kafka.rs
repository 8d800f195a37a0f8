//! The generator binary against a real broker: every record arrives, keyed by its account,
//! in order per account, and validation agrees with the generator's own labels.

use std::collections::HashMap;

use e2e::{bin, brokers, create_topic, read_all, temp_file, unique_topic};
use generator::{Generator, GeneratorConfig, Label};
use model::{validate, Rules};

#[test]
fn every_generated_record_reaches_kafka_keyed_by_account() {
    const COUNT: usize = 20_000;
    const SEED: u64 = 11;
    // More invalid records and patterns than the default, so that every kind shows up.
    let config_text = "invalid: {share: 0.05}\npatterns: {high_value: 0.01, night: 0.01, bursts: {share: 0.01}}\n";
    let (_dir, config_path) = temp_file("generator.yaml", config_text);
    let topic = unique_topic("e2e-generator");
    create_topic(&topic, 4);

    let status = bin("generator")
        .args(["--brokers", brokers(), "--topic", &topic])
        .args(["--config", config_path.to_str().unwrap()])
        .args([
            "--seed",
            &SEED.to_string(),
            "--count",
            &COUNT.to_string(),
            "--rate",
            "0",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    // The generator's own account of what it made: the same seed and config, in process.
    let config = GeneratorConfig::load(&config_path).unwrap();
    let mut g = Generator::new(config, Some(SEED));
    let mut expected: HashMap<Vec<u8>, Vec<(usize, String, Label)>> = HashMap::new();
    for i in 0..COUNT {
        let mut buf = Vec::new();
        let meta = g.next_into(&mut buf);
        expected
            .entry(buf)
            .or_default()
            .push((i, meta.key.to_string(), meta.label));
    }

    // Everything is there once, right after the generator exits: --count flushes.
    let consumed = read_all(&topic);
    assert_eq!(consumed.len(), COUNT, "records in the topic");

    let rules = Rules::default();
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut last_index_of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut invalid_codes = std::collections::BTreeSet::new();
    for c in &consumed {
        let (index, key, label) = expected
            .get_mut(&c.value)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
            .unwrap_or_else(|| {
                panic!(
                    "a record the generator did not make: {:?}",
                    String::from_utf8_lossy(&c.value)
                )
            });
        let got_key = c.key.clone().expect("every record has a key");
        assert_eq!(got_key, key.as_bytes(), "keyed by its account");

        // One account, one partition, in the order generated.
        let p = *partition_of_key
            .entry(got_key.clone())
            .or_insert(c.partition);
        assert_eq!(p, c.partition, "account {key} spread over partitions");
        if let Some(prev) = last_index_of_key.insert(got_key, index) {
            assert!(prev < index, "account {key} out of order");
        }

        // Validation agrees with the generator's label.
        let verdict = match validate(&c.value, &rules) {
            Ok(t) => {
                assert_eq!(t.account_id.to_string(), key);
                Label::Valid
            }
            Err(r) => Label::Invalid {
                error: r.error,
                field: r.field,
            },
        };
        assert_eq!(verdict, label, "record {index}");
        if let Label::Invalid { error, .. } = label {
            invalid_codes.insert(error);
        }
    }
    assert_eq!(
        invalid_codes.len(),
        model::ErrorCode::ALL.len(),
        "{invalid_codes:?}"
    );
    let partitions_used: std::collections::HashSet<i32> =
        consumed.iter().map(|c| c.partition).collect();
    assert_eq!(partitions_used.len(), 4, "keys spread over all partitions");
}
