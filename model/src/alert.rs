//! An alert: one rule's verdict on one transaction, with the evidence for it.

use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::rules::Severity;
use crate::time::EventTime;
use crate::transaction::Transaction;

/// The three rules of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    HighValue,
    RapidActivity,
    UnusualHour,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::HighValue, Rule::RapidActivity, Rule::UnusualHour];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::HighValue => "high_value",
            Rule::RapidActivity => "rapid_activity",
            Rule::UnusualHour => "unusual_hour",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the rule fired, in numbers a reviewer can check by hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Details {
    HighValue {
        #[serde(serialize_with = "number")]
        threshold_usd: Decimal,
        /// `amount × fx_rates_usd[currency]`, exact.
        #[serde(serialize_with = "number")]
        amount_usd: Decimal,
        #[serde(serialize_with = "number")]
        fx_rate_usd: Decimal,
    },
    RapidActivity {
        window_seconds: u32,
        /// How many of the account's transactions the trailing window holds, this one included.
        count: u32,
        /// Those transactions, oldest first.
        transaction_ids: Vec<Uuid>,
    },
    UnusualHour {
        start_hour_utc: u32,
        end_hour_utc: u32,
        hour_utc: u32,
    },
}

/// The contract's alert record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub alert_id: Uuid,
    pub rule: Rule,
    pub severity: Severity,
    pub rules_version: u64,
    pub transaction_id: Uuid,
    #[serde(serialize_with = "display")]
    pub account_id: crate::AccountId,
    /// Exact, as a JSON number with two decimals.
    #[serde(serialize_with = "number")]
    pub amount: crate::Amount,
    #[serde(serialize_with = "display")]
    pub currency: crate::Currency,
    pub event_time: EventTime,
    /// Wall-clock time of detection: the only field that may differ between two runs.
    pub detected_at: EventTime,
    pub details: Details,
}

/// The namespace of alert ids: `alert_id = UUIDv5(ALERT_NAMESPACE, "<rule>:<transaction_id>")`,
/// so the same input and rules give the same id and a reader can de-duplicate on it.
pub const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_54a2_8e3b_5d7c_9a10_2b4e_6c8d_0f31);

impl Alert {
    /// The deterministic id of `rule`'s alert on transaction `transaction_id`.
    pub fn id_for(rule: Rule, transaction_id: Uuid) -> Uuid {
        let name = format!("{}:{}", rule.as_str(), transaction_id.as_hyphenated());
        Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes())
    }

    /// An alert of `rule` on `t`.
    pub fn new(
        rule: Rule,
        severity: Severity,
        rules_version: u64,
        t: &Transaction,
        details: Details,
        detected_at: EventTime,
    ) -> Self {
        Alert {
            alert_id: Alert::id_for(rule, t.transaction_id),
            rule,
            severity,
            rules_version,
            transaction_id: t.transaction_id,
            account_id: t.account_id,
            amount: t.amount,
            currency: t.currency,
            event_time: t.event_time,
            detected_at,
            details,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an alert always serializes")
    }

    /// Appends [`Alert::to_json`]'s text to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("an alert always serializes")
    }
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A JSON number with the value's exact digits (`120.50`), not a float's approximation.
fn number<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    let raw = serde_json::value::RawValue::from_string(v.to_string())
        .map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, Rules};

    #[test]
    fn ids_are_deterministic_and_differ_by_rule() {
        let t = Uuid::parse_str("1de9ea66-70d3-4a1f-8735-df5ef7697fb9").unwrap();
        assert_eq!(
            Alert::id_for(Rule::HighValue, t),
            Alert::id_for(Rule::HighValue, t)
        );
        assert_ne!(
            Alert::id_for(Rule::HighValue, t),
            Alert::id_for(Rule::UnusualHour, t)
        );
        assert_eq!(Alert::id_for(Rule::HighValue, t).get_version_num(), 5);
    }

    #[test]
    fn contract_json_shape() {
        let t = validate(
            br#"{"transaction_id":"1de9ea66-70d3-4a1f-8735-df5ef7697fb9","account_id":"ACC1234567",
                "amount":120.5,"currency":"USD","merchant_id":"M","transaction_type":"purchase",
                "channel":"pos","event_time":"2026-02-16T12:00:00.123456Z"}"#,
            &Rules::default(),
        )
        .unwrap();
        let ids = vec![t.transaction_id; 5];
        let a = Alert::new(
            Rule::RapidActivity,
            Severity::Medium,
            1,
            &t,
            Details::RapidActivity {
                window_seconds: 60,
                count: 5,
                transaction_ids: ids,
            },
            EventTime::parse_rfc3339("2026-02-16T12:00:05.5Z").unwrap(),
        );
        let json = a.to_json();
        assert!(json.contains(r#""amount":120.50,"#), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["rule"], "rapid_activity");
        assert_eq!(v["severity"], "medium");
        assert_eq!(v["rules_version"], 1);
        assert_eq!(v["account_id"], "ACC1234567");
        assert_eq!(v["currency"], "USD");
        assert_eq!(v["event_time"], "2026-02-16T12:00:00.123456Z");
        assert_eq!(v["detected_at"], "2026-02-16T12:00:05.500000Z");
        assert_eq!(v["details"]["count"], 5);
        assert_eq!(v["details"]["transaction_ids"].as_array().unwrap().len(), 5);
        assert_eq!(v["alert_id"], a.alert_id.to_string());
    }
}
