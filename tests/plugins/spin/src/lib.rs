//! A hostile test plugin: loops forever on any record whose value contains `spin`, so tests can
//! prove that the host's deadline interrupts it. Other records pass through.

use weir_plugin::{Config, Error, Plugin, Record};

/// Spins on demand.
pub struct Spinner;

impl Plugin for Spinner {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Spinner)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        if record.value.windows(4).any(|w| w == b"spin") {
            let mut counter = 0u64;
            // black_box keeps the optimiser from proving the loop useless and removing it.
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Spinner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_pass_through() {
        let record = Record::new("calm");
        assert_eq!(Spinner.transform(record.clone()).unwrap(), vec![record]);
    }
}
