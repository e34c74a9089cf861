//! Topic administration and description: create, delete, partitions and high watermarks.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::config::REQUEST_TIMEOUT;
use super::{KafkaError, KafkaSettings};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Copies of each partition: 1 for the local single broker; managed clusters usually
    /// refuse fewer than 3.
    pub replication: i32,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
        }
    }

    pub fn with_replication(self, replication: i32) -> Self {
        Self {
            replication,
            ..self
        }
    }
}

/// What `create_topics` did with one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExisted,
}

/// One partition of a topic with its offsets: `high` is the offset the next message will get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub low: i64,
    pub high: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Messages currently retained: the sum over partitions of high − low.
    pub fn retained(&self) -> i64 {
        self.partitions.iter().map(|p| p.high - p.low).sum()
    }
}

/// Creates each topic that does not exist yet; an existing topic is left alone (idempotent).
///
/// Existing topics are found through metadata first and never sent to CreateTopics: tansu 0.6
/// (SQLite storage) leaves a pooled connection inside a stale transaction after answering
/// TopicAlreadyExists, and a later produce on that connection brings its storage down.
pub async fn create_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<Vec<(String, CreateOutcome)>, KafkaError> {
    let consumer = metadata_consumer(settings)?;
    let brokers = settings.brokers.clone();
    let existing =
        blocking(move || topic_names_blocking(consumer.client(), &brokers, None)).await?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains(&s.name))
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let admin = admin_client(settings)?;
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication),
                )
            })
            .collect();
        let results = admin
            .create_topics(&new_topics, &admin_options())
            .await
            .map_err(KafkaError::unreachable(&settings.brokers))?;
        for result in results {
            match result {
                Ok(topic) => created.push(topic),
                // Someone else created it between our metadata request and ours: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
            }
        }
    }
    Ok(specs
        .iter()
        .map(|s| {
            let outcome = if created.contains(&s.name) {
                CreateOutcome::Created
            } else {
                CreateOutcome::AlreadyExisted
            };
            (s.name.clone(), outcome)
        })
        .collect())
}

/// Deletes a topic; a topic that is already gone is not an error.
pub async fn delete_topic(settings: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let admin = admin_client(settings)?;
    let results = admin
        .delete_topics(&[topic], &admin_options())
        .await
        .map_err(KafkaError::unreachable(&settings.brokers))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(KafkaError::DeleteTopic { topic, code }),
        }
    }
    Ok(())
}

/// Partitions and watermarks of one topic, or of every non-internal topic when `topic` is None.
pub async fn describe_topics(
    settings: &KafkaSettings,
    topic: Option<&str>,
) -> Result<Vec<TopicInfo>, KafkaError> {
    let consumer = metadata_consumer(settings)?;
    let brokers = settings.brokers.clone();
    let topic = topic.map(str::to_string);
    blocking(move || describe_blocking(&consumer, &brokers, topic.as_deref())).await
}

/// The high watermark (the offset the next message will get) of each partition of `topic`.
pub async fn high_watermarks(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    Ok(describe_topics(settings, Some(topic))
        .await?
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.id, p.high))
        .collect())
}

/// Runs librdkafka's blocking metadata calls off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("Kafka metadata task panicked")
}

/// A consumer without a group, used only for metadata and watermark requests.
pub(crate) fn metadata_consumer(settings: &KafkaSettings) -> Result<BaseConsumer, KafkaError> {
    settings
        .client_config()
        .create()
        .map_err(KafkaError::client("creating a Kafka client"))
}

/// Names of the topics the broker serves (with partitions and no error), from one metadata
/// request and no watermark requests; with `topic`, at most that one name.
pub(crate) fn topic_names_blocking<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: Option<&str>,
) -> Result<Vec<String>, KafkaError> {
    let metadata = client
        .fetch_metadata(topic, REQUEST_TIMEOUT)
        .map_err(KafkaError::unreachable(brokers))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_string())
        .collect())
}

pub(crate) fn describe_blocking(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: Option<&str>,
) -> Result<Vec<TopicInfo>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(topic, REQUEST_TIMEOUT)
        .map_err(KafkaError::unreachable(brokers))?;
    let mut topics = Vec::new();
    for t in metadata.topics() {
        if topic.is_none() && t.name().starts_with("__") {
            continue; // broker-internal topics such as __consumer_offsets
        }
        if t.error().is_some() || (topic.is_some() && t.partitions().is_empty()) {
            return Err(KafkaError::UnknownTopic {
                topic: t.name().to_string(),
            });
        }
        let mut partitions = Vec::with_capacity(t.partitions().len());
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(t.name(), p.id(), REQUEST_TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "reading the watermarks of {}/{}",
                    t.name(),
                    p.id()
                )))?;
            partitions.push(PartitionInfo {
                id: p.id(),
                leader: p.leader(),
                low,
                high,
            });
        }
        partitions.sort_by_key(|p| p.id);
        topics.push(TopicInfo {
            name: t.name().to_string(),
            partitions,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    settings
        .client_config()
        .create()
        .map_err(KafkaError::client("creating a Kafka admin client"))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT))
}
