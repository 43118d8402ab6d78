//! The on_drain figure: a producer that sends only from `on_drain` streams
//! 1 GiB through a slow server with no polling, and the process's peak
//! resident memory (VmHWM) grows by the buffered data, not the stream. A
//! process of its own, so that no other test moves the peak.
//!
//! sanitize: none: ASan's allocator and shadow memory make the peak
//! figure meaningless; tests/flow_control.rs runs the same producer under
//! ASan.

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/producer.rs"]
mod producer;
#[path = "support/servers.rs"]
mod servers;

use producer::*;

#[test]
fn a_producer_streams_1_gib_from_on_drain_with_bounded_memory() {
    stream_from_on_drain(1 << 30, Some(48 * 1024));
}
