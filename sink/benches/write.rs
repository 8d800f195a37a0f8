//! The sink alone: generator records (validated) → `transactions` rows → Parquet/ZSTD data files
//! of 256 Ki rows → one fast-append commit, on a fresh SQLite catalog in a temporary directory.
//! Prints rows/s of building rows, of writing files, of the whole, and bytes per row on disk.
//!
//!     cargo bench -p sink --bench write -- [rows] [rounds]

use std::time::Instant;

use generator::{Generator, GeneratorConfig};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use model::{validate, EventTime, Rules};
use sink::catalog::{load, open, CatalogConfig};
use sink::rows::TransactionRows;
use sink::schema::Table;
use sink::writer::TableWriter;

const FILE_ROWS: usize = 256 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(2_000_000);
    let rounds = args.get(1).copied().unwrap_or(3);

    let rules = Rules::default();
    let mut generator = Generator::new(GeneratorConfig::default(), Some(3));
    let mut buf = Vec::new();
    let mut txns = Vec::with_capacity(rows);
    while txns.len() < rows {
        buf.clear();
        generator.next_into(&mut buf);
        if let Ok(t) = validate(&buf, &rules) {
            txns.push(t);
        }
    }

    let runtime = tokio::runtime::Runtime::new()?;
    for round in 1..=rounds {
        let dir = tempfile::tempdir()?;
        let config = CatalogConfig {
            warehouse: dir.path().display().to_string(),
            ..CatalogConfig::default()
        };
        let (catalog, table) = runtime.block_on(async {
            let catalog = open(&config).await?;
            let table = load(catalog.as_ref(), Table::Transactions).await?;
            anyhow::Ok((catalog, table))
        })?;

        let start = Instant::now();
        let mut build = std::time::Duration::ZERO;
        let mut files = Vec::new();
        let now = EventTime::now();
        for (i, chunk) in txns.chunks(FILE_ROWS).enumerate() {
            let b = Instant::now();
            let mut builder = TransactionRows::default();
            for (j, t) in chunk.iter().enumerate() {
                builder.push(t, 0, (i * FILE_ROWS + j) as i64, false, now);
            }
            let batch = builder.finish();
            build += b.elapsed();
            files.extend(runtime.block_on(async {
                let mut w = TableWriter::new(&table, &format!("bench-{i}")).await?;
                w.write(batch).await?;
                w.close().await
            })?);
        }
        let written = start.elapsed();
        let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
        let n_files = files.len();
        runtime.block_on(async {
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .with_check_duplicate(false)
                .add_data_files(files)
                .apply(tx)?;
            tx.commit(catalog.as_ref()).await?;
            anyhow::Ok(())
        })?;
        let total = start.elapsed();
        let per_s = |d: std::time::Duration| rows as f64 / d.as_secs_f64();
        println!(
            "round {round}: {rows} rows, {n_files} files | rows built {:.0}/s | built+written {:.0}/s | \
             with the commit {:.0}/s | {:.1} bytes/row on disk (ZSTD)",
            per_s(build),
            per_s(written),
            per_s(total),
            bytes as f64 / rows as f64
        );
    }
    Ok(())
}
