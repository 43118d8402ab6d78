//! Flow control: `ws_set_receiving` (pause and resume reading) against a
//! server that sends as fast as it can, pings while paused, keepalive
//! while paused; and `ws_options_set_on_drain`: a producer that sends
//! only from on_drain streams 64 MiB (every loop mode) and 1 GiB through a
//! slow server with bounded peak memory and no polling. Every loop mode.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;
#[path = "support/producer.rs"]
mod producer;

use common::*;
use frames::*;
use handles::*;
use producer::*;
use servers::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws::ffi::*;

const MESSAGE: usize = 16 * 1024;
/// 32 MiB in all: far more than the socket buffers of both sides hold.
const TOTAL: usize = 2048;

/// Waits until `count` stops moving for 300 ms; returns its value.
fn settled(count: &AtomicUsize) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut last = count.load(Ordering::SeqCst);
    let mut still = 0;
    while still < 6 {
        assert!(Instant::now() < deadline, "still moving: {last}");
        std::thread::sleep(Duration::from_millis(50));
        let now = count.load(Ordering::SeqCst);
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
    last
}

/// A paused client stops reading: the server's sends block and no message
/// arrives (nothing is read into memory); resuming delivers every message
/// in order.
fn a_paused_client_pushes_back_on_a_flooding_server() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        for seq in 0..TOTAL as u32 {
            let mut payload = vec![0u8; MESSAGE];
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            if s.write_all(&frame(0x82, &payload)).is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "all sent")));
        let _ = read_until_close(&mut s);
    });
    let rec = Recorder::new();
    // Paused from inside on_open: nothing read after the 101's packets.
    rec.set_hook(|ws, ev| {
        if matches!(ev, Ev::Open { .. }) {
            // SAFETY: inside the handle's callback.
            assert_eq!(unsafe { ws_set_receiving(ws, false) }, WS_OK);
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    c.wait_open();
    let stalled = settled(&sent);
    assert!(stalled < TOTAL / 2, "the server was not held back: {stalled} of {TOTAL} sent");
    // Flat: nothing delivered and the server blocked for 300 ms, so the
    // client reads nothing into its memory (the process's resident memory
    // is no measure here: other tests run in it at the same time).
    let delivered = c.rec.messages().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.rec.messages().len(), delivered, "messages arrived while paused");
    assert_eq!(sent.load(Ordering::SeqCst), stalled, "the server sent more while paused");

    // SAFETY: the handle is live.
    assert_eq!(unsafe { ws_set_receiving(c.ws, true) }, WS_OK);
    let msgs = wait_messages(&c, TOTAL);
    for (i, (data, text)) in msgs.iter().enumerate() {
        assert!(!text && data.len() == MESSAGE, "message {i}");
        assert_eq!(u32::from_be_bytes(data[..4].try_into().unwrap()), i as u32, "out of order");
    }
    assert_eq!(close_event(&c), (1000, "all sent".to_string(), true));
}

/// A ping that arrives while paused is answered once reading resumes.
fn a_ping_while_paused_is_answered_on_resume() {
    let (pinged_tx, pinged_rx) = crossbeam_channel::bounded(1);
    let (pong_tx, pong_rx) = crossbeam_channel::bounded(2);
    // The ping goes once the client has paused: one in the 101's packets
    // would be read with them, and answered (the current read's end).
    let (paused_tx, paused_rx) = crossbeam_channel::bounded::<()>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let _ = paused_rx.recv_timeout(WAIT);
        let _ = s.write_all(&frame(0x89, b"are you there"));
        let _ = pinged_tx.send(());
        s.set_read_timeout(Some(WAIT)).unwrap();
        // What the client sends: its pong, however long it takes.
        if let Some(f) = read_frame(&mut s) {
            let _ = pong_tx.send((Instant::now(), f.first & 0x0f, f.payload));
        }
        let _ = read_until_close(&mut s);
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
    });
    let rec = Recorder::new();
    rec.set_hook(move |ws, ev| {
        if matches!(ev, Ev::Open { .. }) {
            // SAFETY: inside the handle's callback.
            unsafe { ws_set_receiving(ws, false) };
            let _ = paused_tx.send(());
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    c.wait_open();
    pinged_rx.recv_timeout(WAIT).unwrap();
    assert!(pong_rx.recv_timeout(Duration::from_millis(300)).is_err(), "answered while paused");
    let resumed = Instant::now();
    // SAFETY: the handle is live.
    unsafe { ws_set_receiving(c.ws, true) };
    let (at, opcode, payload) = pong_rx.recv_timeout(WAIT).unwrap();
    assert!(at >= resumed);
    assert_eq!((opcode, payload.as_slice()), (0xA, &b"are you there"[..]));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c).0, 1000);
}

/// Keepalive on a paused connection: the pongs wait unread, but the
/// server's TCP acknowledges the pings, so the connection stays open for
/// ten intervals; resumed, it closes cleanly.
fn keepalive_holds_a_paused_connection() {
    let server = echo_server();
    let opts = Opts { ping_interval_ms: Some(100), pong_timeout_ms: Some(100), ..Default::default() };
    let rec = Recorder::new();
    rec.set_hook(|ws, ev| {
        if matches!(ev, Ev::Open { .. }) {
            // SAFETY: inside the handle's callback.
            unsafe { ws_set_receiving(ws, false) };
        }
    });
    let c = Client::try_with(&server.url("/"), &[], Some(&opts), rec).unwrap();
    c.wait_open();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(c.state(), WS_OPEN, "{:?}", c.rec.events());
    // SAFETY: the handle is live.
    unsafe { ws_set_receiving(c.ws, true) };
    assert_eq!(c.send_text("still here"), WS_OK);
    assert_eq!(wait_messages(&c, 1)[0], (b"still here".to_vec(), true));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c), (1000, String::new(), true));
}

/// Paused while connecting: it opens paused; a close while paused still
/// completes its handshake (the server's close frame is read).
fn paused_before_open_and_closed_while_paused() {
    let server = raw_server(|mut s| {
        raw_handshake(&mut s, "");
        let _ = s.write_all(&frame(0x81, b"first"));
        let _ = read_until_close(&mut s);
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "ok")));
        let mut rest = [0u8; 16];
        let _ = s.read(&mut rest);
    });
    let c = Client::new(&server.url("/"));
    // SAFETY: the handle is live.
    assert_eq!(unsafe { ws_set_receiving(c.ws, false) }, WS_OK);
    c.wait_open();
    std::thread::sleep(Duration::from_millis(200));
    let early = c.rec.messages().len();
    assert!(early <= 1, "{early}");
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c), (1000, "ok".to_string(), true));
}

#[test]
fn set_receiving_refuses_null() {
    // SAFETY: NULL is allowed.
    assert_eq!(unsafe { ws_set_receiving(std::ptr::null_mut(), true) }, WS_ERR_INVALID_ARGUMENT);
}

fn a_producer_streams_64_mib_from_on_drain() {
    // Peak memory is measured in tests/drain_stream.rs, a process of its
    // own: here other tests share the process.
    stream_from_on_drain(64 << 20, None);
}

/// A reset while paused ends the connection (1006, connection lost with
/// ECONNRESET) instead of leaving epoll reporting it forever.
fn a_reset_while_paused_ends_the_connection() {
    let (paused_tx, paused_rx) = crossbeam_channel::bounded::<()>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let _ = paused_rx.recv_timeout(WAIT);
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: a live socket and a linger struct of the size passed.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        let _ = s.flush();
    });
    let rec = Recorder::new();
    rec.set_hook(move |ws, ev| {
        if matches!(ev, Ev::Open { .. }) {
            // SAFETY: inside the handle's callback.
            unsafe { ws_set_receiving(ws, false) };
            let _ = paused_tx.send(());
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    assert_eq!(close_event(&c), (1006, String::new(), false));
    // SAFETY: the handle is live.
    assert_eq!(
        unsafe { (ws_failure_cause(c.ws), ws_failure_errno(c.ws)) },
        (WS_CAUSE_CONNECTION_LOST, libc::ECONNRESET)
    );
}

every_mode!(
    a_reset_while_paused_ends_the_connection,
    a_paused_client_pushes_back_on_a_flooding_server,
    a_ping_while_paused_is_answered_on_resume,
    keepalive_holds_a_paused_connection,
    paused_before_open_and_closed_while_paused,
    a_producer_streams_64_mib_from_on_drain,
);

#[test]
fn on_drain_setter() {
    // SAFETY: NULL options are allowed; a live one is freed.
    unsafe {
        assert_eq!(ws_options_set_on_drain(std::ptr::null_mut(), Some(producer_drain), 0), WS_ERR_INVALID_ARGUMENT);
        let o = ws_options_new();
        assert_eq!(ws_options_set_on_drain(o, Some(producer_drain), 0), WS_OK);
        assert_eq!(ws_options_set_on_drain(o, None, 0), WS_OK, "NULL turns it off");
        ws_options_free(o);
    }
}
