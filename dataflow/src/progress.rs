//! Where the input stands, in offsets, at a commit boundary of the dataflow's time: what a
//! lakehouse commit records so that a restart resumes exactly there.
//!
//! A commit at boundary `B` holds every row whose dataflow time is before `B`. The
//! [`source`](crate::source) sends a record at `max(granule(event_time), cap)`, where `cap` is
//! its worker's capability when the record was read (no event time: `cap`). A partition is read
//! in offset order and `cap` only grows, so two offsets describe a partition at `B`:
//!
//! - `through`: the next offset to read when the worker's capability reached `B`. Every record
//!   from there on went out at `B` or later: none of them is committed.
//! - `resume`: the first offset whose record went out at `B` or later (at most `through`).
//!   Everything before it is committed.
//!
//! Between the two, each record was read while `cap < B`, so it went out at `B` or later
//! exactly when it has an event time whose granule is at least `B`: those are to be done again,
//! the others are committed ([`committed`]). A restart reads each partition from
//! `resume` and starts its capability at `B`; the result is the same rows as a run that never
//! stopped, read from the same input.

use std::collections::{BTreeMap, VecDeque};

use crate::source::granule;

pub use sink::progress::{PartitionOffsets, Position};

/// One partition's report of a step of its worker's capability that passed one or more commit
/// boundaries: from `after` (exclusive) to `until` (inclusive; `u64::MAX` when the input
/// ended). It answers [`PartitionOffsets`] for every boundary in that range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub partition: i32,
    pub after: u64,
    pub until: u64,
    /// The next offset to read when the capability made this step.
    pub through: i64,
    /// `(time, offset)`: the first offsets at which the largest time sent so far reached each
    /// boundary after `after`, in order (see [`Stairs`]).
    pub stairs: Vec<(u64, i64)>,
    /// The worker's exact watermark after the step (µs).
    pub watermark: u64,
}

impl Mark {
    pub fn covers(&self, boundary: u64) -> bool {
        self.after < boundary && boundary <= self.until
    }

    /// The partition's offsets at `boundary`, which this mark covers.
    pub fn offsets_at(&self, boundary: u64) -> PartitionOffsets {
        let first_at_or_after = self
            .stairs
            .iter()
            .find(|(t, _)| *t >= boundary)
            .map(|&(_, o)| o);
        PartitionOffsets {
            resume: first_at_or_after.unwrap_or(self.through),
            through: self.through,
        }
    }
}

/// What a source keeps per partition to answer [`Mark`]s: the next offset, and the "stairs" of
/// the largest time sent so far: for each commit interval it entered, the offset where it did.
/// A stream that keeps to its lateness adds one step per interval, and a step is dropped once
/// the capability has passed it; one far-future record adds one step, not one per interval.
#[derive(Debug)]
pub struct Stairs {
    interval: u64,
    next: i64,
    largest: Option<u64>,
    steps: VecDeque<(u64, i64)>,
}

impl Stairs {
    /// A partition about to be read from `start`, with commit boundaries every `interval` µs.
    pub fn new(interval: u64, start: i64) -> Self {
        assert!(interval > 0, "a commit interval of zero");
        Stairs {
            interval,
            next: start,
            largest: None,
            steps: VecDeque::new(),
        }
    }

    /// The record at `offset` was sent at `time`.
    pub fn sent(&mut self, offset: i64, time: u64) {
        let enters_interval = self
            .largest
            .is_none_or(|l| time / self.interval > l / self.interval);
        if enters_interval {
            self.steps.push_back((time, offset));
        }
        self.largest = Some(self.largest.map_or(time, |l| l.max(time)));
        self.next = offset + 1;
    }

    /// A record was skipped (already committed): only the position moves.
    pub fn skipped(&mut self, offset: i64) {
        self.next = offset + 1;
    }

    /// The mark of a capability step from `after` to `until`, if it passed a boundary; forgets
    /// the steps no later boundary needs.
    pub fn step(&mut self, partition: i32, after: u64, until: u64, watermark: u64) -> Option<Mark> {
        let first = (after / self.interval + 1).saturating_mul(self.interval);
        if until < first {
            return None;
        }
        let mark = Mark {
            partition,
            after,
            until,
            through: self.next,
            stairs: self
                .steps
                .iter()
                .filter(|(t, _)| *t >= first)
                .copied()
                .collect(),
            watermark,
        };
        let next_boundary = (until / self.interval + 1).saturating_mul(self.interval);
        while self.steps.front().is_some_and(|(t, _)| *t < next_boundary) {
            self.steps.pop_front();
        }
        Some(mark)
    }
}

/// Whether the record at `offset` of a partition that resumes at `at` was committed before the
/// restart (see the module's documentation). `event_time` is the record's, if it has one (µs).
pub fn committed(
    position: &Position,
    at: &PartitionOffsets,
    offset: i64,
    event_time: Option<u64>,
) -> bool {
    offset < at.through && event_time.is_none_or(|e| granule(e) < position.boundary)
}

/// The marks of every partition, gathered until a commit needs them.
#[derive(Debug, Default)]
pub struct Marks {
    by_partition: BTreeMap<i32, Vec<Mark>>,
}

impl Marks {
    pub fn add(&mut self, mark: Mark) {
        self.by_partition
            .entry(mark.partition)
            .or_default()
            .push(mark);
    }

    /// Every partition's offsets at `boundary`, or `None` if a partition that reported marks
    /// has none covering it (it has not passed the boundary). Marks no later boundary needs are
    /// dropped. `boundary == u64::MAX` is the end of the input.
    pub fn position_at(&mut self, boundary: u64) -> Option<Position> {
        let mut partitions = BTreeMap::new();
        let mut watermark = u64::MAX;
        for (&p, marks) in &self.by_partition {
            let mark = marks.iter().find(|m| m.covers(boundary))?;
            partitions.insert(p, mark.offsets_at(boundary));
            watermark = watermark.min(mark.watermark);
        }
        for marks in self.by_partition.values_mut() {
            marks.retain(|m| m.until > boundary || (boundary == u64::MAX && m.until == u64::MAX));
        }
        // At the end of the input, a restart carries on from the last watermark; otherwise from
        // the boundary itself.
        let boundary = if boundary == u64::MAX {
            granule(watermark.min(u64::MAX - 1))
        } else {
            boundary
        };
        Some(Position {
            boundary,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = 10_000_000;

    /// Sends `(offset, time)` records through a partition's stairs and reads back its offsets
    /// at each boundary, checked against the definition: `resume` is the first offset sent at
    /// or after the boundary.
    #[test]
    fn stairs_answer_the_first_offset_at_or_after_each_boundary() {
        // Times of offsets 0..: in order, a record ahead by more than an interval, and late ones.
        let times = [
            1, 5, 9_999_999, 12_000_000, 31_000_000, 14_000_000, 15_000_000, 30_000_000,
        ];
        let mut stairs = Stairs::new(C, 0);
        for (o, t) in times.iter().enumerate() {
            stairs.sent(o as i64, *t);
        }
        let mark = stairs.step(0, 0, 30_000_000, 0).expect("passed boundaries");
        assert_eq!(mark.through, 8);
        for b in [C, 2 * C, 3 * C] {
            let expected = times.iter().position(|t| *t >= b).map_or(8, |o| o as i64);
            assert_eq!(mark.offsets_at(b).resume, expected, "boundary {b}");
            assert_eq!(mark.offsets_at(b).through, 8);
        }
        // No step reaches the next boundary (40 s): none is kept.
        assert!(stairs.steps.is_empty());
        assert!(
            stairs.step(0, 30_000_000, 35_000_000, 0).is_none(),
            "no boundary passed"
        );
        let next = stairs
            .step(0, 35_000_000, 40_000_000, 0)
            .expect("40 s passed");
        assert_eq!(
            next.offsets_at(4 * C).resume,
            8,
            "nothing read at or after 40 s"
        );
    }

    #[test]
    fn a_far_future_record_is_one_step() {
        let mut stairs = Stairs::new(C, 0);
        stairs.sent(0, 1_000_000);
        stairs.sent(1, 1_000_000_000_000);
        stairs.sent(2, 2_000_000);
        assert_eq!(stairs.steps.len(), 2);
        let mark = stairs.step(0, 0, 20_000_000, 0).expect("passed");
        assert_eq!(mark.offsets_at(C).resume, 1);
        assert_eq!(mark.offsets_at(2 * C).resume, 1);
    }

    #[test]
    fn the_commit_rule_redoes_exactly_what_went_out_at_or_after_the_boundary() {
        let position = Position {
            boundary: 2 * C,
            partitions: BTreeMap::from([(
                0,
                PartitionOffsets {
                    resume: 3,
                    through: 6,
                },
            )]),
        };
        let at = position.partitions[&0];
        // Before `through`, only records of a granule at or after the boundary are redone.
        assert!(committed(&position, &at, 4, Some(2 * C - 1)));
        assert!(
            committed(&position, &at, 4, None),
            "invalid: went out at the capability"
        );
        assert!(!committed(&position, &at, 4, Some(2 * C)));
        // From `through` on, everything is redone, late or not.
        assert!(!committed(&position, &at, 6, Some(1)));
        assert!(!committed(&position, &at, 7, None));
    }

    #[test]
    fn a_position_needs_every_partition_past_the_boundary() {
        let mut marks = Marks::default();
        let mut a = Stairs::new(C, 0);
        let mut b = Stairs::new(C, 0);
        a.sent(0, 5);
        b.sent(0, 7);
        marks.add(a.step(0, 0, C, C).unwrap());
        assert!(
            marks.position_at(C).is_some(),
            "only partition 0 has reported so far"
        );
        marks.add(b.step(1, 0, C - 1, C - 1).unwrap_or(Mark {
            partition: 1,
            after: 0,
            until: C - 1,
            through: 1,
            stairs: vec![],
            watermark: C - 1,
        }));
        assert!(marks.position_at(C).is_none(), "partition 1 is behind");
        marks.add(b.step(1, C - 1, u64::MAX, 15 * C / 10).unwrap());
        assert!(
            marks.position_at(u64::MAX).is_none(),
            "partition 0 has not ended"
        );
        marks.add(a.step(0, C, u64::MAX, 2 * C).unwrap());
        let end = marks.position_at(u64::MAX).expect("both ended or passed");
        assert_eq!(
            end.partitions[&1],
            PartitionOffsets {
                resume: 1,
                through: 1
            }
        );
        assert_eq!(
            end.boundary,
            15 * C / 10,
            "a restart carries on from the last watermark"
        );
    }
}
