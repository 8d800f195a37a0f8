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

use model::{Alert, DeadLetter, Deferred, EventTime, Rule, Rules, Severity, Source, Transaction};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::metrics::{Metrics, Tally};
use crate::rapid_activity::{Entry, ParamsTimeline, WindowParams, Windowed};
use crate::rules::{self, Prepared};
use crate::rules_feed::RulesVersion;
use crate::source::{Arrival, Key};

/// A valid transaction, where it was read, and the rules it was judged under.
#[derive(Clone, Debug)]
pub struct Valid {
    pub txn: Transaction,
    pub partition: i32,
    pub offset: i64,
    pub late: bool,
    pub rules_version: u64,
    /// The severity of rapid_activity, `None` when the rule is disabled for this transaction
    /// (its window and count are looked up by event time: [`crate::rapid_activity::params`]).
    pub rapid_severity: Option<Severity>,
}

/// What judging a record yields.
#[derive(Clone, Debug)]
pub enum Verdict {
    Valid(Valid),
    /// An invalid record and its Kafka key, unchanged.
    Dead(DeadLetter, Option<Key>),
    Alert(Alert),
}

/// The judge operator: arrivals and rules versions in; verdicts out, and on a second output
/// each valid transaction's entry in its account's rapid_activity window (not for late
/// transactions, nor when the rule is disabled): a few bytes, where the whole transaction would
/// be copied for a second consumer. Both at the arrival's time. Valid transactions are verdicts
/// only when `transactions` says something downstream keeps them (the lakehouse, an emitter);
/// they are counted either way. Each version's rapid_activity parameters are recorded in
/// `params` as it is read, for the worker's rapid_activity operators.
pub fn judge<'scope>(
    arrivals: Stream<'scope, u64, Vec<Arrival>>,
    rules: Stream<'scope, u64, Vec<RulesVersion>>,
    params: ParamsTimeline,
    topic: Rc<str>,
    transactions: bool,
    metrics: Arc<Metrics>,
) -> (
    Stream<'scope, u64, Vec<Verdict>>,
    Stream<'scope, u64, Vec<Entry>>,
) {
    let mut builder = OperatorBuilder::new("Judge".to_owned(), arrivals.scope());
    let (verdicts_out, verdicts) = builder.new_output::<Vec<Verdict>>();
    let (entries_out, entries) = builder.new_output::<Vec<Entry>>();
    let mut arrivals = builder.new_input(arrivals, Pipeline);
    let mut versions = builder.new_input(rules, Pipeline);
    let mut verdicts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Verdict>>>::from(verdicts_out);
    let mut entries_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Entry>>>::from(entries_out);
    builder.build(move |_caps| {
        // Every rules version by the time it applies from; versions no record can need any
        // more are dropped as the frontier advances.
        let mut timeline: BTreeMap<u64, Arc<Prepared>> = BTreeMap::new();
        // Arrivals waiting for the rules frontier to pass their time, with capabilities for
        // both outputs: the messages as they came. (Reading a backlog, a third of the records
        // wait here; appending them to one list copied each and grew the list page by page.)
        let mut pending: BTreeMap<u64, (Caps, Vec<Vec<Arrival>>)> = BTreeMap::new();
        let mut tally = Tally::default();

        move |frontiers| {
            let (arrivals_frontier, rules_frontier) = (&frontiers[0], &frontiers[1]);
            let mut verdicts_out = verdicts_out.activate();
            let mut entries_out = entries_out.activate();
            versions.for_each(|cap, data| {
                // Messages sent under no capability carry no time and make no claims.
                let Some(&t) = cap.least() else { return };
                for v in data.drain(..) {
                    match Rules::from_yaml(&v.text, std::path::Path::new(&v.origin)) {
                        Ok(r) => {
                            params.insert(t, WindowParams::of(&r.rules.rapid_activity));
                            timeline.insert(t, Arc::new(Prepared::new(r)));
                        }
                        // The feed validated it already; a different parse here is a bug.
                        Err(e) => tracing::error!(
                            "rules version {} does not parse on this worker: {e}",
                            v.version
                        ),
                    }
                }
            });
            // Judges a batch of arrivals of one time under the rules version `prepared`, at `caps`.
            let mut judge_all = |caps: &Caps, batch: &mut Vec<Arrival>, prepared: &Prepared| {
                let mut verdicts = verdicts_out.session(&caps.0);
                let mut entries = entries_out.session(&caps.1);
                for a in batch.drain(..) {
                    judge_one(
                        a,
                        prepared,
                        &topic,
                        transactions,
                        &mut tally,
                        |v| verdicts.give(v),
                        |e| entries.give(e),
                    );
                }
            };
            arrivals.for_each(|cap, data| {
                let (Some(verdict_cap), Some(entry_cap)) =
                    (cap.retain_least(0), cap.retain_least(1))
                else {
                    return;
                };
                let t = *verdict_cap.time();
                let caps = (verdict_cap, entry_cap);
                // The common case in a steady stream: the rules for `t` are already known.
                if !rules_frontier.less_equal(&t) {
                    if let Some((_, rules)) = timeline.range(..=t).next_back() {
                        judge_all(&caps, data, rules);
                        return;
                    }
                }
                let (_, stash) = pending.entry(t).or_insert_with(|| (caps, Vec::new()));
                stash.push(std::mem::take(data));
            });
            let ready: Vec<u64> = pending
                .keys()
                .copied()
                .take_while(|t| !rules_frontier.less_equal(t))
                .collect();
            for t in ready {
                let (caps, batches) = pending.remove(&t).expect("listed");
                let Some((_, rules)) = timeline.range(..=t).next_back() else {
                    tracing::error!("no rules version for time {t}: records held back");
                    pending.insert(t, (caps, batches));
                    break;
                };
                for mut batch in batches {
                    judge_all(&caps, &mut batch, rules);
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
    });
    (verdicts, entries)
}

/// Capabilities of one time for the verdicts and the window entries.
type Caps = (Capability<u64>, Capability<u64>);

fn judge_one(
    a: Arrival,
    prepared: &Prepared,
    topic: &Rc<str>,
    transactions: bool,
    tally: &mut Tally,
    mut out: impl FnMut(Verdict),
    mut window: impl FnMut(Entry),
) {
    let raw = a.raw;
    let rules = &prepared.rules;
    let verdict = match a.verdict {
        // The common case, without a search of the rules' map.
        Deferred::Pending { currency, rest } if prepared.accepts(currency) => rest,
        other => other.resolve(rules),
    };
    match verdict {
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
                    prepared.high_value(&txn),
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
                rapid_severity: r.enabled.then_some(r.severity),
            };
            if let Some((account, w, p)) = Windowed::entry(&valid) {
                window((account, w, Some(p)));
            }
            if transactions {
                out(Verdict::Valid(valid));
            }
        }
    }
}
