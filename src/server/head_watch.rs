//! The header-read timeout of HTTP/1 connections, kept by one task for all of them.
//!
//! A connection that is idle (just accepted, or its last response sent) must send a whole
//! request head within `--header-read-timeout`, or it is closed: a slow or silent client
//! cannot hold a connection, and its permit, for long. hyper can time heads itself, but it
//! arms a timer for every request (an allocation, a timer-wheel insertion and removal, a
//! clock read) and reads the socket once more after each request to start it: together
//! about a tenth of what a cache hit costs (`bench/callgrind`). Here a request costs three
//! counter updates, and one task looks at every connection eight times per timeout. A
//! connection is closed when it has had no request in flight and no new request head from the
//! look that first saw it idle until a timeout later: never early, and late by at most two
//! looks. Closing marks the connection's [`WatchedIo`] and wakes its reader: hyper, which is
//! waiting for a head, reads an error and drops the connection. No second descriptor is held.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::BoxError;
use crate::http::ProxyBody;

/// Looks per timeout at each connection.
const LOOKS_PER_TIMEOUT: u32 = 8;

/// Bounds on the time between looks, whatever the timeout: often enough for a timeout of a
/// millisecond to hold within a few, and at least once a second.
const MIN_LOOK_INTERVAL: Duration = Duration::from_millis(5);
const MAX_LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// The watch over a server's HTTP/1 connections. Dropping it ends its task.
pub(super) struct HeadWatch {
    shared: Arc<Shared>,
}

struct Shared {
    watched: Mutex<Vec<Watched>>,
    /// A connection arrived that needs an earlier look than the one planned (or the first
    /// one: the task sleeps while there are none), or the watch ended.
    arrived: Notify,
    /// Nanoseconds between the task's looks now; 0 while there is nothing to watch.
    interval: AtomicU64,
    ended: AtomicBool,
}

/// What one connection has done, as its requests report it.
pub(super) struct Activity {
    /// Request heads received.
    heads: AtomicU64,
    /// Requests whose response has not been all sent (or dropped).
    in_flight: AtomicU64,
    timeout: Duration,
    /// Set by the watch: the connection's reads fail from now on.
    closed: AtomicBool,
    /// The connection's task when its last read was pending, to be woken to see `closed`.
    reader: AtomicWaker,
}

impl Activity {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The watch's record of one connection.
struct Watched {
    activity: Weak<Activity>,
    seen_heads: u64,
    /// The first look that found it idle since its last request.
    idle_since: Option<Instant>,
}

impl Watched {
    /// Whether the connection has been idle for `timeout` at `now`, given what it reports:
    /// `heads` received so far, and whether a request is `busy`.
    fn expired(&mut self, heads: u64, busy: bool, now: Instant, timeout: Duration) -> bool {
        if busy || heads != self.seen_heads {
            self.seen_heads = heads;
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) >= timeout
    }
}

impl HeadWatch {
    /// A watch, with its task on the current runtime.
    pub(super) fn new() -> HeadWatch {
        let watch = HeadWatch::without_task();
        tokio::spawn(keep_watch(Arc::clone(&watch.shared)));
        watch
    }

    fn without_task() -> HeadWatch {
        HeadWatch {
            shared: Arc::new(Shared {
                watched: Mutex::new(Vec::new()),
                arrived: Notify::new(),
                interval: AtomicU64::new(0),
                ended: AtomicBool::new(false),
            }),
        }
    }

    /// Starts watching a connection whose heads must each arrive within `timeout` of it going
    /// idle: serve it through the returned [`WatchedIo`] and its requests through
    /// [`Reported`] with the same [`Activity`].
    pub(super) fn watch(&self, stream: TcpStream, timeout: Duration) -> (WatchedIo, Arc<Activity>) {
        let activity = Arc::new(Activity {
            heads: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            timeout,
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        });
        self.shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Watched {
                activity: Arc::downgrade(&activity),
                seen_heads: 0,
                idle_since: None,
            });
        // Woken only when this connection needs looks sooner than planned: not for every
        // connection, or a burst of them would each cost a look at all the others.
        let planned = self.shared.interval.load(Ordering::Acquire);
        let wanted = u64::try_from(look_interval(timeout).as_nanos()).unwrap_or(u64::MAX);
        if planned == 0 || wanted < planned {
            self.shared.arrived.notify_one();
        }
        let io = WatchedIo {
            stream,
            activity: Arc::clone(&activity),
        };
        (io, activity)
    }
}

/// How often a connection with `timeout` is looked at.
fn look_interval(timeout: Duration) -> Duration {
    (timeout / LOOKS_PER_TIMEOUT).clamp(MIN_LOOK_INTERVAL, MAX_LOOK_INTERVAL)
}

impl Drop for HeadWatch {
    fn drop(&mut self) {
        self.shared.ended.store(true, Ordering::Release);
        self.shared.arrived.notify_one();
    }
}

/// The watch's task: looks at the connections until the watch is dropped.
async fn keep_watch(shared: Arc<Shared>) {
    while !shared.ended.load(Ordering::Acquire) {
        let interval = shared.look(Instant::now());
        let nanos = interval.map_or(0, |i| u64::try_from(i.as_nanos()).unwrap_or(u64::MAX));
        shared.interval.store(nanos, Ordering::Release);
        match interval {
            Some(interval) => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shared.arrived.notified() => {}
                }
            }
            None => shared.arrived.notified().await,
        }
    }
}

impl Shared {
    /// Closes the connections idle for their timeout and forgets the ended ones. Returns
    /// when to look again, or `None` when there is nothing to watch.
    fn look(&self, now: Instant) -> Option<Duration> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let mut shortest: Option<Duration> = None;
        watched.retain_mut(|w| {
            let Some(activity) = w.activity.upgrade() else {
                return false;
            };
            let heads = activity.heads.load(Ordering::Acquire);
            let busy = activity.in_flight.load(Ordering::Acquire) > 0;
            if w.expired(heads, busy, now, activity.timeout) {
                activity.close();
                return false;
            }
            shortest = Some(shortest.map_or(activity.timeout, |s| s.min(activity.timeout)));
            true
        });
        shortest.map(look_interval)
    }
}

/// A connection's socket, whose reads fail once the watch has closed the connection.
pub(super) struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.activity.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head within the header-read timeout",
            )));
        }
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if read.is_pending() {
            self.activity.reader.register(cx.waker());
            // Closed between the check and the registration: the wake was missed.
            if self.activity.closed.load(Ordering::Acquire) {
                cx.waker().wake_by_ref();
            }
        }
        read
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection's service, reporting each request to the connection's [`Activity`].
pub(super) struct Reported<S> {
    pub(super) service: S,
    pub(super) activity: Arc<Activity>,
}

/// One request in flight: its response is done when this is dropped.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl<S> Service<Request<Incoming>> for Reported<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>,
{
    type Response = Response<ReportedBody>;
    type Error = Infallible;
    type Future = ReportedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::Release);
        self.activity.heads.fetch_add(1, Ordering::Release);
        ReportedFuture {
            response: self.service.call(request),
            in_flight: Some(InFlight(Arc::clone(&self.activity))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a reported request; what it holds of the request moves to its body.
    pub(super) struct ReportedFuture<F> {
        #[pin]
        response: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> Future for ReportedFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = Result<Response<ReportedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.response.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| ReportedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that ends its request's time in flight when hyper is done with it.
pub(super) struct ReportedBody {
    body: ProxyBody,
    /// Held only to be dropped with the body.
    _in_flight: Option<InFlight>,
}

impl Body for ReportedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Watched {
        Watched {
            activity: Weak::new(),
            seen_heads: 0,
            idle_since: None,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn idle_for_the_timeout_from_the_first_idle_look_expires() {
        let start = Instant::now();
        let mut w = watched();
        assert!(!w.expired(0, false, start, TIMEOUT));
        assert!(!w.expired(0, false, start + Duration::from_millis(9_999), TIMEOUT));
        assert!(w.expired(0, false, start + TIMEOUT, TIMEOUT));
    }

    #[test]
    fn a_request_head_or_one_in_flight_starts_the_wait_again() {
        let start = Instant::now();
        let mut w = watched();
        assert!(!w.expired(0, false, start, TIMEOUT));
        // A request came and went between two looks.
        assert!(!w.expired(1, false, start + Duration::from_secs(9), TIMEOUT));
        assert!(!w.expired(1, false, start + Duration::from_secs(12), TIMEOUT));
        // A slow request in flight is not idle, however long it takes.
        assert!(!w.expired(2, true, start + Duration::from_secs(19), TIMEOUT));
        assert!(!w.expired(2, true, start + Duration::from_secs(60), TIMEOUT));
        assert!(!w.expired(2, false, start + Duration::from_secs(61), TIMEOUT));
        assert!(!w.expired(2, false, start + Duration::from_secs(70), TIMEOUT));
        assert!(w.expired(2, false, start + Duration::from_secs(71), TIMEOUT));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_closes_an_idle_connection_and_forgets_ended_ones() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _client = TcpStream::connect(address).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let _other_client = TcpStream::connect(address).await.unwrap();
        let (other_server, _) = listener.accept().await.unwrap();
        // Looked at by hand, not by the task.
        let watch = HeadWatch::without_task();
        let (mut io, activity) = watch.watch(server, Duration::from_millis(80));
        let other = watch.watch(other_server, TIMEOUT);
        drop(other);
        // A read waits for the client, and is woken when the watch closes the connection.
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            io.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        // The first idle look, then one a timeout later: closed.
        let interval = watch.shared.look(Instant::now()).expect("one to watch");
        assert_eq!(interval, Duration::from_millis(10));
        assert_eq!(
            watch.shared.watched.lock().unwrap().len(),
            1,
            "the ended one is gone"
        );
        tokio::time::advance(Duration::from_millis(79)).await;
        assert!(watch.shared.look(Instant::now()).is_some());
        assert!(!reading.is_finished());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(watch.shared.look(Instant::now()), None);
        let read = reading.await.unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(activity);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_shorter_timeout_is_looked_at_sooner() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(address).await.unwrap());
            servers.push(listener.accept().await.unwrap().0);
        }
        let watch = HeadWatch::new();
        // Looked at once a second for this one (the longest interval)...
        let (_slow, _slow_activity) = watch.watch(servers.remove(0), Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // ...then one that must be closed after 80 ms arrives while the task sleeps.
        let (mut io, _activity) = watch.watch(servers.remove(0), Duration::from_millis(80));
        let reading = tokio::spawn(async move { io.read(&mut [0u8; 16]).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            reading.is_finished(),
            "not closed within 200 ms: the task slept on"
        );
        let read = reading.await.unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
