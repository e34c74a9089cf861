//! A single pass over a CSV file's bytes that finds each record's line number, raw text and field
//! count, before polars parses the fields.
//!
//! Polars reads columns, not lines: it cannot say on which line a row was, nor give back its raw
//! text, and a row of the wrong width makes it fail or pad. This scan answers those three questions
//! (quotes are honoured, so a quoted comma or newline is part of a field), which lets every bad row
//! be reported with its line and text and keeps ragged rows away from polars.
//!
//! The loader reads a file a chunk at a time ([`scan_records`]): a chunk ends with the last record
//! that is complete in it, and the rest waits for the next read, so no record is ever split.

use std::ops::Range;

/// One CSV record (a data row), located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// 1-based line where the record starts (the header is line 1).
    pub line: u64,
    /// Byte range of the record in the scanned bytes, without its line terminator.
    pub bytes: Range<usize>,
    pub fields: usize,
}

/// The header line and the data records after it.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The header line without its terminator.
    pub header: Range<usize>,
    pub records: Vec<RawRecord>,
}

/// The complete records at the start of a chunk.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub records: Vec<RawRecord>,
    /// Bytes the records take, terminators included: where the next chunk starts.
    pub consumed: usize,
    /// The line the next chunk starts on.
    pub next_line: u64,
}

/// Splits a whole file, `data`, into its header and records.
pub fn scan(data: &[u8]) -> Scanned {
    let mut chunk = scan_records(data, 1, true);
    let header = if chunk.records.is_empty() {
        0..0
    } else {
        chunk.records.remove(0).bytes
    };
    Scanned {
        header,
        records: chunk.records,
    }
}

/// The records that are complete in `data`, which starts a record on line `first_line`. A record
/// is complete when a newline outside quotes ends it, or, when `at_end` (nothing follows `data`),
/// when the bytes end.
pub fn scan_records(data: &[u8], first_line: u64, at_end: bool) -> Chunk {
    let mut chunk = Chunk {
        records: Vec::new(),
        consumed: 0,
        next_line: first_line,
    };
    let mut line = first_line;
    let mut fields = 1usize;
    let mut in_quotes = false;
    for (i, &byte) in data.iter().enumerate() {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => fields += 1,
            b'\n' => {
                line += 1;
                if in_quotes {
                    continue;
                }
                chunk.push(data, i, fields);
                chunk.consumed = i + 1;
                chunk.next_line = line;
                fields = 1;
            }
            _ => {}
        }
    }
    // A last record without a terminating newline.
    if at_end && chunk.consumed < data.len() {
        chunk.push(data, data.len(), fields);
        chunk.consumed = data.len();
        chunk.next_line = line;
    }
    chunk
}

impl Chunk {
    /// Records the record from `self.consumed` to `end` (its terminator excluded, a `\r` before
    /// it dropped).
    fn push(&mut self, data: &[u8], end: usize, fields: usize) {
        let start = self.consumed;
        let end = if end > start && data[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        self.records.push(RawRecord {
            line: self.next_line,
            bytes: start..end,
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_know_their_line_text_and_width() {
        let data = b"a,b,c\n1,\"x,y\",3\n\n4,\"multi\nline\",6\r\n7,8";
        let scanned = scan(data);
        assert_eq!(&data[scanned.header.clone()], b"a,b,c");
        let summary: Vec<(u64, &[u8], usize)> = scanned
            .records
            .iter()
            .map(|r| (r.line, &data[r.bytes.clone()], r.fields))
            .collect();
        assert_eq!(
            summary,
            [
                (2, &b"1,\"x,y\",3"[..], 3),
                (3, &b""[..], 1),
                (4, &b"4,\"multi\nline\",6"[..], 3),
                (6, &b"7,8"[..], 2),
            ]
        );
    }

    #[test]
    fn an_empty_file_has_an_empty_header() {
        let scanned = scan(b"");
        assert_eq!(scanned.header, 0..0);
        assert!(scanned.records.is_empty());
    }

    #[test]
    fn a_chunk_ends_with_its_last_complete_record() {
        let data = b"1,2\n3,\"open\n4";
        let chunk = scan_records(data, 10, false);
        assert_eq!(chunk.records.len(), 1);
        assert_eq!(
            (chunk.records[0].line, chunk.consumed, chunk.next_line),
            (10, 4, 11)
        );
        // At the end of the file the open record is a record too, two lines long.
        let rest = scan_records(&data[chunk.consumed..], chunk.next_line, true);
        assert_eq!(rest.records[0].line, 11);
        assert_eq!(rest.records[0].fields, 2);
        assert_eq!(rest.next_line, 12);
        assert_eq!(rest.consumed, data.len() - chunk.consumed);
    }
}
