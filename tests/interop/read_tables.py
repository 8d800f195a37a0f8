"""Reads the pipeline's tables with other engines, for the interop test (tests/tests/lakehouse.rs).

pyiceberg opens the same SQL catalog (the SQLite file, catalog name "lakehouse") and scans each
table's current snapshot; DuckDB reads exactly the Parquet files pyiceberg plans for that
snapshot. Prints one JSON object: per table and engine, the row count and a few aggregates the
test compares with the input it generated.

usage: python3 read_tables.py <catalog.db> <warehouse>
"""

import json
import sys

import duckdb
from pyiceberg.catalog.sql import SqlCatalog


def main() -> None:
    db, warehouse = sys.argv[1], sys.argv[2]
    catalog = SqlCatalog("lakehouse", uri=f"sqlite:///{db}", warehouse=f"file://{warehouse}")
    out = {}
    con = duckdb.connect()
    for name in ("transactions", "alerts", "dead_letters"):
        table = catalog.load_table(("finance", name))
        arrow = table.scan().to_arrow()
        files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
        entry = {"pyiceberg_rows": arrow.num_rows, "files": len(files)}
        if files:
            rel = con.read_parquet(files)
            entry["duckdb_rows"] = rel.count("*").fetchone()[0]
        else:
            entry["duckdb_rows"] = 0
        if name == "transactions":
            entry["pyiceberg_amount_sum"] = str(sum(v for v in arrow.column("amount").to_pylist()))
            entry["pyiceberg_distinct_offsets"] = len(
                set(zip(arrow.column("kafka_partition").to_pylist(), arrow.column("kafka_offset").to_pylist()))
            )
            if files:
                entry["duckdb_amount_sum"] = str(
                    con.sql(f"SELECT sum(amount) FROM read_parquet({files!r})").fetchone()[0]
                )
        if name == "alerts":
            entry["pyiceberg_distinct_ids"] = len(set(arrow.column("alert_id").to_pylist()))
        out[name] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main()
