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

/// Gives the kernel back the pages of this thread's stack below the
/// caller's frame: deeper calls (a handshake) touched them and returned,
/// and they would stay resident for as long as the thread waits. glibc
/// does the same with a thread's stack when the thread ends. The pages
/// come back zeroed when the stack grows into them again. For library
/// threads only: an application's stack is not ours to touch.
#[inline(never)]
pub fn release_unused_stack() {
    #[cfg(not(miri))]
    {
        let Some((low, high)) = stack_bounds() else { return };
        // The real stack pointer: the address of a local would not do, as
        // ASan may keep locals on a "fake stack" elsewhere.
        let Some(sp) = stack_pointer() else { return };
        if !(low < sp && sp <= high) {
            return;
        }
        // SAFETY: sysconf takes no pointers.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        // Everything more than a little below the stack pointer is dead
        // stack; madvise's stub (a syscall) needs no more than the margin.
        const MARGIN: usize = 512;
        let end = sp.saturating_sub(MARGIN) & !(page - 1);
        let low = low.next_multiple_of(page);
        if end > low {
            // SAFETY: [low, end) lies inside this thread's stack, below
            // the stack pointer and so below every live frame; signals
            // are blocked on library threads (`spawn_quiet`); MADV_DONTNEED
            // on private anonymous memory only replaces its pages with
            // zeroed ones.
            unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
        }
    }
}

/// The stack pointer of the caller's frame (None where not known).
#[cfg(not(miri))]
#[inline(always)]
fn stack_pointer() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register; touches no memory.
        unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        Some(sp)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        // SAFETY: reads a register; touches no memory.
        unsafe { std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        Some(sp)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// This thread's stack: its lowest usable address and its top, asked once.
#[cfg(not(miri))]
fn stack_bounds() -> Option<(usize, usize)> {
    thread_local! {
        static BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }
    let known = BOUNDS.with(Cell::get);
    if known.0 != 0 {
        return Some(known);
    }
    // SAFETY: attr is filled by pthread_getattr_np and destroyed after
    // one read; pthread_attr_getstack writes the two outputs.
    let bounds = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 || addr.is_null() {
            return None;
        }
        (addr as usize, (addr as usize).checked_add(size)?)
    };
    BOUNDS.with(|c| c.set(bounds));
    Some(bounds)
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

    /// Pages of `len` bytes from `addr` that are resident (mincore).
    #[cfg(not(miri))]
    fn resident_pages(addr: usize, len: usize) -> usize {
        let page = 4096;
        let mut vec = vec![0u8; len / page];
        // SAFETY: [addr, addr + len) is page-aligned and mapped (this
        // thread's stack); `vec` has one byte per page.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|v| *v & 1 != 0).count()
    }

    /// Touches `depth` KiB of stack below the caller.
    #[cfg(not(miri))]
    #[inline(never)]
    fn go_deep(depth: usize) -> u8 {
        let mut frame = [0u8; 1024];
        frame[depth % 1024] = depth as u8;
        let below = if depth > 1 { go_deep(depth - 1) } else { 0 };
        std::hint::black_box(&mut frame)[0].wrapping_add(below)
    }

    #[cfg(not(miri))]
    #[test]
    fn the_stack_below_the_caller_is_given_back_and_usable_again() {
        std::thread::spawn(|| {
            let (low, high) = super::stack_bounds().expect("the thread's stack");
            let here = super::stack_pointer().expect("a stack pointer");
            assert!(low < here && here <= high);
            // The 128 KiB just below the caller's frame, whole pages.
            let top = (here - 8 * 1024) & !4095;
            let span = 128 * 1024;
            std::hint::black_box(go_deep(200));
            let before = resident_pages(top - span, span);
            // 200 KiB of frames leave 32 pages resident here; under ASan's
            // use-after-return check their arrays live on a fake stack
            // elsewhere, and only the frames' own pages remain (10).
            assert!(before > 0, "a deep call left no page resident");
            super::release_unused_stack();
            let after = resident_pages(top - span, span);
            assert_eq!(after, 0, "pages left resident below the caller: {after} of {before}");
            // The stack grows into zeroed pages again, and works.
            assert_eq!(go_deep(200), go_deep(200));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn tags_differ_between_threads_and_stay_put() {
        let here = current_thread_tag();
        assert_ne!(here, 0);
        assert_eq!(current_thread_tag(), here);
        let there = std::thread::spawn(current_thread_tag).join().unwrap();
        assert_ne!(there, here);
    }
}
