//! Every ping gets its pong while the output moves: ten pings in one read
//! (Autobahn 2.10), ten pings sent a byte at a time (Autobahn 2.11), and an
//! empty and a 125-byte ping answered with two pongs, as Chromium does.
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

/// A server that shakes hands, writes `bytes` in pieces of `chop` bytes,
/// then reads the client's frames until `want` pongs came (or WAIT).
fn pings_then_pongs(bytes: Vec<u8>, chop: usize, want: usize) -> Vec<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let server = raw_server(move |mut s: TcpStream| {
        raw_handshake(&mut s, "");
        s.set_nodelay(true).unwrap();
        for piece in bytes.chunks(chop) {
            s.write_all(piece).unwrap();
        }
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut pongs = Vec::new();
        while pongs.len() < want {
            match read_frame(&mut s) {
                Some(f) if f.first == 0x8A => pongs.push(f.payload),
                Some(f) => panic!("unexpected frame {:#x}", f.first),
                None => break,
            }
        }
        let _ = tx.send(pongs);
    });
    let c = Client::open(&server.url("/"));
    let pongs = rx.recv_timeout(WAIT * 2).expect("the server finished");
    drop(c);
    pongs
}

#[test]
fn ten_pings_in_one_read_get_ten_pongs_in_order_autobahn_2_10() {
    let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| format!("ping payload {i}").into_bytes()).collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(0x89, p)).collect();
    assert_eq!(pings_then_pongs(wire, usize::MAX, 10), payloads);
}

#[test]
fn ten_pings_sent_in_one_byte_chops_get_ten_pongs_autobahn_2_11() {
    let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| format!("chopped {i}").into_bytes()).collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(0x89, p)).collect();
    assert_eq!(pings_then_pongs(wire, 1, 10), payloads);
}

#[test]
fn an_empty_ping_and_a_125_byte_ping_get_two_pongs_as_in_chromium() {
    let big = vec![0x5a; 125];
    let wire = [frame(0x89, b""), frame(0x89, &big)].concat();
    assert_eq!(pings_then_pongs(wire, usize::MAX, 2), vec![Vec::new(), big]);
}
