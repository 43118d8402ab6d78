//! A server that pings as fast as it can and never reads (RFC 6455 5.5.3
//! lets a client answer only the most recent ping). Alone in its process,
//! because it measures the process's resident memory.
//!
//! sanitize: none: it bounds the process's memory, and ASan's shadow and
//! quarantine take hundreds of MiB.

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use frames::*;
use handles::*;
use servers::*;
use std::io::Write;
use std::time::{Duration, Instant};
use ws::ffi::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const FLOOD: Duration = Duration::from_secs(5);

#[test]
fn a_ping_flood_keeps_memory_bounded_and_the_connection_usable() {
    let (tx, rx) = crossbeam_channel::bounded::<(u64, Option<u64>)>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        // Pings carrying a counter, 64 KiB of them per write, for FLOOD.
        let mut sent: u64 = 0;
        let end = Instant::now() + FLOOD;
        // A client that stopped reading shows as a write that times out;
        // generous, since a busy machine may leave a reading client's loop
        // unscheduled for a while.
        s.set_write_timeout(Some(WAIT)).unwrap();
        while Instant::now() < end {
            let mut batch = Vec::with_capacity(64 * 1024);
            while batch.len() < 64 * 1024 - 10 {
                sent += 1;
                batch.extend(frame(0x89, &sent.to_be_bytes()));
            }
            if s.write_all(&batch).is_err() {
                // The client stopped reading: the write timed out part-way,
                // so the stream may hold half a frame. Stop flooding here.
                let _ = tx.send((sent, None));
                return;
            }
        }
        // Now read: pongs come back, the last one for the last ping.
        s.write_all(&frame(0x81, b"after the flood")).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut last_pong = None;
        loop {
            match read_frame(&mut s) {
                Some(f) if f.first == 0x8A => last_pong = Some(u64::from_be_bytes(f.payload[..8].try_into().unwrap())),
                Some(f) if f.first == 0x88 => break,
                Some(_) => {}
                None => break,
            }
        }
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
        let _ = tx.send((sent, last_pong));
    });
    let c = Client::open(&server.url("/"));
    let rss_before = rss_kib();
    let mut peak = rss_before;
    let end = Instant::now() + FLOOD + Duration::from_secs(1);
    while Instant::now() < end && c.rec.messages().is_empty() {
        peak = peak.max(rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    let msgs = wait_messages(&c, 1);
    peak = peak.max(rss_kib());
    let grown = peak.saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB during the ping flood");
    assert_eq!(msgs[0], (b"after the flood".to_vec(), true));
    assert_eq!(c.close(1000, None), WS_OK);
    let (sent, last_pong) = rx.recv_timeout(WAIT).expect("the server finished");
    assert!(sent > 1000, "the flood was only {sent} pings");
    assert_eq!(last_pong, Some(sent), "the last pong answers the last ping");
    assert_eq!(close_event(&c), (1000, String::new(), true));
}
