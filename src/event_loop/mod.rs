//! The loop: one `mio::Poll`, the bound sockets, the connection table, and the service
//! that answers them — readiness in, dispatch out. It knows no protocol.
//!
//! How and why a readiness loop works the way this one does — edge-triggered events,
//! budgets, `sendall` without blocking, backpressure, half-close, token reuse — is
//! explained once, in [the guide](crate#how-a-readiness-loop-works). This file is
//! [`EventLoop::turn`]:
//!
//! 1. `poll` for readiness, sleeping at most until the next deadline — or not at all
//!    when something is left over from last turn;
//! 2. for each event: record it in the socket's readiness flags (`readiness.rs`) and
//!    serve the socket — accept on a listener (`accept.rs`), receive on a datagram
//!    socket (`receive.rs`), or do what a connection wants next (`serve.rs`);
//! 3. serve what was left over from last turn: sockets whose budget ran out while
//!    their readiness still allowed more (their flags are still set, so they need no
//!    new event);
//! 4. act on deadlines (idle, linger and handshake timeouts, accept back-off), hand
//!    freed memory back, and move a shutdown along (`shutdown.rs`).

mod accept;
mod handle;
mod receive;
mod serve;
mod shutdown;

use std::fs::File;
use std::io;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

pub use handle::Handle;

use accept::ListenerState;
use handle::Shared;
use receive::DatagramState;

use crate::config::{Config, READ_BUFFER};
use crate::conn::{Conns, Limits};
use crate::endpoint::Endpoint;
use crate::lifecycle::STATUS_INTERVAL;
use crate::proxy::ProxyProtocol;
use crate::readiness::Readiness;
use crate::service::Service;
use crate::socket::{Bound, StdSocket};
use crate::stats::Stats;
use crate::sys;
use crate::token::{self, Target};

/// How many readiness events one `poll` call can return.
const EVENTS_CAPACITY: usize = 1024;

/// Freed output memory worth handing back to the system, and how often at most.
const RELEASE_AT: usize = 1024 * 1024;
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// One bound socket the loop serves, in `--listen` order.
struct SocketSlot {
    /// `None` once a shutdown has closed it.
    kind: Option<SocketKind>,
    readiness: Readiness,
    /// On the list of sockets to serve next turn.
    ready_listed: bool,
}

enum SocketKind {
    Listener(ListenerState),
    Datagram(Box<DatagramState>),
}

impl SocketKind {
    /// The socket as something `poll` can register.
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            SocketKind::Listener(l) => l.listener.source(),
            SocketKind::Datagram(d) => d.socket.source(),
        }
    }
}

/// The loop: bound sockets, connections and the service that answers them, on one
/// thread.
///
/// Made by a [`Builder`](crate::Builder); driven by [`run`](Self::run) or, one step at a
/// time, by [`turn`](Self::turn).
pub struct EventLoop<S: Service> {
    poll: Poll,
    events: Events,
    sockets: Vec<SocketSlot>,
    /// The bound address of each socket (port 0 resolved), at the socket's index: kept
    /// apart from the sockets so that a service's context can borrow them while a
    /// socket is being served.
    locals: Vec<Endpoint>,
    conns: Conns,
    /// The service's per-connection state, at the same index as the connection's slot.
    states: Vec<Option<S::State>>,
    service: S,
    /// Where every read lands; the service sees a slice of it.
    scratch: Box<[u8]>,
    /// Datagram replies of the current receive, copied here by the service.
    arena: Vec<u8>,
    /// The replies of one batch: where each is in `arena`, and where it goes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    outgoing: Vec<(usize, usize, nix::sys::socket::SockaddrStorage)>,
    /// Connections and sockets to serve next turn without an event: their budget ran
    /// out while their readiness still allowed more.
    ready: Vec<Token>,
    spare_ready: Vec<Token>,
    config: Config,
    stats: Stats,
    epoch: Instant,
    /// When this turn's `poll` returned. One clock read per turn; the connection table
    /// keeps the same instant in milliseconds since `epoch`.
    now: Instant,
    shared: Arc<Shared>,
    signals: Option<Signals>,
    /// Set when shutdown starts: the drain deadline.
    draining_until: Option<Instant>,
    /// Set at the first signal when there is a drain delay: still serving, not ready,
    /// until then (see [`lifecycle`](crate::lifecycle)).
    not_ready_until: Option<Instant>,
    /// When the observer last got the counters, and the event count then (nothing
    /// new since: nothing to tell).
    last_status: Instant,
    status_events: u64,
    finished: bool,
    /// A descriptor held in reserve, given up for a moment to shed connections when
    /// descriptors run out.
    reserve: Option<File>,
    last_exhaustion_log: Option<Instant>,
    /// Output memory freed since it was last handed back, and when that was.
    freed: usize,
    last_release: Instant,
    /// Set when this loop is one of several [`Workers`](crate::Workers).
    worker: Option<usize>,
}

impl<S: Service> EventLoop<S> {
    pub(crate) fn new(
        sockets: Vec<(Bound, Endpoint, Option<ProxyProtocol>, bool)>,
        service: S,
        config: Config,
        limits: Limits,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut slots = Vec::with_capacity(sockets.len());
        let mut locals = Vec::with_capacity(sockets.len());
        for (i, (bound, local, proxy, short_lived)) in sockets.into_iter().enumerate() {
            let mut kind = match bound {
                Bound::Listener(l) => {
                    SocketKind::Listener(ListenerState::new(l, proxy, short_lived))
                }
                Bound::Datagram(d) => {
                    SocketKind::Datagram(Box::new(DatagramState::new(d, config.datagram_batch)))
                }
            };
            // A listener is only ever read from (accepted); a datagram socket is
            // written to as well (its replies), so it registers for writable too.
            let interest = match kind {
                SocketKind::Listener(_) => Interest::READABLE,
                SocketKind::Datagram(_) => Interest::READABLE | Interest::WRITABLE,
            };
            poll.registry()
                .register(kind.source(), token::socket(i), interest)
                .map_err(|e| io::Error::new(e.kind(), format!("register {local}: {e}")))?;
            locals.push(local);
            slots.push(SocketSlot {
                kind: Some(kind),
                readiness: Readiness::NONE,
                ready_listed: false,
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
        let prealloc = limits.max_conns.min(1 << 20);
        let now = Instant::now();
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            sockets: slots,
            locals,
            conns: Conns::new(limits),
            states: Vec::with_capacity(prealloc),
            service,
            scratch: vec![0u8; READ_BUFFER].into_boxed_slice(),
            arena: Vec::new(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            outgoing: Vec::new(),
            ready: Vec::new(),
            spare_ready: Vec::new(),
            config,
            stats: Stats::default(),
            epoch: now,
            now,
            shared: Shared::new(waker),
            signals,
            draining_until: None,
            not_ready_until: None,
            last_status: now,
            status_events: 0,
            finished: false,
            reserve: File::open("/dev/null").ok(),
            last_exhaustion_log: None,
            freed: 0,
            last_release: now,
            worker: None,
        })
    }

    /// The bound address of each listener and datagram socket, in the order they were
    /// given (port 0 replaced by the real port).
    pub fn local_addrs(&self) -> Vec<Endpoint> {
        self.locals.clone()
    }

    /// A handle that stops this loop from another thread.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Another descriptor for bound socket `i`, for another loop to serve.
    pub(crate) fn share_socket(&self, i: usize) -> io::Result<StdSocket> {
        match &self.sockets[i].kind {
            Some(SocketKind::Listener(l)) => l.listener.share(),
            Some(SocketKind::Datagram(d)) => d.socket.share(),
            None => Err(io::Error::other("socket already closed")),
        }
    }

    /// Names this loop as worker `i` in its log lines.
    pub(crate) fn set_worker(&mut self, i: usize) {
        self.worker = Some(i);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.conns.with_gauges(&self.stats)
    }

    /// The service, for reading its own state between turns.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The connection limit in force.
    pub fn max_conns(&self) -> usize {
        self.conns.max_conns()
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
        self.conns
            .set_clock(self.now.duration_since(self.epoch).as_millis() as u64);

        // What was left over from last turn is served after this turn's events; what
        // is left over during this turn goes on the fresh list for the next one.
        let mut carried = mem::replace(&mut self.ready, mem::take(&mut self.spare_ready));

        let events = mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            self.stats.events += 1;
            self.dispatch(ev);
        }
        self.events = events;

        for t in carried.drain(..) {
            self.serve_carried(t);
        }
        self.spare_ready = carried;

        self.expire();
        self.release_memory();
        self.check_drain_delay();
        self.check_drained();
        self.report_status();
        Ok(())
    }

    /// How long `poll` may sleep: not at all when work was left over, else until the
    /// nearest deadline or the caller's timeout.
    fn poll_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(ms) = self.conns.next_deadline() {
            consider(self.epoch + Duration::from_millis(ms));
        }
        for s in &self.sockets {
            if let Some(SocketKind::Listener(l)) = &s.kind {
                if let Some(t) = l.paused_until {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.draining_until.or(self.not_ready_until) {
            consider(t);
        }
        if self.config.observer.0.is_some() && self.stats.events != self.status_events {
            consider(self.last_status + STATUS_INTERVAL);
        }
        if self.freed >= RELEASE_AT {
            consider(self.last_release + RELEASE_INTERVAL);
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
            Target::Socket(i) => {
                trace!(
                    "event: socket {i}{}{}{}",
                    if ev.is_readable() { " readable" } else { "" },
                    if ev.is_writable() { " writable" } else { "" },
                    if ev.is_error() { " error" } else { "" },
                );
                let slot = &mut self.sockets[i];
                slot.readiness.add(ev);
                // A datagram socket's error (an ICMP message about an earlier send) is
                // collected by a receive.
                if ev.is_error() {
                    slot.readiness.set_readable();
                }
                self.serve_socket(i);
            }
            Target::Waker => {
                if self.shared.shutdown_requested() {
                    self.begin_shutdown("shutdown requested");
                }
            }
            Target::Signals => self.on_signals(),
            Target::Unknown => debug!("event for unknown token {:?}", ev.token()),
        }
    }

    /// Serves bound socket `i` as far as its readiness and budget allow.
    fn serve_socket(&mut self, i: usize) {
        match self.sockets[i].kind {
            Some(SocketKind::Listener(_)) => self.accept(i),
            Some(SocketKind::Datagram(_)) => self.serve_datagrams(i),
            None => {}
        }
    }

    /// Puts bound socket `i` on the list for next turn.
    fn carry_over_socket(&mut self, i: usize) {
        let slot = &mut self.sockets[i];
        if !slot.ready_listed {
            slot.ready_listed = true;
            self.ready.push(token::socket(i));
        }
    }

    /// Serves a connection or socket left over from last turn.
    fn serve_carried(&mut self, t: Token) {
        match token::decode(t) {
            Target::Conn { key, seq } if self.conns.is_current(key, seq) => {
                self.conns.unmark_ready_listed(key);
                self.serve(key);
            }
            Target::Socket(i) => {
                self.sockets[i].ready_listed = false;
                self.serve_socket(i);
            }
            _ => {}
        }
    }

    /// Acts on every deadline that has passed: connection timeouts and listener
    /// back-off.
    fn expire(&mut self) {
        while let Some((key, reason)) = self.conns.expired() {
            self.finish(key, reason);
        }
        for i in 0..self.sockets.len() {
            if let Some(SocketKind::Listener(l)) = &mut self.sockets[i].kind {
                if l.paused_until.is_some_and(|t| t <= self.now) {
                    l.paused_until = None;
                    self.accept(i);
                }
            }
        }
    }

    /// Hands memory freed after a burst of output back to the system, at most once a
    /// second (see `conn/outbox.rs`).
    fn release_memory(&mut self) {
        self.freed += self.conns.take_freed();
        if self.freed >= RELEASE_AT && self.now >= self.last_release + RELEASE_INTERVAL {
            let (queued, held) = self.conns.output_memory();
            debug!(
                "handing {} KiB of freed output memory back to the system ({} KiB queued, {} KiB of chunks held)",
                self.freed / 1024,
                queued / 1024,
                held / 1024
            );
            sys::release_free_memory();
            self.freed = 0;
            self.last_release = self.now;
        }
    }
}
