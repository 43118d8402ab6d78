//! Hooks for the tests, built only with the `testing` feature (the test
//! suite turns it on through its dev-dependency on this crate): never in
//! the shipped library.

use super::ws_options;
pub use crate::conn::shared::testing::on_free_posting;
pub use crate::runtime::event_loop::testing::{on_loop_thread_exiting, park_private_loops, parked_loops};
pub use crate::runtime::resolver::testing::{lookup_threads, set_resolver, MAX_LOOKUP_THREADS};
pub use crate::runtime::threads::testing::refuse_threads;
pub use crate::transport::tls::testing::last_tls_context_built_on;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static NEW_RETURN_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// The next `ws_new*` waits this long after starting its connection
/// and before returning, so that a test can see whether a callback
/// runs before the handle is returned.
pub fn delay_next_new_return(d: Duration) {
    NEW_RETURN_DELAY_US.store(d.as_micros() as u64, Ordering::SeqCst);
}

pub(super) fn new_return_delay() {
    let us = NEW_RETURN_DELAY_US.swap(0, Ordering::SeqCst);
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

/// Sets SO_SNDBUF of the connections made with `o`, to force partial
/// writes.
///
/// # Safety
/// `o` is a live `ws_options`.
pub unsafe fn set_send_buffer_size(o: *mut ws_options, bytes: u32) {
    // SAFETY: the caller's promise.
    if let Some(o) = unsafe { o.as_mut() } {
        o.options.send_buffer_size = Some(bytes);
    }
}
