//! Proxies (src/proto/proxy.rs): the proxy URL the setter and the
//! environment take, `no_proxy` lists, and the handshake against a proxy's
//! answers, which come from the network.
//!
//! Input: a first byte choosing the proxy (HTTP CONNECT, socks5, socks5h;
//! with or without credentials; the destination a name or an address),
//! then the proxy's bytes, cut into reads of varying size; or, with the
//! first byte's top bit set, UTF-8 text split at NUL: a proxy URL and a
//! `no_proxy` list.
//!
//! Invariants: no panic; a parsed proxy's label never holds its
//! credentials, nor does any error text (unless the proxy sent them); the
//! handshake, fed at most `read_limit` bytes at a time, ends or fails
//! without a panic; once done it reads no more; every error names the
//! proxy; a parsed proxy's addresses and name are computed without a panic
//! (a non-ASCII host once panicked in the localhost check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::fuzzing::{no_proxy_matches, Destination, Handshake, Progress, Proxy, TargetHost};

const SECRET: &str = "zq9secretx";

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    if first & 0x80 != 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let mut parts = text.split('\0');
        let url = parts.next().unwrap_or("");
        let list = parts.next().unwrap_or("");
        for parsed in [Proxy::parse(url), Proxy::parse_env(url)] {
            match parsed {
                Ok(p) => {
                    assert!(p.port != 0);
                    let _ = format!("{p:?} {} {}", p.label(), p.host_name());
                    let _ = p.known_addrs();
                }
                Err(e) => assert!(!e.contains(SECRET) || !url.contains(SECRET) || e.contains("scheme"), "{e}"),
            }
        }
        for host in [TargetHost::Domain(url.to_string()), TargetHost::Ip([127, 0, 0, 1].into())] {
            let _ = no_proxy_matches(list, &host);
        }
        return;
    }
    let scheme = ["http", "socks5", "socks5h"][usize::from(first % 3)];
    let credentials = if first & 4 != 0 { format!("user:{SECRET}@") } else { String::new() };
    let proxy = Proxy::parse(&format!("{scheme}://{credentials}127.0.0.1:3128")).expect("a good proxy URL");
    let destination = if first & 8 != 0 {
        Destination::Name("origin.example".into(), 443)
    } else {
        Destination::Addr("[::1]:80".parse().unwrap())
    };
    let mut hs = Handshake::start(&proxy, destination).expect("a good destination");
    let mut input = rest;
    let mut cut = usize::from(first >> 4) + 1;
    loop {
        hs.wrote(hs.output().len());
        let limit = hs.read_limit();
        if limit == 0 || input.is_empty() {
            return;
        }
        let n = cut.min(limit).min(input.len());
        cut = cut * 3 % 17 + 1;
        let (now, later) = input.split_at(n);
        input = later;
        match hs.received(now) {
            Ok(Progress::Done) => {
                assert_eq!(hs.read_limit(), 0, "done, yet wants to read");
                return;
            }
            Ok(Progress::More) => {}
            Err(e) => {
                // Unless the proxy itself sent it (a reason phrase).
                let echoed = rest.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
                assert!(echoed || !e.contains(SECRET), "{e}");
                assert!(e.contains("127.0.0.1:3128"), "{e} does not name the proxy");
                return;
            }
        }
    }
});
