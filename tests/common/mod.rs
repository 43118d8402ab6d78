//! What every test binary shares: the bound on each wait (`WAIT`) and
//! `serial`. The rest of the test support is in tests/support/, one module
//! per concern; a binary compiles only the modules it names, each at its
//! top level:
//!
//! ```text
//! #[path = "support/handles/mod.rs"]
//! mod handles;
//! ```
//!
//! - `handles`: libws handles with recorded callbacks (`Client`), and the
//!   three ways to run them (`every_mode!`);
//! - `frames`: the raw protocol as a server speaks it (handshake, frames);
//! - `servers`: servers on 127.0.0.1, well-behaved and raw (`frames`);
//! - `paths`: where the build put things, scratch folders, commands;
//! - `peers`: real peers in other processes, and counted skips (`paths`);
//! - `cbuild`: compiling C and C++ programs against libws (`paths`);
//! - `pmd`: the server's side of permessage-deflate (`frames`, `servers`);
//! - `proxy`: the fault-injecting TCP proxy;
//! - `fault`: connections through that proxy to a real server and the
//!   invariants each must keep (`handles`, `proxy`, `peers`, `paths`).
//!
//! Each takes what it needs from the others (in parentheses) as
//! `crate::<module>`, so a binary that leaves one out does not build.

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
// Only the binaries with such tests take it.
#[allow(dead_code)]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
