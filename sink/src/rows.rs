//! The tables' rows as Arrow record batches, built a row at a time from the model's types, with
//! exactly the Arrow schema iceberg-rust derives from the Iceberg schema (field ids in the
//! fields' metadata, which is how its Parquet writer maps columns to Iceberg fields).
//!
//! These run once per record at the pipeline's full rate, so a row costs appends to Arrow's
//! builders and nothing else: ids are formatted into stack buffers, an alert's details are
//! serialized into a reused buffer.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Decimal128Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use model::{AccountId, Alert, DeadLetter, EventTime, PayloadEncoding, Transaction};
use uuid::Uuid;

use crate::schema::Table;

/// The Arrow schema of `table`'s rows, converted once.
pub fn arrow_schema(table: Table) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        Table::ALL.map(|t| {
            Arc::new(
                iceberg::arrow::schema_to_arrow_schema(&t.schema())
                    .expect("the tables' fixed schemas convert to Arrow (a unit test checks)"),
            )
        })
    });
    let i = match table {
        Table::Transactions => 0,
        Table::Alerts => 1,
        Table::DeadLetters => 2,
    };
    all[i].clone()
}

/// `decimal(18,2)`: the unscaled value is the amount in cents.
fn decimal() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_precision_and_scale(18, 2)
        .expect("decimal(18,2) is a valid decimal type")
}

/// `timestamptz`: UTC microseconds, with the time zone iceberg-rust's schema carries.
fn timestamp() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone(iceberg::arrow::UTC_TIME_ZONE)
}

/// The batch of `table` from its columns, in schema order. The builders are this module's own
/// and follow the schemas column by column (the unit tests build every table), so a mismatch is
/// a bug here, never an effect of input.
fn batch(table: Table, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(arrow_schema(table), columns)
        .expect("the builders follow the table's schema")
}

/// Appends a UUID in canonical lower-case form.
fn append_uuid(b: &mut StringBuilder, id: Uuid) {
    b.append_value(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
}

/// Appends `ACC` and the account's seven digits.
fn append_account(b: &mut StringBuilder, account: AccountId) {
    let mut text = *b"ACC0000000";
    let mut n = account.number();
    for digit in text[3..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits were written.
    b.append_value(std::str::from_utf8(&text).unwrap_or_default());
}

/// Rows of `transactions`.
pub struct TransactionRows {
    transaction_id: StringBuilder,
    account_id: StringBuilder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    merchant_id: StringBuilder,
    merchant_category: StringBuilder,
    transaction_type: StringBuilder,
    channel: StringBuilder,
    country: StringBuilder,
    city: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    late: BooleanBuilder,
    ingested_at: TimestampMicrosecondBuilder,
}

impl Default for TransactionRows {
    fn default() -> Self {
        TransactionRows {
            transaction_id: StringBuilder::new(),
            account_id: StringBuilder::new(),
            amount: decimal(),
            currency: StringBuilder::new(),
            merchant_id: StringBuilder::new(),
            merchant_category: StringBuilder::new(),
            transaction_type: StringBuilder::new(),
            channel: StringBuilder::new(),
            country: StringBuilder::new(),
            city: StringBuilder::new(),
            event_time: timestamp(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            late: BooleanBuilder::new(),
            ingested_at: timestamp(),
        }
    }
}

impl TransactionRows {
    /// Appends `t`, read at `offset` of Kafka partition `partition`, written at `ingested_at`.
    pub fn push(
        &mut self,
        t: &Transaction,
        partition: i32,
        offset: i64,
        late: bool,
        ingested_at: EventTime,
    ) {
        append_uuid(&mut self.transaction_id, t.transaction_id);
        append_account(&mut self.account_id, t.account_id);
        self.amount.append_value(i128::from(t.amount.cents()));
        self.currency.append_value(t.currency.as_str());
        self.merchant_id.append_value(&t.merchant_id);
        self.merchant_category
            .append_option(t.merchant_category_str());
        self.transaction_type
            .append_value(t.transaction_type.as_str());
        self.channel.append_value(t.channel.as_str());
        self.country.append_option(t.country_str());
        self.city.append_option(t.city.as_deref());
        self.event_time.append_value(t.event_time.as_micros());
        self.kafka_partition.append_value(partition);
        self.kafka_offset.append_value(offset);
        self.late.append_value(late);
        self.ingested_at.append_value(ingested_at.as_micros());
    }

    pub fn len(&self) -> usize {
        self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows so far as a batch; the builder starts again empty.
    pub fn finish(&mut self) -> RecordBatch {
        batch(
            Table::Transactions,
            vec![
                Arc::new(self.transaction_id.finish()),
                Arc::new(self.account_id.finish()),
                Arc::new(self.amount.finish()),
                Arc::new(self.currency.finish()),
                Arc::new(self.merchant_id.finish()),
                Arc::new(self.merchant_category.finish()),
                Arc::new(self.transaction_type.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.country.finish()),
                Arc::new(self.city.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.kafka_partition.finish()),
                Arc::new(self.kafka_offset.finish()),
                Arc::new(self.late.finish()),
                Arc::new(self.ingested_at.finish()),
            ],
        )
    }
}

/// Rows of `alerts`.
pub struct AlertRows {
    alert_id: StringBuilder,
    rule: StringBuilder,
    severity: StringBuilder,
    rules_version: Int64Builder,
    transaction_id: StringBuilder,
    account_id: StringBuilder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    detected_at: TimestampMicrosecondBuilder,
    details: StringBuilder,
    /// The details' JSON, reused from row to row.
    json: Vec<u8>,
}

impl Default for AlertRows {
    fn default() -> Self {
        AlertRows {
            alert_id: StringBuilder::new(),
            rule: StringBuilder::new(),
            severity: StringBuilder::new(),
            rules_version: Int64Builder::new(),
            transaction_id: StringBuilder::new(),
            account_id: StringBuilder::new(),
            amount: decimal(),
            currency: StringBuilder::new(),
            event_time: timestamp(),
            detected_at: timestamp(),
            details: StringBuilder::new(),
            json: Vec::new(),
        }
    }
}

impl AlertRows {
    /// Appends `a`, its details as the same JSON the `alerts` topic carries.
    pub fn push(&mut self, a: &Alert) {
        append_uuid(&mut self.alert_id, a.alert_id);
        self.rule.append_value(a.rule.as_str());
        self.severity.append_value(a.severity.as_str());
        // The column is a `long`; a rules file numbering its versions past 2^63 - 1 is not a
        // real one, and saturating keeps such a version the largest.
        self.rules_version
            .append_value(i64::try_from(a.rules_version).unwrap_or(i64::MAX));
        append_uuid(&mut self.transaction_id, a.transaction_id);
        append_account(&mut self.account_id, a.account_id);
        self.amount.append_value(i128::from(a.amount.cents()));
        self.currency.append_value(a.currency.as_str());
        self.event_time.append_value(a.event_time.as_micros());
        self.detected_at.append_value(a.detected_at.as_micros());
        self.json.clear();
        // Details hold numbers, ids and decimals written as JSON numbers: they always
        // serialize (the model's `Alert::to_json` relies on the same), into a Vec infallibly.
        serde_json::to_writer(&mut self.json, &a.details).expect("alert details serialize");
        // serde_json writes UTF-8.
        self.details
            .append_value(std::str::from_utf8(&self.json).unwrap_or_default());
    }

    pub fn len(&self) -> usize {
        self.rules_version.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows so far as a batch; the builder starts again empty.
    pub fn finish(&mut self) -> RecordBatch {
        batch(
            Table::Alerts,
            vec![
                Arc::new(self.alert_id.finish()),
                Arc::new(self.rule.finish()),
                Arc::new(self.severity.finish()),
                Arc::new(self.rules_version.finish()),
                Arc::new(self.transaction_id.finish()),
                Arc::new(self.account_id.finish()),
                Arc::new(self.amount.finish()),
                Arc::new(self.currency.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.detected_at.finish()),
                Arc::new(self.details.finish()),
            ],
        )
    }
}

/// Rows of `dead_letters`.
pub struct DeadLetterRows {
    error: StringBuilder,
    field: StringBuilder,
    message: StringBuilder,
    payload: StringBuilder,
    payload_encoding: StringBuilder,
    source_topic: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    source_timestamp: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
}

impl Default for DeadLetterRows {
    fn default() -> Self {
        DeadLetterRows {
            error: StringBuilder::new(),
            field: StringBuilder::new(),
            message: StringBuilder::new(),
            payload: StringBuilder::new(),
            payload_encoding: StringBuilder::new(),
            source_topic: StringBuilder::new(),
            source_partition: Int32Builder::new(),
            source_offset: Int64Builder::new(),
            source_timestamp: timestamp(),
            received_at: timestamp(),
        }
    }
}

impl DeadLetterRows {
    /// Appends `d`, its source flattened into the `source_*` columns.
    pub fn push(&mut self, d: &DeadLetter) {
        self.error.append_value(d.error.as_str());
        self.field.append_option(d.field.map(|f| f.name()));
        self.message.append_value(&d.message);
        self.payload.append_value(&d.payload);
        // The same names as the dead letter's JSON (`PayloadEncoding`'s serde form).
        self.payload_encoding
            .append_value(match d.payload_encoding {
                PayloadEncoding::Utf8 => "utf8",
                PayloadEncoding::Base64 => "base64",
            });
        self.source_topic.append_value(&d.source.topic);
        self.source_partition.append_value(d.source.partition);
        self.source_offset.append_value(d.source.offset);
        // Kafka timestamps are milliseconds; a value too large for microseconds is not a real
        // time, and saturating keeps the row rather than failing the pipeline on it.
        self.source_timestamp
            .append_option(d.source.timestamp_ms.map(|ms| ms.saturating_mul(1000)));
        self.received_at.append_value(d.received_at.as_micros());
    }

    pub fn len(&self) -> usize {
        self.source_offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows so far as a batch; the builder starts again empty.
    pub fn finish(&mut self) -> RecordBatch {
        batch(
            Table::DeadLetters,
            vec![
                Arc::new(self.error.finish()),
                Arc::new(self.field.finish()),
                Arc::new(self.message.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.payload_encoding.finish()),
                Arc::new(self.source_topic.finish()),
                Arc::new(self.source_partition.finish()),
                Arc::new(self.source_offset.finish()),
                Arc::new(self.source_timestamp.finish()),
                Arc::new(self.received_at.finish()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use model::{validate, Details, ErrorCode, Rule, Rules, Severity, Source};
    use rust_decimal::Decimal;

    const FULL: &str = r#"{"transaction_id":"8A6A1D2C-4F0E-4B7B-9A53-2F1C7D9E0B11",
        "account_id":"ACC0001234","amount":1234.5,"currency":"EUR","merchant_id":"MER-42",
        "merchant_category":"5411","transaction_type":"refund","channel":"pos","country":"DE",
        "city":"Köln","event_time":"2026-03-02T01:30:00.123456789+01:00"}"#;
    const BARE: &str = r#"{"transaction_id":"00000000-0000-4000-8000-000000000001",
        "account_id":"ACC9999999","amount":0.01,"currency":"USD","merchant_id":"m",
        "transaction_type":"purchase","channel":"online","event_time":"2026-03-03T23:59:59Z"}"#;

    fn txn(json: &str) -> Transaction {
        validate(json.as_bytes(), &Rules::default()).expect("a valid record")
    }

    fn micros(rfc3339: &str) -> i64 {
        EventTime::parse_rfc3339(rfc3339).unwrap().as_micros()
    }

    fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col = b.column_by_name(name).unwrap().as_string::<i32>();
        (0..col.len())
            .map(|i| col.is_valid(i).then(|| col.value(i).to_owned()))
            .collect()
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    fn times(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        let col = b
            .column_by_name(name)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        col.iter().collect()
    }

    #[test]
    fn schemas_are_icebergs_with_field_ids() {
        for table in Table::ALL {
            let schema = arrow_schema(table);
            let iceberg = table.schema();
            assert_eq!(schema.fields().len(), iceberg.as_struct().fields().len());
            for (arrow, field) in schema.fields().iter().zip(iceberg.as_struct().fields()) {
                assert_eq!(arrow.name(), &field.name);
                assert_eq!(
                    arrow.metadata().get("PARQUET:field_id"),
                    Some(&field.id.to_string())
                );
                assert_eq!(arrow.is_nullable(), !field.required);
            }
        }
    }

    #[test]
    fn transaction_rows_hold_the_exact_values() {
        let (full, bare) = (txn(FULL), txn(BARE));
        let mut rows = TransactionRows::default();
        rows.push(&full, 3, 77, true, EventTime::from_micros(5));
        rows.push(&bare, 0, i64::MAX, false, EventTime::from_micros(6));
        assert_eq!((rows.len(), rows.is_empty()), (2, false));
        let b = rows.finish();
        assert_eq!(b.schema(), arrow_schema(Table::Transactions));
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            strings(&b, "transaction_id"),
            some(&[
                "8a6a1d2c-4f0e-4b7b-9a53-2f1c7d9e0b11",
                "00000000-0000-4000-8000-000000000001"
            ])
        );
        assert_eq!(
            strings(&b, "account_id"),
            some(&["ACC0001234", "ACC9999999"])
        );
        let amount = b.column_by_name("amount").unwrap();
        assert_eq!(
            amount.data_type(),
            &arrow::datatypes::DataType::Decimal128(18, 2)
        );
        let amount = amount.as_primitive::<Decimal128Type>();
        assert_eq!((amount.value(0), amount.value(1)), (123_450, 1));
        assert_eq!(amount.value_as_string(0), "1234.50");
        assert_eq!(strings(&b, "currency"), some(&["EUR", "USD"]));
        assert_eq!(strings(&b, "merchant_id"), some(&["MER-42", "m"]));
        assert_eq!(
            strings(&b, "merchant_category"),
            vec![Some("5411".into()), None]
        );
        assert_eq!(
            strings(&b, "transaction_type"),
            some(&["refund", "purchase"])
        );
        assert_eq!(strings(&b, "channel"), some(&["pos", "online"]));
        assert_eq!(strings(&b, "country"), vec![Some("DE".into()), None]);
        assert_eq!(strings(&b, "city"), vec![Some("Köln".into()), None]);
        assert_eq!(
            times(&b, "event_time"),
            vec![
                Some(micros("2026-03-02T00:30:00.123456Z")),
                Some(micros("2026-03-03T23:59:59Z"))
            ]
        );
        let partition = b.column_by_name("kafka_partition").unwrap();
        assert_eq!(
            partition.as_primitive::<Int32Type>().values().to_vec(),
            vec![3, 0]
        );
        let offset = b.column_by_name("kafka_offset").unwrap();
        assert_eq!(
            offset.as_primitive::<Int64Type>().values().to_vec(),
            vec![77, i64::MAX]
        );
        let late = b.column_by_name("late").unwrap().as_boolean();
        assert_eq!((late.value(0), late.value(1)), (true, false));
        assert_eq!(times(&b, "ingested_at"), vec![Some(5), Some(6)]);

        // `finish` starts again: the next batch holds only what came after.
        assert!(rows.is_empty());
        rows.push(&bare, 1, 2, false, EventTime::from_micros(7));
        let again = rows.finish();
        assert_eq!(again.num_rows(), 1);
        assert_eq!(strings(&again, "account_id"), some(&["ACC9999999"]));
        assert_eq!(rows.finish().num_rows(), 0);
    }

    #[test]
    fn alert_rows_hold_the_exact_values_and_the_details_json() {
        let t = txn(FULL);
        let detected = EventTime::from_micros(micros("2026-03-02T00:30:05.5Z"));
        let high = Alert::new(
            Rule::HighValue,
            Severity::High,
            7,
            &t,
            Details::HighValue {
                threshold_usd: Decimal::new(1000, 0),
                amount_usd: Decimal::new(133_326, 2),
                fx_rate_usd: Decimal::new(108, 2),
            },
            detected,
        );
        let rapid = Alert::new(
            Rule::RapidActivity,
            Severity::Medium,
            u64::MAX,
            &t,
            Details::RapidActivity {
                window_seconds: 60,
                count: 2,
                transaction_ids: vec![txn(BARE).transaction_id, t.transaction_id],
            },
            detected,
        );
        let mut rows = AlertRows::default();
        rows.push(&high);
        rows.push(&rapid);
        assert_eq!(rows.len(), 2);
        let b = rows.finish();
        assert!(rows.is_empty());
        assert_eq!(b.schema(), arrow_schema(Table::Alerts));
        assert_eq!(
            strings(&b, "alert_id"),
            vec![
                Some(high.alert_id.to_string()),
                Some(rapid.alert_id.to_string())
            ]
        );
        assert_eq!(strings(&b, "rule"), some(&["high_value", "rapid_activity"]));
        assert_eq!(strings(&b, "severity"), some(&["high", "medium"]));
        let version = b.column_by_name("rules_version").unwrap();
        assert_eq!(
            version.as_primitive::<Int64Type>().values().to_vec(),
            vec![7, i64::MAX]
        );
        assert_eq!(
            strings(&b, "transaction_id"),
            some(&["8a6a1d2c-4f0e-4b7b-9a53-2f1c7d9e0b11"; 2])
        );
        assert_eq!(strings(&b, "account_id"), some(&["ACC0001234"; 2]));
        let amount = b.column_by_name("amount").unwrap();
        assert_eq!(amount.as_primitive::<Decimal128Type>().value(1), 123_450);
        assert_eq!(strings(&b, "currency"), some(&["EUR"; 2]));
        assert_eq!(
            times(&b, "event_time"),
            vec![Some(t.event_time.as_micros()); 2]
        );
        assert_eq!(
            times(&b, "detected_at"),
            vec![Some(detected.as_micros()); 2]
        );
        // Exactly the `details` object of the alert's own JSON.
        for (i, alert) in [&high, &rapid].into_iter().enumerate() {
            let json: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
            let stored = strings(&b, "details")[i].clone().unwrap();
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
                json["details"]
            );
        }
        assert_eq!(
            strings(&b, "details")[0].as_deref(),
            Some(r#"{"threshold_usd":1000,"amount_usd":1333.26,"fx_rate_usd":1.08}"#)
        );
    }

    #[test]
    fn dead_letter_rows_hold_the_exact_values() {
        let rules = Rules::default();
        let source = |offset, timestamp_ms| Source {
            topic: "raw-transactions".into(),
            partition: 4,
            offset,
            timestamp_ms,
        };
        let received = EventTime::from_micros(micros("2026-03-02T12:00:00.000001Z"));
        let missing = br#"{"amount": 12}"#;
        let binary = b"\xff\xfe";
        let dead = [
            DeadLetter::new(
                validate(missing, &rules).unwrap_err(),
                missing,
                source(10, Some(1_772_452_800_123)),
                received,
            ),
            DeadLetter::new(
                validate(binary, &rules).unwrap_err(),
                binary,
                source(11, None),
                received,
            ),
        ];
        assert_eq!(dead[0].error, ErrorCode::MissingField);
        let mut rows = DeadLetterRows::default();
        for d in &dead {
            rows.push(d);
        }
        assert_eq!(rows.len(), 2);
        let b = rows.finish();
        assert!(rows.is_empty());
        assert_eq!(b.schema(), arrow_schema(Table::DeadLetters));
        assert_eq!(strings(&b, "error"), some(&["missing_field", "not_utf8"]));
        assert_eq!(
            strings(&b, "field"),
            vec![Some("transaction_id".into()), None]
        );
        assert_eq!(
            strings(&b, "message"),
            vec![
                Some(dead[0].message.to_string()),
                Some(dead[1].message.to_string())
            ]
        );
        assert_eq!(strings(&b, "payload"), some(&[r#"{"amount": 12}"#, "//4="]));
        assert_eq!(strings(&b, "payload_encoding"), some(&["utf8", "base64"]));
        assert_eq!(strings(&b, "source_topic"), some(&["raw-transactions"; 2]));
        let partition = b.column_by_name("source_partition").unwrap();
        assert_eq!(
            partition.as_primitive::<Int32Type>().values().to_vec(),
            vec![4, 4]
        );
        let offset = b.column_by_name("source_offset").unwrap();
        assert_eq!(
            offset.as_primitive::<Int64Type>().values().to_vec(),
            vec![10, 11]
        );
        assert_eq!(
            times(&b, "source_timestamp"),
            vec![Some(1_772_452_800_123_000), None]
        );
        assert_eq!(
            times(&b, "received_at"),
            vec![Some(received.as_micros()); 2]
        );
    }
}
