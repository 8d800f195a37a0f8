//! How far the input is in the tables: a [`Position`] per input topic, recorded in each
//! snapshot's summary under `finstream.offsets.<topic>` (as Kafka Connect's Iceberg sink records
//! `kafka.connect.offsets.<topic>.<group>`), so that a restart resumes exactly there. What the
//! offsets mean is the dataflow's (its `progress` module); here they are data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The summary key of `topic`'s position.
pub fn summary_key(topic: &str) -> String {
    format!("finstream.offsets.{topic}")
}

/// One partition's offsets at a commit boundary: every record before `resume` is in the
/// tables, none from `through` on; between the two, those whose event time falls before the
/// boundary are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    pub resume: i64,
    pub through: i64,
}

/// Where an input topic stands in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The commit boundary in the dataflow's time (µs of event time): rows before it are in.
    pub boundary: u64,
    pub partitions: BTreeMap<i32, PartitionOffsets>,
}

impl Position {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Position, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_through_its_summary_text() {
        let p = Position {
            boundary: 1_772_000_000_000_000,
            partitions: BTreeMap::from([
                (
                    0,
                    PartitionOffsets {
                        resume: 10,
                        through: 12,
                    },
                ),
                (
                    3,
                    PartitionOffsets {
                        resume: 7,
                        through: 7,
                    },
                ),
            ]),
        };
        let text = p.to_json();
        assert_eq!(
            text,
            r#"{"boundary":1772000000000000,"partitions":{"0":{"resume":10,"through":12},"3":{"resume":7,"through":7}}}"#
        );
        assert_eq!(Position::from_json(&text).unwrap(), p);
        assert_eq!(
            summary_key("raw-transactions"),
            "finstream.offsets.raw-transactions"
        );
    }
}
