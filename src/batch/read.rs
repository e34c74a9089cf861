//! Parsing one batch file a chunk at a time: the scan cuts the bytes into records, polars reads
//! the fields of each chunk with an explicit all-text schema, the domain types validate each row,
//! and the result is COPY-ready text for the good rows and the rejects, handed over in pieces.
//!
//! Every column is read as text on purpose: typed polars columns would turn a bad value into a
//! file-level error or a silent null, while the domain parsers say which value was wrong and why.
//!
//! Memory is bounded by [`ChunkOptions`], not by the file: one chunk of the file, its polars
//! frame and at most one piece of COPY text per table are held at a time (ARCHITECTURE §3).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::sync::Arc;

use polars::prelude::{
    CsvParseOptions, CsvReadOptions, DataFrame, DataType, Field, Schema, SerReader, StringChunked,
};
use sha2::{Digest, Sha256};

use crate::domain::batch_transaction::{self, BatchTransaction, TRANSACTION_COLUMNS};
use crate::domain::catalog::{TRANSACTIONS_CSV_HEADER, USERS_CSV_HEADER};
use crate::domain::field::{FieldError, RejectKind};
use crate::domain::user::{self, USER_COLUMNS, UserRecord};

use super::BatchError;
use super::copy_text;
use super::scan::{RawRecord, scan_records};

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

/// How much of a file is held at a time. Tests shrink these to cross chunk boundaries often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Bytes of the file read and parsed at a time.
    pub chunk_bytes: usize,
    /// A record still open after this many bytes (or after one chunk, if that is more) stops the
    /// file: only an unbalanced quote makes one (real rows are a few hundred bytes), and reading
    /// on would hold the rest of the file.
    pub max_record_bytes: usize,
    /// COPY text handed over at a time, for rows and for rejects each.
    pub output_bytes: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: 8 << 20,
            max_record_bytes: 8 << 20,
            output_bytes: 4 << 20,
        }
    }
}

/// A piece of COPY text, for the table it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Good rows, for `users_raw` or `transactions_batch_raw`.
    Rows(Vec<u8>),
    /// Rejected rows, for `etl.batch_rejects`.
    Rejects(Vec<u8>),
}

/// What reading a whole file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// Rejects counted by reason code (`bad_uuid`, `missing`, …), for the summary.
    pub rejects_by_kind: BTreeMap<&'static str, u64>,
    /// SHA-256 of every byte read, to check that the file did not change under the loader.
    pub sha256: [u8; 32],
    pub bytes: u64,
    /// Chunks parsed (header-only chunks included); more than one unless the file is small.
    pub chunks: u64,
}

/// A parsed file, ready for COPY: [`read_chunked`] with everything kept in memory.
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

/// Checks the first line only: cheap, so a wrong file fails before any database work starts.
/// `data` is the start of the file (the first line at least, when the file has one).
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
            found: header.chars().take(500).collect(),
        })
    }
}

/// Parses and validates `data`, the whole content of the file named `file`, in memory.
pub fn parse_file(kind: BatchFileKind, file: &str, data: &[u8]) -> Result<ParsedFile, BatchError> {
    let options = ChunkOptions {
        chunk_bytes: data.len().max(1),
        max_record_bytes: usize::MAX,
        output_bytes: usize::MAX,
    };
    let mut parsed = ParsedFile::default();
    let summary = read_chunked(kind, file, data, &options, |output| {
        match output {
            Output::Rows(rows) => parsed.rows_copy.extend_from_slice(&rows),
            Output::Rejects(rejects) => parsed.rejects_copy.extend_from_slice(&rejects),
        }
        true
    })?;
    parsed.rows_loaded = summary.rows_loaded;
    parsed.rows_rejected = summary.rows_rejected;
    parsed.rejects_by_kind = summary.rejects_by_kind;
    Ok(parsed)
}

/// Reads the file named `file` from `reader` a chunk at a time, hands its COPY text to `emit` in
/// pieces of about `options.output_bytes`, and returns the counts and the content hash.
/// `emit` returns false when nobody wants more (the database side failed), which stops the read.
pub fn read_chunked(
    kind: BatchFileKind,
    file: &str,
    mut reader: impl Read,
    options: &ChunkOptions,
    emit: impl FnMut(Output) -> bool,
) -> Result<ReadSummary, BatchError> {
    let mut out = Emitter {
        file,
        output_bytes: options.output_bytes,
        rows: Vec::new(),
        rejects: Vec::new(),
        summary: ReadSummary::default(),
        emit,
    };
    let mut hasher = Sha256::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut line = 1u64;
    let mut header_seen = false;
    let mut at_end = false;
    let mut want = options.chunk_bytes.max(1);
    loop {
        while !at_end && buf.len() < want {
            let before = buf.len();
            let limit = (want - before) as u64;
            let read = (&mut reader)
                .take(limit)
                .read_to_end(&mut buf)
                .map_err(|e| BatchError::Read {
                    file: file.to_string(),
                    line,
                    source: e,
                })?;
            hasher.update(&buf[before..]);
            at_end = (read as u64) < limit;
        }
        let chunk = scan_records(&buf, line, at_end);
        if chunk.records.is_empty() {
            if at_end {
                break;
            }
            // One record fills the buffer: read more, up to the limit.
            if buf.len() >= options.max_record_bytes {
                return Err(BatchError::RecordTooLong {
                    file: file.to_string(),
                    line,
                    limit_bytes: buf.len(),
                });
            }
            want = buf.len().saturating_add(options.chunk_bytes.max(1));
            continue;
        }
        want = options.chunk_bytes.max(1);
        let mut records = chunk.records.as_slice();
        if !header_seen {
            header_seen = true;
            check_header(kind, file, &buf[records[0].bytes.clone()])?;
            records = &records[1..];
        }
        // Chunks end after a newline, so no UTF-8 sequence is ever cut in two.
        let text =
            std::str::from_utf8(&buf[..chunk.consumed]).map_err(|e| BatchError::NotUtf8 {
                file: file.to_string(),
                line: line + newlines(&buf[..e.valid_up_to()]),
            })?;
        out.summary.chunks += 1;
        parse_records(kind, text, records, &mut out)?;
        out.summary.bytes += chunk.consumed as u64;
        line = chunk.next_line;
        buf.drain(..chunk.consumed);
    }
    if !header_seen {
        // An empty file has no header, which is as wrong as a wrong one.
        check_header(kind, file, b"")?;
    }
    out.flush(true)?;
    let mut summary = out.summary;
    summary.sha256 = hasher.finalize().into();
    Ok(summary)
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Collects COPY text and hands it on in pieces.
struct Emitter<'a, F> {
    file: &'a str,
    output_bytes: usize,
    rows: Vec<u8>,
    rejects: Vec<u8>,
    summary: ReadSummary,
    emit: F,
}

impl<F: FnMut(Output) -> bool> Emitter<'_, F> {
    fn reject(&mut self, record: &RawRecord, raw: &str, error: &FieldError) {
        copy_text::reject_row(
            &mut self.rejects,
            self.file,
            record.line,
            error.column,
            &error.reason(),
            raw,
        );
        self.summary.rows_rejected += 1;
        *self
            .summary
            .rejects_by_kind
            .entry(error.kind.code())
            .or_default() += 1;
    }

    /// Hands on what is due: full pieces, or everything at the end.
    fn flush(&mut self, all: bool) -> Result<(), BatchError> {
        let due =
            |buffer: &Vec<u8>| !buffer.is_empty() && (all || buffer.len() >= self.output_bytes);
        let mut sent = true;
        if due(&self.rows) {
            sent &= (self.emit)(Output::Rows(std::mem::take(&mut self.rows)));
        }
        if sent && due(&self.rejects) {
            sent &= (self.emit)(Output::Rejects(std::mem::take(&mut self.rejects)));
        }
        if sent {
            Ok(())
        } else {
            Err(BatchError::Stopped {
                file: self.file.to_string(),
            })
        }
    }
}

/// Parses the data records of one chunk; `text` is the chunk, `records` are located in it.
fn parse_records<F: FnMut(Output) -> bool>(
    kind: BatchFileKind,
    text: &str,
    records: &[RawRecord],
    out: &mut Emitter<'_, F>,
) -> Result<(), BatchError> {
    let width = kind.columns().len();
    // Ragged rows are rejected here and kept away from polars.
    let (well_formed, ragged): (Vec<&RawRecord>, Vec<&RawRecord>) =
        records.iter().partition(|r| r.fields == width);
    for record in ragged {
        let error = FieldError {
            column: None,
            kind: RejectKind::WrongColumnCount,
            detail: format!("expected {width} fields, found {}", record.fields),
        };
        out.reject(record, &text[record.bytes.clone()], &error);
    }
    let Some(first) = well_formed.first() else {
        return out.flush(false);
    };
    let parse_error = |message: String| BatchError::Parse {
        file: out.file.to_string(),
        line: first.line,
        message,
    };
    let frame = read_frame(kind, text.as_bytes(), &well_formed, records.len())
        .map_err(|e| parse_error(e.to_string()))?;
    if frame.height() != well_formed.len() {
        return Err(parse_error(format!(
            "polars read {} rows where the chunk has {}",
            frame.height(),
            well_formed.len()
        )));
    }
    let columns: Vec<&StringChunked> = kind
        .columns()
        .iter()
        .map(|name| frame.column(name).and_then(|c| c.str()))
        .collect::<Result<_, _>>()
        .map_err(|e| parse_error(e.to_string()))?;
    let mut iters: Vec<_> = columns.iter().map(|c| c.iter()).collect();
    let mut fields: Vec<&str> = Vec::with_capacity(width);
    for record in well_formed {
        fields.clear();
        // Each column has exactly `height` values (checked above), so `next` always yields.
        fields.extend(iters.iter_mut().map(|it| it.next().flatten().unwrap_or("")));
        let result = match kind {
            BatchFileKind::Users => UserRecord::parse(&fields).map(|user| {
                copy_text::user_row(&mut out.rows, &user, out.file, record.line);
            }),
            BatchFileKind::Transactions => BatchTransaction::parse(&fields).map(|tx| {
                copy_text::transaction_row(&mut out.rows, &tx, out.file, record.line);
            }),
        };
        match result {
            Ok(()) => out.summary.rows_loaded += 1,
            Err(error) => out.reject(record, &text[record.bytes.clone()], &error),
        }
        if out.rows.len() >= out.output_bytes || out.rejects.len() >= out.output_bytes {
            out.flush(false)?;
        }
    }
    Ok(())
}

/// Polars over the well-formed records of a chunk, read without a header (the schema names the
/// columns). When every record is well formed the chunk's own bytes are read; otherwise a copy
/// without the ragged records, so polars' rows match `well_formed`.
fn read_frame(
    kind: BatchFileKind,
    data: &[u8],
    well_formed: &[&RawRecord],
    all_records: usize,
) -> Result<DataFrame, polars::error::PolarsError> {
    let schema: Schema = kind
        .columns()
        .iter()
        .map(|name| Field::new((*name).into(), DataType::String))
        .collect();
    let options = CsvReadOptions::default()
        .with_has_header(false)
        .with_schema(Some(Arc::new(schema)))
        .with_infer_schema_length(Some(0))
        .with_parse_options(CsvParseOptions::default().with_missing_is_null(false));
    if well_formed.len() == all_records {
        let span: Range<usize> = well_formed[0].bytes.start..data.len();
        return options
            .into_reader_with_file_handle(Cursor::new(&data[span]))
            .finish();
    }
    let mut filtered = Vec::with_capacity(data.len());
    for record in well_formed {
        filtered.extend_from_slice(&data[record.bytes.clone()]);
        filtered.push(b'\n');
    }
    options
        .into_reader_with_file_handle(Cursor::new(filtered))
        .finish()
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

    /// A reader that counts what has been read from it, to see when output starts.
    struct Counting<'a> {
        data: &'a [u8],
        read: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    /// 200 user rows with a bad age every 17th, a ragged row every 23rd and a quoted newline
    /// (a record over two lines) every 31st; the expected (line, verdict) of each record.
    fn mixed_users() -> (String, Vec<(u64, &'static str)>) {
        let mut data = format!("{USERS_CSV_HEADER}\n");
        let mut expected = Vec::new();
        let mut line = 2;
        for i in 0..200 {
            let (row, verdict) = if i % 17 == 5 {
                (USER.replace(",36,", ",abc,"), "age\tnot_a_number")
            } else if i % 23 == 7 {
                (
                    USER.rsplit_once(',').unwrap().0.to_string(),
                    "\\N\twrong_column_count",
                )
            } else if i % 31 == 3 {
                (USER.replace("Austin", "\"Aus\ntin\""), "loaded")
            } else {
                (USER.to_string(), "loaded")
            };
            expected.push((line, verdict));
            line += 1 + row.matches('\n').count() as u64;
            data.push_str(&row);
            data.push('\n');
        }
        (data, expected)
    }

    #[test]
    fn chunks_of_any_size_give_the_same_rows_rejects_and_lines_as_the_whole_file() {
        let (data, expected) = mixed_users();
        let whole = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap();
        let rows = String::from_utf8(whole.rows_copy.clone()).unwrap();
        let rejects = String::from_utf8(whole.rejects_copy.clone()).unwrap();
        // The oracle: every record's line and verdict, computed while writing the file.
        for (line, verdict) in &expected {
            if *verdict == "loaded" {
                assert!(rows.contains(&format!("\tu.csv\t{line}\n")), "line {line}");
            } else {
                assert!(
                    rejects.contains(&format!("u.csv\t{line}\t{verdict}")),
                    "line {line}: {rejects}"
                );
            }
        }
        let bad = expected.iter().filter(|(_, v)| *v != "loaded").count() as u64;
        assert_eq!((whole.rows_loaded, whole.rows_rejected), (200 - bad, bad));

        for chunk_bytes in [1, 7, 300, 1_000, 4_096] {
            let options = ChunkOptions {
                chunk_bytes,
                max_record_bytes: 1 << 20,
                output_bytes: 500,
            };
            let (mut rows, mut rejects) = (Vec::new(), Vec::new());
            let summary = read_chunked(
                BatchFileKind::Users,
                "u.csv",
                data.as_bytes(),
                &options,
                |piece| {
                    match piece {
                        Output::Rows(b) => rows.push(b),
                        Output::Rejects(b) => rejects.push(b),
                    }
                    true
                },
            )
            .unwrap();
            let at_least = (data.len() / chunk_bytes).min(200) as u64;
            assert!(summary.chunks >= at_least, "{chunk_bytes}: {summary:?}");
            assert!(rows.concat() == whole.rows_copy, "chunks of {chunk_bytes}");
            // Ragged rows are rejected before the others of their chunk: same rejects, other order.
            let sorted = |bytes: &[u8]| {
                let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
                    .lines()
                    .map(String::from)
                    .collect();
                lines.sort();
                lines
            };
            assert_eq!(
                sorted(&rejects.concat()),
                sorted(&whole.rejects_copy),
                "chunks of {chunk_bytes}"
            );
            assert_eq!(summary.bytes, data.len() as u64);
            assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        }
    }

    #[test]
    fn output_starts_before_the_file_is_read_and_comes_in_bounded_pieces() {
        let (data, _) = mixed_users();
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = Counting {
            data: data.as_bytes(),
            read: read.clone(),
        };
        let options = ChunkOptions {
            chunk_bytes: 2_000,
            max_record_bytes: 1 << 20,
            output_bytes: 1_000,
        };
        let mut first_output_after = None;
        let mut largest = 0;
        read_chunked(BatchFileKind::Users, "u.csv", reader, &options, |piece| {
            first_output_after.get_or_insert(read.get());
            let (Output::Rows(b) | Output::Rejects(b)) = &piece;
            largest = largest.max(b.len());
            true
        })
        .unwrap();
        // The first piece leaves after one chunk (plus the rest of a record), not the file.
        let first = first_output_after.unwrap();
        assert!(
            first <= 2 * 2_000,
            "{first} of {} bytes read first",
            data.len()
        );
        // A piece is handed over as soon as it reaches output_bytes: one row or reject over at most.
        assert!(largest < 1_000 + 2 * USER.len() + 100, "{largest}");
    }

    #[test]
    fn an_unbalanced_quote_stops_the_file_at_the_record_limit() {
        let data = format!("{USERS_CSV_HEADER}\n{}", format!("{USER}\n").repeat(100));
        // Line 2 opens a quote that nothing closes: every later line would be one record.
        let broken = data.replacen("Ada,", "\"Ada,", 1);
        let options = ChunkOptions {
            chunk_bytes: 1_000,
            max_record_bytes: 5_000,
            output_bytes: 1_000,
        };
        let err = read_chunked(
            BatchFileKind::Users,
            "u.csv",
            broken.as_bytes(),
            &options,
            |_| true,
        )
        .unwrap_err();
        assert!(
            matches!(err, BatchError::RecordTooLong { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("u.csv line 2: "), "{err}");
    }

    #[test]
    fn invalid_utf8_in_a_later_chunk_names_its_line() {
        let (mut data, expected) = mixed_users();
        data.push('\u{FFFD}');
        let mut bytes = data.into_bytes();
        let len = bytes.len();
        bytes[len - 3..].copy_from_slice(b"\xff\xfe\n");
        let options = ChunkOptions {
            chunk_bytes: 1_000,
            ..ChunkOptions::default()
        };
        let err = read_chunked(BatchFileKind::Users, "u.csv", &bytes[..], &options, |_| {
            true
        })
        .unwrap_err();
        let last = expected.last().unwrap().0;
        let line_of_bad = last + 1;
        assert!(
            matches!(err, BatchError::NotUtf8 { line, .. } if line == line_of_bad),
            "{err}"
        );
    }

    #[test]
    fn a_refusing_receiver_stops_the_read() {
        let (data, _) = mixed_users();
        let options = ChunkOptions {
            chunk_bytes: 1_000,
            max_record_bytes: 1 << 20,
            output_bytes: 100,
        };
        let mut pieces = 0;
        let err = read_chunked(
            BatchFileKind::Users,
            "u.csv",
            data.as_bytes(),
            &options,
            |_| {
                pieces += 1;
                false
            },
        )
        .unwrap_err();
        assert!(matches!(err, BatchError::Stopped { .. }), "{err}");
        assert_eq!(pieces, 1);
    }

    #[test]
    fn a_wrong_header_is_an_error() {
        let data = format!("{TRANSACTIONS_CSV_HEADER}\n");
        let err = parse_file(BatchFileKind::Users, "u.csv", data.as_bytes()).unwrap_err();
        assert!(matches!(err, BatchError::BadHeader { .. }), "{err}");
        assert!(err.to_string().contains("u.csv line 1"), "{err}");
    }
}
