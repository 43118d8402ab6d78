//! libws: a WebSocket client for C, modelled on the browser's WebSocket.
//!
//! The core is safe Rust and private to the crate: `client` (the WebSocket
//! object), `event_loop` and `connection` (the loop and the state machine
//! it drives), `protocol` and `handshake` (RFC 6455), `net` and `tls`.
//! `ffi` is the C boundary that `include/ws.h` describes.

mod client;
mod connection;
mod deflate;
mod error;
mod event_loop;
mod extensions;
pub mod ffi;
mod handshake;
mod net;
mod options;
mod protocol;
mod resolver;
mod shared;
mod target;
mod threads;
mod tls;
mod waker;

/// The parsers that take outside bytes, for the fuzz targets in `fuzz/`
/// (`cargo +nightly fuzz`, see `scripts/fuzz.sh`). Not part of the C API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::deflate::{Deflater, InflateError, Inflater};
    pub use crate::extensions::DeflateParams;
    pub use crate::handshake::{parse_response, request, Agreed};
    pub use crate::options::{CompressionOptions, Options};
    pub use crate::protocol::{is_valid_wire_close_code, Incoming, InputBuffer, Reader, Violation};
    pub use crate::target::Target;

    /// A response head larger than this fails the connection.
    pub const MAX_RESPONSE_HEAD: usize = crate::handshake::MAX_RESPONSE_HEAD;
}
