//! The record source: a deterministic stream of transactions (and invalid records) from a seed.
//!
//! Each record comes with its [`Label`], the generator's own account of what it made, so tests
//! can check the pipeline's verdicts against it without re-deriving anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use model::time::MICROS_PER_SECOND;
use model::{
    AccountId, Amount, Channel, Currency, ErrorCode, EventTime, Field, Transaction, TransactionType,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::value::RawValue;

use crate::config::{GeneratorConfig, InvalidKind};

/// What the generator meant a record to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    Valid,
    /// Invalid, and the verdict validation must give under the default rules.
    Invalid {
        error: ErrorCode,
        field: Option<Field>,
    },
}

/// The key and label of one generated record; its bytes are in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The Kafka key: the account the record belongs to (also for invalid records).
    pub key: AccountId,
    pub label: Label,
}

/// Common merchant category codes: grocery, restaurants, misc. retail, transit, fuel,
/// electronics, drugstores, hotels, airlines, department stores, ATMs, clothing.
const MCCS: [&str; 12] = [
    "5411", "5812", "5999", "4111", "5541", "5732", "5912", "7011", "4511", "5311", "6011", "5691",
];

const PLACES: [(&str, &str); 16] = [
    ("London", "GB"),
    ("Leeds", "GB"),
    ("Paris", "FR"),
    ("Berlin", "DE"),
    ("Madrid", "ES"),
    ("Zürich", "CH"),
    ("New York", "US"),
    ("San Francisco", "US"),
    ("Toronto", "CA"),
    ("Mexico City", "MX"),
    ("São Paulo", "BR"),
    ("Tokyo", "JP"),
    ("Shanghai", "CN"),
    ("Mumbai", "IN"),
    ("Singapore", "SG"),
    ("Sydney", "AU"),
];

/// Weighted closed sets: (value, weight).
const TYPES: [(TransactionType, u32); 5] = [
    (TransactionType::Purchase, 60),
    (TransactionType::Payment, 15),
    (TransactionType::Withdrawal, 10),
    (TransactionType::Transfer, 10),
    (TransactionType::Refund, 5),
];
const CHANNELS: [(Channel, u32); 4] = [
    (Channel::Pos, 40),
    (Channel::Online, 30),
    (Channel::Mobile, 25),
    (Channel::Atm, 5),
];

/// Currencies whose unit is worth at least 1 USD under the default rules, for high values.
const STRONG: [&str; 4] = ["USD", "EUR", "GBP", "CHF"];

const MICROS_PER_HOUR: i64 = 3600 * MICROS_PER_SECOND;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// A deterministic record source.
pub struct Generator {
    config: GeneratorConfig,
    /// ChaCha: its output is specified, so a seed means the same stream on every platform and
    /// release of `rand`.
    rng: ChaCha8Rng,
    /// With a seed, event times come from a simulated clock; without one, from the wall clock.
    seeded: bool,
    /// Records generated so far; drives the simulated clock.
    count: u64,
    /// Burst transactions not yet due, earliest first: (due time, sequence, account).
    pending: BinaryHeap<Reverse<(i64, u64, AccountId)>>,
    /// Cumulative currency weights, derived from `config.currencies`.
    currencies: Vec<(Currency, f64)>,
    /// Cumulative invalid-kind weights, derived from `config.invalid.kinds`.
    invalid_kinds: Vec<(InvalidKind, f64)>,
    /// This generator makes partition `.0` of `.1`: only the accounts whose index is `.0`
    /// modulo `.1`, with a simulated clock `.1` times slower, so that the partitions together
    /// make the configured stream.
    partition: (u32, u32),
}

impl Generator {
    /// A generator seeded with `seed`, or from the OS's entropy (and the wall clock) without.
    pub fn new(config: GeneratorConfig, seed: Option<u64>) -> Self {
        Generator::for_partition(config, seed, 0, 1)
    }

    /// The generator of partition `partition` of `partitions`: its own accounts (those whose
    /// index is `partition` modulo `partitions`) and its own random stream. The dataflow's
    /// embedded source runs one per partition, so that what it generates depends on the seed
    /// and the partition count, never on which worker runs which partition.
    pub fn for_partition(
        config: GeneratorConfig,
        seed: Option<u64>,
        partition: u32,
        partitions: u32,
    ) -> Self {
        assert!(
            partition < partitions,
            "partition {partition} of {partitions}"
        );
        let mut rng = match seed {
            Some(s) => ChaCha8Rng::seed_from_u64(s),
            None => ChaCha8Rng::from_os_rng(),
        };
        if partitions > 1 {
            rng.set_stream(u64::from(partition) + 1);
        }
        let mut g = Generator {
            config: GeneratorConfig::default(),
            rng,
            seeded: seed.is_some(),
            count: 0,
            pending: BinaryHeap::new(),
            currencies: Vec::new(),
            invalid_kinds: Vec::new(),
            partition: (partition, partitions),
        };
        g.set_config(config);
        g
    }

    /// Switches to a new configuration (a hot reload) without restarting the stream.
    pub fn set_config(&mut self, config: GeneratorConfig) {
        self.currencies = cumulative(config.currencies.iter().map(|(c, w)| (*c, *w)));
        self.invalid_kinds = cumulative(config.invalid.kinds.iter().map(|(k, w)| (*k, *w)));
        self.config = config;
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Writes the next record's bytes into `buf` (cleared first) and returns its key and label.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Meta {
        buf.clear();
        let now = self.clock();
        self.count += 1;

        if let Some(&Reverse((due, _, account))) = self.pending.peek() {
            if due <= now {
                self.pending.pop();
                let t = self.transaction(account, EventTime::from_micros(due), false);
                t.write_json(buf);
                return Meta {
                    key: account,
                    label: Label::Valid,
                };
            }
        }

        let account = self.account();
        let invalid = self.rng.random_bool(self.config.invalid.share);
        let high = self.rng.random_bool(self.config.patterns.high_value);
        let night = self.rng.random_bool(self.config.patterns.night);
        let burst = self.rng.random_bool(self.config.patterns.bursts.share);

        let lag = self
            .rng
            .random_range(0..=i64::from(self.config.disorder_ms) * 1000);
        let event_time = if night {
            night_time(now, &mut self.rng)
        } else {
            now - lag
        };
        let t = self.transaction(account, EventTime::from_micros(event_time), high);

        if invalid {
            let label = self.write_invalid(&t, buf);
            return Meta {
                key: account,
                label,
            };
        }
        // A burst is live activity: not one that starts from a back-dated night record.
        if burst && !night {
            self.start_burst(account, event_time);
        }
        t.write_json(buf);
        Meta {
            key: account,
            label: Label::Valid,
        }
    }

    /// The current time in microseconds: simulated when seeded, else the wall clock.
    fn clock(&self) -> i64 {
        if self.seeded {
            let c = &self.config.seeded_clock;
            let step = MICROS_PER_SECOND as u64 * u64::from(self.partition.1)
                / u64::from(c.records_per_second).max(1);
            c.start.as_micros() + (self.count * step.max(1)) as i64
        } else {
            EventTime::now().as_micros()
        }
    }

    fn account(&mut self) -> AccountId {
        let (p, count) = self.partition;
        let accounts = self.config.accounts;
        // Indices p, p + count, p + 2 count, … below `accounts` (at least p itself).
        let mine = (accounts.saturating_sub(p)).div_ceil(count).max(1);
        let index = (self.rng.random_range(0..mine) * count + p) % accounts;
        let n = self.config.first_account + index;
        AccountId::new(n).expect("config checks the account range")
    }

    /// Schedules the rest of a burst that starts with a transaction at `start`.
    fn start_burst(&mut self, account: AccountId, start: i64) {
        let b = &self.config.patterns.bursts;
        let size = self.rng.random_range(b.min_size..=b.max_size);
        let spread = i64::from(b.spread_seconds.max(1)) * MICROS_PER_SECOND;
        for _ in 1..size {
            let due = start + self.rng.random_range(1..=spread);
            let seq = self.count;
            self.pending.push(Reverse((due, seq, account)));
        }
    }

    fn transaction(
        &mut self,
        account: AccountId,
        event_time: EventTime,
        high: bool,
    ) -> Transaction {
        let rng = &mut self.rng;
        let (currency, cents) = if high {
            let c = STRONG[rng.random_range(0..STRONG.len())];
            (
                Currency::parse(c).expect("static code"),
                rng.random_range(1_200_000..=6_000_000),
            )
        } else {
            let c = pick(&self.currencies, rng);
            // Mostly small, sometimes larger, never near the high-value threshold.
            let max_units = [20, 100, 500, 2000][weighted_index(&[40, 35, 20, 5], rng)];
            (c, rng.random_range(100..=max_units * 100))
        };
        let place = if rng.random_bool(0.95) {
            Some(PLACES[rng.random_range(0..PLACES.len())])
        } else {
            None
        };
        Transaction {
            transaction_id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
            account_id: account,
            amount: Amount::from_cents(cents).expect("in range"),
            currency,
            merchant_id: merchant_id(rng.random_range(0..20_000)),
            merchant_category: rng.random_bool(0.95).then(|| {
                *<&[u8; 4]>::try_from(MCCS[rng.random_range(0..MCCS.len())].as_bytes())
                    .expect("4 digits")
            }),
            transaction_type: TYPES[weighted_index(&TYPES.map(|t| t.1), rng)].0,
            channel: CHANNELS[weighted_index(&CHANNELS.map(|c| c.1), rng)].0,
            country: place.map(|(_, c)| *<&[u8; 2]>::try_from(c.as_bytes()).expect("2 letters")),
            city: place.map(|(city, _)| compact_str::CompactString::const_new(city)),
            event_time,
        }
    }

    /// Writes `t` broken in one of the configured ways; returns the verdict it must get.
    fn write_invalid(&mut self, t: &Transaction, buf: &mut Vec<u8>) -> Label {
        let kind = pick(&self.invalid_kinds, &mut self.rng);
        let json = t.to_json();
        let label = |error, field| Label::Invalid { error, field };
        match kind {
            InvalidKind::NotJson => {
                // Cut anywhere before the closing brace: the object never closes.
                let cut = self.rng.random_range(1..json.len() - 1);
                buf.extend_from_slice(&json.as_bytes()[..cut]);
                label(ErrorCode::NotJson, None)
            }
            InvalidKind::NotUtf8 => {
                // A Latin-1 "é" where UTF-8 needs two bytes.
                let at = json.find("\"merchant_id\":\"").expect("canonical form") + 15;
                buf.extend_from_slice(&json.as_bytes()[..at]);
                buf.push(0xE9);
                buf.extend_from_slice(&json.as_bytes()[at..]);
                label(ErrorCode::NotUtf8, None)
            }
            InvalidKind::NotObject => {
                buf.push(b'[');
                buf.extend_from_slice(json.as_bytes());
                buf.push(b']');
                label(ErrorCode::NotObject, None)
            }
            InvalidKind::TooLarge => {
                let pad = "x".repeat(model::validate::MAX_RECORD_BYTES);
                let with_note = format!("{},\"note\":\"{pad}\"}}", &json[..json.len() - 1]);
                buf.extend_from_slice(with_note.as_bytes());
                label(ErrorCode::TooLarge, None)
            }
            InvalidKind::MissingField => {
                let required: Vec<Field> =
                    Field::ALL.into_iter().filter(|f| f.required()).collect();
                let f = required[self.rng.random_range(0..required.len())];
                let value = self.rng.random_bool(0.5).then_some("null");
                write_with(&json, f, value, buf);
                label(ErrorCode::MissingField, Some(f))
            }
            InvalidKind::WrongType => {
                let f = Field::ALL[self.rng.random_range(0..Field::ALL.len())];
                let value = match f {
                    Field::Amount => format!("\"{}\"", t.amount),
                    _ => ["42", "true", "[]", "{}"][self.rng.random_range(0..4)].to_owned(),
                };
                write_with(&json, f, Some(&value), buf);
                label(ErrorCode::WrongType, Some(f))
            }
            InvalidKind::OutOfRule => {
                const BAD: [(Field, &str); 12] = [
                    (Field::TransactionId, "\"not-a-uuid\""),
                    (Field::AccountId, "\"ACC12345\""),
                    (Field::Amount, "-25.00"),
                    (Field::Amount, "0"),
                    (Field::Amount, "19.999"),
                    (Field::Amount, "2000000000"),
                    (Field::Currency, "\"XXX\""),
                    (Field::MerchantId, "\"\""),
                    (Field::TransactionType, "\"gift\""),
                    (Field::Channel, "\"fax\""),
                    (Field::Country, "\"gbr\""),
                    (Field::EventTime, "\"1999-12-31T23:59:59Z\""),
                ];
                let (f, value) = BAD[self.rng.random_range(0..BAD.len())];
                write_with(&json, f, Some(value), buf);
                label(ErrorCode::InvalidValue, Some(f))
            }
        }
    }
}

/// Writes the canonical JSON `json` with field `f` replaced by the raw JSON `value` (or
/// removed). Field order is kept, so the output stays deterministic.
fn write_with(json: &str, f: Field, value: Option<&str>, buf: &mut Vec<u8>) {
    let fields: Vec<(&str, &RawValue)> = serde_json::from_str::<indexmap_free::Fields<'_>>(json)
        .expect("canonical JSON")
        .0;
    let mut first = true;
    let mut emit = |buf: &mut Vec<u8>, k: &str, v: &str| {
        buf.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b"\":");
        buf.extend_from_slice(v.as_bytes());
    };
    let mut replaced = false;
    for (k, v) in fields {
        if k == f.name() {
            replaced = true;
            if let Some(value) = value {
                emit(buf, k, value);
            }
        } else {
            emit(buf, k, v.get());
        }
    }
    if !replaced {
        if let Some(value) = value {
            emit(buf, f.name(), value);
        }
    }
    buf.push(b'}');
}

/// An object's fields in document order, without pulling in an ordered-map crate.
mod indexmap_free {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    pub struct Fields<'a>(pub Vec<(&'a str, &'a RawValue)>);

    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields<'de>, A::Error> {
                    let mut v = Vec::new();
                    while let Some(k) = m.next_key::<&'de str>()? {
                        v.push((k, m.next_value::<&'de RawValue>()?));
                    }
                    Ok(Fields(v))
                }
            }
            d.deserialize_map(V)
        }
    }
}

/// A time between 01:00 and 05:00 UTC, at or before `now`: today's if that window has begun,
/// else yesterday's.
fn night_time(now: i64, rng: &mut ChaCha8Rng) -> i64 {
    let day = now.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    let window = day + MICROS_PER_HOUR;
    let start = if now >= window {
        window
    } else {
        window - MICROS_PER_DAY
    };
    let end = (start + 4 * MICROS_PER_HOUR).min(now + 1);
    rng.random_range(start..end)
}

fn cumulative<T>(weights: impl Iterator<Item = (T, f64)>) -> Vec<(T, f64)> {
    let mut sum = 0.0;
    weights
        .filter(|(_, w)| *w > 0.0)
        .map(|(v, w)| {
            sum += w;
            (v, sum)
        })
        .collect()
}

fn pick<T: Copy>(cumulative: &[(T, f64)], rng: &mut ChaCha8Rng) -> T {
    let total = cumulative.last().expect("config checks weights").1;
    let x = rng.random::<f64>() * total;
    cumulative
        .iter()
        .find(|(_, c)| x < *c)
        .unwrap_or(cumulative.last().expect("non-empty"))
        .0
}

/// `M-` and `n` in five digits (`n` < 100 000), written without the formatting machinery: one
/// per record.
fn merchant_id(n: u32) -> compact_str::CompactString {
    let mut id = *b"M-00000";
    model::transaction::zero_padded(&mut id[2..], u64::from(n));
    compact_str::CompactString::from_utf8(id).expect("ASCII")
}

fn weighted_index(weights: &[u32], rng: &mut ChaCha8Rng) -> usize {
    let mut x = rng.random_range(0..weights.iter().sum::<u32>());
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{validate, Rules};

    #[test]
    fn merchant_ids_have_five_digits() {
        for n in [0, 7, 12_345, 19_999, 99_999] {
            assert_eq!(merchant_id(n), format!("M-{n:05}"));
        }
    }

    fn run(config: GeneratorConfig, seed: u64, n: usize) -> Vec<(Vec<u8>, Meta)> {
        let mut g = Generator::new(config, Some(seed));
        (0..n)
            .map(|_| {
                let mut buf = Vec::new();
                let meta = g.next_into(&mut buf);
                (buf, meta)
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let a = run(GeneratorConfig::default(), 7, 2000);
        let b = run(GeneratorConfig::default(), 7, 2000);
        assert_eq!(a, b);
        let c = run(GeneratorConfig::default(), 8, 2000);
        assert_ne!(a, c);
    }

    #[test]
    fn labels_agree_with_validation_for_every_kind() {
        let mut config = GeneratorConfig::default();
        config.invalid.share = 0.5;
        config.patterns.high_value = 0.1;
        config.patterns.night = 0.1;
        config.patterns.bursts.share = 0.05;
        let rules = Rules::default();
        let mut seen = std::collections::HashSet::new();
        for (bytes, meta) in run(config, 1, 20_000) {
            let verdict = match validate(&bytes, &rules) {
                Ok(t) => {
                    assert_eq!(
                        t.account_id, meta.key,
                        "valid records are keyed by their account"
                    );
                    Label::Valid
                }
                Err(r) => Label::Invalid {
                    error: r.error,
                    field: r.field,
                },
            };
            assert_eq!(
                verdict,
                meta.label,
                "{}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
            );
            if let Label::Invalid { error, .. } = verdict {
                seen.insert(error);
            }
        }
        assert_eq!(
            seen.len(),
            ErrorCode::ALL.len(),
            "every error code is generated: {seen:?}"
        );
    }

    #[test]
    fn patterns_appear_in_their_shares() {
        let mut config = GeneratorConfig::default();
        config.invalid.share = 0.0;
        config.patterns.bursts.share = 0.0;
        config.patterns.night = 0.0;
        config.patterns.high_value = 0.1;
        let rules = Rules::default();
        let records = run(config, 3, 10_000);
        let high = records
            .iter()
            .map(|(b, _)| validate(b, &rules).unwrap())
            .filter(|t| {
                t.amount.to_decimal() * rules.fx_rate(t.currency).unwrap()
                    > rules.rules.high_value.threshold_usd
            })
            .count();
        assert!(
            (800..1200).contains(&high),
            "{high} high-value records of 10 000 at a share of 0.1"
        );
    }

    #[test]
    fn bursts_put_several_transactions_of_one_account_within_the_spread() {
        let mut config = GeneratorConfig::default();
        config.invalid.share = 0.0;
        config.patterns.bursts.share = 0.01;
        config.accounts = 1_000_000;
        // 200 simulated seconds, so most bursts (30 s long) complete within the run.
        config.seeded_clock.records_per_second = 100;
        let rules = Rules::default();
        let txns: Vec<Transaction> = run(config, 4, 20_000)
            .iter()
            .map(|(b, _)| validate(b, &rules).unwrap())
            .collect();
        let mut by_account = std::collections::HashMap::<AccountId, Vec<i64>>::new();
        for t in &txns {
            by_account
                .entry(t.account_id)
                .or_default()
                .push(t.event_time.as_micros());
        }
        // With a million accounts, five transactions of one account within 31 s are bursts.
        let bursts = by_account
            .values_mut()
            .map(|times| {
                times.sort();
                times
                    .windows(5)
                    .any(|w| w[4] - w[0] <= 31 * MICROS_PER_SECOND)
            })
            .filter(|b| *b)
            .count();
        assert!(
            (120..280).contains(&bursts),
            "{bursts} bursts, expected about 200"
        );
    }

    #[test]
    fn night_records_fall_in_the_night_window_and_never_in_the_future() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let base = EventTime::parse_rfc3339("2026-03-02T00:00:00Z")
            .unwrap()
            .as_micros();
        for minutes in (0..48 * 60).step_by(7) {
            let now = base + minutes * 60 * MICROS_PER_SECOND;
            let t = night_time(now, &mut rng);
            assert!(t <= now);
            assert!((1..5).contains(&EventTime::from_micros(t).hour_utc()));
        }
    }

    #[test]
    fn partitions_split_the_accounts() {
        let mut seen = std::collections::HashMap::new();
        for p in 0..4 {
            let mut g = Generator::for_partition(GeneratorConfig::default(), Some(9), p, 4);
            let mut buf = Vec::new();
            for _ in 0..2000 {
                let meta = g.next_into(&mut buf);
                assert_eq!(
                    (meta.key.number() - 1_000_000) % 4,
                    p,
                    "account of another partition"
                );
                seen.insert(meta.key, p);
            }
        }
        assert!(seen.len() > 5000, "accounts are spread: {}", seen.len());
        // Partition 0 of 1 is the plain generator.
        let a = run(GeneratorConfig::default(), 7, 50);
        let mut g = Generator::for_partition(GeneratorConfig::default(), Some(7), 0, 1);
        let b: Vec<(Vec<u8>, Meta)> = (0..50)
            .map(|_| {
                let mut buf = Vec::new();
                let m = g.next_into(&mut buf);
                (buf, m)
            })
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_reload_changes_the_stream_in_place() {
        let mut g = Generator::new(GeneratorConfig::default(), Some(5));
        let mut buf = Vec::new();
        for _ in 0..100 {
            g.next_into(&mut buf);
        }
        let mut config = GeneratorConfig::default();
        config.invalid.share = 1.0;
        g.set_config(config);
        for _ in 0..100 {
            assert_ne!(g.next_into(&mut buf).label, Label::Valid);
        }
    }
}
