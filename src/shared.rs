//! State shared between a handle (any thread) and its I/O thread.

use crate::error::{Error, ErrorKind};
use std::cell::Cell;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::ThreadId;

thread_local! {
    /// True while this thread runs a libws callback (of any handle). Such a
    /// thread never waits for another handle's callback: two handles whose
    /// callbacks close or free each other would wait on each other forever.
    /// A const Cell has no destructor, so it stays usable during teardown.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

pub(crate) const CONNECTING: u8 = 0;
pub(crate) const OPEN: u8 = 1;
pub(crate) const CLOSING: u8 = 2;
pub(crate) const CLOSED: u8 = 3;

/// Work for the I/O thread, in the order the API calls returned.
pub enum Command {
    /// A data frame's payload with `HEADROOM` free bytes in front, so that
    /// the I/O thread writes the header and masks in place: no second copy.
    Send { buf: Vec<u8>, text: bool },
    /// `code` 0 means a close frame with no body.
    Close { code: u16, reason: String },
    /// The handle was freed: close with 1001 if open, then end. `release`
    /// is the handle's memory when a callback of it was running as it was
    /// freed: the I/O thread drops it once that callback has returned.
    Free { release: Option<Box<dyn Send>> },
}

/// The longest frame header a client writes (2 + 8 length + 4 mask).
pub(crate) const HEADROOM: usize = 14;

/// Wakes the I/O thread out of `poll(2)`: an eventfd, written at most once
/// between two wake-ups.
pub struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd, pending: AtomicBool::new(false) })
    }

    pub fn wake(&self) {
        if self.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full
        // counter (EAGAIN) still leaves the fd readable, which is all we need.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Called by the I/O thread when poll reports the fd readable, before it
    /// drains the command channel.
    ///
    /// The counter is read first and the flag cleared after: cleared first,
    /// a wake() in between would write the eventfd, the read would consume
    /// that write too, and the flag would stay set with the fd empty, so no
    /// later wake() would write again (a lost wake-up). The swap also
    /// acquires what a wake() that saw the flag set had queued.
    pub fn reset(&self) {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
        self.pending.swap(false, Ordering::SeqCst);
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

pub struct Shared {
    state: AtomicU8,
    /// Held shared by `send` across its state check and enqueue, and
    /// exclusively by every change away from OPEN, so that no message that
    /// `send` accepted while OPEN lands behind the close frame.
    state_gate: RwLock<()>,
    pub buffered: AtomicU64,
    pub max_buffered: u64,
    pub url: CString,
    pub protocol: OnceLock<CString>,
    pub extensions: OnceLock<CString>,
    freed: AtomicBool,
    /// Held by the I/O thread while a callback runs (and by `ws_new` until
    /// it has returned the handle); taken by state changes from other
    /// threads, so that a callback's check of the state and its start are
    /// one step with respect to them.
    dispatch: Mutex<()>,
    pub io_thread: OnceLock<ThreadId>,
    pub waker: std::sync::Arc<Waker>,
    pub commands: crossbeam_channel::Sender<Command>,
    /// Written send buffers, for the next sends to reuse: the sending
    /// thread allocates and the I/O thread frees, a pattern that makes
    /// malloc return and re-fault pages on every burst.
    spare_buffers: (crossbeam_channel::Sender<Vec<u8>>, crossbeam_channel::Receiver<Vec<u8>>),
}

/// At most this many spare buffers of at most this size are kept per
/// connection (512 KiB at the most).
const SPARE_BUFFERS: usize = 8;
const SPARE_BUFFER_MAX: usize = 64 * 1024;

impl Shared {
    pub fn new(
        url: CString,
        max_buffered: u64,
        waker: std::sync::Arc<Waker>,
        commands: crossbeam_channel::Sender<Command>,
    ) -> Shared {
        Shared {
            state: AtomicU8::new(CONNECTING),
            state_gate: RwLock::new(()),
            buffered: AtomicU64::new(0),
            max_buffered,
            url,
            protocol: OnceLock::new(),
            extensions: OnceLock::new(),
            freed: AtomicBool::new(false),
            dispatch: Mutex::new(()),
            io_thread: OnceLock::new(),
            waker,
            commands,
            spare_buffers: crossbeam_channel::bounded(SPARE_BUFFERS),
        }
    }

    /// An empty buffer with room for `len` bytes, reused when one is spare.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        match self.spare_buffers.1.try_recv() {
            Ok(mut buf) if buf.capacity() >= len => {
                buf.clear();
                buf
            }
            _ => Vec::with_capacity(len),
        }
    }

    /// Keeps a written send buffer for reuse, if it is small enough and
    /// there is room.
    pub fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() <= SPARE_BUFFER_MAX + HEADROOM {
            let _ = self.spare_buffers.0.try_send(buf);
        }
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    pub fn is_freed(&self) -> bool {
        self.freed.load(Ordering::SeqCst)
    }

    /// Runs `callback` on the I/O thread unless the handle is freed or
    /// `may_run` refuses the current state. The check and the callback run
    /// under the dispatch lock, which `close` and `free` from other threads
    /// take: once they return, no callback that the change forbids starts.
    pub fn run_callback(&self, may_run: impl FnOnce(u8) -> bool, callback: impl FnOnce()) {
        if self.is_freed() {
            return;
        }
        let _dispatch = self.lock_dispatch();
        if self.is_freed() || !may_run(self.state()) {
            return;
        }
        let outer = IN_CALLBACK.with(|c| c.replace(true));
        // A panicking Rust handler must not take the I/O thread with it.
        let _ = catch_unwind(AssertUnwindSafe(callback));
        IN_CALLBACK.with(|c| c.set(outer));
    }

    /// The open transition and `on_open` as one step: a `close` from
    /// another thread comes wholly before (the connection fails) or after
    /// `on_open` has returned. False when the state was no longer CONNECTING.
    pub fn open(&self, on_open: impl FnOnce()) -> bool {
        let _dispatch = self.lock_dispatch();
        if !self.transition(Some(CONNECTING), OPEN) {
            return false;
        }
        if !self.is_freed() {
            let outer = IN_CALLBACK.with(|c| c.replace(true));
            let _ = catch_unwind(AssertUnwindSafe(on_open));
            IN_CALLBACK.with(|c| c.set(outer));
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

    /// For a state change from outside the I/O thread: the dispatch lock,
    /// waiting for a callback of this handle that runs now. Inside any
    /// libws callback it never waits (None when the lock is taken), and on
    /// the I/O thread itself there is nothing to wait for (None).
    fn exclude_callbacks(&self) -> Option<MutexGuard<'_, ()>> {
        if self.on_io_thread() {
            return None;
        }
        if IN_CALLBACK.with(|c| c.get()) {
            return self.dispatch.try_lock().ok();
        }
        Some(self.lock_dispatch())
    }

    pub fn on_io_thread(&self) -> bool {
        self.io_thread.get() == Some(&std::thread::current().id())
    }

    /// Sets the state; with `from`, only when the state is `from` now.
    /// Returns whether it changed.
    pub fn transition(&self, from: Option<u8>, to: u8) -> bool {
        let _gate = self.state_gate.write().unwrap_or_else(|e| e.into_inner());
        let now = self.state.load(Ordering::SeqCst);
        if from.is_some_and(|f| f != now) || now == to {
            return false;
        }
        self.state.store(to, Ordering::SeqCst);
        true
    }

    fn enqueue(&self, cmd: Command) {
        // The receiver lives as long as the I/O thread; once it has ended
        // the connection is CLOSED and what is sent is discarded anyway.
        let _ = self.commands.send(cmd);
        if !self.on_io_thread() {
            self.waker.wake();
        }
    }

    /// The browser's send(): `payload` already holds HEADROOM + data.
    pub fn send(&self, payload: Vec<u8>, text: bool) -> Result<(), Error> {
        let len = (payload.len() - HEADROOM) as u64;
        let _gate = self.state_gate.read().unwrap_or_else(|e| e.into_inner());
        match self.state.load(Ordering::SeqCst) {
            CONNECTING => Err(Error::new(ErrorKind::InvalidState, "send() while the connection is CONNECTING")),
            OPEN => {
                self.reserve_buffered(len)?;
                self.enqueue(Command::Send { buf: payload, text });
                Ok(())
            }
            // CLOSING or CLOSED: count the bytes, drop the data (WHATWG send() step 3).
            _ => {
                self.buffered.fetch_add(len, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    fn reserve_buffered(&self, len: u64) -> Result<(), Error> {
        let limit = self.max_buffered;
        let update = |cur: u64| {
            let next = cur.checked_add(len)?;
            (limit == 0 || next <= limit).then_some(next)
        };
        self.buffered.fetch_update(Ordering::SeqCst, Ordering::SeqCst, update).map(|_| ()).map_err(|cur| {
            Error::new(
                ErrorKind::BufferFull,
                format!("{len} bytes more would exceed the max buffered amount {limit} (now {cur})"),
            )
        })
    }

    /// The browser's close(), after its argument checks. From a thread that
    /// is not in a libws callback it waits for a callback of this handle
    /// running now, so that none starts or runs on after the change.
    pub fn close(&self, code: u16, reason: String) {
        let _callbacks = self.exclude_callbacks();
        let _gate = self.state_gate.write().unwrap_or_else(|e| e.into_inner());
        match self.state.load(Ordering::SeqCst) {
            CONNECTING | OPEN => {
                self.state.store(CLOSING, Ordering::SeqCst);
                self.enqueue(Command::Close { code, reason });
            }
            _ => {}
        }
    }

    /// Stops every callback and lets the I/O thread close with 1001 in the
    /// background. `release` drops the handle's memory: here, once no
    /// callback of the handle runs (waiting for one running on another
    /// thread), or on the I/O thread after the running callback returns
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
        // If the I/O thread has ended, the command comes back and drops
        // here: no callback can be running then.
        self.enqueue(Command::Free { release });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn written_buffers_are_reused_within_bounds() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let shared = Shared::new(CString::default(), 0, std::sync::Arc::new(Waker::new().unwrap()), tx);
        let buf = Vec::<u8>::with_capacity(1000);
        let ptr = buf.as_ptr();
        shared.recycle(buf);
        let again = shared.buffer(800);
        assert_eq!(again.as_ptr(), ptr, "a spare buffer that fits is reused");
        assert!(again.is_empty());
        shared.recycle(Vec::with_capacity(SPARE_BUFFER_MAX + HEADROOM + 1));
        assert_eq!(shared.buffer(10).capacity(), 10, "an oversized buffer is not kept");
        for _ in 0..SPARE_BUFFERS + 5 {
            shared.recycle(Vec::with_capacity(64));
        }
        assert_eq!(shared.spare_buffers.1.len(), SPARE_BUFFERS);
    }

    /// A producer pushes and wakes, a consumer polls, resets and drains, as
    /// the I/O thread does. A lost wake-up leaves the consumer asleep with
    /// items queued: the poll times out and the test fails.
    #[test]
    fn no_wake_up_is_lost() {
        const N: u32 = 200_000;
        let waker = std::sync::Arc::new(Waker::new().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = waker.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(i).unwrap();
                w.wake();
            }
        });
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received < N {
            let mut fds = [libc::pollfd { fd: waker.fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 5000) };
            assert!(rc > 0, "lost wake-up: {received} of {N} received, {} queued", rx.len());
            waker.reset();
            while rx.try_recv().is_ok() {
                received += 1;
            }
            assert!(Instant::now() < deadline);
        }
        producer.join().unwrap();
    }
}
