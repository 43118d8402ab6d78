//! Event loops: `ws_loop`, run by a library thread or by the application.

use super::errors::set_last_error;
use super::{boundary, boundary_or, try_box, try_ref};
use crate::conn::connection::ConnLoop;
use crate::error::{Error, WS_ERR_INTERNAL, WS_ERR_INVALID_ARGUMENT, WS_ERR_INVALID_STATE, WS_OK};
use crate::runtime::event_loop::{Loop, RunError};
use std::ffi::c_int;

/// An event loop that runs many connections on one thread. Opaque.
///
/// Created by `ws_loop_new`; the caller owns it and releases it with
/// `ws_loop_free`. Connections are put on it with `ws_options_set_loop`.
/// A handle created without a loop gets a private one on a library thread
/// of its own (the default). One loop is run by one thread at a time:
/// either a library thread (`ws_loop_start`) or the application, turn by
/// turn (`ws_loop_run`), which may then watch `ws_loop_fd` in its own
/// epoll, poll, libuv or asyncio loop. All callbacks of the loop's
/// connections run on that thread, one at a time.
///
/// Each connection on the loop keeps it alive: `ws_loop_free` never leaves
/// a connection without its loop (see there). Every `ws_loop_*` function
/// may be called from any thread.
pub struct ws_loop {
    pub(super) inner: std::sync::Arc<ConnLoop>,
}

/// A new event loop, not yet run by anyone: call `ws_loop_start` or run it
/// with `ws_loop_run`. The caller owns it and releases it with
/// `ws_loop_free`. NULL when the system refuses an epoll instance or an
/// eventfd, or memory for the handle runs out; then `ws_last_error_code()`
/// (`WS_ERR_RESOURCE`) and `ws_last_error()` say why.
#[no_mangle]
pub extern "C" fn ws_loop_new() -> *mut ws_loop {
    boundary(|| match Loop::new(false) {
        Ok(inner) => {
            let lp = try_box(ws_loop { inner });
            if lp.is_null() {
                set_last_error(&Error::new(crate::error::ErrorKind::Resource, "out of memory: cannot allocate a loop"));
            }
            lp
        }
        Err(e) => {
            set_last_error(&Error::os("cannot create an event loop", &e));
            std::ptr::null_mut()
        }
    })
}

/// Runs the loop on a library thread from now on, until it is freed and its
/// last connection has ended. `WS_ERR_INVALID_STATE` if it was started
/// before; `WS_ERR_INVALID_ARGUMENT` for NULL. After it, `ws_loop_run` on
/// this loop returns `WS_ERR_INVALID_STATE`. If an application thread is
/// inside `ws_loop_run` at that moment, the library thread takes over when
/// that call returns.
///
/// # Safety
/// `loop` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_start(r#loop: *mut ws_loop) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let Some(lp) = (unsafe { try_ref(r#loop) }) else { return WS_ERR_INVALID_ARGUMENT };
        match lp.inner.start() {
            Ok(true) => WS_OK,
            Ok(false) => WS_ERR_INVALID_STATE,
            Err(e) => {
                let e = Error::os("cannot start the loop's thread", &e);
                set_last_error(&e);
                e.code()
            }
        }
    })
}

/// Runs one turn of the loop on the calling thread: commands from other
/// threads, ready I/O, due timers, and the callbacks they cause, all on this
/// thread. Waits up to `timeout_ms` for something to do first: 0 does not
/// wait, -1 waits until there is work (a socket event, a timer, or a call
/// from another thread). Returns the number of connections still on the
/// loop (0: none; a `-1` wait would then last until a new one is made), or:
/// - `WS_ERR_INVALID_STATE` when another thread is running the loop now,
///   when called from inside one of its callbacks (it is not re-entrant),
///   or when the loop was started (`ws_loop_start`) or freed;
/// - `WS_ERR_INVALID_ARGUMENT` for NULL or a timeout below -1.
///
/// Any thread may run the loop, one at a time. Sends and closes made inside
/// its callbacks take effect when the callback returns, without a wake-up;
/// made anywhere else (another thread, or this one between calls) they wake
/// the loop: `ws_loop_fd` becomes readable and `ws_loop_timeout_ms` returns
/// 0 until `ws_loop_run` has taken them.
///
/// # Safety
/// `loop` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_run(r#loop: *mut ws_loop, timeout_ms: c_int) -> c_int {
    boundary(|| {
        // SAFETY: the pointers are NULL or live, as `# Safety` above says.
        let Some(lp) = (unsafe { try_ref(r#loop) }) else { return WS_ERR_INVALID_ARGUMENT };
        let timeout = match timeout_ms {
            -1 => None,
            ms if ms >= 0 => Some(std::time::Duration::from_millis(ms as u64)),
            _ => return WS_ERR_INVALID_ARGUMENT,
        };
        // The turn holds its own reference: a callback in it may
        // ws_loop_free this very `ws_loop` (and another thread may, which
        // lets the turn finish first), so nothing may borrow from it.
        let inner = lp.inner.clone();
        match inner.run_once(timeout) {
            Ok(live) => live.min(c_int::MAX as usize) as c_int,
            Err(RunError::Busy | RunError::LibraryDriven) => WS_ERR_INVALID_STATE,
            Err(RunError::Os(e)) => {
                set_last_error(&Error::os("epoll_wait failed", &e));
                WS_ERR_INTERNAL
            }
        }
    })
}

/// A file descriptor that is readable whenever `ws_loop_run` has I/O to do
/// (the loop's epoll instance). Put it in the application's own event loop
/// with POLLIN / EPOLLIN and call `ws_loop_run(loop, 0)` when it is
/// readable, and also when `ws_loop_timeout_ms` has passed. Owned by the
/// loop: never close it, never read it. -1 for NULL.
///
/// # Safety
/// `loop` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_fd(r#loop: *const ws_loop) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary_or(-1, || unsafe { try_ref(r#loop) }.map_or(-1, |lp| lp.inner.fd()))
}

/// How long the application may wait on `ws_loop_fd` before it calls
/// `ws_loop_run` again: milliseconds until the loop's next timer (connect,
/// close or keepalive timeouts), 0 when work is waiting that the fd does
/// not show (a send made on the loop's thread, input TLS has buffered), or
/// -1 when no timer is set. Ask again after every `ws_loop_run`. -1 for
/// NULL, and while a library thread runs the loop.
///
/// # Safety
/// `loop` is NULL or a live `ws_loop`.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_timeout_ms(r#loop: *const ws_loop) -> c_int {
    // SAFETY: the pointers are NULL or live, as `# Safety` above says.
    boundary_or(-1, || match unsafe { try_ref(r#loop) }.and_then(|lp| lp.inner.timeout()) {
        // Rounded up, so that a wait does not end just before the timer.
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
        None => -1,
    })
}

/// Releases the caller's loop; NULL is ignored. Never waits on the network.
/// Connections still on the loop keep it alive and keep working: from now
/// on a library thread runs it (the one `ws_loop_start` made, or a new one
/// for a loop the application ran), and it ends when the last connection on
/// the loop has ended. Their callbacks then run on that thread. Options
/// set with `ws_options_set_loop` also keep the loop alive; handles created
/// with them later are run by that library thread too.
///
/// When no thread can be started at that moment (a thread or memory
/// limit), no connection is left without its loop: each one still on it
/// ends at once, without a closing handshake, on the calling thread before
/// `ws_loop_free` returns (called from inside one of the loop's callbacks:
/// on that thread, when the callback's turn ends). `on_error` says that no
/// thread could be started and why, then `on_close` 1006.
///
/// Called while an application thread is inside `ws_loop_run`, that call
/// finishes its turn first. The `ws_loop` must not be used after this.
///
/// # Safety
/// `loop` is NULL or a live `ws_loop`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn ws_loop_free(r#loop: *mut ws_loop) {
    boundary(|| {
        if !r#loop.is_null() {
            // SAFETY: from ws_loop_new, not used again (# Safety).
            let lp = unsafe { Box::from_raw(r#loop) };
            lp.inner.release();
        }
    })
}
