//! Per-row ordering of a batch's inserts: records for the same primary key are written one after
//! another, in the order they arrived, so an older record can never overwrite a newer one, while
//! different keys are written concurrently.

use std::collections::HashMap;

/// The rows of a batch (positions in it) grouped into chains, one per primary key, each in
/// arrival order; the chains come in the order of their first row. `keys[i]` is row `i`'s key.
pub(super) fn chains<K: std::hash::Hash + Eq>(
    keys: impl IntoIterator<Item = K>,
) -> Vec<Vec<usize>> {
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<K, usize> = HashMap::new();
    for (row, key) in keys.into_iter().enumerate() {
        let chain = *by_key.entry(key).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        chains[chain].push(row);
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_one_key_stay_in_order_and_keys_in_order_of_first_sight() {
        let keys = ["b", "a", "b", "c", "a", "b"];
        assert_eq!(chains(keys), vec![vec![0, 2, 5], vec![1, 4], vec![3]]);
        assert!(chains(Vec::<u8>::new()).is_empty());
        let distinct = chains(0..5);
        assert_eq!(distinct.len(), 5, "distinct keys are independent chains");
    }
}
