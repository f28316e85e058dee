//! bakeoff's front: one stable listening address in front of a backend that can be replaced
//! while traffic flows.
//!
//! A [`Front`] listens on an address and forwards to the *current* [`Backend`]:
//!
//! - in [`Mode::Http`] it is an HTTP/1.1 reverse proxy, and every *request* picks the backend that
//!   is current when it is forwarded, so a client's keep-alive connection survives a switch;
//! - in [`Mode::Tcp`] it copies bytes both ways, and every client *connection* is pinned to the
//!   backend that was current when it was accepted.
//!
//! [`Front::set_backend`] flips new traffic atomically; [`Front::drain`] then waits for what is
//! still in flight to the old backend and closes its connections. [`Front::stats`] and
//! [`Front::window`] report what the front saw. The [`control`] module is the transport of the
//! `serve` process's control socket.
//!
//! The crate knows nothing about engines: a backend is an id and a socket address.

pub mod control;
mod error;
mod http;
mod io;
mod stats;
mod tcp;
mod upstream;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::FrontError;
pub use stats::{Latency, ResponseClasses, Stats, Window};

use stats::Recorder;
use upstream::Routes;

/// What the front forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/1.1 reverse proxy; the backend is chosen per request.
    Http,
    /// Plain TCP relay; the backend is chosen per connection.
    Tcp,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        })
    }
}

/// Where traffic goes: an id chosen by the caller (an instance name, unique per backend) and the
/// address the backend listens on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
}

impl Backend {
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Backend {
            id: id.into(),
            addr,
        }
    }
}

/// Default of [`Options::response_timeout`]: nginx's `proxy_read_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`Options::body_idle_timeout`]: nginx's `client_body_timeout`.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Tunables; [`Options::default`] is what [`Front::bind`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bound on connecting to a backend; past it the attempt counts as failed (503 in HTTP mode,
    /// closed client connection in TCP mode).
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per backend (HTTP mode).
    pub max_idle_per_backend: usize,
    /// How long a client may take to send a request head (HTTP mode); past it the client gets
    /// `408` and the connection closes.
    pub header_read_timeout: Duration,
    /// How long a backend may take to send its response head once the request is sent (HTTP
    /// mode); past it the client gets `504` and the backend connection is closed.
    pub response_timeout: Duration,
    /// How long a request body may stay silent (HTTP mode); past it the client gets `408`, the
    /// backend connection is closed and so is the client's.
    pub body_idle_timeout: Duration,
    /// Client connections open at once; past it new ones are answered `503` (HTTP) or closed
    /// (TCP) at once, so the front keeps file descriptors for its backends and its engine.
    /// `None`: derived from the process's open-file limit when the front binds (see
    /// [`connection_budget`]).
    pub max_connections: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(2),
            max_idle_per_backend: 64,
            header_read_timeout: Duration::from_secs(30),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: None,
        }
    }
}

/// File descriptors kept out of the client budget: backends' pooled connections beyond one per
/// client, the control socket, the engine's socket, logs, a launch's files.
const FD_RESERVE: u64 = 256;

/// Raises this process's soft open-file limit to its hard limit (a shell's `ulimit -n 1024` is
/// often far below what the hard limit allows) and returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to / read from the struct we pass; nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// How many client connections a front may hold with the current open-file limit: each HTTP
/// client may use a backend connection too, and [`FD_RESERVE`] descriptors stay for the rest.
pub fn connection_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes to the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    let budget = (soft.min(1 << 24).saturating_sub(FD_RESERVE) / 2).max(8);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// What [`Front::drain`] saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// The drained backend's id.
    pub id: String,
    /// From the call until nothing was in flight any more (or until the cut, at the timeout).
    pub took: Duration,
    /// Requests (HTTP) or connections (TCP) in flight to the backend when the drain began.
    pub in_flight_at_start: u64,
    /// Requests or connections still in flight at the timeout, which the drain closed.
    pub cut: u64,
}

/// A running front. Cheap to clone; all clones steer the same listener. The listener and every
/// connection close when [`Front::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Front {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// State shared by the accept loop, the connection tasks and the [`Front`] handles.
pub(crate) struct Shared {
    pub(crate) local_addr: SocketAddr,
    pub(crate) mode: Mode,
    pub(crate) options: Options,
    pub(crate) routes: Routes,
    pub(crate) stats: Arc<Recorder>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Client connections open now, and the most allowed at once.
    clients: Arc<std::sync::atomic::AtomicUsize>,
    max_clients: usize,
    /// Shed connections being closed gracefully now.
    lingering: Arc<std::sync::atomic::AtomicUsize>,
}

impl Front {
    /// Listens on `listen` with default [`Options`]. Must be called inside a tokio runtime; the
    /// front runs on tasks of that runtime.
    pub async fn bind(listen: SocketAddr, mode: Mode) -> Result<Front, FrontError> {
        Front::bind_with(listen, mode, Options::default()).await
    }

    /// Listens on `listen` with the given options.
    pub async fn bind_with(
        listen: SocketAddr,
        mode: Mode,
        options: Options,
    ) -> Result<Front, FrontError> {
        let listen_error = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                FrontError::AddrInUse {
                    addr: listen,
                    source,
                }
            } else {
                FrontError::Listen {
                    addr: listen,
                    source,
                }
            }
        };
        let listener = TcpListener::bind(listen).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let shutdown = CancellationToken::new();
        let max_clients = options.max_connections.unwrap_or_else(connection_budget);
        let shared = Arc::new(Shared {
            local_addr,
            mode,
            options,
            routes: Routes::new(shutdown.clone()),
            stats: Arc::new(Recorder::new()),
            shutdown,
            tasks: TaskTracker::new(),
            clients: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_clients,
            lingering: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        tracing::debug!(%local_addr, %mode, "front listening");
        Ok(Front {
            handle: Arc::new(Handle {
                shared,
                accept: Mutex::new(Some(accept)),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The address the front listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    pub fn mode(&self) -> Mode {
        self.shared().mode
    }

    /// The backend new traffic goes to, if any.
    pub fn backend(&self) -> Option<Backend> {
        self.shared().routes.current()
    }

    /// Makes `backend` the destination of all *new* traffic, atomically, and returns the previous
    /// one. Requests (HTTP) or connections (TCP) already forwarded keep their backend; drain the
    /// old one with [`Front::drain`]. `None` makes the front answer 503 (HTTP) or close new
    /// connections (TCP). Setting the backend that is already current changes nothing.
    pub fn set_backend(&self, backend: Option<Backend>) -> Option<Backend> {
        let previous = self.shared().routes.set(backend.clone());
        if previous != backend {
            tracing::info!(
                from = previous.as_ref().map(|b| b.id.as_str()),
                to = backend.as_ref().map(|b| b.id.as_str()),
                "front switched backend"
            );
        }
        previous
    }

    /// Retires every non-current backend with this id and waits, up to `timeout`, until nothing is
    /// in flight to it any more. Idle keep-alive connections to it are closed at once (never one
    /// that carries a request); whatever is still in flight at the timeout is closed and counted
    /// as cut. Afterwards the front holds no connection to that backend; setting it again later
    /// starts afresh. An unknown id drains nothing and reports zeros.
    pub async fn drain(&self, id: &str, timeout: Duration) -> Result<DrainReport, FrontError> {
        let started = Instant::now();
        let retired = self.shared().routes.retire(id)?;
        let in_flight_at_start = retired.iter().map(|u| u.in_flight()).sum();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut cut = 0;
        for upstream in &retired {
            if !upstream.wait_quiet(deadline).await {
                cut += upstream.in_flight();
            }
        }
        let took = started.elapsed();
        // Close whatever is left (in-flight work past the timeout, connections finishing their
        // last response) and give the closing tasks a moment to notice, so that the report's
        // promise "nothing in flight any more" holds when this returns.
        for upstream in &retired {
            upstream.close_all();
        }
        let settle = tokio::time::Instant::now() + Duration::from_secs(1);
        for upstream in &retired {
            upstream.wait_quiet(settle).await;
        }
        let report = DrainReport {
            id: id.to_owned(),
            took,
            in_flight_at_start,
            cut,
        };
        tracing::info!(?report, "front drained backend");
        Ok(report)
    }

    /// Cumulative counters since the front started.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        shared.stats.snapshot(
            shared.mode,
            shared.routes.current(),
            shared.routes.in_flight(),
        )
    }

    /// Requests completed, response classes and upstream latency percentiles over the last
    /// `last` (rounded up to whole seconds, at most 60 s, and never before the front started).
    pub fn window(&self, last: Duration) -> Window {
        self.shared().stats.window(last)
    }

    /// Stops accepting, closes every client and backend connection, and waits until the tasks
    /// are gone. The listening port is free when this returns.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.shutdown.cancel();
        let accept = self
            .handle
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(accept) = accept {
            if let Err(e) = accept.await {
                tracing::warn!(error = %e, "front accept task ended abnormally");
            }
        }
        shared.tasks.close();
        shared.tasks.wait().await;
    }
}

impl fmt::Debug for Front {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Front")
            .field("local_addr", &self.local_addr())
            .field("mode", &self.mode())
            .field("backend", &self.backend())
            .finish()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "front cannot accept a connection");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let client = Client::count(&shared.clients);
        if client.open > shared.max_clients {
            shed(&shared, stream);
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let connection = shared.stats.connection_opened();
        let stream = io::Counted::new(stream, shared.stats.clone());
        let task_shared = shared.clone();
        shared.tasks.spawn(async move {
            match task_shared.mode {
                Mode::Http => http::serve_client(&task_shared, stream, peer).await,
                Mode::Tcp => tcp::serve_client(&task_shared, stream).await,
            }
            drop(connection);
            drop(client);
        });
    }
    tracing::debug!("front stopped accepting");
}

/// Counts a client connection as open until dropped.
struct Client {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    /// Open client connections, this one included.
    open: usize,
}

impl Client {
    fn count(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Client {
        let open = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Client {
            counter: counter.clone(),
            open,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Said to a client the front has no room for (HTTP mode), before closing its connection.
const SHED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 51\r\nretry-after: 1\r\nconnection: close\r\n\r\nthe front has too many open connections; try again\n";

/// Shed connections being closed gracefully at once, at most (each holds its descriptor for up
/// to [`SHED_LINGER`]); past it a shed connection is just closed.
const MAX_LINGERING: usize = 64;
const SHED_LINGER: Duration = Duration::from_secs(1);

/// Turns a client away at once: the front is at its connection budget. In HTTP mode the client
/// gets a 503; the front then reads (and drops) what the client sent for a moment before it
/// closes, so that the close does not reset the connection before the client reads the 503.
fn shed(shared: &Arc<Shared>, stream: tokio::net::TcpStream) {
    tracing::debug!(
        max = shared.max_clients,
        "front at its connection budget; connection shed"
    );
    if shared.mode == Mode::Tcp {
        shared.stats.connection_refused();
        return;
    }
    shared
        .stats
        .response(::http::StatusCode::SERVICE_UNAVAILABLE, None);
    let lingering = Client::count(&shared.lingering);
    // A fresh socket's send buffer takes these few bytes at once.
    if stream.try_write(SHED).is_err() || lingering.open > MAX_LINGERING {
        return;
    }
    shared.tasks.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let drain = async {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(SHED_LINGER, drain).await;
        drop(lingering);
    });
}

/// In-flight count per backend id, for [`Stats`].
pub(crate) type InFlightById = BTreeMap<String, u64>;
