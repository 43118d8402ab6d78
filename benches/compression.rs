//! permessage-deflate, `cargo bench --bench compression`: JSON-like text
//! through a compressing echo
//! server, libws with compression on and off against tungstenite (which
//! cannot compress), in messages/s and bytes on the wire; what deflate
//! saves on short messages (for the threshold); and the resident memory
//! per connection, measured in child processes of this binary.

use std::ffi::c_void;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;
use ws::ffi::*;

// The test support's raw server and permessage-deflate side. Of the core
// (tests/common) only WAIT is used, by servers and frames; the handle
// wrapper, recorder and modes are the tests'.
#[allow(dead_code, unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/frames.rs"]
mod frames;
#[path = "../tests/support/pmd.rs"]
mod pmd;
#[path = "../tests/support/servers.rs"]
mod servers;

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

fn best_of(runs: usize, f: impl Fn() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

// ----- permessage-deflate -----

/// Bytes the compressing echo server read and wrote, all connections.
static WIRE: (std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64) =
    (std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0));

/// A compressing echo server (it agrees when the client offers).
fn pmd_echo_server() -> u16 {
    let server = servers::raw_server(|s| {
        let mut conn = pmd::PmdConn::accept_with(s, |request| {
            // Agrees to what is offered, takeover modes included.
            match frames::request_header(request, "sec-websocket-extensions") {
                Some(offer) if offer.contains("no_context_takeover") => {
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_string()
                }
                Some(_) => "permessage-deflate".to_string(),
                None => String::new(),
            }
        });
        let (mut seen_in, mut seen_out) = (0, 0);
        while let Some((text, data, _)) = conn.read_message() {
            if conn.send(text, &data, true).is_err() {
                break;
            }
            WIRE.0.fetch_add(conn.wire_in - seen_in, Ordering::SeqCst);
            WIRE.1.fetch_add(conn.wire_out - seen_out, Ordering::SeqCst);
            (seen_in, seen_out) = (conn.wire_in, conn.wire_out);
        }
    });
    server.port
}

/// `n` different JSON-like messages of `size` bytes, as a market feed sends.
fn json_messages(n: usize, size: usize) -> Vec<String> {
    (0..n)
        .map(|m| {
            let mut s = String::from("[");
            let mut i = m * 1000;
            while s.len() < size {
                s.push_str(&format!(
                    "{{\"seq\":{i},\"symbol\":\"{}\",\"bid\":\"{}.{:02}\",\"ask\":\"{}.{:02}\",\"qty\":{},\"ts\":{}}},",
                    ["BTC-USD", "ETH-USD", "SOL-USD", "ETH-BTC"][i % 4],
                    20_000 + i * 7919 % 5000,
                    i * 31 % 100,
                    20_001 + i * 7919 % 5000,
                    i * 17 % 100,
                    i * 104_729 % 1000,
                    1_700_000_000_000u64 + i as u64 * 37
                ));
                i += 1;
            }
            s.truncate(size - 1);
            s.push(']');
            s
        })
        .collect()
}

fn run_libws_json(port: u16, load: Load, payloads: &[String], compression: bool) -> Duration {
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
    let ws = unsafe {
        let o = ws_options_new();
        ws_options_set_compression(o, compression);
        let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &cb, o);
        ws_options_free(o);
        ws
    };
    {
        let mut g = counter.lock.lock().unwrap();
        while unsafe { ws_ready_state(ws) } == WS_CONNECTING {
            g = counter.cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }
    let start = Instant::now();
    let mut sent = 0;
    while sent < load.count {
        let batch = load.window.min(load.count - sent);
        counter.target.store(sent + batch, Ordering::SeqCst);
        for i in sent..sent + batch {
            let p = &payloads[i % payloads.len()];
            assert_eq!(unsafe { ws_send_string(ws, p.as_ptr().cast(), p.len()) }, WS_OK);
        }
        sent += batch;
        wait(&counter, sent, ws);
    }
    let took = start.elapsed();
    unsafe { ws_free(ws) };
    took
}

fn run_tungstenite_json(port: u16, load: Load, payloads: &[String]) -> Duration {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://127.0.0.1:{port}/"), tcp).unwrap();
    let payloads: Vec<tungstenite::Utf8Bytes> = payloads.iter().map(|p| p.as_str().into()).collect();
    let start = Instant::now();
    let mut sent = 0;
    while sent < load.count {
        let batch = load.window.min(load.count - sent);
        for i in sent..sent + batch {
            ws.write(Message::Text(payloads[i % payloads.len()].clone())).unwrap();
        }
        ws.flush().unwrap();
        sent += batch;
        let mut got = 0;
        while got < batch {
            if let Message::Text(_) = ws.read().unwrap() {
                got += 1;
            }
        }
    }
    let took = start.elapsed();
    let _ = ws.close(None);
    took
}

/// Best of 5 runs, and the bytes on the wire per message (both ways).
fn measure_json(f: impl Fn() -> Duration, count: usize) -> (Duration, f64) {
    let before = WIRE.0.load(Ordering::SeqCst) + WIRE.1.load(Ordering::SeqCst);
    let took = best_of(5, &f);
    // The server counts after each echo: let the last run's count land.
    std::thread::sleep(Duration::from_millis(200));
    let bytes = WIRE.0.load(Ordering::SeqCst) + WIRE.1.load(Ordering::SeqCst) - before;
    (took, bytes as f64 / (5 * count) as f64)
}

fn json_benchmarks(filter: &str) {
    let port = pmd_echo_server();
    let loads = [
        Load { name: "JSON 1 KiB x 20k", count: 20_000, size: 1024, window: 100 },
        Load { name: "JSON 64 KiB x 1k", count: 1000, size: 64 << 10, window: 10 },
    ];
    println!();
    println!(
        "{:<18} {:>14} {:>14} {:>14} {:>10}",
        "JSON text, echoed", "tungstenite", "libws, off", "libws, on", "on / tung."
    );
    for load in loads.into_iter().filter(|l| l.name.contains(filter)) {
        let payloads = json_messages(64, load.size);
        let (base, base_wire) = measure_json(|| run_tungstenite_json(port, load, &payloads), load.count);
        let (off, off_wire) = measure_json(|| run_libws_json(port, load, &payloads, false), load.count);
        let (on, on_wire) = measure_json(|| run_libws_json(port, load, &payloads, true), load.count);
        let rate = |d: Duration| load.count as f64 / d.as_secs_f64();
        println!(
            "{:<18} {:>10.0} m/s {:>10.0} m/s {:>10.0} m/s {:>10.2}",
            load.name,
            rate(base),
            rate(off),
            rate(on),
            rate(on) / rate(base)
        );
        println!(
            "{:<18} {:>12.0} B {:>12.0} B {:>12.0} B {:>10.2}   (wire bytes per message, both ways)",
            "",
            base_wire,
            off_wire,
            on_wire,
            on_wire / base_wire
        );
    }
}

// ----- against other clients, each in a process of its own -----

/// This process's CPU time, all threads.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The libws client of the peers table (a child process, like the
/// others): default mode, compression on.
fn json_client(port: u16, file: &str, count: usize, window: usize) {
    let payloads: Vec<String> = std::fs::read_to_string(file).unwrap().lines().map(String::from).collect();
    let load = Load { name: "", count, size: 0, window };
    let cpu = process_cpu();
    let took = run_libws_json(port, load, &payloads, true);
    // run_libws_json times the exchange alone; the CPU time includes the
    // connect and close, a few hundred microseconds of the total.
    println!("RESULT {:.6} {:.6}", took.as_secs_f64(), (process_cpu() - cpu).as_secs_f64());
}

/// One client run: its time and its process's CPU time for the exchange.
fn run_client(mut cmd: std::process::Command) -> Option<(Duration, Duration)> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("RESULT ")) else {
        eprintln!("client failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
        return None;
    };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    Some((Duration::from_secs_f64(v[0]), Duration::from_secs_f64(v[1])))
}

/// 1 KiB JSON-like messages echoed through a compressing server, by libws
/// and by the clients of Python `websockets` and Node.js `ws` (both
/// compress by default), each in a process of its own: medians of 5 runs
/// of messages/s and CPU per message. The peers are those `make bench`
/// installs into target/peers; one that is missing is shown as skipped.
fn peers_table() {
    const COUNT: usize = 20_000;
    const WINDOW: usize = 100;
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .env("LIBWS_BENCH_ROLE", "server")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let port: u16 = line.trim().trim_start_matches("PORT ").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("libws-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("json.txt");
    std::fs::write(&file, json_messages(64, 1024).join("\n")).unwrap();
    let file = file.to_str().unwrap().to_string();
    let url = format!("ws://127.0.0.1:{port}/");
    let root = env!("CARGO_MANIFEST_DIR");
    let peers = format!("{root}/target/peers");
    let args = [url.clone(), file.clone(), COUNT.to_string(), WINDOW.to_string()];
    println!(
        "\n{:<44} {:>12} {:>14} {:>10}",
        "JSON 1 KiB x 20k, compressed, echoed", "messages/s", "CPU us/msg", "rate / libws"
    );
    let mut libws_rate = None;
    for name in ["libws (default mode)", "Python websockets", "Node.js ws"] {
        let command = || -> Option<std::process::Command> {
            match name {
                "Python websockets" => {
                    std::path::Path::new(&format!("{peers}/python/websockets")).exists().then(|| {
                        let mut c = std::process::Command::new("python3");
                        c.env("PYTHONPATH", format!("{peers}/python"))
                            .arg(format!("{root}/benches/peers/json_client.py"))
                            .args(&args);
                        c
                    })
                }
                "Node.js ws" => std::path::Path::new(&format!("{peers}/node/node_modules/ws")).exists().then(|| {
                    let mut c = std::process::Command::new("node");
                    c.env("NODE_PATH", format!("{peers}/node/node_modules"))
                        .arg(format!("{root}/benches/peers/json_client.js"))
                        .args(&args);
                    c
                }),
                _ => {
                    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
                    c.env("LIBWS_BENCH_ROLE", format!("json-client {port} {file} {COUNT} {WINDOW}"));
                    Some(c)
                }
            }
        };
        if command().is_none() {
            println!("{name:<44} skipped: not installed (make bench installs it into target/peers)");
            continue;
        }
        let mut runs: Vec<(Duration, Duration)> = (0..5).filter_map(|_| run_client(command().unwrap())).collect();
        if runs.is_empty() {
            println!("{name:<44} failed (its output is above)");
            continue;
        }
        runs.sort();
        let (took, _) = runs[runs.len() / 2];
        let mut cpus: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        cpus.sort();
        let rate = COUNT as f64 / took.as_secs_f64();
        let base = *libws_rate.get_or_insert(rate);
        println!(
            "{name:<44} {rate:>12.0} {:>14.2} {:>10.2}",
            cpus[cpus.len() / 2].as_secs_f64() * 1e6 / COUNT as f64,
            rate / base
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What deflate makes of short messages (zlib level 6, window 15, as
/// libws): frame bytes with and without it, in a stream of different
/// messages (context taken over) and alone (a fresh context), and the time
/// each compression takes.
fn threshold_table() {
    println!();
    println!("{:<8} {:>8} {:>14} {:>14} {:>12}", "size", "plain", "deflate, kept", "deflate, new", "time/msg");
    for size in [8usize, 16, 24, 32, 48, 64, 128, 256, 512] {
        let msgs = json_messages(2000, size);
        let frame_len = |n: usize| n + 6 + if n > 125 { 2 } else { 0 };
        let mut kept = pmd::compressor(15);
        let start = Instant::now();
        let kept_total: usize =
            msgs.iter().map(|m| frame_len(pmd::deflate_message(&mut kept, m.as_bytes()).len())).sum();
        let per_msg = start.elapsed() / msgs.len() as u32;
        let fresh_total: usize =
            msgs.iter().map(|m| frame_len(pmd::deflate_message(&mut pmd::compressor(15), m.as_bytes()).len())).sum();
        let n = msgs.len() as f64;
        println!(
            "{:<8} {:>8.1} {:>14.1} {:>14.1} {:>10.2}us",
            size,
            frame_len(size) as f64,
            kept_total as f64 / n,
            fresh_total as f64 / n,
            per_msg.as_secs_f64() * 1e6
        );
    }
}

/// zlib levels on a stream of 64 KiB JSON messages: speed and ratio.
fn level_table() {
    println!();
    println!("{:<8} {:>12} {:>10}", "level", "MB/s", "ratio");
    let msgs = json_messages(64, 64 << 10);
    for level in [1u32, 2, 3, 4, 6, 9] {
        let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::new(level), false, 15);
        let start = Instant::now();
        let mut out = 0;
        for _ in 0..4 {
            for m in &msgs {
                out += pmd::deflate_message(&mut c, m.as_bytes()).len();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let input = 4 * msgs.len() * (64 << 10);
        println!("{:<8} {:>12.0} {:>10.3}", level, input as f64 / secs / 1e6, out as f64 / input as f64);
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const MEMORY_CONNECTIONS: usize = 200;

/// In a child process: opens MEMORY_CONNECTIONS connections to the server
/// at `port`, then one 1 KiB message each way on each; prints the RSS
/// growth per connection after each step.
fn memory_child(port: u16, mode: &str) {
    let (compression, no_takeover) = (mode != "off", mode == "no-takeover");
    let counter = Box::new(Counter {
        received: AtomicUsize::new(0),
        target: AtomicUsize::new(0),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    let opened = Box::new(Counter {
        received: AtomicUsize::new(0),
        target: AtomicUsize::new(usize::MAX),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    unsafe extern "C" fn counted_open(ud: *mut c_void, _: *mut ws_socket) {
        let c = &*(ud as *const (*const Counter, *const Counter));
        (*c.1).received.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn counted_message(ud: *mut c_void, ws: *mut ws_socket, d: *const u8, l: usize, t: bool) {
        let c = &*(ud as *const (*const Counter, *const Counter));
        on_message(c.0 as *mut c_void, ws, d, l, t);
    }
    let pair = Box::new((&*counter as *const Counter, &*opened as *const Counter));
    let cb = ws_callbacks {
        user_data: &*pair as *const _ as *mut c_void,
        on_open: Some(counted_open),
        on_message: Some(counted_message),
        on_error: None,
        on_close: None,
    };
    let url = std::ffi::CString::new(format!("ws://127.0.0.1:{port}/")).unwrap();
    let payload = &json_messages(1, 1024)[0];
    // Warm up: threads, allocator arenas.
    let warm: Vec<*mut ws_socket> = (0..8)
        .map(|_| unsafe {
            let o = ws_options_new();
            ws_options_set_compression(o, compression);
            ws_options_set_client_no_context_takeover(o, no_takeover);
            ws_options_set_server_no_context_takeover(o, no_takeover);
            let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &cb, o);
            ws_options_free(o);
            ws
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.received.load(Ordering::SeqCst) < warm.len() {
        assert!(Instant::now() < deadline, "warm-up connections did not open");
        std::thread::sleep(Duration::from_millis(5));
    }
    let base = rss_kib();
    let handles: Vec<*mut ws_socket> = (0..MEMORY_CONNECTIONS)
        .map(|_| unsafe {
            let o = ws_options_new();
            ws_options_set_compression(o, compression);
            ws_options_set_client_no_context_takeover(o, no_takeover);
            ws_options_set_server_no_context_takeover(o, no_takeover);
            let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &cb, o);
            ws_options_free(o);
            ws
        })
        .collect();
    while opened.received.load(Ordering::SeqCst) < warm.len() + MEMORY_CONNECTIONS {
        assert!(Instant::now() < deadline, "connections did not open");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib();
    counter.target.store(MEMORY_CONNECTIONS, Ordering::SeqCst);
    for ws in &handles {
        assert_eq!(unsafe { ws_send_string(*ws, payload.as_ptr().cast(), payload.len()) }, WS_OK);
    }
    wait(&counter, MEMORY_CONNECTIONS, handles[0]);
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib();
    let per = |kib: u64| kib.saturating_sub(base) as f64 / MEMORY_CONNECTIONS as f64;
    println!("MEMORY {:.0} {:.0}", per(idle), per(after));
    for ws in handles.into_iter().chain(warm) {
        unsafe { ws_free(ws) };
    }
}

fn memory_table() {
    let exe = std::env::current_exe().unwrap();
    // The server in its own process, so that its memory is not counted.
    let mut server = std::process::Command::new(&exe)
        .env("LIBWS_BENCH_ROLE", "server")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    println!();
    println!("resident memory per connection ({MEMORY_CONNECTIONS} connections, 1 KiB JSON messages)");
    println!("{:<22} {:>12} {:>26}", "", "idle", "after one message each way");
    // glibc keeps freed contexts in its heap for reuse, so RSS does not
    // show them freed; with big blocks mmapped instead it does.
    let rows = [
        ("compression off", "off", "0"),
        ("compression agreed", "on", "0"),
        ("  no context takeover", "no-takeover", "0"),
        ("  the same, mmap 64K", "no-takeover", "65536"),
    ];
    for (label, mode, mmap_threshold) in rows {
        let mut cmd = std::process::Command::new(&exe);
        if mmap_threshold != "0" {
            cmd.env("MALLOC_MMAP_THRESHOLD_", mmap_threshold);
        }
        let out = cmd.env("LIBWS_BENCH_ROLE", format!("memory {port} {mode}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let figures = text.lines().find_map(|l| l.strip_prefix("MEMORY ")).unwrap_or("? ?").to_string();
        let mut it = figures.split_whitespace();
        println!("{:<22} {:>8} KiB {:>22} KiB", label, it.next().unwrap_or("?"), it.next().unwrap_or("?"));
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    // Child roles: the memory measurement's server, and the measurement.
    match std::env::var("LIBWS_BENCH_ROLE").ok().as_deref() {
        Some("server") => {
            println!("PORT {}", pmd_echo_server());
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
            return;
        }
        Some(role) if role.starts_with("json-client ") => {
            let parts: Vec<&str> = role.split_whitespace().skip(1).collect();
            json_client(parts[0].parse().unwrap(), parts[1], parts[2].parse().unwrap(), parts[3].parse().unwrap());
            return;
        }
        Some(role) if role.starts_with("memory ") => {
            let mut parts = role.split_whitespace().skip(1);
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap();
            memory_child(port, parts.next().unwrap_or("on"));
            return;
        }
        _ => {}
    }
    // BENCH_FILTER=text runs only the tables whose name contains it.
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    json_benchmarks(&filter);
    if "peers".contains(filter.as_str()) {
        peers_table();
    }
    if "threshold".contains(filter.as_str()) {
        threshold_table();
    }
    if "level".contains(filter.as_str()) {
        level_table();
    }
    if "memory".contains(filter.as_str()) {
        memory_table();
    }
}
