//! The closing handshake (RFC 6455 7.1) as one value: where our close frame
//! is, whether the server's has come, whether the connection is failing,
//! and the one deadline that follows from them. Timers start when our close
//! frame is on the wire, not when it is queued, so that a backlog of sends
//! does not eat the close timeout, and "both close frames have crossed"
//! means both.

use crate::conn::cause::Failure;
use std::time::{Duration, Instant};

/// After both close frames have crossed, how long the server has to close
/// TCP before the client does (RFC 6455 7.1.1: the server closes first).
pub const TCP_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Where our close frame is.
#[derive(Debug, Default)]
enum Ours {
    /// Not asked for.
    #[default]
    NotAsked,
    /// Asked for; it is queued once `due` send commands have been taken
    /// (the sends accepted while OPEN go out before it).
    Pending { code: u16, reason: String, due: u64 },
    /// In the write queue, behind what was sent before it.
    Queued,
    /// Its last byte was written then.
    Sent(Instant),
}

/// The server's close frame: its code (1005 for none), reason, and when it
/// came.
#[derive(Debug)]
struct Theirs {
    code: u16,
    reason: String,
    at: Instant,
}

/// How a connection's closing handshake ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// It completed, both close frames sent and received: the server's
    /// code and reason.
    Clean { code: u16, reason: String },
    /// It did not (a timeout, a reset while our frame waited): 1006.
    Abnormal,
}

#[derive(Debug, Default)]
pub struct Closing {
    ours: Ours,
    theirs: Option<Theirs>,
    /// When our close frame was first asked for, and when the last byte
    /// before it was written: while it waits behind a backlog, the close
    /// timeout runs from the later of the two, so a server that stops
    /// reading cannot hold the connection open forever.
    asked_at: Option<Instant>,
    progress_at: Option<Instant>,
    /// Set by ws_free: the close timeout runs from then, since no one waits
    /// for this connection and its end must be bounded.
    bounded_from: Option<Instant>,
    /// The connection fails once its close frame is out, or at `until`.
    failing: Option<(Failure, Instant)>,
}

impl Closing {
    // ----- questions -----

    /// Our close frame is queued or written: no data frame may follow it
    /// (RFC 6455 5.5.1).
    pub fn ours_queued(&self) -> bool {
        matches!(self.ours, Ours::Queued | Ours::Sent(_))
    }

    /// Our close frame was asked for and waits for the sends before it.
    pub fn ours_pending(&self) -> bool {
        matches!(self.ours, Ours::Pending { .. })
    }

    /// Our close frame was asked for (queued or not).
    pub fn ours_asked(&self) -> bool {
        !matches!(self.ours, Ours::NotAsked)
    }

    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    /// When a failing connection gives up getting its close frame out.
    pub fn failing_until(&self) -> Option<Instant> {
        self.failing.as_ref().map(|f| f.1)
    }

    /// The nearest of the close timeout and the wait for TCP close.
    pub fn deadline(&self, close_timeout: Duration) -> Option<Instant> {
        let sent = match self.ours {
            Ours::Sent(at) => Some(at),
            _ => None,
        };
        let waiting = self.asked_at.map(|r| self.progress_at.map_or(r, |p| p.max(r)));
        let close = sent.or(self.bounded_from).or(waiting).map(|t| t + close_timeout);
        // Both frames crossed (the later of the two): the server has
        // TCP_CLOSE_WAIT to close TCP.
        let tcp = match (sent, &self.theirs) {
            (Some(w), Some(t)) => Some(w.max(t.at) + TCP_CLOSE_WAIT),
            _ => None,
        };
        match (close, tcp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The connection is gone: clean exactly when the closing handshake
    /// completed, both close frames sent and received (RFC 6455 7.1.4); a
    /// server's close frame whose answer never went out (a timeout, a
    /// reset while our frame waited) is 1006 (7.1.5 leaves the code to us
    /// then; ws.h promises 1006 for every end that is not clean).
    pub fn ending(&self) -> Ending {
        match (&self.theirs, &self.ours) {
            (Some(t), Ours::Sent(_)) => Ending::Clean { code: t.code, reason: t.reason.clone() },
            _ => Ending::Abnormal,
        }
    }

    // ----- changes -----

    /// Asks for our close frame, to go once `due` send commands have been
    /// taken. The first request decides the frame; a later one changes
    /// nothing but the clock's start, which stays the first.
    pub fn ask(&mut self, code: u16, reason: String, due: u64) {
        self.asked_at.get_or_insert_with(Instant::now);
        if let Ours::NotAsked = self.ours {
            self.ours = Ours::Pending { code, reason, due };
        }
    }

    /// ws_free: the close is bounded from now.
    pub fn bound(&mut self) {
        self.bounded_from.get_or_insert_with(Instant::now);
    }

    /// `taken` send commands have been taken: our close frame, if it waits
    /// for them, is to be queued now (returned once, as code and reason).
    pub fn due(&mut self, taken: u64) -> Option<(u16, String)> {
        match std::mem::take(&mut self.ours) {
            Ours::Pending { code, reason, due } if taken >= due => {
                self.ours = Ours::Queued;
                Some((code, reason))
            }
            other => {
                self.ours = other;
                None
            }
        }
    }

    /// A write made progress; `close_written`: our close frame's last byte
    /// is out.
    pub fn wrote(&mut self, progress: bool, close_written: bool) {
        let sent_now = close_written && !matches!(self.ours, Ours::Sent(_));
        // The clock is read only when something changes: this runs after
        // every write.
        if !progress && !sent_now {
            return;
        }
        let now = Instant::now();
        if progress {
            self.progress_at = Some(now);
        }
        if sent_now {
            self.ours = Ours::Sent(now);
        }
    }

    /// The server's close frame came. False if one had come before (the
    /// handshake is done; a second one is ignored).
    pub fn received(&mut self, code: u16, reason: String) -> bool {
        if self.theirs.is_some() {
            return false;
        }
        self.theirs = Some(Theirs { code, reason, at: Instant::now() });
        true
    }

    /// The connection fails (RFC 6455 7.1.7) once its close frame is out,
    /// or at `until`.
    pub fn fail(&mut self, failure: Failure, until: Instant) {
        self.failing = Some((failure, until));
    }

    /// The failure, once: the connection ends now.
    pub fn take_failure(&mut self) -> Option<Failure> {
        self.failing.take().map(|f| f.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::cause::Cause;

    #[test]
    fn deadlines_start_on_the_wire() {
        let timeout = Duration::from_secs(5);
        let mut c = Closing::default();
        assert_eq!(c.deadline(timeout), None, "not started");
        c.ask(1000, String::new(), 2);
        let asked = c.asked_at.unwrap();
        assert_eq!(c.deadline(timeout), Some(asked + timeout), "waiting behind sends: from the request");
        assert_eq!(c.due(1), None, "one send is still due");
        assert!(!c.ours_queued());
        assert_eq!(c.due(2), Some((1000, String::new())));
        assert_eq!(c.due(3), None, "queued once");
        assert!(c.ours_queued());
        assert!(c.received(1000, String::new()));
        assert!(!c.received(1001, String::new()), "a second close frame is ignored");
        assert_eq!(c.ending(), Ending::Abnormal, "theirs without ours written is not clean");
        c.wrote(true, true);
        let Ours::Sent(sent) = c.ours else { panic!("{:?}", c.ours) };
        let theirs = c.theirs.as_ref().unwrap().at;
        assert_eq!(c.deadline(timeout), Some((sent.max(theirs) + TCP_CLOSE_WAIT).min(sent + timeout)));
        assert_eq!(c.ending(), Ending::Clean { code: 1000, reason: String::new() });
    }

    #[test]
    fn a_freed_handles_close_is_bounded_from_the_request() {
        let timeout = Duration::from_secs(5);
        let mut c = Closing::default();
        c.bound();
        let from = c.bounded_from.unwrap();
        assert_eq!(c.deadline(timeout), Some(from + timeout));
        assert_eq!(c.ending(), Ending::Abnormal);
    }

    #[test]
    fn the_first_request_decides_the_frame() {
        let mut c = Closing::default();
        c.ask(3000, "first".into(), 0);
        c.ask(1001, "second".into(), 0);
        assert_eq!(c.due(0), Some((3000, "first".to_string())));
        assert!(!c.is_failing());
        c.fail(Failure::new(Cause::Protocol, "bad frame"), Instant::now());
        assert!(c.is_failing());
        assert_eq!(c.take_failure().map(|f| f.message).as_deref(), Some("bad frame"));
        assert_eq!(c.take_failure(), None);
    }
}
