//! Process-wide measurements, so this file holds one test: nothing else may
//! run in this process while it counts threads, fds, memory and CPU time.
//!
//! sanitize: none: it measures the process's threads, fds, memory and
//! idle CPU, which instrumentation changes.

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use handles::*;
use servers::*;
use std::time::{Duration, Instant};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn churn(server: &Server, n: usize) {
    for i in 0..n {
        let mut c = Client::new(&server.url("/"));
        if i % 2 == 0 {
            c.wait_open();
            assert_eq!(c.send_text("x"), ws::ffi::WS_OK);
        }
        // Odd ones are freed while connecting.
        c.free();
    }
}

/// Waits (bounded) for the threads and fds of freed handles to go away.
fn settle(threads: usize, fds: usize) -> (usize, usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = (count("/proc/self/task"), count("/proc/self/fd"));
        if (now.0 <= threads && now.1 <= fds) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn handles_return_every_resource_and_idle_costs_no_cpu() {
    let server = echo_server();
    let start = (count("/proc/self/task"), count("/proc/self/fd"));
    churn(&server, 50); // warm up allocators and thread stacks
    let (threads, fds) = settle(start.0, start.1);
    assert_eq!((threads, fds), start, "warm-up handles left threads or fds behind");
    let rss = rss_kib();

    churn(&server, 1000);
    let (t, f) = settle(threads, fds);
    assert!(t <= threads, "threads: {t} after, {threads} before");
    assert!(f <= fds, "fds: {f} after, {fds} before");
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB over 1000 handles");

    // The same on one shared loop: 1000 handles, then the loop is freed and
    // its thread ends with its last connection.
    let lp = ws::ffi::ws_loop_new();
    assert_eq!(unsafe { ws::ffi::ws_loop_start(lp) }, ws::ffi::WS_OK);
    let rss = rss_kib();
    in_loop(lp, || churn(&server, 1000));
    unsafe { ws::ffi::ws_loop_free(lp) };
    let (t, f) = settle(threads, fds);
    assert!(t <= threads, "shared loop: threads: {t} after, {threads} before");
    assert!(f <= fds, "shared loop: fds: {f} after, {fds} before");
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 16 * 1024, "shared loop: RSS grew by {grown} KiB over 1000 handles");

    // An idle open connection sleeps in epoll_wait(2): no CPU for 2 s.
    let c = Client::open(&server.url("/"));
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time() - before;
    assert!(used < Duration::from_millis(20), "idle connection used {used:?} of CPU in 2 s");
    assert_eq!(c.state(), ws::ffi::WS_OPEN);
}
