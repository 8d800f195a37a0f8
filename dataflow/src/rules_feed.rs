//! `rules_feed`: the rules file as data. Worker 0 sends each valid version of the file, at the
//! point of the stream (a time) from which it applies, to every worker.
//!
//! The feed's capability is the promise "no version will apply before this time". It stays
//! `allowed_lateness` ahead of the arrivals' frontier (the watermark), which is the newest
//! event time that every partition has reached: records older than that are judged at once,
//! newer ones wait until every partition has caught up with them. A new version applies from
//! the feed's capability at the moment the file changed, so no record at or after that time
//! has been judged yet, on any worker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use model::reload::Reloader;
use model::Rules;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};

use crate::source::granule;

/// One version of the rules file, as text: every worker parses the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RulesVersion {
    pub version: u64,
    /// Where it came from, for error messages.
    pub origin: String,
    pub text: String,
}

/// The feed: the rules in force at start (at time 0) and then each new valid version of
/// `path` (when given), on worker 0 only; `arrivals` is a probe on the arrivals' frontier.
pub fn rules_feed<'scope>(
    scope: Scope<'scope, u64>,
    initial: RulesVersion,
    path: Option<PathBuf>,
    arrivals: ProbeHandle<u64>,
    lateness: u64,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Stream<'scope, u64, Vec<RulesVersion>> {
    let leader = scope.index() == 0;
    source(scope, "RulesFeed", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut capability = leader.then_some(capability);
        let mut initial = Some(initial);
        let reloader = path.filter(|_| leader).map(|p| {
            Reloader::watch(&p, Duration::from_secs(1), move |p: &Path| {
                let text = model::config_file::read(p)?;
                Rules::from_yaml(&text, p).map(|r| RulesVersion {
                    version: r.version,
                    origin: p.display().to_string(),
                    text,
                })
            })
        });

        move |output| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if let Some(v) = initial.take() {
                output.session(&*cap).give(v);
            }
            if let Some(v) = reloader.as_ref().and_then(Reloader::latest) {
                tracing::info!(
                    "rules version {} applies from {}",
                    v.version,
                    model::EventTime::from_micros(*cap.time() as i64)
                );
                output.session(&*cap).give(v);
            }
            // Keep up with the arrivals: once they are all done, so is the feed.
            let frontier = arrivals.with_frontier(|f| f.iter().copied().min());
            match frontier {
                None => {
                    capability = None;
                    return;
                }
                Some(f) => {
                    metrics
                        .watermark
                        .store(f as i64, std::sync::atomic::Ordering::Relaxed);
                    let promise = granule(f.saturating_add(lateness));
                    if promise > *cap.time() {
                        cap.downgrade(&promise);
                    }
                }
            }
            activator.activate_after(Duration::from_millis(1));
        }
    })
}
