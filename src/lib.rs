//! libws: a WebSocket client for C, modelled on the browser's WebSocket.
//!
//! The code is layered as folders; each imports only from those below it
//! (`tests/repository.rs` checks it):
//!
//! - `ffi`: the C boundary that `include/ws.h` describes;
//! - `client`: the browser's WebSocket object in safe Rust;
//! - `conn`: one connection, its settings and the state it shares with
//!   its handle;
//! - `runtime`: the event loop, threads and the resolver, which run tasks;
//! - `proto`: WebSocket as bytes (URL, handshake, frames, deflate);
//! - `transport`: sockets and TLS;
//! - `log`: the process-wide log sink (`ws_set_log`), used by all above it;
//! - `error`: result codes, used by all.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod client;
mod conn;
mod error;
pub mod ffi;
mod log;
mod proto;
mod runtime;
mod transport;

/// The parsers that take outside bytes, for the fuzz targets in `fuzz/`
/// (`cargo +nightly fuzz`, see `scripts/fuzz.sh`). Not part of the C API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::proto::deflate::{Deflater, InflateError, Inflater};
    pub use crate::proto::extensions::{CompressionOptions, DeflateParams};
    pub use crate::proto::frames::{is_valid_wire_close_code, Incoming, InputBuffer, Reader, Violation};
    pub use crate::proto::handshake::{parse_response, request, Agreed};
    pub use crate::proto::proxy::{no_proxy_matches, Destination, Handshake, Progress, Proxy};
    pub use crate::proto::target::{Target, TargetHost};

    /// A response head larger than this fails the connection.
    pub const MAX_RESPONSE_HEAD: usize = crate::proto::handshake::MAX_RESPONSE_HEAD;
}
