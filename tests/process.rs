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
        assert_eq!(message, "cannot create eventfd: Too many open files");
        let text = unsafe { CStr::from_ptr(ws_strerror(code)) }.to_str().unwrap();
        assert!(text.contains("file descriptors"), "{text}");
        return;
    }
    let out = run_child("running_out_of_fds_is_ws_err_resource_naming_the_resource");
    assert!(out.contains("child: code"), "the child did not run the check:\n{out}");
}
