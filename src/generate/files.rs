//! Writing a month's files, and reading earlier months' users back from the same folder.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use tracing::{info, instrument, warn};

use crate::domain::batch_transaction::TRANSACTION_COLUMNS;
use crate::domain::user::{USER_COLUMNS, UserRecord};

use super::corrupt::{BadRowKind, BadRowPlan, FileKind};
use super::monthly::{Month, MonthlyOptions, Payer, PriorUsersBuilder, TransactionRows, UserRows};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write {path}: {source}; check that the folder exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read earlier user file {path}: {source}")]
    ReadPrior {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{month} has transactions to write but no users: pass --users above 0 or generate an \
         earlier month into the same folder first"
    )]
    NoUsers { month: Month },
    #[error("--invalid-ratio must be between 0 and 1, got {0}")]
    BadRatio(f64),
}

/// A deliberately bad row and where it is (1-based line, the header being line 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub kind: BadRowKind,
}

/// What a run wrote.
#[derive(Debug, Clone, Default)]
pub struct MonthlyReport {
    pub users_file: PathBuf,
    pub transactions_file: PathBuf,
    pub user_rows: u64,
    pub restated_rows: u64,
    pub transaction_rows: u64,
    /// Earlier users (distinct) found in the folder.
    pub prior_users: u64,
    pub bad_user_rows: Vec<BadRow>,
    pub bad_transaction_rows: Vec<BadRow>,
}

/// Writes `user_registrations_YYYY_MM.csv` and `transactions_YYYY_MM.csv` into `out_dir`.
/// Each file is written aside and renamed into place, so a loader never sees half a file.
#[instrument(skip_all, fields(month = %options.month, users = options.users, transactions = options.transactions))]
pub fn write_month(
    out_dir: &Path,
    options: &MonthlyOptions,
    progress: &ProgressBar,
) -> Result<MonthlyReport, GenerateError> {
    if !(0.0..=1.0).contains(&options.invalid_ratio) {
        return Err(GenerateError::BadRatio(options.invalid_ratio));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| GenerateError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let prior = read_prior_users(out_dir, options)?;
    let month = options.month;
    let mut report = MonthlyReport {
        users_file: out_dir.join(month.users_file_name()),
        transactions_file: out_dir.join(month.transactions_file_name()),
        prior_users: prior.ids.len() as u64,
        ..Default::default()
    };
    progress.set_length(options.users + options.transactions);

    // Users: keep only (id, registration) of good new rows, for the transactions to reference.
    let mut new_users: Vec<Payer> = Vec::with_capacity(options.users as usize);
    let plan = BadRowPlan::new(options.invalid_ratio, FileKind::Users);
    write_csv(&report.users_file, &USER_COLUMNS, |writer| {
        for (index, row) in UserRows::new(options, &prior).enumerate() {
            let index = index as u64;
            let mut fields = row.record.to_fields();
            match plan.kind_for(index) {
                Some(kind) => {
                    kind.apply(FileKind::Users, &mut fields);
                    report.bad_user_rows.push(BadRow {
                        line: index + 2,
                        kind,
                    });
                }
                None if !row.restated => new_users.push(Payer {
                    user_id: row.record.user_id,
                    registered: Some(row.record.registration_date),
                }),
                None => {}
            }
            report.restated_rows += u64::from(row.restated);
            report.user_rows += 1;
            writer.write_record(&fields)?;
            tick(progress, index);
        }
        Ok(())
    })?;

    let plan = BadRowPlan::new(options.invalid_ratio, FileKind::Transactions);
    let rows = TransactionRows::new(options, &new_users, &prior.ids)
        .ok_or(GenerateError::NoUsers { month })?;
    write_csv(&report.transactions_file, &TRANSACTION_COLUMNS, |writer| {
        for (index, tx) in rows.enumerate() {
            let index = index as u64;
            let mut fields = tx.to_fields();
            if let Some(kind) = plan.kind_for(index) {
                kind.apply(FileKind::Transactions, &mut fields);
                report.bad_transaction_rows.push(BadRow {
                    line: index + 2,
                    kind,
                });
            }
            report.transaction_rows += 1;
            writer.write_record(&fields)?;
            tick(progress, options.users + index);
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    info!(
        users = report.user_rows,
        restated = report.restated_rows,
        transactions = report.transaction_rows,
        bad_users = report.bad_user_rows.len(),
        bad_transactions = report.bad_transaction_rows.len(),
        "month written"
    );
    Ok(report)
}

/// Moving the bar every row costs more than the row; every 4096 rows is smooth enough.
fn tick(progress: &ProgressBar, position: u64) {
    if position.is_multiple_of(4096) {
        progress.set_position(position);
    }
}

fn write_csv(
    path: &Path,
    header: &[&str],
    body: impl FnOnce(&mut csv::Writer<BufWriter<File>>) -> Result<(), csv::Error>,
) -> Result<(), GenerateError> {
    let partial = path.with_extension("csv.partial");
    let fail = |source: std::io::Error| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(&partial).map_err(fail)?;
    let mut writer = csv::WriterBuilder::new()
        // Rows of the wrong width are written on purpose by --invalid-ratio.
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(BufWriter::with_capacity(1 << 20, file));
    writer.write_record(header).map_err(|e| fail(e.into()))?;
    body(&mut writer).map_err(|e| fail(e.into()))?;
    let mut inner = writer
        .into_inner()
        .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    inner.flush().map_err(fail)?;
    inner.get_ref().sync_all().map_err(fail)?;
    drop(inner);
    std::fs::rename(&partial, path).map_err(fail)
}

/// Users of months before `options.month` found in `dir`, newest month first.
fn read_prior_users(
    dir: &Path,
    options: &MonthlyOptions,
) -> Result<super::monthly::PriorUsers, GenerateError> {
    let mut earlier: Vec<(Month, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|source| GenerateError::ReadPrior {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let month = Month::parse(
                name.strip_prefix("user_registrations_")?
                    .strip_suffix(".csv")?,
            )?;
            (month < options.month).then(|| (month, entry.path()))
        })
        .collect();
    earlier.sort_by_key(|(month, _)| std::cmp::Reverse(*month));
    let mut builder = PriorUsersBuilder::new(options);
    for (_, path) in earlier {
        let file = File::open(&path).map_err(|source| GenerateError::ReadPrior {
            path: path.clone(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let mut skipped = 0u64;
        for record in reader.records() {
            let record = record.map_err(|e| GenerateError::ReadPrior {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let fields: Vec<&str> = record.iter().collect();
            // Bad rows of earlier months (--invalid-ratio) are nobody to restate or reference.
            match UserRecord::parse(&fields) {
                Ok(user) => builder.add(user),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            warn!(path = %path.display(), skipped, "ignored invalid rows of an earlier user file");
        }
    }
    Ok(builder.build())
}
