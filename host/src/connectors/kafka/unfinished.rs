//! What became of each record of a batch whose write failed, kept until the pipeline writes the
//! same batch again: only the records whose delivery was not reported are sent then, so a record
//! already stored is never written twice by a retry.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use crate::record::Record;

/// What became of one record of the batch being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not sent yet, or its delivery failed in a way that sending it again may cure.
    Unsent,
    /// Its delivery report came back: it is stored.
    Delivered,
    /// Refused for its content; it goes to the dead-letter destination with this reason.
    Rejected(String),
}

/// The outcomes of the last batch whose write failed, recognised by a digest of its records.
#[derive(Debug, Default)]
pub struct Unfinished {
    /// Seeded once per sink, so digests compare across writes (and cannot be forced to collide
    /// from outside the process).
    hasher: RandomState,
    batch: Option<(u64, Vec<Outcome>)>,
}

impl Unfinished {
    /// The outcomes to start writing `records` from: those kept for this very batch after its
    /// last write failed, or all unsent for a batch not seen before.
    pub fn resume(&mut self, records: &[Record]) -> Vec<Outcome> {
        match self.batch.take() {
            Some((digest, outcomes))
                if outcomes.len() == records.len() && digest == self.digest(records) =>
            {
                outcomes
            }
            _ => vec![Outcome::Unsent; records.len()],
        }
    }

    /// Keeps the outcomes of a write of `records` that failed, for the next write of them.
    pub fn keep(&mut self, records: &[Record], outcomes: Vec<Outcome>) {
        self.batch = Some((self.digest(records), outcomes));
    }

    /// The indices of the records of the kept batch whose delivery was reported.
    pub fn delivered(&self) -> Vec<usize> {
        self.batch.as_ref().map_or_else(Vec::new, |(_, outcomes)| {
            outcomes
                .iter()
                .enumerate()
                .filter(|(_, outcome)| **outcome == Outcome::Delivered)
                .map(|(index, _)| index)
                .collect()
        })
    }

    /// A digest of everything the producer sends of `records`.
    fn digest(&self, records: &[Record]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        records.len().hash(&mut hasher);
        for record in records {
            record.key.hash(&mut hasher);
            record.value.hash(&mut hasher);
            record.timestamp.hash(&mut hasher);
            record.headers.len().hash(&mut hasher);
            for header in &record.headers {
                header.key.hash(&mut hasher);
                header.value.hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[&str]) -> Vec<Record> {
        values
            .iter()
            .map(|value| Record::from_value(*value))
            .collect()
    }

    #[test]
    fn a_retried_batch_resumes_where_its_last_write_stopped() {
        let mut unfinished = Unfinished::default();
        let records = batch(&["a", "b", "c"]);
        let mut outcomes = unfinished.resume(&records);
        assert_eq!(outcomes, vec![Outcome::Unsent; 3]);
        outcomes[0] = Outcome::Delivered;
        outcomes[2] = Outcome::Rejected("too large".into());
        unfinished.keep(&records, outcomes.clone());
        assert_eq!(unfinished.delivered(), vec![0]);
        assert_eq!(unfinished.resume(&records), outcomes);
        // Taken: a success is not kept, so the same records written later are a new batch.
        assert_eq!(unfinished.resume(&records), vec![Outcome::Unsent; 3]);
        assert!(unfinished.delivered().is_empty());
    }

    #[test]
    fn another_batch_starts_from_nothing() {
        let mut unfinished = Unfinished::default();
        let records = batch(&["a", "b"]);
        unfinished.keep(&records, vec![Outcome::Delivered, Outcome::Unsent]);
        assert_eq!(
            unfinished.resume(&batch(&["a", "c"])),
            vec![Outcome::Unsent; 2]
        );
        unfinished.keep(&records, vec![Outcome::Delivered, Outcome::Unsent]);
        assert_eq!(
            unfinished.resume(&batch(&["a", "b", "c"])),
            vec![Outcome::Unsent; 3]
        );
        unfinished.keep(&records, vec![Outcome::Delivered, Outcome::Unsent]);
        let mut with_header = records.clone();
        with_header[1].set_header("h", "v");
        assert_eq!(unfinished.resume(&with_header), vec![Outcome::Unsent; 2]);
    }
}
