//! The C boundary: converts and checks pointers, maps results, and never
//! lets a panic cross into C. Everything else lives in the safe core.
//!
//! Every function here is described in `include/ws.h`, which cbindgen
//! generates from these doc comments.
#![allow(non_camel_case_types)]

use crate::client::{Client, Handler};
use crate::conn::connection::ConnLoop;
use crate::conn::options::Options;
use crate::error::{self, Error};
pub use crate::error::{
    WS_ERR_BUFFER_FULL, WS_ERR_INTERNAL, WS_ERR_INVALID_ACCESS, WS_ERR_INVALID_ARGUMENT, WS_ERR_INVALID_STATE,
    WS_ERR_RESOURCE, WS_ERR_SYNTAX, WS_OK,
};
use crate::runtime::event_loop::{Loop, RunError};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// Settings for `ws_new_with_options`. Opaque.
///
/// Created by `ws_options_new`, released by `ws_options_free`. A connection
/// copies the options when it is created, so they may be changed or freed
/// right after. Not thread-safe: use one `ws_options` from one thread at a time.
pub struct ws_options {
    options: Options,
    /// The loop connections made with these options run on (None: each
    /// on a private loop).
    event_loop: Option<std::sync::Arc<ConnLoop>>,
}

/// An event loop that runs many connections on one thread. Opaque.
///
/// Created by `ws_loop_new`; the caller owns it and releases it with
/// `ws_loop_free`. Connections are put on it with `ws_options_set_loop`.
/// A handle created without a loop gets a private one on a library thread
/// of its own (the default). One loop is run by one thread at a time:
/// either a library thread (`ws_loop_start`) or the application, turn by
/// turn (`ws_loop_run`), which may then watch `ws_loop_fd` in its own
/// epoll, poll, libuv or asyncio loop. All callbacks of the loop's
/// connections run on that thread, one at a time.
///
/// Each connection on the loop keeps it alive: `ws_loop_free` never leaves
/// a connection without its loop (see there). Every `ws_loop_*` function
/// may be called from any thread.
pub struct ws_loop {
    inner: std::sync::Arc<ConnLoop>,
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

/// The connection is closed: always the last callback, exactly once.
/// `code` and `reason` are the server's when the closing handshake completed
/// (`was_clean` true; 1005 if its close frame had no code); 1006 with
/// `was_clean` false when the connection dropped, timed out or failed.
/// `reason` is NUL-terminated UTF-8, never NULL, valid only during the
/// callback. readyState is `WS_CLOSED`.
pub type ws_on_close = Option<
    unsafe extern "C" fn(user_data: *mut c_void, ws: *mut ws_socket, code: u16, reason: *const c_char, was_clean: bool),
>;

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
    /// Exactly once, always the last callback.
    pub on_close: ws_on_close,
}

/// Calls the C callbacks; lives on the loop's thread.
struct CHandler {
    callbacks: ws_callbacks,
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
}

thread_local! {
    static LAST_ERROR: RefCell<(c_int, CString)> = RefCell::new((WS_OK, CString::default()));
}

/// What `ws_last_error` says while this thread's last error cannot be kept
/// or read: the thread is exiting and its thread-local storage is gone (a
/// pthread key destructor, say). `ws_last_error_code` is `WS_ERR_INTERNAL`.
const LAST_ERROR_GONE: &CStr = c"the last error is not available while this thread exits";

/// Records `e` for this thread. While the thread exits and the store is
/// gone, nothing is kept: the getters then say so.
fn set_last_error(e: &Error) {
    let text = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = (e.code(), text);
        }
    });
}

/// Runs `body`; a panic becomes `default` instead of unwinding into C.
fn guard<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

fn result_code(r: Result<(), Error>) -> c_int {
    match r {
        Ok(()) => WS_OK,
        Err(e) => e.code(),
    }
}

/// A C string argument as UTF-8; `None` if NULL or not UTF-8.
///
/// SAFETY: `p` is NULL or a NUL-terminated string live for `'a`.
unsafe fn str_arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    CStr::from_ptr(p).to_str().ok()
}

/// `len` bytes at `p`; `None` when `p` is NULL but `len` is not 0, or when
/// `len` is over `isize::MAX`: no object is that large (C's PTRDIFF_MAX),
/// so such a length (SIZE_MAX, a negative length cast) is refused before a
/// byte is read. A slice that long would be undefined behaviour in Rust.
///
/// SAFETY: `p` is NULL or points to `len` readable bytes.
unsafe fn bytes_arg<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    match (p.is_null(), len) {
        (_, 0) => Some(&[]),
        (true, _) => None,
        (false, n) if n > isize::MAX as usize => None,
        (false, _) => Some(std::slice::from_raw_parts(p, len)),
    }
}

/// SAFETY: `ws` is NULL or a live handle from ws_new.
unsafe fn client<'a>(ws: *const ws_socket) -> Option<&'a Client> {
    ws.as_ref().map(|w| &w.client)
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
    let url = CStr::from_ptr(url).to_str().map_err(|_| Error::invalid_argument("url is not valid UTF-8"))?;
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
        let p = *protocols.add(i);
        if p.is_null() {
            return Err(Error::invalid_argument(format!("protocols[{i}] is NULL")));
        }
        let name = CStr::from_ptr(p)
            .to_str()
            .map_err(|_| Error::new(crate::error::ErrorKind::Syntax, format!("protocols[{i}] is not an HTTP token")))?;
        names.push(name);
    }
    let client = match options {
        Some(o) => Client::new(url, &names, &o.options, o.event_loop.clone())?,
        None => Client::new(url, &names, &Options::default(), None)?,
    };
    let callbacks = callbacks.as_ref().copied().unwrap_or(ws_callbacks {
        user_data: std::ptr::null_mut(),
        on_open: None,
        on_message: None,
        on_error: None,
        on_close: None,
    });
    let ws = Box::into_raw(Box::new(ws_socket { client }));
    let handler = Box::new(CHandler { callbacks, ws });
    // No callback may start before the caller has the handle: one that
    // frees it (on_close after a refused connect) would hand back a freed
    // pointer. The loop's thread waits for this hold before its first callback.
    let hold = (*ws).client.hold_callbacks();
    if let Err(e) = (*ws).client.start(handler) {
        drop(hold);
        drop(Box::from_raw(ws));
        return Err(e);
    }
    testing::new_return_delay();
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

/// Runs a constructor inside the guard: a handle, or NULL with this
/// thread's last error set (also when it panicked).
fn new_or_null(body: impl FnOnce() -> Result<*mut ws_socket, Error>) -> *mut ws_socket {
    guard(std::ptr::null_mut(), || {
        let r = catch_unwind(AssertUnwindSafe(body))
            .unwrap_or_else(|_| Err(Error::new(crate::error::ErrorKind::Internal, "internal error (panic) in ws_new")));
        match r {
            Ok(ws) => ws,
            Err(e) => {
                set_last_error(&e);
                std::ptr::null_mut()
            }
        }
    })
}

/// Creates a connection and starts connecting at once on a background
/// thread; returns without waiting for the network.
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
    new_or_null(|| new_socket(url, protocols, num_protocols, callbacks, None))
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
    new_or_null(|| new_socket(url, protocols, num_protocols, callbacks, options.as_ref()))
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
    guard(WS_ERR_INTERNAL, || {
        let (Some(client), Some(data)) = (client(ws), bytes_arg(utf8.cast(), len)) else {
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
    guard(WS_ERR_INTERNAL, || {
        let (Some(client), Some(data)) = (client(ws), bytes_arg(data, len)) else {
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
    guard(WS_ERR_INTERNAL, || {
        let Some(client) = client(ws) else {
            return WS_ERR_INVALID_ARGUMENT;
        };
        // The bytes, unchecked: the code is checked before the reason is.
        let reason = (!reason.is_null()).then(|| CStr::from_ptr(reason).to_bytes());
        result_code(client.close(code, reason))
    })
}

/// readyState: `WS_CONNECTING`, `WS_OPEN`, `WS_CLOSING` or `WS_CLOSED`.
/// Updated before the callback that announces a change. 0 for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_ready_state(ws: *const ws_socket) -> c_int {
    guard(0, || client(ws).map_or(0, |c| c_int::from(c.ready_state() as u8)))
}

/// bufferedAmount: bytes accepted by `ws_send_*` and not yet written to the
/// socket (and, as in browsers, every byte sent while closing or closed).
/// 0 for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_buffered_amount(ws: *const ws_socket) -> u64 {
    guard(0, || client(ws).map_or(0, |c| c.buffered_amount()))
}

/// The serialized URL, e.g. "ws://host:9001/path" (http:// shown as ws://).
/// Owned by the handle: valid until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_url(ws: *const ws_socket) -> *const c_char {
    guard(c"".as_ptr(), || client(ws).map_or(c"".as_ptr(), |c| c.url().as_ptr()))
}

/// The subprotocol the server chose: "" until open, or if none. Owned by
/// the handle: valid until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_protocol(ws: *const ws_socket) -> *const c_char {
    guard(c"".as_ptr(), || client(ws).map_or(c"".as_ptr(), |c| c.protocol().as_ptr()))
}

/// The extensions the server chose: "" if none. Owned by the handle: valid
/// until `ws_free`. "" for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_extensions(ws: *const ws_socket) -> *const c_char {
    guard(c"".as_ptr(), || client(ws).map_or(c"".as_ptr(), |c| c.extensions().as_ptr()))
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
    guard((), || {
        if !ws.is_null() {
            // The handle is released only once no callback can still use
            // it: the Box is not taken back before that.
            let free = (*ws).client.freer();
            free(Box::new(OwnedSocket(ws)));
        }
    })
}

/// The result code of the last `ws_new*` that returned NULL on this thread;
/// `WS_OK` if none has. A `ws_options_*` setter that refuses a value sets it
/// too. While the calling thread exits (in a pthread key destructor, after
/// its thread-local storage is gone) no error can be kept: then
/// `WS_ERR_INTERNAL`.
#[no_mangle]
pub extern "C" fn ws_last_error_code() -> c_int {
    guard(WS_ERR_INTERNAL, || {
        LAST_ERROR.try_with(|l| l.try_borrow().map_or(WS_ERR_INTERNAL, |l| l.0)).unwrap_or(WS_ERR_INTERNAL)
    })
}

/// The message of the last `ws_new*` that returned NULL on this thread (or
/// `ws_options_*` setter that refused a value, e.g. "cannot read CA file
/// /x.pem: No such file or directory"); "" if none has. Never NULL. Owned
/// by libws: valid until the next such failure on this thread, or the
/// thread's exit. While the calling thread exits (in a pthread key
/// destructor, after its thread-local storage is gone) no error can be kept:
/// then the static text "the last error is not available while this thread
/// exits".
#[no_mangle]
pub extern "C" fn ws_last_error() -> *const c_char {
    guard(LAST_ERROR_GONE.as_ptr(), || {
        LAST_ERROR
            .try_with(|l| l.try_borrow().map_or(LAST_ERROR_GONE.as_ptr(), |l| l.1.as_ptr()))
            .unwrap_or(LAST_ERROR_GONE.as_ptr())
    })
}

/// Static text for a `WS_*` result code; never NULL, never to be freed.
#[no_mangle]
pub extern "C" fn ws_strerror(code: c_int) -> *const c_char {
    guard(c"unknown result code".as_ptr(), || error::strerror(code).as_ptr().cast())
}

/// The library version, "MAJOR.MINOR.PATCH". Static.
#[no_mangle]
pub extern "C" fn ws_version() -> *const c_char {
    guard(c"".as_ptr(), || concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

/// New settings, all at their defaults (connect timeout 30000 ms, close
/// timeout 5000 ms, max message size 64 MiB, no max buffered amount, no
/// extra headers, compression offered with a 32-byte threshold). The caller
/// owns the result and releases it with `ws_options_free`. NULL only if
/// memory for it ran out.
#[no_mangle]
pub extern "C" fn ws_options_new() -> *mut ws_options {
    guard(std::ptr::null_mut(), || try_box(ws_options { options: Options::default(), event_loop: None }))
}

/// `Box::into_raw(Box::new(value))`, or NULL when the allocation fails
/// (where `Box::new` would abort the process).
fn try_box<T>(value: T) -> *mut T {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Box::into_raw(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size; the pointer is checked and,
    // when not NULL, fits a T, so that `Box::from_raw` may free it later
    // (same allocator, same layout).
    unsafe {
        let p = std::alloc::alloc(layout).cast::<T>();
        if !p.is_null() {
            p.write(value);
        }
        p
    }
}

/// Releases settings from `ws_options_new`; NULL is ignored. Connections
/// created with them keep their own copy.
///
/// # Safety
/// `options` is NULL or a live `ws_options`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn ws_options_free(options: *mut ws_options) {
    guard((), || {
        if !options.is_null() {
            drop(Box::from_raw(options));
        }
    })
}

/// SAFETY: `o` is NULL or a live ws_options used by this thread only.
unsafe fn with_options(o: *mut ws_options, f: impl FnOnce(&mut Options) -> Result<(), Error>) -> c_int {
    guard(WS_ERR_INTERNAL, || match o.as_mut() {
        Some(o) => match f(&mut o.options) {
            Ok(()) => WS_OK,
            Err(e) => {
                // The code says "invalid argument"; the message says which
                // and why (a missing file, a PEM that does not parse, ...).
                set_last_error(&e);
                e.code()
            }
        },
        None => WS_ERR_INVALID_ARGUMENT,
    })
}

/// Adds a header to the handshake request (both strings are copied).
/// `WS_ERR_INVALID_ARGUMENT` when either is NULL or not UTF-8, the name is
/// not an HTTP token, the value holds CR, LF or NUL, or the name is one the
/// handshake writes itself (Host, Upgrade, Connection, Sec-WebSocket-*).
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `name` and `value` are NULL or
/// NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn ws_options_add_header(o: *mut ws_options, name: *const c_char, value: *const c_char) -> c_int {
    with_options(o, |o| match (str_arg(name), str_arg(value)) {
        (Some(name), Some(value)) => o.add_header(name, value),
        _ => Err(Error::invalid_argument("header name or value is NULL or not UTF-8")),
    })
}

/// Time allowed for DNS, TCP, TLS and the HTTP upgrade together; default
/// 30000. 0 gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_connect_timeout_ms(o: *mut ws_options, ms: u32) -> c_int {
    with_options(o, |o| o.set_connect_timeout_ms(ms))
}

/// Largest incoming message, in bytes; default 64 MiB. A larger message
/// fails the connection (close code 1009); a compressed message counts by
/// its decompressed size, checked as it inflates. 0 gives
/// `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_max_message_size(o: *mut ws_options, bytes: u64) -> c_int {
    with_options(o, |o| o.set_max_message_size(bytes))
}

/// Time allowed for the closing handshake, from our close frame to the
/// server's TCP close; default 5000. After it the socket is closed and
/// `on_close` reports 1006. 0 gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_close_timeout_ms(o: *mut ws_options, ms: u32) -> c_int {
    with_options(o, |o| o.set_close_timeout_ms(ms))
}

/// Upper bound for bufferedAmount while `WS_OPEN`: a send that would exceed
/// it returns `WS_ERR_BUFFER_FULL` and queues nothing. 0 (the default) means
/// no limit, as in browsers.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_max_buffered_amount(o: *mut ws_options, bytes: u64) -> c_int {
    with_options(o, |o| {
        o.set_max_buffered_amount(bytes);
        Ok(())
    })
}

/// For `wss://`: also trust the certificates in the PEM file at `pem_path`,
/// besides the system store. Each call adds to those trusted before. The file
/// is read now: one that cannot be read or holds no parsable PEM certificate
/// gives `WS_ERR_INVALID_ARGUMENT` (as does a NULL or non-UTF-8 path).
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `pem_path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_ca_file(o: *mut ws_options, pem_path: *const c_char) -> c_int {
    with_options(o, |o| match str_arg(pem_path) {
        Some(path) => o.add_ca_file(path),
        None => Err(Error::invalid_argument("CA file path is NULL or not UTF-8")),
    })
}

/// As `ws_options_set_ca_file`, from `len` bytes of PEM text in memory
/// (copied; need not be NUL-terminated). NULL, a `len` of 0, or a `len`
/// over `PTRDIFF_MAX` (refused unread) gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `pem` is NULL or points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_ca_pem(o: *mut ws_options, pem: *const c_char, len: usize) -> c_int {
    with_options(o, |o| match bytes_arg(pem.cast(), len) {
        Some(pem) if !pem.is_empty() => o.add_ca_pem(pem),
        _ => Err(Error::invalid_argument("CA PEM is NULL or empty")),
    })
}

/// For `wss://` with mutual TLS: the client certificate (PEM, optionally
/// followed by its chain) and its private key (PKCS#8 PEM, "BEGIN PRIVATE
/// KEY"). Both files are read now; one that cannot be read or parsed gives
/// `WS_ERR_INVALID_ARGUMENT`. A later call replaces an earlier one.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; both paths are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_client_cert(
    o: *mut ws_options,
    cert_pem_path: *const c_char,
    key_pem_path: *const c_char,
) -> c_int {
    with_options(o, |o| match (str_arg(cert_pem_path), str_arg(key_pem_path)) {
        (Some(cert), Some(key)) => o.set_client_cert(cert, key),
        _ => Err(Error::invalid_argument("certificate or key path is NULL or not UTF-8")),
    })
}

/// DANGER: with `yes`, `wss://` accepts any server certificate: expired,
/// self-signed, from an unknown issuer. Anyone on the path can then read and
/// change the traffic. Off by default; for tests only.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_danger_accept_invalid_certs(o: *mut ws_options, yes: bool) -> c_int {
    with_options(o, |o| {
        o.tls.set_accept_invalid_certs(yes);
        Ok(())
    })
}

/// DANGER: with `yes`, `wss://` accepts a valid certificate issued for
/// another host name. Off by default; for tests only.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_danger_accept_invalid_hostnames(o: *mut ws_options, yes: bool) -> c_int {
    with_options(o, |o| {
        o.tls.set_accept_invalid_hostnames(yes);
        Ok(())
    })
}

/// A new event loop, not yet run by anyone: call `ws_loop_start` or run it
/// with `ws_loop_run`. The caller owns it and releases it with
/// `ws_loop_free`. NULL when the system refuses an epoll instance or an
/// eventfd, or memory for the handle runs out; then `ws_last_error_code()`
/// (`WS_ERR_RESOURCE`) and `ws_last_error()` say why.
#[no_mangle]
pub extern "C" fn ws_loop_new() -> *mut ws_loop {
    guard(std::ptr::null_mut(), || match Loop::new(false) {
        Ok(inner) => {
            let lp = try_box(ws_loop { inner });
            if lp.is_null() {
                set_last_error(&Error::new(crate::error::ErrorKind::Resource, "out of memory: cannot allocate a loop"));
            }
            lp
        }
        Err(e) => {
            set_last_error(&Error::os("cannot create an event loop", &e));
            std::ptr::null_mut()
        }
    })
}

/// Runs the loop on a library thread from now on, until it is freed and its
/// last connection has ended. `WS_ERR_INVALID_STATE` if it was started
/// before; `WS_ERR_INVALID_ARGUMENT` for NULL. After it, `ws_loop_run` on
/// this loop returns `WS_ERR_INVALID_STATE`. If an application thread is
/// inside `ws_loop_run` at that moment, the library thread takes over when
/// that call returns.
///
/// # Safety
/// `loop_` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_start(loop_: *mut ws_loop) -> c_int {
    guard(WS_ERR_INTERNAL, || {
        let Some(lp) = loop_.as_ref() else { return WS_ERR_INVALID_ARGUMENT };
        match lp.inner.start() {
            Ok(true) => WS_OK,
            Ok(false) => WS_ERR_INVALID_STATE,
            Err(e) => {
                let e = Error::os("cannot start the loop's thread", &e);
                set_last_error(&e);
                e.code()
            }
        }
    })
}

/// Runs one turn of the loop on the calling thread: commands from other
/// threads, ready I/O, due timers, and the callbacks they cause, all on this
/// thread. Waits up to `timeout_ms` for something to do first: 0 does not
/// wait, -1 waits until there is work (a socket event, a timer, or a call
/// from another thread). Returns the number of connections still on the
/// loop (0: none; a `-1` wait would then last until a new one is made), or:
/// - `WS_ERR_INVALID_STATE` when another thread is running the loop now,
///   when called from inside one of its callbacks (it is not re-entrant),
///   or when the loop was started (`ws_loop_start`) or freed;
/// - `WS_ERR_INVALID_ARGUMENT` for NULL or a timeout below -1.
///
/// Any thread may run the loop, one at a time. Sends and closes made inside
/// its callbacks take effect when the callback returns, without a wake-up;
/// made anywhere else (another thread, or this one between calls) they wake
/// the loop: `ws_loop_fd` becomes readable and `ws_loop_timeout_ms` returns
/// 0 until `ws_loop_run` has taken them.
///
/// # Safety
/// `loop_` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_run(loop_: *mut ws_loop, timeout_ms: c_int) -> c_int {
    guard(WS_ERR_INTERNAL, || {
        let Some(lp) = loop_.as_ref() else { return WS_ERR_INVALID_ARGUMENT };
        let timeout = match timeout_ms {
            -1 => None,
            ms if ms >= 0 => Some(std::time::Duration::from_millis(ms as u64)),
            _ => return WS_ERR_INVALID_ARGUMENT,
        };
        // The turn holds its own reference: a callback in it may
        // ws_loop_free this very `ws_loop` (and another thread may, which
        // lets the turn finish first), so nothing may borrow from it.
        let inner = lp.inner.clone();
        match inner.run_once(timeout) {
            Ok(live) => live.min(c_int::MAX as usize) as c_int,
            Err(RunError::Busy | RunError::LibraryDriven) => WS_ERR_INVALID_STATE,
            Err(RunError::Os(e)) => {
                set_last_error(&Error::os("epoll_wait failed", &e));
                WS_ERR_INTERNAL
            }
        }
    })
}

/// A file descriptor that is readable whenever `ws_loop_run` has I/O to do
/// (the loop's epoll instance). Put it in the application's own event loop
/// with POLLIN / EPOLLIN and call `ws_loop_run(loop, 0)` when it is
/// readable, and also when `ws_loop_timeout_ms` has passed. Owned by the
/// loop: never close it, never read it. -1 for NULL.
///
/// # Safety
/// `loop_` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_fd(loop_: *const ws_loop) -> c_int {
    guard(-1, || loop_.as_ref().map_or(-1, |lp| lp.inner.fd()))
}

/// How long the application may wait on `ws_loop_fd` before it calls
/// `ws_loop_run` again: milliseconds until the loop's next timer (connect,
/// close or keepalive timeouts), 0 when work is waiting that the fd does
/// not show (a send made on the loop's thread, input TLS has buffered), or
/// -1 when no timer is set. Ask again after every `ws_loop_run`. -1 for
/// NULL, and while a library thread runs the loop.
///
/// # Safety
/// `loop_` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_timeout_ms(loop_: *const ws_loop) -> c_int {
    guard(-1, || match loop_.as_ref().and_then(|lp| lp.inner.timeout()) {
        // Rounded up, so that a wait does not end just before the timer.
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
        None => -1,
    })
}

/// Releases the caller's loop; NULL is ignored. Never waits on the network.
/// Connections still on the loop keep it alive and keep working: from now
/// on a library thread runs it (the one `ws_loop_start` made, or a new one
/// for a loop the application ran), and it ends when the last connection on
/// the loop has ended. Their callbacks then run on that thread. Options
/// set with `ws_options_set_loop` also keep the loop alive; handles created
/// with them later are run by that library thread too.
///
/// When no thread can be started at that moment (a thread or memory
/// limit), no connection is left without its loop: each one still on it
/// ends at once, without a closing handshake, on the calling thread before
/// `ws_loop_free` returns (called from inside one of the loop's callbacks:
/// on that thread, when the callback's turn ends). `on_error` says that no
/// thread could be started and why, then `on_close` 1006.
///
/// Called while an application thread is inside `ws_loop_run`, that call
/// finishes its turn first. The `ws_loop` must not be used after this.
///
/// # Safety
/// `loop_` is NULL or a live `ws_loop`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_free(loop_: *mut ws_loop) {
    guard((), || {
        if !loop_.is_null() {
            let lp = Box::from_raw(loop_);
            lp.inner.release();
        }
    })
}

/// Connections created with these options run on `loop_` (NULL: each on a
/// private loop with a thread of its own, the default). The options hold a
/// reference to the loop until they are freed or set again.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `loop_` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_loop(o: *mut ws_options, loop_: *mut ws_loop) -> c_int {
    guard(WS_ERR_INTERNAL, || {
        let Some(o) = o.as_mut() else { return WS_ERR_INVALID_ARGUMENT };
        o.event_loop = loop_.as_ref().map(|lp| lp.inner.clone());
        WS_OK
    })
}

/// permessage-deflate (RFC 7692), on by default: the handshake offers
/// "permessage-deflate; client_max_window_bits", as browsers do, and when
/// the server accepts, messages are compressed and decompressed on the
/// connection's background thread. Off: no offer, and a server that
/// answers with an extension anyway fails the connection. `ws_extensions`
/// shows what the server answered. Always `WS_OK`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_compression(o: *mut ws_options, on: bool) -> c_int {
    with_options(o, |o| {
        o.compression.enabled = on;
        Ok(())
    })
}

/// Hooks for libws's own tests; not part of the C API, not in `ws.h`.
#[doc(hidden)]
pub mod testing {
    use super::ws_options;
    pub use crate::conn::shared::testing::on_free_posting;
    pub use crate::runtime::event_loop::testing::on_loop_thread_exiting;
    pub use crate::runtime::resolver::testing::{lookup_threads, set_resolver, MAX_LOOKUP_THREADS};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    static NEW_RETURN_DELAY_US: AtomicU64 = AtomicU64::new(0);

    /// The next `ws_new*` waits this long after starting its connection
    /// and before returning, so that a test can see whether a callback
    /// runs before the handle is returned.
    pub fn delay_next_new_return(d: Duration) {
        NEW_RETURN_DELAY_US.store(d.as_micros() as u64, Ordering::SeqCst);
    }

    pub(super) fn new_return_delay() {
        let us = NEW_RETURN_DELAY_US.swap(0, Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    /// Sets SO_SNDBUF of the connections made with `o`, to force partial
    /// writes.
    ///
    /// # Safety
    /// `o` is a live `ws_options`.
    pub unsafe fn set_send_buffer_size(o: *mut ws_options, bytes: u32) {
        if let Some(o) = o.as_mut() {
            o.options.send_buffer_size = Some(bytes);
        }
    }
}

/// With `yes`, the offer says client_no_context_takeover: libws compresses
/// each message on its own, holding no compression context between
/// messages (less memory, larger messages). Also done when the server asks
/// for it. Off by default. Always `WS_OK`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_client_no_context_takeover(o: *mut ws_options, yes: bool) -> c_int {
    with_options(o, |o| {
        o.compression.client_no_context_takeover = yes;
        Ok(())
    })
}

/// With `yes`, the offer says server_no_context_takeover: the server is
/// asked to compress each message on its own, so that libws holds no
/// decompression context between messages; a server that accepts
/// compression without agreeing to this fails the connection. Off by
/// default. Always `WS_OK`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_server_no_context_takeover(o: *mut ws_options, yes: bool) -> c_int {
    with_options(o, |o| {
        o.compression.server_no_context_takeover = yes;
        Ok(())
    })
}

/// The largest LZ77 window libws compresses with, as a power of two: 8..15
/// (256 bytes to 32 KiB), offered as client_max_window_bits=N; smaller
/// windows use less memory and compress less. zlib cannot compress with an
/// 8-bit window, so 8 is offered as 9. 0 (the default) offers
/// client_max_window_bits without a value: the server may choose (15 if it
/// does not). Another value gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_client_max_window_bits(o: *mut ws_options, bits: c_int) -> c_int {
    with_options(o, |o| o.set_client_max_window_bits(bits))
}

/// Asks the server to compress with an LZ77 window of at most 2^`bits`
/// bytes, 8..15, offered as server_max_window_bits=N (8 is offered as 9, as
/// zlib cannot compress with 8); libws then needs less memory to
/// decompress. A server that accepts compression without agreeing fails the
/// connection. 0 (the default) does not ask. Another value gives
/// `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_server_max_window_bits(o: *mut ws_options, bits: c_int) -> c_int {
    with_options(o, |o| o.set_server_max_window_bits(bits))
}

/// When compression is agreed, messages shorter than `bytes` go out
/// uncompressed, as deflate saves little or nothing on them; default 32.
/// 0 compresses every message. Whatever the threshold, a message that does
/// not shrink goes out as it is. Always `WS_OK`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_compression_threshold(o: *mut ws_options, bytes: u64) -> c_int {
    with_options(o, |o| {
        o.compression.threshold = bytes;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_states_are_the_c_constants() {
        use crate::conn::shared::ReadyState;
        let pairs = [
            (ReadyState::Connecting, WS_CONNECTING),
            (ReadyState::Open, WS_OPEN),
            (ReadyState::Closing, WS_CLOSING),
            (ReadyState::Closed, WS_CLOSED),
        ];
        for (state, constant) in pairs {
            assert_eq!(c_int::from(state as u8), constant, "{state:?}");
        }
    }

    /// No buffer is longer than isize::MAX bytes, so such a length is a
    /// caller's mistake that must be refused before a byte is read (a
    /// slice that long is undefined behaviour in Rust itself; debug builds
    /// abort on it).
    #[test]
    fn impossible_lengths_are_refused_before_reading() {
        let small = [1u8, 2, 3];
        for len in [usize::MAX, isize::MAX as usize + 1] {
            assert!(unsafe { bytes_arg(small.as_ptr(), len) }.is_none(), "{len}");
        }
        assert_eq!(unsafe { bytes_arg(small.as_ptr(), 3) }, Some(&small[..]));
        let o = ws_options_new();
        assert_eq!(unsafe { ws_options_set_ca_pem(o, small.as_ptr().cast(), usize::MAX) }, WS_ERR_INVALID_ARGUMENT);
        // A protocol count no array can have: refused, not a panic.
        let protocols = [c"chat".as_ptr()];
        for n in [usize::MAX, usize::MAX / 2, isize::MAX as usize / 8 + 1] {
            let ws = unsafe { ws_new(c"ws://127.0.0.1:1/".as_ptr(), protocols.as_ptr(), n, std::ptr::null()) };
            assert!(ws.is_null());
            assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT, "{n}");
        }
        unsafe { ws_options_free(o) };
    }

    /// ws_loop_free from inside a callback that the application's
    /// ws_loop_run is running: that turn must not use the freed `ws_loop`
    /// (it used the `Arc` inside it). The callback overwrites the freed
    /// memory, as the next small allocations of the program would.
    #[test]
    #[cfg_attr(miri, ignore = "TCP sockets: not in miri")]
    fn loop_freed_inside_a_callback_of_its_own_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LOOP: AtomicUsize = AtomicUsize::new(0);
        static CLOSED: AtomicUsize = AtomicUsize::new(0);
        // Kept to the end of the process, reachable (LeakSanitizer); boxed
        // one by one to fill small freed blocks.
        #[allow(clippy::vec_box)]
        static JUNK: std::sync::Mutex<Vec<Vec<Box<usize>>>> = std::sync::Mutex::new(Vec::new());
        unsafe extern "C" fn on_error(_: *mut c_void, _: *mut ws_socket, _: *const c_char) {
            ws_loop_free(LOOP.swap(0, Ordering::SeqCst) as *mut ws_loop);
            // Reuse the freed allocation (same size class) with garbage.
            let junk: Vec<Box<usize>> = (0..64).map(|_| Box::new(0x0bad_0bad_0bad_0bad)).collect();
            if let Ok(mut kept) = JUNK.lock() {
                kept.push(junk);
            }
        }
        unsafe extern "C" fn on_close(_: *mut c_void, _: *mut ws_socket, _: u16, _: *const c_char, _: bool) {
            CLOSED.fetch_add(1, Ordering::SeqCst);
        }
        // A port nothing listens on: the connection fails in a loop turn.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = CString::new(format!("ws://127.0.0.1:{port}/")).unwrap();
        let callbacks = ws_callbacks {
            user_data: std::ptr::null_mut(),
            on_open: None,
            on_message: None,
            on_error: Some(on_error),
            on_close: Some(on_close),
        };
        let lp = ws_loop_new();
        LOOP.store(lp as usize, Ordering::SeqCst);
        unsafe {
            let o = ws_options_new();
            assert_eq!(ws_options_set_loop(o, lp), WS_OK);
            let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o);
            ws_options_free(o);
            assert!(!ws.is_null());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while LOOP.load(Ordering::SeqCst) != 0 {
                assert!(std::time::Instant::now() < deadline, "the connection never failed");
                assert!(ws_loop_run(lp, 10) >= 0);
            }
            // The loop was freed: a library thread finishes the connection.
            while CLOSED.load(Ordering::SeqCst) == 0 {
                assert!(std::time::Instant::now() < deadline, "no on_close");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            ws_free(ws);
        }
    }

    #[test]
    fn strerror_covers_every_code() {
        for code in [WS_OK, -1, -2, -3, WS_ERR_INVALID_ARGUMENT, -5, WS_ERR_INTERNAL, WS_ERR_RESOURCE, 42] {
            let s = unsafe { CStr::from_ptr(ws_strerror(code)) };
            assert!(!s.to_bytes().is_empty());
        }
    }
}
