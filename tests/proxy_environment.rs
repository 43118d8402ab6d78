//! The environment chooses the proxy when `ws_options_set_proxy` was not
//! called, with curl's rules: `http_proxy` (lower case only) for ws://,
//! `https_proxy` then `HTTPS_PROXY` for wss://, then `all_proxy` and
//! `ALL_PROXY`; `no_proxy` (then `NO_PROXY`) goes direct. One test, its
//! cases in turn: the environment is the process's, read by `ws_new`.
//!
//! A "dead" proxy (a closed port) shows a proxy was chosen: the connection
//! fails with "proxy unreachable"; a live one (tinyproxy, microsocks)
//! shows the conversation goes through it.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/real_proxies.rs"]
mod real_proxies;
#[path = "support/servers.rs"]
mod servers;

use handles::*;
use real_proxies::*;
use servers::*;
use std::os::unix::ffi::OsStrExt;
use ws::ffi::*;

const VARS: &[&str] = &[
    "ws_proxy",
    "WS_PROXY",
    "wss_proxy",
    "WSS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Sets exactly these proxy variables (the others unset).
fn environment(vars: &[(&str, &str)]) {
    for name in VARS {
        std::env::remove_var(name);
    }
    for (name, value) in vars {
        std::env::set_var(name, value);
    }
}

fn opens(url: &str) -> bool {
    let c = Client::new(url);
    let evs = c.rec.wait_until(common::WAIT, "open or close", |e| {
        e.iter().any(|e| matches!(e, Ev::Open { .. } | Ev::Close { .. }))
    });
    let opened = evs.iter().any(|e| matches!(e, Ev::Open { .. }));
    if opened {
        assert_eq!(c.send_text("hello"), WS_OK);
        assert_eq!(wait_messages(&c, 1)[0], (b"hello".to_vec(), true));
    }
    opened
}

fn error_of(url: &str) -> String {
    assert_failed(&Client::new(url))
}

#[test]
fn the_environment_chooses_with_curls_rules() {
    let server = echo_server();
    let ws = server.url("/");
    let dead = format!("127.0.0.1:{}", closed_port());
    let unreachable =
        format!("proxy unreachable: connect to 127.0.0.1 port {} failed: Connection refused", &dead[10..]);
    // wss:// to a closed port: the error says whether a proxy was chosen.
    let closed = closed_port();
    let wss = format!("wss://127.0.0.1:{closed}/");
    let direct_wss_error = format!("connect to 127.0.0.1 port {closed} failed: Connection refused");

    environment(&[]);
    assert!(opens(&ws), "no variables: direct");

    // ws:// reads http_proxy only in lower case.
    environment(&[("http_proxy", &format!("http://{dead}"))]);
    assert_eq!(error_of(&ws), unreachable);
    environment(&[("HTTP_PROXY", &format!("http://{dead}"))]);
    assert!(opens(&ws), "HTTP_PROXY is not read");
    // A value without a scheme is http://.
    environment(&[("http_proxy", &dead)]);
    assert_eq!(error_of(&ws), unreachable);
    // https_proxy is for wss:// only.
    environment(&[("https_proxy", &format!("http://{dead}"))]);
    assert!(opens(&ws), "https_proxy is not for ws://");
    assert_eq!(error_of(&wss), unreachable);
    environment(&[("HTTPS_PROXY", &format!("socks5://{dead}"))]);
    assert_eq!(error_of(&wss), unreachable);
    environment(&[("http_proxy", &format!("http://{dead}"))]);
    assert_eq!(error_of(&wss), direct_wss_error, "http_proxy is not for wss://");
    // ws_proxy / WS_PROXY before http_proxy; wss_proxy / WSS_PROXY before
    // https_proxy (curl's order for its ws and wss schemes).
    environment(&[("ws_proxy", &format!("http://{dead}")), ("http_proxy", "http://127.0.0.1:9")]);
    assert_eq!(error_of(&ws), unreachable);
    environment(&[("WSS_PROXY", &format!("http://{dead}")), ("https_proxy", "http://127.0.0.1:9")]);
    assert_eq!(error_of(&wss), unreachable);
    // all_proxy, then ALL_PROXY, for both.
    environment(&[("ALL_PROXY", &format!("socks5h://{dead}"))]);
    assert_eq!(error_of(&ws), unreachable);
    assert_eq!(error_of(&wss), unreachable);

    // no_proxy and NO_PROXY: names, suffixes, addresses, ranges, *.
    for list in ["127.0.0.1", "example.com, 127.0.0.1", "127.0.0.0/8", "*", "[::1],127.0.0.1/32"] {
        environment(&[("all_proxy", &format!("http://{dead}")), ("no_proxy", list)]);
        assert!(opens(&ws), "no_proxy={list:?} goes direct");
        environment(&[("all_proxy", &format!("http://{dead}")), ("NO_PROXY", list)]);
        assert!(opens(&ws), "NO_PROXY={list:?} goes direct");
    }
    for list in ["127.0.0.2", "10.0.0.0/8", "localhost", "example.com"] {
        environment(&[("all_proxy", &format!("http://{dead}")), ("no_proxy", list)]);
        assert_eq!(error_of(&ws), unreachable, "no_proxy={list:?} does not match 127.0.0.1");
    }
    let localhost = format!("ws://localhost:{}/", server.port);
    environment(&[("http_proxy", &format!("http://{dead}")), ("no_proxy", ".localhost,localhost")]);
    assert!(opens(&localhost));
    environment(&[("http_proxy", &format!("http://{dead}")), ("no_proxy", "host")]);
    assert_eq!(error_of(&localhost), unreachable, "a name matches whole labels only");

    // The setter wins: "" is no proxy, a URL is that proxy.
    environment(&[("http_proxy", &format!("http://{dead}"))]);
    assert!(opens_with(&ws, ""), "\"\" ignores the environment");
    let socks = microsocks(None);
    let tiny = tinyproxy(None, &[]);
    if let (Some(socks), Some(tiny)) = (socks, tiny) {
        let relay = counting_relay(socks.port);
        assert!(opens_with(&ws, &relay.url("socks5", None)), "the setter's proxy, not the environment's");
        assert_eq!(relay.count(), 1);
        // A live proxy from the environment carries the conversation.
        environment(&[("http_proxy", &tiny.url("http", None))]);
        assert!(opens(&ws));
        let log = tiny.log();
        assert!(log.contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port)), "{log}");
        environment(&[("all_proxy", &relay.url("socks5h", None))]);
        assert!(opens(&ws));
        assert_eq!(relay.count(), 2, "not through the environment's proxy");
    }

    // A variable that names no usable proxy fails the connection, naming
    // the variable and never its value.
    environment(&[("http_proxy", "ftp://user:hunter2@127.0.0.1:21")]);
    let e = error_of(&ws);
    assert_eq!(
        e,
        "environment variable http_proxy: proxy scheme \"ftp\" is not supported (use http://, socks5:// or socks5h://)"
    );
    // Not UTF-8: an error, never "unset" (which would go around the proxy).
    environment(&[]);
    std::env::set_var("http_proxy", std::ffi::OsStr::from_bytes(b"http://\xff:1"));
    assert_eq!(error_of(&ws), "environment variable http_proxy is not UTF-8");
    environment(&[]);
}

fn opens_with(url: &str, proxy: &str) -> bool {
    let c = Client::with(url, &[], &Opts { proxy: Some(proxy.into()), ..Default::default() });
    c.wait_open();
    assert_eq!(c.send_text("hello"), WS_OK);
    wait_messages(&c, 1)[0] == (b"hello".to_vec(), true)
}
