//! Proxies (`ws_options_set_proxy`) against real proxy servers on
//! loopback: tinyproxy for HTTP CONNECT (with and without Basic
//! authentication, and refusing a destination port), microsocks for SOCKS5
//! (with and without a password; socks5:// resolving the origin's name
//! here, socks5h:// at the proxy). Also: a proxy that is down, one that
//! never answers (the connect timeout, close and free during its
//! handshake), and the setter's refusals. wss:// through both proxies is in
//! tests/tls.rs, the environment's rules in tests/proxy_environment.rs.
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

use common::*;
use handles::*;
use real_proxies::*;
use servers::*;
use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws::ffi::testing::set_resolver;
use ws::ffi::*;

const USER: &str = "proxyuser";
const PASS: &str = "s3cr3t-pass";

/// Names only this binary's stand-in for getaddrinfo knows (the proxies
/// do not): "origin.libws-test" and "proxy.libws-test", both 127.0.0.1;
/// "nowhere.libws-test" does not resolve. Other names go to getaddrinfo.
fn stand_in_resolver() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        set_resolver(Some(Arc::new(|host: &str, port: u16| match host {
            "nowhere.libws-test" => Some(Err(std::io::Error::other("Name or service not known"))),
            _ => host.ends_with(".libws-test").then(|| Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])),
        })))
    });
}

fn via(proxy: &str) -> Opts {
    Opts { proxy: Some(proxy.to_string()), ..Default::default() }
}

/// A text and a binary message echoed, then a clean close; the error-free
/// conversation that says the tunnel carries WebSocket both ways.
fn converse(c: &Client) {
    c.wait_open();
    assert_eq!(c.send_text("through the proxy"), WS_OK);
    assert_eq!(c.send_bytes(&[0, 1, 2, 255]), WS_OK);
    let msgs = wait_messages(c, 2);
    assert_eq!(msgs[0], (b"through the proxy".to_vec(), true));
    assert_eq!(msgs[1], (vec![0, 1, 2, 255], false));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(c), (1000, String::new(), true));
}

/// The failure's text, checked to hold no credential.
fn failure(c: &Client) -> String {
    let e = assert_failed(c);
    assert!(!e.contains(PASS) && !e.contains(USER), "a credential in {e:?}");
    e
}

fn through_tinyproxy() {
    let server = echo_server();
    let Some(proxy) = tinyproxy(None, &[]) else { return };
    let url = server.url("/via-http");
    let c = Client::with(&url, &[], &via(&proxy.url("http", None)));
    converse(&c);
    assert_eq!(c.url(), url, "ws_url is the origin's");
    let log = proxy.log();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port)), "tinyproxy saw no CONNECT:\n{log}");
}

fn through_tinyproxy_with_basic_authentication() {
    let server = echo_server();
    let Some(proxy) = tinyproxy(Some((USER, PASS)), &[]) else { return };
    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("http", Some((USER, PASS)))));
    converse(&c);
    assert_eq!(c.url(), server.url("/"));

    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("http", Some((USER, "wrong")))));
    assert_eq!(
        failure(&c),
        format!(
            // tinyproxy answers wrong credentials with 401, missing ones with 407.
            "proxy 127.0.0.1:{} refused CONNECT: 401 Unauthorized (the proxy's credentials were refused)",
            proxy.port
        )
    );
    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("http", None)));
    assert_eq!(
        failure(&c),
        format!(
            "proxy 127.0.0.1:{} refused CONNECT: 407 Proxy Authentication Required (no credentials given for the proxy)",
            proxy.port
        )
    );
}

fn tinyproxy_refusing_the_destination() {
    let server = echo_server();
    // tinyproxy lets CONNECT reach only the ports it lists.
    let Some(proxy) = tinyproxy(None, &[9]) else { return };
    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("http", None)));
    assert_eq!(failure(&c), format!("proxy 127.0.0.1:{} refused CONNECT: 403 Access violation", proxy.port));
}

fn through_microsocks() {
    let server = echo_server();
    let Some(proxy) = microsocks(None) else { return };
    // The relay counts the connections that reach the proxy.
    let relay = counting_relay(proxy.port);
    for (n, scheme) in ["socks5", "socks5h"].into_iter().enumerate() {
        let c = Client::with(&server.url("/"), &[], &via(&relay.url(scheme, None)));
        converse(&c);
        assert_eq!(relay.count(), n + 1, "{scheme}: not through the proxy");
    }
}

fn through_microsocks_with_a_password() {
    let server = echo_server();
    let Some(proxy) = microsocks(Some((USER, PASS))) else { return };
    let relay = counting_relay(proxy.port);
    for (n, scheme) in ["socks5", "socks5h"].into_iter().enumerate() {
        let c = Client::with(&server.url("/"), &[], &via(&relay.url(scheme, Some((USER, PASS)))));
        converse(&c);
        assert_eq!(relay.count(), n + 1, "{scheme}: not through the proxy");
    }
    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("socks5", Some((USER, "wrong")))));
    assert_eq!(failure(&c), format!("SOCKS5 proxy: authentication failed (127.0.0.1:{})", proxy.port));
    let c = Client::with(&server.url("/"), &[], &via(&proxy.url("socks5h", None)));
    assert_eq!(
        failure(&c),
        format!(
            "SOCKS5 proxy: authentication required, and no username and password were given (127.0.0.1:{})",
            proxy.port
        )
    );
}

/// socks5:// resolves the origin's name here and sends the address;
/// socks5h:// sends the name. The stand-in resolver knows a name that
/// the proxy's getaddrinfo does not: only socks5:// reaches the server.
fn socks5_resolves_here_and_socks5h_at_the_proxy() {
    stand_in_resolver();
    let server = echo_server();
    let Some(proxy) = microsocks(None) else { return };
    let url = format!("ws://origin.libws-test:{}/", server.port);
    let relay = counting_relay(proxy.port);
    let c = Client::with(&url, &[], &via(&relay.url("socks5", None)));
    converse(&c);
    assert_eq!(relay.count(), 1, "not through the proxy");
    let c = Client::with(&url, &[], &via(&proxy.url("socks5h", None)));
    let e = failure(&c);
    let expected =
        format!("SOCKS5 proxy 127.0.0.1:{} could not connect to origin.libws-test:{}: ", proxy.port, server.port);
    assert!(e.starts_with(&expected), "{e}");
}

/// A proxy's name is resolved like any host (here by the stand-in
/// resolver); a name that does not resolve says it is the proxy's.
fn the_proxy_named_by_host() {
    stand_in_resolver();
    let server = echo_server();
    let Some(proxy) = microsocks(None) else { return };
    let c = Client::with(&server.url("/"), &[], &via(&format!("socks5h://proxy.libws-test:{}", proxy.port)));
    converse(&c);
    let c = Client::with(&server.url("/"), &[], &via("http://nowhere.libws-test:3128"));
    let e = failure(&c);
    assert_eq!(e, "proxy unreachable: cannot resolve proxy host nowhere.libws-test: Name or service not known");
}

fn a_proxy_that_is_down() {
    let server = echo_server();
    let port = closed_port();
    for scheme in ["http", "socks5", "socks5h"] {
        let c = Client::with(&server.url("/"), &[], &via(&format!("{scheme}://{USER}:{PASS}@127.0.0.1:{port}")));
        assert_eq!(
            failure(&c),
            format!("proxy unreachable: connect to 127.0.0.1 port {port} failed: Connection refused")
        );
    }
}

/// A proxy that takes the connection and never answers: the connect
/// timeout covers its part, and names it.
fn a_proxy_that_never_answers_times_out() {
    let (silent, _held) = silent_server();
    for scheme in ["http", "socks5h"] {
        let opts = Opts { connect_timeout_ms: Some(300), ..via(&format!("{scheme}://127.0.0.1:{}", silent.port)) };
        let started = Instant::now();
        let c = Client::with("ws://127.0.0.1:9/", &[], &opts);
        assert_eq!(
            failure(&c),
            format!("connect timeout: the handshake with proxy 127.0.0.1:{} did not finish within 300 ms", silent.port)
        );
        assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    }
}

/// ws_close and ws_free while the proxy has not answered: as prompt as
/// during a direct connect.
fn close_and_free_during_the_proxy_handshake() {
    let (silent, held) = silent_server();
    let proxy = format!("http://127.0.0.1:{}", silent.port);
    let c = Client::with("ws://127.0.0.1:9/", &[], &via(&proxy));
    poll_until("the proxy took the connection", || !held.lock().unwrap().is_empty());
    let started = Instant::now();
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c).0, 1006);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    let mut c = Client::with("ws://127.0.0.1:9/", &[], &via(&proxy));
    poll_until("the proxy took the second connection", || held.lock().unwrap().len() >= 2);
    let took = c.free();
    assert!(took < Duration::from_secs(1), "ws_free took {took:?}");
}

every_mode!(
    through_tinyproxy,
    through_tinyproxy_with_basic_authentication,
    tinyproxy_refusing_the_destination,
    through_microsocks,
    through_microsocks_with_a_password,
    socks5_resolves_here_and_socks5h_at_the_proxy,
    the_proxy_named_by_host,
    a_proxy_that_is_down,
    a_proxy_that_never_answers_times_out,
    close_and_free_during_the_proxy_handshake,
);

#[test]
fn the_setter_refuses_what_it_cannot_use() {
    unsafe {
        let o = ws_options_new();
        let set = |url: &str| {
            let url = CString::new(url).unwrap();
            let rc = ws_options_set_proxy(o, url.as_ptr());
            let why =
                if rc == WS_OK { String::new() } else { CStr::from_ptr(ws_last_error()).to_str().unwrap().into() };
            (rc, why)
        };
        for ok in [
            "http://127.0.0.1:3128",
            "http://user:pa%3Ass@proxy.example:8080/",
            "socks5://[::1]:1080",
            "socks5h://u:p@localhost:1080",
            "",
        ] {
            assert_eq!(set(ok), (WS_OK, String::new()), "{ok}");
        }
        let refused = [
            ("http://127.0.0.1", "proxy URL has no port"),
            ("socks5://proxy.example", "proxy URL has no port"),
            ("ftp://user:hunter2@h:21", "proxy scheme \"ftp\" is not supported (use http://, socks5:// or socks5h://)"),
            ("https://h:443", "proxy scheme \"https\" is not supported (use http://, socks5:// or socks5h://)"),
            ("127.0.0.1:3128", "proxy URL does not parse: relative URL without a base"),
            ("http://user:hunter2@", "proxy URL does not parse: empty host"),
            ("http://h:3128/some/path", "proxy URL may not have a path, query or fragment"),
            ("http://h:0", "proxy URL has port 0"),
        ];
        for (url, why) in refused {
            assert_eq!(set(url), (WS_ERR_INVALID_ARGUMENT, why.to_string()), "{url}");
        }
        let long = format!("socks5://{}:p@h:1080", "u".repeat(256));
        assert_eq!(set(&long).0, WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_proxy(o, std::ptr::null()), WS_OK, "NULL: the environment decides");
        assert_eq!(ws_options_set_proxy(std::ptr::null_mut(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        let not_utf8 = b"http://\xff:1\0";
        assert_eq!(ws_options_set_proxy(o, not_utf8.as_ptr().cast()), WS_ERR_INVALID_ARGUMENT);
        ws_options_free(o);
    }
}

/// A Unix socket takes the place of every network route: a proxy set
/// beside it is not used.
#[test]
fn a_unix_socket_needs_no_proxy() {
    let dir = std::env::temp_dir().join(format!("libws-proxy-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s").display().to_string();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            if let Ok(ws) = tungstenite::accept(s) {
                echo(ws);
            }
        }
    });
    let opts = Opts { unix_socket: Some(path), ..via(&format!("http://127.0.0.1:{}", closed_port())) };
    let c = Client::with("ws://localhost/", &[], &opts);
    converse(&c);
}
