//! The embedded source: the generator in-process, one seeded generator per partition, so a
//! run needs no broker and gives the same records whatever the number of workers.

use std::time::Instant;

use generator::{Generator, GeneratorConfig};

use crate::source::{Key, Partition, PayloadArena, Poll, RawRecord};

/// One partition of the in-process generator.
pub struct GeneratorPartition {
    id: i32,
    generator: Generator,
    /// The next offset, as if the records were in a Kafka partition.
    offset: i64,
    /// Records still to make; `None` for an endless stream.
    remaining: Option<u64>,
    /// This partition's share of the configured rate (records/s); 0 for as fast as possible.
    rate: f64,
    /// Records made since `start`, for the pacing.
    made: i64,
    start: Instant,
    /// The generator writes each record here before it is copied to `arena`.
    scratch: Vec<u8>,
    arena: PayloadArena,
}

impl GeneratorPartition {
    /// Partition `id` of `partitions`, making its share of `count` records (all, if `None`) at
    /// its share of `rate` records per second, from offset `start` on (the records before it
    /// are made and dropped: the stream is the same whatever the start).
    pub fn new(
        config: GeneratorConfig,
        seed: u64,
        id: i32,
        partitions: i32,
        count: Option<u64>,
        rate: u64,
        start: i64,
    ) -> Self {
        let share =
            count.map(|c| c / partitions as u64 + u64::from((id as u64) < c % partitions as u64));
        let mut generator =
            Generator::for_partition(config, Some(seed), id as u32, partitions as u32);
        let skip = share.map_or(start, |s| start.min(s as i64)).max(0);
        let mut scratch = Vec::new();
        for _ in 0..skip {
            scratch.clear();
            generator.next_into(&mut scratch);
        }
        GeneratorPartition {
            id,
            generator,
            offset: skip,
            remaining: share.map(|s| s - skip as u64),
            rate: rate as f64 / f64::from(partitions),
            made: 0,
            start: Instant::now(),
            scratch,
            arena: PayloadArena::default(),
        }
    }
}

impl Partition for GeneratorPartition {
    fn id(&self) -> i32 {
        self.id
    }

    fn position(&self) -> i64 {
        self.offset
    }

    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Poll {
        let mut n = max as u64;
        if let Some(r) = self.remaining {
            if r == 0 {
                return Poll::Done;
            }
            n = n.min(r);
        }
        if self.rate > 0.0 {
            let due = (self.start.elapsed().as_secs_f64() * self.rate) as i64 - self.made;
            if due <= 0 {
                return Poll::Idle;
            }
            n = n.min(due as u64);
        }
        for _ in 0..n {
            self.scratch.clear();
            let meta = self.generator.next_into(&mut self.scratch);
            out.push(RawRecord {
                partition: self.id,
                offset: self.offset,
                timestamp_ms: None,
                key: Some(Key::from_slice(&meta.key.to_ascii())),
                payload: self.arena.copy(&self.scratch),
            });
            self.offset += 1;
        }
        self.made += n as i64;
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
        }
        Poll::Ready
    }
}
