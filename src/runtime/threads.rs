//! The library's own threads: spawned with the host program's signals
//! blocked, and tagged so that a loop knows whether it is on its thread.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// This thread's tag (0 until first asked). A const Cell has no
    /// destructor, so it stays usable during thread teardown.
    static TAG: Cell<u64> = const { Cell::new(0) };
}

/// A number unique to the calling thread, never 0.
pub fn current_thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    TAG.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// Spawns a library thread with every asynchronous signal blocked, so that
/// the host program's signals (SIGINT, SIGTERM, ...) go to its own threads,
/// and a SIGPIPE from a write can never end it. The new thread inherits the
/// mask; the caller's is restored at once.
pub fn spawn_quiet(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    #[cfg(feature = "testing")]
    if testing::REFUSE.load(Ordering::SeqCst) {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask
    // changes only this thread's mask, restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Faults stay deliverable: blocking them would hide a crash.
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut all, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned.map(|_| ())
    }
}

/// Lets a test refuse every new library thread, as a thread or memory
/// limit would, without making the whole process short of memory (the
/// `testing` feature only).
#[cfg(feature = "testing")]
pub mod testing {
    use std::sync::atomic::AtomicBool;

    pub(super) static REFUSE: AtomicBool = AtomicBool::new(false);

    /// From now on (`true`) spawning a library thread fails with EAGAIN,
    /// as pthread_create does when the system refuses a thread.
    pub fn refuse_threads(refuse: bool) {
        REFUSE.store(refuse, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::current_thread_tag;

    #[test]
    fn tags_differ_between_threads_and_stay_put() {
        let here = current_thread_tag();
        assert_ne!(here, 0);
        assert_eq!(current_thread_tag(), here);
        let there = std::thread::spawn(current_thread_tag).join().unwrap();
        assert_ne!(there, here);
    }
}
