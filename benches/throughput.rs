//! libws against plain tungstenite (the baseline) in the same run, same
//! machine, same echo server on 127.0.0.1: `cargo bench --bench throughput`.
//! Prints each workload's time for both and the ratio libws / tungstenite
//! (below 1.0: libws is faster). Each figure is the best of 5 runs.

use std::ffi::c_void;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;
use ws::ffi::*;

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let config = tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(64 << 20))
                    .max_frame_size(Some(64 << 20));
                let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
                    return;
                };
                while let Ok(m) = ws.read() {
                    if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A workload: `count` messages of `size` bytes, sent `window` at a time
/// (1: strict request/response round trips).
#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    count: usize,
    size: usize,
    window: usize,
}

/// Counts echoes; wakes the sender only when a whole window is back, so
/// that the harness adds one wake-up per window, as the baseline has none.
struct Counter {
    received: AtomicUsize,
    target: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

unsafe extern "C" fn on_message(ud: *mut c_void, _: *mut ws_socket, _: *const u8, _: usize, _: bool) {
    let c = &*(ud as *const Counter);
    if c.received.fetch_add(1, Ordering::SeqCst) + 1 >= c.target.load(Ordering::SeqCst) {
        let _g = c.lock.lock().unwrap();
        c.cv.notify_one();
    }
}

unsafe extern "C" fn on_open(ud: *mut c_void, _: *mut ws_socket) {
    let c = &*(ud as *const Counter);
    let _g = c.lock.lock().unwrap();
    c.cv.notify_one();
}

fn wait(c: &Counter, n: usize, ws: *mut ws_socket) {
    let mut g = c.lock.lock().unwrap();
    while c.received.load(Ordering::SeqCst) < n {
        let (next, t) = c.cv.wait_timeout(g, Duration::from_secs(30)).unwrap();
        g = next;
        let got = c.received.load(Ordering::SeqCst);
        assert!(!t.timed_out(), "stuck: {got} of {n} echoes, bufferedAmount {}", unsafe { ws_buffered_amount(ws) });
    }
}

fn run_libws(port: u16, load: Load) -> Duration {
    let counter = Box::new(Counter {
        received: AtomicUsize::new(0),
        target: AtomicUsize::new(0),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    let cb = ws_callbacks {
        user_data: &*counter as *const Counter as *mut c_void,
        on_open: Some(on_open),
        on_message: Some(on_message),
        on_error: None,
        on_close: None,
    };
    let url = std::ffi::CString::new(format!("ws://127.0.0.1:{port}/")).unwrap();
    let ws = unsafe { ws_new(url.as_ptr(), std::ptr::null(), 0, &cb) };
    {
        let mut g = counter.lock.lock().unwrap();
        while unsafe { ws_ready_state(ws) } == WS_CONNECTING {
            g = counter.cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }
    let payload = vec![b'x'; load.size];
    let start = Instant::now();
    let mut sent = 0;
    while sent < load.count {
        let batch = load.window.min(load.count - sent);
        counter.target.store(sent + batch, Ordering::SeqCst);
        for _ in 0..batch {
            assert_eq!(unsafe { ws_send_bytes(ws, payload.as_ptr(), payload.len()) }, WS_OK);
        }
        sent += batch;
        wait(&counter, sent, ws);
    }
    let took = start.elapsed();
    unsafe { ws_free(ws) };
    took
}

fn run_tungstenite(port: u16, load: Load) -> Duration {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, _) =
        tungstenite::client::client_with_config(format!("ws://127.0.0.1:{port}/"), tcp, Some(config)).unwrap();
    let payload = tungstenite::Bytes::from(vec![b'x'; load.size]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < load.count {
        let batch = load.window.min(load.count - sent);
        for _ in 0..batch {
            ws.write(Message::Binary(payload.clone())).unwrap();
        }
        ws.flush().unwrap();
        sent += batch;
        let mut got = 0;
        while got < batch {
            if let Message::Binary(_) = ws.read().unwrap() {
                got += 1;
            }
        }
    }
    let took = start.elapsed();
    let _ = ws.close(None);
    took
}

fn best_of(runs: usize, f: impl Fn() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn main() {
    let port = echo_server();
    let loads = [
        Load { name: "round trips, 32 B", count: 20_000, size: 32, window: 1 },
        Load { name: "pipelined, 64 B x 100k", count: 100_000, size: 64, window: 1000 },
        Load { name: "pipelined, 16 KiB x 10k", count: 10_000, size: 16 << 10, window: 100 },
        Load { name: "large, 16 MiB x 16", count: 16, size: 16 << 20, window: 1 },
    ];
    println!("{:<26} {:>12} {:>12} {:>8}", "workload", "libws", "tungstenite", "ratio");
    // BENCH_FILTER=text runs only the workloads whose name contains it.
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    for load in loads.into_iter().filter(|l| l.name.contains(filter.as_str())) {
        let base = best_of(5, || run_tungstenite(port, load));
        let ours = best_of(5, || run_libws(port, load));
        println!(
            "{:<26} {:>10.1}ms {:>10.1}ms {:>8.2}",
            load.name,
            ours.as_secs_f64() * 1e3,
            base.as_secs_f64() * 1e3,
            ours.as_secs_f64() / base.as_secs_f64()
        );
    }
}
