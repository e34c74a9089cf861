//! Property tests of the validator (issue 17): a valid message with exactly one required field
//! spoiled is refused with the kind that names that field. The valid messages are built here from
//! ARCHITECTURE §4, not by the generator, so the two cannot share a mistake.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::catalog;
use super::transaction::{Field, MAX_MERCHANT_CHARS, validate};

/// The fields a message must have, in the validator's order.
const REQUIRED: [Field; 9] = [
    Field::TxId,
    Field::UserId,
    Field::Amount,
    Field::Currency,
    Field::Merchant,
    Field::Category,
    Field::Timestamp,
    Field::Status,
    Field::PaymentMethod,
];

fn one_of(words: &[&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(words.to_vec()).prop_map(String::from)
}

/// Non-zero cents within ±1,000,000, written with 0–2 decimals (trailing zeros included).
fn amount() -> impl Strategy<Value = Value> {
    (1i64..=100_000_000, any::<bool>(), 0usize..3).prop_map(|(cents, refund, decimals)| {
        let cents = if refund { -cents } else { cents };
        let text = match decimals {
            0 => (cents / 100).max(1).to_string(),
            1 => format!("{:.1}", cents as f64 / 100.0),
            _ => format!("{}.{:02}", cents / 100, (cents % 100).abs()),
        };
        // `-0.5` has no whole part to carry the sign.
        let text = if cents < 0 && !text.starts_with('-') {
            format!("-{text}")
        } else {
            text
        };
        let text = if text.parse::<f64>().unwrap() == 0.0 {
            "1".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).unwrap()
    })
}

/// Merchant names: any characters (quotes, backslashes, controls, emoji), 1–255 of them, not blank,
/// no NUL (PostgreSQL text cannot hold one).
fn merchant() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,255}".prop_filter("not blank", |m| !m.trim().is_empty())
}

/// RFC 3339 with an offset, written in years 2000–2100.
fn timestamp() -> impl Strategy<Value = String> {
    (
        2000i32..=2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        prop_oneof![
            Just("Z".to_string()),
            (-14i32..=14, prop_oneof![Just(0u32), Just(30)]).prop_map(|(h, m)| format!(
                "{}{:02}:{m:02}",
                if h < 0 { '-' } else { '+' },
                h.abs()
            )),
        ],
        proptest::option::of(0u32..1000),
    )
        .prop_map(|(y, mo, d, h, mi, s, offset, millis)| {
            let fraction = millis.map_or(String::new(), |ms| format!(".{ms:03}"));
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}{offset}")
        })
}

fn valid_message() -> impl Strategy<Value = Map<String, Value>> {
    (
        any::<u128>(),
        any::<u128>(),
        amount(),
        one_of(&catalog::CURRENCIES),
        merchant(),
        one_of(&catalog::STREAM_CATEGORIES),
        timestamp(),
        one_of(&catalog::STATUSES),
        one_of(&catalog::PAYMENT_METHODS),
    )
        .prop_map(
            |(tx, user, amount, currency, merchant, category, timestamp, status, method)| {
                let value = json!({
                    "tx_id": Uuid::from_u128(tx).to_string(),
                    "user_id": Uuid::from_u128(user).hyphenated().to_string(),
                    "amount": amount,
                    "currency": currency,
                    "merchant": merchant,
                    "category": category,
                    "timestamp": timestamp,
                    "status": status,
                    "payment_method": method,
                });
                let Value::Object(map) = value else {
                    unreachable!()
                };
                map
            },
        )
}

/// One way of spoiling a field.
#[derive(Debug, Clone)]
enum Mutation {
    Remove,
    /// Replace the value with this JSON; the expected kind follows from the field and the value.
    Replace(Value),
}

/// A value of another JSON type than the field's, or a value of the right type that the rules
/// refuse.
fn mutation(field: Field) -> BoxedStrategy<Mutation> {
    let other_types = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        Just(json!([1, "x"])),
        Just(json!({"nested": true})),
    ];
    let bad_values: BoxedStrategy<Value> = match field {
        Field::TxId | Field::UserId => prop_oneof![
            any::<i64>().prop_map(Value::from),
            ".{0,40}"
                .prop_filter("not a UUID", |s| Uuid::try_parse(s).is_err())
                .prop_map(Value::from),
        ]
        .boxed(),
        Field::Amount => prop_oneof![
            "-?[0-9]{1,3}(\\.[0-9]{2})?".prop_map(Value::from),
            Just(json!(0)),
            Just(serde_json::from_str("-0.00").unwrap()),
            (1i64..1000).prop_map(|n| serde_json::from_str(&format!("{n}.001")).unwrap()),
            (1_000_001i64..i64::MAX).prop_map(Value::from),
        ]
        .boxed(),
        Field::Merchant => prop_oneof![
            "[ \t\n]{0,5}".prop_map(Value::from),
            "[a-z]{256,300}".prop_map(Value::from),
            "[a-z]{0,3}\u{0}[a-z]{0,3}".prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
        ]
        .boxed(),
        Field::Timestamp => prop_oneof![
            "[0-9: T-]{0,25}".prop_map(Value::from),
            (0i32..2000).prop_map(|y| Value::from(format!("{y:04}-06-15T12:00:00Z"))),
            (2101i32..=9999).prop_map(|y| Value::from(format!("{y:04}-06-15T12:00:00Z"))),
            any::<i64>().prop_map(Value::from),
        ]
        .boxed(),
        // The closed vocabularies: any other string, or a number.
        _ => prop_oneof![
            ".{0,20}".prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
        ]
        .boxed(),
    };
    prop_oneof![
        Just(Mutation::Remove),
        other_types.prop_map(Mutation::Replace),
        bad_values.prop_map(Mutation::Replace),
    ]
    .boxed()
}

/// The kind the validator must report for `mutation` of `field`, `None` when the "spoiled" value
/// happens to be valid (a vocabulary word drawn at random), which the caller skips.
fn expected_kind(field: Field, mutation: &Mutation) -> Option<String> {
    let name = field.name();
    let value = match mutation {
        Mutation::Remove => return Some(format!("missing_{name}")),
        Mutation::Replace(Value::Null) => return Some(format!("null_{name}")),
        Mutation::Replace(value) => value,
    };
    let kind = match (field, value) {
        (Field::Amount, Value::String(_)) => "amount_as_string".to_string(),
        (Field::Amount, Value::Number(n)) => {
            let text = n.to_string();
            let decimal: rust_decimal::Decimal = text.parse().ok()?;
            if decimal.is_zero() {
                "zero_amount".into()
            } else if decimal.abs() > 1_000_000.into() {
                "amount_too_large".into()
            } else {
                "too_many_decimals".into()
            }
        }
        (Field::TxId | Field::UserId, Value::String(_)) => "bad_uuid".into(),
        (Field::Merchant, Value::String(s)) if s.trim().is_empty() => "merchant_empty".into(),
        (Field::Merchant, Value::String(s)) if s.chars().count() > MAX_MERCHANT_CHARS => {
            "merchant_too_long".into()
        }
        (Field::Merchant, Value::String(s)) if s.contains('\0') => "nul_character".into(),
        (Field::Timestamp, Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) if super::transaction::EVENT_YEARS.contains(&chrono::Datelike::year(&t)) => {
                return None;
            }
            Ok(_) => "timestamp_out_of_range".into(),
            Err(_) => "bad_timestamp".into(),
        },
        (
            Field::Currency | Field::Category | Field::Status | Field::PaymentMethod,
            Value::String(s),
        ) => {
            let vocabulary: &[&str] = match field {
                Field::Currency => &catalog::CURRENCIES,
                Field::Category => &catalog::STREAM_CATEGORIES,
                Field::Status => &catalog::STATUSES,
                _ => &catalog::PAYMENT_METHODS,
            };
            if vocabulary.contains(&s.as_str()) {
                return None;
            }
            format!("unknown_{name}")
        }
        (_, Value::String(_)) => unreachable!("every string mutation of {name} is listed"),
        _ => format!("{name}_wrong_type"),
    };
    Some(kind)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_message_passes(message in valid_message()) {
        let bytes = serde_json::to_vec(&message).unwrap();
        if let Err(rejection) = validate(&bytes) {
            prop_assert!(false, "{rejection}: {}", String::from_utf8_lossy(&bytes));
        }
    }

    /// Each case spoils every required field in turn, one at a time, each its own way.
    #[test]
    fn one_spoiled_required_field_is_refused_with_its_kind(
        message in valid_message(),
        mutations in REQUIRED.iter().map(|field| mutation(*field)).collect::<Vec<_>>(),
    ) {
        for (field, mutation) in REQUIRED.into_iter().zip(mutations) {
            let Some(expected) = expected_kind(field, &mutation) else {
                continue;
            };
            let mut spoiled = message.clone();
            match &mutation {
                Mutation::Remove => {
                    spoiled.remove(field.name());
                }
                Mutation::Replace(value) => {
                    spoiled.insert(field.name().to_string(), value.clone());
                }
            }
            let bytes = serde_json::to_vec(&spoiled).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let rejection = match validate(&bytes) {
                Ok(_) => return Err(TestCaseError::fail(format!("accepted: {text}"))),
                Err(rejection) => rejection,
            };
            prop_assert_eq!(rejection.kind.as_str(), expected.as_str(), "{}", text);
            // Kinds like `bad_uuid` serve two fields; the message always says which.
            let named = format!("`{}`", field.name());
            prop_assert!(rejection.message.contains(&named), "{}", rejection.message);
        }
    }
}
