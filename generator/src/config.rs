//! `config/generator.yaml`: what to generate and how fast. Hot-reloaded by the binary.
//!
//! Every key is optional (the defaults below are the shipped file's) and unknown keys are
//! refused. Shares are probabilities per record, drawn independently.

use std::collections::BTreeMap;
use std::path::Path;

use model::config_file::{self, ConfigError};
use model::{Currency, EventTime};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Records per second; 0 means as fast as possible.
    pub rate: u64,
    /// How many distinct accounts transactions are spread over.
    pub accounts: u32,
    /// The number of the first account: accounts are `ACC{first_account}` onwards.
    pub first_account: u32,
    /// The simulated clock of seeded runs (`--seed`): event times come from it, not from the
    /// wall clock, so a seed gives the same bytes on every run.
    pub seeded_clock: SeededClock,
    /// Event times lag the clock by a random 0 to `disorder_ms` milliseconds, so records arrive
    /// slightly out of order, as they do from real payment networks. Keep it under the rules'
    /// `allowed_lateness_seconds` for records not to count as late.
    pub disorder_ms: u32,
    pub patterns: Patterns,
    pub invalid: Invalid,
    /// Relative weights of the currencies transactions are in.
    pub currencies: BTreeMap<Currency, f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeededClock {
    /// The event time of the first record.
    pub start: EventTime,
    /// How fast simulated time passes: one record every `1 / records_per_second` seconds.
    pub records_per_second: u32,
}

/// The suspicious patterns the rules are meant to catch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Patterns {
    /// Share of transactions worth 12 000 to 60 000 in USD, EUR, GBP or CHF: above the default
    /// `high_value` threshold of 10 000 USD.
    pub high_value: f64,
    /// Share of transactions dated between 01:00 and 05:00 UTC (the default `unusual_hour`
    /// window). Outside those hours this back-dates them, so the dataflow sees them as late.
    pub night: f64,
    pub bursts: Bursts,
}

/// Bursts of rapid activity: one account making `min_size` to `max_size` transactions within
/// `spread_seconds`, which the default `rapid_activity` rule (5 within 60 s) flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bursts {
    /// Share of transactions that start a burst.
    pub share: f64,
    pub min_size: u32,
    pub max_size: u32,
    pub spread_seconds: u32,
}

/// Records that are not valid transactions, so the dead-letter path gets exercised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Invalid {
    /// Share of records that are invalid.
    pub share: f64,
    /// Relative weights of the kinds of invalid record.
    pub kinds: BTreeMap<InvalidKind, f64>,
}

/// The kinds of invalid record, each mapping to one of the contract's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    /// A record cut short: `not_json`.
    NotJson,
    /// A byte that is not UTF-8 in a string: `not_utf8`.
    NotUtf8,
    /// The transaction inside a JSON array: `not_object`.
    NotObject,
    /// Padded past 64 KiB: `too_large`.
    TooLarge,
    /// A required field left out or null: `missing_field`.
    MissingField,
    /// A field of the wrong JSON type: `wrong_type`.
    WrongType,
    /// A field outside its rule (negative amount, unknown currency, …): `invalid_value`.
    OutOfRule,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        let currencies = [
            ("USD", 40.0),
            ("EUR", 20.0),
            ("GBP", 10.0),
            ("JPY", 5.0),
            ("CAD", 4.0),
            ("AUD", 4.0),
            ("CHF", 3.0),
            ("CNY", 3.0),
            ("INR", 3.0),
            ("MXN", 3.0),
            ("BRL", 3.0),
            ("SGD", 2.0),
        ];
        GeneratorConfig {
            rate: 1000,
            accounts: 1_000_000,
            first_account: 1_000_000,
            seeded_clock: SeededClock::default(),
            disorder_ms: 2000,
            patterns: Patterns::default(),
            invalid: Invalid::default(),
            currencies: currencies
                .iter()
                .map(|&(c, w)| (Currency::parse(c).expect("static code"), w))
                .collect(),
        }
    }
}

impl Default for SeededClock {
    fn default() -> Self {
        SeededClock {
            start: EventTime::parse_rfc3339("2026-03-02T09:00:00Z").expect("static time"),
            records_per_second: 1000,
        }
    }
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            high_value: 0.002,
            night: 0.002,
            bursts: Bursts::default(),
        }
    }
}

impl Default for Bursts {
    fn default() -> Self {
        Bursts {
            share: 0.001,
            min_size: 5,
            max_size: 8,
            spread_seconds: 30,
        }
    }
}

impl Default for Invalid {
    fn default() -> Self {
        use InvalidKind::*;
        Invalid {
            share: 0.01,
            kinds: [
                (NotJson, 2.0),
                (NotUtf8, 1.0),
                (NotObject, 1.0),
                (TooLarge, 0.2),
                (MissingField, 2.0),
                (WrongType, 2.0),
                (OutOfRule, 4.0),
            ]
            .into_iter()
            .collect(),
        }
    }
}

impl GeneratorConfig {
    /// Reads and validates a generator config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: GeneratorConfig = config_file::parse(&config_file::read(path)?, path)?;
        config
            .check()
            .map_err(|(key, problem)| ConfigError::new(path, key, problem))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let share = |key, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("must be a share between 0 and 1, not {v}")))
            }
        };
        share("patterns.high_value", self.patterns.high_value)?;
        share("patterns.night", self.patterns.night)?;
        share("patterns.bursts.share", self.patterns.bursts.share)?;
        share("invalid.share", self.invalid.share)?;
        if self.accounts == 0 {
            return Err(("accounts", "must be at least 1".into()));
        }
        if u64::from(self.first_account) + u64::from(self.accounts) > 10_000_000 {
            return Err((
                "accounts",
                "first_account + accounts must stay within the 7 digits of ACCnnnnnnn".into(),
            ));
        }
        if self.seeded_clock.records_per_second == 0 {
            return Err((
                "seeded_clock.records_per_second",
                "must be at least 1".into(),
            ));
        }
        let b = &self.patterns.bursts;
        if b.min_size == 0 || b.min_size > b.max_size {
            return Err(("patterns.bursts", "needs 1 <= min_size <= max_size".into()));
        }
        weights("currencies", self.currencies.values())?;
        if self.invalid.share > 0.0 {
            weights("invalid.kinds", self.invalid.kinds.values())?;
        }
        Ok(())
    }
}

fn weights<'a>(
    key: &'static str,
    w: impl Iterator<Item = &'a f64>,
) -> Result<(), (&'static str, String)> {
    let w: Vec<f64> = w.copied().collect();
    if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
        return Err((
            key,
            "weights must be non-negative with a positive sum".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/generator.yaml");
        assert_eq!(
            GeneratorConfig::load(&path).unwrap(),
            GeneratorConfig::default()
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.yaml");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            GeneratorConfig::load(&path).unwrap_err()
        };
        assert_eq!(err("invalid: {share: 1.5}").key, "invalid.share");
        assert_eq!(
            err("patterns: {bursts: {min_size: 9, max_size: 3}}").key,
            "patterns.bursts"
        );
        assert_eq!(err("rate: -1").key, "rate");
        assert_eq!(err("currencies: {usd: 1}").key, "currencies.usd");
        assert_eq!(err("ratee: 5").key, "ratee");
        assert_eq!(err("accounts: 9999999").key, "accounts");
        assert!(err("rate: [")
            .to_string()
            .starts_with(&path.display().to_string()));
    }
}
