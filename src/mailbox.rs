//! A bounded multi-producer, single-consumer queue that hands the consumer
//! everything waiting in one take, and a one-shot reply cell.
//!
//! Why not a channel crate: on a small, oversubscribed machine the spinning
//! and yielding that general-purpose channels do before they park cost more
//! CPU than the work itself. Here a waiting consumer parks at once on a
//! condition variable, and a producer only signals when someone waits.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct Mailbox<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

struct Inner<T> {
    queue: VecDeque<T>,
    consumer_waiting: bool,
}

/// The mailbox was full; the item comes back.
#[derive(Debug)]
pub struct Full<T>(pub T);

impl<T> Mailbox<T> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a mailbox holds at least one item");
        Mailbox {
            inner: Mutex::new(Inner { queue: VecDeque::new(), consumer_waiting: false }),
            ready: Condvar::new(),
            capacity,
        }
    }

    pub fn push(&self, item: T) -> Result<(), Full<T>> {
        let mut inner = self.inner.lock().unwrap();
        if inner.queue.len() >= self.capacity {
            return Err(Full(item));
        }
        inner.queue.push_back(item);
        if inner.consumer_waiting {
            inner.consumer_waiting = false;
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Moves everything waiting into `into`, waiting until `deadline` for at
    /// least one item. Returns the number of items taken.
    pub fn take_all(&self, into: &mut VecDeque<T>, deadline: Instant) -> usize {
        let mut inner = self.inner.lock().unwrap();
        while inner.queue.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            inner.consumer_waiting = true;
            inner = self.ready.wait_timeout(inner, deadline - now).unwrap().0;
        }
        inner.consumer_waiting = false;
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

    #[test]
    fn take_all_returns_everything_in_order_and_times_out_when_empty() {
        let mailbox = Mailbox::new(3);
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
    fn a_parked_consumer_wakes_for_a_producer_on_another_thread() {
        let mailbox = Arc::new(Mailbox::new(10));
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
