//! The HTTP server loop: our own accept loop over hyper's HTTP/1 connection, so every
//! read has a deadline and HTTP can never take the descriptors FastAGI needs.
//!
//! - a connection cap (a semaphore): beyond it a new connection is closed at once;
//! - the cap is bounded by the open-file limit minus a reserve ([`HttpLimits::cap_for`]),
//!   so FastAGI always has descriptors left (Asterisk's calls come first);
//! - per connection, a watchdog: from the first byte of a request to its last header
//!   line `header_timeout`, between requests `idle_timeout` (both close the connection);
//! - per request, the body must arrive within `body_timeout` of the headers (else 408 and
//!   the connection closes), and the response head within `request_timeout` (else 503).
//!   A streamed body (the SSE route) is not timed once its head is out: it lasts as long as
//!   its login, and its connection still counts against the cap.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use bytes::Bytes;
use hyper::{
    body::{Frame, Incoming, SizeHint},
    server::conn::http1,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use super::ApiError;

/// The HTTP side's deadlines and connection cap (`dialgate serve --http-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the first byte of a request to the end of its headers.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in progress.
    pub idle_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_timeout: Duration,
    /// From the end of the headers to the response head (the SSE stream's body excepted).
    pub request_timeout: Duration,
    /// HTTP connections at once (further ones are closed at once).
    pub max_connections: usize,
    /// Descriptors HTTP leaves to FastAGI, the database and the rest of the process.
    pub fd_reserve: usize,
}

impl HttpLimits {
    pub const DEFAULT: HttpLimits = HttpLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 4096,
        fd_reserve: 512,
    };

    /// The connection cap under an open-file limit of `nofile`: `max_connections`, but
    /// never more than `nofile` minus the reserve. The reserve is at most half the limit,
    /// so a very low limit still leaves HTTP something.
    pub fn cap_for(&self, nofile: u64) -> usize {
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        let reserve = self.fd_reserve.min(nofile / 2);
        self.max_connections.min(nofile - reserve).max(1)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
// `rlim_t` is u64 on Linux but not on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                let e = io::Error::last_os_error();
                warn!(error = %e, soft = limit.rlim_cur, hard = limit.rlim_max,
                    "cannot raise the open-file limit to the hard limit");
                return Ok(limit.rlim_cur as u64);
            }
            info!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the open-file limit to the hard limit"
            );
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok(limit.rlim_cur as u64)
}

/// Serves `router` on `listener` with `limits` (`max_connections` taken as is: see
/// [`HttpLimits::cap_for`]) until `shutdown` completes; then stops accepting, lets
/// requests in progress finish and closes idle connections.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let (closing_tx, closing) = watch::channel(false);
    let mut at_cap = false;
    let mut backoff: Option<Duration> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                if backoff.take().is_some() {
                    info!("HTTP accepting connections again");
                }
                pair
            }
            Err(e) => {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    debug!(error = %e, "HTTP accept failed for one connection");
                    continue;
                }
                let pause = match backoff {
                    None => {
                        error!(error = %e, "HTTP cannot accept: out of file descriptors or memory; \
                            backing off (raise `ulimit -n` or lower --http-max-connections)");
                        Duration::from_millis(10)
                    }
                    Some(p) => (p * 2).min(Duration::from_secs(1)),
                };
                backoff = Some(pause);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !at_cap {
                warn!(%peer, limit = limits.max_connections,
                    "HTTP connection cap reached: closing new connections at once");
                at_cap = true;
            }
            drop(stream);
            continue;
        };
        at_cap = false;
        // Without NODELAY the small SSE `verified` event sat ~40 ms in Nagle's buffer.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let closing = closing.clone();
        tracker.spawn(async move {
            connection(stream, peer, router, limits, closing).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// What a connection's watchdog needs: requests in progress, when the connection went
/// idle, when the first byte of the next request came.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    in_progress: usize,
    idle_since: Instant,
    first_byte: Option<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_progress: 0,
                idle_since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes came in.
    fn on_read(&self) {
        let mut state = self.lock();
        if state.in_progress == 0 && state.first_byte.is_none() {
            state.first_byte = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request's headers are in: until its response is written, no deadline of ours.
    fn begin(self: &Arc<Self>) -> InProgress {
        let mut state = self.lock();
        state.in_progress += 1;
        state.first_byte = None;
        drop(state);
        self.changed.notify_one();
        InProgress(self.clone())
    }

    /// The deadline in force and what it is, or `None` while a request is in progress.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let state = self.lock();
        if state.in_progress > 0 {
            None
        } else if let Some(first) = state.first_byte {
            Some((first + limits.header_timeout, "header"))
        } else {
            Some((state.idle_since + limits.idle_timeout, "idle"))
        }
    }
}

/// A request in progress; dropped with its response body (written out, or abandoned).
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_progress -= 1;
        if state.in_progress == 0 {
            state.idle_since = Instant::now();
            state.first_byte = None;
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// The socket, telling `Activity` when bytes come in.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
}

/// One connection: hyper's HTTP/1 state machine, and the watchdog that closes it when
/// the header or idle deadline passes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<HttpLimits>,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            handle(
                request,
                peer,
                router.clone(),
                limits.clone(),
                activity.begin(),
            )
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Ours instead (`Activity`): hyper's would also time the idle wait between requests.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&limits);
        if shutting_down && deadline.is_some() {
            // No request in progress (idle, or half a header): nothing to finish.
            debug!(%peer, "HTTP connection closed: shutting down");
            return;
        }
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = sleep => {
                // Still the same deadline (no request began meanwhile)?
                if let Some((at, what)) = activity.deadline(&limits) {
                    if at <= Instant::now() {
                        debug!(%peer, "HTTP connection closed: {what} timeout");
                        return;
                    }
                }
            }
            _ = closing.wait_for(|closing| *closing), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request: the peer address for `ClientIp`, the body deadline, the response budget.
async fn handle(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    limits: Arc<HttpLimits>,
    in_progress: InProgress,
) -> Result<Response, Infallible> {
    let body_timed_out = Arc::new(AtomicBool::new(false));
    let mut request: Request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
            timed_out: body_timed_out.clone(),
        })
    });
    request.extensions_mut().insert(ConnectInfo(peer));
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match tokio::time::timeout(limits.request_timeout, router.oneshot(request)).await
    {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => {
            warn!(%peer, %method, %path, budget = ?limits.request_timeout,
                "HTTP request timed out (--http-request-timeout): 503");
            let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout")
                .detail("the request took too long")
                .into_response();
            close_after(&mut response);
            super::pages::common_headers(response).await
        }
    };
    let response = if body_timed_out.load(Ordering::Relaxed) {
        warn!(%peer, %method, %path, "HTTP request body too slow (--http-body-timeout): 408");
        let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout")
            .detail("the request body did not arrive in time")
            .into_response();
        close_after(&mut response);
        super::pages::common_headers(response).await
    } else {
        response
    };
    Ok(response.map(|body| {
        Body::new(TrackedBody {
            inner: body,
            _in_progress: in_progress,
        })
    }))
}

/// `Connection: close`: the request's body may be half read, the connection is not reused.
fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// The error a request body gives when it missed its deadline.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body timed out")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that must be complete by a deadline (all of it, not per chunk: one
/// byte a second is no body at all).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request "in progress" until written out or dropped.
struct TrackedBody {
    inner: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_to_fastagi() {
        let limits = HttpLimits::DEFAULT;
        assert_eq!(limits.cap_for(1_048_576), 4096);
        assert_eq!(limits.cap_for(1024), 512);
        assert_eq!(limits.cap_for(4096), 3584);
        // A tiny limit: the reserve shrinks to half.
        assert_eq!(limits.cap_for(64), 32);
        assert_eq!(limits.cap_for(1), 1);
        let small = HttpLimits {
            max_connections: 10,
            ..HttpLimits::DEFAULT
        };
        assert_eq!(small.cap_for(1024), 10);
    }
}
