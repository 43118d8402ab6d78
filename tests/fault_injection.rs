//! Faults on the wire between libws and a real server (Python
//! `websockets`, tests/peers/fault_server.py): a proxy (support/proxy.rs)
//! splits and delays writes, and stalls, truncates or resets each
//! connection at a byte of its opening handshake, of a data frame or of
//! its closing handshake. Whatever it does, every connection keeps the
//! invariants that support/fault.rs checks: one on_close, last, after at
//! most one on_open; was_clean only when the server's closing handshake
//! completed; on a clean close every message sent while OPEN, and every
//! message the server sent before closing, arrived intact and in order.
//!
//! Each connection is made from a seed; a failure prints it, and
//! LIBWS_FAULT_SEED=<seed> runs that one alone (in every mode); add
//! LIBWS_FAULT_EARLY_FREES=1 for a seed of tests/soak.rs.
//!
//! sanitize: asan

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
use handles::*;
use std::collections::BTreeMap;
use std::time::Instant;

const CONNS: u64 = 95;
const BATCH: usize = 32;

fn run_mode(mode_no: u64) {
    let Some(env) = fault_env() else { return };
    let seeds: Vec<u64> = match std::env::var("LIBWS_FAULT_SEED") {
        Ok(s) => vec![s.trim().parse().expect("LIBWS_FAULT_SEED: a number")],
        // Consecutive seeds: the fault plans go round every kind and point.
        Err(_) => (0..CONNS).map(|i| (mode_no << 32) + 1000 + i).collect(),
    };
    // The soak's connections also free their handles early.
    let early_frees = std::env::var("LIBWS_FAULT_EARLY_FREES").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut fired: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut opened, mut clean, mut msgs, mut deflated) = (0, 0, 0, 0);
    for chunk in seeds.chunks(BATCH) {
        let specs: Vec<Spec> = chunk.iter().map(|&s| Spec::from_seed(next_id(), s, early_frees)).collect();
        let names: Vec<String> = specs.iter().map(|s| s.fault_name()).collect();
        for (r, name) in run_batch(env, current_loop(), specs).into_iter().zip(names) {
            let tally = fired.entry(name).or_default();
            tally.0 += 1;
            match r {
                Ok(o) => {
                    tally.1 += o.fired as usize;
                    opened += o.opened as usize;
                    clean += o.clean as usize;
                    deflated += o.deflated as usize;
                    msgs += o.msgs_sent + o.msgs_received;
                }
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "{:?}: {} connections in {:.1} s, {opened} opened ({deflated} compressed), {clean} closed cleanly, {msgs} messages",
        current_mode(),
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, (planned, hit)) in &fired {
        eprintln!("  {name}: {planned} planned, {hit} fired");
    }
    assert!(failures.is_empty(), "{} connection(s) broke an invariant:\n{}", failures.len(), failures.join("\n"));
    if seeds.len() as u64 == CONNS {
        // Each kind at each point (either direction) really happened.
        for kind in ["stall", "truncate", "reset"] {
            for point in ["handshake", "frame", "close"] {
                let hit: usize =
                    fired.iter().filter(|(n, _)| n.starts_with(&format!("{kind} {point} "))).map(|(_, t)| t.1).sum();
                assert!(hit > 0, "no {kind} fault fired in a {point}");
            }
        }
        assert!(clean > 0 && opened > clean, "opened {opened}, clean {clean}: the faults did not vary");
        assert!(deflated > 0, "no connection agreed on permessage-deflate");
    }
}

fn own_thread() {
    run_mode(1)
}

fn shared_loop() {
    run_mode(2)
}

fn app_loop() {
    run_mode(3)
}

// One test per mode, each under its own seeds.
#[test]
fn faults_own_thread() {
    in_mode(Mode::OwnThread, own_thread)
}

#[test]
fn faults_shared_loop() {
    in_mode(Mode::SharedLoop, shared_loop)
}

#[test]
fn faults_app_loop() {
    in_mode(Mode::AppLoop, app_loop)
}
