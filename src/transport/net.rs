//! Sockets without blocking: a connect that poll(2) can finish (TCP) or
//! that completes at once (a Unix domain socket), and the stream type the
//! loop's thread owns.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A connected (or connecting) stream socket, TCP or Unix, non-blocking.
/// Reads are recv(2) and writes send(2) with MSG_NOSIGNAL: a write to a
/// peer that has gone returns EPIPE instead of raising SIGPIPE, whose
/// default action would end the host program.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A new socket of `domain`, non-blocking and close-on-exec.
    fn new(domain: libc::c_int) -> io::Result<Socket> {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn set_int_option(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: our own fd and a live c_int of the size given.
        let rc = unsafe { libc::setsockopt(self.fd(), level, name, (&value as *const libc::c_int).cast(), size) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// SO_ERROR: the error a background connect ended with, if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: our own fd, and a live c_int with its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
    }

    /// Whether the socket has a peer: ENOTCONN while a connect is unfinished.
    pub fn check_connected(&self) -> io::Result<()> {
        // SAFETY: sockaddr_storage is plain data for which all zeroes is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: our own fd, and live storage with its size.
        let rc =
            unsafe { libc::getpeername(self.fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// FIN after what is queued. Best effort: errors are moot here.
    pub fn shutdown_write(&self) {
        // SAFETY: shutdown(2) on our own fd.
        unsafe { libc::shutdown(self.fd(), libc::SHUT_WR) };
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: our own fd, and `buf` is live and writable for its length.
        let n = unsafe { libc::recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        send_vectored_fd(self.fd(), bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket under TLS, remembering which direction last hit EAGAIN.
/// OpenSSL reports WouldBlock alike when it needs to read (the server's
/// records) and when it needs to write (a full send buffer); this says
/// which, so that the loop waits for the right readiness and never spins
/// or stalls.
pub struct TlsSocket {
    stream: Socket,
    blocked: Cell<i16>,
}

impl TlsSocket {
    pub fn new(stream: Socket) -> TlsSocket {
        TlsSocket { stream, blocked: Cell::new(libc::POLLIN) }
    }

    /// POLLIN or POLLOUT: what the last WouldBlock was waiting for.
    pub fn blocked_on(&self) -> i16 {
        self.blocked.get()
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn note<T>(&self, r: io::Result<T>, direction: i16) -> io::Result<T> {
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.blocked.set(direction);
        }
        r
    }
}

impl Read for TlsSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.stream.read(buf);
        self.note(r, libc::POLLIN)
    }
}

impl Write for TlsSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.stream.write(buf);
        self.note(r, libc::POLLOUT)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The connection's byte stream: a plain socket or TLS over it.
pub enum Stream {
    Plain(Socket),
    Tls {
        tls: Box<native_tls::TlsStream<TlsSocket>>,
        /// Small frames are gathered here into one TLS record per write.
        /// Allocated at the first gathered write: an idle connection that
        /// never sent two frames at once holds none of it.
        gather: Vec<u8>,
    },
}

/// Frames smaller than this are gathered before a TLS write (the TLS record
/// size), so that many small messages cost one record, not one each.
pub(crate) const TLS_GATHER: usize = 16 * 1024;

impl Stream {
    pub fn tls(tls: native_tls::TlsStream<TlsSocket>) -> Stream {
        Stream::Tls { tls: Box::new(tls), gather: Vec::new() }
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls { tls, .. } => tls.get_ref().fd(),
        }
    }

    /// After a write returned WouldBlock: the poll events to wait for
    /// before writing again. Plain TCP waits for room in the send buffer;
    /// TLS for whatever OpenSSL's last socket call was missing.
    pub fn write_wants(&self) -> i16 {
        match self {
            Stream::Plain(_) => libc::POLLOUT,
            Stream::Tls { tls, .. } => tls.get_ref().blocked_on(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls { .. })
    }

    /// The fd that other threads may write frames to directly: plain TCP
    /// only (TLS state belongs to the loop).
    pub fn direct_fd(&self) -> Option<RawFd> {
        match self {
            Stream::Plain(s) => Some(s.as_raw_fd()),
            Stream::Tls { .. } => None,
        }
    }

    /// Stops sending: TLS close_notify where there is TLS, then FIN after
    /// what is queued. Best effort: errors are moot here.
    pub fn shutdown_write(&mut self) {
        match self {
            Stream::Plain(s) => s.shutdown_write(),
            Stream::Tls { tls, .. } => {
                let _ = tls.shutdown();
                tls.get_ref().stream.shutdown_write();
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls { tls, .. } => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls { tls, .. } => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls { tls, gather } => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
                if first.len() >= TLS_GATHER || bufs.len() < 2 {
                    return tls.write(first);
                }
                // After a WouldBlock OpenSSL wants the same bytes again; the
                // gathered buffer starts with them, and may only be longer.
                gather.clear();
                gather.reserve_exact(TLS_GATHER);
                for b in bufs {
                    let room = TLS_GATHER - gather.len();
                    gather.extend_from_slice(&b[..b.len().min(room)]);
                    if gather.len() == TLS_GATHER {
                        break;
                    }
                }
                tls.write(gather)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket's fd borrowed for writing from another thread (the direct
/// send path): the loop closes the socket only under the lock that the
/// writer holds, so the fd is the connection's for the whole write.
pub struct RawSocket(pub RawFd);

impl Write for RawSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        send_vectored_fd(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// writev(2) as sendmsg(2) with MSG_NOSIGNAL: a write to a socket the peer
/// has closed returns EPIPE instead of raising SIGPIPE, whose default action
/// would end the host program (std's `write_vectored` uses plain writev).
fn send_vectored_fd(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; IoSlice is ABI-compatible with iovec,
    // and the kernel only reads `bufs` during the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        let n = libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Starts a TCP connect that completes in the background; poll for POLLOUT
/// and then call `finish_connect`.
/// The pending error of any socket (SO_ERROR, which this clears); 0 when
/// none or when it cannot be read.
pub fn pending_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live c_int with its size; a bad fd only fails the call.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
    };
    if rc == 0 {
        err
    } else {
        0
    }
}

pub fn start_connect(addr: &SocketAddr, send_buffer: Option<u32>) -> io::Result<Socket> {
    let (domain, storage, len) = sockaddr(addr);
    let socket = Socket::new(domain)?;
    // Small messages go out at once; libws batches writes itself. Set
    // before the connect, so that finishing it takes no system call.
    socket.set_int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(bytes) = send_buffer {
        // Only the tests set it; the kernel's default otherwise.
        let _ = socket.set_int_option(libc::SOL_SOCKET, libc::SO_SNDBUF, bytes.min(i32::MAX as u32) as libc::c_int);
    }
    // SAFETY: our own fd, and a live address of the length given.
    let rc = unsafe { libc::connect(socket.fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(socket)
}

/// The most a Unix socket's path may hold (sun_path, less the NUL that
/// ends a path in the file system; an abstract name has no NUL but its
/// leading zero byte).
pub(crate) const UNIX_PATH_MAX: usize = 107;

/// Connects to a Unix domain socket: a path in the file system, or with a
/// leading `@` a name in the abstract namespace (unix(7)). Such a connect
/// completes at once or fails (a full backlog says EAGAIN).
pub fn connect_unix(path: &str) -> io::Result<Socket> {
    // SAFETY: sockaddr_un is plain data for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (name, abstract_name) = match path.strip_prefix('@') {
        Some(name) => (name.as_bytes(), true),
        None => (path.as_bytes(), false),
    };
    if name.len() > UNIX_PATH_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    if name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let start = usize::from(abstract_name);
    for (i, b) in name.iter().enumerate() {
        addr.sun_path[start + i] = *b as libc::c_char;
    }
    // An abstract name is exactly its bytes; a path ends at its NUL.
    let path_offset = std::mem::size_of::<libc::sa_family_t>();
    let len = path_offset + start + name.len() + usize::from(!abstract_name);
    let socket = Socket::new(libc::AF_UNIX)?;
    // SAFETY: our own fd, and a live sockaddr_un of at least `len` bytes.
    let rc = unsafe { libc::connect(socket.fd(), (&addr as *const libc::sockaddr_un).cast(), len as libc::socklen_t) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Bounds how long written data may stay unacknowledged (also by a zero
/// window) before the kernel fails the connection with ETIMEDOUT
/// (TCP_USER_TIMEOUT, tcp(7)). Best effort: a refusal leaves the default.
pub fn set_user_timeout(fd: RawFd, timeout: std::time::Duration) {
    let ms = timeout.as_millis().min(libc::c_uint::MAX as u128) as libc::c_uint;
    let size = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: a live fd and a live c_uint of the size given.
    unsafe {
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, (&ms as *const libc::c_uint).cast(), size)
    };
}

/// Bytes written to the socket that the peer has not acknowledged yet
/// (SIOCOUTQ, tcp(7)); 0 when the socket cannot say.
pub fn unacknowledged_bytes(fd: RawFd) -> u32 {
    let mut n: libc::c_int = 0;
    // SAFETY: a live fd and a live c_int for the kernel to fill.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        return 0;
    }
    n.max(0) as u32
}

/// After POLLOUT: did the connect succeed?
pub fn finish_connect(stream: &Socket) -> io::Result<()> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    // A connect that has not failed may still be unfinished if poll woke
    // for another reason: getpeername tells.
    stream.check_connected()
}

fn sockaddr(addr: &SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (libc::AF_INET, storage, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (libc::AF_INET6, storage, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    /// C programs keep SIGPIPE's default action (terminate); a write to a
    /// socket the peer has closed must return EPIPE instead of raising it.
    #[test]
    #[cfg_attr(miri, ignore = "TCP sockets, poll(2) and signal(2): not in miri")]
    fn writes_to_a_closed_peer_raise_no_sigpipe() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap().0);
        let mut stream = Stream::Plain(Socket { fd: OwnedFd::from(tcp) });
        // The first write draws a reset from the closed peer; wait for it.
        let _ = stream.write(b"x");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut fds = [libc::pollfd { fd: stream.fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 || Instant::now() > deadline {
                break;
            }
            assert!(rc >= 0);
            let mut buf = [0u8; 16];
            if let Ok(0) | Err(_) = stream.read(&mut buf) {
                continue;
            }
        }
        // SAFETY: sets the default action, as a C program has it, and back.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let slices = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let results: Vec<bool> = (0..3).map(|_| stream.write_vectored(&slices).is_err()).collect();
        // SAFETY: restores the action saved above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
        assert!(results.iter().any(|e| *e), "writes to a closed peer kept succeeding");
    }
}
