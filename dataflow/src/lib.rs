//! The stream processor (issue 4, not built yet): a timely/differential dataflow that reads
//! `raw-transactions`, validates each record with [`model::validate`], dead-letters the
//! invalid ones, runs the three fraud rules and commits its output to the lakehouse when its
//! frontier passes the end of a commit interval.

pub mod rules;
