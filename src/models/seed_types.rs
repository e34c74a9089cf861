//! Seed column types as dbt-postgres infers them (agate's type tester, with dbt's own types),
//! so that a seed gets the same table under `etl` as under `dbt seed` and SQL on it behaves the
//! same (integer division, date arithmetic):
//!
//! - every value (after trimming) of the column parses as a number (`1,000`, `$5`, `-3.5`,
//!   `12%`, `1e3`; empty and `null` count as missing): `integer` when none has decimals once
//!   trailing zeros are dropped (`1.0` is whole), else `float8`;
//! - else every value is a date `YYYY-MM-DD`: `date`;
//! - else a date-time `YYYY-MM-DD HH:MM:SS` or ISO 8601 (`YYYY-MM-DDTHH:MM:SS[.f][offset]`):
//!   `timestamp without time zone`;
//! - else `true`/`false` (any case): `boolean`;
//! - else `text`. A column of nothing but missing values is `integer`.
//!
//! `column_types` overrides a column's type; such a column is read as text (so `007` stays
//! `007` until PostgreSQL casts it). Empty values and `null` (any case, trimmed) are NULL.
//! Column names keep their case (dbt-postgres quotes them) unless `quote_columns` is false
//! (then they fold to lower case, as unquoted names do).
//! The values go to COPY as dbt would insert them: numbers without group separators and
//! currency signs, dates and times in ISO form.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// Currency signs agate strips from numbers.
const CURRENCY_SYMBOLS: &[char] = &[
    '؋', '$', 'ƒ', '៛', '¥', '₡', '₱', '£', '€', '¢', '﷼', '₪', '₩', '₭', '₮', '₦', '฿', '₤', '₫',
];

/// A seed's table: columns with their types, and its rows as CSV for COPY (NULL unquoted
/// empty, every value quoted).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedTable {
    pub columns: Vec<(String, String)>,
    pub csv: Vec<u8>,
    pub rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Date,
    DateTime,
    IsoDateTime,
    Boolean,
    Text,
}

const KINDS: [Kind; 6] = [
    Kind::Number,
    Kind::Date,
    Kind::DateTime,
    Kind::IsoDateTime,
    Kind::Boolean,
    Kind::Text,
];

/// Reads a seed file and types its columns (see the module documentation).
pub fn read_seed(
    data: &[u8],
    overrides: &BTreeMap<String, String>,
    quote_columns: bool,
    delimiter: u8,
) -> Result<SeedTable, String> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("cannot read the header: {e}"))?
        .iter()
        .map(String::from)
        .collect();
    let names = column_names(&header, quote_columns);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", line + 2))?;
        if record.len() > header.len() {
            return Err(format!(
                "row {} has {} values, the header {}",
                line + 2,
                record.len(),
                header.len()
            ));
        }
        rows.push(record.iter().map(String::from).collect());
    }
    let mut columns = Vec::with_capacity(header.len());
    let mut kinds = Vec::with_capacity(header.len());
    for (i, original) in header.iter().enumerate() {
        let values = rows.iter().map(|r| r.get(i).map_or("", String::as_str));
        let (kind, sql_type) = match overrides.get(original) {
            Some(sql_type) => (Kind::Text, sql_type.clone()),
            None => {
                let kind = infer(values.clone());
                let sql_type = match kind {
                    Kind::Number => {
                        let fractional = values
                            .filter_map(parse_number)
                            .any(|n| n.decimal_places > 0);
                        if fractional { "float8" } else { "integer" }
                    }
                    Kind::Date => "date",
                    Kind::DateTime | Kind::IsoDateTime => "timestamp without time zone",
                    Kind::Boolean => "boolean",
                    Kind::Text => "text",
                };
                (kind, sql_type.to_string())
            }
        };
        columns.push((names[i].clone(), sql_type));
        kinds.push(kind);
    }
    let mut csv = Vec::with_capacity(data.len() + rows.len() * header.len() * 2);
    for row in &rows {
        for (i, kind) in kinds.iter().enumerate() {
            if i > 0 {
                csv.push(b',');
            }
            let raw = row.get(i).map_or("", String::as_str);
            if let Some(value) = cast(*kind, raw, &columns[i].1) {
                csv.push(b'"');
                csv.extend_from_slice(value.replace('"', "\"\"").as_bytes());
                csv.push(b'"');
            }
        }
        csv.push(b'\n');
    }
    Ok(SeedTable {
        columns,
        csv,
        rows: rows.len(),
    })
}

/// Header names as the table's columns: lower case unless quoted, duplicates numbered
/// (`a`, `a_2`), blanks named by their position (`a`, `b`, … as agate does).
fn column_names(header: &[String], quote_columns: bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let base = if name.trim().is_empty() {
            letter_name(i)
        } else if quote_columns {
            name.clone()
        } else {
            name.to_ascii_lowercase()
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while names.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        names.push(candidate);
    }
    names
}

/// 0 → a, 25 → z, 26 → aa …
fn letter_name(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn is_null(raw: &str) -> bool {
    let t = raw.trim();
    t.is_empty() || t.eq_ignore_ascii_case("null")
}

/// The first kind (in agate's order of preference) every value of the column fits.
fn infer<'a>(values: impl Iterator<Item = &'a str> + Clone) -> Kind {
    let mut possible = KINDS.to_vec();
    for value in values {
        if possible.len() == 1 {
            break;
        }
        possible.retain(|kind| fits(*kind, value));
    }
    possible.first().copied().unwrap_or(Kind::Text)
}

fn fits(kind: Kind, raw: &str) -> bool {
    if is_null(raw) {
        return true;
    }
    let t = raw.trim();
    match kind {
        Kind::Number => parse_number(t).is_some(),
        Kind::Date => parse_date(t).is_some(),
        Kind::DateTime => parse_date_time(t).is_some(),
        Kind::IsoDateTime => parse_iso_date_time(t).is_some(),
        Kind::Boolean => parse_bool(t).is_some(),
        Kind::Text => true,
    }
}

/// The value written for COPY, none for NULL.
fn cast(kind: Kind, raw: &str, sql_type: &str) -> Option<String> {
    if is_null(raw) {
        return None;
    }
    let t = raw.trim();
    Some(match kind {
        Kind::Number => {
            let number = parse_number(t)?;
            if sql_type == "integer" {
                number.integer_text()
            } else {
                number.text
            }
        }
        Kind::Date => parse_date(t)?.format("%Y-%m-%d").to_string(),
        Kind::DateTime => parse_date_time(t)?.format("%Y-%m-%d %H:%M:%S").to_string(),
        Kind::IsoDateTime => t.to_string(),
        Kind::Boolean => parse_bool(t)?.to_string(),
        // Text keeps its spaces (only NULL is decided on the trimmed value).
        Kind::Text => raw.to_string(),
    })
}

/// A number as agate reads it: the plain decimal text and its decimal places once trailing
/// zeros are dropped.
#[derive(Debug, Clone, PartialEq)]
struct Number {
    text: String,
    decimal_places: u32,
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Number {
    /// The value as an integer literal (used when the column is `integer`, so every value is
    /// whole once normalised).
    fn integer_text(&self) -> String {
        let mut digits = self.digits.trim_start_matches('0').to_string();
        if self.exponent >= 0 {
            if !digits.is_empty() {
                digits.push_str(&"0".repeat(self.exponent as usize));
            }
        } else {
            let cut = digits
                .len()
                .saturating_sub(self.exponent.unsigned_abs() as usize);
            digits.truncate(cut);
        }
        if digits.is_empty() {
            return "0".into();
        }
        if self.negative {
            format!("-{digits}")
        } else {
            digits
        }
    }
}

/// agate's Number.cast: trim, strip `%` at either end, one leading `-`, currency signs at
/// either end, group separators `,`; then Python's `Decimal` syntax.
fn parse_number(raw: &str) -> Option<Number> {
    let t = raw.trim();
    if is_null(t) {
        return None;
    }
    let t = t.trim_matches('%');
    let (mut negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let t = t.trim_matches(|c| CURRENCY_SYMBOLS.contains(&c));
    let t: String = t.chars().filter(|&c| c != ',').collect();
    let t = t.trim();
    let t = match t.as_bytes().first() {
        Some(b'+') => &t[1..],
        Some(b'-') => {
            negative = !negative;
            &t[1..]
        }
        _ => t,
    };
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(at) => (&t[..at], Some(&t[at + 1..])),
        None => (t, None),
    };
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            e.parse().ok()?
        }
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits = format!("{whole}{fraction}");
    let mut exponent = exponent - fraction.len() as i64;
    // Python's Decimal.normalize(): trailing zeros go into the exponent.
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    if digits.trim_start_matches('0').is_empty() {
        digits = "0".into();
        exponent = 0;
    }
    let decimal_places = u32::try_from((-exponent).max(0)).unwrap_or(u32::MAX);
    let sign = if negative { "-" } else { "" };
    let text = format!(
        "{sign}{}",
        mantissa_text(whole, fraction, t.find(['e', 'E']).map(|at| &t[at..]))
    );
    Some(Number {
        text,
        decimal_places,
        negative,
        digits,
        exponent,
    })
}

fn mantissa_text(whole: &str, fraction: &str, exponent: Option<&str>) -> String {
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut out = whole.to_string();
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    if let Some(e) = exponent {
        out.push_str(e);
    }
    out
}

/// `strptime(…, "%Y-%m-%d")`: four-digit year, month and day of one or two digits.
fn parse_date(t: &str) -> Option<NaiveDate> {
    let mut parts = t.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || !(1..=2).contains(&m.len()) {
        return None;
    }
    if !(1..=2).contains(&d.len()) {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(y) || !all_digits(m) || !all_digits(d) {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// `strptime(…, "%Y-%m-%d %H:%M:%S")`.
fn parse_date_time(t: &str) -> Option<NaiveDateTime> {
    let (date, time) = t.split_once(' ')?;
    let date = parse_date(date)?;
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let field = |s: &str| -> Option<u32> {
        if (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let time = NaiveTime::from_hms_opt(field(h)?, field(m)?, field(s)?)?;
    Some(date.and_time(time))
}

/// ISO 8601 date and time with `T` (isodate.parse_datetime), with optional fraction and offset.
fn parse_iso_date_time(t: &str) -> Option<()> {
    let (date, time) = t.split_once('T')?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let time = time
        .trim_end_matches('Z')
        .split(['+', '-'])
        .next()
        .unwrap_or_default();
    let time = time.split('.').next().unwrap_or_default();
    ["%H:%M:%S", "%H:%M", "%H%M%S"]
        .iter()
        .any(|f| NaiveTime::parse_from_str(time, f).is_ok())
        .then_some(())
}

/// agate's Boolean: `true`/`false` in any case, commas dropped.
fn parse_bool(t: &str) -> Option<bool> {
    let t: String = t.chars().filter(|&c| c != ',').collect();
    let t = t.trim().to_ascii_lowercase();
    match t.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(csv: &str) -> Vec<String> {
        read_seed(csv.as_bytes(), &BTreeMap::new(), false, b',')
            .unwrap()
            .columns
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn types_follow_dbt_postgres() {
        assert_eq!(
            types(
                "id,Amount,rate,day,at,iso,flag,name,empty,whole\n\
                 1,\"1,000\",1.5,2024-01-05,2024-01-05 10:00:00,2024-01-05T10:00:00Z,True,x,,1.0\n\
                 2,$3,,2024-1-6,,,false,y,null,2.00\n"
            ),
            [
                "integer",
                "integer",
                "float8",
                "date",
                "timestamp without time zone",
                "timestamp without time zone",
                "boolean",
                "text",
                "integer",
                "integer"
            ]
        );
        // One value that is not a date makes the column text; 0/1 are numbers, not booleans.
        assert_eq!(types("d,b\n2024-01-05,0\nsoon,1\n"), ["text", "integer"]);
    }

    #[test]
    fn values_are_written_as_dbt_inserts_them() {
        // Overrides name the header as written (dbt matches them before names fold).
        let overrides = BTreeMap::from([("Code".to_string(), "varchar(3)".to_string())]);
        let table = read_seed(
            "Code,N,d,t\n007,\"1,000\",2024-1-5,  a \n008,-2.0,, null \n".as_bytes(),
            &overrides,
            false,
            b',',
        )
        .unwrap();
        assert_eq!(
            table.columns,
            [
                ("code".to_string(), "varchar(3)".to_string()),
                ("n".to_string(), "integer".to_string()),
                ("d".to_string(), "date".to_string()),
                ("t".to_string(), "text".to_string()),
            ]
        );
        assert_eq!(
            String::from_utf8(table.csv).unwrap(),
            "\"007\",\"1000\",\"2024-01-05\",\"  a \"\n\"008\",\"-2\",,\n"
        );
    }

    #[test]
    fn numbers_parse_as_agate_reads_them() {
        let n = parse_number("1.50").unwrap();
        assert_eq!((n.decimal_places, n.text.as_str()), (1, "1.50"));
        assert_eq!(parse_number("1e3").unwrap().integer_text(), "1000");
        assert_eq!(parse_number("12%").unwrap().integer_text(), "12");
        assert_eq!(parse_number("-0.0").unwrap().decimal_places, 0);
        assert!(parse_number("1.2.3").is_none());
        assert!(parse_number("abc").is_none());
        assert!(parse_number("-").is_none());
    }
}
