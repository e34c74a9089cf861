//! Running a generator on a thread of its own, a few batches ahead of its consumer.
//!
//! The producer's sending thread then only enqueues, and building the next messages overlaps
//! with librdkafka's work on another core. Order is preserved, so a seeded stream stays the
//! same stream; memory stays bounded by `depth` batches.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Messages handed over per batch: large enough that the channel costs nothing per message.
pub const BATCH: usize = 1_024;
/// Batches built ahead.
pub const DEPTH: usize = 8;

/// An iterator over what `source` yields, built on a background thread. Dropping it stops the
/// thread at its next batch.
pub struct Prefetch<T> {
    batches: Receiver<Vec<T>>,
    current: std::vec::IntoIter<T>,
    worker: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    pub fn new<I>(source: I) -> Self
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        let (sender, batches) = sync_channel(DEPTH);
        let worker = std::thread::Builder::new()
            .name("etl-generate".into())
            .spawn(move || fill(source, &sender))
            .expect("spawning the generator thread");
        Self {
            batches,
            current: Vec::new().into_iter(),
            worker: Some(worker),
        }
    }
}

fn fill<T, I: Iterator<Item = T>>(mut source: I, sender: &SyncSender<Vec<T>>) {
    loop {
        let batch: Vec<T> = source.by_ref().take(BATCH).collect();
        let last = batch.len() < BATCH;
        // A closed channel means the consumer is gone: stop quietly.
        if sender.send(batch).is_err() || last {
            return;
        }
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            match self.batches.recv() {
                Ok(batch) if !batch.is_empty() => self.current = batch.into_iter(),
                _ => return None,
            }
        }
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Unblock a worker waiting for room, then wait for it: no thread outlives its stream.
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.batches, closed));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_the_same_items_in_order() {
        let items: Vec<u32> = Prefetch::new(0..10_000u32).collect();
        assert_eq!(items, (0..10_000).collect::<Vec<_>>());
        assert_eq!(Prefetch::new(0..0u32).count(), 0);
        assert_eq!(Prefetch::new(0..BATCH as u32).count(), BATCH);
    }

    #[test]
    fn dropping_early_stops_an_endless_source() {
        let mut endless = Prefetch::new(0u64..);
        assert_eq!(endless.nth(5_000), Some(5_000));
        drop(endless); // must return: the worker sees the closed channel
    }
}
