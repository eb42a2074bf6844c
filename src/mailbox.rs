//! A multi-producer, single-consumer queue bounded by items and by bytes,
//! that hands the consumer everything waiting in one take, and a one-shot
//! reply cell.
//!
//! Why not a channel crate: on a small, oversubscribed machine the spinning
//! and yielding that general-purpose channels do before they park cost more
//! CPU than the work itself. Here a waiting consumer parks at once on a
//! condition variable, and a producer only signals when someone waits.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What an item costs a queue: an upper bound of its encoded size, which is
/// also about what it holds in memory. Queues, frames and batches are bounded
/// by this, so a burst of large values cannot outgrow a budget that a count of
/// small ones was sized for.
pub trait Weigh {
    fn weight(&self) -> usize;
}

pub struct Mailbox<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
    bytes_max: usize,
}

struct Inner<T> {
    queue: VecDeque<T>,
    /// Total weight of `queue`.
    bytes: usize,
    consumer_waiting: bool,
}

/// The mailbox was full; the item comes back.
#[derive(Debug)]
pub struct Full<T>(pub T);

impl<T: Weigh> Mailbox<T> {
    /// Holds at most `capacity` items and `bytes_max` bytes of them (one item
    /// heavier than that is still accepted into an empty mailbox).
    pub fn new(capacity: usize, bytes_max: usize) -> Self {
        assert!(capacity > 0, "a mailbox holds at least one item");
        Mailbox {
            inner: Mutex::new(Inner { queue: VecDeque::new(), bytes: 0, consumer_waiting: false }),
            ready: Condvar::new(),
            capacity,
            bytes_max,
        }
    }

    pub fn push(&self, item: T) -> Result<(), Full<T>> {
        let weight = item.weight();
        let mut inner = self.inner.lock().unwrap();
        if inner.queue.len() >= self.capacity || (!inner.queue.is_empty() && inner.bytes + weight > self.bytes_max) {
            return Err(Full(item));
        }
        inner.bytes += weight;
        inner.queue.push_back(item);
        if inner.consumer_waiting {
            inner.consumer_waiting = false;
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until `deadline` for at least one item; takes nothing. Returns
    /// whether one waits.
    pub fn wait_for_items(&self, deadline: Instant) -> bool {
        let inner = self.wait_locked(deadline);
        !inner.queue.is_empty()
    }

    fn wait_locked(&self, deadline: Instant) -> std::sync::MutexGuard<'_, Inner<T>> {
        let mut inner = self.inner.lock().unwrap();
        while inner.queue.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner.consumer_waiting = true;
            inner = self.ready.wait_timeout(inner, deadline - now).unwrap().0;
        }
        inner.consumer_waiting = false;
        inner
    }

    /// Moves everything waiting into `into`, waiting until `deadline` for at
    /// least one item. Returns the number of items taken.
    pub fn take_all(&self, into: &mut VecDeque<T>, deadline: Instant) -> usize {
        let mut inner = self.wait_locked(deadline);
        inner.bytes = 0;
        let taken = inner.queue.len();
        if into.is_empty() {
            std::mem::swap(into, &mut inner.queue);
        } else {
            into.extend(inner.queue.drain(..));
        }
        taken
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().queue.len()
    }

    /// Weight of what waits, in bytes.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Holds one value, set once by a producer and awaited by one consumer.
pub struct ReplyCell<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for ReplyCell<T> {
    fn default() -> Self {
        ReplyCell { value: Mutex::new(None), ready: Condvar::new() }
    }
}

impl<T> ReplyCell<T> {
    /// The first value wins; later ones are dropped.
    pub fn set(&self, value: T) {
        let mut slot = self.value.lock().unwrap();
        if slot.is_none() {
            *slot = Some(value);
            self.ready.notify_one();
        }
    }

    pub fn wait(&self, timeout: Duration) -> Option<T> {
        let slot = self.value.lock().unwrap();
        let (mut slot, _) = self.ready.wait_timeout_while(slot, timeout, |v| v.is_none()).unwrap();
        slot.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    impl Weigh for i32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    #[test]
    fn take_all_returns_everything_in_order_and_times_out_when_empty() {
        let mailbox = Mailbox::new(3, 1_000);
        for i in 0..3 {
            mailbox.push(i).unwrap();
        }
        assert!(matches!(mailbox.push(3), Err(Full(3))));
        let mut items = VecDeque::new();
        assert_eq!(mailbox.take_all(&mut items, Instant::now()), 3);
        assert_eq!(items, [0, 1, 2]);
        let mut none = VecDeque::new();
        assert_eq!(mailbox.take_all(&mut none, Instant::now() + Duration::from_millis(10)), 0);
    }

    #[test]
    fn bytes_bound_a_mailbox_as_well_as_items_and_a_take_frees_them() {
        let mailbox = Mailbox::new(100, 10);
        mailbox.push(6).unwrap();
        assert!(matches!(mailbox.push(5), Err(Full(5))), "6 + 5 bytes exceed a 10-byte budget");
        mailbox.push(4).unwrap();
        assert_eq!(mailbox.bytes(), 10);
        let mut items = VecDeque::new();
        mailbox.take_all(&mut items, Instant::now());
        assert_eq!(mailbox.bytes(), 0);
        // Heavier than the whole budget: accepted alone, so it is never stuck.
        mailbox.push(50).unwrap();
        assert!(mailbox.push(1).is_err());
    }

    #[test]
    fn a_parked_consumer_wakes_for_a_producer_on_another_thread() {
        let mailbox = Arc::new(Mailbox::new(10, 1_000));
        let producer = {
            let mailbox = mailbox.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                mailbox.push(42).unwrap();
            })
        };
        let mut items = VecDeque::new();
        mailbox.take_all(&mut items, Instant::now() + Duration::from_secs(10));
        assert_eq!(items, [42]);
        producer.join().unwrap();
    }

    #[test]
    fn a_reply_cell_delivers_the_first_value_or_times_out() {
        let cell = Arc::new(ReplyCell::default());
        let setter = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.set("first");
                cell.set("second");
            })
        };
        assert_eq!(cell.wait(Duration::from_secs(10)), Some("first"));
        setter.join().unwrap();
        assert_eq!(ReplyCell::<u8>::default().wait(Duration::from_millis(5)), None);
    }
}
