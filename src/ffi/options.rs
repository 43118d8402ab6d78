//! Settings: `ws_options` and its setters, one per setting, each returning
//! `WS_OK` or `WS_ERR_INVALID_ARGUMENT` (with `ws_last_error` saying why).

use super::errors::set_last_error;
use super::{boundary, bytes_arg, str_arg, try_box, try_mut, try_ref, ws_loop, ws_on_drain, ws_on_pong};
use crate::conn::connection::ConnLoop;
use crate::conn::options::Options;
use crate::error::{Error, WS_ERR_INVALID_ARGUMENT, WS_OK};
use std::ffi::{c_char, c_int};

/// Settings for `ws_new_with_options`. Opaque.
///
/// Created by `ws_options_new`, released by `ws_options_free`. A connection
/// copies the options when it is created, so they may be changed or freed
/// right after. Not thread-safe: use one `ws_options` from one thread at a time.
pub struct ws_options {
    pub(super) options: Options,
    /// The loop connections made with these options run on (None: each
    /// on a private loop).
    pub(super) event_loop: Option<std::sync::Arc<ConnLoop>>,
    /// Called for each pong received (`ws_options_set_on_pong`).
    pub(super) on_pong: ws_on_pong,
    /// Called when bufferedAmount drains (`ws_options_set_on_drain`).
    pub(super) on_drain: ws_on_drain,
}

/// New settings, all at their defaults (connect timeout 30000 ms, close
/// timeout 5000 ms, max message size 64 MiB, no max buffered amount, no
/// extra headers, compression offered with a 32-byte threshold). The caller
/// owns the result and releases it with `ws_options_free`. NULL only if
/// memory for it ran out.
#[no_mangle]
pub extern "C" fn ws_options_new() -> *mut ws_options {
    boundary(|| try_box(ws_options { options: Options::default(), event_loop: None, on_pong: None, on_drain: None }))
}

/// Releases settings from `ws_options_new`; NULL is ignored. Connections
/// created with them keep their own copy.
///
/// # Safety
/// `options` is NULL or a live `ws_options`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn ws_options_free(options: *mut ws_options) {
    boundary(|| {
        if !options.is_null() {
            // SAFETY: from ws_options_new, not used again (# Safety).
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// SAFETY: `o` is NULL or a live ws_options used by this thread only.
/// Runs a setter on `o` inside the boundary; a refusal's message becomes
/// this thread's last error.
///
/// # Safety
/// `o` is NULL or a live `ws_options` used by this thread only.
unsafe fn with_options(o: *mut ws_options, f: impl FnOnce(&mut Options) -> Result<(), Error>) -> c_int {
    // SAFETY: the caller's promise.
    let o = unsafe { try_mut(o) };
    boundary(|| match o {
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| match (str_arg(name), str_arg(value)) {
            (Some(name), Some(value)) => o.add_header(name, value),
            _ => Err(Error::invalid_argument("header name or value is NULL or not UTF-8")),
        })
    }
}

/// Time allowed for DNS, TCP, TLS and the HTTP upgrade together; default
/// 30000. 0 gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_connect_timeout_ms(o: *mut ws_options, ms: u32) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe { with_options(o, |o| o.set_connect_timeout_ms(ms)) }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe { with_options(o, |o| o.set_max_message_size(bytes)) }
}

/// Time allowed for the closing handshake, from our close frame to the
/// server's TCP close; default 5000. After it the socket is closed and
/// `on_close` reports 1006. 0 gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_close_timeout_ms(o: *mut ws_options, ms: u32) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe { with_options(o, |o| o.set_close_timeout_ms(ms)) }
}

/// Upper bound for bufferedAmount while `WS_OPEN`: a send that would exceed
/// it returns `WS_ERR_BUFFER_FULL` and queues nothing. 0 (the default) means
/// no limit, as in browsers.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_max_buffered_amount(o: *mut ws_options, bytes: u64) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.set_max_buffered_amount(bytes);
            Ok(())
        })
    }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| match str_arg(pem_path) {
            Some(path) => o.add_ca_file(path),
            None => Err(Error::invalid_argument("CA file path is NULL or not UTF-8")),
        })
    }
}

/// As `ws_options_set_ca_file`, from `len` bytes of PEM text in memory
/// (copied; need not be NUL-terminated). NULL, a `len` of 0, or a `len`
/// over `PTRDIFF_MAX` (refused unread) gives `WS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `pem` is NULL or points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_ca_pem(o: *mut ws_options, pem: *const c_char, len: usize) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| match bytes_arg(pem.cast(), len) {
            Some(pem) if !pem.is_empty() => o.add_ca_pem(pem),
            _ => Err(Error::invalid_argument("CA PEM is NULL or empty")),
        })
    }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| match (str_arg(cert_pem_path), str_arg(key_pem_path)) {
            (Some(cert), Some(key)) => o.set_client_cert(cert, key),
            _ => Err(Error::invalid_argument("certificate or key path is NULL or not UTF-8")),
        })
    }
}

/// DANGER: with `yes`, `wss://` accepts any server certificate: expired,
/// self-signed, from an unknown issuer. Anyone on the path can then read and
/// change the traffic. Off by default; for tests only.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_danger_accept_invalid_certs(o: *mut ws_options, yes: bool) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.tls.set_accept_invalid_certs(yes);
            Ok(())
        })
    }
}

/// DANGER: with `yes`, `wss://` accepts a valid certificate issued for
/// another host name. Off by default; for tests only.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_danger_accept_invalid_hostnames(o: *mut ws_options, yes: bool) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.tls.set_accept_invalid_hostnames(yes);
            Ok(())
        })
    }
}

/// Connections created with these options run on `loop` (NULL: each on a
/// private loop with a thread of its own, the default). The options hold a
/// reference to the loop until they are freed or set again.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `loop` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_loop(o: *mut ws_options, r#loop: *mut ws_loop) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let Some(o) = (unsafe { try_mut(o) }) else { return WS_ERR_INVALID_ARGUMENT };
        // SAFETY: NULL or a live `ws_loop` (# Safety).
        o.event_loop = unsafe { try_ref(r#loop) }.map(|lp| lp.inner.clone());
        WS_OK
    })
}

/// permessage-deflate (RFC 7692), on by default: the handshake offers
/// "permessage-deflate; client_max_window_bits", as browsers do, and when
/// the server accepts, messages are compressed and decompressed on the
/// thread that runs the connection's loop. Off: no offer, and a server that
/// answers with an extension anyway fails the connection. `ws_extensions`
/// shows what the server answered. Always `WS_OK`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_compression(o: *mut ws_options, on: bool) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.compression.enabled = on;
            Ok(())
        })
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.compression.client_no_context_takeover = yes;
            Ok(())
        })
    }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.compression.server_no_context_takeover = yes;
            Ok(())
        })
    }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe { with_options(o, |o| o.set_client_max_window_bits(bits)) }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe { with_options(o, |o| o.set_server_max_window_bits(bits)) }
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
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.compression.threshold = bytes;
            Ok(())
        })
    }
}

/// Keepalive: when nothing has been received for `ms` milliseconds, a ping
/// goes to the server; when nothing at all (its pong or any other frame)
/// follows within the pong timeout, the connection has failed: `on_error`
/// ("no pong within N ms"), then `on_close` 1006, the socket closed at once
/// without a closing handshake. The pong timeout runs from the ping's write,
/// and starts again while the server's TCP acknowledges more of the data
/// written before the ping (a slow link is not a dead peer). With keepalive
/// on, the socket's `TCP_USER_TIMEOUT` is the pong timeout too: data the
/// server does not acknowledge, or a receive window it keeps closed, for
/// that long ends the connection as a lost one (`on_close` 1006, no
/// `on_error`). 0 (the default, as in browsers) turns keepalive off.
/// Keepalive stops when the closing handshake starts; the close timeout
/// bounds it from then. An idle connection's loop wakes once per interval
/// for it, and for the pong. Always `WS_OK` for a live `o`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_ping_interval_ms(o: *mut ws_options, ms: u32) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.set_ping_interval_ms(ms);
            Ok(())
        })
    }
}

/// How long after a keepalive ping something must arrive before the
/// connection counts as dead (see `ws_options_set_ping_interval_ms`).
/// Default, and what 0 sets: the ping interval. Always `WS_OK` for a
/// live `o`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_pong_timeout_ms(o: *mut ws_options, ms: u32) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            o.set_pong_timeout_ms(ms);
            Ok(())
        })
    }
}

/// Called on the loop's thread, with the handle's `user_data`, for each
/// pong received while `WS_OPEN`: answers to `ws_send_ping` (with their
/// payload), to keepalive pings (empty payload) and unasked ones (RFC 6455
/// 5.5.3 allows them). NULL (the default) for none. The `ws_callbacks`
/// struct stays as it is, so programs built against it keep working.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `on_pong` is NULL or a function
/// that may be called on any libws thread while the handle lives.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_on_pong(o: *mut ws_options, on_pong: ws_on_pong) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    let o = unsafe { try_mut(o) };
    boundary(|| match o {
        Some(o) => {
            o.on_pong = on_pong;
            WS_OK
        }
        None => WS_ERR_INVALID_ARGUMENT,
    })
}

/// Connects to the Unix domain socket at `path` instead of resolving the
/// URL's host, as libcurl's `CURLOPT_UNIX_SOCKET_PATH` does: the URL still
/// gives the `Host` header, the path and whether TLS is spoken (`wss://`
/// checks the certificate against the URL's host). A leading `@` names a
/// socket in Linux's abstract namespace (`@name`). The path is copied. NULL
/// or "" connects to the URL's host again (the default). A path over 107
/// bytes (the most `sun_path` holds) or a bare `@` gives
/// `WS_ERR_INVALID_ARGUMENT`, as does a path that is not UTF-8. A socket
/// that is missing fails the connection with "connect to unix socket PATH
/// failed: No such file or directory"; one whose listener's queue is full
/// fails at once ("Resource temporarily unavailable"): a Unix socket
/// connect does not wait, as a TCP one does.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `path` is NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_unix_socket(o: *mut ws_options, path: *const c_char) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            if path.is_null() {
                return o.set_unix_socket(None);
            }
            match str_arg(path) {
                Some(p) => o.set_unix_socket(Some(p)),
                None => Err(Error::invalid_argument("unix socket path is not UTF-8")),
            }
        })
    }
}

/// Tunnels the connection through a proxy: `http://[user:password@]host:port`
/// (HTTP CONNECT; the userinfo, percent-decoded, goes out as Basic
/// `Proxy-Authorization`), `socks5://[user:password@]host:port` (SOCKS5; the
/// URL's host is resolved here and its address sent) or `socks5h://...`
/// (the host name is sent for the proxy to resolve); SOCKS5 credentials use
/// RFC 1929's username/password method. wss:// speaks TLS through the
/// tunnel with the origin, and checks the origin's certificate: the proxy
/// sees only encrypted bytes. The URL is copied.
///
/// NULL (the default) lets the environment decide when `ws_new` runs, with
/// curl's rules: ws:// uses `ws_proxy`, `WS_PROXY`, then `http_proxy`
/// (lower case only); wss:// `wss_proxy`, `WSS_PROXY`, `https_proxy`, then
/// `HTTPS_PROXY`; both then `all_proxy` and `ALL_PROXY`; a host matched by
/// `no_proxy` (or `NO_PROXY`) goes direct. A variable that is not UTF-8 or
/// names no usable proxy fails the connection (naming the variable). "" means no
/// proxy at all, whatever the environment says.
///
/// A URL that does not parse, a scheme other than those three, a missing
/// port, a path, or SOCKS5 credentials over 255 bytes give
/// `WS_ERR_INVALID_ARGUMENT`, and `ws_last_error()` says which (never
/// quoting the URL). Failures name the proxy by host and port, never its
/// credentials: "proxy 127.0.0.1:3128 refused CONNECT: 403 Forbidden",
/// "SOCKS5 proxy: authentication failed (127.0.0.1:1080)", "proxy
/// unreachable: connect to 127.0.0.1 port 3128 failed: Connection refused".
/// The connect timeout covers the proxy's part. `ws_url()` stays the
/// origin's URL. With `ws_options_set_unix_socket`, no proxy is used.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `url` is NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_proxy(o: *mut ws_options, url: *const c_char) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    unsafe {
        with_options(o, |o| {
            if url.is_null() {
                return o.set_proxy(None);
            }
            match str_arg(url) {
                Some(u) => o.set_proxy(Some(u)),
                None => Err(Error::invalid_argument("proxy URL is not UTF-8")),
            }
        })
    }
}

/// Calls `on_drain(user_data, ws)` (with the handle's `user_data`) when
/// bufferedAmount falls to `low_mark` or below after a send took it above:
/// RTCDataChannel's `bufferedamountlow`, for a producer that sends from
/// there instead of polling `ws_buffered_amount`. Exactly once per crossing
/// (a send that takes it above again arms the next one); on the thread that
/// runs the handle's loop, like every callback; only while `WS_OPEN`, so
/// never after `ws_close` was called or the connection ended. A send that
/// never took bufferedAmount above the mark (written at once, or at most
/// `low_mark` bytes waiting) calls nothing. NULL `on_drain` turns it off
/// (the default). `WS_OK`, or `WS_ERR_INVALID_ARGUMENT` for a NULL `o`.
///
/// # Safety
/// `o` is NULL or a live `ws_options`; `on_drain` is NULL or a function
/// that may be called on any libws thread while the handle lives.
#[no_mangle]
pub unsafe extern "C" fn ws_options_set_on_drain(o: *mut ws_options, on_drain: ws_on_drain, low_mark: u64) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    let o = unsafe { try_mut(o) };
    boundary(|| match o {
        Some(o) => {
            o.on_drain = on_drain;
            o.options.drain_mark = on_drain.map(|_| low_mark);
            WS_OK
        }
        None => WS_ERR_INVALID_ARGUMENT,
    })
}
