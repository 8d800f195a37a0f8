//! `dataflow`: the stream processor. Only `--help` works until issue 4 lands.

use clap::Parser;

/// The stream processor: Kafka raw-transactions -> validation, dead letters, fraud rules
/// (high_value, rapid_activity, unusual_hour) -> Kafka alerts and the Iceberg lakehouse.
///
/// NOT BUILT YET: this binary is a placeholder. The record model and validation it will run
/// are in the `model` crate; `generator` already produces its input.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {}

fn main() {
    Args::parse();
    eprintln!("dataflow: not built yet (issue 4); see README.md for what works today");
    std::process::exit(2);
}
