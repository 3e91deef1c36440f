//! A PostgreSQL connection that reconnects after failures, and forwards NOTIFY messages.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::config::Secret;
use crate::connectors::ConnectorError;

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
                    &e,
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

/// A database error as a connector error: connection and server-availability problems are
/// transient; the rest (bad SQL, permissions, constraint types) are not.
pub fn classify(connector: &str, what: &str, error: &tokio_postgres::Error) -> ConnectorError {
    let message = match error.as_db_error() {
        Some(db) => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{what}: {error}"),
    };
    match error.code() {
        Some(code)
            if code.code().starts_with("08")
                || code.code().starts_with("57")
                || code.code().starts_with("53")
                || code.code() == "40001"
                || code.code() == "40P01"
                || code.code() == "XX000"
                // Races between two writers creating the same table or function.
                || code.code() == "42P07"
                || code.code() == "23505"
                // A table a source tails may be created later by the pipeline that fills it.
                || code.code() == "42P01" =>
        {
            ConnectorError::transient(connector, message)
        }
        Some(_) => ConnectorError::fatal(connector, message),
        None => ConnectorError::transient(connector, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
