//! `query` over tables made by the real pipeline (generator → broker → dataflow), each read
//! checked against a count computed independently: from the input records themselves, or from
//! the snapshot summaries iceberg-rust wrote at commit time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use e2e::{bin, brokers, create_topic, read_all, succeed, temp_file, unique_topic};
use model::{validate, Rules, Transaction};

struct Lake {
    warehouse: tempfile::TempDir,
    valid: Vec<Transaction>,
}

/// 200 000 generator records through the broker and `dataflow --until-caught-up`, committed
/// every 2 s of event time.
fn lake() -> &'static Lake {
    static LAKE: OnceLock<Lake> = OnceLock::new();
    LAKE.get_or_init(|| {
        let topic = unique_topic("e2e-query");
        create_topic(&topic, 4);
        create_topic(&format!("{topic}-alerts"), 1);
        create_topic(&format!("{topic}-dead"), 1);
        let (_dir, config) = temp_file(
            "generator.yaml",
            "accounts: 2000\ninvalid: {share: 0.02}\npatterns: {high_value: 0.01, night: 0.01, bursts: {share: 0.01}}\n",
        );
        let status = bin("generator")
            .args(["--brokers", brokers(), "--topic", &topic])
            .args(["--config", config.to_str().unwrap()])
            .args(["--seed", "9", "--count", "200000", "--rate", "0", "--progress", "0"])
            .status()
            .unwrap();
        assert!(status.success());
        let warehouse = tempfile::tempdir().unwrap();
        let out = bin("dataflow")
            .args(["--brokers", brokers(), "--input-topic", &topic])
            .args(["--alerts-topic", &format!("{topic}-alerts")])
            .args(["--dead-letter-topic", &format!("{topic}-dead")])
            .arg("--warehouse")
            .arg(warehouse.path())
            .args(["--until-caught-up", "--progress", "0", "-w", "2", "--commit-interval", "2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rules = Rules::default();
        let valid = read_all(&topic)
            .iter()
            .filter_map(|c| validate(&c.value, &rules).ok())
            .collect();
        Lake { warehouse, valid }
    })
}

/// `query ARGS --format json` on the lake: its rows, or its error message.
fn query(warehouse: &Path, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let out = bin("query")
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--format", "json"])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    Ok(v.as_array().unwrap().clone())
}

/// The embedded dataflow's first `count` records into `warehouse` (resuming after what is
/// there), with commits every 2 s of event time.
fn embedded_dataflow(warehouse: &Path, count: &str) {
    succeed(
        bin("dataflow")
            .arg("--warehouse")
            .arg(warehouse)
            .args([
                "--rate",
                "0",
                "--count",
                count,
                "--until-caught-up",
                "--quiet",
            ])
            .args(["--progress", "0", "-w", "2", "--commit-interval", "2"]),
    );
}

/// Four embedded runs into `warehouse`, each resuming where the last stopped: the snapshots
/// of `transactions`, at least four. (A run catching up may cover several commit intervals
/// with one snapshot, so how many one run makes depends on how busy the machine is; each run
/// makes at least one.)
fn resumed_runs(warehouse: &Path) -> Vec<serde_json::Value> {
    for count in ["10000", "20000", "30000", "40000"] {
        embedded_dataflow(warehouse, count);
    }
    let snaps = query(warehouse, &["snapshots", "--table", "transactions"]).unwrap();
    assert!(snaps.len() >= 4, "{} snapshots", snaps.len());
    snaps
}

fn count(warehouse: &Path, args: &[&str]) -> usize {
    query(warehouse, &[args, &["--limit", "0"]].concat())
        .unwrap()
        .len()
}

#[test]
fn reads_and_their_filters_match_the_input() {
    let lake = lake();
    let wh = lake.warehouse.path();
    assert_eq!(count(wh, &["--table", "transactions"]), lake.valid.len());

    // One account, one day, both.
    let account = lake.valid[17].account_id.to_string();
    let of_account = lake
        .valid
        .iter()
        .filter(|t| t.account_id.to_string() == account)
        .count();
    assert!(of_account > 1);
    assert_eq!(count(wh, &["--account-id", &account]), of_account);
    let mut by_day: BTreeMap<String, usize> = BTreeMap::new();
    for t in &lake.valid {
        *by_day
            .entry(t.event_time.to_string()[..10].to_owned())
            .or_default() += 1;
    }
    for (day, n) in &by_day {
        assert_eq!(count(wh, &["--date-range", day, day]), *n, "{day}");
        let of_both = lake
            .valid
            .iter()
            .filter(|t| {
                t.account_id.to_string() == account
                    && t.event_time.to_string().starts_with(day.as_str())
            })
            .count();
        assert_eq!(
            count(wh, &["--date-range", day, day, "--account-id", &account]),
            of_both
        );
    }
    assert_eq!(count(wh, &["--date-range", "2001-01-01", "2001-01-31"]), 0);

    // --limit, and the row's values.
    let rows = query(wh, &["--account-id", &account, "--limit", "1"]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["account_id"], account.as_str());

    // Alerts joined to their transactions: every alert has its transaction.
    let alerts = count(wh, &["--table", "alerts"]);
    assert!(alerts > 100);
    assert_eq!(count(wh, &["--join-alerts"]), alerts);
    let joined = query(
        wh,
        &["--join-alerts", "--account-id", &account, "--limit", "0"],
    )
    .unwrap();
    assert!(joined
        .iter()
        .all(|r| r["account_id"] == account.as_str() && r["rule"].is_string()));

    // SQL over the views.
    let rows = query(
        wh,
        &[
            "--sql",
            "SELECT count(*) AS n FROM transactions WHERE NOT late",
        ],
    )
    .unwrap();
    let on_time = rows[0]["n"].as_u64().unwrap() as usize;
    assert!(on_time > 0 && on_time <= lake.valid.len());
}

#[test]
fn time_travel_returns_what_each_snapshot_held() {
    let warehouse = tempfile::tempdir().unwrap();
    let wh = warehouse.path();
    let snaps = resumed_runs(wh);
    let totals: Vec<usize> = snaps
        .iter()
        .map(|s| {
            let summary: serde_json::Value =
                serde_json::from_str(s["summary"].as_str().unwrap()).unwrap();
            summary["total-records"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        totals.windows(2).all(|w| w[0] < w[1]),
        "each snapshot adds rows: {totals:?}"
    );
    for i in [0, snaps.len() / 2, snaps.len() - 1] {
        let s = &snaps[i];
        let id = s["snapshot_id"].to_string();
        assert_eq!(
            count(wh, &["--snapshot-id", &id]),
            totals[i],
            "snapshot {id}"
        );
        // As of the snapshot's commit time: the table then (a later snapshot may share the
        // millisecond, so at least as many rows).
        let at = s["committed_at"].as_str().unwrap();
        assert!(count(wh, &["--as-of-timestamp", at]) >= totals[i]);
    }
    let err = query(wh, &["--as-of-timestamp", "2001-01-01T00:00:00Z"]).unwrap_err();
    assert!(err.contains("no snapshot at or before"), "{err}");
}

#[test]
fn errors_a_user_can_act_on() {
    let wh = lake().warehouse.path();
    let err = query(wh, &["--table", "payments"]).unwrap_err();
    assert!(err.contains("unknown table payments"), "{err}");
    let err = query(wh, &["--sql", "SELEC 1"]).unwrap_err();
    assert!(err.contains("syntax error"), "{err}");
    let err = query(wh, &["--snapshot-id", "42"]).unwrap_err();
    assert!(err.contains("has no snapshot 42"), "{err}");
}

const ADD_NOTE: &[&str] = &[
    "add-column",
    "--table",
    "transactions",
    "review_note",
    "string",
];

#[test]
fn add_column_keeps_old_rows_and_the_pipeline_writing() {
    let warehouse = tempfile::tempdir().unwrap();
    let wh = warehouse.path();
    embedded_dataflow(wh, "20000");
    let before = count(wh, &[]);
    maintain(wh, ADD_NOTE);
    let err = query(wh, ADD_NOTE).unwrap_err();
    assert!(err.contains("already has a column review_note"), "{err}");

    // The same stream, further: the run resumes after the first 20 000 and commits the rest.
    embedded_dataflow(wh, "40000");
    let after = count(wh, &[]);
    assert!(after > before, "the pipeline committed after the change");
    let rows = query(
        wh,
        &[
            "--sql",
            "SELECT count(*) AS n, count(review_note) AS noted FROM transactions",
        ],
    )
    .unwrap();
    assert_eq!(rows[0]["n"].as_u64().unwrap() as usize, after);
    assert_eq!(
        rows[0]["noted"], 0,
        "old and new rows read the new column as NULL"
    );
}

#[test]
fn expire_snapshots_keeps_the_current_rows_and_drops_old_snapshots() {
    let warehouse = tempfile::tempdir().unwrap();
    let wh = warehouse.path();
    let snaps = resumed_runs(wh);
    let oldest = snaps[0]["snapshot_id"].to_string();
    let rows = count(wh, &[]);
    // The manifest lists (one per snapshot) on disk.
    let lists = || {
        std::fs::read_dir(wh.join("finance/transactions/metadata"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snap-")
            })
            .count()
    };
    assert_eq!(lists(), snaps.len());

    let stderr = maintain(
        wh,
        &[
            "expire-snapshots",
            "--older-than",
            "0s",
            "--retain-last",
            "2",
        ],
    );
    assert!(
        stderr.contains("transactions:") && stderr.contains("snapshots expired"),
        "{stderr}"
    );

    assert_eq!(
        query(wh, &["snapshots", "--table", "transactions"])
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        count(wh, &[]),
        rows,
        "the current snapshot's rows are all there"
    );
    let err = query(wh, &["--snapshot-id", &oldest]).unwrap_err();
    assert!(err.contains("has no snapshot"), "{err}");
    assert_eq!(
        lists(),
        2,
        "the expired snapshots' manifest lists are deleted"
    );
}

/// `query ARGS` on `warehouse`, which must succeed; its stderr.
fn maintain(warehouse: &Path, args: &[&str]) -> String {
    let out = succeed(bin("query").arg("--warehouse").arg(warehouse).args(args));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The current snapshot's summary value `key` of `table`; for `finstream.offsets`, the
/// position recorded for whichever input topic.
fn current_summary(warehouse: &Path, table: &str, key: &str) -> String {
    let snaps = query(warehouse, &["snapshots", "--table", table]).unwrap();
    let summary: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(snaps.last().unwrap()["summary"].as_str().unwrap()).unwrap();
    summary
        .iter()
        .find(|(k, _)| k.starts_with(key))
        .map(|(_, v)| v.as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Every row of `table`, in a stable order, as JSON values.
fn all_rows(warehouse: &Path, table: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let order = match table {
        "alerts" => "alert_id",
        "dead_letters" => "source_partition, source_offset",
        _ => "kafka_partition, kafka_offset",
    };
    let sql = format!("SELECT * FROM {table} ORDER BY {order}");
    query(warehouse, &[&["--sql", sql.as_str()], extra].concat()).unwrap()
}

#[test]
fn compact_keeps_every_row_in_fewer_files_and_old_snapshots_readable() {
    let warehouse = tempfile::tempdir().unwrap();
    let wh = warehouse.path();
    embedded_dataflow(wh, "30000");
    let tables = ["transactions", "alerts", "dead_letters"];
    let before: Vec<_> = tables.iter().map(|t| all_rows(wh, t, &[])).collect();
    let files: Vec<u64> = tables
        .iter()
        .map(|t| current_summary(wh, t, "total-data-files").parse().unwrap())
        .collect();
    let offsets = current_summary(wh, "transactions", "finstream.offsets.");
    let old = query(wh, &["snapshots", "--table", "transactions"]).unwrap();
    let old = old.last().unwrap()["snapshot_id"].to_string();

    let stderr = maintain(wh, &["compact"]);
    for (i, t) in tables.iter().enumerate() {
        assert!(
            stderr.contains(&format!("{t}: {} files", files[i])),
            "{stderr}"
        );
        assert_eq!(all_rows(wh, t, &[]), before[i], "{t} reads the same rows");
        let now: u64 = current_summary(wh, t, "total-data-files").parse().unwrap();
        assert!(
            now < files[i] && now >= 1,
            "{t}: {} files became {now}",
            files[i]
        );
        let snaps = query(wh, &["snapshots", "--table", t]).unwrap();
        assert_eq!(snaps.last().unwrap()["operation"], "replace");
    }
    assert!(
        !offsets.is_empty(),
        "the commits record the generator's offsets"
    );
    assert_eq!(
        current_summary(wh, "transactions", "finstream.offsets."),
        offsets,
        "compaction carries the offsets forward"
    );
    // Time travel to before the rewrite reads the old files.
    assert_eq!(
        all_rows(wh, "transactions", &["--snapshot-id", &old]),
        before[0]
    );
    // A second compaction finds nothing to merge.
    assert!(maintain(wh, &["compact"]).contains("transactions: nothing to compact"));
    // And the pipeline resumes after the compacted offsets: nothing twice.
    embedded_dataflow(wh, "40000");
    let n = query(
        wh,
        &[
            "--sql",
            "SELECT count(*) AS n, count(DISTINCT transaction_id) AS ids FROM transactions",
        ],
    )
    .unwrap();
    assert_eq!(n[0]["n"], n[0]["ids"]);
    assert!(n[0]["n"].as_u64().unwrap() as usize > before[0].len());
}

#[test]
fn maintenance_while_the_pipeline_commits_loses_nothing() {
    let (running, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The same stream into two warehouses: one left alone, one compacted and expired again and
    // again while the dataflow commits into it (paced so that it runs for ten seconds).
    let mut dataflow = bin("dataflow")
        .arg("--warehouse")
        .arg(running.path())
        .args([
            "--rate",
            "20000",
            "--count",
            "200000",
            "--until-caught-up",
            "--quiet",
        ])
        .args(["--progress", "0", "-w", "2", "--commit-interval", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a full pipe would stop the dataflow, and this loop with it.
    let stderr = dataflow.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut compactions = 0;
    while dataflow.try_wait().unwrap().is_none() {
        let stderr = maintain(running.path(), &["compact", "--table", "transactions"]);
        compactions += stderr.matches("rewritten into").count();
        maintain(
            running.path(),
            &[
                "expire-snapshots",
                "--older-than",
                "0s",
                "--retain-last",
                "1",
            ],
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let status = dataflow.wait().unwrap();
    assert!(status.success(), "{}", stderr.join().unwrap());
    assert!(
        compactions >= 2,
        "only {compactions} compactions ran during the pipeline"
    );
    embedded_dataflow(reference.path(), "200000");

    let sql = "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS offsets, \
               CAST(sum(amount) AS VARCHAR) AS amount FROM transactions";
    let got = query(running.path(), &["--sql", sql]).unwrap();
    let want = query(reference.path(), &["--sql", sql]).unwrap();
    assert_eq!(got, want);
    assert_eq!(got[0]["n"], got[0]["offsets"]);
    for table in ["alerts", "dead_letters"] {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        assert_eq!(
            query(running.path(), &["--sql", &sql]).unwrap(),
            query(reference.path(), &["--sql", &sql]).unwrap(),
            "{table}"
        );
    }
}
