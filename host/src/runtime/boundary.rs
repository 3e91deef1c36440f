//! One call across the plugin boundary, in the shape of the world the plugin implements: host
//! records lowered as the contract's record type (`transformer`), or written into one buffer
//! in the batch encoding (`batch-transformer`), and the outputs read back as host records.
//! The host memory the outputs take beyond their bytes is bounded here ([`Refused::OverBudget`]);
//! deadlines, traps and replays are the caller's ([`super::instance`]).

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

/// What a call returned: the results, or why the host refused them; `Err` is wasmtime's, a trap
/// or a timeout.
pub(super) type Called = wasmtime::Result<Result<RecordResults, Refused>>;

/// Why the host refused a call's results.
#[derive(Debug, PartialEq)]
pub(super) enum Refused {
    /// The plugin broke the contract: results the host cannot read, or not one per input.
    Contract(String),
    /// The outputs would take more host memory than `budget` bytes beyond their own bytes (their
    /// bookkeeping: a [`Record`] each, a [`Header`] and its name per header). Many tiny outputs
    /// cost the host many times what they cost the plugin; this keeps a call's to the budget.
    OverBudget { budget: usize },
}

/// Host memory one output takes beyond its bytes, which are the lifted buffer's (shared) or
/// already counted in the plugin's memory.
fn output_overhead<'n>(header_names: impl Iterator<Item = &'n str>) -> usize {
    header_names.fold(std::mem::size_of::<Record>(), |held, name| {
        held + std::mem::size_of::<Header>() + name.len()
    })
}

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

    /// Calls `transform` (or `transform-batch`) with `batch`; the outputs may take `budget`
    /// bytes of host memory beyond their own bytes.
    pub(super) fn call(
        &mut self,
        store: &mut Store<InstanceState>,
        batch: &[Record],
        budget: usize,
    ) -> Called {
        match self {
            WorldBindings::Records(bindings) => call_records(bindings, store, batch, budget),
            WorldBindings::Batch(bindings, encoded) => {
                let called = call_batch(bindings, store, encoded, batch, budget);
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
    budget: usize,
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
        return Ok(Err(Refused::Contract(format!(
            "{} results for {} records",
            results.len(),
            batch.len()
        ))));
    }
    // wasmtime has lifted the outputs (no more than the guest's memory could hold); they are
    // measured before the host's records are made of them.
    let held: usize = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .flatten()
        .map(|output| output_overhead(output.headers.iter().map(|header| header.key.as_str())))
        .sum();
    if held > budget {
        return Ok(Err(Refused::OverBudget { budget }));
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
    budget: usize,
) -> Called {
    encoded.clear();
    // Over 4 GiB in one field: no plugin could hold it. Failing the call like a trap replays
    // the batch record by record, so only that record fails.
    encode_batch(encoded, batch).map_err(wasmtime::Error::new)?;
    let results = Bytes::from(bindings.call_transform_batch(store, encoded)?);
    Ok(decode_results(&results, batch.len(), budget))
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

/// The plugin's encoded results as host records: one result per input, or why they are refused.
/// The bytes are the guest's, so every length in them is checked before it is used, and each
/// output is counted against `budget` before it is made. Each output's value and header values
/// are slices of `lifted` (shared, not copied): the buffer is freed when the last of them is.
fn decode_results(lifted: &Bytes, inputs: usize, budget: usize) -> Result<RecordResults, Refused> {
    let unreadable =
        |error: batch::DecodeError| Refused::Contract(format!("unreadable results: {error}"));
    let mut reader = batch::Reader::new(lifted);
    let count = reader.count().map_err(unreadable)?;
    if count as usize != inputs {
        return Err(Refused::Contract(format!(
            "{count} results for {inputs} records"
        )));
    }
    let mut results = Vec::with_capacity(inputs);
    let mut held = 0usize;
    for _ in 0..count {
        results.push(match reader.outcome().map_err(unreadable)? {
            Outcome::Outputs(outputs) => {
                let affordable = budget.saturating_sub(held) / std::mem::size_of::<Record>() + 1;
                let mut records =
                    Outputs::with_capacity(reader.records_capacity(outputs).min(affordable));
                for _ in 0..outputs {
                    let record = reader.record().map_err(unreadable)?;
                    held += output_overhead(record.headers.iter().map(|(name, _)| name));
                    if held > budget {
                        return Err(Refused::OverBudget { budget });
                    }
                    records.push(from_encoded(record, lifted));
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

    /// A budget no test's outputs come near.
    const AMPLE: usize = 64 << 20;

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
        let results = decode_results(&echoed(&batch), batch.len(), AMPLE).unwrap();
        let outputs: Vec<Record> = results.into_iter().flat_map(Result::unwrap).collect();
        assert_eq!(outputs, batch);
    }

    #[test]
    fn outputs_share_the_lifted_buffer_instead_of_copying_it() {
        let batch = vec![record("{\"a\":1}", &[("h", "v")]), record("{\"b\":2}", &[])];
        let lifted = echoed(&batch);
        let within = |bytes: &[u8]| lifted.as_ptr_range().contains(&bytes.as_ptr());
        let results = decode_results(&lifted, batch.len(), AMPLE).unwrap();
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
            decode_results(&results, 2, AMPLE).unwrap_err(),
            Refused::Contract("1 results for 2 records".into())
        );
        let error = decode_results(&results.slice(..results.len() - 1), 1, AMPLE).unwrap_err();
        assert!(
            matches!(&error, Refused::Contract(message)
                if message.starts_with("unreadable results: the buffer ends")),
            "{error:?}"
        );
    }

    #[test]
    fn failures_keep_their_kind_and_message() {
        let mut out = Vec::new();
        batch::put_count(&mut out, 2).unwrap();
        batch::put_failure(&mut out, FailureKind::BadRecord, "no `name`").unwrap();
        batch::put_failure(&mut out, FailureKind::PluginFailure, "bug").unwrap();
        let results = decode_results(&Bytes::from(out), 2, AMPLE).unwrap();
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

    /// Results for one input: `outputs` empty records, each with `headers` headers named `h`.
    fn fanned_out(outputs: usize, headers: usize) -> Bytes {
        let mut out = Vec::new();
        batch::put_count(&mut out, 1).unwrap();
        batch::put_outputs(&mut out, outputs).unwrap();
        for _ in 0..outputs {
            let named = std::iter::repeat_n(("h", &b""[..]), headers);
            batch::put_record(&mut out, None, b"", named, None).unwrap();
        }
        Bytes::from(out)
    }

    #[test]
    fn outputs_are_refused_once_their_bookkeeping_passes_the_budget() {
        let per_record = std::mem::size_of::<Record>();
        let per_header = std::mem::size_of::<Header>() + 1;
        // Exactly at the budget: kept.
        let results = decode_results(&fanned_out(1000, 0), 1, 1000 * per_record).unwrap();
        assert_eq!(results[0].as_ref().unwrap().len(), 1000);
        // One record more, or one header: refused.
        let over = |results: Result<RecordResults, Refused>, budget: usize| matches!(results, Err(Refused::OverBudget { budget: b }) if b == budget);
        assert!(over(
            decode_results(&fanned_out(1001, 0), 1, 1000 * per_record),
            1000 * per_record
        ));
        let budget = 10 * (per_record + 3 * per_header);
        assert!(decode_results(&fanned_out(10, 3), 1, budget).is_ok());
        assert!(over(
            decode_results(&fanned_out(10, 3), 1, budget - 1),
            budget - 1
        ));
        // A million empty outputs (9 MB lifted) are refused before the host makes them: they
        // would take over a hundred MiB.
        let lifted = fanned_out(1_000_000, 0);
        assert!(lifted.len() < 10 << 20);
        assert!(over(decode_results(&lifted, 1, 16 << 20), 16 << 20));
    }
}
