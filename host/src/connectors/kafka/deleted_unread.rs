//! Records deleted from a topic before the group read them. When retention (or DeleteRecords)
//! passes a group's position, as after a long stop or while the pipeline lags, the broker answers
//! the next fetch "offset out of range" and librdkafka moves the partition to where `offset_reset`
//! says, skipping what was deleted. Kafka allows that and so does weir, but the records are gone
//! from this pipeline, and an operator must hear of it as such, not as one more line of
//! librdkafka's: weir counts each such reset and says what it means and what to change.
//!
//! librdkafka tells of the reset only in its log (facility `OFFSET`, at warning level, naming
//! the partition and the offset it had reached); the match on its words is pinned by
//! `tests/all/kafka_retention.rs`, which deletes records under a stopped group.

use rdkafka::config::RDKafkaLogLevel;

/// Whether librdkafka's log line `fac`/`message` reports a partition moved past records that
/// were deleted before the consumer fetched them.
pub fn is_deleted_unread(fac: &str, message: &str) -> bool {
    fac == "OFFSET" && message.contains("offset reset") && message.contains("Offset out of range")
}

/// Says what such a reset means, for the source called `source`.
pub fn report(source: &str, message: &str) {
    tracing::warn!(
        source,
        librdkafka = message,
        "Records of a partition were deleted from the topic before this group read them (retention, or DeleteRecords, passed the group's position while the pipeline was stopped or behind): reading goes on where `offset_reset` says, and the deleted records are lost to this pipeline. Raise the topic's retention.ms or retention.bytes, or keep the pipeline from falling that far behind."
    );
}

/// librdkafka's log line as rdkafka logs it when a context does not take it itself.
pub fn forward(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}");
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}");
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reset_for_an_offset_out_of_range_is_deleted_unread() {
        // As librdkafka 2.x words it.
        let reset = "users [0]: offset reset (at offset 100 (leader epoch 0), broker 1) to offset BEGINNING (leader epoch -1): fetch failed due to requested offset not available on the broker: Broker: Offset out of range";
        assert!(is_deleted_unread("OFFSET", reset));
        assert!(!is_deleted_unread("FETCH", reset));
        // A group without a committed offset starts where `offset_reset` says: nothing lost.
        let first = "users [0]: offset reset (at offset INVALID, broker 1) to offset BEGINNING (leader epoch -1): no previously committed offset available: Local: No offset stored";
        assert!(!is_deleted_unread("OFFSET", first));
    }
}
