//! The stream message of ARCHITECTURE §4 and its validator.
//!
//! [`validate`] is the single definition of "valid" for the producer's self-checks, the sink and
//! the HTTP ingest endpoint. It runs once per message on the hot path, so it parses with
//! `serde_json` in one pass, borrowing strings from the input, and never allocates for a field it
//! only compares against the catalog. Every rejection carries a stable snake_case
//! [`RejectionKind`], which the sink writes to `transactions_rejected.error_kind` and to the
//! `error.kind` header of dead letters: dashboards and tests match on it, so never rename one.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

#[cfg(test)]
use super::catalog;
// The bounds live with the rest of the rules; re-exported where they always were.
pub use super::rules::{EVENT_YEARS, MAX_ABS_AMOUNT, MAX_AMOUNT_DECIMALS, MAX_MERCHANT_CHARS};
use super::rules::{Rules, Shape, Vocabulary, field_spec};

/// A message that passed [`validate`]. Closed vocabularies are interned as the catalog's
/// `&'static str`, so comparing them later is cheap and they cannot hold anything unexpected.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub tx_id: Uuid,
    pub user_id: Uuid,
    /// At most two decimals, non-zero, |amount| ≤ 1,000,000; negative for refunds.
    pub amount: Decimal,
    pub currency: &'static str,
    pub merchant: String,
    pub category: &'static str,
    /// The message's `timestamp`, converted to UTC.
    pub event_time: DateTime<Utc>,
    pub status: &'static str,
    pub payment_method: &'static str,
    pub city: Option<String>,
    pub country: Option<String>,
    pub source_system: Option<String>,
    pub transaction_type: Option<String>,
    pub processing_time_ms: Option<i32>,
}

/// Why a message is not a valid transaction: a stable kind plus a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

impl Rejection {
    fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for Rejection {}

/// Declares the message fields once, with the kinds reported when one is missing, null or of the
/// wrong JSON type, so that the names can never drift apart.
macro_rules! fields {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// A field of the stream message that the validator knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field { $($variant),+ }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant),+];

            /// The JSON name of the field.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name),+ }
            }

            fn from_key(key: &str) -> Option<Field> {
                match key { $($name => Some(Field::$variant),)+ _ => None }
            }

            fn missing_kind(self) -> &'static str {
                match self { $(Field::$variant => concat!("missing_", $name)),+ }
            }

            fn null_kind(self) -> &'static str {
                match self { $(Field::$variant => concat!("null_", $name)),+ }
            }

            fn wrong_type_kind(self) -> &'static str {
                match self { $(Field::$variant => concat!($name, "_wrong_type")),+ }
            }
        }
    };
}

fields! {
    TxId => "tx_id",
    UserId => "user_id",
    Amount => "amount",
    Currency => "currency",
    Merchant => "merchant",
    Category => "category",
    Timestamp => "timestamp",
    Status => "status",
    PaymentMethod => "payment_method",
    City => "city",
    Country => "country",
    SourceSystem => "source_system",
    TransactionType => "transaction_type",
    ProcessingTimeMs => "processing_time_ms",
}

/// The stable reason of a rejection; [`RejectionKind::as_str`] is what gets stored and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// UTF-8, but not a JSON document.
    NotJson,
    /// JSON, but an array, string, number, boolean or null instead of an object.
    NotObject,
    /// `{}`.
    EmptyObject,
    /// A known field appears twice: which one counts would be a guess.
    DuplicateField(Field),
    Missing(Field),
    Null(Field),
    /// e.g. a number where a string belongs (amount as a string has its own kind).
    WrongType(Field),
    /// tx_id or user_id is a string but not a UUID.
    BadUuid,
    AmountAsString,
    ZeroAmount,
    AmountTooLarge,
    TooManyDecimals,
    UnknownCurrency,
    UnknownCategory,
    UnknownStatus,
    UnknownPaymentMethod,
    /// Not RFC 3339 with an offset.
    BadTimestamp,
    /// RFC 3339, but outside the years 2000–2100.
    TimestampOutOfRange,
    MerchantEmpty,
    MerchantTooLong,
    /// processing_time_ms is not a non-negative 32-bit integer.
    BadProcessingTime,
    /// Beyond [`super::limits::MAX_MESSAGE_BYTES`]; not parsed.
    TooLarge,
    /// Nested beyond [`super::limits::MAX_DEPTH`]; not parsed.
    TooDeep,
    /// More than [`super::limits::MAX_KEYS`] object keys; not parsed.
    TooManyKeys,
    /// A text field we store holds U+0000, which PostgreSQL text cannot.
    NulCharacter(Field),
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "invalid_utf8",
            Self::NotJson => "not_json",
            Self::NotObject => "not_object",
            Self::EmptyObject => "empty_object",
            Self::DuplicateField(_) => "duplicate_field",
            Self::Missing(field) => field.missing_kind(),
            Self::Null(field) => field.null_kind(),
            Self::WrongType(field) => field.wrong_type_kind(),
            Self::BadUuid => "bad_uuid",
            Self::AmountAsString => "amount_as_string",
            Self::ZeroAmount => "zero_amount",
            Self::AmountTooLarge => "amount_too_large",
            Self::TooManyDecimals => "too_many_decimals",
            Self::UnknownCurrency => "unknown_currency",
            Self::UnknownCategory => "unknown_category",
            Self::UnknownStatus => "unknown_status",
            Self::UnknownPaymentMethod => "unknown_payment_method",
            Self::BadTimestamp => "bad_timestamp",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::MerchantEmpty => "merchant_empty",
            Self::MerchantTooLong => "merchant_too_long",
            Self::BadProcessingTime => "bad_processing_time_ms",
            Self::TooLarge => "too_large",
            Self::TooDeep => "too_deep",
            Self::TooManyKeys => "too_many_keys",
            Self::NulCharacter(_) => "nul_character",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks one message value against ARCHITECTURE §4. Unknown extra fields are ignored; a user_id that
/// no user file knows is valid (a late-arriving dimension member).
pub fn validate(bytes: &[u8]) -> Result<Transaction, Rejection> {
    validate_with(bytes, Rules::standard())
}

/// [`validate`] against configured rules (e.g. extra categories).
pub fn validate_with(bytes: &[u8], rules: &Rules) -> Result<Transaction, Rejection> {
    // Before anything reads the whole message: see `limits` for why.
    super::limits::check(bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            RejectionKind::InvalidUtf8,
            format!("the message is not UTF-8: {e}"),
        )
    })?;
    let mut parser = serde_json::Deserializer::from_str(text);
    let document = parser
        .deserialize_any(DocumentVisitor)
        .and_then(|doc| parser.end().map(|()| doc))
        .map_err(|e| {
            Rejection::new(
                RejectionKind::NotJson,
                format!("the message is not JSON: {e}"),
            )
        })?;
    match document {
        Document::Object(fields) => fields.check(rules),
        Document::Other(what) => Err(Rejection::new(
            RejectionKind::NotObject,
            format!("the message is a JSON {what}, not an object"),
        )),
    }
}

/// A JSON value as far as the validator cares: scalars kept (strings borrowed when unescaped),
/// arrays and objects only noted.
#[derive(Debug)]
enum Scalar<'de> {
    Null,
    Bool,
    Integer(i128),
    Float,
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Integer(_) | Scalar::Float => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Integer(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Integer(v.into()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// An object key: one of ours, or anything else (skipped without allocating when unescaped).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<Field>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Option<Field>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::from_key(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// What the top level of the document is.
// Built once per message and consumed at once: a box would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Document<'de> {
    Object(RawFields<'de>),
    Other(&'static str),
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Document::Other("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Document::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Document::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Document::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Document::Other("number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Document::Other("string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::Other("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            fields.keys += 1;
            let Some(field) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if field == Field::Amount {
                // The amount's exact text decides how many decimals it has; an f64 cannot.
                let raw: &'de RawValue = map.next_value()?;
                fields.set_amount(raw);
            } else {
                let value: Scalar<'de> = map.next_value()?;
                fields.set(field, value);
            }
        }
        Ok(Document::Object(fields))
    }
}

/// The fields as found, before any rule is applied.
#[derive(Default)]
struct RawFields<'de> {
    keys: usize,
    duplicate: Option<Field>,
    amount: Option<&'de str>,
    values: [Option<Scalar<'de>>; 14],
}

impl<'de> RawFields<'de> {
    fn set(&mut self, field: Field, value: Scalar<'de>) {
        let slot = &mut self.values[field as usize];
        if slot.is_some() {
            self.duplicate.get_or_insert(field);
        }
        *slot = Some(value);
    }

    fn set_amount(&mut self, raw: &'de RawValue) {
        if self.amount.is_some() {
            self.duplicate.get_or_insert(Field::Amount);
        }
        self.amount = Some(raw.get());
    }

    fn take(&mut self, field: Field) -> Option<Scalar<'de>> {
        self.values[field as usize].take()
    }

    /// A field that must be a non-null string.
    fn required_str(&mut self, field: Field) -> Result<Cow<'de, str>, Rejection> {
        debug_assert!(
            field_spec(field).required,
            "{field:?} is optional in FIELDS"
        );
        match self.take(field) {
            None => Err(Rejection::new(
                RejectionKind::Missing(field),
                format!("field `{}` is missing", field.name()),
            )),
            Some(Scalar::Null) => Err(Rejection::new(
                RejectionKind::Null(field),
                format!("field `{}` is null", field.name()),
            )),
            Some(Scalar::Str(s)) => Ok(s),
            Some(other) => Err(wrong_type(field, &other, "a string")),
        }
    }

    /// A field that may be absent or null, and is a string otherwise.
    fn optional_str(&mut self, field: Field) -> Result<Option<String>, Rejection> {
        debug_assert!(
            !field_spec(field).required,
            "{field:?} is required in FIELDS"
        );
        match self.take(field) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => {
                no_nul(field, &s)?;
                Ok(Some(s.into_owned()))
            }
            Some(other) => Err(wrong_type(field, &other, "a string")),
        }
    }

    /// A string from the vocabulary that FIELDS gives `field`.
    fn one_of(&mut self, field: Field, rules: &Rules) -> Result<&'static str, Rejection> {
        let Shape::OneOf(vocabulary) = field_spec(field).shape else {
            unreachable!("{field:?} has no vocabulary in FIELDS");
        };
        let text = self.required_str(field)?;
        one_of(field, &text, rules.vocabulary(vocabulary), vocabulary)
    }

    fn check(mut self, rules: &Rules) -> Result<Transaction, Rejection> {
        if self.keys == 0 {
            return Err(Rejection::new(
                RejectionKind::EmptyObject,
                "the message is an empty JSON object",
            ));
        }
        if let Some(field) = self.duplicate {
            return Err(Rejection::new(
                RejectionKind::DuplicateField(field),
                format!("field `{}` appears more than once", field.name()),
            ));
        }
        let tx_id = uuid_field(Field::TxId, &self.required_str(Field::TxId)?)?;
        let user_id = uuid_field(Field::UserId, &self.required_str(Field::UserId)?)?;
        let amount = parse_amount(self.amount, rules)?;
        let currency = self.one_of(Field::Currency, rules)?;
        let merchant = merchant(self.required_str(Field::Merchant)?, rules)?;
        let category = self.one_of(Field::Category, rules)?;
        let event_time = timestamp(&self.required_str(Field::Timestamp)?, rules)?;
        let status = self.one_of(Field::Status, rules)?;
        let payment_method = self.one_of(Field::PaymentMethod, rules)?;
        let city = self.optional_str(Field::City)?;
        let country = self.optional_str(Field::Country)?;
        let source_system = self.optional_str(Field::SourceSystem)?;
        let transaction_type = self.optional_str(Field::TransactionType)?;
        let processing_time_ms = match self.take(Field::ProcessingTimeMs) {
            None | Some(Scalar::Null) => None,
            Some(Scalar::Integer(ms)) if (0..=i128::from(i32::MAX)).contains(&ms) => {
                Some(ms as i32)
            }
            Some(other) => {
                return Err(Rejection::new(
                    RejectionKind::BadProcessingTime,
                    format!(
                        "field `processing_time_ms` must be a non-negative whole number of \
                         milliseconds, got {}",
                        describe(&other)
                    ),
                ));
            }
        };
        Ok(Transaction {
            tx_id,
            user_id,
            amount,
            currency,
            merchant,
            category,
            event_time,
            status,
            payment_method,
            city,
            country,
            source_system,
            transaction_type,
            processing_time_ms,
        })
    }
}

fn wrong_type(field: Field, found: &Scalar<'_>, expected: &str) -> Rejection {
    Rejection::new(
        RejectionKind::WrongType(field),
        format!(
            "field `{}` must be {expected}, got {}",
            field.name(),
            found.type_name()
        ),
    )
}

fn describe(value: &Scalar<'_>) -> String {
    match value {
        Scalar::Integer(i) => i.to_string(),
        Scalar::Str(s) => format!("the string {:?}", truncated(s)),
        other => other.type_name().to_string(),
    }
}

/// At most 64 characters of `s`, so a huge bad value does not become a huge error message.
fn truncated(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
        None => Cow::Borrowed(s),
    }
}

fn uuid_field(field: Field, text: &str) -> Result<Uuid, Rejection> {
    Uuid::try_parse(text).map_err(|_| {
        Rejection::new(
            RejectionKind::BadUuid,
            format!(
                "field `{}` is not a UUID: {:?}",
                field.name(),
                truncated(text)
            ),
        )
    })
}

fn one_of(
    field: Field,
    text: &str,
    allowed: &[&'static str],
    vocabulary: Vocabulary,
) -> Result<&'static str, Rejection> {
    allowed.iter().copied().find(|a| *a == text).ok_or_else(|| {
        Rejection::new(
            vocabulary.rejection(),
            format!(
                "field `{}` is {:?}, expected one of {}",
                field.name(),
                truncated(text),
                allowed.join(", ")
            ),
        )
    })
}

fn merchant(text: Cow<'_, str>, rules: &Rules) -> Result<String, Rejection> {
    if text.trim().is_empty() {
        return Err(Rejection::new(
            RejectionKind::MerchantEmpty,
            "field `merchant` is empty",
        ));
    }
    let chars = text.chars().count();
    let max = rules.max_merchant_chars;
    if chars > max {
        return Err(Rejection::new(
            RejectionKind::MerchantTooLong,
            format!("field `merchant` has {chars} characters, at most {max} fit"),
        ));
    }
    no_nul(Field::Merchant, &text)?;
    Ok(text.into_owned())
}

/// A stored text must not hold U+0000 (`\u0000` in JSON): PostgreSQL would refuse the row, or the
/// COPY writer would replace the character, storing something else than was sent.
fn no_nul(field: Field, text: &str) -> Result<(), Rejection> {
    if !text.contains('\0') {
        return Ok(());
    }
    Err(Rejection::new(
        RejectionKind::NulCharacter(field),
        format!(
            "field `{}` contains a NUL character (\\u0000), which PostgreSQL text cannot store",
            field.name()
        ),
    ))
}

fn timestamp(text: &str, rules: &Rules) -> Result<DateTime<Utc>, Rejection> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| {
        Rejection::new(
            RejectionKind::BadTimestamp,
            format!(
                "field `timestamp` is not RFC 3339 with an offset (e.g. 2025-08-15T10:30:00Z): \
                 {:?}: {e}",
                truncated(text)
            ),
        )
    })?;
    // The year as written, before conversion to UTC: that is what the sender meant.
    let years = &rules.event_years;
    if !years.contains(&parsed.year()) {
        return Err(Rejection::new(
            RejectionKind::TimestampOutOfRange,
            format!(
                "field `timestamp` is in year {}, outside {}–{}",
                parsed.year(),
                years.start(),
                years.end()
            ),
        ));
    }
    Ok(parsed.with_timezone(&Utc))
}

/// The amount from its exact JSON text (`raw` is `None` when the field is absent).
fn parse_amount(raw: Option<&str>, rules: &Rules) -> Result<Decimal, Rejection> {
    let field = Field::Amount;
    let Some(text) = raw else {
        return Err(Rejection::new(
            RejectionKind::Missing(field),
            "field `amount` is missing",
        ));
    };
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => {}
        Some(b'"') => {
            return Err(Rejection::new(
                RejectionKind::AmountAsString,
                format!(
                    "field `amount` is the string {}, it must be a JSON number",
                    truncated(text)
                ),
            ));
        }
        Some(b'n') => {
            return Err(Rejection::new(
                RejectionKind::Null(field),
                "field `amount` is null",
            ));
        }
        Some(b't' | b'f') => return Err(amount_wrong_type("a boolean")),
        Some(b'[') => return Err(amount_wrong_type("an array")),
        _ => return Err(amount_wrong_type("an object")),
    }
    let max_abs = rules.max_abs_amount;
    let amount = decimal_from_json_number(text).ok_or_else(|| too_large(text, max_abs))?;
    if amount.is_zero() {
        return Err(Rejection::new(
            RejectionKind::ZeroAmount,
            "field `amount` is zero; a transaction moves money",
        ));
    }
    if amount.abs() > Decimal::from(max_abs) {
        return Err(too_large(text, max_abs));
    }
    let decimals = rules.max_amount_decimals;
    if amount.scale() > decimals {
        return Err(Rejection::new(
            RejectionKind::TooManyDecimals,
            format!(
                "field `amount` is {}, it may have at most {decimals} decimals",
                truncated(text)
            ),
        ));
    }
    Ok(amount)
}

fn amount_wrong_type(found: &str) -> Rejection {
    Rejection::new(
        RejectionKind::WrongType(Field::Amount),
        format!("field `amount` must be a number, got {found}"),
    )
}

fn too_large(text: &str, max_abs: i64) -> Rejection {
    Rejection::new(
        RejectionKind::AmountTooLarge,
        format!("field `amount` is {}, beyond ±{max_abs}", truncated(text)),
    )
}

/// A JSON number (already syntax-checked by the parser) as a normalized decimal, i.e. without
/// trailing fractional zeros, so `12.50` counts as one decimal. `None` when it is too big for a
/// decimal at all; numbers too small for one (`1e-40`) come back with a scale above any limit.
fn decimal_from_json_number(text: &str) -> Option<Decimal> {
    if text.contains(['e', 'E']) {
        return match Decimal::from_scientific(text) {
            Ok(d) => Some(d.normalize()),
            Err(_) => {
                // Either beyond 28 digits or below 10^-28: the exponent's sign tells which.
                let exponent_negative = text
                    .rsplit(['e', 'E'])
                    .next()
                    .is_some_and(|e| e.starts_with('-'));
                let mantissa_is_zero = text
                    .split(['e', 'E'])
                    .next()
                    .is_some_and(|m| m.bytes().all(|b| matches!(b, b'0' | b'.' | b'-')));
                if mantissa_is_zero {
                    Some(Decimal::ZERO)
                } else if exponent_negative {
                    Some(Decimal::new(1, 28))
                } else {
                    None
                }
            }
        };
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = fraction.trim_end_matches('0');
    let digits = whole.trim_start_matches('-');
    if digits.len() > 20 {
        return None;
    }
    if fraction.len() > 20 {
        // More decimals than we would ever accept; the value only matters for being non-zero.
        return Some(Decimal::new(1, 28));
    }
    let mut normalized = String::with_capacity(whole.len() + 1 + fraction.len());
    normalized.push_str(whole);
    if !fraction.is_empty() {
        normalized.push('.');
        normalized.push_str(fraction);
    }
    normalized.parse::<Decimal>().ok().map(|d| d.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"tx_id":"6f1c2b9e-5a4d-4c3b-9e8f-1a2b3c4d5e6f","user_id":"0b9d2f7a-1c3e-4f5a-8b6c-7d8e9f0a1b2c","amount":123.45,"currency":"USD","merchant":"Amazon","category":"online_shopping","timestamp":"2025-08-15T10:30:00Z","status":"approved","payment_method":"credit_card","city":"Austin","country":"US","source_system":"streaming_kafka","transaction_type":"real_time","processing_time_ms":150}"#;

    /// VALID with one field's JSON value replaced (`None` removes the field).
    fn with(field: &str, value: Option<&str>) -> String {
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(VALID).unwrap();
        let mut out = String::from("{");
        let mut first = true;
        let mut push = |k: &str, v: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!("{:?}:{v}", k));
        };
        let keys: Vec<String> = object.keys().cloned().collect();
        for k in keys {
            let v = object.remove(&k).unwrap();
            if k == field {
                if let Some(raw) = value {
                    push(&k, raw);
                }
            } else {
                push(&k, &v.to_string());
            }
        }
        out.push('}');
        out
    }

    fn kind_of(json: &str) -> &'static str {
        validate(json.as_bytes())
            .expect_err("should be rejected")
            .kind
            .as_str()
    }

    #[test]
    fn the_design_example_is_valid() {
        let tx = validate(VALID.as_bytes()).unwrap();
        assert_eq!(tx.amount, Decimal::new(12345, 2));
        assert_eq!(tx.currency, "USD");
        assert_eq!(tx.merchant, "Amazon");
        assert_eq!(tx.category, "online_shopping");
        assert_eq!(tx.status, "approved");
        assert_eq!(tx.payment_method, "credit_card");
        assert_eq!(tx.city.as_deref(), Some("Austin"));
        assert_eq!(tx.processing_time_ms, Some(150));
        assert_eq!(tx.event_time.to_rfc3339(), "2025-08-15T10:30:00+00:00");
    }

    #[test]
    fn optional_fields_may_be_missing_or_null_and_extra_fields_are_ignored() {
        let minimal = r#"{"tx_id":"6f1c2b9e-5a4d-4c3b-9e8f-1a2b3c4d5e6f","user_id":"0b9d2f7a-1c3e-4f5a-8b6c-7d8e9f0a1b2c","amount":-5,"currency":"EUR","merchant":"Café \"Zürich\"","category":"gaming","timestamp":"2025-08-15T12:30:00.123+02:00","status":"pending","payment_method":"apple_pay","city":null,"extra":{"nested":[1,2,{"x":null}]},"more":"x"}"#;
        let tx = validate(minimal.as_bytes()).unwrap();
        assert_eq!(tx.amount, Decimal::from(-5));
        assert_eq!(tx.merchant, "Café \"Zürich\"");
        assert_eq!(tx.city, None);
        assert_eq!(tx.processing_time_ms, None);
        assert_eq!(tx.event_time.to_rfc3339(), "2025-08-15T10:30:00.123+00:00");
    }

    #[test]
    fn document_level_rejections() {
        assert_eq!(
            validate(b"{\"merchant\":\"A\xffB\"}").unwrap_err().kind,
            RejectionKind::InvalidUtf8
        );
        assert_eq!(kind_of(""), "not_json");
        assert_eq!(kind_of("{\"tx_id\":"), "not_json");
        assert_eq!(kind_of("{} trailing"), "not_json");
        assert_eq!(kind_of("[1,2]"), "not_object");
        assert_eq!(kind_of("\"text\""), "not_object");
        assert_eq!(kind_of("null"), "not_object");
        assert_eq!(kind_of("{}"), "empty_object");
        assert_eq!(kind_of(" { } "), "empty_object");
        assert_eq!(kind_of(r#"{"unrelated":1}"#), "missing_tx_id");
        let doubled = VALID.replacen("{", r#"{"amount":1,"#, 1);
        assert_eq!(kind_of(&doubled), "duplicate_field");
    }

    #[test]
    fn every_required_field_has_missing_and_null_kinds() {
        for field in Field::ALL {
            let name = field.name();
            let missing = with(name, None);
            let null = with(name, Some("null"));
            // The rules table says which fields are optional; the validator must agree.
            if field_spec(*field).required {
                assert_eq!(kind_of(&missing), format!("missing_{name}"));
                assert_eq!(kind_of(&null), format!("null_{name}"));
            } else {
                assert!(validate(missing.as_bytes()).is_ok(), "{name} is optional");
                assert!(validate(null.as_bytes()).is_ok(), "{name} may be null");
            }
        }
    }

    #[test]
    fn uuids() {
        assert_eq!(kind_of(&with("tx_id", Some(r#""tx-1""#))), "bad_uuid");
        assert_eq!(
            kind_of(&with("user_id", Some(r#""0b9d2f7a-1c3e-4f5a-8b6c""#))),
            "bad_uuid"
        );
        assert_eq!(kind_of(&with("tx_id", Some("42"))), "tx_id_wrong_type");
        // The unhyphenated form is still a UUID.
        assert!(
            validate(with("tx_id", Some(r#""6f1c2b9e5a4d4c3b9e8f1a2b3c4d5e6f""#)).as_bytes())
                .is_ok()
        );
    }

    #[test]
    fn amounts() {
        let amount = |raw: &str| validate(with("amount", Some(raw)).as_bytes());
        let kind = |raw: &str| amount(raw).unwrap_err().kind.as_str();
        assert_eq!(amount("0.01").unwrap().amount, Decimal::new(1, 2));
        assert_eq!(
            amount("-1000000").unwrap().amount,
            Decimal::from(-1_000_000)
        );
        assert_eq!(
            amount("1000000.00").unwrap().amount,
            Decimal::from(1_000_000)
        );
        assert_eq!(amount("12.50").unwrap().amount, Decimal::new(125, 1));
        assert_eq!(
            amount("12.5000000000000000000000000").unwrap().amount,
            Decimal::new(125, 1)
        );
        assert_eq!(amount("1.5e2").unwrap().amount, Decimal::from(150));
        assert_eq!(amount("-2.5E-1").unwrap().amount, Decimal::new(-25, 2));
        assert_eq!(kind(r#""12.50""#), "amount_as_string");
        assert_eq!(kind("0"), "zero_amount");
        assert_eq!(kind("-0.00"), "zero_amount");
        assert_eq!(kind("0e10"), "zero_amount");
        assert_eq!(kind("1000000.01"), "amount_too_large");
        assert_eq!(kind("-2500000"), "amount_too_large");
        assert_eq!(kind("1e7"), "amount_too_large");
        assert_eq!(kind("1e400"), "amount_too_large");
        assert_eq!(kind("123456789012345678901234567890"), "amount_too_large");
        assert_eq!(kind("12.345"), "too_many_decimals");
        assert_eq!(kind("0.001"), "too_many_decimals");
        assert_eq!(kind("1e-3"), "too_many_decimals");
        assert_eq!(kind("1e-400"), "too_many_decimals");
        assert_eq!(
            kind("0.0000000000000000000000000000000001"),
            "too_many_decimals"
        );
        // An f64 would call this 1.0; the text says otherwise.
        assert_eq!(kind("1.0000000000000001"), "too_many_decimals");
        assert_eq!(kind("true"), "amount_wrong_type");
        assert_eq!(kind("[1]"), "amount_wrong_type");
        assert_eq!(kind("{}"), "amount_wrong_type");
    }

    #[test]
    fn vocabularies() {
        assert_eq!(
            kind_of(&with("currency", Some(r#""BTC""#))),
            "unknown_currency"
        );
        assert_eq!(
            kind_of(&with("currency", Some(r#""usd""#))),
            "unknown_currency"
        );
        assert_eq!(kind_of(&with("currency", Some("1"))), "currency_wrong_type");
        assert_eq!(
            kind_of(&with("category", Some(r#""groceries""#))),
            "unknown_category"
        );
        assert_eq!(
            kind_of(&with("status", Some(r#""refunded""#))),
            "unknown_status"
        );
        assert_eq!(
            kind_of(&with("payment_method", Some(r#""cash""#))),
            "unknown_payment_method"
        );
        for currency in catalog::CURRENCIES {
            assert!(validate(with("currency", Some(&format!("{currency:?}"))).as_bytes()).is_ok());
        }
        for category in catalog::STREAM_CATEGORIES {
            assert!(validate(with("category", Some(&format!("{category:?}"))).as_bytes()).is_ok());
        }
    }

    #[test]
    fn timestamps() {
        let kind = |raw: &str| kind_of(&with("timestamp", Some(raw)));
        assert_eq!(kind(r#""2025-08-15 10:30:00""#), "bad_timestamp");
        assert_eq!(kind(r#""2025-08-15T10:30:00""#), "bad_timestamp");
        assert_eq!(kind(r#""15/08/2025""#), "bad_timestamp");
        assert_eq!(kind("1755253800"), "timestamp_wrong_type");
        assert_eq!(kind(r#""1999-12-31T23:59:59Z""#), "timestamp_out_of_range");
        assert_eq!(kind(r#""2101-01-01T00:00:00Z""#), "timestamp_out_of_range");
        assert!(
            validate(with("timestamp", Some(r#""2100-12-31T23:59:59-05:00""#)).as_bytes()).is_ok()
        );
    }

    #[test]
    fn merchants() {
        let kind = |raw: &str| kind_of(&with("merchant", Some(raw)));
        assert_eq!(kind(r#""""#), "merchant_empty");
        assert_eq!(kind(r#""   ""#), "merchant_empty");
        assert_eq!(kind(&format!("{:?}", "x".repeat(256))), "merchant_too_long");
        // 255 characters of two bytes each still fit: the limit is in characters.
        assert!(
            validate(with("merchant", Some(&format!("{:?}", "é".repeat(255)))).as_bytes()).is_ok()
        );
    }

    #[test]
    fn stored_texts_cannot_hold_nul() {
        let kind = |field: &str| kind_of(&with(field, Some(r#""a\u0000b""#)));
        assert_eq!(kind("merchant"), "nul_character");
        assert_eq!(kind("city"), "nul_character");
        assert_eq!(kind("transaction_type"), "nul_character");
        let rejection = validate(with("country", Some(r#""\u0000""#)).as_bytes()).unwrap_err();
        assert!(rejection.message.contains("`country`"), "{rejection}");
    }

    #[test]
    fn optional_fields_are_typed_when_present() {
        assert_eq!(kind_of(&with("city", Some("1"))), "city_wrong_type");
        assert_eq!(
            kind_of(&with("processing_time_ms", Some("-1"))),
            "bad_processing_time_ms"
        );
        assert_eq!(
            kind_of(&with("processing_time_ms", Some("1.5"))),
            "bad_processing_time_ms"
        );
        assert_eq!(
            kind_of(&with("processing_time_ms", Some(r#""150""#))),
            "bad_processing_time_ms"
        );
    }

    #[test]
    fn kinds_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for field in Field::ALL {
            for kind in [
                RejectionKind::Missing(*field),
                RejectionKind::Null(*field),
                RejectionKind::WrongType(*field),
            ] {
                let s = kind.as_str();
                assert!(
                    s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{s}"
                );
                assert!(seen.insert(s), "{s} twice");
            }
        }
    }
}
