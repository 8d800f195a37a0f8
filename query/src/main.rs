//! `query`: analytics over the lakehouse with DuckDB, reading the tables through the same catalog
//! the pipeline writes ([`lakehouse`] plans each snapshot's files with iceberg-rust and hands
//! DuckDB exactly those).

mod lakehouse;

use std::io::Write as _;

use anyhow::{bail, Context as _};
use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;
use model::EventTime;
use sink::catalog::CatalogConfig;
use sink::schema::Table;

use crate::lakehouse::{create_view, load_all, plan, snapshot_of, AsOf};

/// Analytics and time travel over the Iceberg lakehouse, with DuckDB.
///
/// Reads go through the same catalog the dataflow commits to; only committed snapshots are
/// read. Filters combine:
///
///   query --table transactions --limit 10
///   query --account-id ACC0001234 --date-range 2026-03-01 2026-03-02
///   query --join-alerts --limit 20 --format json
///   query --table alerts --as-of-timestamp 2026-03-02T10:00:00Z
///   query --sql "SELECT rule, count(*) FROM alerts GROUP BY rule"
///   query snapshots --table transactions
///   query compact
///   query expire-snapshots --older-than 7d --retain-last 10
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    read: Read,

    #[command(flatten)]
    lake: Lake,

    /// How results are printed.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
}

#[derive(clap::Args, Debug)]
struct Lake {
    /// The Iceberg catalog: sqlite://PATH or http(s)://… [default: sqlite://<warehouse>/catalog.db]
    #[arg(long, env = "ICEBERG_CATALOG_URI", global = true)]
    catalog_uri: Option<String>,

    /// The catalog's name.
    #[arg(
        long,
        env = "ICEBERG_CATALOG_NAME",
        default_value = "lakehouse",
        global = true
    )]
    catalog_name: String,

    /// The warehouse: a path or file://…
    #[arg(
        long,
        env = "ICEBERG_WAREHOUSE",
        default_value = "./warehouse",
        global = true
    )]
    warehouse: String,
}

#[derive(clap::Args, Debug)]
struct Read {
    /// The table to read: transactions, alerts or dead_letters.
    #[arg(long, default_value = "transactions")]
    table: String,

    /// At most this many rows (0: all).
    #[arg(long, default_value_t = 20)]
    limit: usize,

    /// Only rows whose event time (dead_letters: received_at) falls on these days, inclusive,
    /// UTC: --date-range 2026-03-01 2026-03-07
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    date_range: Option<Vec<String>>,

    /// Only this account's rows (transactions, alerts, --join-alerts).
    #[arg(long)]
    account_id: Option<String>,

    /// Alerts joined to their transactions (filters apply to the transaction).
    #[arg(long)]
    join_alerts: bool,

    /// Time travel: the tables as they were at this time (RFC 3339).
    #[arg(long, conflicts_with = "snapshot_id")]
    as_of_timestamp: Option<String>,

    /// Time travel: this snapshot of --table (see `query snapshots`).
    #[arg(long)]
    snapshot_id: Option<i64>,

    /// Run this SQL over views named after the tables (transactions, alerts, dead_letters),
    /// instead of a --table read.
    #[arg(long)]
    sql: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List a table's snapshots: id, time, operation and summary.
    ///
    /// The summary holds the Kafka offsets each commit covers.
    Snapshots {
        /// The table [default: all three]
        #[arg(long)]
        table: Option<String>,
    },
    /// Expire old snapshots and delete the files nothing refers to any more.
    ///
    /// Deletes the files no remaining snapshot refers to (never the current snapshot's), and
    /// data files of interrupted commits older than a day.
    ExpireSnapshots {
        /// The table [default: all three]
        #[arg(long)]
        table: Option<String>,
        /// Expire snapshots older than this: an age (30m, 12h, 7d) or a time (RFC 3339).
        #[arg(long, default_value = "5d")]
        older_than: String,
        /// Keep at least this many of the newest snapshots.
        #[arg(long, default_value_t = 1)]
        retain_last: usize,
    },
    /// Rewrite small data files into larger ones, as one `replace` snapshot.
    ///
    /// The new snapshot reads the same rows and carries the Kafka offsets forward (one
    /// manifest replaces the many that commits add). Safe while the dataflow commits: a commit
    /// that lands first is kept and the rewrite is committed on top of it. Older snapshots
    /// still read their own files until expired.
    Compact {
        /// The table [default: all three]
        #[arg(long)]
        table: Option<String>,
        /// The size of the files written, and of the ones rewritten (those under 3/4 of it,
        /// where a day has two or more): 512MiB, 64MB, 1048576.
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        target_file_size: u64,
    },
    /// Add a nullable column to a table, without rewriting data.
    ///
    /// Rows written before read it as NULL, and the running pipeline keeps committing. TYPE:
    /// string, int, long, boolean, double, date, timestamptz or decimal(P,S).
    AddColumn {
        #[arg(long)]
        table: String,
        name: String,
        #[arg(value_name = "TYPE")]
        ty: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        // `query … | head`: the reader has all it wanted.
        // (arrow's CSV writer keeps only the message of the I/O error.)
        let closed = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                || c.to_string().contains("Broken pipe")
        });
        if closed {
            return;
        }
        eprintln!("query: {e:#}");
        std::process::exit(1);
    }
}

fn parse_table(name: &str) -> anyhow::Result<Table> {
    Table::parse(name).with_context(|| {
        format!("unknown table {name}: the tables are transactions, alerts and dead_letters")
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = CatalogConfig {
        uri: args.lake.catalog_uri.clone(),
        name: args.lake.catalog_name.clone(),
        warehouse: args.lake.warehouse.clone(),
    };
    let catalog = runtime
        .block_on(sink::catalog::open(&config))
        .with_context(|| format!("opening the lakehouse in {}", config.warehouse))?;
    let tables = runtime.block_on(load_all(&catalog))?;
    let batches = match &args.command {
        Some(Command::Snapshots { table }) => {
            let only = table.as_deref().map(parse_table).transpose()?;
            snapshots(&tables, only)?
        }
        Some(Command::ExpireSnapshots {
            table,
            older_than,
            retain_last,
        }) => {
            let cutoff = cutoff_ms(older_than)?;
            let only = table.as_deref().map(parse_table).transpose()?;
            for t in Table::ALL
                .into_iter()
                .filter(|t| only.is_none_or(|o| o == *t))
            {
                let done = runtime.block_on(sink::maintenance::expire_snapshots(
                    catalog.as_ref(),
                    t,
                    cutoff,
                    *retain_last,
                ))?;
                eprintln!(
                    "{}: {} snapshots expired, {} files deleted, {} orphaned data files deleted",
                    t.name(),
                    done.snapshots,
                    done.files,
                    done.orphans
                );
            }
            return Ok(());
        }
        Some(Command::Compact {
            table,
            target_file_size,
        }) => {
            let only = table.as_deref().map(parse_table).transpose()?;
            for t in Table::ALL
                .into_iter()
                .filter(|t| only.is_none_or(|o| o == *t))
            {
                let done = runtime.block_on(sink::compact::compact(
                    &config,
                    catalog.as_ref(),
                    t,
                    *target_file_size,
                ))?;
                match done.snapshot {
                    None => eprintln!("{}: nothing to compact", t.name()),
                    Some(id) => eprintln!(
                        "{}: {} files ({} rows) rewritten into {}, snapshot {id}",
                        t.name(),
                        done.removed,
                        done.rows,
                        done.added
                    ),
                }
            }
            return Ok(());
        }
        Some(Command::AddColumn { table, name, ty }) => {
            let t = parse_table(table)?;
            let i = Table::ALL.iter().position(|x| *x == t).expect("one of ALL");
            runtime.block_on(add_column(catalog.as_ref(), &tables[i], name, ty))?;
            eprintln!("added column {name} ({ty}) to {}", t.name());
            return Ok(());
        }
        None => {
            let (db, sql) = runtime.block_on(read(&args.read, &tables))?;
            let mut stmt = db.prepare(&sql).map_err(|e| anyhow::anyhow!("{e}"))?;
            let batches = stmt.stream_arrow([]).map_err(|e| anyhow::anyhow!("{e}"))?;
            return print(batches, args.format);
        }
    };
    print(batches.into_iter(), args.format)
}

/// Bytes in `512MiB`, `64MB`, `1GiB`, `4096` (the units of 1000 and of 1024, in either case).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text}: expected a size such as 256MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{text}: unknown unit {other} (B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    match number.checked_mul(scale) {
        Some(0) | None => Err(format!("{text}: expected a size above 0 and below 16 EiB")),
        Some(bytes) => Ok(bytes),
    }
}

/// The time column a date range filters on.
fn time_column(table: Table) -> &'static str {
    table.partition_column()
}

/// `[FROM 00:00, TO + 1 day 00:00)` in µs, UTC.
fn day_range(range: &[String]) -> anyhow::Result<(i64, i64)> {
    let day = |d: &str| {
        EventTime::parse_rfc3339(&format!("{d}T00:00:00Z"))
            .map(|t| t.as_micros())
            .map_err(|e| anyhow::anyhow!("--date-range {d}: expected YYYY-MM-DD ({e})"))
    };
    let (from, to) = (day(&range[0])?, day(&range[1])?);
    if to < from {
        bail!("--date-range {} {}: FROM is after TO", range[0], range[1]);
    }
    Ok((from, to + 86_400_000_000))
}

/// The read `r` asks for: a DuckDB database with a view of each table's planned files, and the
/// query to run over them (its rows are printed as DuckDB produces them).
async fn read(
    r: &Read,
    tables: &[iceberg::table::Table],
) -> anyhow::Result<(duckdb::Connection, String)> {
    let table = if r.join_alerts {
        Table::Transactions
    } else {
        parse_table(&r.table)?
    };
    if r.account_id.is_some() && table == Table::DeadLetters {
        bail!("dead_letters have no account_id (a dead letter's record may have none)");
    }
    let as_of = match (&r.as_of_timestamp, r.snapshot_id) {
        (Some(ts), _) => AsOf::Time(
            EventTime::parse_rfc3339(ts)
                .map_err(|e| anyhow::anyhow!("--as-of-timestamp {ts}: {e}"))?
                .as_micros()
                / 1000,
        ),
        (None, Some(id)) => AsOf::Snapshot(id),
        (None, None) => AsOf::Current,
    };
    // The filter, for pruning files (iceberg-rust) and for the rows (DuckDB).
    let range = r.date_range.as_deref().map(day_range).transpose()?;
    let mut pruning: Option<Predicate> = None;
    let mut and = |p: Predicate| {
        pruning = Some(match pruning.take() {
            Some(q) => q.and(p),
            None => p,
        })
    };
    let mut wheres = Vec::new();
    if let Some((from, to)) = range {
        let col = time_column(table);
        and(Reference::new(col).greater_than_or_equal_to(Datum::timestamptz_micros(from)));
        and(Reference::new(col).less_than(Datum::timestamptz_micros(to)));
        let (a, b) = (EventTime::from_micros(from), EventTime::from_micros(to));
        wheres.push(format!(
            "{col} >= TIMESTAMPTZ '{a}' AND {col} < TIMESTAMPTZ '{b}'"
        ));
    }
    if let Some(a) = &r.account_id {
        and(Reference::new("account_id").equal_to(Datum::string(a)));
        wheres.push(format!("account_id = '{}'", a.replace('\'', "''")));
    }

    // Only the tables the read uses are planned (planning reads every manifest of a snapshot);
    // SQL names its tables, so any table whose name appears in it is.
    let used = |t: Table| match &r.sql {
        Some(sql) => sql.contains(t.name()),
        None => t == table || (r.join_alerts && t == Table::Alerts),
    };
    let db = duckdb::Connection::open_in_memory()?;
    for (t, table_ref) in Table::ALL.iter().zip(tables) {
        if !used(*t) {
            continue;
        }
        // --snapshot-id names a snapshot of the table read; the others are read as they are.
        let this_as_of = match as_of {
            AsOf::Snapshot(_) if *t != table => AsOf::Current,
            other => other,
        };
        let snapshot = snapshot_of(table_ref, this_as_of)?;
        if snapshot.is_none() && *t == table {
            if let AsOf::Time(ms) = as_of {
                bail!(
                    "{} has no snapshot at or before {} (its first commit is later)",
                    t.name(),
                    EventTime::from_micros(ms * 1000)
                );
            }
        }
        let filter = (*t == table && r.sql.is_none())
            .then(|| pruning.clone())
            .flatten();
        let files = plan(table_ref, snapshot, filter).await?;
        create_view(&db, table_ref, t.name(), &files)?;
    }

    let sql = match &r.sql {
        Some(sql) => sql.clone(),
        None => {
            let limit = if r.limit == 0 {
                String::new()
            } else {
                format!(" LIMIT {}", r.limit)
            };
            let filter = if wheres.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", wheres.join(" AND "))
            };
            if r.join_alerts {
                let filter = filter
                    .replace("account_id", "t.account_id")
                    .replace("event_time", "t.event_time");
                format!(
                    "SELECT a.alert_id, a.rule, a.severity, a.rules_version, a.detected_at, a.details, t.* \
                     FROM alerts a JOIN transactions t ON a.transaction_id = t.transaction_id{filter} \
                     ORDER BY t.event_time, a.rule{limit}"
                )
            } else {
                format!(
                    "SELECT * FROM {}{filter} ORDER BY {}{limit}",
                    table.name(),
                    time_column(table)
                )
            }
        }
    };
    Ok((db, sql))
}

/// `--older-than`: an age before now (`30s`, `15m`, `12h`, `7d`) or an RFC 3339 time; ms.
fn cutoff_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = EventTime::parse_rfc3339(text) {
        return Ok(t.as_micros() / 1000);
    }
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--older-than {text}: an age such as 30m, 12h or 7d, or an RFC 3339 time"),
    };
    let n: i64 = n
        .parse()
        .with_context(|| format!("--older-than {text}: an age such as 30m, 12h or 7d"))?;
    Ok(EventTime::now().as_micros() / 1000 - n * seconds * 1000)
}

/// The Iceberg type a user names.
fn parse_type(ty: &str) -> anyhow::Result<iceberg::spec::Type> {
    use iceberg::spec::{PrimitiveType as P, Type};
    let lower = ty.trim().to_ascii_lowercase();
    let p = match lower.as_str() {
        "string" | "varchar" | "text" => P::String,
        "int" | "integer" => P::Int,
        "long" | "bigint" => P::Long,
        "boolean" | "bool" => P::Boolean,
        "double" => P::Double,
        "date" => P::Date,
        "timestamptz" => P::Timestamptz,
        d if d.starts_with("decimal(") && d.ends_with(')') => {
            let (p, s) = d[8..d.len() - 1]
                .split_once(',')
                .with_context(|| format!("{ty}: expected decimal(P,S)"))?;
            P::Decimal {
                precision: p.trim().parse().with_context(|| format!("{ty}: precision"))?,
                scale: s.trim().parse().with_context(|| format!("{ty}: scale"))?,
            }
        }
        _ => bail!(
            "unknown type {ty}: one of string, int, long, boolean, double, date, timestamptz, decimal(P,S)"
        ),
    };
    Ok(Type::Primitive(p))
}

/// Schema evolution: one new optional column, committed through the catalog (a concurrent
/// commit by the pipeline makes iceberg-rust retry on the new base).
async fn add_column(
    catalog: &dyn iceberg::Catalog,
    table: &iceberg::table::Table,
    name: &str,
    ty: &str,
) -> anyhow::Result<()> {
    use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
    let ty = parse_type(ty)?;
    if table
        .metadata()
        .current_schema()
        .field_by_name(name)
        .is_some()
    {
        bail!("{} already has a column {name}", table.identifier());
    }
    let tx = Transaction::new(table);
    let tx = tx
        .update_schema()
        .add_column(AddColumn::optional(name, ty))
        .apply(tx)?;
    tx.commit(catalog)
        .await
        .with_context(|| format!("adding column {name} to {}", table.identifier()))?;
    Ok(())
}

/// Each table's snapshots as rows.
fn snapshots(
    tables: &[iceberg::table::Table],
    only: Option<Table>,
) -> anyhow::Result<Vec<RecordBatch>> {
    use arrow::array::{ArrayRef, Int64Builder, StringBuilder};
    use std::sync::Arc;
    let mut table = StringBuilder::new();
    let mut id = Int64Builder::new();
    let mut parent = Int64Builder::new();
    let mut time = StringBuilder::new();
    let mut operation = StringBuilder::new();
    let mut summary = StringBuilder::new();
    for (t, tr) in Table::ALL.iter().zip(tables) {
        if only.is_some_and(|o| o != *t) {
            continue;
        }
        let mut snaps: Vec<_> = tr.metadata().snapshots().collect();
        snaps.sort_by_key(|s| (s.timestamp_ms(), s.sequence_number()));
        for s in snaps {
            table.append_value(t.name());
            id.append_value(s.snapshot_id());
            parent.append_option(s.parent_snapshot_id());
            time.append_value(EventTime::from_micros(s.timestamp_ms() * 1000).to_string());
            operation.append_value(s.summary().operation.as_str());
            let props: std::collections::BTreeMap<_, _> =
                s.summary().additional_properties.iter().collect();
            summary.append_value(serde_json::to_string(&props)?);
        }
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("table", Arc::new(table.finish())),
        ("snapshot_id", Arc::new(id.finish())),
        ("parent_id", Arc::new(parent.finish())),
        ("committed_at", Arc::new(time.finish())),
        ("operation", Arc::new(operation.finish())),
        ("summary", Arc::new(summary.finish())),
    ];
    Ok(vec![RecordBatch::try_from_iter(columns)?])
}

/// DuckDB names UTC "UTC"; arrow's formatters (without the chrono-tz database) know offsets
/// only: the same instants, labelled "+00:00".
fn utc_as_offset(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use arrow::array::{ArrayRef, AsArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match f.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
                let ts = c
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_timezone("+00:00");
                fields.push(Field::new(
                    f.name(),
                    arrow::array::Array::data_type(&ts).clone(),
                    f.is_nullable(),
                ));
                columns.push(Arc::new(ts));
            }
            _ => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Prints `batches`: CSV and JSON as they come (a read of millions of rows is never held in
/// memory), a table once all are there (it sizes its columns to them).
fn print(batches: impl Iterator<Item = RecordBatch>, format: Format) -> anyhow::Result<()> {
    let mut batches = batches.map(|b| utc_as_offset(&b));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match format {
        Format::Table => {
            let batches = batches.collect::<anyhow::Result<Vec<_>>>()?;
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(&batches)?
            )?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("({rows} rows)");
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            batches.try_for_each(|b| Ok::<_, anyhow::Error>(w.write(&b?)?))?;
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            batches.try_for_each(|b| Ok::<_, anyhow::Error>(w.write(&b?)?))?;
            w.finish()?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
