//! A dead letter: an invalid input record, why it was refused, and where it came from.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Serialize;

use crate::time::EventTime;
use crate::validate::{Field, Rejection};

/// Where an input record was read: enough to find it again in Kafka.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record's timestamp, when it has one.
    pub timestamp_ms: Option<i64>,
}

/// The contract's dead-letter record. Serializes to exactly the contract's JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    #[serde(serialize_with = "as_str")]
    pub error: crate::validate::ErrorCode,
    #[serde(serialize_with = "field_name")]
    pub field: Option<Field>,
    pub message: Cow<'static, str>,
    /// The original bytes: as text when they are UTF-8, else base64 (`payload_encoding`).
    pub payload: String,
    pub payload_encoding: PayloadEncoding,
    pub source: Source,
    /// Wall-clock time the pipeline read the record; the one field a replay changes.
    pub received_at: EventTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    Utf8,
    Base64,
}

impl DeadLetter {
    /// The dead letter for `payload`, refused with `rejection`, read from `source`.
    pub fn new(
        rejection: Rejection,
        payload: &[u8],
        source: Source,
        received_at: EventTime,
    ) -> Self {
        let (payload, payload_encoding) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_owned(), PayloadEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(payload),
                PayloadEncoding::Base64,
            ),
        };
        DeadLetter {
            error: rejection.error,
            field: rejection.field,
            message: rejection.message,
            payload,
            payload_encoding,
            source,
            received_at,
        }
    }

    /// The original record's bytes.
    pub fn payload_bytes(&self) -> Vec<u8> {
        match self.payload_encoding {
            PayloadEncoding::Utf8 => self.payload.clone().into_bytes(),
            PayloadEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.payload)
                .unwrap_or_default(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a dead letter always serializes")
    }

    /// Appends [`DeadLetter::to_json`]'s text to `out`: a buffer kept from record to record
    /// is not grown afresh (and copied at each step) for every payload of up to 64 KiB.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a dead letter always serializes")
    }
}

fn as_str<S: serde::Serializer>(c: &crate::validate::ErrorCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

fn field_name<S: serde::Serializer>(f: &Option<Field>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_str(f.name()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, Rules};

    fn source() -> Source {
        Source {
            topic: "raw-transactions".into(),
            partition: 3,
            offset: 1234,
            timestamp_ms: Some(1_771_234_567_000),
        }
    }

    #[test]
    fn contract_json_shape() {
        let payload = br#"{"amount": "12"}"#;
        let r = validate(payload, &Rules::default()).unwrap_err();
        let at = EventTime::parse_rfc3339("2026-02-16T12:00:00.123456Z").unwrap();
        let d = DeadLetter::new(r, payload, source(), at);
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        let mut written = b"kept".to_vec();
        d.write_json(&mut written);
        assert_eq!(&written[4..], d.to_json().as_bytes());
        assert_eq!(v["error"], "missing_field");
        assert_eq!(v["field"], "transaction_id");
        assert_eq!(v["payload"], r#"{"amount": "12"}"#);
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["source"]["topic"], "raw-transactions");
        assert_eq!(v["source"]["partition"], 3);
        assert_eq!(v["source"]["offset"], 1234);
        assert_eq!(v["source"]["timestamp_ms"], 1_771_234_567_000i64);
        assert_eq!(v["received_at"], "2026-02-16T12:00:00.123456Z");
        assert_eq!(v.as_object().unwrap().len(), 7);
    }

    #[test]
    fn non_utf8_payloads_are_base64_and_round_trip() {
        let payload = b"{\xff\xfe}";
        let r = validate(payload, &Rules::default()).unwrap_err();
        let d = DeadLetter::new(r, payload, source(), EventTime::from_micros(0));
        assert_eq!(d.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(d.payload_bytes(), payload);
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v["field"], serde_json::Value::Null);
        assert_eq!(v["error"], "not_utf8");
        assert_eq!(v["payload_encoding"], "base64");
    }
}
