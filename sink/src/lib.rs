//! The Iceberg lakehouse: the tables' schemas and partition specs ([`schema`]), the catalog
//! ([`catalog`]), rows as Arrow batches ([`rows`]), Parquet data files ([`writer`]), the
//! exactly-once commit protocol ([`commit`], with the input's [`progress`] it records),
//! reading a table back ([`read`]) and maintenance iceberg-rust lacks ([`maintenance`]).

pub mod catalog;
pub mod commit;
pub mod compact;
pub mod maintenance;
pub mod progress;
pub mod read;
pub mod rows;
pub mod schema;
pub mod writer;

#[cfg(test)]
mod test_support;
