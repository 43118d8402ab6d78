//! What runs connections, whatever they are: the event loop (epoll, a
//! wake-up, a timer heap, tasks named by slot and generation), the
//! library's threads and the resolver pool. It drives `Task`s and knows
//! nothing of WebSocket.

pub mod event_loop;
pub mod resolver;
pub mod threads;
pub mod waker;
