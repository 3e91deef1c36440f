//! What a failed Kafka delivery means for the record, decided from librdkafka's typed error code
//! (never its message): send it again, dead-letter it, replace a producer that entered its fatal
//! state, or stop the pipeline with the reason and the fix.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What to do about a record whose delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// librdkafka gave up for now (broker down, delivery timeout, leader moving, local queue
    /// full): send the record again after backoff.
    Retry,
    /// The record is larger than the producer (`message.max.bytes`) or the topic
    /// (`max.message.bytes`) accepts: sending it again cannot help.
    TooLarge,
    /// The broker refuses the record for its content; the text says why and what to do.
    Refused(&'static str),
    /// The idempotent producer entered librdkafka's fatal state (its sequence numbers can no
    /// longer be trusted): a new producer must send what is not delivered.
    NewProducer,
    /// A refusal that retrying cannot cure (a missing topic, no authorization): stop the
    /// pipeline; the text says why and what to do.
    Stop(String),
}

impl Verdict {
    /// Which of two failures of one batch decides what the batch does: stopping beats replacing
    /// the producer, which beats retrying. Record-level verdicts concern their record only.
    pub fn severity(&self) -> u8 {
        match self {
            Verdict::Retry | Verdict::TooLarge | Verdict::Refused(_) => 0,
            Verdict::NewProducer => 1,
            Verdict::Stop(_) => 2,
        }
    }
}

/// The verdict on a delivery that failed with `error`, for a sink writing to `topic`.
pub fn classify(error: &KafkaError, topic: &str) -> Verdict {
    match error {
        KafkaError::MessageProduction(code) => classify_code(*code, topic),
        // Canceled (the producer went away mid-send) and anything else: nothing says the
        // record is at fault, so it is sent again.
        _ => Verdict::Retry,
    }
}

/// The verdict on a delivery report (or a fatal producer error) carrying `code`.
pub fn classify_code(code: RDKafkaErrorCode, topic: &str) -> Verdict {
    use RDKafkaErrorCode as Code;
    match code {
        // Raised by librdkafka before sending (message.max.bytes) or by the broker (the topic's
        // max.message.bytes, or a record larger than a log segment).
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            Verdict::TooLarge
        }
        Code::InvalidRecord => Verdict::Refused(
            "the broker refused the record as invalid (a compacted topic needs a key; a timestamp further in the past or future than the topic's message.timestamp.before.max.ms or after.max.ms allows is refused this way too; otherwise a broker-side record check failed)",
        ),
        Code::InvalidTimestamp => Verdict::Refused(
            "the broker refused the record's timestamp: it is further from the broker's clock than the topic's message.timestamp.difference.max.ms allows",
        ),
        Code::InvalidMessage | Code::BadMessage => Verdict::Refused(
            "the record was refused as corrupt (a checksum or format check failed after librdkafka's retries)",
        ),
        // librdkafka raises its fatal error (-150) when an idempotent producer can no longer
        // guarantee order without gaps; the codes below are what causes it.
        Code::Fatal
        | Code::OutOfOrderSequenceNumber
        | Code::UnknownProducerId
        | Code::InvalidProducerEpoch
        | Code::InvalidProducerIdMapping
        | Code::ProducerFenced
        | Code::Fenced
        | Code::GaplessGuarantee => Verdict::NewProducer,
        Code::UnknownTopic | Code::UnknownTopicOrPartition => Verdict::Stop(format!(
            "topic `{topic}` does not exist and this producer may not create it: create topic {topic} or set auto-create (auto.create.topics.enable=true on the brokers, and allow.auto.create.topics not set to false in the sink's `properties`)"
        )),
        Code::TopicAuthorizationFailed => Verdict::Stop(format!(
            "not authorized to write to topic `{topic}`: grant this principal WRITE and DESCRIBE on topic {topic}, or fix the credentials in the sink's `properties`"
        )),
        Code::ClusterAuthorizationFailed | Code::TransactionalIdAuthorizationFailed => {
            Verdict::Stop(
                "not authorized for idempotent writes: grant this principal IDEMPOTENT_WRITE on the cluster (brokers before Kafka 2.8 require it of an idempotent producer), or fix the credentials in the sink's `properties`"
                    .into(),
            )
        }
        Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState => Verdict::Stop(
            "the brokers refused this producer's credentials: check security.protocol and the sasl.* and ssl.* keys in the sink's `properties`".into(),
        ),
        Code::InvalidTopic => Verdict::Stop(format!(
            "`{topic}` is not a valid topic name: use at most 249 characters of a-z, A-Z, 0-9, `.`, `_` and `-`"
        )),
        Code::UnsupportedCompressionType => Verdict::Stop(
            "the brokers do not support the sink's `compression`: choose another (none, gzip, snappy, lz4, zstd)".into(),
        ),
        Code::UnsupportedVersion | Code::UnsupportedForMessageFormat | Code::InvalidRequiredAcks => {
            Verdict::Stop(
                "the brokers do not accept an idempotent acks=all producer writing headers: it needs Kafka 0.11 or later and message format v2 on the topic".into(),
            )
        }
        Code::PolicyViolation => Verdict::Stop(format!(
            "a broker policy refused writes to topic `{topic}`: ask its administrators what the policy requires"
        )),
        // Timeouts, brokers down or moving, a full local queue, records purged from a replaced
        // producer, and codes not listed: the record is not at fault, so it is sent again.
        _ => Verdict::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(code: RDKafkaErrorCode) -> Verdict {
        classify(&KafkaError::MessageProduction(code), "users")
    }

    #[test]
    fn outages_and_timeouts_are_retried() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NetworkException,
            RDKafkaErrorCode::KafkaStorageError,
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
        ] {
            assert_eq!(of(code), Verdict::Retry, "{code:?}");
        }
        assert_eq!(classify(&KafkaError::Canceled, "users"), Verdict::Retry);
    }

    #[test]
    fn records_the_broker_refuses_are_that_record_s_fault() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::MessageBatchTooLarge,
        ] {
            assert_eq!(of(code), Verdict::TooLarge, "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::InvalidTimestamp,
            RDKafkaErrorCode::InvalidMessage,
            RDKafkaErrorCode::BadMessage,
        ] {
            assert!(matches!(of(code), Verdict::Refused(_)), "{code:?}");
        }
    }

    #[test]
    fn a_fatal_idempotence_error_replaces_the_producer() {
        for code in [
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::UnknownProducerId,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::GaplessGuarantee,
        ] {
            assert_eq!(of(code), Verdict::NewProducer, "{code:?}");
        }
    }

    #[test]
    fn a_missing_topic_stops_with_the_fix() {
        for code in [
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let Verdict::Stop(message) = of(code) else {
                panic!("{code:?} does not stop");
            };
            assert!(
                message.contains("create topic users or set auto-create"),
                "{message}"
            );
        }
    }

    #[test]
    fn refusals_of_this_producer_stop_the_pipeline() {
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::UnsupportedCompressionType,
            RDKafkaErrorCode::PolicyViolation,
        ] {
            assert!(matches!(of(code), Verdict::Stop(_)), "{code:?}");
        }
        let Verdict::Stop(message) = of(RDKafkaErrorCode::TopicAuthorizationFailed) else {
            unreachable!()
        };
        assert!(
            message.contains("WRITE and DESCRIBE on topic users"),
            "{message}"
        );
    }

    #[test]
    fn stopping_outranks_a_new_producer_which_outranks_a_retry() {
        let stop = Verdict::Stop(String::new());
        assert!(stop.severity() > Verdict::NewProducer.severity());
        assert!(Verdict::NewProducer.severity() > Verdict::Retry.severity());
        assert_eq!(Verdict::TooLarge.severity(), Verdict::Retry.severity());
    }
}
