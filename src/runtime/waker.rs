//! The wake-up of a loop: an eventfd in its epoll set, written at most
//! once between two wake-ups.

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
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full
        // counter (EAGAIN) still leaves the fd readable, which is all we need.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Called by the loop when epoll reports the fd readable, before it
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A producer pushes and wakes, a consumer polls, resets and drains, as
    /// the loop's thread does. A lost wake-up leaves the consumer asleep with
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
