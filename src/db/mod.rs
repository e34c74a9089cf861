//! PostgreSQL: connection pool, migrations and the errors around them.

pub mod error;
pub mod migrate;
pub mod nodelay;
pub mod pool;
pub mod sink;

pub use error::DbError;
pub use pool::{DEFAULT_DATABASE_URL, connect, redact_url};
