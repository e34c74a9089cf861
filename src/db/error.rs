//! Database errors that say which database and what to do, without leaking the password.

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to PostgreSQL at {url} ({cause}); is it running? `just up` starts a local one, \
         DATABASE_URL points elsewhere"
    )]
    Connect {
        /// The URL with its password removed.
        url: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error("migrating {url} failed: {cause}")]
    Migrate {
        url: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}
