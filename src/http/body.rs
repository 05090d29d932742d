//! The response body: a complete buffer (`Full<Bytes>`, almost every response) or, for a
//! few long-lived responses (Server-Sent Events), a stream of chunks.
//!
//! A stream cannot fail (`Error = Infallible`): whatever can go wrong is checked by its
//! handler before it answers, so a failing handler still answers with a clean JSON error.
//! A panic while the stream produces a chunk ends the body (the client sees the response
//! end) instead of taking the connection's task down.

use std::any::Any;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};

/// A response body; see the module docs.
pub struct Body(Inner);

enum Inner {
    Full(Full<Bytes>),
    Stream(Streaming),
}

struct Streaming {
    chunks: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    ended: bool,
    /// Values that live as long as the body (the connection's in-flight mark).
    held: Vec<Box<dyn Any + Send>>,
}

impl Body {
    /// A complete body.
    #[must_use]
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self(Inner::Full(Full::new(bytes.into())))
    }

    #[must_use]
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A body sent chunk by chunk as `chunks` yields them; it ends when `chunks` does.
    pub fn stream(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Self(Inner::Stream(Streaming {
            chunks: Box::pin(chunks),
            ended: false,
            held: Vec::new(),
        }))
    }

    /// Whether this body is a stream (a long-lived response).
    #[must_use]
    pub fn is_stream(&self) -> bool {
        matches!(self.0, Inner::Stream(_))
    }

    /// Keeps `value` alive until the body is dropped (a stream only; a full body drops it
    /// at once).
    pub fn hold(&mut self, value: impl Any + Send) {
        if let Inner::Stream(stream) = &mut self.0 {
            stream.held.push(Box::new(value));
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Full<Bytes>> for Body {
    fn from(full: Full<Bytes>) -> Self {
        Self(Inner::Full(full))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Self::full(bytes)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Full(full) => f.debug_tuple("Body::Full").field(full).finish(),
            Inner::Stream(stream) => f
                .debug_struct("Body::Stream")
                .field("ended", &stream.ended)
                .finish_non_exhaustive(),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Inner::Full(full) => Pin::new(full).poll_frame(cx),
            Inner::Stream(stream) => {
                if stream.ended {
                    return Poll::Ready(None);
                }
                let chunks = &mut stream.chunks;
                match std::panic::catch_unwind(AssertUnwindSafe(|| chunks.as_mut().poll_next(cx))) {
                    Ok(Poll::Ready(Some(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    Ok(Poll::Ready(None)) => {
                        stream.ended = true;
                        Poll::Ready(None)
                    }
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(_) => {
                        tracing::error!("a streamed response panicked; ending it");
                        stream.ended = true;
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(full) => full.is_end_stream(),
            Inner::Stream(stream) => stream.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(full) => full.size_hint(),
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;

    use super::*;

    #[tokio::test]
    async fn full_and_streamed_bodies() {
        let full = Body::full("hello");
        assert_eq!(full.size_hint().exact(), Some(5));
        assert!(!full.is_stream());
        assert_eq!(full.collect().await.unwrap().to_bytes(), "hello");

        let chunks = futures_util::stream::iter([&b"a"[..], b"b", b"c"].map(Bytes::from_static));
        let mut streamed = Body::stream(chunks);
        assert!(streamed.is_stream());
        assert_eq!(streamed.size_hint().exact(), None);
        let dropped = Arc::new(AtomicBool::new(false));
        struct Mark(Arc<AtomicBool>);
        impl Drop for Mark {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        streamed.hold(Mark(Arc::clone(&dropped)));
        assert_eq!(streamed.collect().await.unwrap().to_bytes(), "abc");
        assert!(
            dropped.load(Ordering::SeqCst),
            "held values go with the body"
        );
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_the_body() {
        let chunks = futures_util::stream::iter(0..3).map(|i| {
            assert!(i < 1, "boom");
            Bytes::from_static(b"x")
        });
        let mut body = Body::stream(chunks);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "x");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }
}
