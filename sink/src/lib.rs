//! The Iceberg lakehouse (issue 5, not built yet): catalog, table schemas, Parquet writers,
//! the frontier-driven commit protocol and table maintenance.
