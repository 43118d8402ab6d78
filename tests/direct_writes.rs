//! Sends written directly by the caller's thread (an isolated send skips
//! the loop's queue) mixed with a socket that blocks and with the close
//! timeout: every message arrives whole and in order before the close
//! frame, and a peer that never reads is ended by the close timeout.
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
use std::time::{Duration, Instant};
use ws::ffi::*;

/// A server that reads nothing until `go`, then reads every frame; what
/// it read goes back through the returned channel.
type Frames = Vec<(u8, Vec<u8>)>;

fn reads_after(go: crossbeam_channel::Receiver<()>) -> (Server, crossbeam_channel::Receiver<Frames>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let server = raw_server(move |mut s: TcpStream| {
        raw_handshake(&mut s, "");
        let _ = go.recv_timeout(WAIT);
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = read_frame(&mut s) {
            let close = f.first == 0x88;
            frames.push((f.first, f.payload));
            if close {
                let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
                break;
            }
        }
        let _ = tx.send(frames);
    });
    (server, rx)
}

/// Sends from this thread, spaced so that each may be written directly to
/// the socket, until one stays queued behind a full socket buffer.
fn send_until_blocked(c: &Client, size: usize) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let mut m = vec![(i % 251) as u8; size];
        m[..4].copy_from_slice(&i.to_be_bytes());
        assert_eq!(c.send_bytes(&m), WS_OK);
        sent.push(m);
        if c.buffered() > 0 && i >= 3 {
            break;
        }
        // Isolated sends go direct; a burst goes through the loop.
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(c.buffered() > 0, "the socket never filled");
    sent
}

fn small_buffer_opts(close_timeout_ms: u32) -> Opts {
    Opts { close_timeout_ms: Some(close_timeout_ms), ..Opts::default() }
}

fn client_with_small_send_buffer(url: &str, opts: &Opts) -> Client {
    let rec = Recorder::new();
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_close_timeout_ms(o, opts.close_timeout_ms.unwrap()), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 4096);
        let c = Client::try_with_options(url, &[], o, rec).unwrap();
        ws_options_free(o);
        c
    }
}

#[test]
fn direct_writes_then_a_blocked_socket_then_close_deliver_everything_in_order() {
    let (go, gate) = crossbeam_channel::bounded(1);
    let (server, frames) = reads_after(gate);
    let c = client_with_small_send_buffer(&server.url("/"), &small_buffer_opts(5000));
    c.wait_open();
    let sent = send_until_blocked(&c, 16 * 1024);
    assert_eq!(c.close(1000, None), WS_OK);
    // The server reads only now, after the close was asked for: every
    // message, whole and in order, then the close frame.
    go.send(()).unwrap();
    let frames = frames.recv_timeout(WAIT).expect("the server read");
    let data: Vec<Vec<u8>> = frames.iter().filter(|(f, _)| *f == 0x82).map(|(_, p)| p.clone()).collect();
    assert_eq!(data.len(), sent.len(), "messages lost or added");
    assert!(data == sent, "messages changed or reordered");
    assert_eq!(frames.last().map(|f| f.0), Some(0x88), "the close frame comes last");
    assert_eq!(close_event(&c), (1000, String::new(), true));
    assert_eq!(c.buffered(), 0);
}

#[test]
fn direct_writes_to_a_peer_that_never_reads_end_at_the_close_timeout() {
    let (_go, gate) = crossbeam_channel::bounded::<()>(1);
    let (server, _frames) = reads_after(gate);
    let c = client_with_small_send_buffer(&server.url("/"), &small_buffer_opts(300));
    c.wait_open();
    send_until_blocked(&c, 16 * 1024);
    let asked = Instant::now();
    assert_eq!(c.close(1000, None), WS_OK);
    // The close frame never gets out: the close timeout, counted from the
    // request (no write progress after it), ends the connection.
    let (code, _, clean) = close_event(&c);
    assert_eq!((code, clean), (1006, false));
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(290), "ended before the close timeout: {took:?}");
    assert!(took < WAIT, "took {took:?}");
    assert!(errors(&c).is_empty(), "a close timeout is no error: {:?}", errors(&c));
}
