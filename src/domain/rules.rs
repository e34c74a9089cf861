//! The rules of a valid stream message (ARCHITECTURE §4) as data: which fields are required, what
//! each holds, the closed vocabularies and the bounds. [`crate::domain::transaction::validate_with`]
//! checks messages against them and [`crate::domain::schema`] renders them as a JSON Schema, so the
//! two cannot drift apart.
//!
//! One rule is configurable: stream categories accepted beyond ARCHITECTURE §4's twelve
//! (`--extra-categories`, `ETL_EXTRA_CATEGORIES`), e.g. `groceries` once the card programme starts
//! sending supermarket purchases. That is how a validator change reaches the sink,
//! `etl dlq replay`, `etl schema` and `etl serve` alike: start them with the same setting.
//! Categories, because nothing downstream refuses a new one: `dim_categories` knows the batch
//! categories and files any other under channel `other`. Currencies, by contrast, are also a
//! check constraint of `transactions_sink` and need a rate in `dim_currencies`: a new one is a
//! migration, not a setting.

use std::ops::RangeInclusive;
use std::sync::LazyLock;

use super::catalog;
use super::transaction::{Field, RejectionKind};

/// Largest accepted absolute amount (ARCHITECTURE §4).
pub const MAX_ABS_AMOUNT: i64 = 1_000_000;
/// Most decimal places an amount may have.
pub const MAX_AMOUNT_DECIMALS: u32 = 2;
/// Longest accepted merchant name, in characters (the column is varchar(255)).
pub const MAX_MERCHANT_CHARS: usize = 255;
/// Accepted event years, inclusive.
pub const EVENT_YEARS: RangeInclusive<i32> = 2000..=2100;

/// A closed vocabulary of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocabulary {
    Currency,
    Category,
    Status,
    PaymentMethod,
}

impl Vocabulary {
    /// The kind reported for a value outside the vocabulary.
    pub fn rejection(self) -> RejectionKind {
        match self {
            Self::Currency => RejectionKind::UnknownCurrency,
            Self::Category => RejectionKind::UnknownCategory,
            Self::Status => RejectionKind::UnknownStatus,
            Self::PaymentMethod => RejectionKind::UnknownPaymentMethod,
        }
    }
}

/// What a field holds once it is present and not null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string that is a UUID (hyphenated or not).
    Uuid,
    /// A JSON number (never a string), non-zero, with at most [`Rules::max_amount_decimals`]
    /// decimals and an absolute value of at most [`Rules::max_abs_amount`].
    Amount,
    /// A string from a closed vocabulary, compared case-sensitively.
    OneOf(Vocabulary),
    /// A string that is not blank, at most [`Rules::max_merchant_chars`] characters.
    Merchant,
    /// An RFC 3339 date-time with an offset, its year (as written) within [`Rules::event_years`].
    Timestamp,
    /// Any string.
    Text,
    /// A whole number from 0 to `i32::MAX`.
    Millis,
}

/// One field's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub field: Field,
    /// Required fields must be present and not null; optional ones may be absent or null.
    pub required: bool,
    pub shape: Shape,
    /// For people: shown as the field's description in the JSON Schema.
    pub description: &'static str,
}

/// Every field the validator knows, in the order of [`Field`] (which is also the order the
/// validator checks them in: the first failing one is the message's rejection).
pub const FIELDS: [FieldSpec; 14] = [
    spec(
        Field::TxId,
        true,
        Shape::Uuid,
        "The transaction's id; duplicates land once.",
    ),
    spec(
        Field::UserId,
        true,
        Shape::Uuid,
        "The user; one that no user file knows yet is a late-arriving dimension member, not an error.",
    ),
    spec(
        Field::Amount,
        true,
        Shape::Amount,
        "Money moved, in `currency`; negative for refunds.",
    ),
    spec(
        Field::Currency,
        true,
        Shape::OneOf(Vocabulary::Currency),
        "ISO 4217 code.",
    ),
    spec(Field::Merchant, true, Shape::Merchant, "Merchant name."),
    spec(
        Field::Category,
        true,
        Shape::OneOf(Vocabulary::Category),
        "Stream spending category.",
    ),
    spec(
        Field::Timestamp,
        true,
        Shape::Timestamp,
        "Event time, RFC 3339 with an offset.",
    ),
    spec(
        Field::Status,
        true,
        Shape::OneOf(Vocabulary::Status),
        "Authorization status.",
    ),
    spec(
        Field::PaymentMethod,
        true,
        Shape::OneOf(Vocabulary::PaymentMethod),
        "How the user paid.",
    ),
    spec(Field::City, false, Shape::Text, "City of the transaction."),
    spec(
        Field::Country,
        false,
        Shape::Text,
        "Country code of the transaction.",
    ),
    spec(
        Field::SourceSystem,
        false,
        Shape::Text,
        "System that emitted the event.",
    ),
    spec(
        Field::TransactionType,
        false,
        Shape::Text,
        "e.g. real_time.",
    ),
    spec(
        Field::ProcessingTimeMs,
        false,
        Shape::Millis,
        "Upstream processing time in milliseconds.",
    ),
];

const fn spec(field: Field, required: bool, shape: Shape, description: &'static str) -> FieldSpec {
    FieldSpec {
        field,
        required,
        shape,
        description,
    }
}

/// The rule of `field`: an index, not a search, since the validator asks per message.
pub fn field_spec(field: Field) -> &'static FieldSpec {
    &FIELDS[field as usize]
}

/// The rules a message is checked against. `Rules::standard()` is ARCHITECTURE §4; the only
/// setting that differs between deployments is the list of currencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    categories: Vec<&'static str>,
    pub max_abs_amount: i64,
    pub max_amount_decimals: u32,
    pub max_merchant_chars: usize,
    pub event_years: RangeInclusive<i32>,
}

/// Longest configurable category name.
pub const MAX_CATEGORY_CHARS: usize = 64;

/// A configured category that is not a snake_case name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a category name; extra categories are snake_case (a-z, 0-9, _), at most 64 \
     characters, like groceries or home_improvement"
)]
pub struct BadCategory(pub String);

impl Default for Rules {
    fn default() -> Self {
        Self::standard().clone()
    }
}

impl Rules {
    /// ARCHITECTURE §4 as written, shared by everything that is not configured otherwise.
    pub fn standard() -> &'static Rules {
        static STANDARD: LazyLock<Rules> = LazyLock::new(|| Rules {
            categories: catalog::STREAM_CATEGORIES.to_vec(),
            max_abs_amount: MAX_ABS_AMOUNT,
            max_amount_decimals: MAX_AMOUNT_DECIMALS,
            max_merchant_chars: MAX_MERCHANT_CHARS,
            event_years: EVENT_YEARS,
        });
        &STANDARD
    }

    /// The standard rules plus stream categories accepted beyond the standard twelve. Names
    /// already known are ignored.
    pub fn with_extra_categories<S: AsRef<str>>(names: &[S]) -> Result<Self, BadCategory> {
        let mut rules = Self::default();
        for name in names {
            let name = name.as_ref().trim();
            let snake = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if name.is_empty() || name.len() > MAX_CATEGORY_CHARS || !snake {
                return Err(BadCategory(name.to_string()));
            }
            if !rules.categories.contains(&name) {
                // A valid transaction holds its category as `&'static str`, so the hot path never
                // allocates for it; a configured name is leaked once, when the process starts.
                rules
                    .categories
                    .push(Box::leak(name.to_string().into_boxed_str()));
            }
        }
        Ok(rules)
    }

    /// The accepted values of a vocabulary.
    pub fn vocabulary(&self, vocabulary: Vocabulary) -> &[&'static str] {
        match vocabulary {
            Vocabulary::Currency => &catalog::CURRENCIES,
            Vocabulary::Category => &self.categories,
            Vocabulary::Status => &catalog::STATUSES,
            Vocabulary::PaymentMethod => &catalog::PAYMENT_METHODS,
        }
    }

    /// Categories accepted beyond the standard twelve, in the order configured.
    pub fn extra_categories(&self) -> &[&'static str] {
        &self.categories[catalog::STREAM_CATEGORIES.len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_exactly_one_spec() {
        for field in Field::ALL {
            assert_eq!(
                FIELDS.iter().filter(|s| s.field == *field).count(),
                1,
                "{field:?}"
            );
        }
        assert_eq!(FIELDS.len(), Field::ALL.len());
        for field in Field::ALL {
            assert_eq!(field_spec(*field).field, *field, "FIELDS is in Field order");
        }
    }

    #[test]
    fn extra_categories_are_checked_added_once_and_accepted() {
        let rules = Rules::with_extra_categories(&["groceries", "gaming", "groceries"]).unwrap();
        assert_eq!(rules.extra_categories(), ["groceries"]);
        assert!(
            rules
                .vocabulary(Vocabulary::Category)
                .contains(&"groceries")
        );
        assert_eq!(
            Rules::with_extra_categories(&["Groceries"]),
            Err(BadCategory("Groceries".into()))
        );
        assert!(Rules::with_extra_categories(&["home improvement"]).is_err());
        assert!(Rules::with_extra_categories(&[""]).is_err());
        assert!(Rules::standard().extra_categories().is_empty());

        let message = r#"{"tx_id":"6f1c2b9e-5a4d-4c3b-9e8f-1a2b3c4d5e6f","user_id":"0b9d2f7a-1c3e-4f5a-8b6c-7d8e9f0a1b2c","amount":12.5,"currency":"USD","merchant":"Whole Foods","category":"groceries","timestamp":"2025-08-15T10:30:00Z","status":"approved","payment_method":"debit_card"}"#;
        use crate::domain::transaction::{validate, validate_with};
        assert_eq!(
            validate(message.as_bytes()).unwrap_err().kind,
            RejectionKind::UnknownCategory
        );
        assert_eq!(
            validate_with(message.as_bytes(), &rules).unwrap().category,
            "groceries"
        );
    }
}
