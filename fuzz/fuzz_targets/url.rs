//! URL and subprotocol validation (src/proto/target.rs `Target::parse`, what
//! `ws_new` checks before touching the network), and the request that the
//! handshake then writes from the result.
//!
//! Input: UTF-8 text split at NUL bytes (which a C string cannot hold): the
//! URL, then up to 16 subprotocol names.
//!
//! Invariants: no panic; an accepted URL is ws:// or wss:// (as `secure`
//! says), parses again to itself, has no fragment and a host; the
//! protocols are exactly those given, each an HTTP token, none twice; the
//! request written from it is one well-formed HTTP request whose line and
//! headers are exactly the expected ones (no header injection through the
//! URL or the protocols).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::fuzzing::{request, CompressionOptions, Target};

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let url = parts.next().unwrap_or("");
    let protocols: Vec<&str> = parts.take(16).collect();
    let Ok(t) = Target::parse(url, &protocols) else {
        return;
    };
    let scheme = if t.secure { "wss://" } else { "ws://" };
    assert!(t.url.starts_with(scheme), "{url:?} gave {:?}", t.url);
    let again = url::Url::parse(&t.url).expect("the serialized URL parses");
    assert_eq!(again.as_str(), t.url, "serialization is stable");
    assert!(again.fragment().is_none() && !t.url.contains('#'), "fragment in {:?}", t.url);
    assert!(again.host_str().is_some_and(|h| !h.is_empty()), "no host in {:?}", t.url);
    assert_eq!(again.port_or_known_default(), Some(t.port));
    assert_eq!(t.protocols, protocols, "protocols changed");
    for (i, p) in t.protocols.iter().enumerate() {
        assert!(is_token(p), "protocol {p:?} is not a token");
        assert!(!t.protocols[..i].contains(p), "protocol {p:?} twice");
    }
    assert!(t.resource.starts_with('/'), "resource {:?}", t.resource);

    let (req, key) = request(&t, &[], &CompressionOptions::default());
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(&req).unwrap_or_else(|e| panic!("request for {url:?} does not parse: {e}"));
    assert_eq!(status, httparse::Status::Complete(req.len()), "request for {url:?}");
    assert_eq!(parsed.method, Some("GET"));
    assert_eq!(parsed.path, Some(t.resource.as_str()));
    let mut expected = vec![
        ("Host", t.host_header.clone()),
        ("Upgrade", "websocket".to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13".to_string()),
    ];
    if !t.protocols.is_empty() {
        expected.push(("Sec-WebSocket-Protocol", t.protocols.join(", ")));
    }
    // The default offer, as browsers make it.
    expected.push(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits".to_string()));
    let got: Vec<(&str, String)> =
        parsed.headers.iter().map(|h| (h.name, String::from_utf8_lossy(h.value).into_owned())).collect();
    assert_eq!(got, expected, "request headers for {url:?}");
});
