//! `judge`: finishes each record's validation and applies the per-record rules, under the
//! rules version in force at the record's time.
//!
//! Rules versions arrive as data on a second input, each at the time from which it applies.
//! A record at time `t` is judged once that input's frontier has passed `t`, so that every
//! worker of every process judges it under the same version: the rules feed holds its
//! frontier just behind the newest event time every partition has reached
//! ([`crate::rules_feed`]), so in a steady stream records wait a few milliseconds at most.
//! Late records sit at the watermark and are judged under the version in force there.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use model::{Alert, DeadLetter, EventTime, Rule, Rules, Severity, Source, Transaction};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::metrics::{Metrics, Tally};
use crate::rules;
use crate::rules_feed::RulesVersion;
use crate::source::Arrival;

/// The parameters of `rapid_activity` in force for a transaction, when the rule is enabled.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RapidParams {
    pub min_count: u32,
    pub window_seconds: u32,
    pub severity: Severity,
}

/// A valid transaction, where it was read, and the rules it was judged under.
#[derive(Clone, Debug)]
pub struct Valid {
    pub txn: Transaction,
    pub partition: i32,
    pub offset: i64,
    pub late: bool,
    pub rules_version: u64,
    /// `None` when rapid_activity is disabled for this transaction.
    pub rapid: Option<RapidParams>,
}

/// What judging a record yields.
#[derive(Clone, Debug)]
pub enum Verdict {
    Valid(Valid),
    /// A valid transaction's entry in its account's rapid_activity window (not for late
    /// transactions, nor when the rule is disabled): a few bytes, where the whole transaction
    /// would be copied for a second consumer.
    Window(
        u32,
        crate::rapid_activity::Windowed,
        crate::rapid_activity::Payload,
    ),
    /// An invalid record and its Kafka key, unchanged.
    Dead(DeadLetter, Option<Vec<u8>>),
    Alert(Alert),
}

/// The judge operator: arrivals and rules versions in, verdicts out (at the arrival's time).
pub fn judge<'scope>(
    arrivals: Stream<'scope, u64, Vec<Arrival>>,
    rules: Stream<'scope, u64, Vec<RulesVersion>>,
    topic: Rc<str>,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Verdict>> {
    arrivals.binary_frontier(rules, Pipeline, Pipeline, "Judge", move |_cap, _info| {
        // Every rules version by the time it applies from; versions no record can need any
        // more are dropped as the frontier advances.
        let mut timeline: BTreeMap<u64, Arc<Rules>> = BTreeMap::new();
        // Arrivals waiting for the rules frontier to pass their time.
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Arrival>)> = BTreeMap::new();
        let mut tally = Tally::default();

        move |(arrivals, arrivals_frontier), (versions, rules_frontier), output| {
            versions.for_each(|cap, data| {
                // Messages sent under no capability carry no time and make no claims.
                let Some(&t) = cap.least() else { return };
                for v in data.drain(..) {
                    match Rules::from_yaml(&v.text, std::path::Path::new(&v.origin)) {
                        Ok(r) => {
                            timeline.insert(t, Arc::new(r));
                        }
                        // The feed validated it already; a different parse here is a bug.
                        Err(e) => tracing::error!(
                            "rules version {} does not parse on this worker: {e}",
                            v.version
                        ),
                    }
                }
            });
            arrivals.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                let t = *cap.time();
                // The common case in a steady stream: the rules for `t` are already known.
                if !rules_frontier.less_equal(&t) {
                    if let Some((_, rules)) = timeline.range(..=t).next_back() {
                        let mut session = output.session(&cap);
                        for a in data.drain(..) {
                            judge_one(a, rules, &topic, &mut tally, |v| session.give(v));
                        }
                        return;
                    }
                }
                let (_, stash) = pending.entry(t).or_insert_with(|| (cap, Vec::new()));
                stash.append(data);
            });
            let ready: Vec<u64> = pending
                .keys()
                .copied()
                .take_while(|t| !rules_frontier.less_equal(t))
                .collect();
            for t in ready {
                let (cap, batch) = pending.remove(&t).expect("listed");
                let Some((_, rules)) = timeline.range(..=t).next_back() else {
                    tracing::error!("no rules version for time {t}: records held back");
                    pending.insert(t, (cap, batch));
                    break;
                };
                let rules = rules.clone();
                let mut session = output.session(&cap);
                for a in batch {
                    judge_one(a, &rules, &topic, &mut tally, |v| session.give(v));
                }
            }
            // Versions before the last one at or before every time still to come are done.
            let horizon = arrivals_frontier
                .frontier()
                .iter()
                .copied()
                .min()
                .unwrap_or(u64::MAX);
            let horizon = pending
                .keys()
                .next()
                .copied()
                .map_or(horizon, |p| p.min(horizon));
            if let Some((&keep, _)) = timeline.range(..=horizon).next_back() {
                timeline.retain(|t, _| *t >= keep);
            }
            tally.flush(&metrics);
        }
    })
}

fn judge_one(
    a: Arrival,
    rules: &Rules,
    topic: &Rc<str>,
    tally: &mut Tally,
    mut out: impl FnMut(Verdict),
) {
    let raw = a.raw;
    match a.verdict.resolve(rules) {
        Err(rejection) => {
            tally.invalid += 1;
            let source = Source {
                topic: topic.to_string(),
                partition: raw.partition,
                offset: raw.offset,
                timestamp_ms: raw.timestamp_ms,
            };
            out(Verdict::Dead(
                DeadLetter::new(rejection, &raw.payload, source, EventTime::now()),
                raw.key,
            ));
        }
        Ok(txn) => {
            tally.valid += 1;
            if a.late {
                tally.late += 1;
            }
            let checks = [
                (
                    Rule::HighValue,
                    rules.rules.high_value.severity,
                    rules::high_value(&txn, rules),
                ),
                (
                    Rule::UnusualHour,
                    rules.rules.unusual_hour.severity,
                    rules::unusual_hour(&txn, rules),
                ),
            ];
            for (rule, severity, details) in checks {
                if let Some(details) = details {
                    tally.alert(rule);
                    out(Verdict::Alert(Alert::new(
                        rule,
                        severity,
                        rules.version,
                        &txn,
                        details,
                        EventTime::now(),
                    )));
                }
            }
            let r = &rules.rules.rapid_activity;
            let valid = Valid {
                txn,
                partition: raw.partition,
                offset: raw.offset,
                late: a.late,
                rules_version: rules.version,
                rapid: r.enabled.then_some(RapidParams {
                    min_count: r.min_count,
                    window_seconds: r.window_seconds,
                    severity: r.severity,
                }),
            };
            if let Some((account, w, p)) = crate::rapid_activity::Windowed::entry(&valid) {
                out(Verdict::Window(account, w, p));
            }
            out(Verdict::Valid(valid));
        }
    }
}
