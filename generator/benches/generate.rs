//! Generation throughput in memory (no I/O): the ceiling for the file and Kafka outputs,
//! which scripts/bench-generator.sh measures end to end.
//!
//!     cargo bench -p generator --bench generate

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use generator::{Generator, GeneratorConfig};

fn bench(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut group = c.benchmark_group("generate");
    group.throughput(Throughput::Elements(N));
    group.bench_function("default_config", |b| {
        let mut g = Generator::new(GeneratorConfig::default(), Some(1));
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0;
            for _ in 0..N {
                g.next_into(&mut buf);
                bytes += buf.len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
