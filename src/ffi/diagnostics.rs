//! What a program reads about how its connection went: why it ended
//! (`ws_failure_cause`, `ws_failure_errno`) and what the server answered to
//! the upgrade (`ws_response_status`, `ws_response_header`).

use super::boundary;
use super::socket::{client, ws_socket};
use std::ffi::{c_char, c_int, c_void, CStr};

/// Not ended, or ended by a clean closing handshake.
pub const WS_CAUSE_NONE: c_int = 0;
/// The host name did not resolve.
pub const WS_CAUSE_DNS: c_int = 1;
/// The TCP (or Unix socket) connect was refused or unreachable.
pub const WS_CAUSE_CONNECT: c_int = 2;
/// The connect timeout passed (DNS, TCP, proxy, TLS and upgrade together).
pub const WS_CAUSE_TIMEOUT: c_int = 3;
/// The TLS handshake failed, the certificate among it; or the TLS settings
/// could not be used.
pub const WS_CAUSE_TLS: c_int = 4;
/// The answer to the upgrade request was not an acceptable 101.
pub const WS_CAUSE_HTTP: c_int = 5;
/// The proxy refused, failed or was unreachable, or the environment named
/// one that cannot be used.
pub const WS_CAUSE_PROXY: c_int = 6;
/// The server broke RFC 6455 or RFC 7692.
pub const WS_CAUSE_PROTOCOL: c_int = 7;
/// An incoming message was over the max message size.
pub const WS_CAUSE_TOO_BIG: c_int = 8;
/// TCP was reset or closed without a close frame.
pub const WS_CAUSE_CONNECTION_LOST: c_int = 9;
/// The closing handshake did not finish within the close timeout.
pub const WS_CAUSE_CLOSE_TIMEOUT: c_int = 10;
/// Keepalive: no pong (nor any other frame) within the pong timeout.
pub const WS_CAUSE_PING_TIMEOUT: c_int = 11;
/// `ws_close` while CONNECTING, or the loop that ran the connection was
/// freed while it was live.
pub const WS_CAUSE_ABORTED: c_int = 12;
/// Out of memory, file descriptors or threads.
pub const WS_CAUSE_RESOURCE: c_int = 13;

/// Why the connection ended: one of the `WS_CAUSE_*` values. Set before the
/// `on_error` / `on_close` that announce the end and readable from them
/// until `ws_free`; `WS_CAUSE_NONE` before the end and after a clean
/// closing handshake (whatever its code). Exactly one cause per end; a
/// connection lost after opening keeps the browser's events (`on_close`
/// 1006 without `on_error`) and says here why (`WS_CAUSE_CONNECTION_LOST`,
/// `WS_CAUSE_CLOSE_TIMEOUT`). The README has the table of every failure
/// and its cause. Any thread. `WS_CAUSE_NONE` for NULL.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_failure_cause(ws: *const ws_socket) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(WS_CAUSE_NONE, |c| c_int::from(c.cause().0 as u8)))
}

/// The OS error (`errno` value) behind the cause, e.g. `ECONNREFUSED` for
/// a refused connect or `ECONNRESET` for a reset; 0 when the cause has
/// none (a timeout, an HTTP answer, a protocol violation) or for NULL.
/// Valid as `ws_failure_cause`.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_failure_errno(ws: *const ws_socket) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(0, |c| c.cause().1))
}

/// The status of the server's answer to the upgrade request: 101 once
/// open; the refusing status (401, 302, 503, ...) when the answer was not
/// accepted; 0 before an answer came, when none came (a refused connect, a
/// timeout) or when it was not HTTP, and for NULL. Readable from `on_open`,
/// and from `on_error`/`on_close` when the answer was refused, until
/// `ws_free`. After a retry with the URL's credentials, the second
/// answer's. Any thread.
///
/// # Safety
/// `ws` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ws_response_status(ws: *const ws_socket) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary(|| unsafe { client(ws) }.map_or(0, |c| c_int::from(c.response_status())))
}

/// The first value of header `name` (ASCII case-insensitive) in the
/// server's answer to the upgrade request: a `Set-Cookie`, a session id a
/// server hands out, a 302's `Location`, a 401's `WWW-Authenticate`. NULL
/// when the answer has no such header, when no answer came (see
/// `ws_response_status`), or for NULL arguments. The string is owned by
/// the handle and valid until `ws_free` (a later answer, after a retry with
/// credentials, does not free an earlier one's strings). Only the answer's
/// header block is kept, once per handle. Any thread.
///
/// # Safety
/// `ws` is NULL or a live handle; `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ws_response_header(ws: *const ws_socket, name: *const c_char) -> *const c_char {
    boundary(|| {
        if name.is_null() {
            return std::ptr::null();
        }
        // SAFETY: `name` is a NUL-terminated string, as `# Safety` says.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        unsafe { client(ws) }.and_then(|c| c.response_header(name)).unwrap_or(std::ptr::null())
    })
}

/// Log level: a connection failed.
pub const WS_LOG_ERROR: c_int = 0;
/// Log level: a connection ended abnormally (lost, close timeout).
pub const WS_LOG_WARNING: c_int = 1;
/// Log level: each connection's phases: resolve, TCP connect, proxy, TLS,
/// the answer's status, open, the end.
pub const WS_LOG_INFO: c_int = 2;
/// Log level: the upgrade request line, closing frames, keepalive pings.
pub const WS_LOG_DEBUG: c_int = 3;

/// Takes the library's log lines (see `ws_set_log`): `level` one of the
/// `WS_LOG_*` values, `message` NUL-terminated UTF-8, valid only during
/// the call.
pub type ws_log_fn = Option<unsafe extern "C" fn(user_data: *mut c_void, level: c_int, message: *const c_char)>;

/// Sets the process's one log sink: `fn` gets every line of `max_level`
/// (`WS_LOG_ERROR` 0 .. `WS_LOG_DEBUG` 3) or below, with `user_data`.
/// Lines name the connection by a short id and its URL without
/// credentials or query ("ws#12 ws://host:9001/chat: TCP connected to
/// 127.0.0.1:9001"); no line ever holds a password, a proxy's credentials
/// or a header value of the request. `fn` NULL (or a negative level) turns
/// logging off, the default; off, a log point costs one atomic load and
/// formats nothing.
///
/// `fn` runs on whatever thread the event happened on: a loop's thread for
/// a connection's phases, several at once when several loops run. It must
/// not block for long (it holds up the connections of that loop). When
/// `ws_set_log` returns, no call of the previous function is running or
/// will start, so its `user_data` may be freed. Called from inside the log
/// function, `ws_set_log` does nothing.
///
/// # Safety
/// `fn` is NULL or a function that may be called on any thread with
/// `user_data` until the next `ws_set_log` returns.
#[no_mangle]
pub unsafe extern "C" fn ws_set_log(r#fn: ws_log_fn, user_data: *mut c_void, max_level: c_int) {
    boundary(|| {
        crate::log::set(r#fn, user_data, max_level);
    })
}
