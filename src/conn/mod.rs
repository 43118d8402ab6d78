//! One WebSocket connection: its settings, the state it shares with its
//! handle (ready state, callbacks gate, outbox), and the state machine the
//! loop drives through connecting, open and closing.

pub mod cause;
pub mod closing;
pub mod connection;
pub mod dialer;
pub mod keepalive;
pub mod options;
pub mod outbox;
pub mod shared;
pub mod tunnel;
