//! What can stop a batch, and whether trying again can help.

use rdkafka::error::KafkaError as ClientError;

use crate::kafka::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("database error while {context}: {cause}")]
    Db {
        context: &'static str,
        cause: sqlx::Error,
    },
    #[error("dead-lettering {count} message(s) to `{topic}` failed: {cause}")]
    DeadLetter {
        topic: String,
        count: usize,
        cause: ClientError,
    },
    #[error("publishing anomalies to `{topic}` failed: {cause}")]
    Relay { topic: String, cause: ClientError },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot create a Kafka client, check the -X settings: {0}")]
    Config(#[source] ClientError),
    #[error(
        "cannot serve metrics on {addr}: {cause}; is another process using the port? (--metrics-addr)"
    )]
    Metrics {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error("stopped while a batch could not be written ({0}); it will be read again on restart")]
    Abandoned(Box<SinkError>),
    #[error(
        "{writers} writers need at least {} database connections (one each, one for the relay), \
         but the pool has {connections}; raise --db-connections or lower --writers",
        writers + 1
    )]
    TooFewConnections { writers: usize, connections: u32 },
}

impl SinkError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |cause| Self::Db { context, cause }
    }

    /// Errors worth retrying with backoff: the connection or the broker went away, the server is
    /// restarting or overloaded, a lock or serialization conflict. Everything else is a bug or a
    /// configuration problem, and retrying would only hide it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db { cause, .. } => is_transient_db(cause),
            // librdkafka retries internally; what reaches us (message timed out, all brokers
            // down, queue full) may pass once the broker is back.
            Self::DeadLetter { .. } | Self::Relay { .. } => true,
            Self::Kafka(KafkaError::Unreachable { .. }) => true,
            Self::Kafka(_)
            | Self::Config(_)
            | Self::Metrics { .. }
            | Self::Abandoned(_)
            | Self::TooFewConnections { .. } => false,
        }
    }
}

pub(crate) fn is_transient_db(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            // 08 connection exception, 53 insufficient resources, 57P01-03 shutdown / cannot
            // connect now, 40001 serialization failure, 40P01 deadlock, 55P03 lock not available.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
                )
        }),
        _ => false,
    }
}

/// A row the database refuses for what it contains (data exception or a constraint other than
/// the primary key): isolated by bisection and dead-lettered with `error.kind=db_rejected`.
pub(crate) fn is_row_rejection(err: &sqlx::Error) -> bool {
    sql_state(err).is_some_and(|code| {
        (code.starts_with("22") || code.starts_with("23")) && code != UNIQUE_VIOLATION
    })
}

pub(crate) const UNIQUE_VIOLATION: &str = "23505";

pub(crate) fn sql_state(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error with an SQLSTATE, as PostgreSQL reports one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn lost_connections_restarts_overload_and_conflicts_are_transient() {
        for code in [
            "08006", "08P01", "53300", "57P01", "57P03", "40001", "40P01", "55P03",
        ] {
            assert!(is_transient_db(&db(code)), "{code}");
        }
        assert!(is_transient_db(&sqlx::Error::PoolTimedOut));
        assert!(is_transient_db(&sqlx::Error::Io(std::io::Error::other(
            "reset"
        ))));
    }

    #[test]
    fn bugs_and_bad_rows_are_not_transient() {
        // undefined table, syntax error, check violation, unique violation, bad text
        for code in ["42P01", "42601", "23514", "23505", "22P02"] {
            assert!(!is_transient_db(&db(code)), "{code}");
        }
        assert!(!is_transient_db(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn a_row_rejection_is_a_data_exception_or_a_constraint_but_not_the_primary_key() {
        for code in ["22P02", "22003", "23514", "23502", "23503"] {
            assert!(is_row_rejection(&db(code)), "{code}");
        }
        // A duplicate tx_id is a replay, handled by the careful path, not a refused row.
        assert!(!is_row_rejection(&db(UNIQUE_VIOLATION)));
        assert!(!is_row_rejection(&db("08006")));
        assert!(!is_row_rejection(&sqlx::Error::PoolTimedOut));
        assert_eq!(sql_state(&db("23514")).as_deref(), Some("23514"));
    }
}
