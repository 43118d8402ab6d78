//! TCP connects to a host's addresses, Happy Eyeballs style (RFC 8305):
//! IPv6 and IPv4 interleaved, the next attempt started 250 ms after the
//! previous one unless it finished first (at once when one fails), the
//! first to connect wins and the others are closed. So one black-holed
//! address costs 250 ms, not the connect timeout.

use crate::transport::net::{self, Socket};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// RFC 8305 section 5: the recommended Connection Attempt Delay.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

struct Attempt {
    addr: SocketAddr,
    socket: Socket,
    /// Tells epoll that this is a new socket, even on a reused fd number.
    serial: u32,
}

/// What a step of the dialer came to.
pub enum Dialed {
    /// Connected: the socket, its serial, and how many bytes of the probe
    /// it took (plain ws:// writes the upgrade request as the test).
    Connected { socket: Socket, serial: u32, probed: usize, addr: SocketAddr },
    /// Attempts are under way: wait for their sockets or the deadline.
    Pending,
    /// Every address failed; why, for each.
    Failed(Vec<(SocketAddr, io::Error)>),
}

pub struct Dialer {
    addrs: Vec<SocketAddr>,
    next: usize,
    /// In flight, oldest first: the oldest is the connection's epoll
    /// interest, the others are watched beside it (`watch`).
    attempts: Vec<Attempt>,
    errors: Vec<(SocketAddr, io::Error)>,
    /// When the next address is due while attempts are in flight.
    next_at: Option<Instant>,
    send_buffer: Option<u32>,
}

impl Dialer {
    pub fn new(addrs: Vec<SocketAddr>, send_buffer: Option<u32>) -> Dialer {
        Dialer {
            addrs: interleave(addrs),
            next: 0,
            attempts: Vec::new(),
            errors: Vec::new(),
            next_at: None,
            send_buffer,
        }
    }

    /// The socket the connection's epoll interest names (and its serial).
    pub fn interest(&self) -> Option<(RawFd, u32)> {
        self.attempts.first().map(|a| (a.socket.fd(), a.serial))
    }

    /// When to start the next address, if one is left.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_at
    }

    /// What is under way, for a timeout's message.
    pub fn describe(&self) -> String {
        let addrs: Vec<String> = self.attempts.iter().map(|a| a.addr.to_string()).collect();
        let mut text = match addrs.len() {
            0 => "TCP connect".to_string(),
            _ => format!("TCP connect to {}", addrs.join(", ")),
        };
        // The attempts that failed before, each with its reason.
        for (addr, e) in &self.errors {
            text.push_str(&format!(" (after {addr}: {})", crate::error::io_text(e)));
        }
        text
    }

    /// Starts addresses until one is under way or connected (or none is
    /// left). `probe`: bytes to write at once on a socket that may already
    /// be connected (plain ws://); without one, a connect that finished
    /// at once is seen with getsockopt. `serials` counts the connection's
    /// sockets; `watch` is called for each socket that is not the oldest
    /// attempt, to be watched beside it.
    pub fn start(&mut self, probe: Option<&[u8]>, serials: &mut u32, watch: &mut dyn FnMut(RawFd)) -> Dialed {
        self.next_at = None;
        while self.next < self.addrs.len() {
            let addr = self.addrs[self.next];
            self.next += 1;
            let socket = match net::start_connect(&addr, self.send_buffer) {
                Ok(socket) => socket,
                Err(e) => {
                    self.errors.push((addr, e));
                    continue;
                }
            };
            *serials = serials.wrapping_add(1);
            let serial = *serials;
            // A connect to this machine is often done when connect()
            // returns. Writing the request at once tells, with no system
            // call to ask: a socket still connecting says EAGAIN, a failed
            // one its error (a non-blocking tcp_sendmsg does not wait).
            let done = match probe {
                Some(bytes) => match (&socket).write(bytes) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
                    Err(e) => Err(e),
                },
                None => match net::finish_connect(&socket) {
                    Ok(()) => Ok(Some(0)),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
                    Err(e) => Err(e),
                },
            };
            match done {
                Ok(Some(probed)) => {
                    // The others, if any, close as they drop.
                    self.attempts.clear();
                    return Dialed::Connected { socket, serial, probed, addr };
                }
                Ok(None) => {
                    if !self.attempts.is_empty() {
                        watch(socket.fd());
                    }
                    self.attempts.push(Attempt { addr, socket, serial });
                    if self.next < self.addrs.len() {
                        self.next_at = Some(Instant::now() + ATTEMPT_DELAY);
                    }
                    return Dialed::Pending;
                }
                Err(e) => self.errors.push((addr, e)),
            }
        }
        self.settle()
    }

    /// A socket of an attempt was reported ready (or hung up): the first
    /// attempt found connected wins; failed ones are dropped, and when none
    /// is left in flight the next address starts at once.
    pub fn ready(&mut self, probe: Option<&[u8]>, serials: &mut u32, watch: &mut dyn FnMut(RawFd)) -> Dialed {
        let mut i = 0;
        let mut failed = false;
        while i < self.attempts.len() {
            match net::finish_connect(&self.attempts[i].socket) {
                Ok(()) => {
                    let won = self.attempts.swap_remove(i);
                    self.attempts.clear();
                    self.next_at = None;
                    return Dialed::Connected { socket: won.socket, serial: won.serial, probed: 0, addr: won.addr };
                }
                // Still connecting: poll woke for another attempt.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => i += 1,
                Err(e) => {
                    let gone = self.attempts.remove(i);
                    self.errors.push((gone.addr, e));
                    failed = true;
                }
            }
        }
        // RFC 8305 section 5: a failed attempt starts the next at once.
        if failed && self.next < self.addrs.len() || self.attempts.is_empty() {
            return self.start(probe, serials, watch);
        }
        Dialed::Pending
    }

    /// The deadline passed: the next address starts beside those in flight.
    pub fn timer(
        &mut self,
        now: Instant,
        probe: Option<&[u8]>,
        serials: &mut u32,
        watch: &mut dyn FnMut(RawFd),
    ) -> Dialed {
        match self.next_at {
            Some(at) if now >= at => self.start(probe, serials, watch),
            _ => Dialed::Pending,
        }
    }

    fn settle(&mut self) -> Dialed {
        if self.attempts.is_empty() && self.next >= self.addrs.len() {
            return Dialed::Failed(std::mem::take(&mut self.errors));
        }
        Dialed::Pending
    }
}

/// RFC 8305 section 4: the resolver's order (RFC 6724), with the address
/// families alternating from the first address's family on.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else { return addrs };
    let first_v6 = first.is_ipv6();
    let (mut same, mut other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(same.len() + other.len());
    same.reverse();
    other.reverse();
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_from_the_first_addresss() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(vec![a("[::1]:1"), a("[::2]:1"), a("[::3]:1"), a("10.0.0.1:1"), a("10.0.0.2:1")]);
        let want = vec![a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("10.0.0.2:1"), a("[::3]:1")];
        assert_eq!(got, want);
        let got = interleave(vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]);
        assert_eq!(got, vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]);
        assert!(interleave(Vec::new()).is_empty());
    }
}
