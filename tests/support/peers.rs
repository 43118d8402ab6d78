//! Real peers in other processes, and skips that are counted.

// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

use crate::paths::repo_dir;
use std::time::Duration;

// ----- real peers in other processes -----

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Peer {
    pub port: u16,
    /// Holds the peer's stdin: the peer exits when this process does.
    _child: Child,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

/// Starts a peer server (`program` with `args`, relative to the repository,
/// and `path_var` pointing at its installed libraries) that prints
/// "PORT <n>" when ready. None when it is not installed (a panic under CI).
pub fn start_peer(name: &str, program: &str, args: &[&str], path_var: &str, default_path: &str) -> Option<Peer> {
    let env_name = format!("LIBWS_PEER_{}", path_var);
    let lib_path = std::env::var(&env_name).unwrap_or_else(|_| repo_dir().join(default_path).display().to_string());
    let spawned = Command::new(program)
        .args(args)
        .current_dir(repo_dir())
        .env(path_var, &lib_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let missing = |why: String| peer_missing(&format!("{name} peer unavailable: {why}"));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return missing(format!("cannot run {program}: {e}")),
    };
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let Some(port) = line.strip_prefix("PORT ").and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok())
    else {
        let _ = child.kill();
        return missing(format!("it did not start (said {line:?})"));
    };
    eprintln!("{name} peer: {}", line.trim());
    Some(Peer { port, _child: child })
}

/// A real peer is missing: a failure under CI=true, a counted skip
/// elsewhere. The calling test returns early, which libtest counts as
/// passed; scripts/test.sh counts it as skipped instead (see `record_skip`).
pub fn peer_missing<T>(msg: &str) -> Option<T> {
    let msg = format!("{msg} (scripts/test.sh and .ci/run install the peers)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    record_skip(&msg);
    None
}

/// Leaves one file per skipped test in `$LIBWS_SKIP_DIR` (scripts/test.sh
/// sets it and scripts/summary.sh counts the files), named after the test,
/// so that a test that skips twice counts once.
pub fn record_skip(msg: &str) {
    let Some(dir) = std::env::var_os("LIBWS_SKIP_DIR") else { return };
    let exe = std::env::current_exe().ok();
    let binary = exe.as_ref().and_then(|e| e.file_name()).map_or("tests".into(), |n| n.to_string_lossy());
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) => name.to_string(),
        None => format!("{}-{:?}", std::process::id(), thread.id()),
    };
    let file: String = format!("{binary}--{test}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let note = format!("{test} ({binary}): {msg}\n");
    if let Err(e) = std::fs::write(std::path::Path::new(&dir).join(file), note) {
        panic!("cannot record the skip in {}: {e}", std::path::Path::new(&dir).display());
    }
}
