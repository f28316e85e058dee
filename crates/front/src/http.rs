//! HTTP mode: an HTTP/1.1 reverse proxy.
//!
//! Clients talk keep-alive HTTP/1.1 to the front (hyper's server). Each request picks the
//! backend current at that moment and borrows a connection from that backend's small pool of
//! `http1::SendRequest`s (or opens one, within the connect timeout). Bodies stream both ways.
//! The borrowed connection goes back to the pool when the response body has been read to its
//! end, and the request counts as in flight to its backend until then.
//!
//! Failures where the request provably never left the front (no backend, connection refused or
//! timed out, connection closed before hyper wrote the request) are retried once on the backend
//! current then, then answered with 503. A backend that fails after the request was sent gets a
//! 502; one that fails after the response head was sent makes the front close the client
//! connection (the only honest signal left).
//!
//! Every wait is bounded: a backend that sends no response head within the response timeout
//! gets the client a 504; a request body that stays silent past the body idle timeout gets it a
//! 408 (and both connections close); a request head slower than the header timeout gets a 408
//! and an HTTP/2 preface a 505 before the connection closes. A backend connection goes back to
//! the pool only when its request *and* its response are both complete, and a pooled connection
//! that is not ready at once is never waited for.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::{InFlight, Upstream};
use crate::Shared;

/// Attempts on a freshly opened connection (or with no backend) before answering 503.
const FRESH_ATTEMPTS: u32 = 2;
/// Upper bound on all attempts, reused pooled connections that turned out stale included.
const MAX_ATTEMPTS: u32 = 8;
/// A pooled connection not ready this long after it was pooled is wedged, not finishing up.
const NOT_READY_GRACE: Duration = Duration::from_millis(100);

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), besides any header
/// the `Connection` header names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) async fn serve_client<C>(shared: &Arc<Shared>, client: C, peer: SocketAddr)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(proxy(&shared, peer, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_read_timeout);
    let mut connection = builder.serve_connection(TokioIo::new(client), service);
    let served = tokio::select! {
        served = &mut connection => served,
        _ = shared.shutdown.cancelled() => return,
    };
    let Err(e) = served else {
        return;
    };
    tracing::debug!(error = %e, %peer, "client connection ended with an error");
    // hyper answers most malformed heads itself (400, 431, 414) and closes; a slow head and an
    // HTTP/2 preface it just closes, so the front says why before it does.
    let last_words: Option<&[u8]> = if e.is_timeout() {
        Some(HEAD_TIMEOUT)
    } else if e.is_parse_version_h2() {
        shared.stats.malformed();
        Some(H2_PREFACE)
    } else {
        if e.is_parse() || e.is_parse_too_large() {
            shared.stats.malformed();
        }
        None
    };
    if let Some(words) = last_words {
        let mut io = connection.into_parts().io.into_inner();
        let said = async {
            io.write_all(words).await?;
            io.shutdown().await
        };
        // Bounded: a client that does not read gets no more of the front's time.
        let _ = tokio::time::timeout(Duration::from_secs(1), said).await;
    }
}

const HEAD_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 45\r\nconnection: close\r\n\r\nthe request head did not arrive in good time\n";
const H2_PREFACE: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nconnection: close\r\n\r\nthis front speaks HTTP/1.1, not HTTP/2\n";

/// Why no backend answered.
enum Unavailable {
    NoBackend,
    Unreachable { id: String, addr: SocketAddr },
}

async fn proxy(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<FrontBody> {
    shared.stats.request_received();
    if request.method() == Method::CONNECT {
        return front_response(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported by this front",
        );
    }
    let started = Instant::now();
    let body = Arc::new(BodyState::default());
    let mut request = prepare_request(request, peer, &body, shared.options.body_idle_timeout);
    let mut unavailable = Unavailable::NoBackend;
    let mut fresh_attempts = 0;
    for _ in 0..MAX_ATTEMPTS {
        if fresh_attempts == FRESH_ATTEMPTS {
            break;
        }
        let Some(in_flight) = shared.routes.pick() else {
            fresh_attempts += 1;
            unavailable = Unavailable::NoBackend;
            continue;
        };
        let upstream = in_flight.upstream().clone();
        let unreachable = Unavailable::Unreachable {
            id: upstream.backend.id.clone(),
            addr: upstream.backend.addr,
        };
        let (mut sender, reused) = match checkout(shared, &upstream).await {
            Ok(checked_out) => checked_out,
            Err(e) => {
                tracing::debug!(backend = %upstream.backend.id, error = ?e, "cannot connect to backend");
                fresh_attempts += 1;
                unavailable = unreachable;
                continue;
            }
        };
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&upstream.backend.addr.to_string()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        let sent = {
            let send = sender.try_send_request(request);
            tokio::pin!(send);
            loop {
                match tokio::time::timeout(shared.options.response_timeout, send.as_mut()).await {
                    Ok(sent) => break sent,
                    // The client is still sending its body (its own idle timeout bounds that):
                    // the backend's time to answer starts when the request is complete.
                    Err(_) if body.streaming() => continue,
                    Err(_) => {
                        tracing::warn!(backend = %upstream.backend.id, "backend sent no response in time");
                        // The connection is dropped with the exchange: it is never pooled.
                        return front_response(
                            shared,
                            StatusCode::GATEWAY_TIMEOUT,
                            &format!(
                                "backend {} did not answer within {} s",
                                upstream.backend.id,
                                shared.options.response_timeout.as_secs_f64()
                            ),
                        );
                    }
                }
            }
        };
        match sent {
            Ok(response) => {
                return respond(shared, response, sender, in_flight, started, body);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    // The connection died before hyper wrote the request: safe to try again.
                    tracing::debug!(backend = %upstream.backend.id, reused, error = %e.error(), "request not sent; retrying");
                    request = unsent;
                    if !reused {
                        fresh_attempts += 1;
                    }
                    unavailable = unreachable;
                }
                None if body.timed_out.load(Ordering::SeqCst) => {
                    tracing::debug!(error = %e.into_error(), "client request body stalled");
                    let mut response = front_response(
                        shared,
                        StatusCode::REQUEST_TIMEOUT,
                        &format!(
                            "the request body stalled for {} s",
                            shared.options.body_idle_timeout.as_secs_f64()
                        ),
                    );
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return response;
                }
                None if body.failed.load(Ordering::SeqCst) => {
                    // Reading the client's request body failed (bad chunk, cut short): the
                    // client's fault, not the backend's.
                    tracing::debug!(error = %e.into_error(), "client request body failed");
                    return front_response(
                        shared,
                        StatusCode::BAD_REQUEST,
                        "the request body is malformed or incomplete",
                    );
                }
                None => {
                    tracing::warn!(backend = %upstream.backend.id, error = %e.into_error(), "backend failed before answering");
                    return front_response(
                        shared,
                        StatusCode::BAD_GATEWAY,
                        "the backend failed before answering",
                    );
                }
            },
        }
    }
    let message = match unavailable {
        Unavailable::NoBackend => "no backend is serving this address".to_owned(),
        Unavailable::Unreachable { id, addr } => format!("backend {id} at {addr} is unreachable"),
    };
    front_response(shared, StatusCode::SERVICE_UNAVAILABLE, &message)
}

/// Error from opening a connection to a backend.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect failed")]
    Io(#[source] std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("HTTP handshake failed")]
    Handshake(#[source] hyper::Error),
}

/// An idle pooled connection that is still usable, or a new one; `true` when reused.
async fn checkout(
    shared: &Arc<Shared>,
    upstream: &Arc<Upstream>,
) -> Result<(SendRequest<ClientBody>, bool), ConnectError> {
    // Never wait on a pooled connection: one that is not ready at once is busy or wedged. It
    // goes back unless it has been in the pool a while (then it is wedged and dropped).
    let mut not_ready = Vec::new();
    let mut found = None;
    while let Some((mut sender, pooled_at)) = upstream.take_idle() {
        if sender.is_closed() {
            continue;
        }
        match std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
            Poll::Ready(Ok(())) => {
                found = Some(sender);
                break;
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending if pooled_at.elapsed() < NOT_READY_GRACE => {
                not_ready.push((sender, pooled_at))
            }
            Poll::Pending => {}
        }
    }
    for (sender, pooled_at) in not_ready {
        upstream.put_back(sender, pooled_at, shared.options.max_idle_per_backend);
    }
    if let Some(sender) = found {
        return Ok((sender, true));
    }
    connect(shared, upstream)
        .await
        .map(|sender| (sender, false))
}

async fn connect(
    shared: &Arc<Shared>,
    upstream: &Arc<Upstream>,
) -> Result<SendRequest<ClientBody>, ConnectError> {
    let stream = tokio::time::timeout(
        shared.options.connect_timeout,
        TcpStream::connect(upstream.backend.addr),
    )
    .await
    .map_err(|_| ConnectError::Timeout)?
    .map_err(ConnectError::Io)?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    let cut = upstream.cut.clone();
    let id = upstream.backend.id.clone();
    shared.tasks.spawn(async move {
        tokio::select! {
            ended = connection => if let Err(e) = ended {
                tracing::debug!(backend = %id, error = %e, "backend connection ended with an error");
            },
            _ = cut.cancelled() => {}
        }
    });
    Ok(sender)
}

/// Makes a client request fit to forward: origin-form target, no hop-by-hop headers,
/// `X-Forwarded-For` extended with the client's address, HTTP/1.1 to the backend.
fn prepare_request(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &Arc<BodyState>,
    idle_timeout: Duration,
) -> Request<ClientBody> {
    let (mut parts, body) = request.into_parts();
    if body.is_end_stream() {
        state.done.store(true, Ordering::SeqCst);
    }
    let body = ClientBody {
        inner: body,
        state: state.clone(),
        idle_timeout,
        idle: None,
    };
    if parts.uri.authority().is_some() {
        if !parts.headers.contains_key(header::HOST) {
            if let Some(Ok(host)) = parts
                .uri
                .authority()
                .map(|a| HeaderValue::from_str(a.as_str()))
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
    }
    strip_hop_by_hop(&mut parts.headers);
    let client = peer.ip().to_string();
    let forwarded: Vec<&str> = parts
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = if forwarded.is_empty() {
        client
    } else {
        format!("{}, {client}", forwarded.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        parts.headers.insert(X_FORWARDED_FOR, value);
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// True when the message asks to close the connection after it.
fn wants_close(headers: &HeaderMap) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("close"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        // `Connection: host` must not make the request lose its Host.
        .filter(|name| name != header::HOST)
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // `Upgrade` is hop-by-hop too; this front does not tunnel upgraded connections (use TCP mode
    // for WebSocket-like protocols), so the backend must not be offered one.
    headers.remove(header::UPGRADE);
}

fn respond(
    shared: &Arc<Shared>,
    response: Response<Incoming>,
    sender: SendRequest<ClientBody>,
    in_flight: InFlight,
    started: Instant,
    request: Arc<BodyState>,
) -> Response<FrontBody> {
    let (mut parts, body) = response.into_parts();
    let reusable = parts.version == Version::HTTP_11 && !wants_close(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    shared.stats.response(parts.status, Some(started.elapsed()));
    let lease = Lease {
        shared: shared.clone(),
        sender,
        reusable,
        in_flight,
        request,
    };
    Response::from_parts(
        parts,
        FrontBody::Upstream {
            body,
            lease: Some(lease),
        },
    )
}

/// A response the front writes itself: plain text, counted as a front error when 5xx.
fn front_response(shared: &Shared, status: StatusCode, message: &str) -> Response<FrontBody> {
    shared.stats.response(status, None);
    let mut response = Response::new(FrontBody::Text(Some(Bytes::from(format!("{message}\n")))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A backend connection borrowed for one exchange, and the in-flight mark of that exchange.
struct Lease {
    shared: Arc<Shared>,
    sender: SendRequest<ClientBody>,
    reusable: bool,
    in_flight: InFlight,
    /// The request's body: a connection whose request is still being written is not idle.
    request: Arc<BodyState>,
}

impl Lease {
    /// The response body was read to its end: the connection can carry the next request if
    /// its request was sent whole too.
    fn finish(self) {
        let Lease {
            shared,
            mut sender,
            reusable,
            in_flight,
            request,
        } = self;
        if reusable && request.done.load(Ordering::SeqCst) {
            let max_idle = shared.options.max_idle_per_backend;
            let upstream = in_flight.upstream().clone();
            // The body's end can reach us a moment before hyper's connection task is ready for
            // the next request: pool it once it is, so that the pool holds ready connections
            // and a request never waits on one.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match sender.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => upstream.put_idle(sender, max_idle),
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    let wait = shared.options.connect_timeout;
                    shared.tasks.spawn(async move {
                        if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                            upstream.put_idle(sender, max_idle);
                        }
                    });
                }
            }
        }
        // The in-flight mark drops last, after the connection is back in (or out of) the pool.
        drop(in_flight);
    }
}

/// What became of a request body: read whole, failed (the client's fault: 400), or silent past
/// the idle timeout (408).
#[derive(Default)]
pub(crate) struct BodyState {
    done: AtomicBool,
    failed: AtomicBool,
    timed_out: AtomicBool,
}

impl BodyState {
    /// Still being sent by the client.
    fn streaming(&self) -> bool {
        !self.done.load(Ordering::SeqCst) && !self.failed.load(Ordering::SeqCst)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body on its way to a backend. It records how it ended ([`BodyState`]) and
/// fails when the client sends nothing for `idle_timeout`.
pub(crate) struct ClientBody {
    inner: Incoming,
    state: Arc<BodyState>,
    idle_timeout: Duration,
    /// Armed while the client is silent; made on the first wait only.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.failed.store(true, Ordering::SeqCst);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.state.done.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.state.timed_out.store(true, Ordering::SeqCst);
                    this.state.failed.store(true, Ordering::SeqCst);
                    return Poll::Ready(Some(Err("the request body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of a response to a client.
enum FrontBody {
    /// Streamed from a backend; the lease ends when the body does.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
    },
    /// Written by the front.
    Text(Option<Bytes>),
}

impl Body for FrontBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            FrontBody::Upstream { body, lease } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(lease) = lease.take() {
                            lease.finish();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(lease) = lease.take() {
                            lease.shared.stats.upstream_aborted();
                            // Dropping the lease drops the connection: it cannot be reused.
                            drop(lease);
                        }
                    }
                    _ => {}
                }
                polled
            }
            FrontBody::Text(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FrontBody::Upstream { body, .. } => body.is_end_stream(),
            FrontBody::Text(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FrontBody::Upstream { body, .. } => body.size_hint(),
            FrontBody::Text(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl Drop for FrontBody {
    fn drop(&mut self) {
        if let FrontBody::Upstream { body, lease } = self {
            if let Some(lease) = lease.take() {
                // A body hyper never had to poll (HEAD, 204, 304, empty) is complete; one the
                // client walked away from is not, and its connection must not be reused.
                if body.is_end_stream() {
                    lease.finish();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                HeaderValue::from_str(value).expect("valid value"),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_stripped() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret, host"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("host", "example"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn connection_close_is_detected_among_tokens() {
        assert!(wants_close(&headers(&[("connection", "Upgrade, Close")])));
        assert!(!wants_close(&headers(&[("connection", "keep-alive")])));
        assert!(!wants_close(&HeaderMap::new()));
    }
}
