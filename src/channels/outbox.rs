//! A connection's outbox: the push-only handle publishers know a subscriber by.
//!
//! Publishers push pre-encoded frames and move on; they never touch the socket. The queue is
//! bounded in bytes: a push that would overflow it drops what is queued and asks the session
//! to close with 4100, so one slow reader can never hold memory hostage or slow a broadcast.
//! The connection's task drains the queue in batches (one vectored write per batch).
//!
//! The mutex is a `parking_lot` one held for a queue push or a swap, never across an
//! `.await`. The connection's waker sits in the queue under the same lock: the first push
//! after a drain takes it and wakes the task once; later pushes before the task runs find
//! no waker and wake nobody. A drain that finds nothing leaves the waker for the next push,
//! so no wake-up is lost.

use std::collections::VecDeque;
#[cfg(test)]
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;

/// A request that the connection be closed after what is already queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    /// Close code for the close frame; `None` when the peer is gone and no frame should be sent.
    pub code: Option<u16>,
    pub reason: String,
    /// Send `pusher:error` with the same code and reason before the close frame.
    pub announce: bool,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Boxed: set once in a connection's life, so it should not widen every idle outbox.
    close: Option<Box<CloseRequest>>,
    /// The connection's task, while it waits for something to write.
    waker: Option<Waker>,
}

/// Wakes the connection's task, outside the queue's lock.
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    limit: usize,
}

/// What the connection's task should write next.
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Drained {
    Frames(VecDeque<Bytes>),
    Close(VecDeque<Bytes>, CloseRequest),
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            limit,
        }
    }

    /// Queues a frame. Returns false if the connection is closing or has just overflowed.
    /// A single frame larger than the limit is still accepted into an empty queue, so that
    /// one large event does not disconnect every subscriber.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return false;
        }
        if q.bytes + frame.len() > self.limit && !q.frames.is_empty() {
            q.frames = VecDeque::new();
            q.bytes = 0;
            q.close = Some(Box::new(CloseRequest {
                code: Some(crate::protocol::codes::OVER_CAPACITY),
                reason: "Connection too slow: outgoing queue full".to_string(),
                announce: true,
            }));
            let waker = q.waker.take();
            drop(q);
            wake(waker);
            return false;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        let waker = q.waker.take();
        drop(q);
        wake(waker);
        true
    }

    /// Asks the connection's task to close the connection after the frames already queued. The first
    /// request wins.
    pub(crate) fn close(&self, request: CloseRequest) {
        let mut q = self.queue.lock();
        if q.close.is_none() {
            q.close = Some(Box::new(request));
        }
        let waker = q.waker.take();
        drop(q);
        wake(waker);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.queue.lock().close.is_some()
    }

    /// The close request, if the queue overflowed (4100): the frames it held are gone already,
    /// so the connection may act on it at once rather than after what it is still writing.
    pub(crate) fn overflowed(&self) -> Option<CloseRequest> {
        let q = self.queue.lock();
        q.close
            .as_deref()
            .filter(|c| c.code == Some(crate::protocol::codes::OVER_CAPACITY))
            .cloned()
    }

    /// Moves everything queued into `into` (which must be empty) and returns `Ready(None)`,
    /// or `Ready(Some(request))` once a close was asked for (with the frames still queued in
    /// `into`). With nothing queued, keeps `cx`'s waker for the next push.
    ///
    /// The queue's buffer and `into`'s are swapped rather than one of them dropped, so a
    /// connection's frames travel in one allocation that goes back and forth, with no
    /// allocation per delivery. When both are idle, only one is kept.
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
    ) -> Poll<Option<CloseRequest>> {
        debug_assert!(into.is_empty());
        let mut q = self.queue.lock();
        if let Some(c) = &q.close {
            let request = (**c).clone();
            q.bytes = 0;
            std::mem::swap(&mut q.frames, into);
            return Poll::Ready(Some(request));
        }
        if q.frames.is_empty() {
            if q.frames.capacity() == 0 {
                std::mem::swap(&mut q.frames, into);
            } else if into.capacity() > 0 {
                *into = VecDeque::new();
            }
            match &mut q.waker {
                Some(w) => w.clone_from(cx.waker()),
                None => q.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        q.bytes = 0;
        std::mem::swap(&mut q.frames, into);
        Poll::Ready(None)
    }

    /// Takes everything queued, or waits until there is something.
    #[cfg(test)]
    pub(crate) async fn drained(&self) -> Drained {
        let mut frames = VecDeque::new();
        match poll_fn(|cx| self.poll_drain(cx, &mut frames)).await {
            None => Drained::Frames(frames),
            Some(request) => Drained::Close(frames, request),
        }
    }
}

/// The JSON texts of the frames queued in `outbox` (waits for at least one); for tests.
#[cfg(test)]
pub(crate) async fn drained_texts(outbox: &Outbox) -> Vec<String> {
    match outbox.drained().await {
        Drained::Frames(frames) => frames
            .iter()
            .map(|f| {
                let start = match f[1] & 0x7f {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                };
                String::from_utf8_lossy(&f[start..]).to_string()
            })
            .collect(),
        Drained::Close(_, request) => panic!("outbox closed: {request:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn drains_in_order() {
        let o = Outbox::new(1000);
        assert!(o.push(frame(1)));
        assert!(o.push(frame(2)));
        match o.drained().await {
            Drained::Frames(f) => {
                assert_eq!(f.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![1, 2])
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn overflow_drops_queue_and_requests_4100() {
        let o = Outbox::new(100);
        assert!(o.push(frame(60)));
        assert!(!o.push(frame(60)));
        assert!(!o.push(frame(1)), "closing outbox takes nothing more");
        match o.drained().await {
            Drained::Close(f, req) => {
                assert!(f.is_empty());
                assert_eq!(req.code, Some(crate::protocol::codes::OVER_CAPACITY));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_large_frame_fits_an_empty_queue() {
        let o = Outbox::new(100);
        assert!(o.push(frame(500)));
        assert!(!o.is_closing());
    }

    #[tokio::test]
    async fn close_keeps_queued_frames() {
        let o = Outbox::new(100);
        o.push(frame(3));
        o.close(CloseRequest {
            code: Some(4200),
            reason: "bye".into(),
            announce: true,
        });
        match o.drained().await {
            Drained::Close(f, req) => {
                assert_eq!(f.len(), 1);
                assert_eq!(req.code, Some(4200));
            }
            other => panic!("{other:?}"),
        }
    }
}
