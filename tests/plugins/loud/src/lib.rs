//! A hostile test plugin: for every record it logs a 1 MiB message and adds to a counter whose
//! name is 1 MiB long, so tests can prove that the host bounds both and stays small. Records pass
//! through unchanged.

use weir_plugin::log::{Level, counter_add, log};
use weir_plugin::{Config, Error, Plugin, Record};

/// Bytes of each message and of each oversized counter name.
const LOUD_BYTES: usize = 1 << 20;

/// Shouts on every record.
pub struct Loud {
    noise: String,
}

impl Plugin for Loud {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Loud {
            noise: "x".repeat(LOUD_BYTES),
        })
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        log(Level::Warn, &self.noise);
        counter_add(&self.noise, 1);
        counter_add("records", 1);
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Loud);
