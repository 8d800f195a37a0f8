//! The stream processor: a timely/differential dataflow that reads transactions (from Kafka,
//! or from the generator in-process), validates them, dead-letters the invalid ones and runs
//! the three fraud rules in event time, with results that do not depend on the number of
//! workers or on arrival order within the allowed lateness.
//!
//! The graph is wired in [`graph`]; each operator has its module: [`source`], [`rules_feed`],
//! [`judge`] (validation and the per-record rules), [`rapid_activity`]; [`emit`] is where
//! results leave. [`rules`] holds the rules as pure functions.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod allocator;
pub mod embedded;
pub mod emit;
pub mod graph;
pub mod judge;
pub mod kafka;
pub mod lakehouse;
pub mod metrics;
pub mod progress;
pub mod rapid_activity;
pub mod rules;
pub mod rules_feed;
pub mod source;
