//! `ws_set_log`: the process-wide log sink. Lines for each phase of a
//! connection, named by its id and URL without credentials; failures at
//! the error level; the level filter; no password in any line (through a
//! 401 retry with the URL's credentials and a proxy with credentials); off
//! by default and when set to NULL; `ws_set_log` from inside the sink does
//! nothing; once `ws_set_log` returns, the old sink is never called again.
//! One test: the sink is the process's; its cases run in turn, in every
//! loop mode.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use frames::*;
use handles::*;
use servers::*;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use ws::ffi::*;

static LINES: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());
static CALLS_AFTER_SWITCH: AtomicUsize = AtomicUsize::new(0);
static SWITCHED: AtomicBool = AtomicBool::new(false);
static TRY_SET_INSIDE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn collect(user_data: *mut c_void, level: c_int, message: *const c_char) {
    assert_eq!(user_data as usize, 0x5EED, "user_data passed back");
    if SWITCHED.load(Ordering::SeqCst) {
        CALLS_AFTER_SWITCH.fetch_add(1, Ordering::SeqCst);
    }
    if TRY_SET_INSIDE.swap(false, Ordering::SeqCst) {
        // Does nothing (and does not wait on itself).
        // SAFETY: any function or NULL may be passed.
        unsafe { ws_set_log(None, std::ptr::null_mut(), -1) };
    }
    // SAFETY: a live C string for the call.
    let text = unsafe { CStr::from_ptr(message) }.to_str().unwrap().to_string();
    LINES.lock().unwrap().push((level, text));
}

unsafe extern "C" fn other_sink(_: *mut c_void, _: c_int, _: *const c_char) {}

fn sink_on(max_level: i32) {
    // SAFETY: `collect` may be called on any thread.
    unsafe { ws_set_log(Some(collect), 0x5EED as *mut c_void, max_level) };
}

/// The lines of the connection to `url` (matched by its text), taken out.
fn lines_of(url: &str) -> Vec<(i32, String)> {
    let mut all = LINES.lock().unwrap();
    let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(_, l)| l.contains(url));
    *all = rest;
    mine
}

/// Each needle in order, each in a line of the given level.
fn assert_in_order(lines: &[(i32, String)], needles: &[(i32, &str)]) {
    let mut at = 0;
    for (level, needle) in needles {
        match lines[at..].iter().position(|(l, text)| l == level && text.contains(needle)) {
            Some(i) => at += i + 1,
            None => panic!("no level-{level} line with {needle:?} after line {at}:\n{lines:#?}"),
        }
    }
}

fn phases_of_a_conversation() {
    let server = echo_server();
    let url = server.url("/logged");
    let c = Client::new(&url);
    c.wait_open();
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    let lines = lines_of(&url);
    let port = server.port;
    assert_in_order(
        &lines,
        &[
            (2, &format!("connecting to 127.0.0.1:{port}")),
            (2, &format!("TCP connected to 127.0.0.1:{port}")),
            (3, "upgrade request GET /logged"),
            (2, "answer 101"),
            (2, "open (protocol \"\""),
            (3, "closing handshake: our close frame 1000"),
            (2, "closed cleanly: 1000"),
        ],
    );
    assert!(lines.iter().all(|(_, l)| l.starts_with("ws#")), "{lines:#?}");
}

fn a_failure_at_the_error_level() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let c = Client::new(&url);
    c.rec.wait_close();
    let lines = lines_of(&url);
    assert_in_order(&lines, &[(0, "failed (connect, errno 111): connect to 127.0.0.1 port")]);
}

/// Through a 401 answered with the URL's credentials: the retry is logged,
/// the password (plain, percent-encoded or in base64) never.
fn no_password_in_any_line() {
    let server = raw_server(|mut s| {
        let request = read_request(&mut s);
        if request_header(&request, "authorization").is_none() {
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n");
            return;
        }
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&request)
        );
        let _ = s.write_all(answer.as_bytes());
        let _ = read_until_close(&mut s);
    });
    let c = Client::new(&format!("ws://user:hunter%232@127.0.0.1:{}/secret?token=hunter3", server.port));
    c.wait_open();
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    let lines = lines_of(&format!("ws://127.0.0.1:{}/secret?...", server.port));
    assert_in_order(&lines, &[(2, "answer 401"), (2, "401 with a Basic challenge"), (2, "answer 101")]);
    let everything = LINES.lock().unwrap().iter().chain(&lines).map(|(_, l)| l.clone()).collect::<Vec<_>>();
    for l in &everything {
        // base64("user:hunter#2") holds "aHVudGVy".
        assert!(!l.contains("hunter") && !l.contains("dXNlcjpodW50ZXIjMg") && !l.contains("user:"), "{l}");
    }
}

fn levels_filter_and_off_means_off() {
    sink_on(0);
    let server = echo_server();
    let c = Client::new(&server.url("/quiet"));
    c.wait_open();
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    assert!(lines_of(&server.url("/quiet")).is_empty(), "info lines at level 0");
    // SAFETY: NULL turns it off.
    unsafe { ws_set_log(None, std::ptr::null_mut(), 3) };
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let c = Client::new(&url);
    c.rec.wait_close();
    assert!(lines_of(&url).is_empty(), "a line with the sink off");
    sink_on(3);
}

#[test]
fn the_log_sink() {
    sink_on(3);
    // The every_mode! cases, in turn: they share the sink.
    for mode in [Mode::OwnThread, Mode::SharedLoop, Mode::AppLoop] {
        in_mode(mode, phases_of_a_conversation);
        in_mode(mode, a_failure_at_the_error_level);
        in_mode(mode, no_password_in_any_line);
    }
    levels_filter_and_off_means_off();

    // ws_set_log from inside the sink does nothing: logging stays on.
    TRY_SET_INSIDE.store(true, Ordering::SeqCst);
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let c = Client::new(&url);
    c.rec.wait_close();
    assert!(!TRY_SET_INSIDE.load(Ordering::SeqCst), "the sink ran");
    assert!(!lines_of(&url).is_empty());

    // A connection logging all the time (debug keepalive pings every 20
    // ms): once ws_set_log returns, the old sink is never called again.
    let server = echo_server();
    let opts = Opts { ping_interval_ms: Some(20), ..Default::default() };
    let c = Client::with(&server.url("/pings"), &[], &opts);
    c.wait_open();
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: `other_sink` may be called on any thread.
    unsafe { ws_set_log(Some(other_sink), std::ptr::null_mut(), 3) };
    SWITCHED.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(CALLS_AFTER_SWITCH.load(Ordering::SeqCst), 0, "the old sink ran after ws_set_log returned");
    // SAFETY: NULL turns it off.
    unsafe { ws_set_log(None, std::ptr::null_mut(), 0) };
    drop(c);
}
