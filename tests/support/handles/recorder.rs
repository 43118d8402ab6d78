//! The event recorder behind the C callbacks: every event of a handle,
//! with readyState as the callback saw it, and a hook to call back in.

use crate::common::WAIT;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};
use ws::ffi::*;

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open {
        state: i32,
    },
    Message {
        data: Vec<u8>,
        text: bool,
        state: i32,
    },
    Error {
        message: String,
        state: i32,
    },
    Close {
        code: u16,
        reason: String,
        clean: bool,
        state: i32,
    },
    /// `on_pong`, set with ws_options_set_on_pong (`Opts::record_pongs`).
    Pong {
        data: Vec<u8>,
        state: i32,
    },
}

type Hook = Box<dyn FnMut(*mut ws_socket, &Ev) + Send>;

/// Collects a handle's events; `hook` runs inside each callback before it is
/// recorded (to call back into the library from there).
pub struct Recorder {
    events: Mutex<Vec<Ev>>,
    cv: Condvar,
    hook: Mutex<Option<Hook>>,
    /// Set when a callback ran on the thread calling ws_new (must not).
    pub nul_after_message: Mutex<bool>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            events: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            hook: Mutex::new(None),
            nul_after_message: Mutex::new(true),
        })
    }

    pub fn set_hook(&self, hook: impl FnMut(*mut ws_socket, &Ev) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// Drops the hook once a running one has returned, and with it what the
    /// hook captured (handle addresses among them).
    pub fn clear_hook(&self) {
        *self.hook.lock().unwrap() = None;
    }

    /// Keeps `rec` until the process exits, for a callback that may still be
    /// using it when the test ends. Held by a static, so that LeakSanitizer
    /// sees it reachable and reports only what the library lost.
    pub fn keep_alive(rec: &Arc<Recorder>) {
        static KEPT: Mutex<Vec<Arc<Recorder>>> = Mutex::new(Vec::new());
        KEPT.lock().unwrap().push(rec.clone());
    }

    /// The hook runs first and the event becomes visible after it: a test
    /// that waits for an event and then drops the recorder must not free it
    /// under a hook still running (on_close freeing its handle did, and the
    /// test process crashed once in a hundred runs). The notify happens
    /// under the lock for the same reason: the waiter cannot return, and
    /// drop the recorder, before this callback is done with it.
    /// A lock poisoned by a failed test is taken all the same: a panic
    /// here would cross extern "C" and abort the other tests of the binary.
    fn push(&self, ws: *mut ws_socket, ev: Ev) {
        if let Some(hook) = self.hook.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            hook(ws, &ev);
        }
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.push(ev);
        self.cv.notify_all();
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the events, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&[Ev]) -> bool) -> Vec<Ev> {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.lock().unwrap();
        while !done(&events) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}; events: {:?}", summary(&events));
            events = self.cv.wait_timeout(events, deadline - now).unwrap().0;
        }
        events.clone()
    }

    pub fn wait_close(&self) -> Ev {
        let evs = self.wait_until(WAIT, "on_close", |e| e.iter().any(|e| matches!(e, Ev::Close { .. })));
        evs.into_iter().find(|e| matches!(e, Ev::Close { .. })).unwrap()
    }

    pub fn messages(&self) -> Vec<(Vec<u8>, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Message { data, text, .. } => Some((data, text)),
                _ => None,
            })
            .collect()
    }
}

/// Whether `on_close` is among the events (for `Recorder::wait_until`).
pub fn has_close(e: &[Ev]) -> bool {
    e.iter().any(|e| matches!(e, Ev::Close { .. }))
}

fn summary(events: &[Ev]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Ev::Message { data, text, .. } => format!("Message(len {}, text {text})", data.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

unsafe extern "C" fn cb_open(ud: *mut c_void, ws: *mut ws_socket) {
    let r = &*(ud as *const Recorder);
    r.push(ws, Ev::Open { state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_message(ud: *mut c_void, ws: *mut ws_socket, data: *const u8, len: usize, text: bool) {
    let r = &*(ud as *const Recorder);
    assert!(!data.is_null());
    if *data.add(len) != 0 {
        *r.nul_after_message.lock().unwrap() = false;
    }
    let data = std::slice::from_raw_parts(data, len).to_vec();
    r.push(ws, Ev::Message { data, text, state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_error(ud: *mut c_void, ws: *mut ws_socket, message: *const c_char) {
    let r = &*(ud as *const Recorder);
    let message = CStr::from_ptr(message).to_str().unwrap().to_string();
    r.push(ws, Ev::Error { message, state: ws_ready_state(ws) });
}

unsafe extern "C" fn cb_close(ud: *mut c_void, ws: *mut ws_socket, code: u16, reason: *const c_char, clean: bool) {
    let r = &*(ud as *const Recorder);
    let reason = CStr::from_ptr(reason).to_str().unwrap().to_string();
    r.push(ws, Ev::Close { code, reason, clean, state: ws_ready_state(ws) });
}

/// The recording `on_pong` (ws_options_set_on_pong), with the handle's user_data.
pub unsafe extern "C" fn cb_pong(ud: *mut c_void, ws: *mut ws_socket, data: *const u8, len: usize) {
    let r = &*(ud as *const Recorder);
    assert!(!data.is_null());
    let data = std::slice::from_raw_parts(data, len).to_vec();
    r.push(ws, Ev::Pong { data, state: ws_ready_state(ws) });
}

/// The recording callbacks, with `rec` as user_data.
pub fn callbacks_for(rec: &Arc<Recorder>) -> ws_callbacks {
    ws_callbacks {
        user_data: Arc::as_ptr(rec) as *mut c_void,
        on_open: Some(cb_open),
        on_message: Some(cb_message),
        on_error: Some(cb_error),
        on_close: Some(cb_close),
    }
}
