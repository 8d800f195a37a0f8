//! The whole dataflow, wired in one place:
//!
//! ```text
//! source ──> judge ──┬──> verdicts: valid transactions, alerts (high_value, unusual_hour),
//!   │          ▲     │    dead letters ────────────────────────────┐
//!   │ rules_feed ┘   └──> window entries ──> rapid_activity ──> alerts
//!   │                              all of them ──> outputs (emitter, Parquet files) ──┐
//!   └── marks (offsets at commit boundaries) ─────────────────────────────> commit (worker 0)
//! ```
//!
//! and [`run`], which starts the workers (threads and processes) and drives them to the end.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::Probe;
use timely::dataflow::Scope;

use crate::emit::Emitter;
use crate::judge::{judge, Verdict};
use crate::lakehouse::{self, Lakehouse};
use crate::metrics::Metrics;
use crate::rapid_activity::{rapid_activity, ParamsTimeline};
use crate::rules_feed::{rules_feed, RulesVersion};
use crate::source::{source, Backlog, Partition as InputPartition, SourceConfig};

/// What every worker needs to build its part of the dataflow.
#[derive(Clone)]
pub struct Settings {
    /// The input topic's name (for dead letters' `source.topic`).
    pub topic: String,
    /// The rules in force at start.
    pub rules: RulesVersion,
    /// The rules file to watch, if any (worker 0 watches it).
    pub rules_path: Option<PathBuf>,
    pub source: SourceConfig,
    /// Where rows are committed, if anywhere.
    pub lakehouse: Option<Lakehouse>,
}

/// Builds the dataflow of one worker. Returns a probe whose frontier is empty once everything
/// is done.
pub fn build<'scope>(
    scope: Scope<'scope, u64>,
    worker: usize,
    settings: &Settings,
    partitions: Vec<Box<dyn InputPartition>>,
    emitter: Rc<RefCell<dyn Emitter>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> ProbeHandle<u64> {
    let arrivals_probe = ProbeHandle::new();
    // How far results are made (the sources' back-pressure), and how far everything is done
    // (committed included: the lakehouse holds the frontier back a commit interval).
    let judged = ProbeHandle::new();
    let done = ProbeHandle::new();

    let backlog = Backlog::default();
    let (arrivals, marks) = source(
        scope,
        partitions,
        settings.source.clone(),
        metrics.clone(),
        judged.clone(),
        stop,
        backlog.clone(),
    );
    let arrivals = arrivals.probe_with(&arrivals_probe);
    let versions = rules_feed(
        scope,
        settings.rules.clone(),
        settings.rules_path.clone(),
        arrivals_probe,
        settings.source.lateness,
        metrics.clone(),
    )
    .broadcast();
    let transactions = settings.lakehouse.is_some() || emitter.borrow().wants_transactions();
    // The rapid_activity parameters of each rules version, as this worker's judge reads them.
    let params = ParamsTimeline::default();
    let (verdicts, windows) = judge(
        arrivals,
        versions,
        params.clone(),
        Rc::from(settings.topic.as_str()),
        transactions,
        metrics.clone(),
    );
    // A resumed run's windows start with the last window's committed transactions.
    let seeds = settings
        .lakehouse
        .as_ref()
        .filter(|_| worker == 0)
        .and_then(|l| l.seeds.lock().expect("not poisoned").take())
        .unwrap_or_default();
    let windows = windows.concat(lakehouse::seeds(scope, seeds).map(|(k, w)| (k, w, None)));
    let windowed_alerts = rapid_activity(windows, params, metrics).map(Verdict::Alert);

    // Everything that leaves the dataflow, on each worker.
    let written = lakehouse::outputs(
        verdicts.concat(windowed_alerts).probe_with(&judged),
        emitter,
        settings.lakehouse.clone(),
        worker,
        backlog,
    );
    match &settings.lakehouse {
        Some(lake) => {
            lakehouse::commit(written, marks, lake.clone(), worker).probe_with(&done);
        }
        None => {
            written.probe_with(&done);
        }
    }
    done
}

/// Runs the dataflow on `config`'s workers until the input ends or `stop` is set.
/// `partitions(index, peers)` opens the partitions worker `index` reads; `emitter(index)`
/// makes its outputs.
pub fn run<P, E>(
    config: timely::Config,
    settings: Settings,
    partitions: P,
    emitter: E,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(), String>
where
    P: Fn(usize, usize) -> anyhow::Result<Vec<Box<dyn InputPartition>>> + Send + Sync + 'static,
    E: Fn(usize) -> Rc<RefCell<dyn Emitter>> + Send + Sync + 'static,
{
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        // A worker that cannot open its input still builds the dataflow (every worker must),
        // with no partitions, stops the others, and reports the error at the end.
        let (parts, error) = match partitions(index, peers) {
            Ok(p) => (p, None),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                (Vec::new(), Some(format!("worker {index}: {e:#}")))
            }
        };
        let out = emitter(index);
        let metrics = metrics.clone();
        let stop = stop.clone();
        let done = worker.dataflow::<u64, _, _>(|scope| {
            build(scope, index, &settings, parts, out.clone(), metrics, stop)
        });
        // Until everything is done; a stop ends the sources, and the rest drains.
        while !done.done() {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        out.borrow_mut().finish();
        error.map_or(Ok(()), Err)
    })?;
    for result in guards.join() {
        result??;
    }
    Ok(())
}
