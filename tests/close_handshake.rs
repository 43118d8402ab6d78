//! The closing handshake at its edges: the close frame echoed when the
//! server half-closes after its own, the close timeout with a server that
//! stopped reading (before or after its close frame), and the 2 s the
//! server has to close TCP once the close frames have crossed.
//!
//! sanitize: asan tsan

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
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ws::ffi::*;

/// RFC 6455 5.5.1: "If an endpoint receives a Close frame and did not
/// previously send a Close frame, the endpoint MUST send a Close frame in
/// response." A server sends its close frame and half-closes (shutdown of
/// its write side; it still reads). When the FIN is read in the same turn
/// as the close frame, the connection ends at once and drops the echo it
/// had just queued: the server never gets a close frame.
///
/// The loop stops reading plain TCP after a short read, so the FIN comes
/// in the same turn only when the close frame ends a full first read
/// (4,096 bytes): a message of 4,085 bytes fills the rest.
#[test]
fn the_close_echo_goes_out_when_the_server_half_closes_after_its_close_frame() {
    close_echo_before_a_half_close(Some(4096 - 4 - 7));
}

/// The same, with the FIN read in the turn after the close frame's.
#[test]
fn the_close_echo_goes_out_when_the_half_close_is_read_in_a_later_turn() {
    close_echo_before_a_half_close(None);
}

fn close_echo_before_a_half_close(filler: Option<usize>) {
    let _s = serial();
    let (tx, rx) = crossbeam_channel::bounded::<Option<Option<u16>>>(1);
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        // A message whose callback keeps the loop busy while the close
        // frame and the FIN arrive: both are then there for one turn.
        s.write_all(&frame(0x81, b"hold")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut burst = filler.map_or(Vec::new(), |n| frame(0x82, &vec![7; n]));
        burst.extend(frame(0x88, &close_payload(1000, "bye")));
        s.write_all(&burst).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = None;
        while let Some(f) = read_frame(&mut s) {
            if f.first & 0x0f == 8 {
                got = Some((f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]])));
                break;
            }
        }
        let _ = tx.lock().unwrap().send(got);
    });
    let rec = Recorder::new();
    rec.set_hook(|_, ev| {
        if matches!(ev, Ev::Message { .. }) {
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    let close = c.rec.wait_close();
    let echo = rx.recv_timeout(WAIT).expect("server result");
    assert!(matches!(close, Ev::Close { code: 1000, clean: true, .. }), "{close:?}");
    assert_eq!(echo, Some(Some(1000)), "the server got no close frame back (None: none at all)");
}

/// ws.h on_close: "code and reason are the server's when the closing
/// handshake completed (was_clean true ...); 1006 with was_clean false
/// when the connection dropped, timed out or failed". A server that has
/// stopped reading sends its close frame; our answer waits behind 48 MiB
/// of sends that the server never reads, so the handshake never
/// completes, and the close timeout (500 ms) ends the connection. libws
/// then reports the server's 1000 with was_clean true, as if the
/// handshake had completed.
// sanitize: not tsan: it queues 48 MiB of sends; not tried under TSan
#[test]
fn a_close_that_timed_out_before_our_answer_went_out_is_not_clean() {
    let _s = serial();
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let go_rx = Mutex::new(go_rx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let _ = go_rx.lock().unwrap().recv_timeout(WAIT);
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&frame(0x88, &close_payload(1000, "bye"))).unwrap();
        // Never reads, never closes (until the test ends).
        std::thread::sleep(Duration::from_secs(8));
    });
    let opts = Opts { close_timeout_ms: Some(500), ..Opts::default() };
    let c = Client::with(&server.url("/"), &[], &opts);
    c.wait_open();
    let chunk = vec![0u8; 16 << 20];
    for _ in 0..3 {
        assert_eq!(c.send_bytes(&chunk), WS_OK);
    }
    go_tx.send(()).unwrap();
    let t = Instant::now();
    let close = c.rec.wait_close();
    let took = t.elapsed();
    assert!(c.buffered() > 0, "the sends were all written: the test did not stall the socket");
    assert!(
        matches!(close, Ev::Close { clean: false, .. }),
        "after {took:?}, with our close frame never written: {close:?} (ws.h: 1006, was_clean false; \
         RFC 6455 7.1.4/7.1.5 would allow the server's code, but never was_clean)"
    );
}

/// ws.h, ws_close: "While OPEN it starts the closing handshake (CLOSING);
/// on_close follows when the server's close frame has arrived and TCP is
/// closed, or after the close timeout (then 1006, not clean)", and "no
/// input from the network ... blocks forever". A server that stops reading
/// keeps our close frame behind a send backlog; the close timeout must still
/// bound the close.
// sanitize: not tsan: it queues 32 MiB of sends; not tried under TSan since its old 3 s bound
#[test]
fn close_with_a_server_that_stopped_reading_ends_after_the_close_timeout() {
    let _s = serial();
    // The server never reads again, and holds the connection until the
    // test is done (dropping `_done`): longer than the test waits, so that
    // only the close timeout can end the connection in time.
    let (_done, done_rx) = crossbeam_channel::bounded::<()>(0);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let _ = done_rx.recv_timeout(3 * WAIT);
    });
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_close_timeout_ms(o, 300), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 4096);
        let c = Client::try_with_options(&server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        c.wait_open();
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..512 {
            assert_eq!(c.send_bytes(&chunk), WS_OK);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(c.buffered() > 0, "the server's window must be full for this test");
        assert_eq!(c.close(1000, None), WS_OK);
        let t = Instant::now();
        // The close timeout is 300 ms; without it the connection never ends.
        let evs = c.rec.wait_until(WAIT, "on_close after the 300 ms close timeout", has_close);
        assert!(t.elapsed() < WAIT);
        assert!(matches!(evs.last(), Some(Ev::Close { code: 1006, clean: false, .. })), "{evs:?}");
    }
}

/// Once both close frames have crossed, libws waits up to 2 s for the
/// server to close TCP (RFC 6455 7.1.1: the server closes first), then
/// closes it itself. The 2 s are
/// counted from when the client's own close frame was written, not from
/// when the frames crossed: a server that answers the close after 1.5 s
/// gets 0.5 s, and the client closes TCP first.
#[test]
fn after_the_close_frames_cross_the_server_has_2_s_to_close_tcp() {
    let _s = serial();
    let (tx, rx) = crossbeam_channel::bounded::<Duration>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let f = read_frame(&mut s).expect("the client's close frame");
        assert_eq!(f.first & 0x0f, 8);
        std::thread::sleep(Duration::from_millis(1500));
        use std::io::Write;
        // Before the write: the client cannot receive the frame earlier.
        let t = Instant::now();
        s.write_all(&frame(0x88, &close_payload(1000, ""))).unwrap();
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(t.elapsed());
    });
    let c = Client::open(&server.url("/"));
    assert_eq!(c.close(1000, None), WS_OK);
    let waited = rx.recv_timeout(WAIT).expect("the client closed TCP");
    let (code, _, clean) = close_event(&c);
    assert_eq!((code, clean), (1000, true));
    assert!(
        waited >= Duration::from_millis(1800),
        "the client closed TCP {waited:?} after the close frames crossed (it waits up to 2 s)"
    );
}
