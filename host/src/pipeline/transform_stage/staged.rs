//! A staged candidate version inside one chain step: routing a canary's partitions to it while
//! the rest stay on the live version, and comparing a shadow's results with the live ones
//! record by record. Pure apart from the instances, so the routing and the diff accounting are
//! tested without a pipeline.

use std::collections::BTreeSet;

use crate::record::{Outputs, RecordError};
use crate::runtime::{PluginInstance, RecordDiff, Rollout, ShadowBatch};

/// Differing records a shadow batch reports as samples; the slot keeps the latest ones.
const SAMPLES_PER_BATCH: usize = 20;

/// Characters kept of each side of a sampled difference.
const DIFF_TEXT_LIMIT: usize = 240;

/// One plugin step's instance of the staged candidate.
pub(super) struct StagedStep {
    /// The staged generation it belongs to.
    pub(super) generation: u64,
    /// Its version, for the version header and dead letters.
    pub(super) version: String,
    pub(super) rollout: Rollout,
    pub(super) instance: PluginInstance,
    /// Batches this step saw since the candidate was staged.
    pub(super) batches: u64,
}

impl StagedStep {
    /// Whether a shadow runs on the batch now starting; counts the batch. The first batch
    /// after staging is always shadowed.
    pub(super) fn shadow_due(&mut self) -> bool {
        let Rollout::Shadow { every_nth_batch } = self.rollout else {
            return false;
        };
        let due = self
            .batches
            .is_multiple_of(u64::from(every_nth_batch.max(1)));
        self.batches += 1;
        due
    }
}

/// Which records a canary of `partitions` takes, given each record's source partition.
pub(super) fn canary_takes(
    partitions: &BTreeSet<i32>,
    record_partitions: impl Iterator<Item = i32>,
) -> Vec<bool> {
    record_partitions.map(|p| partitions.contains(&p)).collect()
}

/// Runs `live` on the records not `taken` and `candidate` on those taken (each share in input
/// order, so a partition's records keep their order) and returns one result per input record,
/// in input order. A share that is empty is not run.
pub(super) fn route<T: Clone, R>(
    taken: &[bool],
    records: &[T],
    live: impl FnOnce(&[T]) -> Vec<R>,
    candidate: impl FnOnce(&[T]) -> Vec<R>,
) -> Vec<R> {
    if !taken.contains(&true) {
        return live(records);
    }
    if !taken.contains(&false) {
        return candidate(records);
    }
    let share = |wanted: bool| -> Vec<T> {
        records
            .iter()
            .zip(taken)
            .filter(|(_, t)| **t == wanted)
            .map(|(r, _)| r.clone())
            .collect()
    };
    let mut live_results = live(&share(false)).into_iter();
    let mut candidate_results = candidate(&share(true)).into_iter();
    taken
        .iter()
        .filter_map(|t| {
            if *t {
                candidate_results.next()
            } else {
                live_results.next()
            }
        })
        .collect()
}

type Results = [Result<Outputs, RecordError>];

/// Compares the live and the candidate's results for the same inputs, record by record: a
/// record differs when its outputs differ (number, keys, values, headers, timestamps) or when
/// one version failed it and the other did not, or both did for different kinds of reason.
/// `position` names input `i` for the samples.
pub(super) fn compare(
    live: &Results,
    candidate: &Results,
    position: impl Fn(usize) -> String,
) -> ShadowBatch {
    let mut batch = ShadowBatch::default();
    for (index, (live, candidate)) in live.iter().zip(candidate).enumerate() {
        batch.compared += 1;
        if candidate.is_err() {
            batch.failed += 1;
        }
        let same = match (live, candidate) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.kind == b.kind,
            _ => false,
        };
        if same {
            continue;
        }
        batch.differing += 1;
        if batch.samples.len() < SAMPLES_PER_BATCH {
            batch.samples.push(RecordDiff {
                position: position(index),
                live: render(live),
                candidate: render(candidate),
            });
        }
    }
    batch
}

/// A result as a sample shows it: the outputs' values one per line, or the failure; truncated.
fn render(result: &Result<Outputs, RecordError>) -> String {
    let text = match result {
        Ok(outputs) if outputs.is_empty() => "(no output)".to_owned(),
        Ok(outputs) => outputs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(error) => format!("failed ({}): {}", error.kind.as_str(), error.message),
    };
    truncate(text, DIFF_TEXT_LIMIT)
}

fn truncate(mut text: String, limit: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(limit) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, RecordErrorKind};

    fn record(value: &str) -> Record {
        Record::from_value(value)
    }

    #[test]
    fn a_canary_takes_the_records_of_its_partitions_and_order_holds() {
        let taken = canary_takes(&BTreeSet::from([0, 1]), [0, 2, 1, 5, 0, 2].into_iter());
        assert_eq!(taken, [true, false, true, false, true, false]);
        let records = ["a0", "b2", "c1", "d5", "e0", "f2"];
        let results = route(
            &taken,
            &records,
            |share| {
                assert_eq!(share, ["b2", "d5", "f2"]);
                share.iter().map(|r| format!("live {r}")).collect()
            },
            |share| {
                assert_eq!(share, ["a0", "c1", "e0"]);
                share.iter().map(|r| format!("candidate {r}")).collect()
            },
        );
        assert_eq!(
            results,
            [
                "candidate a0",
                "live b2",
                "candidate c1",
                "live d5",
                "candidate e0",
                "live f2"
            ]
        );
    }

    #[test]
    fn a_share_with_no_records_is_not_run() {
        let records = [1, 2];
        let all_live = route(
            &[false, false],
            &records,
            |s| s.to_vec(),
            |_| panic!("no canary records"),
        );
        assert_eq!(all_live, [1, 2]);
        let all_candidate = route(
            &[true, true],
            &records,
            |_| panic!("no live records"),
            |s| s.iter().map(|n| n * 10).collect(),
        );
        assert_eq!(all_candidate, [10, 20]);
    }

    fn failure(kind: RecordErrorKind) -> Result<Outputs, RecordError> {
        Err(RecordError {
            kind,
            message: "no".into(),
        })
    }

    #[test]
    fn the_diff_counts_records_whose_results_differ() {
        let live = vec![
            Ok(smallvec::smallvec![record("same")]),
            Ok(smallvec::smallvec![record("x")]),
            Ok(smallvec::smallvec![record("a"), record("b")]),
            failure(RecordErrorKind::BadRecord),
            failure(RecordErrorKind::BadRecord),
            Ok(smallvec::smallvec![record("fine")]),
        ];
        let candidate = vec![
            Ok(smallvec::smallvec![record("same")]),
            Ok(smallvec::smallvec![record("y")]),
            Ok(smallvec::smallvec![record("a")]),
            failure(RecordErrorKind::BadRecord),
            failure(RecordErrorKind::Trap),
            failure(RecordErrorKind::PluginFailure),
        ];
        let batch = compare(&live, &candidate, |i| format!("s/0@{i}"));
        assert_eq!((batch.compared, batch.differing, batch.failed), (6, 4, 3));
        let positions: Vec<&str> = batch.samples.iter().map(|d| d.position.as_str()).collect();
        assert_eq!(positions, ["s/0@1", "s/0@2", "s/0@4", "s/0@5"]);
        assert_eq!(batch.samples[0].live, "x");
        assert_eq!(batch.samples[0].candidate, "y");
        assert_eq!(batch.samples[1].live, "a\nb");
        assert!(
            batch.samples[3]
                .candidate
                .starts_with("failed (plugin-failure)")
        );
    }

    #[test]
    fn samples_are_bounded_in_number_and_length() {
        let long = "é".repeat(1000);
        let live: Vec<_> = (0..100)
            .map(|_| Ok(smallvec::smallvec![record(&long)]))
            .collect();
        let candidate: Vec<_> = (0..100).map(|_| Ok(smallvec::smallvec![])).collect();
        let batch = compare(&live, &candidate, |i| i.to_string());
        assert_eq!(batch.differing, 100);
        assert_eq!(batch.samples.len(), SAMPLES_PER_BATCH);
        assert_eq!(batch.samples[0].live.chars().count(), DIFF_TEXT_LIMIT + 1);
        assert_eq!(batch.samples[0].candidate, "(no output)");
    }
}
