//! `weir bench`: measurements that compare against a baseline run in the same process, so the
//! ratios hold on a noisy shared machine. One module per benchmark.

pub mod cost;
pub mod driver;
pub mod failover;
pub mod leftovers;
pub mod pipeline;
pub mod plugin;
pub mod quiet;
pub mod rounds;
pub mod stalls;
pub mod swap;

pub use plugin::{epoch_cost, sample_records, user_profile};

/// A benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plugin could not be instantiated.
    #[error(transparent)]
    Plugin(#[from] weir::runtime::PluginError),
    /// The two implementations disagreed: the comparison would be meaningless.
    #[error("native and Wasm outputs differ on record {index}: {detail}")]
    Mismatch {
        /// The record.
        index: usize,
        /// How.
        detail: String,
    },
    /// The setup failed.
    #[error("{0}")]
    Setup(String),
}

/// The value at quantile `q` (0 to 1) of sorted `values`.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index.min(sorted.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_sorted_values() {
        let values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(quantile(&values, 0.5), Some(6));
        assert_eq!(quantile(&values, 0.99), Some(10));
        assert_eq!(quantile(&values, 0.0), Some(1));
        assert_eq!(quantile::<u8>(&[], 0.5), None);
    }
}
