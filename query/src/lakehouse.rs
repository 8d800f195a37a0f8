//! The tables as DuckDB sees them: for each table, the snapshot asked for (current, by id, or as
//! of a time), its data files planned by iceberg-rust (partitions and column bounds pruned with
//! the query's filter), and a DuckDB view over exactly those Parquet files. Files no snapshot
//! refers to (a crashed commit's) are never read, and DuckDB needs no Iceberg extension.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures::TryStreamExt;
use iceberg::expr::Predicate;
use iceberg::spec::{PrimitiveType, Type};
use iceberg::Catalog;
use sink::schema::Table;

/// Which snapshot of each table to read.
#[derive(Clone, Copy, Debug)]
pub enum AsOf {
    Current,
    /// A snapshot id (of the table it is given for).
    Snapshot(i64),
    /// The table's current snapshot at this time (ms since the epoch).
    Time(i64),
}

/// The snapshot of `table` that `as_of` names: `None` for a table with no snapshot (yet, or at
/// that time).
pub fn snapshot_of(table: &iceberg::table::Table, as_of: AsOf) -> anyhow::Result<Option<i64>> {
    let m = table.metadata();
    match as_of {
        AsOf::Current => Ok(m.current_snapshot_id()),
        AsOf::Snapshot(id) => {
            if m.snapshot_by_id(id).is_none() {
                bail!(
                    "{} has no snapshot {id} (`query snapshots --table {}` lists them)",
                    table.identifier(),
                    table.identifier().name()
                );
            }
            Ok(Some(id))
        }
        // The snapshot log says which snapshot was current when; iceberg-rust has no
        // as-of-time scan of its own.
        AsOf::Time(ms) => Ok(m
            .history()
            .iter()
            .filter(|l| l.timestamp_ms <= ms)
            .max_by_key(|l| l.timestamp_ms)
            .map(|l| l.snapshot_id)),
    }
}

/// The data files of `snapshot` of `table` that `filter` may match.
pub async fn plan(
    table: &iceberg::table::Table,
    snapshot: Option<i64>,
    filter: Option<Predicate>,
) -> anyhow::Result<Vec<String>> {
    let Some(id) = snapshot else {
        return Ok(Vec::new());
    };
    let mut scan = table.scan().snapshot_id(id);
    if let Some(f) = filter {
        scan = scan.with_filter(f);
    }
    let tasks: Vec<_> = scan.build()?.plan_files().await?.try_collect().await?;
    Ok(tasks
        .into_iter()
        .map(|t| {
            let p = t.data_file_path;
            p.strip_prefix("file://").map(str::to_owned).unwrap_or(p)
        })
        .collect())
}

/// DuckDB's type for an Iceberg column.
fn duckdb_type(ty: &Type) -> anyhow::Result<String> {
    Ok(match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "BOOLEAN".into(),
            PrimitiveType::Int => "INTEGER".into(),
            PrimitiveType::Long => "BIGINT".into(),
            PrimitiveType::Float => "FLOAT".into(),
            PrimitiveType::Double => "DOUBLE".into(),
            PrimitiveType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            PrimitiveType::Date => "DATE".into(),
            PrimitiveType::Timestamp => "TIMESTAMP".into(),
            PrimitiveType::Timestamptz => "TIMESTAMPTZ".into(),
            PrimitiveType::String => "VARCHAR".into(),
            PrimitiveType::Uuid => "UUID".into(),
            PrimitiveType::Binary | PrimitiveType::Fixed(_) => "BLOB".into(),
            other => bail!("columns of type {other} are not supported"),
        },
        other => bail!("columns of type {other} are not supported"),
    })
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Creates view `name` over `files`, with the table's current columns in order: a column that
/// no file has yet (added by `add-column` after they were written) reads as NULL.
pub fn create_view(
    db: &duckdb::Connection,
    table: &iceberg::table::Table,
    name: &str,
    files: &[String],
) -> anyhow::Result<()> {
    let schema = table.metadata().current_schema();
    let source = if files.is_empty() {
        None
    } else {
        let list: Vec<String> = files.iter().map(|f| literal(f)).collect();
        Some(format!(
            "read_parquet([{}], union_by_name = true)",
            list.join(", ")
        ))
    };
    let present: Vec<String> = match &source {
        Some(s) => {
            let mut stmt = db.prepare(&format!("DESCRIBE SELECT * FROM {s}"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names.collect::<Result<_, _>>()?
        }
        None => Vec::new(),
    };
    let mut columns = Vec::new();
    for f in schema.as_struct().fields() {
        if present.iter().any(|p| p == &f.name) {
            columns.push(quote(&f.name));
        } else {
            columns.push(format!(
                "CAST(NULL AS {}) AS {}",
                duckdb_type(&f.field_type)?,
                quote(&f.name)
            ));
        }
    }
    let body = match source {
        Some(s) => format!("SELECT {} FROM {s}", columns.join(", ")),
        None => format!("SELECT {} LIMIT 0", columns.join(", ")),
    };
    db.execute_batch(&format!("CREATE OR REPLACE VIEW {} AS {body}", quote(name)))
        .with_context(|| format!("creating the view {name}"))?;
    Ok(())
}

/// The loaded tables, in [`Table::ALL`]'s order.
pub async fn load_all(catalog: &Arc<dyn Catalog>) -> anyhow::Result<Vec<iceberg::table::Table>> {
    let mut tables = Vec::new();
    for t in Table::ALL {
        tables.push(sink::catalog::load(catalog.as_ref(), t).await?);
    }
    Ok(tables)
}
