//! wss:// over native-tls (OpenSSL on Linux), driven without blocking: the
//! handshake resumes from `poll(2)` like everything else on the I/O thread.

use crate::net::Tcp as TcpStream;
use crate::options::TlsOptions;
use native_tls::{HandshakeError, MidHandshakeTlsStream, Protocol, TlsConnector, TlsStream};

/// One step of the handshake.
pub enum Step {
    Done(TlsStream<TcpStream>),
    /// Wait for what the socket lacked (`Tcp::blocked_on`), then `resume`.
    Again(MidHandshakeTlsStream<TcpStream>),
}

/// Builds a connector; `TlsOptions::connector` keeps it for reuse.
pub fn connector(options: &TlsOptions) -> Result<TlsConnector, String> {
    let mut builder = TlsConnector::builder();
    builder.min_protocol_version(Some(Protocol::Tlsv12));
    for cert in options.extra_roots() {
        builder.add_root_certificate(cert.clone());
    }
    if let Some(identity) = options.identity() {
        builder.identity(identity.clone());
    }
    builder.danger_accept_invalid_certs(options.accepts_invalid_certs());
    builder.danger_accept_invalid_hostnames(options.accepts_invalid_hostnames());
    builder.build().map_err(|e| format!("cannot set up TLS: {e}"))
}

/// Starts the handshake; `host` is the name (or address) the certificate
/// must match, also sent as SNI when it is a name.
pub fn start(connector: &TlsConnector, host: &str, tcp: std::net::TcpStream) -> Result<Step, String> {
    step(connector.connect(host, TcpStream::new(tcp)))
}

pub fn resume(mid: MidHandshakeTlsStream<TcpStream>) -> Result<Step, String> {
    step(mid.handshake())
}

fn step(r: Result<TlsStream<TcpStream>, HandshakeError<TcpStream>>) -> Result<Step, String> {
    match r {
        Ok(stream) => Ok(Step::Done(stream)),
        Err(HandshakeError::WouldBlock(mid)) => Ok(Step::Again(mid)),
        Err(HandshakeError::Failure(e)) => Err(describe(&e.to_string())),
    }
}

/// OpenSSL's text, e.g. "error:0A000086:SSL routines:tls_post_process_server_
/// certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889:
/// (self-signed certificate)", shortened to "TLS handshake failed:
/// certificate verify failed: self-signed certificate".
fn describe(openssl: &str) -> String {
    let (main, detail) = match openssl.rsplit_once(" (") {
        Some((m, d)) if d.ends_with(')') => (m, Some(&d[..d.len() - 1])),
        _ => (openssl, None),
    };
    // The reason is the field after "SSL routines:<function>:".
    let reason = main
        .split_once("SSL routines:")
        .and_then(|(_, rest)| rest.split(':').nth(1))
        .filter(|r| !r.is_empty())
        .unwrap_or(main.trim());
    match detail {
        Some(d) => format!("TLS handshake failed: {reason}: {d}"),
        None => format!("TLS handshake failed: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn openssl_errors_read_well() {
        assert_eq!(
            describe("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (self-signed certificate)"),
            "TLS handshake failed: certificate verify failed: self-signed certificate"
        );
        assert_eq!(
            describe(
                "error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../ssl/record/ssl3_record.c:354:"
            ),
            "TLS handshake failed: wrong version number"
        );
        assert_eq!(describe("unexpected EOF"), "TLS handshake failed: unexpected EOF");
    }
}
