//! The event loop: one `mio::Poll`, a slab of connections, and the rules that make a
//! readiness loop correct.
//!
//! One turn ([`EventLoop::turn`]) is:
//!
//! 1. `poll` for readiness, sleeping at most until the next deadline — or not at all
//!    when a connection still has work from last turn;
//! 2. for each event: accept on a listener, or read / write on a connection;
//! 3. serve the connections (and listeners) that used up their budget last turn;
//! 4. expire deadlines (idle timeout, linger, accept back-off) and move shutdown along.
//!
//! # Rules it keeps
//! - **Edge-triggered.** mio reports a socket once when it becomes readable, not again
//!   while it stays readable. So after a readable event the loop reads until the kernel
//!   says `WouldBlock` — or until a read comes back shorter than the buffer, which on a
//!   stream socket means the kernel queue was just emptied (a later arrival raises a
//!   new edge), unless the same event said the peer also closed (data and FIN arrived
//!   together), in which case it reads on to the EOF.
//! - **Budgets.** A connection gets [`Config::read_budget`] reads per turn and a listener
//!   [`Config::accept_budget`] accepts, so one busy peer cannot starve the rest. One that
//!   stops on its budget goes on a pending list and is served next turn without waiting
//!   for an edge that will never come, and `poll` does not sleep while that list is
//!   non-empty.
//! - **Registered once.** Each socket is registered for READABLE | WRITABLE when it is
//!   accepted and never re-registered: no `epoll_ctl` per message.
//! - **Backpressure.** Output that the socket does not take is queued (see
//!   [`Context::write`]). Above the high-water mark the loop stops reading that
//!   connection; once a writable event drains it below the low-water mark it reads
//!   again *at once*, because the readable edge may have come and gone while paused.
//! - **No buffers while idle.** All reads land in one loop-wide scratch buffer; a
//!   connection keeps only what it could not hand on.
//! - **Stale events.** Tokens carry the connection's sequence number, so an event queued
//!   for a connection that closed earlier in the same batch never acts on the
//!   connection that reuses its slab slot.
//! - **Descriptor exhaustion.** When `accept` fails with EMFILE/ENFILE the pending
//!   connections are shed (accepted and closed using a reserve descriptor), the
//!   listener backs off, and it resumes as soon as a connection closes.

/// A [`Context`] for connection `key`. It borrows the loop's fields one by one (not
/// `self` whole) so that the service, another field, can be called with it.
macro_rules! context {
    ($lp:ident, $key:expr) => {
        Context {
            conns: &mut $lp.conns,
            timers: &mut $lp.timers,
            key: $key,
            stats: &mut $lp.stats,
            now_ms: $lp.now_ms,
            max_outbuf: $lp.config.max_outbuf,
            ended: &mut $lp.ended,
        }
    };
}

mod accept;
mod datagram;
mod shutdown;
mod stream;

use std::fs::File;
use std::io;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::builder::Config;
use crate::conn::Conn;
use crate::datagram::Datagram;
use crate::endpoint::Endpoint;
use crate::listener::{Bound, Listener};
use crate::service::{ConnId, Context, Service, TOUCH_GRANULARITY_MS};
use crate::stats::Stats;
use crate::timer::{Deadlines, TIMER_KINDS, Timer};
use crate::token::{self, Target};

/// Size of the loop-wide read buffer. Large enough that one read usually empties the
/// kernel queue of a busy connection, small enough to stay in cache.
const SCRATCH_SIZE: usize = crate::config::READ_BUFFER;

/// How many readiness events one `poll` call can return.
const EVENTS_CAPACITY: usize = 1024;

/// First and longest pause of a listener that hit descriptor exhaustion.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often descriptor exhaustion is logged while it lasts.
const EXHAUSTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A `Send + Clone` handle that stops an [`EventLoop`] — or every loop of a
/// [`Workers`](crate::Workers) — from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    loops: Vec<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    waker: Waker,
    shutdown: AtomicBool,
}

impl Handle {
    /// Starts a graceful shutdown, as SIGTERM does for the binary: listeners close,
    /// nothing new is read, what was already read is written out, connections are
    /// shut down and [`EventLoop::run`] returns once all are closed (or the shutdown
    /// timeout passes). Wakes the loop if it is sleeping in `poll`.
    pub fn shutdown(&self) -> io::Result<()> {
        let mut result = Ok(());
        for shared in &self.loops {
            shared.shutdown.store(true, Ordering::Release);
            // Wake every loop even if one wake fails; report the first failure.
            if let Err(e) = shared.waker.wake() {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// One handle for several loops.
    pub(crate) fn join(handles: impl IntoIterator<Item = Handle>) -> Handle {
        Handle {
            loops: handles.into_iter().flat_map(|h| h.loops).collect(),
        }
    }
}

/// A bound socket the loop serves: a stream listener or a datagram socket.
enum Socket {
    Stream(Listener),
    Datagram(Box<Datagram>),
}

impl Socket {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Socket::Stream(l) => l.source(),
            Socket::Datagram(d) => d.sock.source(),
        }
    }
}

struct ListenerSlot {
    /// `None` once shutdown has closed it.
    socket: Option<Socket>,
    /// The bound address (port 0 resolved).
    local: Endpoint,
    /// Not accepting until then: descriptors ran out.
    paused_until: Option<Instant>,
    backoff: Duration,
    /// Queued to accept again next turn (budget used up, or resumed).
    pending: bool,
}

/// Why a connection ended, for the debug log.
enum Reason {
    PeerClosed,
    Error(io::Error),
    IdleTimeout,
    HandshakeTimeout,
    LingerDone,
    ShutdownTimeout,
    Dead,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::PeerClosed => f.write_str("peer closed"),
            Reason::Error(e) => write!(f, "error: {e}"),
            Reason::IdleTimeout => f.write_str("idle timeout"),
            Reason::HandshakeTimeout => f.write_str("TLS handshake timeout"),
            Reason::LingerDone => f.write_str("linger time over"),
            Reason::ShutdownTimeout => f.write_str("shutdown"),
            Reason::Dead => f.write_str("socket error or slow consumer"),
        }
    }
}

/// The loop: listeners, connections and the service that answers them, on one thread.
///
/// Made by a [`Builder`](crate::Builder); driven by [`run`](Self::run) or, one step at a
/// time, by [`turn`](Self::turn).
pub struct EventLoop<S: Service> {
    poll: Poll,
    events: Events,
    listeners: Vec<ListenerSlot>,
    conns: Slab<Conn>,
    /// The service's per-connection state, at the same index as the connection's key.
    states: Vec<Option<S::Conn>>,
    service: S,
    scratch: Box<[u8]>,
    /// Datagram replies of the current receive, copied here by the service.
    arena: Vec<u8>,
    /// The replies of one batch: where each is in `arena`, and where it goes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    outgoing: Vec<(usize, usize, nix::sys::socket::SockaddrStorage)>,
    /// Tokens to serve next turn without waiting for an event.
    pending: Vec<Token>,
    /// Connections a callback ended while writing to them (see [`Context::write_to`]).
    ended: Vec<ConnId>,
    spare: Vec<Token>,
    timers: [Deadlines; TIMER_KINDS],
    config: Config,
    max_conns: usize,
    stats: Stats,
    next_seq: u32,
    epoch: Instant,
    /// When this turn's `poll` returned, and the same in milliseconds since `epoch`
    /// (the clock of the deadline lists). One clock read per turn.
    now: Instant,
    now_ms: u64,
    shared: Arc<Shared>,
    signals: Option<Signals>,
    /// Set when shutdown starts: the drain deadline.
    draining_until: Option<Instant>,
    finished: bool,
    /// A descriptor held in reserve, given up for a moment to shed connections when
    /// descriptors run out.
    reserve: Option<File>,
    last_exhaustion_log: Option<Instant>,
    /// Set when this loop is one of several [`Workers`](crate::Workers).
    worker: Option<usize>,
}

impl<S: Service> EventLoop<S> {
    pub(crate) fn new(
        listeners: Vec<(Bound, Endpoint)>,
        service: S,
        config: Config,
        max_conns: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut slots = Vec::with_capacity(listeners.len());
        for (i, (bound, local)) in listeners.into_iter().enumerate() {
            // A datagram socket is written to as well (its replies), so it is
            // registered for writable too: once, like every socket here.
            let (mut socket, interest) = match bound {
                Bound::Stream(l) => (Socket::Stream(l), Interest::READABLE),
                Bound::Datagram(d) => (
                    Socket::Datagram(Box::new(Datagram::new(d, config.datagram_batch))),
                    Interest::READABLE | Interest::WRITABLE,
                ),
            };
            poll.registry()
                .register(socket.source(), token::listener(i), interest)
                .map_err(|e| io::Error::new(e.kind(), format!("register {local}: {e}")))?;
            slots.push(ListenerSlot {
                socket: Some(socket),
                local,
                paused_until: None,
                backoff: BACKOFF_MIN,
                pending: false,
            });
        }
        let waker = Waker::new(poll.registry(), token::WAKER)?;
        let signals = if config.handle_signals {
            let mut s = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
            poll.registry()
                .register(&mut s, token::SIGNALS, Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let max_conns = max_conns.min(token::MAX_KEY);
        // Reserve the slab's address space up front: pages are only touched as
        // connections arrive, and the table never has to be copied while it grows.
        let prealloc = max_conns.min(1 << 20);
        let idle_ms = config
            .idle_timeout
            .map(|d| d.as_millis() as u64 + TOUCH_GRANULARITY_MS)
            .unwrap_or(0);
        let now = Instant::now();
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listeners: slots,
            conns: Slab::with_capacity(prealloc),
            states: Vec::with_capacity(prealloc),
            service,
            scratch: vec![0u8; SCRATCH_SIZE].into_boxed_slice(),
            arena: Vec::new(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            outgoing: Vec::new(),
            pending: Vec::new(),
            ended: Vec::new(),
            spare: Vec::new(),
            timers: [
                Deadlines::new(idle_ms),
                Deadlines::new(config.linger.as_millis() as u64),
                Deadlines::new(config.handshake_timeout.as_millis() as u64),
            ],
            max_conns,
            config,
            stats: Stats::default(),
            next_seq: 0,
            epoch: now,
            now,
            now_ms: 0,
            shared: Arc::new(Shared {
                waker,
                shutdown: AtomicBool::new(false),
            }),
            signals,
            draining_until: None,
            finished: false,
            reserve: File::open("/dev/null").ok(),
            last_exhaustion_log: None,
            worker: None,
        })
    }

    /// The bound address of each listener, in the order they were given (port 0
    /// replaced by the real port).
    pub fn local_addrs(&self) -> Vec<Endpoint> {
        self.listeners.iter().map(|l| l.local.clone()).collect()
    }

    /// A handle that stops this loop from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            loops: vec![self.shared.clone()],
        }
    }

    /// Another descriptor for listener `i`'s socket, for another loop to serve.
    pub(crate) fn share_listener(&self, i: usize) -> io::Result<crate::listener::StdSocket> {
        match &self.listeners[i].socket {
            Some(Socket::Stream(l)) => l.share(),
            Some(Socket::Datagram(d)) => d.sock.share(),
            None => Err(io::Error::other("listener already closed")),
        }
    }

    /// Names this loop as worker `i` in its log lines.
    pub(crate) fn set_worker(&mut self, i: usize) {
        self.worker = Some(i);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.active = self.conns.len() as u64;
        s
    }

    /// The service, for reading its own state between turns.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The connection limit in force.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// True once a shutdown has finished: every connection is closed and
    /// [`run`](Self::run) would return.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Runs turns until a shutdown (from a [`Handle`] or a signal) has finished, then
    /// returns the final counters.
    pub fn run(&mut self) -> io::Result<Stats> {
        while !self.finished {
            self.turn(None)?;
        }
        Ok(self.stats())
    }

    /// Runs one turn: waits for readiness at most `timeout` (`None`: until something
    /// happens), then serves what is ready. A loop embedded in another loop calls this
    /// with its own timeout.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        let timeout = self.poll_timeout(timeout);
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.stats.polls += 1;
        self.now = Instant::now();
        self.now_ms = self.now.duration_since(self.epoch).as_millis() as u64;

        // What was left over from last turn is served after this turn's events; what
        // is deferred during this turn goes on the fresh list for the next one.
        let mut pending = mem::replace(&mut self.pending, mem::take(&mut self.spare));

        let events = mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            self.stats.events += 1;
            self.dispatch(ev);
        }
        self.events = events;

        for t in pending.drain(..) {
            self.serve_pending(t);
        }
        self.spare = pending;

        self.expire();
        self.check_drained();
        Ok(())
    }

    /// How long `poll` may sleep: not at all when work is pending, else until the
    /// nearest deadline or the caller's timeout.
    fn poll_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for d in &self.timers {
            if let Some(ms) = d.next_deadline(&self.conns) {
                consider(self.epoch + Duration::from_millis(ms));
            }
        }
        for l in &self.listeners {
            if let Some(t) = l.paused_until {
                consider(t);
            }
        }
        if let Some(t) = self.draining_until {
            consider(t);
        }
        let until_deadline = next.map(|t| t.saturating_duration_since(now));
        match (timeout, until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dispatch(&mut self, ev: &Event) {
        match token::decode(ev.token()) {
            Target::Conn { key, seq } => self.conn_event(key, seq, ev),
            Target::Listener(i) => match self.listeners[i].socket {
                Some(Socket::Stream(_)) => {
                    trace!("event: listener {i} readable");
                    self.accept(i)
                }
                Some(Socket::Datagram(_)) => {
                    trace!(
                        "event: datagram socket {i}{}{}",
                        if ev.is_readable() { " readable" } else { "" },
                        if ev.is_writable() { " writable" } else { "" }
                    );
                    if ev.is_writable() {
                        self.flush_replies(i);
                    }
                    if ev.is_readable() || ev.is_error() {
                        self.receive(i);
                    }
                }
                None => {}
            },
            Target::Waker => {
                if self.shared.shutdown.load(Ordering::Acquire) {
                    self.begin_shutdown("shutdown requested");
                }
            }
            Target::Signals => self.on_signals(),
            Target::Unknown => debug!("event for unknown token {:?}", ev.token()),
        }
    }

    /// Puts a connection on the list to serve next turn without waiting for an event.
    fn defer_conn(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.pending {
            conn.pending = true;
            self.pending.push(token::conn(key, conn.seq));
        }
    }

    /// Serves a connection or listener deferred last turn.
    fn serve_pending(&mut self, t: Token) {
        match token::decode(t) {
            Target::Conn { key, seq } => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                if token::seq_bits(conn.seq) != seq {
                    return;
                }
                conn.pending = false;
                self.read(key);
                self.settle(key);
            }
            Target::Listener(i) => {
                self.listeners[i].pending = false;
                match self.listeners[i].socket {
                    Some(Socket::Stream(_)) => self.accept(i),
                    Some(Socket::Datagram(_)) => self.receive(i),
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Runs one service callback for connection `key`, with a [`Context`] over the loop.
    fn callback(&mut self, key: usize, cb: Callback) {
        let Some(Some(state)) = self.states.get_mut(key) else {
            return;
        };
        let mut ctx = context!(self, key);
        match cb {
            Callback::Data(n) => self.service.data(state, &self.scratch[..n], &mut ctx),
            Callback::Eof => self.service.eof(state, &mut ctx),
            Callback::Writable => self.service.writable(state, &mut ctx),
        }
        self.reap_ended();
    }

    /// Closes the other connections the last callback ended (slow consumers of a
    /// fan-out). The current one is left to its caller, which settles it.
    pub(super) fn reap_ended(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        let mut ended = mem::take(&mut self.ended);
        for id in ended.drain(..) {
            let key = id.slot();
            if self.conns.get(key).is_some_and(|c| c.seq == id.seq()) {
                self.remove(key, Reason::Dead);
            }
        }
        self.ended = ended;
    }

    /// Acts on every deadline that has passed: idle and linger timers, listener back-off.
    fn expire(&mut self) {
        let now = self.now_ms;
        while let Some(key) = self.timers[Timer::Idle as usize].expired(now, &self.conns) {
            self.stats.idle_timeouts += 1;
            self.remove(key, Reason::IdleTimeout);
        }
        while let Some(key) = self.timers[Timer::Linger as usize].expired(now, &self.conns) {
            self.remove(key, Reason::LingerDone);
        }
        while let Some(key) = self.timers[Timer::Handshake as usize].expired(now, &self.conns) {
            self.stats.handshake_timeouts += 1;
            self.remove(key, Reason::HandshakeTimeout);
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i]
                .paused_until
                .is_some_and(|t| t <= self.now)
            {
                self.listeners[i].paused_until = None;
                self.accept(i);
            }
        }
    }
}

/// Which service callback to run for a connection.
#[derive(Clone, Copy)]
enum Callback {
    Data(usize),
    Eof,
    Writable,
}
