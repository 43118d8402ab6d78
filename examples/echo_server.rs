//! The local echo server the demo and the examples talk to.
//!
//! `cargo run --example echo_server [PORT]` (0, the default, picks a free
//! port). Prints `listening on ws://127.0.0.1:PORT/` once ready, then echoes
//! every message, chooses the first subprotocol offered, and on the text
//! "close CODE REASON" closes with that code and reason.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

use std::net::{TcpListener, TcpStream};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

fn serve(stream: TcpStream) -> tungstenite::Result<()> {
    let choose_first = |req: &Request, mut resp: Response| {
        let first = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|p| p.trim().to_string());
        if let Some(p) = first.and_then(|p| p.parse().ok()) {
            resp.headers_mut().insert("sec-websocket-protocol", p);
        }
        Ok(resp)
    };
    let mut ws = tungstenite::accept_hdr(stream, choose_first).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    loop {
        match ws.read()? {
            Message::Text(t) if t.starts_with("close ") => {
                let mut parts = t[6..].splitn(2, ' ');
                let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_string();
                ws.close(Some(CloseFrame { code: code.into(), reason: reason.into() }))?;
            }
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m)?,
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening on ws://127.0.0.1:{}/", listener.local_addr()?.port());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
    Ok(())
}
