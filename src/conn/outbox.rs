//! What a connection sends: bufferedAmount, the frames waiting for the
//! socket, and the path by which a caller's thread may write a frame to a
//! plain socket itself. The caller's side (`reserve`, `copy`, `try_direct`)
//! runs on any thread; the loop's side works through `lock`, whose guard
//! holds the queue while the loop's thread takes commands and writes.

use crate::error::{Error, ErrorKind};
use crate::proto::extensions::DeflateParams;
use crate::proto::frames::{Writer, HEADROOM};
use crate::transport::net::RawSocket;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// At most this many spare buffers of at most this size are kept per
/// connection (512 KiB at the most).
const SPARE_BUFFERS: usize = 8;
const SPARE_BUFFER_MAX: usize = 64 * 1024;

/// In `Outbox::buffered`: a send took bufferedAmount above the drain mark,
/// and on_drain is due once it falls back. One atomic with the amount, so
/// that "fell to the mark" and "disarmed" are one step against a racing
/// send that arms it again.
const ARMED: u64 = 1 << 63;

pub struct Outbox {
    queue: Mutex<Queue>,
    /// bufferedAmount, with the `ARMED` bit.
    buffered: AtomicU64,
    /// on_drain's low mark (`ws_options_set_on_drain`); None: no on_drain.
    drain_mark: Option<u64>,
    /// 0: no limit, as in browsers.
    max_buffered: u64,
    /// Send commands queued for the loop and not yet taken (changed under
    /// the queue's lock when taken): a thread writes directly only when
    /// none is, so that no message overtakes one sent before it.
    untaken: AtomicU64,
    /// When the last send was written directly, in ns since `epoch()`.
    last_direct: AtomicU64,
    /// Set once the connection is open on a plain socket without
    /// compression: only then may senders try to write directly (checked
    /// before taking the queue's lock, which the loop holds to compress).
    direct_allowed: AtomicBool,
    /// Written send buffers, for the next sends to reuse: the sending
    /// thread allocates and the loop's thread frees, a pattern that makes
    /// malloc return and re-fault pages on every burst. Most recent last.
    /// A plain list under its own lock: a connection that never sends
    /// allocates nothing for it (a channel cost every connection 0.9 KiB).
    spare: Mutex<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct Queue {
    /// Frames waiting for the socket, in order.
    writer: Writer,
    /// The plain TCP socket while other threads may write to it directly;
    /// None under TLS and once the loop closes the socket (under this
    /// lock, so that no thread writes to an fd that was closed and reused).
    direct_fd: Option<RawFd>,
    /// Sends pushed into `writer` (or written) so far.
    sends_taken: u64,
}

/// What became of a send offered for a direct write.
pub enum Direct {
    /// Written whole.
    Written,
    /// Queued, partly written or not at all: the loop must write the rest.
    Unfinished,
    /// Not tried: the buffer goes to the loop as a command.
    NotNow(Vec<u8>),
}

impl Outbox {
    pub fn new(max_buffered: u64, drain_mark: Option<u64>) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue::default()),
            buffered: AtomicU64::new(0),
            drain_mark,
            max_buffered,
            untaken: AtomicU64::new(0),
            last_direct: AtomicU64::new(0),
            direct_allowed: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        }
    }

    // ----- the caller's side (any thread) -----

    /// bufferedAmount (WHATWG): bytes accepted by send() and not yet
    /// written, plus every byte sent while CLOSING or CLOSED.
    pub fn buffered_amount(&self) -> u64 {
        self.buffered.load(Ordering::SeqCst) & !ARMED
    }

    /// Whether on_drain is due: armed, and bufferedAmount at or under the
    /// mark. Disarms when it is (once per crossing).
    pub fn take_drain(&self) -> bool {
        let Some(mark) = self.drain_mark else { return false };
        let update = |cur: u64| (cur & ARMED != 0 && cur & !ARMED <= mark).then_some(cur & !ARMED);
        self.buffered.fetch_update(Ordering::SeqCst, Ordering::SeqCst, update).is_ok()
    }

    /// Armed and at or under the mark: on_drain is due (without taking it).
    pub fn drain_due(&self) -> bool {
        let cur = self.buffered.load(Ordering::SeqCst);
        self.drain_mark.is_some_and(|mark| cur & ARMED != 0 && cur & !ARMED <= mark)
    }

    /// Counts `len` more bytes, unless that would pass the max buffered
    /// amount.
    pub fn reserve(&self, len: u64) -> Result<(), Error> {
        let (limit, mark) = (self.max_buffered, self.drain_mark);
        let update = |cur: u64| {
            let next = (cur & !ARMED).checked_add(len).filter(|n| n & ARMED == 0)?;
            let armed = if mark.is_some_and(|m| next > m) { ARMED } else { cur & ARMED };
            (limit == 0 || next <= limit).then_some(next | armed)
        };
        self.buffered.fetch_update(Ordering::SeqCst, Ordering::SeqCst, update).map(|_| ()).map_err(|cur| {
            let cur = cur & !ARMED;
            Error::new(
                ErrorKind::BufferFull,
                format!("{len} bytes more would exceed the max buffered amount {limit} (now {cur})"),
            )
        })
    }

    /// Takes back a `reserve` whose send did not happen.
    pub fn unreserve(&self, len: u64) {
        self.buffered.fetch_sub(len, Ordering::SeqCst);
    }

    /// A send while CLOSING or CLOSED: counted, never sent (WHATWG send()
    /// step 3), and never limited.
    pub fn count_dropped(&self, len: u64) {
        // Saturating below the ARMED bit: no count reaches 2^63 bytes.
        let _ = self.buffered.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
            Some(((cur & !ARMED).saturating_add(len).min(ARMED - 1)) | (cur & ARMED))
        });
    }

    /// A copy of `data` with HEADROOM free bytes in front, in a spare
    /// buffer when one fits. The size is the caller's: the allocation may
    /// fail, and then the send is refused rather than the process aborted.
    pub fn copy(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let len = data.len().checked_add(HEADROOM).ok_or_else(|| out_of_memory(data.len()))?;
        let spare = self.lock_spare().pop();
        let mut buf = match spare {
            Some(mut buf) if buf.capacity() >= len => {
                buf.clear();
                buf
            }
            _ => Vec::new(),
        };
        buf.try_reserve_exact(len).map_err(|_| out_of_memory(data.len()))?;
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(data);
        Ok(buf)
    }

    /// A send command is on its way to the loop.
    pub fn queued_for_loop(&self) {
        self.untaken.fetch_add(1, Ordering::SeqCst);
    }

    /// From a thread other than the loop's, with nothing queued before it:
    /// writes the frame to the socket here, saving the hand-off to the
    /// loop and back. Whatever the socket does not take stays queued for
    /// the loop.
    ///
    /// Only an isolated send goes direct: one that follows the previous
    /// direct send within BURST is part of a burst, which the loop writes
    /// with one writev for many frames instead of a syscall each.
    ///
    /// Why the loop need not hear of a direct write that finished: it
    /// happens only while OPEN (the caller holds the state's gate), with
    /// nothing queued before it (the writer empty, no send command
    /// untaken) and under the queue's lock. So the loop's epoll interest
    /// (output pending or not) stays right, and the closing handshake's
    /// clocks are untouched: they start when a close is asked for, after
    /// which no send is written (sends while CLOSING are only counted), and
    /// count the loop's own write progress from there. A direct write that
    /// left bytes queued returns `Unfinished`, and the caller tells the
    /// loop, which watches for room to write and writes the rest itself.
    pub fn try_direct(&self, buf: Vec<u8>, text: bool) -> Direct {
        const BURST: u64 = 10_000; // ns
        if !self.direct_allowed.load(Ordering::Relaxed) {
            return Direct::NotNow(buf);
        }
        let now = epoch().elapsed().as_nanos() as u64;
        if now.saturating_sub(self.last_direct.swap(now, Ordering::Relaxed)) < BURST {
            return Direct::NotNow(buf);
        }
        let mut q = self.lock_queue();
        let fd = match q.direct_fd {
            Some(fd) if q.writer.is_empty() && self.untaken.load(Ordering::SeqCst) == 0 => fd,
            _ => return Direct::NotNow(buf),
        };
        q.writer.push_data(buf, text);
        q.sends_taken += 1;
        let written = q.writer.write_to(&mut RawSocket(fd), |n, buf| self.written(n, buf));
        if written.is_err() || !q.writer.is_empty() {
            // The loop writes the rest when there is room, or finds out
            // what became of the socket.
            return Direct::Unfinished;
        }
        Direct::Written
    }

    // ----- the loop's side -----

    /// The queue, for the loop's thread.
    pub fn lock(&self) -> Queued<'_> {
        Queued { q: self.lock_queue(), outbox: self }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A data frame's last byte was written: bufferedAmount drops by its
    /// payload's length, and its buffer may serve a later send. The one
    /// place where bufferedAmount goes down for a sent message.
    fn written(&self, len: u64, buf: Vec<u8>) {
        self.buffered.fetch_sub(len, Ordering::SeqCst);
        if buf.capacity() <= SPARE_BUFFER_MAX + HEADROOM {
            let mut spare = self.lock_spare();
            if spare.len() < SPARE_BUFFERS && spare.try_reserve(1).is_ok() {
                spare.push(buf);
            }
        }
    }

    fn lock_spare(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The queue, held by the loop's thread (or by `try_direct`).
pub struct Queued<'a> {
    q: MutexGuard<'a, Queue>,
    outbox: &'a Outbox,
}

impl Queued<'_> {
    pub fn is_empty(&self) -> bool {
        self.q.writer.is_empty()
    }

    /// Send commands taken (or written directly) so far.
    pub fn sends_taken(&self) -> u64 {
        self.q.sends_taken
    }

    /// Takes a send command; its frame is queued unless `drop` (a send
    /// after our close frame, which RFC 6455 5.5.1 forbids).
    pub fn take_send(&mut self, buf: Vec<u8>, text: bool, drop: bool) {
        self.outbox.untaken.fetch_sub(1, Ordering::SeqCst);
        self.q.sends_taken += 1;
        if !drop {
            self.q.writer.push_data(buf, text);
        }
    }

    pub fn push_close(&mut self, code: u16, reason: &str) {
        self.q.writer.push_close(code, reason);
    }

    pub fn push_ping(&mut self, payload: &[u8]) {
        self.q.writer.push_ping(payload);
    }

    pub fn push_keepalive_ping(&mut self) {
        self.q.writer.push_keepalive_ping();
    }

    pub fn take_keepalive_ping_written(&mut self) -> bool {
        self.q.writer.take_keepalive_ping_written()
    }

    pub fn push_pong(&mut self, payload: &[u8]) {
        self.q.writer.push_pong(payload);
    }

    /// Whether our close frame's last byte has been written.
    pub fn close_written(&self) -> bool {
        self.q.writer.close_written()
    }

    /// Writes what `stream` takes now; bufferedAmount drops by each data
    /// frame's size once its last byte is written. Returns the bytes
    /// written.
    pub fn write_to(&mut self, stream: &mut impl Write) -> io::Result<usize> {
        let outbox = self.outbox;
        self.q.writer.write_to(stream, |n, buf| outbox.written(n, buf))
    }

    /// The connection is open: compress with `deflate` (when agreed; not
    /// messages under `threshold` bytes), keep
    /// the bytes a blocked TLS write offered (`tls_gather`: the most one
    /// offers), and, on a plain socket without compression, let other
    /// threads write to `direct_fd` themselves.
    pub fn open(
        &mut self,
        deflate: Option<&DeflateParams>,
        threshold: u64,
        tls_gather: Option<usize>,
        direct_fd: Option<RawFd>,
    ) {
        self.q.writer.set_deflate(deflate, threshold);
        self.q.writer.set_keeps_blocked_bytes(tls_gather);
        // Not with compression, which runs on the loop's thread, never on a
        // caller's under a lock other senders need.
        if deflate.is_none() && direct_fd.is_some() {
            self.q.direct_fd = direct_fd;
            self.outbox.direct_allowed.store(true, Ordering::SeqCst);
        }
    }

    /// The socket is about to close, and its fd number may be reused at
    /// once: no thread writes to it from now on, and nothing queued will go.
    pub fn shut(&mut self) {
        self.q.direct_fd = None;
        self.q.writer = Writer::default();
    }
}

fn out_of_memory(len: usize) -> Error {
    Error::new(ErrorKind::Resource, format!("out of memory: cannot copy a message of {len} bytes"))
}

/// The start of the clock `try_direct` measures with.
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_buffers_are_reused_within_bounds() {
        let outbox = Outbox::new(0, None);
        let buf = Vec::<u8>::with_capacity(1000);
        let ptr = buf.as_ptr();
        outbox.written(0, buf);
        let again = outbox.copy(&[1; 800]).unwrap();
        assert_eq!(again.as_ptr(), ptr, "a spare buffer that fits is reused");
        assert_eq!(again.len(), HEADROOM + 800);
        outbox.written(0, Vec::with_capacity(SPARE_BUFFER_MAX + HEADROOM + 1));
        assert_eq!(outbox.copy(&[1; 10]).unwrap().capacity(), HEADROOM + 10, "an oversized buffer is not kept");
        for _ in 0..SPARE_BUFFERS + 5 {
            outbox.written(0, Vec::with_capacity(64));
        }
        assert_eq!(outbox.lock_spare().len(), SPARE_BUFFERS);
    }

    #[test]
    fn the_max_buffered_amount_is_checked_and_taken_back() {
        let outbox = Outbox::new(100, None);
        outbox.reserve(60).unwrap();
        assert_eq!(outbox.reserve(41).unwrap_err().kind, ErrorKind::BufferFull);
        outbox.reserve(40).unwrap();
        outbox.unreserve(40);
        outbox.count_dropped(1000);
        assert_eq!(outbox.buffered_amount(), 1060, "a dropped send is counted past the limit");
    }

    #[test]
    fn drain_is_due_once_per_crossing_down_to_the_mark() {
        let outbox = Outbox::new(0, Some(100));
        outbox.reserve(100).unwrap();
        assert!(!outbox.take_drain(), "at the mark: never above it");
        outbox.reserve(1).unwrap();
        assert!(!outbox.take_drain(), "above the mark");
        assert_eq!(outbox.buffered_amount(), 101, "the armed bit is not counted");
        outbox.written(50, Vec::new());
        assert!(outbox.drain_due());
        assert!(outbox.take_drain());
        assert!(!outbox.take_drain(), "once per crossing");
        assert_eq!(outbox.buffered_amount(), 51);
        outbox.reserve(100).unwrap();
        outbox.written(151, Vec::new());
        assert!(outbox.take_drain(), "the next crossing");
        let off = Outbox::new(0, None);
        off.reserve(1000).unwrap();
        off.written(1000, Vec::new());
        assert!(!off.take_drain() && !off.drain_due());
    }

    #[test]
    fn the_max_buffered_amount_holds_with_the_armed_bit() {
        let outbox = Outbox::new(100, Some(10));
        outbox.reserve(60).unwrap();
        assert_eq!(
            outbox.reserve(41).unwrap_err().message,
            "41 bytes more would exceed the max buffered amount 100 (now 60)"
        );
        outbox.count_dropped(u64::MAX);
        assert_eq!(outbox.buffered_amount(), (1 << 63) - 1, "saturates below the bit");
    }
}
