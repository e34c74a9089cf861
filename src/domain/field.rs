//! Field-level parsing shared by the batch row types: one rejected field says which column and why.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Why a field was refused; the short `code` groups rejects in summaries, the detail explains one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    /// A required field is empty.
    Missing,
    /// Not a UUID.
    BadUuid,
    /// Not a number where a number is expected.
    NotANumber,
    /// A number outside the allowed range.
    OutOfRange,
    /// Not a date-time in the expected format.
    BadDate,
    /// A value outside the closed vocabulary of its column.
    UnknownValue,
    /// A text longer than allowed.
    TooLong,
    /// A row whose number of fields differs from the header's.
    WrongColumnCount,
}

impl RejectKind {
    /// A stable snake_case name, stored in `etl.batch_rejects.reason` and printed in summaries.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::BadUuid => "bad_uuid",
            Self::NotANumber => "not_a_number",
            Self::OutOfRange => "out_of_range",
            Self::BadDate => "bad_date",
            Self::UnknownValue => "unknown_value",
            Self::TooLong => "too_long",
            Self::WrongColumnCount => "wrong_column_count",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A field that failed validation: which column, what kind of failure, and a sentence about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The column as named in the CSV header; `None` for row-level problems (column count).
    pub column: Option<&'static str>,
    pub kind: RejectKind,
    pub detail: String,
}

impl FieldError {
    pub fn new(column: &'static str, kind: RejectKind, detail: impl Into<String>) -> Self {
        Self {
            column: Some(column),
            kind,
            detail: detail.into(),
        }
    }

    /// The text stored in `etl.batch_rejects.reason`: the kind's code, then the detail.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.kind.code(), self.detail)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "column {column}: {}", self.reason()),
            None => f.write_str(&self.reason()),
        }
    }
}

impl std::error::Error for FieldError {}

/// Registration dates of the user files: ISO 8601 local date-time, seconds precision.
pub const NAIVE_DATE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

pub(crate) fn required<'a>(column: &'static str, raw: &'a str) -> Result<&'a str, FieldError> {
    if raw.is_empty() {
        Err(FieldError::new(column, RejectKind::Missing, "is empty"))
    } else {
        Ok(raw)
    }
}

pub(crate) fn text(
    column: &'static str,
    raw: &str,
    max_chars: usize,
) -> Result<String, FieldError> {
    let value = required(column, raw)?;
    // PostgreSQL text cannot hold NUL; refusing the row here keeps the rest of the file loadable.
    if value.contains('\0') {
        return Err(FieldError::new(
            column,
            RejectKind::UnknownValue,
            "contains a NUL character",
        ));
    }
    if value.chars().count() > max_chars {
        return Err(FieldError::new(
            column,
            RejectKind::TooLong,
            format!("is longer than {max_chars} characters"),
        ));
    }
    Ok(value.to_string())
}

pub(crate) fn uuid(column: &'static str, raw: &str) -> Result<Uuid, FieldError> {
    let value = required(column, raw)?;
    // `try_parse` also accepts braced and URN forms; the files promise the hyphenated form only.
    if value.len() != 36 {
        return Err(FieldError::new(
            column,
            RejectKind::BadUuid,
            format!("{value:?} is not a hyphenated UUID"),
        ));
    }
    Uuid::try_parse(value).map_err(|_| {
        FieldError::new(
            column,
            RejectKind::BadUuid,
            format!("{value:?} is not a hyphenated UUID"),
        )
    })
}

pub(crate) fn one_of(
    column: &'static str,
    raw: &str,
    allowed: &'static [&'static str],
) -> Result<&'static str, FieldError> {
    let value = required(column, raw)?;
    allowed
        .iter()
        .copied()
        .find(|a| *a == value)
        .ok_or_else(|| {
            FieldError::new(
                column,
                RejectKind::UnknownValue,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            )
        })
}

pub(crate) fn naive_date_time(
    column: &'static str,
    raw: &str,
) -> Result<NaiveDateTime, FieldError> {
    let value = required(column, raw)?;
    NaiveDateTime::parse_from_str(value, NAIVE_DATE_TIME_FORMAT).map_err(|_| {
        FieldError::new(
            column,
            RejectKind::BadDate,
            format!("{value:?} is not a date-time like 2025-08-15T10:30:00"),
        )
    })
}

pub(crate) fn offset_date_time(
    column: &'static str,
    raw: &str,
) -> Result<DateTime<FixedOffset>, FieldError> {
    let value = required(column, raw)?;
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|_| {
        FieldError::new(
            column,
            RejectKind::BadDate,
            format!("{value:?} is not an RFC 3339 date-time like 2025-08-15T10:30:00Z"),
        )
    })?;
    // PostgreSQL accepts far wider ranges; these bounds catch typos such as a two-digit year.
    if !(2000..=2100).contains(&chrono::Datelike::year(&parsed)) {
        return Err(FieldError::new(
            column,
            RejectKind::OutOfRange,
            format!("{value:?} is outside the years 2000-2100"),
        ));
    }
    Ok(parsed)
}

pub(crate) fn decimal(column: &'static str, raw: &str) -> Result<Decimal, FieldError> {
    let value = required(column, raw)?;
    value.parse::<Decimal>().map_err(|_| {
        FieldError::new(
            column,
            RejectKind::NotANumber,
            format!("{value:?} is not a decimal number"),
        )
    })
}

pub(crate) fn bool_word(column: &'static str, raw: &str) -> Result<bool, FieldError> {
    match required(column, raw)? {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(FieldError::new(
            column,
            RejectKind::UnknownValue,
            format!("{other:?} is neither true nor false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_must_be_hyphenated() {
        assert!(uuid("user_id", "67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        let err = uuid("user_id", "67e5504410b1426f9247bb680e5fe0c8").unwrap_err();
        assert_eq!(err.kind, RejectKind::BadUuid);
        assert_eq!(uuid("user_id", "").unwrap_err().kind, RejectKind::Missing);
    }

    #[test]
    fn dates_are_checked_for_format_and_range() {
        assert!(naive_date_time("d", "2025-08-15T10:30:00").is_ok());
        assert_eq!(
            naive_date_time("d", "2025-13-15T10:30:00")
                .unwrap_err()
                .kind,
            RejectKind::BadDate
        );
        assert!(offset_date_time("t", "2025-08-15T10:30:00Z").is_ok());
        assert_eq!(
            offset_date_time("t", "1999-08-15T10:30:00Z")
                .unwrap_err()
                .kind,
            RejectKind::OutOfRange
        );
    }

    #[test]
    fn reasons_start_with_the_kind_code() {
        let err = one_of("customer_tier", "diamond", &["gold"]).unwrap_err();
        assert!(
            err.reason().starts_with("unknown_value: "),
            "{}",
            err.reason()
        );
        assert_eq!(err.column, Some("customer_tier"));
    }
}
