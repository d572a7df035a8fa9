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

use std::fs::File;
use std::io::{self, Read};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::builder::Config;
use crate::conn::{Conn, Phase};
use crate::endpoint::Endpoint;
use crate::listener::Listener;
use crate::service::{Context, Service, TOUCH_GRANULARITY_MS, touch};
use crate::stats::Stats;
use crate::sys;
use crate::timer::{Deadlines, TIMER_KINDS, Timer};
use crate::token::{self, Target};
use crate::transport::{PeerAddr, Stream};

/// Size of the loop-wide read buffer. Large enough that one read usually empties the
/// kernel queue of a busy connection, small enough to stay in cache.
const SCRATCH_SIZE: usize = 64 * 1024;

/// How many readiness events one `poll` call can return.
const EVENTS_CAPACITY: usize = 1024;

/// First and longest pause of a listener that hit descriptor exhaustion.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often descriptor exhaustion is logged while it lasts.
const EXHAUSTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A `Send + Clone` handle that stops an [`EventLoop`] from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    inner: Arc<Shared>,
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
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.waker.wake()
    }
}

struct ListenerSlot {
    /// `None` once shutdown has closed it.
    socket: Option<Listener>,
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
    /// Tokens to serve next turn without waiting for an event.
    pending: Vec<Token>,
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
}

impl<S: Service> EventLoop<S> {
    pub(crate) fn new(
        listeners: Vec<(Listener, Endpoint)>,
        service: S,
        config: Config,
        max_conns: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut slots = Vec::with_capacity(listeners.len());
        for (i, (mut socket, local)) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(socket.source(), token::listener(i), Interest::READABLE)
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
            pending: Vec::new(),
            spare: Vec::new(),
            timers: [
                Deadlines::new(idle_ms),
                Deadlines::new(config.linger.as_millis() as u64),
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
            inner: self.shared.clone(),
        }
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
            Target::Listener(i) => {
                trace!("event: listener {i} readable");
                self.accept(i)
            }
            Target::Waker => {
                if self.shared.shutdown.load(Ordering::Acquire) {
                    self.begin_shutdown("shutdown requested");
                }
            }
            Target::Signals => self.on_signals(),
            Target::Unknown => debug!("event for unknown token {:?}", ev.token()),
        }
    }

    // ---------------------------------------------------------------- connections

    fn conn_event(&mut self, key: usize, seq: usize, ev: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            trace!("event: key {key} is vacant (closed earlier in this batch)");
            return;
        };
        if token::seq_bits(conn.seq) != seq {
            trace!("event: stale, key {key} now belongs to conn {}", conn.seq);
            return;
        }
        trace!(
            "event: conn {}{}{}{}{}{}",
            conn.seq,
            if ev.is_readable() { " readable" } else { "" },
            if ev.is_writable() { " writable" } else { "" },
            if ev.is_read_closed() {
                " read-closed"
            } else {
                ""
            },
            if ev.is_write_closed() {
                " write-closed"
            } else {
                ""
            },
            if ev.is_error() { " error" } else { "" },
        );
        if ev.is_read_closed() {
            conn.read_closed = true;
        }
        if ev.is_error() {
            let err = match conn.stream.take_error() {
                Ok(Some(e)) => e,
                Ok(None) => io::Error::other("error event without a socket error"),
                Err(e) => e,
            };
            self.stats.conn_errors += 1;
            self.remove(key, Reason::Error(err));
            return;
        }
        if ev.is_writable() {
            self.on_writable(key);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.on_readable(key);
        }
        self.settle(key);
    }

    fn on_writable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !matches!(conn.phase, Phase::Open | Phase::Closing) {
            return;
        }
        match conn.flush(&mut self.stats) {
            Ok(0) => {}
            Ok(_) => touch(&mut self.conns, &mut self.timers, key, self.now_ms),
            Err(e) => {
                self.stats.conn_errors += 1;
                debug!("conn {}: write: {e}", conn.seq);
                conn.phase = Phase::Dead;
                return;
            }
        }
        let conn = &mut self.conns[key];
        if conn.paused && conn.out.len() <= self.config.low_water {
            conn.paused = false;
            self.stats.backpressure_resumes += 1;
            trace!(
                "conn {}: resume reading, {} bytes unsent",
                conn.seq,
                conn.out.len()
            );
            // The readable edge may have come while paused: read now, not on the next one.
            self.read(key);
        }
    }

    fn on_readable(&mut self, key: usize) {
        match self.conns[key].phase {
            Phase::Open => self.read(key),
            Phase::Lingering => self.discard_input(key),
            Phase::Closing | Phase::Dead => {}
        }
    }

    /// Reads and hands the bytes to the service, until the kernel queue is empty, the
    /// budget is used, the connection is paused or it stops being open.
    fn read(&mut self, key: usize) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[key];
            if conn.phase != Phase::Open || conn.peer_eof || conn.paused {
                return;
            }
            if conn.out.len() >= self.config.high_water {
                conn.paused = true;
                self.stats.backpressure_pauses += 1;
                trace!(
                    "conn {}: pause reading, {} bytes unsent",
                    conn.seq,
                    conn.out.len()
                );
                return;
            }
            if budget == 0 {
                self.stats.budget_yields += 1;
                trace!("conn {}: read budget used, continuing next turn", conn.seq);
                self.defer_conn(key);
                return;
            }
            budget -= 1;
            let r = conn.stream.read(&mut self.scratch);
            self.stats.reads += 1;
            match r {
                Ok(0) => {
                    trace!("conn {}: read EOF", conn.seq);
                    conn.peer_eof = true;
                    self.callback(key, Callback::Eof);
                    return;
                }
                Ok(n) => {
                    trace!("conn {}: read {n} bytes", conn.seq);
                    self.stats.bytes_in += n as u64;
                    // A short read emptied the kernel queue: the next read would only say
                    // WouldBlock, and new data raises a new edge. Unless the peer's FIN
                    // is already known to be queued: then read on to see it.
                    let drained = n < self.scratch.len() && !conn.read_closed;
                    touch(&mut self.conns, &mut self.timers, key, self.now_ms);
                    self.callback(key, Callback::Data(n));
                    if drained {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.read_would_block += 1;
                    trace!("conn {}: read would block", conn.seq);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.conn_errors += 1;
                    debug!("conn {}: read: {e}", conn.seq);
                    conn.phase = Phase::Dead;
                    return;
                }
            }
        }
    }

    /// While lingering: reads and drops input until EOF, so that the final close does
    /// not find unread data (which would make the kernel send a reset).
    fn discard_input(&mut self, key: usize) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[key];
            if budget == 0 {
                self.defer_conn(key);
                return;
            }
            budget -= 1;
            let r = conn.stream.read(&mut self.scratch);
            self.stats.reads += 1;
            match r {
                Ok(0) => {
                    conn.peer_eof = true;
                    return;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    trace!("conn {}: lingering, discarded {n} bytes", conn.seq);
                    if n < self.scratch.len() && !conn.read_closed {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.read_would_block += 1;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("conn {}: read while lingering: {e}", conn.seq);
                    conn.phase = Phase::Dead;
                    return;
                }
            }
        }
    }

    /// Moves a connection along its lifecycle after anything happened to it.
    fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Open && conn.peer_eof {
            conn.phase = Phase::Closing;
        }
        match conn.phase {
            Phase::Open => {}
            Phase::Dead => self.remove(key, Reason::Dead),
            Phase::Closing if conn.out.is_empty() => {
                if let Err(e) = conn.stream.shutdown_write() {
                    debug!("conn {}: shutdown: {e}", conn.seq);
                    self.remove(key, Reason::Error(e));
                    return;
                }
                if conn.peer_eof {
                    // Everything the peer sent was read: close() cannot cause a reset.
                    self.remove(key, Reason::PeerClosed);
                    return;
                }
                trace!("conn {}: write side shut, lingering", conn.seq);
                conn.phase = Phase::Lingering;
                if let Some(t) = conn.links.on() {
                    self.timers[t as usize].unlink(key, &mut self.conns);
                }
                let now = self.now_ms;
                self.timers[Timer::Linger as usize].push(Timer::Linger, key, now, &mut self.conns);
                self.discard_input(key);
                self.settle(key);
            }
            Phase::Closing => {}
            Phase::Lingering => {
                if conn.peer_eof {
                    self.remove(key, Reason::PeerClosed);
                }
            }
        }
    }

    fn defer_conn(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.pending {
            conn.pending = true;
            self.pending.push(token::conn(key, conn.seq));
        }
    }

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
                self.on_readable(key);
                self.settle(key);
            }
            Target::Listener(i) => {
                self.listeners[i].pending = false;
                self.accept(i);
            }
            _ => {}
        }
    }

    /// Closes and forgets a connection.
    fn remove(&mut self, key: usize, reason: Reason) {
        if let Some(t) = self.conns[key].links.on() {
            self.timers[t as usize].unlink(key, &mut self.conns);
        }
        let conn = self.conns.remove(key);
        let id = crate::ConnId {
            seq: conn.seq,
            key: key as u32,
        };
        if let Some(state) = self.states.get_mut(key).and_then(Option::take) {
            self.service.close(state, id);
        }
        self.stats.closed += 1;
        debug!("conn {id}: closed ({reason})");
        // Dropping the socket closes the descriptor, which also removes it from the
        // poll set (no deregister call needed: it was never duplicated).
        drop(conn);
        // A descriptor just came free: a listener starved of them can accept again.
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.paused_until.take().is_some() && !l.pending {
                l.pending = true;
                self.pending.push(token::listener(i));
            }
        }
    }

    fn callback(&mut self, key: usize, cb: Callback) {
        let Some(Some(state)) = self.states.get_mut(key) else {
            return;
        };
        let mut ctx = Context {
            conns: &mut self.conns,
            timers: &mut self.timers,
            key,
            stats: &mut self.stats,
            now_ms: self.now_ms,
            max_outbuf: self.config.max_outbuf,
        };
        match cb {
            Callback::Data(n) => self.service.data(state, &self.scratch[..n], &mut ctx),
            Callback::Eof => self.service.eof(state, &mut ctx),
        }
    }

    // ---------------------------------------------------------------- accepting

    fn accept(&mut self, i: usize) {
        let slot = &mut self.listeners[i];
        if slot.paused_until.is_some() {
            return;
        }
        for _ in 0..self.config.accept_budget {
            let Some(socket) = self.listeners[i].socket.as_ref() else {
                return;
            };
            match socket.accept() {
                Ok((stream, peer)) => {
                    self.listeners[i].backoff = BACKOFF_MIN;
                    self.admit(i, stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_per_connection_accept_error(&e) => {
                    debug!("accept on {}: {e}", self.listeners[i].local);
                }
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.descriptors_exhausted(i, e);
                    return;
                }
                Err(e) => {
                    warn!(
                        "accept on {}: {e}; pausing this listener",
                        self.listeners[i].local
                    );
                    self.pause_listener(i);
                    return;
                }
            }
        }
        // Budget used: more connections may be waiting, and no new edge will say so.
        let slot = &mut self.listeners[i];
        if !slot.pending {
            slot.pending = true;
            self.pending.push(token::listener(i));
        }
    }

    fn admit(&mut self, i: usize, mut stream: Stream, peer: PeerAddr) {
        if self.conns.len() >= self.max_conns || self.draining_until.is_some() {
            self.reject(i, stream, &peer);
            return;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let key = self.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            token::conn(key, seq),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register connection from {peer}: {e}");
            return;
        }
        self.conns.insert(Conn::new(stream, seq, i as u32));
        if self.config.idle_timeout.is_some() {
            let now = self.now_ms;
            self.timers[Timer::Idle as usize].push(Timer::Idle, key, now, &mut self.conns);
        }
        self.stats.accepted += 1;
        debug!(
            "conn {seq}: accepted from {peer} on {}",
            self.listeners[i].local
        );
        let mut ctx = Context {
            conns: &mut self.conns,
            timers: &mut self.timers,
            key,
            stats: &mut self.stats,
            now_ms: self.now_ms,
            max_outbuf: self.config.max_outbuf,
        };
        let state = self.service.open(&mut ctx);
        if self.states.len() <= key {
            self.states.resize_with(key + 1, || None);
        }
        self.states[key] = Some(state);
        // Data may have arrived with the connection; registering reports it as an
        // event, so there is nothing to read here.
        self.settle(key);
    }

    /// Accepted past `--max-conns` (or while shutting down): tell the peer, close.
    fn reject(&mut self, i: usize, mut stream: Stream, peer: &PeerAddr) {
        use std::io::Write;
        self.stats.rejected += 1;
        debug!(
            "rejected connection from {peer} on {}: server full",
            self.listeners[i].local
        );
        let msg = self.service.reject_message(i);
        if !msg.is_empty() && self.draining_until.is_none() {
            let _ = stream.write(msg);
        }
        let _ = stream.shutdown_write();
        // Take whatever already arrived, so the close sends a FIN and not a reset that
        // could destroy the message before the peer reads it.
        let _ = stream.read(&mut self.scratch);
    }

    fn descriptors_exhausted(&mut self, i: usize, e: io::Error) {
        self.stats.accept_fd_exhausted += 1;
        let now = Instant::now();
        let log_now = self
            .last_exhaustion_log
            .is_none_or(|t| now.duration_since(t) >= EXHAUSTION_LOG_INTERVAL);
        if log_now {
            self.last_exhaustion_log = Some(now);
            warn!(
                "accept on {}: {e} ({} connections open); shedding pending connections and backing off",
                self.listeners[i].local,
                self.conns.len()
            );
        }
        // Shed: free the reserve descriptor for a moment to accept-and-close what is
        // waiting, so those clients learn at once instead of hanging in the backlog.
        if let Some(reserve) = self.reserve.take() {
            drop(reserve);
            if let Some(socket) = self.listeners[i].socket.as_ref() {
                for _ in 0..self.config.accept_budget {
                    match socket.accept() {
                        Ok((s, _)) => {
                            self.stats.rejected += 1;
                            drop(s);
                        }
                        Err(_) => break,
                    }
                }
            }
            self.reserve = File::open("/dev/null").ok();
        }
        self.pause_listener(i);
    }

    /// Stops accepting on a listener until a connection closes or the back-off passes.
    fn pause_listener(&mut self, i: usize) {
        let slot = &mut self.listeners[i];
        slot.paused_until = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
    }

    // ---------------------------------------------------------------- time

    fn expire(&mut self) {
        let now = self.now_ms;
        while let Some(key) = self.timers[Timer::Idle as usize].expired(now, &self.conns) {
            self.stats.idle_timeouts += 1;
            self.remove(key, Reason::IdleTimeout);
        }
        while let Some(key) = self.timers[Timer::Linger as usize].expired(now, &self.conns) {
            self.remove(key, Reason::LingerDone);
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

    // ---------------------------------------------------------------- shutdown

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            match sig {
                SIGINT | SIGTERM if self.draining_until.is_some() => {
                    warn!(
                        "second signal: closing {} connections now",
                        self.conns.len()
                    );
                    self.close_all();
                }
                SIGINT | SIGTERM => {
                    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                    self.begin_shutdown(name);
                }
                SIGUSR1 => info!("stats {}", self.stats()),
                _ => {}
            }
        }
    }

    fn begin_shutdown(&mut self, why: &str) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(Instant::now() + self.config.shutdown_timeout);
        info!(
            "{why}: closing listeners, draining {} connections (at most {:?})",
            self.conns.len(),
            self.config.shutdown_timeout
        );
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.poll.registry().deregister(socket.source());
            }
            slot.paused_until = None;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.phase == Phase::Open {
                // No more input will be served; let the service write what it owes for
                // input it already has (a line without its terminator).
                if !conn.peer_eof {
                    self.callback(key, Callback::Eof);
                }
                let conn = &mut self.conns[key];
                if conn.phase == Phase::Open {
                    conn.phase = Phase::Closing;
                }
            }
            self.settle(key);
        }
        self.check_drained();
    }

    fn check_drained(&mut self) {
        let Some(deadline) = self.draining_until else {
            return;
        };
        if !self.conns.is_empty() && self.now >= deadline {
            warn!(
                "shutdown timeout: closing {} connections with output still unsent",
                self.conns.len()
            );
            self.close_all();
        }
        if self.conns.is_empty() {
            self.finished = true;
        }
    }

    /// Ends the drain: every connection still open is closed as it is.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove(key, Reason::ShutdownTimeout);
        }
        self.finished = true;
    }
}

/// Which service callback to run for a connection.
#[derive(Clone, Copy)]
enum Callback {
    Data(usize),
    Eof,
}
