//! What `new WebSocket(url, protocols)` checks before anything touches the
//! network (WHATWG WebSockets Standard, "the WebSocket(url, protocols)
//! constructor", steps 1-10).

use crate::error::{io_text, Error};
use url::{Host, Url};

/// Where to connect and what to ask for, after every constructor check.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The serialized URL with the scheme mapped to ws/wss: what `ws_url` returns.
    pub url: String,
    pub secure: bool,
    pub host: TargetHost,
    pub port: u16,
    /// `Host` header value: host, plus `:port` when the port is not the default.
    pub host_header: String,
    /// Path and query, as the request line needs them.
    pub resource: String,
    pub protocols: Vec<String>,
    /// From the URL's userinfo, sent only when the server asks (a 401
    /// with a Basic challenge), as browsers do.
    pub credentials: Option<Credentials>,
}

/// Never prints the URL's password.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redacted(&self.url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("resource", &self.resource)
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}

/// An `Authorization` value (Basic, RFC 7617) made from a URL's userinfo.
/// Never printed: its Debug form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(String);

impl Credentials {
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// RFC 6761 6.3: "localhost" and names under it are the loopback.
/// Compared as bytes: a name may hold any text.
pub fn is_localhost(name: &str) -> bool {
    let name = name.as_bytes();
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.eq_ignore_ascii_case(b"localhost")
        || name.len() > 10 && name[name.len() - 10..].eq_ignore_ascii_case(b".localhost")
}

/// "Basic base64(user:password)" (RFC 7617), for `Authorization` and
/// `Proxy-Authorization`.
pub fn basic_credentials(user: &[u8], pass: &[u8]) -> String {
    let mut joined = Vec::with_capacity(user.len() + 1 + pass.len());
    joined.extend_from_slice(user);
    joined.push(b':');
    joined.extend_from_slice(pass);
    format!("Basic {}", data_encoding::BASE64.encode(&joined))
}

/// The URL as error texts may show it: a password in the userinfo is
/// replaced by "***" (the text is split by hand, since the URL may not
/// parse).
fn redacted(url: &str) -> String {
    // Parsers disagree on where a broken URL's userinfo ends (an unencoded
    // '/' in a password, "ws:u:p@h", "ws:///u:p@h"): everything between
    // the scheme and the last '@' goes.
    match (url.split_once(':'), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if scheme.len() < at => format!("{scheme}:***{}", &url[at..]),
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A name to resolve.
    Domain(String),
    /// An address literal: no resolution needed.
    Ip(std::net::IpAddr),
}

impl Target {
    /// The host as TLS checks it and as messages name it: a name, or an
    /// address without brackets.
    pub fn host_name(&self) -> String {
        match &self.host {
            TargetHost::Domain(name) => name.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        }
    }

    /// The addresses of a host that needs no lookup: an address literal,
    /// or a "localhost" name, which RFC 6761 section 6.3 has resolvers
    /// always answer with the loopback addresses (as browsers do, without
    /// asking DNS or /etc/hosts): IPv6 first, as getaddrinfo orders them.
    /// None for a name to resolve.
    pub fn known_addrs(&self) -> Option<Vec<std::net::SocketAddr>> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        match &self.host {
            TargetHost::Ip(ip) => Some(vec![SocketAddr::new(*ip, self.port)]),
            TargetHost::Domain(name) => is_localhost(name).then(|| {
                vec![
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port),
                ]
            }),
        }
    }

    pub fn parse(url: &str, protocols: &[&str]) -> Result<Target, Error> {
        // Steps 1-2: parse with the URL parser; failure is a SyntaxError.
        let shown = redacted(url);
        let mut parsed = Url::parse(url).map_err(|e| Error::syntax(format!("cannot parse URL {shown:?}: {e}")))?;
        // Steps 4-5: http -> ws, https -> wss, then only ws and wss remain.
        let secure = match parsed.scheme() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            other => return Err(Error::syntax(format!("URL scheme {other:?} is not ws, wss, http or https"))),
        };
        let scheme = if secure { "wss" } else { "ws" };
        if parsed.scheme() != scheme && parsed.set_scheme(scheme).is_err() {
            return Err(Error::syntax(format!("cannot use URL {shown:?} as {scheme}://")));
        }
        // Step 6: a fragment is a SyntaxError.
        if parsed.fragment().is_some() {
            return Err(Error::syntax("a WebSocket URL may not have a fragment"));
        }
        let host = match parsed.host() {
            Some(Host::Domain(d)) => TargetHost::Domain(d.to_string()),
            Some(Host::Ipv4(a)) => TargetHost::Ip(a.into()),
            Some(Host::Ipv6(a)) => TargetHost::Ip(a.into()),
            None => return Err(Error::syntax(format!("URL {shown:?} has no host"))),
        };
        let port = parsed.port_or_known_default().ok_or_else(|| Error::syntax(format!("URL {shown:?} has no port")))?;
        let host_str = parsed.host_str().unwrap_or_default();
        let host_header = match parsed.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_string(),
        };
        let mut resource = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            resource.push('?');
            resource.push_str(q);
        }
        // The userinfo, percent-decoded (Fetch: the URL's username and
        // password become the Basic credentials).
        let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
        let credentials = (!parsed.username().is_empty() || parsed.password().is_some()).then(|| {
            Credentials(basic_credentials(&decode(parsed.username()), &decode(parsed.password().unwrap_or(""))))
        });
        Ok(Target {
            credentials,
            url: parsed.to_string(),
            secure,
            host,
            port,
            host_header,
            resource,
            protocols: check_protocols(protocols)?,
        })
    }
}

impl Target {
    /// Why no address took the TCP connection, said once: "connect to
    /// 127.0.0.1 port 1 failed: Connection refused", or for a name with
    /// several addresses "connect to localhost port 1 failed: 127.0.0.1:
    /// Connection refused; [::1]: Connection refused".
    pub fn connect_failed(&self, errors: &[(std::net::SocketAddr, std::io::Error)]) -> String {
        let host = self.host_header.strip_suffix(&format!(":{}", self.port)).unwrap_or(&self.host_header);
        connect_failed(host, matches!(self.host, TargetHost::Ip(_)), self.port, errors)
    }
}

/// "connect to HOST port N failed: ...", for the origin or a proxy. An
/// address literal (`literal`) has one address: the host says it already.
pub fn connect_failed(
    host: &str,
    literal: bool,
    port: u16,
    errors: &[(std::net::SocketAddr, std::io::Error)],
) -> String {
    let why: Vec<String> = if literal {
        errors.iter().map(|(_, e)| io_text(e)).collect()
    } else {
        errors
            .iter()
            .map(|(addr, e)| match addr {
                std::net::SocketAddr::V4(a) => format!("{}: {}", a.ip(), io_text(e)),
                std::net::SocketAddr::V6(a) => format!("[{}]: {}", a.ip(), io_text(e)),
            })
            .collect()
    };
    format!("connect to {host} port {port} failed: {}", why.join("; "))
}

/// Step 8: each protocol is a non-empty token, with no duplicates. Browsers
/// compare them case-sensitively, and so does this.
fn check_protocols(protocols: &[&str]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(protocols.len());
    for p in protocols {
        if !is_http_token(p) {
            return Err(Error::syntax(format!("protocol {p:?} is not an HTTP token")));
        }
        if out.iter().any(|q| q == p) {
            return Err(Error::syntax(format!("protocol {p:?} is listed twice")));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

/// RFC 9110 section 5.6.2: token = 1*tchar.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Target {
        Target::parse(url, &[]).unwrap()
    }

    #[test]
    fn userinfo_becomes_basic_credentials_and_stays_in_the_url() {
        // RFC 7617 section 2's example, percent-decoded first.
        let t = ok("ws://Aladdin:open%20sesame@example.com/");
        assert_eq!(t.credentials.as_ref().map(Credentials::reveal), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        assert_eq!(t.url, "ws://Aladdin:open%20sesame@example.com/");
        assert!(!format!("{t:?}").contains("QWxh") && !format!("{t:?}").contains("sesame"), "{t:?}");
        assert_eq!(ok("ws://user@h/").credentials.unwrap().reveal(), format!("Basic {}", "dXNlcjo="));
        assert!(ok("ws://h/").credentials.is_none());
    }

    #[test]
    fn error_texts_hide_the_password() {
        for url in ["ws://user:hunter2@:80/", "ws://user:hunter2@h:99999/", "ws://user:hunter2@h/#frag"] {
            let e = Target::parse(url, &[]).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert_eq!(redacted("ws://u:p@w@h:1/x?y"), "ws:***@h:1/x?y");
        assert_eq!(redacted("ws://h/p:q"), "ws://h/p:q");
        for url in ["ws:u:hunter2@h:99999", "ws:///u:hunter2@h:99999", "ws://u:hun/ter2@h/", "ws:\\\\u:hunter2@h:99999"]
        {
            assert!(!redacted(url).contains("hunter2"), "{url}");
            if let Err(e) = Target::parse(url, &[]) {
                assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("ter2"), "{e}");
            }
        }
    }

    #[test]
    fn localhost_names_are_loopback_without_a_lookup() {
        use std::net::SocketAddr;
        let loopback: Vec<SocketAddr> = vec!["[::1]:81".parse().unwrap(), "127.0.0.1:81".parse().unwrap()];
        for url in ["ws://localhost:81", "ws://LocalHost.:81/", "ws://app.localhost:81", "wss://a.b.LOCALHOST:81"] {
            assert_eq!(ok(url).known_addrs(), Some(loopback.clone()), "{url}");
        }
        for url in ["ws://notlocalhost:81", "ws://localhost.example:81", "ws://example.com:81", "ws://xlocalhost:81"] {
            assert_eq!(ok(url).known_addrs(), None, "{url}: a name to resolve");
        }
        assert_eq!(ok("ws://10.1.2.3:81").known_addrs(), Some(vec!["10.1.2.3:81".parse().unwrap()]));
        assert_eq!(ok("ws://[fe80::1]:81").known_addrs(), Some(vec!["[fe80::1]:81".parse().unwrap()]));
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri's strerror_r gives Rust's error text, not the C library's")]
    fn connect_failures_name_each_address_once() {
        use std::io::Error as IoError;
        let refused = || IoError::from_raw_os_error(libc::ECONNREFUSED);
        let t = ok("ws://127.0.0.1:1/");
        assert_eq!(
            t.connect_failed(&[("127.0.0.1:1".parse().unwrap(), refused())]),
            "connect to 127.0.0.1 port 1 failed: Connection refused"
        );
        let t = ok("ws://localhost:1/");
        let errors = [("127.0.0.1:1".parse().unwrap(), refused()), ("[::1]:1".parse().unwrap(), refused())];
        assert_eq!(
            t.connect_failed(&errors),
            "connect to localhost port 1 failed: 127.0.0.1: Connection refused; [::1]: Connection refused"
        );
        let t = ok("ws://[::1]/");
        assert_eq!(
            t.connect_failed(&[("[::1]:80".parse().unwrap(), refused())]),
            "connect to [::1] port 80 failed: Connection refused"
        );
    }

    #[test]
    fn schemes_map_as_in_browsers() {
        assert_eq!(ok("http://example.com/a").url, "ws://example.com/a");
        assert_eq!(ok("HTTPS://example.com").url, "wss://example.com/");
        assert!(ok("https://h").secure);
        assert!(!ok("ws://h").secure);
        assert_eq!(ok("ws://h").port, 80);
        assert_eq!(ok("wss://h").port, 443);
    }

    #[test]
    fn resource_host_and_port() {
        let t = ok("ws://127.0.0.1:9001/chat/x?a=1&b=%20");
        assert_eq!(t.resource, "/chat/x?a=1&b=%20");
        assert_eq!(t.host_header, "127.0.0.1:9001");
        assert_eq!(t.host, TargetHost::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(t.url, "ws://127.0.0.1:9001/chat/x?a=1&b=%20");
        let t = ok("ws://[::1]:80/");
        assert_eq!(t.url, "ws://[::1]/");
        assert_eq!(t.host_header, "[::1]");
        assert_eq!(t.host, TargetHost::Ip("::1".parse().unwrap()));
        let t = ok("ws://LocalHost");
        assert_eq!(t.host, TargetHost::Domain("localhost".into()));
        assert_eq!(t.resource, "/");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "ws://h/#frag",
            "ws://h/#",
            "ftp://h/",
            "file:///tmp/x",
            "mailto:a@b",
            "not a url",
            "",
            "ws://",
            "ws://h:99999/",
        ] {
            let e = Target::parse(bad, &[]).unwrap_err();
            assert_eq!(e.code(), crate::error::WS_ERR_SYNTAX, "{bad}");
        }
    }

    #[test]
    fn protocol_rules() {
        let t = Target::parse("ws://h", &["chat", "superchat"]).unwrap();
        assert_eq!(t.protocols, vec!["chat", "superchat"]);
        for bad in [&["" as &str][..], &["a b"], &["a,b"], &["chat", "chat"], &["é"]] {
            assert_eq!(Target::parse("ws://h", bad).unwrap_err().code(), crate::error::WS_ERR_SYNTAX);
        }
        // Case differs: two protocols, as in browsers.
        assert!(Target::parse("ws://h", &["Chat", "chat"]).is_ok());
    }
}
