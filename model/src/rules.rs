//! The rules file (`config/alerting-rules.yaml`): its types, its defaults, and its validation.
//!
//! Every key has the contract's default, so a file only needs the keys it changes. Unknown keys
//! are refused, because a misspelt `treshold_usd` silently keeping the default is the kind of
//! mistake that costs money. Numbers are exact: YAML's `1.08` reaches us as the shortest decimal
//! that round-trips through the YAML parser's float, which is the text the user wrote for any
//! rate of up to 15 significant digits; rates may also be written as strings (`"1.0800"`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config_file::{self, ConfigError};
use crate::transaction::Currency;

/// The whole rules file, as in force at one point of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Stamped on every alert raised under these rules; bump it when you edit the file.
    pub version: u64,
    /// USD value of one unit of each accepted currency. Its keys are the accepted currencies.
    pub fx_rates_usd: BTreeMap<Currency, Decimal>,
    pub rules: RuleSet,
    /// How far behind the newest event time a record may arrive and still count in windows.
    pub allowed_lateness_seconds: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSet {
    pub high_value: HighValue,
    pub rapid_activity: RapidActivity,
    pub unusual_hour: UnusualHour,
}

/// `amount × fx_rates_usd[currency] > threshold_usd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HighValue {
    pub enabled: bool,
    pub severity: Severity,
    pub threshold_usd: Decimal,
}

/// An alert when a transaction brings its account's trailing window to `min_count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RapidActivity {
    pub enabled: bool,
    pub severity: Severity,
    pub min_count: u32,
    pub window_seconds: u32,
}

/// The UTC hour of the event time is in `[start_hour_utc, end_hour_utc)`. A window with
/// `start > end` wraps over midnight (`22` to `2` means 22:00 to 01:59:59.999999).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnusualHour {
    pub enabled: bool,
    pub severity: Severity,
    pub start_hour_utc: u32,
    pub end_hour_utc: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        let fx = [
            ("USD", 100, 2),
            ("EUR", 108, 2),
            ("GBP", 127, 2),
            ("JPY", 67, 4),
            ("CAD", 73, 2),
            ("AUD", 66, 2),
            ("CHF", 113, 2),
            ("CNY", 14, 2),
            ("INR", 12, 3),
            ("MXN", 58, 3),
            ("BRL", 18, 2),
            ("SGD", 74, 2),
        ];
        Rules {
            version: 1,
            fx_rates_usd: fx
                .iter()
                .map(|&(c, m, s)| (Currency::parse(c).expect("static code"), Decimal::new(m, s)))
                .collect(),
            rules: RuleSet::default(),
            allowed_lateness_seconds: 5,
        }
    }
}

impl Default for HighValue {
    fn default() -> Self {
        HighValue {
            enabled: true,
            severity: Severity::High,
            threshold_usd: Decimal::from(10_000),
        }
    }
}

impl Default for RapidActivity {
    fn default() -> Self {
        RapidActivity {
            enabled: true,
            severity: Severity::Medium,
            min_count: 5,
            window_seconds: 60,
        }
    }
}

impl Default for UnusualHour {
    fn default() -> Self {
        UnusualHour {
            enabled: true,
            severity: Severity::Low,
            start_hour_utc: 1,
            end_hour_utc: 5,
        }
    }
}

impl UnusualHour {
    /// Whether `hour` (0..=23) is inside the configured window.
    pub fn contains(&self, hour: u32) -> bool {
        if self.start_hour_utc <= self.end_hour_utc {
            (self.start_hour_utc..self.end_hour_utc).contains(&hour)
        } else {
            hour >= self.start_hour_utc || hour < self.end_hour_utc
        }
    }
}

impl Rules {
    /// Reads, parses and validates a rules file.
    pub fn load(path: &Path) -> Result<Rules, ConfigError> {
        Rules::from_yaml(&config_file::read(path)?, path)
    }

    /// Parses and validates the text of a rules file; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Rules, ConfigError> {
        let rules: Rules = config_file::parse(text, origin)?;
        rules
            .check()
            .map_err(|(key, problem)| ConfigError::new(origin, key, problem))?;
        Ok(rules)
    }

    /// The semantic checks a well-typed file must also pass.
    fn check(&self) -> Result<(), (String, String)> {
        self.check_keys().map_err(|(k, p)| (k.into_owned(), p))
    }

    fn check_keys(&self) -> Result<(), (std::borrow::Cow<'static, str>, String)> {
        if self.fx_rates_usd.is_empty() {
            return Err((
                "fx_rates_usd".into(),
                "must list at least one currency".into(),
            ));
        }
        if let Some((c, r)) = self.fx_rates_usd.iter().find(|(_, r)| **r <= Decimal::ZERO) {
            return Err((
                format!("fx_rates_usd.{c}").into(),
                format!("must be greater than 0, not {r}"),
            ));
        }
        let r = &self.rules;
        if r.high_value.threshold_usd < Decimal::ZERO {
            return Err((
                "rules.high_value.threshold_usd".into(),
                "must not be negative".into(),
            ));
        }
        if r.rapid_activity.min_count == 0 {
            return Err((
                "rules.rapid_activity.min_count".into(),
                "must be at least 1".into(),
            ));
        }
        if r.rapid_activity.window_seconds == 0 {
            return Err((
                "rules.rapid_activity.window_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if r.unusual_hour.start_hour_utc > 23 {
            return Err((
                "rules.unusual_hour.start_hour_utc".into(),
                "must be an hour from 0 to 23".into(),
            ));
        }
        if r.unusual_hour.end_hour_utc > 24 {
            return Err((
                "rules.unusual_hour.end_hour_utc".into(),
                "must be an hour from 0 to 24".into(),
            ));
        }
        if r.unusual_hour.start_hour_utc == r.unusual_hour.end_hour_utc {
            return Err((
                "rules.unusual_hour.end_hour_utc".into(),
                "equals start_hour_utc, an empty window: set enabled: false instead".into(),
            ));
        }
        Ok(())
    }

    /// The USD value of one unit of `currency`, if it is accepted.
    pub fn fx_rate(&self, currency: Currency) -> Option<Decimal> {
        self.fx_rates_usd.get(&currency).copied()
    }

    /// Whether transactions in `currency` are valid under these rules.
    pub fn accepts(&self, currency: Currency) -> bool {
        self.fx_rates_usd.contains_key(&currency)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "currency code {s:?} must be three upper-case letters (ISO 4217)"
            ))
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rules, ConfigError> {
        Rules::from_yaml(text, Path::new("rules.yaml"))
    }

    #[test]
    fn the_shipped_file_is_the_contract_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/alerting-rules.yaml");
        assert_eq!(Rules::load(&path).unwrap(), Rules::default());
    }

    #[test]
    fn missing_keys_take_defaults() {
        let r = parse("version: 7\nrules: {high_value: {threshold_usd: 5000.50}}").unwrap();
        assert_eq!(r.version, 7);
        assert_eq!(r.rules.high_value.threshold_usd, Decimal::new(500050, 2));
        assert!(r.rules.high_value.enabled);
        assert_eq!(r.rules.rapid_activity, RapidActivity::default());
        assert_eq!(r.fx_rates_usd, Rules::default().fx_rates_usd);
    }

    #[test]
    fn rates_are_exact_decimals() {
        let r = parse("fx_rates_usd: {USD: 1, JPY: 0.0067, XAU: \"2650.125\"}").unwrap();
        let rate = |c| r.fx_rate(Currency::parse(c).unwrap()).unwrap().to_string();
        assert_eq!(rate("JPY"), "0.0067");
        assert_eq!(rate("XAU"), "2650.125");
        assert!(!r.accepts(Currency::parse("EUR").unwrap()));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let e = parse("rules: {high_value: {treshold_usd: 1}}").unwrap_err();
        assert_eq!(e.key, "rules.high_value.treshold_usd");
        assert!(e.problem.contains("unknown field"), "{e}");
        assert!(
            e.to_string()
                .starts_with("rules.yaml: rules.high_value.treshold_usd: "),
            "{e}"
        );

        let e = parse("rules: {rapid_activity: {min_count: 0}}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules.yaml: rules.rapid_activity.min_count: must be at least 1"
        );

        let e = parse("rules: {rapid_activity: {min_count: -3}}").unwrap_err();
        assert_eq!(e.key, "rules.rapid_activity.min_count");

        let e = parse("fx_rates_usd: {usd: 1}").unwrap_err();
        assert_eq!(e.key, "fx_rates_usd.usd");
        assert!(e.problem.contains("three upper-case letters"), "{e}");

        let e = parse("fx_rates_usd: {USD: 0}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules.yaml: fx_rates_usd.USD: must be greater than 0, not 0"
        );

        let e = parse("version: [1").unwrap_err();
        assert!(e.to_string().starts_with("rules.yaml: "), "{e}");

        let e = Rules::load(Path::new("/nonexistent/rules.yaml")).unwrap_err();
        assert!(e.problem.starts_with("cannot read the file"), "{e}");
    }

    #[test]
    fn hour_window_bounds() {
        let r = parse("").unwrap().rules.unusual_hour;
        assert!(!r.contains(0) && r.contains(1) && r.contains(4) && !r.contains(5));
        let wrap = parse("rules: {unusual_hour: {start_hour_utc: 22, end_hour_utc: 2}}")
            .unwrap()
            .rules
            .unusual_hour;
        assert!(wrap.contains(22) && wrap.contains(23) && wrap.contains(0) && wrap.contains(1));
        assert!(!wrap.contains(2) && !wrap.contains(21));
        assert!(parse("rules: {unusual_hour: {start_hour_utc: 3, end_hour_utc: 3}}").is_err());
        assert!(parse("rules: {unusual_hour: {start_hour_utc: 24}}").is_err());
        assert!(parse("rules: {unusual_hour: {start_hour_utc: 20, end_hour_utc: 24}}").is_ok());
    }
}
