//! The catalog: the embedded SQL catalog on SQLite (the default, no server) or an Iceberg REST
//! catalog, with namespace `finance` and its three tables created when absent.
//!
//! Locations are absolute so that other engines opening the same catalog (pyiceberg's
//! `SqlCatalog("lakehouse", uri="sqlite:///<warehouse>/catalog.db")`, Spark, DuckDB) find the
//! files whatever their working directory. Storage is the local file system: iceberg-rust 0.10.1
//! has no object-store I/O built in, so only a REST catalog may name another warehouse (the
//! server then decides where tables live).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{FormatVersion, Snapshot, SnapshotReference, SnapshotRetention, MAIN_BRANCH};
use iceberg::{
    Catalog, CatalogBuilder, MetadataLocation, NamespaceIdent, TableCreation, TableIdent,
    TableRequirement, TableUpdate,
};
use iceberg_catalog_rest::{
    CommitTableRequest, RestCatalogBuilder, REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE,
};
use iceberg_catalog_sql::{
    SqlBindStyle, SqlCatalogBuilder, SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI,
    SQL_CATALOG_PROP_WAREHOUSE,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection as _;

use crate::schema::{Table, NAMESPACE};

/// Where the catalog and the warehouse are: the common flags `--catalog-uri`,
/// `--catalog-name` and `--warehouse`.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    /// `sqlite://PATH` or `sqlite:PATH` (the SQL catalog), `http(s)://…` (REST); `None` means
    /// `sqlite://<warehouse>/catalog.db`.
    pub uri: Option<String>,
    /// The catalog's name: the SQL catalog keys its rows by it, so other engines must use the
    /// same one to see the tables.
    pub name: String,
    /// A path or `file://…`; any other URI is passed to a REST catalog as is.
    pub warehouse: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            uri: None,
            name: "lakehouse".into(),
            warehouse: "./warehouse".into(),
        }
    }
}

/// Which catalog a [`CatalogConfig`] names, with its warehouse made absolute.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// The SQL catalog on SQLite; `database` is the sqlx connection string.
    Sql {
        database: String,
        warehouse: String,
    },
    Rest {
        uri: String,
        warehouse: String,
    },
}

/// A local warehouse: the absolute directory (created if absent) and the location to give
/// the catalog, which keeps the `file://` form when the user wrote it.
struct LocalWarehouse {
    dir: String,
    location: String,
}

/// `Some` when `warehouse` is on the local file system.
fn local_warehouse(warehouse: &str) -> anyhow::Result<Option<LocalWarehouse>> {
    let (path, scheme) = match warehouse.strip_prefix("file://") {
        Some(path) => (path, "file://"),
        None if warehouse.contains("://") => return Ok(None),
        None => (warehouse, ""),
    };
    std::fs::create_dir_all(path)
        .with_context(|| format!("creating the warehouse directory {path}"))?;
    let dir = std::fs::canonicalize(path)
        .with_context(|| format!("resolving the warehouse directory {path}"))?;
    let dir = dir
        .to_str()
        .with_context(|| format!("the warehouse directory {} is not UTF-8", dir.display()))?
        .to_owned();
    Ok(Some(LocalWarehouse {
        location: format!("{scheme}{dir}"),
        dir,
    }))
}

/// The sqlx connection string of a `sqlite:` URI: `mode=rwc` creates the database on first
/// use (sqlx would refuse a missing file); the database's directory is created too.
fn sqlite_database(uri: &str) -> anyhow::Result<String> {
    let rest = uri
        .strip_prefix("sqlite://")
        .or_else(|| uri.strip_prefix("sqlite:"))
        .with_context(|| format!("{uri} is not a sqlite: URI"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        bail!("catalog URI {uri}: no database path");
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of the catalog database {path}"))?;
    }
    let query = if query.split('&').any(|kv| kv.starts_with("mode=")) {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite:{path}?{query}"))
}

fn resolve(config: &CatalogConfig) -> anyhow::Result<Resolved> {
    let local = local_warehouse(&config.warehouse)?;
    let uri = match (&config.uri, &local) {
        (Some(uri), _) => uri.clone(),
        (None, Some(local)) => format!("sqlite://{}/catalog.db", local.dir),
        (None, None) => bail!(
            "warehouse {} is not a local directory: give a REST catalog URI (--catalog-uri)",
            config.warehouse
        ),
    };
    let warehouse = local.map_or_else(|| config.warehouse.clone(), |l| l.location);
    if uri.starts_with("http://") || uri.starts_with("https://") {
        Ok(Resolved::Rest { uri, warehouse })
    } else if uri.starts_with("sqlite:") {
        if warehouse.contains("://") && !warehouse.starts_with("file://") {
            bail!(
                "warehouse {warehouse}: the SQL catalog needs a local warehouse (this build \
                 has local file storage only)"
            );
        }
        Ok(Resolved::Sql {
            database: sqlite_database(&uri)?,
            warehouse,
        })
    } else {
        bail!("catalog URI {uri}: expected sqlite:PATH, sqlite://PATH or http(s)://…")
    }
}

/// Opens the catalog and makes sure namespace `finance` and the three tables exist.
pub async fn open(config: &CatalogConfig) -> anyhow::Result<Arc<dyn Catalog>> {
    let catalog: Arc<dyn Catalog> = match resolve(config)? {
        Resolved::Rest { uri, warehouse } => {
            let props = HashMap::from([
                (REST_CATALOG_PROP_URI.to_owned(), uri.clone()),
                (REST_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse),
            ]);
            Arc::new(
                RestCatalogBuilder::default()
                    .with_storage_factory(Arc::new(LocalFsStorageFactory))
                    .load(&config.name, props)
                    .await
                    .with_context(|| format!("connecting to the REST catalog at {uri}"))?,
            )
        }
        Resolved::Sql {
            database,
            warehouse,
        } => {
            let props = HashMap::from([
                (SQL_CATALOG_PROP_URI.to_owned(), database.clone()),
                (SQL_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse),
                // sqlx's SQLite driver takes `?` placeholders, not `$1`.
                (
                    SQL_CATALOG_PROP_BIND_STYLE.to_owned(),
                    SqlBindStyle::QMark.to_string(),
                ),
            ]);
            Arc::new(
                SqlCatalogBuilder::default()
                    .with_storage_factory(Arc::new(LocalFsStorageFactory))
                    .load(&config.name, props)
                    .await
                    .with_context(|| format!("opening the SQL catalog {database}"))?,
            )
        }
    };
    create_tables(catalog.as_ref()).await?;
    Ok(catalog)
}

/// Creates namespace `finance` and the tables that are absent. Another process may create
/// them at the same moment, and the catalogs report that differently (the SQL catalog as a
/// database constraint error): whatever the error, a table that exists afterwards is success.
async fn create_tables(catalog: &dyn Catalog) -> anyhow::Result<()> {
    let namespace = NamespaceIdent::new(NAMESPACE.to_owned());
    if !catalog.namespace_exists(&namespace).await? {
        if let Err(e) = catalog.create_namespace(&namespace, HashMap::new()).await {
            if !catalog.namespace_exists(&namespace).await? {
                return Err(e).context("creating namespace finance");
            }
        }
    }
    for table in Table::ALL {
        let ident = TableIdent::new(namespace.clone(), table.name().to_owned());
        if catalog.table_exists(&ident).await? {
            continue;
        }
        // `format-version` is a reserved property in iceberg-rust (refused in the map): it is
        // the creation's own field. The codec is what the writers use (they set it themselves,
        // see `writer`), recorded for other engines that write to the table.
        let creation = TableCreation::builder()
            .name(table.name().to_owned())
            .schema(table.schema())
            .partition_spec(table.partition_spec())
            .format_version(FormatVersion::V2)
            .properties([(
                "write.parquet.compression-codec".to_owned(),
                "zstd".to_owned(),
            )])
            .build();
        if let Err(e) = catalog.create_table(&namespace, creation).await {
            if !catalog.table_exists(&ident).await? {
                return Err(e).with_context(|| format!("creating table finance.{}", table.name()));
            }
        }
    }
    Ok(())
}

/// The SQL catalog's write lock (`BEGIN IMMEDIATE` on its database), taken before a snapshot
/// iceberg-rust has no action for is built, and released by [`swap`]. The running pipeline's
/// commits wait for it (the time to build a manifest: milliseconds) instead of racing it, so
/// frequent commits cannot starve a compaction. [`CommitLock::none`] commits optimistically, as
/// with a REST catalog, which has no such lock.
pub struct CommitLock {
    db: Option<SqliteConnection>,
}

impl CommitLock {
    /// Takes the lock of `config`'s catalog; for a REST catalog, no lock.
    pub async fn take(config: &CatalogConfig) -> anyhow::Result<CommitLock> {
        let Resolved::Sql { database, .. } = resolve(config)? else {
            return Ok(CommitLock::none());
        };
        let mut db = connect(&database).await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut db)
            .await
            .with_context(|| format!("taking the write lock of the SQL catalog {database}"))?;
        Ok(CommitLock { db: Some(db) })
    }

    /// No lock: a commit fails, and is built again, if another came first.
    pub fn none() -> CommitLock {
        CommitLock { db: None }
    }
}

/// A connection to the SQL catalog's database that waits for a commit of the running pipeline
/// rather than failing at once.
async fn connect(database: &str) -> anyhow::Result<SqliteConnection> {
    let options = SqliteConnectOptions::from_str(database)?.busy_timeout(Duration::from_secs(30));
    SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the SQL catalog {database}"))
}

/// Commits `snapshot` as the new head of `table`'s main branch if, and only if, the branch is
/// still where it was when `table` was loaded: for snapshots iceberg-rust has no action for (a
/// `replace`, see [`crate::compact`]). False when another commit came first: reload and build
/// again on the new base.
///
/// With the SQL catalog, the new metadata is written beside the old and swapped in by a
/// compare-and-swap on the catalog's row, as iceberg-rust's SQL catalog does for its own
/// commits. With a REST catalog, it is the commit request iceberg-rust's actions send: the
/// snapshot as updates, with the table's uuid and the branch's snapshot as requirements.
pub async fn swap(
    config: &CatalogConfig,
    lock: CommitLock,
    table: &iceberg::table::Table,
    snapshot: Snapshot,
) -> anyhow::Result<bool> {
    match resolve(config)? {
        Resolved::Sql { database, .. } => {
            let (db, locked) = match lock.db {
                Some(db) => (db, true),
                None => (connect(&database).await?, false),
            };
            swap_sql(&config.name, db, locked, table, snapshot).await
        }
        Resolved::Rest { uri, warehouse } => commit_rest(&uri, &warehouse, table, snapshot).await,
    }
}

/// The swap on `db`, which holds the write lock if `locked` (then released: committed or
/// rolled back).
async fn swap_sql(
    catalog_name: &str,
    mut db: SqliteConnection,
    locked: bool,
    table: &iceberg::table::Table,
    snapshot: Snapshot,
) -> anyhow::Result<bool> {
    let ident = table.identifier();
    let current = table
        .metadata_location()
        .with_context(|| format!("{ident} has no metadata location"))?;
    let metadata = table
        .metadata()
        .clone()
        .into_builder(Some(current.to_owned()))
        .set_branch_snapshot(snapshot, MAIN_BRANCH)?
        .build()?
        .metadata;
    let next = MetadataLocation::from_str(current)?
        .with_next_version()
        .with_new_metadata(&metadata);
    metadata
        .write_to(table.file_io(), &next)
        .await
        .with_context(|| format!("writing {next}"))?;
    let next = next.to_string();
    let swapped = sqlx::query(
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
           AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
    )
    .bind(&next)
    .bind(current)
    .bind(catalog_name)
    .bind(ident.namespace().join("."))
    .bind(ident.name())
    .bind(current)
    .execute(&mut db)
    .await
    .with_context(|| format!("committing {ident} in the SQL catalog"))?;
    let done = swapped.rows_affected() == 1;
    if locked {
        sqlx::query(if done { "COMMIT" } else { "ROLLBACK" })
            .execute(&mut db)
            .await
            .with_context(|| format!("committing {ident} in the SQL catalog"))?;
    }
    if !done {
        // Ours lost: its metadata file is referenced by nothing.
        let _ = table.file_io().delete(&next).await;
    }
    Ok(done)
}

async fn commit_rest(
    uri: &str,
    warehouse: &str,
    table: &iceberg::table::Table,
    snapshot: Snapshot,
) -> anyhow::Result<bool> {
    let ident = table.identifier();
    let client = reqwest::Client::new();
    let base = uri.trim_end_matches('/');
    let config: serde_json::Value = client
        .get(format!("{base}/v1/config"))
        .query(&[("warehouse", warehouse)])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("reading the REST catalog's configuration at {base}"))?
        .json()
        .await?;
    let prefix = ["overrides", "defaults"]
        .iter()
        .find_map(|k| config[k]["prefix"].as_str())
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    let url = format!(
        "{base}/v1{prefix}/namespaces/{}/tables/{}",
        ident.namespace().to_url_string(),
        ident.name()
    );
    let id = snapshot.snapshot_id();
    let request = CommitTableRequest {
        identifier: Some(ident.clone()),
        requirements: vec![
            TableRequirement::UuidMatch {
                uuid: table.metadata().uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_owned(),
                snapshot_id: table.metadata().current_snapshot_id(),
            },
        ],
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_owned(),
                reference: SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
            },
        ],
    };
    let response = client
        .post(&url)
        .json(&request)
        .send()
        .await
        .with_context(|| format!("committing {ident} to the REST catalog at {url}"))?;
    match response.status() {
        s if s.is_success() => Ok(true),
        reqwest::StatusCode::CONFLICT => Ok(false),
        s => bail!(
            "the REST catalog refused the commit of {ident} ({s}): {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

/// Loads one of the tables (its current metadata: schema, partition spec, snapshots).
pub async fn load(catalog: &dyn Catalog, table: Table) -> anyhow::Result<iceberg::table::Table> {
    let ident = TableIdent::new(
        NamespaceIdent::new(NAMESPACE.to_owned()),
        table.name().to_owned(),
    );
    catalog
        .load_table(&ident)
        .await
        .with_context(|| format!("loading table finance.{}", table.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(warehouse: &Path) -> CatalogConfig {
        CatalogConfig {
            warehouse: warehouse.display().to_string(),
            ..CatalogConfig::default()
        }
    }

    #[test]
    fn the_default_is_sqlite_in_an_absolute_warehouse_created_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let abs = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        let defaults = CatalogConfig::default();
        assert_eq!((defaults.uri, defaults.name.as_str()), (None, "lakehouse"));
        assert_eq!(defaults.warehouse, "./warehouse");

        let resolved = resolve(&config(&dir.path().join("wh"))).unwrap();
        assert!(dir.path().join("wh").is_dir());
        assert_eq!(
            resolved,
            Resolved::Sql {
                database: format!("sqlite:{abs}/wh/catalog.db?mode=rwc"),
                warehouse: format!("{abs}/wh"),
            }
        );
        let file_uri = CatalogConfig {
            warehouse: format!("file://{}", dir.path().display()),
            ..CatalogConfig::default()
        };
        assert_eq!(
            resolve(&file_uri).unwrap(),
            Resolved::Sql {
                database: format!("sqlite:{abs}/catalog.db?mode=rwc"),
                warehouse: format!("file://{abs}"),
            }
        );
    }

    #[test]
    fn uris_choose_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let abs = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        let with = |uri: &str, warehouse: &str| CatalogConfig {
            uri: Some(uri.to_owned()),
            name: "lakehouse".into(),
            warehouse: warehouse.to_owned(),
        };
        let local = dir.path().display().to_string();
        assert_eq!(
            resolve(&with(
                &format!("sqlite:{local}/x/c.db?cache=shared"),
                &local
            ))
            .unwrap(),
            Resolved::Sql {
                database: format!("sqlite:{local}/x/c.db?cache=shared&mode=rwc"),
                warehouse: abs.clone(),
            }
        );
        assert_eq!(
            resolve(&with("https://rest:8181", "s3://bucket/wh")).unwrap(),
            Resolved::Rest {
                uri: "https://rest:8181".into(),
                warehouse: "s3://bucket/wh".into(),
            }
        );
        assert_eq!(
            resolve(&with("http://localhost:8181", &local)).unwrap(),
            Resolved::Rest {
                uri: "http://localhost:8181".into(),
                warehouse: abs,
            }
        );
        assert!(resolve(&with("sqlite:/tmp/c.db", "s3://bucket/wh")).is_err());
        assert!(resolve(&with("postgres://db", &local)).is_err());
        assert!(resolve(&with("sqlite:", &local)).is_err());
        let no_uri = CatalogConfig {
            warehouse: "s3://bucket/wh".into(),
            ..CatalogConfig::default()
        };
        assert!(resolve(&no_uri).is_err());
    }

    #[tokio::test]
    async fn open_creates_the_tables_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let abs = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        for _ in 0..2 {
            let catalog = open(&config(dir.path())).await.unwrap();
            for t in Table::ALL {
                let table = load(catalog.as_ref(), t).await.unwrap();
                let m = table.metadata();
                assert_eq!(m.format_version(), FormatVersion::V2);
                assert_eq!(m.current_schema().as_ref(), &t.schema(), "{}", t.name());
                assert_eq!(
                    m.default_partition_spec().fields(),
                    t.partition_spec().fields()
                );
                assert_eq!(
                    m.properties()
                        .get("write.parquet.compression-codec")
                        .map(String::as_str),
                    Some("zstd")
                );
                assert_eq!(m.location(), format!("{abs}/{NAMESPACE}/{}", t.name()));
                assert!(m.current_snapshot().is_none());
            }
        }
        assert!(dir.path().join("catalog.db").is_file());
    }

    /// Several processes starting at once on a fresh warehouse: every one succeeds (each
    /// open is its own catalog, with its own connections, as a process would have).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_opens_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let opens = (0..4).map(|_| {
            let cfg = cfg.clone();
            tokio::spawn(async move { open(&cfg).await.map(|_| ()) })
        });
        for handle in opens.collect::<Vec<_>>() {
            handle.await.unwrap().unwrap();
        }
        let catalog = open(&cfg).await.unwrap();
        let names = catalog
            .list_tables(&NamespaceIdent::new(NAMESPACE.to_owned()))
            .await
            .unwrap();
        assert_eq!(names.len(), 3);
    }
}
