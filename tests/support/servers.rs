//! Servers on 127.0.0.1: tungstenite for well-behaved peers, raw TCP for
//! misbehaving ones.

// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

use crate::common::WAIT;
use crate::frames::{accept_key, close_payload, frame, raw_handshake, read_frame, read_request, read_until_close};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ----- servers -----

/// A listener on 127.0.0.1 whose accepted connections each get a thread.
pub struct Server {
    pub port: u16,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

/// A raw TCP server: `handler` gets each accepted connection.
pub fn raw_server(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || handler(stream));
        }
    });
    Server { port }
}

/// What a tungstenite server saw of the handshake request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

pub type ServerWs = tungstenite::WebSocket<TcpStream>;

/// A tungstenite server. `choose` picks the subprotocol from those offered;
/// `handler` runs the conversation.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
pub fn ws_server(
    choose: impl Fn(&[String]) -> Option<String> + Send + Sync + 'static,
    handler: impl Fn(ServerWs, Seen) + Send + Sync + 'static,
) -> Server {
    let choose = Arc::new(choose);
    let handler = Arc::new(handler);
    raw_server(move |stream| {
        let mut seen = Seen::default();
        let choose = choose.clone();
        let callback = |req: &tungstenite::handshake::server::Request,
                        mut resp: tungstenite::handshake::server::Response| {
            seen.path = req.uri().to_string();
            for (n, v) in req.headers() {
                seen.headers.push((n.to_string(), v.to_str().unwrap_or("").to_string()));
            }
            let offered: Vec<String> = req
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(p) = choose(&offered) {
                resp.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
            }
            Ok(resp)
        };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        if let Ok(ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(config)) {
            handler(ws, seen);
        }
    })
}

/// Echoes every message until the client closes.
pub fn echo<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

pub fn echo_server() -> Server {
    ws_server(|_| None, |ws, _| echo(ws))
}

/// What a tungstenite server read until the connection ended: messages,
/// then the client's close frame if one came.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    pub messages: Vec<tungstenite::Message>,
    pub close: Option<Option<(u16, String)>>,
}

pub fn read_all<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> Transcript {
    let mut t = Transcript::default();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                t.close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => t.messages.push(m),
            Ok(_) => {}
            Err(_) => return t,
        }
    }
}

/// A server that records each connection's transcript into a channel.
pub fn recording_server() -> (Server, crossbeam_channel::Receiver<(Seen, Transcript)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = ws_server(
        |_| None,
        move |mut ws, seen| {
            let t = read_all(&mut ws);
            let _ = tx.lock().unwrap().send((seen, t));
        },
    );
    (server, rx)
}

/// A server that accepts TCP and never answers; connections stay open
/// (held in the returned list) until the test ends.
pub fn silent_server() -> (Server, Arc<Mutex<Vec<TcpStream>>>) {
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    let server = raw_server(move |s| h.lock().unwrap().push(s));
    (server, held)
}

/// A port on 127.0.0.1 that nothing listens on: a connect is refused.
/// A socket stays bound to it (not listening, without SO_REUSEADDR) until
/// the process ends, so that no test running alongside can take the port.
pub fn closed_port() -> u16 {
    static HELD: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());
    // SAFETY: plain socket calls on a socket this function owns; the
    // address structs are plain data of the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_in).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        let named = libc::getsockname(fd.as_raw_fd(), (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        HELD.lock().unwrap_or_else(|e| e.into_inner()).push(fd);
        u16::from_be(addr.sin_port)
    }
}

/// Echoes messages; the text "close CODE REASON" makes it close with them.
pub fn contract_conversation<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.starts_with("close ") => {
                let mut parts = t[6..].splitn(2, ' ');
                let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = parts.next().unwrap_or("").to_string();
                let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.into() };
                let _ = ws.close(Some(frame));
                read_all(&mut ws);
                return;
            }
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The contract conversation, choosing the first subprotocol offered.
pub fn contract_server() -> Server {
    ws_server(|offered| offered.first().cloned(), |ws, _| contract_conversation(ws))
}

/// Answers the handshake request with `response`, where "{accept}" stands
/// for the right Sec-WebSocket-Accept value, then stays silent a while.
pub fn answer(response: String) -> Server {
    raw_server(move |mut s| {
        let request = read_request(&mut s);
        let r = response.replace("{accept}", &accept_key(&request));
        let _ = s.write_all(r.as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    })
}

/// Reads nothing until `go` fires (so that a large send stalls in the
/// socket buffers), then reads one frame and answers "<its length> bytes"
/// as text, and answers the client's close frame with 1000.
pub fn stalled_until(go: crossbeam_channel::Receiver<()>) -> Server {
    raw_server(move |mut s| {
        raw_handshake(&mut s, "");
        let _ = go.recv_timeout(WAIT);
        s.set_read_timeout(Some(WAIT)).unwrap();
        let Some(f) = read_frame(&mut s) else { return };
        let _ = s.write_all(&frame(0x81, format!("{} bytes", f.payload.len()).as_bytes()));
        if read_until_close(&mut s).is_some() {
            let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
        }
    })
}
