//! The I/O thread: one per connection. It alone owns the socket; the API
//! talks to it through the command channel and the eventfd (DESIGN.md 1).
//! Every wait is `poll(2)` with the nearest deadline as its timeout.

use crate::client::Handler;
use crate::handshake::{self, Agreed};
use crate::net::{self, Stream};
use crate::options::Options;
use crate::protocol::{Incoming, InputBuffer, Reader, Writer, CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS};
use crate::shared::{Command, Shared, CLOSED, CLOSING, CONNECTING, OPEN};
use crate::target::{Target, TargetHost};
use crate::tls;
use crossbeam_channel::Receiver;
use std::convert::Infallible;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::Control;

/// After both close frames have crossed, how long the server has to close
/// TCP before the client does (RFC 6455 7.1.1: the server closes first).
const TCP_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a failing connection tries to get its close frame out.
const FAIL_LINGER: Duration = Duration::from_millis(500);
const READ_CHUNK: usize = 64 * 1024;
/// Reads (of up to READ_CHUNK) before the loop turns to commands and writes.
const READS_PER_TURN: usize = 16;
/// Commands taken before the loop turns to writes and reads.
const COMMANDS_PER_TURN: usize = 4096;

/// How a connection ended; each maps to the last callbacks.
#[derive(Debug)]
enum End {
    /// The closing handshake completed: the server's code and reason.
    Clean { code: u16, reason: String },
    /// Dropped, timed out: on_close 1006 without on_error.
    Abnormal,
    /// Failed: on_error with this text, then on_close 1006.
    Failed(String),
}

pub fn spawn(
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    target: Target,
    options: Options,
    handler: Box<dyn Handler>,
) -> io::Result<()> {
    let io = Io { shared, commands, handler, options };
    spawn_quiet("libws-io", move || io.run(target))
}

/// Spawns a library thread with every asynchronous signal blocked, so that
/// the host program's signals (SIGINT, SIGTERM, ...) go to its own threads,
/// and a SIGPIPE from a write can never end it. The new thread inherits the
/// mask; the caller's is restored at once.
fn spawn_quiet(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask
    // changes only this thread's mask, restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Faults stay deliverable: blocking them would hide a crash.
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut all, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned.map(|_| ())
    }
}

struct Io {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    handler: Box<dyn Handler>,
    options: Options,
}

/// An open connection's protocol state.
struct Conn {
    stream: Stream,
    input: InputBuffer,
    reader: Reader,
    writer: Writer,
    close_sent_at: Option<Instant>,
    /// The server's close frame: code (1005 for none) and reason.
    close_received: Option<(u16, String)>,
    crossed_at: Option<Instant>,
}

impl Conn {
    /// The nearest of the close timeout and the wait for TCP close.
    fn deadline(&self, close_timeout: Duration) -> Option<Instant> {
        let close = self.close_sent_at.map(|t| t + close_timeout);
        let tcp = self.crossed_at.map(|t| t + TCP_CLOSE_WAIT);
        match (close, tcp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The connection is gone: clean exactly when the server's close frame
    /// arrived (the closing handshake completed from our side).
    fn ended(&self) -> End {
        match &self.close_received {
            Some((code, reason)) => End::Clean { code: *code, reason: reason.clone() },
            None => End::Abnormal,
        }
    }
}

impl Io {
    fn run(mut self, target: Target) {
        let _ = self.shared.io_thread.set(std::thread::current().id());
        let deadline = Instant::now() + self.options.connect_timeout;
        let end = match self.establish(&target, deadline) {
            Ok((stream, tail, agreed)) => self.open(stream, tail, agreed),
            Err(end) => end,
        };
        self.finish(end);
    }

    fn open(&mut self, stream: Stream, tail: Vec<u8>, agreed: Agreed) -> End {
        let _ = self.shared.protocol.set(c_string(agreed.protocol));
        let _ = self.shared.extensions.set(c_string(agreed.extensions));
        if !self.shared.transition(Some(CONNECTING), OPEN) {
            // ws_close() won the race against the last handshake bytes.
            return End::Failed(closed_before_open());
        }
        self.emit(|h| h.on_open());
        let mut conn = Conn {
            stream,
            input: InputBuffer::from_tail(tail),
            reader: Reader::new(self.options.max_message_size, agreed.deflate.as_ref()),
            writer: Writer::new(agreed.deflate.as_ref(), self.options.compression.threshold),
            close_sent_at: None,
            close_received: None,
            crossed_at: None,
        };
        match self.open_loop(&mut conn) {
            Ok(never) => match never {},
            Err(end) => end,
        }
        // `conn` drops here: the socket is closed before on_close runs.
    }

    fn finish(&mut self, end: End) {
        self.shared.transition(None, CLOSED);
        match end {
            End::Clean { code, reason } => {
                let reason = c_string(reason);
                self.emit(|h| h.on_close(code, &reason, true));
            }
            End::Abnormal => self.emit(|h| h.on_close(CLOSE_ABNORMAL, c"", false)),
            End::Failed(message) => {
                let message = c_string(message);
                self.emit(|h| h.on_error(&message));
                self.emit(|h| h.on_close(CLOSE_ABNORMAL, c"", false));
            }
        }
    }

    /// Runs one callback unless the handle is freed (DESIGN.md 2).
    fn emit(&mut self, f: impl FnOnce(&mut dyn Handler)) {
        if self.shared.freed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _guard = self.shared.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.freed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let handler = &mut *self.handler;
        // A panicking Rust handler must not take the I/O thread with it.
        let _ = catch_unwind(AssertUnwindSafe(|| f(handler)));
    }

    // ----- CONNECTING: resolve, connect, upgrade, all abortable -----

    fn establish(&mut self, target: &Target, deadline: Instant) -> Result<(Stream, Vec<u8>, Agreed), End> {
        // Set up TLS first: a bad setting fails before any traffic.
        let connector = match target.secure {
            true => Some(tls::connector(&self.options.tls).map_err(End::Failed)?),
            false => None,
        };
        let addrs = self.resolve(target, deadline)?;
        let tcp = self.connect(target, &addrs, deadline)?;
        let mut stream = match connector {
            Some(connector) => Stream::tls(self.tls_handshake(&connector, target, tcp, deadline)?),
            None => Stream::Plain(tcp),
        };
        let (agreed, tail) = self.upgrade(&mut stream, target, deadline)?;
        Ok((stream, tail, agreed))
    }

    /// Waits for the socket (or only for a command), failing on the
    /// deadline, ws_close() or ws_free().
    fn wait_connecting(&mut self, socket: Option<(i32, i16)>, deadline: Instant, what: &str) -> Result<i16, End> {
        let ready = net::poll(self.shared.waker.fd(), socket, Some(deadline))
            .map_err(|e| End::Failed(format!("internal error: poll failed: {e}")))?;
        if ready.woken {
            self.shared.waker.reset();
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::Close { .. } | Command::Free => return Err(End::Failed(closed_before_open())),
                    // send() refuses while CONNECTING, so none can be queued.
                    Command::Send { .. } => {}
                }
            }
            if self.shared.freed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(End::Failed(closed_before_open()));
            }
        }
        if ready.timed_out || Instant::now() >= deadline {
            return Err(End::Failed(format!(
                "connect timeout: {what} did not finish within {} ms",
                self.options.connect_timeout.as_millis()
            )));
        }
        Ok(ready.socket)
    }

    fn resolve(&mut self, target: &Target, deadline: Instant) -> Result<Vec<SocketAddr>, End> {
        let name = match &target.host {
            TargetHost::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, target.port)]),
            TargetHost::Domain(name) => name.clone(),
        };
        // getaddrinfo cannot be interrupted: run it on its own thread, which
        // reports through a channel and the eventfd (DESIGN.md 1).
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waker = self.shared.waker.clone();
        let port = target.port;
        let lookup = name.clone();
        spawn_quiet("libws-dns", move || {
            let result = (lookup.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
            let _ = tx.send(result);
            waker.wake();
        })
        .map_err(|e| End::Failed(format!("cannot start resolver thread: {e}")))?;
        loop {
            if let Ok(result) = rx.try_recv() {
                return match result {
                    Ok(addrs) if !addrs.is_empty() => Ok(addrs),
                    Ok(_) => Err(End::Failed(format!("cannot resolve host {name}: no addresses"))),
                    Err(e) => Err(End::Failed(format!("cannot resolve host {name}: {e}"))),
                };
            }
            self.wait_connecting(None, deadline, &format!("resolving {name}"))?;
        }
    }

    fn connect(
        &mut self,
        target: &Target,
        addrs: &[SocketAddr],
        deadline: Instant,
    ) -> Result<std::net::TcpStream, End> {
        let mut errors = Vec::new();
        for addr in addrs {
            let tcp = match net::start_connect(addr) {
                Ok(tcp) => tcp,
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
            while self.wait_connecting(Some((fd, libc::POLLOUT)), deadline, &format!("TCP connect to {addr}"))? == 0 {}
            match net::finish_connect(&tcp) {
                Ok(()) => return Ok(tcp),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(End::Failed(format!(
            "cannot connect to {}:{}: {}",
            target.host_header.trim_end_matches(&format!(":{}", target.port)),
            target.port,
            errors.join("; ")
        )))
    }

    fn tls_handshake(
        &mut self,
        connector: &native_tls::TlsConnector,
        target: &Target,
        tcp: std::net::TcpStream,
        deadline: Instant,
    ) -> Result<native_tls::TlsStream<std::net::TcpStream>, End> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let host = match &target.host {
            TargetHost::Domain(name) => name.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        };
        let mut step = tls::start(connector, &host, tcp).map_err(End::Failed)?;
        loop {
            match step {
                tls::Step::Done(stream) => return Ok(stream),
                tls::Step::Again(mid) => {
                    // The handshake's writes are small and fit the empty
                    // send buffer, so it waits only for the server's records.
                    self.wait_connecting(Some((fd, libc::POLLIN)), deadline, "the TLS handshake")?;
                    step = tls::resume(mid).map_err(End::Failed)?;
                }
            }
        }
    }

    fn upgrade(&mut self, stream: &mut Stream, target: &Target, deadline: Instant) -> Result<(Agreed, Vec<u8>), End> {
        let (request, key) = handshake::request(target, &self.options);
        let fd = stream.fd();
        let mut written = 0;
        while written < request.len() {
            match stream.write(&request[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_connecting(Some((fd, libc::POLLOUT)), deadline, "the WebSocket handshake")?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::Failed(format!("connection lost during the handshake: {e}"))),
            }
        }
        let mut response = InputBuffer::default();
        loop {
            let spare = response.spare(4096);
            match stream.read(spare) {
                Ok(0) => return Err(End::Failed("server closed the connection during the handshake".into())),
                Ok(n) => {
                    response.commit(n);
                    let head = response.pending();
                    match handshake::parse_response(head, &key, &target.protocols, &self.options.compression) {
                        Ok(Some(agreed)) => {
                            let tail = head[agreed.head_len..].to_vec();
                            return Ok((agreed, tail));
                        }
                        Ok(None) => {}
                        Err(message) => return Err(End::Failed(message)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    response.commit(0);
                    self.wait_connecting(Some((fd, libc::POLLIN)), deadline, "the WebSocket handshake")?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => response.commit(0),
                Err(e) => return Err(End::Failed(format!("connection lost during the handshake: {e}"))),
            }
        }
    }

    // ----- OPEN and CLOSING -----

    fn open_loop(&mut self, conn: &mut Conn) -> Result<Infallible, End> {
        // Frames that arrived in the same packets as the 101 response.
        self.process_input(conn)?;
        let mut writable = false;
        // Input is left after a capped read_socket: maybe in the kernel,
        // maybe decrypted inside OpenSSL, where poll cannot see it.
        let mut more_input = false;
        loop {
            // Capped, like reads, so that a sender faster than the socket
            // cannot keep the loop from writing and reading.
            let more_commands = !self.take_commands(conn, COMMANDS_PER_TURN);
            let wrote = self.flush(conn)?;
            let deadline = conn.deadline(self.options.close_timeout);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(conn.ended());
            }
            let mut events = libc::POLLIN;
            // A TLS write can wait for the server's records (renegotiation):
            // when the socket was writable and still nothing went out, wait
            // for input instead of spinning on POLLOUT.
            let stalled = writable && wrote == 0;
            if !conn.writer.is_empty() && !stalled {
                events |= libc::POLLOUT;
            }
            let wait_until = if more_input || more_commands { Some(Instant::now()) } else { deadline };
            let ready = net::poll(self.shared.waker.fd(), Some((conn.stream.fd(), events)), wait_until)
                .map_err(|e| End::Failed(format!("internal error: poll failed: {e}")))?;
            writable = ready.socket & libc::POLLOUT != 0;
            if ready.woken {
                self.shared.waker.reset();
            }
            if more_input || ready.socket & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                more_input = !self.read_socket(conn)?;
            }
        }
    }

    /// Takes every queued command (`drain_commands`), or at most `limit`;
    /// returns whether the queue was emptied.
    fn take_commands(&mut self, conn: &mut Conn, limit: usize) -> bool {
        for _ in 0..limit {
            let Ok(cmd) = self.commands.try_recv() else { return true };
            match cmd {
                // After our close frame no data frame may follow (RFC 6455
                // 5.5.1); such a send returned while CLOSING and stays counted.
                Command::Send { buf, text } if conn.close_sent_at.is_none() => conn.writer.push_data(buf, text),
                Command::Send { .. } => {}
                Command::Close { code, reason } => self.send_close(conn, code, &reason),
                Command::Free => {
                    self.shared.transition(Some(OPEN), CLOSING);
                    // Sends accepted before the handle was freed go out first.
                    self.drain_commands(conn);
                    self.send_close(conn, CLOSE_GOING_AWAY, "");
                }
            }
        }
        self.commands.is_empty()
    }

    /// Before our close frame: everything accepted so far goes out first.
    fn drain_commands(&mut self, conn: &mut Conn) {
        self.take_commands(conn, usize::MAX);
    }

    fn send_close(&mut self, conn: &mut Conn, code: u16, reason: &str) {
        if conn.close_sent_at.is_none() {
            conn.writer.push_close(code, reason);
            let now = Instant::now();
            conn.close_sent_at = Some(now);
            if conn.close_received.is_some() {
                conn.crossed_at = Some(now);
            }
        }
    }

    /// Writes what the socket takes now; bufferedAmount drops by each data
    /// frame's size once its last byte is written.
    fn write_out(&self, conn: &mut Conn) -> io::Result<usize> {
        let shared = &self.shared;
        conn.writer.write_to(&mut conn.stream, |n, buf| {
            shared.buffered.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
            shared.recycle(buf);
        })
    }

    /// Writes what it can; returns the bytes written.
    fn flush(&mut self, conn: &mut Conn) -> Result<usize, End> {
        match self.write_out(conn) {
            Ok(n) => Ok(n),
            // The peer is gone; what it sent before may still say how.
            Err(_) => {
                self.read_socket(conn)?;
                Err(conn.ended())
            }
        }
    }

    /// Reads until the socket would block (true) or READS_PER_TURN reads
    /// were made (false), handling frames as they arrive. The cap keeps a
    /// flooding server from starving sends, close and free.
    fn read_socket(&mut self, conn: &mut Conn) -> Result<bool, End> {
        for _ in 0..READS_PER_TURN {
            let spare = conn.input.spare(READ_CHUNK);
            match conn.stream.read(spare) {
                Ok(0) => return Err(conn.ended()),
                Ok(n) => {
                    conn.input.commit(n);
                    self.process_input(conn)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset without a close frame: 1006, no on_error (as browsers).
                Err(_) => return Err(conn.ended()),
            }
        }
        Ok(false)
    }

    fn process_input(&mut self, conn: &mut Conn) -> Result<(), End> {
        loop {
            let incoming = match conn.reader.next(&mut conn.input) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return Ok(()),
                Err(v) => return Err(self.fail(conn, v.code, v.message)),
            };
            match incoming {
                Incoming::Message { text } => {
                    // WHATWG: a message received while not OPEN is dropped.
                    if self.shared.state() == OPEN {
                        let data = conn.reader.message();
                        self.emit(|h| h.on_message(data, text));
                    }
                }
                Incoming::Ping(payload) => {
                    if conn.close_sent_at.is_none() {
                        conn.writer.push_control(Control::Pong, &payload);
                    }
                }
                Incoming::Pong => {}
                // A second close frame: the handshake is already done.
                Incoming::Close { .. } if conn.close_received.is_some() => {}
                Incoming::Close { code, reason } => {
                    conn.close_received = Some((code, reason.clone()));
                    conn.crossed_at = conn.close_sent_at.map(|_| Instant::now());
                    if conn.close_sent_at.is_none() {
                        self.shared.transition(Some(OPEN), CLOSING);
                        // Sends accepted while OPEN, and a close() racing
                        // this one, go out before (or as) our reply.
                        self.drain_commands(conn);
                        let echo = if code == CLOSE_NO_STATUS { 0 } else { code };
                        self.send_close(conn, echo, &reason);
                    }
                }
            }
        }
    }

    /// Fails the connection (RFC 6455 7.1.7): our close frame with `code`
    /// if none was sent yet, then TCP is closed.
    fn fail(&mut self, conn: &mut Conn, code: u16, message: String) -> End {
        self.shared.transition(None, CLOSING);
        // Messages accepted while OPEN (an echo sent from on_message, say)
        // still go out before the close frame.
        self.drain_commands(conn);
        if conn.close_sent_at.is_none() {
            conn.writer.push_close(code, "");
            conn.close_sent_at = Some(Instant::now());
        }
        let linger = Instant::now() + FAIL_LINGER.min(self.options.close_timeout);
        while !conn.writer.is_empty() {
            if self.write_out(conn).is_err() {
                break;
            }
            if conn.writer.is_empty() {
                break;
            }
            match net::poll(self.shared.waker.fd(), Some((conn.stream.fd(), libc::POLLOUT)), Some(linger)) {
                Ok(r) if !r.timed_out => {
                    if r.woken {
                        self.shared.waker.reset();
                    }
                }
                _ => break,
            }
        }
        conn.stream.shutdown_write();
        // Unread input would turn close(2) into a reset that can destroy
        // the close frame in flight: read what is there.
        let mut scratch = [0u8; 4096];
        for _ in 0..256 {
            match conn.stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        End::Failed(message)
    }
}

fn closed_before_open() -> String {
    "WebSocket is closed before the connection is established".into()
}

/// Text for C: cut at the first NUL, which a C string cannot hold.
fn c_string(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let end = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(end);
        CString::new(bytes).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::c_string;

    #[test]
    fn c_string_cuts_at_nul() {
        assert_eq!(c_string("ab\0cd".into()).as_bytes(), b"ab");
        assert_eq!(c_string("abc".into()).as_bytes(), b"abc");
    }
}
