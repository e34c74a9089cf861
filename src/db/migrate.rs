//! Schema migrations from `migrations/` (refinery over tokio-postgres).
//!
//! Every command migrates on start, so several processes may do it at once: a session-level
//! advisory lock serialises them, and whoever comes second finds nothing left to apply.

use std::str::FromStr;

use native_tls::TlsConnector;
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tracing::{info, instrument};

use super::{DbError, redact_url};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock held while migrating (arbitrary, fixed: "etl_migr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6574_6c5f_6d69_6772;

/// Refinery's history table; it lives beside our own bookkeeping.
const HISTORY_TABLE: &str = "etl.schema_history";

/// A migration that this run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i32,
    pub name: String,
}

/// Applies every pending migration and returns those applied (empty when up to date).
// No `err` here: the caller reports the error, and logging it too printed it twice.
#[instrument(skip_all, fields(url = %redact_url(url)))]
pub async fn migrate(url: &str) -> Result<Vec<Applied>, DbError> {
    let redacted = redact_url(url);
    let mut client = connect(url).await?;
    let fail = |cause: Box<dyn std::error::Error + Send + Sync>| DbError::Migrate {
        url: redacted.clone(),
        cause,
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| fail(Box::new(e)))?;
    // Under the lock: the history table's schema must exist before refinery creates the table.
    let report = match client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS etl")
        .await
    {
        Ok(()) => {
            let mut runner = embedded::migrations::runner().set_abort_divergent(true);
            runner.set_migration_table_name(HISTORY_TABLE);
            runner
                .run_async(&mut client)
                .await
                .map_err(|e| fail(Box::new(e)))
        }
        Err(e) => Err(fail(Box::new(e))),
    };
    // The lock ends with the session anyway; unlocking explicitly just frees it sooner.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let applied: Vec<Applied> = report?
        .applied_migrations()
        .iter()
        .map(|m| Applied {
            version: m.version(),
            name: m.name().to_string(),
        })
        .collect();
    for m in &applied {
        info!(version = m.version, name = %m.name, "applied migration");
    }
    Ok(applied)
}

/// Connects with tokio-postgres, using TLS unless the URL says `sslmode=disable`.
/// As with libpq's `require`, TLS here encrypts without verifying the server certificate.
async fn connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| DbError::BadUrl(e.to_string()))?;
    let connect_error = |e: tokio_postgres::Error| DbError::Connect {
        url: redact_url(url),
        cause: Box::new(e),
    };
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(connect_error)?;
        tokio::spawn(connection);
        client
    } else {
        let tls = TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()
            .map_err(|e| DbError::Connect {
                url: redact_url(url),
                cause: Box::new(e),
            })?;
        let (client, connection) = config
            .connect(MakeTlsConnector::new(tls))
            .await
            .map_err(connect_error)?;
        tokio::spawn(connection);
        client
    };
    Ok(client)
}
