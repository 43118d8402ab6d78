//! Connections through the fault-injecting proxy (`proxy`) to the Python
//! server tests/peers/fault_server.py, and the invariants every one of
//! them must keep, whatever the proxy did. Shared by
//! tests/fault_injection.rs and tests/soak.rs.

use crate::handles::{in_loop, Client, Ev, Opts, Recorder};
use crate::peers::{start_peer, Peer};
use crate::proxy::{Dir, Kind, Plan, Point, Proxy, Rng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use ws::ffi::*;

/// Waits for one connection's events; generous, as the proxy stalls
/// for up to 1.5 s and the close timeout is 3 s.
pub const CONN_WAIT: Duration = Duration::from_secs(20);

// ----- checksummed messages: seq (8 digits), length (8), CRC-32 (8 hex) -----

pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

/// Message `seq` with a body of `size` bytes (ASCII letters when text).
pub fn make_message(seq: usize, size: usize, text: bool, rng: &mut Rng) -> Vec<u8> {
    let body: Vec<u8> = if text {
        (0..size).map(|_| b'a' + rng.below(26) as u8).collect()
    } else {
        (0..size).map(|_| rng.next() as u8).collect()
    };
    let mut m = format!("{seq:08}{:08}{:08x}", body.len(), crc32(&body)).into_bytes();
    m.extend_from_slice(&body);
    m
}

/// The seq of an intact message; None when damaged.
pub fn check_message(m: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(m.get(..24)?).ok()?;
    let seq = head[..8].parse().ok()?;
    let len: usize = head[8..16].parse().ok()?;
    let crc = u32::from_str_radix(&head[16..24], 16).ok()?;
    (m.len() - 24 == len && crc32(&m[24..]) == crc).then_some(seq)
}

/// Sizes as the server draws them: half tiny, some medium, a fifth up to
/// ~100 KB.
pub fn message_size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=4 => rng.below(100) as usize,
        5..=7 => 100 + rng.below(4000) as usize,
        _ => 4096 + rng.below(96_000) as usize,
    }
}

// ----- the server's records, one JSON line per finished connection -----

#[derive(Clone, Debug)]
pub struct ServerRecord {
    /// (seq, intact, text) of each message received, in order.
    pub recv: Vec<(i64, bool, bool)>,
    /// Text or not, of each message sent before its close frame.
    pub sent: Vec<bool>,
    pub close_rcvd: Option<u16>,
    pub close_sent: Option<u16>,
}

impl ServerRecord {
    fn parse(v: &serde_json::Value) -> Option<ServerRecord> {
        let recv = v["recv"]
            .as_array()?
            .iter()
            .map(|r| Some((r[0].as_i64()?, r[1].as_bool()?, r[2].as_bool()?)))
            .collect::<Option<Vec<_>>>()?;
        let sent = v["sent"].as_array()?.iter().map(|t| t.as_bool()).collect::<Option<Vec<_>>>()?;
        let code = |k: &str| v[k].as_u64().map(|c| c as u16);
        Some(ServerRecord { recv, sent, close_rcvd: code("close_rcvd"), close_sent: code("close_sent") })
    }
}

/// Records of the connections a test waits for; others are dropped.
#[derive(Default)]
pub struct Reports {
    slots: Mutex<HashMap<u64, Option<ServerRecord>>>,
    cv: Condvar,
}

impl Reports {
    fn listen() -> (Arc<Reports>, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reports = Arc::new(Reports::default());
        let r = reports.clone();
        std::thread::spawn(move || {
            let Ok((s, _)) = listener.accept() else { return };
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let Some(id) = v["id"].as_str().and_then(|i| i.parse::<u64>().ok()) else { continue };
                let mut slots = r.slots.lock().unwrap();
                if let Some(slot) = slots.get_mut(&id) {
                    *slot = ServerRecord::parse(&v);
                    r.cv.notify_all();
                }
            }
        });
        (reports, port)
    }

    fn expect(&self, id: u64) {
        self.slots.lock().unwrap().insert(id, None);
    }

    /// The record of `id` (forgotten from then on), or None after `timeout`.
    fn take(&self, id: u64, timeout: Duration) -> Option<ServerRecord> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.slots.lock().unwrap();
        loop {
            if let Some(Some(_)) = slots.get(&id) {
                return slots.remove(&id).flatten();
            }
            let now = Instant::now();
            if now >= deadline {
                slots.remove(&id);
                return None;
            }
            slots = self.cv.wait_timeout(slots, deadline - now).unwrap().0;
        }
    }
}

/// The server, its report channel and the proxy in front of it.
pub struct FaultEnv {
    /// Held, not read: the server runs as long as this lives.
    _peer: Peer,
    pub proxy: Proxy,
    pub reports: Arc<Reports>,
}

/// Started once per test binary; None when Python `websockets` is missing
/// (a failure under CI=true).
pub fn fault_env() -> Option<&'static FaultEnv> {
    static ENV: std::sync::OnceLock<Option<FaultEnv>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let (reports, port) = Reports::listen();
        let port = port.to_string();
        let peer = start_peer(
            "Python websockets",
            "python3",
            &["tests/peers/fault_server.py", &port],
            "PYTHONPATH",
            "target/peers/python",
        )?;
        let proxy = Proxy::start(peer.port);
        Some(FaultEnv { _peer: peer, proxy, reports })
    })
    .as_ref()
}

// ----- one connection -----

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Closer {
    /// ws_close(code) once `after` server messages arrived.
    Client { code: u16, after: usize },
    /// The server closes (4001) after sending its messages and reading
    /// `after` of the client's.
    Server { after: usize },
    /// Both: the server as `Server`, the client ws_close(code) once all
    /// the server's messages arrived; the close frames often cross.
    Both { code: u16, after: usize },
    /// ws_close(code) right after ws_new, while the handshake is (most
    /// likely) still going on; from callbacks: in on_open.
    Connecting { code: u16 },
}

impl Closer {
    /// The client's close: its code, after how many server messages.
    fn client_close(self, server_msgs: usize) -> Option<(u16, usize)> {
        match self {
            Closer::Client { code, after } => Some((code, after)),
            Closer::Connecting { code } => Some((code, 0)),
            Closer::Both { code, .. } => Some((code, server_msgs)),
            Closer::Server { .. } => None,
        }
    }
}

/// When the soak frees the handle early (the fault test never does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Free {
    /// After the connection ended, from the test thread.
    AtEnd,
    /// From the test thread, right after ws_new, after on_open, or after
    /// the sends.
    Outside(u8),
    /// From inside callback number `n` of the handle (0: the first).
    Inside(usize),
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub id: u64,
    pub seed: u64,
    pub plan: Plan,
    /// (size, text) of each message the client sends once open.
    pub msgs: Vec<(usize, bool)>,
    pub server_msgs: usize,
    pub closer: Closer,
    pub free: Free,
    /// Offer permessage-deflate (the server accepts it).
    pub deflate: bool,
    /// Connect and close timeouts (ms).
    pub timeouts: (u32, u32),
}

impl Spec {
    /// Everything from `seed`; `early_frees` lets the soak free early.
    pub fn from_seed(id: u64, seed: u64, early_frees: bool) -> Spec {
        let mut r = Rng::new(seed);
        let msgs: Vec<(usize, bool)> = (0..r.below(7)).map(|_| (message_size(&mut r), r.chance(50))).collect();
        let server_msgs = r.below(7) as usize;
        let code = if r.chance(50) { 1000 } else { 4000 + r.below(1000) as u16 };
        let closer = match r.below(11) {
            0..=3 => Closer::Client { code, after: r.below(server_msgs as u64 + 1) as usize },
            4..=7 => Closer::Server { after: r.below(msgs.len() as u64 + 1) as usize },
            8 | 9 => Closer::Both { code, after: r.below(msgs.len() as u64 + 1) as usize },
            _ => Closer::Connecting { code },
        };
        let deflate = r.chance(30);
        // Now and then timeouts shorter than the proxy's stalls.
        let timeouts =
            if r.chance(25) { (300 + r.below(1200) as u32, 200 + r.below(1300) as u32) } else { (4000, 3000) };
        let free = if early_frees && r.chance(40) {
            if r.chance(50) {
                Free::Outside(r.below(3) as u8)
            } else {
                Free::Inside(r.below(4) as usize)
            }
        } else {
            Free::AtEnd
        };
        let plan = Plan::from_seed(seed, (msgs.len(), server_msgs));
        Spec { id, seed, plan, msgs, server_msgs, closer, free, deflate, timeouts }
    }

    pub fn url(&self, env: &FaultEnv) -> String {
        let close_after = match self.closer {
            Closer::Server { after } | Closer::Both { after, .. } => after as i64,
            Closer::Client { .. } | Closer::Connecting { .. } => -1,
        };
        format!("ws://127.0.0.1:{}/f/{}/{}/{}/{}", env.proxy.port, self.id, self.server_msgs, close_after, self.seed)
    }

    /// A short name of the fault, for the tallies.
    pub fn fault_name(&self) -> String {
        let Some(f) = self.plan.fault else { return "none".into() };
        let kind = match f.kind {
            Kind::Stall(_) => "stall",
            Kind::Truncate => "truncate",
            Kind::Reset => "reset",
        };
        let point = match f.point {
            Point::Handshake(_) => "handshake",
            Point::Data(..) => "frame",
            Point::Close(_) => "close",
        };
        let dir = if f.dir == Dir::ToServer { "to-server" } else { "to-client" };
        format!("{kind} {point} {dir}")
    }
}

pub fn conn_opts(deflate: bool, (connect, close): (u32, u32)) -> Opts {
    Opts {
        connect_timeout_ms: Some(connect),
        close_timeout_ms: Some(close),
        compression: Some(deflate),
        ..Default::default()
    }
}

/// What one connection did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub opened: bool,
    pub clean: bool,
    pub fired: bool,
    pub msgs_sent: usize,
    pub msgs_received: usize,
    pub bytes: u64,
    /// permessage-deflate was agreed.
    pub deflated: bool,
    /// Callbacks that started after ws_free returned (or after a callback
    /// freed the handle).
    pub late_callbacks: usize,
}

/// Flags the hook checks at the start of every callback.
#[derive(Default)]
struct Guard {
    freed_outside: AtomicBool,
    freed_inside: AtomicBool,
    /// Callbacks seen; the one that freed, when one did.
    calls: AtomicUsize,
    freed_at: AtomicUsize,
    late: AtomicUsize,
    closes: AtomicUsize,
    after_close: AtomicUsize,
    /// ws_close has returned; on_open or on_message after it.
    close_returned: AtomicBool,
    after_close_call: AtomicUsize,
}

/// Runs one connection and checks it. Err says which invariant broke.
pub fn run_conn(env: &FaultEnv, spec: &Spec) -> Result<Outcome, String> {
    env.proxy.set_plan(spec.id, spec.plan.clone());
    env.reports.expect(spec.id);
    let r = drive(env, spec);
    let seen = env.proxy.take(spec.id);
    env.reports.take(spec.id, Duration::ZERO);
    r.map_err(|e| {
        format!(
            "{e}; the proxy forwarded {} bytes to the server and {} to the client, fault fired: {}",
            seen.bytes.0, seen.bytes.1, seen.fired
        )
    })
}

fn drive(env: &FaultEnv, spec: &Spec) -> Result<Outcome, String> {
    let guard = Arc::new(Guard::default());
    let rec = Recorder::new();
    let g = guard.clone();
    let free_inside = match spec.free {
        Free::Inside(n) => Some(n),
        _ => None,
    };
    // A handle freed from a callback may be used by nothing else: its
    // sends and its close are done from its callbacks too.
    let from_callbacks = free_inside.is_some();
    let mut rng = Rng::new(spec.seed ^ 0xC11E);
    let msgs: Vec<(Vec<u8>, bool)> = spec
        .msgs
        .iter()
        .enumerate()
        .map(|(seq, &(size, text))| (make_message(seq, size, text, &mut rng), text))
        .collect();
    let msgs = Arc::new(msgs);
    // (text, accepted while OPEN) of each message ws_send took.
    let sent: Arc<Mutex<Vec<(bool, bool)>>> = Arc::default();
    let send_errors = Arc::new(AtomicUsize::new(0));
    let (m, st, se, closer, server_msgs) =
        (msgs.clone(), sent.clone(), send_errors.clone(), spec.closer, spec.server_msgs);
    let mut received = 0;
    rec.set_hook(move |ws, ev| {
        if g.freed_outside.load(Ordering::SeqCst) || g.freed_inside.load(Ordering::SeqCst) {
            g.late.fetch_add(1, Ordering::SeqCst);
        }
        if g.closes.load(Ordering::SeqCst) > 0 {
            g.after_close.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(ev, Ev::Close { .. }) {
            g.closes.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(ev, Ev::Open { .. } | Ev::Message { .. }) && g.close_returned.load(Ordering::SeqCst) {
            g.after_close_call.fetch_add(1, Ordering::SeqCst);
        }
        let n = g.calls.fetch_add(1, Ordering::SeqCst);
        if from_callbacks {
            if let Ev::Open { .. } = ev {
                for (msg, text) in m.iter() {
                    let r = unsafe { send(ws, msg, *text) };
                    if r != WS_OK {
                        se.fetch_add(1, Ordering::SeqCst);
                    }
                    // Inside a callback nothing else changes the state.
                    st.lock().unwrap().push((*text, true));
                }
            }
            if let Ev::Message { .. } = ev {
                received += 1;
            }
            if let Some((code, after)) = closer.client_close(server_msgs) {
                let now = match ev {
                    Ev::Open { .. } => after == 0,
                    Ev::Message { .. } => received == after,
                    _ => false,
                };
                if now {
                    if unsafe { ws_close(ws, code, c"client done".as_ptr()) } != WS_OK {
                        se.fetch_add(1, Ordering::SeqCst);
                    }
                    g.close_returned.store(true, Ordering::SeqCst);
                }
            }
        }
        // In callback number k, or in the last one (on_close) at the latest.
        if free_inside.is_some_and(|k| k == n || matches!(ev, Ev::Close { .. }))
            && !g.freed_inside.load(Ordering::SeqCst)
        {
            unsafe { ws_free(ws) };
            g.freed_at.store(n, Ordering::SeqCst);
            g.freed_inside.store(true, Ordering::SeqCst);
        }
    });
    let mut c = Client::try_with(&spec.url(env), &[], Some(&conn_opts(spec.deflate, spec.timeouts)), rec.clone())
        .map_err(|e| format!("ws_new failed: {e:?}"))?;
    let mut out = Outcome::default();
    let free_outside = |c: &mut Client, g: &Guard| {
        c.free();
        g.freed_outside.store(true, Ordering::SeqCst);
    };
    let freed_in =
        |g: &Guard, evs: &[Ev]| g.freed_inside.load(Ordering::SeqCst) && evs.len() > g.freed_at.load(Ordering::SeqCst);
    let ended = |g: &Guard, evs: &[Ev]| evs.iter().any(|e| matches!(e, Ev::Close { .. })) || freed_in(g, evs);
    if spec.free == Free::Outside(0) {
        free_outside(&mut c, &guard);
    }
    let closing_early = matches!(spec.closer, Closer::Connecting { .. }) && !from_callbacks;
    if let (Closer::Connecting { code }, true) = (spec.closer, closing_early) {
        if !guard.freed_outside.load(Ordering::SeqCst) {
            let r = c.close(code, Some("client done"));
            guard.close_returned.store(true, Ordering::SeqCst);
            if r != WS_OK {
                return Err(format!("ws_close returned {r} right after ws_new"));
            }
        }
    }
    if !guard.freed_outside.load(Ordering::SeqCst) && !from_callbacks && !closing_early {
        let evs = rec.wait_until(CONN_WAIT, "on_open or the end", |e| {
            e.iter().any(|e| matches!(e, Ev::Open { .. })) || ended(&guard, e)
        });
        if evs.iter().any(|e| matches!(e, Ev::Open { .. })) && !ended(&guard, &evs) {
            out.deflated = c.extensions().contains("permessage-deflate");
            if spec.free == Free::Outside(1) {
                free_outside(&mut c, &guard);
            }
            for (msg, text) in msgs.iter() {
                if guard.freed_outside.load(Ordering::SeqCst) {
                    break;
                }
                let before = c.state();
                let r = unsafe { send(c.ws, msg, *text) };
                // Still OPEN after the call: it was OPEN all through it.
                let open = before == WS_OPEN && c.state() == WS_OPEN;
                if r != WS_OK {
                    return Err(format!("ws_send returned {r} in state {before}"));
                }
                sent.lock().unwrap().push((*text, open));
            }
            if spec.free == Free::Outside(2) && !guard.freed_outside.load(Ordering::SeqCst) {
                free_outside(&mut c, &guard);
            }
            if let Some((code, after)) = spec.closer.client_close(spec.server_msgs) {
                if !guard.freed_outside.load(Ordering::SeqCst) {
                    let _ = rec.wait_until(CONN_WAIT, "server messages before closing", |e| {
                        e.iter().filter(|e| matches!(e, Ev::Message { .. })).count() >= after || ended(&guard, e)
                    });
                    let r = c.close(code, Some("client done"));
                    guard.close_returned.store(true, Ordering::SeqCst);
                    if r != WS_OK {
                        return Err(format!("ws_close returned {r}"));
                    }
                }
            }
        }
    }
    if !guard.freed_outside.load(Ordering::SeqCst) {
        rec.wait_until(CONN_WAIT, "on_close", |e| ended(&guard, e));
    }
    if guard.freed_inside.load(Ordering::SeqCst) {
        c.forget();
    } else if !guard.freed_outside.load(Ordering::SeqCst) {
        free_outside(&mut c, &guard);
    }
    // No callback starts after ws_free returned: what the events are now
    // is what they stay.
    let evs = rec.events();
    out.late_callbacks = guard.late.load(Ordering::SeqCst);
    let sent = sent.lock().unwrap().clone();
    if send_errors.load(Ordering::SeqCst) > 0 {
        return Err("ws_send or ws_close failed inside a callback".into());
    }
    out.msgs_sent = sent.len();
    for (msg, _) in msgs.iter().take(sent.len()) {
        out.bytes += msg.len() as u64;
    }
    out.opened = evs.iter().any(|e| matches!(e, Ev::Open { .. }));
    // Not opened: the server may never have seen it; its slot goes now.
    let server = env.reports.take(spec.id, if out.opened { CONN_WAIT } else { Duration::ZERO });
    let seen = env.proxy.seen(spec.id);
    out.fired = seen.fired;
    check(spec, &evs, &sent, server.as_ref(), seen.fired, &mut out)?;
    if out.late_callbacks > 0 {
        return Err(format!("{} callback(s) started after ws_free", out.late_callbacks));
    }
    if guard.after_close_call.load(Ordering::SeqCst) > 0 {
        return Err("on_open or on_message started after ws_close returned".into());
    }
    if guard.after_close.load(Ordering::SeqCst) > 0 {
        return Err("a callback started after on_close".into());
    }
    Ok(out)
}

fn check(
    spec: &Spec,
    evs: &[Ev],
    sent: &[(bool, bool)],
    server: Option<&ServerRecord>,
    fired: bool,
    out: &mut Outcome,
) -> Result<(), String> {
    let summary = || -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                Ev::Message { data, text, .. } => format!("Message(len {}, text {text})", data.len()),
                e => format!("{e:?}"),
            })
            .collect()
    };
    let fail = |what: &str| Err(format!("{what}; events {:?}; server {server:?}", summary()));
    // One on_close, last; at most one on_open, first; nothing else before it.
    let closes = evs.iter().filter(|e| matches!(e, Ev::Close { .. })).count();
    let opens = evs.iter().filter(|e| matches!(e, Ev::Open { .. })).count();
    if spec.free == Free::AtEnd && (closes != 1 || !matches!(evs.last(), Some(Ev::Close { .. }))) {
        return fail("not exactly one on_close, last");
    }
    if closes > 1 || (closes == 1 && !matches!(evs.last(), Some(Ev::Close { .. }))) {
        return fail("an event after on_close");
    }
    if opens > 1 || (opens == 1 && !matches!(evs[0], Ev::Open { .. })) {
        return fail("on_open twice or not first");
    }
    if opens == 0 && evs.iter().any(|e| matches!(e, Ev::Message { .. })) {
        return fail("on_message without on_open");
    }
    // Never opened: it failed, so on_error, then on_close.
    if opens == 0 && closes == 1 && !matches!(evs, [Ev::Error { .. }, Ev::Close { .. }]) {
        return fail("closed before opening without on_error first");
    }
    // readyState as each callback saw it at its start, and 1006 for any
    // close that is not clean.
    for e in evs {
        let ok = match e {
            Ev::Open { state } | Ev::Message { state, .. } | Ev::Pong { state, .. } => *state == WS_OPEN,
            Ev::Error { state, .. } => *state == WS_CLOSED,
            Ev::Close { state, clean, code, .. } => *state == WS_CLOSED && (*clean || *code == 1006),
        };
        if !ok {
            return fail(&format!("wrong readyState or code in {e:?}"));
        }
    }
    for (i, e) in evs.iter().enumerate() {
        if let Ev::Error { .. } = e {
            if !matches!(evs.get(i + 1), Some(Ev::Close { code: 1006, clean: false, .. }) | None) {
                return fail("on_error not followed by on_close 1006");
            }
        }
    }
    let clean = evs.iter().any(|e| matches!(e, Ev::Close { clean: true, .. }));
    out.clean = clean;
    // Messages from the server: intact, in order, each as the server sent it.
    let got: Vec<(Vec<u8>, bool)> = evs
        .iter()
        .filter_map(|e| match e {
            Ev::Message { data, text, .. } => Some((data.clone(), *text)),
            _ => None,
        })
        .collect();
    out.msgs_received = got.len();
    for (i, (m, text)) in got.iter().enumerate() {
        out.bytes += m.len() as u64;
        if check_message(m) != Some(i) {
            return fail(&format!("server message {i} damaged or out of order"));
        }
        if let Some(s) = server {
            if s.sent.get(i) != Some(text) {
                return fail(&format!("server message {i}: not sent as it arrived (text {text})"));
            }
        }
    }
    // Messages to the server: intact, in order, only what was accepted.
    if let Some(s) = server {
        for (i, &(seq, ok, text)) in s.recv.iter().enumerate() {
            if !ok || seq != i as i64 || sent.get(i).map(|m| m.0) != Some(text) {
                return fail(&format!("client message {i} arrived damaged, out of order or unsent"));
            }
        }
    }
    if !clean {
        return Ok(());
    }
    let Some(s) = server else { return fail("clean close, but no record from the server") };
    let Some(Ev::Close { code, reason, .. }) = evs.last() else { unreachable!() };
    // The code and reason are the server's: its own, or ours echoed.
    let ok = match spec.closer {
        Closer::Client { code: ours, .. } | Closer::Connecting { code: ours } => {
            (*code, reason.as_str()) == (ours, "client done")
        }
        Closer::Server { .. } => (*code, reason.as_str()) == (4001, "server done"),
        Closer::Both { code: ours, .. } => {
            (*code, reason.as_str()) == (4001, "server done") || (*code, reason.as_str()) == (ours, "client done")
        }
    };
    if !ok {
        return fail(&format!("was_clean with code {code} and reason {reason:?}"));
    }
    // The proxy dropped what the client sent from some byte on.
    let client_cut =
        fired && spec.plan.fault.is_some_and(|f| f.dir == Dir::ToServer && !matches!(f.kind, Kind::Stall(_)));
    match spec.closer {
        Closer::Client { .. } | Closer::Connecting { .. } => {
            if s.close_rcvd.is_none() || s.close_sent.is_none() {
                return fail("was_clean, but the server did not complete the closing handshake");
            }
        }
        Closer::Server { .. } | Closer::Both { .. } => {
            // The client has the server's close frame and its FIN; it
            // cannot know whether its answer (or its last messages) got
            // through: when the proxy cut them, only the server knows.
            if s.close_sent.is_none() || (s.close_rcvd.is_none() && !client_cut) {
                return fail("was_clean, but the server did not complete the closing handshake");
            }
            // In `Both` the client closes only once all have arrived.
            if got.len() != s.sent.len() {
                return fail(&format!("clean close: {} of the server's {} messages arrived", got.len(), s.sent.len()));
            }
        }
    }
    let required = sent.iter().filter(|m| m.1).count();
    // As above: after the server's close frame, a cut is not the client's to see.
    let exempt = client_cut && matches!(spec.closer, Closer::Server { .. } | Closer::Both { .. });
    if !exempt && s.recv.len() < required {
        return fail(&format!("clean close: {} of {required} messages sent while OPEN arrived", s.recv.len()));
    }
    Ok(())
}

/// Runs one connection on the calling thread's loop; a panic (a wait
/// that timed out) is a failure too. A failure says how to replay it.
pub fn run_one(env: &FaultEnv, spec: &Spec) -> Result<Outcome, String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_conn(env, spec)));
    let r = match r {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    };
    let frees = if spec.free == Free::AtEnd { "" } else { " LIBWS_FAULT_EARLY_FREES=1" };
    r.map_err(|e| format!("seed {} (replay: LIBWS_FAULT_SEED={}{frees}): {e}\n  spec {spec:?}", spec.seed, spec.seed))
}

/// Runs `specs` concurrently, each on its own thread on `lp` (NULL: each
/// handle on its own library thread).
// tests/fault_injection.rs runs batches; tests/soak.rs runs one at a time.
#[allow(dead_code)]
pub fn run_batch(env: &'static FaultEnv, lp: *mut ws_loop, specs: Vec<Spec>) -> Vec<Result<Outcome, String>> {
    let lp = lp as usize;
    let threads: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            std::thread::spawn(move || {
                let mut r = Err(String::new());
                in_loop(lp as *mut ws_loop, || r = run_one(env, &spec));
                r
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("driver thread died".into()))).collect()
}

/// A unique connection id.
pub fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

unsafe fn send(ws: *mut ws_socket, msg: &[u8], text: bool) -> i32 {
    if text {
        ws_send_string(ws, msg.as_ptr().cast(), msg.len())
    } else {
        ws_send_bytes(ws, msg.as_ptr(), msg.len())
    }
}
