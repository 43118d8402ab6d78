//! The C boundary: converts and checks pointers, maps results, and never
//! lets a panic cross into C. Everything else lives in the safe core.
//!
//! One file per C type, in the order `include/ws.h` groups them: the
//! connection (`socket`), errors and version (`errors`), settings
//! (`options`), event loops (`event_loop`), what a connection reports
//! about itself (`diagnostics`). Every export runs its body in
//! `boundary`, which turns a panic (a bug) into the value its return type
//! gives for one (`PanicValue`): `WS_ERR_INTERNAL` for a result code, NULL
//! for a handle (with `ws_last_error` saying so), "" for a string, 0 for a
//! number. The few getters whose `ws.h` names another "no answer" value
//! (readyState 0, a loop fd of -1, a fixed text) use `boundary_or` with
//! it. Pointer arguments are checked with `try_ref` / `try_mut`.
//!
//! Every function here is described in `include/ws.h`, which cbindgen
//! generates from these doc comments.
#![allow(non_camel_case_types)]

mod socket;
mod errors;
mod options;
mod event_loop;
mod diagnostics;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use diagnostics::*;
pub use errors::*;
pub use event_loop::*;
pub use options::*;
pub use socket::*;

use crate::error::{Error, ErrorKind};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What an export returns when its body panics (a bug in libws), chosen by
/// its return type, so that no export spells out its own.
pub(crate) trait PanicValue {
    fn on_panic() -> Self;
}

impl PanicValue for c_int {
    fn on_panic() -> Self {
        crate::error::WS_ERR_INTERNAL
    }
}

impl PanicValue for u64 {
    fn on_panic() -> Self {
        0
    }
}

impl PanicValue for () {
    fn on_panic() -> Self {}
}

impl PanicValue for *const c_char {
    fn on_panic() -> Self {
        c"".as_ptr()
    }
}

/// A constructor that panicked returns NULL, and says why as a failed
/// constructor does.
impl<T> PanicValue for *mut T {
    fn on_panic() -> Self {
        errors::set_last_error(&Error::new(ErrorKind::Internal, "internal error (a panic) in libws"));
        std::ptr::null_mut()
    }
}

/// Runs an export's body; a panic becomes the return type's `PanicValue`
/// instead of unwinding into C.
pub(crate) fn boundary<R: PanicValue>(body: impl FnOnce() -> R) -> R {
    boundary_or_else(body, R::on_panic)
}

/// As `boundary`, for a getter whose `ws.h` promises one value whenever it
/// has no answer (readyState 0, a loop fd of -1, a fixed text): a panic
/// gives that value too, so that no caller meets one it was not told of.
pub(crate) fn boundary_or<R>(no_answer: R, body: impl FnOnce() -> R) -> R {
    boundary_or_else(body, || no_answer)
}

/// The one place where a panic is caught.
fn boundary_or_else<R>(body: impl FnOnce() -> R, on_panic: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| on_panic())
}

/// A result for C: `WS_OK` or the error's code.
fn result_code(r: Result<(), Error>) -> c_int {
    match r {
        Ok(()) => crate::error::WS_OK,
        Err(e) => e.code(),
    }
}

/// A handle argument: None for NULL (the caller answers
/// `WS_ERR_INVALID_ARGUMENT` or its getter's default).
///
/// # Safety
/// `p` is NULL or points to a live `T` for `'a`, not written meanwhile.
unsafe fn try_ref<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: the caller's promise.
    unsafe { p.as_ref() }
}

/// As `try_ref`, for a handle the call changes.
///
/// # Safety
/// `p` is NULL or points to a live `T` for `'a`, used by no one else meanwhile.
unsafe fn try_mut<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: the caller's promise.
    unsafe { p.as_mut() }
}

/// A C string argument as UTF-8; `None` if NULL or not UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string live for `'a`.
unsafe fn str_arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: not NULL, and the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// `len` bytes at `p`; `None` when `p` is NULL but `len` is not 0, or when
/// `len` is over `isize::MAX`: no object is that large (C's PTRDIFF_MAX),
/// so such a length (SIZE_MAX, a negative length cast) is refused before a
/// byte is read. A slice that long would be undefined behaviour in Rust.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
unsafe fn bytes_arg<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    match (p.is_null(), len) {
        (_, 0) => Some(&[]),
        (true, _) => None,
        (false, n) if n > isize::MAX as usize => None,
        // SAFETY: not NULL, a length an object can have, and the caller's promise.
        (false, _) => Some(unsafe { std::slice::from_raw_parts(p, len) }),
    }
}

/// `Box::into_raw(Box::new(value))`, or NULL when the allocation fails
/// (where `Box::new` would abort the process).
fn try_box<T>(value: T) -> *mut T {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Box::into_raw(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size; the pointer is checked and,
    // when not NULL, fits a T, so that `Box::from_raw` may free it later
    // (same allocator, same layout).
    unsafe {
        let p = std::alloc::alloc(layout).cast::<T>();
        if !p.is_null() {
            p.write(value);
        }
        p
    }
}

#[cfg(test)]
// The tests call the C API with pointers they made themselves.
#[allow(clippy::undocumented_unsafe_blocks)]
mod tests {
    use super::*;
    use std::ffi::{c_void, CString};

    #[test]
    fn ready_states_are_the_c_constants() {
        use crate::conn::shared::ReadyState;
        let pairs = [
            (ReadyState::Connecting, WS_CONNECTING),
            (ReadyState::Open, WS_OPEN),
            (ReadyState::Closing, WS_CLOSING),
            (ReadyState::Closed, WS_CLOSED),
        ];
        for (state, constant) in pairs {
            assert_eq!(c_int::from(state as u8), constant, "{state:?}");
        }
    }

    /// No buffer is longer than isize::MAX bytes, so such a length is a
    /// caller's mistake that must be refused before a byte is read (a
    /// slice that long is undefined behaviour in Rust itself; debug builds
    /// abort on it).
    #[test]
    fn impossible_lengths_are_refused_before_reading() {
        let small = [1u8, 2, 3];
        for len in [usize::MAX, isize::MAX as usize + 1] {
            assert!(unsafe { bytes_arg(small.as_ptr(), len) }.is_none(), "{len}");
        }
        assert_eq!(unsafe { bytes_arg(small.as_ptr(), 3) }, Some(&small[..]));
        let o = ws_options_new();
        assert_eq!(unsafe { ws_options_set_ca_pem(o, small.as_ptr().cast(), usize::MAX) }, WS_ERR_INVALID_ARGUMENT);
        // A protocol count no array can have: refused, not a panic.
        let protocols = [c"chat".as_ptr()];
        for n in [usize::MAX, usize::MAX / 2, isize::MAX as usize / 8 + 1] {
            let ws = unsafe { ws_new(c"ws://127.0.0.1:1/".as_ptr(), protocols.as_ptr(), n, std::ptr::null()) };
            assert!(ws.is_null());
            assert_eq!(ws_last_error_code(), WS_ERR_INVALID_ARGUMENT, "{n}");
        }
        unsafe { ws_options_free(o) };
    }

    /// ws_loop_free from inside a callback that the application's
    /// ws_loop_run is running: that turn must not use the freed `ws_loop`
    /// (it used the `Arc` inside it). The callback overwrites the freed
    /// memory, as the next small allocations of the program would.
    #[test]
    #[cfg_attr(miri, ignore = "TCP sockets: not in miri")]
    fn loop_freed_inside_a_callback_of_its_own_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LOOP: AtomicUsize = AtomicUsize::new(0);
        static CLOSED: AtomicUsize = AtomicUsize::new(0);
        // Kept to the end of the process, reachable (LeakSanitizer); boxed
        // one by one to fill small freed blocks.
        #[allow(clippy::vec_box)]
        static JUNK: std::sync::Mutex<Vec<Vec<Box<usize>>>> = std::sync::Mutex::new(Vec::new());
        unsafe extern "C" fn on_error(_: *mut c_void, _: *mut ws_socket, _: *const c_char) {
            // SAFETY: the loop from ws_loop_new below, freed once (swapped out).
            unsafe { ws_loop_free(LOOP.swap(0, Ordering::SeqCst) as *mut ws_loop) };
            // Reuse the freed allocation (same size class) with garbage.
            let junk: Vec<Box<usize>> = (0..64).map(|_| Box::new(0x0bad_0bad_0bad_0bad)).collect();
            if let Ok(mut kept) = JUNK.lock() {
                kept.push(junk);
            }
        }
        unsafe extern "C" fn on_close(_: *mut c_void, _: *mut ws_socket, _: u16, _: *const c_char, _: bool) {
            CLOSED.fetch_add(1, Ordering::SeqCst);
        }
        // A port nothing listens on: the connection fails in a loop turn.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = CString::new(format!("ws://127.0.0.1:{port}/")).unwrap();
        let callbacks = ws_callbacks {
            user_data: std::ptr::null_mut(),
            on_open: None,
            on_message: None,
            on_error: Some(on_error),
            on_close: Some(on_close),
        };
        let lp = ws_loop_new();
        LOOP.store(lp as usize, Ordering::SeqCst);
        unsafe {
            let o = ws_options_new();
            assert_eq!(ws_options_set_loop(o, lp), WS_OK);
            let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o);
            ws_options_free(o);
            assert!(!ws.is_null());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while LOOP.load(Ordering::SeqCst) != 0 {
                assert!(std::time::Instant::now() < deadline, "the connection never failed");
                assert!(ws_loop_run(lp, 10) >= 0);
            }
            // The loop was freed: a library thread finishes the connection.
            while CLOSED.load(Ordering::SeqCst) == 0 {
                assert!(std::time::Instant::now() < deadline, "no on_close");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            ws_free(ws);
        }
    }

    #[test]
    fn strerror_covers_every_code() {
        for code in [WS_OK, -1, -2, -3, WS_ERR_INVALID_ARGUMENT, -5, WS_ERR_INTERNAL, WS_ERR_RESOURCE, 42] {
            let s = unsafe { CStr::from_ptr(ws_strerror(code)) };
            assert!(!s.to_bytes().is_empty());
        }
    }
}
