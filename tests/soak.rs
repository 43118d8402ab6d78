//! The soak: for SOAK_SECONDS (default 300) hundreds of connections at a
//! time, half on their own library threads and half on one shared loop,
//! churn through the fault-injecting proxy to the Python server
//! (tests/support/fault.rs): each opens, exchanges checksummed messages, is
//! closed by either side, and is freed at the end or early, from the test
//! thread or from inside one of its callbacks. Every connection must keep
//! the invariants of tests/fault_injection.rs, and no callback may start
//! after ws_free returned. Each second RSS, the heap in use, open fds and
//! threads are sampled; none may grow after the warm-up (see `trend`),
//! and once every handle is freed the heap, fds and threads are back
//! where they started.
//!
//! Not part of `cargo test` (Cargo.toml: test = false): `make soak` runs it,
//! with glibc's per-thread caches off (scripts/soak.sh says why).
//! SOAK_CONNS sets the connections at a time per mode (150), SOAK_MODES
//! (own or shared) runs one mode only, LIBWS_SOAK_SEED repeats a run's
//! seeds.
//!
//! sanitize: none: not part of `cargo test`; `make soak` runs it

mod common;
#[path = "support/fault.rs"]
mod fault;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/proxy.rs"]
mod proxy;

use fault::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// Connections at a time in each mode (SOAK_CONNS overrides).
const PER_MODE: usize = 150;

#[derive(Default)]
struct Totals {
    conns: u64,
    opened: u64,
    clean: u64,
    deflated: u64,
    messages: u64,
    bytes: u64,
    faults: BTreeMap<String, (u64, u64)>,
    frees: BTreeMap<String, u64>,
    failures: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    /// Bytes malloc has handed out and not got back: RSS without the
    /// allocator's free pages, which it keeps (a leak shows here first).
    heap_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample() -> Sample {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    let page_kib = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
    let count = |d: &str| std::fs::read_dir(d).unwrap().count() as u64;
    let m = unsafe { libc::mallinfo2() };
    let heap_kib = (m.uordblks + m.hblkhd) as u64 / 1024;
    Sample { rss_kib: pages * page_kib, heap_kib, fds: count("/proc/self/fd"), threads: count("/proc/self/task") }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The rule: the first third of the samples is warm-up; the median of the
/// last third may exceed the median of the middle third by at most
/// `percent` plus `slack`. Medians, so that one busy second does not
/// decide. Coarse on purpose: the counts of fds and threads swing with
/// how many connections are connecting at the moment of a sample; the
/// exact check is the one after the last ws_free.
fn trend(name: &str, values: &[u64], percent: u64, slack: u64) -> Result<(), String> {
    let third = values.len() / 3;
    if third < 3 {
        return Err(format!("{name}: {} samples are too few to see a trend", values.len()));
    }
    let middle = median(values[third..2 * third].to_vec());
    let last = median(values[2 * third..].to_vec());
    let limit = middle + middle * percent / 100 + slack;
    if last > limit {
        return Err(format!("{name} grows: median {middle} in the middle third, {last} in the last (limit {limit})"));
    }
    Ok(())
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let per_mode: usize = std::env::var("SOAK_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(PER_MODE);
    // A soak that did not run has not passed, under CI or not.
    let Some(env) = fault_env() else {
        eprintln!("soak: FAILED: the Python websockets peer is missing");
        std::process::exit(1);
    };
    let base_seed: u64 = std::env::var("LIBWS_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 & 0xffff_ffff
    }) << 20;
    eprintln!("soak: {seconds} s, {per_mode} connections at a time on own threads and as many on a shared loop, seeds from {base_seed} (LIBWS_SOAK_SEED={})", base_seed >> 20);

    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("tcache_count=0")) {
        eprintln!(
            "soak: glibc's thread caches are on: heap and RSS may creep without a leak (make soak turns them off)"
        );
    }
    let lp = ws_loop_new();
    assert!(!lp.is_null());
    assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let totals = Arc::new(Mutex::new(Totals::default()));
    let next_seed = Arc::new(AtomicU64::new(base_seed));
    let first = sample();

    let workers: Vec<_> = (0..2 * per_mode)
        .map(|i| {
            let (totals, next_seed) = (totals.clone(), next_seed.clone());
            // The first half on their own threads (NULL), the rest on `lp`;
            // SOAK_MODES=own or shared runs only that half.
            let lp = if i < per_mode { 0 } else { lp as usize };
            let only = std::env::var("SOAK_MODES").unwrap_or_default();
            let skip = (only == "own" && lp != 0) || (only == "shared" && lp == 0);
            std::thread::spawn(move || {
                handles::in_loop(lp as *mut ws_loop, || {
                    while !skip && Instant::now() < deadline {
                        let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                        let spec = Spec::from_seed(next_id(), seed, true);
                        let r = run_one(env, &spec);
                        let mut t = totals.lock().unwrap();
                        t.conns += 1;
                        let free = match spec.free {
                            Free::AtEnd => "at the end".to_string(),
                            Free::Outside(n) => {
                                ["outside, after ws_new", "outside, after on_open", "outside, after the sends"]
                                    [n as usize]
                                    .to_string()
                            }
                            Free::Inside(n) => format!("inside callback {n} (or on_close)"),
                        };
                        *t.frees.entry(free).or_default() += 1;
                        let fault = t.faults.entry(spec.fault_name()).or_default();
                        fault.0 += 1;
                        match r {
                            Ok(o) => {
                                fault.1 += o.fired as u64;
                                t.opened += o.opened as u64;
                                t.clean += o.clean as u64;
                                t.deflated += o.deflated as u64;
                                t.messages += (o.msgs_sent + o.msgs_received) as u64;
                                t.bytes += o.bytes;
                            }
                            Err(e) => {
                                eprintln!("soak: FAILED {e}");
                                t.failures.push(e);
                            }
                        }
                    }
                });
            })
        })
        .collect();

    // Each second until the deadline; the drain after it is not sampled.
    let mut samples = Vec::new();
    let mut next = start + Duration::from_secs(1);
    while next <= deadline {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let s = sample();
        let t = totals.lock().unwrap();
        eprintln!(
            "soak: {:>4} s  rss {:>7} KiB  heap {:>7} KiB  fds {:>5}  threads {:>5}  connections {:>7}  failures {}",
            samples.len() + 1,
            s.rss_kib,
            s.heap_kib,
            s.fds,
            s.threads,
            t.conns,
            t.failures.len()
        );
        drop(t);
        samples.push(s);
        next += Duration::from_secs(1);
    }
    let mut worker_died = false;
    for w in workers {
        worker_died |= w.join().is_err();
    }
    unsafe { ws_loop_free(lp) };
    let drain = deadline.elapsed();
    // With every handle freed, the library's threads and sockets go (the
    // proxy's relays end with their connections): back near the start.
    let settle = Instant::now() + Duration::from_secs(15);
    let mut after = sample();
    while (after.threads > first.threads + 4 || after.fds > first.fds + 8) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        after = sample();
    }

    let t = totals.lock().unwrap();
    let last = *samples.last().unwrap_or(&first);
    eprintln!("soak: summary after {:.0} s (drain {:.1} s)", start.elapsed().as_secs_f64(), drain.as_secs_f64());
    eprintln!(
        "  connections {}, opened {} ({} compressed), closed cleanly {}, messages {}, bytes {}",
        t.conns, t.opened, t.deflated, t.clean, t.messages, t.bytes
    );
    eprintln!("  frees:");
    for (k, n) in &t.frees {
        eprintln!("    {k}: {n}");
    }
    eprintln!("  faults (planned, fired):");
    for (k, (planned, fired)) in &t.faults {
        eprintln!("    {k}: {planned}, {fired}");
    }
    eprintln!(
        "  heap KiB {} -> {} -> {}, rss KiB {} -> {} -> {}, fds {} -> {} -> {}, threads {} -> {} -> {} (before the first connection -> the last second -> all freed)",
        first.heap_kib, last.heap_kib, after.heap_kib, first.rss_kib, last.rss_kib, after.rss_kib, first.fds, last.fds, after.fds, first.threads, last.threads, after.threads
    );

    let mut problems: Vec<String> = t.failures.iter().take(20).cloned().collect();
    if t.failures.len() > 20 {
        problems.push(format!("... and {} more failures", t.failures.len() - 20));
    }
    if worker_died {
        problems.push("a worker thread panicked".into());
    }
    // Every connection's memory came back (what stays is the tallies).
    if after.heap_kib > first.heap_kib + 2048 {
        problems.push(format!(
            "heap in use after the last ws_free: {} KiB, {} KiB before the first connection",
            after.heap_kib, first.heap_kib
        ));
    }
    if after.threads > first.threads + 4 || after.fds > first.fds + 8 {
        problems.push(format!(
            "15 s after the last ws_free: {} threads and {} fds, {} and {} before the first connection",
            after.threads, after.fds, first.threads, first.fds
        ));
    }
    for (name, values, percent, slack) in [
        ("RSS (KiB)", samples.iter().map(|s| s.rss_kib).collect::<Vec<_>>(), 10, 8 * 1024),
        ("heap in use (KiB)", samples.iter().map(|s| s.heap_kib).collect(), 10, 4 * 1024),
        ("open fds", samples.iter().map(|s| s.fds).collect(), 20, 40),
        ("threads", samples.iter().map(|s| s.threads).collect(), 20, 40),
    ] {
        if let Err(e) = trend(name, &values, percent, slack) {
            problems.push(e);
        }
    }
    if t.opened == 0 || t.clean == 0 {
        problems.push(format!("nothing worked: {} opened, {} clean", t.opened, t.clean));
    }
    if !problems.is_empty() {
        eprintln!("soak: FAILED\n  {}", problems.join("\n  "));
        std::process::exit(1);
    }
    eprintln!("soak: ok");
}
