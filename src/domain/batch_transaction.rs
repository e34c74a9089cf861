//! A row of `transactions_YYYY_MM.csv` (ARCHITECTURE §3). Amounts may be negative (refunds).

use chrono::{DateTime, FixedOffset, SecondsFormat};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::catalog::{BATCH_CATEGORIES, CURRENCIES, TRANSACTIONS_CSV_HEADER};
use super::field::{self, FieldError, RejectKind};
use super::user::check_column_count;

/// Columns of the transaction file, in header order.
pub const TRANSACTION_COLUMNS: [&str; 7] = [
    "tx_id",
    "user_id",
    "amount",
    "currency",
    "merchant",
    "category",
    "timestamp",
];

/// Largest absolute amount, as for stream transactions (ARCHITECTURE §4).
pub const MAX_ABS_AMOUNT: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const MAX_MERCHANT_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTransaction {
    pub tx_id: Uuid,
    pub user_id: Uuid,
    pub amount: Decimal,
    pub currency: &'static str,
    pub merchant: String,
    pub category: &'static str,
    pub timestamp: DateTime<FixedOffset>,
}

impl BatchTransaction {
    /// Parses one CSV record already split into fields (header order); the first bad field wins.
    pub fn parse(fields: &[&str]) -> Result<Self, FieldError> {
        check_column_count(fields.len(), TRANSACTION_COLUMNS.len())?;
        let [
            tx_id,
            user_id,
            amount,
            currency,
            merchant,
            category,
            timestamp,
        ] = TRANSACTION_COLUMNS;
        Ok(Self {
            tx_id: field::uuid(tx_id, fields[0])?,
            user_id: field::uuid(user_id, fields[1])?,
            amount: parse_amount(amount, fields[2])?,
            currency: field::one_of(currency, fields[3], &CURRENCIES)?,
            merchant: field::text(merchant, fields[4], MAX_MERCHANT_CHARS)?,
            category: field::one_of(category, fields[5], &BATCH_CATEGORIES)?,
            timestamp: field::offset_date_time(timestamp, fields[6])?,
        })
    }

    /// The row's fields in header order, as the CSV writer wants them.
    pub fn to_fields(&self) -> Vec<String> {
        vec![
            self.tx_id.hyphenated().to_string(),
            self.user_id.hyphenated().to_string(),
            self.amount.to_string(),
            self.currency.to_string(),
            self.merchant.clone(),
            self.category.to_string(),
            self.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true),
        ]
    }
}

pub fn header_matches(header: &str) -> bool {
    header == TRANSACTIONS_CSV_HEADER
}

fn parse_amount(column: &'static str, raw: &str) -> Result<Decimal, FieldError> {
    let amount = field::decimal(column, raw)?;
    if amount.scale() > 2 && amount.normalize().scale() > 2 {
        return Err(FieldError::new(
            column,
            RejectKind::OutOfRange,
            format!("{raw:?} has more than 2 decimals"),
        ));
    }
    if amount.is_zero() || amount.abs() > MAX_ABS_AMOUNT {
        return Err(FieldError::new(
            column,
            RejectKind::OutOfRange,
            format!("{raw:?} is zero or larger than {MAX_ABS_AMOUNT} in absolute value"),
        ));
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 7] = [
        "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "0d6f3c4e-4c41-4f39-9d3c-3b5b8f7c9a10",
        "-12.50",
        "EUR",
        "Whole Foods",
        "groceries",
        "2025-03-04T05:06:07Z",
    ];

    #[test]
    fn a_good_row_parses_and_round_trips() {
        let tx = BatchTransaction::parse(&GOOD).unwrap();
        assert_eq!(tx.amount, Decimal::new(-1250, 2));
        assert_eq!(tx.to_fields(), GOOD.map(String::from).to_vec());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(usize, &str, RejectKind); 6] = [
            (1, "", RejectKind::Missing),
            (2, "12.345", RejectKind::OutOfRange),
            (2, "0", RejectKind::OutOfRange),
            (2, "twelve", RejectKind::NotANumber),
            (3, "XYZ", RejectKind::UnknownValue),
            (6, "yesterday", RejectKind::BadDate),
        ];
        for (index, value, kind) in cases {
            let mut fields = GOOD;
            fields[index] = value;
            let err = BatchTransaction::parse(&fields).unwrap_err();
            assert_eq!(
                (err.column, err.kind),
                (Some(TRANSACTION_COLUMNS[index]), kind),
                "{value}"
            );
        }
    }

    #[test]
    fn the_header_constant_lists_the_columns() {
        assert!(header_matches(&TRANSACTION_COLUMNS.join(",")));
    }
}
