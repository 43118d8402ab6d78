//! One libws handle with its recorder, and assertions on its events.

use super::recorder::{callbacks_for, Ev, Recorder};
use crate::common::WAIT;
use std::ffi::{c_char, CStr, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws::ffi::*;

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
    /// Keepalive (ws_options_set_ping_interval_ms / _pong_timeout_ms).
    pub ping_interval_ms: Option<u32>,
    pub pong_timeout_ms: Option<u32>,
    /// Records `on_pong` as `Ev::Pong`.
    pub record_pongs: bool,
    /// ws_options_set_unix_socket.
    pub unix_socket: Option<String>,
    /// ws_options_set_proxy (None: not called, the environment decides).
    pub proxy: Option<String>,
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
        // The test's mode decides which loop the handle runs on.
        let lp = super::mode::current_loop();
        let mut own_options = std::ptr::null_mut();
        let options = match (lp.is_null(), options.is_null()) {
            (true, _) => options,
            (false, true) => {
                own_options = ws_options_new();
                assert_eq!(ws_options_set_loop(own_options, lp), WS_OK);
                own_options as *const ws_options
            }
            (false, false) => {
                assert_eq!(ws_options_set_loop(options as *mut ws_options, lp), WS_OK);
                options
            }
        };
        let url = CString::new(url).unwrap();
        let protos: Vec<CString> = protocols.iter().map(|p| CString::new(*p).unwrap()).collect();
        let ptrs: Vec<*const c_char> = protos.iter().map(|p| p.as_ptr()).collect();
        let callbacks = callbacks_for(&rec);
        let protos_ptr = if ptrs.is_empty() { std::ptr::null() } else { ptrs.as_ptr() };
        let ws = ws_new_with_options(url.as_ptr(), protos_ptr, ptrs.len(), &callbacks, options);
        ws_options_free(own_options);
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

    /// Checks the state right after a `ws_close` that returned WS_OK while
    /// OPEN. The call makes it CLOSING at once (WHATWG `close()`), but the
    /// loop's thread may finish the whole closing handshake on loopback
    /// before this thread reads it, so CLOSED is also right; OPEN never is.
    pub fn assert_closing_or_closed(&self, what: &str) {
        let s = self.state();
        assert!(matches!(s, WS_CLOSING | WS_CLOSED), "{what}: state {s} after ws_close");
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

/// A handle on `lp` (whatever the test's mode), with `rec`'s callbacks.
pub fn client_on(lp: *mut ws_loop, url: &str, rec: Arc<Recorder>) -> Client {
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        let c = Client::try_with_options(url, &[], o, rec).unwrap();
        ws_options_free(o);
        c
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
    if let Some(ms) = o.ping_interval_ms {
        assert_eq!(ws_options_set_ping_interval_ms(options, ms), WS_OK);
    }
    if let Some(ms) = o.pong_timeout_ms {
        assert_eq!(ws_options_set_pong_timeout_ms(options, ms), WS_OK);
    }
    if let Some(path) = &o.unix_socket {
        let path = CString::new(path.as_str()).unwrap();
        assert_eq!(ws_options_set_unix_socket(options, path.as_ptr()), WS_OK);
    }
    if let Some(url) = &o.proxy {
        let url = CString::new(url.as_str()).unwrap();
        assert_eq!(ws_options_set_proxy(options, url.as_ptr()), WS_OK);
    }
    if o.record_pongs {
        assert_eq!(ws_options_set_on_pong(options, Some(super::recorder::cb_pong)), WS_OK);
    }
    options
}

/// Checks `cond` every 2 ms until it holds; panics after WAIT.
pub fn poll_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
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
