//! The raw consume rate through the dataflow's own Kafka reader: a topic read to its end by
//! `dataflow::kafka::open_partitions` (the consumer settings the dataflow uses), its partitions
//! spread over THREADS threads as over the dataflow's workers, each record's bytes touched and
//! nothing more. What the dataflow would read if its operators cost nothing; the baseline
//! beside Kafka's own ConsumerPerformance in scripts/bench-dataflow.sh.
//!
//!     cargo run --release -p e2e --bin consume -- TOPIC [THREADS]
//!
//! Prints `records bytes seconds records/s` on one line.

use std::time::{Duration, Instant};

use dataflow::source::{assigned, Poll};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: consume TOPIC [THREADS]";
    let topic = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let brokers = e2e::brokers();
    let partitions = e2e::partition_count(&topic) as i32;
    anyhow::ensure!(partitions > 0, "{topic} has no partitions");

    let start = Instant::now();
    let readers: Vec<_> = (0..threads)
        .map(|index| {
            let (topic, brokers) = (topic.clone(), brokers.to_owned());
            std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
                let ids: Vec<i32> = assigned(partitions, index, threads).collect();
                let mut parts =
                    dataflow::kafka::open_partitions(&brokers, &topic, &ids, None, true)?;
                let (mut records, mut bytes) = (0u64, 0u64);
                let mut buffer = Vec::with_capacity(1024);
                while !parts.is_empty() {
                    let mut idle = true;
                    parts.retain_mut(|p| {
                        buffer.clear();
                        let poll = p.poll(1024, &mut buffer);
                        idle &= buffer.is_empty();
                        records += buffer.len() as u64;
                        bytes += buffer.iter().map(|r| r.payload.len() as u64).sum::<u64>();
                        poll != Poll::Done
                    });
                    if idle {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok((records, bytes))
            })
        })
        .collect();
    let (mut records, mut bytes) = (0, 0);
    for r in readers {
        let (n, b) = r.join().expect("a reader panicked")?;
        records += n;
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{records} {bytes} {seconds:.3} {:.0}",
        records as f64 / seconds
    );
    Ok(())
}
