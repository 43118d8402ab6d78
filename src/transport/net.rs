//! Sockets without blocking: a connect that poll(2) can finish, the poll
//! call itself, and the stream type the loop's thread owns.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// TCP under TLS, remembering which direction last hit EAGAIN. OpenSSL
/// reports WouldBlock alike when it needs to read (the server's records)
/// and when it needs to write (a full send buffer); this says which, so
/// that the loop waits for the right readiness and never spins or stalls.
pub struct Tcp {
    stream: TcpStream,
    blocked: Cell<i16>,
}

impl Tcp {
    pub fn new(stream: TcpStream) -> Tcp {
        Tcp { stream, blocked: Cell::new(libc::POLLIN) }
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

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.stream.read(buf);
        self.note(r, libc::POLLIN)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // std's TcpStream::write is send(2) with MSG_NOSIGNAL.
        let r = self.stream.write(buf);
        self.note(r, libc::POLLOUT)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The connection's byte stream: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls {
        tls: Box<native_tls::TlsStream<Tcp>>,
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
    pub fn tls(tls: native_tls::TlsStream<Tcp>) -> Stream {
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
            Stream::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Stream::Tls { tls, .. } => {
                let _ = tls.shutdown();
                let _ = tls.get_ref().stream.shutdown(std::net::Shutdown::Write);
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
            Stream::Plain(s) => send_vectored(s, bufs),
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
fn send_vectored(s: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    send_vectored_fd(s.as_raw_fd(), bufs)
}

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
pub fn start_connect(addr: &SocketAddr, send_buffer: Option<u32>) -> io::Result<TcpStream> {
    let (domain, storage, len) = sockaddr(addr);
    // SAFETY: plain syscalls; every result is checked, and the fd is owned by
    // the TcpStream right after it is created.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(bytes) = send_buffer {
            let bytes = bytes.min(i32::MAX as u32) as libc::c_int;
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&bytes as *const libc::c_int).cast(), size);
        }
        let rc = libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len);
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(err);
            }
        }
        Ok(stream)
    }
}

/// After POLLOUT: did the connect succeed?
pub fn finish_connect(stream: &TcpStream) -> io::Result<()> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    // A connect that has not failed may still be unfinished if poll woke
    // for another reason: peer_addr tells.
    stream.peer_addr().map(|_| ())?;
    // Small messages go out at once; libws batches writes itself.
    stream.set_nodelay(true)
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
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap().0);
        let mut stream = Stream::Plain(tcp);
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
