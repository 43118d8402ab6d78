//! What needs a process of its own: each test re-runs this test binary as a
//! child with `LIBWS_CHILD` naming what the child does, so that a process
//! limit (or a crash) touches the child alone.

mod common;

use common::*;
use std::ffi::CStr;
use std::process::Command;
use ws::ffi::*;

/// Runs this binary's test `name` in a child with `LIBWS_CHILD=name`;
/// returns its output once it succeeded.
fn run_child(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    run(Command::new(exe).args([name, "--exact", "--nocapture", "--test-threads=1"]).env("LIBWS_CHILD", name))
}

fn in_child(name: &str) -> bool {
    std::env::var("LIBWS_CHILD").is_ok_and(|v| v == name)
}

/// Uses up every file descriptor the process may have: lowers the soft
/// RLIMIT_NOFILE, then fills the table up to it.
fn exhaust_fds() {
    let limit = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
    // SAFETY: plain syscalls on this (child) process.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        while libc::dup(0) >= 0 {}
    }
}

#[test]
fn running_out_of_fds_is_ws_err_resource_naming_the_resource() {
    if in_child("running_out_of_fds_is_ws_err_resource_naming_the_resource") {
        exhaust_fds();
        let ws = unsafe { ws_new(c"ws://127.0.0.1:1/".as_ptr(), std::ptr::null(), 0, std::ptr::null()) };
        assert!(ws.is_null());
        let code = ws_last_error_code();
        let message = unsafe { CStr::from_ptr(ws_last_error()) }.to_str().unwrap().to_string();
        println!("child: code {code}, message {message:?}");
        assert_eq!(code, WS_ERR_RESOURCE);
        assert_eq!(message, "cannot create the connection's event loop: Too many open files");
        let text = unsafe { CStr::from_ptr(ws_strerror(code)) }.to_str().unwrap();
        assert!(text.contains("file descriptors"), "{text}");
        return;
    }
    let out = run_child("running_out_of_fds_is_ws_err_resource_naming_the_resource");
    assert!(out.contains("child: code"), "the child did not run the check:\n{out}");
}

/// Leaves the process too little address space for another thread's stack
/// (root ignores RLIMIT_NPROC, so that is the way to refuse a thread).
fn exhaust_address_space() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let bytes = (kib + 512) * 1024;
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a plain syscall on this (child) process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

#[test]
fn no_thread_for_the_connection_is_ws_err_resource() {
    if in_child("no_thread_for_the_connection_is_ws_err_resource") {
        exhaust_address_space();
        let ws = unsafe { ws_new(c"ws://127.0.0.1:1/".as_ptr(), std::ptr::null(), 0, std::ptr::null()) };
        assert!(ws.is_null());
        let code = ws_last_error_code();
        let message = unsafe { CStr::from_ptr(ws_last_error()) }.to_str().unwrap().to_string();
        println!("child: code {code}, message {message:?}");
        assert_eq!(code, WS_ERR_RESOURCE);
        assert!(message.starts_with("cannot start the connection's I/O thread: "), "{message}");
        assert!(!message.contains("os error"), "{message}");
        return;
    }
    let out = run_child("no_thread_for_the_connection_is_ws_err_resource");
    assert!(out.contains("child: code"), "the child did not run the check:\n{out}");
}

/// Only in a child: stands for a test whose peer is missing.
#[test]
fn fake_skip() {
    if in_child("fake_skip") {
        let _ = peer_missing::<()>("a fake peer is not installed");
    }
}

/// Runs the `fake_skip` child as scripts/test.sh runs the suite, then its
/// summary script over the child's output.
fn summary_of_fake_skip(ci: bool) -> (bool, String) {
    let dir = scratch_dir(if ci { "skips-ci" } else { "skips" });
    let skips = dir.join("skipped");
    std::fs::create_dir_all(&skips).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["fake_skip", "--exact", "--test-threads=1"])
        .env("LIBWS_CHILD", "fake_skip")
        .env("LIBWS_SKIP_DIR", &skips);
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    let out = cmd.output().unwrap();
    let log = dir.join("log");
    std::fs::write(&log, [out.stdout, out.stderr].concat()).unwrap();
    let summary = run(Command::new("bash").arg(repo_dir().join("scripts/summary.sh")).arg(&log).arg(&skips));
    (out.status.success(), summary)
}

/// The closing line: `N passed, N failed, N skipped`, after one word and a colon.
fn closing_line(summary: &str) -> &str {
    let last = summary.lines().last().unwrap_or("");
    let counts = last.split_once(": ").map_or(last, |(_, c)| c);
    let words: Vec<&str> = counts.split(", ").collect();
    let shape = ["passed", "failed", "skipped"];
    assert_eq!(words.len(), 3, "{summary}");
    for (w, name) in words.iter().zip(shape) {
        let (n, what) = w.split_once(' ').unwrap_or(("", ""));
        assert!(n.parse::<u32>().is_ok() && what == name, "not a closing line: {last:?}");
    }
    counts
}

#[test]
fn a_test_that_cannot_run_is_counted_as_skipped_not_passed() {
    let (ok, summary) = summary_of_fake_skip(false);
    assert!(ok, "{summary}");
    assert_eq!(closing_line(&summary), "0 passed, 0 failed, 1 skipped", "{summary}");
    // The reason is shown, not left in captured output.
    assert!(summary.contains("SKIPPED: ") && summary.contains("a fake peer is not installed"), "{summary}");
}

#[test]
fn under_ci_a_missing_peer_fails() {
    let (ok, summary) = summary_of_fake_skip(true);
    assert!(!ok, "{summary}");
    assert_eq!(closing_line(&summary), "0 passed, 1 failed, 0 skipped", "{summary}");
}

/// Only in a child: stands for a test binary that dies of a signal.
#[test]
fn fake_crash() {
    if in_child("fake_crash") {
        std::process::abort();
    }
}

#[test]
fn a_test_binary_that_dies_counts_as_failed() {
    // cargo test prints "Running <binary>" and then the binary's output;
    // a binary killed by a signal prints no "test result:" line.
    let dir = scratch_dir("crash");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["fake_crash", "--exact", "--test-threads=1"])
        .env("LIBWS_CHILD", "fake_crash")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = dir.join("log");
    let running = b"     Running tests/process.rs (fake)\n".to_vec();
    std::fs::write(&log, [running, out.stdout, out.stderr].concat()).unwrap();
    let summary = run(Command::new("bash").arg(repo_dir().join("scripts/summary.sh")).arg(&log).arg(dir.join("none")));
    assert_eq!(closing_line(&summary), "0 passed, 1 failed, 0 skipped", "{summary}");
    assert!(summary.contains("CRASHED: tests/process.rs"), "{summary}");
}
