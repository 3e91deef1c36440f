//! A test plugin built against `weir:plugin@0.1.0`'s `transformer` world with wit-bindgen alone,
//! as plugins were before the batch world: the host must still run it. It passes each record
//! through with a `contract` header added, fails a record whose value is `bad` as a bad record,
//! returns N empty records for a record whose value is `flood N` (so tests can prove the host
//! bounds what many outputs cost it in this world too), and one record of N MiB for `bulk N` (so
//! tests can prove a plugin given the memory may return that much).

mod bindings {
    wit_bindgen::generate!({
        world: "transformer",
        path: "wit",
    });
}

use bindings::weir::plugin::types::{Error, ErrorKind, Header, Record};

/// Passes records through, marked.
pub struct Contract010;

impl bindings::Guest for Contract010 {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn transform(batch: Vec<Record>) -> Vec<Result<Vec<Record>, Error>> {
        batch
            .into_iter()
            .map(|mut record| {
                if let Some(count) = std::str::from_utf8(&record.value)
                    .ok()
                    .and_then(|value| value.strip_prefix("flood "))
                    .and_then(|count| count.parse::<usize>().ok())
                {
                    let empty = || Record {
                        key: None,
                        value: Vec::new(),
                        headers: Vec::new(),
                        timestamp: None,
                    };
                    return Ok(std::iter::repeat_with(empty).take(count).collect());
                }
                if let Some(mib) = std::str::from_utf8(&record.value)
                    .ok()
                    .and_then(|value| value.strip_prefix("bulk "))
                    .and_then(|mib| mib.parse::<usize>().ok())
                {
                    return Ok(vec![Record {
                        key: None,
                        value: vec![b'x'; mib << 20],
                        headers: Vec::new(),
                        timestamp: None,
                    }]);
                }
                if record.value == b"bad" {
                    return Err(Error {
                        kind: ErrorKind::BadRecord,
                        message: "the value is `bad`".into(),
                    });
                }
                record.headers.push(Header {
                    key: "contract".into(),
                    value: b"0.1.0".to_vec(),
                });
                Ok(vec![record])
            })
            .collect()
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Contract010 with_types_in bindings);
