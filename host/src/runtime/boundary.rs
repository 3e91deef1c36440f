//! One call across the plugin boundary, in the shape of the world the plugin implements: host
//! records lowered as the contract's record type (`transformer`), or written into one buffer
//! in the batch encoding (`batch-transformer`), and the outputs read back as host records.
//! Deadlines, traps and replays are the caller's ([`super::instance`]).

use bytes::Bytes;
use wasmtime::Store;
use weir_plugin::batch::{self, FailureKind, Outcome, RecordRef};

use super::bindings::Transformer;
use super::bindings::batch::BatchTransformer;
use super::bindings::weir::plugin::types as wit;
use super::state::InstanceState;
use crate::record::{Header, HeaderName, Outputs, Record, RecordError, RecordErrorKind};

/// One result per input record, in order.
pub(super) type RecordResults = Vec<Result<Outputs, RecordError>>;

/// What a call returned: the results, or how the plugin broke the contract (results the host
/// cannot read, or not one per input); `Err` is wasmtime's, a trap or a timeout.
pub(super) type Called = wasmtime::Result<Result<RecordResults, String>>;

/// The batch encoding's buffer is kept between calls up to this capacity, so that a call does not
/// grow it again from nothing; a larger one (a batch of huge records) is released after its call.
const KEEP_ENCODED: usize = 4 << 20;

/// The live bindings of an instance, of the world its component implements.
pub(super) enum WorldBindings {
    /// `transformer`.
    Records(Transformer),
    /// `batch-transformer`, with the buffer each batch is encoded into.
    Batch(BatchTransformer, Vec<u8>),
}

impl WorldBindings {
    /// Calls `init` with the plugin's config.
    pub(super) fn init(
        &self,
        store: &mut Store<InstanceState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            WorldBindings::Records(bindings) => bindings.call_init(store, config),
            WorldBindings::Batch(bindings, _) => bindings.call_init(store, config),
        }
    }

    /// Calls `transform` (or `transform-batch`) with `batch`.
    pub(super) fn call(&mut self, store: &mut Store<InstanceState>, batch: &[Record]) -> Called {
        match self {
            WorldBindings::Records(bindings) => call_records(bindings, store, batch),
            WorldBindings::Batch(bindings, encoded) => {
                let called = call_batch(bindings, store, encoded, batch);
                if encoded.capacity() > KEEP_ENCODED {
                    *encoded = Vec::new();
                }
                called
            }
        }
    }
}

/// A `transformer` call: the contract's record type is made here, borrowing the host's records,
/// so lowering copies each byte into the guest's memory straight from them. Only the header lists
/// are rebuilt, as borrowed pairs, all the batch's in one vector.
fn call_records(
    bindings: &Transformer,
    store: &mut Store<InstanceState>,
    batch: &[Record],
) -> Called {
    let headers: Vec<wit::HeaderParam> = batch.iter().flat_map(guest_headers).collect();
    let mut unclaimed = headers.as_slice();
    let params: Vec<wit::RecordParam> = batch
        .iter()
        .map(|record| {
            let (own, rest) = unclaimed.split_at(record.headers.len());
            unclaimed = rest;
            to_guest(record, own)
        })
        .collect();
    let results = bindings.call_transform(store, &params)?;
    if results.len() != batch.len() {
        return Ok(Err(format!(
            "{} results for {} records",
            results.len(),
            batch.len()
        )));
    }
    Ok(Ok(results.into_iter().map(into_record_result).collect()))
}

/// A `batch-transformer` call: the batch is written into `encoded`, which the host copies into
/// the guest's memory in one piece, and the results come back as one buffer.
fn call_batch(
    bindings: &BatchTransformer,
    store: &mut Store<InstanceState>,
    encoded: &mut Vec<u8>,
    batch: &[Record],
) -> Called {
    encoded.clear();
    // Over 4 GiB in one field: no plugin could hold it. Failing the call like a trap replays
    // the batch record by record, so only that record fails.
    encode_batch(encoded, batch).map_err(wasmtime::Error::new)?;
    let results = Bytes::from(bindings.call_transform_batch(store, encoded)?);
    Ok(decode_results(&results, batch.len()))
}

/// `batch` in the batch encoding.
fn encode_batch(out: &mut Vec<u8>, batch: &[Record]) -> Result<(), batch::TooLong> {
    batch::put_count(out, batch.len())?;
    for record in batch {
        let headers = record
            .headers
            .iter()
            .map(|header| (header.key.as_str(), &header.value[..]));
        batch::put_record(
            out,
            record.key.as_deref(),
            &record.value,
            headers,
            record.timestamp,
        )?;
    }
    Ok(())
}

/// The plugin's encoded results as host records: one result per input, or how they break the
/// contract. The bytes are the guest's, so every length in them is checked before it is used.
/// Each output's value and header values are slices of `lifted` (shared, not copied): the
/// buffer is freed when the last of them is.
fn decode_results(lifted: &Bytes, inputs: usize) -> Result<RecordResults, String> {
    let unreadable = |error: batch::DecodeError| format!("unreadable results: {error}");
    let mut reader = batch::Reader::new(lifted);
    let count = reader.count().map_err(unreadable)?;
    if count as usize != inputs {
        return Err(format!("{count} results for {inputs} records"));
    }
    let mut results = Vec::with_capacity(inputs);
    for _ in 0..count {
        results.push(match reader.outcome().map_err(unreadable)? {
            Outcome::Outputs(outputs) => {
                let mut records = Outputs::with_capacity(reader.records_capacity(outputs));
                for _ in 0..outputs {
                    records.push(from_encoded(reader.record().map_err(unreadable)?, lifted));
                }
                Ok(records)
            }
            Outcome::Failed(kind, message) => Err(RecordError {
                kind: match kind {
                    FailureKind::BadRecord => RecordErrorKind::BadRecord,
                    FailureKind::PluginFailure => RecordErrorKind::PluginFailure,
                },
                message: message.to_owned(),
            }),
        });
    }
    reader.finish().map_err(unreadable)?;
    Ok(results)
}

/// An encoded output as a host record, its value and header values sliced from `lifted`, the
/// buffer `record` was read from.
fn from_encoded(record: RecordRef<'_>, lifted: &Bytes) -> Record {
    Record {
        key: record.key.map(|key| lifted.slice_ref(key)),
        value: lifted.slice_ref(record.value),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| Header {
                key: HeaderName::from(name.to_owned()),
                value: lifted.slice_ref(value),
            })
            .collect(),
        timestamp: record.timestamp,
    }
}

fn into_record_result(
    result: Result<Vec<wit::RecordResult>, wit::Error>,
) -> Result<Outputs, RecordError> {
    match result {
        Ok(outputs) => Ok(outputs.into_iter().map(from_guest).collect()),
        Err(error) => Err(RecordError {
            kind: match error.kind {
                wit::ErrorKind::BadRecord => RecordErrorKind::BadRecord,
                wit::ErrorKind::PluginFailure => RecordErrorKind::PluginFailure,
            },
            message: error.message,
        }),
    }
}

/// A host record's headers as the contract's, borrowed.
fn guest_headers(record: &Record) -> impl Iterator<Item = wit::HeaderParam<'_>> {
    record.headers.iter().map(|header| wit::HeaderParam {
        key: &header.key,
        value: &header.value,
    })
}

/// A host record as the contract's record, for the guest, borrowed.
fn to_guest<'a>(record: &'a Record, headers: &'a [wit::HeaderParam<'a>]) -> wit::RecordParam<'a> {
    wit::RecordParam {
        key: record.key.as_deref(),
        value: &record.value,
        headers,
        timestamp: record.timestamp,
    }
}

/// A guest's output as a host record; moves the buffers, copies nothing.
fn from_guest(record: wit::RecordResult) -> Record {
    Record {
        key: record.key.map(Bytes::from),
        value: Bytes::from(record.value),
        headers: record
            .headers
            .into_iter()
            .map(|header| Header {
                key: header.key.into(),
                value: header.value.into(),
            })
            .collect(),
        timestamp: record.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, headers: &[(&'static str, &'static str)]) -> Record {
        Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    key: HeaderName::from(*name),
                    value: Bytes::from_static(value.as_bytes()),
                })
                .collect(),
            timestamp: Some(42),
        }
    }

    /// What a plugin that passes each record through writes back for `batch`.
    fn echoed(batch: &[Record]) -> Bytes {
        let mut encoded = Vec::new();
        encode_batch(&mut encoded, batch).unwrap();
        let mut reader = batch::Reader::new(&encoded);
        let count = reader.count().unwrap();
        let mut out = Vec::new();
        batch::put_count(&mut out, count as usize).unwrap();
        for _ in 0..count {
            let input = reader.record().unwrap();
            batch::put_outputs(&mut out, 1).unwrap();
            batch::put_record(
                &mut out,
                input.key,
                input.value,
                input.headers.iter(),
                input.timestamp,
            )
            .unwrap();
        }
        Bytes::from(out)
    }

    #[test]
    fn records_pass_through_the_encoding_unchanged() {
        let batch = vec![
            record("{}", &[]),
            record("{\"a\":1}", &[("weir.version.x", "1"), ("h", "")]),
        ];
        let results = decode_results(&echoed(&batch), batch.len()).unwrap();
        let outputs: Vec<Record> = results.into_iter().flat_map(Result::unwrap).collect();
        assert_eq!(outputs, batch);
    }

    #[test]
    fn outputs_share_the_lifted_buffer_instead_of_copying_it() {
        let batch = vec![record("{\"a\":1}", &[("h", "v")]), record("{\"b\":2}", &[])];
        let lifted = echoed(&batch);
        let within = |bytes: &[u8]| lifted.as_ptr_range().contains(&bytes.as_ptr());
        let results = decode_results(&lifted, batch.len()).unwrap();
        for output in results.into_iter().flat_map(Result::unwrap) {
            assert!(within(&output.value), "value copied: {output:?}");
            for header in &output.headers {
                assert!(within(&header.value), "header copied: {header:?}");
            }
        }
    }

    #[test]
    fn results_that_break_the_contract_say_how() {
        let batch = vec![record("{}", &[])];
        let results = echoed(&batch);
        assert_eq!(
            decode_results(&results, 2).unwrap_err(),
            "1 results for 2 records"
        );
        let error = decode_results(&results.slice(..results.len() - 1), 1).unwrap_err();
        assert!(
            error.starts_with("unreadable results: the buffer ends"),
            "{error}"
        );
    }

    #[test]
    fn failures_keep_their_kind_and_message() {
        let mut out = Vec::new();
        batch::put_count(&mut out, 2).unwrap();
        batch::put_failure(&mut out, FailureKind::BadRecord, "no `name`").unwrap();
        batch::put_failure(&mut out, FailureKind::PluginFailure, "bug").unwrap();
        let results = decode_results(&Bytes::from(out), 2).unwrap();
        let errors: Vec<_> = results.into_iter().map(Result::unwrap_err).collect();
        assert_eq!(
            errors,
            vec![
                RecordError {
                    kind: RecordErrorKind::BadRecord,
                    message: "no `name`".into()
                },
                RecordError {
                    kind: RecordErrorKind::PluginFailure,
                    message: "bug".into()
                },
            ]
        );
    }
}
