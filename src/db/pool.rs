//! The sqlx connection pool used by every command.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::{DbError, nodelay};

/// The database `just up` creates on the local server.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/etl";

/// Opens a pool and checks that the server answers, so a wrong URL fails here with a clear message.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let failed = |e| DbError::Connect {
        url: redact_url(url),
        cause: Box::new(e),
    };
    // sqlx warns about every statement slower than a second, with its text: model builds and
    // loads run such statements by design and report their own durations, so only at debug.
    let options = PgConnectOptions::from_str(url)
        .map_err(failed)?
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    // Over TCP only: a Unix socket has no Nagle.
    let tcp_port = options.get_socket().is_none().then(|| options.get_port());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |_conn, _meta| {
            Box::pin(async move {
                if let Some(port) = tcp_port {
                    match nodelay::set_on_connections_to(port) {
                        Ok(set) => tracing::trace!(set, "TCP_NODELAY on the database connections"),
                        Err(err) => tracing::debug!(%err, "cannot set TCP_NODELAY; every COPY waits for a delayed ACK"),
                    }
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(failed)
}

/// The URL with any password replaced by `***`, safe for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The userinfo ends at the last '@' before the first '/', so passwords containing '@' are covered.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db.example.com:5432/etl?sslmode=require"),
            "postgres://app:***@db.example.com:5432/etl?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/etl"),
            "postgres://postgres@127.0.0.1:5432/etl"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
