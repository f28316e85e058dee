//! HTTP mode under abuse (issue 35, items 2–4): every wait towards a backend or a client is
//! bounded and ends with a status the client can read, a half-done backend connection never
//! stalls the next request, and past its connection budget the front turns clients away at once
//! instead of starving itself of file descriptors.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Front, Mode, Options};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The options under test: short timeouts so that the test is quick.
fn options() -> Options {
    Options {
        response_timeout: Duration::from_millis(500),
        body_idle_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        ..Options::default()
    }
}

async fn front_with(options: Options, backend: Backend) -> Front {
    let front = Front::bind_with(local(), Mode::Http, options)
        .await
        .expect("bind the front");
    front.set_backend(Some(backend));
    front
}

/// A backend that reads request heads and never answers; it keeps every connection open.
async fn silent_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(LOCAL).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1000 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
            held.push(s);
        }
    });
    (addr, task)
}

/// A backend that answers every request head at once, before reading any body (as servers that
/// reject or ignore a body do), and keeps reading what follows on the connection.
async fn eager_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(LOCAL).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                for _ in 0..10_000 {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    // Every head seen so far gets its answer; body bytes are read and dropped.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\neager";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    if seen.len() > 65536 {
                        seen.clear();
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Writes `bytes` on a new connection to `addr` and reads what comes back until the peer closes
/// or `limit` passes; returns the text and how long it took.
async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_every_client_a_504() {
    let (silent, _task) = silent_backend().await;
    let front = front_with(options(), Backend::new("silent", silent)).await;
    let addr = front.local_addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { get_once(addr, "/").await }))
        .collect();
    for c in clients {
        let reply = within("a request to a silent backend", Duration::from_secs(10), c)
            .await
            .expect("the task ends")
            .expect("an answer");
        assert_eq!(reply.status, http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(reply.body, "backend silent did not answer within 0.5 s\n");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_comes_gets_a_408_and_frees_the_backend() {
    let backend = http_backend("B").await;
    // The backend waits for the rest of the body too, so with equal limits the response timeout
    // could fire first (504): the body's limit is the one under test.
    let opts = Options {
        response_timeout: Duration::from_secs(5),
        ..options()
    };
    let front = front_with(opts, backend.backend()).await;
    let (reply, took) = exchange(
        front.local_addr(),
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly this",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(
        reply.contains("the request body stalled for 0.5 s"),
        "{reply}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The backend connection that carried the half request is closed, not kept or pooled.
    wait_until(
        "the backend connection closes",
        Duration::from_secs(5),
        || backend.open_connections() == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_gets_a_408_and_an_http2_preface_a_505() {
    let backend = http_backend("B").await;
    let front = front_with(options(), backend.backend()).await;
    let (reply, took) = exchange(
        front.local_addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (reply, took) = exchange(
        front.local_addr(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 505 "), "{reply:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Issue 35 item 4: a POST whose body was still streaming went back to the pool when its
/// response ended; each such connection then cost the next request the 2 s connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_posts_do_not_stall_the_next_request() {
    let (eager, _task) = eager_backend().await;
    let front = front_with(
        Options {
            body_idle_timeout: Duration::from_secs(60),
            ..options()
        },
        Backend::new("eager", eager),
    )
    .await;
    let addr = front.local_addr();
    let mut posts = Vec::new();
    for _ in 0..10 {
        // The backend answers before reading the body; the client keeps the body open.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        within(
            "the POST's response head",
            Duration::from_secs(5),
            s.read_exact(&mut head),
        )
        .await
        .expect("a response");
        assert_eq!(&head, b"HTTP/1.1 200");
        posts.push(s);
    }
    let started = Instant::now();
    let reply = within(
        "a GET after 10 open POSTs",
        Duration::from_secs(10),
        get_once(addr, "/"),
    )
    .await
    .expect("an answer");
    assert_eq!(reply.status, http::StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(posts);
}

/// Issue 35 item 2: 2,000 idle clients under `ulimit -n 1024` took the front's last file
/// descriptors. Past its budget the front answers 503 at once and keeps serving the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_connection_budget_the_front_sheds_clients_with_a_503() {
    let backend = http_backend("B").await;
    let front = front_with(
        Options {
            max_connections: Some(4),
            ..options()
        },
        backend.backend(),
    )
    .await;
    let addr = front.local_addr();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut keep = Client::connect(addr).await.expect("connect");
    assert_eq!(keep.get("/").await.expect("an answer").status, 200);
    wait_until("4 clients are counted", Duration::from_secs(2), || {
        front.stats().connections_active == 4
    })
    .await;
    let (reply, took) = exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply:?}");
    assert!(
        reply.ends_with("the front has too many open connections; try again\n"),
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The clients it holds are still served, and room comes back as they leave.
    assert_eq!(keep.get("/").await.expect("an answer").status, 200);
    drop(idle);
    wait_until("the idle clients are gone", Duration::from_secs(2), || {
        front.stats().connections_active == 1
    })
    .await;
    assert_eq!(get_once(addr, "/").await.expect("an answer").status, 200);
}
