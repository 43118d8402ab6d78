//! Wake-ups of a loop that an application runs: a call from another
//! thread ends a ws_loop_run(-1) wait and is taken by that turn, commands
//! queued by callbacks are counted by the turn that ran them, a send from
//! the thread that ran the loop last wakes the thread that polls it now,
//! and ws_loop_start wakes a thread waiting in ws_loop_run.
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
use handles::*;
use servers::*;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// ws.h: ws_loop_fd is "readable whenever ws_loop_run has I/O to do" and
/// ws_loop_timeout_ms gives "-1 when no timer is set"; sends from any
/// thread. A thread that ran the loop once (here: to open the connection)
/// and later sends, while another thread now drives the loop with
/// poll(ws_loop_fd, ws_loop_timeout_ms), gets no wake-up: the poller sleeps
/// on with the message queued.
#[test]
fn a_send_from_the_thread_that_ran_the_loop_last_wakes_the_poller() {
    let _s = serial();
    // A send from a thread that is not running the loop may be written
    // right there, with no wake-up needed. The server reads nothing until
    // told, and 2 MiB do not fit into a 4 KiB send buffer and its receive
    // window: part of the message is left for the loop (queued whole, or
    // as a flush after a partial write), and only a wake-up gets it out.
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let server = stalled_until(go_rx);
    unsafe {
        let lp = ws_loop_new();
        assert!(!lp.is_null());
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 4096);
        let mut c = Client::try_with_options(&server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        // This thread drives the loop until the connection is open.
        let deadline = Instant::now() + WAIT;
        while c.rec.events().is_empty() {
            assert!(Instant::now() < deadline, "never opened");
            assert!(ws_loop_run(lp, 20) >= 0);
        }
        assert_eq!(c.rec.events()[0], Ev::Open { state: WS_OPEN });

        // From now on another thread drives it, as ws.h says to.
        let stop = Arc::new(AtomicBool::new(false));
        let (lp_addr, stop2) = (lp as usize, stop.clone());
        let poller = std::thread::spawn(move || {
            let lp = lp_addr as *mut ws_loop;
            let cap = WAIT.as_millis() as i32;
            while !stop2.load(Ordering::SeqCst) {
                let t = ws_loop_timeout_ms(lp);
                // Capped only so that the test ends; a real poller waits for -1.
                let t = if t < 0 { cap } else { t.min(cap) };
                let mut fds = [libc::pollfd { fd: ws_loop_fd(lp), events: libc::POLLIN, revents: 0 }];
                libc::poll(fds.as_mut_ptr(), 1, t);
                assert!(ws_loop_run(lp, 0) >= 0);
            }
        });
        // Not needed by a right library; gives the poller time to fall
        // asleep in poll, so that a missing wake-up shows.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let big = vec![7u8; 2 << 20];
        assert_eq!(c.send_bytes(&big), WS_OK);
        assert!(c.buffered() > 0, "the socket took all 2 MiB: the test needs it stalled");
        go_tx.send(()).unwrap();
        // Without the wake-up the rest waits for the poll cap (WAIT).
        let bound = WAIT / 2;
        let got = c.rec.wait_until(bound, "the echo (a missing wake-up waits for the poll cap)", |e| {
            e.iter().any(|e| matches!(e, Ev::Message { .. }))
        });
        let took = t.elapsed();
        // The free wakes the poller, which then sees `stop`.
        stop.store(true, Ordering::SeqCst);
        c.free();
        poller.join().unwrap();
        ws_loop_free(lp);
        let echo = format!("{} bytes", big.len()).into_bytes();
        assert!(got.iter().any(|e| matches!(e, Ev::Message { data, .. } if *data == echo)), "{got:?}");
        assert!(took < bound, "the echo took {took:?}: the send waited for the poll cap ({WAIT:?})");
    }
}

/// ws.h, ws_loop_start: "If an application thread is inside ws_loop_run at
/// that moment, the library thread takes over when that call returns." An
/// application thread waiting in ws_loop_run(loop, -1) is not woken by
/// ws_loop_start: it stays blocked inside libws (here with an idle open
/// connection: indefinitely), holding the loop, and the library thread that
/// was just started waits behind it.
#[test]
fn ws_loop_start_while_an_application_thread_waits_in_ws_loop_run() {
    let _s = serial();
    let server = echo_server();
    unsafe {
        let lp = ws_loop_new();
        let c = client_on(lp, &server.url("/"), Recorder::new());
        let lp_addr = lp as usize;
        let (tx, rx) = crossbeam_channel::unbounded::<i32>();
        let app = std::thread::spawn(move || {
            let lp = lp_addr as *mut ws_loop;
            // Past any wait of the test below.
            let deadline = Instant::now() + 3 * WAIT;
            loop {
                // Capped only so that the test ends.
                let r = ws_loop_run(lp, if Instant::now() < deadline { -1 } else { 0 });
                let _ = tx.send(r);
                if r < 0 || Instant::now() > deadline {
                    return;
                }
            }
        });
        c.wait_open();
        // Not needed by a right library; lets the application thread fall
        // asleep in ws_loop_run(-1), so that a missing wake-up shows.
        std::thread::sleep(Duration::from_millis(200));
        while rx.try_recv().is_ok() {}
        assert_eq!(ws_loop_start(lp), WS_OK);
        let t = Instant::now();
        // Without the wake-up it returns only on the "wake" below.
        let r = rx.recv_timeout(WAIT);
        let took = t.elapsed();
        // Unblock the application thread (a message is work) and clean up.
        assert_eq!(c.send_text("wake"), WS_OK);
        app.join().unwrap();
        drop(c);
        ws_loop_free(lp);
        assert!(r.is_ok(), "ws_loop_run(-1) was still blocked {took:?} after ws_loop_start");
    }
}
