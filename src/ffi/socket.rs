//! The connection: `ws_socket`, its callbacks, and what the browser's
//! `WebSocket` object does (new, send, close, the attributes, free).

use super::errors::set_last_error;
use super::{boundary, boundary_or, bytes_arg, result_code, try_ref, ws_options};
use crate::client::{Client, Handler};
use crate::conn::options::Options;
use crate::error::{Error, WS_ERR_INVALID_ARGUMENT, WS_OK};
use std::ffi::{c_char, c_int, c_void, CStr};

/// readyState: the connection is not yet open.
pub const WS_CONNECTING: c_int = 0;
/// readyState: the connection is open and ready to communicate.
pub const WS_OPEN: c_int = 1;
/// readyState: the closing handshake has started.
pub const WS_CLOSING: c_int = 2;
/// readyState: the connection is closed or could not be opened.
pub const WS_CLOSED: c_int = 3;

/// One WebSocket connection (the browser's `WebSocket` object). Opaque.
///
/// Created by `ws_new` or `ws_new_with_options`; the caller owns it and must
/// release it with `ws_free` exactly once. Every function taking a
/// `ws_socket *` may be called from any thread, also from inside callbacks,
/// until `ws_free` returns.
pub struct ws_socket {
    client: Client,
}

/// The connection opened: readyState is `WS_OPEN`. Runs at most once.
pub type ws_on_open = Option<unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket)>;

/// A whole message arrived while `WS_OPEN`. `data` is never NULL and is valid
/// only during the callback; `len` bytes, followed by a NUL byte not counted
/// in `len` (so text can be used as a C string). `is_text` is true for a text
/// message, which is valid UTF-8.
pub type ws_on_message = Option<
    unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket, data: *const u8, len: usize, is_text: bool),
>;

/// The connection failed (handshake failed, protocol broken, limit exceeded,
/// or `ws_close` during `WS_CONNECTING`). Always immediately followed by
/// `on_close` with 1006. `message` is NUL-terminated UTF-8 saying why,
/// valid only during the callback. readyState is `WS_CLOSED`.
pub type ws_on_error = Option<unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket, message: *const c_char)>;

/// The connection is closed: the last callback, at most once. It runs
/// exactly once for every connection that ends while its handle lives (a
/// failure, the server's close, `ws_close`); it does not run when `ws_free`
/// comes first: after `ws_free` returns no callback runs, so a handle freed
/// while connecting or open gets no `on_close` (the connection is closed
/// with 1001 in the background). A wrapper that releases its state in
/// `on_close` must release it after `ws_free` too.
/// `code` and `reason` are the server's when the closing handshake completed
/// (`was_clean` true; 1005 if its close frame had no code); 1006 with
/// `was_clean` false when the connection dropped, timed out or failed.
/// `reason` is NUL-terminated UTF-8, never NULL, valid only during the
/// callback. readyState is `WS_CLOSED`.
pub type ws_on_close = Option<
    unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket, code: u16, reason: *const c_char, was_clean: bool),
>;

/// A pong arrived (see `ws_options_set_on_pong`): `data` holds its `len`
/// payload bytes (at most 125), valid only during the callback; not NULL.
pub type ws_on_pong =
    Option<unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket, data: *const u8, len: usize)>;

/// bufferedAmount fell to the low mark set with `ws_options_set_on_drain`
/// after a send took it above: send more now.
pub type ws_on_drain = Option<unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket)>;

/// The event callbacks of one connection, copied by `ws_new`.
///
/// Callbacks of one handle run on the thread that runs its loop (by
/// default a library thread of its own; see `ws_loop`), one at a time, in
/// order, never before `ws_new` has returned the handle and never after
/// `ws_free` has returned. Inside a callback every libws function may be
/// called, including `ws_send_*`, `ws_close` and `ws_free` on the same
/// handle or on another one; none of them waits for another callback then
/// (see `ws_free` and `ws_close`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ws_callbacks {
    /// Passed back unchanged to every callback.
    pub user_data: *mut c_void,
    /// At most once, when the connection opens. May be NULL, as every callback.
    pub on_open: ws_on_open,
    /// Each whole message received while `WS_OPEN`.
    pub on_message: ws_on_message,
    /// The connection failed; `on_close` (1006) follows at once.
    pub on_error: ws_on_error,
    /// The last callback: once per connection that ends before `ws_free`;
    /// never after `ws_free` (see `ws_on_close`).
    pub on_close: ws_on_close,
}

/// Calls the C callbacks; lives on the loop's thread.
struct CHandler {
    callbacks: ws_callbacks,
    on_pong: ws_on_pong,
    on_drain: ws_on_drain,
    ws: *mut ws_socket,
}

// SAFETY: the callbacks and user_data are the caller's, who hands them to a
// background thread by calling ws_new (documented in ws.h); `ws` is only
// passed back, never dereferenced here.
unsafe impl Send for CHandler {}

impl Handler for CHandler {
    fn on_open(&mut self) {
        if let Some(f) = self.callbacks.on_open {
            // SAFETY: a C function pointer the caller supplied for this.
            unsafe { f(self.callbacks.user_data, self.ws) }
        }
    }
    fn on_message(&mut self, data: &[u8], text: bool) {
        if let Some(f) = self.callbacks.on_message {
            // SAFETY: data is live and NUL-followed for the call's duration.
            unsafe { f(self.callbacks.user_data, self.ws, data.as_ptr(), data.len(), text) }
        }
    }
    fn on_error(&mut self, message: &CStr) {
        if let Some(f) = self.callbacks.on_error {
            // SAFETY: message is a live C string for the call's duration.
            unsafe { f(self.callbacks.user_data, self.ws, message.as_ptr()) }
        }
    }
    fn on_close(&mut self, code: u16, reason: &CStr, was_clean: bool) {
        if let Some(f) = self.callbacks.on_close {
            // SAFETY: reason is a live C string for the call's duration.
            unsafe { f(self.callbacks.user_data, self.ws, code, reason.as_ptr(), was_clean) }
        }
    }
    fn on_pong(&mut self, data: &[u8]) {
        if let Some(f) = self.on_pong {
            // SAFETY: data is live for the call's duration.
            unsafe { f(self.callbacks.user_data, self.ws, data.as_ptr(), data.len()) }
        }
    }
    fn on_drain(&mut self) {
        if let Some(f) = self.on_drain {
            // SAFETY: a C function pointer the caller supplied for this.
            unsafe { f(self.callbacks.user_data, self.ws) }
        }
    }
}

/// SAFETY: `ws` is NULL or a live handle from ws_new.
pub(super) unsafe fn client<'a>(ws: *const ws_socket) -> Option<&'a Client> {
    // SAFETY: the caller's promise.
    unsafe { try_ref(ws) }.map(|w| &w.client)
}

/// SAFETY: as `ws_new`.
unsafe fn new_socket(
    url: *const c_char,
    protocols: *const *const c_char,
    num_protocols: usize,
    callbacks: *const ws_callbacks,
    options: Option<&ws_options>,
) -> Result<*mut ws_socket, Error> {
    if url.is_null() {
        return Err(Error::invalid_argument("url is NULL"));
    }
    // SAFETY: not NULL (checked above), and NUL-terminated (# Safety).
    let url = unsafe { CStr::from_ptr(url) }.to_str().map_err(|_| Error::invalid_argument("url is not valid UTF-8"))?;
    if num_protocols > 0 && protocols.is_null() {
        return Err(Error::invalid_argument("protocols is NULL but num_protocols is not 0"));
    }
    // No array holds more pointers than this; refused before one is read.
    if num_protocols > isize::MAX as usize / std::mem::size_of::<*const c_char>() {
        return Err(Error::invalid_argument(format!("num_protocols {num_protocols} is larger than any array")));
    }
    // Not sized by the caller's count: a wrong count must not allocate.
    let mut names = Vec::with_capacity(num_protocols.min(16));
    for i in 0..num_protocols {
        // SAFETY: `protocols` points to `num_protocols` pointers (# Safety),
        // and `i` is below that count.
        let p = unsafe { *protocols.add(i) };
        if p.is_null() {
            return Err(Error::invalid_argument(format!("protocols[{i}] is NULL")));
        }
        // SAFETY: not NULL (checked above), and NUL-terminated (# Safety).
        let name = unsafe { CStr::from_ptr(p) }
            .to_str()
            .map_err(|_| Error::new(crate::error::ErrorKind::Syntax, format!("protocols[{i}] is not an HTTP token")))?;
        names.push(name);
    }
    let client = match options {
        Some(o) => Client::new(url, &names, &o.options, o.event_loop.clone())?,
        None => Client::new(url, &names, &Options::default(), None)?,
    };
    // SAFETY: NULL or a live `ws_callbacks` (# Safety); it is copied.
    let callbacks = unsafe { try_ref(callbacks) }.copied().unwrap_or(ws_callbacks {
        user_data: std::ptr::null_mut(),
        on_open: None,
        on_message: None,
        on_error: None,
        on_close: None,
    });
    let ws = Box::into_raw(Box::new(ws_socket { client }));
    let on_pong = options.and_then(|o| o.on_pong);
    let on_drain = options.and_then(|o| o.on_drain);
    let handler = Box::new(CHandler { callbacks, on_pong, on_drain, ws });
    // No callback may start before the caller has the handle: one that
    // frees it (on_close after a refused connect) would hand back a freed
    // pointer. The loop's thread waits for this hold before its first callback.
    // SAFETY: `ws` came from Box::into_raw above and is not yet the
    // caller's: nothing else uses it until this returns.
    let client = unsafe { &(*ws).client };
    let hold = client.hold_callbacks();
    if let Err(e) = client.start(handler) {
        drop(hold);
        // SAFETY: from Box::into_raw above; no callback ran (held), and
        // the caller never saw the pointer.
        drop(unsafe { Box::from_raw(ws) });
        return Err(e);
    }
    #[cfg(feature = "testing")]
    super::testing::new_return_delay();
    drop(hold);
    Ok(ws)
}

/// Owns a handle's memory until dropped; sent to the loop's thread when
/// `ws_free` may not wait for a running callback of the handle.
struct OwnedSocket(*mut ws_socket);

// SAFETY: the pointer came from Box::into_raw; only Drop uses it, once.
unsafe impl Send for OwnedSocket {}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        // SAFETY: the handle is ws_free'd, so nothing else uses it, and no
        // callback of it runs any more (see Shared::free).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A constructor's result for C: the handle, or NULL with this thread's
/// last error set (`boundary` sets it too when the constructor panicked).
fn new_or_null(r: Result<*mut ws_socket, Error>) -> *mut ws_socket {
    r.unwrap_or_else(|e| {
        set_last_error(&e);
        std::ptr::null_mut()
    })
}

/// Creates a connection and starts connecting at once; returns without
/// waiting for the network. Without a loop in the options the connection
/// runs on a library thread of its own (the default); with
/// `ws_options_set_loop` it runs on that loop: a library thread for a
/// started loop, or the application's thread that calls `ws_loop_run`.
///
/// `url`: `ws://`, `wss://`, `http://` (taken as `ws://`) or `https://`
/// (taken as `wss://`), parsed as the WHATWG URL Standard parses it. A
/// fragment, another scheme or an unparsable URL gives NULL with
/// `WS_ERR_SYNTAX`.
///
/// `protocols`: `num_protocols` subprotocol names (NULL when 0), offered in
/// this order; each must be an HTTP token, without duplicates, else NULL with
/// `WS_ERR_SYNTAX`. NULL with a `num_protocols` other than 0, a NULL entry,
/// or a count larger than any array (over `PTRDIFF_MAX / sizeof(char *)`,
/// refused before an entry is read) gives NULL with
/// `WS_ERR_INVALID_ARGUMENT`; a NULL or non-UTF-8 `url` too.
///
/// `callbacks`: copied; may be NULL for no callbacks. `callbacks->user_data`
/// must stay valid until `on_close` has run or `ws_free` has returned.
///
/// Returns a handle the caller owns and must release with `ws_free`, or NULL;
/// then `ws_last_error_code()` and `ws_last_error()` say why: the codes
/// above for bad arguments, `WS_ERR_RESOURCE` when the process is out of
/// file descriptors or threads (e.g. "cannot create eventfd: Too many open
/// files"). The strings
/// passed in are copied and may be freed when this returns.
///
/// # Safety
/// `url` is NULL or a NUL-terminated string; `protocols` is NULL or points to
/// `num_protocols` pointers, each NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ws_new(
    url: *const c_char,
    protocols: *const *const c_char,
    num_protocols: usize,
    callbacks: *const ws_callbacks,
) -> *mut ws_socket {
    // SAFETY: the caller's promises, as documented above.
    boundary(|| new_or_null(unsafe { new_socket(url, protocols, num_protocols, callbacks, None) }))
}

/// As `ws_new`, with settings. `options` may be NULL (all defaults); it is
/// copied, so it may be freed as soon as this returns.
///
/// # Safety
/// As `ws_new`; `options` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_new_with_options(
    url: *const c_char,
    protocols: *const *const c_char,
    num_protocols: usize,
    callbacks: *const ws_callbacks,
    options: *const ws_options,
) -> *mut ws_socket {
    // SAFETY: the caller's promises, as documented above.
    boundary(|| new_or_null(unsafe { new_socket(url, protocols, num_protocols, callbacks, try_ref(options)) }))
}

/// Queues one text message: copies `len` bytes of `utf8`, which must be valid
/// UTF-8 (else `WS_ERR_INVALID_ARGUMENT`); `utf8` may be NULL only when `len`
/// is 0. The text need not be NUL-terminated. `len` bytes at `utf8` must be
/// readable; a `len` over `PTRDIFF_MAX` (`SIZE_MAX`, a negative length
/// cast), which no buffer can have, gives `WS_ERR_INVALID_ARGUMENT` before
/// any byte is read. The argument checks come before the state's.
///
/// While `WS_CONNECTING`: `WS_ERR_INVALID_STATE`. While `WS_OPEN`: queued,
/// `bufferedAmount` grows by `len`, returns at once (or `WS_ERR_BUFFER_FULL`
/// past `ws_options_set_max_buffered_amount`, or `WS_ERR_RESOURCE` when
/// memory for the copy cannot be had; then nothing is queued or counted).
/// The state and the limit are checked before anything is copied, so a
/// refused send never allocates. While `WS_CLOSING` or
/// `WS_CLOSED`: as browsers do, `bufferedAmount` grows, the data is
/// discarded, `WS_OK`. Messages go out in the order of the calls that
/// returned `WS_OK`. Any thread, also inside callbacks.
///
/// # Safety
/// `ws` is NULL or a live handle; `utf8` is NULL or points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ws_send_string(ws: *mut ws_socket, utf8: *const c_char, len: usize) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let (Some(client), Some(data)) = (unsafe { (client(ws), bytes_arg(utf8.cast(), len)) }) else {
            return WS_ERR_INVALID_ARGUMENT;
        };
        result_code(client.send_text(data))
    })
}

/// Queues one binary message: copies `len` bytes of `data`, which may be
/// NULL only when `len` is 0; `len` bytes at `data` must be readable, and
/// a `len` over `PTRDIFF_MAX` gives `WS_ERR_INVALID_ARGUMENT` unread. States
/// and results as `ws_send_string`.
///
/// # Safety
/// `ws` is NULL or a live handle; `data` is NULL or points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ws_send_bytes(ws: *mut ws_socket, data: *const u8, len: usize) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let (Some(client), Some(data)) = (unsafe { (client(ws), bytes_arg(data, len)) }) else {
            return WS_ERR_INVALID_ARGUMENT;
        };
        result_code(client.send_binary(data))
    })
}

/// Starts closing, as the browser's `close(code, reason)`.
///
/// `code` 0 means "no code"; `reason` NULL means "no reason". A code other
/// than 0, 1000 or 3000..4999 gives `WS_ERR_INVALID_ACCESS`; a reason over
/// 123 UTF-8 bytes `WS_ERR_SYNTAX`; a reason that is not UTF-8
/// `WS_ERR_INVALID_ARGUMENT`. A reason without a code, even an empty one
/// (""), is sent with 1000; only code 0 with a NULL reason sends a close
/// frame without a code. The code, then the reason, are checked first, in
/// every state: a bad one gives its error also while `WS_CLOSED`.
///
/// While `WS_CONNECTING` the connection fails: readyState is `WS_CLOSING` at
/// once, then `on_error` and `on_close` (1006) follow promptly. While
/// `WS_OPEN` the closing handshake starts (`WS_CLOSING`); every message
/// accepted before goes out first, and `on_close` follows when the server
/// has answered and closed TCP, or when the close timeout has passed since
/// the close frame was written (1006). While `WS_CLOSING` or `WS_CLOSED`:
/// nothing happens, `WS_OK`. Never blocks on the network.
///
/// No `on_open` or `on_message` starts after `ws_close` returns. Called
/// from a thread that is not running a libws callback, it waits for a
/// callback of this handle running at that moment to return, so that the
/// callback never sees the state change under it. Called from inside a
/// libws callback it never waits; a callback of this handle running at
/// that moment on another thread may then see readyState `WS_CLOSING`.
///
/// # Safety
/// `ws` is NULL or a live handle; `reason` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ws_close(ws: *mut ws_socket, code: u16, reason: *const c_char) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let Some(client) = (unsafe { client(ws) }) else {
            return WS_ERR_INVALID_ARGUMENT;
        };
        // The bytes, unchecked: the code is checked before the reason is.
        // SAFETY: not NULL, and NUL-terminated (# Safety).
        let reason = (!reason.is_null()).then(|| unsafe { CStr::from_ptr(reason) }.to_bytes());
        result_code(client.close(code, reason))
    })
}

/// Sends a ping with `len` bytes of `data` as its payload (NULL only when
/// `len` is 0); the server's pong reaches the `on_pong` callback set with
/// `ws_options_set_on_pong`, with the same payload, for programs that
/// measure latency. `WS_ERR_INVALID_ARGUMENT` for a `len` over 125 (RFC
/// 6455 5.5: the most a control frame carries); `WS_ERR_INVALID_STATE`
/// unless `WS_OPEN` (no frame may follow our close frame). The payload is
/// copied; the ping goes out after the messages sent before it. Counts
/// toward no `bufferedAmount`. Any thread, also inside callbacks.
///
/// # Safety
/// `ws` is NULL or a live handle; `data` is NULL or points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ws_send_ping(ws: *mut ws_socket, data: *const u8, len: usize) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let (Some(client), Some(data)) = (unsafe { (client(ws), bytes_arg(data, len)) }) else {
            return WS_ERR_INVALID_ARGUMENT;
        };
        result_code(client.ping(data))
    })
}

/// Flow control for incoming data: `false` stops reading this connection's
/// socket, so that TCP pushes back on the server (its sends block once the
/// socket buffers fill); `true` reads again. Messages that the current read
/// already brought are still delivered, up to its end; none after that
/// until resumed, in order then. Pings that arrive while paused are
/// answered once reading resumes; keepalive does not count a paused
/// connection as dead while the server's TCP acknowledges what we send (the
/// pongs wait unread). Once the closing handshake starts (`ws_close`, or
/// the server's close frame) the socket is read again regardless: no
/// message is delivered then, and the server's close frame must come in.
/// May be called before the connection opens (it opens paused), from any
/// thread and from callbacks; the loop takes the change at its next turn.
/// `WS_OK`, or `WS_ERR_INVALID_ARGUMENT` for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_set_receiving(ws: *mut ws_socket, on: bool) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let Some(client) = (unsafe { client(ws) }) else { return WS_ERR_INVALID_ARGUMENT };
        client.set_receiving(on);
        WS_OK
    })
}

/// readyState: `WS_CONNECTING`, `WS_OPEN`, `WS_CLOSING` or `WS_CLOSED`.
/// Updated before the callback that announces a change. 0 for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_ready_state(ws: *const ws_socket) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary_or(0, || unsafe { client(ws) }.map_or(0, |c| c_int::from(c.ready_state() as u8)))
}

/// bufferedAmount: bytes accepted by `ws_send_*` and not yet written to the
/// socket (and, as in browsers, every byte sent while closing or closed).
/// 0 for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_buffered_amount(ws: *const ws_socket) -> u64 {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(0, |c| c.buffered_amount()))
}

/// The serialized URL, e.g. "ws://host:9001/path" (http:// shown as ws://).
/// Owned by the handle: valid until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_url(ws: *const ws_socket) -> *const c_char {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(c"".as_ptr(), |c| c.url().as_ptr()))
}

/// The subprotocol the server chose: "" until open, or if none. Owned by
/// the handle: valid until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_protocol(ws: *const ws_socket) -> *const c_char {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(c"".as_ptr(), |c| c.protocol().as_ptr()))
}

/// The extensions the server chose: "" if none. Owned by the handle: valid
/// until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_extensions(ws: *const ws_socket) -> *const c_char {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(c"".as_ptr(), |c| c.extensions().as_ptr()))
}

/// Releases the handle; NULL is ignored. An open connection is closed with
/// 1001 (going away) in the background, bounded by the close timeout: this
/// returns at once, whatever the network does. Call it exactly once; the
/// handle must not be used after it returns (a use after free by the caller
/// is undefined behaviour).
///
/// No callback of this handle starts after `ws_free` returns. What happens
/// to a callback of this handle that is running at that moment:
/// - Called from a thread that is not running any libws callback, `ws_free`
///   waits for that callback to return, so `user_data` may be freed right
///   after `ws_free` returns.
/// - Called from inside a libws callback (of this handle or of any other),
///   it never waits: two handles whose callbacks free each other would
///   otherwise wait for each other forever. A running callback of this
///   handle finishes normally (when it is the caller, it may still use the
///   handle until it returns), and the handle's memory is released on its
///   loop's thread once it has returned. Free `user_data` only after that
///   callback can no longer use it.
///
/// # Safety
/// `ws` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn ws_free(ws: *mut ws_socket) {
    boundary(|| {
        if !ws.is_null() {
            // The handle is released only once no callback can still use
            // it: the Box is not taken back before that.
            // SAFETY: a live handle (# Safety), freed only by what this makes.
            let free = unsafe { &(*ws).client }.freer();
            free(Box::new(OwnedSocket(ws)));
        }
    })
}
