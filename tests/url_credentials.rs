//! Credentials in the URL, used as a browser uses them (the Fetch
//! standard's 401 handling, which the WebSocket standard's handshake goes
//! through; web-platform test websockets/basic-auth.any.js): nothing is
//! sent unasked; a 401 with a Basic challenge is answered once, on a new
//! connection, with the percent-decoded userinfo; a second 401 is the
//! failure; an Authorization header the application set is sent as it is,
//! and never replaced. The password appears in no error text.
//!
//! sanitize: asan

mod common;
#[path = "support/frames.rs"]
mod frames;
#[path = "support/handles/mod.rs"]
mod handles;
#[path = "support/servers.rs"]
mod servers;

use handles::*;
use servers::*;
use std::sync::{Arc, Mutex};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use ws::ffi::*;

/// "Basic base64(user:p@ss w)": what the URL below decodes to.
const EXPECTED: &str = "Basic dXNlcjpwQHNzIHc=";
const PASSWORD_IN_URL: &str = "p%40ss%20w";

type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A server behind Basic authentication: a request without `expected` as
/// its Authorization gets 401 (with `challenge` as WWW-Authenticate, if
/// any). Records each request's Authorization; echoes once open.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
fn guarded_server(expected: &'static str, challenge: Option<&'static str>) -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let server = raw_server(move |stream| {
        let record = record.clone();
        let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("?").to_string());
            record.lock().unwrap().push(auth.clone());
            if auth.as_deref() == Some(expected) {
                return Ok(resp);
            }
            let mut answer = tungstenite::http::Response::builder().status(401);
            if let Some(c) = challenge {
                answer = answer.header("WWW-Authenticate", c);
            }
            Err(answer.body(Some("who are you?".to_string())).unwrap())
        };
        if let Ok(ws) = tungstenite::accept_hdr(stream, check) {
            echo(ws);
        }
    });
    (server, seen)
}

fn url_with_credentials(server: &Server) -> String {
    format!("ws://user:{PASSWORD_IN_URL}@127.0.0.1:{}/private", server.port)
}

fn requests(seen: &Seen) -> Vec<Option<String>> {
    seen.lock().unwrap().clone()
}

fn a_challenge_is_answered_once_and_the_connection_opens() {
    let (server, seen) = guarded_server(EXPECTED, Some("Basic realm=\"libws\", charset=\"UTF-8\""));
    let url = url_with_credentials(&server);
    let c = Client::new(&url);
    c.wait_open();
    assert_eq!(requests(&seen), vec![None, Some(EXPECTED.to_string())], "none unasked, then Basic");
    assert_eq!(c.url(), url, "ws_url keeps the userinfo, as the browser's url does");
    assert_eq!(c.send_text("behind the door"), WS_OK);
    assert_eq!(wait_messages(&c, 1)[0], (b"behind the door".to_vec(), true));
    assert_eq!(c.close(1000, None), WS_OK);
    assert_eq!(close_event(&c), (1000, String::new(), true));
    assert!(!c.rec.events().iter().any(|e| matches!(e, Ev::Error { .. })), "the first 401 is no error");
}

fn a_refused_retry_is_one_failure() {
    let (server, seen) = guarded_server("Basic c29tZW9uZTplbHNl", Some("Basic realm=\"libws\""));
    let c = Client::new(&url_with_credentials(&server));
    let e = assert_failed(&c);
    assert!(e.starts_with("unexpected HTTP status 401 Unauthorized"), "{e}");
    assert!(!e.contains("p@ss") && !e.contains(PASSWORD_IN_URL) && !e.contains("dXNlcjpw"), "{e}");
    let errors = c.rec.events().iter().filter(|e| matches!(e, Ev::Error { .. })).count();
    assert_eq!(errors, 1);
    assert_eq!(requests(&seen), vec![None, Some(EXPECTED.to_string())], "one retry, no more");
}

every_mode!(a_challenge_is_answered_once_and_the_connection_opens, a_refused_retry_is_one_failure);

/// Over ws:// anyone on the path reads an Authorization header: a server
/// that does not ask gets none.
#[test]
fn no_credentials_are_sent_unasked() {
    let (server, rx) = recording_server();
    let c = Client::new(&format!("ws://user:{PASSWORD_IN_URL}@127.0.0.1:{}/", server.port));
    c.wait_open();
    assert_eq!(c.close(1000, None), WS_OK);
    close_event(&c);
    let (seen, _) = rx.recv_timeout(common::WAIT).unwrap();
    assert_eq!(seen.header("authorization"), None);
}

/// The application's own Authorization goes out as it is, on the first
/// request, and a challenge then is the failure: libws never replaces it.
#[test]
fn the_applications_authorization_header_is_sent_as_it_is() {
    let (server, seen) = guarded_server(EXPECTED, Some("Basic realm=\"libws\""));
    let opts = Opts { headers: vec![("Authorization".into(), "Bearer app-token".into())], ..Default::default() };
    let c = Client::with(&url_with_credentials(&server), &[], &opts);
    assert!(assert_failed(&c).starts_with("unexpected HTTP status 401"));
    assert_eq!(requests(&seen), vec![Some("Bearer app-token".to_string())]);
    // And when it is what the server wants, it opens at once.
    let (server, seen) = guarded_server("Bearer app-token", Some("Basic realm=\"libws\""));
    let c = Client::with(&url_with_credentials(&server), &[], &opts);
    c.wait_open();
    assert_eq!(requests(&seen), vec![Some("Bearer app-token".to_string())]);
}

/// No retry without credentials in the URL, nor for a challenge other
/// than Basic, nor for a 401 that challenges nothing.
#[test]
fn only_a_basic_challenge_with_credentials_is_retried() {
    let cases: [(&str, Option<&'static str>); 3] =
        [("", Some("Basic realm=\"libws\"")), ("user:pw@", Some("Bearer realm=\"basic\"")), ("user:pw@", None)];
    for (userinfo, challenge) in cases {
        let (server, seen) = guarded_server(EXPECTED, challenge);
        let c = Client::new(&format!("ws://{userinfo}127.0.0.1:{}/", server.port));
        let e = assert_failed(&c);
        assert!(e.starts_with("unexpected HTTP status 401"), "{e}");
        assert_eq!(requests(&seen), vec![None], "{userinfo:?} {challenge:?}");
    }
}
