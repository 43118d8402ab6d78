//! libws: a WebSocket client for C, modelled on the browser's WebSocket.
//!
//! The core (`client`, `io`, `protocol`, `handshake`) is safe Rust; `ffi`
//! is the C boundary that `include/ws.h` describes.

pub mod client;
mod deflate;
pub mod error;
mod extensions;
pub mod ffi;
mod handshake;
mod io;
mod net;
pub mod options;
mod protocol;
mod shared;
mod target;
mod tls;

pub use client::{Client, Handler};
pub use error::{Error, ErrorKind};
pub use options::Options;
