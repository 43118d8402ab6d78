//! The proxy step of the connecting phase: a connected socket to the proxy
//! and its handshake (`proto::proxy`), moved along as the socket allows.
//! Once the tunnel is open the socket carries the origin's bytes: TLS or
//! the upgrade request go next, as on a direct connection.

use crate::conn::cause::{Cause, Failure};
use crate::proto::proxy::{Destination, Handshake, Progress, Proxy};
use crate::transport::net::Socket;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;

pub struct Tunnel {
    socket: Socket,
    handshake: Handshake,
    label: String,
}

impl Tunnel {
    pub fn start(socket: Socket, proxy: &Proxy, destination: Destination) -> Result<Tunnel, String> {
        let handshake = Handshake::start(proxy, destination)?;
        Ok(Tunnel { socket, handshake, label: proxy.label() })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.fd()
    }

    /// Whether the socket must become writable (else readable) for the
    /// next step.
    pub fn wants_write(&self) -> bool {
        !self.handshake.output().is_empty()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The socket, once `step` said the tunnel is open.
    pub fn into_socket(self) -> Socket {
        self.socket
    }

    /// Writes and reads until the socket would block (false) or the tunnel
    /// is open (true).
    pub fn step(&mut self) -> Result<bool, Failure> {
        // The answers are a few bytes (SOCKS5) or a short HTTP head.
        let mut buf = [0u8; 1024];
        let lost = |label: &str, e: &io::Error| {
            let text = format!("connection to proxy {label} lost during its handshake: {}", crate::error::io_text(e));
            Failure::io(Cause::Proxy, e, text)
        };
        loop {
            let output = self.handshake.output();
            if !output.is_empty() {
                match (&self.socket).write(output) {
                    Ok(0) => {
                        let text = format!("proxy {} closed the connection during its handshake", self.label);
                        return Err(Failure::new(Cause::Proxy, text));
                    }
                    Ok(n) => self.handshake.wrote(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(lost(&self.label, &e)),
                }
                continue;
            }
            let limit = self.handshake.read_limit().min(buf.len());
            match (&self.socket).read(&mut buf[..limit]) {
                Ok(0) => {
                    let text = format!("proxy {} closed the connection during its handshake", self.label);
                    return Err(Failure::new(Cause::Proxy, text));
                }
                Ok(n) => {
                    let progress = self.handshake.received(&buf[..n]).map_err(|e| Failure::new(Cause::Proxy, e))?;
                    if progress == Progress::Done {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(lost(&self.label, &e)),
            }
        }
    }
}
