//! Keepalive and pings: pings at the set interval and none while traffic
//! flows, a peer that stops answering failed within interval + timeout, a
//! peer that answers kept for ten intervals, `ws_send_ping` answered in
//! `on_pong`, and an idle connection whose loop wakes only for the ticks.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use frames::*;
use handles::*;
use servers::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// What a keepalive server saw: when each ping came, and the opcodes of
/// every frame in order.
#[derive(Default)]
struct Seen {
    pings: Vec<Instant>,
    opcodes: Vec<u8>,
    /// The client's TCP ended (EOF or reset), and when.
    ended: Option<Instant>,
}

/// How a keepalive server answers a ping.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Pong,
    /// A text message instead: any frame shows the peer is alive.
    Text,
    Nothing,
}

/// A raw server that shakes hands, then reads frames, answering each ping
/// as `answer` says, and pushing a small text message every `push_every`
/// for `push_for` (traffic) first. Records into `seen`.
fn keepalive_server(answer: Answer, push_every: Duration, push_for: Duration) -> (Server, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let server = raw_server(move |mut s: TcpStream| {
        raw_handshake(&mut s, "");
        s.set_nodelay(true).unwrap();
        if !push_for.is_zero() {
            let mut w = s.try_clone().unwrap();
            let until = Instant::now() + push_for;
            std::thread::spawn(move || {
                while Instant::now() < until {
                    if w.write_all(&frame(0x81, b"tick")).is_err() {
                        return;
                    }
                    std::thread::sleep(push_every);
                }
            });
        }
        s.set_read_timeout(Some(WAIT * 3)).unwrap();
        loop {
            let Some(f) = read_frame(&mut s) else {
                s2.lock().unwrap().ended = Some(Instant::now());
                return;
            };
            let op = f.first & 0x0f;
            let mut seen = s2.lock().unwrap();
            seen.opcodes.push(op);
            if op == 0x9 {
                seen.pings.push(Instant::now());
                let _ = match answer {
                    Answer::Pong => s.write_all(&frame(0x8A, &f.payload)),
                    Answer::Text => s.write_all(&frame(0x81, b"alive")),
                    Answer::Nothing => Ok(()),
                };
            }
            if op == 0x8 {
                let _ = s.write_all(&frame(0x88, &f.payload));
                return;
            }
        }
    });
    (server, seen)
}

fn keepalive(interval: u32, timeout: Option<u32>) -> Opts {
    Opts { ping_interval_ms: Some(interval), pong_timeout_ms: timeout, record_pongs: true, ..Default::default() }
}

fn pings_come_at_the_interval_and_none_while_traffic_flows() {
    const I: u64 = 200;
    // Traffic for 6 intervals, then silence for 6.
    let (server, seen) = keepalive_server(Answer::Pong, Duration::from_millis(40), Duration::from_millis(6 * I));
    let c = Client::with(&server.url("/"), &[], &keepalive(I as u32, None));
    c.wait_open();
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(12 * I));
    let pings = seen.lock().unwrap().pings.clone();
    let traffic_end = opened + Duration::from_millis(6 * I);
    let during = pings.iter().filter(|p| **p < traffic_end).count();
    assert_eq!(during, 0, "no ping while the server sends every 40 ms");
    assert!(
        (4..=7).contains(&pings.len()),
        "an idle connection pings each {I} ms: {} pings in {} ms",
        pings.len(),
        6 * I
    );
    // The mean gap: one late read on the server's side moves one ping,
    // not the average.
    let mean = pings[pings.len() - 1].duration_since(pings[0]) / (pings.len() as u32 - 1);
    let i = Duration::from_millis(I);
    assert!(mean >= i * 9 / 10 && mean <= i * 12 / 10, "pings {mean:?} apart on average, interval {I} ms");
    assert_eq!(c.state(), WS_OPEN);
    assert!(errors(&c).is_empty());
    // Each keepalive pong reached on_pong, empty.
    let pongs: Vec<_> = c.rec.events().into_iter().filter(|e| matches!(e, Ev::Pong { .. })).collect();
    assert!(pongs.len() >= 3);
    assert!(pongs.iter().all(|e| matches!(e, Ev::Pong { data, state: WS_OPEN } if data.is_empty())));
}

/// When on_open and on_error ran (recorded inside the callbacks).
fn callback_times(c: &Client) -> Arc<Mutex<(Option<Instant>, Option<Instant>)>> {
    let times = Arc::new(Mutex::new((None, None)));
    let t = times.clone();
    c.rec.set_hook(move |_, ev| match ev {
        Ev::Open { .. } => t.lock().unwrap().0 = Some(Instant::now()),
        Ev::Error { .. } => t.lock().unwrap().1 = Some(Instant::now()),
        _ => {}
    });
    times
}

/// A server that stops answering: the connection fails at interval +
/// timeout (the timeout defaults to the interval), within 20%.
fn fails_on_time(interval: u64, timeout: Option<u64>) {
    let (server, seen) = keepalive_server(Answer::Nothing, Duration::ZERO, Duration::ZERO);
    let rec = Recorder::new();
    let opts = keepalive(interval as u32, timeout.map(|t| t as u32));
    let c = Client::try_with(&server.url("/"), &[], Some(&opts), rec).unwrap();
    let times = callback_times(&c);
    let (code, _, clean) = close_event(&c);
    let (Some(opened), Some(failed)) = *times.lock().unwrap() else { panic!("no on_open or on_error") };
    let t = timeout.unwrap_or(interval);
    let took = failed.duration_since(opened);
    let want = Duration::from_millis(interval + t);
    assert!(took >= want * 8 / 10 && took <= want * 12 / 10, "failed after {took:?}, want {want:?} within 20%");
    assert_eq!((code, clean), (1006, false));
    assert_eq!(errors(&c), vec![format!("no pong within {t} ms")]);
    // At once, without a closing handshake: no close frame, TCP ended.
    poll_until("the server to see TCP end", || seen.lock().unwrap().ended.is_some());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.opcodes, vec![0x9], "one ping, then nothing: no close frame");
    assert!(seen.ended.unwrap().duration_since(opened) <= want * 13 / 10);
}

fn a_peer_that_stops_answering_fails_within_interval_and_timeout() {
    fails_on_time(300, Some(200));
}

fn the_pong_timeout_defaults_to_the_interval() {
    fails_on_time(250, None);
}

/// Any frame after a ping shows the peer alive, not only its pong (RFC
/// 6455 5.5.2 lets a pong come late behind data).
fn any_frame_after_a_ping_counts_as_an_answer() {
    const I: u64 = 150;
    let (server, seen) = keepalive_server(Answer::Text, Duration::ZERO, Duration::ZERO);
    let c = Client::with(&server.url("/"), &[], &keepalive(I as u32, Some(I as u32)));
    c.wait_open();
    std::thread::sleep(Duration::from_millis(6 * I));
    assert_eq!(c.state(), WS_OPEN, "{:?}", errors(&c));
    assert!(seen.lock().unwrap().pings.len() >= 3);
    assert!(c.rec.messages().len() >= 3, "each ping drew a message");
}

/// A peer that stops reading while we have bytes to write is dead too:
/// its receive window stays closed, the keepalive ping waits behind
/// megabytes that never drain, and TCP_USER_TIMEOUT (the pong timeout)
/// has the kernel end the connection: on_close 1006, as a lost
/// connection ends (no on_error).
fn a_peer_that_stops_reading_is_ended_by_tcp() {
    const I: u64 = 300;
    const T: u64 = 200;
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let done_rx = Arc::new(Mutex::new(done_rx));
    let server = raw_server(move |mut s: TcpStream| {
        raw_handshake(&mut s, "");
        // Reads nothing more; holds the socket until the test ends.
        let _ = done_rx.lock().unwrap().recv_timeout(WAIT * 2);
    });
    let c = Client::with(&server.url("/"), &[], &keepalive(I as u32, Some(T as u32)));
    c.wait_open();
    let opened = Instant::now();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..16 {
        assert_eq!(c.send_bytes(&chunk), WS_OK);
    }
    let (code, _, clean) = close_event(&c);
    let took = opened.elapsed();
    drop(done_tx);
    assert_eq!((code, clean), (1006, false));
    assert!(errors(&c).is_empty(), "a lost connection: {:?}", errors(&c));
    assert!(took < Duration::from_millis(I + T + 3000), "ended after {took:?}");
}

/// Reads at most 32 KiB per call, 20 ms apart: about 1.6 MB/s.
struct Slow(TcpStream);

impl std::io::Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        let n = buf.len().min(32 * 1024);
        self.0.read(&mut buf[..n])
    }
}

/// A live server behind a slow link is no dead peer: the keepalive ping
/// waits behind our own 4 MiB for seconds (most of it in the client's
/// kernel send buffer, the server's receive buffer being small), and the
/// server sends nothing meanwhile; as long as it acknowledges more of our
/// data, each pong timeout starts again. (A peer whose kernel took all
/// the data and whose program then takes longer than the pong timeout to
/// get to the ping has failed: the timeout is the program's.)
fn a_slow_reader_is_not_a_dead_peer() {
    const I: u64 = 200;
    let (tx, rx) = crossbeam_channel::bounded::<usize>(1);
    let server = raw_server(move |mut s: TcpStream| {
        // A small receive buffer: our data waits in the client's socket,
        // as behind a slow link, not in the server's.
        let size: libc::c_int = 32 * 1024;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&size as *const libc::c_int).cast(), len) };
        raw_handshake(&mut s, "");
        let mut w = s.try_clone().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut slow = Slow(s);
        let mut data = 0;
        while let Some(f) = read_frame(&mut slow) {
            match f.first & 0x0f {
                0x9 => {
                    let _ = tx.send(data);
                    let _ = w.write_all(&frame(0x8A, &f.payload));
                }
                0x2 => data += 1,
                _ => return,
            }
        }
    });
    let c = Client::with(&server.url("/"), &[], &keepalive(I as u32, Some(I as u32)));
    c.wait_open();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..4 {
        assert_eq!(c.send_bytes(&chunk), WS_OK);
    }
    let started = Instant::now();
    let before_ping = rx.recv_timeout(WAIT).expect("the ping reached the server");
    assert_eq!(before_ping, 4, "the ping came behind the 4 MiB");
    assert!(started.elapsed() > Duration::from_millis(4 * I), "it took several pong timeouts to get there");
    c.rec.wait_until(WAIT, "the pong", |e| e.iter().any(|e| matches!(e, Ev::Pong { .. })));
    assert_eq!(c.state(), WS_OPEN, "{:?}", errors(&c));
}

fn a_peer_that_answers_is_kept_for_ten_intervals() {
    const I: u64 = 100;
    let (server, seen) = keepalive_server(Answer::Pong, Duration::ZERO, Duration::ZERO);
    // A generous pong timeout: a stalled server thread is no failure here.
    let c = Client::with(&server.url("/"), &[], &keepalive(I as u32, Some(1000)));
    c.wait_open();
    std::thread::sleep(Duration::from_millis(10 * I + I / 2));
    assert_eq!(c.state(), WS_OPEN);
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));
    let pings = seen.lock().unwrap().pings.len();
    assert!((7..=11).contains(&pings), "{pings} pings in 10 intervals");
    assert_eq!(c.close(1000, None), WS_OK);
    let (code, _, clean) = close_event(&c);
    assert_eq!((code, clean), (1000, true), "keepalive leaves the closing handshake alone");
}

fn ws_send_ping_payload_comes_back_in_on_pong() {
    let server = echo_server(); // tungstenite answers pings itself
    let opts = Opts { record_pongs: true, ..Default::default() };
    let c = Client::with(&server.url("/"), &[], &opts);
    c.wait_open();
    let payload = [7u8; 125];
    unsafe {
        assert_eq!(ws_send_ping(c.ws, b"hello".as_ptr(), 5), WS_OK);
        assert_eq!(ws_send_ping(c.ws, std::ptr::null(), 0), WS_OK, "an empty ping");
        assert_eq!(ws_send_ping(c.ws, payload.as_ptr(), 125), WS_OK, "125 bytes, the most");
        assert_eq!(ws_send_ping(c.ws, payload.as_ptr(), 126), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_ping(std::ptr::null_mut(), b"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_ping(c.ws, std::ptr::null(), 3), WS_ERR_INVALID_ARGUMENT, "NULL with a length");
    }
    let evs = c.rec.wait_until(WAIT, "three pongs", |e| e.iter().filter(|e| matches!(e, Ev::Pong { .. })).count() >= 3);
    let pongs: Vec<Vec<u8>> = evs
        .into_iter()
        .filter_map(|e| match e {
            Ev::Pong { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(pongs, vec![b"hello".to_vec(), Vec::new(), payload.to_vec()], "in order, payloads intact");
    // A message still echoes: the pings did not disturb the stream.
    assert_eq!(c.send_text("after"), WS_OK);
    assert_eq!(wait_messages(&c, 1)[0], (b"after".to_vec(), true));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(unsafe { ws_send_ping(c.ws, b"x".as_ptr(), 1) }, WS_ERR_INVALID_STATE, "no frame after our close frame");
    close_event(&c);
}

fn ws_send_ping_while_connecting_is_refused() {
    let (server, _streams) = silent_server(); // accepts, never answers the upgrade
    let c = Client::new(&server.url("/"));
    assert_eq!(unsafe { ws_send_ping(c.ws, b"x".as_ptr(), 1) }, WS_ERR_INVALID_STATE);
}

every_mode!(
    pings_come_at_the_interval_and_none_while_traffic_flows,
    a_peer_that_stops_answering_fails_within_interval_and_timeout,
    the_pong_timeout_defaults_to_the_interval,
    any_frame_after_a_ping_counts_as_an_answer,
    a_peer_that_stops_reading_is_ended_by_tcp,
    a_slow_reader_is_not_a_dead_peer,
    a_peer_that_answers_is_kept_for_ten_intervals,
    ws_send_ping_payload_comes_back_in_on_pong,
    ws_send_ping_while_connecting_is_refused,
);

/// An idle connection with keepalive on wakes its loop for the ticks and
/// nothing else: on an application loop, `ws_loop_timeout_ms` lets the
/// application sleep until the next ping, and over 2 s at an interval of
/// 400 ms the loop runs at most twice per interval (the ping, its pong).
#[test]
fn an_idle_connection_wakes_its_loop_only_for_the_ticks() {
    const I: u64 = 400;
    let (server, seen) = keepalive_server(Answer::Pong, Duration::ZERO, Duration::ZERO);
    let lp = ws_loop_new();
    let rec = Recorder::new();
    let o = ws_options_new();
    unsafe {
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        assert_eq!(ws_options_set_ping_interval_ms(o, I as u32), WS_OK);
    }
    let mut c = unsafe { Client::try_with_options(&server.url("/"), &[], o, rec.clone()) }.unwrap();
    unsafe { ws_options_free(o) };
    let fd = unsafe { ws_loop_fd(lp) };
    let run = |until: Instant| -> usize {
        let mut wakes = 0;
        while Instant::now() < until {
            // Rounded up: a wait of 0 for the last fraction of a ms would spin.
            let left = until.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000) as i32;
            let t = unsafe { ws_loop_timeout_ms(lp) };
            let t = if t < 0 { left } else { t.min(left) };
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            unsafe { libc::poll(&mut p, 1, t) };
            unsafe { ws_loop_run(lp, 0) };
            wakes += 1;
        }
        wakes
    };
    let deadline = Instant::now() + WAIT;
    while !rec.events().iter().any(|e| matches!(e, Ev::Open { .. })) {
        assert!(Instant::now() < deadline, "did not open");
        run(Instant::now() + Duration::from_millis(20));
    }
    let wakes = run(Instant::now() + Duration::from_millis(5 * I));
    let pings = seen.lock().unwrap().pings.len();
    assert!(pings >= 4, "{pings} pings in 5 intervals");
    assert!(wakes <= 2 * 5 + 2, "{wakes} loop turns in 5 intervals of an idle connection");
    assert_eq!(unsafe { ws_ready_state(c.ws) }, WS_OPEN);
    c.free();
    run(Instant::now() + Duration::from_millis(50));
    unsafe { ws_loop_free(lp) };
}
