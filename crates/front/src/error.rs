//! The front's error type.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong while setting up or steering a [`crate::Front`].
///
/// Each variant's `Display` is one sentence; the underlying cause, when there is one, is kept in
/// `#[source]` so a caller's error printer can show the chain once.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// Another socket already listens on the address.
    #[error("{addr} is already in use; choose another --port")]
    AddrInUse {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Any other failure to listen (permission denied, address not available, ...).
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `drain` was asked to drain the backend that still receives new traffic.
    #[error("backend {id} is still the current backend; switch to another one before draining it")]
    DrainCurrent { id: String },
}
