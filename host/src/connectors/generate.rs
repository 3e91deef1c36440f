//! The `generate` source: synthetic randomuser.me users from a seeded generator, so a pipeline
//! runs with no external service (the quickstart, demos, benchmarks).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use super::{ConfigProblem, ConnectorError, Source, SourceSpec};
use crate::generator::UserGenerator;
use crate::record::{Record, SourcePosition, SourceRecord};

/// Options of the `generate` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// How many records to produce before the source ends; unbounded when absent.
    #[serde(default)]
    pub count: Option<u64>,
    /// Records per second; as fast as downstream takes them when absent.
    #[serde(default)]
    pub rate: Option<f64>,
    /// The generator's seed: the same seed yields the same records.
    #[serde(default)]
    pub seed: u64,
    /// Users per record: 0 emits one result object per record; N emits a whole API response
    /// (`{"results": [...]}`) holding N users.
    #[serde(default)]
    pub results_per_record: usize,
}

impl GenerateConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        match self.rate {
            Some(rate) if !(rate > 0.0 && rate.is_finite()) => Err((
                "rate".into(),
                format!("must be a positive number of records per second, got {rate}"),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SourceSpec for GenerateConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        GenerateConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(GenerateSource::new(self)))
    }

    fn describe(&self) -> String {
        "generate".into()
    }
}

/// Produces generated users, paced by `rate`.
pub struct GenerateSource {
    config: GenerateConfig,
    generator: UserGenerator,
    produced: u64,
    started: Instant,
    stream: Arc<str>,
}

impl GenerateSource {
    /// A source from its config.
    pub fn new(config: &GenerateConfig) -> Self {
        GenerateSource {
            config: config.clone(),
            generator: UserGenerator::new(config.seed),
            produced: 0,
            started: Instant::now(),
            stream: Arc::from("generate"),
        }
    }

    fn next_record(&mut self) -> SourceRecord {
        let value = match self.config.results_per_record {
            0 => self.generator.next_user(),
            n => self.generator.next_response(n),
        };
        let position = SourcePosition {
            stream: Arc::clone(&self.stream),
            partition: 0,
            offset: self.produced as i64,
        };
        self.produced += 1;
        SourceRecord::new(Record::from_value(value.to_string()), position)
    }

    /// When record number `index` is due under the configured rate.
    fn due(&self, index: u64) -> Option<Instant> {
        self.config
            .rate
            .map(|rate| self.started + Duration::from_secs_f64(index as f64 / rate))
    }
}

#[async_trait]
impl Source for GenerateSource {
    async fn poll_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
        let remaining = self
            .config
            .count
            .map_or(u64::MAX, |c| c - self.produced.min(c));
        if remaining == 0 {
            return Ok(None);
        }
        let take = remaining.min(max as u64) as usize;
        let mut batch = Vec::with_capacity(take);
        let mut batch_deadline = None;
        while batch.len() < take {
            if let Some(due) = self.due(self.produced) {
                let deadline = *batch_deadline.get_or_insert(due + linger);
                if !batch.is_empty() && due > deadline {
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
            batch.push(self.next_record());
        }
        Ok(Some(batch))
    }

    async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        // Generated data is reproducible from the seed; there is nothing to persist.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emits_exactly_count_records_in_batches() {
        let config = GenerateConfig {
            count: Some(10),
            rate: None,
            seed: 1,
            results_per_record: 0,
        };
        let mut source = GenerateSource::new(&config);
        let mut sizes = Vec::new();
        while let Some(batch) = source
            .poll_batch(4, Duration::from_millis(5))
            .await
            .unwrap()
        {
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn rejects_non_positive_rate() {
        let config = GenerateConfig {
            count: None,
            rate: Some(0.0),
            seed: 0,
            results_per_record: 0,
        };
        assert_eq!(config.validate().unwrap_err().0, "rate");
    }
}
