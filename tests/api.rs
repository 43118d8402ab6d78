//! The C API against real servers on 127.0.0.1: the functions and the
//! behaviour that include/ws.h documents.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use frames::*;
use handles::*;
use servers::*;
use std::ffi::CString;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
use tungstenite::Message;
use ws::ffi::*;

fn echoes_text_binary_empty_and_16_mib() {
    let server = echo_server();
    let c = Client::open(&server.url("/"));
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    assert_eq!(c.send_text("héllo €"), WS_OK);
    assert_eq!(c.send_bytes(&[0, 1, 2, 255]), WS_OK);
    assert_eq!(c.send_text(""), WS_OK);
    assert_eq!(c.send_bytes(&[]), WS_OK);
    assert_eq!(c.send_bytes(&big), WS_OK);
    let msgs = wait_messages(&c, 5);
    assert_eq!(msgs[0], ("héllo €".as_bytes().to_vec(), true));
    assert_eq!(msgs[1], (vec![0, 1, 2, 255], false));
    assert_eq!(msgs[2], (vec![], true));
    assert_eq!(msgs[3], (vec![], false));
    assert!(msgs[4].0 == big && !msgs[4].1, "16 MiB message differs");
    assert!(*c.rec.nul_after_message.lock().unwrap(), "a message was not followed by NUL");
    for e in c.rec.events() {
        if let Ev::Message { state, .. } = e {
            assert_eq!(state, WS_OPEN);
        }
    }
    poll_until("bufferedAmount 0", || c.buffered() == 0);
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c), (1000, String::new(), true));
}

fn null_data_with_zero_length_is_an_empty_message() {
    let server = echo_server();
    let c = Client::open(&server.url("/"));
    unsafe {
        assert_eq!(ws_send_string(c.ws, std::ptr::null(), 0), WS_OK);
        assert_eq!(ws_send_bytes(c.ws, std::ptr::null(), 0), WS_OK);
        assert_eq!(ws_send_string(c.ws, std::ptr::null(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(c.ws, std::ptr::null(), 3), WS_ERR_INVALID_ARGUMENT);
    }
    assert_eq!(wait_messages(&c, 2), vec![(vec![], true), (vec![], false)]);
}

fn client_close_variants_reach_the_server() {
    let (server, rx) = recording_server();
    // (code, reason) given -> (code, reason) the server reads
    type Case<'a> = (u16, Option<&'a str>, Option<(u16, &'a str)>);
    let cases: [Case; 5] = [
        (4001, Some("bye now"), Some((4001, "bye now"))),
        (0, None, None),
        (0, Some("only a reason"), Some((1000, "only a reason"))),
        // A reason that is present, even empty, means 1000, as in browsers.
        (0, Some(""), Some((1000, ""))),
        (1000, None, Some((1000, ""))),
    ];
    for (code, reason, expect) in cases {
        let c = Client::open(&server.url("/"));
        assert_eq!(c.send_text("before close"), WS_OK);
        assert_eq!(c.close(code, reason), WS_OK);
        // CLOSED already if the server was quick.
        assert!(matches!(c.state(), WS_CLOSING | WS_CLOSED));
        let (_, t) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(t.messages, vec![Message::text("before close")]);
        let expect = expect.map(|(c, r)| (c, r.to_string()));
        assert_eq!(t.close, Some(expect.clone()), "close({code}, {reason:?})");
        // The server echoes; on_close reports its code (1005 for no code).
        let (got, why, clean) = close_event(&c);
        assert!(clean);
        assert_eq!((got, why), expect.unwrap_or((1005, String::new())));
    }
}

fn server_close_variants_reach_on_close() {
    for (frame, expect) in [
        (Some((1000u16, "")), (1000u16, "")),
        (Some((4000, "server says bye")), (4000, "server says bye")),
        (None, (1005, "")),
    ] {
        let (tx, rx) = crossbeam_channel::unbounded();
        let tx = Mutex::new(tx);
        let server = ws_server(
            |_| None,
            move |mut ws, _| {
                let frame = frame.map(|(c, r)| CloseFrame { code: CloseCode::from(c), reason: r.into() });
                ws.close(frame).unwrap();
                let t = read_all(&mut ws);
                let _ = tx.lock().unwrap().send(t.close);
            },
        );
        let c = Client::open(&server.url("/"));
        let (code, reason, clean) = close_event(&c);
        assert_eq!((code, reason.as_str(), clean), (expect.0, expect.1, true));
        // The client echoed the server's code and reason.
        let echoed = rx.recv_timeout(WAIT).unwrap();
        let want = frame.map(|(c, r)| (c, r.to_string()));
        assert_eq!(echoed, Some(want));
    }
}

fn ready_state_through_every_transition() {
    let (server, _held) = silent_server();
    let c = Client::new(&server.url("/"));
    assert_eq!(c.state(), WS_CONNECTING);
    let server = echo_server();
    let c = Client::new(&server.url("/"));
    // Inside a callback the I/O thread waits for us, so CLOSING is seen
    // deterministically right after ws_close.
    let (tx, rx) = crossbeam_channel::bounded(1);
    c.rec.set_hook(move |ws, ev| {
        if let Ev::Message { .. } = ev {
            let before = unsafe { ws_ready_state(ws) };
            let rc = unsafe { ws_close(ws, 1000, c"done".as_ptr()) };
            let _ = tx.send((before, rc, unsafe { ws_ready_state(ws) }));
        }
    });
    c.wait_open();
    assert_eq!(c.state(), WS_OPEN);
    assert_eq!(c.send_text("x"), WS_OK);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (WS_OPEN, WS_OK, WS_CLOSING));
    let (code, reason, clean) = close_event(&c);
    assert_eq!((code, reason.as_str(), clean), (1000, "done", true));
    let evs = c.rec.events();
    assert_eq!(evs.len(), 3, "open, message, close: {evs:?}");
}

fn url_forms() {
    let server = echo_server();
    let c = Client::new(&format!("http://127.0.0.1:{}/a/b?x=1", server.port));
    assert_eq!(c.url(), format!("ws://127.0.0.1:{}/a/b?x=1", server.port));
    c.wait_open();
    let c = Client::new(&format!("ws://localhost:{}", server.port));
    assert_eq!(c.url(), format!("ws://localhost:{}/", server.port));
    c.wait_open();
    let c = Client::new("https://127.0.0.1:1/");
    assert_eq!(c.url(), "wss://127.0.0.1:1/");
    for bad in ["ws://h/#frag", "ws://h/#", "ftp://h/", "file:///x", "javascript:alert(1)", "ws://[::1/", "nope", ""] {
        let e = Client::try_with(bad, &[], None, Recorder::new()).err().unwrap();
        assert_eq!(e.0, WS_ERR_SYNTAX, "{bad}");
        assert!(!e.1.is_empty());
    }
}

fn protocol_argument_errors() {
    for bad in [&[""][..], &["a b"], &["a,b"], &["x", "x"], &["ü"], &["(", "b"]] {
        let e = Client::try_with("ws://127.0.0.1:1/", bad, None, Recorder::new()).err().unwrap();
        assert_eq!(e.0, WS_ERR_SYNTAX, "{bad:?}");
    }
    let url = CString::new("ws://127.0.0.1:1/").unwrap();
    unsafe {
        assert!(ws_new(url.as_ptr(), std::ptr::null(), 2, std::ptr::null()).is_null());
        assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT);
        let null_entry = [std::ptr::null::<std::ffi::c_char>()];
        assert!(ws_new(url.as_ptr(), null_entry.as_ptr(), 1, std::ptr::null()).is_null());
        assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT);
        assert!(ws_new(std::ptr::null(), std::ptr::null(), 0, std::ptr::null()).is_null());
        assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT);
        let bad_utf8 = b"ws://h/\xff\0";
        assert!(ws_new(bad_utf8.as_ptr().cast(), std::ptr::null(), 0, std::ptr::null()).is_null());
        assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT);
        // NULL callbacks are allowed.
        let ws = ws_new(url.as_ptr(), std::ptr::null(), 0, std::ptr::null());
        assert!(!ws.is_null());
        ws_free(ws);
    }
}

fn close_argument_errors() {
    let server = echo_server();
    for code in [999u16, 1001, 1005, 2999, 5000, 65535] {
        let c = Client::open(&server.url("/"));
        assert_eq!(c.close(code, None), WS_ERR_INVALID_ACCESS, "{code}");
        assert_eq!(c.state(), WS_OPEN);
    }
    let c = Client::open(&server.url("/"));
    assert_eq!(c.close(1000, Some(&"é".repeat(62))), WS_ERR_SYNTAX); // 124 bytes
    assert_eq!(c.close(1000, Some(&"a".repeat(124))), WS_ERR_SYNTAX);
    // The code is checked before the reason, as in browsers.
    assert_eq!(c.close(999, Some(&"a".repeat(124))), WS_ERR_INVALID_ACCESS);
    let bad = b"\xff\xfe\0";
    assert_eq!(unsafe { ws_close(c.ws, 1000, bad.as_ptr().cast()) }, WS_ERR_INVALID_ARGUMENT);
    assert_eq!(c.state(), WS_OPEN);
    for code in [1000u16, 3000, 4999] {
        let c = Client::open(&server.url("/"));
        let reason = "r".repeat(123);
        assert_eq!(c.close(code, Some(&reason)), WS_OK, "{code}");
        assert_eq!(close_event(&c), (code, reason, true));
    }
}

fn null_handles_and_pointers() {
    unsafe {
        let null = std::ptr::null_mut();
        assert_eq!(ws_send_string(null, c"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(null, b"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_close(null, 1000, std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_ready_state(null), 0);
        assert_eq!(ws_buffered_amount(null), 0);
        for s in [ws_url(null), ws_protocol(null), ws_extensions(null)] {
            assert_eq!(std::ffi::CStr::from_ptr(s).to_bytes(), b"");
        }
        ws_free(null);
        ws_options_free(std::ptr::null_mut());
        let o = std::ptr::null_mut();
        assert_eq!(ws_options_add_header(o, c"a".as_ptr(), c"b".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_connect_timeout_ms(o, 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_close_timeout_ms(o, 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_message_size(o, 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_buffered_amount(o, 1), WS_ERR_INVALID_ARGUMENT);
        let o = ws_options_new();
        assert_eq!(ws_options_add_header(o, std::ptr::null(), c"b".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_add_header(o, c"a".as_ptr(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_add_header(o, c"a b".as_ptr(), c"v".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_add_header(o, c"X-A".as_ptr(), c"v\r\nX: y".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_connect_timeout_ms(o, 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_message_size(o, 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_buffered_amount(o, 0), WS_OK);
        ws_options_free(o);
        assert_eq!(std::ffi::CStr::from_ptr(ws_version()).to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}

fn text_that_is_not_utf8_is_refused() {
    let (server, rx) = recording_server();
    let c = Client::open(&server.url("/"));
    let bad = b"ab\xc3";
    assert_eq!(unsafe { ws_send_string(c.ws, bad.as_ptr().cast(), 3) }, WS_ERR_INVALID_ARGUMENT);
    assert_eq!(unsafe { ws_send_string(c.ws, bad.as_ptr().cast(), 2) }, WS_OK);
    assert!(c.buffered() <= 2, "the refused send was counted");
    c.close(1000, None);
    let (_, t) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(t.messages, vec![Message::text("ab")]);
}

fn send_while_connecting_is_invalid_state() {
    let (server, _held) = silent_server();
    let c = Client::new(&server.url("/"));
    assert_eq!(c.send_text("x"), WS_ERR_INVALID_STATE);
    assert_eq!(c.send_bytes(b"x"), WS_ERR_INVALID_STATE);
    assert_eq!(c.buffered(), 0);
}

fn send_after_close_counts_and_discards() {
    let (server, rx) = recording_server();
    let c = Client::open(&server.url("/"));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(c.send_text("late"), WS_OK);
    assert_eq!(c.buffered(), 4);
    close_event(&c);
    assert_eq!(c.send_bytes(&[1, 2, 3]), WS_OK);
    assert_eq!(c.buffered(), 7);
    let (_, t) = rx.recv_timeout(WAIT).unwrap();
    assert!(t.messages.is_empty(), "{:?}", t.messages);
}

fn buffered_amount_rises_then_drains_and_limit_applies() {
    // The server reads nothing until told to, so the socket buffers fill.
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let go_rx = Mutex::new(go_rx);
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = ws_server(
        |_| None,
        move |mut ws, _| {
            let _ = go_rx.lock().unwrap().recv_timeout(WAIT);
            let t = read_all(&mut ws);
            let _ = tx.lock().unwrap().send(t.messages.len());
        },
    );
    let c = Client::with(&server.url("/"), &[], &Opts { max_buffered: Some(64 << 20), ..Opts::default() });
    c.wait_open();
    let chunk = vec![7u8; 1 << 20];
    for i in 0..32 {
        assert_eq!(c.send_bytes(&chunk), WS_OK, "send {i}");
    }
    // Kernel buffers hold a few MiB at most: most of 32 MiB is still ours.
    let high = c.buffered();
    assert!(high >= 16 << 20, "bufferedAmount {high}");
    assert!(high <= 32 << 20);
    // Past the limit (at least 16 MiB are buffered, so 48 MiB + 1 more is
    // over 64 MiB): refused and nothing queued.
    let too_big = vec![0u8; (48 << 20) + 1];
    assert_eq!(c.send_bytes(&too_big), WS_ERR_BUFFER_FULL);
    assert!(c.buffered() <= 32 << 20);
    // A send that fits is still accepted.
    assert_eq!(c.send_bytes(&chunk), WS_OK);
    go_tx.send(()).unwrap();
    poll_until("bufferedAmount back to 0", || c.buffered() == 0);
    c.close(1000, None);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 33);
}

// sanitize: tsan
fn close_while_connecting_fails_promptly() {
    let (server, held) = silent_server();
    // A library that waited for the connect timeout would take 60 s.
    let c = Client::with(&server.url("/"), &[], &Opts { connect_timeout_ms: Some(60_000), ..Opts::default() });
    // Past TCP connect, inside the handshake the server never answers.
    poll_until("the server to accept", || !held.lock().unwrap().is_empty());
    let t = Instant::now();
    assert_eq!(c.close(0, None), WS_OK);
    // CLOSING at once; CLOSED already if the I/O thread was quicker than us.
    assert!(matches!(c.state(), WS_CLOSING | WS_CLOSED));
    let msg = assert_failed(&c);
    // At once in the loop's next turn; the rest is scheduling.
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(msg.contains("closed before the connection is established"), "{msg}");
    // Once closed, close() is a no-op.
    assert_eq!(c.close(1000, None), WS_OK);
}

fn connect_timeout_against_silent_server() {
    let (server, _held) = silent_server();
    let t = Instant::now();
    let c = Client::with(&server.url("/"), &[], &Opts { connect_timeout_ms: Some(300), ..Opts::default() });
    let msg = assert_failed(&c);
    let took = t.elapsed();
    // The deadline is set inside ws_new, after `t`; ignoring the option
    // would take the default 30 s.
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(8), "took {took:?}");
    assert!(msg.contains("timeout"), "{msg}");
}

fn refused_connection_fails() {
    let port = closed_port();
    let c = Client::new(&format!("ws://127.0.0.1:{port}/"));
    let msg = assert_failed(&c);
    // One fact, said once, in C's words (strerror), not Rust's.
    assert_eq!(msg, format!("connect to 127.0.0.1 port {port} failed: Connection refused"));
    assert_eq!(c.rec.events().len(), 2);
}

fn server_dropping_tcp_is_1006_without_error() {
    let server = ws_server(
        |_| None,
        |mut ws, _| {
            let _ = ws.read();
            // drop without a close frame
        },
    );
    let c = Client::open(&server.url("/"));
    c.send_text("hi");
    assert_eq!(close_event(&c), (1006, String::new(), false));
    assert!(errors(&c).is_empty(), "{:?}", c.rec.events());
}

fn bad_handshakes_fail_the_connection() {
    let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases: Vec<(String, &[&str], &str)> = vec![
        ("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into(), &[], "403"),
        ("HTTP/1.1 301 Moved\r\nLocation: ws://127.0.0.1:1/\r\n\r\n".into(), &[], "301"),
        (format!("{ok}Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"), &[], "Accept"),
        (format!("{ok}Sec-WebSocket-Accept: {{accept}}\r\nSec-WebSocket-Protocol: evil\r\n\r\n"), &["chat"], "evil"),
        (format!("{ok}Sec-WebSocket-Accept: {{accept}}\r\nSec-WebSocket-Protocol: chat\r\n\r\n"), &[], "chat"),
        (format!("{ok}Sec-WebSocket-Accept: {{accept}}\r\n\r\n"), &["chat"], "none of the offered"),
        (
            format!("{ok}Sec-WebSocket-Accept: {{accept}}\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n"),
            &[],
            "x-webkit-deflate-frame",
        ),
    ];
    for (response, protocols, needle) in cases {
        let server = answer(response);
        let c = Client::try_with(&server.url("/"), protocols, None, Recorder::new()).unwrap();
        let msg = assert_failed(&c);
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert_eq!(c.protocol(), "");
        assert!(!c.rec.events().iter().any(|e| matches!(e, Ev::Open { .. })));
    }
}

fn subprotocol_negotiation() {
    // The server holds its 101 until told, so that the handle is certainly
    // still CONNECTING when the test reads its protocol (on loopback the
    // handshake could otherwise finish before ws_new's caller runs on).
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let server = raw_server(move |mut s| {
        let request = read_request(&mut s);
        if go_rx.recv_timeout(WAIT).is_err() {
            return;
        }
        // The second subprotocol offered.
        let offered = request_header(&request, "sec-websocket-protocol").unwrap_or_default();
        let chosen = offered.split(',').nth(1).unwrap_or("").trim().to_string();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {chosen}\r\n\r\n",
            accept_key(&request)
        );
        let _ = s.write_all(response.as_bytes());
        // Answer the client's close frame.
        s.set_read_timeout(Some(WAIT)).unwrap();
        while let Some(f) = read_frame(&mut s) {
            if f.first & 0x0f == 8 {
                let _ = s.write_all(&frame(0x88, &f.payload));
                break;
            }
        }
    });
    let c = Client::try_with(&server.url("/"), &["v1.chat", "v2.chat"], None, Recorder::new()).unwrap();
    // WHATWG: protocol is the empty string until the connection is open.
    assert_eq!((c.state(), c.protocol()), (WS_CONNECTING, String::new()));
    go_tx.send(()).unwrap();
    c.wait_open();
    assert_eq!(c.protocol(), "v2.chat");
    assert_eq!(unsafe { std::ffi::CStr::from_ptr(ws_extensions(c.ws)) }.to_bytes(), b"");
}

fn extra_headers_reach_the_server() {
    let (server, rx) = recording_server();
    let opts = Opts {
        headers: vec![("Authorization".into(), "Bearer abc".into()), ("X-Trace".into(), "42".into())],
        ..Opts::default()
    };
    let c = Client::try_with(&server.url("/path?q=1"), &["p1", "p2"], Some(&opts), Recorder::new()).unwrap();
    c.rec.wait_until(WAIT, "close", |e| e.iter().any(|e| matches!(e, Ev::Close { .. })));
    let (seen, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(seen.header("authorization").as_deref(), Some("Bearer abc"));
    assert_eq!(seen.header("x-trace").as_deref(), Some("42"));
    assert_eq!(seen.header("sec-websocket-protocol").as_deref(), Some("p1, p2"));
    assert_eq!(seen.header("host"), Some(format!("127.0.0.1:{}", server.port)));
    assert_eq!(seen.path, "/path?q=1");
}

fn message_over_the_limit_sends_1009() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        s.write_all(&frame(0x82, &[1u8; 1001])).unwrap();
        let _ = tx.lock().unwrap().send(read_until_close(&mut s));
    });
    let c = Client::with(&server.url("/"), &[], &Opts { max_message_size: Some(1000), ..Opts::default() });
    let msg = assert_failed(&c);
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Some(1009));
    assert!(c.rec.messages().is_empty());
}

fn ten_thousand_messages_in_order() {
    let server = echo_server();
    let c = Client::open(&server.url("/"));
    for i in 0..10_000 {
        assert_eq!(c.send_text(&i.to_string()), WS_OK);
    }
    let msgs = wait_messages(&c, 10_000);
    for (i, (data, text)) in msgs.iter().enumerate() {
        assert!(*text);
        assert_eq!(std::str::from_utf8(data).unwrap(), i.to_string());
    }
}

// sanitize: tsan
fn eight_threads_keep_their_order() {
    let (server, rx) = recording_server();
    let c = Arc::new(Client::open(&server.url("/")));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    assert_eq!(c.send_text(&format!("{t}:{i}")), WS_OK);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.close(1000, None), WS_OK);
    let (_, t) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(t.messages.len(), 8000);
    let mut next = [0u32; 8];
    for m in t.messages {
        let s = m.into_text().unwrap();
        let (t, i) = s.split_once(':').unwrap();
        let (t, i): (usize, u32) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [1000; 8]);
}

// sanitize: tsan
fn send_from_inside_on_message() {
    let server = echo_server();
    let c = Client::new(&server.url("/"));
    c.rec.set_hook(|ws, ev| {
        if let Ev::Message { data, .. } = ev {
            if data.len() < 5 {
                let mut next = data.clone();
                next.push(b'x');
                assert_eq!(unsafe { ws_send_bytes(ws, next.as_ptr(), next.len()) }, WS_OK);
            }
        }
    });
    c.wait_open();
    c.send_bytes(b"x");
    let msgs = wait_messages(&c, 5);
    assert_eq!(msgs.last().unwrap().0, b"xxxxx");
}

// sanitize: tsan
fn free_inside_each_callback() {
    let server = echo_server();
    // Two messages at once: the first one's callback frees the handle, so
    // the test never touches it again (that would be a use after free).
    let two = raw_server(|mut s| {
        raw_handshake(&mut s, "");
        let _ = s.write_all(&[frame(0x81, b"m"), frame(0x81, b"n")].concat());
        let _ = read_until_close(&mut s);
    });
    for which in ["open", "message", "close", "error"] {
        let url = match which {
            "error" => format!("ws://127.0.0.1:{}/", closed_port()),
            "message" => two.url("/"),
            _ => server.url("/"),
        };
        let rec = Recorder::new();
        let freed = Arc::new(Mutex::new(false));
        let f = freed.clone();
        rec.set_hook(move |ws, ev| {
            let hit = matches!(
                (which, ev),
                ("open", Ev::Open { .. })
                    | ("message", Ev::Message { .. })
                    | ("close", Ev::Close { .. })
                    | ("error", Ev::Error { .. })
            );
            if hit {
                unsafe { ws_free(ws) };
                *f.lock().unwrap() = true;
            }
        });
        let mut c = Client::try_with(&url, &[], None, rec.clone()).unwrap();
        c.forget();
        if which == "close" {
            rec.wait_until(WAIT, "open", |e| !e.is_empty());
            assert_eq!(unsafe { ws_close(c.ws, 1000, std::ptr::null()) }, WS_OK);
        }
        poll_until("the freeing callback", || *freed.lock().unwrap());
        // Nothing runs after ws_free: give the I/O thread time to try.
        let n = rec.events().len();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rec.events().len(), n, "{which}: {:?}", rec.events());
    }
}

/// ws_free never waits on the network. The bounds leave room for a loaded
/// machine; a ws_free that waited would take 30 s (the connect timeout) or
/// 10 s and more (the server holds the connection until the test ends).
// sanitize: tsan
fn free_while_connecting_and_while_server_is_silent_is_prompt() {
    let prompt = Duration::from_millis(1500);
    let (server, _held) = silent_server();
    let mut c = Client::new(&server.url("/"));
    let took = c.free();
    assert!(took < prompt, "ws_free while connecting took {took:?}");
    let events = c.rec.events();
    std::thread::sleep(Duration::from_millis(200));
    assert!(events.is_empty() && c.rec.events().is_empty());

    // Open, then the server stops reading and answering: ws_free must not
    // wait for the closing handshake.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let server = ws_server(
        |_| None,
        move |_ws, _| {
            let _ = done_rx.recv_timeout(WAIT);
        },
    );
    let mut c = Client::with(&server.url("/"), &[], &Opts { close_timeout_ms: Some(30_000), ..Opts::default() });
    c.wait_open();
    c.send_bytes(&vec![0u8; 8 << 20]);
    let took = c.free();
    assert!(took < prompt, "ws_free with a silent server took {took:?}");
    drop(done_tx);
}

// sanitize: tsan
fn free_from_another_thread_waits_for_a_running_callback() {
    let server = echo_server();
    let c = Client::open(&server.url("/"));
    let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
    let done = Arc::new(Mutex::new(false));
    let d = done.clone();
    c.rec.set_hook(move |_, ev| {
        if matches!(ev, Ev::Message { .. }) {
            let _ = entered_tx.send(());
            std::thread::sleep(Duration::from_millis(300));
            *d.lock().unwrap() = true;
        }
    });
    c.send_text("x");
    entered_rx.recv_timeout(WAIT).unwrap();
    let mut c = c;
    c.free();
    assert!(*done.lock().unwrap(), "ws_free returned while the callback ran");
}

fn frames_in_the_same_packet_as_the_101() {
    let server = raw_server(|mut s| {
        let request = read_request(&mut s);
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&request)
        )
        .into_bytes();
        out.extend(frame(0x81, b"first"));
        out.extend(frame(0x82, b"second"));
        s.write_all(&out).unwrap();
        read_until_close(&mut s);
    });
    let c = Client::open(&server.url("/"));
    assert_eq!(wait_messages(&c, 2), vec![(b"first".to_vec(), true), (b"second".to_vec(), false)]);
}

fn close_timeout_when_server_never_answers_close() {
    // The server holds the connection until the test is done, so only the
    // close timeout can end it.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        read_until_close(&mut s);
        let _ = done_rx.recv_timeout(WAIT);
    });
    let c = Client::with(&server.url("/"), &[], &Opts { close_timeout_ms: Some(300), ..Opts::default() });
    c.wait_open();
    let t = Instant::now();
    c.close(1000, None);
    assert_eq!(close_event(&c), (1006, String::new(), false));
    let took = t.elapsed();
    // The timer starts once the close frame is written, after `t`. The
    // upper bound stays below the default close timeout (5 s), which a
    // library ignoring the option would take.
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(4), "{took:?}");
    assert!(errors(&c).is_empty());
    drop(done_tx);
}

/// RFC 6455 7.1.1: the server closes TCP first; a client whose server does
/// not closes it itself 2 s after both close frames crossed, as clean.
fn server_close_without_tcp_close_is_clean_after_2s() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        // Before the write: the client cannot receive the frame earlier,
        // so its 2 s wait ends 2 s after this at the earliest.
        let sent = Instant::now();
        s.write_all(&frame(0x88, &close_payload(4321, "x"))).unwrap();
        let code = read_until_close(&mut s);
        let read = Instant::now();
        let closed = peer_closed_within(&mut s, WAIT);
        let _ = tx.lock().unwrap().send((code, closed, sent.elapsed(), read.elapsed()));
    });
    // A library that ignored the 2 s rule would wait for the close
    // timeout: 30 s.
    let c = Client::with(&server.url("/"), &[], &Opts { close_timeout_ms: Some(30_000), ..Opts::default() });
    c.wait_open();
    assert_eq!(close_event(&c), (4321, "x".to_string(), true));
    let (code, closed, since_sent, since_read) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(code, Some(4321));
    assert!(closed);
    assert!(since_sent >= Duration::from_secs(2), "closed TCP {since_sent:?} after the close frame was sent");
    assert!(since_read < Duration::from_secs(6), "closed TCP {since_read:?} after the close frames crossed");
}

#[test]
fn library_threads_block_the_host_programs_signals() {
    let server = echo_server();
    let c = Client::open(&server.url("/"));
    let mut checked = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "libws-io" {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let Some(mask) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) else {
            continue;
        };
        let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
            assert!(mask & (1 << (sig - 1)) != 0, "signal {sig} not blocked: {mask:x}");
        }
        assert!(mask & (1 << (libc::SIGSEGV - 1)) == 0, "SIGSEGV must stay deliverable");
        checked += 1;
    }
    assert!(checked >= 1, "no libws-io thread found");
    drop(c);
}

// sanitize: tsan
fn a_flooding_server_does_not_starve_close() {
    // The server writes small frames as fast as it can (for at most three
    // times the bound below, so that a starved close cannot pass by waiting
    // for the flood to end) and, on another thread, waits for the client's
    // close frame.
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let mut reader = s.try_clone().unwrap();
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = flooding.clone();
        let writer = std::thread::spawn(move || {
            let frames: Vec<u8> = (0..1000).flat_map(|_| frame(0x82, &[7u8; 100])).collect();
            let end = Instant::now() + WAIT * 3;
            while f.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
                if s.write_all(&frames).is_err() {
                    break;
                }
            }
        });
        let code = read_until_close(&mut reader);
        flooding.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = tx.lock().unwrap().send(code);
        let _ = writer.join();
    });
    let rec = Recorder::new();
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    c.rec.wait_until(WAIT, "the first message", |e| e.iter().any(|e| matches!(e, Ev::Message { .. })));
    let t = Instant::now();
    assert_eq!(c.close(4321, None), WS_OK);
    // Generous for a loaded machine (ws_close competes with the loop for
    // the dispatch lock, the flood writer for a core).
    assert_eq!(rx.recv_timeout(WAIT).expect("close frame starved by the flood"), Some(4321));
    assert!(t.elapsed() < WAIT, "{:?}", t.elapsed());
}

/// A server that, once the client has asked to close, reads the first
/// 5 MiB of the client's 8 MiB backlog slowly but steadily (64 KiB every
/// 40 ms, over 3.2 s), then the rest, then the close frame, and answers
/// it. The close timeout (2 s) runs from when the close frame is written,
/// or from the last progress while it waits behind the backlog, so a
/// backlog that drains does not turn the close into a 1006. Small socket
/// buffers on both sides keep all but about 1 MiB of the backlog in the
/// client, so its close frame cannot go out before the slow part is read:
/// a library timing from the request ends the connection first.
fn close_timeout_starts_when_the_close_frame_is_written() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    struct Slow(std::net::TcpStream, usize);
    impl std::io::Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let mut n = buf.len();
            if self.1 < 5 << 20 {
                std::thread::sleep(Duration::from_millis(40));
                n = n.min(64 << 10);
            }
            let n = self.0.read(&mut buf[..n])?;
            self.1 += n;
            Ok(n)
        }
    }
    let server = one_connection_with_receive_buffer(128 << 10, move |mut s| {
        raw_handshake(&mut s, "");
        // Nothing is read before the close request, so the slow part
        // certainly comes after it.
        if go_rx.recv_timeout(WAIT).is_err() {
            return;
        }
        let mut data = 0;
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut slow = Slow(s.try_clone().unwrap(), 0);
        let code = loop {
            match read_frame(&mut slow) {
                Some(f) if f.first == 0x88 => break Some(u16::from_be_bytes([f.payload[0], f.payload[1]])),
                Some(f) => data += f.payload.len(),
                None => break None,
            }
        };
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
        let _ = tx.send((data, code));
    });
    let c = unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_close_timeout_ms(o, 2000), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 128 << 10);
        let c = Client::try_with_options(&server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        c
    };
    c.wait_open();
    assert_eq!(c.send_bytes(&vec![1u8; 8 << 20]), WS_OK);
    assert_eq!(c.close(4000, None), WS_OK);
    go_tx.send(()).unwrap();
    assert_eq!(close_event(&c), (1000, String::new(), true));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (8 << 20, Some(4000)));
}

/// A raw server for one connection, whose receive buffer is fixed at
/// `bytes` (the kernel doubles it): set on the listener, so that the first
/// window is small already, and a set size is never grown by the kernel.
fn one_connection_with_receive_buffer(
    bytes: libc::c_int,
    handler: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> Server {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let server = Server { port: listener.local_addr().unwrap().port() };
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            handler(s);
        }
    });
    server
}

/// The server sends its close frame while the client's own close frame is
/// still queued behind a backlog the server does not read for 2.5 s: the
/// close frames have not crossed until the client's is written, so the
/// 2-second wait for TCP close must not start (and end the connection as
/// clean) before the server has even seen the client's close frame.
fn close_frames_cross_only_once_ours_is_written() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        // Wait until the client has queued its backlog and close.
        if go_rx.recv_timeout(WAIT).is_err() {
            return;
        }
        s.write_all(&frame(0x88, &close_payload(4001, "server"))).unwrap();
        // Time for a wrong client to end the connection after 2 s.
        std::thread::sleep(Duration::from_millis(2500));
        s.set_read_timeout(Some(WAIT)).unwrap();
        let seen = read_until_close(&mut s);
        let _ = tx.send((seen, Instant::now()));
    });
    // Only the 2 s wait can end the connection early: the close timeout
    // is far longer than the server's stall.
    let c = Client::with(&server.url("/"), &[], &Opts { close_timeout_ms: Some(30_000), ..Opts::default() });
    c.wait_open();
    assert_eq!(c.send_bytes(&vec![1u8; 8 << 20]), WS_OK);
    assert_eq!(c.close(4000, None), WS_OK);
    go_tx.send(()).unwrap();
    assert_eq!(close_event(&c), (4001, "server".to_string(), true));
    let closed_at = Instant::now();
    // The server thread panics instead if TCP closed before it read the
    // client's close frame.
    let (seen, server_read_at) = rx.recv_timeout(WAIT).expect("the server read no close frame from the client");
    assert_eq!(seen, Some(4000), "the server saw the client's close frame");
    assert!(
        server_read_at <= closed_at,
        "on_close reported a clean close before the server had the client's close frame"
    );
}

every_mode!(
    echoes_text_binary_empty_and_16_mib,
    null_data_with_zero_length_is_an_empty_message,
    client_close_variants_reach_the_server,
    server_close_variants_reach_on_close,
    ready_state_through_every_transition,
    url_forms,
    protocol_argument_errors,
    close_argument_errors,
    null_handles_and_pointers,
    text_that_is_not_utf8_is_refused,
    send_while_connecting_is_invalid_state,
    send_after_close_counts_and_discards,
    buffered_amount_rises_then_drains_and_limit_applies,
    close_while_connecting_fails_promptly,
    connect_timeout_against_silent_server,
    refused_connection_fails,
    server_dropping_tcp_is_1006_without_error,
    bad_handshakes_fail_the_connection,
    subprotocol_negotiation,
    extra_headers_reach_the_server,
    message_over_the_limit_sends_1009,
    ten_thousand_messages_in_order,
    eight_threads_keep_their_order,
    send_from_inside_on_message,
    free_inside_each_callback,
    free_while_connecting_and_while_server_is_silent_is_prompt,
    free_from_another_thread_waits_for_a_running_callback,
    frames_in_the_same_packet_as_the_101,
    close_timeout_when_server_never_answers_close,
    server_close_without_tcp_close_is_clean_after_2s,
    a_flooding_server_does_not_starve_close,
    close_timeout_starts_when_the_close_frame_is_written,
    close_frames_cross_only_once_ours_is_written,
);
