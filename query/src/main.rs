//! `query`: analytics over the lakehouse with DuckDB. Only `--help` works until issue 6 lands.

use clap::Parser;

/// Analytics, time travel and table maintenance over the Iceberg lakehouse, with DuckDB.
///
/// NOT BUILT YET: this binary is a placeholder until the lakehouse sink (issue 5) and the
/// query commands (issue 6) land.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {}

fn main() {
    Args::parse();
    eprintln!("query: not built yet (issue 6); see README.md for what works today");
    std::process::exit(2);
}
