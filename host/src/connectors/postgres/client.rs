//! A PostgreSQL connection that reconnects after failures, and forwards NOTIFY messages.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::connectors::{ConnectorError, ErrorKind};
use crate::secret::Secret;

/// Connects, spawning the connection's driver; each notification wakes `notifications` if given.
/// Wake-ups coalesce into one (a [`Notify`] permit), so a flood of NOTIFY messages, however long,
/// holds no memory: the source only needs to know that something was announced.
pub async fn connect(
    connector: &str,
    url: &Secret,
    notifications: Option<Arc<Notify>>,
) -> Result<Client, ConnectorError> {
    // A server that answers with an error (wrong password, missing database) is told apart from
    // one that cannot be reached: only the latter is worth retrying.
    let (client, mut connection) =
        tokio_postgres::connect(url.expose(), NoTls)
            .await
            .map_err(|e| {
                classify(
                    connector,
                    &format!("cannot connect to PostgreSQL ({})", url.redacted()),
                    e,
                )
            })?;
    let name = connector.to_owned();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(wake) = &notifications {
                        wake.notify_one();
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(connector = %name, %error, "PostgreSQL connection lost.");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// A database error as a connector error, decided by its SQLSTATE: connection and
/// server-availability problems are transient; the rest (bad SQL, permissions, constraint types)
/// are not. An error without a SQLSTATE never reached the server's SQL layer: the connection.
pub fn classify(connector: &str, what: &str, error: tokio_postgres::Error) -> ConnectorError {
    let kind = match error.code() {
        Some(code) if is_transient(code) => ErrorKind::Transient,
        Some(_) => ErrorKind::Fatal,
        None => ErrorKind::Transient,
    };
    let message = match error.as_db_error() {
        Some(db) => format!("{what} (SQLSTATE {})", db.code().code()),
        None => what.to_owned(),
    };
    ConnectorError::new(kind, connector, message).caused_by(error)
}

/// SQLSTATEs that retrying can cure.
fn is_transient(code: &SqlState) -> bool {
    // Classes: 08 connection exception, 53 insufficient resources, 57 operator intervention
    // (a shutdown, a restart in progress).
    matches!(code.code().get(..2), Some("08" | "53" | "57"))
        || [
            &SqlState::T_R_SERIALIZATION_FAILURE,
            &SqlState::T_R_DEADLOCK_DETECTED,
            &SqlState::INTERNAL_ERROR,
            // Races between two writers creating the same table or function.
            &SqlState::DUPLICATE_TABLE,
            &SqlState::UNIQUE_VIOLATION,
            // A table a source tails may be created later by the pipeline that fills it.
            &SqlState::UNDEFINED_TABLE,
        ]
        .contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_decide_what_is_retried() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNDEFINED_TABLE,
        ] {
            assert!(is_transient(&code), "{}", code.code());
        }
        for code in [
            SqlState::INVALID_PASSWORD,
            SqlState::UNDEFINED_DATABASE,
            SqlState::SYNTAX_ERROR,
            SqlState::DATATYPE_MISMATCH,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ] {
            assert!(!is_transient(&code), "{}", code.code());
        }
    }

    #[test]
    fn connection_strings_in_messages_hide_passwords_in_every_form() {
        // The forms tokio-postgres accepts: a URL with userinfo, a URL with `?password=`, and a
        // key/value string, quoted or not. Messages name the connection with `Secret::redacted`.
        for (url, shown) in [
            (
                "postgres://weir:secret@127.0.0.1:5432/weir",
                "postgres://weir:***@127.0.0.1:5432/weir",
            ),
            (
                "postgres://weir@127.0.0.1:5432/weir?password=secret",
                "postgres://weir@127.0.0.1:5432/weir?password=***",
            ),
            (
                "host=127.0.0.1 user=weir password=secret dbname=weir",
                "host=127.0.0.1 user=weir password=*** dbname=weir",
            ),
            (
                "host=127.0.0.1 password='sec ret' user=weir",
                "host=127.0.0.1 password=*** user=weir",
            ),
            ("host=localhost", "host=localhost"),
        ] {
            assert_eq!(Secret::new(url).redacted(), shown);
        }
    }

    #[tokio::test]
    async fn a_failed_connection_names_the_server_without_the_password() {
        let url = Secret::new("host=127.0.0.1 port=1 user=weir password=canary-pg-9d2c");
        let error = connect("postgres sink t", &url, None).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("password=***"), "{message}");
        assert!(!message.contains("canary"), "{message}");
    }
}
