//! Compaction: rewrites the small data files that frequent commits leave into larger ones, as
//! one `replace` snapshot. iceberg-rust 0.10.1 has no rewrite action, and its transactions
//! take no action from outside the crate, so the snapshot is built here from its own types
//! (manifest writer, manifest list writer, snapshot) and committed with
//! [`crate::catalog::swap`].
//!
//! The new snapshot has one manifest listing every file of its base: the rewritten files as
//! `deleted`, the files replacing them as `added`, and every other file as `existing` with its
//! original snapshot id and sequence numbers. So a compaction also merges the manifests that
//! each fast append adds. Its summary carries forward the `finstream.*` properties, that is the
//! Kafka offsets a restart of the pipeline resumes from.
//!
//! The running pipeline keeps committing while the data files are rewritten; the snapshot is
//! then built on the table as it is, so its new files show up in it as `existing`. With the SQL
//! catalog that last step (load, build, swap) runs under the catalog's write lock
//! ([`CommitLock`]): the pipeline's commits wait for it, milliseconds, and cannot starve it.
//! With a REST catalog it is optimistic: when another commit comes first, the swap fails and
//! the snapshot is built again on the new base. The data files are written once.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context as _};
use futures::{StreamExt as _, TryStreamExt as _};
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, ManifestList, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotRef, SnapshotSummaryCollector, Struct,
    Summary,
};
use iceberg::Catalog;

use crate::catalog::{load, swap, CatalogConfig, CommitLock};
use crate::commit::carried_over;
use crate::schema::Table;
use crate::writer::TableWriter;

/// Files smaller than this fraction of the target size are rewritten.
const SMALL: f64 = 0.75;

/// Swaps attempted before giving up, each on a newer base.
const ATTEMPTS: usize = 20;

/// What [`compact`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Data files rewritten (no longer in the current snapshot).
    pub removed: usize,
    /// Data files that replace them.
    pub added: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// The `replace` snapshot; `None` when no partition had two small files.
    pub snapshot: Option<i64>,
    /// Swaps attempted: more than one when other commits came first.
    pub attempts: usize,
}

/// A data file live in a snapshot, with the numbers a new manifest must keep.
struct Live {
    file: DataFile,
    snapshot_id: i64,
    sequence_number: i64,
    file_sequence_number: i64,
}

/// The data files `snapshot` reads.
async fn live_files(
    table: &iceberg::table::Table,
    snapshot: &SnapshotRef,
) -> anyhow::Result<Vec<Live>> {
    let io = table.file_io();
    let bytes = io.new_input(snapshot.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())?;
    let mut live = Vec::new();
    for manifest in list.entries() {
        if manifest.content != ManifestContentType::Data {
            bail!(
                "{} has delete files (manifest {}); compaction rewrites data files only",
                table.identifier(),
                manifest.manifest_path
            );
        }
        for entry in manifest.load_manifest(io).await?.entries() {
            if !entry.is_alive() {
                continue;
            }
            // Loading a manifest fills in what its entries inherit from it.
            let (Some(snapshot_id), Some(sequence_number)) =
                (entry.snapshot_id(), entry.sequence_number())
            else {
                bail!(
                    "manifest {} has an entry without a snapshot id or sequence number",
                    manifest.manifest_path
                );
            };
            live.push(Live {
                file: entry.data_file().clone(),
                snapshot_id,
                sequence_number,
                file_sequence_number: entry.file_sequence_number.unwrap_or(sequence_number),
            });
        }
    }
    Ok(live)
}

/// The files to rewrite, by partition: in each, those smaller than [`SMALL`] × `target`, when
/// there are two or more of them (one small file alone gains nothing). Our tables have kept
/// their first partition spec, so a partition is its value.
fn choose(live: &[Live], target: u64) -> Vec<Vec<DataFile>> {
    let small = (target as f64 * SMALL) as u64;
    let mut by_partition: HashMap<&Struct, Vec<&DataFile>> = HashMap::new();
    for l in live {
        if l.file.file_size_in_bytes() < small && l.file.content_type() == DataContentType::Data {
            by_partition
                .entry(l.file.partition())
                .or_default()
                .push(&l.file);
        }
    }
    let mut groups: Vec<Vec<DataFile>> = by_partition
        .into_values()
        .filter(|files| files.len() >= 2)
        .map(|files| {
            let mut files: Vec<DataFile> = files.into_iter().cloned().collect();
            files.sort_by(|a, b| a.file_path().cmp(b.file_path()));
            files
        })
        .collect();
    groups.sort_by(|a, b| a[0].file_path().cmp(b[0].file_path()));
    groups
}

/// The scan tasks of snapshot `snapshot_id`'s `files`, by file path: each reads a whole file in
/// the table's current schema (iceberg-rust's reader resolves columns by id).
async fn scan_tasks(
    table: &iceberg::table::Table,
    snapshot_id: i64,
    files: &[DataFile],
) -> anyhow::Result<HashMap<String, Vec<FileScanTask>>> {
    let wanted: HashSet<&str> = files.iter().map(|f| f.file_path()).collect();
    let mut tasks: HashMap<String, Vec<FileScanTask>> = HashMap::new();
    let mut planned = table
        .scan()
        .snapshot_id(snapshot_id)
        .select_all()
        .build()?
        .plan_files()
        .await?;
    while let Some(task) = planned.try_next().await? {
        if wanted.contains(task.data_file_path.as_str()) {
            tasks
                .entry(task.data_file_path.clone())
                .or_default()
                .push(task);
        }
    }
    Ok(tasks)
}

/// Reads `tasks` (the files of one partition) and writes their rows into files of about
/// `target` bytes. One partition at a time, so that memory holds one row group.
async fn rewrite(
    table: &iceberg::table::Table,
    tasks: Vec<FileScanTask>,
    target: u64,
) -> anyhow::Result<Vec<DataFile>> {
    let mut rows = table
        .reader_builder()
        .build()
        .read(futures::stream::iter(tasks.into_iter().map(Ok)).boxed())?
        .stream();
    let target = usize::try_from(target).unwrap_or(usize::MAX);
    let mut writer = TableWriter::rewriter(table, "compact", target).await?;
    while let Some(batch) = rows.try_next().await? {
        writer.write(batch).await?;
    }
    writer.close().await
}

/// Rewrites `groups` (files of snapshot `snapshot_id`, by partition), a partition at a time,
/// with one plan of the snapshot; the files written. On an error, those already written are
/// deleted.
async fn rewrite_all(
    table: &iceberg::table::Table,
    snapshot_id: i64,
    groups: &[Vec<DataFile>],
    target: u64,
) -> anyhow::Result<Vec<DataFile>> {
    let all: Vec<DataFile> = groups.iter().flatten().cloned().collect();
    let mut tasks = scan_tasks(table, snapshot_id, &all).await?;
    let mut added = Vec::new();
    for files in groups {
        let group = files
            .iter()
            .flat_map(|f| tasks.remove(f.file_path()).unwrap_or_default())
            .collect();
        match rewrite(table, group, target).await {
            Ok(files) => added.extend(files),
            Err(e) => {
                discard(table, &added).await;
                return Err(e);
            }
        }
    }
    Ok(added)
}

/// Rewrites the small data files of `which` into files of about `target_file_bytes`, as one
/// `replace` snapshot that reads the same rows and carries the Kafka offsets forward. Safe
/// while the pipeline commits: see the module's documentation.
pub async fn compact(
    config: &CatalogConfig,
    catalog: &dyn Catalog,
    which: Table,
    target_file_bytes: u64,
) -> anyhow::Result<Compacted> {
    let mut table = load(catalog, which).await?;
    let Some(base) = table.metadata().current_snapshot().cloned() else {
        return Ok(Compacted::default());
    };
    let groups = choose(&live_files(&table, &base).await?, target_file_bytes);
    if groups.is_empty() {
        return Ok(Compacted::default());
    }
    let added = rewrite_all(&table, base.snapshot_id(), &groups, target_file_bytes)
        .await
        .with_context(|| format!("rewriting the small files of {}", which.name()))?;
    let removed: Vec<DataFile> = groups.into_iter().flatten().collect();
    let rows: u64 = removed.iter().map(|f| f.record_count()).sum();
    let written: u64 = added.iter().map(|f| f.record_count()).sum();
    if rows != written {
        discard(&table, &added).await;
        bail!(
            "rewriting {} files of {} read {rows} rows but wrote {written}",
            removed.len(),
            which.name()
        );
    }
    for attempt in 1..=ATTEMPTS {
        // The base is loaded under the catalog's write lock (SQL), so that it stays the base
        // until the swap.
        let lock = CommitLock::take(config).await?;
        table = load(catalog, which).await?;
        match replace(config, lock, &table, &removed, &added).await? {
            Replaced::Committed(snapshot) => {
                return Ok(Compacted {
                    removed: removed.len(),
                    added: added.len(),
                    rows,
                    snapshot: Some(snapshot),
                    attempts: attempt,
                })
            }
            Replaced::Gone(n) => {
                discard(&table, &added).await;
                bail!(
                    "{n} of the files being compacted left {} meanwhile (another compaction?); \
                     nothing was committed",
                    which.name()
                );
            }
            Replaced::Conflict => {
                tracing::info!(
                    table = which.name(),
                    attempt,
                    "another commit came first; compacting on the new base"
                );
            }
        }
    }
    discard(&table, &added).await;
    bail!(
        "{} changed under compaction {ATTEMPTS} times in a row; nothing was committed",
        which.name()
    )
}

/// Deletes files written for a snapshot that was not committed (best effort: a file left
/// behind is an orphan, which `expire-snapshots` deletes a day later).
async fn discard(table: &iceberg::table::Table, files: &[DataFile]) {
    for f in files {
        if let Err(e) = table.file_io().delete(f.file_path()).await {
            tracing::warn!(file = f.file_path(), error = %e, "could not delete an uncommitted file");
        }
    }
}

enum Replaced {
    Committed(i64),
    /// Another commit came first.
    Conflict,
    /// This many of the files to remove are no longer in the table.
    Gone(usize),
}

/// One attempt: a `replace` snapshot on `table`'s current one, swapped in if the catalog still
/// holds `table`'s metadata.
async fn replace(
    config: &CatalogConfig,
    lock: CommitLock,
    table: &iceberg::table::Table,
    removed: &[DataFile],
    added: &[DataFile],
) -> anyhow::Result<Replaced> {
    let metadata = table.metadata();
    let base = metadata
        .current_snapshot()
        .context("the table lost its current snapshot")?;
    let live = live_files(table, base).await?;
    let gone: HashSet<&str> = removed.iter().map(|f| f.file_path()).collect();
    let still = live
        .iter()
        .filter(|l| gone.contains(l.file.file_path()))
        .count();
    if still != removed.len() {
        return Ok(Replaced::Gone(removed.len() - still));
    }

    let snapshot_id = new_snapshot_id(table);
    let sequence_number = metadata.next_sequence_number();
    let io = table.file_io();
    let commit = uuid::Uuid::new_v4();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();

    let manifest_path = format!("{}/metadata/{commit}-m0.avro", metadata.location());
    let mut manifest = ManifestWriterBuilder::new(
        io.new_output(&manifest_path)?,
        Some(snapshot_id),
        schema.clone(),
        spec.as_ref().clone(),
    )
    .build_v2_data();
    let mut summary = SnapshotSummaryCollector::default();
    let (mut records, mut files, mut bytes) = (0u64, 0u64, 0u64);
    for l in live {
        if gone.contains(l.file.file_path()) {
            summary.remove_file(&l.file, schema.clone(), spec.clone());
            manifest.add_delete_file(l.file, l.sequence_number, Some(l.file_sequence_number))?;
        } else {
            (records, files, bytes) = (
                records + l.file.record_count(),
                files + 1,
                bytes + l.file.file_size_in_bytes(),
            );
            manifest.add_existing_file(
                l.file,
                l.snapshot_id,
                l.sequence_number,
                Some(l.file_sequence_number),
            )?;
        }
    }
    for f in added {
        summary.add_file(f, schema.clone(), spec.clone());
        (records, files, bytes) = (
            records + f.record_count(),
            files + 1,
            bytes + f.file_size_in_bytes(),
        );
        manifest.add_file(f.clone(), sequence_number)?;
    }
    let manifest = manifest.write_manifest_file().await?;

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-0-{commit}.avro",
        metadata.location()
    );
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(base.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(std::iter::once(manifest))?;
    list.close().await?;

    let mut properties = carried_over(table);
    properties.extend(summary.build());
    properties.extend([
        ("total-records".to_owned(), records.to_string()),
        ("total-data-files".to_owned(), files.to_string()),
        ("total-files-size".to_owned(), bytes.to_string()),
        ("total-delete-files".to_owned(), "0".to_owned()),
        ("total-position-deletes".to_owned(), "0".to_owned()),
        ("total-equality-deletes".to_owned(), "0".to_owned()),
    ]);
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(base.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(list_path.clone())
        .with_summary(Summary {
            operation: Operation::Replace,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    if swap(config, lock, table, snapshot).await? {
        return Ok(Replaced::Committed(snapshot_id));
    }
    for f in [&manifest_path, &list_path] {
        let _ = io.delete(f).await;
    }
    Ok(Replaced::Conflict)
}

/// A random positive id no snapshot of `table` has, as iceberg-rust makes them.
fn new_snapshot_id(table: &iceberg::table::Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{lakehouse, transactions, Lake};
    use arrow::array::AsArray;
    use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
    use arrow::datatypes::Int64Type;
    use arrow::record_batch::RecordBatch;
    use iceberg::transaction::{ApplyTransactionAction, Transaction};

    const KEY: &str = "finstream.offsets.test";

    /// A fast append of `batch`, recording `offset` in the summary as the pipeline does.
    async fn append(lake: &Lake, batch: RecordBatch, offset: i64) -> iceberg::table::Table {
        let table = load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        let mut writer = TableWriter::new(&table, "test").await.unwrap();
        writer.write(batch).await.unwrap();
        let tx = Transaction::new(&table);
        let tx = tx
            .fast_append()
            .add_data_files(writer.close().await.unwrap())
            .set_snapshot_properties(HashMap::from([(KEY.to_owned(), offset.to_string())]))
            .apply(tx)
            .unwrap();
        tx.commit(lake.catalog.as_ref()).await.unwrap()
    }

    /// Four appends of two days each: eight small files in two partitions.
    async fn four_appends(lake: &Lake) -> iceberg::table::Table {
        let mut table = None;
        for i in 0..4 {
            let batch = transactions(&["2026-03-01", "2026-03-02", "2026-03-02"], i * 10);
            table = Some(append(lake, batch, i * 10 + 3).await);
        }
        table.unwrap()
    }

    /// Every row of `snapshot` (the current one if `None`), sorted by offset.
    async fn rows(table: &iceberg::table::Table, snapshot: Option<i64>) -> RecordBatch {
        let batches = crate::read::scan(table, snapshot, None).await.unwrap();
        let all = concat_batches(&batches[0].schema(), &batches).unwrap();
        let offsets = all.column_by_name("kafka_offset").unwrap();
        take_record_batch(&all, &sort_to_indices(offsets, None, None).unwrap()).unwrap()
    }

    /// What a compaction of `snapshot` would remove and add, written but not committed.
    async fn rewritten(
        table: &iceberg::table::Table,
        snapshot: &SnapshotRef,
    ) -> (Vec<DataFile>, Vec<DataFile>) {
        let groups = choose(&live_files(table, snapshot).await.unwrap(), 1 << 20);
        let added = rewrite_all(table, snapshot.snapshot_id(), &groups, 1 << 20)
            .await
            .unwrap();
        (groups.into_iter().flatten().collect(), added)
    }

    /// `compact` of `transactions` with a 1 MiB target: every test file is small.
    async fn compact_transactions(lake: &Lake) -> Compacted {
        compact(
            &lake.config,
            lake.catalog.as_ref(),
            Table::Transactions,
            1 << 20,
        )
        .await
        .unwrap()
    }

    async fn live_count(table: &iceberg::table::Table) -> usize {
        let current = table.metadata().current_snapshot().unwrap();
        live_files(table, current).await.unwrap().len()
    }

    #[tokio::test]
    async fn compaction_keeps_the_rows_and_the_offsets_with_fewer_files() {
        let lake = lakehouse().await;
        let before = four_appends(&lake).await;
        let old = before.metadata().current_snapshot_id().unwrap();
        assert_eq!(live_count(&before).await, 8);

        let done = compact_transactions(&lake).await;
        assert_eq!(
            (done.removed, done.added, done.rows, done.attempts),
            (8, 2, 12, 1)
        );

        let after = load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        let snapshot = after.metadata().current_snapshot().unwrap();
        assert_eq!(Some(snapshot.snapshot_id()), done.snapshot);
        assert_eq!(snapshot.parent_snapshot_id(), Some(old));
        assert_eq!(snapshot.summary().operation, Operation::Replace);
        let summary = &snapshot.summary().additional_properties;
        assert_eq!(summary.get(KEY).map(String::as_str), Some("33"));
        assert_eq!(summary.get("total-records").map(String::as_str), Some("12"));
        assert_eq!(
            summary.get("deleted-data-files").map(String::as_str),
            Some("8")
        );
        assert_eq!(live_count(&after).await, 2);
        assert_eq!(rows(&after, None).await, rows(&before, None).await);
        // Time travel: the snapshot before still reads its own files.
        assert_eq!(rows(&after, Some(old)).await, rows(&before, None).await);

        // Nothing left to merge: no new snapshot.
        let again = compact_transactions(&lake).await;
        assert_eq!(again, Compacted::default());
    }

    #[tokio::test]
    async fn a_commit_between_rewrite_and_swap_is_kept() {
        let lake = lakehouse().await;
        let base = four_appends(&lake).await;
        let snapshot = base.metadata().current_snapshot().unwrap().clone();
        let (removed, added) = rewritten(&base, &snapshot).await;
        // The pipeline commits while the rewrite runs.
        let newer = append(&lake, transactions(&["2026-03-02"], 100), 101).await;

        let stale = replace(&lake.config, CommitLock::none(), &base, &removed, &added)
            .await
            .unwrap();
        assert!(matches!(stale, Replaced::Conflict));
        let Replaced::Committed(id) =
            replace(&lake.config, CommitLock::none(), &newer, &removed, &added)
                .await
                .unwrap()
        else {
            panic!("the swap on the new base failed");
        };

        let after = load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        assert_eq!(after.metadata().current_snapshot_id(), Some(id));
        let summary = &after.metadata().current_snapshot().unwrap().summary();
        assert_eq!(
            summary.additional_properties.get(KEY).map(String::as_str),
            Some("101")
        );
        // The two rewritten files and the appended one.
        assert_eq!(live_count(&after).await, 3);
        let offsets = rows(&after, None).await;
        let offsets = offsets.column_by_name("kafka_offset").unwrap();
        assert_eq!(
            offsets.as_primitive::<Int64Type>().values().to_vec(),
            [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32, 100]
        );
    }

    #[tokio::test]
    async fn files_another_compaction_removed_are_not_removed_twice() {
        let lake = lakehouse().await;
        let base = four_appends(&lake).await;
        let snapshot = base.metadata().current_snapshot().unwrap().clone();
        let (removed, added) = rewritten(&base, &snapshot).await;
        compact_transactions(&lake).await;

        let now = load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        let outcome = replace(&lake.config, CommitLock::none(), &now, &removed, &added)
            .await
            .unwrap();
        assert!(matches!(outcome, Replaced::Gone(8)));
        assert_eq!(rows(&now, None).await, rows(&base, None).await);
    }

    #[tokio::test]
    async fn expiring_after_compaction_deletes_the_rewritten_files() {
        let lake = lakehouse().await;
        let before = four_appends(&lake).await;
        let old = before.metadata().current_snapshot().unwrap().clone();
        let old_files: Vec<String> = live_files(&before, &old)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.file.file_path().to_owned())
            .collect();
        let expected = rows(&before, None).await;
        compact_transactions(&lake).await;
        let now_ms = now_ms() + 1000;
        crate::maintenance::expire_snapshots(lake.catalog.as_ref(), Table::Transactions, now_ms, 1)
            .await
            .unwrap();
        for f in &old_files {
            assert!(
                !std::path::Path::new(f).exists(),
                "{f} was rewritten and expired"
            );
        }
        let after = load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        assert_eq!(rows(&after, None).await, expected);
    }
}
