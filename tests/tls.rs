//! wss:// against three real TLS servers: our own (native-tls), nginx as a
//! TLS-terminating reverse proxy (also for mutual TLS), and the Python
//! `websockets` library. Certificates are generated when the tests run.
//!
//! sanitize: none: OpenSSL is not instrumented (TSan); not tried under ASan yet

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

#[path = "support/cbuild.rs"]
mod cbuild;
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

use cbuild::*;
use common::*;
use frames::*;
use handles::*;
use paths::*;
use peers::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use real_proxies::*;
use servers::*;
use std::ffi::CString;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// PEM files of a test PKI: (certificate, key) pairs.
struct Pki {
    ca: PathBuf,
    ca_pem: String,
    server: (PathBuf, PathBuf),
    expired: (PathBuf, PathBuf),
    other_name: (PathBuf, PathBuf),
    self_signed: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = scratch_dir("pki");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "libws test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = ca.as_ref().pem();
        let write = |name: &str, cert: String, key: &KeyPair| {
            let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let leaf = |name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool| {
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            write(name, cert.pem(), &key)
        };
        let here = ["localhost", "127.0.0.1"];
        let server = leaf("server", &here, ExtendedKeyUsagePurpose::ServerAuth, false);
        let expired = leaf("expired", &here, ExtendedKeyUsagePurpose::ServerAuth, true);
        let other_name = leaf("other", &["other.example"], ExtendedKeyUsagePurpose::ServerAuth, false);
        let client = leaf("client", &[], ExtendedKeyUsagePurpose::ClientAuth, false);
        let self_key = KeyPair::generate().unwrap();
        let self_cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&self_key)
            .unwrap();
        let self_signed = write("self-signed", self_cert.pem(), &self_key);
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).unwrap();
        Pki { ca: ca_path, ca_pem, server, expired, other_name, self_signed, client }
    })
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Options for a TLS client: trust our CA unless `trust_ca` is false.
struct TlsOpts {
    trust_ca: bool,
    client_cert: bool,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
    connect_timeout_ms: Option<u32>,
    unix_socket: Option<String>,
    /// Keepalive, with on_pong recorded.
    ping_interval_ms: Option<u32>,
    /// ws_options_set_proxy.
    proxy: Option<String>,
}

impl Default for TlsOpts {
    fn default() -> Self {
        TlsOpts {
            trust_ca: true,
            client_cert: false,
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
            connect_timeout_ms: None,
            unix_socket: None,
            ping_interval_ms: None,
            proxy: None,
        }
    }
}

fn tls_client(url: &str, t: TlsOpts) -> Client {
    tls_client_with(url, t, Recorder::new())
}

/// `tls_client` with a recorder the caller made (and maybe hooked).
fn tls_client_with(url: &str, t: TlsOpts, rec: Arc<Recorder>) -> Client {
    unsafe {
        let o = ws_options_new();
        if t.trust_ca {
            let ca = CString::new(path_str(&pki().ca)).unwrap();
            assert_eq!(ws_options_set_ca_file(o, ca.as_ptr()), WS_OK);
        }
        if t.client_cert {
            let (c, k) = &pki().client;
            let (c, k) = (CString::new(path_str(c)).unwrap(), CString::new(path_str(k)).unwrap());
            assert_eq!(ws_options_set_client_cert(o, c.as_ptr(), k.as_ptr()), WS_OK);
        }
        assert_eq!(ws_options_danger_accept_invalid_certs(o, t.accept_invalid_certs), WS_OK);
        assert_eq!(ws_options_danger_accept_invalid_hostnames(o, t.accept_invalid_hostnames), WS_OK);
        if let Some(ms) = t.connect_timeout_ms {
            assert_eq!(ws_options_set_connect_timeout_ms(o, ms), WS_OK);
        }
        if let Some(ms) = t.ping_interval_ms {
            assert_eq!(ws_options_set_ping_interval_ms(o, ms), WS_OK);
            assert_eq!(ws_options_set_on_pong(o, Some(handles::recorder::cb_pong)), WS_OK);
        }
        if let Some(path) = &t.unix_socket {
            let path = CString::new(path.as_str()).unwrap();
            assert_eq!(ws_options_set_unix_socket(o, path.as_ptr()), WS_OK);
        }
        if let Some(proxy) = &t.proxy {
            let proxy = CString::new(proxy.as_str()).unwrap();
            assert_eq!(ws_options_set_proxy(o, proxy.as_ptr()), WS_OK);
        }
        let c = client_with_options(url, o, rec);
        ws_options_free(o);
        c
    }
}

/// ws_new_with_options through the recorder's callbacks.
unsafe fn client_with_options(url: &str, o: *mut ws_options, rec: Arc<Recorder>) -> Client {
    Client::try_with_options(url, &[], o, rec).unwrap()
}

type TlsWs = tungstenite::WebSocket<native_tls::TlsStream<TcpStream>>;

/// Our own TLS server: native-tls with `identity`, tungstenite on top.
fn tls_server(identity: &(PathBuf, PathBuf), handler: impl Fn(TlsWs) + Send + Sync + 'static) -> Server {
    let cert = std::fs::read(&identity.0).unwrap();
    let key = std::fs::read(&identity.1).unwrap();
    let acceptor = native_tls::TlsAcceptor::new(native_tls::Identity::from_pkcs8(&cert, &key).unwrap()).unwrap();
    let handler = Arc::new(handler);
    raw_server(move |tcp| {
        let Ok(tls) = acceptor.accept(tcp) else { return };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        if let Ok(ws) = tungstenite::accept_with_config(tls, Some(config)) {
            handler(ws);
        }
    })
}

fn wss_url(port: u16, host: &str) -> String {
    format!("wss://{host}:{port}/")
}

/// Text and 16 MiB of binary echoed intact, then a clean close.
fn echo_text_and_16_mib(c: &Client) {
    c.wait_open();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert_eq!(c.send_text("over TLS ✓"), WS_OK);
    assert_eq!(c.send_bytes(&big), WS_OK);
    let msgs = wait_messages(c, 2);
    assert_eq!(msgs[0], ("over TLS ✓".as_bytes().to_vec(), true));
    assert!(msgs[1] == (big, false), "16 MiB echo differs");
    assert_eq!(c.close(1000, Some("bye")), WS_OK);
    assert_eq!(close_event(c), (1000, "bye".to_string(), true));
}

/// Keepalive over TLS: the pings go through the TLS session, the server's
/// pongs come back to on_pong, and the connection stays open.
#[test]
fn keepalive_over_tls() {
    let server = tls_server(&pki().server, echo);
    let t = TlsOpts { ping_interval_ms: Some(100), ..TlsOpts::default() };
    let c = tls_client(&wss_url(server.port, "localhost"), t);
    c.wait_open();
    c.rec.wait_until(WAIT, "5 pongs", |e| e.iter().filter(|e| matches!(e, Ev::Pong { .. })).count() >= 5);
    assert_eq!(c.state(), WS_OPEN);
    echo_text_and_16_mib(&c);
}

#[test]
fn own_server_echo_with_ca_file() {
    let server = tls_server(&pki().server, echo);
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    assert_eq!(c.url(), wss_url(server.port, "127.0.0.1"));
    echo_text_and_16_mib(&c);
    // By name as well, and https:// is taken as wss://.
    let c = tls_client(&format!("https://localhost:{}/", server.port), TlsOpts::default());
    assert_eq!(c.url(), wss_url(server.port, "localhost"));
    echo_text_and_16_mib(&c);
}

#[test]
fn ca_from_memory() {
    let server = tls_server(&pki().server, echo);
    let pem = &pki().ca_pem;
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_ca_pem(o, pem.as_ptr().cast(), pem.len()), WS_OK);
        let c = client_with_options(&wss_url(server.port, "127.0.0.1"), o, Recorder::new());
        ws_options_free(o);
        echo_text_and_16_mib(&c);
    }
}

fn expect_tls_failure(url: &str, t: TlsOpts, needles: &[&str]) {
    let c = tls_client(url, t);
    let msg = assert_failed(&c);
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
    assert!(!c.rec.events().iter().any(|e| matches!(e, Ev::Open { .. })));
}

#[test]
fn untrusted_issuer() {
    let server = tls_server(&pki().server, echo);
    // Our CA is not in the system store.
    let untrusted = TlsOpts { trust_ca: false, ..TlsOpts::default() };
    expect_tls_failure(&wss_url(server.port, "127.0.0.1"), untrusted, &["certificate verify failed", "issuer"]);
    let server = tls_server(&pki().self_signed, echo);
    expect_tls_failure(&wss_url(server.port, "127.0.0.1"), TlsOpts::default(), &["certificate verify failed", "self"]);
}

#[test]
fn expired_certificate() {
    let server = tls_server(&pki().expired, echo);
    expect_tls_failure(
        &wss_url(server.port, "localhost"),
        TlsOpts::default(),
        &["certificate verify failed", "expired"],
    );
}

#[test]
fn certificate_for_another_host() {
    let server = tls_server(&pki().other_name, echo);
    expect_tls_failure(&wss_url(server.port, "localhost"), TlsOpts::default(), &["hostname mismatch"]);
    expect_tls_failure(&wss_url(server.port, "127.0.0.1"), TlsOpts::default(), &["IP address mismatch"]);
}

#[test]
fn danger_options_accept_what_they_say() {
    for identity in [&pki().self_signed, &pki().expired] {
        let server = tls_server(identity, echo);
        let t = TlsOpts { trust_ca: false, accept_invalid_certs: true, ..TlsOpts::default() };
        echo_text_and_16_mib(&tls_client(&wss_url(server.port, "localhost"), t));
    }
    let server = tls_server(&pki().other_name, echo);
    let t = TlsOpts { accept_invalid_hostnames: true, ..TlsOpts::default() };
    echo_text_and_16_mib(&tls_client(&wss_url(server.port, "localhost"), t));
    // Hostnames unchecked still means the issuer is checked.
    let t = TlsOpts { trust_ca: false, accept_invalid_hostnames: true, ..TlsOpts::default() };
    expect_tls_failure(&wss_url(server.port, "localhost"), t, &["certificate verify failed"]);
}

#[test]
fn server_that_does_not_speak_tls() {
    let server = echo_server();
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    let msg = assert_failed(&c);
    assert!(msg.starts_with("TLS handshake failed"), "{msg}");
}

#[test]
fn close_during_the_tls_handshake_is_prompt() {
    let (server, held) = silent_server();
    // A library that waited for the connect timeout would take 60 s; the
    // bounds below leave room for a loaded machine.
    let opts = || TlsOpts { connect_timeout_ms: Some(60_000), ..TlsOpts::default() };
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), opts());
    poll_until("the server to accept", || !held.lock().unwrap().is_empty());
    let t = Instant::now();
    assert_eq!(c.close(1000, None), WS_OK);
    let msg = assert_failed(&c);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(msg.contains("closed before the connection is established"), "{msg}");
    // And ws_free in the same phase returns at once: it never waits on the
    // network.
    let mut c = tls_client(&wss_url(server.port, "127.0.0.1"), opts());
    poll_until("the server to accept", || held.lock().unwrap().len() >= 2);
    let took = c.free();
    assert!(took < Duration::from_millis(1500), "ws_free took {took:?}");
}

#[test]
fn server_that_never_starts_tls_times_out() {
    let (server, _held) = silent_server();
    let t = Instant::now();
    let opts = TlsOpts { connect_timeout_ms: Some(400), ..TlsOpts::default() };
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), opts);
    let msg = assert_failed(&c);
    assert!(msg.contains("timeout") && msg.contains("TLS"), "{msg}");
    // The deadline is set inside ws_new, after `t`; ignoring the option
    // would take the default 30 s.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn reset_in_the_middle_of_a_message_is_1006() {
    let server = tls_server(&pki().server, |mut ws| {
        let _ = ws.read(); // wait for the client's go
        let tls = ws.get_mut();
        // Half of a 1000-byte binary frame, then a TCP reset.
        let mut half = vec![0x82, 126, 0x03, 0xe8];
        half.extend_from_slice(&[5u8; 500]);
        tls.write_all(&half).unwrap();
        tls.flush().unwrap();
        let tcp = tls.get_ref();
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(tcp),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    });
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    c.wait_open();
    c.send_text("go");
    assert_eq!(close_event(&c), (1006, String::new(), false));
    assert!(errors(&c).is_empty(), "{:?}", c.rec.events());
    assert!(c.rec.messages().is_empty());
}

#[test]
fn close_notify_ends_the_stream_cleanly() {
    // The server closes, sends TLS close_notify, then FIN.
    let server = tls_server(&pki().server, |mut ws| {
        let frame = tungstenite::protocol::CloseFrame { code: 4100u16.into(), reason: "tls bye".into() };
        ws.close(Some(frame)).unwrap();
        while ws.read().is_ok() {}
        let _ = ws.get_mut().shutdown();
    });
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    assert_eq!(close_event(&c), (4100, "tls bye".to_string(), true));
    // close_notify without a close frame: the stream ended, but not the
    // WebSocket handshake: 1006 without on_error.
    let server = tls_server(&pki().server, |mut ws| {
        let _ = ws.get_mut().shutdown();
    });
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    assert_eq!(close_event(&c), (1006, String::new(), false));
    assert!(errors(&c).is_empty(), "{:?}", c.rec.events());
}

#[test]
fn many_small_messages_over_tls_in_order() {
    let server = tls_server(&pki().server, echo);
    let c = tls_client(&wss_url(server.port, "127.0.0.1"), TlsOpts::default());
    c.wait_open();
    for i in 0..5000 {
        assert_eq!(c.send_text(&i.to_string()), WS_OK);
    }
    let msgs = wait_messages(&c, 5000);
    for (i, (data, _)) in msgs.iter().enumerate() {
        assert_eq!(*data, i.to_string().into_bytes());
    }
}

#[test]
fn tls_option_setters_check_their_input() {
    let dir = scratch_dir("tls-setters");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let c = |p: &std::path::Path| CString::new(path_str(p)).unwrap();
    let missing = c(&dir.join("missing.pem"));
    let (cert, key) = (&pki().client.0, &pki().client.1);
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_ca_file(o, missing.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        // The message says why.
        let why = std::ffi::CStr::from_ptr(ws_last_error()).to_str().unwrap();
        assert_eq!(
            why,
            format!("cannot read CA file {}: No such file or directory", path_str(&dir.join("missing.pem")))
        );
        assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(o, c(&garbage).as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(o, std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(o, c(&pki().ca).as_ptr()), WS_OK);
        assert_eq!(ws_options_set_ca_pem(o, c"junk".as_ptr(), 4), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(o, std::ptr::null(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, c(cert).as_ptr(), missing.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, missing.as_ptr(), c(key).as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, c(&garbage).as_ptr(), c(key).as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, c(cert).as_ptr(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, c(cert).as_ptr(), c(key).as_ptr()), WS_OK);
        ws_options_free(o);
        let null = std::ptr::null_mut();
        assert_eq!(ws_options_set_ca_file(null, c(&pki().ca).as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_danger_accept_invalid_certs(null, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_danger_accept_invalid_hostnames(null, true), WS_ERR_INVALID_ARGUMENT);
    }
}

#[test]
fn contract_program_over_wss_with_ca_file() {
    let scratch = scratch_dir("contract-wss");
    let binary = scratch.join("contract");
    compile(&repo_dir().join("tests/c/contract.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    // Our TLS server chooses no subprotocol: the contract offers two, so
    // pick the first like the plain contract server.
    let cert = std::fs::read(&pki().server.0).unwrap();
    let key = std::fs::read(&pki().server.1).unwrap();
    let acceptor = native_tls::TlsAcceptor::new(native_tls::Identity::from_pkcs8(&cert, &key).unwrap()).unwrap();
    let server = raw_server(move |tcp| {
        let Ok(tls) = acceptor.accept(tcp) else { return };
        let choose = |req: &tungstenite::handshake::server::Request,
                      mut resp: tungstenite::handshake::server::Response| {
            if req.headers().get("sec-websocket-protocol").is_some() {
                resp.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
            }
            Ok(resp)
        };
        if let Ok(ws) = tungstenite::accept_hdr(tls, choose) {
            contract_conversation(ws);
        }
    });
    let out = run(Command::new(&binary).arg(wss_url(server.port, "localhost")).arg("chat").arg(&pki().ca));
    assert!(out.contains("contract: all checks passed"), "{out}");
}

// ----- nginx terminating wss:// in front of a plain ws:// server -----

struct Nginx {
    /// Plain TLS, and TLS that requires a client certificate.
    port: u16,
    mtls_port: u16,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn start_nginx(name: &str, backend: u16) -> Option<Nginx> {
    let Some(binary) = nginx_binary() else {
        return peer_missing("nginx is not installed");
    };
    let dir = scratch_dir(name);
    let (port, mtls_port) = (free_port(), free_port());
    let (cert, key) = (&pki().server.0, &pki().server.1);
    let proxy = format!(
        "location / {{ proxy_pass http://127.0.0.1:{backend}; proxy_http_version 1.1; \
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; \
         proxy_read_timeout 60s; proxy_buffering off; }}"
    );
    let tls = format!("ssl_certificate {}; ssl_certificate_key {};", cert.display(), key.display());
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; \
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port} ssl; {tls} {proxy} }}\n\
         server {{ listen 127.0.0.1:{mtls_port} ssl; {tls} ssl_client_certificate {ca}; ssl_verify_client on; {proxy} }}\n}}\n",
        d = dir.display(),
        ca = pki().ca.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(&binary)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx { port, mtls_port, child };
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", mtls_port)).is_err() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(nginx)
}

#[test]
fn nginx_terminates_wss() {
    let backend = echo_server();
    let Some(nginx) = start_nginx("nginx-plain", backend.port) else {
        return;
    };
    let c = tls_client(&wss_url(nginx.port, "localhost"), TlsOpts::default());
    echo_text_and_16_mib(&c);
}

#[test]
fn nginx_mutual_tls() {
    let backend = echo_server();
    let Some(nginx) = start_nginx("nginx-mtls", backend.port) else {
        return;
    };
    // Without a client certificate nginx refuses the request.
    let c = tls_client(&wss_url(nginx.mtls_port, "localhost"), TlsOpts::default());
    let msg = assert_failed(&c);
    assert!(msg.contains("400") && msg.contains("No required SSL certificate was sent"), "{msg}");
    // With one, the conversation works.
    let c = tls_client(&wss_url(nginx.mtls_port, "localhost"), TlsOpts { client_cert: true, ..TlsOpts::default() });
    echo_text_and_16_mib(&c);
}

// ----- the Python websockets library serving wss:// itself -----

#[test]
fn python_websockets_serves_wss() {
    let (cert, key) = (path_str(&pki().server.0), path_str(&pki().server.1));
    let Some(peer) = start_peer(
        "Python websockets (wss)",
        "python3",
        &["tests/peers/python_server.py", "--tls", &cert, &key],
        "PYTHONPATH",
        "target/peers/python",
    ) else {
        return;
    };
    let c = tls_client(&wss_url(peer.port, "localhost"), TlsOpts::default());
    echo_text_and_16_mib(&c);
    let c = tls_client(&wss_url(peer.port, "127.0.0.1"), TlsOpts::default());
    c.wait_open();
    c.send_text("close 4000 wss bye");
    assert_eq!(close_event(&c), (4000, "wss bye".to_string(), true));
}

/// The Python `websockets` library serving on a Unix domain socket, over
/// ws:// and wss://: the URL gives Host and the path, the socket the bytes
/// (its host does not resolve, its port is closed), and wss:// checks the
/// certificate against the URL's host.
#[test]
fn python_websockets_on_a_unix_socket_over_ws_and_wss() {
    // Under /tmp: a socket's path must fit in 107 bytes.
    let dir = std::env::temp_dir().join(format!("libws-unix-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (path_str(&pki().server.0), path_str(&pki().server.1));
    for tls in [false, true] {
        let path = path_str(&dir.join(if tls { "wss.sock" } else { "ws.sock" }));
        let mut args = vec!["tests/peers/python_server.py", "--unix", &path];
        if tls {
            args.extend(["--tls", &cert, &key]);
        }
        let Some(_peer) = start_peer("Python websockets (unix)", "python3", &args, "PYTHONPATH", "target/peers/python")
        else {
            return;
        };
        let url = if tls { "wss://localhost:9/over/unix?x=1" } else { "ws://unix.invalid/over/unix?x=1" };
        let opts = || TlsOpts { unix_socket: Some(path.clone()), ..TlsOpts::default() };
        let c = tls_client(url, opts());
        c.wait_open();
        c.send_text("headers");
        let seen = String::from_utf8(wait_messages(&c, 1).remove(0).0).unwrap();
        let host = if tls { "localhost:9" } else { "unix.invalid" };
        assert!(seen.contains(&format!("\"host\": \"{host}\"")), "{seen}");
        assert!(seen.contains("\"path\": \"/over/unix?x=1\""), "{seen}");
        echo_text_and_16_mib(&tls_client(url, opts()));
        if tls {
            // The certificate is checked against the URL's host, which the
            // socket does not change.
            let msg = assert_failed(&tls_client("wss://other.example/", opts()));
            assert!(msg.contains("certificate"), "{msg}");
        }
    }
}

/// A TLS server that answers the upgrade with the 101 and a 6,000-byte
/// frame in one write (one TLS record), then waits for the client's close
/// frame without sending anything else: a client that waited for more
/// input before handling the frame would deliver it only when the server
/// gives up (WAIT), not in on_open's loop turn.
#[test]
fn frames_in_the_same_tls_record_as_the_101_arrive_at_once() {
    let (cert, key) = (std::fs::read(&pki().server.0).unwrap(), std::fs::read(&pki().server.1).unwrap());
    let acceptor = native_tls::TlsAcceptor::new(native_tls::Identity::from_pkcs8(&cert, &key).unwrap()).unwrap();
    let server = raw_server(move |tcp| {
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let Ok(mut tls) = acceptor.accept(tcp) else { return };
        let request = read_request(&mut tls);
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&request)
        )
        .into_bytes();
        out.extend(frame(0x82, &[5u8; 6000]));
        tls.write_all(&out).unwrap();
        // Wait (bounded by the read timeout) for anything from the client.
        let mut byte = [0u8; 1];
        let _ = std::io::Read::read(&mut tls, &mut byte);
    });
    // Timed from on_open, not from ws_new: the TLS handshake's time is
    // not what this test is about.
    let rec = Recorder::new();
    let times = Arc::new(std::sync::Mutex::new((None::<Instant>, None::<Instant>)));
    let t = times.clone();
    rec.set_hook(move |_, ev| match ev {
        Ev::Open { .. } => t.lock().unwrap().0 = Some(Instant::now()),
        Ev::Message { .. } => t.lock().unwrap().1 = Some(Instant::now()),
        _ => {}
    });
    let c = tls_client_with(&wss_url(server.port, "localhost"), TlsOpts::default(), rec);
    let msgs = wait_messages(&c, 1);
    assert_eq!(msgs[0], (vec![5u8; 6000], false));
    let (Some(opened), Some(message)) = *times.lock().unwrap() else { panic!("no on_open before the message") };
    let waited = message.duration_since(opened);
    assert!(waited < Duration::from_secs(2), "the message came {waited:?} after on_open");
}

/// A client whose socket send buffer is tiny (4 KiB), so that OpenSSL
/// often writes part of a record and hits EAGAIN.
fn small_buffer_tls_client(url: &str, client_cert: Option<&(PathBuf, PathBuf)>) -> Client {
    unsafe {
        let o = ws_options_new();
        let ca = CString::new(path_str(&pki().ca)).unwrap();
        assert_eq!(ws_options_set_ca_file(o, ca.as_ptr()), WS_OK);
        if let Some((c, k)) = client_cert {
            let (c, k) = (CString::new(path_str(c)).unwrap(), CString::new(path_str(k)).unwrap());
            assert_eq!(ws_options_set_client_cert(o, c.as_ptr(), k.as_ptr()), WS_OK);
        }
        assert_eq!(ws_options_set_connect_timeout_ms(o, 8000), WS_OK);
        ws::ffi::testing::set_send_buffer_size(o, 4096);
        let c = client_with_options(url, o, Recorder::new());
        ws_options_free(o);
        c
    }
}

#[test]
fn a_large_message_over_tls_with_a_small_send_buffer_arrives() {
    let server = tls_server(&pki().server, echo);
    let c = small_buffer_tls_client(&wss_url(server.port, "localhost"), None);
    c.wait_open();
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    assert_eq!(c.send_bytes(&big), WS_OK);
    let msgs = wait_messages(&c, 1);
    assert!(msgs[0] == (big, false), "4 MB echo differs");
    assert_eq!(c.buffered(), 0);
    assert_eq!(c.close(1000, None), WS_OK);
    assert!(close_event(&c).2, "the close was not clean");
}

/// A client certificate chain far larger than the client's send buffer:
/// the TLS handshake must wait for the socket to be writable, not only
/// for the server's records.
#[test]
fn a_client_certificate_chain_larger_than_the_send_buffer() {
    let pki = pki();
    // The client certificate followed by copies of the CA: about 80 KiB
    // (OpenSSL servers take at most 100 KiB).
    let dir = scratch_dir("big-chain");
    let mut chain = std::fs::read_to_string(&pki.client.0).unwrap();
    for _ in 0..180 {
        chain.push_str(&pki.ca_pem);
    }
    let chain_path = dir.join("client-chain.pem");
    std::fs::write(&chain_path, &chain).unwrap();
    // native-tls cannot ask for a client certificate: OpenSSL directly.
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    builder.set_certificate_chain_file(&pki.server.0).unwrap();
    builder.set_private_key_file(&pki.server.1, SslFiletype::PEM).unwrap();
    builder.set_ca_file(&pki.ca).unwrap();
    builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let acceptor = builder.build();
    // A small receive buffer on the server side too, so that the chain
    // cannot all sit in kernel buffers while the client waits.
    let listener = small_receive_buffer_listener();
    let server = Server { port: listener.local_addr().unwrap().port() };
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let Ok(tls) = acceptor.accept(tcp) else { return };
        if let Ok(ws) = tungstenite::accept(tls) {
            echo(ws);
        }
    });
    let c = small_buffer_tls_client(&wss_url(server.port, "localhost"), Some(&(chain_path, pki.client.1.clone())));
    c.wait_open();
    assert_eq!(c.send_text("with a big chain"), WS_OK);
    assert_eq!(wait_messages(&c, 1)[0], (b"with a big chain".to_vec(), true));
}

/// RFC 6455 5.5.3 lets libws answer only the latest ping, so it
/// replaces a queued pong that has not started (`Writer::push_pong`). Over
/// TLS, "not started" is judged by our writer's count of bytes written,
/// but a write that hit EAGAIN has already put the pong into a TLS record
/// that OpenSSL holds and sends later as it was. Replacing that pong with
/// one of another length makes the writer's count and the bytes on the
/// wire disagree: the next frames are cut at the wrong places, or OpenSSL
/// refuses the shorter retry ("bad length") and the connection dies.
/// A server pings (alternately 125 and 1 payload bytes) without reading
/// until the client's writes wait, then reads: every frame must be a
/// whole pong, and the closing handshake must still work.
///
/// One connection shows it about 60% of the time; four at once nearly always.
#[test]
fn pongs_replaced_while_a_tls_write_waits_do_not_corrupt_the_stream() {
    let runs: Vec<_> = (0..4).map(|_| std::thread::spawn(pong_flood_while_not_reading)).collect();
    let results: Vec<String> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let bad: Vec<&String> = results.iter().filter(|r| !r.starts_with("Ok")).collect();
    assert!(bad.is_empty(), "{} of 4 connections broken: {bad:#?}", bad.len());
}

/// One connection of the test above: the server's verdict and the
/// client's events, as text.
fn pong_flood_while_not_reading() -> String {
    let (tx, rx) = crossbeam_channel::bounded::<Result<usize, String>>(1);
    let (cert, key) = (std::fs::read(&pki().server.0).unwrap(), std::fs::read(&pki().server.1).unwrap());
    let acceptor = native_tls::TlsAcceptor::new(native_tls::Identity::from_pkcs8(&cert, &key).unwrap()).unwrap();
    // A small receive buffer, so that the client's writes soon wait.
    let listener = small_receive_buffer_listener();
    let server = Server { port: listener.local_addr().unwrap().port() };
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        let Ok(mut tls) = acceptor.accept(tcp) else { return };
        let request = read_request(&mut tls);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&request)
        );
        tls.write_all(response.as_bytes()).unwrap();
        // Pings, reading nothing.
        let end = Instant::now() + Duration::from_secs(2);
        let mut i = 0usize;
        while Instant::now() < end {
            let len = if i % 2 == 0 { 125 } else { 1 };
            if tls.write_all(&frame(0x89, &vec![b'p'; len])).is_err() {
                break;
            }
            i += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        // Now read what came and check it: pongs until the client is
        // quiet, then our close and its answer. Quiet means no frame
        // starts within 500 ms; once one has started, the rest may take
        // longer (a busy client pausing mid-frame), and a timeout there
        // would cut the frame in two.
        let mut pongs = 0;
        let result = loop {
            tls.get_ref().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut first = [0u8; 1];
            match std::io::Read::read(&mut tls, &mut first) {
                Ok(1) => {}
                Ok(_) => break Err(format!("after {pongs} pongs: the client closed TCP")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    break Ok(pongs)
                }
                Err(e) => break Err(format!("after {pongs} pongs: {e}")),
            }
            tls.get_ref().set_read_timeout(Some(WAIT)).unwrap();
            match read_frame(&mut std::io::Read::chain(&first[..], &mut tls)) {
                None => break Err(format!("after {pongs} pongs: a frame cut short")),
                Some(f)
                    if f.first == 0x8a
                        && f.masked
                        && (f.payload.len() == 125 || f.payload.len() == 1)
                        && f.payload.iter().all(|b| *b == b'p') =>
                {
                    pongs += 1
                }
                Some(f) => {
                    break Err(format!(
                        "after {pongs} pongs: frame {:#x}, masked {}, {} bytes: {:?}",
                        f.first,
                        f.masked,
                        f.payload.len(),
                        &f.payload[..f.payload.len().min(16)]
                    ))
                }
            }
        };
        let result = result.and_then(|pongs| {
            tls.write_all(&frame(0x88, &close_payload(1000, ""))).map_err(|e| e.to_string())?;
            tls.get_ref().set_read_timeout(Some(WAIT)).unwrap();
            // Pongs for pings read before our close may still come first.
            for _ in 0..100_000 {
                match read_frame(&mut tls) {
                    Some(f) if f.first == 0x8a && f.masked && f.payload.iter().all(|b| *b == b'p') => {}
                    Some(f) if f.first == 0x88 && f.payload.len() >= 2 && f.payload[..2] == [0x03, 0xe8] => {
                        return Ok(pongs)
                    }
                    other => return Err(format!("after {pongs} pongs, no close answer but {other:?}")),
                }
            }
            Err("no close answer after 100,000 pongs".to_string())
        });
        let _ = tx.send(result);
    });
    let c = small_buffer_tls_client(&wss_url(server.port, "localhost"), None);
    c.wait_open();
    // The flood (2 s), then the reads: a stalled client ends them within
    // a WAIT or two.
    let result = rx.recv_timeout(WAIT * 3).expect("the server's verdict");
    let events = c.rec.events();
    format!("{result:?}; client events: {events:?}")
}

/// A listener on 127.0.0.1 whose connections get a 4 KiB receive buffer
/// (set before accept, so that the window is small from the start).
fn small_receive_buffer_listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let small: libc::c_int = 4096;
    unsafe {
        use std::os::fd::AsRawFd;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            size,
        );
    }
    listener
}

/// This thread's CPU time: what a ws_loop_run call cost, whatever the
/// rest of the machine is doing.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec that the call fills.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Building a TLS context (loading the trust store and a CA) takes tens of
/// milliseconds (70 ms of CPU here). On an application's loop it would
/// hold one ws_loop_run call for all of it: ws_new builds it instead, on
/// the caller's thread. What the calls still do is the handshake itself,
/// whose heaviest step (the server's flight: key exchange, certificate
/// check) measured 0.35-1.05 ms of CPU in this debug build; so no call of
/// the connection's life may take 5 ms, a bound that a context built on
/// the loop would pass fourteenfold.
#[test]
fn no_ws_loop_run_call_spends_a_millisecond_on_tls_setup() {
    let server = tls_server(&pki().server, echo);
    // A CA of its own: no other test's context can be reused.
    let pem = pki().ca_pem.clone() + "\n";
    let lp = ws_loop_new();
    let rec = Recorder::new();
    let before = thread_cpu();
    let c = unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_set_ca_pem(o, pem.as_ptr().cast(), pem.len()), WS_OK);
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        let c = Client::try_with_options(&wss_url(server.port, "localhost"), &[], o, rec.clone()).unwrap();
        ws_options_free(o);
        c
    };
    let setup = thread_cpu() - before;
    let (mut calls, mut worst) = (0, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = false;
    while Instant::now() < deadline {
        let before = thread_cpu();
        let left = unsafe { ws_loop_run(lp, 10) };
        worst = worst.max(thread_cpu() - before);
        calls += 1;
        assert!(left >= 0, "ws_loop_run: {left}");
        let events = rec.events();
        if events.iter().any(|e| matches!(e, Ev::Error { .. } | Ev::Close { .. })) {
            panic!("the connection ended: {events:?}");
        }
        if !sent && events.iter().any(|e| matches!(e, Ev::Open { .. })) {
            assert_eq!(c.send_text("after a TLS handshake"), WS_OK);
            sent = true;
        }
        if events.iter().any(|e| matches!(e, Ev::Message { .. })) {
            break;
        }
    }
    assert!(rec.events().iter().any(|e| matches!(e, Ev::Message { .. })), "no echo within 20 s");
    assert!(
        worst < Duration::from_millis(5),
        "one of {calls} ws_loop_run calls took {worst:?} of CPU time (ws_new took {setup:?})"
    );
    drop(c);
    unsafe { ws_loop_free(lp) };
}

// ----- wss:// through proxies: TLS with the origin, inside the tunnel -----

/// Through tinyproxy (HTTP CONNECT) and microsocks (socks5h:// and
/// socks5://), each asking for credentials: the TLS session is the
/// origin's, its certificate checked against the origin's name.
#[test]
fn wss_through_proxies_speaks_tls_with_the_origin() {
    let server = tls_server(&pki().server, echo);
    let other = tls_server(&pki().other_name, echo);
    let creds = Some(("proxyuser", "proxypass"));
    let (Some(tiny), Some(socks)) = (tinyproxy(creds, &[]), microsocks(creds)) else { return };
    // Counts the connections that reach microsocks.
    let relay = counting_relay(socks.port);
    // socks5:// sends the first address of the name it resolves; for
    // "localhost" that is ::1, where this server does not listen.
    let routes = [
        (tiny.url("http", creds), "localhost"),
        (relay.url("socks5h", creds), "localhost"),
        (relay.url("socks5", creds), "127.0.0.1"),
    ];
    for (proxy, host) in &routes {
        let c = tls_client(&wss_url(server.port, host), TlsOpts { proxy: Some(proxy.clone()), ..TlsOpts::default() });
        assert_eq!(c.url(), wss_url(server.port, host), "ws_url is the origin's");
        echo_text_and_16_mib(&c);
        // A certificate for another name fails as it does without a proxy.
        let t = TlsOpts { proxy: Some(proxy.clone()), ..TlsOpts::default() };
        let mismatch = if *host == "localhost" { "hostname mismatch" } else { "IP address mismatch" };
        expect_tls_failure(&wss_url(other.port, host), t, &[mismatch]);
    }
    let log = tiny.log();
    assert!(log.contains(&format!("CONNECT localhost:{} HTTP/1.1", server.port)), "{log}");
    assert_eq!(relay.count(), 4, "two SOCKS5 routes, two connections each");
}

/// URL credentials over wss://: the retry after a Basic challenge is a new
/// TLS connection, and the Authorization header goes inside TLS.
#[test]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
fn url_credentials_answer_a_challenge_over_wss() {
    use std::sync::Mutex;
    use tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let cert = std::fs::read(&pki().server.0).unwrap();
    let key = std::fs::read(&pki().server.1).unwrap();
    let acceptor = native_tls::TlsAcceptor::new(native_tls::Identity::from_pkcs8(&cert, &key).unwrap()).unwrap();
    let server = raw_server(move |tcp| {
        let Ok(tls) = acceptor.accept(tcp) else { return };
        let record = record.clone();
        let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("?").to_string());
            record.lock().unwrap().push(auth.clone());
            match auth.as_deref() {
                Some("Basic dXNlcjpwdw==") => Ok(resp),
                _ => Err(tungstenite::http::Response::builder()
                    .status(401)
                    .header("WWW-Authenticate", "Basic realm=\"tls\"")
                    .body(None)
                    .unwrap()),
            }
        };
        if let Ok(ws) = tungstenite::accept_hdr(tls, check) {
            echo(ws);
        }
    });
    let c = tls_client(&format!("wss://user:pw@localhost:{}/", server.port), TlsOpts::default());
    c.wait_open();
    assert_eq!(*seen.lock().unwrap(), vec![None, Some("Basic dXNlcjpwdw==".to_string())]);
    assert_eq!(c.send_text("over TLS"), WS_OK);
    assert_eq!(wait_messages(&c, 1)[0], (b"over TLS".to_vec(), true));
}
