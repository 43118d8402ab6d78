//! The server's side of permessage-deflate (RFC 7692) over a raw TCP
//! stream, with flate2: a compressing echo server for the tests, the C
//! programs and the benchmark, and helpers to build compressed frames.

// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

use crate::frames::{accept_key, frame, read_frame, read_request};
use crate::servers::{raw_server, Server};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::Write;
use std::net::TcpStream;

pub const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Raw DEFLATE of `data`, sync-flushed, the 4-byte tail removed: one
/// message's payload as permessage-deflate sends it.
pub fn deflate_message(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync).unwrap();
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// A fresh compressor with a window of 2^bits bytes (9..=15).
pub fn compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::default(), false, bits.max(9))
}

/// Inflates one message's payload (the tail put back); None if corrupt or
/// over `limit` bytes.
pub fn inflate_message(d: &mut Decompress, data: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut input = [data, &TAIL].concat();
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    let mut rest: &[u8] = &input;
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return None;
            }
            out.reserve(out.capacity());
        }
        let (bi, bo) = (d.total_in(), d.total_out());
        let status = d.decompress_vec(rest, &mut out, FlushDecompress::None).ok()?;
        rest = &rest[(d.total_in() - bi) as usize..];
        let produced = d.total_out() - bo;
        if status == Status::StreamEnd || (out.len() < out.capacity() && (rest.is_empty() || produced == 0)) {
            break;
        }
    }
    input.clear();
    Some(out)
}

/// What the server's answer agreed on, read back from the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Agreed {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_bits: Option<u8>,
    pub client_bits: Option<u8>,
}

impl Agreed {
    /// Parses an answer such as "permessage-deflate; server_max_window_bits=10".
    pub fn from_answer(answer: &str) -> Option<Agreed> {
        if !answer.trim_start().starts_with("permessage-deflate") {
            return None;
        }
        let mut a = Agreed::default();
        for p in answer.split(';').skip(1).map(str::trim) {
            let (name, value) =
                p.split_once('=').map_or((p, None), |(n, v)| (n.trim(), Some(v.trim().trim_matches('"'))));
            let bits = value.and_then(|v| v.parse().ok());
            match name {
                "server_no_context_takeover" => a.server_no_context_takeover = true,
                "client_no_context_takeover" => a.client_no_context_takeover = true,
                "server_max_window_bits" => a.server_bits = bits,
                "client_max_window_bits" => a.client_bits = bits,
                _ => {}
            }
        }
        Some(a)
    }
}

/// One message the server read: text?, its bytes, and whether it came
/// compressed (RSV1).
pub type Received = (bool, Vec<u8>, bool);

/// A server connection with permessage-deflate agreed (or not).
pub struct PmdConn {
    pub stream: TcpStream,
    pub agreed: Option<Agreed>,
    pub request: String,
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
    /// Bytes of client frames read so far (headers included).
    pub wire_in: u64,
    /// Bytes of frames sent so far (headers included).
    pub wire_out: u64,
}

/// The size of a client frame's header (masked) for a payload of `len`.
fn client_header_len(len: usize) -> u64 {
    6 + match len {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    }
}

impl PmdConn {
    /// Reads the request and answers 101 with `answer` as
    /// Sec-WebSocket-Extensions ("" for none).
    pub fn accept(stream: TcpStream, answer: &str) -> PmdConn {
        PmdConn::accept_with(stream, |_| answer.to_string())
    }

    /// As `accept`, with the answer chosen from the request.
    pub fn accept_with(mut stream: TcpStream, choose: impl FnOnce(&str) -> String) -> PmdConn {
        let request = read_request(&mut stream);
        let answer = choose(&request);
        let extra = if answer.is_empty() { String::new() } else { format!("Sec-WebSocket-Extensions: {answer}\r\n") };
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
            accept_key(&request)
        );
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.set_nodelay(true);
        let agreed = Agreed::from_answer(&answer);
        PmdConn { stream, agreed, request, deflate: None, inflate: None, wire_in: 0, wire_out: 0 }
    }

    /// The next whole message; pings are answered; None on close or EOF
    /// (a close frame is echoed first).
    pub fn read_message(&mut self) -> Option<Received> {
        let mut data = Vec::new();
        let mut first: Option<(bool, bool)> = None;
        loop {
            let f = read_frame(&mut self.stream)?;
            self.wire_in += client_header_len(f.payload.len()) + f.payload.len() as u64;
            match f.first & 0x0f {
                0x8 => {
                    let _ = self.stream.write_all(&frame(0x88, &f.payload[..f.payload.len().min(2)]));
                    return None;
                }
                0x9 => {
                    let _ = self.stream.write_all(&frame(0x8A, &f.payload));
                    continue;
                }
                0xA => continue,
                op => {
                    if first.is_none() {
                        first = Some((op == 1, f.first & 0x40 != 0));
                    }
                    data.extend_from_slice(&f.payload);
                    if f.first & 0x80 == 0 {
                        continue;
                    }
                }
            }
            let (text, compressed) = first?;
            if compressed {
                let a = self.agreed?;
                // The agreed window and takeover, strictly: a client that
                // reaches further back than agreed makes inflating fail.
                if a.client_no_context_takeover || self.inflate.is_none() {
                    let bits = a.client_bits.unwrap_or(15).max(9);
                    self.inflate = Some(Decompress::new_with_window_bits(false, bits));
                }
                let d = self.inflate.as_mut()?;
                data = inflate_message(d, &data, 1 << 30)?;
            }
            return Some((text, data, compressed));
        }
    }

    /// Sends one message, compressed when agreed and `compress` (and the
    /// server's window is not 8 bits, which zlib cannot deflate with).
    pub fn send(&mut self, text: bool, data: &[u8], compress: bool) -> std::io::Result<()> {
        let opcode = if text { 0x81 } else { 0x82 };
        match self.agreed {
            Some(a) if compress && a.server_bits != Some(8) => {
                if a.server_no_context_takeover || self.deflate.is_none() {
                    self.deflate = Some(compressor(a.server_bits.unwrap_or(15)));
                }
                let c = self.deflate.as_mut().expect("set above");
                let payload = deflate_message(c, data);
                let bytes = frame(opcode | 0x40, &payload);
                self.wire_out += bytes.len() as u64;
                self.stream.write_all(&bytes)
            }
            _ => {
                let bytes = frame(opcode, data);
                self.wire_out += bytes.len() as u64;
                self.stream.write_all(&bytes)
            }
        }
    }
}

/// Echoes every message, compressed when agreed; the client's close frame
/// is echoed.
pub fn pmd_echo(mut conn: PmdConn) {
    while let Some((text, data, _)) = conn.read_message() {
        if conn.send(text, &data, true).is_err() {
            return;
        }
    }
}

/// A compressing echo server that answers every offer with `answer`.
pub fn pmd_echo_server(answer: &str) -> Server {
    let answer = answer.to_string();
    raw_server(move |s| pmd_echo(PmdConn::accept(s, &answer)))
}
