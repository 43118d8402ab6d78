//! A slow callback on a shared loop delays the other connections' events
//! but must not turn them into timeouts: when it returns, what their
//! servers sent meanwhile is read before their close or connect timers
//! are looked at.
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
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws::ffi::*;

/// Sleeps until `t` (at once if it has passed).
fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// Makes A's next on_message hold its loop: it tells `started`, waits for
/// `answered` (B's server has answered), then sleeps until `until`, when
/// B's timer has run out too. The flag it returns is set when the callback
/// started at or after `timer_end`: B's timer could then have fired before
/// the set-up was in place, and the test says so instead of blaming libws.
fn hold_the_loop_in_on_message(
    a: &Client,
    timer_end: Instant,
    started: crossbeam_channel::Sender<()>,
    answered: crossbeam_channel::Receiver<()>,
    until: Instant,
) -> Arc<AtomicBool> {
    let late = Arc::new(AtomicBool::new(false));
    let l = late.clone();
    a.rec.set_hook(move |_, ev| {
        if matches!(ev, Ev::Message { .. }) {
            l.store(Instant::now() >= timer_end, Ordering::SeqCst);
            let _ = started.send(());
            let _ = answered.recv_timeout(WAIT);
            sleep_until(until);
        }
    });
    late
}

/// ws.h on_close: "`code` and `reason` are the server's when the closing
/// handshake completed (`was_clean` true ...)"; and the callbacks of a
/// loop's connections run "one at a time": a slow one delays the others'
/// events, it must not lose them. On a shared loop, A's
/// on_message holds the loop past B's close timeout, and B's server
/// answers B's close frame (close 1000 "bye", then FIN) while it does.
/// After A's callback the loop fires B's close timer before it reads B's
/// socket: B's clean close becomes 1006 and the server's answer is lost.
#[test]
fn a_slow_callback_on_one_handle_does_not_turn_anothers_clean_close_into_a_timeout() {
    let _s = serial();
    // Long enough for B's close frame to reach its server and A's
    // callback to start before B's timer runs out, also on a loaded machine.
    const CLOSE_MS: u64 = 3000;
    let a_server = echo_server();
    let (got_close_tx, got_close_rx) = crossbeam_channel::bounded::<Instant>(1);
    let (a_started_tx, a_started_rx) = crossbeam_channel::bounded::<()>(1);
    let (answered_tx, answered_rx) = crossbeam_channel::bounded::<()>(1);
    let b_server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let f = read_frame(&mut s).expect("the client's close frame");
        assert_eq!(f.first & 0x0f, 8);
        let _ = got_close_tx.send(Instant::now());
        // Answers while A's callback holds the loop.
        if a_started_rx.recv_timeout(WAIT).is_err() {
            return;
        }
        use std::io::Write;
        s.write_all(&frame(0x88, &close_payload(1000, "bye"))).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = answered_tx.send(());
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    unsafe {
        let lp = ws_loop_new();
        assert_eq!(ws_loop_start(lp), WS_OK);
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        assert_eq!(ws_options_set_close_timeout_ms(o, CLOSE_MS as u32), WS_OK);
        let a = Client::try_with_options(&a_server.url("/"), &[], o, Recorder::new()).unwrap();
        let b = Client::try_with_options(&b_server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        a.wait_open();
        b.wait_open();
        // B's close timer runs from when its close frame was written: after
        // `asked`, before the server read it.
        let asked = Instant::now();
        assert_eq!(b.close(1000, None), WS_OK);
        let read_at = got_close_rx.recv_timeout(WAIT).expect("B's close frame reached its server");
        let close_timeout = Duration::from_millis(CLOSE_MS);
        // When A's callback returns, B's answer is in its socket and B's
        // close timer has run out: both wait for the loop.
        let until = read_at + close_timeout + Duration::from_millis(200);
        let late = hold_the_loop_in_on_message(&a, asked + close_timeout, a_started_tx, answered_rx, until);
        // A's echo comes back at once; its callback holds the shared loop.
        assert_eq!(a.send_text("slow"), WS_OK);
        let evs = b.rec.wait_until(WAIT, "B's on_close", has_close);
        drop(a);
        drop(b);
        ws_loop_free(lp);
        assert!(
            !late.load(Ordering::SeqCst),
            "set-up too slow: A's callback started after B's close timer ({CLOSE_MS} ms) could have fired"
        );
        let close = evs.into_iter().find(|e| matches!(e, Ev::Close { .. })).unwrap();
        assert_eq!(
            close,
            Ev::Close { code: 1000, reason: "bye".into(), clean: true, state: WS_CLOSED },
            "the server answered B's close while A's callback held the loop"
        );
    }
}

/// The same cause with a worse symptom: B's server answers the upgrade
/// while A's on_message holds the shared loop past B's connect timeout. B
/// fails with on_error "connect timeout" although its 101 has been waiting
/// in its socket.
#[test]
fn a_slow_callback_on_one_handle_does_not_fail_anothers_handshake_with_a_connect_timeout() {
    let _s = serial();
    // Long enough for B's request to reach its server and A's callback to
    // start before B's timer runs out, also on a loaded machine.
    const CONNECT_MS: u64 = 3000;
    let a_server = echo_server();
    let (got_req_tx, got_req_rx) = crossbeam_channel::bounded::<()>(1);
    let (a_started_tx, a_started_rx) = crossbeam_channel::bounded::<()>(1);
    let (answered_tx, answered_rx) = crossbeam_channel::bounded::<()>(1);
    let b_server = raw_server(move |mut s| {
        let request = read_request(&mut s);
        let _ = got_req_tx.send(());
        // Answers while A's callback holds the loop.
        if a_started_rx.recv_timeout(WAIT).is_err() {
            return;
        }
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&request)
        );
        use std::io::Write;
        s.write_all(response.as_bytes()).unwrap();
        let _ = answered_tx.send(());
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    unsafe {
        let lp = ws_loop_new();
        assert_eq!(ws_loop_start(lp), WS_OK);
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        let a = Client::try_with_options(&a_server.url("/"), &[], o, Recorder::new()).unwrap();
        a.wait_open();
        assert_eq!(ws_options_set_connect_timeout_ms(o, CONNECT_MS as u32), WS_OK);
        // B's connect timer starts inside ws_new: between these two.
        let connect_timeout = Duration::from_millis(CONNECT_MS);
        let before = Instant::now();
        let b = Client::try_with_options(&b_server.url("/"), &[], o, Recorder::new()).unwrap();
        let after = Instant::now();
        ws_options_free(o);
        got_req_rx.recv_timeout(WAIT).expect("B's request reached its server");
        // When A's callback returns, B's 101 is in its socket and B's
        // connect timer has run out: both wait for the loop.
        let until = after + connect_timeout + Duration::from_millis(200);
        let late = hold_the_loop_in_on_message(&a, before + connect_timeout, a_started_tx, answered_rx, until);
        assert_eq!(a.send_text("slow"), WS_OK);
        let evs = b.rec.wait_until(WAIT, "B's on_open or on_close", |e| !e.is_empty());
        drop(a);
        drop(b);
        ws_loop_free(lp);
        assert!(
            !late.load(Ordering::SeqCst),
            "set-up too slow: A's callback started after B's connect timer ({CONNECT_MS} ms) could have fired"
        );
        assert_eq!(
            evs[0],
            Ev::Open { state: WS_OPEN },
            "B's server answered while A's callback held the loop; B's events: {evs:?}"
        );
    }
}
