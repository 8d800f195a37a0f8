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
//!
//! The arrangement holds only what counting needs (32 bytes a transaction). What an alert needs
//! besides (amount, currency, rules version, severity) waits on the worker that read the
//! transaction, only until its verdict is made (the allowed lateness, not the window); the few
//! verdicts go to every worker, and the one holding the payload raises the alert.

use differential_dataflow::collection::AsCollection;
use model::time::MICROS_PER_SECOND;
use model::{AccountId, Alert, Amount, Currency, Details, EventTime, Rule, Severity};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast as _;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use uuid::Uuid;

use crate::judge::Valid;
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

/// What the arrangement keeps of a transaction: what counting needs, ordered as the contract
/// orders an account's transactions, by event time, then transaction id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Windowed {
    pub event_time: i64,
    pub transaction_id: Uuid,
    pub window_seconds: u32,
    pub min_count: u32,
}

/// What an alert needs besides [`Windowed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub amount: Amount,
    pub currency: Currency,
    pub rules_version: u64,
    pub severity: Severity,
}

/// An entry of an account's window, keyed by account number, and its alert's payload: none for
/// a resumed run's seeds, which are never judged again.
pub type Entry = (u32, Windowed, Option<Payload>);

/// An update of an account's window collection: ((account, entry), time, diff).
type Update = ((u32, Windowed), u64, isize);

/// A transaction whose window holds exactly its `min_count` at some time, with the window's ids.
type Counted = (Windowed, u32, Vec<Uuid>);

/// An update of the counts: ((account, counted), time, diff).
type CountUpdate = ((u32, Counted), u64, isize);

/// Payloads by (verdict time, transaction id), of the transactions one worker read: written
/// before the arrangement, read and dropped after it.
type Payloads = Rc<RefCell<BTreeMap<(u64, Uuid), Payload>>>;

impl Windowed {
    /// The window entry of a valid transaction and its alert's payload, keyed by account
    /// number; `None` for a late transaction or when the rule is disabled.
    pub fn entry(v: &Valid) -> Option<(u32, Windowed, Payload)> {
        let params = v.rapid.filter(|_| !v.late)?;
        let t = &v.txn;
        Some((
            t.account_id.number(),
            Windowed {
                event_time: t.event_time.as_micros(),
                transaction_id: t.transaction_id,
                window_seconds: params.window_seconds,
                min_count: params.min_count,
            },
            Payload {
                amount: t.amount,
                currency: t.currency,
                rules_version: v.rules_version,
                severity: params.severity,
            },
        ))
    }
}

/// Alerts of the rapid_activity rule from the window entries of valid transactions.
pub fn rapid_activity<'scope>(
    entries: Stream<'scope, u64, Vec<Entry>>,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    let payloads = Payloads::default();
    let counted = window_updates(entries, payloads.clone())
        .as_collection()
        .reduce(count_windows)
        .inner;
    alerts(counted, payloads, metrics)
}

/// The alerts among the window's counts (which only holds transactions at their `min_count`,
/// a few in ten thousand), sent to every worker: the one that read the transaction holds its
/// payload and raises the alert. Once the frontier has passed a time, every verdict of that
/// time has been made, and its payloads are dropped.
fn alerts<'scope>(
    counted: Stream<'scope, u64, Vec<CountUpdate>>,
    payloads: Payloads,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    counted
        .broadcast()
        .unary_frontier(Pipeline, "RapidAlerts", move |_cap, _info| {
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    let payloads = payloads.borrow();
                    for ((account, (w, count, ids)), time, diff) in data.drain(..) {
                        // The update at the transaction's own time is its verdict.
                        if diff <= 0 || time != step_up(w.event_time as u64) || count != w.min_count
                        {
                            continue;
                        }
                        // Another worker's transaction, or a seed (counted, never judged: its
                        // min_count is out of reach).
                        let Some(p) = payloads.get(&(time, w.transaction_id)) else {
                            continue;
                        };
                        metrics.alert(Rule::RapidActivity);
                        session.give(to_alert(account, &w, p, count, ids));
                    }
                });
                let mut payloads = payloads.borrow_mut();
                match frontier.frontier().iter().min() {
                    None => payloads.clear(),
                    Some(&t) => *payloads = payloads.split_off(&(t, Uuid::nil())),
                }
            }
        })
}

/// Each entry as two updates of its account's collection: `+1` at its time and `-1` once its
/// window has passed. The retractions are held here and sent only when the frontier reaches
/// their time: handed to differential at once, a minute of future updates would sit in its
/// batcher and be merged again at every step of the frontier.
fn window_updates<'scope>(
    entries: Stream<'scope, u64, Vec<Entry>>,
    payloads: Payloads,
) -> Stream<'scope, u64, Vec<Update>> {
    entries.unary_frontier(Pipeline, "WindowUpdates", |_cap, _info| {
        // Retractions by the time they are due.
        let mut pending: BTreeMap<u64, Chunks<(u32, Windowed)>> = BTreeMap::new();
        // A capability at or before the earliest pending retraction.
        let mut held: Option<Capability<u64>> = None;
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                let now = *cap.time();
                let mut session = output.session(&cap);
                let mut waiting = payloads.borrow_mut();
                for (key, w, payload) in data.drain(..) {
                    let e = w.event_time as u64;
                    let window = u64::from(w.window_seconds) * MICROS_PER_SECOND as u64;
                    // A step after the window's end, rounded up: every transaction whose
                    // window still reaches back to this one is judged while it is there.
                    let leave = step_up(e + window) + STEP;
                    pending.entry(leave).or_default().push((key, w));
                    // At or after this message's time (the record's 10 ms granule).
                    let at = step_up(e);
                    if let Some(p) = payload {
                        waiting.insert((at, w.transaction_id), p);
                    }
                    session.give(((key, w), at, 1isize));
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

/// A list in chunks of fixed capacity: the pending retractions are the largest thing this
/// operator holds (a window's worth of entries), and a `Vec` grown by doubling would waste up to
/// half of it.
struct Chunks<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Chunks { chunks: Vec::new() }
    }
}

impl<T> Chunks<T> {
    const CAPACITY: usize = 4096;

    fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::CAPACITY => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(Self::CAPACITY);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
    }
}

impl<T> IntoIterator for Chunks<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

/// For one account's transactions in the window (sorted): those whose count is their
/// `min_count`, with the window's ids. Only those: most accounts have fewer transactions in a
/// window than any `min_count`, and an empty output costs the arrangement nothing.
fn count_windows(_account: &u32, input: &[(&Windowed, isize)], output: &mut Vec<(Counted, isize)>) {
    let fewest = input.iter().map(|(w, _)| w.min_count).min().unwrap_or(1);
    if (input.len() as u32) < fewest {
        return;
    }
    for (i, (w, _)) in input.iter().enumerate() {
        let window = i64::from(w.window_seconds) * MICROS_PER_SECOND;
        // The first transaction inside (T - window, T]; those before it have left.
        let start = input[..i].partition_point(|(x, _)| x.event_time <= w.event_time - window);
        let count = (i - start + 1) as u32;
        if count == w.min_count {
            let ids = input[start..=i]
                .iter()
                .map(|(x, _)| x.transaction_id)
                .collect();
            output.push(((**w, count, ids), 1));
        }
    }
}

fn to_alert(account: u32, w: &Windowed, p: &Payload, count: u32, ids: Vec<Uuid>) -> Alert {
    Alert {
        alert_id: Alert::id_for(Rule::RapidActivity, w.transaction_id),
        rule: Rule::RapidActivity,
        severity: p.severity,
        rules_version: p.rules_version,
        transaction_id: w.transaction_id,
        account_id: AccountId::new(account).expect("keys are account numbers"),
        amount: p.amount,
        currency: p.currency,
        event_time: EventTime::from_micros(w.event_time),
        detected_at: EventTime::now(),
        details: Details::RapidActivity {
            window_seconds: w.window_seconds,
            count,
            transaction_ids: ids,
        },
    }
}
