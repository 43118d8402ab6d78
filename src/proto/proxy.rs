//! Proxies between us and the origin, as bytes: the proxy URL, curl's
//! environment rules for choosing one, and the two handshakes that open a
//! tunnel through it: HTTP CONNECT (RFC 9110 section 9.3.6, Basic
//! authentication from the URL's userinfo) and SOCKS5 (RFC 1928, with the
//! username and password method of RFC 1929). TLS for wss:// runs inside
//! the tunnel, with the origin: the proxy only ever sees TCP bytes.
//!
//! No text made here contains a credential: messages name a proxy by its
//! host and port only.

use crate::proto::target::{basic_credentials, is_localhost, TargetHost};
use percent_encoding::percent_decode_str;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP CONNECT.
    Http,
    /// SOCKS5 with the origin's name resolved here.
    Socks5,
    /// SOCKS5 with the origin's name sent to the proxy to resolve.
    Socks5h,
}

/// A proxy to tunnel through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub host: TargetHost,
    pub port: u16,
    /// Percent-decoded userinfo: (username, password).
    credentials: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never prints the credentials.
impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Proxy({:?} {}{})",
            self.kind,
            self.label(),
            if self.credentials.is_some() { " with credentials" } else { "" }
        )
    }
}

/// curl's default port for a proxy named without one (environment only:
/// the setter asks for an explicit port).
const DEFAULT_PORT: u16 = 1080;

impl Proxy {
    /// A proxy URL given to `ws_options_set_proxy`: `http://`, `socks5://`
    /// or `socks5h://`, optional `user:password@`, a host and a port.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        Proxy::parse_with(url, None)
    }

    /// A proxy URL from the environment, as curl reads it: no scheme means
    /// http://, no port means 1080.
    pub fn parse_env(value: &str) -> Result<Proxy, String> {
        let value = value.trim();
        if value.contains("://") {
            Proxy::parse_with(value, Some(DEFAULT_PORT))
        } else {
            Proxy::parse_with(&format!("http://{value}"), Some(DEFAULT_PORT))
        }
    }

    fn parse_with(url: &str, default_port: Option<u16>) -> Result<Proxy, String> {
        // Texts here never quote the URL: it may hold a password.
        let parsed = Url::parse(url).map_err(|e| format!("proxy URL does not parse: {e}"))?;
        let kind = match parsed.scheme() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5h,
            other => {
                return Err(format!("proxy scheme {other:?} is not supported (use http://, socks5:// or socks5h://)"))
            }
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv4(a)) => TargetHost::Ip(a.into()),
            Some(url::Host::Ipv6(a)) => TargetHost::Ip(a.into()),
            // socks5:// is not a special scheme: its host stays a string,
            // address literals included.
            Some(url::Host::Domain(d)) if !d.is_empty() => match d.parse::<IpAddr>() {
                Ok(ip) => TargetHost::Ip(ip),
                // A name for getaddrinfo, or for a SOCKS5 proxy to resolve:
                // letters, digits, '-', '_' and dots only.
                Err(_) => {
                    let name = percent_decode_str(d).decode_utf8_lossy().to_ascii_lowercase();
                    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                        return Err("proxy host is not an address nor a DNS name".into());
                    }
                    TargetHost::Domain(name)
                }
            },
            _ => return Err("proxy URL has no host".into()),
        };
        // The url crate drops a port equal to the scheme's default
        // (http://proxy:80): look for one in the text before defaulting.
        let port = match (parsed.port(), explicit_port(url), default_port) {
            (Some(p), _, _) => p,
            (None, true, _) => parsed.port_or_known_default().unwrap_or(DEFAULT_PORT),
            (None, false, Some(p)) => p,
            (None, false, None) => return Err("proxy URL has no port".into()),
        };
        if port == 0 {
            return Err("proxy URL has port 0".into());
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err("proxy URL may not have a path, query or fragment".into());
        }
        let decode = |s: &str| percent_decode_str(s).collect::<Vec<u8>>();
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            (user, pass) => Some((decode(user), decode(pass.unwrap_or("")))),
        };
        if kind != ProxyKind::Http {
            if let Some((user, pass)) = &credentials {
                // RFC 1929: each is one length byte and the text.
                if user.is_empty() || user.len() > 255 || pass.len() > 255 {
                    return Err("SOCKS5 username must be 1 to 255 bytes and the password at most 255".into());
                }
            }
        }
        Ok(Proxy { kind, host, port, credentials })
    }

    /// "127.0.0.1:3128", "[::1]:1080", "proxy.example:3128": how messages
    /// name it.
    pub fn label(&self) -> String {
        match &self.host {
            TargetHost::Ip(IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
            TargetHost::Ip(a) => format!("{a}:{}", self.port),
            TargetHost::Domain(d) => format!("{d}:{}", self.port),
        }
    }

    pub fn host_name(&self) -> String {
        match &self.host {
            TargetHost::Ip(ip) => ip.to_string(),
            TargetHost::Domain(d) => d.clone(),
        }
    }

    /// The proxy's addresses when no lookup is needed (see
    /// `Target::known_addrs`).
    pub fn known_addrs(&self) -> Option<Vec<SocketAddr>> {
        match &self.host {
            TargetHost::Ip(ip) => Some(vec![SocketAddr::new(*ip, self.port)]),
            TargetHost::Domain(name) if is_localhost(name) => Some(vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port),
            ]),
            TargetHost::Domain(_) => None,
        }
    }

    /// Whether the origin's name is resolved here (socks5://) rather than
    /// sent to the proxy (http:// and socks5h://).
    pub fn resolves_here(&self) -> bool {
        self.kind == ProxyKind::Socks5
    }
}

/// Whether the URL's authority ends in ":digits".
fn explicit_port(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, p)| p);
    after_host.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The proxy the environment gives a connection, with curl's rules
/// (`detect_proxy` in its url.c): `no_proxy` (then `NO_PROXY`) lists
/// hosts that go direct; else ws:// uses `ws_proxy`, `WS_PROXY`, then
/// `http_proxy` (lower case only: CGI programs get a request's `Proxy:`
/// header as `HTTP_PROXY`); wss:// `wss_proxy`, `WSS_PROXY`, then
/// `https_proxy`, `HTTPS_PROXY`; both then fall back to `all_proxy` and
/// `ALL_PROXY`. An empty variable counts as unset. `Err` names the
/// variable, never its value (a value that is not UTF-8 is an error, not
/// "unset": it must not send the connection around the proxy).
pub fn from_environment(
    secure: bool,
    host: &TargetHost,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<Proxy>, String> {
    let get = |name: &str| -> Result<Option<String>, String> {
        match env(name).map(std::ffi::OsString::into_string) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v).filter(|v| !v.trim().is_empty())),
            Some(Err(_)) => Err(format!("environment variable {name} is not UTF-8")),
        }
    };
    let no_proxy = match get("no_proxy")? {
        Some(list) => Some(list),
        None => get("NO_PROXY")?,
    };
    if no_proxy.is_some_and(|list| no_proxy_matches(&list, host)) {
        return Ok(None);
    }
    let names: &[&str] = if secure {
        &["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["ws_proxy", "WS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"]
    };
    for name in names {
        if let Some(value) = get(name)? {
            return Proxy::parse_env(&value).map(Some).map_err(|e| format!("environment variable {name}: {e}"));
        }
    }
    Ok(None)
}

/// curl's `no_proxy`: `*` alone matches every host; otherwise a list
/// (commas or spaces between) where a name matches itself and every name
/// under it (a leading dot changes nothing), and an address matches itself
/// or, as `addr/bits`, the range it starts.
pub fn no_proxy_matches(list: &str, host: &TargetHost) -> bool {
    if list == "*" {
        return true;
    }
    let mut entries = list.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|e| !e.is_empty());
    entries.any(|entry| match host {
        // curl's Curl_cidr4_match / Curl_cidr6_match: "/0" is the address
        // itself; a prefix longer than the address, or not a number,
        // matches nothing; brackets are no address.
        TargetHost::Ip(ip) => match entry.split_once('/') {
            Some((addr, bits)) => match (addr.parse::<IpAddr>(), bits.parse::<u32>()) {
                (Ok(net), Ok(bits)) => in_range(*ip, net, bits),
                _ => false,
            },
            None => entry.parse::<IpAddr>().is_ok_and(|net| net == *ip),
        },
        TargetHost::Domain(name) => {
            let (name, entry) = (name.as_bytes(), entry.as_bytes());
            let name = name.strip_suffix(b".").unwrap_or(name);
            let entry = entry.strip_prefix(b".").unwrap_or(entry);
            let entry = entry.strip_suffix(b".").unwrap_or(entry);
            !entry.is_empty()
                && (name.eq_ignore_ascii_case(entry)
                    || name.len() > entry.len()
                        && name[name.len() - entry.len() - 1] == b'.'
                        && name[name.len() - entry.len()..].eq_ignore_ascii_case(entry))
        }
    })
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    let prefix = |a: u128, b: u128, width: u32| match bits {
        0 => a == b,
        _ if bits > width => false,
        _ => (a ^ b) >> (width - bits) == 0,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix(u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(a.into(), b.into(), 128),
        _ => false,
    }
}

/// Where the tunnel goes: a name for the proxy to resolve, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Name(String, u16),
    Addr(SocketAddr),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Name(name, port) => write!(f, "{name}:{port}"),
            Destination::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// What the handshake does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Write `output()`, then read at most `read_limit()` bytes.
    More,
    /// The tunnel is open: what follows is the origin's.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    HttpAnswer,
    SocksMethod,
    SocksAuth,
    SocksReply,
    Done,
}

/// An answer to CONNECT larger than this fails the connection.
const MAX_HTTP_ANSWER: usize = 16 * 1024;

/// One proxy handshake, driven by the bytes the caller moves: write
/// `output()` (and report it with `wrote`), then read at most
/// `read_limit()` bytes and hand them to `received`. For SOCKS5 the limit
/// is the answer's exact length, so no byte of the origin is taken; an
/// HTTP answer's length is unknown until its head ends, so a read may go
/// past it, and bytes found there fail the connection (the origin speaks
/// only after our TLS hello or upgrade request).
pub struct Handshake {
    label: String,
    stage: Stage,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// The SOCKS5 CONNECT request, sent after the method (and auth) reply.
    connect: Vec<u8>,
    destination: Destination,
}

impl Handshake {
    pub fn start(proxy: &Proxy, destination: Destination) -> Result<Handshake, String> {
        let label = proxy.label();
        let mut hs = Handshake {
            label,
            stage: Stage::Done,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            credentials: proxy.credentials.clone(),
            connect: Vec::new(),
            destination: destination.clone(),
        };
        match proxy.kind {
            ProxyKind::Http => {
                let authority = match &destination {
                    Destination::Name(name, port) => format!("{name}:{port}"),
                    Destination::Addr(addr) => addr.to_string(),
                };
                let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
                if let Some((user, pass)) = &proxy.credentials {
                    request.push_str(&format!("Proxy-Authorization: {}\r\n", basic_credentials(user, pass)));
                }
                request.push_str("\r\n");
                hs.out = request.into_bytes();
                hs.stage = Stage::HttpAnswer;
            }
            ProxyKind::Socks5 | ProxyKind::Socks5h => {
                // Version 5, then the methods we can do: none (0), and
                // username/password (2) when we have them.
                hs.out = match &proxy.credentials {
                    Some(_) => vec![5, 2, 0, 2],
                    None => vec![5, 1, 0],
                };
                hs.connect = socks_connect(&destination)?;
                hs.stage = Stage::SocksMethod;
            }
        }
        Ok(hs)
    }

    /// Bytes still to write.
    pub fn output(&self) -> &[u8] {
        &self.out[self.written..]
    }

    pub fn wrote(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
    }

    /// How many bytes may be read now: 0 while there is output left.
    pub fn read_limit(&self) -> usize {
        if !self.output().is_empty() {
            return 0;
        }
        let have = self.input.len();
        match self.stage {
            Stage::HttpAnswer => MAX_HTTP_ANSWER + 1 - have,
            Stage::SocksMethod | Stage::SocksAuth => 2 - have,
            Stage::SocksReply if have < 5 => 5 - have,
            Stage::SocksReply => {
                let total = match self.input[3] {
                    1 => 4 + 4 + 2,
                    4 => 4 + 16 + 2,
                    _ => 4 + 1 + usize::from(self.input[4]) + 2,
                };
                total.saturating_sub(have)
            }
            Stage::Done => 0,
        }
    }

    /// Bytes read from the proxy. `Err`: the connection fails with this.
    pub fn received(&mut self, data: &[u8]) -> Result<Progress, String> {
        self.input.extend_from_slice(data);
        match self.stage {
            Stage::HttpAnswer => self.http_answer(),
            Stage::SocksMethod if self.input.len() == 2 => self.socks_method(),
            Stage::SocksAuth if self.input.len() == 2 => self.socks_auth(),
            // A refusal is reported as soon as its code is in: a proxy may
            // close without the rest.
            Stage::SocksReply if self.input.len() >= 2 && (self.input[0] != 5 || self.input[1] != 0) => {
                self.socks_reply()
            }
            Stage::SocksReply if self.input.len() >= 4 && !matches!(self.input[3], 1 | 3 | 4) => {
                Err(format!("SOCKS5 proxy: answered CONNECT with address type {} ({})", self.input[3], self.label))
            }
            Stage::SocksReply if self.input.len() >= 5 && self.read_limit() == 0 => self.socks_reply(),
            Stage::Done => Ok(Progress::Done),
            _ => Ok(Progress::More),
        }
    }

    fn send(&mut self, bytes: Vec<u8>, stage: Stage) -> Result<Progress, String> {
        self.out = bytes;
        self.written = 0;
        self.input.clear();
        self.stage = stage;
        Ok(Progress::More)
    }

    fn http_answer(&mut self) -> Result<Progress, String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        let head_len = match answer.parse(&self.input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.input.len() > MAX_HTTP_ANSWER => {
                return Err(format!("proxy {} answered CONNECT with over {MAX_HTTP_ANSWER} bytes of head", self.label))
            }
            Ok(httparse::Status::Partial) => return Ok(Progress::More),
            Err(e) => return Err(format!("proxy {} sent an invalid answer to CONNECT: {e}", self.label)),
        };
        let status = answer.code.unwrap_or(0);
        if !(200..300).contains(&status) {
            let reason: String = answer.reason.unwrap_or("").chars().filter(|c| !c.is_control()).take(80).collect();
            let mut text = format!("proxy {} refused CONNECT: {status} {}", self.label, reason.trim());
            // 407 is the proxy's own "authenticate"; some (tinyproxy) send
            // 401 for credentials they refuse.
            if status == 407 || status == 401 {
                text.push_str(match self.credentials {
                    Some(_) => " (the proxy's credentials were refused)",
                    None => " (no credentials given for the proxy)",
                });
            }
            return Err(text.trim_end().to_string());
        }
        // RFC 9110 9.3.6: after a 2xx answer the connection is a tunnel.
        // The origin speaks only after our TLS hello or upgrade request,
        // so nothing of its can be here yet.
        if self.input.len() > head_len {
            return Err(format!("proxy {} sent data after its answer to CONNECT", self.label));
        }
        self.stage = Stage::Done;
        self.input = Vec::new();
        Ok(Progress::Done)
    }

    fn socks_method(&mut self) -> Result<Progress, String> {
        let label = &self.label;
        match (self.input[0], self.input[1]) {
            (5, 0) => {
                let connect = std::mem::take(&mut self.connect);
                self.send(connect, Stage::SocksReply)
            }
            (5, 2) => {
                let Some((user, pass)) = &self.credentials else {
                    return Err(format!(
                        "SOCKS5 proxy: chose password authentication, which was not offered ({label})"
                    ));
                };
                // RFC 1929: version 1, then each as one length byte and the text.
                let mut auth = Vec::with_capacity(3 + user.len() + pass.len());
                auth.push(1);
                auth.push(user.len() as u8);
                auth.extend_from_slice(user);
                auth.push(pass.len() as u8);
                auth.extend_from_slice(pass);
                self.send(auth, Stage::SocksAuth)
            }
            (5, 0xff) if self.credentials.is_none() => {
                Err(format!("SOCKS5 proxy: authentication required, and no username and password were given ({label})"))
            }
            (5, 0xff) => Err(format!("SOCKS5 proxy: accepts none of the offered authentication methods ({label})")),
            (5, m) => Err(format!("SOCKS5 proxy: chose authentication method {m}, which was not offered ({label})")),
            (v, _) => Err(format!("SOCKS5 proxy: answered with version {v}, not a SOCKS5 server? ({label})")),
        }
    }

    fn socks_auth(&mut self) -> Result<Progress, String> {
        // RFC 1929: the answer is version 1, then the status.
        if self.input[0] != 1 {
            return Err(format!("SOCKS5 proxy: answered the password with version {} ({})", self.input[0], self.label));
        }
        if self.input[1] != 0 {
            return Err(format!("SOCKS5 proxy: authentication failed ({})", self.label));
        }
        let connect = std::mem::take(&mut self.connect);
        self.send(connect, Stage::SocksReply)
    }

    fn socks_reply(&mut self) -> Result<Progress, String> {
        let (version, reply) = (self.input[0], self.input[1]);
        if version != 5 {
            return Err(format!("SOCKS5 proxy: answered CONNECT with version {version} ({})", self.label));
        }
        if reply != 0 {
            // RFC 1928 section 6.
            let why = match reply {
                1 => "general SOCKS server failure",
                2 => "connection not allowed by ruleset",
                3 => "network unreachable",
                4 => "host unreachable",
                5 => "connection refused",
                6 => "TTL expired",
                7 => "command not supported",
                8 => "address type not supported",
                _ => "unknown error",
            };
            return Err(format!(
                "SOCKS5 proxy {} could not connect to {}: {why} (reply {reply})",
                self.label, self.destination
            ));
        }
        self.stage = Stage::Done;
        self.input = Vec::new();
        Ok(Progress::Done)
    }
}

/// The SOCKS5 CONNECT request (RFC 1928 section 4).
fn socks_connect(destination: &Destination) -> Result<Vec<u8>, String> {
    let mut req = vec![5, 1, 0];
    let port = match destination {
        Destination::Name(name, port) => {
            if name.is_empty() || name.len() > 255 {
                return Err(format!("SOCKS5 cannot carry a host name of {} bytes (1 to 255)", name.len()));
            }
            req.push(3);
            req.push(name.len() as u8);
            req.extend_from_slice(name.as_bytes());
            *port
        }
        Destination::Addr(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Destination::Addr(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
    };
    req.extend_from_slice(&port.to_be_bytes());
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
    }

    fn domain(name: &str) -> TargetHost {
        TargetHost::Domain(name.into())
    }

    fn ip(text: &str) -> TargetHost {
        TargetHost::Ip(text.parse().unwrap())
    }

    #[test]
    fn setter_urls() {
        let p = Proxy::parse("http://user:p%40ss@127.0.0.1:3128").unwrap();
        assert_eq!((p.kind, p.label()), (ProxyKind::Http, "127.0.0.1:3128".to_string()));
        assert_eq!(p.credentials, Some((b"user".to_vec(), b"p@ss".to_vec())));
        let p = Proxy::parse("socks5h://[::1]:1080/").unwrap();
        assert_eq!((p.kind, p.label(), p.credentials.is_none()), (ProxyKind::Socks5h, "[::1]:1080".into(), true));
        let p = Proxy::parse("socks5://10.0.0.1:1080").unwrap();
        assert_eq!(p.host, ip("10.0.0.1"));
        let p = Proxy::parse("http://Proxy.Example:80").unwrap();
        assert_eq!((p.port, p.host_name()), (80, "proxy.example".into()));
        for (url, why) in [
            ("http://127.0.0.1", "no port"),
            ("socks5://h", "no port"),
            ("ftp://h:21", "not supported"),
            ("https://h:443", "not supported"),
            ("not a url", "does not parse"),
            ("http://h:3128/path", "path"),
            ("http://h:0", "port 0"),
            ("socks5://:pw@h:1080", "username"),
            // Once a panic (a char boundary in the localhost check).
            ("socks5h://\u{e9}123456789:1080", "not an address nor a DNS name"),
            ("socks5h://%FF123456789localhost:1080", "not an address nor a DNS name"),
        ] {
            let e = Proxy::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = Proxy::parse("ftp://user:secret@h:21").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn environment_values_as_curl_reads_them() {
        let p = Proxy::parse_env("proxy.example").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Http, 1080));
        let p = Proxy::parse_env("socks5h://proxy.example").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5h, 1080));
        assert_eq!(Proxy::parse_env("http://proxy.example:80").unwrap().port, 80);
    }

    #[test]
    fn environment_precedence() {
        let host = domain("example.com");
        let chosen = |vars: &'static [(&'static str, &'static str)], secure| {
            from_environment(secure, &host, env(vars)).unwrap().map(|p| p.label())
        };
        assert_eq!(chosen(&[], false), None);
        // ws:// reads http_proxy in lower case only.
        assert_eq!(chosen(&[("HTTP_PROXY", "a:1")], false), None);
        assert_eq!(chosen(&[("http_proxy", "a:1"), ("all_proxy", "b:2")], false), Some("a:1".into()));
        assert_eq!(chosen(&[("https_proxy", "a:1")], false), None);
        // wss:// reads https_proxy, then HTTPS_PROXY.
        assert_eq!(chosen(&[("https_proxy", "a:1"), ("HTTPS_PROXY", "b:2")], true), Some("a:1".into()));
        assert_eq!(chosen(&[("HTTPS_PROXY", "b:2"), ("http_proxy", "c:3")], true), Some("b:2".into()));
        // all_proxy, then ALL_PROXY, for both; empty counts as unset.
        assert_eq!(chosen(&[("http_proxy", ""), ("ALL_PROXY", "d:4")], false), Some("d:4".into()));
        assert_eq!(chosen(&[("all_proxy", "e:5"), ("ALL_PROXY", "d:4")], true), Some("e:5".into()));
        // no_proxy wins, then NO_PROXY.
        assert_eq!(chosen(&[("all_proxy", "e:5"), ("no_proxy", "example.com")], true), None);
        assert_eq!(chosen(&[("all_proxy", "e:5"), ("NO_PROXY", ".com")], true), None);
        assert_eq!(
            chosen(&[("all_proxy", "e:5"), ("no_proxy", "other.com"), ("NO_PROXY", "*")], true),
            Some("e:5".into())
        );
        // ws_proxy and wss_proxy come first, in both cases.
        assert_eq!(chosen(&[("ws_proxy", "w:1"), ("http_proxy", "a:1")], false), Some("w:1".into()));
        assert_eq!(chosen(&[("WS_PROXY", "w:2"), ("http_proxy", "a:1")], false), Some("w:2".into()));
        assert_eq!(chosen(&[("wss_proxy", "w:3"), ("https_proxy", "a:1")], true), Some("w:3".into()));
        assert_eq!(chosen(&[("WSS_PROXY", "w:4"), ("ws_proxy", "w:1")], true), Some("w:4".into()));
        let e = from_environment(false, &host, env(&[("http_proxy", "ftp://u:secret@h:1")])).unwrap_err();
        assert!(e.starts_with("environment variable http_proxy: ") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn no_proxy_lists() {
        let m = no_proxy_matches;
        assert!(m("*", &domain("a.b")));
        assert!(m("example.com", &domain("example.com")));
        assert!(m("example.com", &domain("www.Example.com")));
        assert!(m(" foo, .example.com ", &domain("www.example.com")));
        assert!(m(".example.com", &domain("example.com")));
        assert!(!m("example.com", &domain("badexample.com")));
        assert!(!m("www.example.com", &domain("example.com")));
        assert!(!m("*.example.com", &domain("www.example.com")));
        assert!(m("127.0.0.1", &ip("127.0.0.1")));
        assert!(!m("127.0.0.1", &ip("127.0.0.2")));
        assert!(m("10.0.0.0/8", &ip("10.20.30.40")));
        assert!(!m("10.0.0.0/8", &ip("11.0.0.1")));
        assert!(m("::1", &ip("::1")));
        assert!(!m("[::1]", &ip("::1")), "brackets are no address (curl)");
        assert!(m("fd00::/8", &ip("fd12::5")));
        assert!(!m("fd00::/8", &ip("fe80::1")));
        assert!(!m("0.0.0.0/0", &ip("1.2.3.4")), "/0 is the address itself (curl)");
        assert!(m("1.2.3.4/0", &ip("1.2.3.4")));
        assert!(!m("1.2.3.4/33", &ip("1.2.3.4")), "a prefix longer than the address");
        assert!(!m("1.2.3.4/x", &ip("1.2.3.4")));
        assert!(!m(" * ", &domain("a.b")), "only \"*\" itself");
        assert!(m("foo bar.example", &domain("x.bar.example")), "spaces separate too");
        assert!(!m("localhost", &ip("127.0.0.1")));
    }

    /// Runs a handshake against scripted proxy answers; returns what was
    /// written in each round.
    fn drive(hs: &mut Handshake, answers: &[&[u8]]) -> (Vec<Vec<u8>>, Result<Progress, String>) {
        let mut sent = Vec::new();
        let mut last = Ok(Progress::More);
        for answer in answers {
            sent.push(hs.output().to_vec());
            let n = hs.output().len();
            hs.wrote(n);
            // Byte by byte, within the read limit each time.
            for b in answer.iter() {
                assert!(hs.read_limit() >= 1, "read past the answer");
                last = hs.received(&[*b]);
                if last.is_err() {
                    return (sent, last);
                }
            }
        }
        (sent, last)
    }

    #[test]
    fn http_connect() {
        let p = Proxy::parse("http://u:pw@127.0.0.1:3128").unwrap();
        let mut hs = Handshake::start(&p, Destination::Name("origin.example".into(), 443)).unwrap();
        let (sent, r) = drive(&mut hs, &[b"HTTP/1.1 200 Connection established\r\n\r\n"]);
        assert_eq!(r, Ok(Progress::Done));
        assert_eq!(
            String::from_utf8(sent[0].clone()).unwrap(),
            "CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\nProxy-Authorization: Basic dTpwdw==\r\n\r\n"
        );
        assert_eq!(hs.read_limit(), 0);
        let mut hs = Handshake::start(&p, Destination::Addr("[::1]:80".parse().unwrap())).unwrap();
        assert!(hs.output().starts_with(b"CONNECT [::1]:80 HTTP/1.1\r\n"));
        let (_, r) = drive(&mut hs, &[b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"]);
        assert_eq!(r, Err("proxy 127.0.0.1:3128 refused CONNECT: 403 Forbidden".into()));
        let mut hs = Handshake::start(&p, Destination::Name("o".into(), 80)).unwrap();
        let (_, r) = drive(&mut hs, &[b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"]);
        assert!(r.unwrap_err().contains("407 Proxy Authentication Required (the proxy's credentials were refused)"));
        let mut hs = Handshake::start(&p, Destination::Name("o".into(), 80)).unwrap();
        // Read in one piece, bytes past the answer fail the connection.
        hs.wrote(hs.output().len());
        let r = hs.received(b"HTTP/1.1 200 OK\r\n\r\nX");
        assert!(r.unwrap_err().contains("sent data after its answer"));
        let mut hs = Handshake::start(&p, Destination::Name("o".into(), 80)).unwrap();
        let (_, r) = drive(&mut hs, &[b"SSH-2.0-OpenSSH\r\n\r\n"]);
        assert!(r.unwrap_err().contains("invalid answer to CONNECT"));
    }

    #[test]
    fn socks5_without_and_with_password() {
        let p = Proxy::parse("socks5h://127.0.0.1:1080").unwrap();
        let mut hs = Handshake::start(&p, Destination::Name("ab".into(), 0x1234)).unwrap();
        let (sent, r) = drive(&mut hs, &[&[5, 0], &[5, 0, 0, 3, 2, b'x', b'y', 0, 1]]);
        assert_eq!(r, Ok(Progress::Done));
        assert_eq!(sent, vec![vec![5, 1, 0], vec![5, 1, 0, 3, 2, b'a', b'b', 0x12, 0x34]]);

        let p = Proxy::parse("socks5://me:pw@127.0.0.1:1080").unwrap();
        let dest = Destination::Addr("10.0.0.1:80".parse().unwrap());
        let mut hs = Handshake::start(&p, dest.clone()).unwrap();
        let ok4: &[u8] = &[5, 0, 0, 1, 1, 2, 3, 4, 0, 80];
        let (sent, r) = drive(&mut hs, &[&[5, 2], &[1, 0], ok4]);
        assert_eq!(r, Ok(Progress::Done));
        assert_eq!(sent[0], vec![5, 2, 0, 2]);
        assert_eq!(sent[1], b"\x01\x02me\x02pw".to_vec());
        assert_eq!(sent[2], vec![5, 1, 0, 1, 10, 0, 0, 1, 0, 80]);

        let mut hs = Handshake::start(&p, dest.clone()).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 2], &[1, 1]]);
        assert_eq!(r, Err("SOCKS5 proxy: authentication failed (127.0.0.1:1080)".into()));
        let mut hs = Handshake::start(&p, dest.clone()).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 0], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(
            r,
            Err("SOCKS5 proxy 127.0.0.1:1080 could not connect to 10.0.0.1:80: connection refused (reply 5)".into())
        );
        let no_creds = Proxy::parse("socks5://127.0.0.1:1080").unwrap();
        let mut hs = Handshake::start(&no_creds, dest.clone()).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 0xff]]);
        assert!(r.unwrap_err().contains("authentication required"));
        // An IPv6 bound address in the reply is read whole, and no more.
        let mut hs = Handshake::start(&no_creds, dest).unwrap();
        let mut ok6 = vec![5, 0, 0, 4];
        ok6.extend_from_slice(&[0; 18]);
        let (_, r) = drive(&mut hs, &[&[5, 0], &ok6]);
        assert_eq!((r, hs.read_limit()), (Ok(Progress::Done), 0));
        // An unknown address type fails at once; so does a refusal, as
        // soon as its code is in; and a password answer of another version.
        let dest = Destination::Name("o".into(), 80);
        let mut hs = Handshake::start(&no_creds, dest.clone()).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 0], &[5, 0, 0, 2]]);
        assert!(r.unwrap_err().contains("address type 2"));
        let mut hs = Handshake::start(&no_creds, dest.clone()).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 0], &[5, 4]]);
        assert!(r.unwrap_err().contains("host unreachable (reply 4)"));
        let mut hs = Handshake::start(&p, dest).unwrap();
        let (_, r) = drive(&mut hs, &[&[5, 2], &[5, 0]]);
        assert!(r.unwrap_err().contains("answered the password with version 5"));
    }
}
