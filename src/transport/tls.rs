//! wss:// over native-tls (OpenSSL on Linux), driven without blocking: the
//! handshake resumes when epoll says the socket is ready, like everything else on the loop's thread.

use crate::transport::net::{Socket, TlsSocket};
use native_tls::{HandshakeError, MidHandshakeTlsStream, Protocol, TlsConnector, TlsStream};
use std::sync::{Arc, OnceLock};

/// What `wss://` connections trust and present.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// Trusted in addition to the system store.
    extra_roots: Vec<native_tls::Certificate>,
    /// A client certificate and key, for mutual TLS.
    identity: Option<native_tls::Identity>,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
    /// The TLS context built from these settings, shared by every
    /// connection made with them: it holds the parsed trust store, hundreds
    /// of KiB that each connection would otherwise carry. Replaced by every
    /// change, so a handle keeps the settings it was created with.
    connector: Arc<OnceLock<Result<native_tls::TlsConnector, String>>>,
}

impl TlsOptions {
    fn changed(&mut self) {
        self.connector = Arc::default();
    }

    /// Trusts these certificates too, besides the system store.
    pub fn add_roots(&mut self, certs: Vec<native_tls::Certificate>) {
        self.extra_roots.extend(certs);
        self.changed();
    }

    /// Presents this client certificate (mutual TLS).
    pub fn set_identity(&mut self, identity: native_tls::Identity) {
        self.identity = Some(identity);
        self.changed();
    }

    /// Whether these settings built a context of their own.
    #[cfg(test)]
    pub fn has_own_context(&self) -> bool {
        self.connector.get().is_some()
    }

    #[cfg(test)]
    pub fn shares_context_with(&self, other: &TlsOptions) -> bool {
        Arc::ptr_eq(&self.connector, &other.connector)
    }

    pub fn set_accept_invalid_certs(&mut self, yes: bool) {
        self.accept_invalid_certs = yes;
        self.changed();
    }

    pub fn set_accept_invalid_hostnames(&mut self, yes: bool) {
        self.accept_invalid_hostnames = yes;
        self.changed();
    }

    /// The connector for these settings, built once. Settings that add no
    /// certificate (the defaults among them) share one per process.
    pub fn connector(&self) -> Result<native_tls::TlsConnector, String> {
        type Cache = OnceLock<Result<native_tls::TlsConnector, String>>;
        // Without certificates of the caller's, only the two flags differ.
        static SYSTEM_STORE: [Cache; 4] = [const { OnceLock::new() }; 4];
        let system_store_only = self.extra_roots.is_empty() && self.identity.is_none();
        let flags = usize::from(self.accept_invalid_certs) * 2 + usize::from(self.accept_invalid_hostnames);
        let cache = if system_store_only { &SYSTEM_STORE[flags] } else { &*self.connector };
        cache
            .get_or_init(|| {
                #[cfg(feature = "testing")]
                testing::built_here();
                connector(self)
            })
            .clone()
    }

    pub fn extra_roots(&self) -> &[native_tls::Certificate] {
        &self.extra_roots
    }

    pub fn identity(&self) -> Option<&native_tls::Identity> {
        self.identity.as_ref()
    }

    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    pub fn accepts_invalid_hostnames(&self) -> bool {
        self.accept_invalid_hostnames
    }
}

/// One step of the handshake.
pub enum Step {
    Done(TlsStream<TlsSocket>),
    /// Wait for what the socket lacked (`Tcp::blocked_on`), then `resume`.
    Again(MidHandshakeTlsStream<TlsSocket>),
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
pub fn start(connector: &TlsConnector, host: &str, socket: Socket) -> Result<Step, String> {
    step(connector.connect(host, TlsSocket::new(socket)))
}

pub fn resume(mid: MidHandshakeTlsStream<TlsSocket>) -> Result<Step, String> {
    step(mid.handshake())
}

fn step(r: Result<TlsStream<TlsSocket>, HandshakeError<TlsSocket>>) -> Result<Step, String> {
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

/// Which thread built the last TLS context (the `testing` feature only).
#[cfg(feature = "testing")]
pub mod testing {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    static BUILT_ON: Mutex<Option<ThreadId>> = Mutex::new(None);

    pub(super) fn built_here() {
        *BUILT_ON.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current().id());
    }

    /// The thread that built the last TLS context, if any was built.
    pub fn last_tls_context_built_on() -> Option<ThreadId> {
        *BUILT_ON.lock().unwrap_or_else(|e| e.into_inner())
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
