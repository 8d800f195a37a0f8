//! The Iceberg lakehouse (issue 5, being built): the tables' schemas and partition specs
//! ([`schema`]) so far; the catalog, the Parquet writers, the frontier-driven commit protocol
//! and table maintenance come next.

pub mod schema;
