//! The glue between the generated `Guest` trait and a [`Plugin`]: it keeps the instance's plugin
//! value between calls, reads each encoded batch into records and writes their results back
//! ([`crate::batch`]).

use std::any::Any;
use std::cell::RefCell;

use crate::batch::{self, FailureKind, RecordRef};
use crate::{Config, Error, ErrorKind, Plugin, Record, arena};

thread_local! {
    // A component instance is single-threaded, so a thread-local holds the one plugin value.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Parses the config and builds the plugin, replacing any earlier one.
pub fn init<P: Plugin>(config: &str) -> Result<(), String> {
    arena::before_init();
    // std's stdout buffer is allocated on first use and lives for good: make that use happen
    // here, outside any per-call arena, in case the plugin prints while transforming.
    let _ = std::io::stdout();
    let config = Config::parse(config).map_err(|e| e.to_string())?;
    let plugin = P::init(&config).map_err(|e| e.to_string())?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

/// Transforms an encoded batch into encoded results, one outcome per input in order.
pub fn transform<P: Plugin>(batch: &[u8]) -> Vec<u8> {
    arena::before_transform(P::ARENA);
    let results = transform_batch::<P>(batch);
    arena::after_transform(P::ARENA);
    results
}

fn transform_batch<P: Plugin>(batch: &[u8]) -> Vec<u8> {
    let mut reader = batch::Reader::new(batch);
    // Results are seldom larger than their inputs: one reservation usually holds them all.
    let mut out = Vec::with_capacity(batch.len());
    let count = match reader.count() {
        // More records than the bytes could hold: no count worth answering, and the host
        // reports the empty results as a broken contract.
        Ok(count) if reader.records_capacity(count) == count as usize => count,
        _ => return out,
    };
    written(batch::put_count(&mut out, count as usize));
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        let plugin = slot.as_ref().and_then(|p| p.downcast_ref::<P>());
        // Once a record cannot be read, where the next one starts is unknown: every later
        // record fails with the same reason rather than being read from the wrong place.
        let mut unreadable: Option<String> = None;
        for _ in 0..count {
            let record = match &unreadable {
                Some(reason) => Err(reason.clone()),
                None => reader.record().map_err(|error| {
                    let reason = format!("the host sent a batch the SDK cannot read: {error}");
                    unreadable = Some(reason.clone());
                    reason
                }),
            };
            let outcome = match (plugin, record) {
                (Some(plugin), Ok(record)) => plugin.transform(owned(record)),
                (None, _) => Err(Error::failure("transform called before init")),
                (_, Err(reason)) => Err(Error::failure(reason)),
            };
            put_outcome(&mut out, outcome);
        }
    });
    out
}

/// Appends one input's outcome to the results.
fn put_outcome(out: &mut Vec<u8>, outcome: Result<Vec<Record>, Error>) {
    let written = match outcome {
        Ok(outputs) => batch::put_outputs(out, outputs.len()).and_then(|()| {
            outputs.iter().try_for_each(|record| {
                let headers = record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice()));
                batch::put_record(
                    out,
                    record.key.as_deref(),
                    &record.value,
                    headers,
                    record.timestamp,
                )
            })
        }),
        Err(error) => {
            let kind = match error.kind() {
                ErrorKind::BadRecord => FailureKind::BadRecord,
                ErrorKind::Config | ErrorKind::Failure => FailureKind::PluginFailure,
            };
            batch::put_failure(out, kind, error.message())
        }
    };
    self::written(written);
}

/// A write that cannot fail in a plugin: on wasm32 no length exceeds the format's `u32`. Were a
/// native build to write a field over 4 GiB, the panic would fail the call, as a trap does.
fn written(result: Result<(), batch::TooLong>) {
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// A record read from the batch, copied into the plugin's own record type.
fn owned(record: RecordRef<'_>) -> Record {
    Record {
        key: record.key.map(<[u8]>::to_vec),
        value: record.value.to_vec(),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect(),
        timestamp: record.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    /// Returns each record as it came.
    struct Echo;

    impl Plugin for Echo {
        fn init(_: &Config) -> Result<Self, Error> {
            Ok(Echo)
        }

        fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
            Ok(vec![record])
        }
    }

    /// A record's bytes: `flags`, then the value, and no headers.
    fn record(flags: u8, value: &[u8]) -> Vec<u8> {
        let mut bytes = vec![flags];
        bytes.extend((value.len() as u32).to_le_bytes());
        bytes.extend(value);
        bytes.extend(0u32.to_le_bytes());
        bytes
    }

    #[test]
    fn nothing_after_an_unreadable_record_is_read_from_the_wrong_place() {
        init::<Echo>("").unwrap();
        // Two records, the first with a flag this SDK does not know: where the second starts
        // cannot be told, though bytes after the flag would read as a record.
        let mut batch = 2u32.to_le_bytes().to_vec();
        batch.push(0x80);
        batch.extend(record(0, b"{}"));
        batch.extend(record(0, b"x"));
        let results = transform::<Echo>(&batch);
        let mut reader = batch::Reader::new(&results);
        assert_eq!(reader.count().unwrap(), 2);
        for _ in 0..2 {
            assert!(
                matches!(reader.outcome().unwrap(), batch::Outcome::Failed(..)),
                "every record fails"
            );
        }
    }

    #[test]
    fn a_count_the_bytes_cannot_hold_is_not_answered() {
        init::<Echo>("").unwrap();
        let mut batch = 1_000_000u32.to_le_bytes().to_vec();
        batch.extend(record(0, b"{}"));
        assert!(transform::<Echo>(&batch).is_empty());
        // A count the bytes hold is answered.
        let mut batch = 1u32.to_le_bytes().to_vec();
        batch.extend(record(0, b"{}"));
        let results = transform::<Echo>(&batch);
        let mut reader = batch::Reader::new(&results);
        assert_eq!(reader.count().unwrap(), 1);
    }
}
