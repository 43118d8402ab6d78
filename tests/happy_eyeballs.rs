//! Connects to hosts with several addresses (RFC 8305): a stalled address
//! (a listener whose accept queue is full drops new SYNs, as a black hole
//! does) costs the 250 ms attempt delay, not the connect timeout; a
//! refused one moves on at once; all stalled ends at the connect timeout,
//! naming the attempts. The library's test hook stands in for getaddrinfo
//! (process-wide: this binary's own).
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use handles::*;
use servers::*;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use ws::ffi::testing::set_resolver;
use ws::ffi::*;

/// Names the stand-in resolver answers, and their addresses.
fn names() -> &'static Mutex<HashMap<String, Vec<SocketAddr>>> {
    static NAMES: OnceLock<Mutex<HashMap<String, Vec<SocketAddr>>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        set_resolver(Some(Arc::new(|host: &str, _port: u16| names().lock().unwrap().get(host).cloned().map(Ok))));
        Mutex::new(HashMap::new())
    })
}

fn name_for(addrs: Vec<SocketAddr>) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("h{}.eyeballs.test", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    names().lock().unwrap().insert(name.clone(), addrs);
    name
}

/// A listener on 127.0.0.1 whose accept queue is full: new SYNs are
/// dropped, and a connect to it stays unfinished.
struct Stalled {
    _listener: OwnedFd,
    _queued: Vec<TcpStream>,
    addr: SocketAddr,
}

fn stalled() -> Stalled {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let listener = OwnedFd::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got_len = len;
        assert_eq!(libc::getsockname(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut got_len), 0);
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
        // Fill the queue (backlog 0 holds one): until a connect hangs.
        let mut queued = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => return Stalled { _listener: listener, _queued: queued, addr },
            }
        }
        panic!("the accept queue of {addr} never filled");
    }
}

/// Opens `host` (through the stand-in resolver) and returns how long the
/// open took.
fn time_to_open(host: &str, port: u16, connect_timeout_ms: u32) -> (Client, Duration) {
    let opts = Opts { connect_timeout_ms: Some(connect_timeout_ms), ..Default::default() };
    let started = Instant::now();
    let c = Client::with(&format!("ws://{host}:{port}/"), &[], &opts);
    c.wait_open();
    let took = started.elapsed();
    (c, took)
}

fn echoes(c: &Client) {
    assert_eq!(c.send_text("through the winner"), WS_OK);
    assert_eq!(wait_messages(c, 1)[0], (b"through the winner".to_vec(), true));
}

fn a_stalled_address_costs_the_attempt_delay_not_the_connect_timeout() {
    let (stalled, server) = (stalled(), echo_server());
    let working = SocketAddr::from(([127, 0, 0, 1], server.port));
    let host = name_for(vec![stalled.addr, working]);
    let (c, took) = time_to_open(&host, server.port, 10_000);
    assert!(took >= Duration::from_millis(200), "opened after {took:?}: before the 250 ms attempt delay?");
    assert!(took < Duration::from_millis(1500), "opened after {took:?}, the attempt delay is 250 ms");
    echoes(&c);
}

fn two_stalled_addresses_cost_two_delays() {
    let (a, b, server) = (stalled(), stalled(), echo_server());
    let working = SocketAddr::from(([127, 0, 0, 1], server.port));
    let host = name_for(vec![a.addr, b.addr, working]);
    let (c, took) = time_to_open(&host, server.port, 10_000);
    assert!(took >= Duration::from_millis(450), "opened after {took:?}");
    assert!(took < Duration::from_millis(2000), "opened after {took:?}, two delays are 500 ms");
    echoes(&c);
}

fn a_refused_address_moves_on_at_once() {
    let server = echo_server();
    let refused = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let host = name_for(vec![refused, SocketAddr::from(([127, 0, 0, 1], server.port))]);
    let (c, took) = time_to_open(&host, server.port, 10_000);
    assert!(took < Duration::from_millis(240), "opened after {took:?}: a refusal waits for no delay");
    echoes(&c);
}

fn every_address_stalled_ends_at_the_connect_timeout_naming_them() {
    let (a, b) = (stalled(), stalled());
    let host = name_for(vec![a.addr, b.addr]);
    let opts = Opts { connect_timeout_ms: Some(1000), ..Default::default() };
    let started = Instant::now();
    let c = Client::with(&format!("ws://{host}:{}/", a.addr.port()), &[], &opts);
    let msg = assert_failed(&c);
    let took = started.elapsed();
    assert_eq!(msg, format!("connect timeout: TCP connect to {}, {} did not finish within 1000 ms", a.addr, b.addr));
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
}

/// A stalled listener that starts serving after `delay`: it takes the
/// connection that filled its queue, then serves WebSocket echo to the
/// next one, which connects when its SYN is sent again (1 s after the
/// first, the initial retransmission timeout).
fn stalled_then_served(delay: Duration) -> SocketAddr {
    let Stalled { _listener: listener, _queued: queued, addr } = stalled();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let accept = || unsafe {
            let fd =
                libc::accept(std::os::fd::AsRawFd::as_raw_fd(&listener), std::ptr::null_mut(), std::ptr::null_mut());
            assert!(fd >= 0);
            TcpStream::from_raw_fd(fd)
        };
        drop(accept()); // the filler
        drop(queued);
        let s = accept();
        if let Ok(ws) = tungstenite::accept(s) {
            echo(ws);
        }
    });
    addr
}

/// The winner is not the oldest attempt and comes through epoll, not at
/// once: [A stalled for good, B stalled until 400 ms]. B starts at 250 ms
/// beside A, is watched beside it, and connects when its SYN is sent again.
fn a_later_attempt_can_win_through_epoll() {
    let a = stalled();
    let b = stalled_then_served(Duration::from_millis(400));
    let host = name_for(vec![a.addr, b]);
    let (c, took) = time_to_open(&host, b.port(), 10_000);
    assert!(took >= Duration::from_millis(1000), "opened after {took:?}: B's SYN is resent after 1 s");
    assert!(took < Duration::from_millis(4000), "opened after {took:?}");
    echoes(&c);
}

/// A failure of the newest attempt starts the next one at once, while an
/// older attempt is still under way (RFC 8305 section 5).
fn a_failed_attempt_starts_the_next_at_once() {
    let (a, server) = (stalled(), echo_server());
    let refused = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let working = SocketAddr::from(([127, 0, 0, 1], server.port));
    let host = name_for(vec![a.addr, refused, working]);
    let (c, took) = time_to_open(&host, server.port, 10_000);
    assert!(took < Duration::from_millis(480), "opened after {took:?}: the refusal at 250 ms started the next");
    echoes(&c);
}

every_mode!(
    a_later_attempt_can_win_through_epoll,
    a_failed_attempt_starts_the_next_at_once,
    a_stalled_address_costs_the_attempt_delay_not_the_connect_timeout,
    two_stalled_addresses_cost_two_delays,
    a_refused_address_moves_on_at_once,
    every_address_stalled_ends_at_the_connect_timeout_naming_them,
);
