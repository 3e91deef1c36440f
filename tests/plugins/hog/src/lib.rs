//! A hostile test plugin: allocates without bound on any record whose value contains `hog`, so
//! tests can prove that the host's memory cap stops it. Other records pass through.

use weir_plugin::{Config, Error, Plugin, Record};

/// Hogs memory on demand.
pub struct Hog;

impl Plugin for Hog {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Hog)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        if record.value.windows(3).any(|w| w == b"hog") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![0xAB; 1 << 20]));
                std::hint::black_box(&hoard);
            }
        }
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Hog);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_pass_through() {
        let record = Record::new("modest");
        assert_eq!(Hog.transform(record.clone()).unwrap(), vec![record]);
    }
}
