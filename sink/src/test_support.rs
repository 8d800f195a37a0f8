//! What the unit tests share: a lakehouse in a temporary directory, and rows to put in it.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::Catalog;
use model::{validate, EventTime, Rules};

use crate::catalog::{open, CatalogConfig};
use crate::rows::TransactionRows;
use crate::writer::TableWriter;

/// An opened catalog and the temporary directory its warehouse lives in.
pub struct Lake {
    pub config: CatalogConfig,
    pub catalog: Arc<dyn Catalog>,
    _dir: tempfile::TempDir,
}

/// A fresh SQLite catalog in a temporary warehouse, with the three tables.
pub async fn lakehouse() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let config = CatalogConfig {
        warehouse: dir.path().display().to_string(),
        ..CatalogConfig::default()
    };
    Lake {
        catalog: open(&config).await.unwrap(),
        config,
        _dir: dir,
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
pub fn day(date: &str) -> i32 {
    let micros = EventTime::parse_rfc3339(&format!("{date}T00:00:00Z"))
        .unwrap()
        .as_micros();
    (micros / 86_400_000_000) as i32
}

/// A batch of `transactions` rows, one per date (noon plus the row's index in µs), at Kafka
/// offsets from `first_offset` on, each a different account, amount and id.
pub fn transactions(dates: &[&str], first_offset: i64) -> RecordBatch {
    let mut rows = TransactionRows::default();
    for (i, date) in dates.iter().enumerate() {
        let n = first_offset + i as i64;
        let json = format!(
            r#"{{"transaction_id":"00000000-0000-4000-8000-{n:012}","account_id":"ACC{n:07}",
            "amount":{n}.25,"currency":"GBP","merchant_id":"M{n}","transaction_type":"payment",
            "channel":"mobile","city":"Leeds","event_time":"{date}T12:00:00.{i:06}Z"}}"#
        );
        let t = validate(json.as_bytes(), &Rules::default()).unwrap();
        rows.push(&t, (n % 3) as i32, n, n % 2 == 1, EventTime::from_micros(n));
    }
    rows.finish()
}

/// Writes `batch` to `table` and commits it as one fast append; the table after the commit.
pub async fn append(
    lake: &Lake,
    table: &iceberg::table::Table,
    batch: RecordBatch,
) -> iceberg::table::Table {
    let mut writer = TableWriter::new(table, "test").await.unwrap();
    writer.write(batch).await.unwrap();
    let files = writer.close().await.unwrap();
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx).unwrap();
    tx.commit(lake.catalog.as_ref()).await.unwrap()
}
