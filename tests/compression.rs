//! permessage-deflate (RFC 7692) against a server that speaks raw bytes:
//! every malformed negotiation, the RSV1 rules, zip bombs, fragments, and
//! what libws puts on the wire (tests/support/pmd.rs is the server's side).
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/pmd.rs"]
mod pmd;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use frames::*;
use handles::*;
use pmd::*;
use servers::*;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ws::ffi::*;

/// JSON-like text of about `n` bytes: what compression is for.
fn json(n: usize) -> String {
    let mut s = String::from("[");
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"symbol\":\"ETH-EUR\",\"price\":\"{}.{:02}\",\"size\":\"0.{:04}\",\"side\":\"{}\"}},",
            3000 + i * 7 % 113,
            i * 13 % 100,
            i * 37 % 10_000,
            if i % 3 == 0 { "sell" } else { "buy" }
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A server that answers with `answer`, runs `script`, then reads the
/// client until its close frame, whose code (None: no code; outer None:
/// TCP closed without one) it reports.
fn scripted(
    answer: &str,
    script: impl Fn(&mut PmdConn) + Send + Sync + 'static,
) -> (Server, crossbeam_channel::Receiver<Option<Option<u16>>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let answer = answer.to_string();
    let server = raw_server(move |s| {
        let mut conn = PmdConn::accept(s, &answer);
        script(&mut conn);
        conn.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut close = None;
        while let Some(f) = read_frame(&mut conn.stream) {
            if f.first & 0x0f == 8 {
                close = Some((f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]])));
                break;
            }
        }
        let _ = tx.lock().unwrap().send(close);
    });
    (server, rx)
}

/// The server agrees on `answer` and sends `bytes`: the client must fail
/// with `code` on the wire, then on_error and on_close 1006.
fn expect_failure(answer: &str, bytes: Vec<u8>, code: u16) -> String {
    let (server, rx) = scripted(answer, move |c| c.stream.write_all(&bytes).unwrap());
    let c = Client::new(&server.url("/"));
    let message = assert_failed(&c);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Some(Some(code)), "client's close frame ({message})");
    message
}

const PMD: &str = "permessage-deflate";

// ----- negotiation -----

#[test]
fn default_offer_is_chromiums_and_the_answer_shows_as_written() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |s| {
        let conn = PmdConn::accept(s, "permessage-deflate; server_no_context_takeover");
        let _ = tx.lock().unwrap().send(conn.request.clone());
        pmd_echo(conn);
    });
    let c = Client::open(&server.url("/"));
    let request = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(
        request_header(&request, "sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(c.extensions(), "permessage-deflate; server_no_context_takeover");
    let text = json(5000);
    for _ in 0..3 {
        assert_eq!(c.send_text(&text), WS_OK);
    }
    let msgs = wait_messages(&c, 3);
    assert!(msgs.iter().all(|(m, t)| *t && *m == text.as_bytes()));
    c.close(1000, None);
    assert_eq!(close_event(&c), (1000, String::new(), true));
}

#[test]
fn compression_off_sends_no_offer_and_refuses_an_answer() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |s| {
        let conn = PmdConn::accept(s, "");
        let _ = tx.lock().unwrap().send(conn.request.clone());
        pmd_echo(conn);
    });
    let off = Opts { compression: Some(false), ..Opts::default() };
    let c = Client::with(&server.url("/"), &[], &off);
    c.wait_open();
    assert_eq!(request_header(&rx.recv_timeout(WAIT).unwrap(), "sec-websocket-extensions"), None);
    assert_eq!(c.extensions(), "");
    // Off, but the server answers with the extension anyway.
    let server = raw_server(|s| pmd_echo(PmdConn::accept(s, PMD)));
    let c = Client::with(&server.url("/"), &[], &off);
    let msg = assert_failed(&c);
    assert!(msg.contains("not offered"), "{msg}");
}

#[test]
fn malformed_answers_fail_the_connection_naming_the_fault() {
    let default = Opts::default();
    let asked_10 = Opts { client_max_window_bits: Some(10), server_max_window_bits: Some(10), ..Opts::default() };
    let asked_nct = Opts { server_no_context_takeover: true, ..Opts::default() };
    let cases: Vec<(&str, &Opts, &str)> = vec![
        ("permessage-deflate; foo", &default, "unknown parameter foo"),
        ("permessage-deflate; max_window_bits=10", &default, "unknown parameter"),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", &default, "repeated"),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", &default, "repeated"),
        ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", &default, "repeated"),
        ("permessage-deflate; server_max_window_bits=7", &default, "out of range"),
        ("permessage-deflate; server_max_window_bits=16", &default, "out of range"),
        ("permessage-deflate; client_max_window_bits=99", &default, "out of range"),
        ("permessage-deflate; server_max_window_bits=abc", &default, "not a plain number"),
        ("permessage-deflate; server_max_window_bits=010", &default, "not a plain number"),
        ("permessage-deflate; client_max_window_bits=-9", &default, "not a plain number"),
        ("permessage-deflate; client_max_window_bits=0x9", &default, "not a plain number"),
        ("permessage-deflate; client_max_window_bits=\"\"", &default, "not a plain number"),
        ("permessage-deflate; server_max_window_bits", &default, "no value"),
        ("permessage-deflate; client_max_window_bits", &default, "no value"),
        ("permessage-deflate; server_no_context_takeover=yes", &default, "takes no value"),
        // client_max_window_bits with a value we did not offer.
        ("permessage-deflate; client_max_window_bits=11", &asked_10, "larger than the 10 offered"),
        ("permessage-deflate; server_max_window_bits=12", &asked_10, "larger than the 10 offered"),
        // What an accepting server must echo.
        ("permessage-deflate; client_max_window_bits=10", &asked_10, "server_max_window_bits was offered"),
        ("permessage-deflate", &asked_nct, "server_no_context_takeover was offered"),
        // Two answers, another extension.
        ("permessage-deflate, permessage-deflate", &default, "accepted twice"),
        ("permessage-deflate\r\nSec-WebSocket-Extensions: permessage-deflate", &default, "accepted twice"),
        ("x-webkit-deflate-frame", &default, "x-webkit-deflate-frame"),
        ("permessage-deflate, mux", &default, "\"mux\", which was not offered"),
        ("permessage-deflate; client_max_window_bits=\"10", &default, "unterminated"),
    ];
    for (answer, opts, fault) in cases {
        let answer_line = answer.to_string();
        let server = raw_server(move |mut s| {
            raw_handshake(&mut s, &format!("Sec-WebSocket-Extensions: {answer_line}\r\n"));
            peer_closed_within(&mut s, WAIT);
        });
        let c = Client::with(&server.url("/"), &[], opts);
        let msg = assert_failed(&c);
        assert!(msg.contains(fault), "{answer:?}: {msg:?} should name {fault:?}");
        assert!(!c.rec.events().iter().any(|e| matches!(e, Ev::Open { .. })), "{answer}");
    }
}

#[test]
fn window_sizes_8_are_offered_as_9() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |s| {
        let conn = PmdConn::accept(s, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9");
        let _ = tx.lock().unwrap().send(conn.request.clone());
        pmd_echo(conn);
    });
    let opts = Opts { client_max_window_bits: Some(8), server_max_window_bits: Some(8), ..Opts::default() };
    let c = Client::with(&server.url("/"), &[], &opts);
    c.wait_open();
    let request = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(
        request_header(&request, "sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=9")
    );
    let text = json(20_000);
    c.send_text(&text);
    assert_eq!(wait_messages(&c, 1), vec![(text.into_bytes(), true)]);
}

#[test]
fn refused_option_values_set_the_last_error() {
    unsafe {
        let o = ws_options_new();
        for bits in [-1, 1, 7, 16] {
            assert_eq!(ws_options_set_client_max_window_bits(o, bits), WS_ERR_INVALID_ARGUMENT);
            let e = std::ffi::CStr::from_ptr(ws_last_error()).to_str().unwrap();
            assert!(e.contains("client max window bits") && e.contains(&bits.to_string()), "{e}");
            assert_eq!(ws_options_set_server_max_window_bits(o, bits), WS_ERR_INVALID_ARGUMENT);
        }
        for bits in [0, 8, 15] {
            assert_eq!(ws_options_set_client_max_window_bits(o, bits), WS_OK);
            assert_eq!(ws_options_set_server_max_window_bits(o, bits), WS_OK);
        }
        assert_eq!(ws_options_set_compression(o, false), WS_OK);
        assert_eq!(ws_options_set_compression_threshold(o, 0), WS_OK);
        ws_options_free(o);
        let null = std::ptr::null_mut();
        assert_eq!(ws_options_set_compression(null, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_no_context_takeover(null, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_server_no_context_takeover(null, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_max_window_bits(null, 9), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_server_max_window_bits(null, 9), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_compression_threshold(null, 9), WS_ERR_INVALID_ARGUMENT);
    }
}

// ----- frames -----

#[test]
fn rsv1_on_a_continuation_frame() {
    let mut c = compressor(15);
    let d = deflate_message(&mut c, json(1000).as_bytes());
    let msg = expect_failure(PMD, [frame(0x41, &d[..10]), frame(0xC0, &d[10..])].concat(), 1002);
    assert!(msg.contains("continuation"), "{msg}");
}

#[test]
fn rsv1_without_agreement() {
    let mut c = compressor(15);
    let d = deflate_message(&mut c, b"hello hello hello");
    // Offered, but the server did not accept.
    let msg = expect_failure("", frame(0xC1, &d), 1002);
    assert!(msg.contains("not agreed"), "{msg}");
}

#[test]
fn compressed_control_frames() {
    expect_failure(PMD, frame(0xC9, b"ping"), 1002);
    expect_failure(PMD, frame(0xCA, b"pong"), 1002);
    let msg = expect_failure(PMD, frame(0xC8, &close_payload(1000, "")), 1002);
    assert!(msg.contains("control"), "{msg}");
}

#[test]
fn data_that_is_not_deflate() {
    expect_failure(PMD, frame(0xC2, &[0xff; 20]), 1002);
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// sanitize: not asan: its memory bound; ASan's shadow and quarantine take hundreds of MiB
#[test]
fn zip_bomb_fails_with_1009_quickly_and_in_bounded_memory() {
    // 1 MiB of DEFLATE that inflates to 1 GiB of zeros: one block for the
    // first MiB, then the block for "another MiB of what came before",
    // repeated (every back-reference lands on zeros).
    let mut c = compressor(15);
    let zeros = vec![0u8; 1 << 20];
    let first = deflate_message(&mut c, &zeros);
    let mut again = deflate_message(&mut c, &zeros);
    again.extend_from_slice(&TAIL); // an empty stored block: fine mid-stream
    let mut bomb = first;
    bomb.extend_from_slice(&TAIL);
    for _ in 1..1024 {
        bomb.extend_from_slice(&again);
    }
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let peak = peak_rss_kib();
    let started = Instant::now();
    let (server, rx) = scripted(PMD, move |conn| {
        // The client stops reading when it fails: ignore the write error.
        let _ = conn.stream.write_all(&frame(0xC2, &bomb));
    });
    let c = Client::new(&server.url("/"));
    let msg = assert_failed(&c);
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Some(Some(1009)));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // The default limit is 64 MiB: far from the 1 GiB it would inflate to.
    let grown = peak_rss_kib().saturating_sub(peak);
    assert!(grown < 256 * 1024, "peak memory grew by {grown} KiB");
    // A smaller limit: 1009 as well.
    let mut c2 = compressor(15);
    let small = deflate_message(&mut c2, &vec![b'a'; 100_000]);
    let (server, rx) = scripted(PMD, move |conn| conn.stream.write_all(&frame(0xC1, &small)).unwrap());
    let c = Client::with(&server.url("/"), &[], &Opts { max_message_size: Some(99_999), ..Opts::default() });
    assert_failed(&c);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Some(Some(1009)));
}

#[test]
fn compressed_message_in_hundreds_of_fragments() {
    let text = json(300_000);
    let t = text.clone();
    let (server, _rx) = scripted(PMD, move |conn| {
        let mut c = compressor(15);
        let d = deflate_message(&mut c, t.as_bytes());
        let n = 500;
        let mut wire = Vec::new();
        for i in 0..n {
            let piece = &d[i * d.len() / n..(i + 1) * d.len() / n];
            let first = match i {
                0 => 0x41,
                _ if i + 1 == n => 0x80,
                _ => 0x00,
            };
            wire.extend(frame(first, piece));
            if i % 100 == 50 {
                wire.extend(frame(0x89, b"in between"));
            }
        }
        // The same message again: it refers back to the first (context takeover).
        wire.extend(frame(0xC1, &deflate_message(&mut c, t.as_bytes())));
        conn.stream.write_all(&wire).unwrap();
    });
    let c = Client::open(&server.url("/"));
    let msgs = wait_messages(&c, 2);
    assert!(msgs[0] == (text.clone().into_bytes(), true), "first message differs");
    assert!(msgs[1] == (text.into_bytes(), true), "second message differs");
}

#[test]
fn message_that_does_not_shrink() {
    // From the server: random bytes, compressed, are larger than they were.
    let data = noise(50_000, 7);
    let d2 = data.clone();
    let (server, rx) = scripted(PMD, move |conn| {
        let mut c = compressor(15);
        let d = deflate_message(&mut c, &d2);
        assert!(d.len() > d2.len());
        conn.stream.write_all(&frame(0xC2, &d)).unwrap();
        // What the client sends back: the noise uncompressed, then text
        // compressed (from a fresh context, as the noise dropped it).
        let (text, back, compressed) = conn.read_message().unwrap();
        assert!(!text && !compressed && back == d2, "noise came back compressed or changed");
        let (text, back, compressed) = conn.read_message().unwrap();
        assert!(text && compressed && back == json(4000).into_bytes());
    });
    let c = Client::open(&server.url("/"));
    assert!(wait_messages(&c, 1)[0] == (data.clone(), false));
    c.send_bytes(&data);
    c.send_text(&json(4000));
    c.close(1000, None);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Some(Some(1000)));
}

#[test]
fn empty_compressed_messages() {
    let (server, _rx) = scripted(PMD, |conn| {
        let mut c = compressor(15);
        let after = deflate_message(&mut c, b"after the empty ones");
        // RFC 7692 7.2.3.6: an empty message compresses to one 0x00 byte;
        // one with no byte at all is taken as empty as well.
        let wire = [frame(0xC1, &[0x00]), frame(0xC2, &[0x00]), frame(0xC1, b""), frame(0xC1, &after)].concat();
        conn.stream.write_all(&wire).unwrap();
    });
    let c = Client::open(&server.url("/"));
    assert_eq!(
        wait_messages(&c, 4),
        vec![(vec![], true), (vec![], false), (vec![], true), (b"after the empty ones".to_vec(), true)]
    );
}

#[test]
fn invalid_utf8_that_shows_only_after_inflating() {
    let mut c = compressor(15);
    let bad = deflate_message(&mut c, b"valid so far \xc3\x28 and then not");
    let msg = expect_failure(PMD, frame(0xC1, &bad), 1007);
    assert!(msg.contains("UTF-8"), "{msg}");
    // Cut short at the end of the message.
    let mut c = compressor(15);
    let cut = deflate_message(&mut c, b"ends inside a code point \xe2\x82");
    expect_failure(PMD, [frame(0x41, &cut[..5]), frame(0x80, &cut[5..])].concat(), 1007);
}

// ----- what libws sends -----

#[test]
fn sends_are_compressed_on_the_io_thread_and_counted_uncompressed() {
    let text = json(100_000);
    let t = text.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |s| {
        let mut conn = PmdConn::accept(s, PMD);
        conn.send(true, b"go", false).unwrap();
        let got = conn.read_message();
        let _ = tx.lock().unwrap().send((got, conn.wire_in));
        pmd_echo(conn);
    });
    let rec = Recorder::new();
    let buffered = std::sync::Arc::new(Mutex::new(None));
    let b = buffered.clone();
    rec.set_hook(move |ws, ev| {
        if let Ev::Message { .. } = ev {
            // On the I/O thread: nothing is written before this returns.
            assert_eq!(unsafe { ws_send_string(ws, t.as_ptr().cast(), t.len()) }, WS_OK);
            *b.lock().unwrap() = Some(unsafe { ws_buffered_amount(ws) });
        }
    });
    let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
    let (got, wire) = rx.recv_timeout(WAIT).unwrap();
    let (is_text, data, compressed) = got.unwrap();
    assert!(is_text && compressed && data == text.as_bytes());
    assert!(wire < text.len() as u64 / 5, "{wire} bytes on the wire for {}", text.len());
    assert_eq!(*buffered.lock().unwrap(), Some(text.len() as u64), "bufferedAmount counts the caller's bytes");
    poll_until("bufferedAmount 0", || c.buffered() == 0);
}

#[test]
fn messages_below_the_threshold_go_out_uncompressed() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = raw_server(move |s| {
        let mut conn = PmdConn::accept(s, PMD);
        while let Some((_, data, compressed)) = conn.read_message() {
            let _ = tx.lock().unwrap().send((data.len(), compressed));
        }
    });
    let c = Client::with(&server.url("/"), &[], &Opts { compression_threshold: Some(100), ..Opts::default() });
    c.wait_open();
    c.send_text(&json(99));
    c.send_text(&json(100));
    c.send_text("");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (99, false));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (100, true));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (0, false));
    // The default threshold, 32 bytes.
    let c = Client::open(&server.url("/"));
    c.send_text(&json(31));
    c.send_text(&json(64));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (31, false));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (64, true));
}

/// The server imposes each window size and takeover mode on libws's
/// compressor (its own inflater is strict about both), and compresses with
/// its own; messages repeat so that they reach back into earlier ones.
#[test]
fn server_chosen_parameters_are_honoured_both_ways() {
    for bits in 8..=15u8 {
        for (snct, cnct) in [(false, false), (true, true), (true, false), (false, true)] {
            let mut answer =
                format!("permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={bits}");
            if snct {
                answer.push_str("; server_no_context_takeover");
            }
            if cnct {
                answer.push_str("; client_no_context_takeover");
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            let tx = Mutex::new(tx);
            let a = answer.clone();
            let server = raw_server(move |s| {
                let mut conn = PmdConn::accept(s, &a);
                let mut wire = conn.wire_in;
                while let Some((text, data, compressed)) = conn.read_message() {
                    let _ = tx.lock().unwrap().send((compressed, conn.wire_in - wire));
                    wire = conn.wire_in;
                    conn.send(text, &data, true).unwrap();
                }
            });
            let c = Client::open(&server.url("/"));
            assert_eq!(c.extensions(), answer);
            let mut texts: Vec<String> = (0..4).map(|i| json(3000 + i * 1000)).collect();
            // A message repeated from just out of the window's reach: a
            // compressor with a larger window would refer back to the
            // first copy, which the server's inflater no longer holds.
            let block: String =
                noise((1 << bits) / 2 + 60, u32::from(bits)).iter().map(|b| format!("{b:02x}")).collect();
            texts.push(block.clone());
            texts.push(block);
            for t in &texts {
                assert_eq!(c.send_text(t), WS_OK);
            }
            let msgs = wait_messages(&c, texts.len());
            for (t, (m, is_text)) in texts.iter().zip(msgs) {
                assert!(is_text && m == t.as_bytes(), "{answer}: message differs");
            }
            let mut sizes = Vec::new();
            for _ in &texts {
                // zlib cannot deflate with 8 bits: then nothing is compressed.
                let (compressed, wire) = rx.recv_timeout(WAIT).unwrap();
                assert_eq!(compressed, bits > 8, "{answer}");
                sizes.push(wire);
            }
            // The repeated block cost as much as the first copy: nothing
            // referred back further than the window allows.
            let (first, again) = (sizes[sizes.len() - 2], sizes[sizes.len() - 1]);
            assert!(again * 10 > first * 9, "{answer}: repeat took {again} bytes after {first}");
            c.close(1000, None);
            assert_eq!(close_event(&c).0, 1000);
        }
    }
}
