//! A producer that sends only from `on_open` and `on_drain`
//! (`ws_options_set_on_drain`), against a server slower than it:
//! `stream_from_on_drain` (`handles`, `servers`, `frames`).

use crate::common::WAIT;
use crate::frames::*;
use crate::handles::*;
use crate::servers::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use ws::ffi::*;

/// A producer that sends only from on_open and on_drain: up to HIGH bytes
/// buffered, then it waits for on_drain (LOW).
pub struct Producer {
    chunk: Vec<u8>,
    target: u64,
    sent: AtomicU64,
    drains: AtomicU64,
    /// on_drain calls that found bufferedAmount above LOW (must be none).
    early: AtomicU64,
    after_close: AtomicU64,
    closed: crossbeam_channel::Sender<(u16, bool)>,
    closing: std::sync::atomic::AtomicBool,
}

pub const LOW: u64 = 256 * 1024;
pub const HIGH: u64 = 4 << 20;

unsafe fn produce(p: &Producer, ws: *mut ws_socket) {
    // SAFETY (all calls): `ws` is the live handle this callback is for.
    unsafe {
        while p.sent.load(Ordering::SeqCst) < p.target && ws_buffered_amount(ws) <= HIGH {
            assert_eq!(ws_send_bytes(ws, p.chunk.as_ptr(), p.chunk.len()), WS_OK);
            p.sent.fetch_add(p.chunk.len() as u64, Ordering::SeqCst);
        }
        if p.sent.load(Ordering::SeqCst) >= p.target && !p.closing.swap(true, Ordering::SeqCst) {
            assert_eq!(ws_close(ws, 1000, std::ptr::null()), WS_OK);
        }
    }
}

pub unsafe extern "C" fn producer_open(ud: *mut std::ffi::c_void, ws: *mut ws_socket) {
    // SAFETY: user_data is the test's Producer, alive until on_close.
    unsafe { produce(&*(ud as *const Producer), ws) }
}

pub unsafe extern "C" fn producer_drain(ud: *mut std::ffi::c_void, ws: *mut ws_socket) {
    // SAFETY: as above.
    let p = unsafe { &*(ud as *const Producer) };
    p.drains.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the live handle.
    if unsafe { ws_buffered_amount(ws) } > LOW {
        p.early.fetch_add(1, Ordering::SeqCst);
    }
    if p.closing.load(Ordering::SeqCst) {
        p.after_close.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: as above.
    unsafe { produce(p, ws) }
}

pub unsafe extern "C" fn producer_close(
    ud: *mut std::ffi::c_void,
    _ws: *mut ws_socket,
    code: u16,
    _reason: *const std::ffi::c_char,
    clean: bool,
) {
    // SAFETY: as above.
    let p = unsafe { &*(ud as *const Producer) };
    let _ = p.closed.send((code, clean));
}

/// Peak resident memory of the process, in KiB.
pub fn hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A server slower than the producer: it reads in 64 KiB steps, resting
/// 20 ms after each 8 MiB, skips payloads without unmasking them, and
/// answers the close frame. Returns the payload bytes it received.
pub fn slow_sink() -> (Server, crossbeam_channel::Receiver<u64>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let mut payload_bytes = 0u64;
        let mut since_rest = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut head = [0u8; 2];
            if s.read_exact(&mut head).is_err() {
                return;
            }
            let len = match head[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    s.read_exact(&mut l).unwrap();
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    s.read_exact(&mut l).unwrap();
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            s.read_exact(&mut mask).unwrap();
            if head[0] & 0x0f == 0x8 {
                let mut body = vec![0u8; len as usize];
                s.read_exact(&mut body).unwrap();
                let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
                let _ = tx.send(payload_bytes);
                return;
            }
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.read_exact(&mut buf[..n]).unwrap();
                left -= n as u64;
                since_rest += n as u64;
                if since_rest >= 8 << 20 {
                    std::thread::sleep(Duration::from_millis(20));
                    since_rest = 0;
                }
            }
            payload_bytes += len;
        }
    });
    (server, rx)
}

/// Streams `target` bytes in 64 KiB messages from on_drain alone; no
/// thread polls bufferedAmount.
pub fn stream_from_on_drain(target: u64, peak_limit_kib: Option<u64>) {
    let (server, received) = slow_sink();
    let (closed_tx, closed_rx) = crossbeam_channel::bounded(1);
    let producer = Box::new(Producer {
        chunk: vec![0x5a; 64 * 1024],
        target,
        sent: AtomicU64::new(0),
        drains: AtomicU64::new(0),
        early: AtomicU64::new(0),
        after_close: AtomicU64::new(0),
        closed: closed_tx,
        closing: std::sync::atomic::AtomicBool::new(false),
    });
    let before = hwm_kib();
    let callbacks = ws_callbacks {
        user_data: &*producer as *const Producer as *mut std::ffi::c_void,
        on_open: Some(producer_open),
        on_message: None,
        on_error: None,
        on_close: Some(producer_close),
    };
    let url = std::ffi::CString::new(server.url("/")).unwrap();
    // SAFETY: live options and strings; the producer outlives the handle's
    // callbacks (on_close is waited for before it drops).
    let ws = unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_on_drain(o, Some(producer_drain), LOW), WS_OK);
        let lp = current_loop();
        if !lp.is_null() {
            assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        }
        let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o);
        ws_options_free(o);
        assert!(!ws.is_null());
        ws
    };
    let limit = Duration::from_secs(120);
    assert_eq!(closed_rx.recv_timeout(limit).unwrap(), (1000, true));
    assert_eq!(received.recv_timeout(WAIT).unwrap(), target, "the server got every byte");
    let grown = hwm_kib().saturating_sub(before);
    // SAFETY: the handle is live until here.
    unsafe { ws_free(ws) };
    let drains = producer.drains.load(Ordering::SeqCst);
    assert!(drains >= target / HIGH / 2, "only {drains} drains for {target} bytes");
    assert_eq!(producer.early.load(Ordering::SeqCst), 0, "on_drain above the low mark");
    assert_eq!(producer.after_close.load(Ordering::SeqCst), 0, "on_drain after ws_close");
    // Peak memory: the buffered data (4 MiB and a message), not the stream.
    if let Some(limit) = peak_limit_kib {
        assert!(grown < limit, "peak memory grew by {grown} KiB streaming {target} bytes");
        eprintln!("streamed {target} bytes with {drains} on_drain calls; peak memory grew by {grown} KiB");
    }
}
