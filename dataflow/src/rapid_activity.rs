//! `rapid_activity`: a windowed count per account over a differential arrangement.
//!
//! Each (non-late) transaction enters its account's collection at its time and leaves it one
//! window later, so the arrangement holds only what the window still needs and its memory is
//! bounded by the accounts active in the last window, not by history. When the frontier passes
//! a time, `reduce` sees, for each account changed at that time, every transaction of the
//! account's trailing window, and computes for each the contract's `before(T) + 1`: the count
//! of the account's transactions in `(T - window, T]` up to `T` in `(event_time, id)` order.
//! The count a transaction has at its own time is the contract's; an alert is raised from the
//! update made at that time only (later updates, as the window slides, are not verdicts).

use differential_dataflow::collection::AsCollection;
use model::time::MICROS_PER_SECOND;
use model::{AccountId, Alert, Amount, Currency, Details, EventTime, Rule};
use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use uuid::Uuid;

use crate::judge::{RapidParams, Valid};
use crate::metrics::Metrics;

/// The arrangement's own time step (µs): entries enter at their event time rounded *up* to a
/// step, so that differential works through a second of event time at once rather than a
/// 10 ms granule. Rounding up keeps every verdict exact (the counts compare exact event times)
/// and delays a rapid_activity alert, which waits for the allowed lateness anyway, by at most
/// a second.
const STEP: u64 = 1_000_000;

fn step_up(micros: u64) -> u64 {
    micros.div_ceil(STEP) * STEP
}

/// What the arrangement keeps of a transaction, ordered as the contract orders an account's
/// transactions: by event time, then transaction id.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Windowed {
    pub event_time: i64,
    pub transaction_id: Uuid,
    pub amount: Amount,
    pub currency: Currency,
    pub rules_version: u64,
    pub params: RapidParams,
}

/// An update of an account's window collection: ((account, entry), time, diff).
type Update = ((u32, Windowed), u64, isize);

/// A transaction whose window holds exactly its `min_count` at some time, with the window's ids.
type Counted = (Windowed, u32, Vec<Uuid>);

impl Windowed {
    /// What the window keeps of a valid transaction, keyed by account number; `None` for a
    /// late transaction or when the rule is disabled.
    pub fn entry(v: &Valid) -> Option<(u32, Windowed)> {
        let params = v.rapid.filter(|_| !v.late)?;
        let t = &v.txn;
        Some((
            t.account_id.number(),
            Windowed {
                event_time: t.event_time.as_micros(),
                transaction_id: t.transaction_id,
                amount: t.amount,
                currency: t.currency,
                rules_version: v.rules_version,
                params,
            },
        ))
    }
}

/// Alerts of the rapid_activity rule from the window entries of valid transactions.
pub fn rapid_activity<'scope>(
    entries: Stream<'scope, u64, Vec<(u32, Windowed)>>,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    window_updates(entries)
        .as_collection()
        .reduce(count_windows)
        .inner
        .flat_map(
            move |((account, (w, count, ids)), time, diff): ((u32, Counted), u64, isize)| {
                // The update at the transaction's own time is its verdict.
                let verdict =
                    diff > 0 && time == step_up(w.event_time as u64) && count == w.params.min_count;
                verdict.then(|| {
                    metrics.alert(Rule::RapidActivity);
                    to_alert(account, w, count, ids)
                })
            },
        )
}

/// Each entry as two updates of its account's collection: `+1` at its time and `-1` once its
/// window has passed. The retractions are held here and sent only when the frontier reaches
/// their time: handed to differential at once, a minute of future updates would sit in its
/// batcher and be merged again at every step of the frontier.
fn window_updates<'scope>(
    entries: Stream<'scope, u64, Vec<(u32, Windowed)>>,
) -> Stream<'scope, u64, Vec<Update>> {
    entries.unary_frontier(Pipeline, "WindowUpdates", |_cap, _info| {
        // Retractions by the time they are due.
        let mut pending: BTreeMap<u64, Vec<(u32, Windowed)>> = BTreeMap::new();
        // A capability at or before the earliest pending retraction.
        let mut held: Option<Capability<u64>> = None;
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                let now = *cap.time();
                let mut session = output.session(&cap);
                for (key, w) in data.drain(..) {
                    let e = w.event_time as u64;
                    let window = u64::from(w.params.window_seconds) * MICROS_PER_SECOND as u64;
                    // A step after the window's end, rounded up: every transaction whose
                    // window still reaches back to this one is judged while it is there.
                    let leave = step_up(e + window) + STEP;
                    pending.entry(leave).or_default().push((key, w.clone()));
                    // At or after this message's time (the record's 10 ms granule).
                    session.give(((key, w), step_up(e), 1isize));
                }
                drop(session);
                if held.as_ref().is_none_or(|h| *h.time() > now) {
                    held = Some(cap);
                }
            });
            let frontier = frontier.frontier();
            if frontier.is_empty() {
                // The input has ended: no later transaction can need these windows.
                pending.clear();
            }
            while let Some((&due, _)) = pending.first_key_value() {
                if frontier.iter().any(|t| *t < due) {
                    break;
                }
                let (_, batch) = pending.pop_first().expect("non-empty");
                let at = held.as_ref().expect("held while pending").delayed(&due);
                output
                    .session(&at)
                    .give_iterator(batch.into_iter().map(|e| (e, due, -1isize)));
            }
            match pending.keys().next() {
                Some(&t) => {
                    if let Some(h) = held.as_mut() {
                        if *h.time() < t {
                            h.downgrade(&t);
                        }
                    }
                }
                None => held = None,
            }
        }
    })
}

/// For one account's transactions in the window (sorted): those whose count is their
/// `min_count`, with the window's ids. Only those: most accounts have fewer transactions in a
/// window than any `min_count`, and an empty output costs the arrangement nothing.
fn count_windows(_account: &u32, input: &[(&Windowed, isize)], output: &mut Vec<(Counted, isize)>) {
    let fewest = input
        .iter()
        .map(|(w, _)| w.params.min_count)
        .min()
        .unwrap_or(1);
    if (input.len() as u32) < fewest {
        return;
    }
    for (i, (w, _)) in input.iter().enumerate() {
        let window = i64::from(w.params.window_seconds) * MICROS_PER_SECOND;
        // The first transaction inside (T - window, T]; those before it have left.
        let start = input[..i].partition_point(|(x, _)| x.event_time <= w.event_time - window);
        let count = (i - start + 1) as u32;
        if count == w.params.min_count {
            let ids = input[start..=i]
                .iter()
                .map(|(x, _)| x.transaction_id)
                .collect();
            output.push((((*w).clone(), count, ids), 1));
        }
    }
}

fn to_alert(account: u32, w: Windowed, count: u32, ids: Vec<Uuid>) -> Alert {
    Alert {
        alert_id: Alert::id_for(Rule::RapidActivity, w.transaction_id),
        rule: Rule::RapidActivity,
        severity: w.params.severity,
        rules_version: w.rules_version,
        transaction_id: w.transaction_id,
        account_id: AccountId::new(account).expect("keys are account numbers"),
        amount: w.amount,
        currency: w.currency,
        event_time: EventTime::from_micros(w.event_time),
        detected_at: EventTime::now(),
        details: Details::RapidActivity {
            window_seconds: w.params.window_seconds,
            count,
            transaction_ids: ids,
        },
    }
}
