//! Polling, retrying and splitting; see the module above.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::connectors::{ConfigProblem, ConnectorError, Source};
use crate::record::{Record, SourcePosition, SourceRecord};

/// Characters of a bad body kept in its dead-letter reason.
const EXCERPT_CHARS: usize = 200;
/// The first wait before retrying a failed request.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest an idle poll waits before returning, so the pipeline can commit meanwhile.
const IDLE: Duration = Duration::from_millis(500);

/// Options of the `http` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The URL to poll, e.g. `https://randomuser.me/api/`.
    pub url: String,
    /// Query parameters added to every request, e.g. `{ results = "50" }`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers, e.g. an API token from `${TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time between two polls, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Longest one request may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a request that failed with a 5xx, a timeout or a connection error.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// JSON pointer of the array to split into records (`/results`); empty: the whole body is
    /// one record.
    #[serde(default)]
    pub split_at: String,
    /// Stop after this many records; poll forever when absent.
    #[serde(default)]
    pub count: Option<u64>,
}

fn default_interval_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    5
}

impl HttpSourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err((
                    "url".into(),
                    format!("`{}` is not an http(s) URL", redact(&self.url)),
                ));
            }
        }
        if !self.split_at.is_empty() && !self.split_at.starts_with('/') {
            return Err((
                "split_at".into(),
                format!(
                    "`{}` is not a JSON pointer; write it like `/results`",
                    self.split_at
                ),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Polls one URL.
pub struct HttpSource {
    config: HttpSourceConfig,
    name: String,
    client: reqwest::Client,
    pending: VecDeque<SourceRecord>,
    next_poll: Instant,
    produced: u64,
    stream: Arc<str>,
}

/// Why a request failed.
enum Failure {
    /// Worth retrying: a 5xx, a timeout, a refused connection.
    Transient(String),
    /// Not worth retrying: a 4xx, an invalid request.
    Permanent(String),
}

impl HttpSource {
    /// A source for `config`.
    pub fn new(config: &HttpSourceConfig) -> Result<Self, ConnectorError> {
        let shown = redact(&config.url);
        let name = format!("http source {shown}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ConnectorError::fatal(
                    &name,
                    format!("cannot build the HTTP client: {}", describe(e)),
                )
            })?;
        Ok(HttpSource {
            config: config.clone(),
            name,
            client,
            pending: VecDeque::new(),
            next_poll: Instant::now(),
            produced: 0,
            // The stream names the records' origin in dead-letter headers and taps.
            stream: Arc::from(shown),
        })
    }

    fn exhausted(&self) -> bool {
        self.config
            .count
            .is_some_and(|count| self.produced >= count)
    }

    async fn request(&self) -> Result<String, Failure> {
        let mut request = self.client.get(&self.config.url).query(&self.config.query);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                Failure::Permanent(format!("invalid request: {}", describe(e)))
            } else {
                Failure::Transient(format!("request failed: {}", describe(e)))
            }
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Failure::Transient(format!("reading the body failed: {}", describe(e))))?;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Transient(format!(
                "HTTP {status}: {}",
                excerpt(&body)
            )));
        }
        if !status.is_success() {
            return Err(Failure::Permanent(format!(
                "HTTP {status}: {}; check `url`, `query` and `headers`",
                excerpt(&body)
            )));
        }
        Ok(body)
    }

    /// One poll with retries: the body, or the error that ended the attempts.
    async fn fetch(&self) -> Result<String, ConnectorError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.request().await {
                Ok(body) => return Ok(body),
                Err(Failure::Permanent(message)) => {
                    return Err(ConnectorError::fatal(&self.name, message));
                }
                Err(Failure::Transient(message)) if attempt >= self.config.retries => {
                    return Err(ConnectorError::transient(
                        &self.name,
                        format!("{message} (after {} retries)", self.config.retries),
                    ));
                }
                Err(Failure::Transient(message)) => {
                    let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
                    tracing::warn!(source = %self.name, attempt, error = %message, wait_ms = wait.as_millis() as u64, "Request failed; retrying.");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    fn position(&mut self) -> SourcePosition {
        self.produced += 1;
        SourcePosition {
            stream: Arc::clone(&self.stream),
            partition: 0,
            offset: self.produced as i64,
        }
    }

    /// Splits a body into records; a body that cannot be split is one malformed record.
    fn split(&mut self, body: String) {
        let malformed = |reason: String| reason;
        let parsed: Result<Vec<Value>, String> = match serde_json::from_str::<Value>(&body) {
            Err(e) => Err(malformed(format!(
                "response is not JSON ({e}): {}",
                excerpt(&body)
            ))),
            Ok(document) if self.config.split_at.is_empty() => Ok(vec![document]),
            Ok(document) => match document.pointer(&self.config.split_at) {
                Some(Value::Array(items)) => Ok(items.clone()),
                Some(_) => Err(format!(
                    "`{}` in the response is not an array: {}",
                    self.config.split_at,
                    excerpt(&body)
                )),
                None => Err(format!(
                    "the response has no `{}`: {}",
                    self.config.split_at,
                    excerpt(&body)
                )),
            },
        };
        match parsed {
            Ok(items) => {
                for item in items {
                    if self.exhausted() {
                        break;
                    }
                    let position = self.position();
                    self.pending.push_back(SourceRecord::new(
                        Record::from_value(item.to_string()),
                        position,
                    ));
                }
            }
            Err(reason) => {
                let position = self.position();
                self.pending.push_back(SourceRecord::malformed(
                    Record::from_value(body),
                    position,
                    reason,
                ));
            }
        }
    }
}

/// A URL as messages and logs show it: the password and every query value replaced by `***`,
/// since credentials and API keys often ride there. Text that is not a URL keeps only what
/// comes before any `?`, without userinfo.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        let without_query = url.split(['?', '#']).next().unwrap_or_default();
        return match (without_query.find("://"), without_query.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!(
                    "{}{HIDDEN}{}",
                    &without_query[..scheme + 3],
                    &without_query[at..]
                )
            }
            _ => without_query.to_owned(),
        };
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let names: Vec<String> = parsed
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        let mut pairs = parsed.query_pairs_mut();
        pairs.clear();
        for name in &names {
            pairs.append_pair(name, HIDDEN);
        }
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(HIDDEN));
    }
    parsed.to_string()
}

/// A reqwest error without its URL, which carries the query (`query` from the config included)
/// and the userinfo, followed by its causes (refused, timed out, reset), which carry neither.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// The start of a body, on one line, for messages.
fn excerpt(body: &str) -> String {
    let flat: String = body
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > EXCERPT_CHARS {
        format!("{flat}…")
    } else {
        flat
    }
}

#[async_trait]
impl Source for HttpSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        _linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        if self.pending.is_empty() {
            if self.exhausted() {
                return Ok(None);
            }
            let now = Instant::now();
            if now < self.next_poll {
                tokio::time::sleep_until(self.next_poll.min(now + IDLE)).await;
                return Ok(Some(Vec::new()));
            }
            self.next_poll = now + Duration::from_millis(self.config.interval_ms);
            let body = self.fetch().await?;
            self.split(body);
        }
        let take = self.pending.len().min(max);
        Ok(Some(self.pending.drain(..take).collect()))
    }

    async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        // An HTTP API cannot be replayed; records are handed on once their response arrived.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(split_at: &str) -> HttpSource {
        HttpSource::new(&HttpSourceConfig {
            url: "http://127.0.0.1:1/api".into(),
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            interval_ms: 1,
            timeout_ms: 100,
            retries: 0,
            split_at: split_at.into(),
            count: Some(3),
        })
        .unwrap()
    }

    #[test]
    fn splits_at_the_pointer_up_to_count() {
        let mut http = source("/results");
        http.split(r#"{"results":[{"a":1},{"a":2}]}"#.into());
        http.split(r#"{"results":[{"a":3},{"a":4}]}"#.into());
        let values: Vec<String> = http
            .pending
            .iter()
            .map(|r| String::from_utf8(r.record.value.clone()).unwrap())
            .collect();
        assert_eq!(values, [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]);
        assert!(http.exhausted());
    }

    #[test]
    fn malformed_bodies_become_malformed_records_with_an_excerpt() {
        let mut http = source("/results");
        http.split("<html>Service Unavailable</html>".into());
        http.split(r#"{"error":"quota"}"#.into());
        let reasons: Vec<&str> = http
            .pending
            .iter()
            .map(|r| r.malformed.as_deref().unwrap())
            .collect();
        assert!(
            reasons[0].contains("not JSON") && reasons[0].contains("<html>"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("no `/results`") && reasons[1].contains("quota"),
            "{}",
            reasons[1]
        );
    }

    #[test]
    fn validates_url_and_pointer() {
        let mut config = source("").config;
        config.url = "ftp://x".into();
        assert_eq!(config.validate().unwrap_err().0, "url");
        config.url = "http://x".into();
        config.split_at = "results".into();
        assert_eq!(config.validate().unwrap_err().0, "split_at");
    }

    /// Serves `responses` in turn on a loopback port (the last one repeats); a status of 0
    /// means: answer only after far longer than the source's timeout. Returns the URL and the
    /// request count.
    async fn serve(
        responses: Vec<(u16, &'static str)>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let handler = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = responses[n.min(responses.len() - 1)];
            async move {
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let status = axum::http::StatusCode::from_u16(status.max(200)).unwrap();
                (status, body)
            }
        };
        let router = axum::Router::new().route("/api", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (url, requests)
    }

    fn source_at(url: String, retries: u32) -> HttpSource {
        let mut config = source("/results").config;
        config.url = url;
        config.retries = retries;
        HttpSource::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_client_error_stops_the_source_with_the_status_and_an_excerpt() {
        let (url, requests) = serve(vec![(404, "no such endpoint: /api")]).await;
        let mut http = source_at(url, 5);
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        assert_eq!(error.retry, crate::connectors::Retry::Never);
        assert!(
            error.message.contains("404") && error.message.contains("no such endpoint"),
            "{error}"
        );
        // A 4xx is not retried: the request is wrong, not the server.
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn timeouts_and_throttling_are_retried_until_an_answer() {
        let (url, requests) = serve(vec![
            (0, ""),
            (429, "slow down"),
            (200, r#"{"results":[{"a":1},{"a":2}]}"#),
        ])
        .await;
        let mut http = source_at(url, 3);
        let records = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.malformed.is_none()));
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn urls_in_messages_hide_passwords_and_query_values() {
        assert_eq!(
            redact("https://user:hunter2@example.com/api?results=50&token=s3cret#frag"),
            "https://user:***@example.com/api?results=***&token=***#***"
        );
        assert_eq!(redact("http://example.com/api/"), "http://example.com/api/");
        assert_eq!(
            redact("not a url://user:hunter2@host/x?token=s3cret"),
            "not a url://***@host/x"
        );
    }

    /// Every message and name a source shows for a failing server, with a canary in the
    /// password, the URL's query and the configured query.
    async fn messages_of(url: &str) -> Vec<String> {
        let mut config = source("/results").config;
        config.url = url.to_owned();
        config.query = BTreeMap::from([("key".to_owned(), "canary-query-b7".to_owned())]);
        config.retries = 1;
        let mut http = HttpSource::new(&config).unwrap();
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        vec![
            error.to_string(),
            http.name.clone(),
            http.stream.to_string(),
            crate::connectors::SourceConfig::Http(config.clone()).describe(),
        ]
    }

    #[tokio::test]
    async fn errors_never_show_credentials_or_query_values() {
        let (served, _) = serve(vec![(500, "internal error")]).await;
        let failing =
            served.replacen("http://", "http://user:canary-pass-b7@", 1) + "?token=canary-token-b7";
        let refused = "http://user:canary-pass-b7@127.0.0.1:1/api?token=canary-token-b7";
        for url in [failing.as_str(), refused] {
            let messages = messages_of(url).await;
            assert!(messages[0].contains("http source"), "{messages:?}");
            for message in &messages {
                assert!(!message.contains("canary"), "{url}: {message}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_after_retries() {
        let mut http = source("/results");
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        assert_eq!(error.retry, crate::connectors::Retry::WithBackoff);
    }
}
