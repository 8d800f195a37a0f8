//! The three tables of namespace `finance`: their Iceberg schemas and partition specs.
//!
//! Column ids are part of the table format (readers resolve columns by id, and schema evolution
//! adds new ids after these), so they are fixed here once and never reused. Every table is
//! partitioned by the day of the time users filter on: event time for transactions and alerts
//! (`--date-range` queries and time-bounded investigations), the time a dead letter was received
//! for dead letters (an operator looks at "what failed today"). A day holds few enough files at
//! the rates this pipeline runs at to keep planning cheap, and prunes a date-range query to the
//! days it names. Docs: docs/data-model.md.

use iceberg::spec::{NestedField, PartitionSpec, PrimitiveType, Schema, Transform, Type};

/// The namespace of the tables.
pub const NAMESPACE: &str = "finance";

/// `decimal(18,2)`: amounts, exact to the cent (the unscaled value is `model::Amount::cents`).
pub fn amount_type() -> Type {
    Type::Primitive(PrimitiveType::Decimal {
        precision: 18,
        scale: 2,
    })
}

fn timestamptz() -> Type {
    Type::Primitive(PrimitiveType::Timestamptz)
}

fn string() -> Type {
    Type::Primitive(PrimitiveType::String)
}

/// The tables, each with its name, schema and partition spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Transactions,
    Alerts,
    DeadLetters,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Transactions, Table::Alerts, Table::DeadLetters];

    pub fn name(self) -> &'static str {
        match self {
            Table::Transactions => "transactions",
            Table::Alerts => "alerts",
            Table::DeadLetters => "dead_letters",
        }
    }

    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's Iceberg schema.
    pub fn schema(self) -> Schema {
        let fields = match self {
            Table::Transactions => vec![
                NestedField::required(1, "transaction_id", string())
                    .with_doc("canonical UUID, lower case"),
                NestedField::required(2, "account_id", string()),
                NestedField::required(3, "amount", amount_type())
                    .with_doc("in the transaction's currency"),
                NestedField::required(4, "currency", string()),
                NestedField::required(5, "merchant_id", string()),
                NestedField::optional(6, "merchant_category", string()),
                NestedField::required(7, "transaction_type", string()),
                NestedField::required(8, "channel", string()),
                NestedField::optional(9, "country", string()),
                NestedField::optional(10, "city", string()),
                NestedField::required(11, "event_time", timestamptz()),
                NestedField::required(12, "kafka_partition", Type::Primitive(PrimitiveType::Int)),
                NestedField::required(13, "kafka_offset", Type::Primitive(PrimitiveType::Long)),
                NestedField::required(14, "late", Type::Primitive(PrimitiveType::Boolean))
                    .with_doc("older than the watermark when read: not counted by rapid_activity"),
                NestedField::required(15, "ingested_at", timestamptz())
                    .with_doc("wall-clock time the pipeline wrote the row"),
            ],
            Table::Alerts => vec![
                NestedField::required(1, "alert_id", string())
                    .with_doc("UUIDv5 of rule and transaction id"),
                NestedField::required(2, "rule", string()),
                NestedField::required(3, "severity", string()),
                NestedField::required(4, "rules_version", Type::Primitive(PrimitiveType::Long)),
                NestedField::required(5, "transaction_id", string()),
                NestedField::required(6, "account_id", string()),
                NestedField::required(7, "amount", amount_type()),
                NestedField::required(8, "currency", string()),
                NestedField::required(9, "event_time", timestamptz()),
                NestedField::required(10, "detected_at", timestamptz()),
                NestedField::required(11, "details", string()).with_doc("JSON"),
            ],
            Table::DeadLetters => vec![
                NestedField::required(1, "error", string()),
                NestedField::optional(2, "field", string()),
                NestedField::required(3, "message", string()),
                NestedField::required(4, "payload", string())
                    .with_doc("the record as UTF-8 text, or base64 (payload_encoding)"),
                NestedField::required(5, "payload_encoding", string()),
                NestedField::required(6, "source_topic", string()),
                NestedField::required(7, "source_partition", Type::Primitive(PrimitiveType::Int)),
                NestedField::required(8, "source_offset", Type::Primitive(PrimitiveType::Long)),
                NestedField::optional(9, "source_timestamp", timestamptz()),
                NestedField::required(10, "received_at", timestamptz()),
            ],
        };
        Schema::builder()
            .with_schema_id(0)
            .with_fields(fields.into_iter().map(Into::into))
            .build()
            .expect("the tables' schemas are valid")
    }

    /// The column whose day partitions the table.
    pub fn partition_column(self) -> &'static str {
        match self {
            Table::Transactions | Table::Alerts => "event_time",
            Table::DeadLetters => "received_at",
        }
    }

    /// The table's partition spec: by day of [`Table::partition_column`].
    pub fn partition_spec(self) -> PartitionSpec {
        let column = self.partition_column();
        PartitionSpec::builder(self.schema())
            .with_spec_id(0)
            .add_partition_field(column, format!("{column}_day"), Transform::Day)
            .and_then(|b| b.build())
            .expect("the tables' partition specs are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn every_schema_converts_to_arrow_with_exact_types() {
        for table in Table::ALL {
            let arrow = iceberg::arrow::schema_to_arrow_schema(&table.schema()).unwrap();
            for field in arrow.fields() {
                let name = field.name().as_str();
                let t = field.data_type();
                if name == "amount" {
                    assert_eq!(t, &DataType::Decimal128(18, 2), "{}.{name}", table.name());
                }
                if name.ends_with("_time") || name.ends_with("_at") || name == "source_timestamp" {
                    assert!(
                        matches!(t, DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "+00:00" || tz.as_ref() == "UTC"),
                        "{}.{name}: {t:?}",
                        table.name()
                    );
                }
            }
        }
    }

    #[test]
    fn the_contract_columns_are_there() {
        let t = Table::Transactions.schema();
        for c in [
            "kafka_partition",
            "kafka_offset",
            "late",
            "ingested_at",
            "transaction_id",
            "event_time",
        ] {
            assert!(t.field_by_name(c).is_some(), "transactions.{c}");
        }
        assert!(Table::Alerts.schema().field_by_name("details").is_some());
        assert!(Table::DeadLetters
            .schema()
            .field_by_name("payload")
            .is_some());
        // Optional exactly where the contract's fields are optional.
        assert!(!t.field_by_name("city").unwrap().required);
        assert!(t.field_by_name("amount").unwrap().required);
    }

    #[test]
    fn partitioned_by_day() {
        for table in Table::ALL {
            let spec = table.partition_spec();
            assert_eq!(spec.fields().len(), 1);
            assert_eq!(spec.fields()[0].transform, Transform::Day);
            assert_eq!(Table::parse(table.name()), Some(table));
        }
    }
}
