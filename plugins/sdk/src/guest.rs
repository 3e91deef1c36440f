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
    let Ok(count) = reader.count() else {
        // No count to answer with: the host reports the empty results as a broken contract.
        return out;
    };
    written(batch::put_count(&mut out, count as usize));
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        let plugin = slot.as_ref().and_then(|p| p.downcast_ref::<P>());
        for _ in 0..count {
            let outcome = match (plugin, reader.record()) {
                (Some(plugin), Ok(record)) => plugin.transform(owned(record)),
                (None, _) => Err(Error::failure("transform called before init")),
                (_, Err(error)) => Err(Error::failure(format!(
                    "the host sent a batch the SDK cannot read: {error}"
                ))),
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
