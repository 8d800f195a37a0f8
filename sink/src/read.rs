//! Reading a table back (recovery, tests): one snapshot, pruned by iceberg-rust from the
//! manifests' partition values and column bounds, then filtered row by row.

use anyhow::Context as _;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use iceberg::expr::Predicate;

/// The rows of `table` at `snapshot` (the current one if `None`; none at all while the table
/// has no snapshot) that `filter` keeps. An unknown snapshot id is an error.
pub async fn scan(
    table: &iceberg::table::Table,
    snapshot: Option<i64>,
    filter: Option<Predicate>,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut scan = table.scan();
    if let Some(id) = snapshot {
        scan = scan.snapshot_id(id);
    }
    if let Some(f) = filter {
        scan = scan.with_filter(f);
    }
    let name = table.identifier();
    let batches = scan
        .build()
        .with_context(|| format!("planning a scan of {name}"))?
        .to_arrow()
        .await
        .with_context(|| format!("scanning {name}"))?
        .try_collect()
        .await
        .with_context(|| format!("reading {name}"))?;
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;
    use crate::test_support::{append, lakehouse, transactions};
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use iceberg::expr::Reference;
    use iceberg::spec::Datum;

    fn offsets(batches: &[RecordBatch]) -> Vec<i64> {
        let mut all: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("kafka_offset").unwrap();
                col.as_primitive::<Int64Type>().values().to_vec()
            })
            .collect();
        all.sort_unstable();
        all
    }

    #[tokio::test]
    async fn snapshots_and_filters_select_the_rows() {
        let lake = lakehouse().await;
        let table = crate::catalog::load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        assert!(scan(&table, None, None).await.unwrap().is_empty());

        let table = append(&lake, &table, transactions(&["2026-03-02"; 2], 0)).await;
        let first = table.metadata().current_snapshot_id().unwrap();
        let table = append(&lake, &table, transactions(&["2026-03-03"; 3], 2)).await;

        assert_eq!(
            offsets(&scan(&table, None, None).await.unwrap()),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            offsets(&scan(&table, Some(first), None).await.unwrap()),
            [0, 1]
        );
        let from_one = Reference::new("kafka_offset").greater_than_or_equal_to(Datum::long(1));
        let before_four = Reference::new("kafka_offset").less_than(Datum::long(4));
        assert_eq!(
            offsets(
                &scan(&table, None, Some(from_one.and(before_four)))
                    .await
                    .unwrap()
            ),
            [1, 2, 3]
        );
        assert!(scan(&table, Some(first + 1), None).await.is_err());
    }
}
