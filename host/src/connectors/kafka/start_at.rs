//! A Kafka source's `start_at_time`: where a consumer group that has no committed offset for a
//! partition starts reading it, by time (Kafka's `offsetsForTimes`, Spark's
//! `startingTimestamp`), instead of at its earliest or latest record. Committed offsets still
//! win, so a restart resumes where the group was; the time only places partitions the group
//! never committed. The offsets are set in the assignment itself, before librdkafka starts
//! fetching, so no record from before the time is read first.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// How long each question to the brokers (committed offsets, offsets for the time) may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times the questions are asked before the partitions are left where `offset_reset`
/// puts them.
const LOOKUP_ATTEMPTS: usize = 3;

/// The time in `text`, in milliseconds since the epoch: RFC 3339 (`2026-12-01T00:00:00Z`) or
/// a number of milliseconds.
pub fn parse(text: &str) -> Result<i64, String> {
    let millis = crate::record::parse_time(text)?;
    if millis < 0 {
        return Err(format!(
            "`{text}` is before 1970-01-01T00:00:00Z, and Kafka's record timestamps are not"
        ));
    }
    Ok(millis)
}

/// What placing an assignment by time did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// Partitions set to their first record at or after the time.
    pub at_time: usize,
    /// Partitions with no record that late, set to their end (the next record written).
    pub at_end: usize,
    /// Partitions the group has a committed offset for, left to resume there.
    pub committed: usize,
}

/// Sets, in `assignment`, the offset of each partition the group has no committed offset for to
/// its first record whose timestamp is at or after `millis`, or to its end when none is. Asks
/// the brokers up to [`LOOKUP_ATTEMPTS`] times; the error is the last answer's.
pub fn place<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assignment: &mut TopicPartitionList,
    millis: i64,
) -> KafkaResult<Placed> {
    let mut last = None;
    for _ in 0..LOOKUP_ATTEMPTS {
        match offsets_by_time(consumer, assignment, millis) {
            Ok(found) => return Ok(apply(assignment, &found)),
            Err(error) => last = Some(error),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// For each partition of `assignment` without a committed offset, where it starts by time;
/// `None` beside those the group committed.
fn offsets_by_time<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assignment: &TopicPartitionList,
    millis: i64,
) -> KafkaResult<Vec<(String, i32, Option<Offset>)>> {
    let committed = consumer.committed_offsets(assignment.clone(), LOOKUP_TIMEOUT)?;
    let mut uncommitted = TopicPartitionList::new();
    for element in committed.elements() {
        if !matches!(element.offset(), Offset::Offset(_)) {
            uncommitted.add_partition_offset(
                element.topic(),
                element.partition(),
                Offset::Offset(millis),
            )?;
        }
    }
    let times = if uncommitted.count() == 0 {
        TopicPartitionList::new()
    } else {
        consumer.offsets_for_times(uncommitted, LOOKUP_TIMEOUT)?
    };
    let mut found = Vec::new();
    for element in committed.elements() {
        let by_time = times
            .find_partition(element.topic(), element.partition())
            .map(|at| at.error().map(|()| at.offset()))
            .transpose()?;
        found.push((element.topic().to_owned(), element.partition(), by_time));
    }
    Ok(found)
}

/// Writes the offsets found by time into `assignment`: a record's offset as it is, anything
/// else (no record that late) as the partition's end.
fn apply(assignment: &mut TopicPartitionList, found: &[(String, i32, Option<Offset>)]) -> Placed {
    let mut placed = Placed::default();
    for (topic, partition, by_time) in found {
        let Some(by_time) = by_time else {
            placed.committed += 1;
            continue;
        };
        let offset = match by_time {
            Offset::Offset(offset) if *offset >= 0 => {
                placed.at_time += 1;
                Offset::Offset(*offset)
            }
            _ => {
                placed.at_end += 1;
                Offset::End
            }
        };
        if let Some(mut element) = assignment.find_partition(topic, *partition) {
            // Setting a plain offset or the end on an element of the list cannot fail.
            let _ = element.set_offset(offset);
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_a_time_as_records_have_it_never_before_the_epoch() {
        // The forms themselves are `record::parse_time`'s, tested there.
        assert_eq!(parse("2026-12-01T00:00:00Z"), Ok(1_796_083_200_000));
        assert_eq!(parse("0"), Ok(0));
        let negative = parse("-5").expect_err("before the epoch");
        assert!(negative.contains("before 1970"), "{negative}");
        let garbage = parse("yesterday").expect_err("no time");
        assert!(garbage.contains("RFC 3339"), "{garbage}");
    }

    #[test]
    fn found_offsets_are_written_into_the_assignment_and_the_rest_left_alone() {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..4 {
            assignment.add_partition("orders", partition);
        }
        let found = [
            ("orders".to_owned(), 0, Some(Offset::Offset(42))),
            ("orders".to_owned(), 1, Some(Offset::End)),
            ("orders".to_owned(), 2, None),
            ("orders".to_owned(), 3, Some(Offset::Offset(-1))),
        ];
        let placed = apply(&mut assignment, &found);
        assert_eq!(
            placed,
            Placed {
                at_time: 1,
                at_end: 2,
                committed: 1
            }
        );
        let offsets: Vec<Offset> = assignment.elements().iter().map(|e| e.offset()).collect();
        assert_eq!(
            offsets,
            [
                Offset::Offset(42),
                Offset::End,
                Offset::Invalid,
                Offset::End
            ]
        );
    }
}
