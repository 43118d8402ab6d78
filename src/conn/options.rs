//! Connection settings, copied into each connection when it is created.

use crate::error::Error;
use crate::proto::extensions::CompressionOptions;
use crate::proto::proxy::{self, Proxy};
use crate::proto::target::is_http_token;
use crate::proto::target::Target;
use crate::transport::net::UNIX_PATH_MAX;
use crate::transport::tls::TlsOptions;
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
    pub compression: CompressionOptions,
    /// Keepalive: a ping after this long without input; None: off.
    pub ping_interval: Option<Duration>,
    /// How long input may take to follow a keepalive ping; None: the interval.
    pub pong_timeout: Option<Duration>,
    /// Connect to this Unix domain socket (a leading `@`: an abstract
    /// name) instead of the URL's host.
    pub unix_socket: Option<String>,
    /// Which proxy, if any, the connection tunnels through.
    pub proxy: ProxyChoice,
    /// on_drain's low mark; None: no on_drain.
    pub drain_mark: Option<u64>,
}

/// `ws_options_set_proxy`'s setting, then (`for_connection`) what one
/// connection does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// Not set: the environment decides when the handle is made.
    Environment,
    /// No proxy.
    Direct,
    Via(Proxy),
    /// The environment names a proxy that cannot be used: the connection
    /// fails with this (it names the variable, never its value).
    Unusable(String),
}

impl ProxyChoice {
    /// What a connection to `target` does: the environment is read here,
    /// once, on the thread that makes the handle (curl's rules, see
    /// `proxy::from_environment`). A Unix socket needs no proxy.
    pub fn for_connection(&self, target: &Target, unix_socket: bool) -> ProxyChoice {
        match self {
            _ if unix_socket => ProxyChoice::Direct,
            ProxyChoice::Environment => {
                match proxy::from_environment(target.secure, &target.host, |name: &str| std::env::var_os(name)) {
                    Ok(Some(p)) => ProxyChoice::Via(p),
                    Ok(None) => ProxyChoice::Direct,
                    Err(e) => ProxyChoice::Unusable(e),
                }
            }
            other => other.clone(),
        }
    }
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
            compression: CompressionOptions::default(),
            ping_interval: None,
            pong_timeout: None,
            unix_socket: None,
            proxy: ProxyChoice::Environment,
            drain_mark: None,
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

    /// 0: no keepalive (the default, as in browsers).
    pub fn set_ping_interval_ms(&mut self, ms: u32) {
        self.ping_interval = (ms > 0).then(|| Duration::from_millis(ms.into()));
    }

    /// 0: back to the default, the ping interval.
    pub fn set_pong_timeout_ms(&mut self, ms: u32) {
        self.pong_timeout = (ms > 0).then(|| Duration::from_millis(ms.into()));
    }

    /// None or "": connect to the URL's host (the default).
    pub fn set_unix_socket(&mut self, path: Option<&str>) -> Result<(), Error> {
        let path = path.filter(|p| !p.is_empty());
        if let Some(p) = path {
            let name = p.strip_prefix('@').unwrap_or(p);
            if name.is_empty() {
                return Err(Error::invalid_argument("abstract unix socket name \"@\" is empty"));
            }
            if name.len() > UNIX_PATH_MAX {
                return Err(Error::invalid_argument(format!(
                    "unix socket path is {} bytes, over the limit of {UNIX_PATH_MAX}",
                    name.len()
                )));
            }
        }
        self.unix_socket = path.map(str::to_string);
        Ok(())
    }

    /// NULL (None): the environment decides; "": no proxy; else a proxy URL.
    pub fn set_proxy(&mut self, url: Option<&str>) -> Result<(), Error> {
        self.proxy = match url {
            None => ProxyChoice::Environment,
            Some("") => ProxyChoice::Direct,
            Some(url) => ProxyChoice::Via(Proxy::parse(url).map_err(Error::invalid_argument)?),
        };
        Ok(())
    }

    /// The keepalive's interval and pong timeout, when it is on.
    pub fn keepalive(&self) -> Option<(Duration, Duration)> {
        self.ping_interval.map(|interval| (interval, self.pong_timeout.unwrap_or(interval)))
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
        self.tls.add_roots(certs);
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
        self.tls.set_identity(identity);
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
        assert!(copy.tls.has_own_context(), "a copy made before use shares the context");
        assert!(o.tls.shares_context_with(&copy.tls));
        o.tls.set_accept_invalid_certs(true);
        assert!(!o.tls.shares_context_with(&copy.tls), "a change must not reach earlier handles");
        // Without certificates of one's own, settings share per process.
        let (a, b) = (Options::default(), Options::default());
        assert!(a.tls.connector().is_ok() && b.tls.connector().is_ok());
        assert!(!a.tls.has_own_context(), "the process-wide context is used, not a per-options one");
        assert!(!o.tls.has_own_context());
    }
}
