//! A single pass over a CSV file's bytes that finds each record's line number, raw text and field
//! count, before polars parses the fields.
//!
//! Polars reads columns, not lines: it cannot say on which line a row was, nor give back its raw
//! text, and a row of the wrong width makes it fail or pad. This scan answers those three questions
//! (quotes are honoured, so a quoted comma or newline is part of a field), which lets every bad row
//! be reported with its line and text and keeps ragged rows away from polars.

use std::ops::Range;

/// One CSV record (a data row), located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// 1-based line where the record starts (the header is line 1).
    pub line: u64,
    /// Byte range of the record in the file, without its line terminator.
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

/// Splits `data` into its header and records.
pub fn scan(data: &[u8]) -> Scanned {
    let mut scanned = Scanned {
        header: 0..0,
        records: Vec::new(),
    };
    let mut seen_header = false;
    let mut line: u64 = 1;
    let mut start = 0usize;
    let mut start_line = 1u64;
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
                scanned.push(&mut seen_header, data, start..i, start_line, fields);
                start = i + 1;
                start_line = line;
                fields = 1;
            }
            _ => {}
        }
    }
    // A last record without a terminating newline.
    if start < data.len() {
        scanned.push(
            &mut seen_header,
            data,
            start..data.len(),
            start_line,
            fields,
        );
    }
    scanned
}

impl Scanned {
    /// Records the line `span` (its terminator excluded, a `\r` before it dropped): the first one
    /// is the header, every later one a record.
    fn push(
        &mut self,
        seen_header: &mut bool,
        data: &[u8],
        span: Range<usize>,
        line: u64,
        fields: usize,
    ) {
        let end = if span.end > span.start && data[span.end - 1] == b'\r' {
            span.end - 1
        } else {
            span.end
        };
        let bytes = span.start..end;
        if *seen_header {
            self.records.push(RawRecord {
                line,
                bytes,
                fields,
            });
        } else {
            self.header = bytes;
            *seen_header = true;
        }
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
}
