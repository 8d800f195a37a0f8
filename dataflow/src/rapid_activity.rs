//! `rapid_activity`: a windowed count per account over a differential arrangement.
//!
//! ```text
//! insertions ──> arrange by account ──> counts (CountWindows) ──> alerts
//! ```
//!
//! Each (non-late) transaction enters its account's collection at its time and leaves it one
//! window later: from then on no count includes it, and the arrangement's merges drop it
//! (`rapid_activity/expiring.rs`). So the arrangement is the one copy of the windows: it holds
//! what they still need and what merges have not yet reached, and its memory is bounded by the
//! accounts active in the last window (the widest held, after a reload), not by history. As the
//! arrangement seals each batch, `counts` reads, for each account that gained transactions in
//! it, the account's window from the arrangement (its history through the batch), and computes
//! for each new transaction T the contract's `before(T) + 1`: the count of the account's
//! transactions in `(T - window, T]` up to T in `(event_time, id)` order, as of T's time. Only
//! new transactions are judged: a transaction leaving the window is no verdict, and most
//! accounts hold fewer transactions than any `min_count`, which one look at the arrangement
//! tells.
//!
//! The arrangement holds only what counting needs (24 bytes a transaction; the window and count
//! to reach are looked up by event time, [`params`]). What an alert needs
//! besides (amount, currency, rules version, severity) waits on the worker that read the
//! transaction, only until its verdict is made (the allowed lateness, not the window); the few
//! verdicts go to every worker, and the one holding the payload raises the alert.

use differential_dataflow::hashable::Hashable;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::{Cursor, TraceReader};
use model::{AccountId, Alert, Amount, Currency, Details, EventTime, Rule, Severity};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast as _;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::Stream;
use timely::progress::Antichain;
use uuid::Uuid;

use crate::judge::Valid;
use crate::metrics::Metrics;
use batcher::StepBatcher;
use expiring::WindowTrace;
pub use params::{ParamsTimeline, WindowParams};

mod batcher;
mod expiring;
pub mod params;

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
/// orders an account's transactions, by event time, then transaction id. The window and count
/// to reach are looked up by event time ([`params`]). Aligned to 4 bytes, an update of the
/// arrangement is 40 bytes, not 48: less to exchange, sort and build batches of.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(C, packed(4))]
pub struct Windowed {
    pub event_time: i64,
    pub transaction_id: Uuid,
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
/// a resumed run's seeds, which are judged like any entry but raise no alert (no worker holds
/// their payload).
pub type Entry = (u32, Windowed, Option<Payload>);

/// An update of the windows' collection: (((account, entry), ()), time, diff). The arrangement
/// is keyed by (account, entry), with no value: an account's entries are a run of its keys, and
/// a batch has one layer of offsets (keys to updates) where keying by account and keeping
/// entries as values took two; most keys have one update. Diffs count insertions (an entry
/// leaves without an update: [`expiring`]): an `i32` saves the arrangement 4 bytes an update.
type Update = (((u32, Windowed), ()), u64, i32);

/// A transaction that brought its account's window to its `min_count`, with the window's ids,
/// oldest first: (account, entry, the window and count, ids), sent at the transaction's step.
type WindowVerdict = (u32, Windowed, WindowParams, Vec<Uuid>);

/// Payloads by verdict time, then transaction id, of the transactions one worker read: written
/// before the arrangement, read and dropped after it.
type Payloads = Rc<RefCell<PayloadsByStep>>;

#[derive(Default)]
struct PayloadsByStep {
    steps: BTreeMap<u64, StepPayloads>,
    /// The list of a step that is done, emptied, for the next step: a fresh one would be
    /// mapped and zeroed by the kernel as it grows to a step's transactions.
    spare: Option<Vec<(Uuid, Payload)>>,
}

/// The payloads of one step, in the order their transactions were read. Appending costs next
/// to nothing where a hash map's inserts (random writes into megabytes of table, one per
/// transaction) were a tenth of the dense run's CPU; the few verdicts of a step (a few in ten
/// thousand transactions) then find theirs in one pass over the list ([`StepPayloads::find`]),
/// where sorting it for them was 2 % of the Kafka path's samples.
#[derive(Default)]
struct StepPayloads {
    entries: Vec<(Uuid, Payload)>,
}

impl StepPayloads {
    fn push(&mut self, id: Uuid, p: Payload) {
        self.entries.push((id, p));
    }

    /// The payloads of the transactions `ids`, in their order: of the last one read, for a
    /// transaction read more than once; `None` for one this worker did not read. One pass over
    /// the list, in which a filter of 4 096 bits set from `ids` turns nearly every entry away
    /// with one load; the rest are looked up among the sorted ids.
    fn find(&self, ids: &[Uuid]) -> Vec<Option<Payload>> {
        // As integers: the same order as the ids' bytes, compared in two instructions.
        let mut wanted: Vec<(u128, usize)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_u128(), i))
            .collect();
        wanted.sort_unstable();
        // The filter's word and bit for an id.
        let slot = |id: u128| {
            let b = (id as u64 ^ (id >> 64) as u64) & 4095;
            (b as usize / 64, 1u64 << (b % 64))
        };
        let mut filter = [0u64; 64];
        for &(id, _) in &wanted {
            let (word, bit) = slot(id);
            filter[word] |= bit;
        }
        let mut found = vec![None; ids.len()];
        for (id, payload) in &self.entries {
            let id = id.as_u128();
            let (word, bit) = slot(id);
            if filter[word] & bit == 0 {
                continue;
            }
            let from = wanted.partition_point(|w| w.0 < id);
            for &(_, i) in wanted[from..].iter().take_while(|w| w.0 == id) {
                found[i] = Some(*payload);
            }
        }
        found
    }
}

impl PayloadsByStep {
    /// The payloads of step `at`.
    fn step(&mut self, at: u64) -> &mut StepPayloads {
        let spare = &mut self.spare;
        self.steps.entry(at).or_insert_with(|| StepPayloads {
            entries: spare.take().unwrap_or_default(),
        })
    }

    /// [`StepPayloads::find`] in step `at`.
    fn find(&self, at: u64, ids: &[Uuid]) -> Vec<Option<Payload>> {
        match self.steps.get(&at) {
            Some(step) => step.find(ids),
            None => vec![None; ids.len()],
        }
    }

    /// Drops the payloads of the steps before `t` (all of them for `None`), keeping one list.
    fn drop_before(&mut self, t: Option<u64>) {
        let done = match t {
            Some(t) => {
                let kept = self.steps.split_off(&t);
                std::mem::replace(&mut self.steps, kept)
            }
            None => std::mem::take(&mut self.steps),
        };
        if let Some(mut list) = done
            .into_values()
            .map(|p| p.entries)
            .max_by_key(Vec::capacity)
        {
            list.clear();
            if self
                .spare
                .as_ref()
                .is_none_or(|s| s.capacity() < list.capacity())
            {
                self.spare = Some(list);
            }
        }
    }
}

impl Windowed {
    /// Less than every entry: `(account, Windowed::FIRST)` seeks an account's first key.
    const FIRST: Windowed = Windowed {
        event_time: i64::MIN,
        transaction_id: Uuid::nil(),
    };

    /// The window entry of a valid transaction and its alert's payload, keyed by account
    /// number; `None` for a late transaction or when the rule is disabled.
    pub fn entry(v: &Valid) -> Option<(u32, Windowed, Payload)> {
        let severity = v.rapid_severity.filter(|_| !v.late)?;
        let t = &v.txn;
        Some((
            t.account_id.number(),
            Windowed {
                event_time: t.event_time.as_micros(),
                transaction_id: t.transaction_id,
            },
            Payload {
                amount: t.amount,
                currency: t.currency,
                rules_version: v.rules_version,
                severity,
            },
        ))
    }
}

/// Alerts of the rapid_activity rule from the window entries of valid transactions; `params`
/// is filled by the worker's judge.
pub fn rapid_activity<'scope>(
    entries: Stream<'scope, u64, Vec<Entry>>,
    params: ParamsTimeline,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    let payloads = Payloads::default();
    // Exchanged by account alone: an account's window is on one worker.
    let by_account = Exchange::new(|u: &Update| u.0 .0 .0.hashed());
    let windows = arrange_core::<_, _, StepBatcher, WindowTrace>(
        insertions(entries, payloads.clone()),
        by_account,
        "Windows",
        StepBatcher::new,
    );
    alerts(counts(windows, params), payloads, metrics)
}

/// The alerts of the verdicts (a few in ten thousand transactions), sent to every worker: the
/// one that read the transaction holds its payload and raises the alert. A step's verdicts wait
/// here until the frontier has passed the step, when all of them have been made; then one pass
/// over the step's payloads finds theirs, and the payloads of the steps the frontier has passed
/// are dropped.
fn alerts<'scope>(
    verdicts: Stream<'scope, u64, Vec<WindowVerdict>>,
    payloads: Payloads,
    metrics: Arc<Metrics>,
) -> Stream<'scope, u64, Vec<Alert>> {
    verdicts
        .broadcast()
        .unary_frontier(Pipeline, "RapidAlerts", move |_cap, _info| {
            // Verdicts by their transaction's step, with a capability for it.
            let mut waiting: BTreeMap<u64, (Capability<u64>, Vec<WindowVerdict>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else {
                        return;
                    };
                    for v in data.drain(..) {
                        // Verdicts are sent at their step, so `at` is the message's time;
                        // the `max` keeps the capability valid should that ever change.
                        let at = step_up(v.1.event_time as u64);
                        waiting
                            .entry(at)
                            .or_insert_with(|| (cap.delayed(&at.max(*cap.time())), Vec::new()))
                            .1
                            .push(v);
                    }
                });
                let mut payloads = payloads.borrow_mut();
                while let Some(step) = waiting.first_entry() {
                    if frontier.less_equal(step.key()) {
                        break;
                    }
                    let (at, (cap, verdicts)) = step.remove_entry();
                    let ids: Vec<Uuid> = verdicts.iter().map(|v| v.1.transaction_id).collect();
                    let found = payloads.find(at, &ids);
                    let mut session = output.session(&cap);
                    for ((account, w, params, ids), p) in verdicts.into_iter().zip(found) {
                        // None: another worker's transaction, or a resumed run's seed.
                        if let Some(p) = p {
                            metrics.alert(Rule::RapidActivity);
                            session.give(to_alert(account, &w, params, &p, ids));
                        }
                    }
                }
                let least = frontier.frontier().iter().min().copied();
                payloads.drop_before(least);
            }
        })
}

/// Each entry as an insertion into its account's collection, at its time rounded up to a
/// step; its payload waits here for the verdict. A step's insertions are held here until the
/// frontier passes the step, and then go to the arrangement together, whose batcher sorts them
/// once ([`batcher`]). (Differential's own batcher, given them as they come, merged the steps
/// still open, the allowed lateness, again at every step.)
fn insertions<'scope>(
    entries: Stream<'scope, u64, Vec<Entry>>,
    payloads: Payloads,
) -> Stream<'scope, u64, Vec<Update>> {
    entries.unary_frontier(Pipeline, "WindowInsertions", |_cap, _info| {
        // The insertions of each open step, with a capability for it.
        let mut open: BTreeMap<u64, (Capability<u64>, Vec<Update>)> = BTreeMap::new();
        // A buffer for the next step: fresh ones would be mapped and zeroed as they grow.
        let mut spare: Option<Vec<Update>> = None;
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                let mut payloads = payloads.borrow_mut();
                // The step being filled: a message's records are mostly of one.
                let mut filling: Option<(u64, &mut Vec<Update>, &mut StepPayloads)> = None;
                for (key, w, payload) in data.drain(..) {
                    // At or after this message's time (the record's 10 ms granule).
                    let at = step_up(w.event_time as u64);
                    let (_, updates, waiting) = match filling.take() {
                        Some(f) if f.0 == at => f,
                        _ => {
                            let (_, updates) = open.entry(at).or_insert_with(|| {
                                (cap.delayed(&at), spare.take().unwrap_or_default())
                            });
                            (at, updates, payloads.step(at))
                        }
                    };
                    if let Some(p) = payload {
                        waiting.push(w.transaction_id, p);
                    }
                    updates.push((((key, w), ()), at, 1));
                    filling = Some((at, updates, waiting));
                }
            });
            // A step the frontier has passed has all its insertions.
            while let Some(step) = open.first_entry() {
                if frontier.less_equal(step.key()) {
                    break;
                }
                let (cap, mut updates) = step.remove();
                // Copied out, not handed over: the exchange to the accounts' workers would
                // keep the buffer, and the next step's would be mapped and zeroed afresh.
                output.session(&cap).give_iterator(updates.drain(..));
                if updates.capacity() > spare.as_ref().map_or(0, Vec::capacity) {
                    spare = Some(updates);
                }
            }
        }
    })
}

/// When an entry leaves its account's window (of `params`): a step after the window's end,
/// rounded up, so that every transaction whose window still reaches back to it is judged while
/// it is there. From then on no count includes it.
fn leaves(w: &Windowed, params: WindowParams) -> u64 {
    leaves_after(w, params.window_micros() as u64)
}

/// When an entry leaves a window of `window` microseconds (never, past the end of time).
fn leaves_after(w: &Windowed, window: u64) -> u64 {
    (w.event_time as u64)
        .checked_add(window)
        .and_then(|end| end.checked_next_multiple_of(STEP))
        .map_or(u64::MAX, |end| end.saturating_add(STEP))
}

/// The windows, arranged by account and entry.
type Windows<'scope> = Arranged<'scope, TraceAgent<WindowTrace>>;

/// The verdicts: transactions whose count, at their own time, is their `min_count`, at that
/// time. Each batch the arrangement seals is read against the arrangement's history before it,
/// account by account; then the arrangement may forget the distinctions between times before
/// the batch's end, which no later verdict needs, and its merges drop the entries that have
/// left every window by then.
fn counts<'scope>(
    windows: Windows<'scope>,
    params: ParamsTimeline,
) -> Stream<'scope, u64, Vec<WindowVerdict>> {
    let mut trace = windows.trace.clone();
    windows
        .stream
        .unary_frontier(Pipeline, "CountWindows", move |_cap, _info| {
            // The times read so far: [0, upper).
            let mut upper = Antichain::from_elem(0u64);
            let mut history = Vec::new();
            let mut live = LiveCounts::new();
            // The accounts of the entries read, by the time each leaves its window (4 bytes an
            // entry), to take them out of `live` then; and an emptied list for the next time.
            let mut leaving: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            let mut spare: Vec<u32> = Vec::new();
            move |(input, _frontier), output| {
                let lower = upper.clone();
                let mut caps = CapabilitySet::new();
                let mut batches = Vec::new();
                input.for_each(|stamp, spans| {
                    for cap in stamp.retain_stamp(0).iter() {
                        caps.insert(cap.clone());
                    }
                    for span in spans.drain(..) {
                        // Spans arrive in order.
                        upper.clone_from(span.upper());
                        batches.extend(span.inner);
                    }
                });
                if !batches.is_empty() {
                    // Entries that have left by `lower` count at no time still to be read.
                    let from = read_through(&lower);
                    while let Some(entry) = leaving.first_entry() {
                        if *entry.key() > from {
                            break;
                        }
                        let mut accounts = entry.remove();
                        for &account in &accounts {
                            live.leave(account);
                        }
                        accounts.clear();
                        spare = accounts;
                    }
                    let timeline = params.borrow();
                    // No entry has a count to reach under this.
                    let fewest = timeline.fewest();
                    let (mut new, new_storage) = cursor_list(batches);
                    let before = trace
                        .batches_through(lower.borrow())
                        .expect("the trace is compacted only up to what was read");
                    let (mut old, old_storage) = cursor_list(before);
                    while let Some(&(account, _)) = new.get_key(&new_storage) {
                        history.clear();
                        read_account(&mut new, &new_storage, account, true, &mut history);
                        let mut entered = 0;
                        for c in history.iter().filter(|c| c.diff > 0) {
                            entered += c.diff as u32;
                            let due = leaves(&c.entry, timeline.at(c.entry.event_time));
                            leaving
                                .entry(due)
                                .or_insert_with(|| std::mem::take(&mut spare))
                                .extend(std::iter::repeat_n(account, c.diff as usize));
                        }
                        // Most accounts cannot reach any count to reach: the filter tells, and
                        // their history is not read.
                        if live.add(account, entered) < fewest {
                            continue;
                        }
                        old.seek_key(&old_storage, &(account, Windowed::FIRST));
                        read_account(&mut old, &old_storage, account, false, &mut history);
                        history.sort_unstable_by_key(|c: &Change| (c.entry, c.time));
                        judge_window(&history, &timeline, |at, w, params, ids| {
                            output
                                .session(&caps.delayed(&at))
                                .give((account, w, params, ids));
                        });
                    }
                }
                trace.advance_upper(&mut upper);
                if upper.is_empty() {
                    // Nothing more to read: no entry will leave.
                    leaving = BTreeMap::new();
                    spare = Vec::new();
                }
                trace.set_logical_compaction(upper.borrow());
                trace.set_physical_compaction(upper.borrow());
                params.read_through(read_through(&upper), STEP);
            }
        })
}

/// The time before which a reader has read every batch, given the upper bound of what it read.
fn read_through(upper: &Antichain<u64>) -> u64 {
    upper.iter().min().copied().unwrap_or(u64::MAX)
}

/// How many entries each account has in its window, at most: counters of the entries of all
/// accounts whose numbers share their low bits (a counting Bloom filter), kept by `counts` from
/// every entry the arrangement seals and every entry's leaving. An account whose counter, with
/// the entries it gains in a batch, stays under the least `min_count` of the rules versions
/// held cannot reach its entries' counts at any time in the batch, so its history need not be
/// read. That is most accounts, and reading their history (a seek in each batch of the trace)
/// was most of what `counts` cost.
struct LiveCounts {
    counters: Vec<u8>,
}

impl LiveCounts {
    /// 4 MiB a worker, read in ascending order ([`LiveCounts::slot`]). With 2.5 M live entries
    /// on a worker (the end of the dense benchmark), a counter holds about 0.6 others' entries,
    /// and about one account in 250 reaches a `min_count` of 5 by collisions alone; with a
    /// quarter of the counters, a fifth did, and each then sought its history in every batch.
    const BITS: u32 = 22;

    fn new() -> Self {
        LiveCounts {
            counters: vec![0; 1 << Self::BITS],
        }
    }

    /// The account number's low bits, not a hash of it: a batch's keys are sorted by account,
    /// so the counters are read in ascending order, a few sweeps of the table a batch, where
    /// hashed slots made nearly every read a cache miss (a twentieth of a dense run's time in
    /// this one load). The exchange spreads accounts over workers by a hash, and the low bits
    /// of the numbers a worker holds are as spread as any.
    fn slot(account: u32) -> usize {
        account as usize & ((1 << Self::BITS) - 1)
    }

    /// Adds the entries an account gained in a batch; returns how many it may hold in all. A
    /// counter that would overflow stays at its maximum from then on, and bounds nothing any
    /// more: its accounts are always read.
    fn add(&mut self, account: u32, entered: u32) -> u32 {
        let counter = &mut self.counters[Self::slot(account)];
        if *counter == u8::MAX {
            return u32::MAX;
        }
        let most = u32::from(*counter) + entered;
        *counter = u8::try_from(most).unwrap_or(u8::MAX);
        most
    }

    /// Takes out an entry of `account` that has left its window.
    fn leave(&mut self, account: u32) {
        let counter = &mut self.counters[Self::slot(account)];
        if *counter != u8::MAX {
            *counter = counter.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod live_counts_tests {
    use super::LiveCounts;

    #[test]
    fn bounds_each_account_and_stops_bounding_when_full() {
        let mut live = LiveCounts::new();
        assert_eq!(live.add(7, 3), 3);
        live.leave(7);
        assert_eq!(live.add(7, 0), 2);
        assert_eq!(live.add(7, 2), 4, "two entries on top of two");
        // An account with more entries than a counter holds: from then on, no bound.
        assert_eq!(live.add(9, 300), 300);
        for _ in 0..299 {
            live.leave(9);
        }
        assert_eq!(live.add(9, 1), u32::MAX);
    }
}

/// A change of an account's window, as the arrangement holds it, and whether it is in the
/// batches being read (`fresh`) or in the history before them.
#[derive(Clone, Copy)]
struct Change {
    entry: Windowed,
    time: u64,
    diff: i32,
    fresh: bool,
}

/// Appends the changes of `account`'s keys from the cursor's position on to `out`, and steps
/// the cursor past them.
fn read_account<C>(
    cursor: &mut C,
    storage: &C::Storage,
    account: u32,
    fresh: bool,
    out: &mut Vec<Change>,
) where
    C: for<'a> Cursor<Key<'a> = &'a (u32, Windowed), TimeGat<'a> = &'a u64, DiffGat<'a> = &'a i32>,
{
    while let Some(&(a, entry)) = cursor.get_key(storage) {
        if a != account {
            break;
        }
        cursor.map_times(storage, |&time, &diff| {
            out.push(Change {
                entry,
                time,
                diff,
                fresh,
            })
        });
        cursor.step_key(storage);
    }
}

/// Judges the transactions one account gained in the batches being read: `history` is every
/// change of the account's window the arrangement holds through them, sorted by entry and time.
/// `verdict(time, entry, params, ids)` is called for each transaction whose count at its own
/// time is its `min_count` (of `timeline`), with the ids of its window, oldest first.
fn judge_window(
    history: &[Change],
    timeline: &params::Timeline,
    mut verdict: impl FnMut(u64, Windowed, WindowParams, Vec<Uuid>),
) {
    // Most accounts hold fewer transactions than any count to reach.
    if (history.len() as u32) < timeline.fewest() {
        return;
    }
    for (i, c) in history.iter().enumerate() {
        let (w, at) = (c.entry, c.time);
        // A transaction entering the window (at its own time): a verdict to make (a resumed
        // run's seeds too, whose alerts no worker holds a payload for).
        if !c.fresh || c.diff <= 0 || at != step_up(w.event_time as u64) {
            continue;
        }
        // The transactions of w's window as of `at`, up to w, oldest first: a transaction is
        // there if its changes up to `at` add up to more than nothing.
        let params = timeline.at(w.event_time);
        let since = w.event_time - params.window_micros();
        let mut j = history[..i].partition_point(|x| x.entry.event_time <= since);
        let mut ids = Vec::new();
        while j <= i {
            let x = history[j].entry;
            let mut present = 0;
            while let Some(c) = history.get(j).filter(|c| c.entry == x) {
                if c.time <= at {
                    present += c.diff;
                }
                j += 1;
            }
            // Present, and not yet left (under its own version's window).
            if present > 0 && leaves(&x, timeline.at(x.event_time)) > at {
                ids.push(x.transaction_id);
            }
        }
        if ids.len() as u32 == params.min_count {
            verdict(at, w, params, ids);
        }
    }
}

fn to_alert(
    account: u32,
    w: &Windowed,
    params: WindowParams,
    p: &Payload,
    ids: Vec<Uuid>,
) -> Alert {
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
            window_seconds: params.window_seconds,
            count: params.min_count,
            transaction_ids: ids,
        },
    }
}

#[cfg(test)]
mod step_payloads_tests {
    use super::{Payload, StepPayloads};
    use model::{Amount, Currency, Severity};
    use uuid::Uuid;

    fn payload(version: u64) -> Payload {
        Payload {
            amount: Amount::parse_json_number("12.50").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            rules_version: version,
            severity: Severity::Medium,
        }
    }

    /// Every id finds its payload, in the order asked; an id read twice finds the one read
    /// last; an id never read finds none; an id asked twice is answered twice.
    #[test]
    fn the_last_payload_read_wins() {
        let mut step = StepPayloads::default();
        let ids: Vec<Uuid> = (0..1000u128)
            .map(|i| Uuid::from_u128(i * 7919 % 1000 + (i << 64)))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            step.push(*id, payload(i as u64));
        }
        let twice = ids[10];
        step.push(twice, payload(5000));
        let mut asked: Vec<Uuid> = ids.iter().rev().copied().collect();
        asked.push(Uuid::from_u128(1_000_001));
        asked.push(ids[3]);
        let found: Vec<Option<u64>> = step
            .find(&asked)
            .into_iter()
            .map(|p| p.map(|p| p.rules_version))
            .collect();
        let mut want: Vec<Option<u64>> = (0..1000u64)
            .rev()
            .map(|i| Some(if i == 10 { 5000 } else { i }))
            .collect();
        want.push(None);
        want.push(Some(3));
        assert_eq!(found, want);
    }
}
