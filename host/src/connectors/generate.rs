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
    /// Records per second, at least 0.001 (one record every 1000 s); as fast as downstream
    /// takes them when absent.
    #[serde(default)]
    pub rate: Option<f64>,
    /// The generator's seed: the same seed yields the same records.
    #[serde(default)]
    pub seed: u64,
    /// Users per record: 0 emits one result object per record; N emits a whole API response
    /// (`{"results": [...]}`) holding N users, at most 5000 (randomuser.me's own cap).
    #[serde(default)]
    pub results_per_record: usize,
}

/// The slowest `rate`: one record every 1000 s.
pub const MIN_RATE: f64 = 0.001;
/// The most users one record may hold (`results_per_record`), as randomuser.me caps `results`:
/// a record is built whole in memory.
pub const MAX_RESULTS_PER_RECORD: usize = 5000;

impl GenerateConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate >= MIN_RATE)
        {
            return Err((
                "rate".into(),
                format!(
                    "must be a finite number of records per second, at least {MIN_RATE}, not {rate}"
                ),
            ));
        }
        if self.results_per_record > MAX_RESULTS_PER_RECORD {
            return Err((
                "results_per_record".into(),
                format!(
                    "must be at most {MAX_RESULTS_PER_RECORD} users per record, not {}",
                    self.results_per_record
                ),
            ));
        }
        Ok(())
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

    /// When record number `index` is due under the configured rate. A time too far off to
    /// represent (a rate below what validation allows) is [`FAR_OFF`] from now, never a panic;
    /// a time that can be represented is kept however far off, so the pace holds for any uptime.
    fn due(&self, index: u64) -> Option<Instant> {
        self.config.rate.map(|rate| {
            Duration::try_from_secs_f64(index as f64 / rate)
                .ok()
                .and_then(|after| self.started.checked_add(after))
                .unwrap_or_else(|| Instant::now() + FAR_OFF)
        })
    }
}

/// How far off a record is due when its time under the rate cannot be represented: a year.
const FAR_OFF: Duration = Duration::from_secs(365 * 24 * 3600);

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
    fn rate_and_users_per_record_are_bounded_naming_the_key() {
        let config = |rate: Option<f64>, results_per_record| GenerateConfig {
            count: None,
            rate,
            seed: 0,
            results_per_record,
        };
        for rate in [1e-20, f64::INFINITY, f64::NAN, -1.0] {
            assert_eq!(config(Some(rate), 0).validate().unwrap_err().0, "rate");
        }
        assert!(
            config(Some(MIN_RATE), MAX_RESULTS_PER_RECORD)
                .validate()
                .is_ok()
        );
        let (key, message) = config(None, 100_000_000).validate().unwrap_err();
        assert_eq!(key, "results_per_record", "{message}");
    }

    #[test]
    fn a_rate_too_slow_to_represent_never_panics() {
        let source = GenerateSource::new(&GenerateConfig {
            count: None,
            rate: Some(1e-300),
            seed: 0,
            results_per_record: 0,
        });
        assert_eq!(source.due(0), Some(source.started));
        assert!(source.due(1).unwrap() > source.started);
        assert!(source.due(u64::MAX).unwrap() > source.started);
    }

    #[test]
    fn a_record_due_more_than_a_year_after_the_start_keeps_its_time() {
        let source = GenerateSource::new(&GenerateConfig {
            count: None,
            rate: Some(1.0),
            seed: 0,
            results_per_record: 0,
        });
        // At one record a second, record 2 years' worth of seconds is due two years in.
        let two_years = 2 * FAR_OFF.as_secs();
        assert_eq!(
            source.due(two_years),
            Some(source.started + Duration::from_secs(two_years))
        );
    }

    #[test]
    fn a_due_time_that_cannot_be_represented_is_a_year_from_now() {
        let source = GenerateSource::new(&GenerateConfig {
            count: None,
            rate: Some(1e-300),
            seed: 0,
            results_per_record: 0,
        });
        let before = Instant::now();
        let due = source.due(1).unwrap();
        assert!(
            due >= before + FAR_OFF,
            "{due:?} is before a year from {before:?}"
        );
        assert!(due <= Instant::now() + FAR_OFF);
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
