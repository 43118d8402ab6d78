//! Edges of the event loop that an outside review found broken, one test
//! each: the close timeout with a server that stopped reading, wake-ups
//! for sends between ws_loop_run calls, a slow callback's neighbours,
//! ws_loop_free during ws_loop_run, ws_loop_start during it, a refused
//! ws_new that must stay dead, and the 2 s wait after the frames cross.

mod common;

use common::*;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

fn has_close(e: &[Ev]) -> bool {
    e.iter().any(|e| matches!(e, Ev::Close { .. }))
}

/// ws.h, ws_close: "While OPEN it starts the closing handshake (CLOSING);
/// on_close follows when the server's close frame has arrived and TCP is
/// closed, or after the close timeout (then 1006, not clean)", and "no
/// input from the network ... blocks forever". A server that stops reading
/// keeps our close frame behind a send backlog; the close timeout must still
/// bound the close.
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

/// The contract for close codes: "The server's code and reason when the closing
/// handshake completed ... was_clean true"; brief: "a slow callback on one
/// handle must delay but not lose others' events". On a shared loop, A's
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

/// Runs `body` in a child process (this test binary, filtered to `name`),
/// so that a crash fails this test instead of killing the whole binary.
fn in_child(name: &str, body: impl FnOnce()) {
    if std::env::var_os("LIBWS_REVIEW_CHILD").is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("LIBWS_REVIEW_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    let tail: String = out.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(status.success(), "child {name} ended with {status:?}; its last output:\n{tail}");
}

static RUNNER_DONE: AtomicBool = AtomicBool::new(false);

/// ws.h, ws_loop_free: "Called while an application thread is inside
/// ws_loop_run, that call finishes its turn first. The ws_loop must not be
/// used after this." So freeing the loop while another thread is inside
/// ws_loop_run is allowed. But ws_loop_run works on `&(*loop_).inner`, a
/// reference into the ws_loop box that ws_loop_free drops at once: the rest
/// of that turn reads freed memory (here: after a callback that is still
/// running when ws_loop_free returns).
#[test]
fn ws_loop_free_while_another_thread_is_inside_ws_loop_run() {
    let _s = serial();
    in_child("ws_loop_free_while_another_thread_is_inside_ws_loop_run", || unsafe {
        let server = echo_server();
        let lp = ws_loop_new();
        let c = client_on(lp, &server.url("/"), Recorder::new());
        let in_callback = Arc::new(AtomicBool::new(false));
        let flag = in_callback.clone();
        // The callback returns only once the loop has been freed (and its
        // memory reused): the rest of the turn runs after ws_loop_free.
        let (freed_tx, freed_rx) = crossbeam_channel::bounded::<()>(1);
        c.rec.set_hook(move |_, ev| {
            if matches!(ev, Ev::Message { .. }) {
                flag.store(true, Ordering::SeqCst);
                let _ = freed_rx.recv_timeout(WAIT);
            }
        });
        let lp_addr = lp as usize;
        let runner = std::thread::spawn(move || {
            let lp = lp_addr as *mut ws_loop;
            // Runs until the connection is open and its echo has been
            // delivered (the turn in which ws_loop_free happens).
            let deadline = Instant::now() + WAIT;
            loop {
                let r = ws_loop_run(lp, 50);
                if r < 0 || Instant::now() > deadline {
                    return r;
                }
                if RUNNER_DONE.load(Ordering::SeqCst) {
                    return r;
                }
            }
        });
        c.wait_open();
        assert_eq!(c.send_text("x"), WS_OK);
        poll_until("the runner inside on_message", || in_callback.load(Ordering::SeqCst));
        RUNNER_DONE.store(true, Ordering::SeqCst);
        // Allowed by ws.h while the runner is inside ws_loop_run.
        ws_loop_free(lp);
        // Ordinary allocations of the same size reuse the freed box.
        let junk: Vec<Box<usize>> = (0..256).map(|_| Box::new(0x0bad_0bad_0bad_0bad)).collect();
        freed_tx.send(()).unwrap();
        let r = runner.join();
        drop(junk);
        assert!(r.is_ok(), "the thread inside ws_loop_run panicked");
        drop(c);
    });
}

/// The same dangling reference without a second thread: a single-threaded
/// program that cleans up in on_close (frees its handle and its loop from
/// inside the callback, which ws.h allows: ws_loop_free may be called while
/// "an application thread is inside ws_loop_run", and every function may be
/// called from inside callbacks). ws_loop_run goes on using the freed loop
/// box after on_close returns.
#[test]
fn ws_loop_free_from_on_close_inside_ws_loop_run() {
    let _s = serial();
    in_child("ws_loop_free_from_on_close_inside_ws_loop_run", || unsafe {
        let server = echo_server();
        let lp = ws_loop_new();
        let mut c = client_on(lp, &server.url("/"), Recorder::new());
        let lp_addr = lp as usize;
        c.rec.set_hook(move |ws, ev| match ev {
            Ev::Open { .. } => {
                assert_eq!(ws_close(ws, 1000, std::ptr::null()), WS_OK);
            }
            Ev::Close { .. } => {
                ws_free(ws);
                ws_loop_free(lp_addr as *mut ws_loop);
                // The program goes on allocating, as programs do.
                // Kept, not leaked: LeakSanitizer reports only the library's
                // losses. Boxed one by one to fill small freed blocks.
                #[allow(clippy::vec_box)]
                static JUNK: Mutex<Vec<Vec<Box<usize>>>> = Mutex::new(Vec::new());
                let junk: Vec<Box<usize>> = (0..256).map(|_| Box::new(0x0bad_0bad_0bad_0bad)).collect();
                JUNK.lock().unwrap_or_else(|e| e.into_inner()).push(junk);
            }
            _ => {}
        });
        c.forget();
        let deadline = Instant::now() + WAIT;
        while !has_close(&c.rec.events()) {
            assert!(Instant::now() < deadline, "never closed: {:?}", c.rec.events());
            let r = ws_loop_run(lp, 50);
            assert!(r >= 0, "ws_loop_run: {r}");
        }
    });
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

/// The threads of this process. (Not those named libws-io: a thread takes
/// its name only once it runs, so a thread just spawned is not counted.)
fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

static STALE_OPENS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn count_open(_ud: *mut std::ffi::c_void, _ws: *mut ws_socket) {
    STALE_OPENS.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn count_close(
    _ud: *mut std::ffi::c_void,
    _ws: *mut ws_socket,
    _c: u16,
    _r: *const std::ffi::c_char,
    _k: bool,
) {
    STALE_OPENS.fetch_add(1000, Ordering::SeqCst);
}

/// ws.h, ws_new: NULL means no handle; the caller may free user_data at
/// once. On a loop the application has freed (kept alive by options, its
/// library thread ended), a ws_new that cannot get a thread returns NULL
/// with WS_ERR_RESOURCE, but leaves its Register command in the loop's
/// queue (Loop::register drains it only for private loops). The next
/// ws_new that gets a thread starts that orphan too: a connection nobody
/// owns, whose callbacks get the freed handle and the caller's user_data.
#[test]
fn a_ws_new_that_returned_null_never_connects_nor_calls_back() {
    let _s = serial();
    in_child("a_ws_new_that_returned_null_never_connects_nor_calls_back", || unsafe {
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = connections.clone();
        let server = ws_server(
            |_| None,
            move |ws, _| {
                n.fetch_add(1, Ordering::SeqCst);
                echo(ws)
            },
        );
        let lp = ws_loop_new();
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        // ws_loop_free starts a library thread for the loop before it
        // returns; that thread ends (no connection), so that the next
        // ws_new needs a new one. This child runs only this test and its
        // server, which starts no thread until a client connects.
        let before = process_threads();
        ws_loop_free(lp);
        poll_until("the freed loop's thread to end", || process_threads() == before);
        let url = std::ffi::CString::new(server.url("/")).unwrap();
        let counting = ws_callbacks {
            user_data: std::ptr::null_mut(),
            on_open: Some(count_open),
            on_message: None,
            on_error: None,
            on_close: Some(count_close),
        };

        // Take every thread stack that glibc keeps cached from threads
        // that ended (the loop's), so that a new thread needs a new mapping.
        let (park_tx, park_rx) = crossbeam_channel::unbounded::<()>();
        let parked: Vec<_> = (0..16)
            .map(|_| {
                let rx = park_rx.clone();
                std::thread::spawn(move || {
                    let _ = rx.recv();
                })
            })
            .collect();
        // No address space for another thread's stack.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let limit = libc::rlimit { rlim_cur: (kib + 512) * 1024, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limit), 0);
        let refused = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &counting, o);
        let code = ws_last_error_code();
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &unlimited), 0);
        drop(park_tx);
        for t in parked {
            t.join().unwrap();
        }
        assert!(refused.is_null(), "the thread was not refused; the test needs it refused");
        assert_eq!(code, WS_ERR_RESOURCE);

        // Threads are available again: a new handle on the same options.
        let c = Client::try_with_options(&server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        c.wait_open();
        // The server counts a connection after its 101 is out: wait for
        // ours, then give an orphan time to connect and call back.
        poll_until("the server to count our connection", || connections.load(Ordering::SeqCst) >= 1);
        std::thread::sleep(Duration::from_millis(500));
        let stale = STALE_OPENS.load(Ordering::SeqCst);
        let conns = connections.load(Ordering::SeqCst);
        drop(c);
        assert_eq!(stale, 0, "callbacks of the refused ws_new ran (1 per on_open, 1000 per on_close)");
        assert_eq!(conns, 1, "server connections: the refused ws_new connected anyway");
    });
}

/// The contract for close: "Once both close frames have crossed, the client waits up
/// to 2 s for the server to close TCP, then closes it itself." The 2 s are
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
