//! Keepalive (`ws_options_set_ping_interval_ms`): a ping once nothing has
//! been received for `interval`, and the connection declared dead when
//! nothing at all arrives within `timeout` of that ping (a pong or any
//! other frame: RFC 6455 5.5.2 lets a pong be late behind data).
//!
//! Input may come thousands of times a second, so it only notes a time:
//! the deadline the loop holds moves when it passes, and at the first input
//! after a ping. An idle connection wakes its loop once per interval (and
//! for the pong); a busy one at most once per interval.

use std::time::{Duration, Instant};

/// The most a keepalive ping takes on the wire: its frame (6 bytes) in a
/// TLS record at most.
const PING_RECORD: u32 = 64;

#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    /// When input last came.
    last_input: Instant,
    ping: Ping,
    /// When to look again: the deadline the loop holds (None while a ping
    /// waits to be written: no deadline runs then).
    check_at: Option<Instant>,
}

/// The keepalive ping that no input has followed yet.
#[derive(Debug, PartialEq, Eq)]
enum Ping {
    None,
    /// Queued behind what is being written: the pong timeout runs from its
    /// write, so that a backlog of our own data (a slow link, a slow but
    /// live reader) does not count against the peer. A peer that takes no
    /// data at all is TCP_USER_TIMEOUT's to end.
    Queued,
    /// Written then, with this many bytes of ours in the socket not yet
    /// acknowledged by the peer (the ping among them, at the end).
    Sent {
        at: Instant,
        unacked: u32,
    },
}

/// What a passed deadline asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Send a ping now.
    Ping,
    /// Nothing arrived within the timeout of the last ping.
    Dead,
}

impl Keepalive {
    /// Keepalive for a connection that opened (received its 101) at `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Keepalive {
        Keepalive { interval, timeout, last_input: now, ping: Ping::None, check_at: Some(now + interval) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes arrived at `now`.
    pub fn input(&mut self, now: Instant) {
        self.last_input = now;
        if std::mem::replace(&mut self.ping, Ping::None) != Ping::None {
            // Answered: the next ping is due an interval from now. The one
            // deadline move per ping, so the timer heap grows by one entry
            // per interval, however much input comes.
            self.check_at = Some(now + self.interval);
        }
    }

    /// The keepalive ping's last byte was written at `now` into a socket
    /// holding `unacked` bytes the peer has not acknowledged.
    pub fn ping_written(&mut self, now: Instant, unacked: u32) {
        if self.ping == Ping::Queued {
            self.ping = Ping::Sent { at: now, unacked };
            self.check_at = Some(now + self.timeout);
        }
    }

    /// At a `Due::Dead`: the peer acknowledged more of what went before
    /// the ping (`unacked` left now), so it is alive and reading, only
    /// slower than the timeout: the pong timeout starts again. True then.
    /// A kernel buffer of megabytes ahead of the ping drains at the
    /// peer's pace, and counting that against it would fail live peers.
    /// So the last timeout runs from about when the peer's TCP took the
    /// ping itself: from then on the answer is its program's to give.
    pub fn acknowledged_more(&mut self, now: Instant, unacked: u32) -> bool {
        match self.ping {
            // More than the ping's own record was waiting: a ping alone is
            // acknowledged at once by a live host and earns no extra time.
            Ping::Sent { unacked: before, .. } if unacked < before && before > PING_RECORD => {
                self.ping = Ping::Sent { at: now, unacked };
                self.check_at = Some(now + self.timeout);
                true
            }
            _ => false,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.check_at
    }

    /// The deadline passed (or a turn came at `now`): what to do.
    pub fn due(&mut self, now: Instant) -> Due {
        let Some(check_at) = self.check_at else { return Due::Nothing };
        if now < check_at {
            return Due::Nothing;
        }
        if matches!(self.ping, Ping::Sent { .. }) {
            return Due::Dead;
        }
        let idle_until = self.last_input + self.interval;
        if now < idle_until {
            self.check_at = Some(idle_until);
            return Due::Nothing;
        }
        self.ping = Ping::Queued;
        self.check_at = None;
        Due::Ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(1000);
    const T: Duration = Duration::from_millis(400);

    #[test]
    fn an_idle_connection_pings_each_interval_and_an_answer_restarts_the_interval() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(I, T, t0);
        assert_eq!(k.deadline(), Some(t0 + I));
        assert_eq!(k.due(t0 + I / 2), Due::Nothing, "not yet due");
        assert_eq!(k.due(t0 + I), Due::Ping);
        assert_eq!(k.deadline(), None, "no clock while the ping waits to be written");
        k.ping_written(t0 + I, 0);
        assert_eq!(k.deadline(), Some(t0 + I + T), "the pong is awaited");
        let pong = t0 + I + Duration::from_millis(3);
        k.input(pong);
        assert_eq!(k.deadline(), Some(pong + I), "an answer moves the deadline once");
        assert_eq!(k.due(pong + I), Due::Ping);
    }

    #[test]
    fn no_input_within_the_timeout_of_a_ping_is_a_dead_peer() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(I, T, t0);
        assert_eq!(k.due(t0 + I), Due::Ping);
        assert_eq!(k.due(t0 + I + T), Due::Nothing, "not written yet: no clock");
        let written = t0 + I + T;
        k.ping_written(written, 0);
        assert_eq!(k.due(written + T / 2), Due::Nothing);
        assert_eq!(k.due(written + T), Due::Dead, "the timeout runs from the write");
    }

    #[test]
    fn a_peer_that_acknowledges_more_gets_another_timeout() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(I, T, t0);
        assert_eq!(k.due(t0 + I), Due::Ping);
        k.ping_written(t0 + I, 4000);
        let t1 = t0 + I + T;
        assert_eq!(k.due(t1), Due::Dead);
        assert!(k.acknowledged_more(t1, 1000), "3000 bytes acknowledged meanwhile");
        assert_eq!(k.due(t1), Due::Nothing);
        assert_eq!(k.deadline(), Some(t1 + T));
        assert!(!k.acknowledged_more(t1 + T, 1000), "no progress since");
        let t2 = t1 + T;
        assert!(k.acknowledged_more(t2, 0), "the ping itself acknowledged: one more timeout from here");
        assert!(!k.acknowledged_more(t2 + T, 0), "all acknowledged long ago, and no answer");
        assert_eq!(k.due(t2 + T), Due::Dead);
    }

    #[test]
    fn input_while_the_ping_waits_counts_as_an_answer() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(I, T, t0);
        assert_eq!(k.due(t0 + I), Due::Ping);
        k.input(t0 + I + T);
        k.ping_written(t0 + I + T + T, 0);
        assert_eq!(k.deadline(), Some(t0 + I + T + I), "no pong awaited: the peer spoke");
    }

    #[test]
    fn input_between_pings_moves_no_deadline_until_it_passes() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(I, T, t0);
        for ms in (10..1000).step_by(10) {
            k.input(t0 + Duration::from_millis(ms));
            assert_eq!(k.deadline(), Some(t0 + I), "input only notes its time");
        }
        let last = t0 + Duration::from_millis(990);
        assert_eq!(k.due(t0 + I), Due::Nothing, "traffic flowed: no ping");
        assert_eq!(k.deadline(), Some(last + I), "looks again an interval after the last input");
    }
}
