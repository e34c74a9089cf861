//! Errors from the Kafka side, with the context a user needs to act on them.

use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "cannot reach Kafka at {brokers} ({cause}); is the broker running? `just up` starts a local one, \
         KAFKA_BROKERS points elsewhere"
    )]
    Unreachable { brokers: String, cause: ClientError },
    #[error("topic `{topic}` does not exist; create it with `etl topics create {topic}`")]
    UnknownTopic { topic: String },
    #[error("creating topic `{topic}` failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("deleting topic `{topic}` failed: {code}")]
    DeleteTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "consumer group `{group}` has no committed offsets on any topic; check the name \
         (the sink's group is `etl-sink` unless --group or KAFKA_GROUP says otherwise)"
    )]
    UnknownGroup { group: String },
    #[error("writing output failed: {0}")]
    Output(#[from] std::io::Error),
    #[error("Kafka request failed while {context}: {cause}")]
    Client { context: String, cause: ClientError },
}

impl KafkaError {
    pub(crate) fn unreachable(brokers: &str) -> impl FnOnce(ClientError) -> Self {
        let brokers = brokers.to_string();
        move |cause| Self::Unreachable { brokers, cause }
    }

    pub(crate) fn client(context: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let context = context.into();
        move |cause| Self::Client { context, cause }
    }
}
