//! A hostile test plugin: panics on any record whose value contains `panic`, passes others through.

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
