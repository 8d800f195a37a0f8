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
use std::sync::Arc;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;
use uuid::Uuid;

use crate::judge::{RapidParams, Valid};
use crate::metrics::Metrics;
use crate::source::{granule, GRANULE};

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

/// A transaction's verdict at some time: its count, and the window's ids when it alerts.
type Counted = (Windowed, u32, Vec<Uuid>);

/// Alerts of the rapid_activity rule from the stream of valid transactions.
pub fn rapid_activity<'scope>(
    valid: Stream<'scope, u64, Vec<Valid>>,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    valid
        .flat_map(|v: Valid| {
            let params = v.rapid.filter(|_| !v.late)?;
            let t = &v.txn;
            let e = t.event_time.as_micros();
            let w = Windowed {
                event_time: e,
                transaction_id: t.transaction_id,
                amount: t.amount,
                currency: t.currency,
                rules_version: v.rules_version,
                params,
            };
            let enter = granule(e as u64);
            // Strictly after the granule of the window's end, so that every transaction whose
            // window still reaches back to this one is judged while it is there.
            let window = u64::from(params.window_seconds) * MICROS_PER_SECOND as u64;
            let leave = granule(e as u64 + window) + GRANULE;
            let key = t.account_id.number();
            Some([
                ((key, w.clone()), enter, 1isize),
                ((key, w), leave, -1isize),
            ])
        })
        .flat_map(|x| x)
        .as_collection()
        .reduce(count_windows)
        .inner
        .flat_map(
            move |((account, (w, count, ids)), time, diff): ((u32, Counted), u64, isize)| {
                // The update at the transaction's own time is its verdict.
                let verdict =
                    diff > 0 && time == granule(w.event_time as u64) && count == w.params.min_count;
                verdict.then(|| {
                    metrics.alert(Rule::RapidActivity);
                    to_alert(account, w, count, ids)
                })
            },
        )
}

/// For one account's transactions in the window (sorted), each one's count.
fn count_windows(_account: &u32, input: &[(&Windowed, isize)], output: &mut Vec<(Counted, isize)>) {
    let times: Vec<i64> = input.iter().map(|(w, _)| w.event_time).collect();
    for (i, (w, _)) in input.iter().enumerate() {
        let window = i64::from(w.params.window_seconds) * MICROS_PER_SECOND;
        // The first transaction inside (T - window, T]; those before it have left.
        let start = times[..i].partition_point(|&e| e <= w.event_time - window);
        let count = (i - start + 1) as u32;
        let ids = if count == w.params.min_count {
            input[start..=i]
                .iter()
                .map(|(x, _)| x.transaction_id)
                .collect()
        } else {
            Vec::new()
        };
        output.push((((*w).clone(), count, ids), 1));
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
