//! Landing batch files in PostgreSQL: one transaction per file, COPY for rows and rejects, the
//! content hash in `etl.loaded_files` for idempotence, and an advisory lock per file name so that
//! concurrent loaders land each file once.
//!
//! A file is read twice, never held whole: once to hash it (the early "already loaded?" answer
//! needs the hash before any work), once in chunks that stream into COPY. The second read hashes
//! again, and a file that changed in between rolls back instead of being recorded under the
//! first hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tracing::{info, instrument};

use crate::generate::monthly::Month;

use super::BatchError;
use super::copy_text::{REJECT_COLUMNS, TRANSACTIONS_RAW_COLUMNS, USERS_RAW_COLUMNS};
use super::read::{BatchFileKind, ChunkOptions, Output, ReadSummary, check_header, read_chunked};

/// Where the monthly files are unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "data/incoming";

/// What to load. Tests override only what matters: `..Default::default()`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dir: PathBuf,
    /// Only this month's files; every month when `None`.
    pub month: Option<Month>,
    /// Replace the rows of files whose content changed since they were loaded.
    pub reload: bool,
    /// How much of a file is held in memory at a time.
    pub chunks: ChunkOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            month: None,
            reload: false,
            chunks: ChunkOptions::default(),
        }
    }
}

/// A monthly file found in the folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchFile {
    pub month: Month,
    pub kind: BatchFileKind,
    pub path: PathBuf,
}

impl BatchFile {
    /// `user_registrations_YYYY_MM.csv` or `transactions_YYYY_MM.csv`; anything else is not ours.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        let stem = name.strip_suffix(".csv")?;
        let (kind, label) = if let Some(label) = stem.strip_prefix("user_registrations_") {
            (BatchFileKind::Users, label)
        } else {
            (
                BatchFileKind::Transactions,
                stem.strip_prefix("transactions_")?,
            )
        };
        (label.len() == 7 && label.as_bytes()[4] == b'_').then_some(())?;
        Some(Self {
            month: Month::parse(label)?,
            kind,
            path: path.to_path_buf(),
        })
    }

    /// The name stored as `source_file`: the file name without its folder, so moving the folder
    /// does not make old files look new.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The monthly files in `options.dir`, oldest month first and users before transactions.
pub fn find_files(options: &LoadOptions) -> Result<Vec<BatchFile>, BatchError> {
    let entries = std::fs::read_dir(&options.dir).map_err(|source| BatchError::BadDir {
        dir: options.dir.clone(),
        source,
    })?;
    let mut files: Vec<BatchFile> = entries
        .filter_map(Result::ok)
        .filter_map(|e| BatchFile::from_path(&e.path()))
        .filter(|f| options.month.is_none_or(|m| m == f.month))
        .collect();
    files.sort();
    if files.is_empty()
        && let Some(month) = options.month
    {
        return Err(BatchError::NoFileForMonth {
            dir: options.dir.clone(),
            month: month.to_string(),
            label: month.file_label(),
        });
    }
    Ok(files)
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Loaded,
    /// Replaced the rows of an earlier version (`--reload`).
    Reloaded,
    /// This exact content is already loaded, under this name or `as_name`.
    AlreadyLoaded {
        as_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    pub file: String,
    pub status: FileStatus,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rejects_by_kind: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for FileOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            FileStatus::AlreadyLoaded { as_name } if *as_name == self.file => {
                return write!(
                    f,
                    "{}: already loaded with this content, skipped",
                    self.file
                );
            }
            FileStatus::AlreadyLoaded { as_name } => {
                return write!(
                    f,
                    "{}: same content already loaded as {as_name}, skipped",
                    self.file
                );
            }
            FileStatus::Loaded => write!(f, "{}: loaded {} rows", self.file, self.rows_loaded)?,
            FileStatus::Reloaded => write!(f, "{}: reloaded {} rows", self.file, self.rows_loaded)?,
        }
        write!(f, ", rejected {}", self.rows_rejected)?;
        if !self.rejects_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .rejects_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// Loads every file `options` selects; one result per file, in order. A failed file does not stop
/// the others.
pub async fn load_all(
    pool: &PgPool,
    options: &LoadOptions,
) -> Result<Vec<Result<FileOutcome, BatchError>>, BatchError> {
    let files = find_files(options)?;
    let mut outcomes = Vec::with_capacity(files.len());
    for file in &files {
        outcomes.push(load_file(pool, file, options).await);
    }
    Ok(outcomes)
}

/// The row in `etl.loaded_files` for a name, if any: (content_hash, file_name).
const FIND_LOADED: &str = "SELECT content_hash, file_name FROM etl.loaded_files \
                           WHERE file_name = $1 OR content_hash = $2 \
                           ORDER BY (file_name = $1) DESC LIMIT 1";

/// Loads one file in one transaction (`options.dir` and `options.month` play no part here).
// No `err` here: `etl load-batch` prints each file's error; logging it too printed it twice.
#[instrument(skip_all, fields(file = %file.name()))]
pub async fn load_file(
    pool: &PgPool,
    file: &BatchFile,
    options: &LoadOptions,
) -> Result<FileOutcome, BatchError> {
    let reload = options.reload;
    let name = file.name();
    let first_pass = {
        let path = file.path.clone();
        tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| BatchError::Unreadable {
                path: file.path.clone(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    let hash = hex(&first_pass.sha256);
    let size_bytes = i64::try_from(first_pass.bytes).unwrap_or(i64::MAX);
    let db_error = |context: &'static str| {
        let name = name.clone();
        move |source: sqlx::Error| BatchError::Database {
            file: name,
            context,
            source,
        }
    };

    // Cheap early answer for the common re-run, before parsing; decided again under the lock.
    let known: Option<(String, String)> = sqlx::query_as(FIND_LOADED)
        .bind(&name)
        .bind(&hash)
        .fetch_optional(pool)
        .await
        .map_err(db_error("looking the file up in etl.loaded_files"))?;
    if let Some(outcome) = decide(&name, &hash, known, reload)? {
        return Ok(outcome);
    }

    check_header(file.kind, &name, &first_pass.start)?;
    let started = std::time::Instant::now();

    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("starting a transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(&name))
        .execute(&mut *tx)
        .await
        .map_err(db_error("waiting for the file's advisory lock"))?;
    let known: Option<(String, String)> = sqlx::query_as(FIND_LOADED)
        .bind(&name)
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("looking the file up in etl.loaded_files"))?;
    let replacing = known.as_ref().is_some_and(|(_, n)| *n == name);
    if let Some(outcome) = decide(&name, &hash, known, reload)? {
        // Another loader landed it while this one was parsing.
        return Ok(outcome);
    }
    if replacing {
        delete_rows(&mut tx, file.kind, &name)
            .await
            .map_err(db_error("deleting the rows of the previous version"))?;
    }
    let parsed = copy_while_reading(&mut tx, file, &options.chunks).await?;
    if parsed.sha256 != first_pass.sha256 {
        // Dropping the transaction rolls it back.
        return Err(BatchError::ChangedWhileLoading { file: name });
    }
    sqlx::query(
        "INSERT INTO etl.loaded_files \
           (file_name, file_kind, content_hash, file_month, size_bytes, rows_loaded, rows_rejected) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (file_name) DO UPDATE SET file_kind = EXCLUDED.file_kind, \
           content_hash = EXCLUDED.content_hash, file_month = EXCLUDED.file_month, \
           size_bytes = EXCLUDED.size_bytes, rows_loaded = EXCLUDED.rows_loaded, \
           rows_rejected = EXCLUDED.rows_rejected, loaded_at = now()",
    )
    .bind(&name)
    .bind(file.kind.as_str())
    .bind(&hash)
    .bind(file.month.first_day())
    .bind(size_bytes)
    .bind(parsed.rows_loaded as i64)
    .bind(parsed.rows_rejected as i64)
    .execute(&mut *tx)
    .await
    .map_err(db_error("recording the file in etl.loaded_files"))?;
    tx.commit().await.map_err(db_error("committing"))?;

    info!(
        file = %name,
        rows_loaded = parsed.rows_loaded,
        rows_rejected = parsed.rows_rejected,
        reloaded = replacing,
        chunks = parsed.chunks,
        seconds = started.elapsed().as_secs_f64(),
        "landed batch file"
    );
    Ok(FileOutcome {
        file: name,
        status: if replacing {
            FileStatus::Reloaded
        } else {
            FileStatus::Loaded
        },
        rows_loaded: parsed.rows_loaded,
        rows_rejected: parsed.rows_rejected,
        rejects_by_kind: parsed.rejects_by_kind,
    })
}

/// Given what `etl.loaded_files` knows, `Some` when there is nothing to load, an error when the
/// file changed and `--reload` was not given, `None` when the file must be (re)loaded.
fn decide(
    name: &str,
    hash: &str,
    known: Option<(String, String)>,
    reload: bool,
) -> Result<Option<FileOutcome>, BatchError> {
    let Some((loaded_hash, loaded_name)) = known else {
        return Ok(None);
    };
    if loaded_hash == hash {
        return Ok(Some(FileOutcome {
            file: name.to_string(),
            status: FileStatus::AlreadyLoaded {
                as_name: loaded_name,
            },
            rows_loaded: 0,
            rows_rejected: 0,
            rejects_by_kind: BTreeMap::new(),
        }));
    }
    if reload {
        return Ok(None);
    }
    Err(BatchError::ContentChanged {
        file: name.to_string(),
        loaded_hash,
        new_hash: hash.to_string(),
    })
}

async fn delete_rows(
    conn: &mut PgConnection,
    kind: BatchFileKind,
    name: &str,
) -> Result<(), sqlx::Error> {
    let delete = match kind {
        BatchFileKind::Users => "DELETE FROM public.users_raw WHERE source_file = $1",
        BatchFileKind::Transactions => {
            "DELETE FROM public.transactions_batch_raw WHERE source_file = $1"
        }
    };
    sqlx::query(delete).bind(name).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM etl.batch_rejects WHERE source_file = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What the first read of a file tells: its hash and size, and its start for the header check.
struct FirstPass {
    sha256: [u8; 32],
    bytes: u64,
    start: Vec<u8>,
}

/// Hashes the file in 1 MiB reads, keeping its first 64 KiB.
fn hash_file(path: &Path) -> Result<FirstPass, BatchError> {
    use std::io::Read;
    let unreadable = |source| BatchError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pass = FirstPass {
        sha256: [0; 32],
        bytes: 0,
        start: Vec::new(),
    };
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        hasher.update(&buf[..n]);
        let keep = (64usize << 10).saturating_sub(pass.start.len()).min(n);
        pass.start.extend_from_slice(&buf[..keep]);
        pass.bytes += n as u64;
    }
    pass.sha256 = hasher.finalize().into();
    Ok(pass)
}

/// Where a piece of COPY text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Rows = 0,
    Rejects = 1,
}

/// Pieces of COPY text in flight between the reader thread and the database: with the reader's
/// own piece and the one being sent, this bounds the COPY text held to four pieces.
const PIECES_IN_FLIGHT: usize = 2;

/// Reads the file in chunks on a blocking thread and streams its COPY text into the transaction
/// as it comes, so PostgreSQL ingests while the rest is read. Rows and rejects go to two tables
/// and a connection runs one COPY at a time, so a piece for the other table ends the current
/// COPY and starts the other's; rejects come in large pieces, so that is rare.
async fn copy_while_reading(
    conn: &mut PgConnection,
    file: &BatchFile,
    chunks: &ChunkOptions,
) -> Result<ReadSummary, BatchError> {
    let name = file.name();
    let db_error = |context: &'static str| {
        let name = name.clone();
        move |source: sqlx::Error| BatchError::Database {
            file: name,
            context,
            source,
        }
    };
    let rows_statement = match file.kind {
        BatchFileKind::Users => format!("COPY public.users_raw ({USERS_RAW_COLUMNS}) FROM STDIN"),
        BatchFileKind::Transactions => {
            format!("COPY public.transactions_batch_raw ({TRANSACTIONS_RAW_COLUMNS}) FROM STDIN")
        }
    };
    let rejects_statement = format!("COPY etl.batch_rejects ({REJECT_COLUMNS}) FROM STDIN");
    let (pieces, mut received) = tokio::sync::mpsc::channel::<Output>(PIECES_IN_FLIGHT);
    let reader = {
        let (kind, path, name, chunks) = (file.kind, file.path.clone(), name.clone(), *chunks);
        tokio::task::spawn_blocking(move || {
            let handle = std::fs::File::open(&path).map_err(|source| BatchError::Unreadable {
                path: path.clone(),
                source,
            })?;
            read_chunked(kind, &name, handle, &chunks, |piece| {
                pieces.blocking_send(piece).is_ok()
            })
        })
    };
    let copied = copy_pieces(conn, &mut received, [&rows_statement, &rejects_statement]).await;
    // Closing the channel stops a reader that is still producing after a failure.
    drop(received);
    let read = reader.await.map_err(|e| BatchError::Parse {
        file: name.clone(),
        line: 1,
        message: format!("the reader stopped: {e}"),
    });
    // A database failure first: the reader's own error is then only its consequence. Either way
    // the caller drops the transaction, which rolls back whatever was copied.
    copied.map_err(|(context, e)| db_error(context)(e))?;
    read?
}

/// Sends the pieces into COPY statements ([rows, rejects]), one statement per run of pieces for
/// the same table, until the channel closes.
async fn copy_pieces(
    conn: &mut PgConnection,
    received: &mut tokio::sync::mpsc::Receiver<Output>,
    statements: [&str; 2],
) -> Result<(), (&'static str, sqlx::Error)> {
    let split = |piece: Output| match piece {
        Output::Rows(bytes) => (Target::Rows, bytes),
        Output::Rejects(bytes) => (Target::Rejects, bytes),
    };
    let mut next = received.recv().await.map(split);
    while let Some((target, first)) = next.take() {
        let statement = statements[target as usize];
        let mut copy = conn
            .copy_in_raw(statement)
            .await
            .map_err(|e| ("starting a COPY", e))?;
        let mut bytes = first;
        loop {
            if let Err(e) = copy.send(bytes).await {
                let _ = copy.abort("sending rows failed").await;
                return Err(("copying rows", e));
            }
            match received.recv().await.map(split) {
                Some((t, more)) if t == target => bytes = more,
                other => {
                    next = other;
                    break;
                }
            }
        }
        copy.finish().await.map_err(|e| ("copying rows", e))?;
    }
    Ok(())
}

/// Streams COPY text in 1 MiB pieces.
pub(crate) async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await?;
    for chunk in data.chunks(1 << 20) {
        if let Err(e) = copy.send(chunk).await {
            let _ = copy.abort("sending rows failed").await;
            return Err(e);
        }
    }
    copy.finish().await.map(drop)
}

/// The advisory lock key of a file name: the first 8 bytes of a SHA-256, namespaced so that it
/// cannot collide with the migration lock.
pub fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("etl.load-batch:{name}"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_monthly_file_names_are_batch_files() {
        let users = BatchFile::from_path(Path::new("d/user_registrations_2025_03.csv")).unwrap();
        assert_eq!(
            (users.kind, users.month),
            (BatchFileKind::Users, Month::new(2025, 3).unwrap())
        );
        let txs = BatchFile::from_path(Path::new("transactions_2024_12.csv")).unwrap();
        assert_eq!(txs.kind, BatchFileKind::Transactions);
        for other in [
            "transactions_2024-12.csv",
            "transactions_2024_12.csv.partial",
            "users_2024_12.csv",
            "transactions_2024_13.csv",
        ] {
            assert!(BatchFile::from_path(Path::new(other)).is_none(), "{other}");
        }
    }

    #[test]
    fn a_changed_file_needs_reload() {
        let known = || Some(("old".to_string(), "f.csv".to_string()));
        assert!(matches!(
            decide("f.csv", "new", known(), false),
            Err(BatchError::ContentChanged { .. })
        ));
        assert!(decide("f.csv", "new", known(), true).unwrap().is_none());
        let same = decide("f.csv", "old", known(), true).unwrap().unwrap();
        assert_eq!(
            same.status,
            FileStatus::AlreadyLoaded {
                as_name: "f.csv".into()
            }
        );
        assert!(decide("f.csv", "new", None, false).unwrap().is_none());
    }
}
