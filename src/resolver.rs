//! Name resolution off the loops: `getaddrinfo` cannot be interrupted, so
//! it runs on a small shared pool of threads, created on demand and ended
//! after a while without work. A result goes back through the loop's
//! command queue; one for a connection that has gone meanwhile is dropped
//! there (its slot's generation no longer matches).

use crate::event_loop::{ConnId, Loop, LoopCommand};
use crate::shared::spawn_quiet;
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// At most this many lookups run at once, process-wide.
const MAX_THREADS: usize = 4;
/// A resolver thread with nothing to do for this long ends.
const IDLE: Duration = Duration::from_secs(5);

struct Job {
    host: String,
    port: u16,
    reply: Arc<Loop>,
    id: ConnId,
}

#[derive(Default)]
struct Pool {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

fn pool() -> &'static (Mutex<Pool>, Condvar) {
    static POOL: std::sync::OnceLock<(Mutex<Pool>, Condvar)> = std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Looks `host` up on a resolver thread; the addresses (or the error)
/// reach connection `id` of `reply` as `LoopCommand::Resolved`.
pub fn lookup(host: String, port: u16, reply: Arc<Loop>, id: ConnId) -> std::io::Result<()> {
    let (lock, cv) = pool();
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    p.jobs.push_back(Job { host, port, reply: reply.clone(), id });
    if p.idle > 0 {
        cv.notify_one();
        return Ok(());
    }
    if p.threads >= MAX_THREADS {
        return Ok(());
    }
    p.threads += 1;
    drop(p);
    let Err(e) = spawn_quiet("libws-dns", worker) else { return Ok(()) };
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    p.threads -= 1;
    if p.threads > 0 {
        return Ok(()); // a running thread takes the job
    }
    // No thread at all would ever run it: take it back and fail now.
    p.jobs.retain(|j| !(j.id == id && Arc::ptr_eq(&j.reply, &reply)));
    Err(e)
}

fn worker() {
    let (lock, cv) = pool();
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = p.jobs.pop_front() {
            drop(p);
            let result = (job.host.as_str(), job.port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
            job.reply.post(LoopCommand::Resolved(job.id, result));
            p = lock.lock().unwrap_or_else(|e| e.into_inner());
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
