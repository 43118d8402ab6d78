//! State shared between a handle (any thread) and the loop that runs its
//! connection: the ready state, bufferedAmount, and when callbacks may run.

use crate::conn::cause::Cause;
use crate::conn::outbox::{Direct, Outbox};
use crate::error::{Error, ErrorKind};
use crate::proto::handshake::ResponseHead;
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};

thread_local! {
    /// True while this thread runs a libws callback (of any handle). Such a
    /// thread never waits for another handle's callback: two handles whose
    /// callbacks close or free each other would wait on each other forever.
    /// A const Cell has no destructor, so it stays usable during teardown.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// readyState, as in the browser (WHATWG: CONNECTING 0, OPEN 1, CLOSING 2,
/// CLOSED 3; the values are the C API's WS_* constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReadyState {
    Connecting = 0,
    Open = 1,
    Closing = 2,
    Closed = 3,
}

impl ReadyState {
    fn from_u8(v: u8) -> ReadyState {
        match v {
            0 => ReadyState::Connecting,
            1 => ReadyState::Open,
            2 => ReadyState::Closing,
            _ => ReadyState::Closed,
        }
    }
}

/// An answer to the upgrade request, and the one before it, if any.
struct Response {
    head: ResponseHead,
    _previous: Option<Box<Response>>,
}

/// Work for the loop's thread, in the order the API calls returned.
pub enum Command {
    /// A data frame's payload with `HEADROOM` free bytes in front, so that
    /// the loop's thread writes the header and masks in place: no second copy.
    Send { buf: Vec<u8>, text: bool },
    /// A ping with this payload (at most 125 bytes), from `ws_send_ping`.
    Ping(Vec<u8>),
    /// `code` 0 means a close frame with no body.
    Close { code: u16, reason: String },
    /// A send from another thread wrote part of its frame directly: the
    /// loop takes over the rest (and watches for room to write).
    Flush,
    /// ws_set_receiving changed whether the socket is read: the loop
    /// looks again at what it waits for.
    Receiving,
    /// The handle was freed: close with 1001 if open, then end. `release`
    /// is the handle's memory when a callback of it was running as it was
    /// freed: the loop's thread drops it once that callback has returned.
    Free { release: Option<Box<dyn Send>> },
}

/// How a handle's side reaches the loop that runs its connection (the
/// connection's module provides it, for the loop the handle was made on).
pub trait LoopLink: Send + Sync {
    /// Queues a command for the connection; wakes the loop unless the
    /// calling thread runs it.
    fn post(&self, cmd: Command);
    /// As `post`, for a command that holds the handle's memory: it must
    /// not be left in a queue that no thread will run again.
    fn post_owning(&self, cmd: Command);
    /// Whether the calling thread runs the loop now.
    fn on_loop_thread(&self) -> bool;
}

pub struct Shared {
    state: AtomicU8,
    /// Held shared by `send` across its state check and enqueue, and
    /// exclusively by every change away from OPEN, so that no message that
    /// `send` accepted while OPEN lands behind the close frame.
    state_gate: RwLock<()>,
    /// Sends accepted while OPEN: a close frame that the loop decides on
    /// (an echo, a failure, ws_free) goes out after this many sends.
    accepted: AtomicU64,
    /// What the connection sends, and bufferedAmount.
    outbox: Outbox,
    url: CString,
    protocol: OnceLock<CString>,
    extensions: OnceLock<CString>,
    freed: AtomicBool,
    abandoned: AtomicBool,
    /// Why the connection ended (a `Cause`) and the OS error behind it:
    /// set before the callbacks that announce the end.
    cause: AtomicU8,
    errno: AtomicI32,
    /// ws_set_receiving: false stops reading the socket while OPEN.
    receiving: AtomicBool,
    /// The server's answer to the upgrade request, once it came.
    response: Mutex<Option<Box<Response>>>,
    /// Held by the loop's thread while a callback runs (and by `ws_new` until
    /// it has returned the handle); taken by state changes from other
    /// threads, so that a callback's check of the state and its start are
    /// one step with respect to them.
    dispatch: Mutex<()>,
    /// The way to the loop that runs the connection.
    link: Box<dyn LoopLink>,
}

impl Shared {
    pub fn new(url: CString, max_buffered: u64, drain_mark: Option<u64>, link: Box<dyn LoopLink>) -> Shared {
        Shared {
            state: AtomicU8::new(ReadyState::Connecting as u8),
            state_gate: RwLock::new(()),
            accepted: AtomicU64::new(0),
            outbox: Outbox::new(max_buffered, drain_mark),
            url,
            protocol: OnceLock::new(),
            extensions: OnceLock::new(),
            freed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            cause: AtomicU8::new(Cause::None as u8),
            errno: AtomicI32::new(0),
            response: Mutex::new(None),
            receiving: AtomicBool::new(true),
            dispatch: Mutex::new(()),
            link,
        }
    }

    /// Records why the connection ended, before its last callbacks.
    pub fn set_cause(&self, cause: Cause, errno: i32) {
        self.errno.store(errno, Ordering::SeqCst);
        self.cause.store(cause as u8, Ordering::SeqCst);
    }

    /// Keeps the server's answer. An earlier one (the 401 before a retry
    /// with credentials) stays behind it: a pointer to its headers handed
    /// out before stays valid until the handle is freed.
    pub fn set_response(&self, head: ResponseHead) {
        let mut slot = self.response.lock().unwrap_or_else(|e| e.into_inner());
        let previous = slot.take();
        *slot = Some(Box::new(Response { head, _previous: previous }));
    }

    /// The answer's status; 0 when none came.
    pub fn response_status(&self) -> u16 {
        self.response.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |r| r.head.status)
    }

    /// The first value of header `name`, a C string that lives as long as
    /// this `Shared` (answers are never dropped before it).
    pub fn response_header(&self, name: &[u8]) -> Option<*const std::ffi::c_char> {
        let slot = self.response.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()?.head.header(name).map(|v| v.as_ptr().cast())
    }

    /// Why the connection ended: `Cause::None` before the end and after a
    /// clean closing handshake.
    pub fn cause(&self) -> (Cause, i32) {
        (Cause::from_u8(self.cause.load(Ordering::SeqCst)), self.errno.load(Ordering::SeqCst))
    }

    pub fn state(&self) -> ReadyState {
        ReadyState::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// bufferedAmount (WHATWG): bytes accepted by send() and not yet
    /// written, plus every byte sent while CLOSING or CLOSED.
    pub fn buffered_amount(&self) -> u64 {
        self.outbox.buffered_amount()
    }

    /// What the connection sends: the loop's thread writes through it.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn url(&self) -> &CStr {
        &self.url
    }

    /// The chosen subprotocol: "" until open, or if none.
    pub fn protocol(&self) -> &CStr {
        self.protocol.get().map_or(c"", |p| p.as_c_str())
    }

    /// The server's Sec-WebSocket-Extensions: "" until open, or if none.
    pub fn extensions(&self) -> &CStr {
        self.extensions.get().map_or(c"", |p| p.as_c_str())
    }

    /// `ws_new` failed after handing the connection to its loop: the loop
    /// drops it unstarted.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.freed.store(true, Ordering::SeqCst);
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// ws_set_receiving: any thread, callbacks included. The loop takes
    /// the change at its next turn (woken for it).
    pub fn set_receiving(&self, on: bool) {
        if self.receiving.swap(on, Ordering::SeqCst) != on {
            self.enqueue(Command::Receiving);
        }
    }

    pub fn is_receiving(&self) -> bool {
        self.receiving.load(Ordering::SeqCst)
    }

    pub fn is_freed(&self) -> bool {
        self.freed.load(Ordering::SeqCst)
    }

    /// Runs `callback` on the loop's thread unless the handle is freed or
    /// `may_run` refuses the current state. The check and the callback run
    /// under the dispatch lock, which `close` and `free` from other threads
    /// take: once they return, no callback that the change forbids starts.
    pub fn run_callback(&self, may_run: impl FnOnce(ReadyState) -> bool, callback: impl FnOnce()) {
        if self.is_freed() {
            return;
        }
        let _dispatch = self.lock_dispatch();
        if self.is_freed() || !may_run(self.state()) {
            return;
        }
        call_back(callback);
    }

    /// The open transition and `on_open` as one step: a `close` from
    /// another thread comes wholly before (the connection fails) or after
    /// `on_open` has returned. The agreed protocol and extensions are set
    /// once the state is OPEN, so that a reader never sees them while
    /// CONNECTING. False when the state was no longer CONNECTING.
    pub fn open(&self, protocol: CString, extensions: CString, on_open: impl FnOnce()) -> bool {
        let _dispatch = self.lock_dispatch();
        if !self.transition(Some(ReadyState::Connecting), ReadyState::Open) {
            return false;
        }
        let _ = self.protocol.set(protocol);
        let _ = self.extensions.set(extensions);
        if !self.is_freed() {
            call_back(on_open);
        }
        true
    }

    /// Keeps every callback of this handle from starting while the guard
    /// lives: `ws_new` holds it until it has returned the handle.
    pub fn hold_callbacks(&self) -> MutexGuard<'_, ()> {
        self.lock_dispatch()
    }

    fn lock_dispatch(&self) -> MutexGuard<'_, ()> {
        self.dispatch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a state change from the API: the dispatch lock, waiting for a
    /// callback of this handle that runs now on another thread. Inside any
    /// libws callback it never waits: None when the lock is taken (by this
    /// very callback, or by one of this handle on another loop's thread).
    fn exclude_callbacks(&self) -> Option<MutexGuard<'_, ()>> {
        if IN_CALLBACK.with(|c| c.get()) {
            return self.dispatch.try_lock().ok();
        }
        Some(self.lock_dispatch())
    }

    /// Sets the state; with `from`, only when the state is `from` now.
    /// Returns whether it changed.
    pub fn transition(&self, from: Option<ReadyState>, to: ReadyState) -> bool {
        self.transition_counting(from, to).is_some()
    }

    /// As `transition`; when it changed, also the number of sends accepted
    /// while OPEN, all of them queued before the change.
    pub fn transition_counting(&self, from: Option<ReadyState>, to: ReadyState) -> Option<u64> {
        let _gate = self.state_gate.write().unwrap_or_else(|e| e.into_inner());
        let now = self.state();
        if from.is_some_and(|f| f != now) || now == to {
            return None;
        }
        self.state.store(to as u8, Ordering::SeqCst);
        Some(self.accepted.load(Ordering::SeqCst))
    }

    fn enqueue(&self, cmd: Command) {
        self.link.post(cmd);
    }

    /// The browser's send(). The state and the max buffered amount are
    /// checked before the bytes are copied, so a send that must be refused
    /// never allocates; the copy is made outside the state lock, so a large
    /// one never holds up a state change on the loop's thread.
    pub fn send(&self, data: &[u8], text: bool) -> Result<(), Error> {
        let len = data.len() as u64;
        {
            let _gate = self.state_gate.read().unwrap_or_else(|e| e.into_inner());
            match self.state() {
                ReadyState::Connecting => {
                    return Err(Error::new(ErrorKind::InvalidState, "send() while the connection is CONNECTING"))
                }
                // Counted now: a getter right after send() sees it.
                ReadyState::Open => self.outbox.reserve(len)?,
                // CLOSING or CLOSED: count the bytes, drop the data (WHATWG send() step 3).
                _ => {
                    self.outbox.count_dropped(len);
                    return Ok(());
                }
            }
        }
        let payload = self.outbox.copy(data).inspect_err(|_| {
            self.outbox.unreserve(len);
            // Another thread's write may have drained it meanwhile, with
            // this reservation still counted: on_drain is due now.
            if self.outbox.drain_due() {
                self.enqueue(Command::Flush);
            }
        })?;
        let _gate = self.state_gate.read().unwrap_or_else(|e| e.into_inner());
        if self.state() != ReadyState::Open {
            // Closed while the bytes were copied: as a send made after the
            // change, counted (above) and dropped.
            return Ok(());
        }
        self.accepted.fetch_add(1, Ordering::SeqCst);
        // From the loop's thread (a callback), the loop flushes after the
        // callback: many sends, one write.
        let direct =
            if self.link.on_loop_thread() { Direct::NotNow(payload) } else { self.outbox.try_direct(payload, text) };
        match direct {
            // A direct write that took bufferedAmount back to the drain
            // mark: the loop's thread runs on_drain.
            Direct::Written if self.outbox.drain_due() => self.enqueue(Command::Flush),
            Direct::Written => {}
            Direct::Unfinished => self.enqueue(Command::Flush),
            Direct::NotNow(buf) => {
                self.outbox.queued_for_loop();
                self.enqueue(Command::Send { buf, text });
            }
        }
        Ok(())
    }

    /// A ping for the server to answer (RFC 6455 5.5.2): only while OPEN,
    /// since no frame may follow our close frame. The payload is checked
    /// by the caller.
    pub fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        let _gate = self.state_gate.read().unwrap_or_else(|e| e.into_inner());
        if self.state() != ReadyState::Open {
            return Err(Error::new(ErrorKind::InvalidState, "ping while the connection is not OPEN"));
        }
        self.enqueue(Command::Ping(payload.to_vec()));
        Ok(())
    }

    /// The browser's close(), after its argument checks. From a thread that
    /// is not in a libws callback it waits for a callback of this handle
    /// running now, so that none starts or runs on after the change.
    pub fn close(&self, code: u16, reason: String) {
        let _callbacks = self.exclude_callbacks();
        let _gate = self.state_gate.write().unwrap_or_else(|e| e.into_inner());
        match self.state() {
            ReadyState::Connecting | ReadyState::Open => {
                self.state.store(ReadyState::Closing as u8, Ordering::SeqCst);
                self.enqueue(Command::Close { code, reason });
            }
            _ => {}
        }
    }

    /// Stops every callback and lets the loop's thread close with 1001 in the
    /// background. `release` drops the handle's memory: here, once no
    /// callback of the handle runs (waiting for one running on another
    /// thread), or on the loop's thread after the running callback returns
    /// when waiting is not allowed (inside a callback).
    pub fn free(&self, release: Box<dyn Send>) {
        self.freed.store(true, Ordering::SeqCst);
        let idle = self.exclude_callbacks().is_some();
        let release = if idle {
            drop(release);
            None
        } else {
            Some(release)
        };
        // For a connection that has ended, the loop drops the command (and
        // `release`) when it takes it: no callback of it runs then.
        match release {
            None => self.enqueue(Command::Free { release }),
            Some(release) => {
                #[cfg(feature = "testing")]
                testing::free_posting();
                self.link.post_owning(Command::Free { release: Some(release) });
            }
        }
    }
}

/// Runs a user callback: marked as inside one (see IN_CALLBACK), and a
/// panicking Rust handler does not take the loop's thread with it.
fn call_back(callback: impl FnOnce()) {
    let outer = IN_CALLBACK.with(|c| c.replace(true));
    let _ = catch_unwind(AssertUnwindSafe(callback));
    IN_CALLBACK.with(|c| c.set(outer));
}

/// A hook that lets a test hold `ws_free` at a point where a race would
/// otherwise last microseconds (the `testing` feature only).
#[cfg(feature = "testing")]
pub mod testing {
    use crate::runtime::TestHook;

    static FREE_POSTING: TestHook = TestHook::new();

    /// `ws_free`, inside a callback, is about to post a handle's memory to
    /// its loop because a callback of that handle was running.
    pub fn on_free_posting(f: Option<Box<dyn Fn() + Send>>) {
        FREE_POSTING.set(f);
    }

    pub(crate) fn free_posting() {
        FREE_POSTING.call();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No loop: commands are dropped, and no thread runs one.
    struct Unlinked;

    impl LoopLink for Unlinked {
        fn post(&self, _: Command) {}
        fn post_owning(&self, _: Command) {}
        fn on_loop_thread(&self) -> bool {
            false
        }
    }

    #[test]
    fn transitions_report_the_sends_accepted_before_them() {
        let shared = Shared::new(CString::default(), 0, None, Box::new(Unlinked));
        assert!(shared.transition(Some(ReadyState::Connecting), ReadyState::Open));
        for _ in 0..3 {
            shared.send(&[0], false).unwrap();
        }
        assert_eq!(shared.transition_counting(Some(ReadyState::Open), ReadyState::Closing), Some(3));
        assert_eq!(shared.transition_counting(Some(ReadyState::Open), ReadyState::Closing), None, "not OPEN any more");
        shared.send(&[0], false).unwrap();
        assert_eq!(shared.buffered_amount(), 4, "counted, as browsers do");
        assert_eq!(shared.accepted.load(Ordering::SeqCst), 3, "but not queued");
    }
}
