//! The browser's WebSocket object in safe Rust: what the C boundary wraps.

use crate::connection::Connection;
use crate::error::{Error, ErrorKind};
use crate::event_loop::Loop;
use crate::options::Options;
use crate::shared::{ReadyState, Shared};
use crate::target::Target;
use std::ffi::{CStr, CString};
use std::sync::Arc;

/// Receives a connection's events, always on its loop's thread, one at a time.
pub trait Handler: Send {
    fn on_open(&mut self);
    /// `data` is followed in memory by one NUL byte not counted in its length.
    fn on_message(&mut self, data: &[u8], text: bool);
    fn on_error(&mut self, message: &CStr);
    fn on_close(&mut self, code: u16, reason: &CStr, was_clean: bool);
}

/// One connection. Dropping it does not close it: call `free`.
pub struct Client {
    shared: Arc<Shared>,
    /// Until `start`, what the connection will need.
    pending: Option<(Target, Options)>,
}

/// Browsers limit a close reason to 123 bytes (WHATWG close() step 2).
pub(crate) const MAX_CLOSE_REASON: usize = 123;

impl Client {
    /// The constructor's checks; nothing touches the network until `start`.
    pub fn new(url: &str, protocols: &[&str], options: &Options) -> Result<Client, Error> {
        let target = Target::parse(url, protocols)?;
        let url = CString::new(target.url.clone()).map_err(|_| Error::syntax("URL contains a NUL byte"))?;
        let lp = match &options.event_loop {
            Some(lp) => lp.clone(),
            // The default: a private loop on a thread of its own.
            None => Loop::new(true).map_err(|e| Error::os("cannot create the connection's event loop", &e))?,
        };
        let id = lp.allocate();
        let shared = Arc::new(Shared::new(url, options.max_buffered_amount, lp, id));
        let mut options = options.clone();
        options.event_loop = None;
        Ok(Client { shared, pending: Some((target, options)) })
    }

    /// Hands the connection to its loop, which connects at once.
    pub fn start(&mut self, handler: Box<dyn Handler>) -> Result<(), Error> {
        let Some((target, options)) = self.pending.take() else {
            return Err(Error::new(ErrorKind::Internal, "connection already started"));
        };
        let lp = self.shared.event_loop().clone();
        let conn = Connection::new(self.shared.clone(), handler, target, options);
        lp.register(self.shared.id(), Box::new(conn)).map_err(|e| {
            self.shared.abandon();
            Error::os("cannot start the connection's I/O thread", &e)
        })
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

    /// The state shared with the I/O thread: what `ws_new` holds to keep
    /// callbacks back and `ws_free` uses to stop them.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
