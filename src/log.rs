//! The process-wide log sink (`ws_set_log`): one C function, a level, and
//! the `log!` macro that formats a line only when the sink takes its level.
//! Off, a log point costs one relaxed atomic load.

use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

pub(crate) const ERROR: i32 = 0;
pub(crate) const WARNING: i32 = 1;
pub(crate) const INFO: i32 = 2;
pub(crate) const DEBUG: i32 = 3;

/// The C function that takes the lines.
pub(crate) type LogFn = unsafe extern "C" fn(user_data: *mut c_void, level: c_int, message: *const c_char);

struct Sink {
    f: LogFn,
    user_data: usize,
}

/// The highest level the sink takes; -1: no sink.
static MAX_LEVEL: AtomicI32 = AtomicI32::new(-1);
/// Read-locked while the sink runs, so that once `set` returns the old
/// function is never called again (its `user_data` may go).
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// This thread runs the sink now: a `set` from inside it would wait on
    /// itself.
    static IN_SINK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn enabled(level: i32) -> bool {
    level <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Replaces the sink (None: off) and waits for calls of the old one to
/// return. Inside the sink itself it does nothing, and says so (false).
pub fn set(f: Option<LogFn>, user_data: *mut c_void, max_level: i32) -> bool {
    if IN_SINK.with(|c| c.get()) {
        return false;
    }
    let mut sink = SINK.write().unwrap_or_else(|e| e.into_inner());
    match f {
        Some(f) if max_level >= 0 => {
            *sink = Some(Sink { f, user_data: user_data as usize });
            MAX_LEVEL.store(max_level.min(DEBUG), Ordering::SeqCst);
        }
        _ => {
            MAX_LEVEL.store(-1, Ordering::SeqCst);
            *sink = None;
        }
    }
    true
}

/// Formats and hands one line to the sink (use `log!`, which checks the
/// level first).
pub fn emit(level: i32, args: fmt::Arguments<'_>) {
    // A line made while this thread runs the sink (a sink that runs a loop,
    // say) is dropped: a second read lock could wait behind a writer.
    if IN_SINK.with(|c| c.get()) {
        return;
    }
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    let Some(sink) = sink.as_ref() else { return };
    if !enabled(level) {
        return;
    }
    let line = fmt::format(args);
    let line = CString::new(line).unwrap_or_else(|e| {
        let end = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(end);
        CString::new(bytes).unwrap_or_default()
    });
    IN_SINK.with(|c| c.set(true));
    // A panic cannot come from C; the flag is reset either way.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: a function and user_data the caller gave ws_set_log for
        // this, with a live C string for the call's duration.
        unsafe { (sink.f)(sink.user_data as *mut c_void, level, line.as_ptr()) }
    });
    IN_SINK.with(|c| c.set(false));
}

/// `log!(level, "format", args...)`: formats only when the sink takes `level`.
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::emit($level, format_args!($($arg)*));
        }
    };
}
pub(crate) use log;
