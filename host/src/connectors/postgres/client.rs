//! A PostgreSQL connection that reconnects after failures, and forwards NOTIFY messages. Every
//! connection is opened and used under time limits, so a server or network that stops
//! answering without closing the socket (a half-open connection) fails the call instead of
//! hanging the pipeline. With a `tls` table the connection is encrypted (OpenSSL), and a server
//! that fails the checks stops the pipeline instead of being retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use postgres_openssl::MakeTlsConnector;
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Socket};

use super::privileges::Step;
use crate::connectors::tls::TlsConfig;
use crate::connectors::{ConnectorError, ErrorKind};
use crate::secret::Secret;

/// How long the client waits beyond the server's `statement_timeout` before it gives up on an
/// answer itself: the server's own cancellation (SQLSTATE 57014) normally arrives first, and
/// only a connection that carries nothing any more runs into this.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// Idle probes: the first after `keepalive_idle`, then every `keepalive_idle / 3` (at most
/// this), and the connection counts as dead after [`KEEPALIVE_RETRIES`] unanswered ones.
const KEEPALIVE_MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the kernel closes the connection.
const KEEPALIVE_RETRIES: u32 = 3;

/// The time limits of one connection, from the connector's `*_ms` options.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Opening the connection, TCP and start-up handshake together.
    pub connect: Duration,
    /// One statement, enforced by the server (`SET statement_timeout`) and, with a little
    /// grace, by the client.
    pub statement: Duration,
    /// TCP keepalive idle time, so the kernel notices a peer that vanished.
    pub keepalive_idle: Duration,
}

impl Limits {
    /// From milliseconds as configured.
    pub fn from_millis(connect: u64, statement: u64, keepalive_idle: u64) -> Self {
        Limits {
            connect: Duration::from_millis(connect),
            statement: Duration::from_millis(statement),
            keepalive_idle: Duration::from_millis(keepalive_idle),
        }
    }

    /// Runs one statement (or a short series of them) on the connection: its result, or a
    /// transient error when no answer came within the statement timeout and its grace. The
    /// caller drops the connection on an error, so a late answer can never be mistaken for the
    /// next statement's.
    pub async fn statement<'s, T>(
        &self,
        connector: &str,
        step: impl Into<Step<'s>>,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ConnectorError> {
        let step = step.into();
        self.bounded(connector, step.what, call)
            .await?
            .map_err(|e| classify(connector, step, e))
    }

    /// Like [`Limits::statement`], with the driver's error left unclassified for a caller
    /// that decides some SQLSTATEs itself.
    pub async fn bounded<T>(
        &self,
        connector: &str,
        what: &str,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<Result<T, tokio_postgres::Error>, ConnectorError> {
        tokio::time::timeout(self.statement + CLIENT_GRACE, call)
            .await
            .map_err(|_| {
                ConnectorError::transient(
                    connector,
                    format!(
                        "{what}: no answer from PostgreSQL within statement_timeout_ms ({} ms) and {} s of grace; the connection is dropped and opened again",
                        self.statement.as_millis(),
                        CLIENT_GRACE.as_secs()
                    ),
                )
            })
    }
}

/// How a connector's connections are encrypted, decided and built once when it starts.
#[derive(Clone)]
pub enum Encryption {
    /// No `tls` table, and the url's `sslmode` is `disable` or `prefer` (the default).
    Plain,
    /// Always encrypted and checked: as the `tls` table says, or, without one, against the
    /// system's CAs because the url says `sslmode=require`.
    Required(MakeTlsConnector),
}

impl Encryption {
    /// From a connector's `tls` table (reading its files) and its url's `sslmode`.
    pub fn for_connector(
        connector: &str,
        url: &Secret,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, ConnectorError> {
        let url_requires_tls = url
            .expose()
            .parse::<Config>()
            .is_ok_and(|config| config.get_ssl_mode() == SslMode::Require);
        let settings = match tls {
            Some(tls) => tls,
            None if url_requires_tls => &TlsConfig::system_trust(),
            // A url that does not parse is reported by `connect`, with what to do.
            None => return Ok(Encryption::Plain),
        };
        let client = settings
            .connector()
            .map_err(|e| ConnectorError::fatal(connector, format!("tls: {e}")))?;
        Ok(Encryption::Required(MakeTlsConnector::new(client.build())))
    }
}

/// The `sslmode` values tokio-postgres takes; libpq's `verify-ca` and `verify-full` are the
/// connector's `tls` table here.
const SSL_MODES: [&str; 3] = ["disable", "prefer", "require"];

/// Parses a connector's `url`, or says why it cannot be used and what to write instead: the
/// parser's own message may quote the string, password included, so it is never shown.
pub fn parse_url(url: &Secret) -> Result<Config, String> {
    let text = url.expose();
    text.parse::<Config>().map_err(|_| {
        let mut message = format!(
            "url `{}` is not a PostgreSQL connection string (postgres://user:password@host:port/db or host=... key=value pairs)",
            url.redacted()
        );
        if let Some(mode) = ssl_mode_in(text).filter(|mode| !SSL_MODES.contains(&mode.as_str())) {
            message.push_str(&format!(
                "; sslmode `{mode}` is not supported (only disable, prefer and require are): to verify the server's certificate, drop sslmode and add the connector's `tls` table (e.g. tls = {{ ca_file = \"ca.pem\" }}), which always encrypts and checks the certificate and the host name"
            ));
        }
        if parameters(text)
            .iter()
            .any(|(key, _)| ["sslrootcert", "sslcert", "sslkey"].contains(&key.as_str()))
        {
            message.push_str(
                "; sslrootcert, sslcert and sslkey are the connector's `tls` keys ca_file, crt_file and key_file",
            );
        }
        message
    })
}

/// The value of `sslmode` among the string's [`parameters`], when it looks like one (a word of
/// letters, digits and `-`): nothing else of the string is ever quoted.
fn ssl_mode_in(url: &str) -> Option<String> {
    let (_, value) = parameters(url)
        .into_iter()
        .rev()
        .find(|(key, _)| key == "sslmode")?;
    let word = !value.is_empty()
        && value.len() <= 32
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    word.then_some(value)
}

/// The `key=value` parameters of a connection string: a URL's query (what follows the `?` after
/// the host, so never its user or password), or the pairs of a key/value string (`key = value`,
/// spaces around `=` allowed, values in single quotes with `\` escapes). Reading stops at the
/// first thing that is not a pair, so a password's text is never taken for a key.
fn parameters(text: &str) -> Vec<(String, String)> {
    let text = text.trim();
    if let Some(rest) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
    {
        // The user and password end at the last `@`; the query starts at the `?` after it.
        let after_credentials = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let Some((_, query)) = after_credentials.split_once('?') else {
            return Vec::new();
        };
        return query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
    }
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != '=')).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return pairs;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    // An unclosed quote: what follows is all value, none of it a pair.
                    None => return pairs,
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        pairs.push((key, value));
    }
}

/// Connects, spawning the connection's driver; each notification wakes `notifications` if given.
/// Wake-ups coalesce into one (a [`Notify`] permit), so a flood of NOTIFY messages, however long,
/// holds no memory: the source only needs to know that something was announced.
pub async fn connect(
    connector: &str,
    url: &Secret,
    encryption: &Encryption,
    limits: Limits,
    notifications: Option<Arc<Notify>>,
) -> Result<Client, ConnectorError> {
    let mut config = parse_url(url).map_err(|message| ConnectorError::fatal(connector, message))?;
    config
        .connect_timeout(limits.connect)
        .keepalives(true)
        .keepalives_idle(limits.keepalive_idle)
        .keepalives_interval(
            (limits.keepalive_idle / 3).clamp(Duration::from_secs(1), KEEPALIVE_MAX_INTERVAL),
        )
        .keepalives_retries(KEEPALIVE_RETRIES);
    let what = format!("cannot connect to PostgreSQL ({})", url.redacted());
    let client = match encryption {
        Encryption::Required(tls) => {
            config.ssl_mode(SslMode::Require);
            let tls = tls.clone();
            open(connector, &what, &config, tls, limits, notifications).await?
        }
        Encryption::Plain => open(connector, &what, &config, NoTls, limits, notifications).await?,
    };
    // The server ends a statement that runs too long itself, and tells why (57014).
    limits
        .statement(
            connector,
            "cannot set statement_timeout",
            client.batch_execute(&format!(
                "SET statement_timeout = {}",
                limits.statement.as_millis()
            )),
        )
        .await?;
    Ok(client)
}

/// Opens the connection with `tls` and spawns its driver.
async fn open<T>(
    connector: &str,
    what: &str,
    config: &Config,
    tls: T,
    limits: Limits,
    notifications: Option<Arc<Notify>>,
) -> Result<Client, ConnectorError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    // tokio-postgres bounds only the TCP connect; a server that accepts and then says nothing
    // would hang the start-up handshake, so the whole of it runs under the limit.
    // A server that answers with an error (wrong password, missing database) is told apart from
    // one that cannot be reached: only the latter is worth retrying.
    let (client, mut connection) =
        match tokio::time::timeout(limits.connect, config.connect(tls)).await {
            Ok(connected) => connected.map_err(|e| classify(connector, what, e))?,
            Err(_) => {
                return Err(ConnectorError::transient(
                    connector,
                    format!(
                        "{what}: no answer within connect_timeout_ms ({} ms)",
                        limits.connect.as_millis()
                    ),
                ));
            }
        };
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
/// are not. An error without a SQLSTATE never reached the server's SQL layer: the connection,
/// retried unless its TLS handshake failed, which a retry cannot cure. A privilege the server
/// refused the role (42501) is followed by the step's fix.
pub fn classify<'s>(
    connector: &str,
    step: impl Into<Step<'s>>,
    error: tokio_postgres::Error,
) -> ConnectorError {
    let Step { what, grant } = step.into();
    if let Some(refusal) = tls_refusal(&error) {
        return ConnectorError::fatal(connector, format!("{what}: {refusal}")).caused_by(error);
    }
    let kind = match error.code() {
        Some(code) if is_transient(code) => ErrorKind::Transient,
        Some(_) => ErrorKind::Fatal,
        None => ErrorKind::Transient,
    };
    let mut message = format!("{what}: {}", server_words(&error));
    if let Some(code) = error.code() {
        message.push_str(&format!(" (SQLSTATE {})", code.code()));
    }
    if error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        message.push_str(
            "; the server takes no writes (a standby after a failover, or default_transaction_read_only): retried on a new connection; list every host in `url` with target_session_attrs=read-write so that one reaches the primary",
        );
    }
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        message.push_str(
            "; another session holds a lock on the table longer than the role's lock_timeout (an ALTER TABLE, a VACUUM FULL, a LOCK TABLE): retried until it is released",
        );
    }
    if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        message.push_str("; ");
        message.push_str(grant.unwrap_or(
            "grant the role in `url` the privilege named (README, PostgreSQL privileges, lists what each connector needs)",
        ));
    }
    ConnectorError::new(kind, connector, message)
}

/// What went wrong in the words of whoever said it: the server's message and hint for a refusal
/// (tokio-postgres shows each as "db error" and keeps them in its source), else the error and
/// its causes (`error connecting to server: Connection refused`). A refusal's detail is left
/// out: it can quote a row's values, which logs do not carry.
pub fn server_words(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return match db.hint() {
            Some(hint) => format!("{}; {hint}", db.message()),
            None => db.message().to_owned(),
        };
    }
    let mut words = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        words.push_str(": ");
        words.push_str(&current.to_string());
        cause = current.source();
    }
    words
}

/// What to tell the user when TLS, not the network, ended the connection: the server does
/// not offer TLS, or the handshake failed at the protocol level (a certificate that the
/// trusted CAs did not sign or that names another host, a client certificate refused). A
/// handshake cut short by the network is an I/O error and is retried.
fn tls_refusal(error: &tokio_postgres::Error) -> Option<String> {
    // tokio-postgres's own words when the server answers the TLS request with "no".
    if error.to_string().contains("server does not support TLS") {
        return Some(
            "the server does not offer TLS, which the `tls` table (or sslmode=require) demands; turn on `ssl` in its postgresql.conf, or remove the `tls` table".into(),
        );
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(ssl) = current.downcast_ref::<openssl::ssl::Error>() {
            if ssl.code() != openssl::ssl::ErrorCode::SSL {
                return None;
            }
            // The connector's error says OpenSSL's reason and the certificate check's result.
            let reason = std::error::Error::source(error)
                .map_or_else(|| ssl.to_string(), ToString::to_string);
            return Some(format!(
                "the TLS handshake failed ({reason}); check `tls.ca_file` (the CA that signed the server's certificate), that the certificate names the host in the url (or set `tls.verify_hostname = false`), and the client certificate if the server asks for one"
            ));
        }
        cause = current.source();
    }
    None
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
            // A server that turned read-only: a primary demoted by a failover, reached again
            // through an address that now leads to a standby. A new connection may reach the
            // new primary (several hosts in the url, target_session_attrs=read-write).
            &SqlState::READ_ONLY_SQL_TRANSACTION,
            // A lock held past the role's lock_timeout (a DBA's ALTER TABLE or VACUUM FULL):
            // it goes, and the statement then runs.
            &SqlState::LOCK_NOT_AVAILABLE,
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
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNDEFINED_TABLE,
            SqlState::LOCK_NOT_AVAILABLE,
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

    /// The message of a connection to `url` that fails (nothing listens on port 1, or the url
    /// does not parse).
    async fn failed_connection(url: &str) -> String {
        let error = connect(
            "postgres sink t",
            &Secret::new(url),
            &Encryption::Plain,
            Limits::from_millis(10_000, 30_000, 30_000),
            None,
        )
        .await
        .unwrap_err();
        error.to_string()
    }

    #[tokio::test]
    async fn libpq_certificate_files_in_the_url_point_to_the_tls_table() {
        let message =
            failed_connection("postgres://weir:secret@127.0.0.1:1/weir?sslrootcert=/ca.pem").await;
        assert!(message.contains("`tls` keys ca_file"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn a_libpq_sslmode_names_sslmode_and_points_to_the_tls_table() {
        for (url, mode) in [
            (
                "postgres://weir:secret@127.0.0.1/weir?sslmode=verify-full",
                "verify-full",
            ),
            (
                "host=127.0.0.1 password=secret sslmode='verify-ca'",
                "verify-ca",
            ),
        ] {
            let message = parse_url(&Secret::new(url)).unwrap_err();
            assert!(
                message.contains(&format!("sslmode `{mode}` is not supported")),
                "{message}"
            );
            assert!(message.contains("`tls` table"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        assert!(
            parse_url(&Secret::new(
                "postgres://weir@127.0.0.1/weir?sslmode=require"
            ))
            .is_ok()
        );
        let other =
            parse_url(&Secret::new("postgres://weir@127.0.0.1/weir?nonsense=1")).unwrap_err();
        assert!(!other.contains("sslmode"), "{other}");
    }

    #[test]
    fn sslmode_is_read_only_from_the_parameters_never_from_a_password() {
        for (url, mode) in [
            (
                "postgres://u:xsslmode=Hunter2@h/db?sslmode=verify-full",
                Some("verify-full"),
            ),
            ("postgres://u:x?sslmode=Hunter2@h/db", None),
            (
                "postgres://u:x@h/db?application_name=a&sslmode=verify-ca",
                Some("verify-ca"),
            ),
            ("host=h sslmode = verify-full", Some("verify-full")),
            ("host=h sslmode= 'verify-ca' user=u", Some("verify-ca")),
            (
                r"host=h password='x sslmode=Hunter2 \' y' sslmode =verify-full",
                Some("verify-full"),
            ),
            ("host=h password='x sslmode=Hunter2", None),
            ("host=h password=xsslmode=Hunter2", None),
        ] {
            assert_eq!(ssl_mode_in(url).as_deref(), mode, "{url}");
        }
        for url in [
            "postgres://u:xsslmode=Hunter2@h/db?sslmode=verify-full",
            "host=h password='sslmode=Hunter2' sslmode = verify-full",
        ] {
            let message = parse_url(&Secret::new(url)).unwrap_err();
            assert!(
                message.contains("sslmode `verify-full` is not supported"),
                "{message}"
            );
            assert!(!message.contains("Hunter2"), "{message}");
        }
    }

    #[tokio::test]
    async fn a_failed_connection_names_the_server_without_the_password() {
        let message =
            failed_connection("host=127.0.0.1 port=1 user=weir password=canary-pg-9d2c").await;
        assert!(message.contains("password=***"), "{message}");
        assert!(!message.contains("canary"), "{message}");
    }
}
