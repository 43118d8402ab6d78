//! What an idle connection holds after traffic: a connection that once
//! received a large message must not keep a buffer of that size while it
//! sits idle. Its own binary: a counting allocator measures the bytes the
//! library holds (the process's RSS would also count what malloc keeps).
//!
//! sanitize: none: not tried under the sanitizers yet

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
use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use ws::ffi::*;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting what is live.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        System.dealloc(p, layout)
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            LIVE.fetch_add(new_size, Ordering::SeqCst);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static MESSAGES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_message(_: *mut c_void, _: *mut ws_socket, _: *const u8, len: usize, _: bool) {
    if len == MESSAGE {
        MESSAGES.fetch_add(1, Ordering::SeqCst);
    }
}

const MESSAGE: usize = 1 << 20;
const CONNECTIONS: usize = 32;

#[test]
fn connections_that_received_1_mib_each_hold_no_large_buffer_when_idle() {
    // One 1 MiB message to each connection, written from one buffer; then
    // the server holds the connection open and quiet.
    let wire = {
        let mut f = vec![0x82, 127];
        f.extend_from_slice(&(MESSAGE as u64).to_be_bytes());
        f.resize(f.len() + MESSAGE, 7);
        std::sync::Arc::new(f)
    };
    let (done_tx, done) = crossbeam_channel::unbounded::<()>();
    let (end_tx, end) = crossbeam_channel::bounded::<()>(0);
    let server = raw_server(move |mut s: TcpStream| {
        raw_handshake(&mut s, "");
        s.write_all(&wire).unwrap();
        let _ = done_tx.send(());
        let _ = end.recv_timeout(WAIT * 3);
    });
    let lp = ws_loop_new();
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    let callbacks = ws_callbacks {
        user_data: std::ptr::null_mut(),
        on_open: None,
        on_message: Some(count_message),
        on_error: None,
        on_close: None,
    };
    let url = std::ffi::CString::new(server.url("/")).unwrap();
    let before = LIVE.load(Ordering::SeqCst);
    let mut handles = Vec::new();
    for _ in 0..CONNECTIONS {
        let o = ws_options_new();
        unsafe { ws_options_set_loop(o, lp) };
        let ws = unsafe { ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o) };
        unsafe { ws_options_free(o) };
        assert!(!ws.is_null());
        handles.push(ws);
    }
    for _ in 0..CONNECTIONS {
        done.recv_timeout(WAIT).expect("the server wrote a message");
    }
    poll_until("every message to arrive", || MESSAGES.load(Ordering::SeqCst) == CONNECTIONS);
    // The loop's thread gives buffers back at the end of the read that
    // delivered the message, just after the callback: wait for that.
    let per_connection = || LIVE.load(Ordering::SeqCst).saturating_sub(before) / CONNECTIONS;
    let deadline = std::time::Instant::now() + WAIT;
    while per_connection() >= 128 * 1024 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let held = per_connection();
    println!("{CONNECTIONS} idle connections after 1 MiB each: {held} bytes each");
    assert!(held < 128 * 1024, "each idle connection holds {held} bytes");
    drop(end_tx);
    for ws in handles {
        unsafe { ws_free(ws) };
    }
    unsafe { ws_loop_free(lp) };
}
