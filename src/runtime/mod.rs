//! What runs connections, whatever they are: the event loop (epoll, a
//! wake-up, a timer heap, tasks named by slot and generation), the
//! library's threads and the resolver pool. It drives `Task`s and knows
//! nothing of WebSocket.

pub mod event_loop;
pub mod resolver;
pub mod threads;
pub mod waker;

/// A point where a test may run code of its own (the `testing` feature
/// only): set by the test, called by the library, nothing when unset.
#[cfg(feature = "testing")]
pub struct TestHook(std::sync::Mutex<Option<Box<dyn Fn() + Send>>>);

#[cfg(feature = "testing")]
impl TestHook {
    pub const fn new() -> TestHook {
        TestHook(std::sync::Mutex::new(None))
    }

    pub fn set(&self, f: Option<Box<dyn Fn() + Send>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    pub fn call(&self) {
        if let Some(f) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f();
        }
    }
}
