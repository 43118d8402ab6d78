//! What needs a process of its own: each test re-runs this test binary as a
//! child with `LIBWS_CHILD` naming what the child does, so that a process
//! limit (or a crash) touches the child alone.
//!
//! sanitize: none: its children run out of fds, address space or memory:
//! under ASan a capped address space leaves no room for the shadow, and a
//! failed allocation aborts instead of returning NULL.

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/loop_fds.rs"]
mod loop_fds;
#[path = "support/servers.rs"]
mod servers;

use common::*;
use frames::*;
use handles::*;
use loop_fds::loop_fds;
use paths::*;
use peers::*;
use servers::*;
use std::ffi::CStr;
use std::io::Write;
use std::net::TcpStream;
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

/// Refuses every new library thread from now on, as a thread limit or an
/// address space too small for another stack would (EAGAIN), through the
/// library's test hook: a real limit makes the child's own small
/// allocations fail now and then, which made these tests flaky.
fn refuse_new_threads() {
    ws::ffi::testing::refuse_threads(true);
}

#[test]
fn no_thread_for_the_connection_is_ws_err_resource() {
    if in_child("no_thread_for_the_connection_is_ws_err_resource") {
        refuse_new_threads();
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

/// `len` bytes that read as zeros and take no memory until written.
fn zero_pages(len: usize) -> &'static [u8] {
    // SAFETY: a fresh private anonymous mapping, read-only, never unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::slice::from_raw_parts(p.cast::<u8>(), len)
    }
}

/// Limits the address space to what the process maps now plus `mib` MiB.
fn limit_address_space(mib: u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let limit = libc::rlimit { rlim_cur: (kib + mib * 1024) * 1024, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a plain syscall on this (child) process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

#[test]
fn a_send_that_memory_cannot_hold_is_refused_not_an_abort() {
    const NAME: &str = "a_send_that_memory_cannot_hold_is_refused_not_an_abort";
    if in_child(NAME) {
        let echo = echo_server();
        let open = Client::open(&echo.url("/"));
        let limited = Client::with(&echo.url("/"), &[], &Opts { max_buffered: Some(1 << 20), ..Opts::default() });
        limited.wait_open();
        let (silent, _held) = silent_server();
        let connecting = Client::new(&silent.url("/"));
        let big = zero_pages(1 << 30);
        limit_address_space(256);
        // Refused by state and by limit before anything is copied.
        assert_eq!(connecting.send_bytes(big), WS_ERR_INVALID_STATE);
        assert_eq!(limited.send_bytes(big), WS_ERR_BUFFER_FULL);
        assert_eq!(limited.buffered(), 0, "nothing queued");
        // While OPEN the copy cannot be made: an error, nothing counted.
        assert_eq!(open.send_bytes(big), WS_ERR_RESOURCE);
        assert_eq!(open.buffered(), 0, "nothing counted");
        // The text path too; and the connection goes on working.
        assert_eq!(open.send_text("still here"), WS_OK);
        assert_eq!(wait_messages(&open, 1)[0], (b"still here".to_vec(), true));
        assert_eq!(open.state(), WS_OPEN);
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

#[test]
fn a_message_that_memory_cannot_hold_fails_the_connection_with_1009() {
    const NAME: &str = "a_message_that_memory_cannot_hold_fails_the_connection_with_1009";
    if in_child(NAME) {
        let (start, go) = crossbeam_channel::bounded::<()>(1);
        let (tx, close_code) = crossbeam_channel::bounded(1);
        let zeros = vec![0u8; 1 << 20];
        let server = raw_server(move |mut s: TcpStream| {
            raw_handshake(&mut s, "");
            let _ = go.recv_timeout(WAIT);
            // A 1 GiB binary frame, streamed until the client stops it.
            let mut head = vec![0x82, 127];
            head.extend_from_slice(&(1u64 << 30).to_be_bytes());
            let mut writer = s.try_clone().unwrap();
            let zeros = zeros.clone();
            std::thread::spawn(move || {
                let _ = writer.write_all(&head);
                for _ in 0..1024 {
                    if writer.write_all(&zeros).is_err() {
                        break;
                    }
                }
            });
            s.set_read_timeout(Some(WAIT)).unwrap();
            let _ = tx.send(read_until_close(&mut s));
        });
        let opts = Opts { max_message_size: Some(2 << 30), ..Opts::default() };
        let c = Client::with(&server.url("/"), &[], &opts);
        c.wait_open();
        limit_address_space(128);
        start.send(()).unwrap();
        let message = assert_failed(&c);
        assert!(message.contains("out of memory"), "{message}");
        assert_eq!(close_code.recv_timeout(WAIT).unwrap(), Some(1009), "the close code on the wire");
        println!("child: checked ({message})");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

#[test]
fn a_freed_application_loop_with_no_thread_for_it_ends_its_connections() {
    const NAME: &str = "a_freed_application_loop_with_no_thread_for_it_ends_its_connections";
    if in_child(NAME) {
        let echo = echo_server();
        let before = loop_fds();
        let lp = ws_loop_new();
        assert!(!lp.is_null());
        // Two connections; each frees itself in its on_close, as C programs
        // do, so that nothing outside holds the loop once they have ended.
        let clients: Vec<Client> = (0..2).map(|_| client_on(lp, &echo.url("/"), Recorder::new())).collect();
        let deadline = std::time::Instant::now() + WAIT;
        while clients.iter().any(|c| c.state() == WS_CONNECTING) {
            assert!(std::time::Instant::now() < deadline, "never opened");
            assert!(unsafe { ws_loop_run(lp, 50) } >= 0);
        }
        let mut recs = Vec::new();
        for mut c in clients {
            assert_eq!(c.state(), WS_OPEN);
            assert_eq!(c.send_text("queued, never run"), WS_OK);
            c.rec.set_hook(|ws, ev| {
                if matches!(ev, Ev::Close { .. }) {
                    unsafe { ws_free(ws) };
                }
            });
            c.forget();
            recs.push(c.rec.clone());
        }
        refuse_new_threads();
        // No thread can take the loop over: the connections end here.
        unsafe { ws_loop_free(lp) };
        for rec in &recs {
            let evs = rec.events();
            let n = evs.len();
            assert!(n >= 2, "no ending: {evs:?}");
            match (&evs[n - 2], &evs[n - 1]) {
                (Ev::Error { message, .. }, Ev::Close { code: 1006, clean: false, .. }) => {
                    assert!(message.contains("no thread could be started"), "{message}");
                    println!("child: ended ({message})");
                }
                other => panic!("expected on_error then on_close 1006: {other:?}"),
            }
        }
        // The handles freed in on_close, and with them the loop, are gone
        // (at once, or when a thread that memory freed meanwhile allowed
        // has run what they queued).
        poll_until("the loop's fds to close", || loop_fds() == before);
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

#[test]
fn a_free_posted_as_the_private_loop_thread_ends_is_not_lost() {
    const NAME: &str = "a_free_posted_as_the_private_loop_thread_ends_is_not_lost";
    if in_child(NAME) {
        use std::sync::{Arc, Mutex};
        // B's on_message frees A while A's on_close runs (so ws_free cannot
        // wait, and posts A's memory to A's loop); the post is held until
        // A's loop thread has decided to end.
        let (a_closing_tx, a_closing) = crossbeam_channel::bounded::<()>(1);
        let (a_return_tx, a_return) = crossbeam_channel::bounded::<()>(1);
        let (exited_tx, exited) = crossbeam_channel::unbounded::<()>();
        let exited_tx = Mutex::new(exited_tx);
        ws::ffi::testing::on_loop_thread_exiting(Some(Box::new(move || {
            let _ = exited_tx.lock().unwrap().send(());
        })));
        let a_return_tx = Mutex::new(a_return_tx);
        ws::ffi::testing::on_free_posting(Some(Box::new(move || {
            let _ = a_return_tx.lock().unwrap().send(());
            exited.recv_timeout(WAIT).expect("A's loop thread ended");
        })));
        let echo = echo_server();
        let b = Client::open(&echo.url("/"));
        let before = loop_fds();
        let closer = contract_server();
        let a_rec = Recorder::new();
        let mut a = Client::try_with(&closer.url("/"), &[], None, a_rec.clone()).unwrap();
        a.wait_open();
        let a_ptr = Arc::new(Mutex::new(a.ws as usize));
        a.forget();
        a_rec.set_hook(move |_, ev| {
            if matches!(ev, Ev::Close { .. }) {
                let _ = a_closing_tx.send(());
                a_return.recv_timeout(WAIT).expect("B freed A");
            }
        });
        let freeing = a_ptr.clone();
        b.rec.set_hook(move |_, ev| {
            if matches!(ev, Ev::Message { .. }) {
                let ws = *freeing.lock().unwrap() as *mut ws_socket;
                unsafe { ws_free(ws) };
            }
        });
        // The server closes A; once A is in on_close, B frees it.
        assert_eq!(
            unsafe {
                ws_send_string(a_ptr.lock().map(|p| *p as *mut ws_socket).unwrap(), c"close 1000 bye".as_ptr(), 13)
            },
            WS_OK
        );
        a_closing.recv_timeout(WAIT).expect("A's on_close ran");
        assert_eq!(b.send_text("free A"), WS_OK);
        // A's handle, loop and two fds are released, by some thread.
        poll_until("A's loop fds to close", || loop_fds() == before);
        ws::ffi::testing::on_free_posting(None);
        ws::ffi::testing::on_loop_thread_exiting(None);
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

/// Loading a trust store and building a TLS context takes tens of
/// milliseconds: done on a loop's thread, it would stall every connection
/// of the loop (an application's ws_loop_run call among them). It is done
/// by ws_new, on the caller's thread. Its own process: which thread built
/// the last context is process-wide.
#[test]
fn the_tls_context_is_built_by_ws_new_not_on_the_loops_thread() {
    const NAME: &str = "the_tls_context_is_built_by_ws_new_not_on_the_loops_thread";
    if in_child(NAME) {
        // A CA of our own: these settings get a context of their own.
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap().self_signed(&key).unwrap();
        let pem = ca.pem();
        let lp = ws_loop_new();
        assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
        let rec = Recorder::new();
        let c = unsafe {
            let o = ws_options_new();
            assert_eq!(ws_options_set_ca_pem(o, pem.as_ptr().cast(), pem.len()), WS_OK);
            assert_eq!(ws_options_set_loop(o, lp), WS_OK);
            let c = Client::try_with_options(&format!("wss://127.0.0.1:{}/", closed_port()), &[], o, rec).unwrap();
            ws_options_free(o);
            c
        };
        // The connection is refused; by then its loop has done all it does.
        assert_failed(&c);
        let built_on = ws::ffi::testing::last_tls_context_built_on();
        assert_eq!(built_on, Some(std::thread::current().id()), "built on another thread than ws_new's");
        drop(c);
        unsafe { ws_loop_free(lp) };
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

/// A handle made without a loop runs on a thread of its own. When its
/// connection has ended, that thread and its loop wait a while (parked)
/// for the next such handle instead of ending, so that a program that
/// connects again and again does not pay for a thread each time; two
/// handles alive at once never share one, and a parked thread ends on its
/// own. Its own process: parked loops are process-wide.
#[test]
fn a_default_mode_thread_serves_the_next_handle_never_two_at_once() {
    const NAME: &str = "a_default_mode_thread_serves_the_next_handle_never_two_at_once";
    if in_child(NAME) {
        use std::sync::{Arc, Mutex};
        use std::thread::ThreadId;
        use ws::ffi::testing::parked_loops;
        let server = echo_server();
        // A client whose on_open says which thread ran it.
        let open = |url: &str| -> (Client, Arc<Mutex<Option<ThreadId>>>) {
            let rec = Recorder::new();
            let seen = Arc::new(Mutex::new(None));
            let store = seen.clone();
            rec.set_hook(move |_, ev| {
                if matches!(ev, Ev::Open { .. }) {
                    *store.lock().unwrap() = Some(std::thread::current().id());
                }
            });
            let c = Client::try_with(url, &[], None, rec).unwrap();
            c.wait_open();
            (c, seen)
        };
        let thread_of = |seen: &Arc<Mutex<Option<ThreadId>>>| seen.lock().unwrap().expect("on_open ran");
        let (mut first, first_seen) = open(&server.url("/"));
        assert_eq!(first.close(1000, None), WS_OK);
        assert_eq!(close_event(&first).0, 1000);
        first.free();
        poll_until("the first handle's loop to park", || parked_loops() == 1);
        let (second, second_seen) = open(&server.url("/"));
        assert_eq!(parked_loops(), 0, "the parked loop was taken");
        assert_eq!(thread_of(&second_seen), thread_of(&first_seen), "the second handle got a new thread");
        assert_eq!(second.send_text("on a reused loop"), WS_OK);
        assert_eq!(wait_messages(&second, 1)[0].0, b"on a reused loop");
        // While the second is open, a third gets a thread of its own.
        let (third, third_seen) = open(&server.url("/"));
        assert_ne!(thread_of(&third_seen), thread_of(&second_seen), "two open handles share a thread");
        drop(second);
        drop(third);
        // Both park, then end on their own within half a second.
        poll_until("the parked loops to end", || parked_loops() == 0);
        poll_until("their fds to close", || loop_fds() == 0);
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}

/// A child made by fork() has none of its parent's threads: a loop its
/// parent had parked is not its to take (the handle would wait forever
/// for a thread that is not there). Its own process, which forks.
#[test]
fn a_forked_child_never_takes_its_parents_parked_loop() {
    const NAME: &str = "a_forked_child_never_takes_its_parents_parked_loop";
    if in_child(NAME) {
        use ws::ffi::testing::parked_loops;
        let server = echo_server();
        let mut first = Client::open(&server.url("/"));
        assert_eq!(first.close(1000, None), WS_OK);
        assert_eq!(close_event(&first).0, 1000);
        first.free();
        poll_until("the handle's loop to park", || parked_loops() == 1);
        // SAFETY: the forked child only connects and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let opened = std::panic::catch_unwind(|| {
                let c = Client::open(&server.url("/"));
                assert_eq!(c.send_text("from the child"), WS_OK);
                wait_messages(&c, 1)[0].0 == b"from the child"
            });
            unsafe { libc::_exit(if matches!(opened, Ok(true)) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child's handle did not open: status {status}"
        );
        println!("child: checked");
        return;
    }
    let out = run_child(NAME);
    assert!(out.contains("child: checked"), "the child did not run the check:\n{out}");
}
