//! 10,000 connections on one shared loop, opened, echoed and closed against
//! the Node.js `ws` server (one event loop on the other side too). Scaled
//! down, with a printed reason, only when the open-file limit is lower.
//!
//! sanitize: none: 10,000 connections at once; not tried in an instrumented build

#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;

use peers::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws::ffi::*;

const TARGET: usize = 10_000;
/// Connections opened at once: the server's listen backlog is finite.
const BATCH: usize = 500;

/// Raises the soft open-file limit to the hard one; returns the limit.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur as usize
}

/// Counts events across all handles, without a recorder per handle.
#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    echoed: AtomicUsize,
    clean_close: AtomicUsize,
    other: AtomicUsize,
}

unsafe extern "C" fn on_open(ud: *mut std::ffi::c_void, _: *mut ws_socket) {
    (*(ud as *const Counts)).open.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_message(ud: *mut std::ffi::c_void, _: *mut ws_socket, data: *const u8, len: usize, _: bool) {
    let ok = std::slice::from_raw_parts(data, len) == b"ping";
    let c = &*(ud as *const Counts);
    if ok { &c.echoed } else { &c.other }.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_error(ud: *mut std::ffi::c_void, _: *mut ws_socket, _: *const std::ffi::c_char) {
    (*(ud as *const Counts)).other.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_close(
    ud: *mut std::ffi::c_void,
    _: *mut ws_socket,
    code: u16,
    _: *const std::ffi::c_char,
    clean: bool,
) {
    let c = &*(ud as *const Counts);
    if clean && code == 1000 { &c.clean_close } else { &c.other }.fetch_add(1, Ordering::SeqCst);
}

fn wait_count(what: &str, counter: &AtomicUsize, n: usize, counts: &Counts, limit: Duration) {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < n {
        let failed = counts.other.load(Ordering::SeqCst);
        assert_eq!(failed, 0, "{failed} unexpected events while waiting for {what}");
        assert!(Instant::now() < deadline, "{what}: {} of {n}", counter.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ten_thousand_connections_on_one_loop() {
    let limit = raise_fd_limit();
    // Each connection costs this process one fd, and the server as many.
    let n = TARGET.min(limit.saturating_sub(500));
    if n < TARGET {
        println!("open-file limit {limit}: scaled to {n} connections");
        eprintln!("open-file limit {limit}: scaled to {n} connections");
    }
    let Some(peer) = start_peer(
        "Node.js ws",
        "node",
        &["tests/peers/node_server.js"],
        "NODE_PATH",
        "target/peers/node/node_modules",
    ) else {
        return;
    };
    let counts = Arc::new(Counts::default());
    let callbacks = ws_callbacks {
        user_data: Arc::as_ptr(&counts) as *mut _,
        on_open: Some(on_open),
        on_message: Some(on_message),
        on_error: Some(on_error),
        on_close: Some(on_close),
    };
    let lp = ws_loop_new();
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    let options = ws_options_new();
    assert_eq!(unsafe { ws_options_set_loop(options, lp) }, WS_OK);
    let url = std::ffi::CString::new(peer.url("/")).unwrap();
    let t = Instant::now();
    let mut handles = Vec::with_capacity(n);
    while handles.len() < n {
        let batch = BATCH.min(n - handles.len());
        for _ in 0..batch {
            let ws = unsafe { ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, options) };
            assert!(!ws.is_null());
            handles.push(ws);
        }
        wait_count("on_open", &counts.open, handles.len(), &counts, Duration::from_secs(60));
    }
    let opened = t.elapsed();
    for ws in &handles {
        assert_eq!(unsafe { ws_send_string(*ws, c"ping".as_ptr(), 4) }, WS_OK);
    }
    wait_count("the echoes", &counts.echoed, n, &counts, Duration::from_secs(60));
    for ws in &handles {
        assert_eq!(unsafe { ws_close(*ws, 1000, std::ptr::null()) }, WS_OK);
    }
    wait_count("clean closes", &counts.clean_close, n, &counts, Duration::from_secs(60));
    println!("{n} connections: opened in {opened:?}, all done in {:?}", t.elapsed());
    for ws in handles {
        unsafe { ws_free(ws) };
    }
    unsafe {
        ws_options_free(options);
        ws_loop_free(lp);
    }
}
