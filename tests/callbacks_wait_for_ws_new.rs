//! No callback starts before ws_new has returned its handle, even when the
//! connection fails at once and on_close frees the handle. A test hook
//! delays ws_new's return, so the race is certain to be lost without the
//! rule. Alone in its process: the hook applies to the next ws_new.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

#[test]
fn callbacks_wait_for_ws_new_to_return() {
    let rec = Recorder::new();
    let first_callback: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let f = first_callback.clone();
    rec.set_hook(move |ws, ev| {
        f.lock().unwrap().get_or_insert_with(Instant::now);
        if matches!(ev, Ev::Close { .. }) {
            // The documented pattern: free the handle from on_close.
            unsafe { ws_free(ws) };
        }
    });
    ws::ffi::testing::delay_next_new_return(Duration::from_millis(300));
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let called = Instant::now();
    let mut c = Client::try_with(&url, &[], None, rec.clone()).unwrap();
    c.forget();
    rec.wait_close();
    let first = first_callback.lock().unwrap().expect("a callback ran");
    // The refused connect fails within microseconds; the callbacks must
    // still wait out the delay inside ws_new.
    let after = first.duration_since(called);
    assert!(after >= Duration::from_millis(300), "a callback ran {after:?} after the call, before ws_new returned");
    assert!(matches!(rec.events()[..], [Ev::Error { .. }, Ev::Close { code: 1006, .. }]), "{:?}", rec.events());
}
