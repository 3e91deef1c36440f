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

/// How many rounds each measurement is split into. A round runs one side, then the other, for
/// an equal share of the time, so that drift on a shared machine (frequency, neighbours) falls on
/// both sides alike; the ratio reported is the median of the rounds' ratios.
pub const ROUNDS: usize = 8;

/// One line of the benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchLine {
    /// Records per plugin call.
    pub batch_size: usize,
    /// Native records per second (the baseline): the median over the rounds.
    pub native_per_second: f64,
    /// Wasm records per second: the median over the rounds.
    pub wasm_per_second: f64,
    /// Wasm/native per round, in ascending order.
    pub round_ratios: Vec<f64>,
}

impl BenchLine {
    /// Wasm throughput as a share of native throughput: the median of the rounds' ratios.
    pub fn ratio(&self) -> f64 {
        median(&self.round_ratios)
    }

    /// The lowest and highest round's ratio.
    pub fn ratio_range(&self) -> (f64, f64) {
        (
            self.round_ratios.first().copied().unwrap_or(f64::NAN),
            self.round_ratios.last().copied().unwrap_or(f64::NAN),
        )
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
/// least `min_time` in [`ROUNDS`] interleaved rounds (repeating the record set as needed), after
/// checking both give equal outputs.
pub fn user_profile(
    plugin: &Arc<LoadedPlugin>,
    records: &[Record],
    min_time: Duration,
) -> Result<Vec<BenchLine>, BenchError> {
    let mut instance = plugin.instantiate("{}", PluginLimits::default())?;
    check_equal(&mut instance, records)?;
    let progress = weir::progress::start(
        "bench plugin",
        Some(BATCH_SIZES.len() as u64),
        "batch sizes",
    );
    let lines = BATCH_SIZES
        .iter()
        .map(|&batch_size| {
            let rounds = interleaved(
                min_time,
                records.len(),
                || run_native(records, batch_size),
                || run_wasm(&mut instance, records, batch_size),
            );
            let line = BenchLine {
                batch_size,
                native_per_second: median(&rounds.first),
                wasm_per_second: median(&rounds.second),
                round_ratios: rounds.ratios(),
            };
            progress.advance(
                1,
                &format!(
                    "batch {batch_size}: native {:.0}, wasm {:.0} records/s",
                    line.native_per_second, line.wasm_per_second
                ),
            );
            line
        })
        .collect();
    progress.finish("measured");
    Ok(lines)
}

/// What epoch interruption (the deadline check compiled into every plugin) costs: Wasm
/// records/s at `batch_size` with deadlines and without (`unbounded`, a runtime compiled without
/// epoch checks), in interleaved rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochCost {
    /// Records per plugin call.
    pub batch_size: usize,
    /// Records/s with deadlines: the median over the rounds.
    pub with_deadlines: f64,
    /// Records/s compiled without epoch checks: the median over the rounds.
    pub without_deadlines: f64,
    /// With/without per round (each round runs without, then with), in ascending order.
    pub round_ratios: Vec<f64>,
}

impl EpochCost {
    /// The share of throughput the deadlines cost, from the median round (negative when within
    /// noise the other way).
    pub fn cost(&self) -> f64 {
        1.0 - median(&self.round_ratios)
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
    let rounds = interleaved(
        min_time,
        records.len(),
        || run_wasm(&mut without, records, batch_size),
        || run_wasm(&mut with, records, batch_size),
    );
    Ok(EpochCost {
        batch_size,
        with_deadlines: median(&rounds.second),
        without_deadlines: median(&rounds.first),
        round_ratios: rounds.ratios(),
    })
}

/// Records/s of two sides measured round by round.
struct Rounds {
    first: Vec<f64>,
    second: Vec<f64>,
}

impl Rounds {
    /// `second / first` per round, in ascending order.
    fn ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self
            .first
            .iter()
            .zip(&self.second)
            .map(|(first, second)| second / first)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }
}

/// Runs `first` then `second`, each for `min_time / ROUNDS`, [`ROUNDS`] times.
fn interleaved(
    min_time: Duration,
    records_per_pass: usize,
    mut first: impl FnMut() -> usize,
    mut second: impl FnMut() -> usize,
) -> Rounds {
    let slice = min_time / ROUNDS as u32;
    let mut rounds = Rounds {
        first: Vec::with_capacity(ROUNDS),
        second: Vec::with_capacity(ROUNDS),
    };
    for _ in 0..ROUNDS {
        rounds
            .first
            .push(throughput(slice, records_per_pass, &mut first));
        rounds
            .second
            .push(throughput(slice, records_per_pass, &mut second));
    }
    rounds
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Records/s of `pass` over at least `min_time` (and at least one pass), after one warm-up pass.
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
            // One allocation and copy of the value, as the Wasm side's encoding makes.
            let input = weir_plugin::Record::new(record.value.to_vec());
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
        let native = user_profile::profiles(&weir_plugin::Record::new(record.value.to_vec()));
        let same = match (&native, &wasm) {
            (Ok(native), Ok(wasm)) => {
                native.len() == wasm.len()
                    && native.iter().zip(wasm).all(|(n, w)| {
                        n.key.as_deref() == w.key.as_deref() && same_json(&n.value, &w.value)
                    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value_and_of_an_even_count_the_mean_of_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn round_ratios_pair_each_round_and_come_sorted() {
        let rounds = Rounds {
            first: vec![100.0, 200.0, 50.0],
            second: vec![50.0, 200.0, 40.0],
        };
        assert_eq!(rounds.ratios(), vec![0.5, 0.8, 1.0]);
    }

    #[test]
    fn interleaving_runs_both_sides_in_every_round() {
        let (mut firsts, mut seconds) = (0, 0);
        let rounds = interleaved(
            Duration::ZERO,
            10,
            || {
                firsts += 1;
                10
            },
            || {
                seconds += 1;
                10
            },
        );
        assert_eq!(rounds.first.len(), ROUNDS);
        assert_eq!(rounds.second.len(), ROUNDS);
        // A warm-up pass and at least one measured pass per side per round.
        assert_eq!((firsts, seconds), (2 * ROUNDS, 2 * ROUNDS));
    }
}
