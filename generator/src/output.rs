//! Where generated records go: a Kafka topic, standard output or a file (JSON lines).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use model::AccountId;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

/// A destination for records.
pub trait Output {
    /// Queues one record.
    fn send(&mut self, key: AccountId, value: &[u8]) -> anyhow::Result<()>;
    /// Waits until everything sent is written (or delivered), then reports failures.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Passes on what is buffered without waiting for it, so a paced run's readers see records
    /// as they are made. Called while the run waits for its next record's time.
    fn push(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Records that could not be delivered so far (Kafka only).
    fn failed(&self) -> u64 {
        0
    }
}

/// JSON lines on any writer (standard output, a file): the record's value and a newline.
pub struct Lines<W: Write>(pub W);

impl<W: Write> Output for Lines<W> {
    fn send(&mut self, _key: AccountId, value: &[u8]) -> anyhow::Result<()> {
        self.0.write_all(value)?;
        self.0.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.0.flush()?)
    }

    fn push(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}

/// Counts delivery reports; the producer's background thread calls it. Shared with the
/// dataflow's Kafka outputs.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    /// The first failure, kept for the final error message.
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// Records that could not be delivered so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first delivery error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a record that will not be delivered; the first one is logged and kept.
    pub fn record_failure(&self, e: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            tracing::error!("a record could not be delivered: {e}");
            *first = Some(e.to_string());
        }
    }
}

/// Queues `record`, waiting for room while the producer's local queue is full (the broker is
/// slower than we are). Other errors are returned.
pub fn send_waiting(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until everything `producer` was given is delivered (or has failed, which its
/// [`Deliveries`] count), saying every 10 s how much is still on its way to `to`. Idempotent
/// delivery retries until `message.timeout.ms`, so this waits at least as long.
///
/// rdkafka's `flush` waits for an event between its tries, up to 100 ms, while the producer's
/// own thread serves every delivery report: every run ended a tenth of a second late. So this
/// asks librdkafka without waiting, a millisecond apart.
pub fn flush_waiting(producer: &ThreadedProducer<Deliveries>, to: &str) -> Result<(), KafkaError> {
    let mut said = Instant::now();
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                if said.elapsed() >= Duration::from_secs(10) {
                    tracing::info!(
                        "waiting for {} records to be delivered to {to}",
                        producer.in_flight_count()
                    );
                    said = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.record_failure(e);
        }
    }
}

/// An idempotent producer (acks=all): every record delivered exactly once per partition, in
/// order, even when the producer retries.
pub struct Kafka {
    /// Its context counts delivery failures.
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl Kafka {
    /// Connects to `brokers` and checks, for up to `timeout`, that the topic can be reached.
    /// `options` are extra librdkafka properties (`key=value`), applied last.
    pub fn connect(
        brokers: &str,
        topic: &str,
        options: &[(String, String)],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "10")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576");
        for (k, v) in options {
            config.set(k, v);
        }
        let producer: ThreadedProducer<_> = config
            .create_with_context(Deliveries::default())
            .context("creating the Kafka producer")?;

        // librdkafka connects lazily and retries forever; ask for the topic's metadata so an
        // unreachable broker is reported now, with what was tried, instead of never.
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let left = timeout.saturating_sub(start.elapsed());
            match producer
                .client()
                .fetch_metadata(Some(topic), left.min(Duration::from_secs(5)))
            {
                Ok(md)
                    if md.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    }) =>
                {
                    break
                }
                Ok(_) => tracing::info!("waiting for topic {topic} on {brokers} to be created"),
                Err(e) => {
                    tracing::warn!("cannot reach Kafka at {brokers} yet (attempt {attempts}): {e}")
                }
            }
            if start.elapsed() >= timeout {
                bail!(
                    "could not reach topic {topic} on Kafka at {brokers}: tried {attempts} times over {:.0} s. \
                     Is a broker running there? For a local one: scripts/kafka.sh start",
                    timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(Kafka {
            producer,
            topic: topic.to_owned(),
        })
    }
}

impl Output for Kafka {
    fn send(&mut self, key: AccountId, value: &[u8]) -> anyhow::Result<()> {
        let key = key.to_ascii();
        let record = BaseRecord::to(&self.topic).key(&key[..]).payload(value);
        send_waiting(&self.producer, record)
            .map_err(|e| anyhow::anyhow!("producing to {}: {e}", self.topic))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        flush_waiting(&self.producer, &self.topic)
            .map_err(|e| anyhow::anyhow!("flushing to {}: {e}", self.topic))?;
        let failed = self.failed();
        if failed > 0 {
            let first = self.producer.context().first_error();
            bail!(
                "{failed} records could not be delivered to {} (first error: {})",
                self.topic,
                first.unwrap_or_default()
            );
        }
        Ok(())
    }

    fn failed(&self) -> u64 {
        self.producer.context().failed()
    }
}
