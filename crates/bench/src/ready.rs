//! Readiness probes: when does a freshly started instance really answer?
//!
//! A port forwarder (QEMU user-net `hostfwd`, `docker-proxy`) accepts TCP connections on the host
//! port before the app listens, then closes or resets them. So a TCP probe only counts a
//! connection that stays open for [`TCP_HOLD`] (or sends a banner), and an HTTP probe only counts
//! a complete `200` response.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{Feed, ResponseReader, MAX_HEAD};
use crate::BenchError;

/// How long a TCP probe's connection must stay open (without a banner) to count as ready.
pub const TCP_HOLD: Duration = Duration::from_millis(100);
/// Time between the starts of two attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The longest one attempt may take (a slow guest may take long to answer its first request).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A new attempt starts this often while earlier ones are still pending.
const STAGGER: Duration = Duration::from_millis(50);
/// At most this many attempts at once (ATTEMPT_TIMEOUT / STAGGER).
const MAX_IN_FLIGHT: usize = 40;

/// What "ready" means for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// A `GET path` answered with a complete `200` response.
    Http { addr: SocketAddr, path: String },
    /// A TCP connection that is accepted and not closed within [`TCP_HOLD`] (or sends a banner).
    Tcp { addr: SocketAddr },
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http { addr, path } => write!(f, "HTTP GET http://{addr}{path}"),
            Probe::Tcp { addr } => write!(f, "TCP {addr}"),
        }
    }
}

/// Polls `probe` every ~5 ms until it succeeds or `deadline` passes. Returns the time from this
/// call to readiness: for HTTP, until the complete 200 response; for TCP, until the connection
/// that then stayed open was accepted (the hold is not counted). Call it right after asking for
/// the instance to start to measure launch-to-ready.
pub async fn wait_ready(probe: Probe, deadline: Instant) -> Result<Duration, BenchError> {
    let begun = Instant::now();
    if let Probe::Http { path, .. } = &probe {
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(BenchError::InvalidTarget {
                reason: format!(
                    "the probe path `{}` must start with '/' and contain no spaces or control characters",
                    path.escape_default()
                ),
            });
        }
    }
    // Attempts overlap: a port forwarder (QEMU's user networking, docker-proxy) accepts the
    // host-side connection at once and retries the guest with a back-off, so one attempt may
    // sit for a second or more while a fresh one would already succeed. A new attempt starts
    // every STAGGER while others are pending (every POLL_INTERVAL when they fail fast), and the
    // first success wins — so the figure is not rounded up to the forwarder's retry steps.
    let mut attempts = 0u64;
    let mut last = "no attempt was made before the deadline".to_string();
    let mut pending = tokio::task::JoinSet::new();
    let mut next_launch = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            pending.abort_all();
            return Err(BenchError::NotReady {
                probe: probe.to_string(),
                waited: now - begun,
                attempts,
                last,
            });
        }
        if now >= next_launch && pending.len() < MAX_IN_FLIGHT {
            attempts += 1;
            let p = probe.clone();
            let limit = deadline.min(now + ATTEMPT_TIMEOUT);
            pending.spawn(async move {
                match tokio::time::timeout_at(limit.into(), attempt(&p)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "no answer within {:?}",
                        limit.saturating_duration_since(now)
                    )),
                }
            });
            next_launch = now + STAGGER;
        }
        let wake = next_launch.min(deadline);
        tokio::select! {
            Some(done) = pending.join_next(), if !pending.is_empty() => match done {
                Ok(Ok(ready_at)) => {
                    pending.abort_all();
                    return Ok(ready_at - begun);
                }
                Ok(Err(why)) => {
                    last = why;
                    // A fast failure (refused, reset) is retried soon, not after STAGGER.
                    next_launch = next_launch.min(Instant::now() + POLL_INTERVAL);
                }
                Err(e) => last = format!("the probe task failed: {e}"),
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// One attempt: `Ok(the moment it was ready)` or why not.
async fn attempt(probe: &Probe) -> Result<Instant, String> {
    match probe {
        Probe::Tcp { addr } => {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let accepted = Instant::now();
            let mut byte = [0u8; 64];
            match tokio::time::timeout(TCP_HOLD, s.read(&mut byte)).await {
                Err(_) => Ok(accepted),
                Ok(Ok(n)) if n > 0 => Ok(accepted),
                Ok(Ok(_)) => Err(format!(
                    "the connection was accepted, then closed within {TCP_HOLD:?} (a port forwarder with nothing listening behind it?)"
                )),
                Ok(Err(e)) => Err(format!("the connection was accepted, then failed: {e}")),
            }
        }
        Probe::Http { addr, path } => {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bakeoff\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut reader = ResponseReader::new();
            let mut buf = vec![0u8; 8 * 1024];
            let mut filled = 0;
            loop {
                if filled == buf.len() {
                    if buf.len() >= MAX_HEAD {
                        return Err("the response head is too large".to_string());
                    }
                    buf.resize((buf.len() * 2).min(MAX_HEAD), 0);
                }
                let n = s
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                let status = if n == 0 {
                    if !reader.eof() {
                        return Err(
                            "the connection was closed before a complete response".to_string()
                        );
                    }
                    reader.outcome().status
                } else {
                    filled += n;
                    match reader.feed(&buf[..filled]).map_err(|e| e.to_string())? {
                        Feed::NeedMore => {
                            if !reader.in_head() {
                                filled = 0;
                            }
                            continue;
                        }
                        Feed::Done { .. } => reader.outcome().status,
                    }
                };
                return if status == 200 {
                    Ok(Instant::now())
                } else {
                    Err(format!("answered {status}, not 200"))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// A port with nothing listening: bind, note the port, close.
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn nothing_listening_times_out_with_the_last_failure() {
        let addr = closed_port().await;
        let err = wait_ready(Probe::Tcp { addr }, soon(100))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("TCP {addr} was not ready after")),
            "{msg}"
        );
        assert!(msg.contains("last: connect:"), "{msg}");
        assert!(matches!(err, BenchError::NotReady { attempts, .. } if attempts >= 5));
    }

    #[tokio::test]
    async fn a_forwarder_that_closes_at_once_is_not_ready_but_a_held_connection_is() {
        // Like hostfwd before the guest listens: accept, then close.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                drop(s);
            }
        });
        let err = wait_ready(Probe::Tcp { addr }, soon(300))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("accepted, then closed"), "{err}");
        closer.abort();

        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                kept.push(l.accept().await.unwrap().0);
            }
        });
        let took = wait_ready(Probe::Tcp { addr }, soon(2000)).await.unwrap();
        assert!(
            took < Duration::from_millis(100),
            "took {took:?}; the hold is not counted"
        );
        holder.abort();
    }

    #[tokio::test]
    async fn http_needs_a_complete_200_and_reports_the_wait() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // The first two answers are 503, then 200, split over several writes.
        let server = tokio::spawn(async move {
            for i in 0.. {
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                if i < 2 {
                    let _ = s
                        .write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                        .await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nre")
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = s.write_all(b"ady").await;
                }
            }
        });
        let probe = Probe::Http {
            addr,
            path: "/health".into(),
        };
        assert_eq!(probe.to_string(), format!("HTTP GET http://{addr}/health"));
        let took = wait_ready(probe, soon(3000)).await.unwrap();
        assert!(
            took >= Duration::from_millis(20),
            "must wait for the whole body, took {took:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn http_error_status_is_named_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let err = wait_ready(
            Probe::Http {
                addr,
                path: "/".into(),
            },
            soon(100),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().ends_with("last: answered 404, not 200)"),
            "{err}"
        );
        server.abort();
        let bad = Probe::Http {
            addr,
            path: "no-slash".into(),
        };
        assert!(wait_ready(bad, soon(100)).await.is_err());
    }
}
