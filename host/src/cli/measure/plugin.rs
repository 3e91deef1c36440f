//! `weir bench plugin`: the cost of running a transform as a Wasm plugin, measured against the
//! same logic compiled natively into the host, in one process on the same records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::BenchError;
use weir::generator::UserGenerator;
use weir::record::Record;
use weir::runtime::{LoadedPlugin, PluginInstance, PluginLimits};

/// The batch sizes measured: one record per call (worst case), a typical batch, a large one.
pub const BATCH_SIZES: [usize; 3] = [1, 64, 1024];

/// One line of the benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchLine {
    /// Records per plugin call.
    pub batch_size: usize,
    /// Native records per second (the baseline).
    pub native_per_second: f64,
    /// Wasm records per second.
    pub wasm_per_second: f64,
}

impl BenchLine {
    /// Wasm throughput as a share of native throughput.
    pub fn ratio(&self) -> f64 {
        self.wasm_per_second / self.native_per_second
    }
}

/// `records` randomuser.me results, as the pipeline would see them.
pub fn sample_records(records: usize, seed: u64) -> Vec<Record> {
    let mut generator = UserGenerator::new(seed);
    (0..records)
        .map(|_| Record::from_value(generator.next_user().to_string()))
        .collect()
}

/// Measures `user-profile` natively and as the given plugin, for each batch size, each over at
/// least `min_time` (repeating the record set as needed), after checking both give equal outputs.
pub fn user_profile(
    plugin: &Arc<LoadedPlugin>,
    records: &[Record],
    min_time: Duration,
) -> Result<Vec<BenchLine>, BenchError> {
    let mut instance = plugin.instantiate("{}", PluginLimits::default())?;
    check_equal(&mut instance, records)?;
    let progress = weir::progress::start(
        "bench plugin",
        Some(2 * BATCH_SIZES.len() as u64),
        "measurements",
    );
    let lines = BATCH_SIZES
        .iter()
        .map(|&batch_size| {
            let native = throughput(min_time, records.len(), || run_native(records, batch_size));
            progress.advance(
                1,
                &format!("batch {batch_size}: native {native:.0} records/s"),
            );
            let wasm = throughput(min_time, records.len(), || {
                run_wasm(&mut instance, records, batch_size)
            });
            progress.advance(1, &format!("batch {batch_size}: wasm {wasm:.0} records/s"));
            Ok(BenchLine {
                batch_size,
                native_per_second: native,
                wasm_per_second: wasm,
            })
        })
        .collect();
    progress.finish("measured");
    lines
}

/// What epoch interruption (the deadline check compiled into every plugin) costs: Wasm
/// records/s at `batch_size` with deadlines, without (`unbounded`, a runtime compiled without
/// epoch checks), and with again, so that drift on a shared machine shows.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochCost {
    /// Records per plugin call.
    pub batch_size: usize,
    /// Records/s with deadlines, before and after the measurement without.
    pub with_deadlines: [f64; 2],
    /// Records/s compiled without epoch checks.
    pub without_deadlines: f64,
}

impl EpochCost {
    /// The share of throughput the deadlines cost (negative when within noise the other way).
    pub fn cost(&self) -> f64 {
        let with = (self.with_deadlines[0] + self.with_deadlines[1]) / 2.0;
        1.0 - with / self.without_deadlines
    }
}

/// Measures [`EpochCost`] at `batch_size`: `plugin` runs with deadlines, `unbounded` is the same
/// component loaded into a runtime without them.
pub fn epoch_cost(
    plugin: &Arc<LoadedPlugin>,
    unbounded: &Arc<LoadedPlugin>,
    records: &[Record],
    batch_size: usize,
    min_time: Duration,
) -> Result<EpochCost, BenchError> {
    let mut with = plugin.instantiate("{}", PluginLimits::default())?;
    let mut without = unbounded.instantiate("{}", PluginLimits::default())?;
    let measure = |instance: &mut PluginInstance| {
        throughput(min_time, records.len(), || {
            run_wasm(instance, records, batch_size)
        })
    };
    let before = measure(&mut with);
    let without_deadlines = measure(&mut without);
    let after = measure(&mut with);
    Ok(EpochCost {
        batch_size,
        with_deadlines: [before, after],
        without_deadlines,
    })
}

fn throughput(min_time: Duration, records_per_pass: usize, mut pass: impl FnMut() -> usize) -> f64 {
    // One warm-up pass so that caches and lazy initialisation do not count.
    std::hint::black_box(pass());
    let started = Instant::now();
    let mut records = 0usize;
    while started.elapsed() < min_time || records == 0 {
        let outputs = pass();
        std::hint::black_box(outputs);
        records += records_per_pass;
    }
    records as f64 / started.elapsed().as_secs_f64()
}

fn run_native(records: &[Record], batch_size: usize) -> usize {
    let mut outputs = 0;
    for batch in records.chunks(batch_size) {
        for record in batch {
            let input = weir_plugin::Record::new(record.value.clone());
            if let Ok(rows) = user_profile::profiles(&input) {
                outputs += rows.len();
                std::hint::black_box(rows);
            }
        }
    }
    outputs
}

fn run_wasm(instance: &mut PluginInstance, records: &[Record], batch_size: usize) -> usize {
    records
        .chunks(batch_size)
        .map(|batch| {
            instance
                .transform(batch)
                .into_iter()
                .map(|result| result.map_or(0, |rows| rows.len()))
                .sum::<usize>()
        })
        .sum()
}

fn check_equal(instance: &mut PluginInstance, records: &[Record]) -> Result<(), BenchError> {
    let wasm = instance.transform(records);
    for (index, (record, wasm)) in records.iter().zip(wasm).enumerate() {
        let native = user_profile::profiles(&weir_plugin::Record::new(record.value.clone()));
        let same = match (&native, &wasm) {
            (Ok(native), Ok(wasm)) => {
                native.len() == wasm.len()
                    && native
                        .iter()
                        .zip(wasm)
                        .all(|(n, w)| n.key == w.key && same_json(&n.value, &w.value))
            }
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            return Err(BenchError::Mismatch {
                index,
                detail: format!(
                    "native {} vs wasm {}",
                    describe(
                        native
                            .as_ref()
                            .map(|rows| rows.iter().map(|r| &r.value[..]).collect())
                    ),
                    describe(
                        wasm.as_ref()
                            .map(|rows| rows.iter().map(|r| &r.value[..]).collect())
                    ),
                ),
            });
        }
    }
    Ok(())
}

/// Whether two outputs hold the same JSON value: plugins in other languages serialise the same
/// profile with another key order or spacing. Bytes that are not JSON must be equal.
fn same_json(native: &[u8], wasm: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(native),
        serde_json::from_slice::<serde_json::Value>(wasm),
    ) {
        (Ok(native), Ok(wasm)) => native == wasm,
        _ => native == wasm,
    }
}

/// One side of a mismatch for the error: the rows (their start) or the error.
fn describe<E: std::fmt::Debug>(outcome: Result<Vec<&[u8]>, &E>) -> String {
    match outcome {
        Ok(rows) => {
            let rows: Vec<String> = rows
                .iter()
                .map(|row| String::from_utf8_lossy(&row[..row.len().min(300)]).into_owned())
                .collect();
            format!("{} row(s) {rows:?}", rows.len())
        }
        Err(error) => format!("error {error:?}"),
    }
}
