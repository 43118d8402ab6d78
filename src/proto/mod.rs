//! WebSocket as bytes (RFC 6455, RFC 7692): the URL, the upgrade request
//! and its answer, frames in and out, permessage-deflate. No sockets, no
//! threads, no clocks: what it is given in, what it makes out.

pub mod deflate;
pub mod extensions;
pub mod frames;
pub mod handshake;
pub mod proxy;
pub mod target;
