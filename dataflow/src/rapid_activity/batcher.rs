//! The window arrangement's batcher: a step's updates, sorted once when the step is sealed.
//!
//! Differential's own batcher (`MergeBatcher`) merges sorted chunks as they arrive, a dozen
//! passes over each update, so as to be ready for any frontier at any time. Here a step's
//! insertions arrive together just before the frontier passes the step (see `insertions`), so
//! the batcher only keeps what it is given and sorts what a batch takes once: a radix sort of
//! the account numbers, then each account's few updates by entry and time. Built on
//! differential's `Batcher` and `Extract` traits and its batch builder.

use differential_dataflow::batcher::{Batcher, Extract};
use differential_dataflow::trace::implementations::ord_neu::BuilderInput;
use differential_dataflow::trace::implementations::KeyBuilder;
use differential_dataflow::trace::Builder as _;
use timely::progress::frontier::AntichainRef;
use timely::progress::Antichain;

use super::expiring::WindowBatch;
use super::{Update, Windowed};

/// Keeps the updates it is given; sorts and consolidates those a batch takes when it is sealed.
pub(super) struct StepBatcher {
    updates: Vec<Update>,
    /// The least time of the updates kept after the last extraction.
    lower: Antichain<u64>,
    /// The last step's buffer, emptied, to gather the next step's updates in, and the sort's
    /// scratch buffer. Fresh ones are mapped and zeroed by the kernel a page at a time as a
    /// step's updates arrive and are sorted: a sixth of the page faults through Kafka, for
    /// two buffers of a step's size (8 MB of the memory run's peak).
    spare: Vec<Update>,
    scratch: Vec<Update>,
}

impl StepBatcher {
    pub(super) fn new(
        _logger: Option<differential_dataflow::logging::Logger>,
        _operator: usize,
    ) -> Self {
        StepBatcher {
            updates: Vec::new(),
            lower: Antichain::new(),
            spare: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl Batcher<Vec<Update>> for StepBatcher {
    fn insert(&mut self, container: &mut Vec<Update>) {
        if self.updates.is_empty() && container.capacity() >= self.spare.capacity() {
            // Taken whole, not copied.
            std::mem::swap(&mut self.updates, container);
        } else {
            if self.updates.is_empty() {
                std::mem::swap(&mut self.updates, &mut self.spare);
            }
            self.updates.append(container);
        }
    }
}

impl Extract for StepBatcher {
    type Time = u64;
    type Output = WindowBatch;

    fn extract<'a>(
        &'a mut self,
        upper: AntichainRef<'_, u64>,
    ) -> (Option<Self::Output>, AntichainRef<'a, u64>) {
        let mut ready = if self.updates.iter().all(|u| !upper.less_equal(&u.1)) {
            std::mem::take(&mut self.updates)
        } else {
            let (ready, kept) = self
                .updates
                .drain(..)
                .partition(|u| !upper.less_equal(&u.1));
            self.updates = kept;
            ready
        };
        sort_updates(&mut ready, &mut self.scratch);
        consolidate_sorted(&mut ready);
        self.lower = self.updates.iter().map(|u| u.1).min().into_iter().collect();
        // Differential's `seal`, keeping `ready` (emptied) for the next step.
        let (keys, vals, upds) =
            <Vec<Update> as BuilderInput<Vec<(u32, Windowed)>, Vec<()>>>::key_val_upd_counts(
                std::slice::from_ref(&ready),
            );
        let mut builder = KeyBuilder::<(u32, Windowed), u64, i32>::with_capacity(keys, vals, upds);
        builder.push(&mut ready);
        if ready.capacity() > self.spare.capacity() {
            self.spare = ready;
        }
        (builder.done().map(WindowBatch), self.lower.borrow())
    }
}

/// Sorts updates by (account, entry, time): a least-significant-digit radix sort of the
/// account numbers, stable, then each run of one account by entry and time. The sort takes a
/// pass of 12 bits for as many bits as the largest account number has: two for the contract's
/// seven-digit numbers (under 2^24), three at most. `scratch` is the passes' second buffer
/// (what it holds is overwritten).
fn sort_updates(updates: &mut Vec<Update>, scratch: &mut Vec<Update>) {
    const BITS: u32 = 12;
    let largest = updates.iter().map(|u| u.0 .0 .0).max().unwrap_or(0);
    let passes = (u32::BITS - largest.leading_zeros()).div_ceil(BITS);
    if passes == 0 {
        updates.sort_unstable_by_key(|u| (u.0 .0 .1, u.1));
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(updates);
    for pass in 0..passes {
        let digit = |u: &Update| ((u.0 .0 .0 >> (pass * BITS)) & ((1 << BITS) - 1)) as usize;
        let mut starts = vec![0usize; 1 << BITS];
        for u in updates.iter() {
            starts[digit(u)] += 1;
        }
        let mut sum = 0;
        for s in starts.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        for u in updates.iter() {
            let d = digit(u);
            scratch[starts[d]] = *u;
            starts[d] += 1;
        }
        std::mem::swap(updates, scratch);
    }
    for run in updates.chunk_by_mut(|a, b| a.0 .0 .0 == b.0 .0 .0) {
        if run.len() > 1 {
            run.sort_unstable_by_key(|u| (u.0 .0 .1, u.1));
        }
    }
}

/// Adds up the diffs of equal (account, entry, time) in sorted updates, and drops the zeros.
fn consolidate_sorted(updates: &mut Vec<Update>) {
    let mut kept = 0;
    for i in 0..updates.len() {
        let u = updates[i];
        if kept > 0 && (updates[kept - 1].0, updates[kept - 1].1) == (u.0, u.1) {
            updates[kept - 1].2 += u.2;
        } else {
            if kept > 0 && updates[kept - 1].2 == 0 {
                kept -= 1;
            }
            updates[kept] = u;
            kept += 1;
        }
    }
    if kept > 0 && updates[kept - 1].2 == 0 {
        kept -= 1;
    }
    updates.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::consolidation::consolidate_updates;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn update(account: u32, at: i64, id: u8, time: u64, diff: i32) -> Update {
        let w = Windowed {
            event_time: at,
            transaction_id: Uuid::from_u128(u128::from(id)),
        };
        (((account, w), ()), time, diff)
    }

    proptest! {
        /// The same as differential's own consolidation, for any updates: accounts that take
        /// no radix pass (all zero), one, two (the contract's) or three, and equal ones that
        /// add up to nothing.
        #[test]
        fn sorts_and_consolidates_as_differential_does(
            raw in proptest::collection::vec(
                (prop_oneof![Just(0u32), 0u32..4, 0u32..10_000_000, any::<u32>()], 0i64..3, 0u8..3, 0u64..3, -1i32..=1),
                0..300,
            )
        ) {
            let updates: Vec<Update> =
                raw.into_iter().map(|(a, at, id, t, d)| update(a, at, id, t, d)).collect();
            let mut ours = updates.clone();
            sort_updates(&mut ours, &mut Vec::new());
            consolidate_sorted(&mut ours);
            let mut theirs = updates;
            consolidate_updates(&mut theirs);
            prop_assert_eq!(ours, theirs);
        }
    }
}
