//! `ws_failure_cause` and `ws_failure_errno`: every way a connection ends
//! that a test can force sets exactly one cause, readable from the
//! `on_error` and `on_close` that announce it (the same in both), with the
//! OS error where there is one; `WS_CAUSE_NONE` while open and after a
//! clean closing handshake. Against real sockets on 127.0.0.1 (raw-byte
//! servers where the failure must be forced), in every loop mode.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use frames::*;
use handles::*;
use servers::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ws::ffi::testing::set_resolver;
use ws::ffi::*;

/// (callback, cause, errno) as each of on_error and on_close ran.
type Seen = Arc<Mutex<Vec<(&'static str, i32, i32)>>>;

fn watched(url: &str, opts: &Opts) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let rec = Recorder::new();
    let s = seen.clone();
    rec.set_hook(move |ws, ev| {
        let name = match ev {
            Ev::Error { .. } => "error",
            Ev::Close { .. } => "close",
            _ => return,
        };
        // SAFETY: inside the handle's callback, the handle is live.
        let (cause, errno) = unsafe { (ws_failure_cause(ws), ws_failure_errno(ws)) };
        s.lock().unwrap().push((name, cause, errno));
    });
    let c = Client::try_with(url, &[], Some(opts), rec).unwrap();
    (c, seen)
}

/// Waits for the end; checks the cause is the same in on_error (when it
/// ran) and on_close and still readable after. Returns (cause, errno,
/// whether on_error ran).
fn ending(c: &Client, seen: &Seen) -> (i32, i32, bool) {
    c.rec.wait_close();
    let seen = seen.lock().unwrap().clone();
    let (_, cause, errno) = *seen.last().unwrap();
    assert_eq!(seen.last().unwrap().0, "close");
    for (name, c2, e2) in &seen {
        assert_eq!((*c2, *e2), (cause, errno), "{name} saw another cause: {seen:?}");
    }
    // SAFETY: the handle is live until the Client drops.
    assert_eq!(unsafe { (ws_failure_cause(c.ws), ws_failure_errno(c.ws)) }, (cause, errno), "until ws_free");
    (cause, errno, seen.iter().any(|(n, _, _)| *n == "error"))
}

fn failed_with(url: &str, opts: &Opts) -> (i32, i32) {
    let (c, seen) = watched(url, opts);
    let (cause, errno, error) = ending(&c, &seen);
    assert!(error, "a failure runs on_error");
    (cause, errno)
}

fn dns() {
    set_resolver(Some(Arc::new(|host: &str, _port: u16| {
        (host == "nx.libws-test").then(|| Err(std::io::Error::other("Name or service not known")))
    })));
    assert_eq!(failed_with("ws://nx.libws-test/", &Opts::default()).0, WS_CAUSE_DNS);
}

fn connect_refused() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    assert_eq!(failed_with(&url, &Opts::default()), (WS_CAUSE_CONNECT, libc::ECONNREFUSED));
}

fn connect_timeout() {
    let (server, _held) = silent_server();
    let opts = Opts { connect_timeout_ms: Some(200), ..Default::default() };
    assert_eq!(failed_with(&server.url("/"), &opts), (WS_CAUSE_TIMEOUT, 0));
}

fn tls_with_a_server_that_does_not_speak_it() {
    let server = raw_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot TLS at all\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let url = format!("wss://127.0.0.1:{}/", server.port);
    assert_eq!(failed_with(&url, &Opts::default()).0, WS_CAUSE_TLS);
}

fn http_answer_not_101() {
    let server = answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into());
    assert_eq!(failed_with(&server.url("/"), &Opts::default()), (WS_CAUSE_HTTP, 0));
    // A 101 without the right accept key is no acceptable answer either.
    let server = answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".into());
    assert_eq!(failed_with(&server.url("/"), &Opts::default()), (WS_CAUSE_HTTP, 0));
}

fn proxy_unreachable() {
    let opts = Opts { proxy: Some(format!("http://127.0.0.1:{}", closed_port())), ..Default::default() };
    assert_eq!(failed_with("ws://127.0.0.1:9/", &opts), (WS_CAUSE_PROXY, libc::ECONNREFUSED));
}

/// A server that completes the handshake, then runs `then` on the raw socket.
fn raw(then: impl Fn(&mut std::net::TcpStream) + Send + Sync + 'static) -> Server {
    raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        then(&mut s);
    })
}

fn protocol_violation() {
    // Opcode 3 is reserved (RFC 6455 5.2).
    let server = raw(|s| {
        let _ = s.write_all(&frame(0x83, b"x"));
        std::thread::sleep(Duration::from_millis(300));
    });
    assert_eq!(failed_with(&server.url("/"), &Opts::default()), (WS_CAUSE_PROTOCOL, 0));
}

fn message_too_big() {
    let server = raw(|s| {
        let _ = s.write_all(&frame(0x82, &[7; 100]));
        std::thread::sleep(Duration::from_millis(300));
    });
    let opts = Opts { max_message_size: Some(10), ..Default::default() };
    assert_eq!(failed_with(&server.url("/"), &opts), (WS_CAUSE_TOO_BIG, 0));
}

/// Lost after opening: 1006 without on_error, as browsers; the cause says
/// what happened.
fn connection_lost_after_open() {
    // FIN without a close frame.
    let server = raw(|_| {});
    let (c, seen) = watched(&server.url("/"), &Opts::default());
    assert_eq!(ending(&c, &seen), (WS_CAUSE_CONNECTION_LOST, 0, false));
    // A reset (SO_LINGER 0): the OS error says so.
    let server = raw(|s| {
        let _ = s.read(&mut [0; 1]);
        socket_linger_zero(s);
    });
    let (c, seen) = watched(&server.url("/"), &Opts::default());
    c.wait_open();
    assert_eq!(c.send_text("go"), WS_OK);
    assert_eq!(ending(&c, &seen), (WS_CAUSE_CONNECTION_LOST, libc::ECONNRESET, false));
}

fn socket_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a live socket and a linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn close_timeout() {
    // Reads our close frame and never answers it.
    let server = raw(|s| {
        let _ = read_until_close(s);
        std::thread::sleep(Duration::from_secs(2));
    });
    let opts = Opts { close_timeout_ms: Some(200), ..Default::default() };
    let (c, seen) = watched(&server.url("/"), &opts);
    c.wait_open();
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(ending(&c, &seen), (WS_CAUSE_CLOSE_TIMEOUT, 0, false));
}

fn ping_timeout() {
    // Reads and never answers: no pong, no frame.
    let server = raw(|s| {
        let mut sink = [0u8; 1024];
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let opts = Opts { ping_interval_ms: Some(100), pong_timeout_ms: Some(100), ..Default::default() };
    assert_eq!(failed_with(&server.url("/"), &opts), (WS_CAUSE_PING_TIMEOUT, 0));
}

fn aborted_by_close_while_connecting() {
    let (server, held) = silent_server();
    let (c, seen) = watched(&server.url("/"), &Opts::default());
    poll_until("the server took the connection", || !held.lock().unwrap().is_empty());
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(ending(&c, &seen), (WS_CAUSE_ABORTED, 0, true));
}

/// None while open and after a clean closing handshake, whatever its code.
fn none_when_clean() {
    let server = echo_server();
    let (c, seen) = watched(&server.url("/"), &Opts::default());
    c.wait_open();
    // SAFETY: the handle is live.
    assert_eq!(unsafe { ws_failure_cause(c.ws) }, WS_CAUSE_NONE);
    assert_eq!(c.close(4001, Some("done")), WS_OK);
    assert_eq!(ending(&c, &seen), (WS_CAUSE_NONE, 0, false));
    // The server's own close with 1011: still a clean handshake.
    let server = raw(|s| {
        let _ = s.write_all(&frame(0x88, &close_payload(1011, "oops")));
        let _ = read_until_close(s);
    });
    let (c, seen) = watched(&server.url("/"), &Opts::default());
    assert_eq!(ending(&c, &seen), (WS_CAUSE_NONE, 0, false));
    assert_eq!(close_event(&c), (1011, "oops".to_string(), true));
}

every_mode!(
    dns,
    connect_refused,
    connect_timeout,
    tls_with_a_server_that_does_not_speak_it,
    http_answer_not_101,
    proxy_unreachable,
    protocol_violation,
    message_too_big,
    connection_lost_after_open,
    close_timeout,
    ping_timeout,
    aborted_by_close_while_connecting,
    none_when_clean,
);

#[test]
fn null_handles() {
    // SAFETY: NULL is allowed.
    unsafe {
        assert_eq!(ws_failure_cause(std::ptr::null()), WS_CAUSE_NONE);
        assert_eq!(ws_failure_errno(std::ptr::null()), 0);
    }
}

#[test]
fn the_causes_have_the_documented_values() {
    let all = [
        WS_CAUSE_NONE,
        WS_CAUSE_DNS,
        WS_CAUSE_CONNECT,
        WS_CAUSE_TIMEOUT,
        WS_CAUSE_TLS,
        WS_CAUSE_HTTP,
        WS_CAUSE_PROXY,
        WS_CAUSE_PROTOCOL,
        WS_CAUSE_TOO_BIG,
        WS_CAUSE_CONNECTION_LOST,
        WS_CAUSE_CLOSE_TIMEOUT,
        WS_CAUSE_PING_TIMEOUT,
        WS_CAUSE_ABORTED,
        WS_CAUSE_RESOURCE,
    ];
    assert_eq!(all, std::array::from_fn::<i32, 14, _>(|i| i as i32));
}
