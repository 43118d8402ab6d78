//! The wake-up of a loop: an eventfd in its epoll set, edge-triggered,
//! written at most once between two wake-ups and never read (every write
//! is a new edge, so the loop pays one system call per wake-up, not two).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Wakes a loop out of `epoll_wait(2)`.
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
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n < 0 {
            // A counter at its maximum (after 2^64 - 2 wake-ups, never in
            // practice) refuses the write: empty it, and the write is an edge.
            let mut counter: u64 = 0;
            // SAFETY: reads and writes 8 bytes of live u64s on our own eventfd.
            unsafe {
                libc::read(self.fd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8);
                libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// Called by the loop when epoll reports a wake-up, before it drains
    /// the command channel. The swap acquires what a wake() that saw the
    /// flag set had queued; a wake() after it writes a new edge.
    pub fn reset(&self) {
        self.pending.swap(false, Ordering::SeqCst);
    }

    /// How the fd is watched in an epoll set: each write is one event.
    pub(crate) const EPOLL_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A producer pushes and wakes, a consumer waits in epoll, resets and
    /// drains, as the loop's thread does. A lost wake-up leaves the consumer asleep with
    /// items queued: the poll times out and the test fails.
    #[test]
    #[cfg_attr(miri, ignore = "poll(2) is not in miri, and 200 000 wake-ups would take hours")]
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
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut event = libc::epoll_event { events: Waker::EPOLL_EVENTS, u64: 1 };
        // SAFETY: a live epoll fd, our eventfd and a live event.
        assert_eq!(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, waker.fd(), &mut event) }, 0);
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received < N {
            let mut out = [libc::epoll_event { events: 0, u64: 0 }];
            // SAFETY: one live epoll_event.
            let rc = unsafe { libc::epoll_wait(epoll, out.as_mut_ptr(), 1, 5000) };
            assert!(rc > 0, "lost wake-up: {received} of {N} received, {} queued", rx.len());
            waker.reset();
            while rx.try_recv().is_ok() {
                received += 1;
            }
            assert!(Instant::now() < deadline);
        }
        // SAFETY: our own epoll fd, closed once.
        unsafe { libc::close(epoll) };
        producer.join().unwrap();
    }
}
