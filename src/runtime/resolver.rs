//! Name resolution off the loops: `getaddrinfo` cannot be interrupted, so
//! it runs on a shared pool of threads, created on demand and ended after
//! a while without work. A result goes back through the loop's command
//! queue; one for a connection that has gone meanwhile is dropped there
//! (its slot's generation no longer matches).
//!
//! A lookup that never returns (a DNS server that does not answer) holds
//! its thread until the system's resolver gives up, so the pool grows
//! whenever no thread is idle, up to MAX_THREADS: a name that resolves at
//! once still does while many others hang. A lookup whose connection ends
//! first leaves the queue (`Lookup` is dropped), and a job holds its loop
//! only weakly, so a freed connection's private loop and its fds go at
//! once, not when a hung lookup returns.

use crate::runtime::event_loop::{ConnId, Loop, LoopCommand, Task};
use crate::runtime::threads::spawn_quiet;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// At most this many lookups run at once, process-wide: room for 32 that
/// hang (a dead DNS server, tried by that many connections) and as many
/// again that answer. An idle thread costs only its stack's address space.
pub(crate) const MAX_THREADS: usize = 64;
/// A resolver thread with nothing to do for this long ends.
const IDLE: Duration = Duration::from_secs(5);

/// Where a lookup's result goes: to its loop, if the loop still exists.
type Reply = Box<dyn FnOnce(io::Result<Vec<SocketAddr>>) + Send>;

struct Job {
    serial: u64,
    host: String,
    port: u16,
    reply: Reply,
}

#[derive(Default)]
struct Pool {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    next_serial: u64,
}

fn pool() -> &'static (Mutex<Pool>, Condvar) {
    static POOL: std::sync::OnceLock<(Mutex<Pool>, Condvar)> = std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

fn lock_pool() -> std::sync::MutexGuard<'static, Pool> {
    pool().0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A lookup in the pool, held by its connection while it resolves.
/// Dropping it takes the job out of the queue if no thread has started it.
pub struct Lookup {
    serial: u64,
}

impl Drop for Lookup {
    fn drop(&mut self) {
        lock_pool().jobs.retain(|j| j.serial != self.serial);
    }
}

/// Looks `host` up on a resolver thread; the addresses (or the error)
/// reach connection `id` of `reply` as `LoopCommand::Resolved`, unless
/// the `Lookup` was dropped before a thread took it.
pub fn lookup<T: Task>(host: String, port: u16, reply: &Arc<Loop<T>>, id: ConnId) -> io::Result<Lookup> {
    let weak = Arc::downgrade(reply);
    let reply: Reply = Box::new(move |result| {
        if let Some(lp) = weak.upgrade() {
            lp.post(LoopCommand::Resolved(id, result));
        }
    });
    let (_, cv) = pool();
    let mut p = lock_pool();
    let serial = p.next_serial;
    p.next_serial += 1;
    p.jobs.push_back(Job { serial, host, port, reply });
    let lookup = Lookup { serial };
    // Every queued job needs an idle thread of its own, or a new one.
    if p.idle >= p.jobs.len() {
        cv.notify_one();
        return Ok(lookup);
    }
    if p.threads >= MAX_THREADS {
        return Ok(lookup);
    }
    p.threads += 1;
    drop(p);
    let Err(e) = spawn_quiet("libws-dns", worker) else { return Ok(lookup) };
    let mut p = lock_pool();
    p.threads -= 1;
    if p.threads > 0 {
        return Ok(lookup); // a running thread takes the job
    }
    drop(p);
    // No thread at all would ever run it: `lookup` takes it back as it drops.
    Err(e)
}

fn worker() {
    let (_, cv) = pool();
    let mut p = lock_pool();
    loop {
        if let Some(job) = p.jobs.pop_front() {
            drop(p);
            let result = resolve(&job.host, job.port);
            (job.reply)(result);
            p = lock_pool();
            continue;
        }
        p.idle += 1;
        let (next, timeout) = cv.wait_timeout(p, IDLE).unwrap_or_else(|e| e.into_inner());
        p = next;
        p.idle -= 1;
        if timeout.timed_out() && p.jobs.is_empty() {
            p.threads -= 1;
            return;
        }
    }
}

fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    #[cfg(feature = "testing")]
    if let Some(answer) = testing::answer(host, port) {
        return answer;
    }
    (host, port).to_socket_addrs().map(|a| a.collect())
}

/// Lets a test stand in for `getaddrinfo`, so that lookups that hang or
/// answer at once can be made on a machine with no DNS server to break
/// (the `testing` feature only).
#[cfg(feature = "testing")]
pub mod testing {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    type Resolver = Arc<dyn Fn(&str, u16) -> Option<io::Result<Vec<SocketAddr>>> + Send + Sync>;
    static RESOLVER: Mutex<Option<Resolver>> = Mutex::new(None);

    /// From now on lookups ask `f` first; it may block (a hung lookup) and
    /// answers None for names the system resolves. None removes it.
    pub fn set_resolver(f: Option<Resolver>) {
        *RESOLVER.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    pub(super) fn answer(host: &str, port: u16) -> Option<io::Result<Vec<SocketAddr>>> {
        let f = RESOLVER.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        f(host, port)
    }

    /// Lookups that may run at once.
    pub const MAX_LOOKUP_THREADS: usize = super::MAX_THREADS;

    /// Resolver threads alive now.
    pub fn lookup_threads() -> usize {
        super::lock_pool().threads
    }
}
