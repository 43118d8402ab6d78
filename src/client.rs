//! The browser's WebSocket object in safe Rust: what the C boundary wraps.

use crate::conn::cause::Cause;
use crate::conn::connection::{self, ConnLoop, Connection};
use crate::conn::options::Options;
use crate::conn::shared::{ReadyState, Shared};
use crate::error::{Error, ErrorKind};
use crate::proto::target::Target;
use crate::runtime::event_loop::{ConnId, Loop};
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::conn::connection::Handler;

/// One connection. Dropping it does not close it: call `free`.
pub struct Client {
    shared: Arc<Shared>,
    /// Until `start`, what the connection will need and where it runs.
    pending: Mutex<Option<Pending>>,
}

struct Pending {
    target: Target,
    options: Options,
    lp: Arc<ConnLoop>,
    id: ConnId,
}

/// Browsers limit a close reason to 123 bytes (WHATWG close() step 2).
pub(crate) const MAX_CLOSE_REASON: usize = 123;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

impl Client {
    /// The constructor's checks; nothing touches the network until `start`.
    /// `lp`: the loop to run on; None: a private loop on a thread of its own.
    pub fn new(url: &str, protocols: &[&str], options: &Options, lp: Option<Arc<ConnLoop>>) -> Result<Client, Error> {
        let target = Target::parse(url, protocols)?;
        let url = CString::new(target.url.clone()).map_err(|_| Error::syntax("URL contains a NUL byte"))?;
        let lp = match lp {
            Some(lp) => lp,
            None => Loop::private().map_err(|e| Error::os("cannot create the connection's event loop", &e))?,
        };
        let id = lp.allocate();
        let link = connection::link(lp.clone(), id);
        let shared = Arc::new(Shared::new(url, options.max_buffered_amount, options.drain_mark, link));
        let mut options = options.clone();
        options.proxy = options.proxy.for_connection(&target, options.unix_socket.is_some());
        let pending = Pending { target, options, lp, id };
        Ok(Client { shared, pending: Mutex::new(Some(pending)) })
    }

    /// Hands the connection to its loop, which connects at once.
    pub fn start(&self, handler: Box<dyn Handler>) -> Result<(), Error> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(Pending { target, options, lp, id }) = pending else {
            return Err(Error::new(ErrorKind::Internal, "connection already started"));
        };
        let conn = Connection::new(self.shared.clone(), handler, target, options);
        lp.register(id, Box::new(conn)).map_err(|e| {
            self.shared.abandon();
            Error::os("cannot start the connection's I/O thread", &e)
        })
    }

    /// Keeps every callback of this connection from starting while the
    /// guard lives: `ws_new` holds it until it has returned the handle.
    pub fn hold_callbacks(&self) -> MutexGuard<'_, ()> {
        self.shared.hold_callbacks()
    }

    /// What frees the handle: it stops every callback, lets the loop close
    /// with 1001 in the background, and drops `release` (the handle's
    /// memory, which holds this `Client`) once no callback of it runs. It
    /// keeps what it needs alive itself, since `release` may go at once.
    pub fn freer(&self) -> impl FnOnce(Box<dyn Send>) {
        let shared = self.shared.clone();
        move |release| shared.free(release)
    }

    pub fn send_text(&self, text: &[u8]) -> Result<(), Error> {
        if std::str::from_utf8(text).is_err() {
            return Err(Error::invalid_argument("text message is not valid UTF-8"));
        }
        self.shared.send(text, true)
    }

    pub fn send_binary(&self, data: &[u8]) -> Result<(), Error> {
        self.shared.send(data, false)
    }

    /// A ping with `data` as its payload; its pong reaches `on_pong`.
    pub fn ping(&self, data: &[u8]) -> Result<(), Error> {
        // RFC 6455 5.5: a control frame's payload is at most 125 bytes.
        if data.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::invalid_argument(format!(
                "ping payload is {} bytes, over the limit of {MAX_CONTROL_PAYLOAD}",
                data.len()
            )));
        }
        self.shared.ping(data)
    }

    /// `code` 0 is "no code"; `reason` None is "no reason" (WHATWG close()).
    /// A reason that is present, even empty, without a code means 1000, as
    /// the browser's `close(undefined, "")` sends it. The code is checked
    /// before the reason is looked at (WHATWG close() steps 1 and 2), so a
    /// bad code wins over a reason that is not UTF-8.
    pub fn close(&self, code: u16, reason: Option<&[u8]>) -> Result<(), Error> {
        if code != 0 && code != 1000 && !(3000..=4999).contains(&code) {
            return Err(Error::new(
                ErrorKind::InvalidAccess,
                format!("close code {code} is neither 1000 nor in 3000..4999"),
            ));
        }
        let reason = match reason.map(std::str::from_utf8) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(_)) => return Err(Error::invalid_argument("close reason is not valid UTF-8")),
        };
        let code = if code == 0 && reason.is_some() { 1000 } else { code };
        let reason = reason.unwrap_or("");
        if reason.len() > MAX_CLOSE_REASON {
            return Err(Error::syntax(format!(
                "close reason is {} bytes, over the limit of {MAX_CLOSE_REASON}",
                reason.len()
            )));
        }
        self.shared.close(code, reason.to_string());
        Ok(())
    }

    pub fn ready_state(&self) -> ReadyState {
        self.shared.state()
    }

    /// false: stop reading the socket (TCP pushes back on the server);
    /// true: read again.
    pub fn set_receiving(&self, on: bool) {
        self.shared.set_receiving(on);
    }

    /// The status of the server's answer to the upgrade; 0 before one.
    pub fn response_status(&self) -> u16 {
        self.shared.response_status()
    }

    /// The first value of a header of that answer, as a C string owned by
    /// the handle.
    pub fn response_header(&self, name: &[u8]) -> Option<*const std::ffi::c_char> {
        self.shared.response_header(name)
    }

    /// Why the connection ended, and the OS error behind it (0: none).
    pub fn cause(&self) -> (Cause, i32) {
        self.shared.cause()
    }

    pub fn buffered_amount(&self) -> u64 {
        self.shared.buffered_amount()
    }

    pub fn url(&self) -> &CStr {
        self.shared.url()
    }

    pub fn protocol(&self) -> &CStr {
        self.shared.protocol()
    }

    pub fn extensions(&self) -> &CStr {
        self.shared.extensions()
    }
}
