//! Test support: a recorder behind the C callbacks, a handle wrapper, and
//! servers on 127.0.0.1 (tungstenite for well-behaved peers, raw TCP for
//! misbehaving ones). Every wait is bounded.
#![allow(dead_code)]
#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

pub mod pmd;

use std::ffi::{c_char, c_void, CStr, CString};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open { state: i32 },
    Message { data: Vec<u8>, text: bool, state: i32 },
    Error { message: String, state: i32 },
    Close { code: u16, reason: String, clean: bool, state: i32 },
}

type Hook = Box<dyn FnMut(*mut ws_socket, &Ev) + Send>;

/// Collects a handle's events; `hook` runs inside each callback after it is
/// recorded (to call back into the library from there).
pub struct Recorder {
    events: Mutex<Vec<Ev>>,
    cv: Condvar,
    hook: Mutex<Option<Hook>>,
    /// Set when a callback ran on the thread calling ws_new (must not).
    pub nul_after_message: Mutex<bool>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            events: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            hook: Mutex::new(None),
            nul_after_message: Mutex::new(true),
        })
    }

    pub fn set_hook(&self, hook: impl FnMut(*mut ws_socket, &Ev) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    fn push(&self, ws: *mut ws_socket, ev: Ev) {
        self.events.lock().unwrap().push(ev.clone());
        self.cv.notify_all();
        if let Some(hook) = self.hook.lock().unwrap().as_mut() {
            hook(ws, &ev);
        }
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the events, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&[Ev]) -> bool) -> Vec<Ev> {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.lock().unwrap();
        while !done(&events) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}; events: {:?}", summary(&events));
            events = self.cv.wait_timeout(events, deadline - now).unwrap().0;
        }
        events.clone()
    }

    pub fn wait_close(&self) -> Ev {
        let evs = self.wait_until(WAIT, "on_close", |e| e.iter().any(|e| matches!(e, Ev::Close { .. })));
        evs.into_iter().find(|e| matches!(e, Ev::Close { .. })).unwrap()
    }

    pub fn messages(&self) -> Vec<(Vec<u8>, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Message { data, text, .. } => Some((data, text)),
                _ => None,
            })
            .collect()
    }
}

fn summary(events: &[Ev]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Ev::Message { data, text, .. } => format!("Message(len {}, text {text})", data.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

unsafe extern "C" fn cb_open(ud: *mut c_void, ws: *mut ws_socket) {
    let r = &*(ud as *const Recorder);
    r.push(ws, Ev::Open { state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_message(ud: *mut c_void, ws: *mut ws_socket, data: *const u8, len: usize, text: bool) {
    let r = &*(ud as *const Recorder);
    assert!(!data.is_null());
    if *data.add(len) != 0 {
        *r.nul_after_message.lock().unwrap() = false;
    }
    let data = std::slice::from_raw_parts(data, len).to_vec();
    r.push(ws, Ev::Message { data, text, state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_error(ud: *mut c_void, ws: *mut ws_socket, message: *const c_char) {
    let r = &*(ud as *const Recorder);
    let message = CStr::from_ptr(message).to_str().unwrap().to_string();
    r.push(ws, Ev::Error { message, state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_close(ud: *mut c_void, ws: *mut ws_socket, code: u16, reason: *const c_char, clean: bool) {
    let r = &*(ud as *const Recorder);
    let reason = CStr::from_ptr(reason).to_str().unwrap().to_string();
    r.push(ws, Ev::Close { code, reason, clean, state: ws_ready_state(ws) });
}

/// The recording callbacks, with `rec` as user_data.
pub fn callbacks_for(rec: &Arc<Recorder>) -> ws_callbacks {
    ws_callbacks {
        user_data: Arc::as_ptr(rec) as *mut c_void,
        on_open: Some(cb_open),
        on_message: Some(cb_message),
        on_error: Some(cb_error),
        on_close: Some(cb_close),
    }
}

/// Settings for `Client::with`; `None` leaves the library default.
#[derive(Default, Clone)]
pub struct Opts {
    pub connect_timeout_ms: Option<u32>,
    pub close_timeout_ms: Option<u32>,
    pub max_message_size: Option<u64>,
    pub max_buffered: Option<u64>,
    pub headers: Vec<(String, String)>,
    /// permessage-deflate settings (ws_options_set_compression and co.).
    pub compression: Option<bool>,
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
    pub client_max_window_bits: Option<i32>,
    pub server_max_window_bits: Option<i32>,
    pub compression_threshold: Option<u64>,
}

/// One libws handle with a recorder; freed on drop unless freed already.
pub struct Client {
    pub ws: *mut ws_socket,
    pub rec: Arc<Recorder>,
    freed: bool,
}

// SAFETY: every libws function may be called from any thread.
unsafe impl Send for Client {}
unsafe impl Sync for Client {}

/// Why ws_new refused: the code and ws_last_error().
pub type NewError = (i32, String);

impl Client {
    pub fn try_with(
        url: &str,
        protocols: &[&str],
        opts: Option<&Opts>,
        rec: Arc<Recorder>,
    ) -> Result<Client, NewError> {
        unsafe {
            let options = opts.map_or(std::ptr::null_mut(), |o| build_options(o));
            let c = Client::try_with_options(url, protocols, options, rec);
            ws_options_free(options);
            c
        }
    }

    /// ws_new_with_options with options the caller built (NULL: none).
    ///
    /// # Safety
    /// `options` is NULL or a live ws_options.
    pub unsafe fn try_with_options(
        url: &str,
        protocols: &[&str],
        options: *const ws_options,
        rec: Arc<Recorder>,
    ) -> Result<Client, NewError> {
        let url = CString::new(url).unwrap();
        let protos: Vec<CString> = protocols.iter().map(|p| CString::new(*p).unwrap()).collect();
        let ptrs: Vec<*const c_char> = protos.iter().map(|p| p.as_ptr()).collect();
        let callbacks = callbacks_for(&rec);
        let protos_ptr = if ptrs.is_empty() { std::ptr::null() } else { ptrs.as_ptr() };
        let ws = ws_new_with_options(url.as_ptr(), protos_ptr, ptrs.len(), &callbacks, options);
        if ws.is_null() {
            let msg = CStr::from_ptr(ws_last_error()).to_str().unwrap().to_string();
            return Err((ws_last_error_code(), msg));
        }
        Ok(Client { ws, rec, freed: false })
    }

    pub fn new(url: &str) -> Client {
        Client::try_with(url, &[], None, Recorder::new()).unwrap()
    }

    pub fn with(url: &str, protocols: &[&str], opts: &Opts) -> Client {
        Client::try_with(url, protocols, Some(opts), Recorder::new()).unwrap()
    }

    pub fn open(url: &str) -> Client {
        let c = Client::new(url);
        c.wait_open();
        c
    }

    pub fn wait_open(&self) {
        let evs =
            self.rec.wait_until(WAIT, "on_open", |e| e.iter().any(|e| matches!(e, Ev::Open { .. } | Ev::Close { .. })));
        assert_eq!(evs[0], Ev::Open { state: WS_OPEN }, "events: {evs:?}");
    }

    pub fn send_text(&self, s: &str) -> i32 {
        unsafe { ws_send_string(self.ws, s.as_ptr().cast(), s.len()) }
    }

    pub fn send_bytes(&self, b: &[u8]) -> i32 {
        unsafe { ws_send_bytes(self.ws, b.as_ptr(), b.len()) }
    }

    pub fn close(&self, code: u16, reason: Option<&str>) -> i32 {
        let reason = reason.map(|r| CString::new(r).unwrap());
        unsafe { ws_close(self.ws, code, reason.as_ref().map_or(std::ptr::null(), |r| r.as_ptr())) }
    }

    pub fn state(&self) -> i32 {
        unsafe { ws_ready_state(self.ws) }
    }

    pub fn buffered(&self) -> u64 {
        unsafe { ws_buffered_amount(self.ws) }
    }

    pub fn protocol(&self) -> String {
        unsafe { CStr::from_ptr(ws_protocol(self.ws)) }.to_str().unwrap().to_string()
    }

    pub fn url(&self) -> String {
        unsafe { CStr::from_ptr(ws_url(self.ws)) }.to_str().unwrap().to_string()
    }

    pub fn extensions(&self) -> String {
        unsafe { CStr::from_ptr(ws_extensions(self.ws)) }.to_str().unwrap().to_string()
    }

    /// Frees now; returns how long ws_free took.
    pub fn free(&mut self) -> Duration {
        assert!(!self.freed);
        self.freed = true;
        let t = Instant::now();
        unsafe { ws_free(self.ws) };
        t.elapsed()
    }

    /// The handle was freed by a hook from inside a callback.
    pub fn forget(&mut self) {
        self.freed = true;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.freed {
            unsafe { ws_free(self.ws) };
        }
    }
}

unsafe fn build_options(o: &Opts) -> *mut ws_options {
    let options = ws_options_new();
    if let Some(ms) = o.connect_timeout_ms {
        assert_eq!(ws_options_set_connect_timeout_ms(options, ms), WS_OK);
    }
    if let Some(ms) = o.close_timeout_ms {
        assert_eq!(ws_options_set_close_timeout_ms(options, ms), WS_OK);
    }
    if let Some(n) = o.max_message_size {
        assert_eq!(ws_options_set_max_message_size(options, n), WS_OK);
    }
    if let Some(n) = o.max_buffered {
        assert_eq!(ws_options_set_max_buffered_amount(options, n), WS_OK);
    }
    for (name, value) in &o.headers {
        let (n, v) = (CString::new(name.as_str()).unwrap(), CString::new(value.as_str()).unwrap());
        assert_eq!(ws_options_add_header(options, n.as_ptr(), v.as_ptr()), WS_OK);
    }
    if let Some(on) = o.compression {
        assert_eq!(ws_options_set_compression(options, on), WS_OK);
    }
    assert_eq!(ws_options_set_client_no_context_takeover(options, o.client_no_context_takeover), WS_OK);
    assert_eq!(ws_options_set_server_no_context_takeover(options, o.server_no_context_takeover), WS_OK);
    if let Some(bits) = o.client_max_window_bits {
        assert_eq!(ws_options_set_client_max_window_bits(options, bits), WS_OK);
    }
    if let Some(bits) = o.server_max_window_bits {
        assert_eq!(ws_options_set_server_max_window_bits(options, bits), WS_OK);
    }
    if let Some(n) = o.compression_threshold {
        assert_eq!(ws_options_set_compression_threshold(options, n), WS_OK);
    }
    options
}

// ----- servers -----

/// A listener on 127.0.0.1 whose accepted connections each get a thread.
pub struct Server {
    pub port: u16,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

/// A raw TCP server: `handler` gets each accepted connection.
pub fn raw_server(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || handler(stream));
        }
    });
    Server { port }
}

/// What a tungstenite server saw of the handshake request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

pub type ServerWs = tungstenite::WebSocket<TcpStream>;

/// A tungstenite server. `choose` picks the subprotocol from those offered;
/// `handler` runs the conversation.
pub fn ws_server(
    choose: impl Fn(&[String]) -> Option<String> + Send + Sync + 'static,
    handler: impl Fn(ServerWs, Seen) + Send + Sync + 'static,
) -> Server {
    let choose = Arc::new(choose);
    let handler = Arc::new(handler);
    raw_server(move |stream| {
        let mut seen = Seen::default();
        let choose = choose.clone();
        let callback = |req: &tungstenite::handshake::server::Request,
                        mut resp: tungstenite::handshake::server::Response| {
            seen.path = req.uri().to_string();
            for (n, v) in req.headers() {
                seen.headers.push((n.to_string(), v.to_str().unwrap_or("").to_string()));
            }
            let offered: Vec<String> = req
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(p) = choose(&offered) {
                resp.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
            }
            Ok(resp)
        };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        if let Ok(ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(config)) {
            handler(ws, seen);
        }
    })
}

/// Echoes every message until the client closes.
pub fn echo<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

pub fn echo_server() -> Server {
    ws_server(|_| None, |ws, _| echo(ws))
}

/// What a tungstenite server read until the connection ended: messages,
/// then the client's close frame if one came.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    pub messages: Vec<tungstenite::Message>,
    pub close: Option<Option<(u16, String)>>,
}

pub fn read_all<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> Transcript {
    let mut t = Transcript::default();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                t.close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => t.messages.push(m),
            Ok(_) => {}
            Err(_) => return t,
        }
    }
}

/// A server that records each connection's transcript into a channel.
pub fn recording_server() -> (Server, crossbeam_channel::Receiver<(Seen, Transcript)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = ws_server(
        |_| None,
        move |mut ws, seen| {
            let t = read_all(&mut ws);
            let _ = tx.lock().unwrap().send((seen, t));
        },
    );
    (server, rx)
}

// ----- raw protocol helpers -----

/// Reads the request head; returns it as text.
pub fn read_request(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

pub fn request_header(request: &str, name: &str) -> Option<String> {
    request.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn accept_key(request: &str) -> String {
    let key = request_header(request, "sec-websocket-key").unwrap_or_default();
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

/// Reads the request and answers 101 with `extra` header lines.
pub fn raw_handshake(stream: &mut TcpStream, extra: &str) -> String {
    let request = read_request(stream);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_key(&request)
    );
    stream.write_all(response.as_bytes()).unwrap();
    request
}

/// An unmasked server frame with the first byte `first` (FIN, RSV, opcode).
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let len = payload.len();
    if len < 126 {
        v.push(len as u8);
    } else if len < 65536 {
        v.push(126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason.as_bytes());
    v
}

/// A client frame read by a raw server, unmasked.
#[derive(Debug, PartialEq)]
pub struct ClientFrame {
    pub first: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Reads one client frame; None at EOF or on the read timeout.
pub fn read_frame(stream: &mut TcpStream) -> Option<ClientFrame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some(ClientFrame { first: head[0], masked, payload })
}

/// Reads client frames until a close frame; returns its code (None: no
/// code) or panics if the connection ended without one.
pub fn read_until_close(stream: &mut TcpStream) -> Option<u16> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    loop {
        let f = read_frame(stream).expect("client sent no close frame");
        if f.first & 0x0f == 8 {
            return (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
        }
    }
}

/// True when the peer closed TCP (EOF or reset) within `timeout`.
pub fn peer_closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// A server that accepts TCP and never answers; connections stay open
/// (held in the returned list) until the test ends.
pub fn silent_server() -> (Server, Arc<Mutex<Vec<TcpStream>>>) {
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    let server = raw_server(move |s| h.lock().unwrap().push(s));
    (server, held)
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Checks `cond` every 2 ms until it holds; panics after WAIT.
pub fn poll_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Echoes messages; the text "close CODE REASON" makes it close with them.
pub fn contract_conversation<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.starts_with("close ") => {
                let mut parts = t[6..].splitn(2, ' ');
                let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_string();
                let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.into() };
                let _ = ws.close(Some(frame));
                read_all(&mut ws);
                return;
            }
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The contract conversation, choosing the first subprotocol offered.
pub fn contract_server() -> Server {
    ws_server(|offered| offered.first().cloned(), |ws, _| contract_conversation(ws))
}

/// Answers the handshake request with `response`, where "{accept}" stands
/// for the right Sec-WebSocket-Accept value, then stays silent a while.
pub fn answer(response: String) -> Server {
    raw_server(move |mut s| {
        let request = read_request(&mut s);
        let r = response.replace("{accept}", &accept_key(&request));
        let _ = s.write_all(r.as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    })
}

/// Where cargo put libws.so and libws.a for this test build.
pub fn lib_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn repo_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the target dir, removed and recreated; per
/// process, so that two test runs in one tree do not share one.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = lib_dir().join("test-scratch").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command, panicking with its output unless it succeeds.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

// ----- assertions on a handle's events -----

pub fn close_event(c: &Client) -> (u16, String, bool) {
    match c.rec.wait_close() {
        Ev::Close { code, reason, clean, state } => {
            assert_eq!(state, ws::ffi::WS_CLOSED, "readyState inside on_close");
            assert_eq!(c.state(), ws::ffi::WS_CLOSED);
            (code, reason, clean)
        }
        _ => unreachable!(),
    }
}

pub fn errors(c: &Client) -> Vec<String> {
    c.rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Error { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}

/// Asserts the connection failed: on_error (readyState CLOSED) right before
/// on_close 1006 unclean, and nothing else after open. Returns the error.
pub fn assert_failed(c: &Client) -> String {
    let (code, _, clean) = close_event(c);
    assert_eq!((code, clean), (1006, false));
    let evs = c.rec.events();
    let n = evs.len();
    assert!(n >= 2, "{evs:?}");
    match &evs[n - 2] {
        Ev::Error { message, state } => {
            assert_eq!(*state, ws::ffi::WS_CLOSED);
            message.clone()
        }
        other => panic!("expected on_error before on_close, got {other:?}"),
    }
}

pub fn wait_messages(c: &Client, n: usize) -> Vec<(Vec<u8>, bool)> {
    c.rec.wait_until(WAIT, "messages", |e| e.iter().filter(|e| matches!(e, Ev::Message { .. })).count() >= n);
    c.rec.messages()
}

// ----- real peers in other processes -----

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Peer {
    pub port: u16,
    /// Holds the peer's stdin: the peer exits when this process does.
    _child: Child,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

/// Starts a peer server (`program` with `args`, relative to the repository,
/// and `path_var` pointing at its installed libraries) that prints
/// "PORT <n>" when ready. None when it is not installed (a panic under CI).
pub fn start_peer(name: &str, program: &str, args: &[&str], path_var: &str, default_path: &str) -> Option<Peer> {
    let env_name = format!("LIBWS_PEER_{}", path_var);
    let lib_path = std::env::var(&env_name).unwrap_or_else(|_| repo_dir().join(default_path).display().to_string());
    let spawned = Command::new(program)
        .args(args)
        .current_dir(repo_dir())
        .env(path_var, &lib_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let missing = |why: String| peer_missing(&format!("{name} peer unavailable: {why}"));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return missing(format!("cannot run {program}: {e}")),
    };
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let Some(port) = line.strip_prefix("PORT ").and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok())
    else {
        let _ = child.kill();
        return missing(format!("it did not start (said {line:?})"));
    };
    eprintln!("{name} peer: {}", line.trim());
    Some(Peer { port, _child: child })
}

/// A real peer is missing: a failure under CI=true, a loud skip elsewhere.
pub fn peer_missing<T>(msg: &str) -> Option<T> {
    let msg = format!("{msg} (scripts/test.sh and .ci/run install the peers)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

// ----- compiling C programs against the library -----

use std::path::{Path, PathBuf};

pub const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
pub const CXX_FLAGS: &[&str] = &["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"];
/// What a Rust staticlib needs from the system (rustc --print native-static-libs).
pub const STATIC_LIBS: &[&str] = &["-lssl", "-lcrypto", "-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// A directory holding libws.so under its soname, as an install would.
pub fn shared_lib_dir(scratch: &Path) -> PathBuf {
    let d = scratch.join("lib");
    std::fs::create_dir_all(&d).unwrap();
    let so = lib_dir().join("libws.so");
    for name in ["libws.so", "libws.so.0"] {
        let _ = std::fs::remove_file(d.join(name));
        std::os::unix::fs::symlink(&so, d.join(name)).unwrap();
    }
    d
}

pub enum Link {
    Shared,
    Static,
}

pub fn compile(source: &Path, out: &Path, compiler: &str, flags: &[&str], link: Link, scratch: &Path) {
    let mut cmd = Command::new(compiler);
    cmd.args(flags).arg("-I").arg(repo_dir().join("include")).arg(source).arg("-o").arg(out);
    // -x c++ applies to later inputs too: switch back before the libraries.
    cmd.args(["-x", "none"]);
    match link {
        Link::Shared => {
            let d = shared_lib_dir(scratch);
            cmd.arg(format!("-L{}", d.display())).arg(format!("-Wl,-rpath,{}", d.display()));
            cmd.args(["-lws", "-lpthread"]);
        }
        Link::Static => {
            cmd.arg(lib_dir().join("libws.a")).args(STATIC_LIBS);
        }
    }
    run(&mut cmd);
}
