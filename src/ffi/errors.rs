//! Result codes, the last error of a failed constructor, and the version.

use super::{boundary, boundary_or};
use crate::error::{self, Error};
pub use crate::error::{
    WS_ERR_BUFFER_FULL, WS_ERR_INTERNAL, WS_ERR_INVALID_ACCESS, WS_ERR_INVALID_ARGUMENT, WS_ERR_INVALID_STATE,
    WS_ERR_RESOURCE, WS_ERR_SYNTAX, WS_OK,
};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};

thread_local! {
    static LAST_ERROR: RefCell<(c_int, CString)> = RefCell::new((WS_OK, CString::default()));
}

/// What `ws_last_error` says while this thread's last error cannot be kept
/// or read: the thread is exiting and its thread-local storage is gone (a
/// pthread key destructor, say). `ws_last_error_code` is `WS_ERR_INTERNAL`.
const LAST_ERROR_GONE: &CStr = c"the last error is not available while this thread exits";

/// Records `e` for this thread. While the thread exits and the store is
/// gone, nothing is kept: the getters then say so.
pub(crate) fn set_last_error(e: &Error) {
    let text = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = (e.code(), text);
        }
    });
}

/// The result code of the last `ws_new*` that returned NULL on this thread;
/// `WS_OK` if none has. A `ws_options_*` setter that refuses a value sets it
/// too. While the calling thread exits (in a pthread key destructor, after
/// its thread-local storage is gone) no error can be kept: then
/// `WS_ERR_INTERNAL`.
#[no_mangle]
pub extern "C" fn ws_last_error_code() -> c_int {
    boundary(|| LAST_ERROR.try_with(|l| l.try_borrow().map_or(WS_ERR_INTERNAL, |l| l.0)).unwrap_or(WS_ERR_INTERNAL))
}

/// The message of the last `ws_new*` that returned NULL on this thread (or
/// `ws_options_*` setter that refused a value, e.g. "cannot read CA file
/// /x.pem: No such file or directory"); "" if none has. Never NULL. Owned
/// by libws: valid until the next such failure on this thread, or the
/// thread's exit. While the calling thread exits (in a pthread key
/// destructor, after its thread-local storage is gone) no error can be kept:
/// then the static text "the last error is not available while this thread
/// exits".
#[no_mangle]
pub extern "C" fn ws_last_error() -> *const c_char {
    boundary_or(LAST_ERROR_GONE.as_ptr(), || {
        LAST_ERROR
            .try_with(|l| l.try_borrow().map_or(LAST_ERROR_GONE.as_ptr(), |l| l.1.as_ptr()))
            .unwrap_or(LAST_ERROR_GONE.as_ptr())
    })
}

/// Static text for a `WS_*` result code; never NULL, never to be freed.
#[no_mangle]
pub extern "C" fn ws_strerror(code: c_int) -> *const c_char {
    boundary_or(c"unknown result code".as_ptr(), || error::strerror(code).as_ptr().cast())
}

/// The library version, "MAJOR.MINOR.PATCH". Static.
#[no_mangle]
pub extern "C" fn ws_version() -> *const c_char {
    boundary(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}
