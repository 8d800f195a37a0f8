//! `source`: reads the input partitions assigned to this worker and places each record in
//! event time.
//!
//! Partitions are spread over all workers of all processes by number (`partition % peers ==
//! worker`), deterministically, with no consumer-group rebalancing inside a job. Each record is
//! validated as far as the rules allow ([`model::validate_deferred`]) so that its event time is
//! known, and is sent at that time. The worker's capability is its watermark: the least, over
//! its partitions that are not idle, of the largest event time read minus the allowed
//! lateness. A record older than that, or than its partition's own watermark (advanced a block
//! of offsets at a time, see [`BLOCK`]), is *late*: it is sent at the watermark instead, marked.
//! The frontier downstream is the least of all workers' watermarks: the contract's watermark.
//!
//! The dataflow's time is event time in microseconds rounded down to a [`GRANULE`] of 10 ms:
//! one timestamp per record would cost timely a message (and a progress update) per record,
//! while a granule batches all the records of 10 ms and adds at most 10 ms to an alert. Exact
//! event times travel in the data, and every rule compares those.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use model::{validate_deferred, Deferred};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};

use crate::metrics::Metrics;
use crate::progress::{committed, Mark, PartitionOffsets, Position, Stairs};

/// The resolution of the dataflow's timestamps, in microseconds of event time.
pub const GRANULE: u64 = 10_000;

/// The dataflow time of an event time (µs since the epoch).
pub fn granule(micros: u64) -> u64 {
    micros - micros % GRANULE
}

/// A record's Kafka key: inline up to 16 bytes (an account number is 10), so that most records
/// allocate nothing for it.
pub type Key = smallvec::SmallVec<[u8; 16]>;

/// A record as read from an input partition.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record's timestamp, when it has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Key>,
    /// The record's value, in a chunk shared with the records read with it ([`PayloadArena`]).
    pub payload: Bytes,
}

/// Where partition readers copy the payloads they read: into chunks of [`PayloadArena::CHUNK`]
/// bytes shared by the records in them, each freed when its last record is. One allocation a
/// chunk instead of one a record: the allocator's time for each record's own buffer (its
/// `malloc` where it was read, its `free` where it was judged) was about 4 % of the Kafka
/// path's samples.
#[derive(Default)]
pub struct PayloadArena {
    chunk: BytesMut,
}

impl PayloadArena {
    /// Under the 128 KiB from which the binary's allocator maps memory from the kernel afresh
    /// (`allocator.rs`): chunks are recycled by malloc, not zeroed page by page.
    pub const CHUNK: usize = 64 * 1024;

    /// A shared copy of `bytes`.
    pub fn copy(&mut self, bytes: &[u8]) -> Bytes {
        // After a split the chunk's capacity is what is left of it.
        if self.chunk.capacity() < bytes.len() {
            self.chunk = BytesMut::with_capacity(Self::CHUNK.max(bytes.len()));
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.split().freeze()
    }
}

/// A record on its way through the dataflow, validated as far as the rules allow.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub raw: RawRecord,
    pub verdict: Deferred,
    /// Older than the watermark when read: stored and checked per record, but not counted in
    /// rapid_activity's windows.
    pub late: bool,
}

/// Whether the worker's source is reading a backlog: at its last read, some partition had a
/// whole batch ready ([`SourceConfig::batch`]). Set by [`source`], read by the outputs (an
/// emitter may then batch what it sends, see `emit::Emitter::flush`).
pub type Backlog = Rc<Cell<bool>>;

/// What a partition reader has to say after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// It returned records, or knows more are waiting: it may have more right away, and it
    /// is not idle.
    Ready,
    /// It is caught up: nothing to read now.
    Idle,
    /// It has reached the end of a bounded input and will never have more.
    Done,
}

/// One input partition: Kafka's, or the in-process generator's.
pub trait Partition {
    /// The partition's number.
    fn id(&self) -> i32;
    /// The offset of the next record it will return.
    fn position(&self) -> i64;
    /// Appends up to `max` records to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Poll;
    /// Lets the reader go once the source is done with it. A reader whose shutdown waits
    /// (a Kafka consumer's, on its outstanding fetch) does that waiting elsewhere: the worker
    /// still has the input's last records to carry through the rules.
    fn close(self: Box<Self>) {}
}

/// Which of `partitions` partitions worker `index` of `peers` reads.
pub fn assigned(partitions: i32, index: usize, peers: usize) -> impl Iterator<Item = i32> {
    (0..partitions).filter(move |p| *p as usize % peers == index)
}

/// How a partition counts towards the watermark, and where it stands for commits.
struct Tracked {
    reader: Box<dyn Partition>,
    /// The largest event time read so far, in microseconds.
    max_seen: Option<u64>,
    /// The partition's own watermark for `late`: the largest event time of the blocks of
    /// [`BLOCK`] offsets before the current one, and the current block's number and largest.
    sealed_max: Option<u64>,
    block: Option<i64>,
    block_max: Option<u64>,
    /// When the reader last had nothing to read, if it has had nothing since: a partition that
    /// is caught up and has been quiet for `idle_after` no longer holds the watermark back.
    quiet_since: Option<Instant>,
    done: bool,
    /// Offsets for the commit marks (when the job commits).
    stairs: Option<Stairs>,
    /// Where a restart resumes this partition: records before `through` may be committed.
    resumed: Option<PartitionOffsets>,
}

/// Offsets per block of a partition's own watermark (see `Tracked::read`).
pub const BLOCK: i64 = 256;

impl Tracked {
    /// Tracks the event time of the record at `offset`, read in offset order.
    ///
    /// Besides the watermark, each partition has its own, advanced a block of offsets at a
    /// time: the largest event time of the blocks before the current one. A record older than it
    /// minus the lateness is late too. That makes `late` a function of the input alone: the
    /// watermark depends on how fast each partition happens to be read, and is never ahead of
    /// this one in a backfill (it waits for every partition's first block), so a restart or
    /// another number of workers judges every record the same. Records within a block are not
    /// judged against each other, as records read in one go are not by the watermark.
    fn read(&mut self, offset: i64, time: Option<u64>) {
        let block = offset.div_euclid(BLOCK);
        if self.block.is_some_and(|b| b < block) {
            self.sealed_max = self.sealed_max.max(self.block_max.take());
        }
        self.block = Some(block);
        if let Some(t) = time {
            self.block_max = self.block_max.max(Some(t));
            self.max_seen = self.max_seen.max(Some(t));
        }
    }
}

/// Settings of the source operator.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `allowed_lateness_seconds`, in microseconds.
    pub lateness: u64,
    /// How long a caught-up partition must stay quiet before it stops holding the watermark.
    pub idle_after: Duration,
    /// Records read per partition per activation, so that one busy partition cannot starve the
    /// rest of the dataflow.
    pub batch: usize,
    /// How far (µs of event time) reading may run ahead of what the whole dataflow has
    /// finished: timely has no back-pressure of its own, and a source that reads faster than
    /// the rules run would otherwise fill memory with records in flight.
    pub max_lead: u64,
    /// The commit interval (µs of event time), when the job commits to the lakehouse: the
    /// source then reports [`Mark`]s at each boundary.
    pub commit_interval: Option<u64>,
    /// Where the last commit left the input, when resuming: the partitions are opened at their
    /// `resume` offsets, records committed before are skipped, and the capability starts at
    /// the boundary.
    pub resume: Option<Position>,
}

/// The source operator: reads `partitions` (this worker's) into a stream of arrivals in event
/// time, and a stream of [`Mark`]s where its capability passes commit boundaries. Ends (drops
/// its capabilities) when every partition is done.
pub fn source<'scope>(
    scope: Scope<'scope, u64>,
    partitions: Vec<Box<dyn Partition>>,
    config: SourceConfig,
    metrics: Arc<Metrics>,
    judged: ProbeHandle<u64>,
    stop: Arc<AtomicBool>,
    backlog: Backlog,
) -> (
    Stream<'scope, u64, Vec<Arrival>>,
    Stream<'scope, u64, Vec<Mark>>,
) {
    let mut builder = OperatorBuilder::new("Source".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (arrivals_out, arrivals) = builder.new_output::<Vec<Arrival>>();
    let (marks_out, marks) = builder.new_output::<Vec<Mark>>();
    let mut arrivals_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Arrival>>>::from(arrivals_out);
    let mut marks_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Mark>>>::from(marks_out);

    builder.build(move |mut capabilities| {
        let marks_cap = capabilities.pop().expect("two outputs");
        let data_cap = capabilities.pop().expect("two outputs");
        // The watermark starts where the last commit ended: nothing before it is sent again.
        let start = config.resume.as_ref().map_or(0, |r| r.boundary);
        let mut capability = Some((data_cap.delayed(&start), marks_cap.delayed(&start)));
        let mut partitions: Vec<Tracked> = partitions
            .into_iter()
            .map(|reader| Tracked {
                stairs: config
                    .commit_interval
                    .map(|i| Stairs::new(i, reader.position())),
                resumed: config
                    .resume
                    .as_ref()
                    .and_then(|r| r.partitions.get(&reader.id()).copied()),
                reader,
                max_seen: None,
                sealed_max: None,
                block: None,
                block_max: None,
                quiet_since: None,
                done: false,
            })
            .collect();
        let mut buffer = Vec::with_capacity(config.batch);
        // This activation's arrivals by time: a few dozen granules at most.
        let mut timed: BTreeMap<u64, Vec<Arrival>> = BTreeMap::new();
        // The exact watermark; the capability holds its granule.
        let mut watermark = start;

        move |_frontiers| {
            let mut arrivals_out = arrivals_out.activate();
            let mut marks_out = marks_out.activate();
            let Some((cap, marks_cap)) = capability.as_mut() else {
                return;
            };
            // Stopping (Ctrl-C) ends the input: what was read still flows to the end.
            let finished = stop.load(Ordering::Relaxed) || partitions.iter().all(|p| p.done);
            if finished {
                step_marks(
                    &mut partitions,
                    *cap.time(),
                    u64::MAX,
                    watermark,
                    marks_cap,
                    &mut marks_out,
                );
                capability = None;
                for part in partitions.drain(..) {
                    part.reader.close();
                }
                return;
            }
            if judged.less_than(&cap.time().saturating_sub(config.max_lead)) {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            let mut any_ready = false;
            let mut full = false;
            for part in partitions.iter_mut().filter(|p| !p.done) {
                buffer.clear();
                match part.reader.poll(config.batch, &mut buffer) {
                    Poll::Ready => {
                        any_ready |= !buffer.is_empty();
                        part.quiet_since = None;
                    }
                    Poll::Idle => {
                        part.quiet_since.get_or_insert_with(Instant::now);
                    }
                    Poll::Done => part.done = true,
                }
                metrics.read.add(buffer.len() as u64);
                full |= buffer.len() >= config.batch;
                for raw in buffer.drain(..) {
                    let verdict = validate_deferred(&raw.payload);
                    let time = verdict.event_time().map(|t| t.as_micros().max(0) as u64);
                    if let (Some(position), Some(at)) = (&config.resume, &part.resumed) {
                        if committed(position, at, raw.offset, time) {
                            if let Some(s) = part.stairs.as_mut() {
                                s.skipped(raw.offset);
                            }
                            metrics.recovered.add(1);
                            continue;
                        }
                    }
                    let late = time.is_some_and(|t| {
                        t < watermark
                            || part
                                .sealed_max
                                .is_some_and(|m| t.saturating_add(config.lateness) < m)
                    });
                    part.read(raw.offset, time);
                    // A record goes out at its time, or at the capability if that is later
                    // (late); one without an event time (invalid) at the capability. Never at
                    // the watermark itself, which may be ahead of the capability while a resumed
                    // partition re-reads: the commits' offsets rely on `at` being one of these.
                    let at = time.map_or(*cap.time(), |t| granule(t).max(*cap.time()));
                    if let Some(s) = part.stairs.as_mut() {
                        s.sent(raw.offset, at);
                    }
                    timed
                        .entry(at)
                        .or_default()
                        .push(Arrival { raw, verdict, late });
                }
            }
            backlog.set(full);
            if let Some(m) = partitions.iter().filter_map(|p| p.max_seen).max() {
                metrics.saw_event_time(m as i64);
            }
            // One message per timestamp, each partition's records in their order.
            for (t, mut arrivals) in std::mem::take(&mut timed) {
                let at = cap.delayed(&t);
                arrivals_out.session(&at).give_container(&mut arrivals);
            }

            if let Some(w) = local_watermark(&partitions, &config) {
                watermark = watermark.max(w);
                let now = *cap.time();
                let mut to = granule(watermark);
                // A resumed partition re-reads up to its `through` before the capability
                // passes a boundary: the next commit's offsets must cover all the last one did.
                if let Some(interval) = config.commit_interval {
                    let rereading = partitions.iter().any(|p| {
                        p.resumed
                            .is_some_and(|r| !p.done && p.reader.position() < r.through)
                    });
                    if rereading {
                        to = to.min((start / interval + 1) * interval - GRANULE);
                    }
                }
                if to > now {
                    step_marks(
                        &mut partitions,
                        now,
                        to,
                        watermark,
                        marks_cap,
                        &mut marks_out,
                    );
                    cap.downgrade(&to);
                    marks_cap.downgrade(&to);
                }
            }
            if any_ready {
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(1));
            }
        }
    });
    (arrivals, marks)
}

/// Reports, before the capability moves from `from` to `to`, the partitions' marks for the
/// commit boundaries it passes (sent at `from`, so they arrive before the boundaries close).
fn step_marks(
    partitions: &mut [Tracked],
    from: u64,
    to: u64,
    watermark: u64,
    cap: &Capability<u64>,
    out: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<Mark>>>,
) {
    let mut session = out.session(cap);
    for part in partitions.iter_mut() {
        let id = part.reader.id();
        if let Some(mark) = part
            .stairs
            .as_mut()
            .and_then(|s| s.step(id, from, to, watermark))
        {
            session.give(mark);
        }
    }
}

/// The watermark of one worker's partitions: over those that are not done and not idle, the
/// least of the newest event time read minus the lateness. `None` while one of them has read
/// nothing yet: it holds the watermark where it is.
fn local_watermark(partitions: &[Tracked], config: &SourceConfig) -> Option<u64> {
    let holding = partitions.iter().filter(|p| {
        !p.done
            && p.quiet_since
                .is_none_or(|q| q.elapsed() < config.idle_after)
    });
    let mut least = None::<u64>;
    for p in holding {
        // Until its first block is read, a partition holds the watermark (see `Tracked::read`).
        p.sealed_max?;
        let w = p.max_seen?.saturating_sub(config.lateness);
        least = Some(least.map_or(w, |x: u64| x.min(w)));
    }
    least
}

/// A partition read from memory, in the given order: for tests and replays.
pub struct Replay {
    id: i32,
    records: std::collections::VecDeque<RawRecord>,
    /// The offset after the last record.
    end: i64,
}

impl Replay {
    /// Partition `id` holding `payloads` (keyed by `keys`) at offsets 0, 1, …
    pub fn new(id: i32, records: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>) -> Self {
        let records = records
            .into_iter()
            .enumerate()
            .map(|(offset, (key, payload))| RawRecord {
                partition: id,
                offset: offset as i64,
                timestamp_ms: None,
                key: key.map(Key::from_vec),
                payload: Bytes::from(payload),
            })
            .collect::<std::collections::VecDeque<_>>();
        let end = records.len() as i64;
        Replay { id, records, end }
    }
}

impl Partition for Replay {
    fn id(&self) -> i32 {
        self.id
    }
    fn position(&self) -> i64 {
        self.records.front().map_or(self.end, |r| r.offset)
    }
    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Poll {
        let n = max.min(self.records.len());
        out.extend(self.records.drain(..n));
        if self.records.is_empty() {
            Poll::Done
        } else {
            Poll::Ready
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PayloadArena;

    /// Copies are exact and independent, whether they share a chunk, fill one to its end, or
    /// are larger than a chunk.
    #[test]
    fn arena_copies_are_exact() {
        let mut arena = PayloadArena::default();
        let sizes = [
            0,
            1,
            300,
            PayloadArena::CHUNK - 301,
            300,
            5,
            PayloadArena::CHUNK * 2,
            7,
        ];
        let records: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let copies: Vec<_> = records.iter().map(|r| arena.copy(r)).collect();
        for (r, c) in records.iter().zip(&copies) {
            assert_eq!(&r[..], &c[..]);
        }
        // A record kept alone outlives the others and its chunk's later writes.
        let kept = copies[2].clone();
        drop(copies);
        let later = arena.copy(&[0xAA; 64]);
        assert_eq!(&kept[..], &records[2][..]);
        assert_eq!(&later[..], &[0xAA; 64]);
    }
}
