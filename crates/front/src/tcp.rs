//! TCP mode: every client connection is pinned to the backend current when it was accepted and
//! relayed byte for byte, half-closes included, until either side closes or the backend is
//! drained.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::upstream::InFlight;
use crate::Shared;

pub(crate) async fn serve_client<C>(shared: &Arc<Shared>, mut client: C)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Some((mut backend, in_flight)) = connect(shared).await else {
        // Dropping the client stream closes it: that is all a TCP client can be told.
        shared.stats.connection_refused();
        return;
    };
    let cut = in_flight.upstream().cut.clone();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
            Ok((up, down)) => tracing::trace!(up, down, "tcp relay finished"),
            Err(e) => tracing::debug!(error = %e, "tcp relay ended with an error"),
        },
        // Drained past its timeout, or the front shut down (`cut` is a child of the shutdown
        // token).
        _ = cut.cancelled() => tracing::debug!(
            backend = %in_flight.upstream().backend.id,
            "tcp relay cut"
        ),
    }
    drop(in_flight);
}

/// Connects to the current backend; if that fails, once more to whatever is current then (it may
/// just have been switched).
async fn connect(shared: &Shared) -> Option<(TcpStream, InFlight)> {
    for _ in 0..2 {
        let Some(in_flight) = shared.routes.pick() else {
            continue;
        };
        let backend = &in_flight.upstream().backend;
        match tokio::time::timeout(
            shared.options.connect_timeout,
            TcpStream::connect(backend.addr),
        )
        .await
        {
            Ok(Ok(stream)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                return Some((stream, in_flight));
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.id, addr = %backend.addr, error = %e, "cannot connect to backend");
            }
            Err(_) => {
                tracing::debug!(backend = %backend.id, addr = %backend.addr, "connecting to backend timed out");
            }
        }
    }
    None
}
