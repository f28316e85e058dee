//! HTTP mode: switching backends under load loses nothing, and draining waits for what is in
//! flight.

mod common;

use std::time::{Duration, Instant};

use bakeoff_front::Mode;
use common::*;
use http::StatusCode;
use tokio_util::sync::CancellationToken;

/// Load through the front on A; switch to B; drain A; check nothing failed and every connection
/// saw A, then B, and nothing else.
async fn switch_under_load(keep_alive: bool) {
    let a = http_backend("A").await;
    let b = http_backend("B").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let stop = CancellationToken::new();
    // 4 connections, at most 5,000 requests each and 3 s. The backend sleeps 1 ms per request
    // so that requests are in flight to A at the moment of the switch.
    let load = tokio::spawn(load(
        front.local_addr(),
        "/slow?ms=1",
        vec![keep_alive; 4],
        stop.clone(),
        5_000,
        Duration::from_secs(3),
    ));
    wait_until("A has served 100 requests", Duration::from_secs(2), || {
        a.served() >= 100
    })
    .await;
    // And one request that is certainly in flight to A at the switch, for the drain to wait for.
    let addr = front.local_addr();
    let slow = tokio::spawn(async move { get_once(addr, "/hold?ms=300").await });
    wait_until("A holds the slow request", Duration::from_secs(2), || {
        a.holding() == 1
    })
    .await;
    assert_eq!(front.set_backend(Some(b.backend())), Some(a.backend()));
    let report = within(
        "draining A",
        Duration::from_secs(3),
        front.drain("A", Duration::from_secs(2)),
    )
    .await
    .expect("A is not current");
    let served_by_a = a.served();
    let slow = slow.await.expect("slow task").expect("the slow request");
    assert_eq!(slow.body, "A");
    wait_until("B has served 100 requests", Duration::from_secs(2), || {
        b.served() >= 100
    })
    .await;
    stop.cancel();
    let load = load.await.expect("load task");

    assert!(
        load.failures.is_empty(),
        "failed requests: {:?}",
        load.failures
    );
    for runs in &load.runs {
        let order: Vec<&str> = runs.iter().map(|(body, _)| body.as_str()).collect();
        assert_eq!(order, ["A", "B"], "one connection's replies: {runs:?}");
    }
    assert_eq!(report.id, "A");
    assert!(report.in_flight_at_start >= 1, "{report:?}");
    // It waited for the held request (300 ms, most of it still to go at the switch).
    assert!(report.took >= Duration::from_millis(100), "{report:?}");
    assert_eq!(report.cut, 0, "{report:?}");
    assert_eq!(a.served(), served_by_a, "A got requests after its drain");
    let stats = front.stats();
    assert_eq!(stats.in_flight.get("A"), None, "{:?}", stats.in_flight);
    assert_eq!(stats.front_errors, 0);
    assert_eq!(stats.responses.s2xx, load.ok + 1);
    // The front's pooled keep-alive connections to A are gone.
    wait_until("A has no connection open", Duration::from_secs(2), || {
        a.open_connections() == 0
    })
    .await;
    println!(
        "keep_alive={keep_alive}: {} requests ({:?}), drain {:?}",
        load.ok,
        load.backends_seen(),
        report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_load_survives_a_switch_with_zero_failures() {
    switch_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_per_request_load_survives_a_switch_with_zero_failures() {
    switch_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_switches_under_load_lose_nothing() {
    let a = http_backend("A").await;
    let b = http_backend("B").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let stop = CancellationToken::new();
    // Two keep-alive connections and two that open a connection per request.
    let load = tokio::spawn(load(
        front.local_addr(),
        "/",
        vec![true, true, false, false],
        stop.clone(),
        5_000,
        Duration::from_secs(3),
    ));
    wait_until("A has served 20 requests", Duration::from_secs(2), || {
        a.served() >= 20
    })
    .await;

    let started = Instant::now();
    let mut cut = 0;
    for i in 0..20 {
        let (to, from) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        front.set_backend(Some(to.backend()));
        let report = within(
            "a drain",
            Duration::from_secs(3),
            front.drain(&from.id, Duration::from_secs(2)),
        )
        .await
        .expect("the drained backend is not current");
        cut += report.cut;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let switching = started.elapsed();
    stop.cancel();
    let load = load.await.expect("load task");

    assert!(
        load.failures.is_empty(),
        "failed requests: {:?}",
        load.failures
    );
    assert_eq!(cut, 0);
    let changes: usize = load.runs.iter().map(|runs| runs.len() - 1).sum();
    println!(
        "{} requests, {changes} backend changes seen by clients, 20 switches in {switching:?}",
        load.ok
    );
    // Every client saw the backend change several times while the switches went on.
    assert!(
        changes >= 8,
        "clients saw only {changes} changes: {:?}",
        load.runs
    );
    assert_eq!(front.stats().front_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_client_connection_survives_a_switch() {
    let a = http_backend("A").await;
    let b = http_backend("B").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let mut client = Client::connect(front.local_addr()).await.expect("connect");

    assert_eq!(client.get("/").await.expect("first request").body, "A");
    front.set_backend(Some(b.backend()));
    assert_eq!(client.get("/").await.expect("after the switch").body, "B");
    front
        .drain("A", Duration::from_secs(2))
        .await
        .expect("drain A");
    assert_eq!(client.get("/").await.expect("after the drain").body, "B");
    assert_eq!(front.stats().connections_accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_survives_a_switch_and_drain_waits_for_it() {
    let a = http_backend("A").await;
    let b = http_backend("B").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let addr = front.local_addr();
    let slow = tokio::spawn(async move { get_once(addr, "/hold?ms=1500").await });
    wait_until("A holds the slow request", Duration::from_secs(2), || {
        a.holding() == 1
    })
    .await;

    front.set_backend(Some(b.backend()));
    let quick_started = Instant::now();
    let quick = get_once(addr, "/")
        .await
        .expect("a request after the switch");
    assert_eq!(quick.body, "B");
    assert!(
        quick_started.elapsed() < Duration::from_millis(1000),
        "a new request waited for the old backend: {:?}",
        quick_started.elapsed()
    );

    let report = front
        .drain("A", Duration::from_secs(5))
        .await
        .expect("drain A");
    let slow = slow.await.expect("slow task").expect("the slow request");
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "A"));
    assert_eq!(report.in_flight_at_start, 1);
    assert_eq!(report.cut, 0);
    // The drain began well before the slow answer and could only end after it.
    assert!(
        report.took >= Duration::from_millis(300),
        "drain returned too early: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_a_request_still_in_flight() {
    let a = http_backend("A").await;
    let b = http_backend("B").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let addr = front.local_addr();
    let hung = tokio::spawn(async move { get_once(addr, "/slow?ms=10000").await });
    wait_until(
        "the hung request is in flight",
        Duration::from_secs(2),
        || front.stats().in_flight.get("A") == Some(&1),
    )
    .await;
    front.set_backend(Some(b.backend()));

    let report = front
        .drain("A", Duration::from_millis(300))
        .await
        .expect("drain A");
    assert_eq!(report.in_flight_at_start, 1);
    assert_eq!(report.cut, 1);
    assert!(report.took >= Duration::from_millis(300), "{report:?}");
    assert!(report.took < Duration::from_secs(2), "{report:?}");
    let hung = within("the cut request", Duration::from_secs(2), hung)
        .await
        .expect("hung task")
        .expect("an answer");
    assert_eq!(hung.status, StatusCode::BAD_GATEWAY);
    assert_eq!(front.stats().in_flight.get("A"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_current_backend_is_refused() {
    let a = http_backend("A").await;
    let front = front(Mode::Http, Some(a.backend())).await;
    let err = front
        .drain("A", Duration::from_secs(1))
        .await
        .expect_err("A is current");
    assert_eq!(
        err.to_string(),
        "backend A is still the current backend; switch to another one before draining it"
    );
    let unknown = front
        .drain("nobody", Duration::from_secs(1))
        .await
        .expect("an unknown id drains nothing");
    assert_eq!((unknown.in_flight_at_start, unknown.cut), (0, 0));
}
