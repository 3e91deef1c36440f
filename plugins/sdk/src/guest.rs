//! The glue between the generated `Guest` trait and a [`Plugin`]: it keeps the instance's plugin
//! value between calls and converts records and errors across the boundary.

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::weir::plugin::types as wit;
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

/// Transforms a batch, one result per input in order.
pub fn transform<P: Plugin>(batch: Vec<wit::Record>) -> Vec<Result<Vec<wit::Record>, wit::Error>> {
    arena::before_transform(P::ARENA);
    let results = transform_batch::<P>(batch);
    arena::after_transform(P::ARENA);
    results
}

fn transform_batch<P: Plugin>(
    batch: Vec<wit::Record>,
) -> Vec<Result<Vec<wit::Record>, wit::Error>> {
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        let Some(plugin) = slot.as_ref().and_then(|p| p.downcast_ref::<P>()) else {
            let error = Error::failure("transform called before init");
            return batch.iter().map(|_| Err(to_wit_error(&error))).collect();
        };
        batch
            .into_iter()
            .map(|record| {
                plugin
                    .transform(Record::from(record))
                    .map(|outputs| outputs.into_iter().map(wit::Record::from).collect())
                    .map_err(|error| to_wit_error(&error))
            })
            .collect()
    })
}

fn to_wit_error(error: &Error) -> wit::Error {
    wit::Error {
        kind: match error.kind() {
            ErrorKind::BadRecord => wit::ErrorKind::BadRecord,
            ErrorKind::Config | ErrorKind::Failure => wit::ErrorKind::PluginFailure,
        },
        message: error.message().to_owned(),
    }
}

impl From<wit::Record> for Record {
    fn from(record: wit::Record) -> Self {
        Record {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|h| (h.key, h.value))
                .collect(),
            timestamp: record.timestamp,
        }
    }
}

impl From<Record> for wit::Record {
    fn from(record: Record) -> Self {
        wit::Record {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| wit::Header { key, value })
                .collect(),
            timestamp: record.timestamp,
        }
    }
}
