//! How many requests the mock is answering at once, and the most it ever
//! was. A request counts from its arrival until the last bytes of its
//! answer are handed to the connection, or the connection drops; so a
//! client cannot see an answer end while it still counts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

#[derive(Default)]
pub(crate) struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

/// One request being answered; dropping it ends the count.
pub(crate) struct Counted(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> Counted {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Counted(Arc::clone(self))
    }

    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer body that ends its request's count just before handing out
/// its last frame.
pub(crate) struct CountedBody {
    inner: Body,
    counted: Option<Counted>,
}

impl CountedBody {
    pub(crate) fn wrap(inner: Body, counted: Counted) -> Body {
        Body::new(CountedBody {
            inner,
            counted: Some(counted),
        })
    }
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let last = match &polled {
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if last {
            this.counted = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
