//! Interoperability with the servers people run: the Python `websockets`
//! library and the Node.js `ws` package (tests/peers/*), installed by
//! scripts/test.sh into target/peers. Under CI=true a missing peer fails the
//! test; elsewhere the test says it was skipped.
//!
//! sanitize: none: not tried under the sanitizers yet

#[path = "support/cbuild.rs"]
mod cbuild;
mod common;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;

use cbuild::*;
use handles::*;
use paths::*;
use peers::*;
use std::sync::OnceLock;
use std::time::Duration;
use ws::ffi::*;

fn python() -> Option<&'static Peer> {
    static PEER: OnceLock<Option<Peer>> = OnceLock::new();
    PEER.get_or_init(|| {
        start_peer(
            "Python websockets",
            "python3",
            &["tests/peers/python_server.py"],
            "PYTHONPATH",
            "target/peers/python",
        )
    })
    .as_ref()
}

fn node() -> Option<&'static Peer> {
    static PEER: OnceLock<Option<Peer>> = OnceLock::new();
    PEER.get_or_init(|| {
        start_peer("Node.js ws", "node", &["tests/peers/node_server.js"], "NODE_PATH", "target/peers/node/node_modules")
    })
    .as_ref()
}

fn echo_all_kinds(peer: &Peer) {
    let c = Client::open(&peer.url("/"));
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    assert_eq!(c.send_text("text ✓"), WS_OK);
    assert_eq!(c.send_bytes(&[9, 8, 7]), WS_OK);
    assert_eq!(c.send_text(""), WS_OK);
    assert_eq!(c.send_bytes(&[]), WS_OK);
    assert_eq!(c.send_bytes(&big), WS_OK);
    let msgs = wait_messages(&c, 5);
    assert_eq!(msgs[0], ("text ✓".as_bytes().to_vec(), true));
    assert_eq!(msgs[1], (vec![9, 8, 7], false));
    assert_eq!(msgs[2], (vec![], true));
    assert_eq!(msgs[3], (vec![], false));
    assert!(msgs[4] == (big, false), "16 MiB echo differs");
    c.close(1000, None);
    assert_eq!(close_event(&c), (1000, String::new(), true));
}

fn fragmented_message_from_the_server(peer: &Peer) {
    let c = Client::open(&peer.url("/"));
    c.send_text("fragments Hel|lo, w€|orld|!");
    assert_eq!(wait_messages(&c, 1), vec![("Hello, w€orld!".as_bytes().to_vec(), true)]);
}

fn server_ping_gets_matching_pong(peer: &Peer) {
    let c = Client::open(&peer.url("/"));
    c.send_text("ping payload-42");
    assert_eq!(wait_messages(&c, 1), vec![(b"pong payload-42".to_vec(), true)]);
}

fn server_initiated_close(peer: &Peer) {
    let c = Client::open(&peer.url("/"));
    c.send_text("close 4000 server is done");
    assert_eq!(close_event(&c), (4000, "server is done".to_string(), true));
    assert!(errors(&c).is_empty());
}

/// How the server saw connection /id/TOKEN close (asks until it knows).
fn close_seen_by_server(peer: &Peer, token: &str) -> String {
    let q = Client::open(&peer.url("/"));
    for i in 0..200 {
        assert_eq!(q.send_text(&format!("close-of {token}")), WS_OK);
        let answer = String::from_utf8(wait_messages(&q, i + 1)[i].0.clone()).unwrap();
        if answer != "pending" {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("server never saw connection {token} close");
}

fn client_close_codes_as_the_server_records_them(peer: &Peer) {
    let cases: [(u16, Option<&str>, &str); 4] = [
        (4001, Some("client bye"), "4001 client bye"),
        (1000, None, "1000 "),
        (0, Some("reason only"), "1000 reason only"),
        (0, None, "1005 "),
    ];
    for (i, (code, reason, expect)) in cases.into_iter().enumerate() {
        let token = format!("close-{i}-{}", std::process::id());
        let c = Client::open(&peer.url(&format!("/id/{token}")));
        assert_eq!(c.close(code, reason), WS_OK);
        let (_, _, clean) = close_event(&c);
        assert!(clean);
        assert_eq!(close_seen_by_server(peer, &token), expect);
    }
}

fn subprotocol_negotiation(peer: &Peer) {
    let c = Client::try_with(&peer.url("/"), &["superchat", "chat"], None, Recorder::new()).unwrap();
    c.wait_open();
    assert_eq!(c.protocol(), "superchat");
    // Offered, but the server supports none of them: the connection fails.
    let c = Client::try_with(&peer.url("/"), &["mqtt"], None, Recorder::new()).unwrap();
    let msg = assert_failed(&c);
    assert!(msg.contains("none of the offered"), "{msg}");
    assert_eq!(c.protocol(), "");
}

fn extra_headers_as_the_server_sees_them(peer: &Peer) {
    let opts = Opts {
        headers: vec![("X-Libws-Test".into(), "hello world".into()), ("Authorization".into(), "Bearer t0k".into())],
        ..Opts::default()
    };
    let c = Client::try_with(&peer.url("/some/path?a=1"), &["chat"], Some(&opts), Recorder::new()).unwrap();
    c.wait_open();
    c.send_text("headers");
    let json = wait_messages(&c, 1)[0].0.clone();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["path"], "/some/path?a=1");
    assert_eq!(v["headers"]["x-libws-test"], "hello world");
    assert_eq!(v["headers"]["authorization"], "Bearer t0k");
    assert_eq!(v["headers"]["sec-websocket-protocol"], "chat");
    assert_eq!(v["headers"]["host"], format!("127.0.0.1:{}", peer.port));
}

fn thousand_messages_in_order(peer: &Peer) {
    let c = Client::open(&peer.url("/"));
    for i in 0..1000 {
        if i % 2 == 0 {
            assert_eq!(c.send_text(&format!("m{i}")), WS_OK);
        } else {
            assert_eq!(c.send_bytes(format!("m{i}").as_bytes()), WS_OK);
        }
    }
    let msgs = wait_messages(&c, 1000);
    for (i, (data, text)) in msgs.iter().enumerate() {
        assert_eq!(*data, format!("m{i}").into_bytes());
        assert_eq!(*text, i % 2 == 0);
    }
}

/// The C program that uses only the public API (tests/c/contract.c) has its whole conversation
/// with the peer: subprotocol, text and 1 MiB echoes, close 1000 both ways,
/// the server's close 4000 with a reason.
fn c_contract_program(peer: &Peer) {
    let scratch = scratch_dir(&format!("contract-peer-{}", peer.port));
    let binary = scratch.join("contract");
    compile(&repo_dir().join("tests/c/contract.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let out = run(std::process::Command::new(&binary).arg(peer.url("/contract")).arg("chat"));
    assert!(out.contains("contract: all checks passed"), "{out}");
}

/// A C program (tests/c/extensions.c) against the peer serving
/// compression: ws_extensions() shows the peer's answer, messages intact.
fn c_extensions_program(peer: &Peer) {
    let scratch = scratch_dir(&format!("extensions-peer-{}", peer.port));
    let binary = scratch.join("extensions");
    compile(&repo_dir().join("tests/c/extensions.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let out = run(std::process::Command::new(&binary).arg(peer.url("/deflate/1/0/-/-")));
    assert!(out.contains("extensions: permessage-deflate; server_no_context_takeover\n"), "{out}");
    assert!(out.contains("messages intact\n"), "{out}");
}

// ----- permessage-deflate, served by the peer -----

/// JSON-like text of `n` bytes.
fn json(n: usize, seed: usize) -> String {
    let mut s = String::from("[");
    let mut i = seed;
    while s.len() < n {
        s.push_str(&format!("{{\"id\":{i},\"user\":\"u{}\",\"text\":\"message number {i}\",\"ok\":true}},", i % 17));
        i += 1;
    }
    s.truncate(n);
    s
}

/// Messages that need every part of the codec: repeats within and across
/// messages (context takeover), a repeat just past a 9-bit window, a short
/// one under the threshold, binary, empty, and 200 KiB.
fn compressed_conversation(c: &Client, what: &str) {
    let block: String =
        (0..600u32).map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26)).collect();
    let texts = [json(2000, 0), json(2000, 0), block.clone(), block, "hi".to_string(), String::new(), json(200_000, 5)];
    for t in &texts {
        assert_eq!(c.send_text(t), WS_OK);
    }
    let bin: Vec<u8> = json(5000, 9).into_bytes().iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(c.send_bytes(&bin), WS_OK);
    let msgs = wait_messages(c, texts.len() + 1);
    for (i, t) in texts.iter().enumerate() {
        assert!(msgs[i] == (t.clone().into_bytes(), true), "{what}: message {i} differs");
    }
    assert!(msgs[texts.len()] == (bin, false), "{what}: binary message differs");
    c.close(1000, None);
    assert_eq!(close_event(c), (1000, String::new(), true), "{what}");
    assert!(errors(c).is_empty(), "{what}: {:?}", errors(c));
}

/// The peer serves compression in every setting it has: context takeover
/// on and off each way, and window sizes 9 to 15 each way, and 8 for
/// libws's (which zlib cannot compress with: libws then sends its messages
/// uncompressed).
fn compression_in_every_server_setting(peer: &Peer) {
    for snct in [false, true] {
        for cnct in [false, true] {
            for sbits in 9..=15 {
                for cbits in 8..=15 {
                    let path = format!("/deflate/{}/{}/{sbits}/{cbits}", u8::from(snct), u8::from(cnct));
                    let c = Client::open(&peer.url(&path));
                    let ext = c.extensions();
                    assert!(ext.starts_with("permessage-deflate"), "{path}: {ext:?}");
                    assert_eq!(ext.contains("server_no_context_takeover"), snct, "{path}: {ext}");
                    assert_eq!(ext.contains("client_no_context_takeover"), cnct, "{path}: {ext}");
                    assert!(ext.contains(&format!("server_max_window_bits={sbits}")), "{path}: {ext}");
                    assert!(ext.contains(&format!("client_max_window_bits={cbits}")), "{path}: {ext}");
                    compressed_conversation(&c, &path);
                }
            }
        }
    }
}

/// Node's ws also serves with an 8-bit window of its own (zlib makes it 9,
/// which libws inflates with anyway).
fn server_window_of_8_bits(peer: &Peer) {
    for path in ["/deflate/0/0/8/8", "/deflate/1/1/8/8", "/deflate/0/0/8/-"] {
        let c = Client::open(&peer.url(path));
        assert!(c.extensions().contains("server_max_window_bits=8"), "{path}: {}", c.extensions());
        compressed_conversation(&c, path);
    }
}

/// libws asks for each setting (ws_options_*) and the peer accepts it.
fn compression_in_every_client_setting(peer: &Peer) {
    for snct in [false, true] {
        for cnct in [false, true] {
            for bits in 9..=15 {
                let opts = Opts {
                    server_no_context_takeover: snct,
                    client_no_context_takeover: cnct,
                    server_max_window_bits: Some(bits),
                    client_max_window_bits: Some(bits),
                    ..Opts::default()
                };
                let what = format!("asked snct {snct} cnct {cnct} bits {bits}");
                let c = Client::with(&peer.url("/deflate/-/-/-/-"), &[], &opts);
                c.wait_open();
                let ext = c.extensions();
                assert_eq!(ext.contains("server_no_context_takeover"), snct, "{what}: {ext}");
                assert!(ext.contains(&format!("server_max_window_bits={bits}")), "{what}: {ext}");
                compressed_conversation(&c, &what);
            }
        }
    }
}

/// The conversations of the uncompressed tests, compressed.
fn compressed_echo_all_kinds(peer: &Peer) {
    let c = Client::open(&peer.url("/deflate/0/0/-/-"));
    assert!(c.extensions().starts_with("permessage-deflate"), "{}", c.extensions());
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    assert_eq!(c.send_text("text ✓"), WS_OK);
    assert_eq!(c.send_bytes(&big), WS_OK);
    c.send_text("fragments Hel|lo, w€|orld|!");
    c.send_text("ping payload-42");
    let msgs = wait_messages(&c, 4);
    assert_eq!(msgs[0], ("text ✓".as_bytes().to_vec(), true));
    assert!(msgs[1] == (big, false), "16 MiB echo differs");
    assert_eq!(msgs[2], ("Hello, w€orld!".as_bytes().to_vec(), true));
    assert_eq!(msgs[3], (b"pong payload-42".to_vec(), true));
    c.send_text("close 4000 server is done");
    assert_eq!(close_event(&c), (4000, "server is done".to_string(), true));
}

macro_rules! against {
    ($peer:ident: $($case:ident),* $(,)?) => {
        mod $peer {
            $(
                #[test]
                fn $case() {
                    if let Some(peer) = super::$peer() {
                        super::$case(peer);
                    }
                }
            )*
        }
    };
}

against!(python:
    echo_all_kinds,
    fragmented_message_from_the_server,
    server_ping_gets_matching_pong,
    server_initiated_close,
    client_close_codes_as_the_server_records_them,
    subprotocol_negotiation,
    extra_headers_as_the_server_sees_them,
    thousand_messages_in_order,
    c_contract_program,
    compression_in_every_server_setting,
    compression_in_every_client_setting,
    compressed_echo_all_kinds,
    c_extensions_program,
);

against!(node:
    echo_all_kinds,
    fragmented_message_from_the_server,
    server_ping_gets_matching_pong,
    server_initiated_close,
    client_close_codes_as_the_server_records_them,
    subprotocol_negotiation,
    extra_headers_as_the_server_sees_them,
    thousand_messages_in_order,
    c_contract_program,
    compression_in_every_server_setting,
    compression_in_every_client_setting,
    compressed_echo_all_kinds,
    c_extensions_program,
    server_window_of_8_bits,
);
