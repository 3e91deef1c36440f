//! Consumer lag per partition, read from librdkafka's periodic statistics (delivered to the
//! consumer's context), so that measuring it costs no request to the broker and never blocks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::observe::PartitionLag;

/// How often librdkafka emits statistics, in milliseconds: how fresh the lag is.
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// The lag from the latest statistics.
#[derive(Debug, Clone, Default)]
pub struct ConsumerLag {
    latest: Arc<Mutex<Option<Vec<PartitionLag>>>>,
    /// The group starts at the earliest offset where it committed nothing, so everything
    /// retained counts as lag until the first commit.
    from_earliest: bool,
}

impl ConsumerLag {
    /// Lag of a consumer that starts from the earliest offset (or not) without a commit.
    pub fn new(from_earliest: bool) -> Self {
        ConsumerLag {
            latest: Arc::default(),
            from_earliest,
        }
    }

    /// The lag per assigned partition from the latest statistics; `None` before the first.
    pub fn latest(&self) -> Option<Vec<PartitionLag>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the lag from one statistics report (librdkafka's JSON).
    pub fn update(&self, statistics: &[u8]) {
        match serde_json::from_slice::<Statistics>(statistics) {
            Ok(statistics) => {
                let lag = statistics.lag(self.from_earliest);
                *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(lag);
            }
            Err(error) => {
                tracing::debug!(%error, "Unreadable librdkafka statistics; lag not updated.")
            }
        }
    }
}

/// The parts of librdkafka's statistics JSON that lag needs.
#[derive(Debug, Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: BTreeMap<String, TopicStatistics>,
}

#[derive(Debug, Deserialize)]
struct TopicStatistics {
    /// Keyed by partition number as text; `-1` is librdkafka's internal unassigned partition.
    #[serde(default)]
    partitions: BTreeMap<String, PartitionStatistics>,
}

#[derive(Debug, Deserialize)]
struct PartitionStatistics {
    partition: i32,
    /// Assigned to this consumer.
    #[serde(default)]
    desired: bool,
    hi_offset: i64,
    lo_offset: i64,
    committed_offset: i64,
    /// `hi_offset - committed_offset`, or -1 when either is unknown.
    consumer_lag: i64,
}

impl Statistics {
    fn lag(&self, from_earliest: bool) -> Vec<PartitionLag> {
        let mut lag: Vec<PartitionLag> = self
            .topics
            .iter()
            .flat_map(|(topic, stats)| {
                stats
                    .partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.desired)
                    .filter_map(move |p| {
                        Some(PartitionLag {
                            topic: topic.clone(),
                            partition: p.partition,
                            lag: p.lag(from_earliest)?,
                        })
                    })
            })
            .collect();
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        lag
    }
}

impl PartitionStatistics {
    fn lag(&self, from_earliest: bool) -> Option<i64> {
        if self.hi_offset < 0 {
            return None;
        }
        if self.consumer_lag >= 0 {
            return Some(self.consumer_lag);
        }
        (self.committed_offset < 0 && from_earliest && self.lo_offset >= 0)
            .then(|| self.hi_offset - self.lo_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics shaped as librdkafka 2.x emits them, trimmed to one topic.
    fn statistics(partition_zero: &str) -> String {
        format!(
            r#"{{"name":"rdkafka#consumer-1","type":"consumer","topics":{{"users":{{"topic":"users","partitions":{{
                "0":{partition_zero},
                "1":{{"partition":1,"desired":false,"hi_offset":50,"lo_offset":0,"committed_offset":-1001,"consumer_lag":-1}},
                "-1":{{"partition":-1,"desired":false,"hi_offset":-1,"lo_offset":-1,"committed_offset":-1001,"consumer_lag":-1}}
            }}}}}}}}"#
        )
    }

    #[test]
    fn lag_is_counted_from_the_committed_offset_of_assigned_partitions() {
        let context = ConsumerLag::new(true);
        assert_eq!(context.latest(), None);
        context.update(
            statistics(r#"{"partition":0,"desired":true,"hi_offset":120,"lo_offset":0,"committed_offset":100,"consumer_lag":20}"#)
                .as_bytes(),
        );
        assert_eq!(
            context.latest(),
            Some(vec![PartitionLag {
                topic: "users".into(),
                partition: 0,
                lag: 20
            }])
        );
    }

    #[test]
    fn before_the_first_commit_everything_retained_is_lag_when_starting_from_earliest() {
        let uncommitted = r#"{"partition":0,"desired":true,"hi_offset":120,"lo_offset":20,"committed_offset":-1001,"consumer_lag":-1}"#;
        let earliest = ConsumerLag::new(true);
        earliest.update(statistics(uncommitted).as_bytes());
        assert_eq!(earliest.latest().unwrap()[0].lag, 100);
        let latest = ConsumerLag::new(false);
        latest.update(statistics(uncommitted).as_bytes());
        assert_eq!(latest.latest(), Some(Vec::new()));
    }

    #[test]
    fn unreadable_statistics_keep_the_previous_lag() {
        let context = ConsumerLag::new(true);
        context.update(b"not json");
        assert_eq!(context.latest(), None);
    }
}
