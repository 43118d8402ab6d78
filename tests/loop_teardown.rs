//! The end of a loop while it is in use: ws_loop_free called while
//! another thread is inside ws_loop_run, or from a callback inside it, and
//! a ws_new refused on a freed loop, which must leave nothing behind. Each
//! test runs in a child process, so that a crash fails that test alone.
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
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// Runs `body` in a child process (this test binary, filtered to `name`),
/// so that a crash fails this test instead of killing the whole binary.
fn in_child(name: &str, body: impl FnOnce()) {
    if std::env::var_os("LIBWS_TEARDOWN_CHILD").is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("LIBWS_TEARDOWN_CHILD", "1")
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

        // No thread for it (the library's test hook refuses it with EAGAIN,
        // as a thread limit would; a capped address space also made the
        // child's own small allocations fail now and then).
        ws::ffi::testing::refuse_threads(true);
        let refused = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &counting, o);
        let code = ws_last_error_code();
        ws::ffi::testing::refuse_threads(false);
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
