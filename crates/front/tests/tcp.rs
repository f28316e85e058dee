//! TCP mode: connections are pinned to the backend current when accepted; drains wait for them
//! and cut what is left at the timeout.

mod common;

use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Mode};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A line-oriented client of an echo backend through the front.
struct Line {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Line {
    async fn connect(addr: std::net::SocketAddr) -> Line {
        let (read, writer) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Line {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Sends `text` and returns the echoed line, or `None` if the connection closed.
    async fn ask(&mut self, text: &str) -> Option<String> {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .await
            .ok()?;
        let mut line = String::new();
        let n = within(
            "an echo",
            Duration::from_secs(2),
            self.reader.read_line(&mut line),
        )
        .await
        .ok()?;
        (n > 0).then(|| line.trim_end().to_owned())
    }

    /// True once the front closed the connection (end of stream or reset).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_follow_a_switch_while_open_ones_keep_their_backend() {
    let a = echo_backend("A").await;
    let b = echo_backend("B").await;
    let front = front(Mode::Tcp, Some(a.backend())).await;
    let addr = front.local_addr();

    let mut old = Line::connect(addr).await;
    assert_eq!(old.ask("one").await.as_deref(), Some("A one"));
    front.set_backend(Some(b.backend()));
    let mut new = Line::connect(addr).await;
    assert_eq!(new.ask("two").await.as_deref(), Some("B two"));
    assert_eq!(old.ask("three").await.as_deref(), Some("A three"));
    assert_eq!(front.stats().in_flight.get("A"), Some(&1));

    // The old connection closes on its own during the drain: nothing is cut.
    let drain = tokio::spawn({
        let front = front.clone();
        async move { front.drain("A", Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(old.ask("four").await.as_deref(), Some("A four"));
    drop(old);
    let report = drain.await.expect("drain task").expect("drain A");
    assert_eq!((report.in_flight_at_start, report.cut), (1, 0));
    // The drain task may start a little after the 200 ms sleep did.
    assert!(report.took >= Duration::from_millis(150), "{report:?}");
    assert_eq!(new.ask("five").await.as_deref(), Some("B five"));
    wait_until("A has no connection open", Duration::from_secs(2), || {
        a.open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_cuts_a_hung_connection_and_reports_it() {
    let a = echo_backend("A").await;
    let b = echo_backend("B").await;
    let front = front(Mode::Tcp, Some(a.backend())).await;
    let mut hung = Line::connect(front.local_addr()).await;
    assert_eq!(hung.ask("hello").await.as_deref(), Some("A hello"));
    front.set_backend(Some(b.backend()));

    let started = Instant::now();
    let report = front
        .drain("A", Duration::from_millis(300))
        .await
        .expect("drain A");
    assert_eq!(report.in_flight_at_start, 1);
    assert_eq!(report.cut, 1);
    assert!(report.took >= Duration::from_millis(300), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(hung.closed().await, "the hung connection is still open");
    assert_eq!(front.stats().in_flight.get("A"), None);
    wait_until("A has no connection open", Duration::from_secs(2), || {
        a.open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_relayed_both_ways() {
    let a = echo_backend("A").await;
    let front = front(Mode::Tcp, Some(a.backend())).await;
    let mut stream = TcpStream::connect(front.local_addr())
        .await
        .expect("connect");
    stream.write_all(b"first\nsecond\n").await.expect("write");
    // Client is done writing; the backend must see the end, answer, and close its side.
    stream.shutdown().await.expect("half-close");
    let mut received = String::new();
    within(
        "the backend's answer and end of stream",
        Duration::from_secs(2),
        stream.read_to_string(&mut received),
    )
    .await
    .expect("read");
    assert_eq!(received, "A first\nA second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_backend_the_client_connection_is_closed() {
    let front = front(Mode::Tcp, None).await;
    let mut nobody = Line::connect(front.local_addr()).await;
    assert!(nobody.closed().await);

    front.set_backend(Some(Backend::new("gone", dead_addr().await)));
    let mut dead = Line::connect(front.local_addr()).await;
    assert!(dead.closed().await);
    let stats = front.stats();
    assert_eq!(stats.front_errors, 2);
    assert_eq!(stats.connections_accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_under_load_survive_switches() {
    let a = echo_backend("A").await;
    let b = echo_backend("B").await;
    let front = front(Mode::Tcp, Some(a.backend())).await;
    let addr = front.local_addr();
    let deadline = Instant::now() + Duration::from_secs(3);
    // 4 clients, each: connect, exchange 5 lines, close; at most 200 connections each.
    let mut clients = Vec::new();
    for c in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..200 {
                if Instant::now() >= deadline {
                    break;
                }
                let mut line = Line::connect(addr).await;
                let mut backend = None;
                for j in 0..5 {
                    match line.ask(&format!("{c}-{i}-{j}")).await {
                        Some(echo) => {
                            let (id, text) = echo.split_once(' ').unwrap_or(("?", ""));
                            if text != format!("{c}-{i}-{j}") {
                                failures.push(format!("bad echo {echo}"));
                            }
                            // A connection never changes backend.
                            if *backend.get_or_insert(id.to_owned()) != id {
                                failures.push(format!("connection moved to {id}"));
                            }
                        }
                        None => failures.push(format!("connection {c}-{i} closed")),
                    }
                }
                seen.extend(backend);
            }
            (failures, seen)
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (to, from) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        front.set_backend(Some(to.backend()));
        let report = front
            .drain(&from.id, Duration::from_secs(2))
            .await
            .expect("drain");
        assert_eq!(report.cut, 0, "{report:?}");
    }
    for client in clients {
        let (failures, seen) = client.await.expect("client task");
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(seen.len(), 2, "a client saw only {seen:?}");
    }
}
