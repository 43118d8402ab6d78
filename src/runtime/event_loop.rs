//! The event loop: one epoll instance, one wake-up, one timer heap, and the
//! connections it drives. A connection lives on exactly one loop; a loop is
//! run by one thread at a time: a library thread (the private loop of a
//! handle created without one, or `ws_loop_start`), or the application,
//! turn by turn (`ws_loop_run`). Whichever it is, the comments call it
//! "the loop's thread"; a "library thread" is one that libws made.
//!
//! Other threads reach a loop through its command queue and its wake-up
//! (an eventfd registered in the epoll set, written only when the loop may
//! be asleep). Commands and timers name a connection by slot and
//! generation, so a late one for a connection that has gone never reaches
//! the connection that reuses its slot.

use crate::runtime::threads::{current_thread_tag, release_unused_stack, spawn_quiet};
use crate::runtime::waker::Waker;
use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A connection's name on its loop: slot index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The connection's epoll data.
    fn token(self) -> Token {
        Token((u64::from(self.index) << 32) | u64::from(self.generation))
    }

    fn from_token(token: Token) -> ConnId {
        ConnId { index: (token.0 >> 32) as u32, generation: token.0 as u32 }
    }
}

/// What epoll hands back with an event: which connection's socket, or the
/// wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token(u64);

/// The wake-up fd's token (no connection has it: slot indexes stay far
/// below u32::MAX).
const WAKE_TOKEN: Token = Token(u64::MAX);
/// Commands taken before the loop turns to I/O, so that a thread sending
/// faster than the socket drains cannot starve reads, timers and closes.
const COMMANDS_PER_TURN: usize = 4096;
/// epoll events taken per wait.
const EVENTS_PER_WAIT: usize = 256;
/// Read buffers a shared loop keeps for reuse; an idle connection holds
/// none.
const POOLED_BUFFERS: usize = 8;
/// A private loop whose connection has ended waits this long, its thread
/// parked, for the next handle made without a loop: that handle then costs
/// no new thread, epoll instance or eventfd (about 30 system calls and a
/// third of a default-mode connect's CPU time). At most MAX_PARKED wait.
const PARK_FOR: Duration = Duration::from_millis(500);
const MAX_PARKED: usize = 4;

/// The parked private loops, each with the process it was parked in: a
/// child made by fork() has none of its parent's threads, so their loops
/// are not its to take. Type-erased: a static cannot be generic.
static PARKED: Mutex<Vec<(u32, Arc<dyn std::any::Any + Send + Sync>)>> = Mutex::new(Vec::new());

type Parked = Vec<(u32, Arc<dyn std::any::Any + Send + Sync>)>;

fn lock_parked() -> MutexGuard<'static, Parked> {
    PARKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parked loops if their lock is free at once: parking and taking are
/// only worth it then (and in a child made by fork() while another thread
/// held the lock, it never is).
fn try_lock_parked() -> Option<MutexGuard<'static, Parked>> {
    match PARKED.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn this_process() -> u32 {
    std::process::id()
}

/// What a loop runs: a connection, as the loop sees it. The loop calls it
/// when it starts, when its socket is ready, when a command or a lookup's
/// result for it arrives, or when its deadline passes, and then asks it
/// what it waits for (`interest`, `deadline`, `wants_turn`).
pub trait Task: Send + Sized + 'static {
    /// What other threads send it.
    type Command: Send;
    fn start(&mut self, cx: &mut Cx<'_, Self>);
    fn command(&mut self, cmd: Self::Command);
    /// Writes what commands queued (after a batch of them was taken).
    fn flush(&mut self);
    fn resolved(&mut self, result: io::Result<Vec<SocketAddr>>, cx: &mut Cx<'_, Self>);
    /// `events`: what its socket is ready for, or `Events::NONE` for a
    /// turn it asked for with `wants_turn`.
    fn ready(&mut self, events: Events, cx: &mut Cx<'_, Self>);
    fn timer(&mut self, now: Instant, cx: &mut Cx<'_, Self>);
    /// Ends it at once: nothing will run its loop again.
    fn abort(&mut self, why: &str);
    fn is_done(&self) -> bool;
    fn interest(&self) -> Option<Interest>;
    fn deadline(&self) -> Option<Instant>;
    /// Work is left that epoll will not report.
    fn wants_turn(&self) -> bool;
}

/// epoll readiness: what a task's socket is watched for, or what it is
/// ready for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events(u32);

impl Events {
    /// Nothing: a turn the task asked for, not a socket event.
    pub(crate) const NONE: Events = Events(0);
    pub(crate) const READ: Events = Events(libc::EPOLLIN as u32);
    pub(crate) const WRITE: Events = Events(libc::EPOLLOUT as u32);

    /// What a `poll(2)` interest (POLLIN, POLLOUT) asks of epoll.
    pub fn from_poll(poll: i16) -> Events {
        let mut e = Events::NONE;
        if poll & libc::POLLIN != 0 {
            e = e | Events::READ;
        }
        if poll & libc::POLLOUT != 0 {
            e = e | Events::WRITE;
        }
        e
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Input, an end of input or an error to read.
    pub fn is_readable(self) -> bool {
        self.0 & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32 != 0
    }

    /// The socket was hung up or has an error.
    pub fn is_hangup_or_error(self) -> bool {
        self.0 & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }
}

impl std::ops::BitOr for Events {
    type Output = Events;
    fn bitor(self, other: Events) -> Events {
        Events(self.0 | other.0)
    }
}

/// What a task's socket is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    pub fd: RawFd,
    /// Changes with each new socket of the task: epoll must learn of a new
    /// one even when it has the old one's fd number.
    pub socket: u32,
    pub events: Events,
}

/// What the loop lends a task while it works.
pub struct Cx<'a, T: Task> {
    pub lp: &'a Arc<Loop<T>>,
    pub id: ConnId,
    /// Read buffers for reuse: an idle task holds none.
    pub buffers: &'a mut BufferPool,
    opened: &'a mut bool,
}

impl<T: Task> Cx<'_, T> {
    /// The task has finished its opening handshake, the deepest work it
    /// does: a private loop's thread gives back the stack it touched.
    pub fn opened(&mut self) {
        *self.opened = true;
    }

    /// Watches one more socket of this task for `events`, beside the one
    /// its `interest` names (connect attempts running side by side). It
    /// leaves the epoll set when it is closed; its events come to the
    /// task as those of its interest do.
    pub fn also_watch(&mut self, fd: RawFd, events: Events) -> io::Result<()> {
        epoll_ctl(self.lp.fd(), libc::EPOLL_CTL_ADD, fd, events, self.id.token())
    }
}

/// Read buffers a loop keeps for its connections' next reads. A private
/// loop keeps none: its one connection would hold one while idle, and a
/// freed one goes back to malloc, where the next connection's read finds
/// it (kept, it would cost each idle connection a resident 4 KiB).
pub struct BufferPool {
    buffers: Vec<Vec<u8>>,
    keep: usize,
}

impl BufferPool {
    pub fn new(keep: usize) -> BufferPool {
        BufferPool { buffers: Vec::new(), keep }
    }

    /// A read buffer from the pool (or a new, empty one).
    pub fn take(&mut self) -> Vec<u8> {
        self.buffers.pop().unwrap_or_default()
    }

    /// Gives back a read buffer that holds nothing.
    pub fn give(&mut self, buf: Vec<u8>) {
        if self.buffers.len() < self.keep && buf.capacity() <= 256 * 1024 {
            self.buffers.push(buf);
        }
    }
}

/// Work for a loop from other threads (and from its own callbacks).
pub enum LoopCommand<T: Task> {
    /// A new connection: the loop starts it (resolve or connect) at once.
    Register(ConnId, Box<T>),
    /// An API call on a connection.
    Conn(ConnId, T::Command),
    /// A name lookup finished.
    Resolved(ConnId, io::Result<Vec<SocketAddr>>),
}

/// A loop's commands, in order: a channel made at the first command, so
/// that a private loop whose connection is asked nothing costs it none
/// (0.5 KiB).
struct CommandQueue<T: Task> {
    channel: OnceLock<Channel<LoopCommand<T>>>,
}

type Channel<C> = (Sender<C>, Receiver<C>);

impl<T: Task> Default for CommandQueue<T> {
    fn default() -> Self {
        CommandQueue { channel: OnceLock::new() }
    }
}

impl<T: Task> CommandQueue<T> {
    fn send(&self, cmd: LoopCommand<T>) {
        let (tx, _) = self.channel.get_or_init(crossbeam_channel::unbounded);
        // The receiver lives beside it: sending cannot fail.
        let _ = tx.send(cmd);
    }

    fn try_recv(&self) -> Option<LoopCommand<T>> {
        self.channel.get()?.1.try_recv().ok()
    }

    fn is_empty(&self) -> bool {
        self.channel.get().is_none_or(|(_, rx)| rx.is_empty())
    }
}

/// Slot indexes and generations, handed out by any thread (`ws_new`) and
/// returned by the loop when a connection is gone.
#[derive(Default)]
struct Ids {
    generations: Vec<u32>,
    free: Vec<u32>,
}

/// Where a private loop is in its parking.
#[repr(u8)]
enum Parking {
    No = 0,
    /// In PARKED, its thread waiting.
    Parked = 1,
    /// Taken from PARKED by a new handle, whose connection is on its way.
    Claimed = 2,
}

/// Who runs a loop, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Driver {
    /// The application, turn by turn (`ws_loop_run`).
    Application = 0,
    /// A library thread, from `ws_loop_start` until the loop is freed.
    Started = 1,
    /// Freed by the application: a library thread runs it until its last
    /// connection has ended.
    Released = 2,
    /// A handle's own loop: a library thread runs it while its one
    /// connection lives.
    Private = 3,
}

impl Driver {
    fn from_u8(v: u8) -> Driver {
        match v {
            0 => Driver::Application,
            1 => Driver::Started,
            2 => Driver::Released,
            _ => Driver::Private,
        }
    }
}

/// The part of a loop that any thread may use.
pub struct Loop<T: Task> {
    epoll: OwnedFd,
    waker: Waker,
    queue: CommandQueue<T>,
    ids: Mutex<Ids>,
    /// Held by whoever runs the loop; `ws_loop_run` only tries it.
    core: Mutex<Core<T>>,
    /// The tag of the thread that runs the loop (or ran it last): commands
    /// from it need no wake-up.
    runner: AtomicU64,
    /// A library thread runs the loop or is about to.
    thread_active: AtomicBool,
    /// Who runs the loop, and until when (`Driver`).
    driver: AtomicU8,
    /// Set when `ws_loop_free`, called from a callback of this loop, could
    /// start no thread for it: why its connections must end.
    orphaned: Mutex<Option<String>>,
    /// A private loop's parking (`Parking`, changed only under PARKED's
    /// lock): while not `No`, its thread waits for a next connection
    /// instead of ending.
    parking: AtomicU8,
    /// A private loop that no thread has run yet: its connection is
    /// handed to the core directly (`register`).
    fresh: AtomicBool,
}

/// The part of a loop that only its runner touches.
pub struct Core<T: Task> {
    slots: Vec<Slot<T>>,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Connections that need a turn without waiting for epoll (input left
    /// in OpenSSL's buffer, or a read budget used up).
    ready: Vec<ConnId>,
    /// Connections whose output grew while commands were taken.
    dirty: Vec<ConnId>,
    events: Vec<libc::epoll_event>,
    buffers: BufferPool,
    /// A task opened during this turn (`Cx::opened`).
    opened: bool,
    /// A private loop's one connection, handed over before its thread
    /// started: no command, so that the queue allocates nothing (1.5 KiB
    /// per idle connection) until the application asks something of it.
    adopted: Option<(ConnId, Box<T>)>,
    live: usize,
}

struct Slot<T> {
    generation: u32,
    conn: Option<Box<T>>,
    /// What epoll watches for this slot: (socket serial, events).
    registered: Option<(u32, Events)>,
    /// The deadline last pushed on the timer heap.
    armed: Option<Instant>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { generation: 0, conn: None, registered: None, armed: None }
    }
}

impl<T: Task> Loop<T> {
    pub fn new(private: bool) -> io::Result<Arc<Loop<T>>> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let waker = Waker::new()?;
        epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, waker.fd(), Events(Waker::EPOLL_EVENTS), WAKE_TOKEN)?;
        Ok(Arc::new(Loop {
            epoll,
            waker,
            queue: CommandQueue::default(),
            ids: Mutex::new(Ids::default()),
            core: Mutex::new(Core {
                slots: Vec::new(),
                timers: BinaryHeap::new(),
                ready: Vec::new(),
                dirty: Vec::new(),
                events: Vec::new(),
                buffers: BufferPool::new(if private { 0 } else { POOLED_BUFFERS }),
                opened: false,
                adopted: None,
                live: 0,
            }),
            runner: AtomicU64::new(0),
            thread_active: AtomicBool::new(false),
            driver: AtomicU8::new(if private { Driver::Private } else { Driver::Application } as u8),
            orphaned: Mutex::new(None),
            parking: AtomicU8::new(Parking::No as u8),
            fresh: AtomicBool::new(private),
        }))
    }

    /// A private loop for a new handle: a parked one, or a new one.
    pub fn private() -> io::Result<Arc<Loop<T>>> {
        let Some(mut parked) = try_lock_parked() else { return Loop::new(true) };
        while let Some((process, any)) = parked.pop() {
            if process != this_process() {
                // Inherited through fork(): its thread is not here. Its
                // memory stays (other copies of its Arc count it).
                std::mem::forget(any);
                continue;
            }
            if let Ok(lp) = any.downcast::<Loop<T>>() {
                // Its thread waits on for this handle's connection (or
                // ends first; then `register` starts another).
                lp.parking.store(Parking::Claimed as u8, Ordering::SeqCst);
                return Ok(lp);
            }
        }
        drop(parked);
        Loop::new(true)
    }

    /// Parks this private loop, if there is room. True when parked.
    fn park(self: &Arc<Self>) -> bool {
        #[cfg(feature = "testing")]
        if testing::NO_PARKING.load(Ordering::SeqCst) {
            return false;
        }
        let Some(mut parked) = try_lock_parked() else { return false };
        if parked.len() >= MAX_PARKED {
            return false;
        }
        self.parking.store(Parking::Parked as u8, Ordering::SeqCst);
        parked.push((this_process(), self.clone()));
        true
    }

    /// Takes this loop out of PARKED unless a handle claimed it first.
    fn unpark(self: &Arc<Self>) {
        let mut parked = lock_parked();
        let me: *const Self = &**self;
        parked.retain(|(_, p)| !std::ptr::eq(Arc::as_ptr(p).cast::<Self>(), me));
        self.parking.store(Parking::No as u8, Ordering::SeqCst);
    }

    /// The fd an application polls: readable when `run` has I/O to do.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn on_loop_thread(&self) -> bool {
        self.runner.load(Ordering::SeqCst) == current_thread_tag()
    }

    /// Queues a command; wakes the loop unless this thread runs it.
    pub fn post(&self, cmd: LoopCommand<T>) {
        self.queue.send(cmd);
        if !self.on_loop_thread() {
            self.waker.wake();
        }
    }

    /// Posts a command that holds its handle's memory (a `Free` whose
    /// `release` is set), and so this loop: left in a queue that nothing
    /// runs again, it would keep the handle, the loop and its fds alive
    /// forever. A library thread that ends looks at the queue once more
    /// after saying it is gone, and this looks at whether it is gone after
    /// queueing (`thread_main`); with a SeqCst fence on both sides, at
    /// least one of the two sees the other, so either that thread runs
    /// the command or a new one is started for it.
    pub fn post_owning(self: &Arc<Self>, cmd: LoopCommand<T>) {
        self.post(cmd);
        fence(Ordering::SeqCst);
        if self.is_library_driven() && !self.thread_active.load(Ordering::SeqCst) {
            // When no thread can be had either, the command waits: the
            // next post_owning or registration tries again. Nothing is
            // dropped or reordered here, since a command queued behind a
            // registration belongs to that connection.
            let _ = self.ensure_thread();
        }
    }

    /// A slot for a new connection; `register` it next.
    pub fn allocate(&self) -> ConnId {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        match ids.free.pop() {
            Some(index) => ConnId { index, generation: ids.generations[index as usize] },
            None => {
                ids.generations.push(0);
                ConnId { index: (ids.generations.len() - 1) as u32, generation: 0 }
            }
        }
    }

    fn release_id(&self, id: ConnId) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let generation = &mut ids.generations[id.index as usize];
        *generation = generation.wrapping_add(1);
        ids.free.push(id.index);
    }

    /// Hands a new connection to the loop and makes sure something runs it.
    pub fn register(self: &Arc<Self>, id: ConnId, conn: Box<T>) -> io::Result<()> {
        if self.driver() == Driver::Private && self.fresh.swap(false, Ordering::SeqCst) {
            // Nothing runs a new private loop before its one connection is
            // here: its core is free, and the thread starts it. (A parked
            // loop's thread may be running: that one gets a command.)
            self.core.lock().unwrap_or_else(|e| e.into_inner()).adopted = Some((id, conn));
        } else {
            self.post(LoopCommand::Register(id, conn));
        }
        let Err(e) = self.ensure_thread() else { return Ok(()) };
        if self.driver() != Driver::Private {
            return Err(e);
        }
        // No thread could be started. A parked loop's thread that was
        // ending may have seen the registration and run on: then it runs
        // the connection. Otherwise this marks the loop as run, so that no
        // such thread can start now, and takes the connection back: left
        // here it would keep its handle's state, and that the loop, alive
        // forever. (Never a blocking wait for the core: a thread that runs
        // the connection holds it, and its first callback waits for
        // ws_new to return.)
        if self.thread_active.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Ok(());
        }
        if let Some(mut core) = self.try_core() {
            core.adopted = None;
        }
        while self.queue.try_recv().is_some() {}
        self.thread_active.store(false, Ordering::SeqCst);
        Err(e)
    }

    /// `ws_loop_start`: a library thread runs the loop from now on. False
    /// when it was started before.
    pub fn start(self: &Arc<Self>) -> io::Result<bool> {
        let from_application = (Driver::Application as u8, Driver::Started as u8);
        if self
            .driver
            .compare_exchange(from_application.0, from_application.1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false);
        }
        // An application thread waiting in ws_loop_run returns, and the
        // library thread takes over.
        self.waker.wake();
        self.ensure_thread()?;
        Ok(true)
    }

    /// `ws_loop_free`: the application lets go. The loop lives on while
    /// connections use it, run by a library thread, which ends with the
    /// last of them. When no thread can be started for connections an
    /// application loop leaves behind, they end now (`end_orphans`).
    pub fn release(self: &Arc<Self>) {
        // A private loop is never the application's to free.
        let _ = self.driver.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
            (d != Driver::Private as u8).then_some(Driver::Released as u8)
        });
        // Wake a thread that waits for work, so that it can end; or start
        // one for connections an application loop left behind.
        self.waker.wake();
        if let Err(e) = self.ensure_thread() {
            let why = format!(
                "the event loop was freed and no thread could be started to run it: {}",
                crate::error::io_text(&e)
            );
            // Whoever holds the core when the flag is set ends them: this
            // thread now if the core is free, else the thread running a
            // turn (`run_once` looks at the flag after letting the core
            // go). Never a blocking wait: two loops freed from each other's
            // callbacks must not wait on each other.
            *self.orphaned.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            self.end_orphans();
        }
    }

    /// Ends the connections of a loop that no thread can run, if
    /// `release` said so and the core is free.
    fn end_orphans(self: &Arc<Self>) {
        let flagged = || self.orphaned.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if !flagged() {
            return;
        }
        let Some(mut core) = self.try_core() else { return };
        let why = self.orphaned.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(why) = why {
            core.end_all(self, &why);
        }
    }

    fn driver(&self) -> Driver {
        Driver::from_u8(self.driver.load(Ordering::SeqCst))
    }

    pub fn is_library_driven(&self) -> bool {
        self.driver() != Driver::Application
    }

    fn ensure_thread(self: &Arc<Self>) -> io::Result<()> {
        if !self.is_library_driven() || self.thread_active.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let lp = self.clone();
        spawn_quiet("libws-io", move || lp.thread_main()).inspect_err(|_| {
            self.thread_active.store(false, Ordering::SeqCst);
        })
    }

    fn thread_main(self: Arc<Self>) {
        loop {
            {
                // Blocks while an application's ws_loop_run still runs a
                // loop that was freed meanwhile.
                let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
                self.runner.store(current_thread_tag(), Ordering::SeqCst);
                // A loop parks once per connection it served: one that was
                // claimed and got no connection must not be claimed again
                // while that one may still come.
                let mut may_park = true;
                loop {
                    while !self.may_end(&core) {
                        let _ = core.turn(&self, None);
                        if std::mem::take(&mut core.opened) && self.driver() == Driver::Private {
                            release_unused_stack();
                        }
                    }
                    if !may_park || self.driver() != Driver::Private || !self.park() {
                        break;
                    }
                    // Parked: wait up to PARK_FOR for a new handle's
                    // connection (posted, with a wake-up), then serve it as
                    // the first; or end, never parking twice in a row, so
                    // that a loop is claimed by one handle at a time.
                    let until = Instant::now() + PARK_FOR;
                    while core.live == 0 && self.queue.is_empty() {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let _ = core.turn(&self, Some(left));
                    }
                    self.unpark();
                    may_park = core.live > 0;
                    if core.live == 0 && self.queue.is_empty() {
                        break;
                    }
                }
                self.runner.store(0, Ordering::SeqCst);
            }
            self.thread_active.store(false, Ordering::SeqCst);
            // Pairs with the fence in `post_owning`: a command queued
            // before it is seen here, or that post sees this thread gone.
            fence(Ordering::SeqCst);
            // A connection registered after the last check: run on, unless
            // another thread took over meanwhile.
            if self.queue.is_empty() || self.thread_active.swap(true, Ordering::SeqCst) {
                #[cfg(feature = "testing")]
                testing::loop_thread_exiting();
                return;
            }
        }
    }

    /// A library thread ends when no connection is left on a private loop,
    /// or on a loop the application has freed.
    fn may_end(&self, core: &Core<T>) -> bool {
        let idle = core.live == 0 && core.adopted.is_none() && self.queue.is_empty();
        let idle = idle && self.parking.load(Ordering::SeqCst) == Parking::No as u8;
        idle && matches!(self.driver(), Driver::Private | Driver::Released)
    }

    /// `ws_loop_run`: one turn on the calling thread, waiting up to
    /// `timeout` for work (None: until there is some). Err(()) when another
    /// thread runs the loop, or when called from inside one of its
    /// callbacks. Ok: the connections left on the loop.
    pub fn run_once(self: &Arc<Self>, timeout: Option<Duration>) -> Result<usize, RunError> {
        if self.is_library_driven() {
            return Err(RunError::LibraryDriven);
        }
        let mut core = self.try_core().ok_or(RunError::Busy)?;
        // Commands from this thread need no wake-up while it runs the loop
        // (inside callbacks); between runs they wake it like any other,
        // since another thread may be the one that polls the loop's fd.
        self.runner.store(current_thread_tag(), Ordering::SeqCst);
        let r = core.turn(self, timeout);
        self.runner.store(0, Ordering::SeqCst);
        let live = core.live;
        drop(core);
        // ws_loop_free, from one of this turn's callbacks or from another
        // thread during the turn, could start no thread for the loop: its
        // connections end here, on this thread.
        self.end_orphans();
        r.map_err(RunError::Os)?;
        Ok(live)
    }

    fn try_core(&self) -> Option<MutexGuard<'_, Core<T>>> {
        match self.core.try_lock() {
            Ok(core) => Some(core),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// How long an application may wait before the next `run`: 0 when
    /// work is queued, the next timer, or None (no timer: wait for the fd).
    pub fn timeout(&self) -> Option<Duration> {
        // Not the application's to wait for (ws.h: -1 then), also while
        // commands are queued for the library thread.
        if self.is_library_driven() {
            return None;
        }
        if !self.queue.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut core = self.try_core()?;
        if !core.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        core.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Why `run_once` refused.
#[derive(Debug)]
pub enum RunError {
    /// Another thread runs the loop now, or this thread is inside one of
    /// its callbacks.
    Busy,
    /// A library thread runs the loop (`ws_loop_start` or `ws_loop_free`).
    LibraryDriven,
    Os(io::Error),
}

impl<T: Task> Core<T> {
    /// One turn: commands, then waiting for I/O or the next timer, then
    /// the ready sockets, timers, and connections with work left.
    fn turn(&mut self, lp: &Arc<Loop<T>>, timeout: Option<Duration>) -> io::Result<()> {
        let more_commands = !self.take_commands(lp);
        if lp.may_end(self) {
            // A library thread's last turn: nothing is left to wait for.
            return Ok(());
        }
        let now = Instant::now();
        let wait = if more_commands || !self.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            let timer = self.next_deadline().map(|d| d.saturating_duration_since(now));
            match (timer, timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let n = self.wait(lp, wait)?;
        self.handle_events(lp, n);
        // A callback may have run long (they share this thread): I/O that
        // arrived meanwhile comes before a deadline that passed meanwhile,
        // or one slow handle would time out its neighbours.
        if self.next_deadline().is_some_and(|d| d <= Instant::now()) {
            let n = self.wait(lp, Some(Duration::ZERO))?;
            self.handle_events(lp, n);
        }
        // Input left over (a capped read, or bytes inside OpenSSL) also
        // comes before the timers.
        for id in std::mem::take(&mut self.ready) {
            self.with_conn(lp, id, |conn, cx| conn.ready(Events::NONE, cx));
            self.take_commands(lp);
        }
        self.fire_timers(lp);
        // Commands that arrived while the turn waited (the wake-up that
        // ended the wait announced them), and those that callbacks run by
        // timers queued without a wake-up: this turn takes them, so that
        // its count includes a connection made meanwhile and ws_loop_fd
        // never hides commands still queued.
        self.take_commands(lp);
        Ok(())
    }

    /// Ends every connection on the loop now, on this thread: `on_error`
    /// with `why`, then `on_close` 1006, each socket closed. For a loop
    /// that nothing will run again.
    fn end_all(&mut self, lp: &Arc<Loop<T>>, why: &str) {
        let runner = lp.runner.swap(current_thread_tag(), Ordering::SeqCst);
        // Rounds, because the callbacks that endings run may queue more:
        // a ws_free from on_close (its handle's memory), a new connection.
        // A ws_new on this loop cannot start one now (no thread), so the
        // rounds end; the bound is for safety alone.
        for _ in 0..64 {
            while !self.take_commands(lp) {}
            if self.live == 0 && lp.queue.is_empty() {
                break;
            }
            for index in 0..self.slots.len() {
                let slot = &self.slots[index];
                if slot.conn.is_some() {
                    let id = ConnId { index: index as u32, generation: slot.generation };
                    self.with_conn(lp, id, |conn, _| conn.abort(why));
                }
            }
        }
        lp.runner.store(runner, Ordering::SeqCst);
    }

    fn handle_events(&mut self, lp: &Arc<Loop<T>>, n: usize) {
        for i in 0..n {
            let event = self.events[i];
            let (token, bits) = (Token(event.u64), event.events);
            if token == WAKE_TOKEN {
                lp.waker.reset();
                continue;
            }
            self.with_conn(lp, ConnId::from_token(token), |conn, cx| conn.ready(Events(bits), cx));
            // Sends made from the callbacks go out in this turn.
            self.take_commands(lp);
        }
    }

    fn wait(&mut self, lp: &Loop<T>, wait: Option<Duration>) -> io::Result<usize> {
        let timeout = match wait {
            None => -1,
            // Round up, so that a wake-up just before a deadline does not spin.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        // One entry per socket and one for the wake-up, up to a bound: a
        // private loop's two entries cost its idle connection no 3 KiB.
        let max = (self.slots.len() + 1).min(EVENTS_PER_WAIT);
        if self.events.len() < max {
            self.events.resize(max, libc::epoll_event { events: 0, u64: 0 });
        }
        let max = self.events.len();
        // SAFETY: `events` holds `max` initialised entries.
        let n = unsafe { libc::epoll_wait(lp.fd(), self.events.as_mut_ptr(), max as libc::c_int, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(err) };
        }
        Ok(n as usize)
    }

    /// The nearest live timer. Timers are deleted lazily: entries that were
    /// re-armed, or whose connection has gone, are dropped here as they
    /// surface, so that they never cut a wait short.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            let live = self
                .slots
                .get(id.index as usize)
                .is_some_and(|slot| slot.generation == id.generation && slot.armed == Some(at));
            if live {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Takes queued commands (at most COMMANDS_PER_TURN), then writes what
    /// they queued. True when the queue was emptied.
    fn take_commands(&mut self, lp: &Arc<Loop<T>>) -> bool {
        if let Some((id, conn)) = self.adopted.take() {
            self.start_conn(lp, id, conn);
        }
        for _ in 0..COMMANDS_PER_TURN {
            let Some(cmd) = lp.queue.try_recv() else { break };
            match cmd {
                LoopCommand::Register(id, conn) => self.start_conn(lp, id, conn),
                // A command for a connection that has gone is dropped (with
                // a freed handle's memory: no callback of it can run now).
                LoopCommand::Conn(id, cmd) => {
                    if let Some(conn) = self.conn_mut(id) {
                        conn.command(cmd);
                        if !self.dirty.contains(&id) {
                            self.dirty.push(id);
                        }
                    }
                }
                LoopCommand::Resolved(id, result) => {
                    self.with_conn(lp, id, |conn, cx| conn.resolved(result, cx));
                }
            }
        }
        for id in std::mem::take(&mut self.dirty) {
            self.with_conn(lp, id, |conn, _| conn.flush());
        }
        lp.queue.is_empty()
    }

    fn start_conn(&mut self, lp: &Arc<Loop<T>>, id: ConnId, conn: Box<T>) {
        let index = id.index as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Slot::default);
        }
        self.slots[index] = Slot { generation: id.generation, conn: Some(conn), registered: None, armed: None };
        self.live += 1;
        self.with_conn(lp, id, |conn, cx| conn.start(cx));
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_deref_mut()
    }

    fn fire_timers(&mut self, lp: &Arc<Loop<T>>) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Lazy deletion: a timer that was re-armed or whose connection
            // has gone is skipped.
            let Some(slot) = self.slots.get_mut(id.index as usize) else { continue };
            if slot.generation != id.generation || slot.armed != Some(at) {
                continue;
            }
            slot.armed = None;
            self.with_conn(lp, id, |conn, cx| conn.timer(now, cx));
        }
    }

    /// Runs `f` on a live connection, then brings epoll, the timer heap
    /// and the ready list up to date with it, and removes it once done.
    fn with_conn(&mut self, lp: &Arc<Loop<T>>, id: ConnId, f: impl FnOnce(&mut T, &mut Cx<'_, T>)) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else { return };
        if slot.generation != id.generation {
            return;
        }
        let Some(conn) = slot.conn.as_deref_mut() else { return };
        let mut cx = Cx { lp, id, buffers: &mut self.buffers, opened: &mut self.opened };
        f(conn, &mut cx);
        if conn.is_done() {
            // Dropping the connection closes its socket, which leaves the
            // epoll set with it.
            slot.conn = None;
            slot.registered = None;
            slot.armed = None;
            self.live -= 1;
            lp.release_id(id);
            return;
        }
        if let Some(Interest { fd, socket: serial, events }) = conn.interest() {
            if slot.registered != Some((serial, events)) {
                let fresh = slot.registered.is_none_or(|(s, _)| s != serial);
                let op = if fresh { libc::EPOLL_CTL_ADD } else { libc::EPOLL_CTL_MOD };
                let done = epoll_ctl(lp.fd(), op, fd, events, id.token()).or_else(|e| {
                    // A reused fd number, or one epoll dropped on close.
                    let retry =
                        if e.raw_os_error() == Some(libc::EEXIST) { libc::EPOLL_CTL_MOD } else { libc::EPOLL_CTL_ADD };
                    epoll_ctl(lp.fd(), retry, fd, events, id.token())
                });
                slot.registered = done.ok().map(|_| (serial, events));
            }
        }
        let deadline = conn.deadline();
        if deadline != slot.armed {
            slot.armed = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, id)));
            }
        }
        if conn.wants_turn() && !self.ready.contains(&id) {
            self.ready.push(id);
        }
    }
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: Events, token: Token) -> io::Result<()> {
    let mut event = libc::epoll_event { events: events.0, u64: token.0 };
    // SAFETY: `event` is a live epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A hook that lets a test hold a library thread at the moment it has
/// decided to end (the `testing` feature only).
#[cfg(feature = "testing")]
pub mod testing {
    use crate::runtime::TestHook;

    static LOOP_THREAD_EXITING: TestHook = TestHook::new();

    /// A library thread has found its loop's queue empty after saying it
    /// is gone, and is about to end.
    pub fn on_loop_thread_exiting(f: Option<Box<dyn Fn() + Send>>) {
        LOOP_THREAD_EXITING.set(f);
    }

    pub(super) fn loop_thread_exiting() {
        LOOP_THREAD_EXITING.call();
    }

    pub(super) static NO_PARKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// From now on (`false`) a private loop's thread ends with its
    /// connection instead of parking, for tests that count loops.
    pub fn park_private_loops(park: bool) {
        NO_PARKING.store(!park, std::sync::atomic::Ordering::SeqCst);
    }

    /// Private loops parked now.
    pub fn parked_loops() -> usize {
        super::lock_parked().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that does nothing: the loop's own mechanics are under test.
    struct Idle;

    impl Task for Idle {
        type Command = ();
        fn start(&mut self, _: &mut Cx<'_, Self>) {}
        fn command(&mut self, _: ()) {}
        fn flush(&mut self) {}
        fn resolved(&mut self, _: io::Result<Vec<SocketAddr>>, _: &mut Cx<'_, Self>) {}
        fn ready(&mut self, _: Events, _: &mut Cx<'_, Self>) {}
        fn timer(&mut self, _: Instant, _: &mut Cx<'_, Self>) {}
        fn abort(&mut self, _: &str) {}
        fn is_done(&self) -> bool {
            false
        }
        fn interest(&self) -> Option<Interest> {
            None
        }
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn wants_turn(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_private_loop_keeps_no_read_buffer_and_a_shared_one_a_few() {
        let mut private = BufferPool::new(0);
        private.give(Vec::with_capacity(4096));
        assert_eq!(private.take().capacity(), 0, "an idle private loop holds no buffer");
        let mut shared = BufferPool::new(2);
        for _ in 0..3 {
            shared.give(Vec::with_capacity(4096));
        }
        shared.give(Vec::with_capacity(257 * 1024));
        let kept: Vec<usize> = (0..3).map(|_| shared.take().capacity()).collect();
        assert_eq!(kept, [4096, 4096, 0], "two kept, the third and the oversized one freed");
    }

    #[test]
    #[cfg_attr(miri, ignore = "epoll as the loop uses it (level-triggered) is not in miri")]
    fn ids_are_reused_with_a_new_generation() {
        let lp = Loop::<Idle>::new(false).unwrap();
        let a = lp.allocate();
        let b = lp.allocate();
        assert_ne!(a.index, b.index);
        lp.release_id(a);
        let c = lp.allocate();
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation, "a late command for the old one must not reach the new one");
        assert_eq!(ConnId::from_token(c.token()), c);
        assert_ne!(c.token(), WAKE_TOKEN);
    }

    #[test]
    #[cfg_attr(miri, ignore = "epoll as the loop uses it (level-triggered) is not in miri")]
    fn run_is_refused_while_another_thread_runs_the_loop_and_once_started() {
        let lp = Loop::<Idle>::new(false).unwrap();
        assert_eq!(lp.run_once(Some(Duration::ZERO)).unwrap(), 0);
        let held = lp.core.lock().unwrap();
        assert!(matches!(lp.run_once(Some(Duration::ZERO)), Err(RunError::Busy)));
        drop(held);
        assert!(lp.start().unwrap());
        assert!(!lp.start().unwrap(), "a second start is refused");
        assert!(matches!(lp.run_once(Some(Duration::ZERO)), Err(RunError::LibraryDriven)));
        lp.release();
    }

    #[test]
    #[cfg_attr(miri, ignore = "epoll as the loop uses it (level-triggered) is not in miri")]
    fn a_wake_up_ends_a_wait_for_work_and_commands_shorten_the_timeout() {
        let lp = Loop::<Idle>::new(false).unwrap();
        assert_eq!(lp.timeout(), None, "no timer, nothing queued");
        let lp2 = lp.clone();
        let t = Instant::now();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            lp2.waker.wake();
        });
        // Waits for work (no timeout) until the wake-up.
        assert_eq!(lp.run_once(None).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(40));
        waker.join().unwrap();
        lp.queue.send(LoopCommand::Resolved(ConnId { index: 7, generation: 3 }, Ok(Vec::new())));
        assert_eq!(lp.timeout(), Some(Duration::ZERO), "queued work: do not wait");
        assert_eq!(lp.run_once(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(lp.timeout(), None, "a command for a missing connection is dropped");
    }
}
