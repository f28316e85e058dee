//! Random bytes and mangled requests thrown at an HTTP front: it never panics, answers 4xx (or a
//! real response when the bytes happen to form a request) or closes, and keeps serving.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bakeoff_front::{Front, Mode};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Fixture {
    runtime: Runtime,
    addr: SocketAddr,
    // Kept alive for the whole test binary.
    _front: Front,
    _backend: common::HttpBackend,
}

/// One runtime, one backend and one front shared by every case; panics anywhere in the process
/// (the front's tasks included, which tokio would otherwise swallow) are counted.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only panics on the runtime's threads (the front's tasks): a failing test case
            // panics on its own test thread and must not fail the other test.
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (front, backend) = runtime.block_on(async {
            let backend = common::http_backend("A").await;
            let front = common::front(Mode::Http, Some(backend.backend())).await;
            (front, backend)
        });
        Fixture {
            runtime,
            addr: front.local_addr(),
            _front: front,
            _backend: backend,
        }
    })
}

/// Writes `bytes`, half-closes, and returns what came back before the front closed (bounded by
/// 2 s; `None` if the front neither answered nor closed in time).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    // The front may close on garbage before reading all of it: write errors are fine.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut received = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

/// The answer is empty (closed), or HTTP responses with acceptable statuses.
fn check_answer(received: &[u8]) -> Result<(), TestCaseError> {
    if received.is_empty() {
        return Ok(());
    }
    let mut text = &*String::from_utf8_lossy(received);
    // Interim answers to `Expect: 100-continue` come before the real one.
    while let Some(rest) = text.strip_prefix("HTTP/1.1 100 Continue\r\n\r\n") {
        text = rest;
    }
    if text.is_empty() {
        return Ok(());
    }
    let status: u16 = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("not an HTTP response: {text:?}")))?;
    // 200: the bytes formed a request the backend answered; 4xx: rejected as malformed.
    prop_assert!(
        status == 200 || (400..500).contains(&status),
        "unexpected status {status}: {text:?}"
    );
    Ok(())
}

/// A valid request must still be served after the case.
fn still_serving(fixture: &Fixture) -> Result<(), TestCaseError> {
    let reply = fixture
        .runtime
        .block_on(common::get_once(fixture.addr, "/"))
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(reply.status.as_u16(), 200);
    prop_assert_eq!(reply.body, "A");
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    Ok(())
}

/// Request-shaped inputs: a valid request with one part replaced by something random.
fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("CONNECT".to_owned()),
        "[A-Z]{0,12}",
        "\\PC{0,8}",
    ];
    let target = prop_oneof![
        Just("/".to_owned()),
        Just("http://example/abs?q=1".to_owned()),
        Just("*".to_owned()),
        "/[ -~]{0,40}",
        "\\PC{0,20}",
    ];
    let version = prop_oneof![
        Just("HTTP/1.1".to_owned()),
        Just("HTTP/1.0".to_owned()),
        Just("HTTP/2.0".to_owned()),
        "[ -~]{0,10}",
    ];
    let header = prop_oneof![
        Just("Host: x".to_owned()),
        Just("Content-Length: 5".to_owned()),
        Just("Content-Length: -1".to_owned()),
        Just("Content-Length: 99999999999999999999".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        Just("Transfer-Encoding: gzip, chunked".to_owned()),
        Just("Connection: close, x-foo".to_owned()),
        Just("Expect: 100-continue".to_owned()),
        Just("Upgrade: websocket".to_owned()),
        "[!-~]{1,20}: [ -~]{0,40}",
        "[ -~]{0,60}",
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        Just(b"hello".to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"zz\r\nbad chunk\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    let line_end = prop_oneof![Just("\r\n"), Just("\n"), Just("\r")];
    (
        method,
        target,
        version,
        proptest::collection::vec(header, 0..6),
        line_end,
        body,
    )
        .prop_map(|(method, target, version, headers, end, body)| {
            let mut request = format!("{method} {target} {version}{end}");
            for header in headers {
                request.push_str(&header);
                request.push_str(end);
            }
            request.push_str(end);
            let mut bytes = request.into_bytes();
            bytes.extend(body);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_break_the_front(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let fixture = fixture();
        let received = fixture.runtime.block_on(exchange(fixture.addr, &bytes));
        let received = received.ok_or_else(|| TestCaseError::fail("neither answered nor closed within 2 s"))?;
        check_answer(&received)?;
        still_serving(fixture)?;
    }

    #[test]
    fn mangled_requests_never_break_the_front(bytes in mangled_request()) {
        let fixture = fixture();
        let received = fixture.runtime.block_on(exchange(fixture.addr, &bytes));
        let received = received.ok_or_else(|| TestCaseError::fail("neither answered nor closed within 2 s"))?;
        check_answer(&received)?;
        still_serving(fixture)?;
    }
}

#[test]
fn garbage_gets_a_400() {
    let fixture = fixture();
    let received = fixture
        .runtime
        .block_on(exchange(fixture.addr, b"\x00\x01 not http at all\r\n\r\n"))
        .expect("an answer or a close");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text:?}");
    // Counted when hyper gives up on the connection, which may be just after the client saw it
    // close.
    fixture.runtime.block_on(common::wait_until(
        "the malformed request is counted",
        Duration::from_secs(2),
        || fixture._front.stats().malformed >= 1,
    ));
}

#[test]
fn a_malformed_chunked_body_gets_a_400_not_a_502() {
    let fixture = fixture();
    let request =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbad chunk\r\n";
    let received = fixture
        .runtime
        .block_on(exchange(fixture.addr, request))
        .expect("an answer or a close");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text:?}");
}
