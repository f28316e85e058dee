//! The control socket: permissions, stale and live sockets, round trips, bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bakeoff_front::control::{call, ControlError, ControlListener};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Verbs a caller might define.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Status,
    Switch { to: String },
    Sleep { ms: u64 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Status { backend: String },
    Switched { from: String, to: String },
    Slept,
}

async fn handle(request: Request) -> Response {
    match request {
        Request::Status => Response::Status {
            backend: "web-docker".into(),
        },
        Request::Switch { to } => Response::Switched {
            from: "web-docker".into(),
            to,
        },
        Request::Sleep { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::Slept
        }
    }
}

async fn serve(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = ControlListener::bind(path)
        .await
        .expect("bind the control socket");
    tokio::spawn(listener.serve(handle))
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_socket_is_created_0600_and_removed_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let server = serve(&path).await;
    let mode = std::fs::metadata(&path)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // Nothing else is left beside it (the private staging directory is gone).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["web.sock"]);

    server.abort();
    let _ = server.await;
    assert!(!path.exists(), "the socket file outlived its server");
}

#[tokio::test]
async fn a_request_and_its_reply_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let _server = serve(&path).await;
    let status: Response = call(&path, &Request::Status, TIMEOUT)
        .await
        .expect("status");
    assert_eq!(
        status,
        Response::Status {
            backend: "web-docker".into()
        }
    );
    let switched: Response = call(
        &path,
        &Request::Switch {
            to: "web-qemu".into(),
        },
        TIMEOUT,
    )
    .await
    .expect("switch");
    assert_eq!(
        switched,
        Response::Switched {
            from: "web-docker".into(),
            to: "web-qemu".into()
        }
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    // What a killed process leaves behind: the file, with nobody accepting on it.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a stale socket"));
    assert!(path.exists());
    let _server = serve(&path).await;
    let status: Response = call(&path, &Request::Status, TIMEOUT)
        .await
        .expect("status");
    assert!(matches!(status, Response::Status { .. }));
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_live_socket_is_refused_and_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let _server = serve(&path).await;
    let err = ControlListener::bind(&path)
        .await
        .expect_err("the socket is live");
    assert!(matches!(err, ControlError::InUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is in use by a running process; stop it first or choose another name",
            path.display()
        )
    );
    let status: Response = call(&path, &Request::Status, TIMEOUT)
        .await
        .expect("the first server still answers");
    assert!(matches!(status, Response::Status { .. }));
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    std::fs::write(&path, "precious").expect("write");
    let err = ControlListener::bind(&path)
        .await
        .expect_err("not a socket");
    assert!(matches!(err, ControlError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious");
}

#[tokio::test]
async fn a_malformed_line_gets_an_error_reply_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let _server = serve(&path).await;
    let stream = UnixStream::connect(&path).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();

    write.write_all(b"not json\n").await.expect("write");
    let reply = lines.next_line().await.expect("read").expect("a reply");
    assert!(
        reply.starts_with(r#"{"error":"malformed request: "#),
        "{reply}"
    );

    write.write_all(b"{\"switch\":{}}\n").await.expect("write");
    let reply = lines.next_line().await.expect("read").expect("a reply");
    assert!(
        reply.starts_with(r#"{"error":"malformed request: "#),
        "{reply}"
    );

    write.write_all(b"\"status\"\n").await.expect("write");
    let reply = lines.next_line().await.expect("read").expect("a reply");
    assert_eq!(reply, r#"{"ok":{"status":{"backend":"web-docker"}}}"#);
}

#[tokio::test]
async fn call_fails_clearly_without_a_server_and_times_out_on_a_slow_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let err = call::<_, Response>(&path, &Request::Status, TIMEOUT)
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, ControlError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to {}; is the service running?",
            path.display()
        )
    );

    let _server = serve(&path).await;
    let err = call::<_, Response>(
        &path,
        &Request::Sleep { ms: 2_000 },
        Duration::from_millis(200),
    )
    .await
    .expect_err("too slow");
    assert!(matches!(err, ControlError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_reply_the_caller_cannot_read_is_a_protocol_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.sock");
    let _server = serve(&path).await;
    // The caller expects another reply type than the server sends.
    let err = call::<_, u32>(&path, &Request::Status, TIMEOUT)
        .await
        .expect_err("wrong reply type");
    assert!(matches!(err, ControlError::Protocol { .. }), "{err:?}");
}
