//! The three rules as pure functions of the contract's definitions.
//!
//! `high_value` and `unusual_hour` look at one transaction. `rapid_activity` looks at one
//! account's transactions in `(event_time, transaction_id)` order; [`rapid_activity_model`] is
//! its definition computed by brute force, against which the dataflow's incremental version
//! is tested.

use std::collections::{BTreeMap, BTreeSet};

use model::rules::HighValue;
use model::time::MICROS_PER_SECOND;
use model::{AccountId, Currency, Details, Rule, Rules, Transaction};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use uuid::Uuid;

/// `amount × fx_rates_usd[currency] > threshold_usd`, in exact decimal arithmetic.
pub fn high_value(t: &Transaction, rules: &Rules) -> Option<Details> {
    let rule = &rules.rules.high_value;
    if !rule.enabled {
        return None;
    }
    // The currency was validated under the same rules version, so the rate exists.
    let rate = rules.fx_rate(t.currency)?;
    above(t, rule, rate)
}

/// A rules version prepared for judging transactions one at a time: for each accepted
/// currency its rate, and the largest amount (in cents) whose value is certainly not above the
/// high_value threshold. Nearly every transaction is then judged by one integer comparison, and
/// only the others by [`high_value`]'s exact product: the lookup in the rules' map and the
/// decimal product were 2 % of the Kafka path's samples.
pub struct Prepared {
    pub rules: Rules,
    /// (currency, rate, the largest amount in cents certainly not above the threshold).
    rates: Vec<(Currency, Decimal, i64)>,
}

impl Prepared {
    pub fn new(rules: Rules) -> Self {
        let threshold = rules.rules.high_value.threshold_usd;
        let rates = rules
            .fx_rates_usd
            .iter()
            .map(|(&currency, &rate)| (currency, rate, not_above(threshold, rate)))
            .collect();
        Prepared { rules, rates }
    }

    /// Whether transactions in `currency` are valid under these rules ([`Rules::accepts`]).
    pub fn accepts(&self, currency: Currency) -> bool {
        self.rates.iter().any(|r| r.0 == currency)
    }

    /// [`high_value`] under these rules.
    pub fn high_value(&self, t: &Transaction) -> Option<Details> {
        let rule = &self.rules.rules.high_value;
        if !rule.enabled {
            return None;
        }
        let &(_, rate, not_above) = self.rates.iter().find(|r| r.0 == t.currency)?;
        if t.amount.cents() <= not_above {
            return None;
        }
        above(t, rule, rate)
    }
}

/// The largest amount in cents whose value at `rate` is certainly not above `threshold`:
/// `floor(100 × threshold / rate) - 1`. The quotient has 28 significant digits, so it is
/// within far less than a cent of the exact one, and an amount at least a cent below it is below
/// the exact one: its value is below the threshold. `i64::MIN` (nothing is certain) for a rate
/// that is not positive or a quotient out of range.
fn not_above(threshold: Decimal, rate: Decimal) -> i64 {
    if rate <= Decimal::ZERO || threshold < Decimal::ZERO {
        return i64::MIN;
    }
    threshold
        .checked_div(rate)
        .and_then(|q| q.checked_mul(Decimal::ONE_HUNDRED))
        .map_or(i64::MIN, |cents| {
            (cents.floor() - Decimal::ONE).to_i64().unwrap_or(i64::MAX)
        })
}

/// Whether `t`'s amount at `rate` is above the rule's threshold, exactly.
fn above(t: &Transaction, rule: &HighValue, rate: Decimal) -> Option<Details> {
    // At most 12 digits of amount times a rate of up to 15 significant digits: within the 28
    // digits of a Decimal, so exact. An overflow can only mean a value far above any threshold.
    let usd = t
        .amount
        .to_decimal()
        .checked_mul(rate)
        .unwrap_or(Decimal::MAX);
    (usd > rule.threshold_usd).then_some(Details::HighValue {
        threshold_usd: rule.threshold_usd,
        amount_usd: usd,
        fx_rate_usd: rate,
    })
}

/// The UTC hour of the event time is in `[start_hour_utc, end_hour_utc)`.
pub fn unusual_hour(t: &Transaction, rules: &Rules) -> Option<Details> {
    let rule = &rules.rules.unusual_hour;
    let hour = t.event_time.hour_utc();
    (rule.enabled && rule.contains(hour)).then_some(Details::UnusualHour {
        start_hour_utc: rule.start_hour_utc,
        end_hour_utc: rule.end_hour_utc,
        hour_utc: hour,
    })
}

/// Where a transaction sits in its account's order: `(event_time µs, transaction_id)`.
pub type Position = (i64, Uuid);

/// For one account's transactions (any order), the ones that raise `rapid_activity`, with the
/// window that makes them: T alerts when exactly `min_count - 1` of the account's transactions
/// come before it and lie in `(T - window, T]`.
///
/// `positions` must be sorted; the result is in the same order.
pub fn rapid_activity_in(
    positions: &[Position],
    min_count: u32,
    window_seconds: u32,
) -> Vec<(Position, Vec<Uuid>)> {
    let window = i64::from(window_seconds) * MICROS_PER_SECOND;
    let mut alerts = Vec::new();
    // `start` is the first position still inside the window of position `i`.
    let mut start = 0;
    for (i, &(time, id)) in positions.iter().enumerate() {
        while positions[start].0 <= time - window {
            start += 1;
        }
        if (i - start) as u64 == u64::from(min_count) - 1 {
            let ids = positions[start..=i].iter().map(|p| p.1).collect();
            alerts.push(((time, id), ids));
        }
    }
    alerts
}

/// The contract's `rapid_activity` computed by brute force over a whole set of (non-late)
/// transactions: `(transaction_id, window ids)` of every alert. The reference the dataflow is
/// tested against.
pub fn rapid_activity_model<'a>(
    transactions: impl IntoIterator<Item = &'a Transaction>,
    rules: &Rules,
) -> Vec<(Uuid, Vec<Uuid>)> {
    let rule = &rules.rules.rapid_activity;
    if !rule.enabled {
        return Vec::new();
    }
    let mut by_account: BTreeMap<AccountId, Vec<Position>> = BTreeMap::new();
    for t in transactions {
        by_account
            .entry(t.account_id)
            .or_default()
            .push((t.event_time.as_micros(), t.transaction_id));
    }
    let mut out = Vec::new();
    for positions in by_account.values_mut() {
        positions.sort();
        for ((_, id), ids) in rapid_activity_in(positions, rule.min_count, rule.window_seconds) {
            out.push((id, ids));
        }
    }
    out.sort();
    out
}

/// Every alert the three rules raise, by brute force: high_value and unusual_hour on all of
/// `valid`, rapid_activity on those of them that are `on_time` (not late). The reference the
/// dataflow is tested against.
pub fn model_alerts(valid: &[(Transaction, bool)], rules: &Rules) -> BTreeSet<(Rule, Uuid)> {
    let mut out = BTreeSet::new();
    for (t, _) in valid {
        if high_value(t, rules).is_some() {
            out.insert((Rule::HighValue, t.transaction_id));
        }
        if unusual_hour(t, rules).is_some() {
            out.insert((Rule::UnusualHour, t.transaction_id));
        }
    }
    let on_time = valid.iter().filter(|(_, on_time)| *on_time).map(|(t, _)| t);
    for (id, _) in rapid_activity_model(on_time, rules) {
        out.insert((Rule::RapidActivity, id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenarios of tests/vectors/rules.json: each rule's alerts, no more, no fewer.
    #[test]
    fn shared_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/rules.json");
        let scenarios: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rules = Rules::default();
        for s in scenarios.as_array().unwrap() {
            let note = s["note"].as_str().unwrap();
            let txns: Vec<Transaction> = s["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| model::validate(r.to_string().as_bytes(), &rules).expect(note))
                .collect();
            let valid: Vec<(Transaction, bool)> = txns.into_iter().map(|t| (t, true)).collect();
            let got = model_alerts(&valid, &rules);
            let want: BTreeSet<(Rule, Uuid)> = s["expect_alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        Rule::parse(a[0].as_str().unwrap()).unwrap(),
                        a[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{note}");
        }
    }

    fn at(secs: i64, n: u128) -> Position {
        (secs * MICROS_PER_SECOND, Uuid::from_u128(n))
    }

    #[test]
    fn window_boundaries() {
        // Five within 59 s alert on the fifth; one exactly 60 s older is outside the window.
        let p = [
            at(0, 1),
            at(10, 2),
            at(20, 3),
            at(30, 4),
            at(59, 5),
            at(60, 6),
        ];
        let alerts: Vec<Position> = rapid_activity_in(&p, 5, 60)
            .into_iter()
            .map(|a| a.0)
            .collect();
        assert_eq!(alerts, vec![at(59, 5), at(60, 6)]);
        // Equal times are ordered by transaction id.
        let p = [at(5, 1), at(5, 2), at(5, 3), at(5, 4), at(5, 5), at(5, 6)];
        let alerts = rapid_activity_in(&p, 5, 60);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].0, at(5, 5));
        assert_eq!(
            alerts[0].1,
            (1..=5).map(Uuid::from_u128).collect::<Vec<_>>()
        );
        // min_count 1: a transaction alerts when none of the account's came in the window before.
        assert_eq!(rapid_activity_in(&p, 1, 60).len(), 1);
        let alone: Vec<Position> = rapid_activity_in(&[at(0, 1), at(60, 2), at(61, 3)], 1, 60)
            .into_iter()
            .map(|a| a.0)
            .collect();
        assert_eq!(alone, vec![at(0, 1), at(60, 2)]);
    }

    #[test]
    fn a_sustained_burst_alerts_once_until_the_window_drains() {
        // One a second for 100 s: the 5th alerts, then never again while the window holds ≥ 5.
        let p: Vec<Position> = (0..100).map(|s| at(s, s as u128)).collect();
        assert_eq!(rapid_activity_in(&p, 5, 60).len(), 1);
        // A pause of 57 s leaves the window with fewer than 5; the next burst alerts again.
        let mut p: Vec<Position> = (0..5).map(|s| at(s, s as u128)).collect();
        p.extend((62..67).map(|s| at(s, s as u128)));
        let alerts: Vec<Position> = rapid_activity_in(&p, 5, 60)
            .into_iter()
            .map(|a| a.0)
            .collect();
        assert_eq!(alerts, vec![at(4, 4), at(66, 66)]);
    }

    proptest::proptest! {
        /// The prepared rules' integer comparison never changes a verdict: the same details as
        /// the exact product for any threshold, rate and amount, near the boundary above all.
        #[test]
        fn prepared_high_value_is_the_exact_one(
            threshold_cents in 0i64..100_000_000_000,
            rate_digits in 1i64..100_000_000_000,
            rate_scale in 0u32..12,
            amount in 1i64..=100_000_000_000,
            near in proptest::bool::ANY,
            nudge in -2i64..=2,
        ) {
            let mut rules = Rules::default();
            let usd = Currency::parse("USD").unwrap();
            let rate = Decimal::new(rate_digits, rate_scale);
            rules.fx_rates_usd.insert(usd, rate);
            rules.rules.high_value.threshold_usd = Decimal::new(threshold_cents, 2);
            // Half the cases at the threshold's own amount, give or take two cents.
            let cents = if near {
                let q = Decimal::new(threshold_cents, 0) / rate;
                (q.floor().to_i64().unwrap_or(i64::MAX / 2) + nudge).clamp(1, 100_000_000_000)
            } else {
                amount
            };
            let mut t = transaction();
            t.currency = usd;
            t.amount = model::Amount::from_cents(cents).unwrap();
            let prepared = Prepared::new(rules.clone());
            proptest::prop_assert_eq!(prepared.high_value(&t), high_value(&t, &rules));
        }
    }

    fn transaction() -> Transaction {
        let json = r#"{"transaction_id":"1de9ea66-70d3-4a1f-8735-df5ef7697fb9","account_id":"ACC0000001","amount":1,"currency":"USD","merchant_id":"M","transaction_type":"purchase","channel":"pos","event_time":"2026-03-10T09:30:00Z"}"#;
        model::validate(json.as_bytes(), &Rules::default()).unwrap()
    }

    #[test]
    fn high_value_is_strictly_greater_in_exact_decimals() {
        let rules = Rules::default();
        let t = |amount: &str, currency: &str| {
            let json = format!(
                r#"{{"transaction_id":"1de9ea66-70d3-4a1f-8735-df5ef7697fb9","account_id":"ACC0000001","amount":{amount},"currency":"{currency}","merchant_id":"M","transaction_type":"purchase","channel":"pos","event_time":"2026-03-10T09:30:00Z"}}"#
            );
            model::validate(json.as_bytes(), &rules).unwrap()
        };
        assert!(high_value(&t("10000.00", "USD"), &rules).is_none());
        assert!(high_value(&t("10000.01", "USD"), &rules).is_some());
        // 9259.26 × 1.08 = 10000.0008 > 10000; 9259.25 × 1.08 = 9999.99 (exactly).
        assert!(high_value(&t("9259.26", "EUR"), &rules).is_some());
        assert!(high_value(&t("9259.25", "EUR"), &rules).is_none());
        // JPY at 0.0067: 1492537.31 × 0.0067 = 9999.999977; one cent more is 10000.000044.
        assert!(high_value(&t("1492537.31", "JPY"), &rules).is_none());
        assert!(high_value(&t("1492537.32", "JPY"), &rules).is_some());
        let Some(Details::HighValue { amount_usd, .. }) = high_value(&t("9259.26", "EUR"), &rules)
        else {
            panic!()
        };
        assert_eq!(amount_usd.to_string(), "10000.0008");
    }
}
