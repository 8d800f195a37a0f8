//! The windows' batches and trace: differential's key batches, whose merges drop the entries
//! that every window has left, in differential's spine, which stops merging once nothing can
//! read it again ([`WindowTrace`]).
//!
//! An entry leaves its account's window at a time fixed by its event time and its rules
//! version ([`super::leaves`]); `CountWindows` counts no entry from that time on, whether or not
//! the arrangement still holds it. So nothing needs to retract it: when two batches merge, an
//! entry that has left by the merge's compaction frontier (every time still to be read is at or
//! after it) is simply not copied. The arrangement then holds the last window and what merges
//! have not yet reached, and each transaction is one update, where a retraction per entry took
//! two, a seek of the trace to make it, and a trip around the dataflow.
//!
//! The merge cannot look up each entry's version; it drops what has left under the widest
//! window of the versions the worker holds ([`super::params::widest_window`]), which no entry's
//! own window exceeds (an entry whose version was forgotten has left in any case). After a
//! version with a wide window, entries stay that long until it is forgotten, a wide window
//! after the next version starts. A merge's result keeps the capacity of its inputs, as
//! differential's does: a large allocation's untouched pages cost nothing. While no updates
//! come, nothing merges, and the last window stays until they do.
//!
//! Everything else is differential's `OrdKeyBatch`, its cursor and its merge, which
//! [`ExpiringMerger`] follows step for step. The arrangement no longer adds up to the updates
//! given to it (entries vanish without a retraction), so it is `CountWindows`' alone.

use std::rc::Rc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::logging::Logger;
use differential_dataflow::trace::implementations::ord_neu::layers::UpdsBuilder;
use differential_dataflow::trace::implementations::ord_neu::{
    key_batch::{OrdKeyCursor, OrdKeyStorage},
    OrdKeyBatch, Upds,
};
use differential_dataflow::trace::implementations::spine_fueled::{Merger, Spine, SpineBatch};
use differential_dataflow::trace::implementations::{BatchContainer, Layout, Vector};
use differential_dataflow::trace::{Cursor, ExertionLogic, Navigable, Span, Trace, TraceReader};
use timely::dataflow::operators::generic::OperatorInfo;
use timely::progress::frontier::AntichainRef;
use timely::progress::Antichain;
use timely::scheduling::Activator;

use super::{Update, Windowed};

/// How a batch lays out its updates: differential's vectors.
pub(super) type WindowLayout = Vector<Update>;

/// The windows' trace: differential's spine, except that it stops maintaining itself once
/// every reader has read everything.
///
/// A reader that has read a batch lets the spine merge it (the physical compaction frontier).
/// When the input ends, the last batch holds everything the allowed lateness held back, and
/// introducing it fuels every merge in progress to completion: in a bounded run (a replay, or
/// `--until-caught-up`) a quarter of all the merging, done after the last record is read and
/// read by no one. An empty frontier says no cursor will ever be made again, so the trace
/// keeps it from the spine, and is dropped with its last batches unmerged.
pub(super) struct WindowTrace(Spine<Rc<WindowBatch>>);

impl TraceReader for WindowTrace {
    type Time = u64;
    type Batch = Rc<WindowBatch>;

    fn spans_through(&mut self, upper: AntichainRef<u64>) -> Option<Vec<Span<u64, Self::Batch>>> {
        self.0.spans_through(upper)
    }
    fn set_logical_compaction(&mut self, frontier: AntichainRef<u64>) {
        self.0.set_logical_compaction(frontier)
    }
    fn get_logical_compaction(&mut self) -> AntichainRef<'_, u64> {
        self.0.get_logical_compaction()
    }
    fn set_physical_compaction(&mut self, frontier: AntichainRef<'_, u64>) {
        if !frontier.is_empty() {
            self.0.set_physical_compaction(frontier)
        }
    }
    fn get_physical_compaction(&mut self) -> AntichainRef<'_, u64> {
        self.0.get_physical_compaction()
    }
    fn map_spans<F: FnMut(&Span<u64, Self::Batch>)>(&self, f: F) {
        self.0.map_spans(f)
    }
}

impl Trace for WindowTrace {
    fn new(info: OperatorInfo, logging: Option<Logger>, activator: Option<Activator>) -> Self {
        WindowTrace(Spine::new(info, logging, activator))
    }
    fn exert(&mut self) {
        self.0.exert()
    }
    fn set_exert_logic(&mut self, logic: ExertionLogic) {
        self.0.set_exert_logic(logic)
    }
    fn insert(&mut self, span: Span<u64, Self::Batch>) {
        self.0.insert(span)
    }
    fn close(&mut self) {
        self.0.close()
    }
}

/// A batch of the windows: differential's key batch, merged by [`ExpiringMerger`].
pub(super) struct WindowBatch(pub(super) OrdKeyBatch<WindowLayout>);

impl SpineBatch for WindowBatch {
    type Time = u64;
    type Merger = ExpiringMerger;
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Navigable for WindowBatch {
    type Cursor = WindowCursor;
    fn cursor(&self) -> WindowCursor {
        WindowCursor(self.0.cursor())
    }
}

type Inner = OrdKeyCursor<WindowLayout>;
type Times = <WindowLayout as Layout>::TimeContainer;
type Diffs = <WindowLayout as Layout>::DiffContainer;

/// Differential's key batch cursor, over a [`WindowBatch`].
pub(super) struct WindowCursor(Inner);

impl Cursor for WindowCursor {
    type Storage = WindowBatch;
    type Key<'a> = <Inner as Cursor>::Key<'a>;
    type ValOwn = <Inner as Cursor>::ValOwn;
    type Val<'a> = <Inner as Cursor>::Val<'a>;
    type Time = <Inner as Cursor>::Time;
    type TimeGat<'a> = <Inner as Cursor>::TimeGat<'a>;
    type Diff = <Inner as Cursor>::Diff;
    type DiffGat<'a> = <Inner as Cursor>::DiffGat<'a>;
    type KeyContainer = <Inner as Cursor>::KeyContainer;
    type ValContainer = <Inner as Cursor>::ValContainer;
    type TimeContainer = <Inner as Cursor>::TimeContainer;
    type DiffContainer = <Inner as Cursor>::DiffContainer;

    fn key_valid(&self, s: &WindowBatch) -> bool {
        self.0.key_valid(&s.0)
    }
    fn val_valid(&self, s: &WindowBatch) -> bool {
        self.0.val_valid(&s.0)
    }
    fn key<'a>(&self, s: &'a WindowBatch) -> Self::Key<'a> {
        self.0.key(&s.0)
    }
    fn val<'a>(&self, s: &'a WindowBatch) -> Self::Val<'a> {
        self.0.val(&s.0)
    }
    fn get_key<'a>(&self, s: &'a WindowBatch) -> Option<Self::Key<'a>> {
        self.0.get_key(&s.0)
    }
    fn get_val<'a>(&self, s: &'a WindowBatch) -> Option<Self::Val<'a>> {
        self.0.get_val(&s.0)
    }
    fn map_times<L: FnMut(Self::TimeGat<'_>, Self::DiffGat<'_>)>(
        &mut self,
        s: &WindowBatch,
        logic: L,
    ) {
        self.0.map_times(&s.0, logic)
    }
    fn step_key(&mut self, s: &WindowBatch) {
        self.0.step_key(&s.0)
    }
    fn seek_key(&mut self, s: &WindowBatch, key: Self::Key<'_>) {
        self.0.seek_key(&s.0, key)
    }
    fn step_val(&mut self, s: &WindowBatch) {
        self.0.step_val(&s.0)
    }
    fn seek_val(&mut self, s: &WindowBatch, val: Self::Val<'_>) {
        self.0.seek_val(&s.0, val)
    }
    fn rewind_keys(&mut self, s: &WindowBatch) {
        self.0.rewind_keys(&s.0)
    }
    fn rewind_vals(&mut self, s: &WindowBatch) {
        self.0.rewind_vals(&s.0)
    }
}

/// Differential's key batch merge (`OrdKeyMerger`), except that an entry that has left every
/// window by the compaction frontier is not copied.
pub(super) struct ExpiringMerger {
    /// The next key to merge in each batch.
    cursor1: usize,
    cursor2: usize,
    result: OrdKeyStorage<WindowLayout>,
    /// The compaction frontier: times are advanced to it, and entries that have left by it
    /// are dropped.
    since: Antichain<u64>,
    /// The widest window of the rules versions held, in microseconds.
    widest: u64,
    staging: UpdsBuilder<Times, Diffs>,
    /// The keys left out so far: work too, if less than a copy.
    dropped: usize,
}

impl ExpiringMerger {
    /// Whether `w` has left every window by the compaction frontier: no time still to be read
    /// counts it. (An empty frontier: nothing will be read.)
    fn gone(&self, w: &Windowed) -> bool {
        self.since
            .iter()
            .all(|&f| super::leaves_after(w, self.widest) <= f)
    }

    /// Copies key `i` of `source` unless it has gone: its updates, their times advanced.
    fn copy_key(&mut self, source: &OrdKeyStorage<WindowLayout>, i: usize) {
        let key = source.keys.index(i);
        if self.gone(&key.1) {
            self.dropped += 1;
            return;
        }
        self.stash_updates_for_key(source, i);
        if self.staging.seal(&mut self.result.upds) {
            self.result.keys.push_ref(key);
        }
    }

    /// Merges the next key of either batch, or of both when they hold the same.
    fn merge_key(
        &mut self,
        source1: &OrdKeyStorage<WindowLayout>,
        source2: &OrdKeyStorage<WindowLayout>,
    ) {
        use std::cmp::Ordering;
        let (k1, k2) = (
            source1.keys.index(self.cursor1),
            source2.keys.index(self.cursor2),
        );
        match k1.cmp(k2) {
            Ordering::Less => {
                self.copy_key(source1, self.cursor1);
                self.cursor1 += 1;
            }
            Ordering::Equal => {
                if self.gone(&k1.1) {
                    self.dropped += 1;
                } else {
                    self.stash_updates_for_key(source1, self.cursor1);
                    self.stash_updates_for_key(source2, self.cursor2);
                    if self.staging.seal(&mut self.result.upds) {
                        self.result.keys.push_ref(k1);
                    }
                }
                self.cursor1 += 1;
                self.cursor2 += 1;
            }
            Ordering::Greater => {
                self.copy_key(source2, self.cursor2);
                self.cursor2 += 1;
            }
        }
    }

    fn stash_updates_for_key(&mut self, source: &OrdKeyStorage<WindowLayout>, i: usize) {
        let (lower, upper) = source.upds.bounds(i);
        for j in lower..upper {
            let (time, diff) = source.upds.get_abs(j);
            let mut time = Times::into_owned(time);
            time.advance_by(self.since.borrow());
            self.staging.push(time, Diffs::into_owned(diff));
        }
    }
}

impl Merger<WindowBatch> for ExpiringMerger {
    fn new(b1: &WindowBatch, b2: &WindowBatch, frontier: AntichainRef<u64>) -> Self {
        let (s1, s2) = (&b1.0.storage, &b2.0.storage);
        ExpiringMerger {
            cursor1: 0,
            cursor2: 0,
            result: OrdKeyStorage {
                keys: BatchContainer::merge_capacity(&s1.keys, &s2.keys),
                upds: Upds::merge_capacity(&s1.upds, &s2.upds),
            },
            since: frontier.to_owned(),
            widest: super::params::widest_window(),
            staging: UpdsBuilder::default(),
            dropped: 0,
        }
    }

    fn work(&mut self, source1: &WindowBatch, source2: &WindowBatch, fuel: &mut isize) {
        let (s1, s2) = (&source1.0.storage, &source2.0.storage);
        let (n1, n2) = (s1.keys.len(), s2.keys.len());
        // Effort counts the updates written, as differential's merge does, and an eighth of
        // the keys left out (a comparison each, where a copy is a dozen stores), so that a
        // merge that drops much is still done a measure at a time.
        let start = self.staging.total() + self.dropped / 8;
        let effort = |m: &Self| (m.staging.total() + m.dropped / 8 - start) as isize;
        while self.cursor1 < n1 && self.cursor2 < n2 && effort(self) < *fuel {
            self.merge_key(s1, s2);
        }
        while self.cursor1 < n1 && effort(self) < *fuel {
            self.copy_key(s1, self.cursor1);
            self.cursor1 += 1;
        }
        while self.cursor2 < n2 && effort(self) < *fuel {
            self.copy_key(s2, self.cursor2);
            self.cursor2 += 1;
        }
        *fuel -= effort(self);
    }

    fn done(self) -> Option<WindowBatch> {
        let updates = self.staging.total();
        (updates > 0).then(|| {
            WindowBatch(OrdKeyBatch {
                updates,
                storage: self.result,
                value: OrdKeyBatch::<WindowLayout>::create_value(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rapid_activity::params::{ParamsTimeline, WindowParams};
    use differential_dataflow::trace::implementations::KeyBuilder;
    use differential_dataflow::trace::{Builder as _, Description};
    use uuid::Uuid;

    const SECOND: u64 = 1_000_000;

    /// An entry of `account` at `seconds` of event time, at its step.
    fn entry(account: u32, seconds: u64) -> Update {
        let w = Windowed {
            event_time: (seconds * SECOND) as i64,
            transaction_id: Uuid::from_u128(u128::from(seconds)),
        };
        (
            ((account, w), ()),
            super::super::step_up(seconds * SECOND),
            1,
        )
    }

    fn batch(mut updates: Vec<Update>) -> WindowBatch {
        updates.sort();
        let mut builder = KeyBuilder::<(u32, Windowed), u64, i32>::with_capacity(0, 0, 0);
        builder.push(&mut updates);
        WindowBatch(builder.done().expect("updates"))
    }

    /// The lengths of the batches a trace holds after two are read through `end`, and the
    /// spine is given all the fuel it wants.
    fn held_after_reading_through(end: &[u64]) -> Vec<usize> {
        let info = OperatorInfo::new(0, 0, Rc::from([0]));
        let mut trace = WindowTrace::new(info, None, None);
        trace.set_exert_logic(std::sync::Arc::new(|_: &[(usize, usize, usize)]| {
            Some(1 << 20)
        }));
        let span = |lower: u64, upper: &[u64], updates| {
            let desc = Description::new(
                Antichain::from_elem(lower),
                Antichain::from(upper.to_vec()),
                Antichain::from_elem(0),
            );
            Span::new(desc, Some(Rc::new(batch(updates))))
        };
        trace.insert(span(0, &[2 * SECOND], vec![entry(1, 1)]));
        trace.set_physical_compaction(Antichain::from_elem(2 * SECOND).borrow());
        trace.insert(span(2 * SECOND, end, vec![entry(2, 2)]));
        trace.set_physical_compaction(Antichain::from(end.to_vec()).borrow());
        trace.exert();
        let mut held = Vec::new();
        trace.map_spans(|s| held.extend(s.inner.as_ref().map(|b| b.len())));
        held
    }

    /// A trace merges the batches its readers have read, but not once they have read
    /// everything: nothing reads the result.
    #[test]
    fn a_trace_read_to_the_end_merges_no_more() {
        assert_eq!(held_after_reading_through(&[3 * SECOND]), vec![2], "merged");
        assert_eq!(held_after_reading_through(&[]), vec![1, 1], "as given");
    }

    /// Merges two batches at `frontier`; (account, event second, time) of what is left.
    fn merged(frontier: &[u64]) -> Option<Vec<(u32, u64, u64)>> {
        merged_with_fuel(frontier, isize::MAX)
    }

    /// [`merged`], given `fuel` at a time until the merge is done.
    fn merged_with_fuel(frontier: &[u64], fuel: isize) -> Option<Vec<(u32, u64, u64)>> {
        let b1 = batch(vec![entry(1, 1), entry(1, 30), entry(2, 10)]);
        let b2 = batch(vec![entry(1, 50), entry(2, 10)]);
        let frontier = Antichain::from(frontier.to_vec());
        let mut merger = ExpiringMerger::new(&b1, &b2, frontier.borrow());
        for _ in 0..100 {
            let mut left = fuel;
            merger.work(&b1, &b2, &mut left);
            if left > 0 {
                break;
            }
        }
        let merged = merger.done()?;
        let mut cursor = merged.cursor();
        let mut left = Vec::new();
        while let Some(&(account, w)) = cursor.get_key(&merged) {
            cursor.map_times(&merged, |&t, &d| {
                assert!(d > 0);
                left.push((account, w.event_time as u64 / SECOND, t));
            });
            cursor.step_key(&merged);
        }
        Some(left)
    }

    /// With a 60 s window, an entry at 1 s leaves at 62 s and one at 10 s at 71 s: a merge at
    /// 71 s drops both (the one at 10 s from both batches) and advances the rest's times.
    #[test]
    fn a_merge_drops_the_entries_gone_by_its_frontier() {
        let timeline = ParamsTimeline::default();
        timeline.insert(
            0,
            WindowParams {
                window_seconds: 60,
                min_count: 5,
            },
        );
        let at = 71 * SECOND;
        assert_eq!(
            merged(&[at]),
            Some(vec![(1, 30, at), (1, 50, at)]),
            "left at 71 s"
        );
        assert_eq!(
            merged(&[at - 1]),
            Some(vec![(1, 30, at - 1), (1, 50, at - 1), (2, 10, at - 1)]),
            "the entry at 10 s is there until 71 s"
        );
        assert_eq!(merged(&[0]).map(|l| l.len()), Some(4), "nothing gone at 0");
        assert_eq!(merged(&[]), None, "nothing is read after the end");
        for fuel in [1, 2, 3] {
            assert_eq!(merged_with_fuel(&[at], fuel), merged(&[at]), "fuel {fuel}");
            assert_eq!(merged_with_fuel(&[], fuel), None, "fuel {fuel}");
        }
        drop(timeline);
        assert_eq!(
            merged(&[at]).map(|l| l.len()),
            Some(4),
            "with no timeline, nothing leaves"
        );
    }
}
