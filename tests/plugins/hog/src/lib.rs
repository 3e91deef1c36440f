//! A hostile test plugin: allocates without bound on any record whose value contains `hog`, so
//! tests can prove that the host's memory cap stops it, and returns N empty records for a record
//! whose value is `flood N`, so tests can prove the host bounds what many outputs cost it. Other
//! records pass through.

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
        if let Some(count) = std::str::from_utf8(&record.value)
            .ok()
            .and_then(|value| value.strip_prefix("flood "))
            .and_then(|count| count.parse::<usize>().ok())
        {
            // Reserved at once, so the plugin's own memory holds exactly the outputs.
            let mut outputs = Vec::with_capacity(count);
            outputs.resize_with(count, || Record::new(""));
            return Ok(outputs);
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

    #[test]
    fn a_flood_returns_as_many_empty_records_as_asked() {
        let outputs = Hog.transform(Record::new("flood 3")).unwrap();
        assert_eq!(outputs, vec![Record::new(""); 3]);
    }
}
