//! What a driver error calls for (dead-letter the record, stop, retry, or rebuild the session),
//! decided on the scylla driver's typed errors, never on their messages.

use scylla::errors::{BadQuery, DbError, ExecutionError, PrepareError, RequestAttemptError};

/// What an insert's failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The server (or the driver, serializing) refused this record's values: dead-letter it.
    Record,
    /// The server called the request invalid (`DbError::Invalid`): either a value the column
    /// refuses ("Invalid byte for ascii", an empty key, a mutation larger than the server's
    /// `max_mutation_size`) or a statement whose table or column is gone. The error carries no
    /// code that tells them apart, so the table's schema decides (see `schema_now`).
    Invalid,
    /// The table, keyspace or permissions are wrong: no retry can help.
    Config,
    /// An outage, a timeout or an overload: retry with backoff on the same session, whose
    /// driver reconnects by itself.
    Transient,
    /// The session or its prepared statement can no longer serve (no node left in the query
    /// plan, a statement the server re-prepared under another id): retry on a new session.
    Session,
}

/// Sorts a driver error into record, configuration, transient or session failure.
pub(super) fn classify(error: &ExecutionError) -> Failure {
    match error {
        ExecutionError::BadQuery(
            BadQuery::SerializationError(_)
            | BadQuery::ValuesTooLongForKey(..)
            | BadQuery::PartitionKeyExtraction,
        ) => Failure::Record,
        ExecutionError::BadQuery(_) => Failure::Config,
        ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(PrepareError::PreparedStatementIdsMismatch) => {
            Failure::Session
        }
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt })
        | ExecutionError::LastAttemptError(first_attempt) => classify_attempt(first_attempt),
        // Connection pools, timeouts, schema agreement, metadata: the cluster, not the data,
        // and the driver's own reconnection heals them.
        _ => Failure::Transient,
    }
}

fn classify_attempt(error: &RequestAttemptError) -> Failure {
    match error {
        RequestAttemptError::SerializationError(_) => Failure::Record,
        RequestAttemptError::DbError(db, _) => classify_db(db),
        RequestAttemptError::RepreparedIdChanged { .. } => Failure::Session,
        _ => Failure::Transient,
    }
}

fn classify_db(error: &DbError) -> Failure {
    match error {
        DbError::Invalid => Failure::Invalid,
        DbError::FunctionFailure { .. } => Failure::Record,
        DbError::SyntaxError
        | DbError::Unauthorized
        | DbError::AuthenticationError
        | DbError::ConfigError
        | DbError::AlreadyExists { .. }
        | DbError::TruncateError
        | DbError::ProtocolError => Failure::Config,
        // Unavailable, overloaded, bootstrapping, read/write timeouts and failures, unprepared,
        // server errors, rate limits, and codes the driver does not know.
        _ => Failure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::statement::Consistency;

    fn db(error: DbError, message: &str) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, message.into()))
    }

    #[test]
    fn a_refused_value_is_the_record_s_fault_and_the_rest_config_or_transient() {
        // The message never decides: an invalid value, an oversized mutation and a dropped
        // table are all `Invalid`, which the table's schema tells apart (tests/all/connectors.rs
        // and tests/all/cassandra_semantics.rs check them).
        for message in [
            "Invalid byte for ascii: -61",
            "Key may not be empty",
            "Rejected an oversized mutation (17825830/16777216) for keyspace: ks",
            "unconfigured table created_users",
            "Undefined column name email in table ks.t",
        ] {
            assert_eq!(
                classify(&db(DbError::Invalid, message)),
                Failure::Invalid,
                "{message}"
            );
        }
        for error in [
            DbError::Unauthorized,
            DbError::SyntaxError,
            DbError::ConfigError,
        ] {
            assert_eq!(classify(&db(error, "")), Failure::Config);
        }
        for error in [
            DbError::Overloaded,
            DbError::IsBootstrapping,
            DbError::ServerError,
            DbError::Unavailable {
                consistency: Consistency::One,
                required: 1,
                alive: 0,
            },
        ] {
            assert_eq!(classify(&db(error, "")), Failure::Transient);
        }
        assert_eq!(
            classify(&ExecutionError::RequestTimeout(
                std::time::Duration::from_secs(1)
            )),
            Failure::Transient
        );
        assert_eq!(
            classify(&ExecutionError::BadQuery(BadQuery::ValuesTooLongForKey(
                70_000, 65_535
            ))),
            Failure::Record
        );
    }

    #[test]
    fn only_a_session_that_cannot_serve_is_rebuilt() {
        assert_eq!(classify(&ExecutionError::EmptyPlan), Failure::Session);
        assert_eq!(
            classify(&ExecutionError::LastAttemptError(
                RequestAttemptError::RepreparedIdChanged {
                    statement: "INSERT".into(),
                    expected_id: vec![1],
                    reprepared_id: vec![2],
                }
            )),
            Failure::Session
        );
        assert_eq!(
            classify(&ExecutionError::PrepareError(
                PrepareError::PreparedStatementIdsMismatch
            )),
            Failure::Session
        );
        // A node that is down, a broken connection, a timeout: the driver reconnects, the
        // session stays.
        assert_eq!(
            classify(&ExecutionError::LastAttemptError(
                RequestAttemptError::UnableToAllocStreamId
            )),
            Failure::Transient
        );
        assert_eq!(
            classify(&db(
                DbError::WriteTimeout {
                    consistency: Consistency::One,
                    received: 0,
                    required: 1,
                    write_type: scylla::errors::WriteType::Simple,
                },
                ""
            )),
            Failure::Transient
        );
    }
}
