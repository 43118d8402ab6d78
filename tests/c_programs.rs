//! Real C (and C++) programs against include/ws.h, linked against libws.so
//! and libws.a, talking to a local server.
//!
//! sanitize: asan

#[path = "support/cbuild.rs"]
mod cbuild;
mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/paths.rs"]
mod paths;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/pmd.rs"]
mod pmd;
#[path = "support/servers.rs"]
mod servers;

use cbuild::*;
use common::*;
use frames::*;
use paths::*;
use peers::*;
use servers::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `program`, whose waits for an event (tests/c/contract.c, extensions.c)
/// each take at most `wait`.
fn waiting(program: impl AsRef<std::ffi::OsStr>, wait: Duration) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LIBWS_TEST_WAIT_S", wait.as_secs().max(1).to_string());
    cmd
}

fn run_contract(binary: &Path) {
    let server = contract_server();
    let out = run(waiting(binary, WAIT).arg(server.url("/contract")).arg("chat"));
    assert!(out.contains("contract: all checks passed"), "{out}");
}

#[test]
fn contract_program_as_c99_against_shared_and_static() {
    let scratch = scratch_dir("contract-c");
    let src = repo_dir().join("tests/c/contract.c");
    let shared = scratch.join("contract_shared");
    compile(&src, &shared, "cc", C_FLAGS, Link::Shared, &scratch);
    run_contract(&shared);
    let needed = run(Command::new("readelf").arg("-d").arg(&shared));
    assert!(needed.contains(&format!("[{}]", soname())), "binary should need the soname:\n{needed}");
    let fixed = scratch.join("contract_static");
    compile(&src, &fixed, "cc", C_FLAGS, Link::Static, &scratch);
    run_contract(&fixed);
    let dynamic = run(Command::new("readelf").arg("-d").arg(&fixed));
    assert!(!dynamic.contains("libws"), "static binary should not need libws.so:\n{dynamic}");
}

#[test]
fn contract_program_as_cxx() {
    let scratch = scratch_dir("contract-cxx");
    let out = scratch.join("contract_cxx");
    compile(&repo_dir().join("tests/c/contract.c"), &out, "c++", CXX_FLAGS, Link::Shared, &scratch);
    run_contract(&out);
}

#[test]
fn header_alone_compiles_cleanly_as_c_and_cxx() {
    let scratch = scratch_dir("header-only");
    let src = scratch.join("only.c");
    std::fs::write(&src, "#include <ws.h>\n#include <ws.h>\nint main(void) { return WS_OK; }\n").unwrap();
    for (compiler, flags) in [("cc", C_FLAGS), ("c++", CXX_FLAGS)] {
        let mut cmd = Command::new(compiler);
        cmd.args(flags).arg("-I").arg(repo_dir().join("include")).arg("-c").arg(&src).arg("-o");
        cmd.arg(scratch.join(format!("only-{compiler}.o")));
        run(&mut cmd);
    }
}

#[test]
fn shared_object_exports_only_ws_symbols() {
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(lib_dir().join("libws.so")));
    let symbols: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert!(symbols.contains(&"ws_new") && symbols.contains(&"ws_free"), "{symbols:?}");
    let foreign: Vec<&&str> = symbols.iter().filter(|s| !s.starts_with("ws_")).collect();
    assert!(foreign.is_empty(), "exported non-ws_ symbols: {foreign:?}");
    let dynamic = run(Command::new("readelf").arg("-d").arg(lib_dir().join("libws.so")));
    assert!(dynamic.contains(&format!("Library soname: [{}]", soname())), "{dynamic}");
}

#[test]
fn examples_compile_and_wscat_talks_to_the_server() {
    let scratch = scratch_dir("examples");
    for name in ["echo", "wscat", "epoll_loop", "stream"] {
        let src = repo_dir().join(format!("examples/{name}.c"));
        compile(&src, &scratch.join(name), "cc", C_FLAGS, Link::Shared, &scratch);
    }
    let server = contract_server();
    // wscat: each stdin line is a text message; end of input closes with 1000.
    let mut child = Command::new(scratch.join("wscat"))
        .arg(server.url("/"))
        .arg("chat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // A watchdog, so that a hung wscat fails the test instead of hanging it.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let watchdog = std::thread::spawn(move || {
        if stop_rx.recv_timeout(WAIT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    use std::io::{BufRead, Write};
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first line\nsecond line\n").unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    // Both echoes before end of input: messages arriving while CLOSING are
    // dropped, as in browsers.
    for line in lines.by_ref() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line == "text: second line" {
            break;
        }
    }
    drop(stdin);
    for line in lines {
        text.push_str(&line.unwrap());
        text.push('\n');
    }
    let status = child.wait().unwrap();
    let _ = stop_tx.send(());
    watchdog.join().unwrap();
    assert!(status.success(), "{text}");
    assert!(text.starts_with("open (protocol \"chat\")\ntext: first line\ntext: second line\n"), "{text}");
    assert!(text.ends_with("close 1000 \"\" (clean)\n"), "{text}");
    // echo: connects, sends, prints every event, closes.
    let out = run(Command::new(scratch.join("echo")).arg(server.url("/")));
    assert!(out.contains("message (text): Hello from libws"), "{out}");
    assert!(out.contains("close 1000"), "{out}");
    // epoll_loop: five connections from the program's own epoll loop.
    let out =
        run(Command::new(scratch.join("epoll_loop")).arg(server.url("/")).arg("5").stdin(std::process::Stdio::null()));
    for i in 1..=5 {
        assert!(out.contains(&format!("[{i}] text: hello from {i}\n")), "{out}");
        assert!(out.contains(&format!("[{i}] close 1000 \"done\" (clean)\n")), "{out}");
    }
    assert!(out.ends_with("all 5 connections closed\n"), "{out}");
}

/// examples/stream.c sends 32 MiB from on_drain alone against a server
/// that echoes it all back (which the example ignores).
#[test]
fn the_drain_driven_stream_example_sends_everything() {
    let scratch = scratch_dir("stream-example");
    let binary = scratch.join("stream");
    compile(&repo_dir().join("examples/stream.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let server = echo_server();
    let out = Command::new(&binary).arg(server.url("/")).arg("32").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("sent 32 MiB in 512 messages with "), "{stdout}");
    let drains: u64 = stdout.split(" with ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(drains >= 4, "{stdout}");
}

#[test]
fn install_puts_a_working_pkg_config_in_place() {
    let scratch = scratch_dir("install");
    let prefix = scratch.join("prefix");
    run(Command::new("bash")
        .arg(repo_dir().join("scripts/install.sh"))
        .env("PREFIX", &prefix)
        .env("BUILD_DIR", lib_dir()));
    for f in ["lib/libws.so", &format!("lib/{}", soname()), "lib/libws.a", "include/ws.h", "lib/pkgconfig/ws.pc"] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "ws"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    let app = scratch.join("app");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "cc -std=c99 -Wall -Wextra -Werror -pedantic {} {} {} -o {} {}",
        sanitize_flags().join(" "),
        repo_dir().join("tests/c/contract.c").display(),
        "-x none",
        app.display(),
        flags.trim()
    ));
    run(&mut cmd);
    let server = contract_server();
    let out = run(waiting(&app, WAIT).arg(server.url("/")).arg("chat").env("LD_LIBRARY_PATH", prefix.join("lib")));
    assert!(out.contains("all checks passed"), "{out}");

    // DESTDIR stages the same tree under another root.
    let stage = scratch.join("stage");
    run(Command::new("bash")
        .arg(repo_dir().join("scripts/install.sh"))
        .env("PREFIX", "/usr/local")
        .env("DESTDIR", &stage)
        .env("BUILD_DIR", lib_dir()));
    assert!(stage.join("usr/local/lib").join(soname()).exists());
    let pc = std::fs::read_to_string(stage.join("usr/local/lib/pkgconfig/ws.pc")).unwrap();
    assert!(pc.contains("prefix=/usr/local"), "{pc}");
}

#[test]
fn a_reset_does_not_kill_a_c_program_with_sigpipe() {
    let scratch = scratch_dir("sigpipe");
    let binary = scratch.join("sigpipe");
    compile(&repo_dir().join("tests/c/sigpipe.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    // The server reads a little, then resets the connection.
    let server = raw_server(|mut s| {
        raw_handshake(&mut s, "");
        let _ = read_frame(&mut s);
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    });
    let out = run(Command::new(&binary).arg(server.url("/")));
    assert!(out.contains("closed with 1006, still alive"), "{out}");
}

// sanitize: not asan: valgrind and ASan both replace malloc
#[test]
fn contract_program_under_valgrind_has_no_memory_errors_or_leaks() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        peer_missing::<()>("valgrind is not installed");
        return;
    }
    let scratch = scratch_dir("valgrind");
    let binary = scratch.join("contract");
    compile(&repo_dir().join("tests/c/contract.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let server = contract_server();
    // Valgrind runs one thread at a time and translates libws on first use.
    let out = run(waiting("valgrind", 6 * WAIT)
        .args(["--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"])
        .args(["--show-leak-kinds=definite,indirect"])
        .arg(&binary)
        .arg(server.url("/"))
        .arg("chat"));
    assert!(out.contains("contract: all checks passed"), "{out}");
    assert!(out.contains("ERROR SUMMARY: 0 errors"), "{out}");
}

#[test]
fn a_failing_ws_new_during_thread_exit_does_not_abort() {
    let scratch = scratch_dir("teardown");
    let binary = scratch.join("teardown");
    compile(&repo_dir().join("tests/c/teardown.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    // Its own process: an abort (a panic across extern "C") kills it alone.
    let out = Command::new(&binary).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exited with {}:\n{text}", out.status);
    assert!(text.contains("teardown: all checks passed"), "{text}");
}

/// The README's route without installing, command for command: `make
/// build`, then `cc -I include app.c -L target/release -lws -lpthread`, run
/// with `LD_LIBRARY_PATH=target/release` or linked with an rpath.
// sanitize: not asan: it links the uninstrumented target/release
#[test]
fn readme_route_without_installing_works() {
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).unwrap();
    let link = "cc -I include app.c -L target/release -lws -lpthread";
    for said in ["make build", link, "LD_LIBRARY_PATH=target/release", "-Wl,-rpath"] {
        assert!(readme.contains(said), "the README no longer says {said:?}");
    }
    let scratch = scratch_dir("readme-route");
    std::fs::write(
        scratch.join("app.c"),
        "#include <stdio.h>\n#include <ws.h>\n\
         int main(void) {\n\
             ws_socket *ws = ws_new(\"not a url\", NULL, 0, NULL);\n\
             printf(\"libws %s: %s\\n\", ws_version(), ws == NULL ? ws_strerror(ws_last_error_code()) : \"?\");\n\
             return ws == NULL && ws_last_error_code() == WS_ERR_SYNTAX ? 0 : 1;\n\
         }\n",
    )
    .unwrap();
    let release = repo_dir().join("target/release");
    // The link comes from `make build`, not from an earlier run.
    let _ = std::fs::remove_file(release.join(soname()));
    run(Command::new("make").arg("build").current_dir(repo_dir()));
    let in_repo = |line: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(line).current_dir(repo_dir()).env_remove("LD_LIBRARY_PATH");
        run(&mut cmd)
    };
    let (app, app_rpath) = (scratch.join("app"), scratch.join("app-rpath"));
    let src = scratch.join("app.c");
    in_repo(&format!("{} -o {}", link.replace("app.c", &src.display().to_string()), app.display()));
    let out = in_repo(&format!("LD_LIBRARY_PATH=target/release {}", app.display()));
    assert!(out.contains("libws 0.") && out.contains("syntax error"), "{out}");
    in_repo(&format!(
        "{} -Wl,-rpath,\"$PWD/target/release\" -o {}",
        link.replace("app.c", &src.display().to_string()),
        app_rpath.display()
    ));
    let out = in_repo(&app_rpath.display().to_string());
    assert!(out.contains("syntax error"), "{out}");
}

#[test]
fn c_program_sees_the_extension_against_a_compressing_server() {
    let scratch = scratch_dir("extensions-c");
    let binary = scratch.join("extensions");
    compile(&repo_dir().join("tests/c/extensions.c"), &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let server = pmd::pmd_echo_server("permessage-deflate; server_no_context_takeover");
    let out = run(waiting(&binary, WAIT).arg(server.url("/")));
    assert!(out.contains("extensions: permessage-deflate; server_no_context_takeover\n"), "{out}");
    assert!(out.contains("messages intact\n"), "{out}");
    assert!(out.contains("close 1000"), "{out}");
}

/// The C programs and libws are instrumented exactly when LIBWS_C_SANITIZE
/// asks (scripts/sanitize.sh, with a libws built under -Zsanitizer=address):
/// then a leak in a C program fails it, and libws.so calls into ASan;
/// otherwise the same program exits 0 and libws has no instrumentation.
#[test]
fn c_sanitizers_are_on_exactly_when_asked() {
    let asked = !sanitize_flags().is_empty();
    let scratch = scratch_dir("sanitize-live");
    let src = scratch.join("leak.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\n#include <string.h>\n#include <ws.h>\n\
         static void lose(void) { memset(malloc(64), 1, 64); }\n\
         int main(void) { lose(); return ws_version() != NULL ? 0 : 1; }\n",
    )
    .unwrap();
    let binary = scratch.join("leak");
    compile(&src, &binary, "cc", C_FLAGS, Link::Shared, &scratch);
    let out = Command::new(&binary).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(!out.status.success(), asked, "exit {}:\n{text}", out.status);
    assert_eq!(text.contains("LeakSanitizer: detected memory leaks"), asked, "{text}");
    let undefined = run(Command::new("nm").args(["-D", "--undefined-only"]).arg(lib_dir().join("libws.so")));
    assert_eq!(undefined.contains("__asan_report"), asked, "libws.so and LIBWS_C_SANITIZE disagree");
}
