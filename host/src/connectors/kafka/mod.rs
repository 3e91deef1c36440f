//! The `kafka` connector: an idempotent producer sink that acknowledges only on delivery reports,
//! and a consumer-group source whose offsets are committed only after downstream
//! acknowledgement.

mod context;
mod lag;
mod progress;
mod sink;
mod source;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

pub use sink::{Compression, KafkaSink, KafkaSinkConfig};
pub use source::{KafkaSource, KafkaSourceConfig, OffsetReset};

/// A client config with the brokers and the user's extra librdkafka properties.
fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, crate::config::Secret>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, value.expose());
    }
    config
}
