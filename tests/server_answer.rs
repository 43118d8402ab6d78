//! `ws_response_status` and `ws_response_header`: the server's answer to
//! the upgrade request, from `on_open` when accepted and from
//! `on_error`/`on_close` when refused (a 302's Location, a 401's
//! WWW-Authenticate), until `ws_free`; 0 and NULL before an answer and
//! when none came. Raw servers write the exact bytes; every loop mode.
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
use std::ffi::{CStr, CString};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ws::ffi::*;

/// Reads status and the named headers of `ws`.
fn read_answer(ws: *const ws_socket, names: &[&str]) -> (i32, Vec<Option<String>>) {
    // SAFETY: called with a live handle; names are C strings.
    unsafe {
        let status = ws_response_status(ws);
        let values = names
            .iter()
            .map(|n| {
                let n = CString::new(*n).unwrap();
                let v = ws_response_header(ws, n.as_ptr());
                (!v.is_null()).then(|| CStr::from_ptr(v).to_str().unwrap().to_string())
            })
            .collect();
        (status, values)
    }
}

type Seen = Arc<Mutex<Vec<(&'static str, i32, Vec<Option<String>>)>>>;

/// A client whose callbacks read the answer (status and `names`).
fn watched(url: &str, names: &'static [&'static str]) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let rec = Recorder::new();
    let s = seen.clone();
    rec.set_hook(move |ws, ev| {
        let name = match ev {
            Ev::Open { .. } => "open",
            Ev::Error { .. } => "error",
            Ev::Close { .. } => "close",
            _ => return,
        };
        let (status, values) = read_answer(ws, names);
        s.lock().unwrap().push((name, status, values));
    });
    (Client::try_with(url, &[], None, rec).unwrap(), seen)
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn accepted_answer_from_on_open() {
    let server = raw_server(|mut s| {
        raw_handshake(&mut s, "X-Session: abc123\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n");
        let _ = read_until_close(&mut s);
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
    });
    let names: &'static [&'static str] = &["x-session", "SET-COOKIE", "Upgrade", "x-missing"];
    let (c, seen) = watched(&server.url("/"), names);
    c.wait_open();
    let opened = seen.lock().unwrap()[0].clone();
    assert_eq!(opened, ("open", 101, vec![some("abc123"), some("a=1"), some("websocket"), None]));
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    // Still there after the end, until ws_free.
    assert_eq!(read_answer(c.ws, names), (101, vec![some("abc123"), some("a=1"), some("websocket"), None]));
}

fn refused_answer_from_on_error_and_on_close() {
    let server = answer("HTTP/1.1 302 Found\r\nLocation: wss://elsewhere.example/\r\nContent-Length: 0\r\n\r\n".into());
    let (c, seen) = watched(&server.url("/"), &["location"]);
    c.rec.wait_close();
    let seen = seen.lock().unwrap().clone();
    let expected = vec![some("wss://elsewhere.example/")];
    assert_eq!(seen, vec![("error", 302, expected.clone()), ("close", 302, expected)]);

    let server = answer("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"api\"\r\n\r\n".into());
    let (c, seen) = watched(&server.url("/"), &["www-authenticate"]);
    c.rec.wait_close();
    assert_eq!(seen.lock().unwrap()[0], ("error", 401, vec![some("Bearer realm=\"api\"")]));
}

/// No answer: a refused connect, a server that closes before answering,
/// and one that answers with something that is not HTTP.
fn no_answer() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let (c, seen) = watched(&url, &["upgrade"]);
    c.rec.wait_close();
    assert!(seen.lock().unwrap().iter().all(|(_, status, v)| *status == 0 && v == &vec![None]));
    let server = raw_server(|mut s| {
        let _ = read_request(&mut s);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        std::thread::sleep(Duration::from_millis(300));
    });
    let (c, seen) = watched(&server.url("/"), &["upgrade"]);
    c.rec.wait_close();
    assert!(seen.lock().unwrap().iter().all(|(_, status, v)| *status == 0 && v == &vec![None]));
}

every_mode!(accepted_answer_from_on_open, refused_answer_from_on_error_and_on_close, no_answer);

/// Before the answer: 0 and NULL; NULL arguments: the same.
#[test]
fn before_an_answer_and_null_arguments() {
    let (server, _held) = silent_server();
    let c = Client::new(&server.url("/"));
    assert_eq!(read_answer(c.ws, &["upgrade"]), (0, vec![None]));
    // SAFETY: NULL is allowed for both arguments.
    unsafe {
        assert_eq!(ws_response_status(std::ptr::null()), 0);
        assert!(ws_response_header(std::ptr::null(), c"upgrade".as_ptr()).is_null());
        assert!(ws_response_header(c.ws, std::ptr::null()).is_null());
    }
}

/// After a 401 answered with the URL's credentials, the second answer is
/// the one read; a header string of the first stays valid.
#[test]
fn a_retry_with_credentials_gives_the_second_answer() {
    let server = raw_server(|mut s| {
        let request = read_request(&mut s);
        if request_header(&request, "authorization").is_none() {
            let _ =
                s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nX-Try: 1\r\n\r\n");
            return;
        }
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Try: 2\r\n\r\n",
            accept_key(&request)
        );
        let _ = s.write_all(response.as_bytes());
        let _ = read_until_close(&mut s);
    });
    let c = Client::new(&format!("ws://u:p@127.0.0.1:{}/", server.port));
    c.wait_open();
    assert_eq!(read_answer(c.ws, &["x-try", "www-authenticate"]), (101, vec![some("2"), None]));
}
