//! Rows in PostgreSQL's COPY text format: tab-separated, `\N` for NULL, backslash escapes.

use std::io::Write;

use chrono::SecondsFormat;

use crate::domain::batch_transaction::BatchTransaction;
use crate::domain::field::NAIVE_DATE_TIME_FORMAT;
use crate::domain::user::UserRecord;

/// Columns written by [`user_row`], in order; `loaded_at` takes its default, the transaction's time.
pub const USERS_RAW_COLUMNS: &str = r#""user_id", "first_name", "last_name", "email", "age", "income_bracket", "customer_tier", "risk_profile", "city", "state", "country", "registration_date", "preferred_categories", "is_active", "source_system", "source_file", "source_line""#;

/// Columns written by [`transaction_row`], in order.
pub const TRANSACTIONS_RAW_COLUMNS: &str = r#""tx_id", "user_id", "amount", "currency", "merchant", "category", "timestamp", "source_file", "source_line""#;

/// Columns written by [`reject_row`], in order.
pub const REJECT_COLUMNS: &str =
    r#""source_file", "source_line", "column_name", "reason", "raw_line""#;

/// Appends `value` escaped for COPY text format (a NUL becomes U+FFFD, the replacement character).
pub fn text(out: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            // PostgreSQL text cannot hold NUL; only a rejected row's raw text can contain one.
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            other => out.push(other),
        }
    }
}

fn tab(out: &mut Vec<u8>) {
    out.push(b'\t');
}

pub fn user_row(out: &mut Vec<u8>, user: &UserRecord, file: &str, line: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}\t", user.user_id.hyphenated());
    for value in [&user.first_name, &user.last_name, &user.email] {
        text(out, value);
        tab(out);
    }
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t",
        user.age, user.income_bracket, user.customer_tier, user.risk_profile
    );
    for value in [&user.city, &user.state, &user.country] {
        text(out, value);
        tab(out);
    }
    let _ = write!(
        out,
        "{}\t",
        user.registration_date.format(NAIVE_DATE_TIME_FORMAT)
    );
    // Categories come from a closed vocabulary of plain words, so the array literal needs no quoting.
    let _ = write!(
        out,
        "{{{}}}\t{}\t",
        user.preferred_categories.join(","),
        if user.is_active { 't' } else { 'f' }
    );
    text(out, &user.source_system);
    tab(out);
    text(out, file);
    let _ = writeln!(out, "\t{line}");
}

pub fn transaction_row(out: &mut Vec<u8>, tx: &BatchTransaction, file: &str, line: u64) {
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t",
        tx.tx_id.hyphenated(),
        tx.user_id.hyphenated(),
        tx.amount,
        tx.currency
    );
    text(out, &tx.merchant);
    let _ = write!(
        out,
        "\t{}\t{}\t",
        tx.category,
        tx.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    );
    text(out, file);
    let _ = writeln!(out, "\t{line}");
}

pub fn reject_row(
    out: &mut Vec<u8>,
    file: &str,
    line: u64,
    column: Option<&str>,
    reason: &str,
    raw: &str,
) {
    text(out, file);
    let _ = write!(out, "\t{line}\t");
    match column {
        Some(column) => text(out, column),
        None => out.extend_from_slice(b"\\N"),
    }
    tab(out);
    text(out, reason);
    tab(out);
    text(out, raw);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        let mut out = Vec::new();
        text(&mut out, "a\tb\\c\nd\re");
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
        let mut out = Vec::new();
        text(&mut out, "a\0b");
        assert_eq!(String::from_utf8(out).unwrap(), "a\u{FFFD}b");
    }

    #[test]
    fn a_reject_without_column_has_a_null() {
        let mut out = Vec::new();
        reject_row(&mut out, "f.csv", 7, None, "wrong_column_count: x", "a,b");
        assert_eq!(out, b"f.csv\t7\t\\N\twrong_column_count: x\ta,b\n");
    }
}
