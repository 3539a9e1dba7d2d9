//! Requests over their key's concurrency limit that may wait for a slot:
//! one queue per key in this process, bounded, first come first served.
//! Only the head of a queue asks Redis again; it is woken when a lease of
//! this process is released, and polls for slots freed elsewhere (another
//! instance, an expired lease).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

pub struct Waiters {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Requests of one key that may wait in this process at once.
    limit: usize,
}

struct Queue {
    /// Held by the head of the queue; tokio's mutex is fair, so the
    /// others get it in arrival order.
    turn: tokio::sync::Mutex<()>,
    freed: Notify,
    /// Changed only under the map's lock, so that an empty queue can be
    /// removed without racing a newcomer.
    waiting: AtomicUsize,
}

/// A place in a key's queue; dropping it leaves the queue.
pub struct Ticket {
    waiters: Arc<Waiters>,
    key_id: String,
    queue: Arc<Queue>,
}

impl Waiters {
    pub fn new(limit: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            queues: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// A place in `key_id`'s queue, or `None` when the queue is full.
    pub fn join(self: &Arc<Self>, key_id: &str) -> Option<Ticket> {
        let mut queues = self.lock();
        let queue = queues.entry(key_id.to_owned()).or_insert_with(|| {
            Arc::new(Queue {
                turn: tokio::sync::Mutex::new(()),
                freed: Notify::new(),
                waiting: AtomicUsize::new(0),
            })
        });
        if queue.waiting.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        queue.waiting.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::waiting_for_slot(1.0);
        Some(Ticket {
            waiters: Arc::clone(self),
            key_id: key_id.to_owned(),
            queue: Arc::clone(queue),
        })
    }

    /// A lease of `key_id` was released here: the head of its queue, if
    /// any, tries again now.
    pub fn freed(&self, key_id: &str) {
        if let Some(queue) = self.lock().get(key_id) {
            queue.freed.notify_waiters();
        }
    }

    /// Requests of `key_id` waiting in this process.
    pub fn waiting(&self, key_id: &str) -> usize {
        self.lock()
            .get(key_id)
            .map_or(0, |queue| queue.waiting.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ticket {
    /// Waits until this ticket is the head of its queue; the head keeps
    /// its turn until it drops the guard.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.queue.turn.lock().await
    }

    /// Resolves at the next release in this process. Enable it before
    /// asking Redis, so a release in between is not missed.
    pub fn freed(&self) -> Notified<'_> {
        self.queue.freed.notified()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        crate::telemetry::waiting_for_slot(-1.0);
        let mut queues = self.waiters.lock();
        if self.queue.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            queues.remove(&self.key_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_bounded_and_forgotten_when_empty() {
        let waiters = Waiters::new(2);

        let first = waiters.join("k");
        let second = waiters.join("k");
        let third = waiters.join("k");
        let other_key = waiters.join("other");

        assert!(first.is_some() && second.is_some() && other_key.is_some());
        assert!(third.is_none(), "the queue is full");
        assert_eq!(waiters.waiting("k"), 2);
        drop((first, second));
        assert_eq!(waiters.waiting("k"), 0);
        assert!(!waiters.lock().contains_key("k"));
    }
}
