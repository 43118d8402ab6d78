//! Unix domain sockets (`ws_options_set_unix_socket`): a path in the file
//! system and an abstract name, the URL still giving Host and the path; a
//! missing socket's error text; the setter's refusals.
//!
//! sanitize: asan

mod common;
#[path = "support/handles/mod.rs"]
mod handles;

use handles::*;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use tungstenite::handshake::server::{Request, Response};
use ws::ffi::*;

/// Serves one connection at a time on `listener`: the request's Host and
/// path come back as the first message, then every message is echoed.
fn serve(listener: UnixListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || echo_telling_the_request(stream));
        }
    });
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
fn echo_telling_the_request<S: Read + Write>(stream: S) {
    let mut seen = String::new();
    let record = |req: &Request, resp: Response| {
        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
        seen = format!("{host} {}", req.uri());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, record) else { return };
    let _ = ws.send(tungstenite::Message::text(seen));
    while let Ok(msg) = ws.read() {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            return;
        }
    }
}

/// A folder of its own under /tmp: a socket's path must fit in 107 bytes,
/// which a build folder's depth (target/asan/...) can pass.
fn short_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("libws-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn unix_opts(path: &str) -> Opts {
    Opts { unix_socket: Some(path.to_string()), ..Default::default() }
}

fn talks(c: &Client, request: &str) {
    c.wait_open();
    assert_eq!(c.send_text("over a unix socket"), WS_OK);
    let msgs = wait_messages(c, 2);
    assert_eq!(msgs[0], (request.as_bytes().to_vec(), true), "Host and path come from the URL");
    assert_eq!(msgs[1], (b"over a unix socket".to_vec(), true));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(c), (1000, String::new(), true));
}

fn a_path_in_the_file_system() {
    let dir = short_dir("unix");
    let path = dir.join("echo.sock").display().to_string();
    serve(UnixListener::bind(&path).unwrap());
    // The host does not resolve and the port is closed: only the socket is used.
    let c = Client::with("ws://unix.invalid:1/some/path?q=1", &[], &unix_opts(&path));
    talks(&c, "unix.invalid:1 /some/path?q=1");
    assert_eq!(c.url(), "ws://unix.invalid:1/some/path?q=1", "ws_url is the URL");
}

fn an_abstract_name() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("libws-test-{}-{:?}", std::process::id(), std::thread::current().id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    serve(UnixListener::bind_addr(&addr).unwrap());
    let c = Client::with("ws://localhost/abstract", &[], &unix_opts(&format!("@{name}")));
    talks(&c, "localhost /abstract");
}

fn a_missing_socket_fails_with_its_path() {
    let dir = short_dir("unix-missing");
    let path = dir.join("nobody.sock").display().to_string();
    let c = Client::with("ws://localhost/", &[], &unix_opts(&path));
    assert_eq!(assert_failed(&c), format!("connect to unix socket {path} failed: No such file or directory"));
    // A socket file with no listener behind it: refused.
    let gone = dir.join("gone.sock").display().to_string();
    drop(UnixListener::bind(&gone).unwrap());
    let c = Client::with("ws://localhost/", &[], &unix_opts(&gone));
    assert_eq!(assert_failed(&c), format!("connect to unix socket {gone} failed: Connection refused"));
}

every_mode!(a_path_in_the_file_system, an_abstract_name, a_missing_socket_fails_with_its_path);

#[test]
fn the_setter_refuses_what_no_socket_address_holds() {
    unsafe {
        let o = ws_options_new();
        let set = |p: &str| {
            let p = CString::new(p).unwrap();
            ws_options_set_unix_socket(o, p.as_ptr())
        };
        assert_eq!(set(&"a".repeat(107)), WS_OK, "107 bytes: the most sun_path holds with its NUL");
        assert_eq!(set(&"a".repeat(108)), WS_ERR_INVALID_ARGUMENT);
        let why = std::ffi::CStr::from_ptr(ws_last_error()).to_str().unwrap().to_string();
        assert_eq!(why, "unix socket path is 108 bytes, over the limit of 107");
        assert_eq!(set(&format!("@{}", "a".repeat(107))), WS_OK, "an abstract name of 107 bytes");
        assert_eq!(set("@"), WS_ERR_INVALID_ARGUMENT, "an empty abstract name");
        assert_eq!(set(""), WS_OK, "\"\" goes back to the URL's host");
        assert_eq!(ws_options_set_unix_socket(o, std::ptr::null()), WS_OK, "so does NULL");
        assert_eq!(ws_options_set_unix_socket(std::ptr::null_mut(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        ws_options_free(o);
    }
}

/// "" after a path: the URL's host is used again.
#[test]
fn an_empty_path_connects_to_the_urls_host() {
    let (listener, port) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    };
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            echo_telling_the_request(s);
        }
    });
    let c = Client::with(&format!("ws://127.0.0.1:{port}/tcp"), &[], &unix_opts(""));
    talks(&c, &format!("127.0.0.1:{port} /tcp"));
}
