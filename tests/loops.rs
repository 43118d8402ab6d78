//! Shared event loops: who runs them, who owns them, and what misuse gets.
//! The API and conformance tests run in every mode (see tests/support/handles/mode.rs);
//! these check what only a shared loop has.
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
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// Runs `lp` on this thread until `done` holds (bounded by WAIT).
fn run_until(lp: *mut ws_loop, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out running the loop for {what}");
        let r = unsafe { ws_loop_run(lp, 20) };
        assert!(r >= 0, "ws_loop_run: {r}");
    }
}

#[test]
fn callbacks_run_on_the_thread_that_calls_ws_loop_run() {
    let server = echo_server();
    let lp = ws_loop_new();
    let rec = Recorder::new();
    let tags = Arc::new(Mutex::new(Vec::new()));
    let t = tags.clone();
    rec.set_hook(move |_, _| t.lock().unwrap().push(thread_tag()));
    let c = client_on(lp, &server.url("/"), rec);
    run_until(lp, "on_open", || !c.rec.events().is_empty());
    assert_eq!(c.send_text("hi"), WS_OK);
    run_until(lp, "the echo", || c.rec.messages().len() == 1);
    assert_eq!(c.close(1000, None), WS_OK);
    run_until(lp, "on_close", || c.state() == WS_CLOSED);
    let tags = tags.lock().unwrap().clone();
    assert_eq!(tags.len(), 3, "open, message, close");
    assert!(tags.iter().all(|t| *t == thread_tag()), "a callback ran on another thread");
    drop(c);
    unsafe { ws_loop_free(lp) };
}

#[test]
fn misuse_of_ws_loop_run_and_start_is_refused() {
    let server = echo_server();
    unsafe {
        assert_eq!(ws_loop_run(std::ptr::null_mut(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_loop_start(std::ptr::null_mut()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_loop_fd(std::ptr::null()), -1);
        assert_eq!(ws_loop_timeout_ms(std::ptr::null()), -1);
        ws_loop_free(std::ptr::null_mut());
        assert_eq!(ws_options_set_loop(std::ptr::null_mut(), std::ptr::null_mut()), WS_ERR_INVALID_ARGUMENT);
    }
    let lp = ws_loop_new();
    assert!(unsafe { ws_loop_fd(lp) } >= 0);
    assert_eq!(unsafe { ws_loop_run(lp, -2) }, WS_ERR_INVALID_ARGUMENT);
    assert_eq!(unsafe { ws_loop_run(lp, 0) }, 0, "no connection yet");

    // From inside a callback: not re-entrant.
    let inner = Arc::new(AtomicI32::new(1));
    let rec = Recorder::new();
    let (i, lp_addr) = (inner.clone(), lp as usize);
    rec.set_hook(move |_, ev| {
        if matches!(ev, Ev::Open { .. }) {
            i.store(unsafe { ws_loop_run(lp_addr as *mut ws_loop, 0) }, Ordering::SeqCst);
        }
    });
    let c = client_on(lp, &server.url("/"), rec);
    run_until(lp, "on_open", || !c.rec.events().is_empty());
    assert_eq!(inner.load(Ordering::SeqCst), WS_ERR_INVALID_STATE);

    // From a second thread while one runs it.
    let other = Arc::new(AtomicI32::new(1));
    let o = other.clone();
    let rec2 = Recorder::new();
    rec2.set_hook(move |_, ev| {
        if matches!(ev, Ev::Open { .. }) {
            let lp = lp_addr;
            o.store(
                std::thread::spawn(move || unsafe { ws_loop_run(lp as *mut ws_loop, 0) }).join().unwrap(),
                Ordering::SeqCst,
            );
        }
    });
    let c2 = client_on(lp, &server.url("/"), rec2);
    run_until(lp, "the second on_open", || !c2.rec.events().is_empty());
    assert_eq!(other.load(Ordering::SeqCst), WS_ERR_INVALID_STATE);

    // Started: a second start and any run are refused; the connections go on.
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_ERR_INVALID_STATE);
    assert_eq!(unsafe { ws_loop_run(lp, 0) }, WS_ERR_INVALID_STATE);
    assert_eq!(c.send_text("still here"), WS_OK);
    assert_eq!(wait_messages(&c, 1), vec![(b"still here".to_vec(), true)]);
    drop((c, c2));
    unsafe { ws_loop_free(lp) };
}

/// ws_loop_free with connections on the loop: they keep it alive and keep
/// working, whether a library thread ran it or the application did.
#[test]
fn freeing_a_loop_leaves_no_connection_without_it() {
    let server = echo_server();
    for started in [true, false] {
        let lp = ws_loop_new();
        let mut driver = (!started).then(|| drive(lp));
        if started {
            assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
        }
        let c = client_on(lp, &server.url("/"), Recorder::new());
        c.wait_open();
        // Options that name the loop keep it alive too.
        let o = ws_options_new();
        assert_eq!(unsafe { ws_options_set_loop(o, lp) }, WS_OK);
        if let Some(d) = driver.as_mut() {
            d.stop();
        }
        unsafe { ws_loop_free(lp) };
        assert_eq!(c.send_text("after free"), WS_OK);
        assert_eq!(wait_messages(&c, 1), vec![(b"after free".to_vec(), true)], "started: {started}");
        let later = unsafe { Client::try_with_options(&server.url("/"), &[], o, Recorder::new()) }.unwrap();
        unsafe { ws_options_free(o) };
        later.wait_open();
        assert_eq!(later.send_text("later"), WS_OK);
        assert_eq!(wait_messages(&later, 1), vec![(b"later".to_vec(), true)]);
        for c in [&c, &later] {
            assert_eq!(c.close(1000, None), WS_OK);
            assert_eq!(close_event(c), (1000, String::new(), true));
        }
    }
    // That their threads then end is checked in tests/resources.rs, alone
    // in its process.
}

/// A send made on the thread that runs the loop, between ws_loop_run
/// calls, needs no wake-up: ws_loop_timeout_ms says there is work.
#[test]
fn a_send_between_runs_shows_in_the_timeout() {
    // Between runs this thread is not the loop's, so a send may be written
    // to the socket right here, leaving nothing queued (and -1 would be
    // right). The server reads nothing until told, and 2 MiB do not fit
    // into a 4 KiB send buffer and the server's receive window: whether
    // the send went direct (the rest queued as a flush) or was queued
    // whole, work is left for the loop. (bufferedAmount goes down only
    // once the whole message is written.)
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let server = stalled_until(go_rx);
    let lp = ws_loop_new();
    let o = ws_options_new();
    unsafe {
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 4096);
    }
    let c = unsafe { Client::try_with_options(&server.url("/"), &[], o, Recorder::new()) }.unwrap();
    unsafe { ws_options_free(o) };
    run_until(lp, "on_open", || c.state() == WS_OPEN);
    // Let the loop settle: nothing to do, no timer while open.
    assert_eq!(unsafe { ws_loop_run(lp, 0) }, 1);
    assert_eq!(unsafe { ws_loop_timeout_ms(lp) }, -1);
    let big = vec![7u8; 2 << 20];
    assert_eq!(c.send_bytes(&big), WS_OK);
    assert!(c.buffered() > 0, "the socket took all 2 MiB: the test needs it stalled");
    assert_eq!(unsafe { ws_loop_timeout_ms(lp) }, 0, "a queued send is work");
    go_tx.send(()).unwrap();
    run_until(lp, "the echo", || c.rec.messages().len() == 1);
    assert_eq!(c.rec.messages()[0].0, format!("{} bytes", big.len()).into_bytes());
    assert_eq!(c.close(1000, None), WS_OK);
    let t = unsafe { ws_loop_timeout_ms(lp) };
    assert_eq!(t, 0, "the queued close is work");
    run_until(lp, "on_close", || c.state() == WS_CLOSED);
    assert_eq!(close_event(&c), (1000, String::new(), true));
    assert_eq!(unsafe { ws_loop_run(lp, 0) }, 0, "no connection left");
    drop(c);
    unsafe { ws_loop_free(lp) };
}

/// The close timeout shows as the loop's timeout while the server does not
/// answer the close frame.
#[test]
fn timers_show_in_the_timeout_and_fire_from_ws_loop_run() {
    // 3 s: a thread descheduled for a while between the turn that writes
    // the close frame and the reads below still finds the timer pending.
    const CLOSE_MS: u32 = 3000;
    // The server never answers, and holds the connection until the test
    // is done (dropping `_done`), longer than any wait below.
    let (_done, done_rx) = crossbeam_channel::bounded::<()>(0);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        read_until_close(&mut s);
        let _ = done_rx.recv_timeout(3 * WAIT);
    });
    let lp = ws_loop_new();
    let o = ws_options_new();
    unsafe {
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        assert_eq!(ws_options_set_close_timeout_ms(o, CLOSE_MS), WS_OK);
    }
    let c = unsafe { Client::try_with_options(&server.url("/"), &[], o, Recorder::new()) }.unwrap();
    unsafe { ws_options_free(o) };
    run_until(lp, "on_open", || c.state() == WS_OPEN);
    c.close(1000, None);
    let t = Instant::now();
    run_until(lp, "the close frame to go out", || unsafe { ws_loop_timeout_ms(lp) } > 0);
    let timeout = unsafe { ws_loop_timeout_ms(lp) };
    assert!((1..=CLOSE_MS as i32).contains(&timeout), "{timeout}");
    // Wait as an application would: poll the fd for the timeout, then run.
    // A timeout of -1 (the timer lost) waits out the test's budget.
    let deadline = t + WAIT;
    while c.state() != WS_CLOSED {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis() as i32;
        assert!(left > 0, "the close timer never fired from ws_loop_run");
        let ms = unsafe { ws_loop_timeout_ms(lp) };
        let ms = if (0..left).contains(&ms) { ms } else { left };
        let mut fds = [libc::pollfd { fd: unsafe { ws_loop_fd(lp) }, events: libc::POLLIN, revents: 0 }];
        unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        assert!(unsafe { ws_loop_run(lp, 0) } >= 0);
    }
    assert_eq!(close_event(&c), (1006, String::new(), false));
    // The timer runs from the close frame's write, which came after `t`.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(CLOSE_MS.into()) && took < WAIT, "{took:?}");
    drop(c);
    unsafe { ws_loop_free(lp) };
}

/// One handle's slow callback holds up the others on its loop (they share
/// its thread), but none of their messages is lost or reordered.
#[test]
fn a_slow_callback_delays_others_on_its_loop_but_loses_nothing() {
    // Other's server reads its 100 messages, and echoes them only once the
    // slow callback has started: they all wait in other's socket while the
    // slow callback holds the loop.
    let (got_all_tx, got_all_rx) = crossbeam_channel::bounded::<()>(1);
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (echoed_tx, echoed_rx) = crossbeam_channel::bounded::<()>(1);
    let server = ws_server(
        |_| None,
        move |mut ws, seen| {
            if seen.path != "/other" {
                return echo(ws);
            }
            let mut got = Vec::new();
            while got.len() < 100 {
                match ws.read() {
                    Ok(m) if m.is_text() => got.push(m),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = got_all_tx.send(());
            if started_rx.recv_timeout(WAIT).is_err() {
                return;
            }
            for m in got {
                if ws.send(m).is_err() {
                    return;
                }
            }
            let _ = echoed_tx.send(());
            echo(ws)
        },
    );
    let lp = ws_loop_new();
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    let slow_done = Arc::new(Mutex::new(None::<Instant>));
    let sd = slow_done.clone();
    let slow_rec = Recorder::new();
    slow_rec.set_hook(move |_, ev| {
        if matches!(ev, Ev::Message { .. }) {
            let _ = started_tx.send(());
            // Other's echoes are in its socket now; a callback of other's
            // that could run alongside this one gets 100 ms to do so.
            let _ = echoed_rx.recv_timeout(WAIT);
            std::thread::sleep(Duration::from_millis(100));
            *sd.lock().unwrap() = Some(Instant::now());
        }
    });
    let first_other = Arc::new(Mutex::new(None::<Instant>));
    let fo = first_other.clone();
    let other_rec = Recorder::new();
    other_rec.set_hook(move |_, ev| {
        if matches!(ev, Ev::Message { .. }) {
            fo.lock().unwrap().get_or_insert_with(Instant::now);
        }
    });
    let slow = client_on(lp, &server.url("/slow"), slow_rec);
    let other = client_on(lp, &server.url("/other"), other_rec);
    slow.wait_open();
    other.wait_open();
    for i in 0..100 {
        assert_eq!(other.send_text(&format!("m{i}")), WS_OK);
    }
    got_all_rx.recv_timeout(WAIT).expect("other's server got its 100 messages");
    assert_eq!(slow.send_text("take your time"), WS_OK);
    let got = wait_messages(&other, 100);
    let expected: Vec<(Vec<u8>, bool)> = (0..100).map(|i| (format!("m{i}").into_bytes(), true)).collect();
    assert_eq!(got, expected);
    let done = slow_done.lock().unwrap().expect("the slow callback ran");
    let first = first_other.lock().unwrap().unwrap();
    assert!(first >= done, "another handle's callback ran while the slow one did, on the same loop");
    drop((slow, other));
    unsafe { ws_loop_free(lp) };
}

/// ws_free(A) inside B's callback while another thread frees B, with A and
/// B on one shared loop: nothing waits on anything.
#[test]
fn freeing_across_handles_of_one_loop_does_not_deadlock() {
    let server = echo_server();
    let lp = ws_loop_new();
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    for _ in 0..50 {
        let mut a = client_on(lp, &server.url("/"), Recorder::new());
        let brec = Recorder::new();
        let a_ws = a.ws as usize;
        let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
        let (freed_tx, freed_rx) = crossbeam_channel::bounded(1);
        brec.set_hook(move |_, ev| {
            if matches!(ev, Ev::Message { .. }) {
                let _ = entered_tx.send(());
                unsafe { ws_free(a_ws as *mut ws_socket) };
                let _ = freed_tx.send(());
            }
        });
        Recorder::keep_alive(&brec);
        let mut b = client_on(lp, &server.url("/"), brec.clone());
        a.wait_open();
        b.wait_open();
        a.forget();
        assert_eq!(b.send_text("go"), WS_OK);
        entered_rx.recv_timeout(WAIT).unwrap();
        let t = Instant::now();
        b.free();
        freed_rx.recv_timeout(WAIT).expect("ws_free(A) inside B's callback did not return");
        assert!(t.elapsed() < WAIT);
        brec.clear_hook();
    }
    unsafe { ws_loop_free(lp) };
}

/// Many connections on one loop run by the application, each receiving
/// its own messages in order.
#[test]
fn a_hundred_connections_on_one_application_loop() {
    let server = echo_server();
    let lp = ws_loop_new();
    let mut driver = drive(lp);
    let clients: Vec<Client> = (0..100).map(|_| client_on(lp, &server.url("/"), Recorder::new())).collect();
    for (i, c) in clients.iter().enumerate() {
        c.wait_open();
        for j in 0..10 {
            assert_eq!(c.send_text(&format!("{i}/{j}")), WS_OK);
        }
    }
    for (i, c) in clients.iter().enumerate() {
        let expected: Vec<(Vec<u8>, bool)> = (0..10).map(|j| (format!("{i}/{j}").into_bytes(), true)).collect();
        assert_eq!(wait_messages(c, 10), expected);
        c.close(1000, Some("done"));
    }
    for c in &clients {
        assert_eq!(close_event(c), (1000, "done".to_string(), true));
    }
    driver.stop();
    drop(clients);
    unsafe { ws_loop_free(lp) };
}
