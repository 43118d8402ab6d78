//! libws against plain tungstenite (the baseline: a blocking client on the
//! caller's thread) in the same run, against the same servers on 127.0.0.1:
//! `cargo bench --bench throughput`. The servers run in a child process
//! (this program, started again with LIBWS_BENCH_SERVER=1), so that their
//! threads and memory are not counted here.
//!
//! libws runs each workload in its three modes: a thread per handle, a
//! shared loop on a library thread, and a loop that the benchmark's own
//! thread runs with ws_loop_run while it waits (no thread hand-off).
//! Prints each figure for each and the ratio. For times, libws / tungstenite
//! (below 1.0: libws is faster); for rates, libws / tungstenite (above 1.0:
//! libws is faster). Each time is the best of 5 runs.
//! BENCH_FILTER=text runs only the sections and workloads whose name
//! contains it.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

use std::cmp::Reverse;
use std::ffi::{c_void, CString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;
use ws::ffi::*;

// ----- the servers (child process) -----

/// Serves each connection on a thread with a small stack, by path:
/// /echo echoes; /push/N/SIZE waits for any message, then sends N binary
/// messages of SIZE; /sink/N reads N messages, then sends "done".
fn serve(listener: TcpListener, tls: Option<Arc<native_tls::TlsAcceptor>>) {
    for stream in listener.incoming().flatten() {
        let tls = tls.clone();
        let spawned = std::thread::Builder::new().stack_size(128 << 10).spawn(move || {
            let _ = stream.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream) {
                        converse(s);
                    }
                }
                None => converse(stream),
            }
        });
        if spawned.is_err() {
            eprintln!("bench server: cannot start a thread");
        }
    }
}

fn converse<S: Read + Write>(stream: S) {
    let mut path = String::new();
    let callback = |req: &tungstenite::handshake::server::Request, resp| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(config)) else { return };
    let parts: Vec<usize> = path.split('/').filter_map(|p| p.parse().ok()).collect();
    if path.starts_with("/push") {
        let (n, size) = (parts[0], parts[1]);
        if ws.read().is_err() {
            return;
        }
        let payload = tungstenite::Bytes::from(vec![b'p'; size]);
        for _ in 0..n {
            if ws.write(Message::Binary(payload.clone())).is_err() {
                return;
            }
        }
        let _ = ws.flush();
    } else if path.starts_with("/sink") {
        let mut got = 0;
        while got < parts[0] {
            match ws.read() {
                Ok(m) if m.is_binary() || m.is_text() => got += 1,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = ws.send(Message::text("done"));
    }
    while let Ok(m) = ws.read() {
        if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
            return;
        }
    }
}

fn server_main() {
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let secure = TcpListener::bind("127.0.0.1:0").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let identity = native_tls::Identity::from_pkcs8(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let acceptor = Arc::new(native_tls::TlsAcceptor::new(identity).unwrap());
    println!("PORTS {} {}", plain.local_addr().unwrap().port(), secure.local_addr().unwrap().port());
    std::thread::spawn(move || serve(secure, Some(acceptor)));
    std::thread::spawn(move || serve(plain, None));
    // The parent holds our stdin: its end is ours.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

struct Servers {
    _child: Child,
    port: u16,
    tls_port: u16,
}

impl Servers {
    /// ws:// and wss://.
    fn peers(&self) -> [Peer; 2] {
        [Peer { port: self.port, tls: false }, Peer { port: self.tls_port, tls: true }]
    }
}

fn start_servers() -> Servers {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LIBWS_BENCH_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ports: Vec<u16> = line.split_whitespace().skip(1).map(|p| p.parse().unwrap()).collect();
    Servers { _child: child, port: ports[0], tls_port: ports[1] }
}

// ----- libws side -----

/// Counts messages; wakes the waiter when `target` is reached.
struct Counter {
    received: AtomicUsize,
    target: AtomicUsize,
    opened: AtomicUsize,
    closed: AtomicUsize,
    /// Echo each message back from inside on_message, up to this count.
    reply_until: AtomicUsize,
    payload: Vec<u8>,
    lock: Mutex<()>,
    cv: Condvar,
    /// The loop the waiting thread runs itself (Mode::AppLoop), or null.
    app_loop: AtomicPtr<ws_loop>,
}

impl Counter {
    fn new(payload: Vec<u8>) -> Arc<Counter> {
        Arc::new(Counter {
            received: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            opened: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            reply_until: AtomicUsize::new(0),
            payload,
            lock: Mutex::new(()),
            cv: Condvar::new(),
            app_loop: AtomicPtr::new(std::ptr::null_mut()),
        })
    }

    fn notify(&self) {
        let _g = self.lock.lock().unwrap();
        self.cv.notify_all();
    }

    fn wait(&self, what: &str, count: &AtomicUsize, n: usize) {
        let lp = self.app_loop.load(Ordering::SeqCst);
        if !lp.is_null() {
            // The callbacks run here, inside ws_loop_run: no hand-off.
            let deadline = Instant::now() + Duration::from_secs(60);
            while count.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "stuck waiting for {what}: {} of {n}", count.load(Ordering::SeqCst));
                assert!(unsafe { ws_loop_run(lp, 100) } >= 0, "ws_loop_run failed");
            }
            return;
        }
        let mut g = self.lock.lock().unwrap();
        while count.load(Ordering::SeqCst) < n {
            let (next, t) = self.cv.wait_timeout(g, Duration::from_secs(60)).unwrap();
            g = next;
            assert!(!t.timed_out(), "stuck waiting for {what}: {} of {n}", count.load(Ordering::SeqCst));
        }
    }

    fn callbacks(self: &Arc<Self>) -> ws_callbacks {
        ws_callbacks {
            user_data: Arc::as_ptr(self) as *mut c_void,
            on_open: Some(on_open),
            on_message: Some(on_message),
            on_error: None,
            on_close: Some(on_close),
        }
    }
}

unsafe extern "C" fn on_open(ud: *mut c_void, _: *mut ws_socket) {
    let c = &*(ud as *const Counter);
    c.opened.fetch_add(1, Ordering::SeqCst);
    c.notify();
}

unsafe extern "C" fn on_message(ud: *mut c_void, ws: *mut ws_socket, _: *const u8, _: usize, _: bool) {
    let c = &*(ud as *const Counter);
    let n = c.received.fetch_add(1, Ordering::SeqCst) + 1;
    if n < c.reply_until.load(Ordering::SeqCst) {
        ws_send_bytes(ws, c.payload.as_ptr(), c.payload.len());
    }
    if n >= c.target.load(Ordering::SeqCst) {
        c.notify();
    }
}

unsafe extern "C" fn on_close(ud: *mut c_void, _: *mut ws_socket, _: u16, _: *const std::ffi::c_char, _: bool) {
    let c = &*(ud as *const Counter);
    c.closed.fetch_add(1, Ordering::SeqCst);
    c.notify();
}

/// How libws runs the connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    OwnThread,
    SharedLoop,
    /// On a loop that the benchmark's thread runs with ws_loop_run while
    /// it waits, as an application with its own event loop would.
    AppLoop,
}

struct Libws {
    shared: *mut ws_loop,
    app: *mut ws_loop,
}

impl Libws {
    fn new() -> Libws {
        let lp = ws_loop_new();
        assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
        Libws { shared: lp, app: ws_loop_new() }
    }

    fn connect(&self, url: &str, mode: Mode, counter: &Arc<Counter>, tls: bool) -> *mut ws_socket {
        let url = CString::new(url).unwrap();
        unsafe {
            let o = ws_options_new();
            match mode {
                Mode::OwnThread => {}
                Mode::SharedLoop => assert_eq!(ws_options_set_loop(o, self.shared), WS_OK),
                Mode::AppLoop => {
                    assert_eq!(ws_options_set_loop(o, self.app), WS_OK);
                    counter.app_loop.store(self.app, Ordering::SeqCst);
                }
            }
            if tls {
                ws_options_danger_accept_invalid_certs(o, true);
            }
            let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &counter.callbacks(), o);
            ws_options_free(o);
            assert!(!ws.is_null());
            ws
        }
    }
}

/// A workload between one client and the server at `path`.
#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    path: &'static str,
    kind: Kind,
    count: usize,
    size: usize,
    /// Messages in flight (1: strict request/response).
    window: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// The caller's thread sends `window` messages and waits for their echoes.
    Echo,
    /// The first echo's callback sends the next message (no thread hand-off).
    ReplyFromCallback,
    /// The server pushes `count` messages; the client receives.
    Receive,
    /// The client sends `count` messages; the server answers "done" at the end.
    Send,
}

fn run_libws(lib: &Libws, peer: Peer, load: Load, mode: Mode) -> Sample {
    let counter = Counter::new(vec![b'x'; load.size]);
    let path = match load.kind {
        Kind::Receive => format!("/push/{}/{}", load.count, load.size),
        Kind::Send => format!("/sink/{}", load.count),
        _ => load.path.to_string(),
    };
    let ws = lib.connect(&peer.url(&path), mode, &counter, peer.tls);
    counter.wait("on_open", &counter.opened, 1);
    let payload = &counter.payload;
    let start = Meter::start();
    match load.kind {
        Kind::Echo => {
            let mut sent = 0;
            while sent < load.count {
                let batch = load.window.min(load.count - sent);
                counter.target.store(sent + batch, Ordering::SeqCst);
                for _ in 0..batch {
                    assert_eq!(unsafe { ws_send_bytes(ws, payload.as_ptr(), payload.len()) }, WS_OK);
                }
                sent += batch;
                counter.wait("echoes", &counter.received, sent);
            }
        }
        Kind::ReplyFromCallback => {
            counter.reply_until.store(load.count, Ordering::SeqCst);
            counter.target.store(load.count, Ordering::SeqCst);
            assert_eq!(unsafe { ws_send_bytes(ws, payload.as_ptr(), payload.len()) }, WS_OK);
            counter.wait("echoes", &counter.received, load.count);
        }
        Kind::Receive => {
            counter.target.store(load.count, Ordering::SeqCst);
            assert_eq!(unsafe { ws_send_string(ws, c"go".as_ptr(), 2) }, WS_OK);
            counter.wait("pushed messages", &counter.received, load.count);
        }
        Kind::Send => {
            counter.target.store(1, Ordering::SeqCst);
            for _ in 0..load.count {
                assert_eq!(unsafe { ws_send_bytes(ws, payload.as_ptr(), payload.len()) }, WS_OK);
            }
            counter.wait("done", &counter.received, 1);
        }
    }
    let took = start.stop();
    unsafe { ws_close(ws, 1000, std::ptr::null()) };
    counter.wait("on_close", &counter.closed, 1);
    unsafe { ws_free(ws) };
    took
}

// ----- tungstenite side -----

type Tws = tungstenite::WebSocket<TwsStream>;

/// tungstenite's stream: TCP, or native-tls over TCP for wss://.
enum TwsStream {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Read for TwsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TwsStream::Plain(s) => s.read(buf),
            TwsStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for TwsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TwsStream::Plain(s) => s.write(buf),
            TwsStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TwsStream::Plain(s) => s.flush(),
            TwsStream::Tls(s) => s.flush(),
        }
    }
}

fn tungstenite_connect(port: u16, path: &str) -> Tws {
    tungstenite_connect_to(Peer { port, tls: false }, path)
}

/// The benchmark's server: its port, and whether it speaks wss://.
#[derive(Clone, Copy)]
struct Peer {
    port: u16,
    tls: bool,
}

impl Peer {
    fn url(self, path: &str) -> String {
        match self.tls {
            true => format!("wss://localhost:{}{path}", self.port),
            false => format!("ws://127.0.0.1:{}{path}", self.port),
        }
    }
}

fn tungstenite_connect_to(peer: Peer, path: &str) -> Tws {
    // One connector for all connections, as libws keeps one context.
    static CONNECTOR: std::sync::OnceLock<native_tls::TlsConnector> = std::sync::OnceLock::new();
    // The host of the URL, resolved as a tungstenite user would.
    let host = if peer.tls { "localhost" } else { "127.0.0.1" };
    let tcp = TcpStream::connect((host, peer.port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = if peer.tls {
        let connector = CONNECTOR
            .get_or_init(|| native_tls::TlsConnector::builder().danger_accept_invalid_certs(true).build().unwrap());
        TwsStream::Tls(Box::new(connector.connect("localhost", tcp).unwrap()))
    } else {
        TwsStream::Plain(tcp)
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tungstenite::client::client_with_config(peer.url(path), stream, Some(config)).unwrap().0
}

fn read_data(ws: &mut Tws) {
    loop {
        match ws.read().unwrap() {
            Message::Binary(_) | Message::Text(_) => return,
            _ => {}
        }
    }
}

fn tungstenite_close(mut ws: Tws) {
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}

fn run_tungstenite(peer: Peer, load: Load) -> Sample {
    let path = match load.kind {
        Kind::Receive => format!("/push/{}/{}", load.count, load.size),
        Kind::Send => format!("/sink/{}", load.count),
        _ => load.path.to_string(),
    };
    let mut ws = tungstenite_connect_to(peer, &path);
    let payload = tungstenite::Bytes::from(vec![b'x'; load.size]);
    let start = Meter::start();
    match load.kind {
        Kind::Echo | Kind::ReplyFromCallback => {
            let mut sent = 0;
            while sent < load.count {
                let batch = load.window.min(load.count - sent);
                for _ in 0..batch {
                    ws.write(Message::Binary(payload.clone())).unwrap();
                }
                ws.flush().unwrap();
                sent += batch;
                for _ in 0..batch {
                    read_data(&mut ws);
                }
            }
        }
        Kind::Receive => {
            ws.send(Message::text("go")).unwrap();
            for _ in 0..load.count {
                read_data(&mut ws);
            }
        }
        Kind::Send => {
            for _ in 0..load.count {
                ws.write(Message::Binary(payload.clone())).unwrap();
            }
            ws.flush().unwrap();
            read_data(&mut ws);
        }
    }
    let took = start.stop();
    tungstenite_close(ws);
    took
}

/// The fastest of `runs` runs, with the least CPU time and context
/// switches any run took (these vary less than wall time when other
/// processes share the cores).
fn best_of(runs: usize, mut f: impl FnMut() -> Sample) -> Sample {
    let all: Vec<Sample> = (0..runs).map(|_| f()).collect();
    Sample {
        wall: all.iter().map(|s| s.wall).min().unwrap(),
        cpu: all.iter().map(|s| s.cpu).min().unwrap(),
        switches: all.iter().map(|s| s.switches).min().unwrap(),
    }
}

/// One run as this process lived it: wall time, CPU time of all its
/// threads (the caller's and libws's; the servers are another process),
/// and context switches, voluntary or not.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    switches: u64,
}

struct Meter {
    wall: Instant,
    cpu: Duration,
    switches: u64,
}

impl Meter {
    fn start() -> Meter {
        let (cpu, switches) = process_usage();
        Meter { wall: Instant::now(), cpu, switches }
    }

    fn stop(&self) -> Sample {
        let wall = self.wall.elapsed();
        let (cpu, switches) = process_usage();
        Sample { wall, cpu: cpu.saturating_sub(self.cpu), switches: switches - self.switches }
    }
}

fn process_usage() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(u.ru_utime) + tv(u.ru_stime), (u.ru_nvcsw + u.ru_nivcsw) as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ----- sections -----

fn throughput(servers: &Servers, lib: &Libws, filter: &str) {
    let loads = [
        Load {
            name: "round trips 32 B (app thread)",
            path: "/echo",
            kind: Kind::Echo,
            count: 20_000,
            size: 32,
            window: 1,
        },
        Load {
            name: "round trips 32 B (in on_message)",
            path: "/echo",
            kind: Kind::ReplyFromCallback,
            count: 20_000,
            size: 32,
            window: 1,
        },
        Load { name: "pipelined 64 B x 100k", path: "/echo", kind: Kind::Echo, count: 100_000, size: 64, window: 1000 },
        Load {
            name: "pipelined 16 KiB x 10k",
            path: "/echo",
            kind: Kind::Echo,
            count: 10_000,
            size: 16 << 10,
            window: 100,
        },
        Load { name: "large 16 MiB x 16", path: "/echo", kind: Kind::Echo, count: 16, size: 16 << 20, window: 1 },
        Load { name: "receive 64 B x 200k", path: "", kind: Kind::Receive, count: 200_000, size: 64, window: 0 },
        Load { name: "receive 1 MiB x 200", path: "", kind: Kind::Receive, count: 200, size: 1 << 20, window: 0 },
        Load { name: "send 64 B x 200k", path: "", kind: Kind::Send, count: 200_000, size: 64, window: 0 },
        Load { name: "send 64 KiB x 5k", path: "", kind: Kind::Send, count: 5_000, size: 64 << 10, window: 0 },
    ];
    for peer in servers.peers() {
        let scheme = if peer.tls { "wss://" } else { "ws://" };
        let mut costs = Vec::new();
        for load in loads.into_iter().filter(|l| l.name.contains(filter) || "throughput".contains(filter)) {
            if costs.is_empty() {
                println!(
                    "\n{:<34} {:>11} {:>11} {:>11} {:>11} {:>6} {:>6} {:>6}",
                    format!("{scheme} workload (best of 5)"),
                    "own thread",
                    "shared",
                    "app loop",
                    "tungstenite",
                    "own",
                    "shared",
                    "app"
                );
            }
            costs.push(throughput_row(lib, peer, load));
        }
        print_costs("message", &costs);
    }
}

/// One workload in every mode and with tungstenite: the row of times and
/// ratios, and the costs for the table below it.
fn throughput_row(lib: &Libws, peer: Peer, load: Load) -> (&'static str, usize, [Sample; 4]) {
    {
        let base = best_of(5, || run_tungstenite(peer, load));
        let own = best_of(5, || run_libws(lib, peer, load, Mode::OwnThread));
        let shared = best_of(5, || run_libws(lib, peer, load, Mode::SharedLoop));
        let app = best_of(5, || run_libws(lib, peer, load, Mode::AppLoop));
        let ratio = |s: Sample| s.wall.as_secs_f64() / base.wall.as_secs_f64();
        println!(
            "{:<34} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>6.2} {:>6.2} {:>6.2}",
            load.name,
            ms(own.wall),
            ms(shared.wall),
            ms(app.wall),
            ms(base.wall),
            ratio(own),
            ratio(shared),
            ratio(app)
        );
        (load.name, load.count, [own, shared, app, base])
    }
}

/// What each message (or connection) cost this process: CPU time of all
/// its threads, and context switches: where the wall-time ratios come from.
fn print_costs(unit: &str, costs: &[(&str, usize, [Sample; 4])]) {
    if costs.is_empty() {
        return;
    }
    println!(
        "\n{:<34} {:>31}  {:>27}",
        format!("per {unit}, this process (least of 5)"),
        "CPU us: own/shared/app/tung",
        "switches: own/shared/app/tung"
    );
    for (name, count, samples) in costs {
        let cpu = samples.map(|s| s.cpu.as_secs_f64() * 1e6 / *count as f64);
        let sw = samples.map(|s| s.switches as f64 / *count as f64);
        println!(
            "{:<34} {:>7.2} {:>7.2} {:>7.2} {:>7.2}  {:>6.2} {:>6.2} {:>6.2} {:>6.2}",
            name, cpu[0], cpu[1], cpu[2], cpu[3], sw[0], sw[1], sw[2], sw[3]
        );
    }
}

/// Sequential connections: open, closing handshake, gone.
fn connects(servers: &Servers, lib: &Libws) {
    for peer in servers.peers() {
        connects_to(peer, lib);
    }
}

fn connects_to(peer: Peer, lib: &Libws) {
    const N: usize = 500;
    let url = peer.url("/echo");
    let libws = |mode: Mode| {
        best_of(5, || {
            let counter = Counter::new(Vec::new());
            let t = Meter::start();
            for i in 0..N {
                let ws = lib.connect(&url, mode, &counter, peer.tls);
                counter.wait("on_open", &counter.opened, i + 1);
                unsafe { ws_close(ws, 1000, std::ptr::null()) };
                counter.wait("on_close", &counter.closed, i + 1);
                unsafe { ws_free(ws) };
            }
            t.stop()
        })
    };
    let own = libws(Mode::OwnThread);
    let shared = libws(Mode::SharedLoop);
    let app = libws(Mode::AppLoop);
    let base = best_of(5, || {
        let t = Meter::start();
        for _ in 0..N {
            tungstenite_close(tungstenite_connect_to(peer, "/echo"));
        }
        t.stop()
    });
    let rate = |s: Sample| N as f64 / s.wall.as_secs_f64();
    println!(
        "\n{} sequential connects (open + close), per second: own thread {:.0}, shared loop {:.0}, app loop {:.0}, tungstenite {:.0}; rate ratio own {:.2}, shared {:.2}, app {:.2}",
        peer.url(""),
        rate(own),
        rate(shared),
        rate(app),
        rate(base),
        rate(own) / rate(base),
        rate(shared) / rate(base),
        rate(app) / rate(base)
    );
    print_costs("connection", &[("sequential connects", N, [own, shared, app, base])]);
}

/// 1,000 connections each receiving 1,000 messages of 64 B as fast as the
/// server sends them: libws on one shared loop against 1,000 tungstenite
/// clients on 1,000 threads.
fn fan_in(servers: &Servers, lib: &Libws) {
    const CONNS: usize = 1000;
    const EACH: usize = 1000;
    let url = format!("ws://127.0.0.1:{}/push/{EACH}/64", servers.port);
    let counter = Counter::new(Vec::new());
    let handles: Vec<*mut ws_socket> =
        (0..CONNS).map(|_| lib.connect(&url, Mode::SharedLoop, &counter, false)).collect();
    counter.wait("on_open", &counter.opened, CONNS);
    counter.target.store(CONNS * EACH, Ordering::SeqCst);
    let t = Instant::now();
    for ws in &handles {
        unsafe { ws_send_string(*ws, c"go".as_ptr(), 2) };
    }
    counter.wait("messages", &counter.received, CONNS * EACH);
    let ours = t.elapsed();
    for ws in handles {
        unsafe { ws_free(ws) };
    }
    let barrier = Arc::new(Barrier::new(CONNS + 1));
    let done = Arc::new(Barrier::new(CONNS + 1));
    let threads: Vec<_> = (0..CONNS)
        .map(|_| {
            let (barrier, done) = (barrier.clone(), done.clone());
            let port = servers.port;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut ws = tungstenite_connect(port, &format!("/push/{EACH}/64"));
                    barrier.wait();
                    ws.send(Message::text("go")).unwrap();
                    for _ in 0..EACH {
                        read_data(&mut ws);
                    }
                    done.wait();
                    tungstenite_close(ws);
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    done.wait();
    let base = t.elapsed();
    for t in threads {
        t.join().unwrap();
    }
    let rate = |d: Duration| (CONNS * EACH) as f64 / d.as_secs_f64();
    println!(
        "\nfan-in, {CONNS} connections x {EACH} messages of 64 B: libws (one shared loop) {:.0} msg/s, tungstenite ({CONNS} threads) {:.0} msg/s, ratio {:.2}",
        rate(ours),
        rate(base),
        rate(ours) / rate(base)
    );
}

/// The many-connections scenario's side of each connection: the echo of
/// a message carries its send time, and its delivery latency is kept.
struct Latency {
    start: Instant,
    opened: AtomicUsize,
    received: AtomicUsize,
    samples_us: Mutex<Vec<u32>>,
}

unsafe extern "C" fn latency_open(ud: *mut c_void, _: *mut ws_socket) {
    (*(ud as *const Latency)).opened.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn latency_message(ud: *mut c_void, _: *mut ws_socket, data: *const u8, len: usize, _: bool) {
    let l = &*(ud as *const Latency);
    if len >= 8 {
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(std::slice::from_raw_parts(data, 8));
        let sent = Duration::from_nanos(u64::from_le_bytes(stamp));
        let us = l.start.elapsed().saturating_sub(sent).as_micros().min(u32::MAX as u128) as u32;
        l.samples_us.lock().unwrap().push(us);
    }
    l.received.fetch_add(1, Ordering::SeqCst);
}

/// CPU time (user + system) of this process's threads named `name`.
fn threads_cpu(name: &str) -> Duration {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((head, tail)) = stat.rsplit_once(") ") else { continue };
        if !head.ends_with(&format!("({name}")) {
            continue;
        }
        let fields: Vec<&str> = tail.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat(5), 12 and 13 here.
        total += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    Duration::from_millis(total * 1000 / ticks)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 10,000 connections on one library-run loop, each sending one message a
/// second (spread evenly over the second) that the server echoes: the
/// loop thread's CPU use and the delivery latency (send to on_message).
/// LIBWS_BENCH_MANY_SECS shortens the 30 s.
fn many_connections(servers: &Servers, lib: &Libws) {
    const CONNS: usize = 10_000;
    let secs: usize = std::env::var("LIBWS_BENCH_MANY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let state = Arc::new(Latency {
        start: Instant::now(),
        opened: AtomicUsize::new(0),
        received: AtomicUsize::new(0),
        samples_us: Mutex::new(Vec::with_capacity(CONNS * secs)),
    });
    let callbacks = ws_callbacks {
        user_data: Arc::as_ptr(&state) as *mut c_void,
        on_open: Some(latency_open),
        on_message: Some(latency_message),
        on_error: None,
        on_close: None,
    };
    let url = CString::new(format!("ws://127.0.0.1:{}/echo", servers.port)).unwrap();
    let wait_for = |what: &str, count: &AtomicUsize, n: usize, limit: Duration| {
        let t = Instant::now();
        while count.load(Ordering::SeqCst) < n {
            assert!(t.elapsed() < limit, "{what}: {} of {n}", count.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut handles = Vec::with_capacity(CONNS);
    while handles.len() < CONNS {
        for _ in 0..250 {
            let o = ws_options_new();
            unsafe {
                assert_eq!(ws_options_set_loop(o, lib.shared), WS_OK);
                let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o);
                assert!(!ws.is_null());
                ws_options_free(o);
                handles.push(ws);
            }
        }
        wait_for("on_open", &state.opened, handles.len(), Duration::from_secs(60));
    }
    let (loop_before, send_before) = (threads_cpu("libws-io"), thread_cpu());
    let begin = Instant::now();
    let total = CONNS * secs;
    for k in 0..total {
        // Message k leaves at k / CONNS seconds.
        let due = Duration::from_micros((k as u64) * 1_000_000 / CONNS as u64);
        if let Some(ahead) = due.checked_sub(begin.elapsed()) {
            if ahead > Duration::from_millis(1) {
                std::thread::sleep(ahead);
            }
        }
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&(state.start.elapsed().as_nanos() as u64).to_le_bytes());
        msg[8..].copy_from_slice(&(k as u64).to_le_bytes());
        unsafe { ws_send_bytes(handles[k % CONNS], msg.as_ptr(), msg.len()) };
    }
    wait_for("echoes", &state.received, total, Duration::from_secs(30));
    let elapsed = begin.elapsed();
    let (loop_cpu, send_cpu) = (threads_cpu("libws-io") - loop_before, thread_cpu() - send_before);
    let mut samples = std::mem::take(&mut *state.samples_us.lock().unwrap());
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "\n{CONNS} connections on one loop, 1 message/s each for {secs} s ({total} echoes in {:.1} s): \
         loop thread {:.1}% of a core ({:.1} us CPU per echo), sending thread {:.1} us per send; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        loop_cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64(),
        loop_cpu.as_secs_f64() * 1e6 / total as f64,
        send_cpu.as_secs_f64() * 1e6 / total as f64,
        at(0.5),
        at(0.99),
        samples.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    for ws in handles {
        unsafe { ws_free(ws) };
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One idle-memory figure, measured in a process of its own (this program
/// again, with LIBWS_BENCH_IDLE set), so that memory an earlier section
/// freed cannot hide what this one holds: resident memory per connection
/// once `n` connections sit idle, and the peak (VmHWM) per connection.
/// `what`: "tungstenite" (with "+tls" for wss://), or a mode ("own", "shared" or "app") with
/// "+tls" (wss://) or "+after" (after one 1 MiB message each) added.
fn idle_in_child(servers: &Servers, what: &str, n: usize) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("LIBWS_BENCH_IDLE", format!("{what} {n} {} {}", servers.port, servers.tls_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for smaps in text.lines().filter(|l| l.starts_with("SMAPS ")) {
        println!("  {what}: {smaps}");
    }
    let line = text.lines().find(|l| l.starts_with("IDLE ")).unwrap_or_else(|| panic!("{what}: {text}"));
    let v: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

/// The child's side of `idle_in_child`.
fn idle_child(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (what, n, port, tls_port) = (
        parts[0],
        parts[1].parse::<usize>().unwrap(),
        parts[2].parse::<u16>().unwrap(),
        parts[3].parse::<u16>().unwrap(),
    );
    let (rss0, hwm0) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let mut held_tws: Vec<Tws> = Vec::new();
    let mut handles = Vec::new();
    if what.starts_with("tungstenite") {
        let peer = if what.ends_with("+tls") { Peer { port: tls_port, tls: true } } else { Peer { port, tls: false } };
        held_tws = (0..n).map(|_| tungstenite_connect_to(peer, "/echo")).collect();
    } else {
        let lib = Libws::new();
        let mode = match what.split('+').next() {
            Some("own") => Mode::OwnThread,
            Some("app") => Mode::AppLoop,
            _ => Mode::SharedLoop,
        };
        let (tls, after) = (what.contains("+tls"), what.contains("+after"));
        let url = match (after, tls) {
            (true, _) => format!("ws://127.0.0.1:{port}/push/1/{}", 1 << 20),
            (_, true) => format!("wss://localhost:{tls_port}/echo"),
            _ => format!("ws://127.0.0.1:{port}/echo"),
        };
        let counter = Counter::new(Vec::new());
        // Wake the waiter at every message.
        counter.target.store(1, Ordering::SeqCst);
        while handles.len() < n {
            let batch = 250.min(n - handles.len());
            for _ in 0..batch {
                handles.push(lib.connect(&url, mode, &counter, tls));
            }
            counter.wait("on_open", &counter.opened, handles.len());
        }
        if after {
            for (i, ws) in handles.iter().enumerate() {
                unsafe { ws_send_string(*ws, c"go".as_ptr(), 2) };
                // A few at a time: the figure is what idle connections
                // keep, not the peak of many messages in flight at once.
                if i % 10 == 9 {
                    counter.wait("messages", &counter.received, i + 1);
                }
            }
            counter.wait("messages", &counter.received, n);
        }
        // The loops and handles stay: the process ends after measuring.
        let _ = lib;
    }
    std::thread::sleep(Duration::from_millis(500));
    let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / n as f64;
    println!("IDLE {:.1} {:.1}", per(status_kib("VmRSS:"), rss0), per(status_kib("VmHWM:"), hwm0));
    if std::env::var_os("LIBWS_BENCH_SMAPS").is_some() {
        print_smaps_by_size();
    }
    drop(held_tws);
    // The process ends here: nothing to measure in tearing down.
    std::process::exit(0);
}

/// Where the resident memory sits, for a profile: anonymous mappings
/// grouped by their size (thread stacks, malloc arenas and the heap each
/// have a size of their own), resident KiB and count per group.
fn print_smaps_by_size() {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut groups: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut key = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let size = (u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap()) / 1024;
            let name = words.nth(4).unwrap_or("anonymous");
            key = format!("{name} {size} KiB");
        } else if first == "Rss:" {
            let kib: u64 = words.next().unwrap().parse().unwrap();
            let e = groups.entry(key.clone()).or_default();
            e.0 += kib;
            e.1 += 1;
        }
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by_key(|(_, (kib, _))| Reverse(*kib));
    for (key, (kib, count)) in rows.into_iter().take(12) {
        println!("SMAPS {kib:>9} KiB resident in {count:>6} mappings of {key}");
    }
}

/// Memory per idle open connection, each figure from a process of its own.
fn idle_memory(servers: &Servers) {
    let runs: [(&str, &str, usize); 11] = [
        ("shared loop, ws://", "shared", 10_000),
        ("shared loop, wss://", "shared+tls", 2_000),
        ("shared loop, after one 1 MiB message each", "shared+after", 1_000),
        ("own thread, ws://", "own", 2_000),
        ("own thread, wss://", "own+tls", 1_000),
        ("own thread, after one 1 MiB message each", "own+after", 1_000),
        ("application loop, ws://", "app", 2_000),
        ("application loop, wss://", "app+tls", 1_000),
        ("application loop, after one 1 MiB message each", "app+after", 1_000),
        ("tungstenite, ws://", "tungstenite", 2_000),
        ("tungstenite, wss:// (native-tls)", "tungstenite+tls", 1_000),
    ];
    println!("\nmemory per idle open connection, each in a fresh process (KiB)    resident    peak (VmHWM)");
    for (name, what, n) in runs {
        let (rss, hwm) = idle_in_child(servers, what, n);
        println!("{:<64} {rss:>9.1} {hwm:>14.1}", format!("{name} ({n})"));
    }
}

fn main() {
    if std::env::var_os("LIBWS_BENCH_SERVER").is_some() {
        server_main();
        return;
    }
    // Room for 10,000 connections on each side.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    if let Ok(spec) = std::env::var("LIBWS_BENCH_IDLE") {
        idle_child(&spec);
        return;
    }
    let servers = start_servers();
    let lib = Libws::new();
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    let filter = filter.as_str();
    throughput(&servers, &lib, filter);
    if "connects".contains(filter) {
        connects(&servers, &lib);
    }
    if "fan-in".contains(filter) {
        fan_in(&servers, &lib);
    }
    if "many connections".contains(filter) {
        many_connections(&servers, &lib);
    }
    if "idle memory".contains(filter) {
        idle_memory(&servers);
    }
    unsafe {
        ws_loop_free(lib.shared);
        ws_loop_free(lib.app);
    }
}
