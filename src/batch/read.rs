//! Parsing one batch file: polars reads the fields with an explicit all-text schema, the domain
//! types validate each row, and the result is COPY-ready text for the good rows and the rejects.
//!
//! Every column is read as text on purpose: typed polars columns would turn a bad value into a
//! file-level error or a silent null, while the domain parsers say which value was wrong and why.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::{
    CsvParseOptions, CsvReadOptions, DataFrame, DataType, Field, Schema, SerReader, StringChunked,
};

use crate::domain::batch_transaction::{self, BatchTransaction, TRANSACTION_COLUMNS};
use crate::domain::catalog::{TRANSACTIONS_CSV_HEADER, USERS_CSV_HEADER};
use crate::domain::field::{FieldError, RejectKind};
use crate::domain::user::{self, USER_COLUMNS, UserRecord};

use super::BatchError;
use super::copy_text;
use super::scan::{RawRecord, scan};

/// The two kinds of monthly file (ARCHITECTURE §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BatchFileKind {
    Users,
    Transactions,
}

impl BatchFileKind {
    /// The value of `etl.loaded_files.file_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Transactions => "transactions",
        }
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Users => &USER_COLUMNS,
            Self::Transactions => &TRANSACTION_COLUMNS,
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Self::Users => USERS_CSV_HEADER,
            Self::Transactions => TRANSACTIONS_CSV_HEADER,
        }
    }

    fn header_matches(self, header: &str) -> bool {
        match self {
            Self::Users => user::header_matches(header),
            Self::Transactions => batch_transaction::header_matches(header),
        }
    }
}

/// A parsed file, ready for COPY.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Good rows in COPY text format, for `users_raw` or `transactions_batch_raw`.
    pub rows_copy: Vec<u8>,
    pub rows_loaded: u64,
    /// Rejected rows in COPY text format, for `etl.batch_rejects`.
    pub rejects_copy: Vec<u8>,
    pub rows_rejected: u64,
    /// Rejects counted by reason code (`bad_uuid`, `missing`, …), for the summary.
    pub rejects_by_kind: BTreeMap<&'static str, u64>,
}

impl ParsedFile {
    fn reject(&mut self, file: &str, record: &RawRecord, raw: &str, error: &FieldError) {
        copy_text::reject_row(
            &mut self.rejects_copy,
            file,
            record.line,
            error.column,
            &error.reason(),
            raw,
        );
        self.rows_rejected += 1;
        *self.rejects_by_kind.entry(error.kind.code()).or_default() += 1;
    }
}

/// Checks the first line only: cheap, so a wrong file fails before any database work starts.
pub fn check_header(kind: BatchFileKind, file: &str, data: &[u8]) -> Result<(), BatchError> {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let header = std::str::from_utf8(first).map_err(|_| BatchError::NotUtf8 {
        file: file.to_string(),
        line: 1,
    })?;
    if kind.header_matches(header) {
        Ok(())
    } else {
        Err(BatchError::BadHeader {
            file: file.to_string(),
            kind: kind.as_str(),
            expected: kind.header(),
            found: header.to_string(),
        })
    }
}

/// Parses and validates `data`, the content of the file named `file`, keeping every good row in
/// `rows_copy`.
pub fn parse_file(kind: BatchFileKind, file: &str, data: &[u8]) -> Result<ParsedFile, BatchError> {
    parse_file_streaming(kind, file, data, usize::MAX, |_| true)
}

/// Like [`parse_file`], but hands good rows to `on_chunk` whenever `chunk_bytes` of COPY text
/// have accumulated, so that they can be sent while the rest is parsed; what is left at the end
/// stays in `rows_copy`. `on_chunk` returns false when nobody wants more rows (the database
/// side failed), which stops the parse.
pub fn parse_file_streaming(
    kind: BatchFileKind,
    file: &str,
    data: &[u8],
    chunk_bytes: usize,
    mut on_chunk: impl FnMut(Vec<u8>) -> bool,
) -> Result<ParsedFile, BatchError> {
    check_header(kind, file, data)?;
    let text = std::str::from_utf8(data).map_err(|e| BatchError::NotUtf8 {
        file: file.to_string(),
        line: 1 + data[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64,
    })?;
    let scanned = scan(data);
    let width = kind.columns().len();
    let mut parsed = ParsedFile::default();
    // Ragged rows are rejected here and kept away from polars.
    let (well_formed, ragged): (Vec<&RawRecord>, Vec<&RawRecord>) =
        scanned.records.iter().partition(|r| r.fields == width);
    for record in ragged {
        let error = FieldError {
            column: None,
            kind: RejectKind::WrongColumnCount,
            detail: format!("expected {width} fields, found {}", record.fields),
        };
        parsed.reject(file, record, &text[record.bytes.clone()], &error);
    }
    if well_formed.is_empty() {
        return Ok(parsed);
    }
    let frame = read_frame(
        kind,
        file,
        data,
        &scanned.header,
        &well_formed,
        scanned.records.len(),
    )?;
    if frame.height() != well_formed.len() {
        return Err(BatchError::Parse {
            file: file.to_string(),
            line: well_formed.first().map_or(2, |r| r.line),
            message: format!(
                "polars read {} rows where the file has {}",
                frame.height(),
                well_formed.len()
            ),
        });
    }
    let columns: Vec<&StringChunked> = kind
        .columns()
        .iter()
        .map(|name| frame.column(name).and_then(|c| c.str()))
        .collect::<Result<_, _>>()
        .map_err(|e| BatchError::Parse {
            file: file.to_string(),
            line: 1,
            message: e.to_string(),
        })?;
    let mut iters: Vec<_> = columns.iter().map(|c| c.iter()).collect();
    let mut fields: Vec<&str> = Vec::with_capacity(width);
    for record in well_formed {
        fields.clear();
        // Each column has exactly `height` values (checked above), so `next` always yields.
        fields.extend(iters.iter_mut().map(|it| it.next().flatten().unwrap_or("")));
        let result = match kind {
            BatchFileKind::Users => UserRecord::parse(&fields).map(|user| {
                copy_text::user_row(&mut parsed.rows_copy, &user, file, record.line);
            }),
            BatchFileKind::Transactions => BatchTransaction::parse(&fields).map(|tx| {
                copy_text::transaction_row(&mut parsed.rows_copy, &tx, file, record.line);
            }),
        };
        match result {
            Ok(()) => {
                parsed.rows_loaded += 1;
                if parsed.rows_copy.len() >= chunk_bytes
                    && !on_chunk(std::mem::take(&mut parsed.rows_copy))
                {
                    return Err(BatchError::Parse {
                        file: file.to_string(),
                        line: record.line,
                        message: "stopped because the database side failed".to_string(),
                    });
                }
            }
            Err(error) => parsed.reject(file, record, &text[record.bytes.clone()], &error),
        }
    }
    Ok(parsed)
}

/// Polars over the well-formed records. When every record is well formed the file's own bytes are
/// read; otherwise a copy without the ragged records, so polars' rows match `well_formed`.
fn read_frame(
    kind: BatchFileKind,
    file: &str,
    data: &[u8],
    header: &std::ops::Range<usize>,
    well_formed: &[&RawRecord],
    all_records: usize,
) -> Result<DataFrame, BatchError> {
    let schema: Schema = kind
        .columns()
        .iter()
        .map(|name| Field::new((*name).into(), DataType::String))
        .collect();
    let options = CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .with_infer_schema_length(Some(0))
        .with_parse_options(CsvParseOptions::default().with_missing_is_null(false));
    let parse_error = |e: polars::error::PolarsError| BatchError::Parse {
        file: file.to_string(),
        line: 1,
        message: e.to_string(),
    };
    if well_formed.len() == all_records {
        return options
            .into_reader_with_file_handle(Cursor::new(data))
            .finish()
            .map_err(parse_error);
    }
    let mut filtered = Vec::with_capacity(data.len());
    filtered.extend_from_slice(&data[header.clone()]);
    filtered.push(b'\n');
    for record in well_formed {
        filtered.extend_from_slice(&data[record.bytes.clone()]);
        filtered.push(b'\n');
    }
    options
        .into_reader_with_file_handle(Cursor::new(filtered))
        .finish()
        .map_err(parse_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8,Ada,Lovelace,ada.lovelace@example.com,36,high,gold,moderate,Austin,TX,US,2025-03-04T05:06:07,\"groceries,travel\",true,third_party_registration";

    #[test]
    fn good_rows_become_copy_text_and_bad_ones_rejects() {
        let bad_age = USER.replace(",36,", ",abc,");
        let short = USER.rsplit_once(',').unwrap().0.to_string();
        let data = format!("{USERS_CSV_HEADER}\n{USER}\n{bad_age}\n{short}\n{USER}\n");
        let parsed = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap();
        assert_eq!((parsed.rows_loaded, parsed.rows_rejected), (2, 2));
        let copy = String::from_utf8(parsed.rows_copy).unwrap();
        assert!(copy.contains("\t{groceries,travel}\tt\t"), "{copy}");
        assert!(copy.ends_with("\tu.csv\t5\n"), "{copy}");
        let rejects = String::from_utf8(parsed.rejects_copy).unwrap();
        assert!(
            rejects.contains("u.csv\t4\t\\N\twrong_column_count"),
            "{rejects}"
        );
        assert!(rejects.contains("u.csv\t3\tage\tnot_a_number"), "{rejects}");
    }

    #[test]
    fn a_nul_character_is_rejected_not_fatal() {
        let with_nul = USER.replace("Ada", "A\0da");
        let data = format!("{USERS_CSV_HEADER}\n{with_nul}\n{USER}\n");
        let parsed = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap();
        assert_eq!((parsed.rows_loaded, parsed.rows_rejected), (1, 1));
        let rejects = String::from_utf8(parsed.rejects_copy).unwrap();
        assert!(rejects.contains("u.csv\t2\tfirst_name\t"), "{rejects}");
        assert!(!rejects.contains('\0'));
    }

    #[test]
    fn streaming_hands_over_every_row_once() {
        let data = format!("{USERS_CSV_HEADER}\n{USER}\n{USER}\n{USER}\n");
        let whole = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap();
        let mut chunks = Vec::new();
        let rest = parse_file_streaming(BatchFileKind::Users, "u.csv", data.as_bytes(), 1, |c| {
            chunks.push(c);
            true
        })
        .unwrap();
        assert_eq!(chunks.len(), 3);
        assert!(rest.rows_copy.is_empty());
        assert_eq!(chunks.concat(), whole.rows_copy);
    }

    #[test]
    fn a_wrong_header_is_an_error() {
        let data = format!("{TRANSACTIONS_CSV_HEADER}\n");
        let err = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap_err();
        assert!(matches!(err, BatchError::BadHeader { .. }), "{err}");
        assert!(err.to_string().contains("u.csv line 1"), "{err}");
    }
}
