//! The dataflow's side of the lakehouse: rows into Parquet files on every worker, and one
//! commit per boundary of the commit interval, made when the frontier passes it.
//!
//! ```text
//! verdicts ──> outputs (every worker: the emitter, and the rows of each open interval)
//!                 │ data files of an interval, once the frontier has passed its end
//!                 ▼
//! marks ─────> commit (worker 0: a Position from the marks, a Commit to the sink's Committer)
//! ```
//!
//! A row's interval is its time divided by the interval: the rows of interval `k` are complete
//! when the frontier reaches `(k + 1) × interval`, and the commit at a boundary takes the files
//! of every interval before it, with the sources' [`Mark`]s saying where the input stands there
//! (see [`crate::progress`]). Nothing is committed that the frontier has not closed, and each
//! row goes into exactly one commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use model::{AccountId, EventTime, Rule};
use sink::commit::{decode_files, encode_files, Commit, Committer};
use sink::rows::{AlertRows, DeadLetterRows, TransactionRows};
use sink::schema::Table;
use sink::writer::TableWriter;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::emit::Emitter;
use crate::judge::Verdict;
use crate::progress::{Mark, Marks};
use crate::rapid_activity::Windowed;
use crate::source::Backlog;

/// Rows a worker gathers per table before it writes them as one data file: enough for
/// analytics-sized row groups (one per file), bounded so that a worker's memory is too.
const FILE_ROWS: usize = 256 * 1024;

/// Window entries by account number.
pub type Seeds = Vec<(u32, Windowed)>;

/// What every worker needs to write and commit.
#[derive(Clone)]
pub struct Lakehouse {
    /// The three tables, in [`Table::ALL`]'s order, as loaded at start (their schema, partition
    /// spec and location: what writing needs).
    pub tables: Arc<Vec<iceberg::table::Table>>,
    pub runtime: tokio::runtime::Handle,
    /// µs of event time; a multiple of the source's granule.
    pub commit_interval: u64,
    /// The number of input partitions: a commit needs every one's mark.
    pub partitions: i32,
    /// Process 0's committer, used by its worker 0 (the others' is `None`).
    pub committer: Arc<Mutex<Option<Committer>>>,
    /// Where the last commit left the input, if anything was committed before.
    pub resumed: Option<crate::progress::Position>,
    /// A resumed run's window entries ([`window_seeds`]), taken by worker 0.
    pub seeds: Arc<Mutex<Option<Seeds>>>,
}

/// The window seeds as a stream: all at the earliest seed's time, then nothing.
pub fn seeds<'scope>(
    scope: timely::dataflow::Scope<'scope, u64>,
    seeds: Vec<(u32, Windowed)>,
) -> Stream<'scope, u64, Vec<(u32, Windowed)>> {
    timely::dataflow::operators::generic::operator::source(scope, "Seeds", move |cap, _info| {
        let mut once = Some((cap, seeds));
        move |output| {
            let Some((cap, seeds)) = once.take() else {
                return;
            };
            if let Some(first) = seeds.iter().map(|(_, w)| w.event_time.max(0) as u64).min() {
                let at = cap.delayed(&crate::source::granule(first));
                output.session(&at).give_iterator(seeds.into_iter());
            }
        }
    })
}

/// Data files one worker wrote for one table and interval, encoded for the way to worker 0.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub interval: u64,
    /// The table's index in [`Table::ALL`].
    pub table: usize,
    pub files: Vec<String>,
}

/// The rows of one open interval on one worker, and the files already written of it.
struct Open {
    cap: Capability<u64>,
    transactions: TransactionRows,
    alerts: AlertRows,
    dead_letters: DeadLetterRows,
    files: [Vec<String>; 3],
    /// Files being written in the background.
    writing: usize,
    /// Whether the frontier has passed the interval's end and its last rows went to be written.
    closed: bool,
}

/// A data file written in the background: its interval, table and encoded file entries.
type Done = (u64, usize, Vec<String>);

/// Writes data files on the lakehouse's runtime, away from the worker's thread: encoding and
/// compressing an interval's rows takes a worker's core for a tenth of a second or more, and
/// every verdict behind it (a high_value alert, say) would wait that long. The operator is
/// woken when a file is done.
struct Background {
    lake: Lakehouse,
    prefix: Arc<str>,
    done: std::sync::mpsc::Sender<Done>,
    wake: timely::scheduling::activate::SyncActivator,
}

impl Background {
    /// Writes each table's rows of interval `k`'s `o` as a data file, in the background, once
    /// there are at least `at_least`.
    fn flush(&self, k: u64, o: &mut Open, at_least: usize) {
        let batches = [
            (o.transactions.len() >= at_least).then(|| o.transactions.finish()),
            (o.alerts.len() >= at_least).then(|| o.alerts.finish()),
            (o.dead_letters.len() >= at_least).then(|| o.dead_letters.finish()),
        ];
        for (i, batch) in batches.into_iter().enumerate() {
            let Some(batch) = batch else { continue };
            o.writing += 1;
            let (lake, prefix) = (self.lake.clone(), self.prefix.clone());
            let (done, wake) = (self.done.clone(), self.wake.clone());
            self.lake.runtime.spawn_blocking(move || {
                let files = write_file(&lake, i, &prefix, batch);
                // Both fail only when the dataflow is gone.
                let _ = done.send((k, i, files));
                let _ = wake.activate();
            });
        }
    }
}

/// Every worker's outputs: each verdict to `emitter`, and its row into its interval's files.
/// Emits the data files of each interval once the frontier has passed its end.
pub fn outputs<'scope>(
    verdicts: Stream<'scope, u64, Vec<Verdict>>,
    emitter: Rc<RefCell<dyn Emitter>>,
    lakehouse: Option<Lakehouse>,
    worker: usize,
    backlog: Backlog,
) -> Stream<'scope, u64, Vec<Written>> {
    let worker_handle = verdicts.scope().worker().clone();
    verdicts.unary_frontier(Pipeline, "Outputs", move |_cap, info| {
        let activator = worker_handle.activator_for(info.address.clone());
        let mut open: BTreeMap<u64, Open> = BTreeMap::new();
        let (done, written) = std::sync::mpsc::channel::<Done>();
        let background = lakehouse.map(|lake| Background {
            lake,
            prefix: format!("w{worker}-{}", uuid::Uuid::new_v4().simple()).into(),
            done,
            wake: worker_handle.sync_activator_for(info.address.to_vec()),
        });
        move |(input, frontier), output| {
            let mut out = emitter.borrow_mut();
            input.for_each(|cap, data| {
                let Some(bg) = background.as_ref() else {
                    for v in data.drain(..) {
                        emit(&mut *out, &v);
                    }
                    return;
                };
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                let now = EventTime::now();
                let at = *cap.time();
                for v in data.drain(..) {
                    emit(&mut *out, &v);
                    let o = open
                        .entry(record_time(&v, at) / bg.lake.commit_interval)
                        .or_insert_with(|| Open {
                            cap: cap.clone(),
                            transactions: TransactionRows::default(),
                            alerts: AlertRows::default(),
                            dead_letters: DeadLetterRows::default(),
                            files: Default::default(),
                            writing: 0,
                            closed: false,
                        });
                    if cap.time() < o.cap.time() {
                        o.cap = cap.clone();
                    }
                    match v {
                        Verdict::Valid(v) => {
                            o.transactions
                                .push(&v.txn, v.partition, v.offset, v.late, now)
                        }
                        Verdict::Alert(a) => o.alerts.push(&a),
                        Verdict::Dead(d, _) => o.dead_letters.push(&d),
                    }
                }
                for (&k, o) in open.iter_mut() {
                    bg.flush(k, o, FILE_ROWS);
                }
            });
            if let Some(after) = out.flush(backlog.get()) {
                activator.activate_after(after);
            }
            let Some(bg) = background.as_ref() else {
                return;
            };
            for (k, table, files) in written.try_iter() {
                let o = open
                    .get_mut(&k)
                    .expect("an interval stays open while it is written");
                o.files[table].extend(files);
                o.writing -= 1;
            }
            let frontier = frontier.frontier();
            while let Some(mut first) = open.first_entry() {
                let (interval, o) = (*first.key(), first.get_mut());
                // Rows of the interval can come until its end itself (a rapid_activity alert
                // goes out at its transaction's time rounded up to a second).
                let end = (interval + 1).saturating_mul(bg.lake.commit_interval);
                if frontier.iter().any(|t| *t <= end) {
                    break;
                }
                if !o.closed {
                    bg.flush(interval, o, 1);
                    o.closed = true;
                }
                // Intervals go out in order, each once all its files are written.
                if o.writing > 0 {
                    break;
                }
                let (_, o) = open.pop_first().expect("non-empty");
                let mut session = output.session(&o.cap);
                for (table, files) in o.files.into_iter().enumerate() {
                    if !files.is_empty() {
                        session.give(Written {
                            interval,
                            table,
                            files,
                        });
                    }
                }
            }
        }
    })
}

/// The time of the record a row comes from, which decides its interval: the time the row goes
/// out (`at`), except for a rapid_activity alert, which goes out when its window is complete,
/// up to a second after its transaction (never late, so at its event time's granule). A row
/// and its record are thus always committed together, which a restart relies on.
fn record_time(v: &Verdict, at: u64) -> u64 {
    match v {
        Verdict::Alert(a) if a.rule == Rule::RapidActivity => {
            crate::source::granule(a.event_time.as_micros().max(0) as u64)
        }
        _ => at,
    }
}

fn emit(out: &mut dyn Emitter, v: &Verdict) {
    match v {
        Verdict::Valid(v) => out.transaction(v),
        Verdict::Alert(a) => out.alert(a),
        Verdict::Dead(d, k) => out.dead_letter(d, k.as_deref()),
    }
}

/// Writes `batch` to data files of table `i`, trying again until storage takes them: the
/// rows are still here, and nothing refers to a file that failed half-way.
fn write_file(lake: &Lakehouse, i: usize, prefix: &str, batch: RecordBatch) -> Vec<String> {
    let table = &lake.tables[i];
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = lake.runtime.block_on(async {
            let mut w = TableWriter::new(table, prefix).await?;
            w.write(batch.clone()).await?;
            encode_files(table, w.close().await?)
        });
        match attempt {
            Ok(files) => return files,
            Err(e) => {
                tracing::warn!(
                    "writing {} rows to {}: {e:#}; trying again in {:.1} s",
                    batch.num_rows(),
                    Table::ALL[i].name(),
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Worker 0's committer: gathers the marks and the written files, and at each boundary the
/// frontier passes hands one [`Commit`] to the sink's committer. Its output is empty; its
/// frontier passes the end only once the last commit has been handed over.
pub fn commit<'scope>(
    written: Stream<'scope, u64, Vec<Written>>,
    marks: Stream<'scope, u64, Vec<Mark>>,
    lake: Lakehouse,
    worker: usize,
) -> Stream<'scope, u64, Vec<()>> {
    written.binary_frontier(
        marks,
        Exchange::new(|_: &Written| 0),
        Exchange::new(|_: &Mark| 0),
        "Commit",
        move |cap, _info| {
            // Everything goes to worker 0, which has the committer (in process 0).
            let commits = worker == 0;
            let mut held = Some(cap);
            let mut marks = Marks::default();
            let mut files: BTreeMap<u64, Vec<Written>> = BTreeMap::new();
            // The boundary of the last commit, at which this run starts.
            let mut last = lake.resumed.as_ref().map_or(0, |p| p.boundary);
            let mut last_partitions = lake.resumed.as_ref().map(|p| p.partitions.clone());
            move |(written, written_frontier),
                  (new_marks, marks_frontier),
                  _output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
                '_,
                u64,
                timely::container::CapacityContainerBuilder<Vec<()>>,
            >| {
                written.for_each(|_, data| {
                    for w in data.drain(..) {
                        files.entry(w.interval).or_default().push(w);
                    }
                });
                new_marks.for_each(|_, data| {
                    for m in data.drain(..) {
                        marks.add(m);
                    }
                });
                if !commits {
                    held = None;
                    return;
                }
                let least = written_frontier
                    .frontier()
                    .iter()
                    .chain(marks_frontier.frontier().iter())
                    .copied()
                    .min();
                if let (Some(h), Some(t)) = (held.as_mut(), least) {
                    if *h.time() < t {
                        h.downgrade(&t);
                    }
                }
                // A boundary closes once the frontier is past it (see `outputs`).
                let boundary = match least {
                    None => u64::MAX,
                    Some(t) => t.saturating_sub(1) / lake.commit_interval * lake.commit_interval,
                };
                if boundary <= last || held.is_none() {
                    return;
                }
                let position = marks
                    .position_at(boundary)
                    .filter(|p| p.partitions.len() == lake.partitions as usize);
                let Some(position) = position else {
                    if boundary == u64::MAX {
                        // Cannot happen (every source marks its end); if it did, the rows since
                        // the last commit are made again by the next run.
                        tracing::error!(
                            "the input ended without every partition's mark: no last commit"
                        );
                        held = None;
                    }
                    return;
                };
                last = boundary;
                let mut commit = Commit {
                    position,
                    files: BTreeMap::new(),
                };
                let closed: Vec<u64> = files
                    .keys()
                    .copied()
                    .take_while(|k| boundary == u64::MAX || *k < boundary / lake.commit_interval)
                    .collect();
                for k in closed {
                    for w in files.remove(&k).expect("listed") {
                        match decode_files(&lake.tables[w.table], &w.files) {
                            Ok(f) => commit
                                .files
                                .entry(Table::ALL[w.table])
                                .or_default()
                                .extend(f),
                            Err(e) => tracing::error!("a data file's description: {e:#}"),
                        }
                    }
                }
                // Nothing new and nothing in between (a restart that read nothing): no
                // snapshot.
                let idle = commit.files.is_empty()
                    && commit
                        .position
                        .partitions
                        .values()
                        .all(|o| o.resume == o.through)
                    && last_partitions.as_ref() == Some(&commit.position.partitions);
                last_partitions = Some(commit.position.partitions.clone());
                if idle {
                    if boundary == u64::MAX {
                        held = None;
                    }
                    return;
                }
                match lake.committer.lock().expect("not poisoned").as_ref() {
                    Some(c) => c.submit(commit),
                    None => tracing::error!("worker 0 has no committer: commit at {boundary} lost"),
                }
                if boundary == u64::MAX {
                    held = None;
                }
            }
        },
    )
}

/// The window entries a resumed run starts with: the committed, on-time transactions of the
/// last window before the boundary, read back from the transactions table. They count in
/// later transactions' windows and raise no alert again (no worker holds their payloads).
pub fn window_seeds(batches: &[RecordBatch]) -> anyhow::Result<Vec<(u32, Windowed)>> {
    let mut seeds = Vec::new();
    for b in batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("the transactions table has no column {name}"))
        };
        let ids = col("transaction_id")?.as_string::<i32>();
        let accounts = col("account_id")?.as_string::<i32>();
        let times = col("event_time")?.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let late = col("late")?.as_boolean();
        for i in 0..b.num_rows() {
            if late.value(i) {
                continue;
            }
            let (Some(account), Ok(id)) = (
                AccountId::parse(accounts.value(i)),
                uuid::Uuid::parse_str(ids.value(i)),
            ) else {
                anyhow::bail!(
                    "an unreadable row in the transactions table: {}",
                    ids.value(i)
                );
            };
            seeds.push((
                account.number(),
                Windowed {
                    event_time: times.value(i),
                    transaction_id: id,
                },
            ));
        }
    }
    Ok(seeds)
}
