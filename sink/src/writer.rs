//! Parquet data files for one table, written through iceberg-rust's own writers (Parquet →
//! rolling files → data files, fanned out over the day partitions), so that the files carry
//! field ids and the statistics Iceberg readers prune with. What [`TableWriter::close`] returns
//! is committed by [`crate::commit`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use arrow::array::{Array, AsArray, UInt32Array};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct, Transform};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::schema::Table;

/// Rows per Parquet row group, at most: a million rows is some tens of MiB of compressed
/// column chunks, the size analytic readers read efficiently, and more than a worker gathers
/// before it writes a file, so a file is normally one row group.
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// A data file is closed and the next one started past this size (Iceberg's usual target);
/// compaction merges the small files frequent commits leave.
pub const TARGET_FILE_BYTES: usize = 256 * 1024 * 1024;

/// zstd's own default level: most of the ratio of higher levels at a fraction of their cost.
const ZSTD_LEVEL: i32 = 3;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

type Inner = FanoutWriter<
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>,
>;

/// The Parquet settings of every data file. ZSTD is set here because iceberg-rust does not
/// take the codec from the table's `write.parquet.compression-codec` (files would be
/// uncompressed).
pub fn writer_properties() -> anyhow::Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// Writes batches of one table into data files, one or more per day partition.
pub struct TableWriter {
    inner: Inner,
    /// A key of the table's partition spec; each day's key is a copy with that day's value.
    key: PartitionKey,
    /// The column whose day partitions the table.
    column: &'static str,
}

impl TableWriter {
    /// A writer of `table`'s data files. Their names start with `file_prefix` (say the worker
    /// and the run) and end with an id of this writer, so that no two writers' files collide,
    /// even two made with the same prefix.
    ///
    /// Files are written in the schema [`crate::rows`] builds batches in (the table's first
    /// schema), not the table's current one: columns added later by schema evolution read as
    /// null in them, as Iceberg resolves columns by id.
    pub async fn new(
        table: &iceberg::table::Table,
        file_prefix: &str,
    ) -> anyhow::Result<TableWriter> {
        Self::build(table, file_prefix, None, TARGET_FILE_BYTES)
    }

    /// A writer of files in `table`'s current schema, each closed past `target_file_bytes`:
    /// what compaction rewrites rows into, so that no column added since is lost.
    pub async fn rewriter(
        table: &iceberg::table::Table,
        file_prefix: &str,
        target_file_bytes: usize,
    ) -> anyhow::Result<TableWriter> {
        let schema = table.metadata().current_schema().clone();
        Self::build(table, file_prefix, Some(schema), target_file_bytes)
    }

    /// `schema` defaults to the table's first one.
    fn build(
        table: &iceberg::table::Table,
        file_prefix: &str,
        schema: Option<iceberg::spec::SchemaRef>,
        target_file_bytes: usize,
    ) -> anyhow::Result<TableWriter> {
        let metadata = table.metadata();
        let name = table.identifier().name();
        let which =
            Table::parse(name).with_context(|| format!("{name} is not one of our tables"))?;
        let schema = schema.unwrap_or_else(|| Arc::new(which.schema()));
        let spec = metadata.default_partition_spec().as_ref().clone();
        let column = which.partition_column();
        let by_day = match spec.fields() {
            [field] => {
                field.transform == Transform::Day
                    && schema.field_by_id(field.source_id).map(|f| f.name.as_str()) == Some(column)
            }
            _ => false,
        };
        if !by_day {
            bail!("table {name} is not partitioned by the day of {column} alone: {spec:?}");
        }
        let names = DefaultFileNameGenerator::new(
            file_prefix.to_owned(),
            Some(uuid::Uuid::new_v4().simple().to_string()),
            DataFileFormat::Parquet,
        );
        let files = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(writer_properties()?, schema.clone()),
            target_file_bytes,
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            names,
        );
        Ok(TableWriter {
            inner: FanoutWriter::new(DataFileWriterBuilder::new(files)),
            key: PartitionKey::new(spec, schema, Struct::empty()),
            column,
        })
    }

    /// Writes `batch` (in the schema of [`crate::rows`]), split by the day of its partition
    /// column.
    pub async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column_by_name(self.column)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .with_context(|| format!("the batch has no timestamp column {}", self.column))?;
        if times.null_count() > 0 {
            bail!("{} is null in {} rows", self.column, times.null_count());
        }
        // Iceberg's day transform: whole days since 1970-01-01 UTC, rounded down. Every i64 of
        // microseconds is within ±2^27 days, so the day fits an i32.
        let day = |micros: i64| micros.div_euclid(MICROS_PER_DAY) as i32;
        let values = times.values();
        let first = day(values[0]);
        if values.iter().all(|&t| day(t) == first) {
            // The common case (a commit interval within one day): no copy.
            return self.write_day(first, batch).await;
        }
        let mut rows: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for (i, &t) in values.iter().enumerate() {
            rows.entry(day(t)).or_default().push(i as u32);
        }
        for (d, indices) in rows {
            let part = arrow::compute::take_record_batch(&batch, &UInt32Array::from(indices))?;
            self.write_day(d, part).await?;
        }
        Ok(())
    }

    async fn write_day(&mut self, day: i32, batch: RecordBatch) -> anyhow::Result<()> {
        let key = self
            .key
            .copy_with_data(Struct::from_iter([Some(Literal::date(day))]));
        self.inner
            .write(key, batch)
            .await
            .with_context(|| format!("writing a data file of day {day} (days since 1970)"))
    }

    /// Closes every file; their descriptions, in path order, to be committed. Empty when
    /// nothing was written.
    pub async fn close(self) -> anyhow::Result<Vec<DataFile>> {
        let mut files = self.inner.close().await.context("closing data files")?;
        // The fan-out closes its partitions in hash order; a stable order makes manifests
        // reproducible.
        files.sort_by(|a, b| a.file_path().cmp(b.file_path()));
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{day, lakehouse, transactions};
    use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Sorted by offset, so two batches of the same rows compare column by column.
    fn by_offset(batches: &[RecordBatch]) -> RecordBatch {
        let all = concat_batches(&batches[0].schema(), batches).unwrap();
        let offsets = all.column_by_name("kafka_offset").unwrap();
        take_record_batch(&all, &sort_to_indices(offsets, None, None).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn two_days_make_two_zstd_files_that_read_back_exactly() {
        let lake = lakehouse().await;
        let table = crate::catalog::load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        // Days interleaved, as arrival order mixes them.
        let batch = transactions(&["2026-03-02", "2026-03-03", "2026-03-02", "2026-03-03"], 0);

        let mut writer = TableWriter::new(&table, "w7-run").await.unwrap();
        writer.write(batch.slice(0, 0)).await.unwrap();
        writer.write(batch.clone()).await.unwrap();
        let files = writer.close().await.unwrap();

        assert_eq!(files.len(), 2, "one file per day partition");
        for (file, date) in files.iter().zip(["2026-03-02", "2026-03-03"]) {
            assert_eq!(file.record_count(), 2);
            assert_eq!(file.file_format(), DataFileFormat::Parquet);
            assert_eq!(
                file.partition(),
                &Struct::from_iter([Some(Literal::date(day(date)))])
            );
            let path = file.file_path();
            assert!(
                path.starts_with(&format!(
                    "{}/data/event_time_day={date}/w7-run-",
                    table.metadata().location()
                )),
                "{path}"
            );
            let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
            let meta = reader.metadata();
            assert_eq!(meta.num_row_groups(), 1);
            for group in meta.row_groups() {
                assert_eq!(group.num_columns(), 15);
                for column in group.columns() {
                    assert!(
                        matches!(column.compression(), Compression::ZSTD(_)),
                        "{path}: {} is {:?}",
                        column.column_path(),
                        column.compression()
                    );
                }
            }
        }

        let tx = Transaction::new(&table);
        let tx = tx.fast_append().add_data_files(files).apply(tx).unwrap();
        let table = tx.commit(lake.catalog.as_ref()).await.unwrap();
        let read = crate::read::scan(&table, None, None).await.unwrap();
        let (read, written) = (by_offset(&read), by_offset(&[batch]));
        assert_eq!(read.num_rows(), 4);
        for (i, field) in written.schema().fields().iter().enumerate() {
            assert_eq!(
                read.column_by_name(field.name()).unwrap().as_ref(),
                written.column(i).as_ref(),
                "column {}",
                field.name()
            );
        }
    }

    #[tokio::test]
    async fn writers_sharing_a_prefix_never_share_a_file() {
        let lake = lakehouse().await;
        let table = crate::catalog::load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        let mut paths = Vec::new();
        for first in [0, 10] {
            let mut writer = TableWriter::new(&table, "w0-run").await.unwrap();
            writer
                .write(transactions(&["2026-03-02"], first))
                .await
                .unwrap();
            paths.extend(
                writer
                    .close()
                    .await
                    .unwrap()
                    .iter()
                    .map(|f| f.file_path().to_owned()),
            );
        }
        assert_eq!(paths.len(), 2);
        assert_ne!(paths[0], paths[1]);
        assert!(paths.iter().all(|p| std::path::Path::new(p).is_file()));

        let empty = TableWriter::new(&table, "w0-run").await.unwrap();
        assert!(empty.close().await.unwrap().is_empty());
    }

    #[test]
    fn files_are_zstd_with_bounded_row_groups() {
        let props = writer_properties().unwrap();
        let column = parquet::schema::types::ColumnPath::from("amount");
        assert!(matches!(props.compression(&column), Compression::ZSTD(_)));
        assert_eq!(props.max_row_group_row_count(), Some(ROW_GROUP_ROWS));
    }
}
