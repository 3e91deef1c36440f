//! The `kafka` sink: librdkafka's idempotent producer with `acks=all`; a batch is acknowledged
//! only once every record's delivery report came back, so a broker outage delays but never drops.
//! A retried batch re-sends only the records whose delivery failed; a producer in librdkafka's
//! fatal state is replaced; a refusal retrying cannot cure stops the pipeline. Handles forked for
//! batches in flight together share one producer, so a batch is produced while the delivery
//! reports of earlier ones are outstanding; each batch's reports are gathered by
//! [`super::batch_producer`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;
use serde::Deserialize;

use super::batch_producer::{self, BatchProducer, Outgoing};
use super::client_config;
use super::delivery::{Verdict, classify, classify_code};
use super::refused_property::creation_failed;
use super::topic_template::TopicTemplate;
use super::topics::name_problem;
use super::unfinished::{Outcome, Unfinished};
use crate::connectors::fields::{FieldPath, FieldSet, Leaf};
use crate::connectors::{ConfigProblem, ConnectorError, Rejected, Sink};
use crate::record::Record;

/// Compression codecs the producer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheap and effective on JSON).
    #[default]
    Lz4,
    /// Zstandard: the smallest output, for more CPU (brokers from Kafka 2.1).
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Options of the `kafka` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma-separated (`127.0.0.1:9092`).
    pub brokers: String,
    /// The topic to write to: a topic's name, or a template naming fields of each record
    /// (`users-{{ nat }}`), so that each record goes to the topic its fields pick; a record
    /// whose fields make no topic's name is dead-lettered with the reason.
    pub topic: String,
    /// Dotted path of the JSON field used as the message key (text, or a number as the record
    /// writes it); by default the record key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Longest a delivery may take before the record is sent again, in milliseconds.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka producer properties (`allow.auto.create.topics`, `linger.ms`, security
    /// settings; not those in [`RESERVED_PROPERTIES`]). Every value is a secret
    /// (`sasl.password`, `ssl.key.pem` and others carry credentials), so none is ever printed.
    #[serde(default)]
    pub properties: BTreeMap<String, crate::secret::Secret>,
}

/// librdkafka's `linger.ms` unless `properties` sets it. The sink hands librdkafka whole
/// batches and waits for each batch's delivery reports, so a linger only delays the last request
/// of every batch: at 5 ms, kafka -> user-profile -> kafka ran at 143,000 to 151,000 records/s
/// with a quarter of two cores idle; at 1 ms, 169,000 to 227,000 at no more CPU per record,
/// weir's or the broker's (docs/performance.md). 0 was no faster.
const DEFAULT_LINGER_MS: &str = "1";

/// librdkafka's `partitioner` unless `properties` sets it: Kafka's Java producer hashes a key
/// with murmur2, so Spark, Kafka Connect and Kafka Streams put a key on the same partition as
/// weir does (librdkafka's own default, `consistent_random`, hashes with CRC32 and would put
/// most keys elsewhere); a record without a key goes to a random partition either way.
const DEFAULT_PARTITIONER: &str = "murmur2_random";

fn default_delivery_timeout_ms() -> u64 {
    30_000
}

/// librdkafka properties that weir sets itself, from a key of the sink or because its delivery
/// guarantees depend on them; `properties` may not set them.
pub const RESERVED_PROPERTIES: [(&str, &str); 9] = [
    ("bootstrap.servers", "use `brokers`"),
    (
        "enable.idempotence",
        "weir relies on the idempotent producer to write nothing twice",
    ),
    ("acks", "weir writes with acks=all"),
    ("request.required.acks", "weir writes with acks=all"),
    ("delivery.timeout.ms", "use `delivery_timeout_ms`"),
    ("message.timeout.ms", "use `delivery_timeout_ms`"),
    ("compression.type", "use `compression`"),
    ("compression.codec", "use `compression`"),
    (
        "transactional.id",
        "the sink is not transactional; its retries are idempotent instead",
    ),
];

/// How long librdkafka waits for a topic it does not find in the metadata to appear before it
/// fails its records as an unknown topic, unless `properties` says otherwise; kept below the
/// delivery timeout so a missing topic is reported as such, not as a timeout retried forever.
const TOPIC_PROPAGATION_MS: u64 = 10_000;

impl KafkaSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one broker".into()));
        }
        if self.topic.trim().is_empty() {
            return Err(("topic".into(), "must name a topic".into()));
        }
        match TopicTemplate::parse(&self.topic) {
            Err(problem) => return Err(("topic".into(), problem)),
            Ok(None) => {
                if let Some(problem) = name_problem(&self.topic) {
                    return Err(("topic".into(), problem));
                }
            }
            Ok(Some(_)) => {}
        }
        for (key, instead) in RESERVED_PROPERTIES {
            if self.properties.contains_key(key) {
                return Err((
                    format!("properties.\"{key}\""),
                    format!("is set by weir: {instead}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks what a dead-letter destination needs besides [`KafkaSinkConfig::validate`]: one
    /// topic, not a template.
    pub fn validate_as_dead_letter(&self) -> Result<(), ConfigProblem> {
        if TopicTemplate::parse(&self.topic).is_ok_and(|template| template.is_some()) {
            return Err((
                "topic".into(),
                format!(
                    "`{}` names record fields, but dead letters go to one topic: a dead letter is often not JSON (that may be why it is dead), and `weir replay` reads one topic. Name the topic",
                    self.topic
                ),
            ));
        }
        Ok(())
    }
}

/// How much of a value a dead letter keeps when the whole record is too large for the topic:
/// tried in turn, so a topic with a small `max.message.bytes` still gets the record's
/// coordinates, reason, size and digest.
const EXCERPT_BYTES: [usize; 3] = [64 * 1024, 4 * 1024, 0];

/// How long confirming that a topic is missing may take before the failure counts as transient.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The producer every handle of one sink uses, and how many times it was replaced after a fatal
/// error: the first handle to find the producer fatal replaces it, the others adopt the new one.
struct SharedProducer {
    current: Mutex<(u64, BatchProducer)>,
}

/// Produces records to a topic.
pub struct KafkaSink {
    name: String,
    /// The topic as configured: its name, or the template in `template`.
    topic: String,
    /// The template that picks each record's topic, when `topic` names fields.
    template: Option<TopicTemplate>,
    /// The record fields the sink reads, in one pass per record: the key field first when
    /// there is one, then the template's fields.
    fields: Option<FieldSet>,
    key_field: Option<String>,
    /// Whether this sink is a dead-letter destination, which must not refuse a record for its
    /// size: nowhere is left to send it.
    dead_letter: bool,
    /// The producer's settings, kept to build a new producer after a fatal error.
    client: ClientConfig,
    producer: BatchProducer,
    /// Which replacement of the shared producer `producer` is.
    generation: u64,
    shared: Arc<SharedProducer>,
    /// What became of each record of this handle's batch whose write failed.
    unfinished: Unfinished,
}

/// How a write of one batch ended, before it is reported.
struct Failure {
    verdict: Verdict,
    error: KafkaError,
}

impl KafkaSink {
    /// Creates the producer (it connects lazily). `dead_letter` makes it keep an excerpt of a
    /// record too large for the topic instead of refusing it.
    pub fn new(config: &KafkaSinkConfig, dead_letter: bool) -> Result<Self, ConnectorError> {
        let name = format!("kafka sink {}", config.topic);
        let template = TopicTemplate::parse(&config.topic)
            .map_err(|problem| ConnectorError::fatal(&name, problem))?;
        if dead_letter {
            config
                .validate_as_dead_letter()
                .map_err(|(_, problem)| ConnectorError::fatal(&name, problem))?;
        }
        let mut client = client_config(&config.brokers, &config.properties);
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", config.compression.as_str())
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout_ms.to_string(),
            );
        // Defaults the user may override in `properties`.
        if !config.properties.contains_key("linger.ms") {
            client.set("linger.ms", DEFAULT_LINGER_MS);
        }
        if !config.properties.contains_key("partitioner") {
            client.set("partitioner", DEFAULT_PARTITIONER);
        }
        if !config
            .properties
            .contains_key("topic.metadata.propagation.max.ms")
        {
            let propagation = TOPIC_PROPAGATION_MS.min(config.delivery_timeout_ms / 2);
            client.set(
                "topic.metadata.propagation.max.ms",
                propagation.max(1).to_string(),
            );
        }
        let producer = create_producer(&name, &client)?;
        let shared = Arc::new(SharedProducer {
            current: Mutex::new((0, producer.clone())),
        });
        let fields = record_fields(config.key_field.as_deref(), template.as_ref());
        Ok(KafkaSink {
            name,
            topic: config.topic.clone(),
            template,
            fields,
            key_field: config.key_field.clone(),
            dead_letter,
            client,
            producer,
            generation: 0,
            shared,
            unfinished: Unfinished::default(),
        })
    }

    /// After a `write` that failed, the indices (in that batch) of the records whose delivery
    /// was reported: the next `write` of the same batch sends only the others. Empty when the
    /// last write succeeded.
    pub fn delivered_before_failure(&self) -> Vec<usize> {
        self.unfinished.delivered()
    }

    /// Puts the producer into librdkafka's fatal state with `code`, as a broker-side
    /// idempotence failure (an out-of-order sequence, say) would; for fault-injection tests,
    /// through librdkafka's own testing hook.
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, code: rdkafka::types::RDKafkaRespErr) {
        let reason = c"weir fault injection";
        // SAFETY: the client pointer is valid while `self.producer` lives, and `reason` is a
        // NUL-terminated string librdkafka copies.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                code,
                reason.as_ptr(),
            );
        }
    }

    /// Where `record` goes: its topic (the sink's, or the one its fields pick by the template)
    /// and its key (the record's own, borrowed, or the key field read from its value), or why
    /// it cannot go. `found` is scratch space for the fields, reused across a batch's records.
    fn route<'r>(
        &'r self,
        record: &'r Record,
        found: &mut Vec<Option<Leaf<'r>>>,
    ) -> Result<Route<'r>, String> {
        let Some(fields) = &self.fields else {
            return Ok((
                Cow::Borrowed(&self.topic),
                record.key.as_deref().map(Cow::Borrowed),
            ));
        };
        fields.read_into(&record.value, found).map_err(|e| {
            format!(
                "value is not JSON, so {} cannot be read: {e}",
                self.named_fields()
            )
        })?;
        let (key_leaf, topic_leaves) = found.split_at_mut(usize::from(self.key_field.is_some()));
        let topic = match &self.template {
            None => Cow::Borrowed(self.topic.as_str()),
            Some(template) => Cow::Owned(template.render(topic_leaves)?),
        };
        let Some(field) = &self.key_field else {
            return Ok((topic, record.key.as_deref().map(Cow::Borrowed)));
        };
        let key = key_leaf
            .first_mut()
            .and_then(Option::take)
            .and_then(Leaf::into_text)
            .ok_or_else(|| format!("key field `{field}` is missing or not a scalar"))?;
        let key = match key {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        };
        Ok((topic, Some(key)))
    }

    /// The fields [`KafkaSink::route`] reads, for messages: "key field `id` and the topic's
    /// field `kind`".
    fn named_fields(&self) -> String {
        let key = self
            .key_field
            .as_ref()
            .map(|field| format!("key field `{field}`"));
        let topic = self
            .template
            .as_ref()
            .map(|template| format!("the topic's {}", template.named_fields()));
        key.into_iter()
            .chain(topic)
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// `record` as a message to `topic`, with `key`.
    fn outgoing<'r>(
        &self,
        record: &'r Record,
        topic: &'r str,
        key: Option<&'r [u8]>,
    ) -> Outgoing<'r> {
        // librdkafka's header list is allocated per message; a record without headers needs none.
        let headers = (!record.headers.is_empty()).then(|| {
            record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len()),
                |headers, header| {
                    headers.insert(Header {
                        key: &header.key,
                        value: Some(header.value.as_ref()),
                    })
                },
            )
        });
        Outgoing {
            topic,
            payload: Some(&record.value),
            partition: None,
            key,
            headers,
            timestamp: record.timestamp,
        }
    }

    /// Stores dead letters too large for the topic as excerpts of their values, with each full
    /// size and sha256 in headers; the whole record stays in the source at the coordinates its
    /// headers name. Excerpts of [`EXCERPT_BYTES`] are tried in turn, all the letters of one
    /// step sent together, so a batch of large letters costs a round trip a step, not one a
    /// letter. An excerpt whose timestamp the topic refuses is sent again restamped (see
    /// [`restamped`]); a letter whose `restamp` is set goes restamped from the first. Gives each
    /// letter's outcome in `letters`' order.
    async fn send_excerpts(
        &self,
        records: &[Record],
        letters: &[Oversized<'_>],
    ) -> Vec<ExcerptOutcome> {
        /// Where a letter stands: the excerpt size it is at, whether it goes restamped, and how
        /// it ended once it has.
        struct Letter {
            step: usize,
            restamp: bool,
            outcome: Option<ExcerptOutcome>,
        }
        let mut state: Vec<Letter> = letters
            .iter()
            .map(|letter| Letter {
                step: 0,
                restamp: letter.restamp,
                outcome: None,
            })
            .collect();
        let (mut stored, mut restamped_count) = (0_usize, 0_usize);
        loop {
            let pending: Vec<usize> = (0..letters.len())
                .filter(|at| state[*at].outcome.is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let excerpts: Vec<Record> = pending
                .iter()
                .map(|at| {
                    let mut excerpt = records[letters[*at].index].clone();
                    excerpt.keep_excerpt(EXCERPT_BYTES[state[*at].step]);
                    if state[*at].restamp {
                        excerpt = restamped(&excerpt);
                    }
                    excerpt
                })
                .collect();
            let messages = pending
                .iter()
                .zip(&excerpts)
                .map(|(at, excerpt)| {
                    self.outgoing(excerpt, &self.topic, letters[*at].key.as_deref())
                })
                .collect();
            let results = batch_producer::send_all(&self.producer, messages).await;
            for ((at, excerpt), delivered) in pending.into_iter().zip(&excerpts).zip(results) {
                let letter = &mut state[at];
                if let Err(error) = &delivered {
                    if !letter.restamp && excerpt.timestamp.is_some() && refused_timestamp(error) {
                        // The same excerpt again, with the time it is written.
                        letter.restamp = true;
                        continue;
                    }
                    if classify(error, &self.topic) == Verdict::TooLarge {
                        letter.step += 1;
                        if letter.step == EXCERPT_BYTES.len() {
                            letter.outcome = Some(Err(format!(
                                "dead letter too large for the topic even without its value ({} bytes of headers); raise the topic's max.message.bytes",
                                excerpt
                                    .headers
                                    .iter()
                                    .map(|h| h.key.len() + h.value.len())
                                    .sum::<usize>()
                            )));
                        }
                        continue;
                    }
                }
                if delivered.is_ok() {
                    stored += 1;
                    restamped_count += usize::from(letter.restamp);
                }
                letter.outcome = Some(Ok(delivered));
            }
        }
        if stored > 0 {
            tracing::warn!(
                connector = %self.name,
                records = stored,
                restamped = restamped_count,
                "Dead letters too large for the topic; stored excerpts of their values with each one's size and sha256."
            );
        }
        state
            .into_iter()
            .map(|letter| letter.outcome.expect("every letter ends with an outcome"))
            .collect()
    }

    /// Whether the brokers' metadata confirms that the topic does not exist; `None` when they
    /// cannot be asked. librdkafka may report a topic as unknown while a restarting broker
    /// loads its logs, and stopping the pipeline then would be wrong.
    async fn topic_missing(&self, topic: &str) -> Option<bool> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .ok()?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            Some(found.is_none_or(|found| {
                matches!(
                    found.error().map(RDKafkaErrorCode::from),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                )
            }))
        })
        .await
        .ok()
        .flatten()
    }

    /// Replaces a producer in librdkafka's fatal state by a new one (a new producer id, so its
    /// sequence numbers start afresh); the old one is destroyed by its own report thread, which
    /// purges it and reports its records as failed.
    /// Handles share the replacement: the first to get here creates it, the others adopt it.
    fn replace_producer(&mut self) -> Result<(), ConnectorError> {
        let producer = {
            let mut current = self
                .shared
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if current.0 == self.generation {
                let producer = create_producer(&self.name, &self.client)?;
                drop(std::mem::replace(&mut current.1, producer));
                current.0 += 1;
            }
            self.generation = current.0;
            current.1.clone()
        };
        self.producer = producer;
        Ok(())
    }

    /// The fatal error the producer is in, if any, as a verdict: a new producer, or a stop
    /// when the cause is one a new producer would meet again (no authorization).
    fn fatal_state(&self) -> Option<(Verdict, RDKafkaErrorCode, String)> {
        let (code, reason) = self.producer.client().fatal_error()?;
        let verdict = match classify_code(code, &self.topic) {
            stop @ Verdict::Stop(_) => stop,
            _ => Verdict::NewProducer,
        };
        Some((verdict, code, reason))
    }
}

/// Where a record goes: its topic and its message key, borrowed from the sink or the record
/// where they can be.
type Route<'r> = (Cow<'r, str>, Option<Cow<'r, [u8]>>);

/// The record fields a sink with `key_field` and `template` reads, key first; `None` when it
/// reads none.
fn record_fields(key_field: Option<&str>, template: Option<&TopicTemplate>) -> Option<FieldSet> {
    let key = key_field.map(FieldPath::parse);
    let paths: Vec<&FieldPath> = key
        .iter()
        .chain(template.into_iter().flat_map(TopicTemplate::fields))
        .collect();
    (!paths.is_empty()).then(|| FieldSet::as_written(paths))
}

/// A producer with `client`'s settings.
fn create_producer(name: &str, client: &ClientConfig) -> Result<BatchProducer, ConnectorError> {
    batch_producer::create(name, client)
        .map_err(|e| creation_failed(name, "cannot create the producer", e))
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        // A fatal error raised since the last write (librdkafka raises it from its own threads).
        if let Some((verdict, code, reason)) = self.fatal_state() {
            if let Verdict::Stop(message) = verdict {
                return Err(ConnectorError::fatal(&self.name, message)
                    .caused_by(KafkaError::MessageProduction(code)));
            }
            tracing::warn!(connector = %self.name, ?code, %reason, "The producer is in librdkafka's fatal state; replacing it.");
            self.replace_producer()?;
        }
        let mut outcomes = self.unfinished.resume(records);
        let resumed = outcomes.iter().any(|outcome| *outcome != Outcome::Unsent);
        let mut to_send = Vec::new();
        let mut found = Vec::new();
        for (index, record) in records.iter().enumerate() {
            if outcomes[index] != Outcome::Unsent {
                continue;
            }
            match self.route(record, &mut found) {
                Ok((topic, key)) => to_send.push((index, topic, key)),
                // Dead letters are often not JSON (that may be why they are dead): keep their
                // own key rather than refusing them (a dead-letter sink has no template).
                Err(_) if self.dead_letter => to_send.push((
                    index,
                    Cow::Borrowed(self.topic.as_str()),
                    record.key.as_deref().map(Cow::Borrowed),
                )),
                Err(reason) => outcomes[index] = Outcome::Rejected(reason),
            }
        }
        let messages = to_send
            .iter()
            .map(|(index, topic, key)| self.outgoing(&records[*index], topic, key.as_deref()))
            .collect();
        let results = batch_producer::send_all(&self.producer, messages).await;
        let mut judge = Judge::default();
        let mut failure: Option<Failure> = None;
        let mut too_large = Vec::new();
        let mut restamp = Vec::new();
        for ((index, topic, key), result) in to_send.into_iter().zip(results) {
            let error = match result {
                Ok(()) => {
                    outcomes[index] = Outcome::Delivered;
                    continue;
                }
                Err(error) => error,
            };
            if self.dead_letter && refused_timestamp(&error) && records[index].timestamp.is_some() {
                restamp.push((index, key));
                continue;
            }
            match judge.verdict(self, &error, &topic).await {
                Verdict::TooLarge => too_large.push(Oversized {
                    index,
                    key,
                    restamp: false,
                }),
                Verdict::Refused(reason) => {
                    outcomes[index] = Outcome::Rejected(format!("{reason} ({error})"));
                }
                // The record picked the topic: the refusal is the record's, not the pipeline's.
                Verdict::Stop(reason) if self.template.is_some() && refuses_topic(&error) => {
                    outcomes[index] = Outcome::Rejected(format!(
                        "{reason} (the topic comes from the record's fields by the sink's topic `{}`; {error})",
                        self.topic
                    ));
                }
                verdict => note(&mut failure, verdict, error),
            }
        }
        if !restamp.is_empty() {
            // Dead letters whose timestamp the topic refused, sent again together restamped.
            let again: Vec<Record> = restamp
                .iter()
                .map(|(index, _)| restamped(&records[*index]))
                .collect();
            let messages = restamp
                .iter()
                .zip(&again)
                .map(|((_, key), record)| self.outgoing(record, &self.topic, key.as_deref()))
                .collect();
            let results = batch_producer::send_all(&self.producer, messages).await;
            let mut stored = 0_usize;
            for ((index, key), result) in restamp.into_iter().zip(results) {
                let error = match result {
                    Ok(()) => {
                        outcomes[index] = Outcome::Delivered;
                        stored += 1;
                        continue;
                    }
                    Err(error) => error,
                };
                match judge.verdict(self, &error, &self.topic).await {
                    // The header with the original timestamp made it too large: an excerpt.
                    Verdict::TooLarge => too_large.push(Oversized {
                        index,
                        key,
                        restamp: true,
                    }),
                    Verdict::Refused(reason) => {
                        outcomes[index] = Outcome::Rejected(format!("{reason} ({error})"));
                    }
                    verdict => note(&mut failure, verdict, error),
                }
            }
            if stored > 0 {
                tracing::warn!(
                    connector = %self.name,
                    records = stored,
                    "The dead-letter topic refused the timestamp of dead letters; stored them with the time they were written, the original in weir.record.timestamp."
                );
            }
        }
        if !self.dead_letter {
            for Oversized { index, key, .. } in &too_large {
                outcomes[*index] = Outcome::Rejected(format!(
                    "message of {} bytes is larger than the producer or topic allows (message.max.bytes, max.message.bytes)",
                    records[*index].value.len() + key.as_ref().map_or(0, |key| key.len())
                ));
            }
        } else if !too_large.is_empty() {
            let excerpts = self.send_excerpts(records, &too_large).await;
            for (Oversized { index, .. }, excerpt) in too_large.iter().zip(excerpts) {
                match excerpt {
                    Ok(Ok(())) => outcomes[*index] = Outcome::Delivered,
                    Ok(Err(error)) => match judge.verdict(self, &error, &self.topic).await {
                        Verdict::Refused(reason) => {
                            outcomes[*index] = Outcome::Rejected(format!("{reason} ({error})"));
                        }
                        verdict => note(&mut failure, verdict, error),
                    },
                    Err(reason) => outcomes[*index] = Outcome::Rejected(reason),
                }
            }
        }
        let unsent = outcomes.iter().filter(|o| **o == Outcome::Unsent).count();
        if let Some(Failure { verdict, error }) = failure {
            let verdict = match (verdict, self.fatal_state()) {
                // The producer's own fatal error names the cause better than a record's report.
                (Verdict::NewProducer | Verdict::Retry, Some((fatal, code, reason))) => {
                    tracing::warn!(connector = %self.name, ?code, %reason, "The producer entered librdkafka's fatal state.");
                    fatal
                }
                (verdict, _) => verdict,
            };
            match verdict {
                Verdict::Stop(message) => {
                    return Err(ConnectorError::fatal(&self.name, message).caused_by(error));
                }
                Verdict::NewProducer => {
                    self.replace_producer()?;
                    self.unfinished.keep(records, outcomes);
                    return Err(ConnectorError::transient(
                        &self.name,
                        format!(
                            "the idempotent producer hit a fatal error; a new producer sends the {unsent} of {} record(s) not delivered",
                            records.len()
                        ),
                    )
                    .caused_by(error));
                }
                _ => {
                    self.unfinished.keep(records, outcomes);
                    return Err(ConnectorError::transient(
                        &self.name,
                        format!(
                            "{unsent} of {} record(s) not delivered; only those are sent again",
                            records.len()
                        ),
                    )
                    .caused_by(error));
                }
            }
        }
        if resumed {
            tracing::debug!(connector = %self.name, records = records.len(), "Batch delivered after re-sending only what had failed.");
        }
        Ok(outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(index, outcome)| match outcome {
                Outcome::Rejected(reason) => Some(Rejected { index, reason }),
                _ => None,
            })
            .collect())
    }

    /// A handle on the same producer with its own retry state: its batches are produced while
    /// the delivery reports of other handles' batches are outstanding.
    fn fork(&self) -> Option<Box<dyn Sink>> {
        let (generation, producer) = {
            let current = self
                .shared
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (current.0, current.1.clone())
        };
        Some(Box::new(KafkaSink {
            name: self.name.clone(),
            topic: self.topic.clone(),
            template: self.template.clone(),
            fields: self.fields.clone(),
            key_field: self.key_field.clone(),
            dead_letter: self.dead_letter,
            client: self.client.clone(),
            producer,
            generation,
            shared: Arc::clone(&self.shared),
            unfinished: Unfinished::default(),
        }))
    }
}

/// A record of a batch too large for the topic.
struct Oversized<'a> {
    /// Its index in the batch.
    index: usize,
    /// The key it is sent with.
    key: Option<Cow<'a, [u8]>>,
    /// Whether the topic refused its timestamp already, so that its excerpts go restamped.
    restamp: bool,
}

/// How a dead letter too large for the topic ended: `Err` refused (even its headers alone are
/// too large), `Ok` the delivery of its excerpt.
type ExcerptOutcome = Result<Result<(), KafkaError>, String>;

/// Classifies the failed deliveries of one write, asking the brokers at most once per topic
/// whether it is missing.
#[derive(Default)]
struct Judge {
    topic_missing: BTreeMap<String, Option<bool>>,
}

impl Judge {
    /// The verdict on a failed delivery to `topic`; an unknown topic stops the pipeline only
    /// once the metadata confirms it, and is retried otherwise.
    async fn verdict(&mut self, sink: &KafkaSink, error: &KafkaError, topic: &str) -> Verdict {
        let verdict = classify(error, topic);
        let unknown_topic = matches!(
            error,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
            )
        );
        if !unknown_topic {
            return verdict;
        }
        let missing = match self.topic_missing.get(topic) {
            Some(missing) => *missing,
            None => {
                let missing = sink.topic_missing(topic).await;
                self.topic_missing.insert(topic.to_owned(), missing);
                missing
            }
        };
        if missing == Some(true) {
            verdict
        } else {
            Verdict::Retry
        }
    }
}

/// Whether a delivery failed because of the topic it went to: one that does not exist, is not
/// a valid name, or may not be written by this principal or by the brokers' policy.
fn refuses_topic(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

/// Whether a delivery may have failed because the broker refused the record's timestamp: Kafka
/// 4 reports a timestamp outside `message.timestamp.before.max.ms` as an invalid record, the
/// code a compacted topic gives a keyless record too, so a dead letter with a timestamp that
/// gets either is sent once more without it.
fn refused_timestamp(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidTimestamp | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// `record` with no timestamp (the producer stamps it with the time it is written), the original
/// kept in the `weir.record.timestamp` header: a topic with `message.timestamp.before.max.ms`
/// refuses an old record's dead letter exactly as it refused the record, and a dead-letter
/// destination must not refuse a record for what it holds.
fn restamped(record: &Record) -> Record {
    let mut restamped = record.clone();
    if let Some(original) = restamped.timestamp.take() {
        restamped.set_header(
            crate::record::headers::RECORD_TIMESTAMP,
            original.to_string(),
        );
    }
    restamped
}

/// Keeps the failure that decides what the batch does: the most severe, the first among equals.
fn note(failure: &mut Option<Failure>, verdict: Verdict, error: KafkaError) {
    if failure
        .as_ref()
        .is_none_or(|kept| verdict.severity() > kept.verdict.severity())
    {
        *failure = Some(Failure { verdict, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink on an unused loopback port: the producer connects lazily, and these tests only
    /// read keys and topics.
    fn sink_with_key_field(field: Option<&str>) -> KafkaSink {
        routing_sink("keys", field)
    }

    fn routing_sink(topic: &str, field: Option<&str>) -> KafkaSink {
        let config = KafkaSinkConfig {
            brokers: "127.0.0.1:1".into(),
            topic: topic.into(),
            key_field: field.map(str::to_owned),
            compression: Compression::default(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            properties: BTreeMap::new(),
        };
        KafkaSink::new(&config, false).expect("a producer with a valid configuration")
    }

    #[test]
    fn the_key_field_is_read_for_each_record_without_one_record_leaking_into_the_next() {
        let sink = sink_with_key_field(Some("login.uuid"));
        let records = [
            Record::from_value(r#"{"login":{"uuid":"a-1"},"n":1}"#),
            Record::from_value(r#"{"login":{"username":"no uuid"}}"#),
            Record::from_value("not json"),
            Record::from_value(r#"{"login":{"uuid":7}}"#),
            Record::from_value(r#"{"login":{"uuid":{"nested":"object"}}}"#),
            Record::from_value(r#"{"login":{"uuid":"b-\u0032"}}"#),
        ];
        // One scratch vector for the whole batch, as `write` uses it.
        let mut found = Vec::new();
        let keys: Vec<Result<Option<Vec<u8>>, String>> = records
            .iter()
            .map(|record| {
                sink.route(record, &mut found)
                    .map(|(_, key)| key.map(|key| key.into_owned()))
            })
            .collect();
        assert_eq!(keys[0], Ok(Some(b"a-1".to_vec())));
        let missing = keys[1].as_ref().expect_err("no uuid");
        assert!(missing.contains("`login.uuid` is missing"), "{missing}");
        let not_json = keys[2].as_ref().expect_err("not JSON");
        assert!(not_json.contains("value is not JSON"), "{not_json}");
        assert_eq!(keys[3], Ok(Some(b"7".to_vec())));
        let object = keys[4].as_ref().expect_err("an object is no key");
        assert!(object.contains("not a scalar"), "{object}");
        // An escaped key is decoded into a string of its own.
        assert_eq!(keys[5], Ok(Some(b"b-2".to_vec())));
    }

    #[test]
    fn a_record_s_key_and_topic_are_read_in_one_pass_without_leaking_into_the_next() {
        let sink = routing_sink("users-{{ nat }}", Some("id"));
        let records = [
            Record::from_value(r#"{"id":"u1","nat":"GB"}"#),
            Record::from_value(r#"{"id":"u2"}"#),
            Record::from_value(r#"{"nat":"FR"}"#),
            Record::from_value("not json"),
            Record::from_value(r#"{"nat":"a/b","id":"u3"}"#),
            Record::from_value(r#"{"id":123456789012345678901234567890,"nat":7}"#),
            Record::from_value(r#"{"id":123456789012345678901234567891,"nat":1.50}"#),
        ];
        // One scratch vector for the whole batch, as `write` uses it.
        let mut found = Vec::new();
        type OwnedRoute = (String, Option<Vec<u8>>);
        let routes: Vec<Result<OwnedRoute, String>> = records
            .iter()
            .map(|record| {
                sink.route(record, &mut found)
                    .map(|(topic, key)| (topic.into_owned(), key.map(|key| key.into_owned())))
            })
            .collect();
        assert_eq!(routes[0], Ok(("users-GB".into(), Some(b"u1".to_vec()))));
        let no_topic = routes[1].as_ref().expect_err("no nat");
        assert!(
            no_topic.contains("topic field `nat` is missing"),
            "{no_topic}"
        );
        let no_key = routes[2].as_ref().expect_err("no id");
        assert!(no_key.contains("key field `id` is missing"), "{no_key}");
        let not_json = routes[3].as_ref().expect_err("not JSON");
        assert!(
            not_json.contains(
                "value is not JSON, so key field `id` and the topic's field `nat` cannot be read"
            ),
            "{not_json}"
        );
        // The topic's refusal comes first.
        let bad = routes[4].as_ref().expect_err("a slash");
        assert!(bad.contains("'/' cannot be in a topic's name"), "{bad}");
        // Numbers as the record writes them: through a double, both keys would be one.
        assert_eq!(
            routes[5],
            Ok((
                "users-7".into(),
                Some(b"123456789012345678901234567890".to_vec())
            ))
        );
        assert_eq!(
            routes[6],
            Ok((
                "users-1.50".into(),
                Some(b"123456789012345678901234567891".to_vec())
            ))
        );
        let template_only = routing_sink("users-{{ nat }}", None);
        let not_json = template_only
            .route(&records[3], &mut Vec::new())
            .expect_err("not JSON");
        assert!(
            not_json.contains("value is not JSON, so the topic's field `nat` cannot be read"),
            "{not_json}"
        );
    }

    #[test]
    fn a_dead_letter_sink_refuses_a_topic_template_and_takes_a_name() {
        let config = |topic: &str| KafkaSinkConfig {
            brokers: "127.0.0.1:1".into(),
            topic: topic.into(),
            key_field: None,
            compression: Compression::default(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            properties: BTreeMap::new(),
        };
        let refused = KafkaSink::new(&config("dead-{{ kind }}"), true)
            .err()
            .expect("a template is no dead-letter topic")
            .to_string();
        assert!(
            refused.contains("dead letters go to one topic"),
            "{refused}"
        );
        assert!(KafkaSink::new(&config("dead-{{ kind }}"), false).is_ok());
        assert!(KafkaSink::new(&config("dead"), true).is_ok());
    }

    #[test]
    fn without_a_key_field_the_record_s_own_key_is_borrowed() {
        let sink = sink_with_key_field(None);
        let keyless = Record::from_value("not json either");
        assert_eq!(
            sink.route(&keyless, &mut Vec::new()),
            Ok((Cow::Borrowed("keys"), None))
        );
        let mut record = Record::from_value("not json either");
        record.key = Some(bytes::Bytes::from_static(b"own"));
        let (_, key) = sink
            .route(&record, &mut Vec::new())
            .expect("the record's key");
        assert!(matches!(key, Some(Cow::Borrowed(b"own"))), "{key:?}");
    }
}
