//! HTTP mode: what a client gets when no backend answers well, and what the front does to
//! requests and responses on the way.

mod common;

use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Front, FrontError, Mode, Options};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_answers_503_at_once() {
    let front = front(Mode::Http, None).await;
    let started = Instant::now();
    let reply = get_once(front.local_addr(), "/").await.expect("an answer");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "no backend is serving this address\n");
    let stats = front.stats();
    assert_eq!((stats.front_errors, stats.responses.s5xx), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_answers_503() {
    let dead = dead_addr().await;
    let front = front(Mode::Http, Some(Backend::new("gone", dead))).await;
    let started = Instant::now();
    let reply = get_once(front.local_addr(), "/").await.expect("an answer");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.body,
        format!("backend gone at {dead} is unreachable\n")
    );
    assert_eq!(front.stats().front_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_accepts_answers_503_within_the_connect_timeouts() {
    let (hole, _listener, _filler) = blackhole().await;
    let options = Options {
        connect_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let front = Front::bind_with(local(), Mode::Http, options)
        .await
        .expect("bind");
    front.set_backend(Some(Backend::new("hole", hole)));
    let started = Instant::now();
    let reply = get_once(front.local_addr(), "/").await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // Two attempts of 300 ms each, then the answer.
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_backend_hangs_is_retried_on_the_backend_switched_to() {
    let (hole, _listener, _filler) = blackhole().await;
    let b = http_backend("B").await;
    let options = Options {
        connect_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    let front = Front::bind_with(local(), Mode::Http, options)
        .await
        .expect("bind");
    front.set_backend(Some(Backend::new("hole", hole)));
    let addr = front.local_addr();
    let request = tokio::spawn(async move { get_once(addr, "/").await });
    wait_until("the request is in flight", Duration::from_secs(2), || {
        front.stats().in_flight.get("hole") == Some(&1)
    })
    .await;
    front.set_backend(Some(b.backend()));
    let reply = request.await.expect("task").expect("an answer");
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "B"));
    assert_eq!(front.stats().front_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_before_its_response_head_gives_502() {
    let (addr, _guard) = raw_backend(Misbehaviour::CloseBeforeHead).await;
    let front = front(Mode::Http, Some(Backend::new("broken", addr))).await;
    let reply = within(
        "the request",
        Duration::from_secs(2),
        get_once(front.local_addr(), "/"),
    )
    .await
    .expect("an answer");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body, "the backend failed before answering\n");
    assert_eq!(front.stats().front_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_mid_body_closes_the_client_connection() {
    let (addr, _guard) = raw_backend(Misbehaviour::CloseMidBody).await;
    let front = front(Mode::Http, Some(Backend::new("broken", addr))).await;
    let mut client = TcpStream::connect(front.local_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut received = Vec::new();
    within(
        "reading to the end",
        Duration::from_secs(2),
        client.read_to_end(&mut received),
    )
    .await
    .ok();
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    assert!(received.contains("content-length: 100\r\n"), "{received}");
    assert!(received.ends_with("\r\n\r\nshort"), "{received}");
    let stats = front.stats();
    assert_eq!(stats.upstream_aborts, 1);
    assert_eq!(stats.in_flight.get("broken"), Some(&0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_adds_x_forwarded_for_and_strips_hop_by_hop_headers() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let mut client = Client::connect(front.local_addr()).await.expect("connect");
    let request = Request::get("/headers")
        .header("host", "app.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "one hop only")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = client.send(request).await.expect("an answer");
    let seen: Vec<&str> = reply.body.lines().collect();
    assert_eq!(
        seen,
        [
            "host: app.example",
            "x-end-to-end: kept",
            "x-forwarded-for: 10.1.2.3, 127.0.0.1",
        ],
        "{}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_its_connection_does_not_close_the_clients() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let mut client = Client::connect(front.local_addr()).await.expect("connect");
    for _ in 0..3 {
        let reply = client.get("/close").await.expect("an answer");
        assert_eq!(reply.body, "A");
        assert!(reply.headers.get("connection").is_none());
        assert_eq!(
            reply.headers.get("x-backend").map(|v| v.as_bytes()),
            Some(&b"A"[..])
        );
    }
    assert_eq!(front.stats().connections_accepted, 1);
    wait_until("A has no connection open", Duration::from_secs(2), || {
        a.open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let mut client = Client::connect(front.local_addr()).await.expect("connect");
    let payload: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let request = Request::post("/echo")
        .header("host", "x")
        .body(Full::new(Bytes::from(payload.clone())))
        .expect("request");
    let reply = client.send(request).await.expect("an answer");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == payload, "echoed body differs");
    // The client can hold the last bytes a moment before the front's writer counts them.
    wait_until("the front counts the bytes", Duration::from_secs(2), || {
        let stats = front.stats();
        stats.bytes_in > 200_000 && stats.bytes_out > 200_000
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_windows_count_what_went_through() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let mut client = Client::connect(front.local_addr()).await.expect("connect");
    for _ in 0..50 {
        assert_eq!(
            client.get("/").await.expect("an answer").status,
            StatusCode::OK
        );
    }
    let stats = front.stats();
    assert_eq!(stats.requests, 50);
    assert_eq!(stats.responses.s2xx, 50);
    assert_eq!(stats.responses.total(), 50);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_active, 1);
    assert_eq!(stats.backend, Some(a.backend()));
    assert_eq!(stats.in_flight.get("A"), Some(&0));

    let window = front.window(Duration::from_secs(10));
    assert_eq!(window.requests, 50);
    let latency = window.latency.expect("latencies were recorded");
    assert_eq!(latency.samples, 50);
    assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.max);
    assert!(latency.max < Duration::from_secs(1), "{latency:?}");
    assert!(window.rate > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_port_in_use_fails_with_one_sentence() {
    let first = front(Mode::Http, None).await;
    let addr = first.local_addr();
    let err = Front::bind(addr, Mode::Http)
        .await
        .expect_err("port in use");
    assert!(matches!(err, FrontError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{addr} is already in use; choose another --port")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_frees_the_port() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let addr = front.local_addr();
    let mut client = Client::connect(addr).await.expect("connect");
    assert_eq!(client.get("/").await.expect("an answer").body, "A");
    within("shutdown", Duration::from_secs(2), front.shutdown()).await;
    assert!(
        client.get("/").await.is_err(),
        "the client connection survived"
    );
    wait_until("A has no connection open", Duration::from_secs(2), || {
        a.open_connections() == 0
    })
    .await;
    let again = Front::bind(addr, Mode::Http)
        .await
        .expect("the port is free again");
    drop(again);
}
