//! Test helpers: tiny backends on 127.0.0.1:0 that answer with their own id, misbehaving
//! backends, an HTTP client, and a bounded load loop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Front, Mode};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const LOCAL: &str = "127.0.0.1:0";

pub fn local() -> SocketAddr {
    LOCAL.parse().expect("valid address")
}

/// A front on 127.0.0.1:0 with `backend` current.
pub async fn front(mode: Mode, backend: Option<Backend>) -> Front {
    let front = Front::bind(local(), mode).await.expect("bind the front");
    front.set_backend(backend);
    front
}

/// Polls `condition` every 5 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `future`, panicking if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

/// Counts a connection as open while alive.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(counter: &Arc<AtomicUsize>) -> Open {
        counter.fetch_add(1, Ordering::SeqCst);
        Open(counter.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP backend. Routes: `/slow?ms=N` sleeps N ms first; `/hold?ms=N` too, counted in
/// [`HttpBackend::holding`] while it sleeps; `/echo` answers with the request
/// body; `/headers` lists the request headers, one `name: value` a line; `/close` answers with
/// `Connection: close`; anything else answers with the id. Every answer carries `x-backend: id`.
pub struct HttpBackend {
    pub id: String,
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    served: Arc<AtomicU64>,
    holding: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl HttpBackend {
    pub fn backend(&self) -> Backend {
        Backend::new(self.id.clone(), self.addr)
    }

    /// Connections currently open to this backend.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests this backend has started to answer.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// `/hold` requests sleeping right now.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn http_backend(id: &str) -> HttpBackend {
    let listener = TcpListener::bind(LOCAL).await.expect("bind a backend");
    let addr = listener.local_addr().expect("backend address");
    let open = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let backend = HttpBackend {
        id: id.to_owned(),
        addr,
        open: open.clone(),
        served: served.clone(),
        holding: holding.clone(),
        stop: stop.clone(),
    };
    let id: Arc<str> = id.into();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            let open = Open::new(&open);
            let (id, served, holding, stop) =
                (id.clone(), served.clone(), holding.clone(), stop.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    served.fetch_add(1, Ordering::SeqCst);
                    answer(id.clone(), holding.clone(), request)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = stop.cancelled() => {}
                }
                drop(open);
            });
        }
    });
    backend
}

async fn answer(
    id: Arc<str>,
    holding: Arc<AtomicUsize>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut close = false;
    let ms = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(500);
    let body = match request.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Bytes::from(id.to_string())
        }
        "/hold" => {
            let held = Open::new(&holding);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            drop(held);
            Bytes::from(id.to_string())
        }
        "/echo" => match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::from_static(b"body error"),
        },
        "/headers" => {
            let mut lines: Vec<String> = request
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
                .collect();
            lines.sort();
            Bytes::from(lines.join("\n"))
        }
        "/close" => {
            close = true;
            Bytes::from(id.to_string())
        }
        _ => Bytes::from(id.to_string()),
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-backend", value);
    }
    if close {
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// How a raw backend misbehaves after reading a request head.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Writes half a status line, then closes.
    CloseBeforeHead,
    /// Sends a head promising 100 bytes, 5 bytes of body, then closes.
    CloseMidBody,
}

/// A backend that misbehaves on every connection; stops when the token is dropped.
pub async fn raw_backend(misbehaviour: Misbehaviour) -> (SocketAddr, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind(LOCAL).await.expect("bind a raw backend");
    let addr = listener.local_addr().expect("backend address");
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let bytes: &[u8] = match misbehaviour {
                    Misbehaviour::CloseBeforeHead => b"HTTP/1.1 200 OK\r\nContent-Le",
                    Misbehaviour::CloseMidBody => {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
                    }
                };
                let _ = stream.write_all(bytes).await;
                let _ = stream.flush().await;
            });
        }
    });
    (addr, guard)
}

/// An address on 127.0.0.1 where nothing listens (connect is refused).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind(LOCAL).await.expect("bind");
    listener.local_addr().expect("address")
}

/// A TCP backend: for every line it reads it writes back `"{id} {line}"`; at end of input it
/// half-closes its side too.
pub struct EchoBackend {
    pub id: String,
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl EchoBackend {
    pub fn backend(&self) -> Backend {
        Backend::new(self.id.clone(), self.addr)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn echo_backend(id: &str) -> EchoBackend {
    let listener = TcpListener::bind(LOCAL)
        .await
        .expect("bind an echo backend");
    let addr = listener.local_addr().expect("backend address");
    let open = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let backend = EchoBackend {
        id: id.to_owned(),
        addr,
        open: open.clone(),
        stop: stop.clone(),
    };
    let id = id.to_owned();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let open = Open::new(&open);
            let (id, stop) = (id.clone(), stop.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let echo = async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if write
                            .write_all(format!("{id} {line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = write.shutdown().await;
                };
                tokio::select! {
                    _ = echo => {}
                    _ = stop.cancelled() => {}
                }
                drop(open);
            });
        }
    });
    backend
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Client { sender, addr })
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        let request = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// One request on a fresh connection that asks to be closed afterwards.
pub async fn get_once(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let mut client = Client::connect(addr).await?;
    let request = Request::get(path)
        .header("host", addr.to_string())
        .header("connection", "close")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    client.send(request).await
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: u64,
    pub failures: Vec<String>,
    /// Per connection, the bodies it received, run-length encoded: `[("A", 812), ("B", 390)]`.
    pub runs: Vec<Vec<(String, u64)>>,
}

impl Load {
    pub fn backends_seen(&self) -> BTreeMap<String, u64> {
        let mut seen = BTreeMap::new();
        for runs in &self.runs {
            for (body, n) in runs {
                *seen.entry(body.clone()).or_default() += n;
            }
        }
        seen
    }
}

/// Closed-loop load on `path`: one task per entry of `keep_alive` (true: one keep-alive connection;
/// false: a new connection per request), each until `stop`, `per_connection` requests or
/// `limit` time, whichever comes first.
pub async fn load(
    addr: SocketAddr,
    path: &'static str,
    keep_alive: Vec<bool>,
    stop: CancellationToken,
    per_connection: u64,
    limit: Duration,
) -> Load {
    let deadline = Instant::now() + limit;
    let mut tasks = Vec::new();
    for keep_alive in keep_alive {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut failures = Vec::new();
            let mut runs: Vec<(String, u64)> = Vec::new();
            let mut client = None;
            for _ in 0..per_connection {
                if stop.is_cancelled() || Instant::now() >= deadline {
                    break;
                }
                let reply = if keep_alive {
                    if client.is_none() {
                        match Client::connect(addr).await {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                failures.push(e);
                                continue;
                            }
                        }
                    }
                    match client.as_mut() {
                        Some(c) => c.get(path).await,
                        None => continue,
                    }
                } else {
                    get_once(addr, path).await
                };
                match reply {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        ok += 1;
                        match runs.last_mut() {
                            Some((body, n)) if *body == reply.body => *n += 1,
                            _ => runs.push((reply.body, 1)),
                        }
                    }
                    Ok(reply) => failures.push(format!("{} {}", reply.status, reply.body)),
                    Err(e) => {
                        failures.push(e);
                        client = None;
                    }
                }
            }
            (ok, failures, runs)
        }));
    }
    let mut load = Load::default();
    for task in tasks {
        let (ok, failures, runs) = task.await.expect("load task");
        load.ok += ok;
        load.failures.extend(failures);
        load.runs.push(runs);
    }
    load
}

/// An address where connecting hangs: a listener with a backlog of 0, already full, that never
/// accepts. Keep the returned value alive as long as the address is in use.
pub async fn blackhole() -> (SocketAddr, tokio::net::TcpListener, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(local()).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("address");
    let filler = TcpStream::connect(addr).await.expect("fill the backlog");
    (addr, listener, filler)
}
