//! Pipeline files: TOML, validated on load, with errors that name the file and the key.
//! Pipeline structure lives here; each connector's options live beside the connector.

mod env;
mod shared_files;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connectors::{SinkConfig, SourceConfig};
use crate::observe::tap::{DEAD_LETTER_STAGE, SINK_STAGE, SOURCE_STAGE};
use crate::runtime::{Capability, ComponentLimits, Grants, PluginLimits, StepRequest};

pub use crate::connectors::MAX_DURATION_MS;
pub use crate::secret::{HIDDEN, Scrubber, Secret, is_sensitive_key, redact};
pub use env::substitute_env;

/// A pipeline file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the pipeline file: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is longer than any pipeline file needs to be (a device or a wrong path, such as
    /// a data file given in its place).
    #[error(
        "{file}: the pipeline file is larger than {} MiB; give the path of a pipeline file \
         (TOML), not of data",
        MAX_PIPELINE_FILE_BYTES >> 20
    )]
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with the line and the offending key.
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, as a path such as `pipeline[0].batch.size`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Longest pipeline file read, in bytes: hundreds of pipelines fit in a fraction of it.
pub const MAX_PIPELINE_FILE_BYTES: u64 = 4 << 20;

/// A pipeline file: one or more `[[pipeline]]` tables, run together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The pipelines, each with its own source, transforms and sink.
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

/// One pipeline: a source, a chain of plugins, a sink and a dead-letter destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name, used in logs, metrics and dead-letter headers.
    pub name: String,
    /// Where records come from.
    pub source: SourceConfig,
    /// Plugins applied in order; each output of one is an input of the next.
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Where transformed records go.
    pub sink: SinkConfig,
    /// Where records that fail (bad input, plugin error, trap, timeout) go, with the reason in
    /// headers. Required: Weir never drops a record silently.
    pub dead_letter: SinkConfig,
    /// How records are grouped into batches.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Limits every plugin of this pipeline runs under.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Parallel transform workers, each with its own plugin instances: `"per-partition"` (the
    /// default) starts one for each source partition as it appears (Kafka: one per assigned
    /// partition), up to 64; a number fixes how many share the partitions. Either way a
    /// partition is always handled by the same worker, so it stays in order.
    #[serde(default)]
    pub workers: Workers,
}

/// Workers a pipeline starts at most in `per-partition` mode; further partitions share them.
pub const MAX_WORKERS: usize = 64;

/// The most batches a sink may write at once (`batch.sink_in_flight`): each holds a whole batch
/// in memory until it is acknowledged.
pub const MAX_SINK_IN_FLIGHT: usize = 64;

/// The most records a batch may hold (`batch.size`): a source reserves room for a whole batch.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

/// The most batches in flight between source and sink (`batch.max_in_flight`): each is a queue
/// slot holding a whole batch.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How many transform workers a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    /// One per source partition, started as partitions appear, up to [`MAX_WORKERS`];
    /// further partitions share them.
    #[default]
    PerPartition,
    /// Exactly this many, sharing the partitions.
    Fixed(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of workers or \"per-partition\"")
            }
            fn visit_i64<E: serde::de::Error>(self, count: i64) -> Result<Workers, E> {
                usize::try_from(count)
                    .map(Workers::Fixed)
                    .map_err(|_| E::custom(format!("{count} workers: must be between 1 and 64")))
            }
            fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<Workers, E> {
                usize::try_from(count)
                    .map(Workers::Fixed)
                    .map_err(|_| E::custom(format!("{count} workers: must be between 1 and 64")))
            }
            fn visit_str<E: serde::de::Error>(self, mode: &str) -> Result<Workers, E> {
                match mode {
                    "per-partition" => Ok(Workers::PerPartition),
                    other => Err(E::custom(format!(
                        "`{other}`: expected a number of workers or \"per-partition\""
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One step of the transform chain.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// The plugin's name: the registry folder holds `NAME.wasm`.
    pub plugin: String,
    /// The plugin's config, handed to its `init` as a JSON object (over the defaults of its
    /// manifest).
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Capabilities this pipeline allows the plugin, if its manifest asks for them: `clock`,
    /// `random`. None by default.
    #[serde(default)]
    pub allow: Vec<Capability>,
}

/// A plugin's config is an opaque map that may hold a salt, a key or a token under any name, so
/// `Debug` shows its keys only.
impl std::fmt::Debug for TransformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.config.as_ref().map(|map| {
            map.keys()
                .map(|key| (key.as_str(), HIDDEN))
                .collect::<std::collections::BTreeMap<_, _>>()
        });
        f.debug_struct("TransformConfig")
            .field("plugin", &self.plugin)
            .field("config", &config)
            .field("allow", &self.allow)
            .finish()
    }
}

impl TransformConfig {
    /// What this entry asks of a plugin instance, under the pipeline's `limits`.
    pub fn request(&self, limits: PluginLimits) -> StepRequest<'_> {
        StepRequest {
            config: self.config.as_ref(),
            allow: &self.allow,
            limits,
        }
    }

    /// The config as the JSON text `init` receives (`{}` when none).
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(map) => serde_json::Value::Object(map.clone()).to_string(),
            None => "{}".to_owned(),
        }
    }
}

/// Batching: a batch closes when it is full or when its first record has waited `linger_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per batch; larger batches amortise plugin calls and sink round trips.
    #[serde(default = "default_batch_size")]
    pub size: usize,
    /// Longest a partial batch waits for more records, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Batches that may be in flight between source and sink; bounds memory and makes a slow
    /// sink slow the source down.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Batches the sink writes at once: a batch starts while earlier ones are still being
    /// written, and acknowledgements still reach the source in source order, so only contiguous
    /// written positions are committed. Sinks that must write in order (file, stdout, postgres)
    /// write one at a time whatever this says.
    #[serde(default = "default_sink_in_flight")]
    pub sink_in_flight: usize,
}

impl BatchConfig {
    /// The linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            size: default_batch_size(),
            linger_ms: default_linger_ms(),
            max_in_flight: default_max_in_flight(),
            sink_in_flight: default_sink_in_flight(),
        }
    }
}

fn default_batch_size() -> usize {
    256
}
fn default_linger_ms() -> u64 {
    20
}
fn default_max_in_flight() -> usize {
    8
}
fn default_sink_in_flight() -> usize {
    4
}

/// Limits for untrusted plugin code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest one record may take in a plugin (and its `init`), in milliseconds. A call with a
    /// batch gets this much per record, pooled, up to `batch_deadline_ms`; a call that runs past
    /// it is interrupted and its records replayed one by one, each with this deadline, so only a
    /// record that itself runs past it is dead-lettered (as a `timeout`).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Most one plugin call with a whole batch may take, in milliseconds, however many records it
    /// carries (never less than `deadline_ms`): what a batch holding a record that spins costs
    /// before its records are replayed one by one.
    #[serde(default = "default_batch_deadline_ms")]
    pub batch_deadline_ms: u64,
    /// Most memory one plugin instance may use, in MiB (all its linear memories together); also
    /// the most host memory one call's outputs may take beyond their bytes (144 bytes a record,
    /// plus each header's), past which the call is replayed record by record and a record whose
    /// own outputs pass it fails.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: usize,
    /// Largest record (key and value) the pipeline accepts, in bytes; larger ones go to the
    /// dead-letter destination before any plugin sees them.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Most core module instances one plugin component may create (componentize-py's Python
    /// plugins need 14). Engine-wide: the host takes the largest of every pipeline's value, the
    /// default and `--max-core-instances`.
    #[serde(default = "default_core_instances")]
    pub core_instances: u32,
    /// Most linear memories one plugin component may define; engine-wide like `core_instances`.
    #[serde(default = "default_memories")]
    pub memories: u32,
    /// Most tables one plugin component may define; engine-wide like `core_instances`.
    #[serde(default = "default_tables")]
    pub tables: u32,
}

fn default_core_instances() -> u32 {
    ComponentLimits::default().core_instances
}
fn default_memories() -> u32 {
    ComponentLimits::default().memories
}
fn default_tables() -> u32 {
    ComponentLimits::default().tables
}

fn default_max_record_bytes() -> usize {
    1 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            deadline_ms: default_deadline_ms(),
            batch_deadline_ms: default_batch_deadline_ms(),
            memory_mib: default_memory_mib(),
            max_record_bytes: default_max_record_bytes(),
            core_instances: default_core_instances(),
            memories: default_memories(),
            tables: default_tables(),
        }
    }
}

impl LimitsConfig {
    /// As the runtime's limits.
    pub fn plugin_limits(&self) -> PluginLimits {
        PluginLimits {
            deadline: Duration::from_millis(self.deadline_ms),
            batch_deadline: Duration::from_millis(self.batch_deadline_ms),
            memory_bytes: self.memory_mib << 20,
            grants: Grants::default(),
        }
    }

    /// The per-component limits this pipeline asks the engine for.
    pub fn component_limits(&self) -> ComponentLimits {
        ComponentLimits {
            core_instances: self.core_instances,
            memories: self.memories,
            tables: self.tables,
        }
    }
}

fn default_deadline_ms() -> u64 {
    1000
}
fn default_batch_deadline_ms() -> u64 {
    10_000
}
fn default_memory_mib() -> usize {
    64
}

impl PipelineFile {
    /// Reads, parses, substitutes `${VAR}` in string values, and validates a pipeline file.
    /// A file is read up to [`MAX_PIPELINE_FILE_BYTES`]: `/dev/zero` or a data file given by
    /// mistake stops with an error instead of filling memory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            file: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read_error)?
            .take(MAX_PIPELINE_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > MAX_PIPELINE_FILE_BYTES {
            return Err(ConfigError::TooLarge {
                file: path.to_owned(),
            });
        }
        Self::parse(path, &text)
    }

    /// Parses and validates pipeline text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(path, text, &|name| std::env::var(name).ok())
    }

    /// [`Self::parse`] with `${VAR}` looked up in `lookup`. The text is parsed as written and
    /// substituted inside its string values afterwards, so no message, whether about the syntax,
    /// a type or a value, shows what came from the environment: only the file's own text.
    fn parse_with(
        path: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            file: path.to_owned(),
            message: message.trim_end().to_owned(),
        };
        let mut document =
            toml::de::DeTable::parse(text).map_err(|e| parse_error(e.to_string()))?;
        let substitutions =
            env::Substitutions::apply(document.get_mut(), text, lookup).map_err(parse_error)?;
        let mut file = PipelineFile::deserialize(toml::de::Deserializer::from(document))
            .map_err(|e| parse_error(describe_toml_error(&e, text, &substitutions)))?;
        file.resolve_defaults();
        file.validate(path).map_err(|error| match error {
            ConfigError::Invalid { file, key, message } => ConfigError::Invalid {
                message: substitutions.restore_under_key(&message, &key),
                file,
                key,
            },
            other => other,
        })?;
        Ok(file)
    }

    /// The per-component limits the engine needs for every pipeline of this file: each the
    /// largest of `floor` (the defaults, or what the command line asks) and every pipeline's
    /// `limits.core_instances`, `limits.memories` and `limits.tables`. `weir run` and
    /// `weir validate` both build their engine with it, so a file that runs also validates.
    pub fn component_limits(&self, floor: ComponentLimits) -> ComponentLimits {
        self.pipelines.iter().fold(floor, |limits, pipeline| {
            limits.max(pipeline.limits.component_limits())
        })
    }

    /// Fills in defaults that depend on other keys: a file source's `max_line_bytes` and a
    /// postgres source's `max_row_bytes` are their pipeline's `limits.max_record_bytes` unless
    /// set.
    fn resolve_defaults(&mut self) {
        for pipeline in &mut self.pipelines {
            let max_record_bytes = pipeline.limits.max_record_bytes;
            match &mut pipeline.source {
                SourceConfig::File(file) => {
                    file.max_line_bytes.get_or_insert(max_record_bytes);
                }
                SourceConfig::Postgres(postgres) => {
                    postgres.max_row_bytes.get_or_insert(max_record_bytes);
                }
                _ => {}
            }
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: path.to_owned(),
            key,
            message,
        };
        if self.pipelines.is_empty() {
            return Err(invalid(
                "pipeline".into(),
                "the file defines no pipeline; add a [[pipeline]] table".into(),
            ));
        }
        let mut names = HashSet::new();
        for (index, pipeline) in self.pipelines.iter().enumerate() {
            let at = |key: &str| format!("pipeline[{index}].{key}");
            if !is_identifier(&pipeline.name) {
                return Err(invalid(
                    at("name"),
                    format!(
                        "`{}` is not a valid name; use letters, digits, `-` and `_`",
                        pipeline.name
                    ),
                ));
            }
            if !names.insert(pipeline.name.as_str()) {
                return Err(invalid(
                    at("name"),
                    format!("the name `{}` is used twice", pipeline.name),
                ));
            }
            for (step, transform) in pipeline.transforms.iter().enumerate() {
                let key = at(&format!("transforms[{step}].plugin"));
                if !is_plugin_name(&transform.plugin) {
                    return Err(invalid(
                        key,
                        format!(
                            "`{}` is not a plugin name; it is the file name of NAME.wasm without the extension",
                            transform.plugin
                        ),
                    ));
                }
                // Metrics, the status page and `weir tap` know a step by its plugin's name,
                // beside the stages at the chain's ends.
                if [SOURCE_STAGE, SINK_STAGE, DEAD_LETTER_STAGE]
                    .contains(&transform.plugin.as_str())
                {
                    return Err(invalid(
                        key,
                        format!(
                            "a plugin may not be named `{}`, like a stage of the pipeline; rename NAME.wasm",
                            transform.plugin
                        ),
                    ));
                }
            }
            if let Workers::Fixed(count) = pipeline.workers
                && !(1..=MAX_WORKERS).contains(&count)
            {
                return Err(invalid(at("workers"), "must be between 1 and 64".into()));
            }
            if !(1..=MAX_BATCH_SIZE).contains(&pipeline.batch.size) {
                return Err(invalid(
                    at("batch.size"),
                    format!("must be between 1 and {MAX_BATCH_SIZE}"),
                ));
            }
            if !(1..=MAX_IN_FLIGHT).contains(&pipeline.batch.max_in_flight) {
                return Err(invalid(
                    at("batch.max_in_flight"),
                    format!("must be between 1 and {MAX_IN_FLIGHT}"),
                ));
            }
            if !(1..=MAX_SINK_IN_FLIGHT).contains(&pipeline.batch.sink_in_flight) {
                return Err(invalid(
                    at("batch.sink_in_flight"),
                    format!("must be between 1 and {MAX_SINK_IN_FLIGHT}"),
                ));
            }
            if pipeline.limits.deadline_ms == 0 {
                return Err(invalid(
                    at("limits.deadline_ms"),
                    "must be at least 1".into(),
                ));
            }
            if pipeline.limits.batch_deadline_ms == 0 {
                return Err(invalid(
                    at("limits.batch_deadline_ms"),
                    "must be at least 1".into(),
                ));
            }
            if pipeline.limits.memory_mib == 0 || pipeline.limits.memory_mib > 1024 {
                return Err(invalid(
                    at("limits.memory_mib"),
                    "must be between 1 and 1024".into(),
                ));
            }
            // Checked before the source, whose own size limit defaults to it.
            if pipeline.limits.max_record_bytes == 0 {
                return Err(invalid(
                    at("limits.max_record_bytes"),
                    "must be at least 1: with 0 every record would go to the dead-letter destination".into(),
                ));
            }
            for (key, millis) in durations(pipeline) {
                if millis > MAX_DURATION_MS {
                    return Err(invalid(
                        at(&key),
                        format!("must be at most {MAX_DURATION_MS} (365 days), not {millis}"),
                    ));
                }
            }
            pipeline
                .source
                .validate()
                .map_err(|(key, message)| invalid(at(&format!("source.{key}")), message))?;
            pipeline
                .sink
                .validate()
                .map_err(|(key, message)| invalid(at(&format!("sink.{key}")), message))?;
            if !pipeline.dead_letter.can_hold_dead_letters() {
                return Err(invalid(
                    at("dead_letter.type"),
                    "a dead-letter destination must store any bytes with their headers: use file, kafka, postgres or stdout".into(),
                ));
            }
            pipeline
                .dead_letter
                .validate()
                .and_then(|()| pipeline.dead_letter.validate_as_dead_letter())
                .map_err(|(key, message)| invalid(at(&format!("dead_letter.{key}")), message))?;
            if let Some(table) = truncated_behind_a_resuming_source(pipeline) {
                return Err(invalid(
                    at(&format!("{table}.mode")),
                    "`truncate` empties the file at every start, while the source resumes after what it delivered: what was written before a restart would be lost. Use `append` (the default), or a source that starts over".into(),
                ));
            }
        }
        if let Some((index, key, message)) = shared_files::conflict(&self.pipelines) {
            return Err(invalid(format!("pipeline[{index}].{key}"), message));
        }
        Ok(())
    }
}

/// The table (`sink` or `dead_letter`) of a file destination that truncates its file at start in
/// a pipeline whose source resumes after its committed position (a Kafka group, a PostgreSQL
/// table, a checkpointed file, a journalled HTTP source).
fn truncated_behind_a_resuming_source(pipeline: &PipelineConfig) -> Option<&'static str> {
    let resumes = match &pipeline.source {
        SourceConfig::Kafka(_) | SourceConfig::Postgres(_) => true,
        SourceConfig::File(file) => file.checkpoint.is_some(),
        SourceConfig::Http(http) => http.journal.is_some(),
        SourceConfig::Generate(_) => false,
    };
    if !resumes {
        return None;
    }
    [("sink", &pipeline.sink), ("dead_letter", &pipeline.dead_letter)]
        .into_iter()
        .find(|(_, destination)| {
            matches!(destination, SinkConfig::File(file) if file.mode == crate::connectors::file::WriteMode::Truncate)
        })
        .map(|(table, _)| table)
}

/// Every duration option of a pipeline, with its key relative to the pipeline.
fn durations(pipeline: &PipelineConfig) -> Vec<(String, u64)> {
    let mut durations = vec![
        ("batch.linger_ms".to_owned(), pipeline.batch.linger_ms),
        ("limits.deadline_ms".to_owned(), pipeline.limits.deadline_ms),
        (
            "limits.batch_deadline_ms".to_owned(),
            pipeline.limits.batch_deadline_ms,
        ),
    ];
    match &pipeline.source {
        SourceConfig::Http(http) => {
            durations.push(("source.interval_ms".into(), http.interval_ms));
            durations.push(("source.timeout_ms".into(), http.timeout_ms));
        }
        SourceConfig::Postgres(postgres) => {
            durations.push(("source.poll_interval_ms".into(), postgres.poll_interval_ms));
        }
        SourceConfig::Kafka(kafka) => {
            durations.push(("source.drain_timeout_ms".into(), kafka.drain_timeout_ms));
            durations.push(("source.session_timeout_ms".into(), kafka.session_timeout_ms));
            durations.push((
                "source.heartbeat_interval_ms".into(),
                kafka.heartbeat_interval_ms,
            ));
            durations.push((
                "source.max_poll_interval_ms".into(),
                kafka.max_poll_interval_ms,
            ));
        }
        SourceConfig::Generate(_) | SourceConfig::File(_) => {}
    }
    for (table, sink) in [
        ("sink", &pipeline.sink),
        ("dead_letter", &pipeline.dead_letter),
    ] {
        if let SinkConfig::Kafka(kafka) = sink {
            durations.push((
                format!("{table}.delivery_timeout_ms"),
                kafka.delivery_timeout_ms,
            ));
        }
    }
    durations
}

/// A deserialization error shown like the parser shows one, on the line as written in `text`,
/// with any substituted value it quotes put back as written.
fn describe_toml_error(
    error: &toml::de::Error,
    text: &str,
    substitutions: &env::Substitutions,
) -> String {
    let message = substitutions.restore_in_span(error.message(), error.span());
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |at| start + at);
    let line = text[line_start..line_end].trim_end_matches('\r');
    let number = env::line_of(text, start);
    let column = text[line_start..start].chars().count();
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(number.to_string().len());
    format!(
        "TOML parse error at line {number}, column {}\n{gutter} |\n{number} | {line}\n{gutter} | {}{}\n{message}",
        column + 1,
        " ".repeat(column),
        "^".repeat(width)
    )
}

/// Whether `name` can name a plugin of a pipeline: letters, digits, `-` and `_`, so that
/// `NAME.wasm` is a file in the registry folder and never a path out of it.
pub fn is_plugin_name(name: &str) -> bool {
    is_identifier(name)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests;
