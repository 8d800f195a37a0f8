//! The commit protocol: the three tables move together from one [`Position`] of the input to
//! the next, exactly once, whatever moment a crash picks (docs/commit-protocol.md).
//!
//! A commit is one fast-append snapshot per table, each recording the input's position in its
//! summary (`finstream.offsets.<topic>`, with the commit's sequence number). Three snapshots
//! cannot be made atomically, so a commit is written ahead: first an *intent* (the position and
//! every table's new data files) to one file beside the tables, then the three snapshots, each
//! skipped if its table already has this sequence number. A restart ([`recover`]) finishes an
//! intent that some table has not taken yet, so every table ends at the same position, and
//! resumes there. A crash before the intent is complete leaves nothing any table refers to: the
//! files written for it are orphans, and their rows are made again from the input.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context as _};
use iceberg::spec::{deserialize_data_file_from_json, serialize_data_file_to_json, DataFile};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use serde::{Deserialize, Serialize};

use crate::progress::{summary_key, Position};
use crate::schema::{Table, NAMESPACE};

/// What a snapshot records for one input topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Counts the topic's commits from 1.
    pub seq: u64,
    pub position: Position,
}

/// One commit: the position it brings the input to, and each table's new data files.
#[derive(Debug, Default)]
pub struct Commit {
    pub position: Position,
    pub files: BTreeMap<Table, Vec<DataFile>>,
}

impl Commit {
    /// Folds a later commit into this one (its files added, its position taken), so that a
    /// committer that fell behind catches up in one snapshot per table.
    pub fn absorb(&mut self, later: Commit) {
        self.position = later.position;
        for (table, files) in later.files {
            self.files.entry(table).or_default().extend(files);
        }
    }
}

/// The write-ahead record of a commit, as stored.
#[derive(Serialize, Deserialize)]
struct Intent {
    topic: String,
    recorded: Recorded,
    /// Each table's new data files, in iceberg-rust's JSON form of a manifest entry's file.
    files: BTreeMap<String, Vec<String>>,
}

fn ident(table: Table) -> TableIdent {
    TableIdent::from_strs([NAMESPACE, table.name()]).expect("valid identifier")
}

/// What `table`'s current snapshot records for `topic`, if anything.
pub fn recorded(table: &iceberg::table::Table, topic: &str) -> anyhow::Result<Option<Recorded>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(None);
    };
    let Some(text) = snapshot
        .summary()
        .additional_properties
        .get(&summary_key(topic))
    else {
        return Ok(None);
    };
    let r = serde_json::from_str(text).with_context(|| {
        format!(
            "snapshot {} of {} records an unreadable position for {topic}: {text}",
            snapshot.snapshot_id(),
            table.identifier()
        )
    })?;
    Ok(Some(r))
}

/// The topics `table`'s current snapshot records a position for: every topic that feeds it.
pub fn topics(table: &iceberg::table::Table) -> Vec<String> {
    let prefix = summary_key("");
    let mut topics: Vec<String> = carried_over(table)
        .into_keys()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    topics.sort();
    topics
}

/// The summary properties a new snapshot of `table` carries over from its current one: every
/// topic's position (a table may be fed by more than one).
pub fn carried_over(table: &iceberg::table::Table) -> HashMap<String, String> {
    table
        .metadata()
        .current_snapshot()
        .map(|s| {
            s.summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| k.starts_with("finstream."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn intent_location(transactions: &iceberg::table::Table, topic: &str) -> String {
    let safe: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}/metadata/finstream-intent-{safe}.json",
        transactions.metadata().location()
    )
}

fn partition_type(table: &iceberg::table::Table) -> anyhow::Result<iceberg::spec::StructType> {
    let m = table.metadata();
    Ok(m.default_partition_spec()
        .partition_type(m.current_schema())?)
}

/// Writes the intent of commit `seq`. The file is complete or does not parse: only a complete
/// one is ever acted on, and a table is committed only after it is written.
async fn write_intent(
    catalog: &dyn Catalog,
    topic: &str,
    recorded: &Recorded,
    files: &BTreeMap<Table, Vec<DataFile>>,
) -> anyhow::Result<()> {
    let mut encoded = BTreeMap::new();
    let mut transactions = None;
    for table in Table::ALL {
        let t = catalog.load_table(&ident(table)).await?;
        let list = encode_files(&t, files.get(&table).cloned().unwrap_or_default())?;
        encoded.insert(table.name().to_owned(), list);
        if table == Table::Transactions {
            transactions = Some(t);
        }
    }
    let t = transactions.expect("transactions is one of the tables");
    let intent = Intent {
        topic: topic.to_owned(),
        recorded: recorded.clone(),
        files: encoded,
    };
    let bytes = serde_json::to_vec(&intent)?;
    t.file_io()
        .new_output(intent_location(&t, topic))?
        .write(bytes.into())
        .await
        .context("writing the commit's intent")?;
    Ok(())
}

/// Makes `table`'s snapshot of commit `recorded` with `files`, unless the table has it already.
async fn append(
    catalog: &dyn Catalog,
    table: Table,
    topic: &str,
    recorded: &Recorded,
    files: Vec<DataFile>,
) -> anyhow::Result<()> {
    let t = catalog.load_table(&ident(table)).await?;
    if let Some(r) = self::recorded(&t, topic)? {
        if r.seq >= recorded.seq {
            return Ok(());
        }
        if r.seq + 1 != recorded.seq {
            bail!(
                "{} is at commit {} of {topic}, the next one is {}: the tables were changed by \
                 something else",
                t.identifier(),
                r.seq,
                recorded.seq
            );
        }
    }
    let mut properties = carried_over(&t);
    properties.insert(summary_key(topic), serde_json::to_string(recorded)?);
    let tx = Transaction::new(&t);
    // The duplicate check reads every manifest of the table on every commit; the sequence
    // number above is the check this protocol needs.
    let tx = tx
        .fast_append()
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(properties)
        .apply(tx)?;
    tx.commit(catalog)
        .await
        .with_context(|| format!("committing to {}", t.identifier()))?;
    Ok(())
}

/// Commits `commit` as commit `seq` of `topic`: the intent, then each table's snapshot.
/// Idempotent: run again after any failure, it finishes what is missing.
pub async fn commit(
    catalog: &dyn Catalog,
    topic: &str,
    seq: u64,
    commit: &Commit,
) -> anyhow::Result<()> {
    let recorded = Recorded {
        seq,
        position: commit.position.clone(),
    };
    write_intent(catalog, topic, &recorded, &commit.files).await?;
    for table in Table::ALL {
        let files = commit.files.get(&table).cloned().unwrap_or_default();
        append(catalog, table, topic, &recorded, files).await?;
    }
    Ok(())
}

/// What [`recover`] found when told not to finish an interrupted commit.
#[derive(Debug, thiserror::Error)]
#[error("commit {0} of the input is unfinished: the committing process finishes it")]
pub struct Unfinished(pub u64);

/// On start: finishes the last commit of `topic` if a crash interrupted it (when `finish`:
/// one process of a job does, or two could append the same files), and returns what the
/// tables record for `topic` (all three at the same commit), if anything. Without `finish`,
/// an interrupted commit is an [`Unfinished`] error, to wait on.
pub async fn recover(
    catalog: &dyn Catalog,
    topic: &str,
    finish: bool,
) -> anyhow::Result<Option<Recorded>> {
    let mut tables = Vec::new();
    for table in Table::ALL {
        let t = catalog.load_table(&ident(table)).await?;
        let r = recorded(&t, topic)?;
        tables.push((table, t, r));
    }
    let transactions = &tables[0].1;
    let location = intent_location(transactions, topic);
    let io = transactions.file_io();
    let intent: Option<Intent> = if io.exists(&location).await? {
        let bytes = io.new_input(&location)?.read().await?;
        match serde_json::from_slice(&bytes) {
            Ok(i) => Some(i),
            Err(e) => {
                // Torn while written: no table took that commit.
                tracing::warn!("ignoring an incomplete commit intent at {location}: {e}");
                None
            }
        }
    } else {
        None
    };
    let behind = |r: &Option<Recorded>, seq: u64| r.as_ref().is_none_or(|r| r.seq < seq);
    if let Some(intent) = intent.filter(|i| i.topic == topic) {
        // A complete intent that a table has not taken yet is finished, whether the stop came
        // before the first table's snapshot or between two.
        let seq = intent.recorded.seq;
        if tables.iter().any(|(_, _, r)| behind(r, seq)) {
            if !finish {
                return Err(Unfinished(seq).into());
            }
            tracing::info!("finishing commit {seq} of {topic}, interrupted by a stop");
            for (table, t, r) in &tables {
                if !behind(r, seq) {
                    continue;
                }
                let encoded = intent
                    .files
                    .get(table.name())
                    .map_or(&[][..], Vec::as_slice);
                let files = decode_files(t, encoded)?;
                append(catalog, *table, topic, &intent.recorded, files).await?;
            }
            return Ok(Some(intent.recorded));
        }
    }
    let seqs: Vec<Option<u64>> = tables
        .iter()
        .map(|(_, _, r)| r.as_ref().map(|r| r.seq))
        .collect();
    if seqs.iter().any(|s| *s != seqs[0]) {
        bail!(
            "the tables record different commits of {topic} ({seqs:?}) and no intent explains \
             it: were they changed by something else?"
        );
    }
    Ok(tables.into_iter().next().and_then(|(_, _, r)| r))
}

/// What the committer is doing, for the progress line.
#[derive(Debug, Default)]
pub struct CommitStatus {
    /// The last commit all three tables have.
    pub committed: AtomicU64,
    /// Rows committed so far by this run, summed over the tables.
    pub rows: AtomicU64,
    /// Set while a failed commit waits to be tried again.
    pub retrying: AtomicBool,
}

/// Commits in the background, one at a time and in order, retrying each until it is done: a
/// catalog or storage outage makes commits wait, and the dataflow carries on.
pub struct Committer {
    queue: mpsc::Sender<Commit>,
    thread: std::thread::JoinHandle<()>,
    pub status: Arc<CommitStatus>,
}

impl Committer {
    /// Commits of `topic` after commit `last` (0 for none), on `runtime`.
    pub fn start(
        catalog: Arc<dyn Catalog>,
        runtime: tokio::runtime::Handle,
        topic: String,
        last: u64,
    ) -> Committer {
        let (queue, inbox) = mpsc::channel::<Commit>();
        let status = Arc::new(CommitStatus::default());
        status.committed.store(last, Ordering::Relaxed);
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                let mut seq = last;
                while let Ok(mut next) = inbox.recv() {
                    while let Ok(later) = inbox.try_recv() {
                        next.absorb(later);
                    }
                    seq += 1;
                    let rows: u64 = next
                        .files
                        .values()
                        .flatten()
                        .map(|f| f.record_count())
                        .sum();
                    let mut wait = Duration::from_millis(200);
                    loop {
                        match runtime.block_on(commit(catalog.as_ref(), &topic, seq, &next)) {
                            Ok(()) => break,
                            Err(e) => {
                                shared.retrying.store(true, Ordering::Relaxed);
                                tracing::warn!(
                                    "commit {seq} failed, trying again in {:.1} s: {e:#}",
                                    wait.as_secs_f64()
                                );
                                std::thread::sleep(wait);
                                wait = (wait * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                    shared.retrying.store(false, Ordering::Relaxed);
                    shared.committed.store(seq, Ordering::Relaxed);
                    shared.rows.fetch_add(rows, Ordering::Relaxed);
                }
            })
            .expect("spawning the committer thread");
        Committer {
            queue,
            thread,
            status,
        }
    }

    pub fn submit(&self, commit: Commit) {
        // The thread ends only when the queue is dropped, so it is there to take it.
        let _ = self.queue.send(commit);
    }

    /// Waits for every submitted commit to be done.
    pub fn finish(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}

/// Encodes `table`'s data files for the trip from a worker to the committer (which may be in
/// another process) and for the intent.
pub fn encode_files(
    table: &iceberg::table::Table,
    files: Vec<DataFile>,
) -> anyhow::Result<Vec<String>> {
    let ty = partition_type(table)?;
    let version = table.metadata().format_version();
    Ok(files
        .into_iter()
        .map(|f| serialize_data_file_to_json(f, &ty, version))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Decodes what [`encode_files`] made.
pub fn decode_files(
    table: &iceberg::table::Table,
    files: &[String],
) -> anyhow::Result<Vec<DataFile>> {
    let ty = partition_type(table)?;
    let m = table.metadata();
    Ok(files
        .iter()
        .map(|j| {
            deserialize_data_file_from_json(
                j,
                m.default_partition_spec_id(),
                &ty,
                m.current_schema(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{lakehouse, transactions};
    use crate::writer::TableWriter;

    async fn files_of(catalog: &dyn Catalog, first_offset: i64) -> BTreeMap<Table, Vec<DataFile>> {
        let table = crate::catalog::load(catalog, Table::Transactions)
            .await
            .unwrap();
        let mut w = TableWriter::new(&table, "t").await.unwrap();
        w.write(transactions(&["2026-03-02", "2026-03-02"], first_offset))
            .await
            .unwrap();
        BTreeMap::from([(Table::Transactions, w.close().await.unwrap())])
    }

    fn position(through: i64) -> Position {
        Position {
            boundary: 10_000_000,
            partitions: BTreeMap::from([(
                0,
                crate::progress::PartitionOffsets {
                    resume: through,
                    through,
                },
            )]),
        }
    }

    async fn rows(catalog: &dyn Catalog) -> usize {
        let t = crate::catalog::load(catalog, Table::Transactions)
            .await
            .unwrap();
        crate::read::scan(&t, None, None)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }

    /// Commit 1: two transactions rows, through position 2.
    async fn commit_first(catalog: &dyn Catalog) {
        let first = Commit {
            position: position(2),
            files: files_of(catalog, 0).await,
        };
        commit(catalog, "raw", 1, &first).await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_cut_between_tables_is_finished_once_on_restart() {
        let lake = lakehouse().await;
        let catalog = lake.catalog.as_ref();
        commit_first(catalog).await;
        assert_eq!(recover(catalog, "raw", true).await.unwrap().unwrap().seq, 1);

        // Commit 2 stops after its intent and the first table's snapshot.
        let second = Commit {
            position: position(4),
            files: files_of(catalog, 2).await,
        };
        let recorded = Recorded {
            seq: 2,
            position: second.position.clone(),
        };
        write_intent(catalog, "raw", &recorded, &second.files)
            .await
            .unwrap();
        let files = second.files[&Table::Transactions].clone();
        append(catalog, Table::Transactions, "raw", &recorded, files)
            .await
            .unwrap();

        let err = recover(catalog, "raw", false).await.unwrap_err();
        assert!(err.is::<Unfinished>(), "{err:#}");
        let done = recover(catalog, "raw", true).await.unwrap().unwrap();
        assert_eq!(done, recorded);
        for t in Table::ALL {
            let table = crate::catalog::load(catalog, t).await.unwrap();
            assert_eq!(
                self::recorded(&table, "raw").unwrap().unwrap().seq,
                2,
                "{}",
                t.name()
            );
        }
        // Recovering again, or committing 2 again, adds nothing.
        recover(catalog, "raw", true).await.unwrap();
        commit(catalog, "raw", 2, &second).await.unwrap();
        assert_eq!(rows(catalog).await, 4);
    }

    #[tokio::test]
    async fn every_topic_that_feeds_the_tables_is_recorded() {
        let lake = lakehouse().await;
        let catalog = lake.catalog.as_ref();
        commit_first(catalog).await;
        let other = Commit {
            position: position(2),
            files: files_of(catalog, 100).await,
        };
        commit(catalog, "other", 1, &other).await.unwrap();
        for t in Table::ALL {
            let table = crate::catalog::load(catalog, t).await.unwrap();
            assert_eq!(topics(&table), ["other", "raw"], "{}", t.name());
        }
    }

    #[tokio::test]
    async fn a_torn_intent_is_ignored() {
        let lake = lakehouse().await;
        let catalog = lake.catalog.as_ref();
        commit_first(catalog).await;
        let t = crate::catalog::load(catalog, Table::Transactions)
            .await
            .unwrap();
        t.file_io()
            .new_output(intent_location(&t, "raw"))
            .unwrap()
            .write(b"{\"topic\":\"raw\",\"recor".to_vec().into())
            .await
            .unwrap();
        let r = recover(catalog, "raw", true).await.unwrap().unwrap();
        assert_eq!((r.seq, r.position), (1, position(2)));
        assert_eq!(rows(catalog).await, 2);
    }
}
