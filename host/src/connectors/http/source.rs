//! Polling, retrying and splitting; see the module above.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::RngExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::journal::{Journal, JournalError, Journaled};
use super::retry_after::asked_wait;
use super::split::{canonical, check_json, first_items, locate};
use crate::connectors::{ConfigProblem, ConnectorError, MAX_DURATION_MS, Source};
use crate::record::{Record, SourcePosition, SourceRecord};
use crate::secret::{Scrubber, Secret};

/// Characters of a bad body kept in its dead-letter reason.
const EXCERPT_CHARS: usize = 200;
/// Bytes of an error response read for its excerpt: the rest is never needed.
const ERROR_BODY_BYTES: usize = 64 * 1024;
/// Bytes of a response larger than `max_body_bytes` kept in its dead letter.
const OVERSIZED_EXCERPT: usize = 64 * 1024;
/// The first wait before retrying a failed request.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest an idle poll waits before returning, so the pipeline can commit meanwhile.
const IDLE: Duration = Duration::from_millis(500);
/// The most redirects one request follows (each within the url's own origin).
const MAX_REDIRECTS: usize = 5;

/// Options of the `http` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The URL to poll, e.g. `https://randomuser.me/api/`. Shown with its password and query
    /// values as `***`.
    pub url: Secret,
    /// Query parameters added to every request, e.g. `{ results = "50" }`. Values are never
    /// shown, and are scrubbed from response excerpts that echo them.
    #[serde(default)]
    pub query: BTreeMap<String, Secret>,
    /// Request headers, e.g. an API token from `${TOKEN}`. Values are never shown, and are
    /// scrubbed from response excerpts that echo them.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
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
    /// Stop after this many records fetched by one run (records replayed from the journal do
    /// not count); poll forever when absent.
    #[serde(default)]
    pub count: Option<u64>,
    /// Largest response body read, in bytes. Reading stops past it: the response becomes a dead
    /// letter keeping its first 64 KiB, with the bytes read and their sha256 in headers.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most items one response may split into (default 100000): a response holding more becomes
    /// a dead letter with an excerpt, before any of its records is built, so that a body of tiny
    /// items cannot take memory far beyond its size.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// A local file keeping the records fetched but not yet acknowledged, since the API cannot
    /// be asked for them again: each response is appended and fsynced before its records are
    /// handed on, replayed after a restart before anything new is fetched, and dropped once
    /// acknowledged. One pipeline per file (`<journal>.lock` is held while it runs). Absent: a
    /// crash loses the records in flight.
    #[serde(default)]
    pub journal: Option<PathBuf>,
    /// Bytes the journal may hold: past them the source fetches nothing until acknowledgements
    /// free space (it can exceed this by one response). Default 256 MiB.
    #[serde(default = "default_journal_max_bytes")]
    pub journal_max_bytes: u64,
}

fn default_journal_max_bytes() -> u64 {
    256 << 20
}

/// The largest `max_body_bytes` with a journal: a journal entry holds at most 4 GiB, and an item
/// of a split body written again is under four times its text (`1e15,` becomes
/// `1000000000000000.0,`; `split`'s tests try numbers across `f64`'s range).
const JOURNALED_BODY_LIMIT: usize = 1 << 30;

fn default_max_body_bytes() -> usize {
    64 << 20
}

fn default_max_items() -> usize {
    100_000
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
        match reqwest::Url::parse(self.url.expose()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err((
                    "url".into(),
                    format!("`{}` is not an http(s) URL", self.url.redacted()),
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
        if self.max_body_bytes == 0 {
            return Err(("max_body_bytes".into(), "must be at least 1".into()));
        }
        if self.max_items == 0 {
            return Err(("max_items".into(), "must be at least 1".into()));
        }
        if let Some(journal) = &self.journal {
            if journal.as_os_str().is_empty() {
                return Err(("journal".into(), "must name a file".into()));
            }
            if self.max_body_bytes > JOURNALED_BODY_LIMIT {
                return Err((
                    "max_body_bytes".into(),
                    format!("must be at most {JOURNALED_BODY_LIMIT} (1 GiB) with a journal"),
                ));
            }
        }
        if self.journal_max_bytes == 0 {
            return Err(("journal_max_bytes".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Polls one URL.
pub struct HttpSource {
    config: HttpSourceConfig,
    name: String,
    client: reqwest::Client,
    /// Records ready to hand on: durable in the journal when there is one.
    pending: VecDeque<SourceRecord>,
    /// Records of the last response not yet in the journal (its append failed, or has not run).
    unjournaled: Vec<SourceRecord>,
    /// Where fetched records wait for their acknowledgement; shared with the blocking threads
    /// that write it.
    journal: Option<Arc<Mutex<Journal>>>,
    /// Whether the last poll found the journal full (logged once per episode).
    journal_full: bool,
    next_poll: Instant,
    /// Records fetched by this run, for `count`.
    fetched: u64,
    /// The offset of the last record fetched; continues from the journal after a restart.
    offset: i64,
    stream: Arc<str>,
    /// Hides configured header and query values (and the URL's password) in response text.
    scrubber: Scrubber,
}

/// A response body, whole or cut at `max_body_bytes`.
enum Body {
    /// All of it.
    Complete(Vec<u8>),
    /// More than the limit: what was read before stopping.
    TooLarge {
        read: Vec<u8>,
        announced: Option<u64>,
    },
}

/// Why a request failed.
enum Failure {
    /// Worth retrying: a 5xx, a timeout, a refused connection.
    Transient(String),
    /// Worth retrying after at least `wait`, which the server asked for in `Retry-After`.
    Throttled { message: String, wait: Duration },
    /// Not worth retrying: a 4xx, an invalid request.
    Permanent(String),
}

impl HttpSource {
    /// A source for `config`; with a journal, opens and locks it (blocking file IO) and queues
    /// the records it holds to be handed on first.
    pub fn new(config: &HttpSourceConfig) -> Result<Self, ConnectorError> {
        let shown = config.url.redacted();
        let name = format!("http source {shown}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| {
                ConnectorError::fatal(
                    &name,
                    format!("cannot build the HTTP client: {}", describe(e)),
                )
            })?;
        // The stream names the records' origin in dead-letter headers and taps.
        let stream: Arc<str> = Arc::from(shown);
        let mut source = HttpSource {
            config: config.clone(),
            name,
            client,
            pending: VecDeque::new(),
            unjournaled: Vec::new(),
            journal: None,
            journal_full: false,
            next_poll: Instant::now(),
            fetched: 0,
            offset: 0,
            stream,
            scrubber: scrubber_for(config),
        };
        if let Some(path) = &config.journal {
            let opened = Journal::open(path, config.journal_max_bytes)
                .map_err(|e| journal_error(&source.name, e))?;
            if opened.cut > 0 {
                tracing::warn!(
                    source = %source.name,
                    journal = %path.display(),
                    bytes = opened.cut,
                    "The journal ended in a half-written entry (the process stopped while appending a response); cut it. That response was never handed on."
                );
            }
            if !opened.replay.is_empty() {
                tracing::info!(
                    source = %source.name,
                    journal = %path.display(),
                    records = opened.replay.len(),
                    "Replaying records fetched before the last stop and never acknowledged."
                );
            }
            source.offset = opened.journal.next_offset() - 1;
            for journaled in opened.replay {
                let position = SourcePosition {
                    stream: Arc::clone(&source.stream),
                    partition: 0,
                    offset: journaled.offset,
                };
                source.pending.push_back(SourceRecord {
                    record: journaled.record,
                    position,
                    malformed: journaled.malformed,
                });
            }
            source.journal = Some(Arc::new(Mutex::new(opened.journal)));
        }
        Ok(source)
    }

    fn exhausted(&self) -> bool {
        self.config.count.is_some_and(|count| self.fetched >= count)
    }

    /// Moves the fetched records to `pending` once the journal holds them (fsynced); without a
    /// journal, at once. A failed append keeps them here for the next poll to retry.
    async fn make_durable(&mut self) -> Result<(), ConnectorError> {
        if let Some(journal) = &self.journal
            && let Some(last) = self.unjournaled.last()
        {
            let last = last.position.offset;
            let records: Vec<Journaled> = self
                .unjournaled
                .iter()
                .map(|r| Journaled {
                    offset: r.position.offset,
                    record: r.record.clone(),
                    malformed: r.malformed.clone(),
                })
                .collect();
            let journal = Arc::clone(journal);
            // On a blocking thread, which finishes the append even if this poll is cancelled;
            // the journal then holds them and they are replayed after the restart.
            let appended = tokio::task::spawn_blocking(move || {
                let mut journal = lock(&journal)?;
                // An append that finished while its poll was cancelled is not repeated.
                if journal.next_offset() > last {
                    return Ok(());
                }
                journal.append(&records)
            })
            .await
            .map_err(|e| {
                ConnectorError::fatal(&self.name, format!("the journal append failed: {e}"))
            })?;
            appended.map_err(|e| journal_error(&self.name, e))?;
        }
        self.pending.extend(self.unjournaled.drain(..));
        Ok(())
    }

    /// Whether the journal is full; logs when that starts and ends.
    fn journal_is_full(&mut self) -> Result<bool, ConnectorError> {
        let Some(journal) = &self.journal else {
            return Ok(false);
        };
        let journal = lock(journal).map_err(|e| journal_error(&self.name, e))?;
        let full = journal.is_full();
        if full != self.journal_full {
            if full {
                tracing::warn!(
                    source = %self.name,
                    journal = %journal.path().display(),
                    unacknowledged_bytes = journal.live_bytes(),
                    limit = self.config.journal_max_bytes,
                    "The journal is full: acknowledgements lag behind fetching. Fetching pauses until the sink catches up (raise `journal_max_bytes` to buffer more)."
                );
            } else {
                tracing::info!(source = %self.name, "The journal has room again; fetching resumes.");
            }
        }
        self.journal_full = full;
        Ok(full)
    }

    async fn request(&self) -> Result<Body, Failure> {
        let query: Vec<(&str, &str)> = self
            .config
            .query
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
            .collect();
        let mut request = self.client.get(self.config.url.expose()).query(&query);
        for (name, value) in &self.config.headers {
            request = request.header(name, value.expose());
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_builder() {
                Failure::Permanent(format!("invalid request: {}", describe(e)))
            } else if e.is_redirect() {
                // Refused by `same_origin_redirects`, which says why and what to do.
                Failure::Permanent(describe(e))
            } else {
                Failure::Transient(format!("request failed: {}", describe(e)))
            }
        })?;
        let status = response.status();
        let reading_failed =
            |e| Failure::Transient(format!("reading the body failed: {}", describe(e)));
        if !status.is_success() {
            // Only an excerpt of an error body is ever shown: read no more than that.
            let (body, _) = read_at_most(&mut response, ERROR_BODY_BYTES)
                .await
                .map_err(reading_failed)?;
            let excerpt = self.excerpt(&body);
            let asked = asked_wait(response.headers(), std::time::SystemTime::now());
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    let message = format!("HTTP {status}: {excerpt}");
                    match asked {
                        Some(wait) => Failure::Throttled { message, wait },
                        None => Failure::Transient(message),
                    }
                } else {
                    Failure::Permanent(format!(
                        "HTTP {status}: {excerpt}; check `url`, `query` and `headers`"
                    ))
                },
            );
        }
        let announced = response.content_length();
        let (read, complete) = read_at_most(&mut response, self.config.max_body_bytes)
            .await
            .map_err(reading_failed)?;
        Ok(if complete {
            Body::Complete(read)
        } else {
            Body::TooLarge { read, announced }
        })
    }

    /// One poll with retries: the body, or the error that ended the attempts.
    async fn fetch(&self) -> Result<Body, ConnectorError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let (message, asked) = match self.request().await {
                Ok(body) => return Ok(body),
                Err(Failure::Permanent(message)) => {
                    return Err(ConnectorError::fatal(&self.name, message));
                }
                Err(Failure::Transient(message)) => (message, None),
                Err(Failure::Throttled { message, wait }) => (message, Some(wait)),
            };
            if attempt >= self.config.retries {
                return Err(ConnectorError::transient(
                    &self.name,
                    format!("{message} (after {} retries)", self.config.retries),
                ));
            }
            // The server's own wait, when it asked for one, is the least this one takes.
            let backoff_wait = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
            let wait = asked.map_or(backoff_wait, |asked| asked.max(backoff_wait));
            tracing::warn!(source = %self.name, attempt, error = %message, wait_ms = wait.as_millis() as u64, retry_after_ms = asked.map(|asked| asked.as_millis() as u64), "Request failed; retrying.");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    fn position(&mut self) -> SourcePosition {
        self.fetched += 1;
        self.offset += 1;
        SourcePosition {
            stream: Arc::clone(&self.stream),
            partition: 0,
            offset: self.offset,
        }
    }

    /// Splits a body into records; a body that cannot be split, or is too large, is one
    /// malformed record.
    fn split(&mut self, body: Body) {
        let body = match body {
            Body::Complete(body) => body,
            Body::TooLarge { read, announced } => {
                let announced = announced
                    .map(|n| format!(" (Content-Length: {n})"))
                    .unwrap_or_default();
                let reason = format!(
                    "response body exceeds max_body_bytes ({}){announced}: reading stopped after {} bytes; the dead letter keeps the first {OVERSIZED_EXCERPT} and the size and sha256 of what was read",
                    self.config.max_body_bytes,
                    read.len()
                );
                let mut record = Record::from_value(read);
                // Cut with room to spare first, so that no configured value is cut in half by the
                // excerpt and half of it shown.
                record.keep_excerpt(OVERSIZED_EXCERPT + self.scrubber.longest());
                let mut scrubbed = self.scrubber.scrub_bytes(&record.value);
                scrubbed.truncate(OVERSIZED_EXCERPT);
                record.value = Bytes::from(scrubbed);
                let position = self.position();
                self.unjournaled
                    .push(SourceRecord::malformed(record, position, reason));
                return;
            }
        };
        match self.items(&body) {
            Ok(values) => {
                for value in values {
                    let position = self.position();
                    self.unjournaled
                        .push(SourceRecord::new(Record::from_value(value), position));
                }
            }
            Err(reason) => {
                // A body the API did not mean as data (an error page) may echo the request:
                // its dead letter is scrubbed like its excerpt.
                let position = self.position();
                self.unjournaled.push(SourceRecord::malformed(
                    Record::from_value(self.scrubber.scrub_bytes(&body)),
                    position,
                    reason,
                ));
            }
        }
    }

    /// The records a complete body splits into, each item written as `serde_json::Value`'s
    /// `to_string` writes it, or why it cannot be split. No tree of the body is built: the body
    /// is checked as a whole, the array at `split_at` is found as borrowed slices of the body
    /// (16 bytes an item, at most `max_items` of them), and only the items still wanted under
    /// `count` are written out.
    fn items(&self, body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let not_json =
            |e: serde_json::Error| format!("response is not JSON ({e}): {}", self.excerpt(body));
        let text = check_json(body).map_err(not_json)?;
        let split_at = &self.config.split_at;
        // The whole body is one item, already checked: no further pass finds it.
        let items: Vec<&str> = if split_at.is_empty() {
            vec![text]
        } else {
            let Some(target) = locate(text, split_at).map_err(not_json)? else {
                return Err(format!(
                    "the response has no `{split_at}`: {}",
                    self.excerpt(body)
                ));
            };
            if !target.get().starts_with('[') {
                return Err(format!(
                    "`{split_at}` in the response is not an array: {}",
                    self.excerpt(body)
                ));
            }
            let max = self.config.max_items;
            let (items, total) = first_items(target, max).map_err(not_json)?;
            if total > max {
                return Err(format!(
                    "`{split_at}` in the response holds {total} items, more than the item count limit max_items ({max}); raise `max_items` to split it: {}",
                    self.excerpt(body)
                ));
            }
            items.into_iter().map(RawValue::get).collect()
        };
        let wanted = self.config.count.map_or(usize::MAX, |count| {
            usize::try_from(count.saturating_sub(self.fetched)).unwrap_or(usize::MAX)
        });
        items
            .into_iter()
            .take(wanted)
            .map(|item| canonical(item).map_err(not_json))
            .collect()
    }

    /// The start of a body, on one line, with configured values hidden, for messages.
    fn excerpt(&self, body: &[u8]) -> String {
        // Scrubbed with room to spare before cutting, so that no value is cut and half shown.
        let window = EXCERPT_CHARS * 4 + self.scrubber.longest();
        let head = String::from_utf8_lossy(&body[..body.len().min(window)]);
        let scrubbed = self.scrubber.scrub(&head);
        let flat: String = scrubbed
            .chars()
            .take(EXCERPT_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if scrubbed.chars().count() > EXCERPT_CHARS || body.len() > window {
            format!("{flat}…")
        } else {
            flat
        }
    }
}

/// The redirects the source follows: within the url's own origin (scheme, host and port), at
/// most [`MAX_REDIRECTS`] of them. Configured headers and query values are secrets meant for
/// that origin alone: a redirect elsewhere, or from `https` to `http`, would hand them to another
/// server or send them in clear text, so it fails the request instead.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let refused = attempt
            .previous()
            .first()
            .and_then(|first| refused_redirect(first, attempt.url(), attempt.previous().len()));
        match refused {
            Some(reason) => attempt.error(reason),
            None => attempt.follow(),
        }
    })
}

/// Why a redirect to `next`, after `requested` requests that began at `first`, is not
/// followed, or `None` to follow it. Only origins are named: a path or query may hold secrets.
fn refused_redirect(first: &reqwest::Url, next: &reqwest::Url, requested: usize) -> Option<String> {
    let origin = |url: &reqwest::Url| url.origin().ascii_serialization();
    if next.origin() != first.origin() {
        return Some(format!(
            "the server redirected to another origin, {}, which is not followed: configured headers and query values go to the url's own origin ({}) only, never to another host or port nor from https to http; set `url` to the final address",
            origin(next),
            origin(first)
        ));
    }
    if requested > MAX_REDIRECTS {
        return Some(format!(
            "more than {MAX_REDIRECTS} redirects within {}; set `url` to the final address",
            origin(first)
        ));
    }
    None
}

/// The journal, or an error if a thread panicked while holding it (its state is then unknown).
fn lock(journal: &Mutex<Journal>) -> Result<std::sync::MutexGuard<'_, Journal>, JournalError> {
    journal.lock().map_err(|_| JournalError::Poisoned)
}

/// A journal failure as the pipeline sees it: an IO error may pass (a full disk), anything else
/// needs the user.
fn journal_error(name: &str, error: JournalError) -> ConnectorError {
    let message = error.to_string();
    if error.is_io() {
        ConnectorError::transient(name, message)
    } else {
        ConnectorError::fatal(name, message)
    }
}

/// The values a server may echo back that must not show: header and query values, and the
/// URL's password and query values.
fn scrubber_for(config: &HttpSourceConfig) -> Scrubber {
    let mut values: Vec<String> = config
        .headers
        .values()
        .chain(config.query.values())
        .map(|v| v.expose().to_owned())
        .collect();
    if let Ok(url) = reqwest::Url::parse(config.url.expose()) {
        values.extend(url.query_pairs().map(|(_, value)| value.into_owned()));
        if let Some(password) = url.password() {
            values.push(password.to_owned());
            // As written in the URL (percent-encoded) and as sent (decoded).
            if let Ok(decoded) = reqwest::Url::parse(&format!("http://h/?p={password}")) {
                values.extend(decoded.query_pairs().map(|(_, value)| value.into_owned()));
            }
        }
    }
    Scrubber::new(values.iter().map(String::as_str))
}

/// Reads at most `limit` bytes of a body, chunk by chunk, so that no more than that is ever held:
/// the bytes, and whether that was the whole body.
async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let announced = response.content_length().unwrap_or(0);
    // Reserved up front when the size is announced, so the buffer does not double past the limit.
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(limit).min(limit));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
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

#[async_trait]
impl Source for HttpSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        _linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        // Replayed records are in `pending` from the start, so they go before any new fetch.
        if self.pending.is_empty() && self.unjournaled.is_empty() {
            if self.exhausted() {
                return Ok(None);
            }
            let now = Instant::now();
            if now < self.next_poll {
                tokio::time::sleep_until(self.next_poll.min(now + IDLE)).await;
                return Ok(Some(Vec::new()));
            }
            if self.journal_is_full()? {
                // Returning lets the pipeline commit what was acknowledged meanwhile.
                tokio::time::sleep(IDLE).await;
                return Ok(Some(Vec::new()));
            }
            // `interval_ms` is range-checked at load; the fallback only keeps this from panicking.
            let interval = Duration::from_millis(self.config.interval_ms.min(MAX_DURATION_MS));
            self.next_poll = now.checked_add(interval).unwrap_or(now + IDLE);
            let body = self.fetch().await?;
            self.split(body);
        }
        // Nothing is handed on (or counted) before the journal holds it.
        self.make_durable().await?;
        let take = self.pending.len().min(max);
        Ok(Some(self.pending.drain(..take).collect()))
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        // Without a journal an HTTP API cannot be replayed, and there is nothing to persist.
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let Some(offset) = positions
            .iter()
            .filter(|p| p.stream == self.stream)
            .map(|p| p.offset)
            .max()
        else {
            return Ok(());
        };
        let journal = Arc::clone(journal);
        tokio::task::spawn_blocking(move || lock(&journal)?.acknowledge(offset))
            .await
            .map_err(|e| {
                ConnectorError::fatal(&self.name, format!("the journal update failed: {e}"))
            })?
            .map_err(|e| journal_error(&self.name, e))
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
            max_body_bytes: 1 << 20,
            max_items: 100,
            journal: None,
            journal_max_bytes: 1 << 20,
        })
        .unwrap()
    }

    #[test]
    fn redirects_are_followed_within_the_origin_only() {
        let url = |text: &str| reqwest::Url::parse(text).unwrap();
        let first = url("https://api.example.com/v1/users?key=s3cret");
        assert_eq!(
            refused_redirect(&first, &url("https://api.example.com:443/v2/users"), 1),
            None
        );
        for elsewhere in [
            "http://api.example.com/v1/users",
            "https://cdn.example.com/v1/users",
            "https://api.example.com:8443/v1/users",
        ] {
            let reason = refused_redirect(&first, &url(elsewhere), 1).unwrap();
            assert!(
                reason.contains("set `url` to the final address"),
                "{reason}"
            );
            assert!(
                reason.contains(&url(elsewhere).origin().ascii_serialization()),
                "{reason}"
            );
            assert!(
                !reason.contains("s3cret") && !reason.contains("/v1"),
                "{reason}"
            );
        }
        let same = url("https://api.example.com/again");
        assert!(refused_redirect(&first, &same, MAX_REDIRECTS).is_none());
        assert!(refused_redirect(&first, &same, MAX_REDIRECTS + 1).is_some());
    }

    fn complete(body: &str) -> Body {
        Body::Complete(body.as_bytes().to_vec())
    }

    #[test]
    fn splits_at_the_pointer_up_to_count() {
        let mut http = source("/results");
        http.split(complete(r#"{"results":[{"a":1},{"a":2}]}"#));
        http.split(complete(r#"{"results":[{"a":3},{"a":4}]}"#));
        let values: Vec<String> = http
            .unjournaled
            .iter()
            .map(|r| String::from_utf8(r.record.value.to_vec()).unwrap())
            .collect();
        assert_eq!(values, [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]);
        assert!(http.exhausted());
    }

    #[test]
    fn malformed_bodies_become_malformed_records_with_an_excerpt() {
        let mut http = source("/results");
        http.split(complete("<html>Service Unavailable</html>"));
        http.split(complete(r#"{"error":"quota"}"#));
        let reasons: Vec<&str> = http
            .unjournaled
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
        config.max_body_bytes = 0;
        assert_eq!(config.validate().unwrap_err().0, "max_body_bytes");
        config.max_body_bytes = 1;
        config.split_at = "results".into();
        assert_eq!(config.validate().unwrap_err().0, "split_at");
    }

    #[test]
    fn refuses_max_items_of_zero() {
        let mut config = source("/results").config;
        assert!(config.validate().is_ok());
        config.max_items = 0;
        assert_eq!(config.validate().unwrap_err().0, "max_items");
        let parsed: HttpSourceConfig =
            toml::from_str("url = \"http://x\"\nmax_items = 5000\n").unwrap();
        assert_eq!(parsed.max_items, 5000);
        let parsed: HttpSourceConfig = toml::from_str("url = \"http://x\"\n").unwrap();
        assert_eq!(parsed.max_items, 100_000);
    }

    #[test]
    fn a_response_of_more_items_than_max_items_is_one_dead_letter() {
        let mut config = source("/results").config;
        config.count = None;
        config.max_items = 3;
        let mut http = HttpSource::new(&config).unwrap();
        // At the limit: split as usual.
        http.split(complete(r#"{"results":[0,1,2]}"#));
        // Past it, however many there are: nothing of it is split.
        let zeros = format!("{{\"results\":[0{}]}}", ",0".repeat(999_999));
        http.split(complete(&zeros));
        http.split(complete(r#"{"results":[0,1,2,3]}"#));
        let values: Vec<&[u8]> = http
            .unjournaled
            .iter()
            .map(|r| &r.record.value[..])
            .collect();
        assert_eq!(values[..3], [b"0", b"1", b"2"]);
        assert_eq!(
            values[3],
            zeros.as_bytes(),
            "the dead letter keeps the body"
        );
        assert_eq!(values[4], br#"{"results":[0,1,2,3]}"#);
        assert_eq!(http.unjournaled.len(), 5);
        assert!(http.unjournaled[..3].iter().all(|r| r.malformed.is_none()));
        for (record, total) in http.unjournaled[3..].iter().zip([1_000_000, 4]) {
            let reason = record.malformed.as_deref().unwrap();
            assert!(
                reason.contains(&format!("holds {total} items"))
                    && reason.contains("item count limit max_items (3)")
                    && reason.contains("raise `max_items`")
                    && reason.contains("{\"results\":[0,"),
                "{reason}"
            );
        }
        assert_eq!(http.offset, 5);
    }

    /// What the source made of a body before it split without a `Value` of the whole body:
    /// each item's `to_string`, or the kind of dead letter.
    fn split_by_value(body: &str, split_at: &str) -> Result<Vec<String>, &'static str> {
        let Ok(mut document) = serde_json::from_str::<serde_json::Value>(body) else {
            return Err("not JSON");
        };
        if split_at.is_empty() {
            return Ok(vec![document.to_string()]);
        }
        match document.pointer_mut(split_at) {
            Some(serde_json::Value::Array(items)) => {
                Ok(items.iter().map(serde_json::Value::to_string).collect())
            }
            Some(_) => Err("is not an array"),
            None => Err("has no"),
        }
    }

    fn split_now(body: &str, split_at: &str) -> Result<Vec<String>, &'static str> {
        let mut config = source(split_at).config;
        config.count = None;
        let http = HttpSource::new(&config).unwrap();
        match http.items(body.as_bytes()) {
            Ok(values) => Ok(values
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()),
            Err(reason) => Err(["not JSON", "is not an array", "has no"]
                .into_iter()
                .find(|kind| reason.contains(kind))
                .unwrap_or(Box::leak(reason.into_boxed_str()))),
        }
    }

    #[test]
    fn records_are_what_a_value_of_the_body_made_them() {
        let user = r#"{ "gender": "female",
            "name": {"title": "Ms", "first": "Zo\u00e9", "last": "O\"Brien \/ \n"},
            "location": {"street": {"number": 1E2, "name": "Rue"}, "postcode": 01234.50e-1},
            "login": {"uuid": "a", "uuid": "b"}, "dob": {"age": -0, "ratio": 1.50, "big": 9e15,
            "small": 1e-7, "huge": 18446744073709551616, "low": -9223372036854775809,
            "max": 18446744073709551615, "min": -9223372036854775808},
            "tags": [ ], "extra": { }, "": null, "b": true, "a": false,
            "\u0001\ud83d\ude00": "\u001f\t" }"#
            .replace("01234.50e-1", "1234.50e-1");
        let bodies = [
            format!(r#"{{"results":[{user},{user}],"info":{{"seed":"x","results":2}}}}"#),
            format!(" \n{{ \"a\" : {{ \"b\" : [ {user} , 1 , [2, {{\"z\":1,\"y\":2}}] ] }} }}\n"),
            format!(r#"{{"a/b":{{"c~d":[{user}]}},"a":{{"b":[]}}}}"#),
            format!(r#"{{"data":[{{"items":[3,4]}},{{"items":[{user}]}}]}}"#),
            format!(r#"[{user},{user}]"#),
            r#"{"results":[],"results":[1,2]}"#.to_owned(),
            r#"{"results":{"0":[1]}}"#.to_owned(),
            r#"{"results":"no"}"#.to_owned(),
            r#"{"error":"quota"}"#.to_owned(),
            "<html>".to_owned(),
            r#"{"results":[1]} x"#.to_owned(),
            r#"{"results":[1],"x":1e400}"#.to_owned(),
            r#"{"results":[1],"x":"\ud800"}"#.to_owned(),
            r#"{"results":[1e400]}"#.to_owned(),
            format!(
                r#"{{"results":[1],"x":{}1{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            format!(r#"{{"results":[{}1{}]}}"#, "[".repeat(100), "]".repeat(100)),
        ];
        let pointers = [
            "",
            "/results",
            "/a/b",
            "/a~1b/c~0d",
            "/data/1/items",
            "/data/01/items",
            "/data/+1/items",
            "/data/2/items",
            "/results/0",
            "/info/seed",
            "/a/b/2",
            "/",
        ];
        let mut split = 0;
        for body in &bodies {
            for pointer in pointers {
                let before = split_by_value(body, pointer);
                assert_eq!(split_now(body, pointer), before, "{pointer} of {body}");
                split += before.is_ok_and(|items| !items.is_empty()) as usize;
            }
        }
        assert!(split > 12, "{split}");
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
        config.url = url.into();
        config.retries = retries;
        HttpSource::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_client_error_stops_the_source_with_the_status_and_an_excerpt() {
        let (url, requests) = serve(vec![(404, "no such endpoint: /api")]).await;
        let mut http = source_at(url, 5);
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        assert_eq!(error.kind, crate::connectors::ErrorKind::Fatal);
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

    #[tokio::test]
    async fn a_throttled_request_waits_at_least_the_retry_after_the_server_asked_for() {
        // The first answer asks for two seconds; the backoff alone would wait 0.1 to 0.3.
        let asked_at: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
        let times = Arc::clone(&asked_at);
        let handler = move || {
            let answer = {
                let mut times = times.lock().unwrap();
                times.push(std::time::Instant::now());
                times.len()
            };
            async move {
                if answer == 1 {
                    axum::response::Response::builder()
                        .status(429)
                        .header("retry-after", "2")
                        .body(axum::body::Body::from("slow down"))
                        .unwrap()
                } else {
                    axum::response::Response::new(axum::body::Body::from(
                        r#"{"results":[{"a":1}]}"#,
                    ))
                }
            }
        };
        let router = axum::Router::new().route("/api", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let mut http = source_at(url, 3);
        let records = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(records.len(), 1);
        let times = asked_at.lock().unwrap();
        assert_eq!(times.len(), 2);
        let waited = times[1] - times[0];
        assert!(
            waited >= Duration::from_secs(2),
            "asked again after {waited:?}"
        );
    }

    /// Every message and name a source shows for a failing server, with a canary in the
    /// password, the URL's query and the configured query.
    async fn messages_of(url: &str) -> Vec<String> {
        let mut config = source("/results").config;
        config.url = url.into();
        config.query = BTreeMap::from([("key".to_owned(), "canary-query-b7".into())]);
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

    /// Answers every request with `status` and a body that echoes the request's headers and
    /// query, as some APIs' error pages do.
    async fn serve_echo(status: u16) -> String {
        let handler =
            move |headers: axum::http::HeaderMap,
                  axum::extract::RawQuery(query): axum::extract::RawQuery| async move {
                let mut body = format!(
                    "bad request; query was {}; headers:",
                    query.unwrap_or_default()
                );
                for (name, value) in &headers {
                    body.push_str(&format!(" {name}: {}", value.to_str().unwrap_or("?")));
                }
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            };
        let router = axum::Router::new().route("/api", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    fn echoed_source(url: &str) -> HttpSource {
        let mut config = source("/results").config;
        config.url = format!("{url}?api_key=canary-url-key-5a").into();
        config.query = BTreeMap::from([("token".to_owned(), "canary query 5a/+".into())]);
        config.headers =
            BTreeMap::from([("Authorization".to_owned(), "Bearer canary-header-5a".into())]);
        HttpSource::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_client_error_echoing_the_request_shows_no_configured_value() {
        let url = serve_echo(401).await;
        let mut http = echoed_source(&url);
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("HTTP 401") && message.contains("authorization: ***"),
            "{message}"
        );
        assert!(!message.contains("canary"), "{message}");
    }

    #[tokio::test]
    async fn a_malformed_body_echoing_the_request_is_scrubbed_in_its_dead_letter() {
        let url = serve_echo(200).await;
        let mut http = echoed_source(&url);
        let records = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        let reason = records[0].malformed.as_deref().unwrap();
        let value = String::from_utf8_lossy(&records[0].record.value);
        assert!(value.contains("authorization: ***"), "{value}");
        for text in [reason, &value] {
            assert!(!text.contains("canary"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_read_no_further_and_dead_lettered_with_its_digest() {
        const LIMIT: usize = 256 * 1024;
        let body: &'static str = Box::leak("x".repeat(LIMIT * 4).into_boxed_str());
        let (url, _) = serve(vec![(200, body)]).await;
        let mut config = source("/results").config;
        config.url = url.into();
        config.max_body_bytes = LIMIT;
        let mut http = HttpSource::new(&config).unwrap();
        let records = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(records.len(), 1);
        let reason = records[0].malformed.as_deref().unwrap();
        assert!(
            reason.contains("exceeds max_body_bytes (262144)"),
            "{reason}"
        );
        let record = &records[0].record;
        assert_eq!(record.value.len(), OVERSIZED_EXCERPT);
        assert_eq!(
            record.header_str(crate::record::headers::RECORD_BYTES),
            Some(LIMIT.to_string().as_str())
        );
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            &body.as_bytes()[..LIMIT],
        ));
        assert_eq!(
            record.header_str(crate::record::headers::RECORD_SHA256),
            Some(digest.as_str())
        );
    }

    #[tokio::test]
    async fn a_journal_replays_unacknowledged_records_first_and_pauses_fetching_when_full() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let (url, requests) = serve(vec![(200, r#"{"results":[{"a":1},{"a":2}]}"#)]).await;
        let mut config = source("/results").config;
        config.url = url.into();
        config.count = None;
        config.journal = Some(dir.path().join("api.journal"));
        // Full as soon as one response is in flight.
        config.journal_max_bytes = 1;
        let seen = |records: Vec<SourceRecord>| -> Vec<(i64, String)> {
            records
                .into_iter()
                .map(|r| {
                    let value = String::from_utf8(r.record.value.to_vec()).unwrap();
                    (r.position.offset, value)
                })
                .collect()
        };
        let up_to = |http: &HttpSource, offset| {
            vec![SourcePosition {
                stream: Arc::clone(&http.stream),
                partition: 0,
                offset,
            }]
        };
        let mut http = HttpSource::new(&config).unwrap();
        let first = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            seen(first),
            [(1, r#"{"a":1}"#.to_owned()), (2, r#"{"a":2}"#.to_owned())]
        );
        // Nothing acknowledged yet: the journal is full and the next poll fetches nothing, though
        // `interval_ms` has passed.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let none = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert!(none.is_empty());
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        http.commit(&up_to(&http, 1)).await.unwrap();
        // A restart: the record never acknowledged comes first, without a request.
        drop(http);
        let mut http = HttpSource::new(&config).unwrap();
        let replayed = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(seen(replayed), [(2, r#"{"a":2}"#.to_owned())]);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        // Once it is acknowledged the journal has room, and offsets go on from the journal's.
        http.commit(&up_to(&http, 2)).await.unwrap();
        let fresh = http.poll_batch(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            seen(fresh),
            [(3, r#"{"a":1}"#.to_owned()), (4, r#"{"a":2}"#.to_owned())]
        );
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_after_retries() {
        let mut http = source("/results");
        let error = http.poll_batch(10, Duration::ZERO).await.unwrap_err();
        assert_eq!(error.kind, crate::connectors::ErrorKind::Transient);
    }
}
