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

/// The ways an API call can be refused, one per `WS_ERR_*` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidState,
    InvalidAccess,
    Syntax,
    InvalidArgument,
    BufferFull,
    Internal,
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
        Error::new(ErrorKind::Internal, format!("{what}: {}", os_text(e)))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// An OS error as a C library words it: "Connection refused", without
/// Rust's " (os error 111)".
pub fn os_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

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
        _ => b"unknown result code\0",
    }
}
