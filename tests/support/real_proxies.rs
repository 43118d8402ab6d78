//! Real proxy servers on loopback, started per test: tinyproxy (HTTP
//! CONNECT, optionally with Basic authentication or a port allow-list) and
//! microsocks (SOCKS5, optionally with a username and password). Debian
//! packages `tinyproxy-bin` and `microsocks`; `.ci/run` installs them.
//! `counting_relay` in front of one proves that a client went through it.

use crate::paths::scratch_dir;
use crate::peers::peer_missing;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running proxy; killed on drop.
pub struct RealProxy {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl RealProxy {
    /// "http://[user:pass@]127.0.0.1:PORT" and the like.
    pub fn url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("{scheme}://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// What the proxy logged (tinyproxy), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"].iter().map(|d| PathBuf::from(d).join(name)).find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `cmd` (which listens on `port`) and waits until it accepts.
fn start(mut cmd: Command, port: u16, log: PathBuf, name: &str) -> RealProxy {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut proxy = RealProxy { port, child, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = proxy.child.try_wait() {
            panic!("{name} exited with {status}:\n{}", proxy.log());
        }
        assert!(Instant::now() < deadline, "{name} did not start:\n{}", proxy.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy
}

/// tinyproxy 1.11 in the foreground. `auth`: Basic credentials it asks
/// for; `connect_ports`: the only ports it lets CONNECT reach (none: all).
pub fn tinyproxy(auth: Option<(&str, &str)>, connect_ports: &[u16]) -> Option<RealProxy> {
    let Some(bin) = binary("tinyproxy") else {
        return peer_missing("tinyproxy is not installed (Debian package tinyproxy-bin)");
    };
    let dir = scratch_dir(&format!("tinyproxy-{}", free_port()));
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 256\nLogLevel Info\nLogFile \"{}\"\n\
         PidFile \"{}\"\nDisableViaHeader Yes\n",
        log.display(),
        dir.join("tinyproxy.pid").display()
    );
    if let Some((user, pass)) = auth {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    for p in connect_ports {
        conf.push_str(&format!("ConnectPort {p}\n"));
    }
    let conf_path = dir.join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-d").arg("-c").arg(&conf_path);
    Some(start(cmd, port, log, "tinyproxy"))
}

/// microsocks 1.0 (SOCKS5); with `auth`, only that username and password.
pub fn microsocks(auth: Option<(&str, &str)>) -> Option<RealProxy> {
    let Some(bin) = binary("microsocks") else {
        return peer_missing("microsocks is not installed (Debian package microsocks)");
    };
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg("-i").arg("127.0.0.1").arg("-p").arg(port.to_string());
    if let Some((user, pass)) = auth {
        cmd.arg("-u").arg(user).arg("-P").arg(pass);
    }
    Some(start(cmd, port, PathBuf::from("/nonexistent"), "microsocks"))
}

/// A TCP relay to `target` on 127.0.0.1 that counts the connections it
/// took: put in front of a proxy, it proves a client went through it (a
/// client that connected to the origin directly leaves it at 0).
pub struct CountingRelay {
    pub port: u16,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub fn counting_relay(target: u16) -> CountingRelay {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                })
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
    CountingRelay { port, connections }
}

impl CountingRelay {
    pub fn url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("{scheme}://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    pub fn count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}
