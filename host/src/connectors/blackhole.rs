//! The `blackhole` sink: acknowledges and discards, for measuring a source and its plugins
//! without a store's cost (Vector's sink of the same name).

use async_trait::async_trait;
use serde::Deserialize;

use super::{ConnectorError, Rejected, Sink, SinkSpec};
use crate::record::Record;

/// Options of the `blackhole` sink: none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {}

#[async_trait]
impl SinkSpec for BlackholeSinkConfig {
    async fn build(&self, _dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(BlackholeSink))
    }

    fn describe(&self) -> String {
        "blackhole".into()
    }

    /// It would drop dead letters silently.
    fn can_hold_dead_letters(&self) -> bool {
        false
    }
}

/// Discards records.
pub struct BlackholeSink;

#[async_trait]
impl Sink for BlackholeSink {
    async fn write(&mut self, _records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        Ok(Vec::new())
    }

    fn fork(&self) -> Option<Box<dyn Sink>> {
        Some(Box::new(BlackholeSink))
    }
}
