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
