//! Validation throughput on generator output, beside parsing the same bytes into a
//! `serde_json::Value` (the baseline: any validator must at least parse the JSON).
//!
//!     cargo bench -p model --bench validate
//!
//! Each benchmark is reported twice, in records/s (`records/…`) and in bytes/s (`bytes/…`).

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use generator::{Generator, GeneratorConfig};
use model::{validate, Rules};

fn records() -> Vec<Vec<u8>> {
    let mut config = GeneratorConfig::default();
    // Padded 64 KiB records would dominate the bytes: leave that kind out of the mix.
    config
        .invalid
        .kinds
        .remove(&generator::config::InvalidKind::TooLarge);
    let mut g = Generator::new(config, Some(1));
    (0..100_000)
        .map(|_| {
            let mut buf = Vec::new();
            g.next_into(&mut buf);
            buf
        })
        .collect()
}

fn both<M: criterion::measurement::Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    records: &[Vec<u8>],
) {
    let rules = Rules::default();
    group.bench_function("validate", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| validate(r, &rules).is_ok())
                .count()
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| serde_json::from_slice::<serde_json::Value>(r).is_ok())
                .count()
        })
    });
}

fn bench(c: &mut Criterion) {
    let records = records();
    let bytes: usize = records.iter().map(Vec::len).sum();
    eprintln!(
        "{} records, {} bytes, {:.1} bytes/record",
        records.len(),
        bytes,
        bytes as f64 / records.len() as f64
    );
    let mut group = c.benchmark_group("records");
    group.throughput(Throughput::Elements(records.len() as u64));
    both(&mut group, &records);
    group.finish();
    let mut group = c.benchmark_group("bytes");
    group.throughput(Throughput::Bytes(bytes as u64));
    both(&mut group, &records);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
