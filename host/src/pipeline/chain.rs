//! The transform chain: a batch through each plugin in turn, keeping per-record failures apart
//! so that one bad record becomes one dead letter and the rest flow on.


use crate::record::{Record, SourcePosition, headers};
use crate::runtime::{PluginInstance, RecordError};

/// A record that failed, with everything a dead-letter entry needs.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The record as the failing plugin received it.
    pub record: Record,
    /// Where its input came from.
    pub position: SourcePosition,
    /// Why it failed.
    pub error: RecordError,
    /// The failing plugin's name.
    pub plugin: String,
    /// The failing plugin's version.
    pub version: String,
}

impl Failure {
    /// The dead-letter entry: the record with the reason, plugin, version and source
    /// coordinates in headers.
    pub fn into_dead_letter(self, pipeline: &str) -> Record {
        let mut record = self.record;
        record.set_header(headers::ERROR, self.error.message);
        record.set_header(headers::ERROR_KIND, self.error.kind.as_str());
        record.set_header(headers::PLUGIN, self.plugin);
        record.set_header(headers::PLUGIN_VERSION, self.version);
        record.set_header(headers::PIPELINE, pipeline);
        record.set_header(headers::SOURCE_STREAM, self.position.stream.as_bytes());
        record.set_header(headers::SOURCE_PARTITION, self.position.partition.to_string());
        record.set_header(headers::SOURCE_OFFSET, self.position.offset.to_string());
        record
    }
}

/// What one batch became.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records for the sink, in input order.
    pub outputs: Vec<Record>,
    /// Records for the dead-letter destination.
    pub failures: Vec<Failure>,
}

/// The plugin instances of one worker, applied in order.
pub struct TransformChain {
    steps: Vec<PluginInstance>,
}

impl TransformChain {
    /// A chain of instances; empty passes records through.
    pub fn new(steps: Vec<PluginInstance>) -> Self {
        TransformChain { steps }
    }

    /// The instances, in order.
    pub fn steps(&self) -> &[PluginInstance] {
        &self.steps
    }

    /// Runs a batch through every step.
    pub fn apply(&mut self, records: Vec<Record>, positions: &[SourcePosition]) -> ChainOutput {
        // `origins[i]` is the input index that `records[i]` descends from.
        let mut origins: Vec<usize> = (0..records.len()).collect();
        let mut records = records;
        let mut failures = Vec::new();
        for step in &mut self.steps {
            if records.is_empty() {
                break;
            }
            let results = step.transform(&records);
            let mut next_records = Vec::with_capacity(records.len());
            let mut next_origins = Vec::with_capacity(records.len());
            for ((record, origin), result) in records.into_iter().zip(origins).zip(results) {
                match result {
                    Ok(outputs) => {
                        next_origins.extend(std::iter::repeat_n(origin, outputs.len()));
                        next_records.extend(outputs);
                    }
                    Err(error) => failures.push(Failure {
                        record,
                        position: positions[origin].clone(),
                        error,
                        plugin: step.plugin().name().to_owned(),
                        version: step.plugin().version().to_owned(),
                    }),
                }
            }
            records = next_records;
            origins = next_origins;
        }
        ChainOutput {
            outputs: records,
            failures,
        }
    }
}
