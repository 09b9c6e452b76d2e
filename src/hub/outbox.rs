//! A connection's outbox: a bounded FIFO from the hub (and the connection's
//! own reader) to the connection's writer task. It holds no buffer while it
//! is empty, so an idle connection pays only for the shared state (~0.2
//! KiB), where tokio's `mpsc::channel` allocated a 32-slot block up front.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use tokio::sync::Notify;

/// An outbox for at most `capacity` items (at least one): the sending half,
/// which may be cloned, and the receiving half.
pub fn bounded<T>(capacity: usize) -> (OutboxSender<T>, OutboxReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            front: None,
            rest: VecDeque::new(),
            receiver_waker: None,
            senders: 1,
            receiver_alive: true,
        }),
        capacity: capacity.max(1),
        space: Notify::new(),
    });
    (OutboxSender { shared: shared.clone() }, OutboxReceiver { shared })
}

/// Why `try_send` handed the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The outbox holds `capacity` items: the receiver is behind.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// `send` found the receiver gone and handed the item back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

pub struct OutboxSender<T> {
    shared: Arc<Shared<T>>,
}

pub struct OutboxReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> OutboxSender<T> {
    /// Queues `item` unless the outbox is full or its receiver is gone;
    /// never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed(item));
        }
        if state.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.push(item);
        let waker = state.receiver_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item`, waiting while the outbox is full. Dropped before it
    /// completes, it has not queued the item.
    pub async fn send(&self, mut item: T) -> Result<(), SendError<T>> {
        loop {
            // Registered before looking, so a receive between the look and
            // the wait still wakes us.
            let mut space = pin!(self.shared.space.notified());
            space.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            space.await;
        }
    }

    /// Free slots now.
    pub fn capacity(&self) -> usize {
        self.shared.capacity.saturating_sub(self.shared.lock().len())
    }

    /// The bound the outbox was made with.
    pub fn max_capacity(&self) -> usize {
        self.shared.capacity
    }
}

impl<T> Clone for OutboxSender<T> {
    fn clone(&self) -> OutboxSender<T> {
        self.shared.lock().senders += 1;
        OutboxSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for OutboxSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let waker = if state.senders == 0 { state.receiver_waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> OutboxReceiver<T> {
    /// The next item; `None` once it is empty and every sender is gone.
    /// Cancel safe: an item leaves the outbox only in the poll that returns
    /// it, so a `recv` dropped in a `select!` loses nothing.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = self.shared.lock();
        let item = state.pop(self.shared.capacity);
        if item.is_none() {
            state.release_buffer();
        }
        drop(state);
        self.received(item)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Like tokio's channels: a task that always finds an item still
        // yields when its budget is spent.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.shared.lock();
        if let Some(item) = state.pop(self.shared.capacity) {
            drop(state);
            coop.made_progress();
            return Poll::Ready(self.received(Some(item)));
        }
        state.release_buffer();
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.receiver_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Wakes the senders waiting for room when `item` was taken from a full
    /// outbox (only then can one be waiting).
    fn received(&self, item: Option<(T, bool)>) -> Option<T> {
        let (item, was_full) = item?;
        if was_full {
            self.shared.space.notify_waiters();
        }
        Some(item)
    }
}

impl<T> Drop for OutboxReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        let front = state.front.take();
        let rest = std::mem::take(&mut state.rest);
        drop(state);
        // Dropped outside the lock; waiting senders now see `Closed`.
        drop((front, rest));
        self.shared.space.notify_waiters();
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Senders waiting in `send` for a free slot.
    space: Notify,
}

impl<T> Shared<T> {
    /// Every critical section is a few field updates with no `.await` and
    /// no user code, so a poisoned lock's state is still consistent.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queue is `front` then `rest`, and `front` is empty only when `rest`
/// is: a connection that gets one frame at a time (the usual case) never
/// allocates, and `rest`'s buffer is given back once the receiver finds the
/// outbox empty, so a burst's memory does not stay with an idle connection.
struct State<T> {
    front: Option<T>,
    rest: VecDeque<T>,
    receiver_waker: Option<Waker>,
    senders: usize,
    receiver_alive: bool,
}

impl<T> State<T> {
    fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.len()
    }

    fn push(&mut self, item: T) {
        if self.front.is_none() {
            self.front = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    /// The first item, and whether the outbox was full before it left.
    fn pop(&mut self, capacity: usize) -> Option<(T, bool)> {
        let was_full = self.len() >= capacity;
        let item = self.front.take()?;
        self.front = self.rest.pop_front();
        Some((item, was_full))
    }

    fn release_buffer(&mut self) {
        if self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        let (tx, mut rx) = bounded(8);
        let other = tx.clone();
        for n in 0..8 {
            let sender = if n % 2 == 0 { &tx } else { &other };
            sender.try_send(n).expect("room");
        }
        let received: Vec<u32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(received, (0..8).collect::<Vec<_>>());
        // Refilled after draining, still in order.
        for n in 8..12 {
            tx.try_send(n).expect("room");
        }
        assert_eq!(rx.try_recv(), Some(8));
        tx.try_send(12).expect("room");
        let received: Vec<u32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(received, vec![9, 10, 11, 12]);
    }

    #[test]
    fn a_full_outbox_refuses_and_hands_the_item_back() {
        let (tx, mut rx) = bounded(3);
        assert_eq!((tx.capacity(), tx.max_capacity()), (3, 3));
        for n in 0..3 {
            tx.try_send(n).expect("room");
        }
        assert_eq!(tx.capacity(), 0);
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(tx.capacity(), 1);
        tx.try_send(3).expect("a slot was freed");
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        assert_eq!(tx.max_capacity(), 3);
    }

    #[test]
    fn sending_to_a_dropped_receiver_is_closed_not_full() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).expect("room");
        drop(rx);
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)), "full, but closed comes first");
        let (tx, rx) = bounded::<u32>(1);
        drop(rx);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        assert_eq!(runtime.block_on(tx.send(3)), Err(SendError(3)), "and send does not wait");
    }

    #[test]
    fn dropping_the_receiver_drops_what_was_queued() {
        let item = Arc::new(());
        let (tx, rx) = bounded(4);
        tx.try_send(item.clone()).expect("room");
        tx.try_send(item.clone()).expect("room");
        assert_eq!(Arc::strong_count(&item), 3);
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[tokio::test]
    async fn recv_gives_what_is_queued_then_none_once_every_sender_is_gone() {
        let (tx, mut rx) = bounded(4);
        let other = tx.clone();
        tx.try_send(1).expect("room");
        other.try_send(2).expect("room");
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        drop(other);
        assert_eq!(rx.recv().await, Some(2), "queued items outlive their senders");
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_recv_wakes_on_a_send_and_on_the_last_sender_leaving() {
        let (tx, mut rx) = bounded(4);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing to receive yet");
        tx.try_send(7).expect("room");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let received = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(received.expect("woken").expect("no panic"), (Some(7), None));
    }

    #[tokio::test]
    async fn a_send_waits_while_full_and_a_recv_releases_it() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(0).expect("room");
        tx.try_send(1).expect("room");
        let other = tx.clone();
        let waiting = tokio::spawn(async move { other.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the outbox is full");
        assert_eq!(rx.recv().await, Some(0));
        let sent = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(sent.expect("released").expect("no panic"), Ok(()));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
    }

    #[tokio::test]
    async fn a_waiting_send_fails_when_the_receiver_is_dropped() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).expect("room");
        let waiting = tokio::spawn(async move { tx.send(1).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the outbox is full");
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(sent.expect("released").expect("no panic"), Err(SendError(1)));
    }

    #[tokio::test]
    async fn a_recv_dropped_before_it_completes_loses_nothing() {
        let (tx, mut rx) = bounded(4);
        // Queued, then a select whose other branch wins: the item stays.
        tx.try_send(0).expect("room");
        tokio::select! {
            biased;
            _ = std::future::ready(()) => {}
            _ = rx.recv() => unreachable!("the ready branch comes first"),
        }
        assert_eq!(rx.try_recv(), Some(0));
        // Polled while empty (leaving its waker) and dropped: the next item
        // still reaches the next recv.
        {
            let mut recv = pin!(rx.recv());
            assert!(recv.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        }
        tx.try_send(1).expect("room");
        assert_eq!(rx.recv().await, Some(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_select_loop_around_recv_gets_every_item_in_order() {
        const ITEMS: u32 = 20_000;
        let (tx, mut rx) = bounded(4);
        let producer = tokio::spawn(async move {
            for n in 0..ITEMS {
                tx.send(n).await.expect("receiver alive");
            }
        });
        let mut expected = 0;
        loop {
            // `yield_now` is pending once, then ready: the recv is often
            // dropped after it was polled and woken.
            tokio::select! {
                biased;
                _ = tokio::task::yield_now() => {}
                item = rx.recv() => match item {
                    Some(n) => {
                        assert_eq!(n, expected);
                        expected += 1;
                    }
                    None => break,
                },
            }
        }
        assert_eq!(expected, ITEMS);
        producer.await.expect("no panic");
    }

    #[test]
    fn an_empty_outbox_holds_no_buffer() {
        let (tx, mut rx) = bounded::<u64>(1024);
        let buffer = |tx: &OutboxSender<u64>| tx.shared.lock().rest.capacity();
        assert_eq!(buffer(&tx), 0, "nothing allocated before the first item");
        tx.try_send(1).expect("room");
        assert_eq!(buffer(&tx), 0, "one item waits in place");
        for n in 2..=100 {
            tx.try_send(n).expect("room");
        }
        assert!(buffer(&tx) >= 99);
        assert_eq!(std::iter::from_fn(|| rx.try_recv()).count(), 100);
        assert_eq!(rx.try_recv(), None);
        assert_eq!(buffer(&tx), 0, "drained: the buffer is given back");
        // The same through `recv`, when the writer finds nothing more.
        for n in 0..10 {
            tx.try_send(n).expect("room");
        }
        let mut cx = Context::from_waker(Waker::noop());
        for n in 0..10 {
            assert_eq!(pin!(rx.recv()).poll(&mut cx), Poll::Ready(Some(n)));
        }
        assert!(buffer(&tx) > 0, "kept while items were coming out");
        assert!(pin!(rx.recv()).poll(&mut cx).is_pending());
        assert_eq!(buffer(&tx), 0);
    }

    #[test]
    fn a_poisoned_lock_does_not_panic_the_outbox() {
        let (tx, mut rx) = bounded(2);
        let shared = tx.shared.clone();
        let _ = std::thread::spawn(move || {
            let _held = shared.state.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(tx.shared.state.is_poisoned());
        tx.try_send(1).expect("room");
        assert_eq!(rx.try_recv(), Some(1));
    }
}
