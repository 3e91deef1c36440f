//! A PostgreSQL connection that reconnects after failures, and forwards NOTIFY messages.

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::connectors::ConnectorError;

/// Connects, spawning the connection's driver; notifications go to `notifications` if given.
pub async fn connect(
    connector: &str,
    url: &str,
    notifications: Option<mpsc::UnboundedSender<String>>,
) -> Result<Client, ConnectorError> {
    // A server that answers with an error (wrong password, missing database) is told apart from
    // one that cannot be reached: only the latter is worth retrying.
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        classify(
            connector,
            &format!("cannot connect to PostgreSQL ({})", redact(url)),
            &e,
        )
    })?;
    let name = connector.to_owned();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if let Some(tx) = &notifications {
                        let _ = tx.send(notification.channel().to_owned());
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

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://weir:secret@127.0.0.1:5432/weir"),
            "postgres://weir:***@127.0.0.1:5432/weir"
        );
        assert_eq!(redact("host=localhost"), "host=localhost");
    }
}
