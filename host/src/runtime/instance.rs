//! A running plugin instance: calls with a per-record deadline and a memory cap, and a fresh
//! instance after any trap, so one bad record never poisons the next and never costs the others
//! their place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, Trap};

use super::boundary::{RecordResults, Refused, WorldBindings};
use super::error::PluginError;
use super::limits::{EPOCH_TICK, PluginLimits};
use super::memory_cap::MemoryCap;
use super::plugin::{LoadedPlugin, WorldPre};
use super::state::InstanceState;
use crate::record::{Outputs, Record, RecordError, RecordErrorKind};

/// Most record data (values, keys and headers) one `transform` call carries. A call's memory
/// is several times its input (the encoded batch, its copy in the guest, the plugin's copy of
/// each record, the outputs, the results on their way back), and at this size it stays in a
/// core's cache: a batch of 1,024 users (about 1 MiB) in one call ran at 0.67 of native in
/// `weir bench plugin`, in calls of up to 128 KiB at 0.70 to 0.72, as a batch of 64 does
/// (docs/performance.md, "Twenty-seventh session").
pub const CALL_BYTES: usize = 128 << 10;

/// One instance of a plugin version, owned by one worker.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    config: String,
    limits: PluginLimits,
    live: Option<Live>,
    fresh_instances: u64,
    /// Set once the plugin proved slow but fine (see [`PluginInstance::split_calls`]).
    max_call_records: Option<usize>,
    /// What the outputs of the batch under way may still take.
    allowance: OutputAllowance,
}

struct Live {
    store: Store<InstanceState>,
    bindings: WorldBindings,
}

/// What one call returned: per-record results, or the trap that ended the instance.
type CallResult = Result<RecordResults, RecordError>;

impl PluginInstance {
    pub(super) fn new(
        plugin: Arc<LoadedPlugin>,
        config: &str,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        let mut instance = PluginInstance {
            plugin,
            config: config.to_owned(),
            limits,
            live: None,
            fresh_instances: 0,
            max_call_records: None,
            allowance: OutputAllowance::default(),
        };
        instance.ensure_live()?;
        Ok(instance)
    }

    /// The plugin version this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// How many instances were created, the first included: one more after every trap.
    pub fn instances_created(&self) -> u64 {
        self.fresh_instances
    }

    /// Transforms a batch: exactly one result per input, in order. A call gets the per-record
    /// deadline for each record it carries, up to the batch deadline (see
    /// [`PluginLimits::call_deadline`]). A trap or timeout discards the instance; the batch is
    /// then replayed record by record, each with one record's deadline, on a fresh instance after
    /// each trap, so that only the record that trapped or spun fails and a good record costs only
    /// its own time.
    ///
    /// A call carries at most [`CALL_BYTES`] of record data (and at most
    /// [`PluginInstance::max_call_records`] records), so a large batch is several calls.
    pub fn transform(&mut self, batch: &[Record]) -> RecordResults {
        self.allowance = OutputAllowance::for_batch(batch, self.limits.memory_bytes);
        let most_records = self.max_call_records.unwrap_or(batch.len()).max(1);
        let mut results = Vec::with_capacity(batch.len());
        let mut rest = batch;
        while !rest.is_empty() {
            let (call, after) = rest.split_at(call_length(rest, most_records, CALL_BYTES));
            results.extend(self.transform_call(call));
            rest = after;
        }
        results
    }

    /// Most records one call carries: unlimited until a batch ran past the batch deadline while
    /// each of its records alone kept its own deadline.
    pub fn max_call_records(&self) -> Option<usize> {
        self.max_call_records
    }

    /// One call for `records`, replayed record by record if it traps or runs out of time.
    fn transform_call(&mut self, records: &[Record]) -> RecordResults {
        let trap = match self.call(records) {
            Ok(results) => return results,
            Err(trap) if records.len() == 1 => return vec![Err(trap)],
            Err(trap) => trap,
        };
        let replayed = Instant::now();
        let results: Vec<_> = records.iter().map(|record| self.call_one(record)).collect();
        let any_timeout = results
            .iter()
            .any(|result| matches!(result, Err(error) if error.kind == RecordErrorKind::Timeout));
        if trap.kind == RecordErrorKind::Timeout && !any_timeout {
            self.split_calls(records.len(), replayed.elapsed());
        }
        results
    }

    /// A call of `records` records ran past the batch deadline although each record alone kept
    /// its deadline, taking `took` in all when replayed: the plugin is slow but fine. Later calls
    /// carry only as many records as fill half the batch deadline at that pace, so its batches
    /// stop timing out and being replayed.
    fn split_calls(&mut self, records: usize, took: Duration) {
        let per_record = (took.as_nanos() / records.max(1) as u128).max(1);
        let budget = self
            .limits
            .batch_deadline
            .max(self.limits.deadline)
            .as_nanos()
            / 2;
        let fit = usize::try_from(budget / per_record).unwrap_or(usize::MAX);
        let limit = fit.min(records / 2).max(1);
        if self
            .max_call_records
            .is_some_and(|current| current <= limit)
        {
            return;
        }
        self.max_call_records = Some(limit);
        tracing::warn!(
            plugin = self.plugin.name(),
            version = self.plugin.version(),
            records,
            per_record_ms = per_record as f64 / 1e6,
            batch_deadline_ms = self.limits.batch_deadline.as_millis() as u64,
            max_call_records = limit,
            "A batch ran past the batch deadline although every record kept its own; the plugin is slow, so each call now carries at most max_call_records records. Raise limits.batch_deadline_ms or lower batch.size to avoid the replay this cost."
        );
    }

    /// One record alone, with one record's deadline.
    fn call_one(&mut self, record: &Record) -> Result<Outputs, RecordError> {
        self.call(std::slice::from_ref(record))?
            .pop()
            .unwrap_or_else(|| {
                Err(RecordError {
                    kind: RecordErrorKind::PluginFailure,
                    message: "plugin returned no result for the record".into(),
                })
            })
    }

    fn call(&mut self, batch: &[Record]) -> CallResult {
        let _running = self.plugin.runtime().guest_running();
        let deadline = self.limits.call_deadline(batch.len());
        let budget = self.limits.memory_bytes;
        let live = match self.ensure_live() {
            Ok(live) => live,
            Err(error) => {
                return Err(RecordError {
                    kind: RecordErrorKind::PluginFailure,
                    message: error.to_string(),
                });
            }
        };
        live.store.set_epoch_deadline(deadline_ticks(deadline));
        live.store.data_mut().start_call(deadline);
        let called = live.bindings.call(&mut live.store, batch, budget);
        match out_of_time(&live.store, called) {
            Ok(Ok(results)) => Ok(self.allowance.take(results)),
            // Not a trap: the instance is sound. A call of several records is replayed record by
            // record, so only a record whose own outputs pass the budget fails.
            Ok(Err(Refused::OverBudget { budget })) => Err(RecordError {
                kind: RecordErrorKind::PluginFailure,
                message: format!(
                    "plugin returned more outputs (or headers) than the host keeps for one call: their bookkeeping would pass {} MiB, the plugin's memory limit (limits.memory_mib). Return fewer records for this input",
                    budget >> 20
                ),
            }),
            Ok(Err(Refused::Contract(broken))) => {
                let message = format!("plugin broke the contract: {broken}");
                Ok(batch
                    .iter()
                    .map(|_| {
                        Err(RecordError {
                            kind: RecordErrorKind::PluginFailure,
                            message: message.clone(),
                        })
                    })
                    .collect())
            }
            Err(error) => {
                let failure = self.describe_trap(&error, batch.len(), deadline);
                // A trapped instance may have broken invariants: never call it again.
                self.live = None;
                Err(failure)
            }
        }
    }

    fn describe_trap(
        &self,
        error: &wasmtime::Error,
        records: usize,
        deadline: Duration,
    ) -> RecordError {
        let stderr = self
            .live
            .as_ref()
            .and_then(|live| live.store.data().trap_context());
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RecordError {
                kind: RecordErrorKind::Timeout,
                message: if records == 1 {
                    format!(
                        "plugin `{}` exceeded its deadline of {} ms on this record (limits.deadline_ms)",
                        self.plugin.name(),
                        deadline.as_millis()
                    )
                } else {
                    format!(
                        "plugin `{}` exceeded its deadline of {} ms for a call of {records} records",
                        self.plugin.name(),
                        deadline.as_millis()
                    )
                },
            },
            _ => {
                let reason = match error.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => format!("{error:#}"),
                };
                let message = match stderr {
                    Some(line) => {
                        format!("plugin `{}` trapped: {reason} ({line})", self.plugin.name())
                    }
                    None => format!("plugin `{}` trapped: {reason}", self.plugin.name()),
                };
                RecordError {
                    kind: RecordErrorKind::Trap,
                    message,
                }
            }
        }
    }

    fn ensure_live(&mut self) -> Result<&mut Live, PluginError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
            self.fresh_instances += 1;
        }
        self.live.as_mut().ok_or_else(|| PluginError::Instantiate {
            name: self.plugin.name().to_owned(),
            reason: "instance vanished".into(),
        })
    }

    /// A new instance, made again while the kernel only refuses for the moment to seal its
    /// memory image (see [`image_seal_refused`]).
    fn instantiate(&self) -> Result<Live, PluginError> {
        let mut attempt = 1;
        loop {
            match self.instantiate_once() {
                Ok(live) => return Ok(live),
                Err((error, true)) if attempt < IMAGE_SEAL_ATTEMPTS => {
                    tracing::warn!(plugin = self.plugin.name(), attempt, %error, "The kernel refused for now to seal the plugin's memory image; instantiating again.");
                    std::thread::sleep(IMAGE_SEAL_PAUSE * attempt);
                    attempt += 1;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// When `error` is the epoch deadline's interrupt, the deadline as a phrase for a message.
    fn deadline_passed(&self, error: &wasmtime::Error) -> Option<String> {
        matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)).then(|| {
            format!(
                "its deadline of {} ms (limits.deadline_ms)",
                self.limits.deadline.as_millis()
            )
        })
    }

    /// One attempt at [`PluginInstance::instantiate`]; the flag says whether another may succeed.
    fn instantiate_once(&self) -> Result<Live, (PluginError, bool)> {
        // Instantiating runs the component's start functions, then `init`: guest code too.
        let _running = self.plugin.runtime().guest_running();
        let name = self.plugin.name().to_owned();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .tables(16)
            // Without the pooling allocator nothing else bounds `table.grow`. A rustc-built
            // plugin's function table holds its indirect-call targets, a few thousand even in a
            // large one: this leaves ample room and caps a growing loop at about a MiB of host
            // memory per table.
            .table_elements(100_000)
            .memories(4)
            // A failed grow traps instead of returning -1, so a memory bomb ends in a clear error.
            .trap_on_grow_failure(true)
            .build();
        let (plugin, version) = self.plugin.identity();
        let state = InstanceState::new(
            MemoryCap::new(limits, self.limits.memory_bytes),
            self.limits.grants,
            plugin,
            version,
            self.plugin.counters().clone(),
        );
        let mut store = Store::new(self.plugin.runtime().engine(), state);
        store.limiter(|state| &mut state.limits);
        // What one call's results may bring into the host when lifted (strings and lists, which
        // can all point at the same guest bytes): the plugin's memory once for their bytes and
        // once for their bookkeeping, beside which `boundary` bounds the records made of them.
        store.set_hostcall_fuel(self.limits.memory_bytes.saturating_mul(2));
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(self.limits.deadline));
        store.data_mut().start_call(self.limits.deadline);
        let instantiated = match self.plugin.pre() {
            WorldPre::Records(pre) => pre.instantiate(&mut store).map(WorldBindings::Records),
            WorldPre::Batch(pre) => pre
                .instantiate(&mut store)
                .map(|bindings| WorldBindings::Batch(bindings, Vec::new())),
        };
        let bindings = instantiated.map_err(|e| {
            let reason = match self.deadline_passed(&e) {
                Some(deadline) => format!("its start functions exceeded {deadline}"),
                None => format!("{e:#}"),
            };
            let error = PluginError::Instantiate {
                name: name.clone(),
                reason,
            };
            (error, image_seal_refused(&e))
        })?;
        store.set_epoch_deadline(deadline_ticks(self.limits.deadline));
        store.data_mut().start_call(self.limits.deadline);
        let initialised = bindings.init(&mut store, &self.config);
        match out_of_time(&store, initialised) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err((PluginError::Init { name, reason }, false)),
            Err(e) => {
                let reason = match self.deadline_passed(&e) {
                    Some(deadline) => format!("init exceeded {deadline}"),
                    None => format!("init trapped: {e:#}"),
                };
                Err((PluginError::Start { name, reason }, false))
            }
        }
    }
}

/// What the outputs of one batch may take of the host's memory, all its calls together: twice
/// the batch's own bytes and twice the plugin's memory limit. One call's outputs are bounded by
/// the plugin's memory, but a plugin that traps on any call of several records makes the host
/// call it once per record, and each of those calls could return that much again.
#[derive(Debug, Default)]
struct OutputAllowance {
    /// Bytes the outputs may take, all the batch's calls together.
    bound: usize,
    /// Bytes the outputs of the batch's calls took so far.
    taken: usize,
}

impl OutputAllowance {
    fn for_batch(batch: &[Record], memory_bytes: usize) -> Self {
        let input: usize = batch.iter().map(record_bytes).sum();
        OutputAllowance {
            bound: input
                .saturating_mul(2)
                .saturating_add(memory_bytes.saturating_mul(2)),
            taken: 0,
        }
    }

    /// A call's results, or, when their outputs would pass the bound, a failure for each of its
    /// records in their place (the outputs are let go).
    fn take(&mut self, results: RecordResults) -> RecordResults {
        let size: usize = results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .flatten()
            .map(|output| record_bytes(output) + std::mem::size_of::<Record>())
            .sum();
        let taken = self.taken.saturating_add(size);
        if taken <= self.bound {
            self.taken = taken;
            return results;
        }
        let message = format!(
            "plugin's outputs for this batch would take more than {} MiB of host memory (twice the batch's bytes plus twice limits.memory_mib); lower batch.size or raise limits.memory_mib",
            self.bound >> 20
        );
        results
            .iter()
            .map(|_| {
                Err(RecordError {
                    kind: RecordErrorKind::PluginFailure,
                    message: message.clone(),
                })
            })
            .collect()
    }
}

/// What a call returned, or the deadline's interrupt when the plugin waited in the host until its
/// deadline for longer (see `waits`): it ran out of time even if it returned before an epoch
/// check could trap it.
fn out_of_time<T>(
    store: &Store<InstanceState>,
    returned: wasmtime::Result<T>,
) -> wasmtime::Result<T> {
    if store.data().ran_out() {
        return Err(wasmtime::Error::new(Trap::Interrupt));
    }
    returned
}

/// Attempts at an instantiation while the kernel refuses to seal the memory image.
const IMAGE_SEAL_ATTEMPTS: u32 = 4;

/// The pause before the next attempt, times the attempts made so far.
const IMAGE_SEAL_PAUSE: Duration = Duration::from_millis(100);

/// Whether instantiating failed only because wasmtime could not seal the memory image it had
/// just written for a linear memory (`F_ADD_SEALS` on a memfd; seen once, instantiating the
/// 18 MiB Python plugin during the test suite). Linux refuses the write seal with EBUSY while
/// anything still holds a reference to one of the image's pages, and waits only about 150 ms
/// for them, which a loaded machine can outlast. wasmtime keeps no such failure, so the next
/// attempt builds the image again.
fn image_seal_refused(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<memfd::Error>(),
            Some(memfd::Error::AddSeals(_))
        )
    })
}

/// `deadline` in epoch ticks.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_millis().max(1);
    // One tick more than the deadline covers the partial tick already under way.
    u64::try_from(deadline.as_millis().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// How many of `records` the next call carries: as many as fit in `most_bytes` of record data,
/// at most `most_records`, and at least one however large it is.
fn call_length(records: &[Record], most_records: usize, most_bytes: usize) -> usize {
    let mut bytes = 0usize;
    let mut length = 0;
    for record in records.iter().take(most_records) {
        bytes = bytes.saturating_add(record_bytes(record));
        if length > 0 && bytes > most_bytes {
            break;
        }
        length += 1;
    }
    length
}

/// A record's data as a call carries it: value, key, and each header's name and value.
fn record_bytes(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|header| header.key.len() + header.value.len())
        .sum();
    record.value.len() + record.key.as_ref().map_or(0, |key| key.len()) + headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, HeaderName};

    fn records(sizes: &[usize]) -> Vec<Record> {
        sizes
            .iter()
            .map(|&size| Record::from_value(vec![b'x'; size]))
            .collect()
    }

    #[test]
    fn a_call_carries_what_fits_its_bytes_and_at_least_one_record() {
        let batch = records(&[40, 40, 40, 40]);
        assert_eq!(call_length(&batch, 10, 100), 2);
        assert_eq!(
            call_length(&batch, 10, 80),
            2,
            "a record that ends at the bound fits"
        );
        assert_eq!(call_length(&batch, 10, 79), 1);
        assert_eq!(call_length(&batch, 10, 1000), 4);
        assert_eq!(
            call_length(&batch, 3, 1000),
            3,
            "the record limit holds too"
        );
        let huge = records(&[5000, 10]);
        assert_eq!(
            call_length(&huge, 10, 100),
            1,
            "a record past the bound goes alone"
        );
        assert_eq!(call_length(&[], 10, 100), 0);
    }

    #[test]
    fn a_record_counts_its_key_and_headers() {
        let mut record = Record::from_value(vec![b'x'; 10]);
        record.key = Some(vec![b'k'; 5].into());
        record.headers.push(Header {
            key: HeaderName::from("name".to_owned()),
            value: bytes::Bytes::from_static(b"value"),
        });
        assert_eq!(record_bytes(&record), 10 + 5 + 4 + 5);
    }

    #[test]
    fn only_a_refused_image_seal_is_worth_another_instantiation() {
        let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
        let refused =
            wasmtime::Error::from(memfd::Error::AddSeals(busy)).context("instantiating a memory");
        assert!(image_seal_refused(&refused));

        let no_fds = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(!image_seal_refused(&wasmtime::Error::from(
            memfd::Error::Create(no_fds)
        )));
        // The same words from anywhere else are not the same failure.
        assert!(!image_seal_refused(&wasmtime::Error::msg(
            "cannot add seals to the memfd"
        )));
    }
}
