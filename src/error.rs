//! Result codes shared by the core and the C boundary.

use std::fmt;

/// Success.
pub const WS_OK: i32 = 0;
/// [InvalidStateError] send() while CONNECTING.
pub const WS_ERR_INVALID_STATE: i32 = -1;
/// [InvalidAccessError] close() code not 1000 or 3000..4999.
pub const WS_ERR_INVALID_ACCESS: i32 = -2;
/// [SyntaxError] bad URL, bad or duplicate protocol, reason > 123 bytes.
pub const WS_ERR_SYNTAX: i32 = -3;
/// NULL where a value is required, text that is not UTF-8, bad option.
pub const WS_ERR_INVALID_ARGUMENT: i32 = -4;
/// send() would exceed the configured max buffered amount.
pub const WS_ERR_BUFFER_FULL: i32 = -5;
/// A bug: reported, never a crash.
pub const WS_ERR_INTERNAL: i32 = -6;
/// Out of a system resource: file descriptors, threads or memory (a limit
/// such as `ulimit -n`, not a bug). `ws_last_error()` names the resource and
/// the system's reason, e.g. "cannot create eventfd: Too many open files".
pub const WS_ERR_RESOURCE: i32 = -7;

/// The ways an API call can be refused, one per `WS_ERR_*` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidState,
    InvalidAccess,
    Syntax,
    InvalidArgument,
    BufferFull,
    Internal,
    Resource,
}

impl ErrorKind {
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::InvalidState => WS_ERR_INVALID_STATE,
            ErrorKind::InvalidAccess => WS_ERR_INVALID_ACCESS,
            ErrorKind::Syntax => WS_ERR_SYNTAX,
            ErrorKind::InvalidArgument => WS_ERR_INVALID_ARGUMENT,
            ErrorKind::BufferFull => WS_ERR_BUFFER_FULL,
            ErrorKind::Internal => WS_ERR_INTERNAL,
            ErrorKind::Resource => WS_ERR_RESOURCE,
        }
    }
}

/// A refused call: its kind and a sentence for `ws_last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    pub fn syntax(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Syntax, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub fn code(&self) -> i32 {
        self.kind.code()
    }

    /// A system resource ran out (descriptors, threads, memory): `what`
    /// failed, and the OS says why.
    pub fn os(what: &str, e: &std::io::Error) -> Self {
        Error::new(ErrorKind::Resource, io_failed(what, e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Static text for a result code, NUL-terminated for C.
pub fn strerror(code: i32) -> &'static [u8] {
    match code {
        WS_OK => b"success\0",
        WS_ERR_INVALID_STATE => b"invalid state: the connection is not open yet\0",
        WS_ERR_INVALID_ACCESS => b"invalid access: close code must be 1000 or 3000..4999\0",
        WS_ERR_SYNTAX => b"syntax error: bad URL, protocol or close reason\0",
        WS_ERR_INVALID_ARGUMENT => b"invalid argument\0",
        WS_ERR_BUFFER_FULL => b"buffer full: max buffered amount would be exceeded\0",
        WS_ERR_INTERNAL => b"internal error\0",
        WS_ERR_RESOURCE => b"out of a system resource: file descriptors, threads or memory\0",
        _ => b"unknown result code\0",
    }
}

/// An I/O error as a C library words it: the system's text for an OS error
/// ("Connection refused", as strerror(3) gives it), without Rust's
/// "(os error 111)"; any other error as it displays, without the standard
/// library's "failed to lookup address information: " in front of the
/// resolver's own text.
pub fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => os_text(code),
        None => {
            let text = e.to_string();
            match text.strip_prefix("failed to lookup address information: ") {
                Some(rest) => rest.to_string(),
                None => text,
            }
        }
    }
}

/// "`what`: `io_text(e)`", e.g. "connection lost during the handshake:
/// Connection reset by peer".
pub fn io_failed(what: &str, e: &std::io::Error) -> String {
    format!("{what}: {}", io_text(e))
}

/// strerror(3) for `code`, e.g. "Too many open files" for EMFILE.
fn os_text(code: i32) -> String {
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: the XSI strerror_r writes at most `buf.len()` bytes, NUL
    // included, into `buf`, which lives across the call.
    let rc = unsafe { libc::strerror_r(code, buf.as_mut_ptr(), buf.len()) };
    match rc {
        // SAFETY: on success `buf` holds a NUL-terminated string.
        0 => unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned(),
        _ => format!("error {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    #[cfg_attr(miri, ignore = "miri's strerror_r gives Rust's error text, not the C library's")]
    fn io_errors_read_as_c_libraries_say_them() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(refused.to_string().contains("(os error"), "{refused}");
        assert_eq!(io_text(&refused), "Connection refused");
        assert_eq!(io_text(&io::Error::from_raw_os_error(libc::EMFILE)), "Too many open files");
        assert_eq!(io_text(&io::Error::other("plain text")), "plain text");
        let lookup = io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(io_text(&lookup), "Name or service not known");
    }
}
