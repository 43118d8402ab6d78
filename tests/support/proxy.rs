//! A TCP proxy that injects faults between libws and a server: per
//! connection, from a seed, it splits writes (down to single bytes),
//! delays them, and at one chosen byte of the opening handshake, of a
//! data frame or of the close frame it stalls, truncates (FIN both ways)
//! or resets (RST both ways). It never alters, drops or duplicates a byte
//! it forwards. The connection's plan is found by the id in the request
//! line: GET /f/ID/...

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// splitmix64: small, seedable, good enough to pick faults.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    ToServer,
    ToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Stall(u64),
    Truncate,
    Reset,
}

/// Where in one direction's byte stream the fault fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Point {
    /// Byte k of the HTTP request or response.
    Handshake(usize),
    /// Data frame i (0-based, in that direction), at `At`.
    Data(usize, At),
    /// The first close frame, at `At`.
    Close(At),
}

/// A byte of a frame: one of its first two header bytes, or a fraction
/// of the way into its payload (header byte 1 when it has none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum At {
    Header(usize),
    Payload(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: Kind,
    pub dir: Dir,
    pub point: Point,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub seed: u64,
    /// Forward in small writes, often single bytes.
    pub split: bool,
    /// Sleep up to 2 ms now and then between writes.
    pub delay: bool,
    pub fault: Option<Fault>,
}

impl Plan {
    /// A plan from `seed`; `data_frames` bounds the data frame a fault
    /// may pick in each direction (to server, to client).
    pub fn from_seed(seed: u64, data_frames: (usize, usize)) -> Plan {
        let mut r = Rng::new(seed ^ 0x5EED);
        let split = r.chance(40);
        let delay = r.chance(30);
        // The fault's kind, direction and point go round with the seed, so
        // that consecutive seeds cover every one; 0 is no fault.
        let combo = seed % 19;
        let fault = (combo > 0).then(|| {
            let c = combo - 1;
            let kind = match c % 3 {
                0 => Kind::Stall(200 + r.below(1300)),
                1 => Kind::Truncate,
                _ => Kind::Reset,
            };
            let dir = if (c / 3) % 2 == 0 { Dir::ToServer } else { Dir::ToClient };
            let at = if r.chance(30) { At::Header(r.below(2) as usize) } else { At::Payload(r.unit()) };
            let frames = if dir == Dir::ToServer { data_frames.0 } else { data_frames.1 };
            let point = match c / 6 {
                0 => Point::Handshake(r.below(120) as usize),
                1 if frames > 0 => Point::Data(r.below(frames as u64) as usize, at),
                _ => Point::Close(at),
            };
            Fault { kind, dir, point }
        });
        Plan { seed, split, delay, fault }
    }
}

/// What the proxy saw of one connection.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The fault fired (at its point, before that byte was forwarded).
    pub fired: bool,
    /// Bytes forwarded: to server, to client.
    pub bytes: (u64, u64),
}

pub struct Proxy {
    pub port: u16,
    plans: Arc<Mutex<HashMap<u64, Plan>>>,
    seen: Arc<Mutex<HashMap<u64, Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let plans: Arc<Mutex<HashMap<u64, Plan>>> = Arc::default();
        let seen: Arc<Mutex<HashMap<u64, Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, st) = (plans.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (p, s) = (p.clone(), s.clone());
                std::thread::spawn(move || relay(conn, upstream, p, s));
            }
        });
        Proxy { port, plans, seen, stop }
    }

    /// The plan for connection `id` (its URL path starts /f/ID/).
    pub fn set_plan(&self, id: u64, plan: Plan) {
        self.plans.lock().unwrap().insert(id, plan);
        self.seen.lock().unwrap().insert(id, Seen::default());
    }

    /// What was seen of `id`, forgetting it (call once its relay is done
    /// or no longer matters).
    pub fn take(&self, id: u64) -> Seen {
        self.plans.lock().unwrap().remove(&id);
        self.seen.lock().unwrap().remove(&id).unwrap_or_default()
    }

    pub fn seen(&self, id: u64) -> Seen {
        self.seen.lock().unwrap().get(&id).cloned().unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type Plans = Arc<Mutex<HashMap<u64, Plan>>>;
type SeenMap = Arc<Mutex<HashMap<u64, Seen>>>;

/// The id in "GET /f/ID/", once the request line is in `buf`.
fn request_id(buf: &[u8]) -> Option<u64> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("GET /f/")?;
    rest.split('/').next()?.parse().ok()
}

fn relay(client: TcpStream, upstream: u16, plans: Plans, seen: SeenMap) {
    // A backstop: a relay nobody finishes ends by itself.
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    let id = loop {
        if first.contains(&b'\n') || first.len() > 8192 {
            break request_id(&first);
        }
        match (&client).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
    };
    let Some(plan) = id.and_then(|id| plans.lock().unwrap().get(&id).cloned()) else { return };
    let id = id.unwrap_or_default();
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let _ = server.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let link = Arc::new(Link { client, server, dead: AtomicBool::new(false), id, seen });
    let l = link.clone();
    let p = plan.clone();
    let back = std::thread::spawn(move || pump(&l, Dir::ToClient, &p, Vec::new()));
    pump(&link, Dir::ToServer, &plan, first);
    let _ = back.join();
}

struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Truncated or reset: no FIN is passed on any more.
    dead: AtomicBool,
    id: u64,
    seen: SeenMap,
}

impl Link {
    fn ends(&self, dir: Dir) -> (&TcpStream, &TcpStream) {
        match dir {
            Dir::ToServer => (&self.client, &self.server),
            Dir::ToClient => (&self.server, &self.client),
        }
    }

    fn note(&self, f: impl FnOnce(&mut Seen)) {
        if let Some(s) = self.seen.lock().unwrap().get_mut(&self.id) {
            f(s);
        }
    }

    fn cut(&self, kind: Kind) {
        self.dead.store(true, Ordering::SeqCst);
        if kind == Kind::Reset {
            // Closed with SO_LINGER 0 by whichever pump drops it last: RST.
            for s in [&self.client, &self.server] {
                set_linger_zero(s);
                let _ = s.shutdown(Shutdown::Read);
            }
        } else {
            for s in [&self.client, &self.server] {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Forwards one direction until EOF or the fault.
fn pump(link: &Link, dir: Dir, plan: &Plan, first: Vec<u8>) {
    let (from, to) = link.ends(dir);
    let fault = plan.fault.filter(|f| f.dir == dir);
    let mut rng = Rng::new(plan.seed ^ if dir == Dir::ToServer { 1 } else { 2 });
    let mut parser = Parser::default();
    let mut pending = first;
    let mut buf = vec![0u8; 16384];
    let mut fired = false;
    loop {
        if pending.is_empty() {
            match (&*from).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let data = std::mem::take(&mut pending);
        let at = match fault {
            Some(f) if !fired => parser.scan(&data, f.point),
            _ => {
                parser.scan(&data, Point::Handshake(usize::MAX));
                None
            }
        };
        let upto = at.unwrap_or(data.len());
        if forward(to, &data[..upto], plan, &mut rng).is_err() {
            break;
        }
        link.note(|s| match dir {
            Dir::ToServer => s.bytes.0 += upto as u64,
            Dir::ToClient => s.bytes.1 += upto as u64,
        });
        let (Some(i), Some(f)) = (at, fault) else { continue };
        fired = true;
        link.note(|s| s.fired = true);
        match f.kind {
            Kind::Stall(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                // The rest of this read goes on; the parser saw it already.
                if forward(to, &data[i..], plan, &mut rng).is_err() {
                    break;
                }
                link.note(|s| match dir {
                    Dir::ToServer => s.bytes.0 += (data.len() - i) as u64,
                    Dir::ToClient => s.bytes.1 += (data.len() - i) as u64,
                });
            }
            kind => {
                link.cut(kind);
                return;
            }
        }
    }
    if !link.dead.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

fn forward(mut to: &TcpStream, data: &[u8], plan: &Plan, rng: &mut Rng) -> std::io::Result<()> {
    if !plan.split && !plan.delay {
        return to.write_all(data);
    }
    let mut rest = data;
    while !rest.is_empty() {
        let n = if plan.split {
            match rng.below(3) {
                0 => 1,
                1 => 1 + rng.below(16) as usize,
                _ => 1 + rng.below(2048) as usize,
            }
        } else {
            rest.len()
        };
        let n = n.min(rest.len());
        to.write_all(&rest[..n])?;
        rest = &rest[n..];
        if plan.delay && rng.chance(3) {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
        }
    }
    Ok(())
}

/// Follows one direction's stream: the HTTP head, then frames.
#[derive(Default)]
struct Parser {
    /// Bytes of the HTTP head so far, and how much of "\r\n\r\n" matched.
    head: usize,
    matched: usize,
    in_frames: bool,
    /// The current frame's header bytes, and how many it needs.
    header: Vec<u8>,
    /// Payload bytes left, and the payload length.
    left: u64,
    len: u64,
    /// Data frames fully or partly seen; a close frame was seen.
    data_frames: usize,
    closes: usize,
}

impl Parser {
    /// Consumes `data`; returns the index in it of the fault's byte, if
    /// that byte is in it.
    fn scan(&mut self, data: &[u8], point: Point) -> Option<usize> {
        let mut hit = None;
        let mut i = 0;
        while i < data.len() {
            if !self.in_frames {
                if hit.is_none() && point == Point::Handshake(self.head) {
                    hit = Some(i);
                }
                let b = data[i];
                self.head += 1;
                self.matched = match (self.matched, b) {
                    (0 | 2, b'\r') | (1 | 3, b'\n') => self.matched + 1,
                    (_, b'\r') => 1,
                    _ => 0,
                };
                if self.matched == 4 {
                    self.in_frames = true;
                }
                i += 1;
                continue;
            }
            if self.left == 0 && self.header_needed() > self.header.len() {
                // A header byte: pushed first, so that byte 0 tells the kind.
                self.header.push(data[i]);
                if hit.is_none() && self.targets(point, self.header.len() - 1) {
                    hit = Some(i);
                }
                i += 1;
                if self.header.len() == self.header_needed() {
                    self.start_payload();
                    if self.len == 0 {
                        // No payload: its last header byte instead.
                        if hit.is_none() && matches!(self.frame_targeted(point), Some(At::Payload(_))) {
                            hit = Some(i - 1);
                        }
                        self.end_frame();
                    }
                }
                continue;
            }
            // Payload bytes, in bulk.
            let n = (self.left as usize).min(data.len() - i);
            if hit.is_none() {
                if let Some(off) = self.payload_target(point) {
                    let done = self.len - self.left;
                    if off >= done && off < done + n as u64 {
                        hit = Some(i + (off - done) as usize);
                    }
                }
            }
            self.left -= n as u64;
            i += n;
            if self.left == 0 {
                self.end_frame();
            }
        }
        hit
    }

    fn is_data(&self) -> bool {
        self.header.first().is_some_and(|b| b & 0x0f <= 2)
    }

    fn is_close(&self) -> bool {
        self.header.first().is_some_and(|b| b & 0x0f == 8)
    }

    /// The current frame is the one `point` names.
    fn frame_targeted(&self, point: Point) -> Option<At> {
        match point {
            Point::Data(k, at) if self.is_data() && self.data_frames == k => Some(at),
            Point::Close(at) if self.is_close() && self.closes == 0 => Some(at),
            _ => None,
        }
    }

    /// Header byte `h` of the current frame is the fault's byte.
    fn targets(&self, point: Point, h: usize) -> bool {
        self.frame_targeted(point) == Some(At::Header(h))
    }

    fn payload_target(&self, point: Point) -> Option<u64> {
        match self.frame_targeted(point)? {
            At::Payload(f) if self.len > 0 => Some(((f * self.len as f64) as u64).min(self.len - 1)),
            _ => None,
        }
    }

    fn header_needed(&self) -> usize {
        if self.header.len() < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        match self.header[1] & 0x7f {
            126 => 4 + mask,
            127 => 10 + mask,
            _ => 2 + mask,
        }
    }

    fn start_payload(&mut self) {
        let h = &self.header;
        self.len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
            n => n as u64,
        };
        self.left = self.len;
    }

    fn end_frame(&mut self) {
        if self.is_data() {
            self.data_frames += 1;
        } else if self.is_close() {
            self.closes += 1;
        }
        self.header.clear();
        self.len = 0;
        self.left = 0;
    }
}
