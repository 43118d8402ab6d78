//! Why a connection ended: exactly one cause per end, with the OS error
//! behind it (`ws_failure_cause`, `ws_failure_errno`). The values are the C
//! API's `WS_CAUSE_*` constants.

use std::io;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cause {
    /// Not ended, or ended by a clean closing handshake.
    None = 0,
    Dns = 1,
    Connect = 2,
    Timeout = 3,
    Tls = 4,
    Http = 5,
    Proxy = 6,
    Protocol = 7,
    TooBig = 8,
    ConnectionLost = 9,
    CloseTimeout = 10,
    PingTimeout = 11,
    Aborted = 12,
    Resource = 13,
}

impl Cause {
    /// For log lines.
    pub fn name(self) -> &'static str {
        match self {
            Cause::None => "none",
            Cause::Dns => "dns",
            Cause::Connect => "connect",
            Cause::Timeout => "timeout",
            Cause::Tls => "tls",
            Cause::Http => "http",
            Cause::Proxy => "proxy",
            Cause::Protocol => "protocol",
            Cause::TooBig => "too big",
            Cause::ConnectionLost => "connection lost",
            Cause::CloseTimeout => "close timeout",
            Cause::PingTimeout => "ping timeout",
            Cause::Aborted => "aborted",
            Cause::Resource => "resource",
        }
    }

    pub fn from_u8(v: u8) -> Cause {
        const ALL: [Cause; 14] = [
            Cause::None,
            Cause::Dns,
            Cause::Connect,
            Cause::Timeout,
            Cause::Tls,
            Cause::Http,
            Cause::Proxy,
            Cause::Protocol,
            Cause::TooBig,
            Cause::ConnectionLost,
            Cause::CloseTimeout,
            Cause::PingTimeout,
            Cause::Aborted,
            Cause::Resource,
        ];
        ALL.get(usize::from(v)).copied().unwrap_or(Cause::None)
    }
}

/// A failure: on_error's text, its cause, and the OS error (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub errno: i32,
    pub message: String,
}

impl Failure {
    pub fn new(cause: Cause, message: impl Into<String>) -> Failure {
        Failure { cause, errno: 0, message: message.into() }
    }

    /// With the OS error of `e`, if it has one.
    pub fn io(cause: Cause, e: &io::Error, message: impl Into<String>) -> Failure {
        Failure { cause, errno: e.raw_os_error().unwrap_or(0), message: message.into() }
    }

    pub fn with_errno(mut self, errno: i32) -> Failure {
        self.errno = errno;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in 0..=13u8 {
            assert_eq!(Cause::from_u8(v) as u8, v);
        }
        assert_eq!(Cause::from_u8(14), Cause::None);
    }
}
