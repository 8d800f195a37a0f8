//! Kafka at the dataflow's edges: input partitions for [`crate::source`], and an [`Emitter`]
//! that produces alerts and dead letters to their topics.
//!
//! Each worker has one consumer, assigned (not subscribed) the partitions the worker reads, with
//! one queue per partition so the source can poll them separately. No consumer group
//! coordinates anything: the job itself decides who reads what.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use generator::output::{send_waiting, Deliveries};
use model::{Alert, DeadLetter};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::emit::Emitter;
use crate::judge::Valid;
use crate::progress::Position;
use crate::source::{Key, Partition, Poll, RawRecord};

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
    queue: PartitionQueue<DefaultConsumerContext>,
    /// The worker's consumer: polled too, to serve its callbacks; shared by its partitions.
    consumer: Arc<BaseConsumer>,
    /// With `--until-caught-up`: the end of the partition when the job started.
    end: Option<i64>,
    /// The next offset to read.
    position: i64,
    /// The topic's name, for librdkafka's C API.
    topic: std::ffi::CString,
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
            // second, and the workers starve. 10 ms, and up to 8 MB a partition per fetch:
            // 2 M records through 2 workers went from 326-337 k/s to 390-452 k/s.
            .set("fetch.queue.backoff.ms", "10")
            .set("max.partition.fetch.bytes", "8388608")
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
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut out: Vec<Box<dyn Partition>> = Vec::new();
    for (p, low, high) in starts {
        let queue = consumer
            .split_partition_queue(topic, p)
            .with_context(|| format!("a queue for {topic}/{p}"))?;
        out.push(Box::new(KafkaPartition {
            id: p,
            queue,
            consumer: consumer.clone(),
            end: until_caught_up.then_some(high),
            position: low,
            topic: std::ffi::CString::new(topic).context("a topic name with a NUL byte")?,
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
        // Serves the consumer's callbacks; its messages all go to the partition queues.
        let _ = self.consumer.poll(Duration::ZERO);
        let mut n = 0;
        while n < max {
            let Some(m) = self.queue.poll(Duration::ZERO) else {
                break;
            };
            match m {
                Ok(m) => {
                    if self.end.is_some_and(|end| m.offset() >= end) {
                        self.position = m.offset();
                        return Poll::Done;
                    }
                    self.position = m.offset() + 1;
                    out.push(RawRecord {
                        partition: self.id,
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(Key::from_slice),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                    n += 1;
                }
                Err(e) => {
                    tracing::warn!("reading partition {}: {e}", self.id);
                    break;
                }
            }
        }
        if self.end.is_some_and(|end| self.position >= end) {
            Poll::Done
        } else if n > 0 || self.behind() {
            Poll::Ready
        } else {
            Poll::Idle
        }
    }
}

/// Produces alerts (keyed by account) and dead letters (keyed by the input's key) to Kafka,
/// with an idempotent producer. Each worker has its own.
pub struct KafkaOutputs {
    producer: ThreadedProducer<Deliveries>,
    alerts_topic: String,
    dead_letter_topic: String,
    /// Reused for the alert's key, the account id's text.
    key: String,
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
            producer,
            alerts_topic: alerts_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            key: String::new(),
        })
    }

    fn send(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let mut record = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Err(e) = send_waiting(&self.producer, record) {
            self.producer
                .context()
                .record_failure(format!("producing to {topic}: {e}"));
        }
    }

    /// Waits until everything produced is delivered; the number of records that failed.
    pub fn flush_all(&self) -> u64 {
        while let Err(e) = self.producer.flush(Duration::from_secs(10)) {
            tracing::info!(
                "waiting for {} output records to be delivered ({e})",
                self.producer.in_flight_count()
            );
        }
        self.producer.context().failed()
    }
}

impl Emitter for KafkaOutputs {
    fn alert(&mut self, alert: &Alert) {
        use std::fmt::Write as _;
        self.key.clear();
        let _ = write!(self.key, "{}", alert.account_id);
        let key = std::mem::take(&mut self.key);
        self.send(
            &self.alerts_topic,
            Some(key.as_bytes()),
            alert.to_json().as_bytes(),
        );
        self.key = key;
    }

    fn dead_letter(&mut self, dead: &DeadLetter, key: Option<&[u8]>) {
        self.send(&self.dead_letter_topic, key, dead.to_json().as_bytes());
    }

    fn transaction(&mut self, _: &Valid) {}

    fn finish(&mut self) {
        let failed = self.flush_all();
        if failed > 0 {
            tracing::error!("{failed} output records could not be delivered");
        }
    }
}
