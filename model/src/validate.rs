//! `validate`: raw bytes from Kafka in, a [`Transaction`] or a [`Rejection`] out.
//!
//! The contract fixes which error wins when several things are wrong, so validation runs in
//! the same phases the contract lists: size, UTF-8, JSON syntax (with a depth limit), object
//! shape; then presence and JSON type of every field in the contract's order; then the value
//! of every field in that order. A single JSON pass collects each known field's raw text
//! (borrowed from the input), so the phases after parsing look at slices of the input instead
//! of a tree, and the amount is read from its digits, never through a float. That pass is
//! one scan of the bytes for the common flat object (`validate/flat.rs`), and serde_json's parser for
//! everything else.
//!
//! Two choices the contract leaves open, made here and documented in docs/data-model.md:
//! an optional field that is `null` counts as absent; a known field that appears twice in
//! one object is `invalid_value` for that field (a reader must not have to guess which of
//! two amounts was meant).

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::amount::Amount;
use crate::rules::Rules;
use crate::time::EventTime;
use crate::transaction::{AccountId, Channel, Currency, Transaction, TransactionType};

/// Records larger than this many bytes are `too_large`.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// JSON nested deeper than this many levels (arrays and objects) is `not_json`.
pub const MAX_DEPTH: usize = 128;

/// The contract's seven error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    NotUtf8,
    NotJson,
    NotObject,
    TooLarge,
    MissingField,
    WrongType,
    InvalidValue,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::NotUtf8,
        ErrorCode::NotJson,
        ErrorCode::NotObject,
        ErrorCode::TooLarge,
        ErrorCode::MissingField,
        ErrorCode::WrongType,
        ErrorCode::InvalidValue,
    ];

    /// The code as it appears in a dead letter's `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotUtf8 => "not_utf8",
            ErrorCode::NotJson => "not_json",
            ErrorCode::NotObject => "not_object",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::InvalidValue => "invalid_value",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of a transaction, in the contract's order (which is the order errors are
/// reported in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    TransactionId,
    AccountId,
    Amount,
    Currency,
    MerchantId,
    MerchantCategory,
    TransactionType,
    Channel,
    Country,
    City,
    EventTime,
}

impl Field {
    /// Every field in the contract's order.
    pub const ALL: [Field; 11] = [
        Field::TransactionId,
        Field::AccountId,
        Field::Amount,
        Field::Currency,
        Field::MerchantId,
        Field::MerchantCategory,
        Field::TransactionType,
        Field::Channel,
        Field::Country,
        Field::City,
        Field::EventTime,
    ];

    /// The JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Field::TransactionId => "transaction_id",
            Field::AccountId => "account_id",
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::MerchantId => "merchant_id",
            Field::MerchantCategory => "merchant_category",
            Field::TransactionType => "transaction_type",
            Field::Channel => "channel",
            Field::Country => "country",
            Field::City => "city",
            Field::EventTime => "event_time",
        }
    }

    /// The field a JSON key names. A `match` on the text (not a search of [`Field::ALL`]):
    /// validation looks up every key of every record.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "transaction_id" => Field::TransactionId,
            "account_id" => Field::AccountId,
            "amount" => Field::Amount,
            "currency" => Field::Currency,
            "merchant_id" => Field::MerchantId,
            "merchant_category" => Field::MerchantCategory,
            "transaction_type" => Field::TransactionType,
            "channel" => Field::Channel,
            "country" => Field::Country,
            "city" => Field::City,
            "event_time" => Field::EventTime,
            _ => return None,
        })
    }

    pub fn required(self) -> bool {
        !matches!(self, Field::MerchantCategory | Field::Country | Field::City)
    }

    /// Every field is a JSON string but `amount`, a JSON number.
    fn is_number(self) -> bool {
        self == Field::Amount
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record is not a valid transaction: the first problem in the contract's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub error: ErrorCode,
    /// `None` where no one field is at fault (`not_json`, …).
    pub field: Option<Field>,
    /// A sentence for a human reading the dead letter.
    pub message: Cow<'static, str>,
}

impl Rejection {
    fn record(error: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            error,
            field: None,
            message: message.into(),
        }
    }

    fn field(error: ErrorCode, field: Field, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            error,
            field: Some(field),
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({}): {}", self.error, field, self.message),
            None => write!(f, "{}: {}", self.error, self.message),
        }
    }
}

impl std::error::Error for Rejection {}

/// Validates one input record under the rules in force (which decide the accepted currencies).
///
/// A pure function of its arguments: no clock, no randomness, so a replay gives the same verdict.
///
/// ```
/// use model::{validate, ErrorCode, Field, Rules};
///
/// let rules = Rules::default();
/// let ok = br#"{"transaction_id": "1de9ea66-70d3-4a1f-8735-df5ef7697fb9",
///   "account_id": "ACC7000001", "amount": 42.50, "currency": "EUR", "merchant_id": "M-77",
///   "transaction_type": "purchase", "channel": "pos", "event_time": "2026-03-10T09:30:00+01:00"}"#;
/// let t = validate(ok, &rules).unwrap();
/// assert_eq!(t.amount.to_string(), "42.50");
/// assert_eq!(t.event_time.to_string(), "2026-03-10T08:30:00.000000Z");
///
/// let bad = validate(br#"{"amount": "42.50"}"#, &rules).unwrap_err();
/// assert_eq!((bad.error, bad.field), (ErrorCode::MissingField, Some(Field::TransactionId)));
/// ```
pub fn validate(bytes: &[u8], rules: &Rules) -> Result<Transaction, Rejection> {
    validate_deferred(bytes).resolve(rules)
}

/// A verdict that may still depend on the rules: everything is checked but whether the
/// currency is one of the rules' `fx_rates_usd`.
///
/// The dataflow validates a record as soon as it reads it (it needs the event time to place
/// the record in time), and learns only later which rules version is in force at that time;
/// [`Deferred::resolve`] then finishes the verdict exactly as [`validate`] would have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// Invalid whatever the rules say.
    Final(Rejection),
    /// Valid, or invalid for a reason found after the currency in the contract's order, unless
    /// the rules do not accept `currency`, which then comes first.
    Pending {
        currency: Currency,
        rest: Result<Transaction, Rejection>,
    },
}

impl Deferred {
    /// The verdict under `rules`.
    pub fn resolve(self, rules: &Rules) -> Result<Transaction, Rejection> {
        match self {
            Deferred::Final(r) => Err(r),
            Deferred::Pending { currency, rest } => {
                if rules.accepts(currency) {
                    rest
                } else {
                    Err(Rejection::field(
                        ErrorCode::InvalidValue,
                        Field::Currency,
                        format!(
                            "currency must be one of the rules' fx_rates_usd (rules version {})",
                            rules.version
                        ),
                    ))
                }
            }
        }
    }

    /// The event time, when the record is valid but for the currency check.
    pub fn event_time(&self) -> Option<EventTime> {
        match self {
            Deferred::Pending { rest: Ok(t), .. } => Some(t.event_time),
            _ => None,
        }
    }
}

/// Validates everything that does not depend on the rules; see [`Deferred`].
pub fn validate_deferred(bytes: &[u8]) -> Deferred {
    let mut slots = Slots::default();
    if let Err(r) = check_document(bytes, &mut slots) {
        return Deferred::Final(r);
    }
    match check_types(&slots).and_then(|()| check_values(&slots)) {
        Ok((currency, rest)) => Deferred::Pending { currency, rest },
        Err(r) => Deferred::Final(r),
    }
}

/// Phase one: size, encoding, syntax, depth, object. Fills `slots` (empty on entry) with the
/// known fields.
fn check_document<'a>(bytes: &'a [u8], slots: &mut Slots<'a>) -> Result<(), Rejection> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Rejection::record(
            ErrorCode::TooLarge,
            format!(
                "record is {} bytes, more than the limit of {MAX_RECORD_BYTES}",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::record(
            ErrorCode::NotUtf8,
            format!(
                "record is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    if flat::read_flat_object(text, slots) {
        return Ok(());
    }
    if too_deep(bytes) {
        return Err(Rejection::record(
            ErrorCode::NotJson,
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    *slots = parse_object(text)?;
    Ok(())
}

/// The raw JSON text of each known field, indexed by `Field as usize`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Slots<'a> {
    raw: [Option<&'a str>; 11],
    /// Bit `f` is set when field `f` appeared more than once.
    repeated: u16,
    /// No string in the document has an escape (the flat scan reads only such documents).
    unescaped: bool,
}

impl<'a> Slots<'a> {
    /// The field's raw JSON text, `None` when absent or `null`.
    fn get(&self, f: Field) -> Option<&'a str> {
        self.raw[f as usize].filter(|v| *v != "null")
    }

    /// Notes the raw text of field `f`, or that it is repeated.
    fn put(&mut self, f: Field, raw: &'a str) {
        let slot = &mut self.raw[f as usize];
        if slot.is_some() {
            self.repeated |= 1 << f as u16;
        } else {
            *slot = Some(raw);
        }
    }
}

/// Parses the JSON document: `Ok` with the known fields when it is an object.
fn parse_object(text: &str) -> Result<Slots<'_>, Rejection> {
    let not_json = |e: serde_json::Error| {
        Rejection::record(ErrorCode::NotJson, format!("record is not valid JSON: {e}"))
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let slots = de.deserialize_any(TopLevel).map_err(not_json)?;
    de.end().map_err(not_json)?;
    slots.ok_or_else(|| Rejection::record(ErrorCode::NotObject, "record must be a JSON object"))
}

/// Phase two: every field present (or optional) and of the right JSON type, in order.
fn check_types(slots: &Slots<'_>) -> Result<(), Rejection> {
    for f in Field::ALL {
        match slots.get(f) {
            None if f.required() => {
                return Err(Rejection::field(
                    ErrorCode::MissingField,
                    f,
                    format!("{f} is required (missing or null)"),
                ))
            }
            None => {}
            Some(raw) => {
                let is_number = matches!(raw.as_bytes()[0], b'-' | b'0'..=b'9');
                let is_string = raw.as_bytes()[0] == b'"';
                if f.is_number() && !is_number {
                    return Err(Rejection::field(
                        ErrorCode::WrongType,
                        f,
                        format!("{f} must be a JSON number"),
                    ));
                }
                if !f.is_number() && !is_string {
                    return Err(Rejection::field(
                        ErrorCode::WrongType,
                        f,
                        format!("{f} must be a JSON string"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Phase three: every value within its rule, in order. Returns the currency code (whether the
/// rules accept it is still to check) and the verdict on the fields after it.
type Checked = (Currency, Result<Transaction, Rejection>);

fn check_values(slots: &Slots<'_>) -> Result<Checked, Rejection> {
    let invalid = |f: Field, message: Cow<'static, str>| {
        Rejection::field(ErrorCode::InvalidValue, f, message)
    };
    // Check fields in the contract's order, whatever order the code below builds them in.
    let value = |f: Field| -> Result<Option<Cow<'_, str>>, Rejection> {
        if slots.repeated & (1 << f as u16) != 0 {
            return Err(invalid(f, format!("{f} appears more than once").into()));
        }
        slots
            .get(f)
            .map(|raw| json_string(raw, f, slots.unescaped))
            .transpose()
    };

    let transaction_id = {
        let s = required(value(Field::TransactionId)?);
        parse_uuid(&s).ok_or_else(|| {
            invalid(
                Field::TransactionId,
                "transaction_id must be a UUID in canonical form (8-4-4-4-12 hex digits)".into(),
            )
        })?
    };
    let account_id = AccountId::parse(&required(value(Field::AccountId)?)).ok_or_else(|| {
        invalid(
            Field::AccountId,
            "account_id must be ACC followed by 7 digits".into(),
        )
    })?;
    if slots.repeated & (1 << Field::Amount as u16) != 0 {
        return Err(invalid(
            Field::Amount,
            "amount appears more than once".into(),
        ));
    }
    let amount = Amount::parse_json_number(slots.get(Field::Amount).unwrap_or("0"))
        .map_err(|e| invalid(Field::Amount, e.to_string().into()))?;
    // Whether the rules accept the code is decided later (`Deferred::resolve`); a string that
    // is no currency code at all no rules can accept.
    let currency = Currency::parse(&required(value(Field::Currency)?)).ok_or_else(|| {
        invalid(
            Field::Currency,
            "currency must be one of the rules' fx_rates_usd (three upper-case letters)".into(),
        )
    })?;
    let rest = check_rest(&value, &invalid).map(|rest| Transaction {
        transaction_id,
        account_id,
        amount,
        currency,
        merchant_id: rest.merchant_id,
        merchant_category: rest.merchant_category,
        transaction_type: rest.transaction_type,
        channel: rest.channel,
        country: rest.country,
        city: rest.city,
        event_time: rest.event_time,
    });
    Ok((currency, rest))
}

/// The fields after the currency, checked in order.
struct Rest {
    merchant_id: CompactString,
    merchant_category: Option<[u8; 4]>,
    transaction_type: TransactionType,
    channel: Channel,
    country: Option<[u8; 2]>,
    city: Option<CompactString>,
    event_time: EventTime,
}

fn check_rest<'a>(
    value: &dyn Fn(Field) -> Result<Option<Cow<'a, str>>, Rejection>,
    invalid: &dyn Fn(Field, Cow<'static, str>) -> Rejection,
) -> Result<Rest, Rejection> {
    let merchant_id = required(value(Field::MerchantId)?);
    if merchant_id.is_empty() || char_count_over(&merchant_id, 64) {
        return Err(invalid(
            Field::MerchantId,
            "merchant_id must be 1 to 64 characters".into(),
        ));
    }
    let merchant_category = match value(Field::MerchantCategory)? {
        None => None,
        Some(s) => Some(
            <[u8; 4]>::try_from(s.as_bytes())
                .ok()
                .filter(|b| b.iter().all(u8::is_ascii_digit))
                .ok_or_else(|| {
                    invalid(
                        Field::MerchantCategory,
                        "merchant_category must be 4 digits (an MCC)".into(),
                    )
                })?,
        ),
    };
    let transaction_type = TransactionType::parse(&required(value(Field::TransactionType)?))
        .ok_or_else(|| {
            invalid(
                Field::TransactionType,
                "transaction_type must be one of purchase, withdrawal, transfer, payment, refund"
                    .into(),
            )
        })?;
    let channel = Channel::parse(&required(value(Field::Channel)?)).ok_or_else(|| {
        invalid(
            Field::Channel,
            "channel must be one of online, pos, atm, mobile".into(),
        )
    })?;
    let country = match value(Field::Country)? {
        None => None,
        Some(s) => Some(
            <[u8; 2]>::try_from(s.as_bytes())
                .ok()
                .filter(|b| b.iter().all(u8::is_ascii_uppercase))
                .ok_or_else(|| {
                    invalid(
                        Field::Country,
                        "country must be two upper-case letters".into(),
                    )
                })?,
        ),
    };
    let city = match value(Field::City)? {
        Some(s) if char_count_over(&s, 100) => {
            return Err(invalid(
                Field::City,
                "city must be at most 100 characters".into(),
            ))
        }
        city => city.map(CompactString::from),
    };
    let event_time = EventTime::parse_rfc3339(&required(value(Field::EventTime)?))
        .map_err(|e| invalid(Field::EventTime, e.to_string().into()))?;

    Ok(Rest {
        merchant_id: CompactString::from(merchant_id),
        merchant_category,
        transaction_type,
        channel,
        country,
        city,
        event_time,
    })
}

/// A required field's value; phase two has already refused a record without it.
fn required(v: Option<Cow<'_, str>>) -> Cow<'_, str> {
    v.unwrap_or_default()
}

/// Decodes a JSON string literal already checked by the parser (or the flat scan, which reads
/// only literals without escapes: `unescaped`); borrows when it has no escape.
fn json_string(raw: &str, f: Field, unescaped: bool) -> Result<Cow<'_, str>, Rejection> {
    let inner = &raw[1..raw.len() - 1];
    if unescaped || !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    // The parser checked the escapes' syntax but not that `\uD800`-style escapes pair up.
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|_| {
            Rejection::field(
                ErrorCode::InvalidValue,
                f,
                format!("{f} has a \\u escape that is not a Unicode character (a lone surrogate)"),
            )
        })
}

fn char_count_over(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

/// A UUID in canonical hyphenated form, either case; no braces, URN or simple forms. (Of 36
/// bytes, the uuid crate reads only that form: hyphens at 8, 13, 18 and 23, hex digits
/// elsewhere.)
fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    (b.len() == 36)
        .then(|| Uuid::try_parse_ascii(b).ok())
        .flatten()
}

/// Whether the document nests arrays and objects deeper than [`MAX_DEPTH`]. The parser's own
/// limit does not cover values it skips, so the contract's limit is checked here, and only
/// when there are enough brackets for it to matter.
fn too_deep(b: &[u8]) -> bool {
    if b.iter().filter(|&&c| c == b'{' || c == b'[').count() <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &c in b {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return true;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    false
}

/// Visits the top-level JSON value: an object yields its known fields, anything else `None`
/// (after it has been parsed to the end, so a broken array is `not_json`, not `not_object`).
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<Slots<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots = Slots::default();
        while let Some(Key(field)) = map.next_key()? {
            match field {
                Some(f) => {
                    let raw: &'de RawValue = map.next_value()?;
                    slots.put(f, raw.get());
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(slots))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key: the known field it names, or `None` for an unknown (ignored) key.
struct Key(Option<Field>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key(Field::parse(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

mod flat;
#[cfg(test)]
mod tests;
