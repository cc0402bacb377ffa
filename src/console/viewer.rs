//! One open console page: a bounded queue of encoded lines, and the HTTP response body that
//! drains it as a stream of server-sent events.
//!
//! The queue holds at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes; a line that does not
//! fit is dropped and counted, and the page is told the count before the next line it gets.
//! Pushing never waits: the one lock is held to append, never across I/O.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use serde_json::json;

use super::{Console, encode};

/// Lines a viewer may have waiting.
pub(crate) const MAX_LINES: usize = 4096;
/// Bytes a viewer may have waiting.
pub(crate) const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes handed to hyper in one frame.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Viewer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<Bytes>,
    bytes: usize,
    /// Lines lost since the page last heard of a loss.
    dropped: u64,
    waker: Option<Waker>,
    closed: bool,
}

impl Viewer {
    /// Queues a line, or counts it as dropped when the queue is full.
    pub(crate) fn push(&self, line: Bytes) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        if state.lines.len() >= MAX_LINES || state.bytes + line.len() > MAX_BYTES {
            state.dropped += 1;
            return;
        }
        state.bytes += line.len();
        state.lines.push_back(line);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the stream once what is queued has gone out.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Everything queued (for tests).
    #[cfg(test)]
    pub(crate) fn take_all(&self) -> Vec<Bytes> {
        let mut state = self.state.lock();
        state.bytes = 0;
        state.lines.drain(..).collect()
    }

    /// The next chunk of the stream: a note of dropped lines first, then queued lines up to
    /// [`CHUNK`] bytes. `None` when closed and drained.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.state.lock();
        let mut out = BytesMut::new();
        if state.dropped > 0 {
            let count = std::mem::take(&mut state.dropped);
            out.extend_from_slice(&encode("dropped", json!({ "count": count }), None));
        }
        while let Some(line) = state.lines.front() {
            if !out.is_empty() && out.len() + line.len() > CHUNK {
                break;
            }
            let Some(line) = state.lines.pop_front() else {
                break;
            };
            state.bytes -= line.len();
            out.extend_from_slice(&line);
        }
        if !out.is_empty() {
            return Poll::Ready(Some(out.freeze()));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The response body of `GET /console/api/apps/{id}/stream`. Dropping it (the page went
/// away) takes the viewer off the console.
pub(crate) struct Stream {
    viewer: Arc<Viewer>,
    console: Arc<Console>,
}

impl Stream {
    pub(crate) fn new(console: Arc<Console>, viewer: Arc<Viewer>) -> Self {
        Stream { viewer, console }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.viewer.close();
        self.console.leave(&self.viewer);
    }
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.viewer
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_full_queue_drops_and_says_how_many() {
        let viewer = Viewer::default();
        for i in 0..MAX_LINES + 5 {
            viewer.push(Bytes::from(format!("data: {i}\n\n")));
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut text = String::new();
        while let Poll::Ready(Some(chunk)) = viewer.poll_chunk(&mut cx) {
            text.push_str(std::str::from_utf8(&chunk).unwrap_or(""));
        }
        assert!(text.starts_with("data: {\"count\":5,"), "{}", &text[..40]);
        assert!(text.contains("data: 0\n\n"));
        assert!(text.ends_with(&format!("data: {}\n\n", MAX_LINES - 1)));
        viewer.push(Bytes::from_static(b"data: again\n\n"));
        assert!(
            matches!(viewer.poll_chunk(&mut cx), Poll::Ready(Some(c)) if &c[..] == b"data: again\n\n")
        );
        viewer.close();
        assert!(matches!(viewer.poll_chunk(&mut cx), Poll::Ready(None)));
    }
}
