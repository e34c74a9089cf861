//! The user ids stream traffic may refer to: the `user_id` column of every monthly user file
//! (ARCHITECTURE §3). This is the generators' only I/O, kept apart from the pure iterators.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Name pattern of the monthly user files: `user_registrations_YYYY_MM.csv`.
const PREFIX: &str = "user_registrations_";
const SUFFIX: &str = ".csv";

#[derive(Debug, thiserror::Error)]
pub enum UserIdsError {
    #[error(
        "no user_registrations_*.csv in {dir}; run `etl generate-monthly` first (or point \
         --users-dir at the folder that holds them)"
    )]
    NoFiles { dir: PathBuf },
    #[error("cannot read the folder {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {file}: {source}")]
    Csv {
        file: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{file} has no `user_id` column; is it a ARCHITECTURE §3 user file?")]
    NoUserIdColumn { file: PathBuf },
    #[error(
        "{files} user file(s) in {dir} hold no valid user_id; regenerate them with `etl generate-monthly`"
    )]
    Empty { dir: PathBuf, files: usize },
}

/// What was loaded, for the log and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    /// Distinct ids, sorted.
    pub ids: Vec<Uuid>,
    pub files: Vec<PathBuf>,
    /// Rows whose user_id is not a UUID; the batch loader rejects those rows too.
    pub skipped_rows: usize,
}

/// Distinct user ids of every `user_registrations_*.csv` in `dir`.
pub fn load_user_ids(dir: &Path) -> Result<UserIds, UserIdsError> {
    let files = user_files(dir)?;
    let mut ids = BTreeSet::new();
    let mut skipped_rows = 0;
    for file in &files {
        let csv_error = |source| UserIdsError::Csv {
            file: file.clone(),
            source,
        };
        // Flexible: a row with the wrong number of fields is one the loader rejects, so it is
        // skipped here too rather than failing the whole file.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(file)
            .map_err(csv_error)?;
        let headers = reader.headers().map_err(csv_error)?.clone();
        let column = headers
            .iter()
            .position(|h| h.trim() == "user_id")
            .ok_or_else(|| UserIdsError::NoUserIdColumn { file: file.clone() })?;
        let mut record = csv::StringRecord::new();
        while reader.read_record(&mut record).map_err(csv_error)? {
            let parsed = (record.len() == headers.len())
                .then(|| record.get(column).map(|v| Uuid::try_parse(v.trim())))
                .flatten();
            match parsed {
                Some(Ok(id)) => {
                    ids.insert(id);
                }
                _ => {
                    skipped_rows += 1;
                    tracing::debug!(file = %file.display(), line = record.position().map(|p| p.line()), "skipping a row without a valid user_id");
                }
            }
        }
    }
    if ids.is_empty() {
        return Err(UserIdsError::Empty {
            dir: dir.to_path_buf(),
            files: files.len(),
        });
    }
    Ok(UserIds {
        ids: ids.into_iter().collect(),
        files,
        skipped_rows,
    })
}

/// The user files in `dir`, sorted by name (so by month).
fn user_files(dir: &Path) -> Result<Vec<PathBuf>, UserIdsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UserIdsError::NoFiles {
                dir: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(UserIdsError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| UserIdsError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        return Err(UserIdsError::NoFiles {
            dir: dir.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::USERS_CSV_HEADER;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("etl-user-ids-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn row(id: &str) -> String {
        format!(
            "{id},Ada,Lovelace,ada@example.com,36,high,gold,moderate,London,LDN,GB,2025-01-05T10:00:00,\"travel,technology\",true,third_party_registration\n"
        )
    }

    #[test]
    fn ids_of_every_month_deduplicated_and_bad_rows_skipped() {
        let dir = temp_dir("ok");
        let a = Uuid::new_v4().to_string();
        let b = Uuid::new_v4().to_string();
        std::fs::write(
            dir.join("user_registrations_2025_01.csv"),
            format!("{USERS_CSV_HEADER}\n{}{}", row(&a), row("not-a-uuid")),
        )
        .unwrap();
        // A restated user in the next month counts once.
        std::fs::write(
            dir.join("user_registrations_2025_02.csv"),
            format!("{USERS_CSV_HEADER}\n{}{}", row(&a), row(&b)),
        )
        .unwrap();
        std::fs::write(dir.join("transactions_2025_01.csv"), "tx_id\n1\n").unwrap();
        let loaded = load_user_ids(&dir).unwrap();
        assert_eq!(loaded.ids.len(), 2);
        assert_eq!(loaded.files.len(), 2);
        assert_eq!(loaded.skipped_rows, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_files_says_to_generate_them() {
        let dir = temp_dir("none");
        let err = load_user_ids(&dir).unwrap_err();
        assert!(matches!(err, UserIdsError::NoFiles { .. }));
        assert!(err.to_string().contains("etl generate-monthly"), "{err}");
        let missing = load_user_ids(&dir.join("absent")).unwrap_err();
        assert!(matches!(missing, UserIdsError::NoFiles { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_without_the_column_is_named() {
        let dir = temp_dir("column");
        std::fs::write(dir.join("user_registrations_2025_01.csv"), "id,name\n1,x\n").unwrap();
        let err = load_user_ids(&dir).unwrap_err();
        assert!(
            err.to_string().contains("user_registrations_2025_01.csv"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
