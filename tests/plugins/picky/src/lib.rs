//! A buggy test plugin for `weir replay`: it refuses, as a bad record, any record whose value
//! contains `legacy` (a format it was meant to accept), and passes the rest through. The replay
//! tests run it first, then deploy a fixed version (any plugin that passes those records through)
//! and replay its dead letters.

use weir_plugin::{Config, Error, Plugin, Record};

/// Refuses `legacy` records.
pub struct Picky;

impl Plugin for Picky {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Picky)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        if record.value.windows(6).any(|w| w == b"legacy") {
            return Err(Error::bad_record(
                "fault-picky does not understand the legacy format",
            ));
        }
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Picky);
