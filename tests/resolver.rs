//! The resolver pool under lookups that hang (a DNS server that never
//! answers) and lookups whose connections end first. The library's test
//! hook stands in for getaddrinfo: names ending in ".hang.test" block until
//! the test lets them go, "fast.test" answers 127.0.0.1 at once. Its own
//! binary, one test at a time: the hook and the pool are process-wide.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/loop_fds.rs"]
mod loop_fds;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use crossbeam_channel::{Receiver, Sender};
use handles::*;
use loop_fds::loop_fds;
use servers::*;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::testing::{lookup_threads, park_private_loops, parked_loops, set_resolver, MAX_LOOKUP_THREADS};
use ws::ffi::*;

/// Installs the stand-in resolver; hung lookups return (an error) when the
/// returned sender is dropped. Every name asked for is recorded.
fn stand_in() -> (Sender<()>, Arc<Mutex<Vec<String>>>) {
    let (release, released): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(0);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    set_resolver(Some(Arc::new(move |host: &str, port: u16| -> Option<io::Result<Vec<SocketAddr>>> {
        record.lock().unwrap().push(host.to_string());
        if host.ends_with(".hang.test") {
            // Until the sender is dropped (bounded by the test's WAIT).
            let _ = released.recv_timeout(WAIT * 3);
            return Some(Err(io::Error::new(io::ErrorKind::TimedOut, "the test's DNS server never answered")));
        }
        if host == "fast.test" {
            return Some(Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]));
        }
        None
    })));
    (release, asked)
}

fn hanging_clients(n: usize, tag: &str) -> Vec<Client> {
    let opts = Opts { connect_timeout_ms: Some(60_000), ..Opts::default() };
    (0..n).map(|i| Client::with(&format!("ws://{tag}-{i}.hang.test:9/"), &[], &opts)).collect()
}

fn wait_for_lookups(asked: &Mutex<Vec<String>>, n: usize) {
    poll_until("the lookups to start", || asked.lock().unwrap().len() >= n);
}

#[test]
fn a_name_that_answers_at_once_resolves_while_32_lookups_hang() {
    let _serial = serial();
    let (release, asked) = stand_in();
    let hung = hanging_clients(32, "stuck");
    wait_for_lookups(&asked, 32);
    let server = echo_server();
    let port = server.url("/").rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let opts = Opts { connect_timeout_ms: Some(WAIT.as_millis() as u32), ..Opts::default() };
    let started = Instant::now();
    let fast = Client::with(&format!("ws://fast.test:{port}/"), &[], &opts);
    fast.wait_open();
    println!("opened in {:?} beside 32 hung lookups", started.elapsed());
    assert!(hung.iter().all(|c| c.state() == WS_CONNECTING));
    // The hung lookups end: their connections fail, and the pool's
    // threads end after their idle time.
    drop(release);
    for c in &hung {
        let message = assert_failed(c);
        assert!(message.contains("cannot resolve host stuck-"), "{message}");
    }
    let deadline = Instant::now() + WAIT;
    while lookup_threads() > 0 {
        assert!(Instant::now() < deadline, "{} resolver threads still alive", lookup_threads());
        std::thread::sleep(Duration::from_millis(20));
    }
    set_resolver(None);
}

#[test]
fn lookups_of_connections_that_ended_leave_the_queue_and_hold_no_loop() {
    let _serial = serial();
    // Loops are counted: none may be a parked one, reused or ending.
    park_private_loops(false);
    poll_until("parked loops to end", || parked_loops() == 0);
    let (release, asked) = stand_in();
    // Every thread of the pool busy with a lookup that hangs...
    let hung = hanging_clients(MAX_LOOKUP_THREADS, "busy");
    wait_for_lookups(&asked, MAX_LOOKUP_THREADS);
    let loops_before = loop_fds();
    // ... so these twelve wait in the queue; each is closed and freed.
    let mut queued = hanging_clients(12, "cancelled");
    assert_eq!(loop_fds(), loops_before + 24, "twelve private loops, two fds each");
    for c in &mut queued {
        assert_eq!(c.close(1000, None), WS_OK);
        assert_failed(c);
        c.free();
    }
    // Their private loops go now, not when a hung lookup returns.
    poll_until("the freed connections' loops to close", || loop_fds() == loops_before);
    drop(release);
    for c in &hung {
        assert_failed(c);
    }
    // A new lookup runs next: none of the cancelled ones ran before it.
    let server = echo_server();
    let port = server.url("/").rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let fast = Client::open(&format!("ws://fast.test:{port}/"));
    assert_eq!(fast.state(), WS_OPEN);
    let ran_cancelled = asked.lock().unwrap().iter().filter(|h| h.starts_with("cancelled-")).count();
    assert_eq!(ran_cancelled, 0, "lookups of freed connections ran");
    set_resolver(None);
    park_private_loops(true);
}

/// "localhost" and its subdomains are loopback (RFC 6761 6.3), answered
/// without a lookup: no resolver thread, no hand-off, whatever the hosts
/// file says. The server listens on 127.0.0.1 only: [::1], tried first,
/// is refused and the connect goes on to 127.0.0.1.
#[test]
fn localhost_names_connect_without_a_lookup() {
    let _serial = serial();
    let (_release, asked) = stand_in();
    let server = echo_server();
    let port = server.url("/").rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    for host in ["localhost", "app.localhost", "LOCALHOST."] {
        let c = Client::new(&format!("ws://{host}:{port}/"));
        c.wait_open();
        assert_eq!(c.send_text("over loopback"), WS_OK);
        assert_eq!(wait_messages(&c, 1)[0].0, b"over loopback");
    }
    // A name that is not a localhost name still goes to the resolver.
    let c = Client::new(&format!("ws://fast.test:{port}/"));
    c.wait_open();
    assert_eq!(*asked.lock().unwrap(), ["fast.test"], "only fast.test was looked up");
    set_resolver(None);
}
