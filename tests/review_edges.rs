//! Outside review: defects found by attacking the loop and the closing
//! handshake. Each test fails on the code it was written against.

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// ws.h ws_loop_run: "Waits up to timeout_ms for something to do first
/// ... -1 waits until there is work (a socket event, a timer, or a call
/// from another thread). Returns the number of connections still on the
/// loop". An application thread waits in ws_loop_run(lp, -1) on an empty
/// loop; another thread creates a handle on it. The wake-up ends the wait,
/// but the turn resets the eventfd and skips the commands it announced:
/// ws_loop_run returns 0 ("none") with a connection on the loop, nothing
/// was started, and ws_loop_fd is no longer readable although the
/// command is still untaken ("ws_loop_fd becomes readable ... until
/// ws_loop_run has taken them").
#[test]
fn a_wait_ended_by_another_threads_call_takes_that_call() {
    let _s = serial();
    let server = echo_server();
    unsafe {
        let lp = ws_loop_new();
        assert!(!lp.is_null());
        let lp_addr = lp as usize;
        // Waits for far longer than the test allows it.
        let wait_ms = (3 * WAIT).as_millis() as i32;
        let runner = std::thread::spawn(move || {
            let lp = lp_addr as *mut ws_loop;
            let t = Instant::now();
            let r = ws_loop_run(lp, wait_ms);
            (r, t.elapsed())
        });
        // Not needed by a right library; lets the runner fall asleep in
        // ws_loop_run before the handle is made, so that the bug shows.
        std::thread::sleep(Duration::from_millis(300));
        let mut c = client_on(lp, &server.url("/"), Recorder::new());
        let (r, took) = runner.join().unwrap();
        let mut fds = [libc::pollfd { fd: ws_loop_fd(lp), events: libc::POLLIN, revents: 0 }];
        let fd_readable = libc::poll(fds.as_mut_ptr(), 1, 0) > 0;
        let timeout = ws_loop_timeout_ms(lp);
        // Clean up: run the loop until the handle is done.
        c.close(1000, None);
        let deadline = Instant::now() + WAIT;
        while ws_loop_run(lp, 20) > 0 && Instant::now() < deadline {}
        c.free();
        while ws_loop_run(lp, 0) > 0 && Instant::now() < deadline {}
        ws_loop_free(lp);
        assert!(took < WAIT, "the wake-up did not end the wait ({took:?})");
        assert!(
            r == 1 || fd_readable,
            "ws_loop_run woken by ws_new on another thread returned {r} connections, did not take the \
             new connection, and left ws_loop_fd unreadable (ws_loop_timeout_ms {timeout})"
        );
        assert_eq!(r, 1, "the turn woken by ws_new must count (and start) the new connection");
    }
}

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

/// ws.h ws_loop_run: "Sends and closes made inside its callbacks take
/// effect when the callback returns, without a wake-up ... Returns the
/// number of connections still on the loop (0: none ...)". The common
/// reconnect pattern: on_close, here delivered by a connect timeout (a
/// timer), makes a new handle on the same loop. The commands its
/// callbacks queue are not taken after timers fire, so the turn returns
/// 0 ("none") with a connection on the loop, and without a wake-up:
/// an application loop `while (ws_loop_run(lp, -1) > 0)` stops there
/// and the new connection never starts.
#[test]
fn a_handle_made_in_on_close_from_a_timer_is_counted_by_that_turn() {
    let _s = serial();
    let (silent, _held) = silent_server();
    let echo = echo_server();
    let echo_url = echo.url("/");
    unsafe {
        let lp = ws_loop_new();
        assert!(!lp.is_null());
        let lp_addr = lp as usize;
        let made: Arc<Mutex<Option<Client>>> = Arc::new(Mutex::new(None));
        let m = made.clone();
        let rec = Recorder::new();
        rec.set_hook(move |_, ev| {
            if matches!(ev, Ev::Close { .. }) {
                let o = ws_options_new();
                assert_eq!(ws_options_set_loop(o, lp_addr as *mut ws_loop), WS_OK);
                let c = Client::try_with_options(&echo_url, &[], o, Recorder::new()).unwrap();
                ws_options_free(o);
                *m.lock().unwrap() = Some(c);
            }
        });
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        assert_eq!(ws_options_set_connect_timeout_ms(o, 300), WS_OK);
        let a = Client::try_with_options(&silent.url("/"), &[], o, rec).unwrap();
        ws_options_free(o);
        let deadline = Instant::now() + WAIT;
        let mut returned = None;
        while Instant::now() < deadline {
            let r = ws_loop_run(lp, 1000);
            assert!(r >= 0);
            if a.rec.events().iter().any(|e| matches!(e, Ev::Close { .. })) {
                returned = Some(r);
                break;
            }
        }
        let returned = returned.expect("the connect timeout never fired");
        let timeout = ws_loop_timeout_ms(lp);
        let mut fds = [libc::pollfd { fd: ws_loop_fd(lp), events: libc::POLLIN, revents: 0 }];
        let fd_readable = libc::poll(fds.as_mut_ptr(), 1, 0) > 0;
        // Clean up.
        drop(a);
        let b = made.lock().unwrap().take().expect("the hook made a handle");
        drop(b);
        let deadline = Instant::now() + WAIT;
        while ws_loop_run(lp, 20) > 0 && Instant::now() < deadline {}
        ws_loop_free(lp);
        assert_eq!(
            returned, 1,
            "the turn that ran on_close (which made a handle on this loop) returned {returned} \
             (ws_loop_timeout_ms {timeout}, ws_loop_fd readable {fd_readable})"
        );
    }
}
