//! Every boundary the contract names, each side of it; the shared vectors; and property tests.

use super::*;
use crate::transaction::{Channel, TransactionType};
use proptest::prelude::*;

/// A valid record as (key, raw JSON value) pairs, in the contract's order.
fn base() -> Vec<(&'static str, String)> {
    [
        (
            "transaction_id",
            r#""1de9ea66-70d3-4a1f-8735-df5ef7697fb9""#,
        ),
        ("account_id", r#""ACC7000001""#),
        ("amount", "42.50"),
        ("currency", r#""USD""#),
        ("merchant_id", r#""M-77""#),
        ("merchant_category", r#""5812""#),
        ("transaction_type", r#""payment""#),
        ("channel", r#""mobile""#),
        ("country", r#""GB""#),
        ("city", r#""Leeds""#),
        ("event_time", r#""2026-03-10T09:30:00.000000Z""#),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn render(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// The base record with `key` set to the raw JSON `value` (or removed when `None`).
fn with(key: &str, value: Option<&str>) -> String {
    let mut f = base();
    f.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        f.push((Field::parse(key).map_or("extra", Field::name), v.to_owned()));
    }
    render(&f)
}

fn check(record: &str) -> Result<Transaction, (ErrorCode, Option<Field>)> {
    validate(record.as_bytes(), &Rules::default()).map_err(|r| (r.error, r.field))
}

fn verdict(record: &str) -> Option<(ErrorCode, Option<Field>)> {
    check(record).err()
}

fn invalid(f: Field) -> Option<(ErrorCode, Option<Field>)> {
    Some((ErrorCode::InvalidValue, Some(f)))
}

/// The value of `key` set to the JSON string `s`: valid or the field's `invalid_value`.
fn string_verdict(key: &str, s: &str) -> Option<(ErrorCode, Option<Field>)> {
    verdict(&with(key, Some(&serde_json::to_string(s).unwrap())))
}

#[test]
fn field_names_round_trip() {
    for f in Field::ALL {
        assert_eq!(Field::parse(f.name()), Some(f));
    }
    assert_eq!(Field::parse("Amount"), None);
}

#[test]
fn the_base_record_is_valid() {
    let t = check(&render(&base())).unwrap();
    assert_eq!(t.account_id.to_string(), "ACC7000001");
    assert_eq!(t.amount.cents(), 4250);
    assert_eq!(t.country_str(), Some("GB"));
    assert_eq!(t.merchant_category_str(), Some("5812"));
    assert_eq!(t.transaction_type, TransactionType::Payment);
    assert_eq!(t.channel, Channel::Mobile);
}

#[test]
fn shared_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/validation.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let note = case["note"].as_str().unwrap();
        let bytes = match (case["value"].as_str(), case["value_base64"].as_str()) {
            (Some(v), _) => v.as_bytes().to_vec(),
            (None, Some(b)) => {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).unwrap()
            }
            _ => panic!("{note}: no value"),
        };
        let got = validate(&bytes, &Rules::default());
        let expect = &case["expect"];
        if expect["valid"].as_bool().unwrap() {
            assert!(got.is_ok(), "{note}: {:?}", got.err());
        } else {
            let r = got.expect_err(note);
            assert_eq!(
                r.error.as_str(),
                expect["error"].as_str().unwrap(),
                "{note}"
            );
            assert_eq!(r.field.map(Field::name), expect["field"].as_str(), "{note}");
        }
        n += 1;
    }
    assert!(n >= 37, "only {n} vectors");
}

#[test]
fn size_limit_is_64_kib_inclusive() {
    let fill = |total: usize| {
        let r = render(&base());
        // Whitespace around the object is allowed, so pad with it to an exact size.
        format!("{r}{}", " ".repeat(total - r.len()))
    };
    assert!(check(&fill(MAX_RECORD_BYTES)).is_ok());
    assert_eq!(
        verdict(&fill(MAX_RECORD_BYTES + 1)),
        Some((ErrorCode::TooLarge, None))
    );
    // too_large comes before not_utf8.
    let mut big = fill(MAX_RECORD_BYTES + 1).into_bytes();
    big[3] = 0xff;
    let r = validate(&big, &Rules::default()).unwrap_err();
    assert_eq!(r.error, ErrorCode::TooLarge);
}

#[test]
fn nesting_limit_is_128_levels_inclusive() {
    // The record itself is level 1, so an extra field nested 127 deep makes 128 levels.
    let nested = |levels: usize| {
        with(
            "extra",
            Some(&format!("{}{}", "[".repeat(levels), "]".repeat(levels))),
        )
    };
    assert!(check(&nested(127)).is_ok());
    assert_eq!(verdict(&nested(128)), Some((ErrorCode::NotJson, None)));
    let objects = |levels: usize| {
        with(
            "extra",
            Some(&format!(
                "{}1{}",
                r#"{"a":"#.repeat(levels),
                "}".repeat(levels)
            )),
        )
    };
    assert!(check(&objects(127)).is_ok());
    assert_eq!(verdict(&objects(128)), Some((ErrorCode::NotJson, None)));
    // Brackets inside strings do not nest.
    assert!(check(&with("extra", Some(&format!("\"{}\"", "[".repeat(500))))).is_ok());
    // Deep nesting that is not an object is still not_json, which comes before not_object.
    assert_eq!(verdict(&"[".repeat(129)), Some((ErrorCode::NotJson, None)));
    assert_eq!(
        verdict(&format!("{}{}", "[".repeat(128), "]".repeat(128))),
        Some((ErrorCode::NotObject, None))
    );
}

#[test]
fn document_level_errors_and_their_order() {
    assert_eq!(verdict(""), Some((ErrorCode::NotJson, None)));
    assert_eq!(verdict("   "), Some((ErrorCode::NotJson, None)));
    assert_eq!(verdict("{"), Some((ErrorCode::NotJson, None)));
    assert_eq!(
        verdict(&format!("{} {{}}", render(&base()))),
        Some((ErrorCode::NotJson, None))
    );
    assert_eq!(
        verdict(&format!("\u{feff}{}", render(&base()))),
        Some((ErrorCode::NotJson, None))
    );
    assert!(check(&format!(" \n\t{}\r\n ", render(&base()))).is_ok());
    for not_object in ["[]", "[1,{}]", "42", "\"x\"", "true", "null"] {
        assert_eq!(
            verdict(not_object),
            Some((ErrorCode::NotObject, None)),
            "{not_object}"
        );
    }
    // A broken array is not JSON before it is not an object.
    assert_eq!(verdict("[1,"), Some((ErrorCode::NotJson, None)));
    // not_utf8 comes before not_json.
    let r = validate(b"{\xff", &Rules::default()).unwrap_err();
    assert_eq!(r.error, ErrorCode::NotUtf8);
    // An empty object: the first required field is missing.
    assert_eq!(
        verdict("{}"),
        Some((ErrorCode::MissingField, Some(Field::TransactionId)))
    );
}

#[test]
fn missing_and_null_fields() {
    for f in Field::ALL {
        let absent = verdict(&with(f.name(), None));
        let null = verdict(&with(f.name(), Some("null")));
        if f.required() {
            assert_eq!(
                absent,
                Some((ErrorCode::MissingField, Some(f))),
                "{f} absent"
            );
            assert_eq!(null, Some((ErrorCode::MissingField, Some(f))), "{f} null");
        } else {
            assert_eq!(absent, None, "{f} absent");
            assert_eq!(null, None, "{f} null");
        }
    }
}

#[test]
fn wrong_json_types() {
    for f in Field::ALL {
        let wrong: &[&str] = if f == Field::Amount {
            &[r#""42.50""#, "true", "[42.5]", r#"{"v":42.5}"#]
        } else {
            &["42", "true", "false", r#"["x"]"#, r#"{"v":"x"}"#, "-1"]
        };
        for w in wrong {
            assert_eq!(
                verdict(&with(f.name(), Some(w))),
                Some((ErrorCode::WrongType, Some(f))),
                "{f} = {w}"
            );
        }
    }
}

#[test]
fn precedence_types_before_values_each_in_field_order() {
    // A wrong type late in the order beats an invalid value early in it.
    let mut f = base();
    f[1].1 = r#""bad""#.into(); // account_id invalid
    f[10].1 = "17".into(); // event_time wrong type
    assert_eq!(
        verdict(&render(&f)),
        Some((ErrorCode::WrongType, Some(Field::EventTime)))
    );
    // Missing and wrong type share a phase: the first field in order wins.
    let mut f = base();
    f[2].1 = "\"1\"".into(); // amount wrong type
    f.remove(3); // currency missing
    assert_eq!(
        verdict(&render(&f)),
        Some((ErrorCode::WrongType, Some(Field::Amount)))
    );
    let mut f = base();
    f.remove(0); // transaction_id missing
    f[1].1 = "\"1\"".into();
    assert_eq!(
        verdict(&render(&f)),
        Some((ErrorCode::MissingField, Some(Field::TransactionId)))
    );
    // Among invalid values, the first in order wins, whatever the order in the object.
    let mut f = base();
    f[9].1 = format!("\"{}\"", "x".repeat(101)); // city
    f[3].1 = r#""XXX""#.into(); // currency
    f.reverse();
    assert_eq!(verdict(&render(&f)), invalid(Field::Currency));
}

#[test]
fn transaction_id() {
    let v = |s: &str| string_verdict("transaction_id", s);
    assert_eq!(v("1de9ea66-70d3-4a1f-8735-df5ef7697fb9"), None);
    assert_eq!(v("1DE9EA66-70D3-4A1F-8735-DF5EF7697FB9"), None);
    assert_eq!(v("00000000-0000-0000-0000-000000000000"), None);
    for bad in [
        "1de9ea6670d34a1f8735df5ef7697fb9",
        "{1de9ea66-70d3-4a1f-8735-df5ef7697fb9}",
        "urn:uuid:1de9ea66-70d3-4a1f-8735-df5ef7697fb9",
        "1de9ea66-70d3-4a1f-8735-df5ef7697fb",
        "1de9ea66-70d3-4a1f-8735-df5ef7697fb99",
        "1de9ea66-70d3-4a1f-8735-df5ef7697fbg",
        "1de9ea6-670d3-4a1f-8735-df5ef7697fb9",
        "",
    ] {
        assert_eq!(v(bad), invalid(Field::TransactionId), "{bad}");
    }
    let t = check(&with(
        "transaction_id",
        Some(r#""1DE9EA66-70D3-4A1F-8735-DF5EF7697FB9""#),
    ))
    .unwrap();
    assert_eq!(
        t.transaction_id.to_string(),
        "1de9ea66-70d3-4a1f-8735-df5ef7697fb9"
    );
}

#[test]
fn account_id() {
    let v = |s: &str| string_verdict("account_id", s);
    assert_eq!(v("ACC0000000"), None);
    assert_eq!(v("ACC9999999"), None);
    for bad in [
        "ACC000000",
        "ACC00000000",
        "acc0000000",
        "ACX0000000",
        "ACC000000a",
        " ACC0000000",
        "ACC０000000",
    ] {
        assert_eq!(v(bad), invalid(Field::AccountId), "{bad}");
    }
}

#[test]
fn amount_bounds() {
    let v = |s: &str| verdict(&with("amount", Some(s)));
    for ok in [
        "0.01",
        "1",
        "10.10",
        "10.100",
        "1e9",
        "1000000000",
        "1000000000.00",
        "999999999.99",
        "4.2e1",
        "0.42E2",
    ] {
        assert_eq!(v(ok), None, "{ok}");
    }
    for bad in [
        "0",
        "0.0",
        "-0",
        "-0.01",
        "-42",
        "0.001",
        "10.005",
        "1000000000.01",
        "1e10",
        "1e-3",
        "1E400",
    ] {
        assert_eq!(v(bad), invalid(Field::Amount), "{bad}");
    }
    // Invalid JSON number forms are not JSON at all.
    for broken in ["01", "1.", ".5", "+1", "1e", "NaN", "Infinity"] {
        assert_eq!(v(broken), Some((ErrorCode::NotJson, None)), "{broken}");
    }
    assert_eq!(
        check(&with("amount", Some("10.1"))).unwrap().amount.cents(),
        1010
    );
}

#[test]
fn currency_is_a_key_of_the_rules_fx_rates() {
    for c in Rules::default().fx_rates_usd.keys() {
        assert_eq!(string_verdict("currency", c.as_str()), None, "{c}");
    }
    for bad in ["usd", "XXX", "US", "USDD", ""] {
        assert_eq!(
            string_verdict("currency", bad),
            invalid(Field::Currency),
            "{bad}"
        );
    }
    let rules =
        Rules::from_yaml("fx_rates_usd: {XAU: 2650}", std::path::Path::new("r.yaml")).unwrap();
    assert!(validate(with("currency", Some(r#""XAU""#)).as_bytes(), &rules).is_ok());
    assert_eq!(
        validate(render(&base()).as_bytes(), &rules)
            .unwrap_err()
            .field,
        Some(Field::Currency)
    );
}

#[test]
fn merchant_id_is_1_to_64_characters() {
    let v = |s: &str| string_verdict("merchant_id", s);
    assert_eq!(v("M"), None);
    assert_eq!(v(&"m".repeat(64)), None);
    assert_eq!(v(&"é".repeat(64)), None);
    assert_eq!(v(""), invalid(Field::MerchantId));
    assert_eq!(v(&"m".repeat(65)), invalid(Field::MerchantId));
    assert_eq!(v(&"é".repeat(65)), invalid(Field::MerchantId));
    // Escapes are decoded before counting and storing.
    let t = check(&with("merchant_id", Some(r#""M\u002d77""#))).unwrap();
    assert_eq!(t.merchant_id, "M-77");
    assert_eq!(
        verdict(&with("merchant_id", Some(r#""M\ud800""#))),
        invalid(Field::MerchantId)
    );
}

#[test]
fn merchant_category_is_four_digits() {
    let v = |s: &str| string_verdict("merchant_category", s);
    assert_eq!(v("0000"), None);
    assert_eq!(v("9999"), None);
    for bad in ["123", "12345", "12a4", "", "１２３４"] {
        assert_eq!(v(bad), invalid(Field::MerchantCategory), "{bad}");
    }
}

#[test]
fn closed_sets_are_case_sensitive() {
    for t in TransactionType::ALL {
        assert_eq!(string_verdict("transaction_type", t.as_str()), None);
    }
    for c in Channel::ALL {
        assert_eq!(string_verdict("channel", c.as_str()), None);
    }
    for bad in ["Purchase", "PURCHASE", "buy", ""] {
        assert_eq!(
            string_verdict("transaction_type", bad),
            invalid(Field::TransactionType),
            "{bad}"
        );
    }
    for bad in ["POS", "web", ""] {
        assert_eq!(
            string_verdict("channel", bad),
            invalid(Field::Channel),
            "{bad}"
        );
    }
}

#[test]
fn country_is_two_upper_case_letters() {
    assert_eq!(string_verdict("country", "GB"), None);
    for bad in ["gb", "G", "GBR", "G1", ""] {
        assert_eq!(
            string_verdict("country", bad),
            invalid(Field::Country),
            "{bad}"
        );
    }
}

#[test]
fn city_is_at_most_100_characters() {
    assert_eq!(string_verdict("city", ""), None);
    assert_eq!(string_verdict("city", &"c".repeat(100)), None);
    assert_eq!(string_verdict("city", &"ü".repeat(100)), None);
    assert_eq!(
        string_verdict("city", &"c".repeat(101)),
        invalid(Field::City)
    );
    assert_eq!(
        string_verdict("city", &"ü".repeat(101)),
        invalid(Field::City)
    );
}

#[test]
fn event_time() {
    let v = |s: &str| string_verdict("event_time", s);
    for ok in [
        "2000-01-01T00:00:00Z",
        "2099-12-31T23:59:59.999999Z",
        "2026-03-10T09:30:00+05:30",
        "2026-03-10T09:30:00.123456789-08:00",
    ] {
        assert_eq!(v(ok), None, "{ok}");
    }
    for bad in [
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2026-03-10T09:30:00",
        "2026-02-30T00:00:00Z",
        "2026-03-10",
        "1773135000",
    ] {
        assert_eq!(v(bad), invalid(Field::EventTime), "{bad}");
    }
    let t = check(&with(
        "event_time",
        Some(r#""2026-03-10T09:30:00.1234567+01:00""#),
    ))
    .unwrap();
    assert_eq!(t.event_time.to_string(), "2026-03-10T08:30:00.123456Z");
}

#[test]
fn unknown_fields_are_ignored_and_known_ones_may_not_repeat() {
    let mut f = base();
    f.push((
        "note",
        r#"{"deep": [1, 2, {"x": null}], "n": 1e999}"#.into(),
    ));
    f.push(("Amount", r#""not the amount""#.into()));
    assert!(check(&render(&f)).is_ok());

    let mut f = base();
    f.push(("city", r#""Leeds""#.into()));
    assert_eq!(verdict(&render(&f)), invalid(Field::City));
    let mut f = base();
    f.push(("amount", "1".into()));
    assert_eq!(verdict(&render(&f)), invalid(Field::Amount));
}

#[test]
fn canonical_json_round_trips() {
    let t = check(&with(
        "event_time",
        Some(r#""2026-03-10T09:30:00.5+02:00""#),
    ))
    .unwrap();
    let json = t.to_json();
    assert_eq!(check(&json).unwrap(), t);
    assert!(json.contains(r#""amount":42.50"#), "{json}");
    assert!(
        json.contains(r#""event_time":"2026-03-10T07:30:00.500000Z""#),
        "{json}"
    );
}

// ---- property tests ----

prop_compose! {
    fn text(max: usize)(s in proptest::collection::vec(prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::char::any(),
    ], 1..=max)) -> String {
        s.into_iter().collect()
    }
}

fn transaction() -> impl Strategy<Value = Transaction> {
    let currencies: Vec<Currency> = Rules::default().fx_rates_usd.keys().copied().collect();
    (
        any::<u128>(),
        0u32..=9_999_999,
        1i64..=crate::amount::MAX_CENTS,
        proptest::sample::select(currencies),
        text(64),
        proptest::option::of(proptest::array::uniform4(b'0'..=b'9')),
        proptest::sample::select(TransactionType::ALL),
        proptest::sample::select(Channel::ALL),
        proptest::option::of(proptest::array::uniform2(b'A'..=b'Z')),
        proptest::option::of(text(100)),
        // 2000-01-01T00:00:00Z to 2099-12-31T23:59:59.999999Z, but inside a day of the edges
        // so that any offset keeps the written year in range.
        946_771_200_000_000i64..4_102_358_400_000_000,
    )
        .prop_map(
            |(id, acc, cents, currency, merchant, mcc, tt, ch, country, city, t)| Transaction {
                transaction_id: Uuid::from_u128(id),
                account_id: AccountId::new(acc).unwrap(),
                amount: Amount::from_cents(cents).unwrap(),
                currency,
                merchant_id: merchant.into(),
                merchant_category: mcc,
                transaction_type: tt,
                channel: ch,
                country,
                city: city.map(Into::into),
                event_time: EventTime::from_micros(t),
            },
        )
}

/// Renders a transaction in one of the many JSON texts that mean it: any field order, any
/// whitespace, upper-case ids, equivalent amount spellings, any offset, extra fields.
fn rendering(t: &Transaction) -> impl Strategy<Value = String> {
    let t = t.clone();
    (
        any::<u64>(),
        any::<bool>(),
        0usize..4,
        -14 * 60i64..=14 * 60,
        proptest::sample::select(vec!["", " ", "\n", "\t "]),
    )
        .prop_map(move |(shuffle_seed, upper, amount_form, offset_min, ws)| {
            let id = t.transaction_id.as_hyphenated().to_string();
            let id = if upper { id.to_uppercase() } else { id };
            let cents = t.amount.cents();
            let amount = match amount_form {
                0 => format!("{}.{:02}", cents / 100, cents % 100),
                1 => format!("{}.{:02}0000", cents / 100, cents % 100),
                2 => format!("{cents}e-2"),
                _ => format!("{}E-3", cents * 10),
            };
            let local = EventTime::from_micros(t.event_time.as_micros() + offset_min * 60_000_000);
            let local = local.to_string();
            let sign = if offset_min < 0 { '-' } else { '+' };
            let time = format!(
                "{}{sign}{:02}:{:02}",
                &local[..local.len() - 1],
                offset_min.abs() / 60,
                offset_min.abs() % 60
            );
            let s = |v: &str| serde_json::to_string(v).unwrap();
            let mut fields = vec![
                ("transaction_id", s(&id)),
                ("account_id", s(&t.account_id.to_string())),
                ("amount", amount),
                ("currency", s(t.currency.as_str())),
                ("merchant_id", s(&t.merchant_id)),
                ("transaction_type", s(t.transaction_type.as_str())),
                ("channel", s(t.channel.as_str())),
                ("event_time", s(&time)),
                ("extra", r#"{"k": [1, "two", null]}"#.to_owned()),
            ];
            if let Some(m) = t.merchant_category_str() {
                fields.push(("merchant_category", s(m)));
            }
            if let Some(c) = t.country_str() {
                fields.push(("country", s(c)));
            }
            if let Some(c) = &t.city {
                fields.push(("city", s(c)));
            }
            // A deterministic shuffle from the drawn seed.
            let mut x = shuffle_seed | 1;
            for i in (1..fields.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                fields.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{ws}{k:?}{ws}:{ws}{v}"))
                .collect();
            format!("{ws}{{{}{ws}}}{ws}", body.join(","))
        })
}

/// One way to break one field, and the verdict it must give.
#[derive(Clone, Debug)]
enum Break {
    Remove,
    Null,
    WrongType(&'static str),
    Invalid(String),
}

fn invalid_values(f: Field) -> Vec<&'static str> {
    match f {
        Field::TransactionId => vec![r#""not-a-uuid""#, r#""1de9ea6670d34a1f8735df5ef7697fb9""#],
        Field::AccountId => vec![r#""ACC123""#, r#""acc1234567""#],
        Field::Amount => vec!["0", "-1", "10.005", "1000000000.01"],
        Field::Currency => vec![r#""XXX""#, r#""usd""#],
        Field::MerchantId => vec![r#""""#],
        Field::MerchantCategory => vec![r#""12""#, r#""abcd""#],
        Field::TransactionType => vec![r#""gift""#],
        Field::Channel => vec![r#""fax""#],
        Field::Country => vec![r#""gbr""#],
        Field::City => vec![],
        Field::EventTime => vec![r#""1999-01-01T00:00:00Z""#, r#""2026-01-01T00:00:00""#],
    }
}

fn a_break() -> impl Strategy<Value = (Field, Break)> {
    proptest::sample::select(Field::ALL.to_vec()).prop_flat_map(|f| {
        let wrong = if f == Field::Amount {
            vec!["\"1\"", "true", "[]"]
        } else {
            vec!["1", "false", "{}"]
        };
        let mut options: Vec<BoxedStrategy<Break>> = vec![proptest::sample::select(wrong)
            .prop_map(Break::WrongType)
            .boxed()];
        if f.required() {
            options.push(Just(Break::Remove).boxed());
            options.push(Just(Break::Null).boxed());
        }
        let invalid = invalid_values(f);
        if !invalid.is_empty() {
            options.push(
                proptest::sample::select(invalid)
                    .prop_map(|v| Break::Invalid(v.to_owned()))
                    .boxed(),
            );
        }
        if f == Field::City {
            options.push(Just(Break::Invalid(format!("\"{}\"", "c".repeat(101)))).boxed());
        }
        (Just(f), proptest::strategy::Union::new(options))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// (a) Every valid transaction, however it is spelt, validates back to itself.
    #[test]
    fn valid_records_round_trip((t, json) in transaction().prop_flat_map(|t| (Just(t.clone()), rendering(&t)))) {
        let got = validate(json.as_bytes(), &Rules::default());
        prop_assert_eq!(got.as_ref().ok(), Some(&t), "{}: {:?}", json, got.as_ref().err());
        prop_assert_eq!(validate(t.to_json().as_bytes(), &Rules::default()).ok(), Some(t));
    }

    /// (b) Breaking any one field of a valid record gives that field and the expected code.
    #[test]
    fn one_broken_field_is_named(t in transaction(), (f, how) in a_break()) {
        let json = t.to_json();
        let mut obj: Vec<(String, String)> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        // serde_json::Value would turn the amount into a float: keep its exact text.
        let amount = format!("{}", t.amount);
        for (k, v) in obj.iter_mut() { if k == "amount" { *v = amount.clone(); } }
        obj.retain(|(k, _)| k != f.name());
        let expected = match &how {
            Break::Remove => (ErrorCode::MissingField, f),
            Break::Null => { obj.push((f.name().into(), "null".into())); (ErrorCode::MissingField, f) }
            Break::WrongType(v) => { obj.push((f.name().into(), (*v).into())); (ErrorCode::WrongType, f) }
            Break::Invalid(v) => { obj.push((f.name().into(), v.clone())); (ErrorCode::InvalidValue, f) }
        };
        let body: Vec<String> = obj.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        let broken = format!("{{{}}}", body.join(","));
        let r = validate(broken.as_bytes(), &Rules::default()).unwrap_err();
        prop_assert_eq!((r.error, r.field), (expected.0, Some(expected.1)), "{}", broken);
    }

    /// (c) Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate(&bytes, &Rules::default());
    }

    /// (c) Nor do valid records with a few bytes changed, which reach the deeper paths.
    #[test]
    fn mutated_records_never_panic(t in transaction(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = t.to_json().into_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = validate(&bytes, &Rules::default());
    }
}

#[test]
fn a_deferred_verdict_resolves_under_each_rules_version() {
    let mut f = base();
    f[3].1 = r#""XAU""#.into(); // currency only some rules accept
    f[9].1 = format!("\"{}\"", "c".repeat(101)); // city invalid, after the currency
    let record = render(&f);
    let gold =
        Rules::from_yaml("fx_rates_usd: {XAU: 2650}", std::path::Path::new("r.yaml")).unwrap();
    let deferred = validate_deferred(record.as_bytes());
    let under = |rules: &Rules| {
        deferred
            .clone()
            .resolve(rules)
            .map_err(|r| (r.error, r.field))
    };
    assert_eq!(
        under(&Rules::default()),
        Err((ErrorCode::InvalidValue, Some(Field::Currency)))
    );
    assert_eq!(
        under(&gold),
        Err((ErrorCode::InvalidValue, Some(Field::City)))
    );
    // An error before the currency in the order is final whatever the rules.
    f[1].1 = r#""bad""#.into();
    let deferred = validate_deferred(render(&f).as_bytes());
    assert!(matches!(deferred, Deferred::Final(ref r) if r.field == Some(Field::AccountId)));
    // A valid record carries its event time before the rules are known.
    let ok = validate_deferred(render(&base()).as_bytes());
    assert_eq!(
        ok.event_time().unwrap().to_string(),
        "2026-03-10T09:30:00.000000Z"
    );
}

// ---- the flat-object fast path against the parser ----

/// Bytes that matter to JSON's grammar, and a few that do not.
const JSON_BYTES: &[u8] = b"{}[]\":,\\ \t\n\r0123456789.eE+-nulltruefalsex\x01\x7f";

/// A record with a few bytes replaced, inserted or removed, mostly by ones JSON's grammar
/// cares about: every way a fast path could misread a document the parser reads differently.
fn mutated(text: String) -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop_oneof![
            4 => proptest::sample::select(JSON_BYTES.to_vec()),
            1 => any::<u8>(),
        ],
    );
    proptest::collection::vec(edit, 0..4).prop_map(move |edits| {
        let mut b = text.clone().into_bytes();
        for (at, kind, byte) in edits {
            let i = at.index(b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 if i < b.len() => {
                    b.remove(i);
                }
                _ => b.insert(i, byte),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

/// The fields the parser reads (raw texts, repeats), or `None` for a rejection.
fn parsed(text: &str) -> Option<Fields<'_>> {
    (!too_deep(text.as_bytes()))
        .then(|| parse_object(text).ok())
        .flatten()
        .as_ref()
        .map(fields)
}

type Fields<'a> = ([Option<&'a str>; 11], u16);

fn fields<'a>(s: &Slots<'a>) -> Fields<'a> {
    (s.raw, s.repeated)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Whatever the fast path reads, the parser reads the same; and it reads every record the
    /// generator writes, or it would be no fast path.
    #[test]
    fn the_flat_scan_reads_what_the_parser_reads(
        text in transaction()
            .prop_flat_map(|t| prop_oneof![Just(t.to_json()), rendering(&t)])
            .prop_flat_map(mutated)
    ) {
        if let Some(fast) = flat::flat_object(&text) {
            prop_assert_eq!(Some(fields(&fast)), parsed(&text), "{}", text);
        }
    }

    /// Every record written without escapes (the generator's are).
    #[test]
    fn the_flat_scan_reads_canonical_records(t in transaction()) {
        let json = t.to_json();
        let fast = flat::flat_object(&json);
        prop_assert_eq!(fast.is_some(), !json.contains('\\'), "{}", json);
        if fast.is_some() {
            prop_assert_eq!(fast.as_ref().map(fields), parsed(&json));
        }
    }
}

#[test]
fn the_flat_scan_leaves_the_rest_to_the_parser() {
    for text in [
        r#"{"a": {"b": 1}}"#,
        r#"{"a": [1]}"#,
        r#"{"city": "Z\u00fcrich"}"#,
        r#"{"amount": 01}"#,
        r#"{"amount": 1.}"#,
        r#"{"amount": -}"#,
        r#"{"amount": 1e}"#,
        r#"{"a": nul}"#,
        r#"{"a": 1,}"#,
        r#"{"a" 1}"#,
        r#"{"a": 1} x"#,
        "{\"a\": \"\x01\"}",
        "[1]",
        "",
    ] {
        assert_eq!(flat::flat_object(text), None, "{text}");
    }
    let slots = flat::flat_object(" {\"amount\" : -0.5e+3 ,\"city\":null, \"x\": true}\n").unwrap();
    assert_eq!(slots.raw[Field::Amount as usize], Some("-0.5e+3"));
    assert_eq!(slots.raw[Field::City as usize], Some("null"));
    assert_eq!(slots.get(Field::City), None);
}

/// The string scan reads eight bytes at a time: each kind of byte at each place in a word.
#[test]
fn the_flat_scan_finds_every_byte_in_a_word() {
    for len in 0..20 {
        for at in 0..=len {
            for inserted in [
                "", "\\\"", "\\\\", "\\u00e9", "\u{1}", "\u{1f}", "\u{7f}", "é", "€",
            ] {
                let mut city = "c".repeat(len);
                city.insert_str(at, inserted);
                let text = format!("{{\"city\":\"{city}\",\"amount\":1}}");
                let fast = flat::flat_object(&text);
                let plain = !inserted.starts_with('\\') && !inserted.starts_with(|c| c < ' ');
                assert_eq!(fast.is_some(), plain, "{text}");
                if plain {
                    assert_eq!(fast.as_ref().map(fields), parsed(&text), "{text}");
                    assert_eq!(
                        fast.unwrap().raw[Field::City as usize],
                        Some(&text[8..text.len() - 12])
                    );
                }
            }
        }
    }
}
