//! Test support, one module per concern: the event recorder, the handle
//! wrapper, servers, raw frames, real peers, the C compiler driver, and
//! the three ways a connection can be run (`mode`). Every wait is bounded.
#![allow(dead_code)]
#![allow(unused_imports)]
#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

pub mod cbuild;
pub mod client;
pub mod fault;
pub mod frames;
pub mod mode;
pub mod paths;
pub mod peers;
pub mod pmd;
pub mod proxy;
pub mod recorder;
pub mod servers;

pub use cbuild::*;
pub use client::*;
pub use frames::*;
pub use mode::*;
pub use paths::*;
pub use peers::*;
pub use recorder::*;
pub use servers::*;

use std::time::Duration;

/// The bound on one wait for something that must happen: 10 s, times
/// LIBWS_TEST_TIME_SCALE (a whole number, read when the tests are built)
/// for slow builds: scripts/sanitize.sh sets it. It decides only how long a
/// failing test takes to fail.
pub const WAIT: Duration = Duration::from_secs(10 * time_scale());

const fn time_scale() -> u64 {
    let Some(s) = option_env!("LIBWS_TEST_TIME_SCALE") else { return 1 };
    let s = s.as_bytes();
    let (mut n, mut i) = (0u64, 0);
    while i < s.len() {
        assert!(s[i].is_ascii_digit(), "LIBWS_TEST_TIME_SCALE: a whole number, 1 to 1000");
        n = n * 10 + (s[i] - b'0') as u64;
        assert!(n <= 1000, "LIBWS_TEST_TIME_SCALE: a whole number, 1 to 1000");
        i += 1;
    }
    assert!(n >= 1, "LIBWS_TEST_TIME_SCALE: a whole number, 1 to 1000");
    n
}

/// One test of the binary at a time, for tests that count threads and fds
/// or rely on timing; a failed test does not block the rest.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
