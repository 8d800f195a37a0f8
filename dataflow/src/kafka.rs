//! Kafka at the dataflow's edges: input partitions for [`crate::source`], and an [`Emitter`]
//! that produces alerts and dead letters to their topics.
//!
//! Each worker has one consumer, assigned (not subscribed) the partitions the worker reads, with
//! one queue per partition so the source can poll them separately, a batch at a time. No
//! consumer group coordinates anything: the job itself decides who reads what.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use generator::output::{flush_waiting, send_waiting, Deliveries};
use model::{Alert, DeadLetter};
use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::emit::Emitter;
use crate::judge::Valid;
use crate::progress::Position;
use crate::source::{Key, Partition, PayloadArena, Poll, RawRecord};

/// How many partitions `topic` has, waiting up to `timeout` for the broker.
pub fn partition_count(brokers: &str, topic: &str, timeout: Duration) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = base_config(brokers)
        .create()
        .context("creating a Kafka consumer")?;
    let start = Instant::now();
    loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && !t.partitions().is_empty())
                {
                    return Ok(t.partitions().len() as i32);
                }
                tracing::info!("waiting for topic {topic} on {brokers}");
            }
            Err(e) => tracing::warn!("cannot reach Kafka at {brokers} yet: {e}"),
        }
        if start.elapsed() > timeout {
            bail!(
                "could not read topic {topic} from Kafka at {brokers} within {} s. \
                 Is a broker running there, and the topic created? For a local one: scripts/kafka.sh start",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// One partition of the input topic, read through its own queue of the worker's consumer.
pub struct KafkaPartition {
    id: i32,
    /// Declared before `consumer`, so dropped before it.
    queue: BatchQueue,
    /// The worker's consumer: polled too, to serve its callbacks; shared by its partitions.
    consumer: Arc<BaseConsumer>,
    /// With `--until-caught-up`: the end of the partition when the job started.
    end: Option<i64>,
    /// The next offset to read.
    position: i64,
    /// The topic's name, for librdkafka's C API.
    topic: std::ffi::CString,
    arena: PayloadArena,
}

/// A partition's own queue in librdkafka, read a batch of messages per call with
/// `rd_kafka_consume_batch_queue`. The rdkafka crate reads one message per call through the
/// event API, which costs two clock reads and an event of its own per message: about a tenth of
/// the workers' time through Kafka.
struct BatchQueue {
    queue: std::ptr::NonNull<rd::rd_kafka_queue_t>,
    /// Room for one batch of messages, empty between calls.
    batch: Vec<*mut rd::rd_kafka_message_t>,
}

impl BatchQueue {
    /// Splits `partition`'s messages off the consumer's queue into a queue of their own.
    fn split(consumer: &BaseConsumer, topic: &std::ffi::CStr, partition: i32) -> Option<Self> {
        // SAFETY: the client is live; librdkafka returns a new reference to the partition's
        // queue, or null when it does not know the partition.
        let queue = unsafe {
            rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        let queue = std::ptr::NonNull::new(queue)?;
        // SAFETY: `queue` is live; forwarding to null stops it forwarding to the consumer's
        // queue, so its messages wait here.
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(BatchQueue {
            queue,
            batch: Vec::new(),
        })
    }

    /// Calls `each` with up to `max` messages waiting in the queue, without blocking, and
    /// destroys each after. Returns how many there were, or librdkafka's error.
    fn drain(
        &mut self,
        max: usize,
        mut each: impl FnMut(&rd::rd_kafka_message_t),
    ) -> Result<usize, String> {
        self.batch.reserve(max);
        // SAFETY: `batch` has room for `max` pointers; librdkafka writes at most that many
        // and returns how many it wrote (or -1).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, self.batch.as_mut_ptr(), max)
        };
        let Ok(n) = usize::try_from(n) else {
            // SAFETY: reads librdkafka's thread-local last error and its static description.
            let e = unsafe {
                std::ffi::CStr::from_ptr(rd::rd_kafka_err2str(rd::rd_kafka_last_error()))
            };
            return Err(e.to_string_lossy().into_owned());
        };
        // SAFETY: librdkafka initialized the first `n` pointers, each a live message that is
        // ours to destroy, once, after its last use.
        unsafe { self.batch.set_len(n) };
        let mut batch = Destroying {
            messages: &mut self.batch,
            done: 0,
        };
        while let Some(&m) = batch.messages.get(batch.done) {
            // SAFETY: live until destroyed, right after its use while it is still in cache.
            each(unsafe { &*m });
            unsafe { rd::rd_kafka_message_destroy(m) };
            batch.done += 1;
        }
        Ok(n)
    }
}

/// The messages of a batch from `done` on, destroyed (and the list emptied) when this is
/// dropped, even if the caller's closure panics: a message left alive would hold its fetch
/// buffer, and librdkafka's shutdown waits for those.
struct Destroying<'a> {
    messages: &'a mut Vec<*mut rd::rd_kafka_message_t>,
    /// How many were destroyed already.
    done: usize,
}

impl Drop for Destroying<'_> {
    fn drop(&mut self) {
        for &m in &self.messages[self.done..] {
            // SAFETY: a live message of this batch, not yet destroyed.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        self.messages.clear();
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: our reference, released once; the client outlives it (see KafkaPartition).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// The bytes of a message's payload or key: `len` bytes at `ptr`, or none.
///
/// # Safety
/// `ptr` must be null or point to `len` bytes that live as long as the returned slice.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> &'a [u8] {
    if ptr.is_null() {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr.cast(), len) }
    }
}

impl KafkaPartition {
    /// Whether records are known to be waiting past our position: the end offset of a bounded
    /// run, or the high watermark of the partition's last fetch. Such a partition is never
    /// idle, however long its queue stays empty, so a backfill marks nothing late.
    fn behind(&self) -> bool {
        if let Some(end) = self.end {
            return self.position < end;
        }
        let (mut low, mut high) = (0i64, 0i64);
        // SAFETY: the client outlives the call; librdkafka only reads the cached offsets of
        // its last fetch response into the two out-parameters.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic.as_ptr(),
                self.id,
                &mut low,
                &mut high,
            )
        };
        err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            && high > self.position
    }
}

/// Opens this worker's partitions of `topic` (`ids`), each at its offset in `resume` or else
/// from the beginning. With `until_caught_up` each ends at the offset that was the partition's
/// end when this was called.
pub fn open_partitions(
    brokers: &str,
    topic: &str,
    ids: &[i32],
    resume: Option<&Position>,
    until_caught_up: bool,
) -> anyhow::Result<Vec<Box<dyn Partition>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let consumer: Arc<BaseConsumer> = Arc::new(
        base_config(brokers)
            .set("group.id", "finstream-dataflow")
            .set("enable.auto.commit", "false")
            // Offsets are the job's own (the lakehouse's commits), never the group's: no need
            // for librdkafka to store each message's under a lock.
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.min.bytes", "1")
            .set("queued.max.messages.kbytes", "65536")
            // Reading a backlog, a partition's local queue is often above librdkafka's
            // threshold (100 000 messages); by default its next fetch then waits a whole
            // second, and the workers starve. 10 ms (with 8 MB fetches): 2 M records through
            // 2 workers went from 326-337 k/s to 390-452 k/s.
            .set("fetch.queue.backoff.ms", "10")
            // librdkafka's default, 1 MB a partition per fetch: 8 MB cost the 5 M-record run
            // a fifth more page faults and 5 % more CPU (docs/performance.md).
            .set("max.partition.fetch.bytes", "1048576")
            .create()
            .context("creating a Kafka consumer")?,
    );
    let mut assignment = TopicPartitionList::new();
    let mut starts = Vec::new();
    for &p in ids {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        let start = match resume.and_then(|r| r.partitions.get(&p)) {
            Some(at) if at.resume < low => bail!(
                "{topic}/{p} resumes at offset {} but its records start at {low}: \
                 the records in between were deleted before the job stored them",
                at.resume
            ),
            Some(at) => at.resume,
            None => low,
        };
        assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
        starts.push((p, start, high));
    }
    // Each partition's queue is split off before the assignment starts its fetches, so that no
    // message can reach the consumer's own queue first.
    let topic_c = std::ffi::CString::new(topic).context("a topic name with a NUL byte")?;
    let mut queues = Vec::new();
    for &(p, _, _) in &starts {
        queues.push(
            BatchQueue::split(&consumer, &topic_c, p)
                .with_context(|| format!("a queue for {topic}/{p}"))?,
        );
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut out: Vec<Box<dyn Partition>> = Vec::new();
    for ((p, low, high), queue) in starts.into_iter().zip(queues) {
        out.push(Box::new(KafkaPartition {
            id: p,
            queue,
            consumer: consumer.clone(),
            end: until_caught_up.then_some(high),
            position: low,
            topic: topic_c.clone(),
            arena: PayloadArena::default(),
        }));
    }
    Ok(out)
}

impl Partition for KafkaPartition {
    fn id(&self) -> i32 {
        self.id
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Poll {
        if self.end.is_some_and(|end| self.position >= end) {
            return Poll::Done;
        }
        // Serves the consumer's callbacks; its messages all go to the partition queues, so
        // anything else it returns is an error to report.
        match self.consumer.poll(Duration::ZERO) {
            Some(Err(e)) => tracing::warn!("Kafka consumer: {e}"),
            Some(Ok(m)) => tracing::error!(
                "a message of {}/{} at offset {} reached the consumer's own queue",
                m.topic(),
                m.partition(),
                m.offset()
            ),
            None => {}
        }
        let (id, end) = (self.id, self.end);
        let position = &mut self.position;
        let arena = &mut self.arena;
        let mut n = 0;
        let drained = self.queue.drain(max, |m| {
            if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: librdkafka's description of the message's error, a C string.
                let e = unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_message_errstr(m)) };
                tracing::warn!("reading partition {id}: {}", e.to_string_lossy());
                return;
            }
            // Past the end of a bounded run (which may fall in a gap of offsets): done, at the
            // first such message.
            if let Some(end) = end.filter(|&end| m.offset >= end) {
                if *position < end {
                    *position = m.offset;
                }
                return;
            }
            *position = m.offset + 1;
            let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: `m` is a live message; its payload and key live as long as it does.
            let (timestamp, payload, key) = unsafe {
                (
                    rd::rd_kafka_message_timestamp(m, &mut kind),
                    bytes(m.payload, m.len),
                    (!m.key.is_null()).then(|| bytes(m.key, m.key_len)),
                )
            };
            out.push(RawRecord {
                partition: id,
                offset: m.offset,
                // As rdkafka reads it: none when the type says so or the value is -1.
                timestamp_ms: (kind
                    != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                    && timestamp != -1)
                    .then_some(timestamp),
                key: key.map(Key::from_slice),
                payload: arena.copy(payload),
            });
            n += 1;
        });
        if let Err(e) = drained {
            tracing::warn!("reading partition {}: {e}", self.id);
        }
        if self.end.is_some_and(|end| self.position >= end) {
            Poll::Done
        } else if n > 0 || self.behind() {
            Poll::Ready
        } else {
            Poll::Idle
        }
    }

    /// The partition's queue goes at once; the consumer, when this was its last partition, on
    /// a thread of its own: closing it waits for the fetch it has outstanding, which the broker
    /// holds up to `fetch.wait.max.ms` (500 ms) when there is nothing more to read. At the end
    /// of a bounded run that wait had both workers idle before the last records' rules.
    fn close(self: Box<Self>) {
        let KafkaPartition {
            queue, consumer, ..
        } = *self;
        drop(queue);
        if Arc::strong_count(&consumer) == 1 {
            drop_elsewhere("the Kafka consumer", consumer);
        }
    }
}

/// Produces alerts (keyed by account) and dead letters (keyed by the input's key) to Kafka,
/// with an idempotent producer. Each worker has its own.
///
/// While the worker reads a backlog, records are held here and handed to the producer together,
/// at most [`HOLD`] after the first of them: at `linger.ms` alone (5 ms) the producer sent a
/// request every 5 ms, and serving those cost the broker as much CPU as the reads did (half its
/// CPU during a 5 M-record catch-up). In a live stream each is handed over at the end of the
/// worker's activation that made it, and waits only `linger.ms`.
pub struct KafkaOutputs {
    /// Taken only when dropped.
    producer: Option<ThreadedProducer<Deliveries>>,
    alerts_topic: String,
    dead_letter_topic: String,
    /// The bytes of the records held: each one's key, then its value.
    held: Vec<u8>,
    records: Vec<Held>,
    /// When the first record held was made.
    since: Option<Instant>,
}

/// How long a record may be held while the worker reads a backlog.
pub const HOLD: Duration = Duration::from_millis(50);

/// A record held, its key and value at `start..key_end` and `key_end..end` of the held bytes.
struct Held {
    dead_letter: bool,
    keyed: bool,
    start: usize,
    key_end: usize,
    end: usize,
}

impl KafkaOutputs {
    pub fn new(brokers: &str, alerts_topic: &str, dead_letter_topic: &str) -> anyhow::Result<Self> {
        let producer = base_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .context("creating the Kafka producer")?;
        Ok(KafkaOutputs {
            producer: Some(producer),
            alerts_topic: alerts_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            held: Vec::new(),
            records: Vec::new(),
            since: None,
        })
    }

    fn producer(&self) -> &ThreadedProducer<Deliveries> {
        self.producer.as_ref().expect("taken only when dropped")
    }

    /// Holds a record: its key, and the value `value` writes.
    fn hold(&mut self, dead_letter: bool, key: Option<&[u8]>, value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.held.len();
        self.held.extend_from_slice(key.unwrap_or_default());
        let key_end = self.held.len();
        value(&mut self.held);
        self.records.push(Held {
            dead_letter,
            keyed: key.is_some(),
            start,
            key_end,
            end: self.held.len(),
        });
        self.since.get_or_insert_with(Instant::now);
    }

    /// Hands every record held to the producer, in the order they were made.
    fn release(&mut self) {
        for r in &self.records {
            let topic = if r.dead_letter {
                &self.dead_letter_topic
            } else {
                &self.alerts_topic
            };
            let key = r.keyed.then(|| &self.held[r.start..r.key_end]);
            self.send(topic, key, &self.held[r.key_end..r.end]);
        }
        self.records.clear();
        self.held.clear();
        self.since = None;
    }

    fn send(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let mut record = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Err(e) = send_waiting(self.producer(), record) {
            self.producer()
                .context()
                .record_failure(format!("producing to {topic}: {e}"));
        }
    }

    /// Waits until everything produced is delivered; the number of records that failed.
    pub fn flush_all(&self) -> u64 {
        if let Err(e) = flush_waiting(self.producer(), "the output topics") {
            self.producer()
                .context()
                .record_failure(format!("flushing: {e}"));
        }
        self.producer().context().failed()
    }
}

/// The producer's thread polls 100 ms at a time, and dropping the producer waits for it to
/// notice: a thread of its own does that waiting. Whatever was not flushed by then is lost
/// either way; the job flushes before it ends ([`Emitter::finish`]).
impl Drop for KafkaOutputs {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            drop_elsewhere("the Kafka producer", producer);
        }
    }
}

/// Drops a Kafka client on a thread of its own, so that whatever its shutdown waits for does
/// not hold up the caller (on this one if no thread can be made).
fn drop_elsewhere(what: &str, client: impl Send + 'static) {
    let closing = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(client));
    if let Err(e) = closing {
        tracing::debug!("closing {what} on this thread: {e}");
    }
}

impl Emitter for KafkaOutputs {
    fn alert(&mut self, alert: &Alert) {
        let key = alert.account_id.to_ascii();
        self.hold(false, Some(&key), |out| alert.write_json(out));
    }

    fn dead_letter(&mut self, dead: &DeadLetter, key: Option<&[u8]>) {
        self.hold(true, key, |out| dead.write_json(out));
    }

    fn transaction(&mut self, _: &Valid) {}

    fn flush(&mut self, backlog: bool) -> Option<Duration> {
        let since = self.since?;
        let held = since.elapsed();
        if backlog && held < HOLD {
            return Some(HOLD - held);
        }
        self.release();
        None
    }

    fn finish(&mut self) {
        self.release();
        let failed = self.flush_all();
        if failed > 0 {
            tracing::error!("{failed} output records could not be delivered");
        }
    }
}
