//! The three ways a connection can be run, so that one test body checks
//! all of them: its own library thread (the default), a shared loop on a
//! library thread (`ws_loop_start`), and a shared loop that the
//! application runs from its own poll loop (`ws_loop_fd`,
//! `ws_loop_timeout_ms`, `ws_loop_run`). A test thread picks its mode with
//! `in_mode`; handles it creates through `Client` use that mode's loop.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use ws::ffi::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No loop set: each handle on a private loop with its own thread.
    OwnThread,
    /// One loop per test, run by a library thread.
    SharedLoop,
    /// One loop per test, run by an application thread that polls its fd.
    AppLoop,
}

/// The loop of the current test thread's mode, and what runs it.
struct ModeLoop {
    mode: Mode,
    lp: *mut ws_loop,
    driver: Option<AppDriver>,
    /// Freed when the test ends (not when `in_loop` lent it).
    owned: bool,
}

/// An application thread running a loop from its own poll(2) loop.
pub struct AppDriver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The driver thread's id, as `thread_tag` gives it.
    pub tag: Arc<AtomicU64>,
}

thread_local! {
    static MODE: RefCell<Option<ModeLoop>> = const { RefCell::new(None) };
    static TAG: u64 = next_tag();
}

fn next_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A number unique to the calling thread.
pub fn thread_tag() -> u64 {
    TAG.with(|t| *t)
}

/// Runs `lp` as an application would: poll its fd with its timeout, then
/// `ws_loop_run(lp, 0)`, until stopped. Each wait is capped at 50 ms so
/// that a stop is seen promptly.
pub fn drive(lp: *mut ws_loop) -> AppDriver {
    let stop = Arc::new(AtomicBool::new(false));
    let tag = Arc::new(AtomicU64::new(0));
    let (s, t) = (stop.clone(), tag.clone());
    let lp = lp as usize;
    let thread = std::thread::spawn(move || {
        let lp = lp as *mut ws_loop;
        t.store(thread_tag(), Ordering::SeqCst);
        while !s.load(Ordering::SeqCst) {
            unsafe {
                let timeout = ws_loop_timeout_ms(lp);
                let timeout = if (0..50).contains(&timeout) { timeout } else { 50 };
                let mut fds = [libc::pollfd { fd: ws_loop_fd(lp), events: libc::POLLIN, revents: 0 }];
                libc::poll(fds.as_mut_ptr(), 1, timeout);
                let r = ws_loop_run(lp, 0);
                assert!(r >= 0, "ws_loop_run failed: {r}");
            }
        }
    });
    AppDriver { stop, thread: Some(thread), tag }
}

impl AppDriver {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the application loop panicked");
        }
    }
}

impl Drop for AppDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ModeLoop {
    fn new(mode: Mode) -> ModeLoop {
        if mode == Mode::OwnThread {
            return ModeLoop { mode, lp: std::ptr::null_mut(), driver: None, owned: false };
        }
        let lp = ws_loop_new();
        assert!(!lp.is_null());
        let driver = match mode {
            Mode::SharedLoop => {
                assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
                None
            }
            _ => Some(drive(lp)),
        };
        ModeLoop { mode, lp, driver, owned: true }
    }
}

impl Drop for ModeLoop {
    fn drop(&mut self) {
        // The application stops running its loop first; ws_loop_free then
        // hands what is left to a library thread.
        if let Some(mut d) = self.driver.take() {
            d.stop();
        }
        if self.owned {
            unsafe { ws_loop_free(self.lp) };
        }
    }
}

/// Runs `test` with handles created on this thread in `mode`.
pub fn in_mode(mode: Mode, test: fn()) {
    MODE.with(|m| *m.borrow_mut() = Some(ModeLoop::new(mode)));
    let r = std::panic::catch_unwind(test);
    MODE.with(|m| m.borrow_mut().take());
    if let Err(panic) = r {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `f` with handles created on this thread put on `lp`, a loop the
/// caller owns and runs.
pub fn in_loop(lp: *mut ws_loop, f: impl FnOnce()) {
    let lent = ModeLoop { mode: Mode::SharedLoop, lp, driver: None, owned: false };
    MODE.with(|m| *m.borrow_mut() = Some(lent));
    f();
    MODE.with(|m| m.borrow_mut().take());
}

/// The loop handles of this thread go on (NULL: their own thread each).
pub fn current_loop() -> *mut ws_loop {
    MODE.with(|m| m.borrow().as_ref().map_or(std::ptr::null_mut(), |m| m.lp))
}

pub fn current_mode() -> Mode {
    MODE.with(|m| m.borrow().as_ref().map_or(Mode::OwnThread, |m| m.mode))
}

/// The tag of the thread that runs this test's application loop, if any.
pub fn app_loop_thread() -> Option<u64> {
    MODE.with(|m| m.borrow().as_ref().and_then(|m| m.driver.as_ref().map(|d| d.tag.load(Ordering::SeqCst))))
}

/// Declares each listed test function (defined without `#[test]`) as three
/// tests, one per mode: `own_thread::name`, `shared_loop::name` and
/// `app_loop::name`.
#[macro_export]
macro_rules! every_mode {
    ($($name:ident),* $(,)?) => {
        mod own_thread {
            $( #[test] fn $name() { super::handles::in_mode(super::handles::Mode::OwnThread, super::$name) } )*
        }
        mod shared_loop {
            $( #[test] fn $name() { super::handles::in_mode(super::handles::Mode::SharedLoop, super::$name) } )*
        }
        mod app_loop {
            $( #[test] fn $name() { super::handles::in_mode(super::handles::Mode::AppLoop, super::$name) } )*
        }
    };
}
