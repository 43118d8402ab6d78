//! Connection settings, copied into each connection when it is created.

use crate::error::Error;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Headers the handshake writes itself; a caller may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

#[derive(Clone)]
pub struct Options {
    pub headers: Vec<(String, String)>,
    pub tls: TlsOptions,
    pub connect_timeout: Duration,
    pub close_timeout: Duration,
    pub max_message_size: u64,
    /// 0 means no limit, as in browsers.
    pub max_buffered_amount: u64,
    /// SO_SNDBUF for the socket; None leaves the kernel's default. Only the
    /// tests set it (`ffi::testing`), to make partial writes certain.
    pub send_buffer_size: Option<u32>,
    /// The loop to run on; None: a private loop on its own thread.
    pub event_loop: Option<std::sync::Arc<crate::event_loop::Loop>>,
    pub compression: CompressionOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            headers: Vec::new(),
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_millis(30_000),
            close_timeout: Duration::from_millis(5_000),
            max_message_size: 64 << 20,
            max_buffered_amount: 0,
            send_buffer_size: None,
            event_loop: None,
            compression: CompressionOptions::default(),
        }
    }
}

/// What the permessage-deflate offer (RFC 7692) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionOptions {
    /// Off: no offer, and an extension in the answer fails the connection.
    pub enabled: bool,
    /// Ask to compress each message on its own (client_no_context_takeover).
    pub client_no_context_takeover: bool,
    /// Ask the server to do the same (server_no_context_takeover).
    pub server_no_context_takeover: bool,
    /// 8..=15, or None: `client_max_window_bits` without a value, which lets
    /// the server choose.
    pub client_max_window_bits: Option<u8>,
    /// 8..=15, or None: not asked for.
    pub server_max_window_bits: Option<u8>,
    /// Messages shorter than this many bytes go out uncompressed.
    pub threshold: u64,
}

/// Messages shorter than this go out uncompressed by default: below it,
/// deflate saves a few bytes at best (see README.md, Compression).
pub(crate) const DEFAULT_COMPRESSION_THRESHOLD: u64 = 32;

impl Default for CompressionOptions {
    fn default() -> Self {
        // As browsers offer: "permessage-deflate; client_max_window_bits".
        CompressionOptions {
            enabled: true,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            client_max_window_bits: None,
            server_max_window_bits: None,
            threshold: DEFAULT_COMPRESSION_THRESHOLD,
        }
    }
}

/// A window size for the offer: 0 (not asked for) or 8..=15.
fn window_bits(bits: i32, which: &str) -> Result<Option<u8>, Error> {
    match bits {
        0 => Ok(None),
        8..=15 => Ok(Some(bits as u8)),
        _ => Err(Error::invalid_argument(format!("{which} must be 0 (no request) or 8..15, not {bits}"))),
    }
}

/// What `wss://` connections trust and present.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// Trusted in addition to the system store.
    extra_roots: Vec<native_tls::Certificate>,
    /// A client certificate and key, for mutual TLS.
    identity: Option<native_tls::Identity>,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
    /// The TLS context built from these settings, shared by every
    /// connection made with them: it holds the parsed trust store, hundreds
    /// of KiB that each connection would otherwise carry. Replaced by every
    /// change, so a handle keeps the settings it was created with.
    connector: Arc<OnceLock<Result<native_tls::TlsConnector, String>>>,
}

impl TlsOptions {
    fn changed(&mut self) {
        self.connector = Arc::default();
    }

    pub fn set_accept_invalid_certs(&mut self, yes: bool) {
        self.accept_invalid_certs = yes;
        self.changed();
    }

    pub fn set_accept_invalid_hostnames(&mut self, yes: bool) {
        self.accept_invalid_hostnames = yes;
        self.changed();
    }

    /// The connector for these settings, built once. Settings that add no
    /// certificate (the defaults among them) share one per process.
    pub fn connector(&self) -> Result<native_tls::TlsConnector, String> {
        type Cache = OnceLock<Result<native_tls::TlsConnector, String>>;
        // Without certificates of the caller's, only the two flags differ.
        static SYSTEM_STORE: [Cache; 4] = [const { OnceLock::new() }; 4];
        let system_store_only = self.extra_roots.is_empty() && self.identity.is_none();
        let flags = usize::from(self.accept_invalid_certs) * 2 + usize::from(self.accept_invalid_hostnames);
        let cache = if system_store_only { &SYSTEM_STORE[flags] } else { &*self.connector };
        cache.get_or_init(|| crate::tls::connector(self)).clone()
    }

    pub fn extra_roots(&self) -> &[native_tls::Certificate] {
        &self.extra_roots
    }

    pub fn identity(&self) -> Option<&native_tls::Identity> {
        self.identity.as_ref()
    }

    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    pub fn accepts_invalid_hostnames(&self) -> bool {
        self.accept_invalid_hostnames
    }
}

/// RFC 9110 section 5.6.2: token = 1*tchar.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Options {
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        if !is_http_token(name) {
            return Err(Error::invalid_argument(format!("header name {name:?} is not an HTTP token")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid_argument(format!("header {name} is written by the WebSocket handshake itself")));
        }
        // RFC 9110 section 5.5: field values hold no CR, LF or NUL.
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::invalid_argument(format!("value of header {name} contains CR, LF or NUL")));
        }
        self.headers.push((name.to_string(), value.trim().to_string()));
        Ok(())
    }

    pub fn set_connect_timeout_ms(&mut self, ms: u32) -> Result<(), Error> {
        self.connect_timeout = nonzero_ms(ms, "connect timeout")?;
        Ok(())
    }

    pub fn set_close_timeout_ms(&mut self, ms: u32) -> Result<(), Error> {
        self.close_timeout = nonzero_ms(ms, "close timeout")?;
        Ok(())
    }

    pub fn set_max_message_size(&mut self, bytes: u64) -> Result<(), Error> {
        if bytes == 0 {
            return Err(Error::invalid_argument("max message size must be at least 1 byte"));
        }
        self.max_message_size = bytes;
        Ok(())
    }

    pub fn set_max_buffered_amount(&mut self, bytes: u64) {
        self.max_buffered_amount = bytes;
    }

    pub fn set_client_max_window_bits(&mut self, bits: i32) -> Result<(), Error> {
        self.compression.client_max_window_bits = window_bits(bits, "client max window bits")?;
        Ok(())
    }

    pub fn set_server_max_window_bits(&mut self, bits: i32) -> Result<(), Error> {
        self.compression.server_max_window_bits = window_bits(bits, "server max window bits")?;
        Ok(())
    }

    /// Trusts every certificate in a PEM file, besides the system store.
    pub fn add_ca_file(&mut self, path: &str) -> Result<(), Error> {
        let pem = read_file(path, "CA file")?;
        self.add_ca_pem(&pem).map_err(|e| Error::invalid_argument(format!("CA file {path}: {e}")))
    }

    /// Trusts every certificate in PEM text, besides the system store.
    pub fn add_ca_pem(&mut self, pem: &[u8]) -> Result<(), Error> {
        let certs = native_tls::Certificate::stack_from_pem(pem)
            .map_err(|e| Error::invalid_argument(format!("cannot parse PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid_argument("no PEM certificate found"));
        }
        self.tls.extra_roots.extend(certs);
        self.tls.changed();
        Ok(())
    }

    /// A client certificate (PEM, may include its chain) and its PKCS#8 PEM key.
    pub fn set_client_cert(&mut self, cert_path: &str, key_path: &str) -> Result<(), Error> {
        let cert = read_file(cert_path, "client certificate")?;
        let key = read_file(key_path, "client key")?;
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| {
            Error::invalid_argument(format!(
                "cannot use client certificate {cert_path} with key {key_path} (PEM certificate and PKCS#8 PEM key): {e}"
            ))
        })?;
        self.tls.identity = Some(identity);
        self.tls.changed();
        Ok(())
    }
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::invalid_argument(format!("cannot read {what} {path}: {}", crate::error::io_text(&e))))
}

fn nonzero_ms(ms: u32, what: &str) -> Result<Duration, Error> {
    if ms == 0 {
        return Err(Error::invalid_argument(format!("{what} must be at least 1 ms")));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let mut o = Options::default();
        assert!(o.add_header("X-Token", " abc ").is_ok());
        assert_eq!(o.headers, vec![("X-Token".to_string(), "abc".to_string())]);
        assert!(o.add_header("Bad Name", "v").is_err());
        assert!(o.add_header("", "v").is_err());
        assert!(o.add_header("X-A", "a\r\nInjected: 1").is_err());
        assert!(o.add_header("sec-websocket-key", "x").is_err());
        assert!(o.add_header("Host", "x").is_err());
    }

    #[test]
    fn zero_limits_refused() {
        let mut o = Options::default();
        assert!(o.set_connect_timeout_ms(0).is_err());
        assert!(o.set_close_timeout_ms(0).is_err());
        assert!(o.set_max_message_size(0).is_err());
        assert!(o.set_connect_timeout_ms(5).is_ok());
        assert_eq!(o.connect_timeout, std::time::Duration::from_millis(5));
    }

    #[test]
    fn window_bits_range() {
        let mut o = Options::default();
        for bad in [-1, 1, 7, 16, 255] {
            assert!(o.set_client_max_window_bits(bad).is_err(), "{bad}");
            assert!(o.set_server_max_window_bits(bad).is_err(), "{bad}");
        }
        assert!(o.set_client_max_window_bits(8).is_ok());
        assert!(o.set_server_max_window_bits(15).is_ok());
        assert_eq!(o.compression.client_max_window_bits, Some(8));
        assert_eq!(o.compression.server_max_window_bits, Some(15));
        assert!(o.set_client_max_window_bits(0).is_ok());
        assert_eq!(o.compression.client_max_window_bits, None);
    }

    /// Connections made with the same settings share one TLS context (its
    /// trust store is hundreds of KiB); a change gives later ones a new one.
    #[test]
    #[cfg_attr(miri, ignore = "OpenSSL and ring (C and assembly) cannot run under miri")]
    fn tls_contexts_are_shared_until_the_settings_change() {
        let mut o = Options::default();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap().self_signed(&key).unwrap();
        o.add_ca_pem(ca.pem().as_bytes()).unwrap();
        let copy = o.clone();
        assert!(o.tls.connector().is_ok());
        assert!(copy.tls.connector.get().is_some(), "a copy made before use shares the context");
        assert!(Arc::ptr_eq(&o.tls.connector, &copy.tls.connector));
        o.tls.set_accept_invalid_certs(true);
        assert!(!Arc::ptr_eq(&o.tls.connector, &copy.tls.connector), "a change must not reach earlier handles");
        // Without certificates of one's own, settings share per process.
        let (a, b) = (Options::default(), Options::default());
        assert!(a.tls.connector().is_ok() && b.tls.connector().is_ok());
        assert!(a.tls.connector.get().is_none(), "the process-wide context is used, not a per-options one");
        assert!(o.tls.connector.get().is_none());
    }
}
