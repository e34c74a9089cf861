//! Why a batch file could not be landed. Row-level problems are not errors: they are rejects,
//! stored in `etl.batch_rejects` with their file, line, column and reason.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read {path}: {source}; check that it exists and is readable")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} line 1: the header is `{found}` but a {kind} file must start with `{expected}` \
         (ARCHITECTURE §3); fix or remove the file"
    )]
    BadHeader {
        file: String,
        kind: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{file} line {line}: not valid UTF-8; re-export the file as UTF-8")]
    NotUtf8 { file: String, line: u64 },
    #[error("cannot read {file} at line {line}: {source}; check that it is readable and complete")]
    Read {
        file: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} line {line}: a record starts here and is still open after {limit_bytes} bytes; \
         look for an unbalanced quote (\") on this line"
    )]
    RecordTooLong {
        file: String,
        line: u64,
        limit_bytes: usize,
    },
    #[error(
        "{file} changed while it was being loaded (its content hash differs between two reads); \
         nothing was written: load it again once whatever writes it has finished"
    )]
    ChangedWhileLoading { file: String },
    #[error("reading {file} stopped because writing its rows to the database failed")]
    Stopped { file: String },
    #[error(
        "{file}: polars could not parse it as CSV ({message}); check quoting around line {line}"
    )]
    Parse {
        file: String,
        line: u64,
        message: String,
    },
    #[error(
        "{file} was loaded before with different content (hash {loaded_hash}, now {new_hash}); \
         pass --reload to replace its rows, or give the new file a new name"
    )]
    ContentChanged {
        file: String,
        loaded_hash: String,
        new_hash: String,
    },
    #[error(
        "no batch file for {month} in {dir}; expected user_registrations_{label}.csv or transactions_{label}.csv"
    )]
    NoFileForMonth {
        dir: PathBuf,
        month: String,
        label: String,
    },
    #[error("cannot list {dir}: {source}; pass --dir with the folder of the monthly files")]
    BadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading {file} failed while {context}: {source}; nothing of this file was written (its transaction rolled back)"
    )]
    Database {
        file: String,
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}
