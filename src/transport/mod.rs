//! The bottom floor: sockets and TLS. Knows nothing of WebSocket.

pub mod net;
pub mod tls;
