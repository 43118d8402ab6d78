//! The opening handshake (RFC 6455 section 4.1) with the WHATWG rules for
//! subprotocols and extensions, which are stricter than tungstenite's.

use crate::proto::extensions::{self, CompressionOptions, DeflateParams};
use crate::proto::target::Target;

/// A response head larger than this fails the connection.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// The request bytes and the key whose accept value the server must return:
/// the compression offer and the caller's extra headers (already checked)
/// go in as given.
pub fn request(target: &Target, headers: &[(String, String)], compression: &CompressionOptions) -> (Vec<u8>, String) {
    let key = tungstenite::handshake::client::generate_key();
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        target.resource, target.host_header, key
    );
    if !target.protocols.is_empty() {
        req.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", target.protocols.join(", ")));
    }
    if let Some(offer) = extensions::offer(compression) {
        req.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    (req.into_bytes(), key)
}

/// What a successful handshake agreed on.
#[derive(Debug, PartialEq, Eq)]
pub struct Agreed {
    pub protocol: String,
    /// The server's Sec-WebSocket-Extensions, as it wrote it.
    pub extensions: String,
    /// permessage-deflate, when agreed.
    pub deflate: Option<DeflateParams>,
    /// Bytes that followed the response head: the first frames.
    pub head_len: usize,
}

/// `Ok(None)`: the head is not complete yet. `Err`: the connection fails,
/// with a message for `on_error`.
pub fn parse_response(
    buf: &[u8],
    key: &str,
    offered: &[String],
    compression: &CompressionOptions,
) -> Result<Option<Agreed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(format!("handshake response head is larger than {MAX_RESPONSE_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid HTTP response to the handshake: {e}")),
    };
    if head_len > MAX_RESPONSE_HEAD {
        return Err(format!("handshake response head is larger than {MAX_RESPONSE_HEAD} bytes"));
    }
    let status = response.code.unwrap_or(0);
    if status != 101 {
        // Redirects are not followed (WHATWG: "the WebSocket connection is failed").
        let mut message = format!(
            "unexpected HTTP status {status} {} in the handshake response (expected 101)",
            response.reason.unwrap_or("")
        );
        if let Some(detail) = body_summary(&buf[head_len..]) {
            message.push_str(": ");
            message.push_str(&detail);
        }
        return Err(message);
    }
    let values = |name: &str| -> Vec<&str> {
        response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}").trim())
            .collect()
    };
    let has_token = |name: &str, token: &str| {
        values(name).iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") {
        return Err("handshake response has no 'Upgrade: websocket' header".into());
    }
    if !has_token("connection", "upgrade") {
        return Err("handshake response has no 'Connection: Upgrade' header".into());
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    match values("sec-websocket-accept").as_slice() {
        [accept] if *accept == expected => {}
        [accept] => return Err(format!("wrong Sec-WebSocket-Accept {accept:?} (expected {expected:?})")),
        [] => return Err("handshake response has no Sec-WebSocket-Accept header".into()),
        _ => return Err("handshake response has more than one Sec-WebSocket-Accept header".into()),
    }
    // RFC 6455 4.1 step 6: only what was offered may be used.
    let extension_values: Vec<&str> =
        values("sec-websocket-extensions").into_iter().filter(|v| !v.is_empty()).collect();
    let deflate = extensions::accept(&extension_values, compression)?;
    let protocol = match values("sec-websocket-protocol").as_slice() {
        [] if offered.is_empty() => String::new(),
        [] => return Err("server chose none of the offered subprotocols".into()),
        [p] if offered.iter().any(|o| o == p) => p.to_string(),
        [p] if offered.is_empty() => return Err(format!("server chose subprotocol {p:?}, but none was offered")),
        [p] => return Err(format!("server chose subprotocol {p:?}, which was not offered")),
        _ => return Err("handshake response has more than one Sec-WebSocket-Protocol header".into()),
    };
    // Empty list elements are ignored (RFC 9110 5.6.1.2), so ", ," agrees
    // on nothing, and `extensions` (WHATWG: the extensions in use) is ""
    // then. What was agreed keeps the server's spelling.
    let extensions = if deflate.is_some() { extension_values.join(", ") } else { String::new() };
    Ok(Some(Agreed { protocol, extensions, deflate, head_len }))
}

/// The server's answer to the upgrade request, kept for
/// `ws_response_status` and `ws_response_header`: the status, and the
/// headers packed as "name\0value\0..." so that each value is a C string
/// in place (one allocation, the size of the header block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    packed: Box<[u8]>,
}

impl ResponseHead {
    /// A complete response head (None while incomplete or invalid).
    pub fn parse(head: &[u8]) -> Option<ResponseHead> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        if !matches!(response.parse(head), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let size: usize = response.headers.iter().map(|h| h.name.len() + h.value.len() + 2).sum();
        let mut packed = Vec::new();
        packed.try_reserve_exact(size).ok()?;
        for h in response.headers.iter() {
            packed.extend_from_slice(h.name.as_bytes());
            packed.push(0);
            // A NUL cannot be in a C string: the value ends there.
            let value = h.value.split(|&b| b == 0).next().unwrap_or_default();
            packed.extend_from_slice(value);
            packed.push(0);
        }
        Some(ResponseHead { status: response.code.unwrap_or(0), packed: packed.into_boxed_slice() })
    }

    /// The first value of header `name` (ASCII case-insensitive) with its
    /// terminating NUL.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let mut fields = self.packed.split_inclusive(|&b| b == 0);
        while let (Some(n), Some(v)) = (fields.next(), fields.next()) {
            if n[..n.len() - 1].eq_ignore_ascii_case(name) {
                return Some(v);
            }
        }
        None
    }
}

/// Whether a complete response head is a 401 whose `WWW-Authenticate`
/// offers the Basic scheme (RFC 7235: a header may list several
/// challenges, each a scheme token followed by its parameters).
pub fn basic_challenge(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if !matches!(response.parse(head), Ok(httparse::Status::Complete(_))) || response.code != Some(401) {
        return false;
    }
    response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("www-authenticate")).any(|h| {
        // A challenge starts the value or follows a comma outside a quoted
        // string; a parameter (name=value) is no scheme.
        outside_quotes(h.value)
            .split(|&b| b == b',')
            .filter_map(|item| item.split(|b| b.is_ascii_whitespace()).find(|t| !t.is_empty()))
            .any(|t| t.eq_ignore_ascii_case(b"basic"))
    })
}

/// `value` with each quoted string (RFC 9110 5.6.4, escapes included)
/// blanked out, so that commas and words inside one are not read as
/// list separators or schemes.
fn outside_quotes(value: &[u8]) -> Vec<u8> {
    let (mut out, mut quoted, mut escaped) = (Vec::with_capacity(value.len()), false, false);
    for &b in value {
        let keep = !quoted && b != b'"';
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => quoted = !quoted,
            _ => {}
        }
        out.push(if keep { b } else { b' ' });
    }
    out
}

/// What an error page says, for the error message: its HTML title, or
/// its first line of text; at most 120 characters.
fn body_summary(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let title =
        text.split_once("<title>").and_then(|(_, rest)| rest.split_once("</title>")).map(|(t, _)| t.to_string());
    let line = title.or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string))?;
    let line: String = line.chars().filter(|c| !c.is_control()).take(120).collect();
    (!line.trim().is_empty()).then(|| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn response_heads_keep_the_first_value_of_each_header() {
        let head =
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\nbody";
        let r = ResponseHead::parse(head).unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(r.header(b"location"), Some(&b"/elsewhere\0"[..]));
        assert_eq!(r.header(b"SET-COOKIE"), Some(&b"a=1\0"[..]));
        assert_eq!(r.header(b"x-empty"), Some(&b"\0"[..]));
        assert_eq!(r.header(b"missing"), None);
        assert_eq!(r.header(b""), None);
        assert!(ResponseHead::parse(b"HTTP/1.1 101 Switching").is_none());
        assert!(ResponseHead::parse(b"garbage\r\n\r\n").is_none());
    }

    #[test]
    fn basic_challenges() {
        let head = |status: &str, value: &str| format!("HTTP/1.1 {status}\r\nWWW-Authenticate: {value}\r\n\r\n");
        assert!(basic_challenge(head("401 Unauthorized", "Basic realm=\"x\"").as_bytes()));
        assert!(basic_challenge(head("401 Unauthorized", "Negotiate, basic realm=x").as_bytes()));
        assert!(!basic_challenge(head("401 Unauthorized", "Bearer realm=\"basic\"").as_bytes()));
        assert!(!basic_challenge(head("401 Unauthorized", "Digest realm=x, nonce=basic").as_bytes()));
        assert!(!basic_challenge(head("401 Unauthorized", "Digest realm=\"a, Basic b\"").as_bytes()));
        assert!(!basic_challenge(head("401 Unauthorized", "Digest realm=\"a\\\", Basic b\"").as_bytes()));
        assert!(basic_challenge(head("401 Unauthorized", "Digest realm=\"a, b\", Basic realm=c").as_bytes()));
        assert!(!basic_challenge(head("403 Forbidden", "Basic realm=x").as_bytes()));
        assert!(!basic_challenge(b"HTTP/1.1 401 Unauthorized\r\n\r\n"));
        assert!(!basic_challenge(b"HTTP/1.1 401 Unauth"));
    }

    fn on() -> CompressionOptions {
        CompressionOptions::default()
    }

    fn off() -> CompressionOptions {
        CompressionOptions { enabled: false, ..CompressionOptions::default() }
    }

    fn response(extra: &str) -> String {
        format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n")
    }

    #[test]
    fn request_has_every_header() {
        let t = Target::parse("ws://h:9/p?q", &["a", "b"]).unwrap();
        let headers = vec![("X-Y".to_string(), "z".to_string())];
        let mut compression = CompressionOptions::default();
        let (req, key) = request(&t, &headers, &compression);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /p?q HTTP/1.1\r\nHost: h:9\r\n"));
        assert!(req.contains(&format!("Sec-WebSocket-Key: {key}\r\n")));
        assert!(req.contains("Sec-WebSocket-Protocol: a, b\r\n"));
        assert!(req.ends_with("X-Y: z\r\n\r\n"));
        assert!(req.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
        compression.enabled = false;
        let (req, _) = request(&t, &headers, &compression);
        assert!(!String::from_utf8(req).unwrap().contains("Extensions"));
    }

    #[test]
    fn extensions_as_the_server_wrote_them() {
        let r = response("Sec-WebSocket-Extensions:  permessage-deflate;server_no_context_takeover \r\n");
        let a = parse_response(r.as_bytes(), KEY, &[], &on()).unwrap().unwrap();
        assert_eq!(a.extensions, "permessage-deflate;server_no_context_takeover");
        assert!(a.deflate.unwrap().server_no_context_takeover);
        let a = parse_response(response("").as_bytes(), KEY, &[], &on()).unwrap().unwrap();
        assert_eq!((a.extensions.as_str(), a.deflate), ("", None));
        // Empty list elements are no extension (RFC 9110 5.6.1.2): nothing
        // agreed, and `extensions` says so (a fuzzer found ",,,,," kept).
        for empty in [",,,,,", " , ,", ","] {
            let r = response(&format!("Sec-WebSocket-Extensions: {empty}\r\n"));
            let a = parse_response(r.as_bytes(), KEY, &[], &on()).unwrap().unwrap();
            assert_eq!((a.extensions.as_str(), a.deflate), ("", None), "{empty:?}");
        }
        let r = response("Sec-WebSocket-Extensions: ,permessage-deflate,\r\n");
        let a = parse_response(r.as_bytes(), KEY, &[], &on()).unwrap().unwrap();
        assert!(a.deflate.is_some() && !a.extensions.is_empty());
        let r = response("Sec-WebSocket-Extensions: permessage-deflate; bogus\r\n");
        let e = parse_response(r.as_bytes(), KEY, &[], &on()).unwrap_err();
        assert!(e.contains("unknown parameter bogus"), "{e}");
    }

    #[test]
    fn accepts_valid_response_with_tail() {
        let mut r = response("").into_bytes();
        let head = r.len();
        r.extend_from_slice(&[0x81, 0]);
        let a = parse_response(&r, KEY, &[], &on()).unwrap().unwrap();
        assert_eq!(a.head_len, head);
        assert_eq!(a.protocol, "");
        assert_eq!(parse_response(&r[..head - 1], KEY, &[], &on()), Ok(None));
    }

    #[test]
    fn protocol_rules() {
        let offered = vec!["a".to_string(), "b".to_string()];
        let r = response("Sec-WebSocket-Protocol: b\r\n");
        assert_eq!(parse_response(r.as_bytes(), KEY, &offered, &on()).unwrap().unwrap().protocol, "b");
        assert!(parse_response(r.as_bytes(), KEY, &[], &on()).is_err());
        assert!(parse_response(response("").as_bytes(), KEY, &offered, &on()).is_err());
        let r = response("Sec-WebSocket-Protocol: c\r\n");
        assert!(parse_response(r.as_bytes(), KEY, &offered, &on()).is_err());
    }

    #[test]
    fn failures() {
        let bad = [
            "HTTP/1.1 403 Forbidden\r\n\r\n".to_string(),
            "HTTP/1.1 302 Found\r\nLocation: ws://x/\r\n\r\n".to_string(),
            response("").replace(ACCEPT, "AAAA"),
            response("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            response("").replace("upgrade: WebSocket\r\n", ""),
            "garbage\r\n\r\n".to_string(),
        ];
        for r in bad {
            assert!(parse_response(r.as_bytes(), KEY, &[], &off()).is_err(), "{r}");
        }
        let page = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html><head><title>400 No required SSL certificate was sent</title></head>";
        let e = parse_response(page.as_bytes(), KEY, &[], &on()).unwrap_err();
        assert!(e.ends_with("(expected 101): 400 No required SSL certificate was sent"), "{e}");
        let e = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n\ngo away\x07\n", KEY, &[], &on()).unwrap_err();
        assert!(e.ends_with(": go away"), "{e}");
        let huge = format!("HTTP/1.1 101 OK\r\nX: {}\r\n", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(parse_response(huge.as_bytes(), KEY, &[], &on()).is_err());
    }
}
