//! Bad input from the caller, swept: every exported function with NULL for
//! each pointer argument, lengths of 0 and SIZE_MAX, text that is not
//! UTF-8, close codes and reasons at and past every limit (the code checked
//! before the reason), one `ws_options` used for several handles and
//! changed between them, and every libws function called from inside every
//! callback. Each call must give the result `ws.h` documents, and nothing
//! may crash.
//!
//! A hook's assertion would be lost inside a callback (libws catches the
//! panic), so hooks record what they saw and the test thread asserts.
//!
//! sanitize: asan

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
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::Message;
use ws::ffi::*;

fn text(p: *const c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

fn last_error_code() -> i32 {
    ws_last_error_code()
}

// ----- NULL for each pointer argument -----

/// Every exported function, each pointer argument NULL in turn (the others
/// valid): the documented result, and the thread's last error where ws.h
/// says one is set.
fn null_for_each_pointer_argument() {
    let server = echo_server();
    let url = CString::new(server.url("/")).unwrap();
    let chat = c"chat";
    let protocols = [chat.as_ptr()];
    unsafe {
        // ws_new / ws_new_with_options: url NULL.
        assert!(ws_new(std::ptr::null(), protocols.as_ptr(), 1, std::ptr::null()).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        assert!(!text(ws_last_error()).is_empty());
        let o = ws_options_new();
        assert!(!o.is_null());
        assert!(ws_new_with_options(std::ptr::null(), std::ptr::null(), 0, std::ptr::null(), o).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        // protocols NULL with a count, and a NULL entry.
        assert!(ws_new(url.as_ptr(), std::ptr::null(), 1, std::ptr::null()).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        let with_null = [chat.as_ptr(), std::ptr::null()];
        assert!(ws_new_with_options(url.as_ptr(), with_null.as_ptr(), 2, std::ptr::null(), o).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        // protocols NULL with 0, callbacks NULL, options NULL: all allowed.
        let ws = ws_new(url.as_ptr(), std::ptr::null(), 0, std::ptr::null());
        assert!(!ws.is_null());
        ws_free(ws);
        let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, std::ptr::null(), std::ptr::null());
        assert!(!ws.is_null());
        ws_free(ws);
        // A non-NULL protocols array with a count of 0 is not read.
        let ws = ws_new(url.as_ptr(), with_null.as_ptr(), 0, std::ptr::null());
        assert!(!ws.is_null());
        ws_free(ws);

        // The handle functions with a NULL handle.
        let null = std::ptr::null_mut::<ws_socket>();
        assert_eq!(ws_send_string(null, c"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_string(null, std::ptr::null(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(null, b"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(null, std::ptr::null(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_close(null, 1000, c"r".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_close(null, 0, std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_ready_state(null), 0);
        assert_eq!(ws_buffered_amount(null), 0);
        assert_eq!(text(ws_url(null)), "");
        assert_eq!(text(ws_protocol(null)), "");
        assert_eq!(text(ws_extensions(null)), "");
        ws_free(null);

        // The data pointers of a live handle NULL.
        let c = Client::open(&server.url("/"));
        assert_eq!(ws_send_string(c.ws, std::ptr::null(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(c.ws, std::ptr::null(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(c.buffered(), 0, "a refused send was counted");
        assert_eq!(ws_send_string(c.ws, std::ptr::null(), 0), WS_OK);
        assert_eq!(ws_send_bytes(c.ws, std::ptr::null(), 0), WS_OK);
        assert_eq!(wait_messages(&c, 2), vec![(vec![], true), (vec![], false)]);
        // A NULL reason is "no reason": a close frame without a code.
        assert_eq!(ws_close(c.ws, 0, std::ptr::null()), WS_OK);
        c.assert_closing_or_closed("close with a NULL reason");
        let (code, reason, clean) = close_event(&c);
        assert_eq!((code, reason.as_str(), clean), (1005, "", true));

        // ws_options_* with NULL options, then each string NULL.
        let no = std::ptr::null_mut::<ws_options>();
        ws_options_free(no);
        assert_eq!(ws_options_add_header(no, c"X-A".as_ptr(), c"1".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_connect_timeout_ms(no, 1000), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_message_size(no, 1000), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_close_timeout_ms(no, 1000), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_max_buffered_amount(no, 1000), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(no, c"/etc/hosts".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(no, c"x".as_ptr(), 1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(no, c"/a".as_ptr(), c"/b".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_danger_accept_invalid_certs(no, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_danger_accept_invalid_hostnames(no, true), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_loop(no, std::ptr::null_mut()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_add_header(o, std::ptr::null(), c"1".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT, "a refusing setter sets the last error");
        assert_eq!(ws_options_add_header(o, c"X-A".as_ptr(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(o, std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(o, std::ptr::null(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(o, std::ptr::null(), 10), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, std::ptr::null(), c"/b".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, c"/a".as_ptr(), std::ptr::null()), WS_ERR_INVALID_ARGUMENT);
        // A NULL loop is the default: each handle on a thread of its own.
        assert_eq!(ws_options_set_loop(o, std::ptr::null_mut()), WS_OK);
        // The options still work after all the refusals.
        let ws = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, std::ptr::null(), o);
        assert!(!ws.is_null());
        ws_free(ws);
        ws_options_free(o);

        // ws_loop_* with a NULL loop.
        let nl = std::ptr::null_mut::<ws_loop>();
        assert_eq!(ws_loop_start(nl), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_loop_run(nl, 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_loop_run(nl, -1), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_loop_fd(nl), -1);
        assert_eq!(ws_loop_timeout_ms(nl), -1);
        ws_loop_free(nl);

        // The functions without pointers never return NULL.
        for code in [WS_OK, WS_ERR_INVALID_STATE, WS_ERR_RESOURCE, -8, 1, i32::MIN, i32::MAX] {
            assert!(!text(ws_strerror(code)).is_empty(), "{code}");
        }
        assert_eq!(text(ws_version()), env!("CARGO_PKG_VERSION"));
    }
}

// ----- lengths of 0 and SIZE_MAX -----

/// A length of 0 with a valid pointer is an empty message; SIZE_MAX (no
/// buffer can be that long: Rust and C both cap objects at PTRDIFF_MAX) is
/// refused before a byte is read, in every state. Between a buffer's real
/// length and PTRDIFF_MAX the caller breaks the contract "points to `len`
/// bytes" and nothing is defined, so nothing is tested there.
fn lengths_zero_and_size_max() {
    let small = *b"abc";
    let (server, rx) = recording_server();
    unsafe {
        let c = Client::new(&server.url("/"));
        // While CONNECTING the length is refused first: INVALID_ARGUMENT,
        // not INVALID_STATE, for a length no buffer can have.
        assert_eq!(ws_send_string(c.ws, small.as_ptr().cast(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        c.wait_open();
        assert_eq!(ws_send_string(c.ws, small.as_ptr().cast(), 0), WS_OK);
        assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), 0), WS_OK);
        for len in [usize::MAX, usize::MAX - 13, isize::MAX as usize + 1] {
            assert_eq!(ws_send_string(c.ws, small.as_ptr().cast(), len), WS_ERR_INVALID_ARGUMENT, "{len}");
            assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), len), WS_ERR_INVALID_ARGUMENT, "{len}");
        }
        assert_eq!(c.buffered(), 0, "a refused send was counted");
        assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), 3), WS_OK);
        assert_eq!(c.close(1000, None), WS_OK);
        // While CLOSING: still refused, and not counted.
        assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        close_event(&c);
        // While CLOSED: the same.
        let before = c.buffered();
        assert_eq!(ws_send_string(c.ws, small.as_ptr().cast(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_send_bytes(c.ws, small.as_ptr(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(c.buffered(), before);
        let (_, t) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(t.messages, vec![Message::text(""), Message::binary(vec![]), Message::binary(b"abc".to_vec())]);
        assert_eq!(t.close, Some(Some((1000, String::new()))));

        // ws_options_set_ca_pem: 0 and SIZE_MAX are refused.
        let o = ws_options_new();
        assert_eq!(ws_options_set_ca_pem(o, small.as_ptr().cast(), 0), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(o, small.as_ptr().cast(), usize::MAX), WS_ERR_INVALID_ARGUMENT);
        // Numeric settings at their extremes.
        assert_eq!(ws_options_set_max_message_size(o, u64::MAX), WS_OK);
        assert_eq!(ws_options_set_max_buffered_amount(o, u64::MAX), WS_OK);
        assert_eq!(ws_options_set_connect_timeout_ms(o, u32::MAX), WS_OK);
        assert_eq!(ws_options_set_close_timeout_ms(o, u32::MAX), WS_OK);
        // The count of protocols: SIZE_MAX pointers cannot exist either.
        let chat = [c"chat".as_ptr()];
        let url = CString::new(server.url("/")).unwrap();
        assert!(ws_new_with_options(url.as_ptr(), chat.as_ptr(), usize::MAX, std::ptr::null(), o).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        assert!(ws_new(url.as_ptr(), chat.as_ptr(), usize::MAX / 2, std::ptr::null()).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        // The extreme settings make a working connection.
        let c = Client::try_with_options(&server.url("/"), &[], o, Recorder::new()).unwrap();
        ws_options_free(o);
        c.wait_open();
        assert_eq!(c.send_text("fine"), WS_OK);
        assert_eq!(c.close(1000, None), WS_OK);
        assert!(close_event(&c).2);
        let (_, t) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(t.messages, vec![Message::text("fine")]);

        // ws_loop_run: timeouts below -1 are refused, whatever the loop.
        let lp = ws_loop_new();
        for ms in [-2, i32::MIN] {
            assert_eq!(ws_loop_run(lp, ms), WS_ERR_INVALID_ARGUMENT, "{ms}");
        }
        assert_eq!(ws_loop_run(lp, 0), 0, "no connection on the loop");
        ws_loop_free(lp);
    }
}

// ----- text that is not UTF-8 -----

const NOT_UTF8: &[&[u8]] = &[
    b"\xff",
    b"ab\xc3",               // cut short at the end
    b"\x80abc",              // a lone continuation byte
    b"\xc0\x80",             // an overlong NUL
    b"\xed\xa0\x80",         // a UTF-16 surrogate
    b"\xf4\x90\x80\x80",     // above U+10FFFF
    b"\xf8\x88\x80\x80\x80", // a 5-byte form
    b"ok \xe2\x82 then",     // cut short in the middle
];

/// ws_send_string refuses each (nothing counted, nothing sent);
/// ws_send_bytes sends the same bytes as binary. Text with a NUL inside is
/// UTF-8 and goes out whole, `len` bytes.
fn text_that_is_not_utf8() {
    let (server, rx) = recording_server();
    let c = Client::open(&server.url("/"));
    unsafe {
        for bad in NOT_UTF8 {
            assert_eq!(ws_send_string(c.ws, bad.as_ptr().cast(), bad.len()), WS_ERR_INVALID_ARGUMENT, "{bad:?}");
        }
        assert_eq!(c.buffered(), 0, "a refused text was counted");
        for bad in NOT_UTF8 {
            assert_eq!(ws_send_bytes(c.ws, bad.as_ptr(), bad.len()), WS_OK);
        }
        assert_eq!(ws_send_string(c.ws, b"a\0b".as_ptr().cast(), 3), WS_OK);
    }
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    let (_, t) = rx.recv_timeout(WAIT).unwrap();
    let mut expected: Vec<Message> = NOT_UTF8.iter().map(|b| Message::binary(b.to_vec())).collect();
    expected.push(Message::text("a\0b"));
    assert_eq!(t.messages, expected);

    // Strings that are not UTF-8 elsewhere: the URL, a protocol, a header,
    // a close reason, a CA path.
    let url = CString::new(server.url("/")).unwrap();
    let bad = c"\xff\xfe";
    unsafe {
        assert!(ws_new(bad.as_ptr(), std::ptr::null(), 0, std::ptr::null()).is_null());
        assert_eq!(last_error_code(), WS_ERR_INVALID_ARGUMENT);
        let protocols = [bad.as_ptr()];
        assert!(ws_new(url.as_ptr(), protocols.as_ptr(), 1, std::ptr::null()).is_null());
        assert_eq!(last_error_code(), WS_ERR_SYNTAX, "a protocol that is not UTF-8 is not a token");
        let o = ws_options_new();
        assert_eq!(ws_options_add_header(o, bad.as_ptr(), c"v".as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_add_header(o, c"X-A".as_ptr(), bad.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_file(o, bad.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_client_cert(o, bad.as_ptr(), bad.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_options_set_ca_pem(o, bad.as_ptr(), 2), WS_ERR_INVALID_ARGUMENT);
        ws_options_free(o);
        let c = Client::open(&server.url("/"));
        assert_eq!(ws_close(c.ws, 1000, bad.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(ws_close(c.ws, 0, bad.as_ptr()), WS_ERR_INVALID_ARGUMENT);
        assert_eq!(c.state(), WS_OPEN, "a refused close changed the state");
        assert_eq!(c.close(1000, Some("now")), WS_OK);
        assert_eq!(close_event(&c), (1000, "now".to_string(), true));
    }
}

// ----- close codes and reasons at and past every limit -----

/// Each code at and around the limits, while OPEN: 0, 1000 and
/// 3000..=4999 close (0 without a code), the rest give
/// WS_ERR_INVALID_ACCESS and leave the connection open. Reasons: 123 bytes
/// pass, 124 give WS_ERR_SYNTAX, also when a multibyte character crosses
/// the boundary. The same checks hold while CONNECTING and CLOSED.
fn close_codes_and_reasons_at_every_limit() {
    let (server, rx) = recording_server();
    for code in [0u16, 999, 1000, 1001, 2999, 3000, 4999, 5000, 65535] {
        let c = Client::open(&server.url("/"));
        let r = c.close(code, None);
        let allowed = matches!(code, 0 | 1000 | 3000..=4999);
        if !allowed {
            assert_eq!(r, WS_ERR_INVALID_ACCESS, "{code}");
            assert_eq!(c.state(), WS_OPEN, "{code}");
            assert_eq!(c.close(1000, None), WS_OK);
        } else {
            assert_eq!(r, WS_OK, "{code}");
            c.assert_closing_or_closed(&code.to_string());
        }
        let (got, _, clean) = close_event(&c);
        assert!(clean);
        let (_, t) = rx.recv_timeout(WAIT).unwrap();
        match code {
            0 => {
                assert_eq!(got, 1005);
                assert_eq!(t.close, Some(None), "code 0: a close frame without a code");
            }
            _ if allowed => {
                assert_eq!(got, code);
                assert_eq!(t.close, Some(Some((code, String::new()))));
            }
            _ => assert_eq!(t.close, Some(Some((1000, String::new())))),
        }
    }

    let ok = [
        "r".repeat(123),
        format!("{}a", "é".repeat(61)),   // 123 bytes, 2-byte characters
        "€".repeat(41),                   // 123 bytes, 3-byte characters
        format!("{}abc", "𝄞".repeat(30)), // 123 bytes, 4-byte characters
        String::new(),
    ];
    let too_long = [
        "r".repeat(124),
        "é".repeat(62),                    // 124 bytes
        format!("a{}", "€".repeat(41)),    // 124 bytes, the last character crosses 123
        format!("{}abcd", "𝄞".repeat(30)), // 124 bytes
        "r".repeat(10_000),
    ];
    for reason in &ok {
        assert!(reason.len() <= 123);
        for code in [0u16, 1000, 4999] {
            let c = Client::open(&server.url("/"));
            assert_eq!(c.close(code, Some(reason)), WS_OK, "{code} {reason:?}");
            // A reason, even "", without a code is sent with 1000.
            let sent = if code == 0 { 1000 } else { code };
            assert_eq!(close_event(&c), (sent, reason.clone(), true));
            let (_, t) = rx.recv_timeout(WAIT).unwrap();
            assert_eq!(t.close, Some(Some((sent, reason.clone()))));
        }
    }
    let c = Client::open(&server.url("/"));
    for reason in &too_long {
        assert!(reason.len() > 123);
        for code in [0u16, 1000, 3000] {
            assert_eq!(c.close(code, Some(reason)), WS_ERR_SYNTAX, "{code} {}", reason.len());
        }
        // The code is checked first, as in browsers.
        assert_eq!(c.close(999, Some(reason)), WS_ERR_INVALID_ACCESS);
    }
    assert_eq!(c.state(), WS_OPEN);
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    rx.recv_timeout(WAIT).unwrap();
    // CLOSED: the arguments are still checked; a valid close does nothing.
    assert_eq!(c.close(999, None), WS_ERR_INVALID_ACCESS);
    assert_eq!(c.close(1000, Some(&too_long[0])), WS_ERR_SYNTAX);
    assert_eq!(c.close(1000, Some("again")), WS_OK);
    assert_eq!(c.state(), WS_CLOSED);
    assert_eq!(c.rec.events().iter().filter(|e| matches!(e, Ev::Close { .. })).count(), 1);

    // CONNECTING: the same checks, and a valid close fails the connection.
    let (silent, _held) = silent_server();
    let c = Client::new(&silent.url("/"));
    assert_eq!(c.close(5000, None), WS_ERR_INVALID_ACCESS);
    assert_eq!(c.close(1000, Some(&too_long[1])), WS_ERR_SYNTAX);
    assert_eq!(c.state(), WS_CONNECTING);
    assert_eq!(c.close(4999, Some(&ok[2])), WS_OK);
    assert_failed(&c);
}

#[test]
fn close_checks_the_code_before_the_reason_in_every_state() {
    // WHATWG close(): InvalidAccessError for the code (step 1) comes before
    // anything is done with the reason (step 2).
    let bad_reason = c"\xff\xfe";
    let (server, _held) = silent_server();
    let connecting = Client::new(&server.url("/"));
    let echo = echo_server();
    let open = Client::open(&echo.url("/"));
    for c in [&connecting, &open] {
        let r = unsafe { ws_close(c.ws, 999, bad_reason.as_ptr()) };
        assert_eq!(r, WS_ERR_INVALID_ACCESS, "state {}", c.state());
        let r = unsafe { ws_close(c.ws, 2999, bad_reason.as_ptr()) };
        assert_eq!(r, WS_ERR_INVALID_ACCESS, "state {}", c.state());
        // A good code: the reason is looked at, and refused.
        let r = unsafe { ws_close(c.ws, 1000, bad_reason.as_ptr()) };
        assert_eq!(r, WS_ERR_INVALID_ARGUMENT, "state {}", c.state());
    }
    assert_eq!(connecting.state(), WS_CONNECTING, "a refused close changes nothing");
    assert_eq!(open.state(), WS_OPEN, "a refused close changes nothing");
    assert_eq!(open.close(1000, None), WS_OK);
    assert_eq!(close_event(&open).0, 1000);
    let r = unsafe { ws_close(open.ws, 999, bad_reason.as_ptr()) };
    assert_eq!(r, WS_ERR_INVALID_ACCESS, "also while CLOSED");
}

// ----- one ws_options for several handles, changed between them -----

/// Each handle keeps the options as they were when it was made: a header
/// added later does not reach the earlier handle's request, a limit
/// changed later does not apply to it, and freeing the options at once
/// changes nothing.
fn one_options_for_several_handles() {
    // Sends a 200-byte message to each client, then records the rest.
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = ws_server(
        |_| None,
        move |mut ws, seen| {
            let _ = ws.send(Message::binary(vec![7u8; 200]));
            let t = read_all(&mut ws);
            let _ = tx.lock().unwrap().send((seen, t));
        },
    );
    unsafe {
        let o = ws_options_new();
        assert_eq!(ws_options_add_header(o, c"X-First".as_ptr(), c"1".as_ptr()), WS_OK);
        assert_eq!(ws_options_set_max_message_size(o, 100), WS_OK);
        let a = Client::try_with_options(&server.url("/a"), &[], o, Recorder::new()).unwrap();
        assert_eq!(ws_options_add_header(o, c"X-Second".as_ptr(), c"2".as_ptr()), WS_OK);
        assert_eq!(ws_options_set_max_message_size(o, 1000), WS_OK);
        let b = Client::try_with_options(&server.url("/b"), &[], o, Recorder::new()).unwrap();
        assert_eq!(ws_options_add_header(o, c"X-Third".as_ptr(), c"3".as_ptr()), WS_OK);
        assert_eq!(ws_options_set_max_message_size(o, 10), WS_OK);
        // Freed before either handshake is certain to have gone out.
        ws_options_free(o);

        // a: the 200-byte message is over its limit of 100.
        let message = assert_failed(&a);
        assert!(message.contains("100"), "{message}");
        // b: limit 1000, so it arrives.
        b.wait_open();
        assert_eq!(wait_messages(&b, 1), vec![(vec![7u8; 200], false)]);
        assert_eq!(b.close(1000, None), WS_OK);
        close_event(&b);

        let mut seen: Vec<(Seen, Transcript)> = (0..2).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        seen.sort_by(|x, y| x.0.path.cmp(&y.0.path));
        let (sa, ta) = &seen[0];
        let (sb, tb) = &seen[1];
        assert_eq!(sa.path, "/a");
        assert_eq!(sa.header("x-first").as_deref(), Some("1"));
        assert_eq!(sa.header("x-second"), None, "a header set later reached the earlier handle");
        assert_eq!(sa.header("x-third"), None);
        assert_eq!(ta.close, Some(Some((1009, String::new()))), "a fails with 1009");
        assert_eq!(sb.path, "/b");
        assert_eq!(sb.header("x-first").as_deref(), Some("1"));
        assert_eq!(sb.header("x-second").as_deref(), Some("2"));
        assert_eq!(sb.header("x-third"), None, "a header set later reached the earlier handle");
        assert_eq!(tb.close, Some(Some((1000, String::new()))));
    }
}

/// Options with a loop, then set back to none: the first handle runs on
/// the loop, the second on a thread of its own; freeing the loop and the
/// options leaves both working.
fn options_loop_changed_between_handles() {
    let server = echo_server();
    unsafe {
        let lp = ws_loop_new();
        let o = ws_options_new();
        assert_eq!(ws_options_set_loop(o, lp), WS_OK);
        let on_loop = Client::try_with_options(&server.url("/"), &[], o, Recorder::new());
        assert_eq!(ws_options_set_loop(o, std::ptr::null_mut()), WS_OK);
        // Not through Client: the test's mode would put it on its loop.
        let rec = Recorder::new();
        let callbacks = callbacks_for(&rec);
        let url = CString::new(server.url("/")).unwrap();
        let own = ws_new_with_options(url.as_ptr(), std::ptr::null(), 0, &callbacks, o);
        assert!(!own.is_null());
        ws_options_free(o);
        let on_loop = on_loop.unwrap();
        // Nobody runs the loop yet: its handle waits, the other opens.
        rec.wait_until(WAIT, "on_open of the handle on its own thread", |e| !e.is_empty());
        assert_eq!(ws_ready_state(own), WS_OPEN);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(on_loop.state(), WS_CONNECTING, "the loop ran without anyone running it");
        assert_eq!(ws_loop_run(lp, 0), 1, "one connection on the loop");
        assert_eq!(ws_loop_start(lp), WS_OK);
        on_loop.wait_open();
        ws_loop_free(lp);
        assert_eq!(on_loop.send_text("still works"), WS_OK);
        assert_eq!(wait_messages(&on_loop, 1), vec![(b"still works".to_vec(), true)]);
        ws_free(own);
    }
}

// ----- every libws function from inside every callback -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Message,
    Error,
    Close,
}

/// What one callback saw of each call it made.
#[derive(Debug, Default, Clone)]
struct Inside {
    state: i32,
    buffered_before: u64,
    send_string: i32,
    send_bytes: i32,
    send_bad_text: i32,
    buffered_after: u64,
    close_bad_code: i32,
    close_long_reason: i32,
    close: i32,
    state_after_close: i32,
    url: String,
    protocol: String,
    extensions: String,
    /// ws_loop_run, ws_loop_start, ws_loop_fd, ws_loop_timeout_ms on the
    /// handle's loop, when it has a ws_loop.
    loop_calls: Option<(i32, i32, i32, i32)>,
    /// A loop made and freed inside the callback.
    new_loop_ok: bool,
    /// The handle ws_new made inside the callback.
    new_handle: usize,
    freed: bool,
}

struct Probe {
    kind: Kind,
    /// The loop the handle runs on, when the test has one.
    lp: usize,
    /// Whether ws_loop_start may be called on it from inside (not while an
    /// application thread runs it: that thread would then be refused).
    may_start: bool,
    new_url: CString,
    new_rec: Arc<Recorder>,
    free_at_end: bool,
    seen: Mutex<Option<Inside>>,
}

unsafe fn call_everything(ws: *mut ws_socket, p: &Probe) -> Inside {
    let mut i = Inside { state: ws_ready_state(ws), buffered_before: ws_buffered_amount(ws), ..Inside::default() };
    i.send_string = ws_send_string(ws, c"inside".as_ptr(), 6);
    i.send_bytes = ws_send_bytes(ws, [1u8, 2, 3].as_ptr(), 3);
    i.send_bad_text = ws_send_string(ws, b"\xff".as_ptr().cast(), 1);
    i.buffered_after = ws_buffered_amount(ws);
    i.url = text(ws_url(ws));
    i.protocol = text(ws_protocol(ws));
    i.extensions = text(ws_extensions(ws));
    let lp = p.lp as *mut ws_loop;
    if !lp.is_null() {
        let start = if p.may_start { ws_loop_start(lp) } else { WS_ERR_INVALID_STATE };
        i.loop_calls = Some((ws_loop_run(lp, 0), start, ws_loop_fd(lp), ws_loop_timeout_ms(lp)));
    }
    let other = ws_loop_new();
    i.new_loop_ok = !other.is_null() && ws_loop_fd(other) >= 0 && ws_loop_run(other, 0) == 0;
    ws_loop_free(other);
    // A new handle, on the same loop as this one.
    let o = ws_options_new();
    ws_options_set_loop(o, lp);
    let callbacks = callbacks_for(&p.new_rec);
    i.new_handle = ws_new_with_options(p.new_url.as_ptr(), std::ptr::null(), 0, &callbacks, o) as usize;
    ws_options_free(o);
    i.close_bad_code = ws_close(ws, 1001, std::ptr::null());
    let long_reason = CString::new("r".repeat(124)).unwrap();
    i.close_long_reason = ws_close(ws, 1000, long_reason.as_ptr());
    i.close = ws_close(ws, 4000, c"bye".as_ptr());
    i.state_after_close = ws_ready_state(ws);
    if p.free_at_end {
        ws_free(ws);
        i.freed = true;
    }
    i
}

/// Checks what each call inside the callback returned against ws.h.
fn check_inside(kind: Kind, i: &Inside, url: &str, lp: *mut ws_loop) {
    let open = matches!(kind, Kind::Open | Kind::Message);
    assert_eq!(i.state, if open { WS_OPEN } else { WS_CLOSED }, "{kind:?}: {i:?}");
    // Sends: queued while OPEN, counted and discarded when CLOSED; both OK.
    assert_eq!((i.send_string, i.send_bytes), (WS_OK, WS_OK), "{kind:?}: {i:?}");
    assert_eq!(i.send_bad_text, WS_ERR_INVALID_ARGUMENT, "{kind:?}");
    if !open {
        assert_eq!(i.buffered_after, i.buffered_before + 9, "{kind:?}: counted while CLOSED");
    }
    assert_eq!(i.url, url.to_string(), "{kind:?}");
    let chosen = if kind == Kind::Error { "" } else { "chat" };
    assert_eq!(i.protocol, chosen, "{kind:?}");
    assert_eq!(i.extensions, "", "{kind:?}");
    assert_eq!(i.close_bad_code, WS_ERR_INVALID_ACCESS, "{kind:?}");
    assert_eq!(i.close_long_reason, WS_ERR_SYNTAX, "{kind:?}");
    assert_eq!(i.close, WS_OK, "{kind:?}");
    assert_eq!(i.state_after_close, if open { WS_CLOSING } else { WS_CLOSED }, "{kind:?}");
    assert!(i.new_loop_ok, "{kind:?}: a loop made inside a callback");
    assert_ne!(i.new_handle, 0, "{kind:?}: ws_new inside a callback gave NULL");
    match (current_mode(), i.loop_calls) {
        (Mode::OwnThread, calls) => assert_eq!(calls, None),
        (mode, Some((run, start, fd, timeout))) => {
            // Not re-entrant, and not while a library thread runs it.
            assert_eq!(run, WS_ERR_INVALID_STATE, "{kind:?} {mode:?}: ws_loop_run inside a callback");
            assert_eq!(start, WS_ERR_INVALID_STATE, "{kind:?} {mode:?}: started before");
            assert_eq!(fd, unsafe { ws_loop_fd(lp) }, "{kind:?}");
            assert!(fd >= 0);
            if mode == Mode::SharedLoop {
                assert_eq!(timeout, -1, "{kind:?}: a library thread runs the loop");
            } else {
                assert!(timeout >= -1, "{kind:?}: {timeout}");
            }
        }
        (mode, None) => panic!("{mode:?}: no loop calls"),
    }
}

/// After the probe: the probed handle ends as ws.h says, or, freed inside
/// the callback, shows nothing more.
fn finish(
    kind: Kind,
    free_at_end: bool,
    c: &Client,
    rec: &Arc<Recorder>,
    rx: &crossbeam_channel::Receiver<(Seen, Transcript)>,
) {
    if free_at_end {
        // The recorder shows an event only once its hook has returned, and
        // the hook set `seen` before that: wait for the probed event itself.
        rec.wait_until(WAIT, "the probed event", |e| e.iter().any(|e| is_kind(kind, e)));
        let n = rec.events().len();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rec.events().len(), n, "{kind:?}: a callback after ws_free: {:?}", rec.events());
        return;
    }
    let (code, reason, clean) = close_event(c);
    match kind {
        Kind::Open | Kind::Message => {
            assert_eq!((code, reason.as_str(), clean), (4000, "bye", true), "{kind:?}");
            let (_, t) = rx.recv_timeout(WAIT).unwrap();
            assert_eq!(t.messages, vec![Message::text("inside"), Message::binary(vec![1, 2, 3])], "{kind:?}");
            assert_eq!(t.close, Some(Some((4000, "bye".to_string()))), "{kind:?}");
        }
        Kind::Error => assert_eq!((code, clean), (1006, false)),
        Kind::Close => {
            assert_eq!((code, clean), (1000, true));
            let (_, t) = rx.recv_timeout(WAIT).unwrap();
            assert_eq!(t.messages, vec![], "sent while CLOSED, discarded");
        }
    }
    // Nothing after on_close.
    let evs = rec.events();
    assert!(matches!(evs.last(), Some(Ev::Close { .. })), "{kind:?}: {evs:?}");
}

/// The new handle made inside a callback opens; the test frees it.
fn check_new_handle(i: &Inside, new_rec: &Arc<Recorder>) {
    let evs = new_rec.wait_until(WAIT, "the inner handle's on_open", |e| !e.is_empty());
    assert_eq!(evs[0], Ev::Open { state: WS_OPEN });
    unsafe { ws_free(i.new_handle as *mut ws_socket) };
}

fn everything_inside_on_open() {
    for free in [false, true] {
        probe_kind(Kind::Open, free);
    }
}

fn everything_inside_on_message() {
    for free in [false, true] {
        probe_kind(Kind::Message, free);
    }
}

fn everything_inside_on_error() {
    for free in [false, true] {
        probe_kind(Kind::Error, free);
    }
}

fn everything_inside_on_close() {
    for free in [false, true] {
        probe_kind(Kind::Close, free);
    }
}

fn is_kind(kind: Kind, ev: &Ev) -> bool {
    matches!(
        (kind, ev),
        (Kind::Open, Ev::Open { .. })
            | (Kind::Message, Ev::Message { .. })
            | (Kind::Error, Ev::Error { .. })
            | (Kind::Close, Ev::Close { .. })
    )
}

/// As `probe`, with the server that each kind needs: for on_message one
/// that sends a message first, then records.
fn probe_kind(kind: Kind, free_at_end: bool) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx = Mutex::new(tx);
    let server = ws_server(
        |offered| offered.first().cloned(),
        move |mut ws, seen| {
            let _ = ws.send(Message::text("hello"));
            let t = read_all(&mut ws);
            let _ = tx.lock().unwrap().send((seen, t));
        },
    );
    let echo = echo_server();
    let lp = current_loop();
    let p = Arc::new(Probe {
        kind,
        lp: lp as usize,
        may_start: current_mode() == Mode::SharedLoop,
        new_url: CString::new(echo.url("/new")).unwrap(),
        new_rec: Recorder::new(),
        free_at_end,
        seen: Mutex::new(None),
    });
    let rec = Recorder::new();
    let hooked = p.clone();
    rec.set_hook(move |ws, ev| {
        let hit = is_kind(hooked.kind, ev);
        let mut seen = hooked.seen.lock().unwrap();
        if hit && seen.is_none() {
            *seen = Some(unsafe { call_everything(ws, &hooked) });
        }
    });
    let url = match kind {
        Kind::Error => format!("ws://127.0.0.1:{}/", closed_port()),
        _ => server.url("/"),
    };
    let mut c = Client::try_with(&url, &["chat"], None, rec.clone()).unwrap();
    if free_at_end {
        c.forget();
    }
    if kind == Kind::Close {
        rec.wait_until(WAIT, "on_open", |e| !e.is_empty());
        assert_eq!(c.close(1000, None), WS_OK);
    }
    poll_until("the probing callback", || p.seen.lock().unwrap().is_some());
    let i = p.seen.lock().unwrap().clone().unwrap();
    check_inside(kind, &i, &url, lp);
    finish(kind, free_at_end, &c, &rec, &rx);
    check_new_handle(&i, &p.new_rec);
}

// ----- the loop functions from inside a callback, on loops the test owns -----

/// Runs `lp` as an application does until ws_loop_run refuses (the loop
/// was started by a library thread) or `stop` is set; returns how it ended.
fn drive_until_refused(lp: *mut ws_loop, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<i32> {
    let lp = lp as usize;
    std::thread::spawn(move || {
        let lp = lp as *mut ws_loop;
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return WS_OK;
            }
            let r = unsafe { ws_loop_run(lp, 20) };
            if r < 0 {
                return r;
            }
        }
        i32::MIN
    })
}

/// ws_loop_start from inside a callback while the application runs the
/// loop: WS_OK; the application's next ws_loop_run is refused with
/// WS_ERR_INVALID_STATE, and a library thread runs the connection on.
#[test]
fn loop_started_from_inside_a_callback_of_an_application_loop() {
    let server = echo_server();
    let lp = ws_loop_new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = drive_until_refused(lp, stop.clone());
    let started = Arc::new(Mutex::new(None));
    let (s, lpu) = (started.clone(), lp as usize);
    let rec = Recorder::new();
    rec.set_hook(move |_, ev| {
        if let Ev::Open { .. } = ev {
            *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(unsafe { ws_loop_start(lpu as *mut ws_loop) });
        }
    });
    let mut c = None;
    in_loop(lp, || c = Some(Client::try_with(&server.url("/"), &[], None, rec).unwrap()));
    let c = c.unwrap();
    c.wait_open();
    // The hook ran before on_open was recorded; the poll shows its result.
    poll_until("ws_loop_start inside on_open", || started.lock().unwrap().is_some());
    assert_eq!(*started.lock().unwrap(), Some(WS_OK));
    assert_eq!(driver.join().unwrap(), WS_ERR_INVALID_STATE, "the application's run after the start");
    assert_eq!(c.send_text("on the library thread"), WS_OK);
    assert_eq!(wait_messages(&c, 1), vec![(b"on the library thread".to_vec(), true)]);
    assert_eq!(unsafe { ws_loop_run(lp, 0) }, WS_ERR_INVALID_STATE);
    assert_eq!(unsafe { ws_loop_timeout_ms(lp) }, -1, "a library thread runs it");
    assert_eq!(c.close(1000, None), WS_OK);
    assert!(close_event(&c).2);
    drop(c);
    unsafe { ws_loop_free(lp) };
}

/// ws_loop_free from inside a callback of one of its connections, on an
/// application loop and on a started one: the connection keeps working
/// on a library thread until it ends.
#[test]
fn loop_freed_from_inside_a_callback() {
    let server = echo_server();
    for app in [true, false] {
        let lp = ws_loop_new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let driver = if app {
            Some(drive_until_refused(lp, stop.clone()))
        } else {
            assert_eq!(unsafe { ws_loop_start(lp) }, WS_OK);
            None
        };
        let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, st, lpu) = (freed.clone(), stop.clone(), lp as usize);
        let rec = Recorder::new();
        rec.set_hook(move |_, ev| {
            if let Ev::Open { .. } = ev {
                // The driver runs this callback: it stops before its next run.
                st.store(true, std::sync::atomic::Ordering::SeqCst);
                unsafe { ws_loop_free(lpu as *mut ws_loop) };
                f.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let mut c = None;
        in_loop(lp, || c = Some(Client::try_with(&server.url("/"), &[], None, rec).unwrap()));
        let c = c.unwrap();
        c.wait_open();
        poll_until("ws_loop_free inside on_open", || freed.load(std::sync::atomic::Ordering::SeqCst));
        if let Some(d) = driver {
            assert_eq!(d.join().unwrap(), WS_OK, "the application stopped running the freed loop");
        }
        assert_eq!(c.send_text("after the free"), WS_OK);
        assert_eq!(wait_messages(&c, 1), vec![(b"after the free".to_vec(), true)], "app {app}");
        assert_eq!(c.close(1000, None), WS_OK);
        assert!(close_event(&c).2);
    }
}

every_mode!(
    null_for_each_pointer_argument,
    lengths_zero_and_size_max,
    text_that_is_not_utf8,
    close_codes_and_reasons_at_every_limit,
    one_options_for_several_handles,
    everything_inside_on_open,
    everything_inside_on_message,
    everything_inside_on_error,
    everything_inside_on_close,
);

/// Not in every mode: it makes its own loop and runs it.
#[test]
fn options_loop_changed_between_handles_on_own_thread() {
    options_loop_changed_between_handles();
}
