//! RFC 6455 rules that bind a client, checked against a server that speaks
//! raw bytes so that it can break each rule on purpose. Each test checks
//! what libws sent back (its close code, or that it closed TCP) and what the
//! C caller saw.
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
use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;
use ws::ffi::*;

/// What the server read from the client after its script ran.
#[derive(Debug)]
struct Seen {
    /// Data and control frames before the close frame (first byte, payload).
    frames: Vec<(u8, Vec<u8>)>,
    /// The client's close frame: Some(code) (None inside: no code), or None
    /// when TCP closed without one.
    close: Option<Option<u16>>,
}

fn read_client(s: &mut TcpStream) -> Seen {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = read_frame(s) {
        assert!(f.masked, "client frame not masked");
        if f.first & 0x0f == 8 {
            let code = (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
            return Seen { frames, close: Some(code) };
        }
        frames.push((f.first, f.payload));
    }
    Seen { frames, close: None }
}

/// A server that shakes hands, runs `script`, then reads the client.
fn scripted(script: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> (Server, crossbeam_channel::Receiver<Seen>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        script(&mut s);
        let seen = read_client(&mut s);
        let _ = tx.lock().unwrap().send(seen);
    });
    (server, rx)
}

/// The server sends `bytes`; the client must fail with `code` on the wire,
/// on_error then on_close 1006, and deliver no message.
fn expect_failure(bytes: Vec<u8>, code: u16) -> String {
    let (server, rx) = scripted(move |s| s.write_all(&bytes).unwrap());
    let c = Client::new(&server.url("/"));
    let message = assert_failed(&c);
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(seen.close, Some(Some(code)), "client's close frame ({message})");
    assert!(c.rec.messages().is_empty(), "a message was delivered: {:?}", c.rec.events());
    message
}

fn invalid_utf8_text_in_one_frame() {
    expect_failure(frame(0x81, b"ok \xc3\x28 bad"), 1007);
    expect_failure(frame(0x81, b"\xed\xa0\x80"), 1007); // a UTF-16 surrogate
    expect_failure(frame(0x81, b"\xf4\x90\x80\x80"), 1007); // above U+10FFFF
    expect_failure(frame(0x81, b"abc\xe2\x82"), 1007); // cut short at the end
}

fn invalid_utf8_fails_at_the_first_fragment() {
    // The message never ends: a client that checks only complete messages
    // would wait forever instead of answering 1007.
    expect_failure(frame(0x01, b"valid, then \xff"), 1007);
    // Within one frame whose rest never arrives (Autobahn 6.4.3).
    let mut partial = vec![0x81, 100];
    partial.extend_from_slice(b"abc\xf5");
    expect_failure(partial, 1007);
}

fn code_points_split_across_fragments_are_accepted() {
    let text = "€ and 𝄞 and ü";
    let b = text.as_bytes();
    let (server, _rx) = scripted(move |s| {
        // Cut inside "€" (3 bytes) and inside "𝄞" (4 bytes).
        let bytes = [frame(0x01, &b[..1]), frame(0x00, &b[1..9]), frame(0x00, &b[9..]), frame(0x80, b"")].concat();
        s.write_all(&bytes).unwrap();
    });
    let c = Client::open(&server.url("/"));
    assert_eq!(wait_messages(&c, 1), vec![(text.as_bytes().to_vec(), true)]);
}

fn rsv_bits_without_extension() {
    for first in [0xC1u8, 0xA1, 0x91] {
        expect_failure(frame(first, b"x"), 1002);
    }
}

fn reserved_opcodes() {
    for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        expect_failure(frame(0x80 | op, b""), 1002);
    }
}

fn masked_server_frame() {
    expect_failure(vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2], 1002);
}

fn bad_control_frames() {
    expect_failure(frame(0x09, b"fragmented ping"), 1002);
    expect_failure(frame(0x89, &[7u8; 126]), 1002);
    expect_failure(frame(0x8A, &[7u8; 126]), 1002);
    let mut close = close_payload(1000, "");
    close.extend_from_slice(&[b'r'; 124]);
    expect_failure(frame(0x88, &close), 1002);
}

fn fragment_order_violations() {
    expect_failure(frame(0x80, b"continuation with nothing open"), 1002);
    expect_failure(frame(0x00, b"non-final continuation"), 1002);
    expect_failure([frame(0x01, b"open"), frame(0x81, b"new text")].concat(), 1002);
    expect_failure([frame(0x02, b"open"), frame(0x82, b"new binary")].concat(), 1002);
}

fn close_frame_bodies() {
    expect_failure(frame(0x88, &[0x03]), 1002);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        expect_failure(frame(0x88, &close_payload(code, "")), 1002);
    }
    let mut bad_reason = close_payload(1000, "");
    bad_reason.extend_from_slice(b"\xce\xba\xe1\xbd");
    expect_failure(frame(0x88, &bad_reason), 1007);
}

fn valid_close_codes_are_echoed() {
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
        let (server, rx) = scripted(move |s| s.write_all(&frame(0x88, &close_payload(code, "why"))).unwrap());
        let c = Client::new(&server.url("/"));
        assert_eq!(close_event(&c), (code, "why".to_string(), true), "code {code}");
        assert!(errors(&c).is_empty());
        assert_eq!(rx.recv_timeout(WAIT).unwrap().close, Some(Some(code)));
    }
}

fn payload_lengths_at_the_encoding_boundaries() {
    let sizes = [0usize, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20];
    let (server, _rx) = scripted(move |s| {
        for n in sizes {
            let payload: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            s.write_all(&frame(0x82, &payload)).unwrap();
        }
    });
    let c = Client::open(&server.url("/"));
    let msgs = wait_messages(&c, sizes.len());
    for (n, (data, text)) in sizes.iter().zip(msgs) {
        assert!(!text);
        assert_eq!(data.len(), *n);
        assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
    }
}

#[test]
fn lengths_not_in_their_shortest_form_fail() {
    // RFC 6455 5.2: the minimal number of bytes MUST be used (Chromium
    // fails such a frame): 5 bytes as a 16-bit and as a 64-bit length, and
    // 65535 as a 64-bit one.
    let mut short16 = vec![0x82, 126, 0, 5];
    short16.extend_from_slice(b"short");
    let mut short64 = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5];
    short64.extend_from_slice(b"long!");
    let mut mid64 = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    mid64.extend_from_slice(&[7; 65535]);
    for bytes in [short16, short64, mid64] {
        let message = expect_failure(bytes, 1002);
        assert!(message.contains("shortest"), "{message}");
    }
}

fn length_with_top_bit_set() {
    expect_failure(vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], 1002);
}

fn length_beyond_max_message_size_fails_before_the_payload() {
    // Only the header is sent: a client that waited for 1 TiB would hang.
    let (server, rx) = scripted(|s| s.write_all(&[0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0]).unwrap());
    let c = Client::new(&server.url("/"));
    let msg = assert_failed(&c);
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(rx.recv_timeout(WAIT).unwrap().close, Some(Some(1009)));
    // Across fragments: each is small, the sum is over the limit.
    let (server, rx) = scripted(|s| {
        s.write_all(&[frame(0x02, &[0; 600]), frame(0x80, &[0; 600])].concat()).unwrap();
    });
    let c = Client::with(&server.url("/"), &[], &Opts { max_message_size: Some(1000), ..Opts::default() });
    assert_failed(&c);
    assert_eq!(rx.recv_timeout(WAIT).unwrap().close, Some(Some(1009)));
}

fn ping_inside_a_fragmented_message_is_answered_at_once() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        s.write_all(&[frame(0x01, b"Hello, "), frame(0x89, b"are you there?")].concat()).unwrap();
        // The pong must come before the message is finished.
        s.set_read_timeout(Some(WAIT)).unwrap();
        let pong = read_frame(&mut s).unwrap();
        s.write_all(&frame(0x80, b"world")).unwrap();
        let _ = tx.lock().unwrap().send((pong.first, pong.payload));
        read_client(&mut s);
    });
    let c = Client::open(&server.url("/"));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (0x8A, b"are you there?".to_vec()));
    assert_eq!(wait_messages(&c, 1), vec![(b"Hello, world".to_vec(), true)]);
}

fn ping_with_125_bytes_gets_the_same_125_back() {
    let payload: Vec<u8> = (0..125u8).collect();
    let p = payload.clone();
    let (server, rx) = scripted(move |s| s.write_all(&[frame(0x89, &p), frame(0x81, b"done")].concat()).unwrap());
    let c = Client::open(&server.url("/"));
    // "done" follows the ping, so the pong is queued before the close frame.
    wait_messages(&c, 1);
    c.close(1000, None);
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(seen.frames, vec![(0x8A, payload)]);
}

fn unsolicited_pong_is_ignored() {
    let (server, rx) = scripted(|s| s.write_all(&[frame(0x8A, b"unasked"), frame(0x81, b"after")].concat()).unwrap());
    let c = Client::open(&server.url("/"));
    assert_eq!(wait_messages(&c, 1), vec![(b"after".to_vec(), true)]);
    c.close(1000, None);
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert!(seen.frames.is_empty(), "client answered a pong: {:?}", seen.frames);
    assert_eq!(seen.close, Some(Some(1000)));
}

fn data_after_the_servers_close_frame_fails_and_is_not_delivered() {
    let (server, rx) =
        scripted(|s| s.write_all(&[frame(0x88, &close_payload(1000, "")), frame(0x81, b"too late")].concat()).unwrap());
    let c = Client::new(&server.url("/"));
    let msg = assert_failed(&c);
    assert!(msg.contains("after its close frame"), "{msg}");
    assert!(c.rec.messages().is_empty());
    // The client had already answered the close frame.
    assert_eq!(rx.recv_timeout(WAIT).unwrap().close, Some(Some(1000)));
}

fn ping_after_the_servers_close_frame_gets_no_pong() {
    let (server, rx) = scripted(|s| {
        s.write_all(&[frame(0x88, &close_payload(1000, "")), frame(0x89, b"late ping")].concat()).unwrap()
    });
    let c = Client::new(&server.url("/"));
    assert_eq!(close_event(&c), (1000, String::new(), true));
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(seen.close, Some(Some(1000)));
    assert!(seen.frames.is_empty());
}

fn tcp_close_without_close_frame_is_1006_without_error() {
    let server = raw_server(|mut s| {
        raw_handshake(&mut s, "");
        s.write_all(&frame(0x81, b"last words")).unwrap();
        // The stream drops here: FIN, no close frame.
    });
    let c = Client::new(&server.url("/"));
    assert_eq!(close_event(&c), (1006, String::new(), false));
    assert!(errors(&c).is_empty(), "{:?}", c.rec.events());
    assert_eq!(c.rec.messages(), vec![(b"last words".to_vec(), true)]);
}

fn message_echoed_from_on_message_goes_out_before_the_failure_close() {
    // Autobahn 4.1.3: a message, then a reserved opcode. The echo sent from
    // inside on_message must still reach the server before close 1002.
    let (server, rx) = scripted(|s| s.write_all(&[frame(0x81, b"echo me"), frame(0x85, b"")].concat()).unwrap());
    let rec = Recorder::new();
    rec.set_hook(|ws, ev| {
        if let Ev::Message { data, .. } = ev {
            assert_eq!(unsafe { ws_send_string(ws, data.as_ptr().cast(), data.len()) }, WS_OK);
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    assert_failed(&c);
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(seen.frames, vec![(0x81, b"echo me".to_vec())]);
    assert_eq!(seen.close, Some(Some(1002)));
}

// ----- the opening handshake, checked strictly -----

fn response_header_names_and_tokens_are_case_insensitive() {
    let server = answer(
        "HTTP/1.1 101 Switching Protocols\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
         sec-websocket-accept: {accept}\r\nSEC-WEBSOCKET-PROTOCOL: chat\r\n\r\n"
            .into(),
    );
    let c = Client::try_with(&server.url("/"), &["chat"], None, Recorder::new()).unwrap();
    c.wait_open();
    assert_eq!(c.protocol(), "chat");
}

fn response_head_over_64_kib_fails() {
    let filler: String = (0..80).map(|i| format!("X-Filler-{i}: {}\r\n", "a".repeat(900))).collect();
    let server = answer(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{filler}Sec-WebSocket-Accept: {{accept}}\r\n\r\n"
    ));
    let c = Client::new(&server.url("/"));
    let msg = assert_failed(&c);
    assert!(msg.contains("64") || msg.contains("larger"), "{msg}");
}

fn response_slower_than_the_connect_timeout_fails() {
    let server = raw_server(|mut s| {
        read_request(&mut s);
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n").unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let c = Client::with(&server.url("/"), &[], &Opts { connect_timeout_ms: Some(400), ..Opts::default() });
    let msg = assert_failed(&c);
    assert!(msg.contains("timeout"), "{msg}");
}

fn redirects_are_not_followed() {
    for status in [
        "300 Multiple Choices",
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        let target = echo_server();
        let server = answer(format!("HTTP/1.1 {status}\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n", target.url("/")));
        let c = Client::new(&server.url("/"));
        let msg = assert_failed(&c);
        assert!(msg.contains(&status[..3]), "{msg}");
    }
}

every_mode!(
    invalid_utf8_text_in_one_frame,
    invalid_utf8_fails_at_the_first_fragment,
    code_points_split_across_fragments_are_accepted,
    rsv_bits_without_extension,
    reserved_opcodes,
    masked_server_frame,
    bad_control_frames,
    fragment_order_violations,
    close_frame_bodies,
    valid_close_codes_are_echoed,
    payload_lengths_at_the_encoding_boundaries,
    length_with_top_bit_set,
    length_beyond_max_message_size_fails_before_the_payload,
    ping_inside_a_fragmented_message_is_answered_at_once,
    ping_with_125_bytes_gets_the_same_125_back,
    unsolicited_pong_is_ignored,
    data_after_the_servers_close_frame_fails_and_is_not_delivered,
    ping_after_the_servers_close_frame_gets_no_pong,
    tcp_close_without_close_frame_is_1006_without_error,
    message_echoed_from_on_message_goes_out_before_the_failure_close,
    response_header_names_and_tokens_are_case_insensitive,
    response_head_over_64_kib_fails,
    response_slower_than_the_connect_timeout_fails,
    redirects_are_not_followed,
);
