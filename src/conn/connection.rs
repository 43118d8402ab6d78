//! One connection's state machine, driven by its loop: the connecting
//! phase (resolve, TCP connect to each address in turn, TLS, the HTTP
//! upgrade) and the open phase (frames, the closing handshake). It never
//! blocks and never sleeps: the loop calls it when its socket is ready, a
//! command or a lookup result arrives, or its deadline passes, and then
//! asks what it waits for (`interest`, `deadline`, `wants_turn`).

use crate::conn::cause::{Cause, Failure};
use crate::conn::closing::{Closing, Ending};
use crate::conn::dialer::{Dialed, Dialer};
use crate::conn::keepalive::{Due, Keepalive};
use crate::conn::options::{Options, ProxyChoice};
use crate::conn::shared::{Command, LoopLink, ReadyState, Shared};
use crate::conn::tunnel::Tunnel;
use crate::log::{log, DEBUG, ERROR, INFO, WARNING};
use crate::proto::frames::{
    Incoming, InputBuffer, Reader, CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_TOO_BIG,
};
use crate::proto::handshake::{self, Agreed, ResponseHead};
use crate::proto::proxy::{Destination, Proxy};
use crate::proto::target::{self, Target, TargetHost};
use crate::runtime::event_loop::{BufferPool, ConnId, Cx, Events, Interest, Loop, LoopCommand, Task};
use crate::transport::net::{self, Socket, Stream, TlsSocket};
use crate::transport::tls;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failing connection tries to get its close frame out.
const FAIL_LINGER: Duration = Duration::from_millis(500);
const READ_CHUNK: usize = 64 * 1024;
/// Until a read fills it, reads are this small: an idle connection (and
/// one that only ever gets small messages) never touches 64 KiB.
const FIRST_READ_CHUNK: usize = 4 * 1024;
/// Reads (of up to READ_CHUNK) per turn: a flooding server cannot starve
/// the loop's other connections, nor this one's sends and close.
const READS_PER_TURN: usize = 16;

/// Receives a connection's events, always on the thread that runs its
/// loop, one at a time.
pub trait Handler: Send {
    fn on_open(&mut self);
    /// `data` is followed in memory by one NUL byte not counted in its length.
    fn on_message(&mut self, data: &[u8], text: bool);
    fn on_error(&mut self, message: &CStr);
    fn on_close(&mut self, code: u16, reason: &CStr, was_clean: bool);
    /// A pong arrived while OPEN (to a keepalive ping, a `ws_send_ping`,
    /// or unasked): its payload.
    fn on_pong(&mut self, _data: &[u8]) {}
    /// bufferedAmount fell to the drain mark (`ws_options_set_on_drain`).
    fn on_drain(&mut self) {}
}

/// A loop of connections.
pub type ConnLoop = Loop<Connection>;

/// The way from a handle to connection `id` on loop `lp`.
pub fn link(lp: Arc<ConnLoop>, id: ConnId) -> Box<dyn LoopLink> {
    Box::new(Link { lp, id })
}

struct Link {
    lp: Arc<ConnLoop>,
    id: ConnId,
}

impl LoopLink for Link {
    fn post(&self, cmd: Command) {
        self.lp.post(LoopCommand::Conn(self.id, cmd));
    }

    fn post_owning(&self, cmd: Command) {
        self.lp.post_owning(LoopCommand::Conn(self.id, cmd));
    }

    fn on_loop_thread(&self) -> bool {
        self.lp.on_loop_thread()
    }
}

/// How a connection ended; each maps to the last callbacks.
#[derive(Debug)]
enum End {
    /// The closing handshake completed: the server's code and reason.
    Clean { code: u16, reason: String },
    /// Lost, or the closing handshake timed out: on_close 1006 without
    /// on_error (as browsers); the cause says which.
    Abnormal { cause: Cause, errno: i32 },
    /// Failed: on_error with this text, then on_close 1006.
    Failed(Failure),
    /// A 401 with a Basic challenge, which the URL's credentials may
    /// answer on a new connection; when they may not, it is `Failed`.
    Challenged(Failure),
}

impl End {
    fn failed(cause: Cause, message: impl Into<String>) -> End {
        End::Failed(Failure::new(cause, message))
    }

    /// Where the socket is done: clean if the closing handshake
    /// completed, else abnormal with `cause`.
    fn socket_done(closing: &Closing, cause: Cause, errno: i32) -> End {
        match closing.ending() {
            Ending::Clean { code, reason } => End::Clean { code, reason },
            Ending::Abnormal => End::Abnormal { cause, errno },
        }
    }
}

pub struct Connection {
    shared: Arc<Shared>,
    handler: Box<dyn Handler>,
    options: Options,
    target: Target,
    phase: Phase,
    connect_deadline: Instant,
    /// For wss://: the TLS context, built (or taken from the cache) by
    /// `new` on the caller's thread, never on the loop's, where loading a
    /// trust store would stall every connection of the loop; or why it
    /// could not be built, for `begin` to fail with. Used once TCP is
    /// connected.
    connector: Option<Result<native_tls::TlsConnector, String>>,
    /// The serial of the socket the connection uses now: epoll must learn
    /// of a new one even when it reuses the old one's fd number.
    socket_serial: u32,
    /// Counts the sockets this connection opened (their serials).
    sockets_made: u32,
    /// socks5:// resolves the origin's name here, before the proxy's.
    origin_addr: Option<SocketAddr>,
    /// The server asked for credentials once (a 401 with a Basic
    /// challenge), and this connection sends them.
    send_credentials: bool,
    /// Names the connection in log lines ("ws#12").
    log_id: u32,
}

enum Phase {
    /// Registered, not yet started by the loop.
    New,
    /// Waiting for the resolver pool; dropping the lookup (any change of
    /// phase, or the connection's end) takes it out of the pool's queue.
    Resolving(#[allow(dead_code)] crate::runtime::resolver::Lookup),
    Connecting(Box<Connecting>),
    /// Connected to the proxy: its handshake opens the tunnel.
    Tunnel(Box<Tunnel>),
    Tls(Box<native_tls::MidHandshakeTlsStream<TlsSocket>>),
    Upgrading(Box<Upgrading>),
    Open(Box<Open>),
    Done,
}

struct Connecting {
    dialer: Dialer,
    /// For plain ws://, the upgrade request and its key, written as soon
    /// as an attempt may be connected (see `Dialer::start`).
    probe: Option<(Vec<u8>, String)>,
}

struct Upgrading {
    stream: Stream,
    request: Vec<u8>,
    written: usize,
    key: String,
    response: InputBuffer,
}

/// The open phase. What goes out waits in `Shared::output` (with the
/// socket's fd, for sends that other threads write directly), so every
/// use of the writer takes that lock.
struct Open {
    stream: Stream,
    input: InputBuffer,
    reader: Reader,
    closing: Closing,
    /// Input may be left where epoll cannot see it: after a capped read,
    /// or decrypted inside OpenSSL.
    more_input: bool,
    /// What the last write that could not finish waits for.
    write_wants: i16,
    /// A read has filled FIRST_READ_CHUNK: read READ_CHUNK from now on.
    big_reads: bool,
    /// How long a failing connection tries to get its close frame out.
    linger: Duration,
    /// Pings when idle, and the dead-peer check (None: off).
    keepalive: Option<Keepalive>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, handler: Box<dyn Handler>, target: Target, options: Options) -> Connection {
        let connect_deadline = Instant::now() + options.connect_timeout;
        let connector = target.secure.then(|| options.tls.connector());
        Connection {
            shared,
            handler,
            options,
            target,
            phase: Phase::New,
            connect_deadline,
            connector,
            socket_serial: 0,
            sockets_made: 0,
            origin_addr: None,
            send_credentials: false,
            log_id: next_log_id(),
        }
    }
}

/// What the loop calls: events in, then what the connection waits for.
impl Task for Connection {
    type Command = Command;

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The socket, a number that changes with each new socket, and the
    /// epoll events wanted now.
    fn interest(&self) -> Option<Interest> {
        let (fd, events) = match &self.phase {
            Phase::Connecting(c) => {
                let (fd, serial) = c.dialer.interest()?;
                return Some(Interest { fd, socket: serial, events: Events::WRITE });
            }
            Phase::Tunnel(t) => (t.fd(), if t.wants_write() { Events::WRITE } else { Events::READ }),
            Phase::Tls(mid) => (mid.get_ref().fd(), Events::from_poll(mid.get_ref().blocked_on())),
            Phase::Upgrading(u) if u.written < u.request.len() => {
                (u.stream.fd(), Events::from_poll(u.stream.write_wants()))
            }
            Phase::Upgrading(u) => (u.stream.fd(), Events::READ),
            Phase::Open(o) => {
                let pending = !self.shared.outbox().lock().is_empty();
                let write = if pending { Events::from_poll(o.write_wants) } else { Events::NONE };
                // A failing connection reads nothing more; a paused one
                // nothing until resumed.
                let read = if o.closing.is_failing() || !o.reads(&self.shared) { Events::NONE } else { Events::READ };
                (o.stream.fd(), read | write)
            }
            Phase::New | Phase::Resolving(_) | Phase::Done => return None,
        };
        Some(Interest { fd, socket: self.socket_serial, events })
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::New | Phase::Done => None,
            Phase::Connecting(c) => {
                Some(c.dialer.deadline().map_or(self.connect_deadline, |d| d.min(self.connect_deadline)))
            }
            Phase::Resolving(_) | Phase::Tunnel(_) | Phase::Tls(_) | Phase::Upgrading(_) => Some(self.connect_deadline),
            Phase::Open(o) => {
                let closing = o.closing.deadline(self.options.close_timeout);
                let keepalive = o.keepalive.as_ref().filter(|_| o.keeps_alive()).and_then(Keepalive::deadline);
                [closing, o.closing.failing_until(), keepalive].into_iter().flatten().min()
            }
        }
    }

    /// Work is left that epoll will not report.
    fn wants_turn(&self) -> bool {
        matches!(&self.phase, Phase::Open(o) if o.more_input && !o.closing.is_failing() && o.reads(&self.shared))
    }

    fn start(&mut self, cx: &mut Cx<'_, Self>) {
        if self.shared.is_abandoned() {
            // ws_new failed after queueing this (no thread for the loop):
            // it returned NULL, so nothing may connect or call back.
            self.phase = Phase::Done;
            return;
        }
        let r = self.begin(cx);
        self.settle(r);
    }

    fn resolved(&mut self, result: io::Result<Vec<SocketAddr>>, cx: &mut Cx<'_, Self>) {
        if !matches!(self.phase, Phase::Resolving(_)) {
            return;
        }
        let r = match (self.resolving_proxy(), result) {
            (Some(_), Ok(addrs)) if !addrs.is_empty() => self.dial(addrs, cx),
            (Some(proxy), result) => {
                let why = result.err().map_or("no addresses".into(), |e| crate::error::io_text(&e));
                Err(End::failed(
                    Cause::Proxy,
                    format!("proxy unreachable: cannot resolve proxy host {}: {why}", proxy.host_name()),
                ))
            }
            // socks5:// sends the origin's address: its first, as curl does.
            (None, Ok(addrs)) if !addrs.is_empty() && self.proxy().is_some() => {
                self.origin_addr = Some(addrs[0]);
                self.resolve_proxy(cx)
            }
            (None, Ok(addrs)) if !addrs.is_empty() => self.dial(addrs, cx),
            (None, result) => {
                let why = result.err().map_or("no addresses".into(), |e| crate::error::io_text(&e));
                Err(End::failed(Cause::Dns, format!("cannot resolve host {}: {why}", self.target.host_name())))
            }
        };
        self.settle(r);
    }

    fn ready(&mut self, events: Events, cx: &mut Cx<'_, Self>) {
        let r = match &mut self.phase {
            Phase::Connecting(_) if !events.is_none() => {
                self.dialing(cx, |d, probe, serials, watch| d.ready(probe, serials, watch))
            }
            Phase::Tunnel(_) if !events.is_none() => self.tunnel_step(),
            Phase::Tls(_) if !events.is_none() => self.tls_step(None),
            Phase::Upgrading(_) if !events.is_none() => {
                let r = match self.upgrade_step() {
                    Err(End::Challenged(_)) => self.retry_with_credentials(cx),
                    r => r,
                };
                if matches!(self.phase, Phase::Open(_)) {
                    cx.opened();
                }
                r
            }
            Phase::Open(_) => self.open_ready(events, cx),
            _ => Ok(()),
        };
        self.settle(r);
    }

    fn timer(&mut self, now: Instant, cx: &mut Cx<'_, Self>) {
        let r = match &mut self.phase {
            Phase::Resolving(_) | Phase::Connecting(_) | Phase::Tunnel(_) | Phase::Tls(_) | Phase::Upgrading(_)
                if now >= self.connect_deadline =>
            {
                Err(End::failed(
                    Cause::Timeout,
                    format!(
                        "connect timeout: {} did not finish within {} ms",
                        self.connecting_step(),
                        self.options.connect_timeout.as_millis()
                    ),
                ))
            }
            Phase::Connecting(_) => self.dialing(cx, |d, probe, serials, watch| d.timer(now, probe, serials, watch)),
            Phase::Resolving(_) | Phase::Tunnel(_) | Phase::Tls(_) | Phase::Upgrading(_) => Ok(()),
            Phase::Open(o) => match o.closing.failing_until() {
                Some(until) if now >= until => Err(self.give_up_failing()),
                _ => match o.closing.deadline(self.options.close_timeout) {
                    Some(d) if now >= d => Err(End::socket_done(&o.closing, Cause::CloseTimeout, 0)),
                    _ => self.keep_alive(now, cx),
                },
            },
            _ => Ok(()),
        };
        self.settle(r);
    }

    /// An API call. Data is only queued here; the loop calls `flush` once
    /// it has taken the commands at hand, so that many sends share writes.
    fn command(&mut self, cmd: Command) {
        let r = match (&mut self.phase, cmd) {
            (Phase::Open(o), Command::Send { buf, text }) => {
                // After our close frame no data frame may follow (RFC 6455
                // 5.5.1). Sends accepted before a failure still go out
                // before its close frame (Autobahn 4.1.3: an echo sent from
                // on_message); those accepted later were only counted.
                self.shared.outbox().lock().take_send(buf, text, o.closing.ours_queued());
                o.queue_close_when_due(&self.shared);
                Ok(())
            }
            (Phase::Open(o), Command::Ping(payload)) => {
                // No frame may follow our close frame (RFC 6455 5.5.1).
                if !o.closing.ours_queued() {
                    self.shared.outbox().lock().push_ping(&payload);
                }
                Ok(())
            }
            (Phase::Open(o), Command::Close { code, reason }) => {
                log!(DEBUG, "{}: closing handshake: our close frame {code} {reason:?}", who(&self.target, self.log_id));
                // ws_close changed the state before queueing this, behind
                // every send it accepted: the close frame goes next.
                let taken = self.shared.outbox().lock().sends_taken();
                o.request_close(&self.shared, code, reason, taken);
                Ok(())
            }
            (Phase::Open(o), Command::Free { release }) => {
                // No callback runs now: the handle's memory may go.
                drop(release);
                let accepted = self.shared.transition_counting(Some(ReadyState::Open), ReadyState::Closing);
                let due = accepted.unwrap_or_else(|| self.shared.outbox().lock().sends_taken());
                o.request_close(&self.shared, CLOSE_GOING_AWAY, String::new(), due);
                o.closing.bound();
                Ok(())
            }
            (_, Command::Flush | Command::Receiving) => Ok(()),
            (Phase::Done, _) => Ok(()),
            // While connecting: close() and free fail the connection now
            // (a Free's `release` drops here: no callback runs now).
            (_, Command::Close { .. } | Command::Free { .. }) => Err(End::failed(Cause::Aborted, closed_before_open())),
            (_, Command::Send { .. } | Command::Ping(_)) => Ok(()),
        };
        self.settle(r);
    }

    /// Writes what is queued, after commands were taken.
    fn flush(&mut self) {
        let r = match &mut self.phase {
            Phase::Open(_) => self.write_and_check(),
            _ => Ok(()),
        };
        self.settle(r);
    }

    /// Ends the connection at once, without a closing handshake: nothing
    /// will run its loop again. `on_error` says why, `on_close` is 1006.
    fn abort(&mut self, why: &str) {
        if !self.is_done() {
            self.finish(End::failed(Cause::Aborted, why));
        }
    }
}

impl Connection {
    /// A step's outcome: an `End` finishes the connection.
    fn settle(&mut self, r: Result<(), End>) {
        if let Err(end) = r {
            self.finish(end);
        }
    }

    // ----- CONNECTING -----

    fn begin(&mut self, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        // A TLS setting that could not be used fails before any traffic.
        if let Some(Err(e)) = &self.connector {
            return Err(End::failed(Cause::Tls, e.clone()));
        }
        if let Some(p) = self.proxy() {
            log!(INFO, "{}: through {:?} proxy {}", self.who(), p.kind, p.label());
        }
        if let Some(path) = &self.options.unix_socket {
            log!(INFO, "{}: connecting to unix socket {path}", self.who());
            // The URL still names Host, the path and ws/wss: only where
            // the bytes go changes (libcurl's CURLOPT_UNIX_SOCKET_PATH).
            let socket = net::connect_unix(path).map_err(|e| {
                let text = format!("connect to unix socket {path} failed: {}", crate::error::io_text(&e));
                End::Failed(Failure::io(Cause::Connect, &e, text))
            })?;
            self.sockets_made = self.sockets_made.wrapping_add(1);
            self.socket_serial = self.sockets_made;
            return self.connected(socket);
        }
        if let ProxyChoice::Unusable(why) = &self.options.proxy {
            return Err(End::failed(Cause::Proxy, why.clone()));
        }
        match self.proxy() {
            // socks5:// needs the origin's address first.
            Some(p) if p.resolves_here() => match self.target.known_addrs() {
                Some(addrs) => {
                    self.origin_addr = addrs.first().copied();
                    self.resolve_proxy(cx)
                }
                None => self.look_up(self.target.host_name(), self.target.port, cx),
            },
            Some(_) => self.resolve_proxy(cx),
            None => match self.target.known_addrs() {
                Some(addrs) => self.dial(addrs, cx),
                None => self.look_up(self.target.host_name(), self.target.port, cx),
            },
        }
    }

    /// getaddrinfo cannot be interrupted: a resolver thread runs it, so
    /// that close() and free during DNS stay prompt.
    fn look_up(&mut self, host: String, port: u16, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        log!(INFO, "{}: resolving {host}", self.who());
        let lookup = crate::runtime::resolver::lookup(host, port, cx.lp, cx.id).map_err(|e| {
            let text = format!("cannot start a resolver thread: {}", crate::error::io_text(&e));
            End::Failed(Failure::io(Cause::Resource, &e, text))
        })?;
        self.phase = Phase::Resolving(lookup);
        Ok(())
    }

    /// "ws#12 ws://host/path": the connection in log lines.
    fn who(&self) -> String {
        who(&self.target, self.log_id)
    }

    /// The proxy this connection tunnels through, if any.
    fn proxy(&self) -> Option<&Proxy> {
        match &self.options.proxy {
            ProxyChoice::Via(p) => Some(p),
            _ => None,
        }
    }

    /// The proxy whose name the running lookup resolves, if it is the
    /// proxy's (not the origin's, which socks5:// looks up first).
    fn resolving_proxy(&self) -> Option<&Proxy> {
        self.proxy().filter(|p| !p.resolves_here() || self.origin_addr.is_some())
    }

    fn resolve_proxy(&mut self, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        let Some(proxy) = self.proxy() else { return Ok(()) };
        match proxy.known_addrs() {
            Some(addrs) => self.dial(addrs, cx),
            None => self.look_up(proxy.host_name(), proxy.port, cx),
        }
    }

    /// Starts connecting to a host's addresses (see `Dialer`).
    fn dial(&mut self, addrs: Vec<SocketAddr>, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        log!(
            INFO,
            "{}: connecting to {}",
            self.who(),
            addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        );
        // Plain ws:// writes its request as soon as a socket may be
        // connected; TLS has to handshake first.
        let probe = (!self.target.secure && self.proxy().is_none()).then(|| self.request());
        let dialer = Dialer::new(addrs, self.options.send_buffer_size);
        self.phase = Phase::Connecting(Box::new(Connecting { dialer, probe }));
        self.dialing(cx, |d, probe, serials, watch| d.start(probe, serials, watch))
    }

    /// Runs a step of the dialer, and goes on to TLS or the upgrade when
    /// an attempt connected.
    fn dialing(
        &mut self,
        cx: &mut Cx<'_, Self>,
        step: impl FnOnce(&mut Dialer, Option<&[u8]>, &mut u32, &mut dyn FnMut(RawFd)) -> Dialed,
    ) -> Result<(), End> {
        let Phase::Connecting(c) = &mut self.phase else { return Ok(()) };
        let probe = c.probe.as_ref().map(|(request, _)| request.as_slice());
        // Sockets beside the oldest attempt are watched with the same
        // token. Should epoll refuse one (out of memory), it is still
        // checked whenever another attempt or the timer wakes the dialer.
        let mut watch = |fd: RawFd| {
            let _ = cx.also_watch(fd, Events::WRITE);
        };
        match step(&mut c.dialer, probe, &mut self.sockets_made, &mut watch) {
            Dialed::Pending => Ok(()),
            Dialed::Failed(errors) => {
                // The OS error of the last attempt (usually every one's).
                let errno = errors.last().and_then(|(_, e)| e.raw_os_error()).unwrap_or(0);
                Err(End::Failed(match self.proxy() {
                    Some(p) => {
                        let literal = matches!(p.host, TargetHost::Ip(_));
                        let why = target::connect_failed(&p.host_name(), literal, p.port, &errors);
                        Failure::new(Cause::Proxy, format!("proxy unreachable: {why}")).with_errno(errno)
                    }
                    None => Failure::new(Cause::Connect, self.target.connect_failed(&errors)).with_errno(errno),
                }))
            }
            Dialed::Connected { socket, serial, probed, addr } => {
                log!(INFO, "{}: TCP connected to {addr}", self.who());
                self.socket_serial = serial;
                let Phase::Connecting(c) = std::mem::replace(&mut self.phase, Phase::New) else {
                    unreachable!("matched above")
                };
                match (c.probe, self.proxy()) {
                    (Some((request, key)), _) => self.upgrade(Stream::Plain(socket), request, key, probed),
                    (None, Some(proxy)) => {
                        let destination = match (proxy.resolves_here(), self.origin_addr, &self.target.host) {
                            (true, Some(addr), _) => Destination::Addr(addr),
                            (_, _, TargetHost::Ip(ip)) => Destination::Addr(SocketAddr::new(*ip, self.target.port)),
                            (_, _, TargetHost::Domain(name)) => Destination::Name(name.clone(), self.target.port),
                        };
                        let tunnel =
                            Tunnel::start(socket, proxy, destination).map_err(|e| End::failed(Cause::Proxy, e))?;
                        self.phase = Phase::Tunnel(Box::new(tunnel));
                        self.tunnel_step()
                    }
                    (None, None) => self.connected(socket),
                }
            }
        }
    }

    /// The proxy's handshake; once the tunnel is open, TLS or the upgrade.
    fn tunnel_step(&mut self) -> Result<(), End> {
        let Phase::Tunnel(t) = &mut self.phase else { return Ok(()) };
        if !t.step().map_err(End::Failed)? {
            return Ok(());
        }
        let Phase::Tunnel(t) = std::mem::replace(&mut self.phase, Phase::New) else { unreachable!("matched above") };
        log!(INFO, "{}: tunnel open through proxy {}", self.who(), t.label());
        self.connected(t.into_socket())
    }

    /// The socket is connected: TLS next for wss://, else the upgrade.
    fn connected(&mut self, socket: Socket) -> Result<(), End> {
        // wss:// is decided by the URL, never by what is left: a retry
        // with credentials handshakes again, with the connector kept
        // until open.
        if !self.target.secure {
            return self.start_upgrade(Stream::Plain(socket));
        }
        match &self.connector {
            Some(Err(e)) => Err(End::failed(Cause::Tls, e.clone())),
            Some(Ok(connector)) => {
                log!(INFO, "{}: TLS handshake with {}", self.who(), self.target.host_name());
                let step =
                    tls::start(connector, &self.target.host_name(), socket).map_err(|e| End::failed(Cause::Tls, e))?;
                self.tls_step(Some(step))
            }
            None => Err(End::failed(Cause::Tls, "internal error: no TLS context for wss://")),
        }
    }

    fn tls_step(&mut self, first: Option<tls::Step>) -> Result<(), End> {
        let step = match first {
            Some(step) => step,
            None => {
                let Phase::Tls(mid) = std::mem::replace(&mut self.phase, Phase::New) else { return Ok(()) };
                tls::resume(*mid).map_err(|e| End::failed(Cause::Tls, e))?
            }
        };
        match step {
            tls::Step::Done(stream) => {
                log!(INFO, "{}: TLS established", self.who());
                self.start_upgrade(Stream::tls(stream))
            }
            // Usually the server's records; but a client certificate chain
            // can be larger than the free send buffer (see `interest`).
            tls::Step::Again(mid) => {
                self.phase = Phase::Tls(Box::new(mid));
                Ok(())
            }
        }
    }

    fn start_upgrade(&mut self, stream: Stream) -> Result<(), End> {
        let (request, key) = self.request();
        self.upgrade(stream, request, key, 0)
    }

    /// The server answered 401 with a Basic challenge, and the URL has
    /// credentials: a new connection sends them (Fetch's "HTTP-network-
    /// or-cache fetch" step 14, which the WebSocket standard's handshake
    /// uses; Chromium does the same, once). The connect timeout still runs.
    fn retry_with_credentials(&mut self, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        log!(INFO, "{}: 401 with a Basic challenge: once more, with the URL's credentials", self.who());
        self.send_credentials = true;
        self.origin_addr = None;
        // Dropping the old phase closes the first connection's socket.
        self.phase = Phase::New;
        self.begin(cx)
    }

    /// The upgrade request, with the URL's credentials once the server
    /// asked for them.
    fn request(&self) -> (Vec<u8>, String) {
        let authorization = self.target.credentials.as_ref().filter(|_| self.send_credentials);
        match authorization {
            Some(value) => {
                let mut headers = self.options.headers.clone();
                headers.push(("Authorization".into(), value.reveal().to_string()));
                handshake::request(&self.target, &headers, &self.options.compression)
            }
            None => handshake::request(&self.target, &self.options.headers, &self.options.compression),
        }
    }

    /// The upgrade request goes out (`written` bytes of it already have).
    fn upgrade(&mut self, stream: Stream, request: Vec<u8>, key: String, written: usize) -> Result<(), End> {
        // The request line only: headers may hold credentials.
        let path = self.target.resource.split('?').next().unwrap_or("");
        log!(DEBUG, "{}: upgrade request GET {path} ({} bytes)", self.who(), request.len());
        let response = InputBuffer::default();
        let unsent = written < request.len();
        self.phase = Phase::Upgrading(Box::new(Upgrading { stream, request, written, key, response }));
        // All out: the answer cannot be here yet, and a read now would only
        // say EAGAIN; the poller says when it is.
        if unsent {
            self.upgrade_step()
        } else {
            Ok(())
        }
    }

    fn upgrade_step(&mut self) -> Result<(), End> {
        let may_retry = self.may_send_credentials();
        let Phase::Upgrading(u) = &mut self.phase else { return Ok(()) };
        let lost = |e: io::Error| {
            let text = format!("connection lost during the handshake: {}", crate::error::io_text(&e));
            End::Failed(Failure::io(Cause::ConnectionLost, &e, text))
        };
        if u.written < u.request.len() {
            while u.written < u.request.len() {
                match u.stream.write(&u.request[u.written..]) {
                    Ok(0) => return Err(End::failed(Cause::ConnectionLost, "connection lost during the handshake")),
                    Ok(n) => u.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(lost(e)),
                }
            }
            // The answer cannot be here yet: the poller says when it is,
            // and a read now would only say EAGAIN.
            return Ok(());
        }
        loop {
            // A 101 answer is a few hundred bytes: reading it in 1 KiB
            // steps touches (zero-fills) a quarter of the memory 4 KiB did,
            // which counts while many connections open at once.
            let spare = u.response.spare(1024);
            match u.stream.read(spare) {
                Ok(0) => {
                    return Err(End::failed(Cause::ConnectionLost, "server closed the connection during the handshake"))
                }
                Ok(n) => {
                    u.response.commit(n);
                    let head = u.response.pending();
                    let verdict =
                        handshake::parse_response(head, &u.key, &self.target.protocols, &self.options.compression);
                    if !matches!(verdict, Ok(None)) {
                        // The answer, accepted or not, for ws_response_*.
                        if let Some(answer) = ResponseHead::parse(head) {
                            log!(INFO, "{}: answer {}", who(&self.target, self.log_id), answer.status);
                            self.shared.set_response(answer);
                        }
                    }
                    match verdict {
                        Ok(Some(agreed)) => {
                            let tail = head[agreed.head_len..].to_vec();
                            let Phase::Upgrading(u) = std::mem::replace(&mut self.phase, Phase::New) else {
                                unreachable!("matched above");
                            };
                            return self.open(u.stream, tail, agreed);
                        }
                        Ok(None) => {}
                        Err(message) if may_retry && handshake::basic_challenge(head) => {
                            return Err(End::Challenged(Failure::new(Cause::Http, message)))
                        }
                        Err(message) => return Err(End::failed(Cause::Http, message)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.response.commit(0);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => u.response.commit(0),
                Err(e) => return Err(lost(e)),
            }
        }
    }

    /// Whether a Basic challenge may be answered with the URL's
    /// credentials: once, and never in place of an `Authorization` header
    /// the application set itself.
    fn may_send_credentials(&self) -> bool {
        self.target.credentials.is_some()
            && !self.send_credentials
            && !self.options.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    }

    /// What the connect timeout interrupted, for its message.
    fn connecting_step(&self) -> String {
        match &self.phase {
            Phase::Resolving(_) => match self.resolving_proxy() {
                Some(p) => format!("resolving proxy host {}", p.host_name()),
                None => format!("resolving {}", self.target.host_name()),
            },
            Phase::Connecting(c) if self.proxy().is_some() => format!("{} (the proxy)", c.dialer.describe()),
            Phase::Connecting(c) => c.dialer.describe(),
            Phase::Tunnel(t) => format!("the handshake with proxy {}", t.label()),
            Phase::Tls(_) => "the TLS handshake".into(),
            _ => "the WebSocket handshake".into(),
        }
    }

    // ----- OPEN and CLOSING -----

    fn open(&mut self, stream: Stream, tail: Vec<u8>, agreed: Agreed) -> Result<(), End> {
        // The TLS context is not needed again.
        self.connector = None;
        log!(INFO, "{}: open (protocol {:?}, extensions {:?})", self.who(), agreed.protocol, agreed.extensions);
        let handler = &mut self.handler;
        let (protocol, extensions) = (c_string(agreed.protocol.clone()), c_string(agreed.extensions.clone()));
        if !self.shared.open(protocol, extensions, || handler.on_open()) {
            // ws_close() won the race against the last handshake bytes.
            return Err(End::failed(Cause::Aborted, closed_before_open()));
        }
        let tls = stream.is_tls();
        let mut open = Box::new(Open {
            stream,
            input: InputBuffer::from_tail(tail),
            reader: Reader::new(self.options.max_message_size, agreed.deflate.as_ref()),
            closing: Closing::default(),
            // The upgrade read the 101 out of a TLS record that may hold
            // frames too, now inside OpenSSL where epoll cannot see them.
            // What plain TCP holds, the (level-triggered) poller reports.
            more_input: tls,
            write_wants: libc::POLLOUT,
            big_reads: false,
            linger: FAIL_LINGER.min(self.options.close_timeout),
            keepalive: None,
        });
        if let Some((interval, timeout)) = self.options.keepalive() {
            open.keepalive = Some(Keepalive::new(interval, timeout, Instant::now()));
            // Data the peer does not acknowledge (a vanished host, a
            // dropped NAT entry) fails the socket after the pong timeout
            // too, also while a ping waits behind it.
            net::set_user_timeout(open.stream.fd(), timeout);
        }
        // From now on other threads may write frames to a plain socket
        // themselves (unless compressing).
        self.shared.outbox().lock().open(
            agreed.deflate.as_ref(),
            self.options.compression.threshold,
            open.stream.is_tls().then_some(net::TLS_GATHER),
            open.stream.direct_fd(),
        );
        // Frames that arrived in the same packets as the 101 response.
        let r = process_input(&self.shared, &mut *self.handler, &mut open);
        self.phase = Phase::Open(open);
        r
    }

    fn open_ready(&mut self, events: Events, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        let Phase::Open(o) = &mut self.phase else { return Ok(()) };
        if o.closing.is_failing() {
            if events.is_hangup_or_error() {
                return Err(self.give_up_failing());
            }
            return self.write_and_check();
        }
        // Paused, the socket is not read, so a reset (or a user timeout)
        // would be reported by epoll forever: end it here instead.
        if !o.reads(&self.shared) && events.is_hangup_or_error() {
            let errno = net::pending_error(o.stream.fd());
            return Err(End::socket_done(&o.closing, Cause::ConnectionLost, errno));
        }
        if (o.more_input || events.is_readable()) && o.reads(&self.shared) {
            match read_socket(&self.shared, &mut *self.handler, o, cx.buffers) {
                Ok(drained) => o.more_input = !drained,
                Err(end) => {
                    // The server's FIN may come in the same turn as its
                    // close frame: what that queued (our echo, RFC 6455
                    // 5.5.1) goes out now, as far as the socket takes it,
                    // before the socket is closed; whether it did decides
                    // whether the close was clean.
                    let _ = write_out(&self.shared, o);
                    return Err(match end {
                        End::Clean { .. } => End::socket_done(&o.closing, Cause::ConnectionLost, 0),
                        End::Abnormal { cause, errno } => End::socket_done(&o.closing, cause, errno),
                        failed => failed,
                    });
                }
            }
        }
        self.write_and_check()
    }

    /// Keepalive at a passed deadline: a ping when the connection has been
    /// quiet for the interval, and the end when a ping got no answer in time:
    /// the socket is closed at once, without a closing handshake that a
    /// dead peer could not answer (on_error, then on_close 1006).
    fn keep_alive(&mut self, now: Instant, cx: &mut Cx<'_, Self>) -> Result<(), End> {
        let Phase::Open(o) = &mut self.phase else { return Ok(()) };
        if !o.keeps_alive() {
            return Ok(());
        }
        let paused = !o.reads(&self.shared);
        let Some(keepalive) = o.keepalive.as_mut() else { return Ok(()) };
        match keepalive.due(now) {
            Due::Nothing => Ok(()),
            Due::Ping => {
                log!(DEBUG, "{}: keepalive ping", who(&self.target, self.log_id));
                self.shared.outbox().lock().push_keepalive_ping();
                self.write_and_check()
            }
            Due::Dead => {
                let unacked = net::unacknowledged_bytes(o.stream.fd());
                if paused {
                    // Paused: the pong waits in the socket unread. The
                    // peer's TCP acknowledging all we sent, the ping
                    // included, or more of it since the ping, says it is
                    // alive.
                    if unacked == 0 || keepalive.acknowledged_more(now, unacked) {
                        keepalive.input(now);
                        return Ok(());
                    }
                    return Err(End::failed(
                        Cause::PingTimeout,
                        format!("no pong within {} ms", keepalive.timeout().as_millis()),
                    ));
                }
                // The pong may be in the socket already, its readiness not
                // yet taken (a loop busy elsewhere, or not run in time):
                // read once before declaring the peer dead.
                let drained = read_socket(&self.shared, &mut *self.handler, o, cx.buffers)?;
                o.more_input = !drained;
                let Some(keepalive) = o.keepalive.as_mut() else { return Ok(()) };
                if keepalive.due(now) != Due::Dead || keepalive.acknowledged_more(now, unacked) {
                    return self.write_and_check();
                }
                Err(End::failed(Cause::PingTimeout, format!("no pong within {} ms", keepalive.timeout().as_millis())))
            }
        }
    }

    /// Writes what the socket takes; a failing connection ends once its
    /// close frame is out.
    fn write_and_check(&mut self) -> Result<(), End> {
        let Phase::Open(o) = &mut self.phase else { return Ok(()) };
        let written = write_out(&self.shared, o);
        // Once per crossing down to the mark, and only while OPEN: never
        // after ws_close (which leaves OPEN before it returns).
        if self.shared.outbox().take_drain() {
            let handler = &mut self.handler;
            self.shared.run_callback(|state| state == ReadyState::Open, || handler.on_drain());
        }
        let Phase::Open(o) = &mut self.phase else { return Ok(()) };
        if let Err(e) = written {
            if o.closing.is_failing() {
                return Err(self.give_up_failing());
            }
            // The peer is gone; what it sent before may still say how
            // (not while paused: nothing is delivered then).
            if o.reads(&self.shared) {
                read_socket(&self.shared, &mut *self.handler, o, &mut BufferPool::new(0))?;
                if o.closing.is_failing() {
                    return Err(self.give_up_failing());
                }
            }
            let Phase::Open(o) = &mut self.phase else { return Ok(()) };
            return Err(End::socket_done(&o.closing, Cause::ConnectionLost, e.raw_os_error().unwrap_or(0)));
        }
        if o.closing.is_failing() {
            let drained = self.shared.outbox().lock().is_empty();
            if drained && o.closing.ours_queued() {
                return Err(self.give_up_failing());
            }
            // A failing TLS connection whose write needs a read cannot
            // progress (it reads nothing more): stop rather than linger.
            if !drained && o.write_wants != libc::POLLOUT {
                return Err(self.give_up_failing());
            }
        }
        Ok(())
    }

    /// Ends a failing connection: FIN after what was written, a last read
    /// so that unread input does not turn close(2) into a reset that could
    /// destroy the close frame in flight.
    fn give_up_failing(&mut self) -> End {
        let Phase::Open(o) = &mut self.phase else { return End::Abnormal { cause: Cause::ConnectionLost, errno: 0 } };
        o.stream.shutdown_write();
        let mut scratch = [0u8; 4096];
        for _ in 0..256 {
            match o.stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        match o.closing.take_failure() {
            Some(failure) => End::Failed(failure),
            None => End::Abnormal { cause: Cause::ConnectionLost, errno: 0 },
        }
    }

    fn finish(&mut self, end: End) {
        let (cause, errno) = match &end {
            End::Clean { .. } => (Cause::None, 0),
            End::Abnormal { cause, errno } => (*cause, *errno),
            End::Failed(f) | End::Challenged(f) => (f.cause, f.errno),
        };
        self.shared.set_cause(cause, errno);
        match &end {
            End::Clean { code, reason } => log!(INFO, "{}: closed cleanly: {code} {reason:?}", self.who()),
            End::Abnormal { .. } => {
                log!(WARNING, "{}: closed abnormally (1006): {}, errno {errno}", self.who(), cause.name())
            }
            End::Failed(f) | End::Challenged(f) => {
                log!(ERROR, "{}: failed ({}, errno {errno}): {}", self.who(), cause.name(), f.message)
            }
        }
        self.shared.transition(None, ReadyState::Closed);
        {
            // No thread writes to the socket from now on: it is about to
            // close, and its fd number may be reused at once.
            self.shared.outbox().lock().shut();
        }
        // The socket closes before on_close runs.
        self.phase = Phase::Done;
        self.connector = None;
        let handler = &mut self.handler;
        let shared = &self.shared;
        let mut emit = |f: &mut dyn FnMut(&mut dyn Handler)| shared.run_callback(|_| true, || f(&mut **handler));
        match end {
            End::Clean { code, reason } => {
                let reason = c_string(reason);
                emit(&mut |h| h.on_close(code, &reason, true));
            }
            End::Abnormal { .. } => emit(&mut |h| h.on_close(CLOSE_ABNORMAL, c"", false)),
            End::Failed(failure) | End::Challenged(failure) => {
                let message = c_string(failure.message);
                emit(&mut |h| h.on_error(&message));
                emit(&mut |h| h.on_close(CLOSE_ABNORMAL, c"", false));
            }
        }
    }
}

impl Open {
    /// Whether the socket is read now: always once the closing handshake
    /// has started (no message is delivered then, and the server's close
    /// frame must come in), else unless ws_set_receiving paused it.
    fn reads(&self, shared: &Shared) -> bool {
        shared.is_receiving() || self.closing.ours_asked() || shared.state() != ReadyState::Open
    }

    /// Keepalive runs until the closing handshake starts; from then the
    /// close timeout bounds the connection.
    fn keeps_alive(&self) -> bool {
        self.keepalive.is_some() && !self.closing.ours_asked() && !self.closing.is_failing()
    }

    /// Asks for our close frame; it is queued once the sends accepted
    /// before it (`due` send commands) have been taken.
    fn request_close(&mut self, shared: &Shared, code: u16, reason: String, due: u64) {
        self.closing.ask(code, reason, due);
        self.queue_close_when_due(shared);
    }

    /// Queues our close frame once the sends it waits for have been taken.
    fn queue_close_when_due(&mut self, shared: &Shared) {
        // Called after every send command: the queue's lock only when our
        // close frame waits for sends.
        if !self.closing.ours_pending() {
            return;
        }
        let mut out = shared.outbox().lock();
        if let Some((code, reason)) = self.closing.due(out.sends_taken()) {
            out.push_close(code, &reason);
        }
    }

    /// Fails the connection (RFC 6455 7.1.7): our close frame with `code`
    /// if none was sent yet, after the messages accepted while OPEN (an
    /// echo sent from on_message, say); then TCP is closed.
    fn fail(&mut self, shared: &Shared, code: u16, failure: Failure) {
        let accepted = shared
            .transition_counting(None, ReadyState::Closing)
            .unwrap_or_else(|| shared.outbox().lock().sends_taken());
        self.request_close(shared, code, String::new(), accepted);
        self.closing.fail(failure, Instant::now() + self.linger);
    }
}

/// Writes what the socket takes now; bufferedAmount drops by each data
/// frame's size once its last byte is written, and the closing handshake's
/// timers start once our close frame is.
fn write_out(shared: &Shared, o: &mut Open) -> io::Result<()> {
    let mut out = shared.outbox().lock();
    let r = out.write_to(&mut o.stream);
    if !out.is_empty() {
        // Plain TCP waits for room to write; TLS for what OpenSSL's last
        // write lacked (a read, during renegotiation).
        o.write_wants = o.stream.write_wants();
    }
    o.closing.wrote(matches!(r, Ok(n) if n > 0), out.close_written());
    if out.take_keepalive_ping_written() {
        if let Some(keepalive) = o.keepalive.as_mut() {
            keepalive.ping_written(Instant::now(), net::unacknowledged_bytes(o.stream.fd()));
        }
    }
    r.map(|_| ())
}

/// Reads until the socket would block or a read from TCP comes back short
/// (true), or READS_PER_TURN reads were made (false), handling frames as
/// they arrive. The read buffer comes
/// from the loop's pool and goes back once it holds nothing.
fn read_socket(shared: &Shared, handler: &mut dyn Handler, o: &mut Open, pool: &mut BufferPool) -> Result<bool, End> {
    if o.input.is_empty() {
        o.input.provide(pool.take());
    }
    let mut result = Ok(false);
    for _ in 0..READS_PER_TURN {
        let chunk = if o.big_reads { READ_CHUNK } else { FIRST_READ_CHUNK };
        let spare = &mut o.input.spare(chunk)[..chunk];
        match o.stream.read(spare) {
            Ok(0) => {
                result = Err(End::socket_done(&o.closing, Cause::ConnectionLost, 0));
                break;
            }
            Ok(n) => {
                if let Some(keepalive) = o.keepalive.as_mut() {
                    keepalive.input(Instant::now());
                }
                o.big_reads |= n == chunk;
                o.input.commit(n);
                if let Err(end) = process_input(shared, handler, o) {
                    result = Err(end);
                    break;
                }
                // Paused (from a callback, or another thread): what this
                // read brought was delivered; the next waits for resume.
                if !o.reads(shared) {
                    result = Ok(false);
                    break;
                }
                // A short read from TCP almost always took all the kernel
                // held, and the poller is level-triggered: it reports what
                // is left or arrives later. So the read that would only say
                // EAGAIN is saved: one syscall per message in a
                // request/response exchange. Not under TLS, whose records
                // end short and whose library may hold more.
                if o.closing.is_failing() || (n < chunk && !o.stream.is_tls()) {
                    result = Ok(true);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                result = Ok(true);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset without a close frame: 1006, no on_error (as browsers).
            Err(e) => {
                result = Err(End::socket_done(&o.closing, Cause::ConnectionLost, e.raw_os_error().unwrap_or(0)));
                break;
            }
        }
    }
    if let Some(buf) = o.input.release() {
        pool.give(buf);
        o.reader.release_idle();
    }
    result
}

fn process_input(shared: &Shared, handler: &mut dyn Handler, o: &mut Open) -> Result<(), End> {
    loop {
        if o.closing.is_failing() {
            return Ok(());
        }
        let incoming = match o.reader.next(&mut o.input) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return Ok(()),
            Err(v) => {
                // Our close frame may be queued already (an echo): then it
                // is the one that goes out before TCP is closed.
                let cause = match v.code {
                    _ if v.out_of_memory => Cause::Resource,
                    CLOSE_TOO_BIG => Cause::TooBig,
                    _ => Cause::Protocol,
                };
                o.fail(shared, v.code, Failure::new(cause, v.message));
                return Ok(());
            }
        };
        match incoming {
            Incoming::Message { text } => {
                // WHATWG: a message received while not OPEN is dropped; the
                // check and the callback are one step against a ws_close
                // from another thread.
                let data = o.reader.message();
                shared.run_callback(|state| state == ReadyState::Open, || handler.on_message(data, text));
            }
            Incoming::Ping(payload) => {
                // A pong for each ping while the output moves; once it is
                // blocked, one for the latest (the writer's rule).
                if !o.closing.ours_asked() {
                    shared.outbox().lock().push_pong(&payload);
                }
            }
            Incoming::Pong(payload) => {
                shared.run_callback(|state| state == ReadyState::Open, || handler.on_pong(&payload));
            }
            Incoming::Close { code, reason } => {
                // A second close frame: the handshake is already done.
                if !o.closing.received(code, reason.clone()) {
                    continue;
                }
                // Echo the code (RFC 6455 5.5.1), after the sends accepted
                // while OPEN; a close() racing this one goes out instead.
                if let Some(accepted) = shared.transition_counting(Some(ReadyState::Open), ReadyState::Closing) {
                    let echo = if code == CLOSE_NO_STATUS { 0 } else { code };
                    o.request_close(shared, echo, reason, accepted);
                }
            }
        }
    }
}

/// "ws#12 ws://host/path": a connection in log lines, its URL without
/// credentials.
fn who(target: &Target, log_id: u32) -> String {
    // Without userinfo, and without the query, where tokens often go.
    let url = match url::Url::parse(&target.url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("..."));
            }
            u.to_string()
        }
        Err(_) => "(url)".to_string(),
    };
    format!("ws#{log_id} {url}")
}

/// Log ids: 1, 2, ... for the connections of the process.
fn next_log_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
    use super::*;

    #[test]
    fn c_string_cuts_at_nul() {
        assert_eq!(c_string("ab\0cd".into()).as_bytes(), b"ab");
        assert_eq!(c_string("abc".into()).as_bytes(), b"abc");
    }
}
