//! A misbehaving test plugin: panics on any record whose value contains `panic`; fails any
//! containing `fail` as a plugin failure, after logging and counting it through the host (so the
//! tests see the host interface end to end); writes about 1 KiB to stderr for any containing
//! `chatter` and passes it through (so the tests see that stderr never fills up); passes others
//! through.

use weir_plugin::{Config, Error, Plugin, Record};

/// Panics on demand.
pub struct Panicker;

impl Plugin for Panicker {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Panicker)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        if record.value.windows(5).any(|w| w == b"panic") {
            panic!("fault-panic was told to panic");
        }
        if record.value.windows(4).any(|w| w == b"fail") {
            weir_plugin::log::log(
                weir_plugin::log::Level::Warn,
                "fault-panic fails a record on request",
            );
            weir_plugin::log::counter_add("failed_on_request", 1);
            return Err(Error::failure("fault-panic was told to fail"));
        }
        if record.value.windows(7).any(|w| w == b"chatter") {
            // Many lines rather than one: the way a plugin that logs per record writes.
            for line in 0..16 {
                eprintln!(
                    "fault-panic chatters on request, line {line:2}: {:-<30}",
                    ""
                );
            }
        }
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Panicker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_pass_through() {
        let record = Record::new("calm");
        assert_eq!(Panicker.transform(record.clone()).unwrap(), vec![record]);
    }
}
