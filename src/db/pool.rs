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
///
/// Errs on the side of hiding too much: a URL's password may hold `@`, `/` or `?` unencoded
/// (libpq and tokio-postgres accept some of these), so the user info is taken to end at the
/// *last* `@`; a key=value connection string (`host=… password=…`) has its password value hidden;
/// and whatever password the driver would use is hidden wherever it appears.
pub fn redact_url(url: &str) -> String {
    let mut redacted = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => key_value_password()
            .replace_all(url, "${1}***")
            .into_owned(),
    };
    let parsed = tokio_postgres::Config::from_str(url).ok();
    if let Some(password) = parsed
        .as_ref()
        .and_then(|c| c.get_password())
        .and_then(|p| std::str::from_utf8(p).ok())
        .filter(|p| !p.is_empty())
    {
        redacted = redacted.replace(password, "***");
    }
    redacted
}

/// `password=value` (quoted or not) in a key=value connection string.
fn key_value_password() -> &'static regex::Regex {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        regex::Regex::new(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)").expect("a valid pattern")
    })
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

    #[test]
    fn odd_passwords_and_key_value_strings_are_redacted() {
        for (url, secret) in [
            ("postgres://app:pa/ss@db:5432/etl", "pa/ss"),
            ("postgres://app:pa?ss@db:5432/etl", "pa?ss"),
            ("postgres://app:p%40ss@db:5432/etl", "p%40ss"),
            ("postgres://app:pw@db:notaport/etl", "pw@"),
            (
                "host=db port=5432 user=app password=s3cret dbname=etl",
                "s3cret",
            ),
            ("host=db password='s3 cr\\'et' dbname=etl", "s3 cr"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.contains("***"), "{url} shown as {shown}");
        }
        assert_eq!(
            redact_url("host=db password=s3cret dbname=etl"),
            "host=db password=*** dbname=etl"
        );
    }
}
