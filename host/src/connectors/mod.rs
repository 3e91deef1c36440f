//! Connectors: sources and sinks that do IO and nothing else. Each lives in its own module with
//! its config beside it, and the config implements [`SourceSpec`] or [`SinkSpec`] (validate,
//! build, describe); [`SourceConfig`] and [`SinkConfig`] are the explicit registry of what a
//! pipeline file may name, one line per connector.

pub mod blackhole;
pub mod cassandra;
pub mod encoding;
pub mod fields;
pub mod file;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod postgres;
pub mod replay;
mod slab;
pub mod stdout;
pub mod tls;

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::record::{Record, SourcePosition, SourceRecord};

/// What a connector failure means for the pipeline: whether retrying can help, or whether the
/// failure belongs to one record. Decided from the driver's typed error (an rdkafka error code, a
/// PostgreSQL SQLSTATE, a Cassandra `DbError`), never from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A store or broker down, a timeout, a lost connection: retry with backoff; nothing is
    /// acknowledged meanwhile.
    Transient,
    /// Bad config, or a refusal retrying cannot cure (a missing table, bad credentials, a syntax
    /// error): stop the pipeline with the reason.
    Fatal,
    /// The store refused one record for its content: that record is dead-lettered and the rest
    /// are written. A sink reports such records as [`Rejected`]; one that reaches the pipeline as
    /// an error stops it, since retrying the same content cannot help.
    Record,
}

/// The driver error behind a connector failure.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a source or a sink.
#[derive(Debug, thiserror::Error)]
#[error("{connector}: {message}{}", .source.as_ref().map(|cause| format!(": {cause}")).unwrap_or_default())]
pub struct ConnectorError {
    /// The connector, e.g. `file sink out/users.jsonl`.
    pub connector: String,
    /// What the connector was doing, and what to do about it.
    pub message: String,
    /// Whether retrying can help, or the failure is one record's.
    pub kind: ErrorKind,
    /// The driver's error, kept whole (typed, for callers that inspect it); shown after the
    /// message.
    #[source]
    pub source: Option<Cause>,
}

impl ConnectorError {
    /// A failure that retrying may cure.
    pub fn transient(connector: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, connector, message)
    }

    /// A failure that retrying cannot cure.
    pub fn fatal(connector: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, connector, message)
    }

    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, connector: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError {
            connector: connector.into(),
            message: message.into(),
            kind,
            source: None,
        }
    }

    /// The same failure, caused by the driver's `source`.
    pub fn caused_by(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether retrying with backoff may cure it.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// Where records come from. A source only does IO; batching policy arrives as arguments.
#[async_trait]
pub trait Source: Send {
    /// The next batch: at most `max` records, returned once full or once `linger` has passed
    /// since the first record. `Ok(None)` when the source is exhausted and will yield nothing more.
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError>;

    /// Records that every record at or before each of `positions` (one per stream and partition)
    /// has been acknowledged downstream, so the source may persist them.
    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError>;

    /// The last commit before the source is dropped (the pipeline drained): unlike `commit`,
    /// which a source may batch or send without waiting, it returns only once the positions are
    /// durable. It is called even with no positions, for a source that holds acknowledgements
    /// of its own.
    async fn commit_final(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        if positions.is_empty() {
            return Ok(());
        }
        self.commit(positions).await
    }

    /// How far the committed position is behind the end of each partition, for sources that
    /// know (Kafka); `None` for the rest. The handle reads the lag whenever asked (a metrics
    /// scrape, the status page), even while the pipeline waits on a stalled sink.
    fn lag_handle(&self) -> Option<LagHandle> {
        None
    }

    /// Where the pipeline reports each acknowledgement the moment it happens, for a source that
    /// must act on them while it is busy polling (the Kafka source, which drains a partition
    /// before giving it up in a rebalance). `commit` still follows as usual.
    fn acknowledgements(&self) -> Option<std::sync::Arc<dyn Acknowledgements>> {
        None
    }

    /// This process's standing in a consumer group (rebalances, partitions owned), for
    /// sources that join one (Kafka).
    fn group_metrics(&self) -> Option<std::sync::Arc<kafka::GroupMetrics>> {
        None
    }
}

/// Reads a source's live consumer lag per partition: `None` until the source knows any.
#[derive(Clone)]
pub struct LagHandle(
    std::sync::Arc<dyn Fn() -> Option<Vec<crate::observe::PartitionLag>> + Send + Sync>,
);

impl LagHandle {
    /// A handle that calls `read` at each look.
    pub fn new(
        read: impl Fn() -> Option<Vec<crate::observe::PartitionLag>> + Send + Sync + 'static,
    ) -> Self {
        LagHandle(std::sync::Arc::new(read))
    }

    /// The lag now.
    pub fn read(&self) -> Option<Vec<crate::observe::PartitionLag>> {
        (self.0)()
    }
}

impl std::fmt::Debug for LagHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LagHandle")
    }
}

/// Receives the positions of each batch as soon as the sink and the dead-letter destination
/// acknowledged it. Called from the sink stage, so it must be quick.
pub trait Acknowledgements: Send + Sync {
    /// Everything up to and including these positions (one per stream and partition) is
    /// acknowledged.
    fn acknowledged(&self, positions: &[SourcePosition]);
}

/// A record a sink refused for what it contains (not JSON, a type mismatch): it goes to the
/// dead-letter destination instead of stopping the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its index in the slice given to `write`.
    pub index: usize,
    /// Why, naming the field.
    pub reason: String,
}

/// Where records go. `write` returns only once the records are durable as far as the store
/// allows: that return is the acknowledgement that lets the source commit.
#[async_trait]
pub trait Sink: Send {
    /// Writes records, in order, and returns the ones refused for their content; every other
    /// record is durable when this returns `Ok`.
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError>;

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Another handle on the same store (sharing its connections, producer or session), so the
    /// sink stage can write a batch while earlier ones are still being written. Each handle
    /// keeps its own retry state, since a failed batch is retried on the handle that wrote it.
    /// `None`, the default, for a sink that must write one batch at a time (a file appends in
    /// order); the stage then keeps one batch in flight. Where the store orders writes by when
    /// they start (Cassandra's last write wins), the handles must order them by the first
    /// `write` of each batch: the stage starts batches in source order.
    fn fork(&self) -> Option<Box<dyn Sink>> {
        None
    }

    /// Starts connecting in the background when the pipeline starts, so that its first batch
    /// does not wait for the connection. Nothing is reported here: a failure leaves the sink
    /// as it was, and the first write connects and reports as it would have. The default does
    /// nothing, for sinks that are ready once built.
    fn warm_up(&self) {}
}

/// The longest duration any `*_ms` option may name: a year. Checked at load (by `config`), so
/// that adding one to an `Instant` (next poll, deadline) can never overflow and panic.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// A config problem: the key (relative to the connector's table) and what to do.
pub type ConfigProblem = (String, String);

/// What a source's config type knows about its source: how to check it, open it and name it.
/// Each connector implements it beside its config, so adding a source is a new folder plus a
/// line in [`SourceConfig`] (Vector's `SourceConfig::build`, Arroyo's explicit registry).
#[async_trait]
pub trait SourceSpec: Send + Sync {
    /// Checks values the type system cannot.
    fn validate(&self) -> Result<(), ConfigProblem> {
        Ok(())
    }

    /// Opens the source.
    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError>;

    /// A short description for logs; never a secret.
    fn describe(&self) -> String;

    /// How many partitions the source's records come from (numbered from 0), for a canary's
    /// share of partitions. One unless the source is partitioned. May block on the network.
    fn partition_count(&self) -> Result<u32, ConnectorError> {
        Ok(1)
    }
}

/// What a sink's config type knows about its sink (see [`SourceSpec`]).
#[async_trait]
pub trait SinkSpec: Send + Sync {
    /// Checks values the type system cannot.
    fn validate(&self) -> Result<(), ConfigProblem> {
        Ok(())
    }

    /// Opens the sink. `dead_letter` picks the default encoding (dead letters keep their
    /// headers) and keeps a sink from refusing what it can store in another form: nowhere is
    /// left.
    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError>;

    /// A short description for logs; never a secret.
    fn describe(&self) -> String;

    /// Whether it can store dead letters: any bytes, with their headers.
    fn can_hold_dead_letters(&self) -> bool {
        true
    }

    /// Checks what a dead-letter destination needs besides [`SinkSpec::validate`].
    fn validate_as_dead_letter(&self) -> Result<(), ConfigProblem> {
        Ok(())
    }
}

/// Declares the connectors a pipeline file may name: the enum serde reads by `type`, and the one
/// place a value of it becomes the connector's spec. One line per connector.
macro_rules! connector_registry {
    (
        $(#[$enum_doc:meta])*
        $name:ident: $spec:ident {
            $($(#[$doc:meta])* $variant:ident($config:ty),)*
        }
    ) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$doc])* $variant($config),)*
        }

        impl $name {
            /// The connector behind this entry.
            pub fn spec(&self) -> &dyn $spec {
                match self {
                    $($name::$variant(config) => config,)*
                }
            }
        }
    };
}

connector_registry! {
    /// The sources a pipeline file may name, by `type`.
    SourceConfig: SourceSpec {
        /// Synthetic randomuser.me-shaped users from a seeded generator.
        Generate(generate::GenerateConfig),
        /// JSON lines from a file.
        File(file::FileSourceConfig),
        /// A URL polled on an interval, its JSON split into records.
        Http(http::HttpSourceConfig),
        /// A table tailed by a monotonic column.
        Postgres(postgres::PostgresSourceConfig),
        /// Kafka topics, as a consumer-group member.
        Kafka(kafka::KafkaSourceConfig),
    }
}

connector_registry! {
    /// The sinks (and dead-letter destinations) a pipeline file may name, by `type`.
    SinkConfig: SinkSpec {
        /// JSON lines appended to a file.
        File(file::FileSinkConfig),
        /// JSON lines on standard output.
        Stdout(stdout::StdoutSinkConfig),
        /// A PostgreSQL landing table (or dead-letter table).
        Postgres(postgres::PostgresSinkConfig),
        /// A Kafka topic.
        Kafka(kafka::KafkaSinkConfig),
        /// A Cassandra table.
        Cassandra(cassandra::CassandraSinkConfig),
        /// Nowhere: records are acknowledged and discarded.
        Blackhole(blackhole::BlackholeSinkConfig),
    }
}

impl SourceConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        self.spec().validate()
    }

    /// Opens the source.
    pub async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        self.spec().build().await
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }
}

impl SinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        self.spec().validate()
    }

    /// Whether it can store dead letters: any bytes, with their headers.
    pub fn can_hold_dead_letters(&self) -> bool {
        self.spec().can_hold_dead_letters()
    }

    /// Checks what a dead-letter destination needs besides [`SinkConfig::validate`].
    pub fn validate_as_dead_letter(&self) -> Result<(), ConfigProblem> {
        self.spec().validate_as_dead_letter()
    }

    /// Opens the sink; see [`SinkSpec::build`].
    pub async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        self.spec().build(dead_letter).await
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }
}
