//! A batch of consumed messages on its way to the database: validated once when read, kept in
//! offset order per partition, with the original bytes for whatever ends up dead-lettered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::db::sink::sink_row_source;
use crate::domain::rules::Rules;
use crate::domain::transaction::{Rejection, Transaction, validate_with};
use crate::kafka::producer::PRODUCED_AT_HEADER;

/// One message as read, with the validator's verdict.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// From the `produced_at` header (µs since the epoch), for end-to-end latency.
    pub produced_at: Option<DateTime<Utc>>,
    /// When the sink's consumer handed the message over, for the sink's share of the latency.
    pub received_at: std::time::Instant,
    pub verdict: Result<Transaction, Rejection>,
    /// For a valid message: its row in COPY text without the statistics columns, encoded when
    /// read so that the writer, which holds the database transaction, only appends the scores.
    pub row_source: Vec<u8>,
}

impl Consumed {
    /// Heap and inline bytes this message keeps while it waits in a batch. A large payload is
    /// held twice: as it came (for a dead letter) and as its encoded row.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.payload.capacity()
            + self.key.as_ref().map_or(0, Vec::capacity)
            + self.row_source.capacity()
    }

    /// The message, validated against `rules` (the standard ones unless `--extra-categories`).
    pub fn from_message(message: &BorrowedMessage<'_>, rules: &Rules) -> Self {
        let payload = message.payload().unwrap_or_default().to_vec();
        let produced_at = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == PRODUCED_AT_HEADER)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_micros)
        });
        let mut consumed = Self::with_rules(
            message.topic(),
            message.partition(),
            message.offset(),
            payload,
            produced_at,
            rules,
        );
        consumed.key = message.key().map(<[u8]>::to_vec);
        consumed
    }

    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        payload: Vec<u8>,
        produced_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self::with_rules(
            topic,
            partition,
            offset,
            payload,
            produced_at,
            Rules::standard(),
        )
    }

    pub fn with_rules(
        topic: &str,
        partition: i32,
        offset: i64,
        payload: Vec<u8>,
        produced_at: Option<DateTime<Utc>>,
        rules: &Rules,
    ) -> Self {
        let verdict = validate_with(&payload, rules);
        let mut row_source = Vec::new();
        if let Ok(tx) = &verdict {
            row_source.reserve(256);
            sink_row_source(&mut row_source, tx, topic, partition, offset, produced_at);
        }
        Self {
            partition,
            offset,
            key: None,
            payload,
            produced_at,
            received_at: std::time::Instant::now(),
            verdict,
            row_source,
        }
    }
}

/// Messages gathered for one database transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Consumed>,
    /// What the messages hold in memory ([`Consumed::held_bytes`]), for the byte budget.
    bytes: usize,
}

impl FromIterator<Consumed> for Batch {
    fn from_iter<I: IntoIterator<Item = Consumed>>(messages: I) -> Self {
        let mut batch = Self::default();
        for message in messages {
            batch.push(message);
        }
        batch
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn push(&mut self, message: Consumed) {
        self.bytes += message.held_bytes();
        self.messages.push(message);
    }

    /// Bytes the batch's messages hold: payloads, keys and encoded rows.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the messages of partitions this process no longer owns: their new owner reads them
    /// again from the offsets stored in the database.
    pub fn abandon(&mut self, partitions: &[i32]) -> usize {
        let before = self.messages.len();
        self.messages.retain(|m| !partitions.contains(&m.partition));
        self.bytes = self.messages.iter().map(Consumed::held_bytes).sum();
        before - self.messages.len()
    }

    /// The next offset to read of every partition in the batch.
    pub fn next_offsets(&self) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        for m in &self.messages {
            let entry = next.entry(m.partition).or_insert(m.offset + 1);
            *entry = (*entry).max(m.offset + 1);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(messages: &[(i32, i64)]) -> Batch {
        messages
            .iter()
            .map(|&(p, o)| Consumed::new("t", p, o, b"{}".to_vec(), None))
            .collect()
    }

    #[test]
    fn next_offsets_are_one_past_the_highest_offset_of_each_partition_in_any_order() {
        let next = batch(&[(2, 7), (0, 3), (2, 9), (0, 1), (2, 8)]).next_offsets();
        assert_eq!(next, BTreeMap::from([(0, 4), (2, 10)]));
        assert!(Batch::default().next_offsets().is_empty());
    }

    #[test]
    fn a_batch_counts_the_bytes_its_messages_hold_and_forgets_those_it_abandons() {
        let message = |partition| Consumed::new("t", partition, 0, vec![b'x'; 1_000], None);
        let mut batch = Batch::default();
        batch.push(message(0));
        batch.push(message(1));
        let one = message(0).held_bytes();
        assert!(one >= 1_000);
        assert_eq!(batch.bytes(), 2 * one);
        batch.abandon(&[1]);
        assert_eq!(batch.bytes(), one);
    }

    #[test]
    fn abandoning_partitions_drops_their_messages_only_and_counts_them() {
        let mut b = batch(&[(0, 1), (1, 1), (2, 1), (1, 2)]);
        assert_eq!(b.abandon(&[1, 5]), 2);
        let left: Vec<(i32, i64)> = b.messages.iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(left, [(0, 1), (2, 1)]);
        assert_eq!(b.next_offsets(), BTreeMap::from([(0, 2), (2, 2)]));
        assert_eq!(b.abandon(&[]), 0);
    }
}
