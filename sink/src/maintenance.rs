//! Table maintenance that iceberg-rust leaves to its users, built on its own types: expiring
//! snapshots *and deleting the files no remaining snapshot refers to* (iceberg-rust's action
//! only edits the metadata), including the orphans of commits a crash cut short.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use iceberg::spec::{ManifestList, SnapshotRef};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::Catalog;

use crate::schema::Table;

/// A data file that no snapshot refers to is deleted only when at least this old: a running
/// pipeline's files wait unreferenced until their commit, which an outage can delay.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Every file `snapshot` needs: its manifest list, its manifests and the data files it reads.
/// A file a manifest lists as deleted (by a compaction) is not needed.
pub async fn referenced(
    table: &iceberg::table::Table,
    snapshot: &SnapshotRef,
) -> anyhow::Result<BTreeSet<String>> {
    let io = table.file_io();
    let mut files = BTreeSet::from([snapshot.manifest_list().to_owned()]);
    let bytes = io.new_input(snapshot.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())?;
    for manifest in list.entries() {
        files.insert(manifest.manifest_path.clone());
        for entry in manifest.load_manifest(io).await?.entries() {
            if entry.is_alive() {
                files.insert(entry.file_path().to_owned());
            }
        }
    }
    Ok(files)
}

async fn all_referenced(table: &iceberg::table::Table) -> anyhow::Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for s in table.metadata().snapshots() {
        files.extend(referenced(table, s).await?);
    }
    Ok(files)
}

/// What [`expire_snapshots`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub snapshots: usize,
    /// Manifest lists, manifests and data files deleted.
    pub files: usize,
    /// Data files no snapshot ever referred to (interrupted commits), deleted.
    pub orphans: usize,
}

/// Expires `table`'s snapshots older than `older_than_ms` (ms since the epoch), keeping at
/// least the `retain_last` newest and always the current one; then deletes the files only the
/// expired snapshots referred to, and data files no snapshot refers to that are older than both
/// the cutoff and [`ORPHAN_MIN_AGE`].
pub async fn expire_snapshots(
    catalog: &dyn Catalog,
    which: Table,
    older_than_ms: i64,
    retain_last: usize,
) -> anyhow::Result<Expired> {
    let table = crate::catalog::load(catalog, which).await?;
    let before = table.metadata().snapshots().count();
    let referenced_before = all_referenced(&table).await?;
    let tx = Transaction::new(&table);
    let tx = tx
        .expire_snapshots()
        .expire_older_than_ms(older_than_ms)
        .retain_last(retain_last.max(1))
        .apply(tx)?;
    let table = tx
        .commit(catalog)
        .await
        .with_context(|| format!("expiring snapshots of {}", table.identifier()))?;
    let still = all_referenced(&table).await?;
    let io = table.file_io();
    let mut done = Expired {
        snapshots: before - table.metadata().snapshots().count(),
        ..Expired::default()
    };
    for f in referenced_before.difference(&still) {
        io.delete(f)
            .await
            .with_context(|| format!("deleting {f}"))?;
        done.files += 1;
    }
    // Orphans: local warehouses only (listing an object store is not in iceberg-rust's FileIO).
    let location = table.metadata().location();
    let local = location.strip_prefix("file://").unwrap_or(location);
    let data = std::path::Path::new(local).join("data");
    if !location.contains("://") || location.starts_with("file://") {
        let cutoff = SystemTime::UNIX_EPOCH + Duration::from_millis(older_than_ms.max(0) as u64);
        let cutoff = cutoff.min(SystemTime::now() - ORPHAN_MIN_AGE);
        for path in parquet_files(&data)? {
            let text = path.display().to_string();
            let known = still.contains(&text) || still.contains(&format!("file://{text}"));
            let old = std::fs::metadata(&path)?.modified()? < cutoff;
            if !known && old && !referenced_before.contains(&text) {
                std::fs::remove_file(&path).with_context(|| format!("deleting {text}"))?;
                done.orphans += 1;
            }
        }
    }
    Ok(done)
}

fn parquet_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(parquet_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{append, lakehouse, transactions};

    #[tokio::test]
    async fn expiring_keeps_the_current_rows_and_deletes_only_unreferenced_files() {
        let lake = lakehouse().await;
        let mut table = crate::catalog::load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        for i in 0..3 {
            table = append(&lake, &table, transactions(&["2026-03-02"], i * 10)).await;
        }
        assert_eq!(table.metadata().snapshots().count(), 3);
        let current = table.metadata().current_snapshot().unwrap().clone();
        let needed = referenced(&table, &current).await.unwrap();

        // A data file a crashed commit left behind, a day and more old.
        let data = std::path::Path::new(table.metadata().location())
            .join("data/event_time_day=2026-03-02");
        let orphan = data.join("orphan.parquet");
        std::fs::write(&orphan, b"not referenced").unwrap();
        let old = SystemTime::now() - ORPHAN_MIN_AGE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // And one just written, as a running pipeline's next commit would have.
        let fresh = data.join("fresh.parquet");
        std::fs::write(&fresh, b"to be committed").unwrap();

        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let done = expire_snapshots(
            lake.catalog.as_ref(),
            Table::Transactions,
            now.as_millis() as i64 + 1000,
            1,
        )
        .await
        .unwrap();
        // Fast appends carry every manifest forward: only the two old manifest lists go.
        assert_eq!(
            done,
            Expired {
                snapshots: 2,
                files: 2,
                orphans: 1
            }
        );
        assert!(!orphan.exists() && fresh.exists());
        for f in &needed {
            assert!(
                std::path::Path::new(f.strip_prefix("file://").unwrap_or(f)).exists(),
                "{f}"
            );
        }
        let table = crate::catalog::load(lake.catalog.as_ref(), Table::Transactions)
            .await
            .unwrap();
        let rows: usize = crate::read::scan(&table, None, None)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
    }
}
