//! When callbacks may run, against threads that close and free handles:
//! `on_message` only while OPEN (also against a concurrent ws_close), and
//! ws_free called from inside callbacks never waits (two handles freeing
//! each other from their callbacks must not deadlock).
//!
//! sanitize: asan tsan

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// A server that sends small binary messages without pause (20 each
/// millisecond: fast enough that one is always being delivered, slow enough
/// that no backlog delays the close), reading on another thread until the
/// client's close frame; at most 10 s.
fn flooding_server() -> Server {
    raw_server(|mut s| {
        raw_handshake(&mut s, "");
        let mut reader = s.try_clone().unwrap();
        let flooding = Arc::new(AtomicBool::new(true));
        let f = flooding.clone();
        let writer = std::thread::spawn(move || {
            let frames: Vec<u8> = (0..20).flat_map(|_| frame(0x82, &[7u8; 16])).collect();
            let end = Instant::now() + Duration::from_secs(10);
            while f.load(Ordering::SeqCst) && Instant::now() < end {
                if s.write_all(&frames).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let _ = read_until_close(&mut reader);
        flooding.store(false, Ordering::SeqCst);
        let _ = writer.join();
        let _ = reader.write_all(&frame(0x88, &close_payload(1000, "")));
    })
}

/// 200 times: a thread calls ws_close while on_message is being delivered
/// as fast as the server can send. No on_message may start after ws_close
/// has returned, and none may see a readyState other than OPEN.
fn no_message_after_close_returns() {
    let server = flooding_server();
    let mut late = 0;
    let mut not_open = 0;
    for _ in 0..200 {
        let returned = Arc::new(AtomicBool::new(false));
        let (r, seen_late, seen_not_open) =
            (returned.clone(), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (sl, sn) = (seen_late.clone(), seen_not_open.clone());
        // Signals through a channel: the recorder's waits scan every event,
        // and a flood records tens of thousands.
        let (first_tx, first_rx) = crossbeam_channel::bounded(1);
        let (close_tx, close_rx) = crossbeam_channel::bounded(1);
        let rec = Recorder::new();
        rec.set_hook(move |ws, ev| {
            if let Ev::Close { clean, .. } = ev {
                let _ = close_tx.try_send(*clean);
            }
            if let Ev::Message { state, .. } = ev {
                let _ = first_tx.try_send(());
                if r.load(Ordering::SeqCst) {
                    sl.fetch_add(1, Ordering::SeqCst);
                }
                if *state != WS_OPEN || unsafe { ws_ready_state(ws) } != WS_OPEN {
                    sn.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let c = Client::try_with(&server.url("/"), &[], None, rec).unwrap();
        first_rx.recv_timeout(WAIT).expect("the first message");
        assert_eq!(c.close(1000, None), WS_OK);
        returned.store(true, Ordering::SeqCst);
        assert!(close_rx.recv_timeout(WAIT).expect("on_close"), "the close was not clean");
        late += seen_late.load(Ordering::SeqCst);
        not_open += seen_not_open.load(Ordering::SeqCst);
    }
    assert_eq!((late, not_open), (0, 0), "messages after ws_close returned, and messages seen while not OPEN");
}

/// Waits (at most WAIT) until `n` callers have arrived.
struct Rendezvous {
    arrived: Mutex<usize>,
    cv: Condvar,
    n: usize,
}

impl Rendezvous {
    fn arrive(&self) -> std::sync::MutexGuard<'_, usize> {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cv.notify_all();
        arrived
    }

    fn wait(&self) {
        let mut arrived = self.arrive();
        let deadline = Instant::now() + WAIT;
        while *arrived < self.n && Instant::now() < deadline {
            arrived = self.cv.wait_timeout(arrived, deadline - Instant::now()).unwrap().0;
        }
    }
}

/// A bridge: each handle's on_close frees the other, while both callbacks
/// run at the same time when they can (on separate threads).
fn two_handles_freeing_each_other_from_on_close_do_not_deadlock() {
    let server = raw_server(|mut s| {
        raw_handshake(&mut s, "");
        // Close at once; both clients see it at about the same time. A
        // client freed before its handshake ends sends no close frame.
        let _ = s.write_all(&frame(0x88, &close_payload(1000, "")));
        s.set_read_timeout(Some(WAIT)).unwrap();
        while read_frame(&mut s).is_some_and(|f| f.first & 0x0f != 8) {}
    });
    // On their own threads both on_close callbacks run and overlap; on
    // a shared loop they run one after the other, so the first frees
    // the second's handle before its on_close, which then never runs.
    let expected = if current_mode() == Mode::OwnThread { 2 } else { 1 };
    for _ in 0..20 {
        // The callbacks wait for each other when they can meet (on their
        // own threads: they overlap), and for this thread, which arrives
        // once it has set the handles' addresses: on loopback an on_close
        // can come before the second ws_new has returned.
        let both_in = Arc::new(Rendezvous { arrived: Mutex::new(0), cv: Condvar::new(), n: expected + 1 });
        let other: Arc<[std::sync::Mutex<usize>; 2]> = Arc::new([std::sync::Mutex::new(0), std::sync::Mutex::new(0)]);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let recs = [Recorder::new(), Recorder::new()];
        // Nothing tells this test when the callbacks that freed each
        // other's handles have returned: keep their user_data alive.
        recs.iter().for_each(Recorder::keep_alive);
        for (i, rec) in recs.iter().enumerate() {
            let (both_in, other, done_tx) = (both_in.clone(), other.clone(), done_tx.clone());
            rec.set_hook(move |_, ev| {
                if matches!(ev, Ev::Close { .. }) {
                    both_in.wait();
                    let peer = *other[1 - i].lock().unwrap() as *mut ws_socket;
                    unsafe { ws_free(peer) };
                    let _ = done_tx.send(i);
                }
            });
        }
        let mut a = Client::try_with(&server.url("/"), &[], None, recs[0].clone()).unwrap();
        let mut b = Client::try_with(&server.url("/"), &[], None, recs[1].clone()).unwrap();
        let handles = [a.ws, b.ws];
        *other[0].lock().unwrap() = a.ws as usize;
        *other[1].lock().unwrap() = b.ws as usize;
        drop(both_in.arrive());
        a.forget();
        b.forget();
        let mut finished = Vec::new();
        for _ in 0..expected {
            finished.push(done_rx.recv_timeout(WAIT).expect("ws_free inside on_close deadlocked"));
        }
        assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err(), "a callback ran after ws_free returned");
        finished.sort();
        finished.dedup();
        assert_eq!(finished.len(), expected);
        recs.iter().for_each(|r| r.clear_hook());
        // On a loop the handle whose on_close ran is left: free it, so that
        // LeakSanitizer reports only what the library loses.
        if expected == 1 {
            unsafe { ws_free(handles[finished[0]]) };
        }
    }
}

every_mode!(no_message_after_close_returns, two_handles_freeing_each_other_from_on_close_do_not_deadlock);
