//! Raw protocol: the handshake request and answer, server frames, and
//! client frames as a raw server reads them.

// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

use crate::common::WAIT;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ----- raw protocol helpers -----

/// Reads the request head; returns it as text.
pub fn read_request(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

pub fn request_header(request: &str, name: &str) -> Option<String> {
    request.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn accept_key(request: &str) -> String {
    let key = request_header(request, "sec-websocket-key").unwrap_or_default();
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

/// Reads the request and answers 101 with `extra` header lines.
pub fn raw_handshake<S: Read + Write>(stream: &mut S, extra: &str) -> String {
    let request = read_request(stream);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_key(&request)
    );
    stream.write_all(response.as_bytes()).unwrap();
    request
}

/// An unmasked server frame with the first byte `first` (FIN, RSV, opcode).
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let len = payload.len();
    if len < 126 {
        v.push(len as u8);
    } else if len < 65536 {
        v.push(126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason.as_bytes());
    v
}

/// A client frame read by a raw server, unmasked.
#[derive(Debug, PartialEq)]
pub struct ClientFrame {
    pub first: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Reads one client frame; None at EOF or on the read timeout.
pub fn read_frame(stream: &mut impl Read) -> Option<ClientFrame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some(ClientFrame { first: head[0], masked, payload })
}

/// Reads client frames until a close frame; returns its code (None: no
/// code) or panics if the connection ended without one.
pub fn read_until_close(stream: &mut TcpStream) -> Option<u16> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    loop {
        let f = read_frame(stream).expect("client sent no close frame");
        if f.first & 0x0f == 8 {
            return (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
        }
    }
}

/// True when the peer closed TCP (EOF or reset) within `timeout`.
pub fn peer_closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
