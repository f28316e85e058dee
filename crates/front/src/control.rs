//! The control channel of a serving process: JSON over a Unix socket, one message per line.
//!
//! This module is only the transport and the envelope; the caller defines the verbs. A client
//! writes one request (the caller's `Req` type, as JSON) per line; the server answers each with
//! one line holding a [`Reply`]: `{"ok": <Resp>}`, or `{"error": "..."}` when the line was not a
//! valid request. A connection may carry several requests; [`call`] sends one.
//!
//! The socket is created with mode 0600, and no other user can ever connect to it with another
//! mode: it is bound inside a fresh private directory (mode 0700) next to the target path,
//! chmod-ed to 0600 there, and only then linked (or renamed) into place; the private directory is
//! removed afterwards. A socket file left behind by a killed process (nothing accepts on it) is
//! replaced; one that a live process still accepts on makes [`ControlListener::bind`] fail.
//!
//! ```no_run
//! # async fn example() -> Result<(), bakeoff_front::control::ControlError> {
//! use std::path::Path;
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Request { Status }
//! #[derive(Serialize, Deserialize)]
//! enum Response { Status { backend: String } }
//!
//! let path = Path::new("/run/bakeoff/web.sock");
//! let listener = bakeoff_front::control::ControlListener::bind(path).await?;
//! tokio::spawn(listener.serve(|request: Request| async move {
//!     match request {
//!         Request::Status => Response::Status { backend: "web-docker".into() },
//!     }
//! }));
//! let reply: Response = bakeoff_front::control::call(path, &Request::Status, Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// Longest request line the server reads.
const MAX_REQUEST: usize = 1 << 20;
/// Longest reply line [`call`] reads.
const MAX_REPLY: usize = 16 << 20;
/// A server connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`ControlListener::bind`] waits for an existing socket to accept before deciding
/// that a live but busy process owns it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The envelope of every reply line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// The handler's answer.
    Ok(T),
    /// The transport could not hand the request to the handler (not valid JSON, not a known
    /// request, too long), or could not encode the answer.
    Error(String),
}

/// Errors of the control channel; each `Display` is one sentence naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{} is in use by a running process; stop it first or choose another name", .path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", .path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot tell whether {} belongs to a running process", .path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the control socket {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {}; is the service running?", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the connection to {} failed", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} did not answer within {after:?}", .path.display())]
    Timeout { path: PathBuf, after: Duration },
    #[error("{} closed the connection without answering", .path.display())]
    NoReply { path: PathBuf },
    #[error("{} answered something that is not a valid reply", .path.display())]
    Protocol {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the request cannot be encoded as JSON")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error("the service refused the request: {message}")]
    Remote { message: String },
}

/// Answers requests of type `Req` with responses of type `Resp`. Implemented by every
/// `Fn(Req) -> impl Future<Output = Resp>` closure that is `Send + Sync + 'static`.
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    fn handle(&self, request: Req) -> impl Future<Output = Resp> + Send;
}

impl<Req, Resp, F, Fut> Handler<Req, Resp> for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send,
{
    fn handle(&self, request: Req) -> impl Future<Output = Resp> + Send {
        self(request)
    }
}

/// A bound control socket. Dropping it (or the [`ControlListener::serve`] future) closes the
/// socket and removes its file, unless another process has replaced the file since.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created.
    identity: (u64, u64),
}

impl ControlListener {
    /// Creates the socket at `path` (mode 0600), replacing a stale socket file; fails with
    /// [`ControlError::InUse`] when a live process accepts on it.
    pub async fn bind(path: impl AsRef<Path>) -> Result<ControlListener, ControlError> {
        let path = path.as_ref().to_path_buf();
        probe(&path).await?;
        let create = |source| ControlError::Create {
            path: path.clone(),
            source,
        };

        let private = PrivateDir::create(&path).map_err(create)?;
        let staged = private.path.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&staged).map_err(create)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(create)?;
        // A hard link appears atomically and never replaces anything, so two processes starting
        // at once cannot both win. Where it already exists (stale, or someone raced us) look
        // again, then replace it atomically.
        match std::fs::hard_link(&staged, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                probe(&path).await?;
                std::fs::rename(&staged, &path).map_err(create)?;
            }
            // Filesystems without hard links.
            Err(_) => std::fs::rename(&staged, &path).map_err(create)?,
        }
        drop(private);
        let metadata = std::fs::metadata(&path).map_err(create)?;
        listener.set_nonblocking(true).map_err(create)?;
        let listener = UnixListener::from_std(listener).map_err(create)?;
        Ok(ControlListener {
            listener,
            path,
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until the returned future is dropped. Each connection is served on its
    /// own task; requests on one connection are answered in order.
    pub async fn serve<Req, Resp, H>(self, handler: H)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Handler<Req, Resp>,
    {
        let handler = Arc::new(handler);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection::<Req, Resp, H>(stream, handler.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot accept a control connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if let Ok(metadata) = std::fs::symlink_metadata(&self.path) {
            if (metadata.dev(), metadata.ino()) == self.identity {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::debug!(path = %self.path.display(), error = %e, "cannot remove the control socket");
                }
            }
        }
    }
}

/// Binds `path` and serves requests with `handler` until the future is dropped.
pub async fn serve_control<Req, Resp, H>(path: &Path, handler: H) -> Result<(), ControlError>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Handler<Req, Resp>,
{
    ControlListener::bind(path).await?.serve(handler).await;
    Ok(())
}

/// Sends one request and waits for its reply, all within `timeout`.
pub async fn call<Req, Resp>(
    path: &Path,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ControlError>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let mut line = serde_json::to_vec(request).map_err(|source| ControlError::Encode { source })?;
    line.push(b'\n');
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        write.write_all(&line).await.map_err(io)?;
        let mut reply = Vec::new();
        BufReader::new(read)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut reply)
            .await
            .map_err(io)?;
        if reply.is_empty() {
            return Err(ControlError::NoReply {
                path: path.to_path_buf(),
            });
        }
        match serde_json::from_slice::<Reply<Resp>>(&reply) {
            Ok(Reply::Ok(response)) => Ok(response),
            Ok(Reply::Error(message)) => Err(ControlError::Remote { message }),
            Err(source) => Err(ControlError::Protocol {
                path: path.to_path_buf(),
                source,
            }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_path_buf(),
            after: timeout,
        })?
}

async fn serve_connection<Req, Resp, H>(stream: UnixStream, handler: Arc<H>)
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Handler<Req, Resp>,
{
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        match tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "control connection failed");
                return;
            }
        }
        let too_long = line.len() > MAX_REQUEST;
        if !too_long && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = if too_long {
            encode(&Reply::<()>::Error(format!(
                "request longer than {MAX_REQUEST} bytes"
            )))
        } else {
            match serde_json::from_slice::<Req>(&line) {
                Ok(request) => encode(&Reply::Ok(handler.handle(request).await)),
                Err(e) => encode(&Reply::<()>::Error(format!("malformed request: {e}"))),
            }
        };
        if let Err(e) = write.write_all(&reply).await {
            tracing::debug!(error = %e, "cannot write a control reply");
            return;
        }
        if too_long {
            return;
        }
    }
}

/// One reply line; a reply that cannot be encoded becomes an error reply.
fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot encode a control reply");
        br#"{"error":"the service could not encode its reply"}"#.to_vec()
    });
    line.push(b'\n');
    line
}

/// Fails unless `path` is free or holds a socket nobody accepts on.
async fn probe(path: &Path) -> Result<(), ControlError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Probe {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Someone accepts (or is too busy to, which also means alive).
        Ok(Ok(_)) | Err(_) => Err(ControlError::InUse {
            path: path.to_path_buf(),
        }),
        Ok(Err(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            tracing::info!(path = %path.display(), "replacing a stale control socket");
            Ok(())
        }
        Ok(Err(source)) => Err(ControlError::Probe {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A fresh mode-0700 directory beside the socket path, removed with whatever is left in it.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(socket: &Path) -> io::Result<PrivateDir> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let parent = match socket.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let path = parent.join(format!(
            ".ctl-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove a private directory");
        }
    }
}
